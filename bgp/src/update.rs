//! Building UPDATE messages: path attributes, IPv4 NLRI, IPv6 MP_REACH/MP_UNREACH, packing.
//!
//! Prefixes sharing the same attributes go into as few UPDATEs as possible, each at most 4096
//! bytes (RFC 4271 §4.3). IPv4 announcements use the classic NLRI field with a NEXT_HOP
//! attribute, IPv4 withdrawals the Withdrawn Routes field; IPv6 uses MP_REACH_NLRI with a 16-byte
//! global next hop and MP_UNREACH_NLRI (RFC 4760 §3, §4; RFC 2545 §3). AS_PATH is always one
//! AS_SEQUENCE segment (type 2) holding our AS on eBGP and empty on iBGP (RFC 4271 §5.1.2);
//! LOCAL_PREF goes to iBGP peers only (§5.1.5). COMMUNITIES (RFC 1997) and LARGE_COMMUNITY
//! (RFC 8092) are sent in the order the caller gave them.
//!
//! Attributes are written in ascending type order. This module builds bytes only; it never
//! decides what to send (that is [`crate::rib`]) and never reads received bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::wire::{self, MessageType, AFI_IPV6, HEADER_LEN, MAX_MESSAGE_LEN, SAFI_UNICAST};

/// Path attribute type codes (IANA "BGP Path Attributes").
mod attr {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const LOCAL_PREF: u8 = 5;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// Attribute flag bits (RFC 4271 §4.3).
mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// AS_PATH segment type AS_SEQUENCE (RFC 4271 §4.3); AS_SET (1) is never sent.
const AS_SEQUENCE: u8 = 2;

/// LOCAL_PREF sent to iBGP peers when the route does not set one.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// The ORIGIN attribute's value (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Origin {
    /// Learned from an interior protocol; what a load balancer's VIPs are.
    #[default]
    Igp,
    /// Learned from EGP.
    Egp,
    /// Learned some other way.
    Incomplete,
}

/// A large community (RFC 8092): global administrator and two local data parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    /// Global administrator (normally an AS number).
    pub global: u32,
    /// First local data part.
    pub local1: u32,
    /// Second local data part.
    pub local2: u32,
}

/// The attributes a caller attaches to an announced prefix. Next hop and AS_PATH come from the
/// session (next-hop self, own AS on eBGP) unless `next_hop` overrides the next hop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RouteAttrs {
    /// ORIGIN.
    pub origin: Origin,
    /// LOCAL_PREF for iBGP peers (not sent to eBGP peers); `None` sends 100.
    pub local_pref: Option<u32>,
    /// Standard communities, each `asn << 16 | value`.
    pub communities: Vec<u32>,
    /// Large communities.
    pub large_communities: Vec<LargeCommunity>,
    /// Next hop to send instead of the session's own address (must match the prefix's family).
    pub next_hop: Option<IpAddr>,
}

/// What the session contributes to every UPDATE it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAttrs {
    /// Our AS.
    pub local_as: u32,
    /// The peer is in our AS.
    pub ibgp: bool,
    /// The peer announced the four-octet AS capability (otherwise AS_PATH uses two-octet ASNs,
    /// with AS_TRANS plus AS4_PATH when ours does not fit, RFC 6793 §4.2.2).
    pub four_octet_as: bool,
}

/// Encodes a prefix as length byte + the significant address bytes (RFC 4271 §4.3).
fn push_prefix(out: &mut Vec<u8>, prefix: &IpNet) {
    let len = prefix.prefix_len();
    out.push(len);
    let bytes = usize::from(len).div_ceil(8);
    match prefix.network() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..bytes]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..bytes]),
    }
}

fn prefix_wire_len(prefix: &IpNet) -> usize {
    1 + usize::from(prefix.prefix_len()).div_ceil(8)
}

fn push_attr(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) {
    if value.len() > 255 {
        out.extend_from_slice(&[flags | flag::EXTENDED_LENGTH, code]);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[flags, code, value.len() as u8]);
    }
    out.extend_from_slice(value);
}

/// Attributes split around MP_REACH_NLRI (type 14) so the message keeps ascending type order.
struct EncodedAttrs {
    below_mp: Vec<u8>,
    above_mp: Vec<u8>,
}

