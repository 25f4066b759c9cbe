//! An L2 observer for the failover tests and benchmark: from inside a network namespace it
//! records every frame that claims one of a set of VIPs — ARP replies, gratuitous ARPs (and any
//! other ARP request sent *from* the VIP), ICMPv6 Neighbor Advertisements — with the monotonic
//! time it arrived, the VIP and the MAC it binds the VIP to. [`split_brain`] then finds moments
//! when two MACs claimed one VIP at once.
//!
//! A passive observer sees only what reaches its interface: broadcasts (gratuitous ARP),
//! all-nodes multicast (unsolicited NA) and replies to its own host. To see every responder, the
//! observer can also *solicit*: send an ARP request / Neighbor Solicitation for each VIP at a
//! fixed interval ([`Solicitation`]), so that every node answering for the VIP answers it too.
//!
//! Frames are parsed with `cairn-arp`'s bounds-checked views (RFC 826 ARP, RFC 5227 §2.3
//! announcements, RFC 4861 §4.4 / §7.1.2 Neighbor Advertisements); a malformed frame is skipped,
//! never a panic. This module only reads and, when asked, sends ARP requests / NS frames; it
//! never changes an interface, an address or a neighbour table, and never goes promiscuous.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_arp::sys::{BpfInsn, PacketSocket, ETH_P_ARP, ETH_P_IPV6};
use cairn_arp::wire::arp::{ArpRepr, Operation, Packet as ArpPacket};
use cairn_arp::wire::ethernet::{EtherType, Frame};
use cairn_arp::wire::ipv6::Packet as Ipv6Packet;
use cairn_arp::wire::ndisc::NdiscRepr;
use cairn_arp::MacAddr;

use crate::netns::{Netns, NetnsError};

/// How a frame claimed a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClaimKind {
    /// An ARP reply whose sender protocol address is the VIP.
    ArpReply,
    /// A gratuitous ARP request: sender and target protocol address are both the VIP
    /// (RFC 5227 §3 announcement).
    GratuitousArp,
    /// Another ARP request sent from the VIP (a host resolving a neighbour with the VIP as its
    /// source address). Receivers merge the sender's mapping from it (RFC 826), so it claims the
    /// VIP as much as a reply does.
    ArpRequest,
    /// An ICMPv6 Neighbor Advertisement whose target is the VIP.
    NeighborAdvert,
}

/// One frame claiming a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// When the frame was read (monotonic).
    pub at: Instant,
    /// The VIP claimed.
    pub vip: IpAddr,
    /// The MAC the frame binds the VIP to (ARP sender hardware address; NA target link-layer
    /// address option, else the Ethernet source).
    pub mac: MacAddr,
    /// Which kind of frame.
    pub kind: ClaimKind,
}

/// A claim made while another MAC claimed the same VIP both shortly before and shortly after
/// it: the VIP was answered by two MACs at once, not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitBrain {
    /// The claim in the middle.
    pub claim: Claim,
    /// The latest claim by another MAC before it, within the window.
    pub before: Claim,
    /// The earliest claim by another MAC after it, within the window.
    pub after: Claim,
}

/// Errors starting the observer.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// Entering the namespace or reading the interface's MAC failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The interface does not exist in the namespace.
    #[error("no interface {0} in the namespace")]
    NoSuchInterface(String),
    /// Soliciting an address family without a source address of that family.
    #[error("soliciting {0} needs a source address of that family")]
    NoSource(IpAddr),
    /// A socket call failed.
    #[error("{what}: {source}")]
    Socket {
        /// The call.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Active probing by the observer: an ARP request (IPv4 VIPs) or a Neighbor Solicitation to the
/// VIP's solicited-node group (IPv6 VIPs) for every VIP, every `every`, sent from the observing
/// interface's MAC and the given source addresses (the observer host's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicitation {
    /// The interval between two rounds.
    pub every: Duration,
    /// Sender protocol address of the ARP requests (needed when a VIP is IPv4).
    pub from_v4: Option<Ipv4Addr>,
    /// Source address of the solicitations (needed when a VIP is IPv6).
    pub from_v6: Option<Ipv6Addr>,
}

