//! Cairn's allocator: assigns LoadBalancer Services addresses from `IPAddressPool`s.
//!
//! - [`engine`]: the pure allocation core (no kube client, no clock, no IO).
//! - [`adapter`]: pure conversions between Services / pools and the engine's values.
//! - [`leader`]: leader election with compare-and-swap Lease writes.
//! - [`controller`]: the engine driven by a live cluster (restore first, then passes).
//! - [`metrics`]: Prometheus metrics and the health endpoint.
//!
//! The `cairn-allocator` binary wires them together.

pub mod adapter;
pub mod controller;
pub mod engine;
pub mod leader;
pub mod metrics;