fn encode_attrs(
    session: &SessionAttrs,
    route: &RouteAttrs,
    v4_next_hop: Option<Ipv4Addr>,
) -> EncodedAttrs {
    let mut below = Vec::with_capacity(64);
    let origin = match route.origin {
        Origin::Igp => 0,
        Origin::Egp => 1,
        Origin::Incomplete => 2,
    };
    push_attr(&mut below, flag::TRANSITIVE, attr::ORIGIN, &[origin]);
    let mut as4_path = None;
    if session.ibgp {
        push_attr(&mut below, flag::TRANSITIVE, attr::AS_PATH, &[]);
    } else if session.four_octet_as {
        let mut seg = vec![AS_SEQUENCE, 1];
        seg.extend_from_slice(&session.local_as.to_be_bytes());
        push_attr(&mut below, flag::TRANSITIVE, attr::AS_PATH, &seg);
    } else {
        let two = u16::try_from(session.local_as).unwrap_or(wire::AS_TRANS);
        let mut seg = vec![AS_SEQUENCE, 1];
        seg.extend_from_slice(&two.to_be_bytes());
        push_attr(&mut below, flag::TRANSITIVE, attr::AS_PATH, &seg);
        if session.local_as > u32::from(u16::MAX) {
            let mut seg = vec![AS_SEQUENCE, 1];
            seg.extend_from_slice(&session.local_as.to_be_bytes());
            as4_path = Some(seg);
        }
    }
    if let Some(nh) = v4_next_hop {
        push_attr(&mut below, flag::TRANSITIVE, attr::NEXT_HOP, &nh.octets());
    }
    if session.ibgp {
        let pref = route.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
        push_attr(
            &mut below,
            flag::TRANSITIVE,
            attr::LOCAL_PREF,
            &pref.to_be_bytes(),
        );
    }
    if !route.communities.is_empty() {
        let value: Vec<u8> = route
            .communities
            .iter()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        push_attr(
            &mut below,
            flag::OPTIONAL | flag::TRANSITIVE,
            attr::COMMUNITIES,
            &value,
        );
    }
    let mut above = Vec::new();
    if let Some(seg) = as4_path {
        push_attr(
            &mut above,
            flag::OPTIONAL | flag::TRANSITIVE,
            attr::AS4_PATH,
            &seg,
        );
    }
    if !route.large_communities.is_empty() {
        let value: Vec<u8> = route
            .large_communities
            .iter()
            .flat_map(|c| [c.global, c.local1, c.local2])
            .flat_map(u32::to_be_bytes)
            .collect();
        push_attr(
            &mut above,
            flag::OPTIONAL | flag::TRANSITIVE,
            attr::LARGE_COMMUNITY,
            &value,
        );
    }
    EncodedAttrs {
        below_mp: below,
        above_mp: above,
    }
}

/// Errors building UPDATEs from caller-supplied data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The attributes alone do not fit in one UPDATE (thousands of communities).
    #[error("path attributes too large for one UPDATE ({0} bytes)")]
    AttributesTooLarge(usize),
}

/// Packs IPv4 announcements sharing `route`'s attributes into UPDATEs with NEXT_HOP `next_hop`.
pub fn announce_v4(
    session: &SessionAttrs,
    route: &RouteAttrs,
    next_hop: Ipv4Addr,
    prefixes: &[IpNet],
) -> Result<Vec<Vec<u8>>, BuildError> {
    let attrs = encode_attrs(session, route, Some(next_hop));
    let mut fixed = attrs.below_mp;
    fixed.extend_from_slice(&attrs.above_mp);
    let base = HEADER_LEN + 2 + 2 + fixed.len();
    if base + 5 > MAX_MESSAGE_LEN {
        return Err(BuildError::AttributesTooLarge(fixed.len()));
    }
    let mut out = Vec::new();
    for chunk in chunks_fitting(prefixes, MAX_MESSAGE_LEN - base) {
        let mut msg = Vec::with_capacity(MAX_MESSAGE_LEN);
        wire::push_header(&mut msg, MessageType::Update, HEADER_LEN);
        msg.extend_from_slice(&[0, 0]);
        msg.extend_from_slice(&(fixed.len() as u16).to_be_bytes());
        msg.extend_from_slice(&fixed);
        for p in chunk {
            push_prefix(&mut msg, p);
        }
        wire::fix_length(&mut msg);
        out.push(msg);
    }
    Ok(out)
}