/// Keeps only ICMPv6 Neighbor Advertisements (next header 58, type 136, no extension header,
/// untagged frame) on the ETH_P_IPV6 socket.
const NEIGHBOR_ADVERT_FILTER: [BpfInsn; 6] = {
    const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    /// Ethernet header, then the IPv6 next-header byte.
    const NEXT_HEADER: u32 = 14 + 6;
    /// Ethernet header and IPv6 fixed header, then the ICMPv6 type byte.
    const ICMPV6_TYPE: u32 = 14 + 40;
    [
        BpfInsn {
            code: LD_B_ABS,
            jt: 0,
            jf: 0,
            k: NEXT_HEADER,
        },
        BpfInsn {
            code: JEQ_K,
            jt: 0,
            jf: 3,
            k: 58,
        },
        BpfInsn {
            code: LD_B_ABS,
            jt: 0,
            jf: 0,
            k: ICMPV6_TYPE,
        },
        BpfInsn {
            code: JEQ_K,
            jt: 0,
            jf: 1,
            k: 136,
        },
        BpfInsn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0x0004_0000,
        },
        BpfInsn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ]
};

/// How long one `poll` waits at most, so that `stop` is noticed promptly.
const POLL_SLICE: Duration = Duration::from_millis(20);

/// A running observer; it stops (and its thread ends) on [`Observer::stop`] or drop.
pub struct Observer {
    claims: Arc<Mutex<Vec<Claim>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Starts observing `interface` of namespace `ns` for claims on `vips`, soliciting them when
    /// `solicit` says so. The sockets are open (nothing is missed) when this returns.
    pub fn start(
        ns: &Netns,
        interface: &str,
        vips: &[IpAddr],
        solicit: Option<Solicitation>,
    ) -> Result<Self, ObserverError> {
        let vips: BTreeSet<IpAddr> = vips.iter().copied().collect();
        let plan = match solicit {
            Some(s) => Some(SolicitPlan::new(s, ns.mac(interface)?, &vips)?),
            None => None,
        };
        let want_v6 = vips.iter().any(IpAddr::is_ipv6);
        let name = interface.to_owned();
        let sockets = ns.run(move || open_sockets(&name, want_v6))??;
        let claims = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let claims = claims.clone();
            let stop = stop.clone();
            std::thread::spawn(move || observe(&sockets, &vips, plan, &claims, &stop))
        };
        Ok(Self {
            claims,
            stop,
            thread: Some(thread),
        })
    }

    /// Every claim recorded so far, in arrival order.
    pub fn claims(&self) -> Vec<Claim> {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the claims recorded so far (between the runs of a benchmark).
    pub fn clear(&self) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// [`split_brain`] over the claims recorded so far.
    pub fn split_brain(&self, window: Duration) -> Vec<SplitBrain> {
        split_brain(&self.claims(), window)
    }

    /// Stops observing and returns every claim recorded.
    pub fn stop(mut self) -> Vec<Claim> {
        self.halt();
        self.claims()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The frames of one solicitation round, built once.
struct SolicitPlan {
    every: Duration,
    arp: Vec<Vec<u8>>,
    ndisc: Vec<Vec<u8>>,
}

impl SolicitPlan {
    fn new(s: Solicitation, mac: [u8; 6], vips: &BTreeSet<IpAddr>) -> Result<Self, ObserverError> {
        let mac = MacAddr(mac);
        let mut plan = Self {
            every: s.every,
            arp: Vec::new(),
            ndisc: Vec::new(),
        };
        for vip in vips {
            match *vip {
                IpAddr::V4(v4) => {
                    let from = s.from_v4.ok_or(ObserverError::NoSource(*vip))?;
                    plan.arp.push(cairn_arp::frames::arp_request(mac, from, v4));
                }
                IpAddr::V6(v6) => {
                    let from = s.from_v6.ok_or(ObserverError::NoSource(*vip))?;
                    plan.ndisc
                        .push(cairn_arp::frames::neighbor_solicit(mac, from, v6));
                }
            }
        }
        Ok(plan)
    }
}

struct Sockets {
    arp: PacketSocket,
    ipv6: Option<PacketSocket>,
}

/// Runs inside the namespace: sockets opened here stay in it.
fn open_sockets(interface: &str, want_v6: bool) -> Result<Sockets, ObserverError> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| ObserverError::NoSuchInterface(interface.to_owned()))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(ObserverError::NoSuchInterface(interface.to_owned()));
    }
    let arp =
        PacketSocket::open(ifindex, ETH_P_ARP, None).map_err(|source| ObserverError::Socket {
            what: "opening the ARP packet socket",
            source,
        })?;
    let ipv6 = if want_v6 {
        Some(
            PacketSocket::open(ifindex, ETH_P_IPV6, Some(&NEIGHBOR_ADVERT_FILTER)).map_err(
                |source| ObserverError::Socket {
                    what: "opening the IPv6 packet socket",
                    source,
                },
            )?,
        )
    } else {
        None
    };
    Ok(Sockets { arp, ipv6 })
}

