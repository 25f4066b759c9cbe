//! Whole Ethernet frames this crate sends: gratuitous ARP (RFC 5227 §2.3 announcements, sent as a
//! broadcast request and, per §3, a broadcast reply, the way MetalLB and `arping -U`/`-A` do), unsolicited
//! Neighbor Advertisements (RFC 4861 §7.2.6), and the requests a client sends (used by tests and
//! benchmarks to play the client).
//!
//! Pure functions of their arguments: no IO, no clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::arp::{ArpRepr, Operation};
use crate::wire::ethernet::{EtherType, EthernetRepr};
use crate::wire::ipv6::{Ipv6Repr, NEXT_HEADER_ICMPV6};
use crate::wire::ndisc::{self, NdiscRepr, NeighborFlags};
use crate::wire::MacAddr;

/// All-nodes multicast, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Builds Ethernet + ARP. Buffers are sized from `buffer_len`, so emitting cannot fail.
pub(crate) fn arp_frame(eth: EthernetRepr, arp: &ArpRepr) -> Vec<u8> {
    let header = eth.buffer_len();
    let mut frame = vec![0u8; header + arp.buffer_len()];
    eth.emit(&mut frame).expect("buffer sized by buffer_len");
    arp.emit(&mut frame[header..])
        .expect("buffer sized by buffer_len");
    frame
}

/// Builds Ethernet + IPv6 (hop limit 255) + a neighbor discovery message.
pub(crate) fn ndisc_frame(
    eth: EthernetRepr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    message: &NdiscRepr,
) -> Vec<u8> {
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: NEXT_HEADER_ICMPV6,
        hop_limit: ndisc::HOP_LIMIT,
        // A NS/NA with one option is 32 bytes.
        payload_len: message.buffer_len() as u16,
    };
    let eth_len = eth.buffer_len();
    let ip_end = eth_len + ip.buffer_len();
    let mut frame = vec![0u8; ip_end + message.buffer_len()];
    eth.emit(&mut frame).expect("buffer sized by buffer_len");
    ip.emit(&mut frame[eth_len..])
        .expect("buffer sized by buffer_len");
    message
        .emit(src, dst, &mut frame[ip_end..])
        .expect("buffer sized by buffer_len");
    frame
}

/// A gratuitous ARP: broadcast, sender = target = `vip`, sender hardware address `mac`. The
/// request carries a zero target hardware address (RFC 5227 §2.3); the reply carries `mac` there,
/// which Linux requires before it treats a reply as gratuitous (`arp_is_garp`).
pub fn gratuitous_arp(mac: MacAddr, vip: Ipv4Addr, operation: Operation) -> Vec<u8> {
    let eth = EthernetRepr {
        dst: MacAddr::BROADCAST,
        src: mac,
        vlan_tci: None,
        ethertype: EtherType::Arp,
    };
    let target_hardware_addr = match operation {
        Operation::Reply => mac,
        Operation::Request | Operation::Unknown(_) => MacAddr::ZERO,
    };
    let arp = ArpRepr {
        operation,
        source_hardware_addr: mac,
        source_protocol_addr: vip,
        target_hardware_addr,
        target_protocol_addr: vip,
    };
    arp_frame(eth, &arp)
}

/// An unsolicited Neighbor Advertisement for `vip` to all-nodes (ff02::1, 33:33:00:00:00:01):
/// Override set, Solicited clear, target link-layer address option `mac`.
pub fn unsolicited_advert(mac: MacAddr, vip: Ipv6Addr) -> Vec<u8> {
    let eth = EthernetRepr {
        dst: MacAddr::ipv6_multicast(ALL_NODES),
        src: mac,
        vlan_tci: None,
        ethertype: EtherType::Ipv6,
    };
    let message = NdiscRepr::NeighborAdvert {
        flags: NeighborFlags {
            router: false,
            solicited: false,
            override_: true,
        },
        target: vip,
        target_lladdr: Some(mac),
    };
    ndisc_frame(eth, vip, ALL_NODES, &message)
}

/// One announcement round for `vip`: the ARP request and reply for IPv4, the unsolicited NA for
/// IPv6.
pub fn announcement(mac: MacAddr, vip: IpAddr) -> Vec<Vec<u8>> {
    match vip {
        IpAddr::V4(v4) => vec![
            gratuitous_arp(mac, v4, Operation::Request),
            gratuitous_arp(mac, v4, Operation::Reply),
        ],
        IpAddr::V6(v6) => vec![unsolicited_advert(mac, v6)],
    }
}

/// A broadcast ARP request from (`mac`, `sender`) for `target`, as a client sends it.
pub fn arp_request(mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let eth = EthernetRepr {
        dst: MacAddr::BROADCAST,
        src: mac,
        vlan_tci: None,
        ethertype: EtherType::Arp,
    };
    let arp = ArpRepr {
        operation: Operation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: sender,
        target_hardware_addr: MacAddr::ZERO,
        target_protocol_addr: target,
    };
    arp_frame(eth, &arp)
}

/// A multicast Neighbor Solicitation from (`mac`, `sender`) for `target`, sent to the target's
/// solicited-node group with a source link-layer address option, as a client sends it.
pub fn neighbor_solicit(mac: MacAddr, sender: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = ndisc::solicited_node(target);
    let eth = EthernetRepr {
        dst: MacAddr::ipv6_multicast(group),
        src: mac,
        vlan_tci: None,
        ethertype: EtherType::Ipv6,
    };
    let message = NdiscRepr::NeighborSolicit {
        target,
        source_lladdr: Some(mac),
    };
    ndisc_frame(eth, sender, group, &message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ethernet, ipv6};

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

    #[test]
    fn gratuitous_request_matches_the_rfc5227_announcement_bytes() {
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 100), Operation::Request);
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 1,
            0x02, 0, 0, 0, 0, 0x0b, 192, 0, 2, 100,
            0, 0, 0, 0, 0, 0, 192, 0, 2, 100,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn gratuitous_reply_repeats_the_sender_mac_as_target() {
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 100), Operation::Reply);
        assert_eq!(&frame[20..22], &[0, 2]);
        assert_eq!(&frame[32..38], &MAC.0);
        assert_eq!(&frame[0..6], &MacAddr::BROADCAST.0);
    }

    #[test]
    fn unsolicited_advert_goes_to_all_nodes_with_override_and_valid_checksum() {
        let vip: Ipv6Addr = "2001:db8::64".parse().unwrap();
        let frame = unsolicited_advert(MAC, vip);
        let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.dst_addr(), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
        let (ip_repr, repr) = NdiscRepr::parse_validated(&ip).unwrap();
        assert_eq!((ip_repr.src, ip_repr.dst), (vip, ALL_NODES));
        assert_eq!(
            repr,
            NdiscRepr::NeighborAdvert {
                flags: NeighborFlags {
                    router: false,
                    solicited: false,
                    override_: true
                },
                target: vip,
                target_lladdr: Some(MAC),
            }
        );
    }

    #[test]
    fn announcement_round_is_two_frames_for_ipv4_and_one_for_ipv6() {
        assert_eq!(announcement(MAC, "192.0.2.1".parse().unwrap()).len(), 2);
        assert_eq!(announcement(MAC, "2001:db8::1".parse().unwrap()).len(), 1);
    }
}
