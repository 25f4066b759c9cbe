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
//!   [`lease_driver::MembershipView`].

pub mod adapter;
pub mod announcements;
pub mod eligibility;
pub mod endpoints;
mod hash;
pub mod lease;
pub mod lease_driver;
pub mod membership;
pub mod ownership;
pub mod time;
