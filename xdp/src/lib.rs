//! XDP forwarding stage: Maglev table builder, BPF programs and their aya loader.
//!
//! - [`maglev`]: pure weighted Maglev table builder (the same input gives the same table on
//!   every node).
//! - [`Dataplane`]: the load balancer (`bpf/lb.bpf.c`) on a VIP-receiving node: services,
//!   backends, next hops, counters, pinning across restarts.
//! - [`Decap`]: the tunnel end (`bpf/decap.bpf.c`) on backend nodes.
//! - [`Sink`]: helper programs for veth labs and benchmarks.
//!
//! The BPF C sources are compiled by `build.rs` with clang and embedded in the library.
//! This crate decides nothing about which node announces what; the speaker drives it.

mod abi;
mod dataplane;
mod decap;
pub mod hash;
pub mod maglev;
mod sink;

pub use abi::DropReason;
pub use dataplane::{
    AttachMode, Counters, Dataplane, DataplaneConfig, DataplaneError, FlowTuple, NextHop, Protocol,
    Service, TestRunOutput,
};
pub use decap::{Decap, DecapCounters};
pub use maglev::{TableSize, WeightedBackend};
pub use sink::{Sink, SinkKind};
