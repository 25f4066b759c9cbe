//! The responder's decision: one received frame in, at most one reply frame out.
//!
//! Pure: it is given the frame, the interface's MAC and the set of owned addresses, and touches
//! no socket and no clock. It must never panic on any bytes (property tests and a fuzz target
//! hold it to that) and must answer nothing but well-formed requests for owned addresses.
//!
//! ARP (RFC 826, RFC 5227 §2.3): a request (probe included) whose target protocol address is
//! owned gets a unicast reply to the sender; announcements (sender = target), replies and other
//! operations are ignored. NDP (RFC 4861 §7.1.1, §7.2.3, §7.2.4): a valid Neighbor Solicitation
//! for an owned target gets a solicited advertisement (S and O set, target link-layer address
//! option) to the solicitor; a DAD probe from the unspecified address gets an advertisement to
//! all-nodes with S clear, as §7.2.4 requires. A reply keeps the request's 802.1Q tag.

use std::net::{IpAddr, Ipv6Addr};

use crate::frames::{self, ALL_NODES};
use crate::wire::arp::{self, ArpRepr, Operation};
use crate::wire::ethernet::{self, EtherType, EthernetRepr};
use crate::wire::ndisc::{NdiscRepr, NeighborFlags};
use crate::wire::{ipv6, MacAddr, WireError};

/// Why a well-formed frame gets no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Sent from this interface's own MAC.
    OwnFrame,
    /// Neither ARP nor IPv6, or IPv6 that is not neighbor discovery.
    OtherTraffic,
    /// ARP reply, announcement, other ARP operation, or a Neighbor Advertisement.
    NotARequest,
    /// A request for an address this node does not own (counted as a request received).
    NotOwned(IpAddr),
}

/// What to do with one received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send `frame` back on the interface it came from: it answers a request for `vip`.
    Reply {
        /// The owned address asked for.
        vip: IpAddr,
        /// The reply, a whole Ethernet frame.
        frame: Vec<u8>,
    },
    /// Drop silently.
    Ignore(Ignored),
    /// Drop and count as malformed.
    Malformed(WireError),
}

impl Verdict {
    /// True for an ARP request or Neighbor Solicitation, owned or not (what the
    /// "requests received" counter counts).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Self::Reply { .. } | Self::Ignore(Ignored::NotOwned(_))
        )
    }
}

/// Decides the answer to `frame`, received on an interface whose MAC is `mac`, where `owns`
/// says whether this node currently owns an address on that interface.
pub fn respond(frame: &[u8], mac: MacAddr, owns: impl Fn(IpAddr) -> bool) -> Verdict {
    let eth = match ethernet::Frame::new_checked(frame) {
        Ok(eth) => eth,
        Err(error) => return Verdict::Malformed(error),
    };
    let eth_repr = EthernetRepr::parse(&eth);
    if eth_repr.src == mac {
        return Verdict::Ignore(Ignored::OwnFrame);
    }
    match eth_repr.ethertype {
        EtherType::Arp => respond_arp(&eth_repr, eth.payload(), mac, owns),
        EtherType::Ipv6 => respond_ndisc(&eth_repr, eth.payload(), mac, owns),
        EtherType::Ipv4 | EtherType::Vlan | EtherType::Unknown(_) => {
            Verdict::Ignore(Ignored::OtherTraffic)
        }
    }
}

fn respond_arp(
    eth: &EthernetRepr,
    payload: &[u8],
    mac: MacAddr,
    owns: impl Fn(IpAddr) -> bool,
) -> Verdict {
    let request = match arp::Packet::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) {
        Ok(request) => request,
        Err(error) => return Verdict::Malformed(error),
    };
    if request.operation != Operation::Request
        || request.source_protocol_addr == request.target_protocol_addr
    {
        return Verdict::Ignore(Ignored::NotARequest);
    }
    let vip = request.target_protocol_addr;
    if !owns(IpAddr::V4(vip)) {
        return Verdict::Ignore(Ignored::NotOwned(IpAddr::V4(vip)));
    }
    let reply_eth = EthernetRepr {
        dst: eth.src,
        src: mac,
        vlan_tci: eth.vlan_tci,
        ethertype: EtherType::Arp,
    };
    let reply = ArpRepr {
        operation: Operation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: vip,
        target_hardware_addr: request.source_hardware_addr,
        target_protocol_addr: request.source_protocol_addr,
    };
    Verdict::Reply {
        vip: IpAddr::V4(vip),
        frame: frames::arp_frame(reply_eth, &reply),
    }
}