/// Packs IPv6 announcements sharing `route`'s attributes into UPDATEs carrying MP_REACH_NLRI
/// with the global next hop `next_hop`.
pub fn announce_v6(
    session: &SessionAttrs,
    route: &RouteAttrs,
    next_hop: Ipv6Addr,
    prefixes: &[IpNet],
) -> Result<Vec<Vec<u8>>, BuildError> {
    let attrs = encode_attrs(session, route, None);
    // MP_REACH: flags, type, 2-byte length, AFI, SAFI, NH length, NH, reserved.
    const MP_FIXED: usize = 4 + 2 + 1 + 1 + 16 + 1;
    let base = HEADER_LEN + 4 + attrs.below_mp.len() + MP_FIXED + attrs.above_mp.len();
    if base + 17 > MAX_MESSAGE_LEN {
        return Err(BuildError::AttributesTooLarge(base - HEADER_LEN - 4));
    }
    let mut out = Vec::new();
    for chunk in chunks_fitting(prefixes, MAX_MESSAGE_LEN - base) {
        let mut mp = Vec::with_capacity(MAX_MESSAGE_LEN);
        mp.extend_from_slice(&AFI_IPV6.to_be_bytes());
        mp.push(SAFI_UNICAST);
        mp.push(16);
        mp.extend_from_slice(&next_hop.octets());
        mp.push(0);
        for p in chunk {
            push_prefix(&mut mp, p);
        }
        let mut all = attrs.below_mp.clone();
        push_mp(&mut all, attr::MP_REACH_NLRI, &mp);
        all.extend_from_slice(&attrs.above_mp);
        out.push(update_with_attrs(&all));
    }
    Ok(out)
}

/// MP_REACH/MP_UNREACH always with the extended-length flag, so their size never shifts the
/// packing arithmetic.
fn push_mp(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    out.extend_from_slice(&[flag::OPTIONAL | flag::EXTENDED_LENGTH, code]);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

fn update_with_attrs(attrs: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HEADER_LEN + 4 + attrs.len());
    wire::push_header(&mut msg, MessageType::Update, HEADER_LEN);
    msg.extend_from_slice(&[0, 0]);
    msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    msg.extend_from_slice(attrs);
    wire::fix_length(&mut msg);
    msg
}

/// Packs IPv4 withdrawals into the Withdrawn Routes field.
pub fn withdraw_v4(prefixes: &[IpNet]) -> Vec<Vec<u8>> {
    let base = HEADER_LEN + 4;
    chunks_fitting(prefixes, MAX_MESSAGE_LEN - base)
        .map(|chunk| {
            let mut withdrawn = Vec::new();
            for p in chunk {
                push_prefix(&mut withdrawn, p);
            }
            let mut msg = Vec::with_capacity(base + withdrawn.len());
            wire::push_header(&mut msg, MessageType::Update, HEADER_LEN);
            msg.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
            msg.extend_from_slice(&withdrawn);
            msg.extend_from_slice(&[0, 0]);
            wire::fix_length(&mut msg);
            msg
        })
        .collect()
}

/// Packs IPv6 withdrawals into MP_UNREACH_NLRI attributes.
pub fn withdraw_v6(prefixes: &[IpNet]) -> Vec<Vec<u8>> {
    let base = HEADER_LEN + 4 + 4 + 3;
    chunks_fitting(prefixes, MAX_MESSAGE_LEN - base)
        .map(|chunk| {
            let mut mp = AFI_IPV6.to_be_bytes().to_vec();
            mp.push(SAFI_UNICAST);
            for p in chunk {
                push_prefix(&mut mp, p);
            }
            let mut attrs = Vec::new();
            push_mp(&mut attrs, attr::MP_UNREACH_NLRI, &mp);
            update_with_attrs(&attrs)
        })
        .collect()
}

/// The End-of-RIB marker for IPv4 unicast: an empty UPDATE (RFC 4724 §2).
pub fn end_of_rib_v4() -> Vec<u8> {
    update_with_attrs(&[])
}

/// The End-of-RIB marker for IPv6 unicast: an UPDATE with an empty MP_UNREACH_NLRI.
pub fn end_of_rib_v6() -> Vec<u8> {
    let mut attrs = Vec::new();
    push_attr(
        &mut attrs,
        flag::OPTIONAL,
        attr::MP_UNREACH_NLRI,
        &[0, 2, SAFI_UNICAST],
    );
    update_with_attrs(&attrs)
}

