//! BGP sessions from a Cairn speaker to top-of-rack routers: announce and withdraw VIP prefixes
//! (IPv4 /32, IPv6 /128, or aggregates) with next-hop self, so routers spread traffic over the
//! nodes by ECMP. Interoperability is tested against FRR 8.4 and GoBGP 3.
//!
//! Layout (sans-IO core, IO at the edge):
//! - [`wire`]: framing and OPEN/KEEPALIVE/NOTIFICATION/ROUTE-REFRESH (RFC 4271 §4, RFC 5492,
//!   RFC 6793, RFC 2918, RFC 4724), with every received message checked before it is read;
//! - [`update`]: building and packing UPDATEs (RFC 4271 §4.3, §5; RFC 4760; RFC 1997; RFC 8092);
//! - [`rib`]: the Adj-RIB-Out of a peer, deciding what to send;
//! - [`fsm`]: [`SessionFsm`], the session state machine (RFC 4271 §8), no sockets, no clock;
//! - [`error`]: [`SessionError`] and the NOTIFICATION for each;
//! - [`sockopt`]: `TCP_MD5SIG` and TTL socket options;
//! - [`driver`]: the tokio driver — TCP connect with source address, TTL and TCP MD5
//!   (RFC 2385), and [`Speaker`], the API the Cairn speaker uses.
//!
//! This crate announces and never imports: received UPDATEs are length-checked and dropped.
//!
//! ## Using it
//!
//! ```no_run
//! # async fn example() -> Result<(), cairn_bgp::SpeakerError> {
//! use cairn_bgp::{PeerConfig, Peers, RouteAttrs, SessionConfig, Speaker};
//!
//! let speaker = Speaker::new(); // inside a tokio runtime; sessions run on it
//! let mut session = SessionConfig::new(65001, 65000, "192.0.2.2".parse().unwrap());
//! // IPv6 VIPs over this IPv4 session need a global IPv6 next hop.
//! session.next_hop_v6 = Some("2001:db8::2".parse().unwrap());
//! let mut peer = PeerConfig::new("192.0.2.1".parse().unwrap(), session);
//! peer.md5_password = Some("secret".into());
//! speaker.add_peer(peer)?;
//!
//! speaker.announce("203.0.113.10/32".parse().unwrap(), RouteAttrs::default(), Peers::All);
//! for stats in speaker.peer_stats() {
//!     println!("{} {:?} {}", stats.peer, stats.session.state, stats.session.prefixes_advertised);
//! }
//! speaker.withdraw("203.0.113.10/32".parse().unwrap());
//! speaker.shutdown().await; // Cease NOTIFICATION to every peer
//! # Ok(())
//! # }
//! ```
//!
//! ## Why our own codec and not zettabgp
//!
//! DESIGN.md allowed zettabgp 0.6 as a codec behind guards. It is not used: the speaker needs
//! to *parse* only OPEN, NOTIFICATION and ROUTE-REFRESH (a few dozen lines) and to *build* a
//! handful of attributes, while zettabgp would need a guard for each of its known defects
//! (AS_PATH emitted as AS_SET, unchecked header length, panics on malformed MP_REACH, fuzzy path
//! ids) and would still put a large parser of peer bytes on the receive path. Our receive path
//! never decodes path attributes at all, so a malformed MP_REACH cannot reach any decoder; the
//! regression tests for those defects are kept as tests of this codec
//! (`as_path_segment_is_as_sequence_never_as_set`, `header_length_below_19_is_bad_message_length_not_a_panic`,
//! `malformed_mp_reach_in_an_update_is_ignored_without_panic` in `fsm::tests`) and the
//! receive path is fuzzed (`bgp/fuzz`).
//!
//! ## Next hops
//!
//! IPv4 prefixes carry NEXT_HOP = the session's local IPv4 address (or `next_hop_v4`); IPv6
//! prefixes carry MP_REACH with a 16-byte global next hop = the session's local IPv6 address
//! when it is global (or `next_hop_v6`). Over an IPv4 session, IPv6 prefixes are sent only when
//! `next_hop_v6` is configured (and vice versa); otherwise they are counted in
//! [`SessionStats::prefixes_unsendable`] and not sent, never sent with a wrong next hop.

pub mod driver;
pub mod error;
pub mod fsm;
pub mod rib;
pub mod sockopt;
pub mod update;
pub mod wire;

pub use driver::{PeerConfig, PeerStats, Peers, Speaker, SpeakerError};
pub use error::{DownReason, SessionError};
pub use fsm::{Event, Reason, SessionConfig, SessionFsm, SessionStats, State};
pub use update::{LargeCommunity, Origin, RouteAttrs};
pub use wire::GracefulRestart;
