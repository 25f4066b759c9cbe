//! Layer 2 announcement for Cairn: gratuitous ARP / unsolicited Neighbor Advertisement bursts
//! when a node takes over a VIP, and a responder answering ARP requests and Neighbor
//! Solicitations for the VIPs the node owns, on the interfaces it is told to use.
//!
//! Layout (pure cores, thin IO):
//! - [`wire`]: typed views and reprs for Ethernet (+802.1Q), ARP, IPv6, NS/NA; no IO.
//! - [`frames`]: the whole frames sent (GARP request/reply, unsolicited NA); no IO.
//! - [`respond`]: frame in → reply out (or why not); no IO, no clock.
//! - [`schedule`]: the burst/refresh timers; sans-IO, takes `now`.
//! - [`sys`]: AF_PACKET, IPv6 multicast membership, rtnetlink and getifaddrs wrappers.
//! - [`gate`]: [`ClaimDeadline`], the self-fencing bound checked before every claim sent; pure
//!   encoding, no clock of its own beyond "now" at send time.
//! - [`announcer`]: [`L2Announcer`], the tokio driver the speaker uses.
//!
//! This crate does not decide ownership (the speaker does), does not configure addresses on
//! interfaces, and never puts an interface in promiscuous mode.
//!
//! RFCs: 826 (ARP), 5227 §2.3 and §3 (announcements), 4861 §4.3–4.4, §4.6.1, §7.1, §7.2.4,
//! §7.2.6 (NS/NA), 4291 §2.7.1 (solicited-node groups), 2464 §7 (IPv6 multicast MACs),
//! 4443 §2.3 (ICMPv6 checksum).

pub mod announcer;
pub mod frames;
pub mod gate;
pub mod respond;
pub mod schedule;
pub mod sys;
pub mod wire;

pub use announcer::{
    Counters, InterfaceSelection, InterfaceStatus, L2Announcer, L2Config, L2Error, LinkEvent,
};
pub use gate::{ClaimDeadline, Claims};
pub use schedule::BurstConfig;
pub use wire::MacAddr;