/// Splits `prefixes` into consecutive runs whose encoded size fits in `room` bytes each.
fn chunks_fitting(prefixes: &[IpNet], room: usize) -> impl Iterator<Item = &[IpNet]> {
    let mut rest = prefixes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut used = 0;
        let mut n = 0;
        for p in rest {
            let len = prefix_wire_len(p);
            if used + len > room {
                break;
            }
            used += len;
            n += 1;
        }
        // `room` always holds at least one prefix (callers check), so `n >= 1`.
        let n = n.max(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_header;
    use proptest::prelude::*;

    fn ebgp() -> SessionAttrs {
        SessionAttrs {
            local_as: 65001,
            ibgp: false,
            four_octet_as: true,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn header(len: u16) -> Vec<u8> {
        let mut h = vec![0xff; 16];
        h.extend_from_slice(&len.to_be_bytes());
        h.push(2);
        h
    }

    #[test]
    fn ebgp_v4_announcement_matches_hand_checked_bytes() {
        let msgs = announce_v4(
            &ebgp(),
            &RouteAttrs::default(),
            Ipv4Addr::new(192, 0, 2, 1),
            &[net("203.0.113.10/32"), net("198.51.100.0/24")],
        )
        .unwrap();
        let mut want = header(52);
        want.extend_from_slice(&[0, 0, 0, 0x14]); // no withdrawals, 20 bytes of attributes
        want.extend_from_slice(&[0x40, 1, 1, 0]); // ORIGIN IGP
        want.extend_from_slice(&[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9]); // AS_SEQUENCE [65001]
        want.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]); // NEXT_HOP
        want.extend_from_slice(&[32, 203, 0, 113, 10, 24, 198, 51, 100]);
        assert_eq!(msgs, vec![want]);
    }

    #[test]
    fn as_path_segment_is_as_sequence_never_as_set() {
        let msg = &announce_v4(
            &ebgp(),
            &RouteAttrs::default(),
            Ipv4Addr::new(192, 0, 2, 1),
            &[net("203.0.113.10/32")],
        )
        .unwrap()[0];
        // AS_PATH attribute starts after header (19) + 4 + ORIGIN (4): flags, type, len, seg type.
        assert_eq!(&msg[27..31], &[0x40, 2, 6, AS_SEQUENCE]);
    }

    #[test]
    fn ibgp_v4_announcement_has_empty_as_path_local_pref_and_communities() {
        let session = SessionAttrs {
            ibgp: true,
            ..ebgp()
        };
        let route = RouteAttrs {
            local_pref: Some(200),
            communities: vec![0xfde9_0064],
            large_communities: vec![LargeCommunity {
                global: 65001,
                local1: 1,
                local2: 2,
            }],
            ..RouteAttrs::default()
        };
        let msgs = announce_v4(
            &session,
            &route,
            Ipv4Addr::new(192, 0, 2, 1),
            &[net("203.0.113.10/32")],
        )
        .unwrap();
        let mut want = header(19 + 4 + 43 + 5);
        want.extend_from_slice(&[0, 0, 0, 43]);
        want.extend_from_slice(&[0x40, 1, 1, 0]);
        want.extend_from_slice(&[0x40, 2, 0]); // empty AS_PATH
        want.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]);
        want.extend_from_slice(&[0x40, 5, 4, 0, 0, 0, 200]);
        want.extend_from_slice(&[0xc0, 8, 4, 0xfd, 0xe9, 0, 0x64]);
        want.extend_from_slice(&[0xc0, 32, 12, 0, 0, 0xfd, 0xe9, 0, 0, 0, 1, 0, 0, 0, 2]);
        want.extend_from_slice(&[32, 203, 0, 113, 10]);
        assert_eq!(msgs, vec![want]);
    }

    #[test]
    fn two_octet_peer_with_large_asn_gets_as_trans_and_as4_path() {
        let session = SessionAttrs {
            local_as: 4_200_000_000,
            ibgp: false,
            four_octet_as: false,
        };
        let msg = &announce_v4(
            &session,
            &RouteAttrs::default(),
            Ipv4Addr::new(192, 0, 2, 1),
            &[net("203.0.113.10/32")],
        )
        .unwrap()[0];
        assert!(msg.windows(7).any(|w| w == [0x40, 2, 4, 2, 1, 0x5b, 0xa0]));
        let as4 = [0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x00];
        assert!(msg.windows(as4.len()).any(|w| w == as4));
    }

    #[test]
    fn v6_announcement_uses_mp_reach_with_global_next_hop() {
        let nh: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let msgs = announce_v6(
            &ebgp(),
            &RouteAttrs::default(),
            nh,
            &[net("2001:db8:1::5/128")],
        )
        .unwrap();
        let mut want = header(19 + 4 + 13 + 4 + 21 + 17);
        want.extend_from_slice(&[0, 0, 0, 13 + 4 + 21 + 17]);
        want.extend_from_slice(&[0x40, 1, 1, 0]);
        want.extend_from_slice(&[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9]);
        want.extend_from_slice(&[0x90, 14, 0, 38, 0, 2, 1, 16]);
        want.extend_from_slice(&nh.octets());
        want.push(0);
        want.push(128);
        want.extend_from_slice(&"2001:db8:1::5".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(msgs, vec![want]);
    }

    #[test]
    fn withdrawals_use_withdrawn_routes_for_v4_and_mp_unreach_for_v6() {
        let mut want4 = header(28);
        want4.extend_from_slice(&[0, 5, 32, 203, 0, 113, 10, 0, 0]);
        assert_eq!(withdraw_v4(&[net("203.0.113.10/32")]), vec![want4]);
        let mut want6 = header(19 + 4 + 4 + 3 + 9);
        want6.extend_from_slice(&[0, 0, 0, 16, 0x90, 15, 0, 12, 0, 2, 1, 64]);
        want6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0]);
        assert_eq!(withdraw_v6(&[net("2001:db8:1::/64")]), vec![want6]);
    }

    #[test]
    fn end_of_rib_markers_match_rfc_4724() {
        let mut v4 = header(23);
        v4.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(end_of_rib_v4(), v4);
        let mut v6 = header(29);
        v6.extend_from_slice(&[0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]);
        assert_eq!(end_of_rib_v6(), v6);
    }

    #[test]
    fn ten_thousand_slash_32s_pack_into_full_updates() {
        let prefixes: Vec<IpNet> = (0..10_000u32)
            .map(|i| IpNet::new(IpAddr::V4(Ipv4Addr::from(0xc000_0000 + i)), 32).unwrap())
            .collect();
        let msgs = announce_v4(
            &ebgp(),
            &RouteAttrs::default(),
            Ipv4Addr::new(192, 0, 2, 1),
            &prefixes,
        )
        .unwrap();
        // (4096 - 19 - 4 - 20) / 5 = 810 prefixes per message.
        assert_eq!(msgs.len(), 10_000usize.div_ceil(810));
        assert!(msgs[..msgs.len() - 1].iter().all(|m| m.len() == 4096 - 3));
    }

    #[test]
    fn attributes_too_large_for_one_update_are_an_error() {
        let route = RouteAttrs {
            communities: vec![1; 1100],
            ..RouteAttrs::default()
        };
        assert!(matches!(
            announce_v4(
                &ebgp(),
                &route,
                Ipv4Addr::new(192, 0, 2, 1),
                &[net("203.0.113.1/32")]
            ),
            Err(BuildError::AttributesTooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn every_built_update_has_a_valid_header_and_carries_every_prefix_once(
            lens in proptest::collection::vec(0u8..=128, 1..1500),
            v6 in any::<bool>(),
            withdraw in any::<bool>(),
        ) {
            let prefixes: Vec<IpNet> = lens.iter().enumerate().map(|(i, &l)| {
                if v6 {
                    IpNet::new(IpAddr::V6(Ipv6Addr::from((i as u128) << 64 | 0x2001_0db8 << 96)), l).unwrap()
                } else {
                    IpNet::new(IpAddr::V4(Ipv4Addr::from(i as u32)), l % 33).unwrap()
                }
            }).collect();
            let msgs = match (v6, withdraw) {
                (false, false) => announce_v4(&ebgp(), &RouteAttrs::default(), Ipv4Addr::LOCALHOST, &prefixes).unwrap(),
                (true, false) => announce_v6(&ebgp(), &RouteAttrs::default(), Ipv6Addr::LOCALHOST, &prefixes).unwrap(),
                (false, true) => withdraw_v4(&prefixes),
                (true, true) => withdraw_v6(&prefixes),
            };
            let payload: usize = prefixes.iter().map(prefix_wire_len).sum();
            let mut carried = 0;
            for m in &msgs {
                let (kind, len) = check_header(m).unwrap().unwrap();
                prop_assert_eq!(kind, MessageType::Update);
                prop_assert_eq!(len, m.len());
                prop_assert!(wire::check_update(&m[HEADER_LEN..]).is_ok());
                let withdrawn = usize::from(u16::from_be_bytes([m[19], m[20]]));
                let attrs_len = usize::from(u16::from_be_bytes([m[21 + withdrawn], m[22 + withdrawn]]));
                let mp_len = |m: &[u8]| usize::from(u16::from_be_bytes([m[m.len() - 2], m[m.len() - 1]]));
                carried += match (v6, withdraw) {
                    (false, false) => m.len() - 23 - attrs_len,
                    (false, true) => withdrawn,
                    // MP_REACH follows ORIGIN (4 bytes) and AS_PATH (9 bytes).
                    (true, false) => mp_len(&m[..23 + 13 + 4]) - 21,
                    (true, true) => mp_len(&m[..27]) - 3,
                };
            }
            prop_assert_eq!(carried, payload);
        }
    }
}