fn observe(
    sockets: &Sockets,
    vips: &BTreeSet<IpAddr>,
    plan: Option<SolicitPlan>,
    claims: &Mutex<Vec<Claim>>,
    stop: &AtomicBool,
) {
    let mut next_round = Instant::now();
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let mut wait = POLL_SLICE;
        if let Some(plan) = &plan {
            let now = Instant::now();
            if now >= next_round {
                // A full send buffer loses one round, which the next one makes up for.
                for frame in &plan.arp {
                    let _ = sockets.arp.send(frame, ETH_P_ARP);
                }
                if let Some(v6) = &sockets.ipv6 {
                    for frame in &plan.ndisc {
                        let _ = v6.send(frame, ETH_P_IPV6);
                    }
                }
                next_round = now + plan.every;
            }
            wait = wait.min(next_round.saturating_duration_since(now));
        }
        let mut fds = vec![libc::pollfd {
            fd: sockets.arp.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(v6) = &sockets.ipv6 {
            fds.push(libc::pollfd {
                fd: v6.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of pollfd of the length passed.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        let readers = std::iter::once(&sockets.arp).chain(sockets.ipv6.as_ref());
        for socket in readers {
            while let Ok(received) = socket.recv(&mut buf) {
                if received.is_outgoing() {
                    continue;
                }
                let at = Instant::now();
                let frame = buf.get(..received.len).unwrap_or_default();
                if let Some((vip, mac, kind)) = parse_claim(frame, vips) {
                    claims
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Claim { at, vip, mac, kind });
                }
            }
        }
    }
}

/// What a frame claims about one of `vips`: the VIP, the MAC it binds it to and how; `None` for
/// frames that claim none of them or do not parse.
pub fn parse_claim(frame: &[u8], vips: &BTreeSet<IpAddr>) -> Option<(IpAddr, MacAddr, ClaimKind)> {
    let eth = Frame::new_checked(frame).ok()?;
    match eth.ethertype() {
        EtherType::Arp => {
            let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
            let vip = IpAddr::V4(arp.source_protocol_addr);
            if !vips.contains(&vip) {
                return None;
            }
            let kind = match arp.operation {
                Operation::Reply => ClaimKind::ArpReply,
                Operation::Request if arp.target_protocol_addr == arp.source_protocol_addr => {
                    ClaimKind::GratuitousArp
                }
                Operation::Request => ClaimKind::ArpRequest,
                Operation::Unknown(_) => return None,
            };
            Some((vip, arp.source_hardware_addr, kind))
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            let (_, repr) = NdiscRepr::parse_validated(&ip).ok()?;
            let NdiscRepr::NeighborAdvert {
                target,
                target_lladdr,
                ..
            } = repr
            else {
                return None;
            };
            let vip = IpAddr::V6(target);
            if !vips.contains(&vip) {
                return None;
            }
            Some((
                vip,
                target_lladdr.unwrap_or(eth.src_addr()),
                ClaimKind::NeighborAdvert,
            ))
        }
        _ => None,
    }
}

/// The split-brain moments in `claims` (any order): a claim of a VIP such that another MAC
/// claimed the same VIP within `window` before it *and* within `window` after it. A clean
/// handover (every claim of the old MAC before every claim of the new one) is never one, however
/// close the two sides; a VIP that flips back and forth between MACs, as when two nodes answer
/// the same solicitations, is. With a soliciting observer, a node that still answers after its
/// successor began is caught as soon as the successor answers again within `window`.
pub fn split_brain(claims: &[Claim], window: Duration) -> Vec<SplitBrain> {
    let vips: BTreeSet<IpAddr> = claims.iter().map(|c| c.vip).collect();
    let mut found = Vec::new();
    for vip in vips {
        let mut seq: Vec<Claim> = claims.iter().filter(|c| c.vip == vip).copied().collect();
        seq.sort_by_key(|c| c.at);
        for (i, claim) in seq.iter().enumerate() {
            let before = seq[..i]
                .iter()
                .rev()
                .take_while(|c| claim.at.duration_since(c.at) <= window)
                .find(|c| c.mac != claim.mac);
            let after = seq[i + 1..]
                .iter()
                .take_while(|c| c.at.duration_since(claim.at) <= window)
                .find(|c| c.mac != claim.mac);
            if let (Some(before), Some(after)) = (before, after) {
                found.push(SplitBrain {
                    claim: *claim,
                    before: *before,
                    after: *after,
                });
            }
        }
    }
    found
}

/// The claims within `span` of `at`, in order, consecutive ones of one MAC and kind folded:
/// `-40ms cairn-n1 ArpReply x2, +3ms cairn-n2 GratuitousArp x1`, with `name` naming each MAC.
pub fn describe_around(
    claims: &[Claim],
    at: Instant,
    span: Duration,
    name: impl Fn(MacAddr) -> String,
) -> String {
    let mut near: Vec<&Claim> = claims
        .iter()
        .filter(|c| c.at + span >= at && c.at <= at + span)
        .collect();
    near.sort_by_key(|c| c.at);
    let mut runs: Vec<(f64, MacAddr, ClaimKind, usize)> = Vec::new();
    for c in near {
        match runs.last_mut() {
            Some((_, mac, kind, n)) if *mac == c.mac && *kind == c.kind => *n += 1,
            _ => {
                let ms = if c.at >= at {
                    (c.at - at).as_secs_f64() * 1e3
                } else {
                    -(at - c.at).as_secs_f64() * 1e3
                };
                runs.push((ms, c.mac, c.kind, 1));
            }
        }
    }
    runs.iter()
        .map(|(ms, mac, kind, n)| format!("{ms:+.0}ms {} {kind:?} x{n}", name(*mac)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The MACs that claimed `vip` in `claims`, with how many claims each.
pub fn claimants(claims: &[Claim], vip: IpAddr) -> std::collections::BTreeMap<MacAddr, usize> {
    let mut by_mac = std::collections::BTreeMap::new();
    for claim in claims.iter().filter(|c| c.vip == vip) {
        *by_mac.entry(claim.mac).or_insert(0) += 1;
    }
    by_mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_arp::wire::ethernet::EthernetRepr;
    use proptest::prelude::*;

    const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0xc8);

    fn vips() -> BTreeSet<IpAddr> {
        [IpAddr::V4(VIP4), IpAddr::V6(VIP6)].into()
    }

    fn arp(op: Operation, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let eth = EthernetRepr {
            dst: MacAddr::BROADCAST,
            src: MAC_A,
            vlan_tci: None,
            ethertype: EtherType::Arp,
        };
        let repr = ArpRepr {
            operation: op,
            source_hardware_addr: MAC_A,
            source_protocol_addr: sender,
            target_hardware_addr: MacAddr::ZERO,
            target_protocol_addr: target,
        };
        let mut frame = vec![0u8; eth.buffer_len() + repr.buffer_len()];
        eth.emit(&mut frame).unwrap();
        repr.emit(&mut frame[eth.buffer_len()..]).unwrap();
        frame
    }

    #[test]
    fn an_arp_reply_from_the_vip_claims_it_for_the_sender_mac() {
        let client = Ipv4Addr::new(192, 0, 2, 100);
        assert_eq!(
            parse_claim(&arp(Operation::Reply, VIP4, client), &vips()),
            Some((IpAddr::V4(VIP4), MAC_A, ClaimKind::ArpReply))
        );
    }

    #[test]
    fn the_announcer_frames_are_gratuitous_arp_and_neighbor_advert_claims() {
        let frames = cairn_arp::frames::announcement(MAC_B, IpAddr::V4(VIP4));
        let kinds: Vec<_> = frames.iter().map(|f| parse_claim(f, &vips())).collect();
        assert_eq!(
            kinds,
            [
                Some((IpAddr::V4(VIP4), MAC_B, ClaimKind::GratuitousArp)),
                Some((IpAddr::V4(VIP4), MAC_B, ClaimKind::ArpReply)),
            ]
        );
        let advert = cairn_arp::frames::unsolicited_advert(MAC_B, VIP6);
        assert_eq!(
            parse_claim(&advert, &vips()),
            Some((IpAddr::V6(VIP6), MAC_B, ClaimKind::NeighborAdvert))
        );
    }

    #[test]
    fn requests_for_the_vip_and_frames_about_other_addresses_claim_nothing() {
        let client = Ipv4Addr::new(192, 0, 2, 100);
        let other = Ipv4Addr::new(192, 0, 2, 201);
        // The client asking for the VIP, and someone else's reply.
        assert_eq!(
            parse_claim(&arp(Operation::Request, client, VIP4), &vips()),
            None
        );
        assert_eq!(
            parse_claim(&arp(Operation::Reply, other, client), &vips()),
            None
        );
        assert_eq!(
            parse_claim(
                &cairn_arp::frames::neighbor_solicit(
                    MAC_A,
                    "2001:db8:2::100".parse().unwrap(),
                    VIP6
                ),
                &vips()
            ),
            None
        );
        let other_advert =
            cairn_arp::frames::unsolicited_advert(MAC_A, "2001:db8:2::1".parse().unwrap());
        assert_eq!(parse_claim(&other_advert, &vips()), None);
    }

    #[test]
    fn an_arp_request_sent_from_the_vip_is_a_claim() {
        let client = Ipv4Addr::new(192, 0, 2, 100);
        assert_eq!(
            parse_claim(&arp(Operation::Request, VIP4, client), &vips()),
            Some((IpAddr::V4(VIP4), MAC_A, ClaimKind::ArpRequest))
        );
    }

    #[test]
    fn a_neighbor_advert_with_a_bad_checksum_claims_nothing() {
        let mut advert = cairn_arp::frames::unsolicited_advert(MAC_B, VIP6);
        let last = advert.len() - 1;
        advert[last] ^= 0xff;
        assert_eq!(parse_claim(&advert, &vips()), None);
    }

    proptest! {
        #[test]
        fn parse_claim_never_panics_on_arbitrary_or_truncated_frames(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cut in 0usize..90,
        ) {
            let _ = parse_claim(&bytes, &vips());
            for frame in cairn_arp::frames::announcement(MAC_A, IpAddr::V4(VIP4))
                .into_iter()
                .chain([cairn_arp::frames::unsolicited_advert(MAC_A, VIP6)])
            {
                let end = cut.min(frame.len());
                let _ = parse_claim(&frame[..end], &vips());
            }
        }
    }

    fn claim(base: Instant, ms: u64, mac: MacAddr) -> Claim {
        Claim {
            at: base + Duration::from_millis(ms),
            vip: IpAddr::V4(VIP4),
            mac,
            kind: ClaimKind::ArpReply,
        }
    }

    const WINDOW: Duration = Duration::from_millis(100);

    #[test]
    fn a_clean_handover_is_not_split_brain_however_close() {
        let t = Instant::now();
        let claims: Vec<Claim> = [(0, MAC_A), (20, MAC_A), (21, MAC_B), (40, MAC_B)]
            .into_iter()
            .map(|(ms, mac)| claim(t, ms, mac))
            .collect();
        assert!(split_brain(&claims, WINDOW).is_empty());
    }

    #[test]
    fn the_old_owner_answering_after_the_new_one_began_is_split_brain() {
        let t = Instant::now();
        let claims: Vec<Claim> = [
            (0, MAC_A),
            (20, MAC_B),
            (40, MAC_B),
            (50, MAC_A),
            (60, MAC_B),
        ]
        .into_iter()
        .map(|(ms, mac)| claim(t, ms, mac))
        .collect();
        let found = split_brain(&claims, WINDOW);
        assert!(found
            .iter()
            .any(|s| s.claim == claims[3] && s.before == claims[2] && s.after == claims[4]));
    }

    #[test]
    fn claims_further_apart_than_the_window_are_a_handover_back_not_split_brain() {
        let t = Instant::now();
        let claims: Vec<Claim> = [(0, MAC_A), (500, MAC_B), (1000, MAC_A)]
            .into_iter()
            .map(|(ms, mac)| claim(t, ms, mac))
            .collect();
        assert!(split_brain(&claims, WINDOW).is_empty());
    }

    #[test]
    fn claims_of_different_vips_never_conflict() {
        let t = Instant::now();
        let mut claims: Vec<Claim> = [(0, MAC_A), (20, MAC_A), (40, MAC_A)]
            .into_iter()
            .map(|(ms, mac)| claim(t, ms, mac))
            .collect();
        claims[1].vip = IpAddr::V6(VIP6);
        claims[1].mac = MAC_B;
        assert!(split_brain(&claims, WINDOW).is_empty());
        assert_eq!(claimants(&claims, IpAddr::V4(VIP4)), [(MAC_A, 2)].into());
    }

    /// The definition, checked the slow way: some claim with another MAC's claim within the
    /// window on each side.
    fn split_brain_reference(claims: &[Claim], window: Duration) -> usize {
        claims
            .iter()
            .filter(|c| {
                let near = |o: &&Claim, before: bool| {
                    o.vip == c.vip
                        && o.mac != c.mac
                        && if before {
                            o.at < c.at && c.at - o.at <= window
                        } else {
                            o.at > c.at && o.at - c.at <= window
                        }
                };
                claims.iter().any(|o| near(&o, true)) && claims.iter().any(|o| near(&o, false))
            })
            .count()
    }

    proptest! {
        #[test]
        fn split_brain_matches_its_definition(
            events in proptest::collection::vec((0u64..2000, 0u8..3, any::<bool>()), 0..60)
        ) {
            let t = Instant::now();
            let mut seen = BTreeSet::new();
            let claims: Vec<Claim> = events
                .into_iter()
                // Distinct times per VIP keep "before"/"after" unambiguous.
                .filter(|(ms, _, v6)| seen.insert((*ms, *v6)))
                .map(|(ms, node, v6)| Claim {
                    at: t + Duration::from_millis(ms),
                    vip: if v6 { IpAddr::V6(VIP6) } else { IpAddr::V4(VIP4) },
                    mac: MacAddr([2, 0, 0, 0, 0, node]),
                    kind: ClaimKind::ArpReply,
                })
                .collect();
            prop_assert_eq!(split_brain(&claims, WINDOW).len(), split_brain_reference(&claims, WINDOW));
        }

        #[test]
        fn any_single_handover_sequence_has_no_split_brain(
            mut times in proptest::collection::vec(0u64..5000, 1..80),
            split in 0usize..80,
        ) {
            times.sort_unstable();
            let t = Instant::now();
            let split = split.min(times.len());
            let claims: Vec<Claim> = times
                .iter()
                .enumerate()
                .map(|(i, ms)| claim(t, *ms, if i < split { MAC_A } else { MAC_B }))
                .collect();
            prop_assert!(split_brain(&claims, WINDOW).is_empty());
        }
    }
}
