//! The XDP data plane (`--dataplane xdp`): what this node programs into `cairn-xdp`, and the
//! code that programs it.
//!
//! - [`plan`] (pure): Services (their allocated VIPs, ports, traffic policy), EndpointSlices and
//!   Nodes → an [`XdpPlan`]: per (VIP, port, protocol) the backend *nodes* weighted by their
//!   ready endpoints, and the VIPs this node decapsulates; and the [`Changes`] between two plans,
//!   so a reconcile touches only what changed.
//! - [`neighbour`] (IO, thin): next hops from the kernel's neighbour table (netlink
//!   `RTM_GETNEIGH`, rtnetlink(7)), the uplink's MAC, and a nudge that makes the kernel resolve a
//!   missing entry (ARP, RFC 826; neighbour discovery, RFC 4861).
//! - [`XdpProgrammer`] (IO): owns the load balancer ([`cairn_xdp::Dataplane`]) and the tunnel end
//!   ([`cairn_xdp::Decap`]) and applies plans to them.
//!
//! Forwarding: a VIP packet reaching this node's uplink is tunnelled (IP-in-IP, RFC 2003; IPv6,
//! RFC 2473) to a backend node chosen by Maglev; the backend node's decap program strips the
//! tunnel and its stack (kube-proxy) delivers the client's packet, which keeps the client's
//! address; the reply goes straight back to the client (direct server return).
//!
//! What it must not do: decide which node announces a VIP (eligibility and ownership do), talk
//! to the API server (the reconciler hands it objects), or program a next hop it has not read
//! from the kernel (never a zero MAC).

pub mod neighbour;
pub mod plan;
mod programmer;

pub use plan::{changes, plan, plan_cluster, plan_input, Changes, PlanInput, PlanProblem, XdpPlan};
pub use programmer::{ApplyReport, XdpConfig, XdpError, XdpProgrammer};
