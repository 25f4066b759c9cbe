//! Cairn's per-node speaker: the sans-IO core that decides, on each node, which VIPs to announce
//! and how, and the thin Kubernetes edge that feeds it.
//!
//! Like quinn-proto, the core of this crate "contains no networking code and does not get any relevant
//! timestamps from the operating system": every input (Lease events, API objects reduced to plain
//! data, write results) and every `now` ([`time::Instant`]) comes in as an argument, and every
//! output (Lease writes, announce/withdraw actions) goes out as plain data for a driver to execute
//! against the API server, `cairn-arp` and `cairn-bgp`. Nothing in the core opens a socket, reads
//! a clock or spawns a task.
//!
//! - [`membership`]: which speakers are live, from their Leases, judged on the local clock.
//! - [`lease`]: this node's own Lease (compare-and-swap renewal, self-fencing, release).
//! - [`ownership`]: rendezvous hashing of (node, VIP) with a fixed hash.
//! - [`eligibility`] and [`endpoints`]: which nodes may announce a VIP, and why not.
//! - [`announcements`]: the ordered announce/withdraw actions that move the current state to the
//!   desired one.
//!
//! The Kubernetes edge, kept apart from the core:
//! - [`adapter`] (pure): API objects (Nodes, EndpointSlices, Services, Cairn's resources, Leases)
//!   into the core's plain inputs, invalid resources reported rather than applied;
//! - [`lease_driver`] (tokio + kube, thin): runs [`lease::LeaseKeeper`] and
//!   [`membership::Membership`] against the API server and publishes a
//!   [`lease_driver::MembershipView`];
//! - [`status`]: the per-node record of what it announces, carried on its Lease for `cairnctl`.
//!
//! The runtime of the `cairn-speaker` binary:
//! - [`runtime`]: [`runtime::run`], the reconcile loop carrying the planner's actions out on
//!   `cairn-arp` and `cairn-bgp`, with self-fencing, Events, status, metrics and shutdown;
//! - [`cluster`]: the reflector caches it reads; [`peers`] (pure): the BGP sessions this node
//!   runs; [`events`] (pure): which `nodeAssigned` Events are due; [`metrics`]: Prometheus
//!   metrics and `/metrics`, `/healthz`, `/readyz`.

pub mod adapter;
pub mod announcements;
pub mod cluster;
pub mod dataplane;
pub mod eligibility;
pub mod endpoints;
pub mod events;
mod hash;
pub mod lease;
pub mod lease_driver;
pub mod membership;
pub mod metrics;
pub mod ownership;
pub mod peers;
pub mod runtime;
pub mod status;
pub mod time;