fn respond_ndisc(
    eth: &EthernetRepr,
    payload: &[u8],
    mac: MacAddr,
    owns: impl Fn(IpAddr) -> bool,
) -> Verdict {
    let parsed = ipv6::Packet::new_checked(payload).and_then(|ip| NdiscRepr::parse_validated(&ip));
    let (ip, message) = match parsed {
        Ok(parsed) => parsed,
        Err(WireError::UnexpectedNextHeader(_) | WireError::NotNeighborDiscovery(_)) => {
            return Verdict::Ignore(Ignored::OtherTraffic)
        }
        Err(error) => return Verdict::Malformed(error),
    };
    let (target, source_lladdr) = match message {
        NdiscRepr::NeighborSolicit {
            target,
            source_lladdr,
        } => (target, source_lladdr),
        NdiscRepr::NeighborAdvert { .. } => return Verdict::Ignore(Ignored::NotARequest),
    };
    if !owns(IpAddr::V6(target)) {
        return Verdict::Ignore(Ignored::NotOwned(IpAddr::V6(target)));
    }
    // §7.2.4: to the solicitor, or to all-nodes (S clear) when it has no address yet.
    let (dst_ip, dst_mac, solicited): (Ipv6Addr, MacAddr, bool) = if ip.src.is_unspecified() {
        (ALL_NODES, MacAddr::ipv6_multicast(ALL_NODES), false)
    } else {
        (ip.src, source_lladdr.unwrap_or(eth.src), true)
    };
    let reply_eth = EthernetRepr {
        dst: dst_mac,
        src: mac,
        vlan_tci: eth.vlan_tci,
        ethertype: EtherType::Ipv6,
    };
    let advert = NdiscRepr::NeighborAdvert {
        flags: NeighborFlags {
            router: false,
            solicited,
            override_: true,
        },
        target,
        target_lladdr: Some(mac),
    };
    Verdict::Reply {
        vip: IpAddr::V6(target),
        frame: frames::ndisc_frame(reply_eth, target, dst_ip, &advert),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ndisc::solicited_node;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const US: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    fn owns_100(ip: IpAddr) -> bool {
        ip == IpAddr::V4(v4("192.0.2.100")) || ip == IpAddr::V6(v6("2001:db8::64"))
    }

    #[test]
    fn arp_request_for_owned_address_gets_unicast_reply_from_our_mac() {
        let request = frames::arp_request(CLIENT, v4("192.0.2.10"), v4("192.0.2.100"));
        let Verdict::Reply { vip, frame } = respond(&request, US, owns_100) else {
            panic!("expected a reply");
        };
        assert_eq!(vip, IpAddr::V4(v4("192.0.2.100")));
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 2,
            0x02, 0, 0, 0, 0, 0x0b, 192, 0, 2, 100,
            0x02, 0, 0, 0, 0, 0x0a, 192, 0, 2, 10,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn arp_request_for_other_address_is_not_answered_but_counted_as_request() {
        let request = frames::arp_request(CLIENT, v4("192.0.2.10"), v4("192.0.2.101"));
        let verdict = respond(&request, US, owns_100);
        assert_eq!(
            verdict,
            Verdict::Ignore(Ignored::NotOwned(IpAddr::V4(v4("192.0.2.101"))))
        );
        assert!(verdict.is_request());
    }

    #[test]
    fn tagged_arp_request_gets_reply_with_the_same_tag() {
        let untagged = frames::arp_request(CLIENT, v4("192.0.2.10"), v4("192.0.2.100"));
        let mut tagged = untagged[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&untagged[12..]);
        let Verdict::Reply { frame, .. } = respond(&tagged, US, owns_100) else {
            panic!("expected a reply");
        };
        assert_eq!(&frame[12..18], &[0x81, 0x00, 0x00, 0x64, 0x08, 0x06]);
    }

    #[test]
    fn announcements_replies_and_own_frames_are_ignored() {
        let garp = frames::gratuitous_arp(CLIENT, v4("192.0.2.100"), Operation::Request);
        assert_eq!(
            respond(&garp, US, owns_100),
            Verdict::Ignore(Ignored::NotARequest)
        );
        let reply = frames::gratuitous_arp(CLIENT, v4("192.0.2.100"), Operation::Reply);
        assert_eq!(
            respond(&reply, US, owns_100),
            Verdict::Ignore(Ignored::NotARequest)
        );
        let ours = frames::arp_request(US, v4("192.0.2.10"), v4("192.0.2.100"));
        assert_eq!(
            respond(&ours, US, owns_100),
            Verdict::Ignore(Ignored::OwnFrame)
        );
    }

    #[test]
    fn arp_with_wrong_types_or_lengths_is_malformed() {
        let good = frames::arp_request(CLIENT, v4("192.0.2.10"), v4("192.0.2.100"));
        let cases: [(usize, u8); 4] = [(15, 6), (16, 0x86), (18, 8), (19, 16)];
        for (at, value) in cases {
            let mut bad = good.clone();
            bad[at] = value;
            assert!(
                matches!(respond(&bad, US, owns_100), Verdict::Malformed(_)),
                "byte {at} = {value}"
            );
        }
        assert!(matches!(
            respond(&good[..41], US, owns_100),
            Verdict::Malformed(WireError::Truncated { .. })
        ));
        assert!(matches!(
            respond(&good[..10], US, owns_100),
            Verdict::Malformed(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn solicitation_for_owned_address_gets_solicited_override_advert_to_solicitor() {
        let ns = frames::neighbor_solicit(CLIENT, v6("2001:db8::a"), v6("2001:db8::64"));
        let Verdict::Reply { frame, .. } = respond(&ns, US, owns_100) else {
            panic!("expected a reply");
        };
        let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.dst_addr(), CLIENT);
        assert_eq!(eth.src_addr(), US);
        let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        let (ip_repr, advert) = NdiscRepr::parse_validated(&ip).unwrap();
        assert_eq!(ip_repr.src, v6("2001:db8::64"));
        assert_eq!(ip_repr.dst, v6("2001:db8::a"));
        assert_eq!(
            advert,
            NdiscRepr::NeighborAdvert {
                flags: NeighborFlags {
                    router: false,
                    solicited: true,
                    override_: true
                },
                target: v6("2001:db8::64"),
                target_lladdr: Some(US),
            }
        );
    }

    #[test]
    fn dad_probe_for_owned_address_is_answered_to_all_nodes_unsolicited() {
        let target = v6("2001:db8::64");
        let group = solicited_node(target);
        let eth = EthernetRepr {
            dst: MacAddr::ipv6_multicast(group),
            src: CLIENT,
            vlan_tci: None,
            ethertype: EtherType::Ipv6,
        };
        let probe = NdiscRepr::NeighborSolicit {
            target,
            source_lladdr: None,
        };
        let frame = frames::ndisc_frame(eth, Ipv6Addr::UNSPECIFIED, group, &probe);
        let Verdict::Reply { frame, .. } = respond(&frame, US, owns_100) else {
            panic!("expected a reply");
        };
        let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
        let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
        let (ip_repr, advert) = NdiscRepr::parse_validated(&ip).unwrap();
        assert_eq!(ip_repr.dst, ALL_NODES);
        assert!(matches!(
            advert,
            NdiscRepr::NeighborAdvert {
                flags: NeighborFlags {
                    solicited: false,
                    override_: true,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn solicitation_with_bad_checksum_or_hop_limit_is_malformed() {
        let ns = frames::neighbor_solicit(CLIENT, v6("2001:db8::a"), v6("2001:db8::64"));
        let mut bad_sum = ns.clone();
        bad_sum[14 + 40 + 2] ^= 0xff;
        assert_eq!(
            respond(&bad_sum, US, owns_100),
            Verdict::Malformed(WireError::BadChecksum)
        );
        let mut bad_hops = ns.clone();
        bad_hops[14 + 7] = 64;
        assert_eq!(
            respond(&bad_hops, US, owns_100),
            Verdict::Malformed(WireError::BadHopLimit(64))
        );
    }

    #[test]
    fn solicitation_for_other_address_and_adverts_are_not_answered() {
        let ns = frames::neighbor_solicit(CLIENT, v6("2001:db8::a"), v6("2001:db8::65"));
        assert!(matches!(
            respond(&ns, US, owns_100),
            Verdict::Ignore(Ignored::NotOwned(_))
        ));
        let na = frames::unsolicited_advert(CLIENT, v6("2001:db8::64"));
        assert_eq!(
            respond(&na, US, owns_100),
            Verdict::Ignore(Ignored::NotARequest)
        );
    }

    proptest! {
        #[test]
        fn respond_never_panics_and_only_answers_owned_requests(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            if let Verdict::Reply { vip, .. } = respond(&bytes, US, owns_100) {
                prop_assert!(owns_100(vip));
            }
        }

        #[test]
        fn mutated_requests_never_panic(
            byte in 0usize..86,
            value in any::<u8>(),
            cut in 0usize..90,
            v6_frame in any::<bool>(),
        ) {
            let mut frame = if v6_frame {
                frames::neighbor_solicit(CLIENT, v6("2001:db8::a"), v6("2001:db8::64"))
            } else {
                frames::arp_request(CLIENT, v4("192.0.2.10"), v4("192.0.2.100"))
            };
            if let Some(slot) = frame.get_mut(byte) {
                *slot = value;
            }
            frame.truncate(cut);
            let _ = respond(&frame, US, owns_100);
        }

        #[test]
        fn any_arp_request_for_an_owned_address_is_answered_to_its_sender(
            sender_mac in any::<[u8; 6]>(),
            sender_ip in any::<[u8; 4]>(),
        ) {
            let sender_mac = MacAddr(sender_mac);
            let sender_ip = Ipv4Addr::from(sender_ip);
            prop_assume!(sender_mac != US && sender_ip != v4("192.0.2.100"));
            let request = frames::arp_request(sender_mac, sender_ip, v4("192.0.2.100"));
            let Verdict::Reply { frame, .. } = respond(&request, US, owns_100) else {
                return Err(TestCaseError::fail("no reply"));
            };
            let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
            prop_assert_eq!(eth.dst_addr(), sender_mac);
            let reply = ArpRepr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
            prop_assert_eq!(reply.target_protocol_addr, sender_ip);
            prop_assert_eq!(reply.source_hardware_addr, US);
        }
    }
}
