//! Typed, zero-copy views over the frames this crate sends and receives, in the style of
//! smoltcp's `wire`: Ethernet II with an optional 802.1Q tag, ARP for IPv4 over Ethernet, the
//! IPv6 fixed header, and the ICMPv6 Neighbor Solicitation / Advertisement messages with their
//! link-layer address options.
//!
//! Each protocol has two layers: a `Packet`/`Frame` view `T: AsRef<[u8]>` whose `new_checked`
//! validates every length, after which no accessor panics; and a `Repr` with `parse`, `emit` and
//! `buffer_len`. Field offsets are named ranges in a private `mod field`. Unknown codes survive a
//! parse as `Unknown(_)` variants.
//!
//! This module does no IO and keeps no state; it must never panic on any input bytes (a fuzz
//! target and property tests hold it to that).
//!
//! Follows RFC 826 (ARP), RFC 5227 §2.3 (ARP announcements), IEEE 802.1Q, RFC 8200 §3 (IPv6
//! header), RFC 4443 §2.3 (ICMPv6 checksum) and RFC 4861 §4.3, §4.4, §4.6.1 (NS, NA, link-layer
//! address options).

pub mod arp;
pub mod ethernet;
pub mod ipv6;
pub mod ndisc;

use std::fmt;

/// Why a frame could not be parsed, or was parsed and found invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header or the lengths it announces.
    #[error("truncated: {layer} needs {needed} bytes, got {got}")]
    Truncated {
        /// The protocol layer being read.
        layer: &'static str,
        /// Bytes the layer needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// ARP hardware type other than Ethernet (1).
    #[error("unsupported ARP hardware type {0}")]
    UnsupportedHardware(u16),
    /// ARP protocol type other than IPv4 (0x0800).
    #[error("unsupported ARP protocol type {0:#06x}")]
    UnsupportedProtocol(u16),
    /// ARP address lengths other than 6 (hardware) and 4 (protocol).
    #[error("unsupported ARP address lengths hlen={hlen} plen={plen}")]
    BadAddressLength {
        /// Hardware address length field.
        hlen: u8,
        /// Protocol address length field.
        plen: u8,
    },
    /// IPv6 version nibble other than 6.
    #[error("IPv6 header with version {0}")]
    BadVersion(u8),
    /// A header announced a payload type this crate does not handle.
    #[error("unexpected next header {0}")]
    UnexpectedNextHeader(u8),
    /// ICMPv6 message type other than NS (135) or NA (136).
    #[error("ICMPv6 type {0} is not neighbor discovery")]
    NotNeighborDiscovery(u8),
    /// Neighbor discovery message with an ICMPv6 code other than 0 (RFC 4861 §7.1.1).
    #[error("neighbor discovery with ICMPv6 code {0}")]
    BadCode(u8),
    /// ICMPv6 checksum does not match the pseudo-header and payload.
    #[error("bad ICMPv6 checksum")]
    BadChecksum,
    /// Neighbor discovery received with an IP hop limit other than 255 (RFC 4861 §7.1.1).
    #[error("neighbor discovery with hop limit {0}, not 255")]
    BadHopLimit(u8),
    /// A neighbor discovery option of length zero or running past the message.
    #[error("malformed neighbor discovery option")]
    BadOption,
    /// Neighbor Solicitation for a multicast target (RFC 4861 §7.1.1).
    #[error("neighbor solicitation for a multicast target")]
    MulticastTarget,
    /// A DAD solicitation (unspecified source) not sent to a solicited-node group, or carrying a
    /// source link-layer address option (RFC 4861 §7.1.1).
    #[error("invalid solicitation from the unspecified address")]
    BadDadSolicitation,
    /// The buffer handed to `emit` is too small.
    #[error("emit buffer too small: need {needed}, got {got}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
}

/// Returns `Truncated` unless `got >= needed`.
pub(crate) fn check_len(layer: &'static str, needed: usize, got: usize) -> Result<(), WireError> {
    if got < needed {
        Err(WireError::Truncated { layer, needed, got })
    } else {
        Ok(())
    }
}

/// Returns `BufferTooSmall` unless `got >= needed`.
pub(crate) fn check_room(needed: usize, got: usize) -> Result<(), WireError> {
    if got < needed {
        Err(WireError::BufferTooSmall { needed, got })
    } else {
        Ok(())
    }
}

/// A 48-bit IEEE 802 MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Self = Self([0; 6]);

    /// Reads a MAC from the first six bytes of `bytes`; `None` when shorter.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.get(..6)?.try_into().ok().map(Self)
    }

    /// True for group (multicast or broadcast) addresses: the I/G bit is set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The Ethernet multicast address an IPv6 multicast group maps to (RFC 2464 §7):
    /// 33:33 followed by the group's last four bytes.
    pub fn ipv6_multicast(group: std::net::Ipv6Addr) -> Self {
        let o = group.octets();
        Self([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Reads a big-endian u16 at `at`; callers have checked the length.
pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Writes a big-endian u16 at `at`; callers have checked the length.
pub(crate) fn write_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn any_mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }

    proptest! {
        #[test]
        fn views_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
            if let Ok(frame) = ethernet::Frame::new_checked(&bytes[..]) {
                let _ = ethernet::EthernetRepr::parse(&frame);
                let _ = frame.payload();
            }
            if let Ok(packet) = arp::Packet::new_checked(&bytes[..]) {
                let _ = arp::ArpRepr::parse(&packet);
                let _ = (packet.source_hardware_addr(), packet.target_protocol_addr());
            }
            if let Ok(packet) = ipv6::Packet::new_checked(&bytes[..]) {
                let _ = ndisc::NdiscRepr::parse_validated(&packet);
            }
            if let Ok(packet) = ndisc::Packet::new_checked(&bytes[..]) {
                let _ = ndisc::NdiscRepr::parse(&packet);
                let _ = packet.options().count();
            }
        }

        #[test]
        fn ethernet_emit_then_parse_roundtrips(
            dst in any_mac(), src in any_mac(), tci in any::<Option<u16>>(), ethertype in any::<u16>()
        ) {
            // 0x8100 as payload type would read as a second tag: not representable untagged.
            prop_assume!(ethertype != 0x8100);
            let repr = ethernet::EthernetRepr { dst, src, vlan_tci: tci, ethertype: ethertype.into() };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(ethernet::EthernetRepr::parse(&ethernet::Frame::new_checked(&buf[..]).unwrap()), repr);
        }

        #[test]
        fn arp_emit_then_parse_roundtrips(
            op in any::<u16>(), sha in any_mac(), spa in any::<[u8; 4]>(), tha in any_mac(), tpa in any::<[u8; 4]>()
        ) {
            let repr = arp::ArpRepr {
                operation: op.into(),
                source_hardware_addr: sha,
                source_protocol_addr: Ipv4Addr::from(spa),
                target_hardware_addr: tha,
                target_protocol_addr: Ipv4Addr::from(tpa),
            };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(arp::ArpRepr::parse(&arp::Packet::new_checked(&buf[..]).unwrap()), Ok(repr));
        }

        #[test]
        fn ndisc_emit_then_validated_parse_roundtrips(
            solicit in any::<bool>(), flags in any::<(bool, bool, bool)>(),
            src in any::<[u8; 16]>(), target in any::<[u8; 16]>(), lladdr in proptest::option::of(any_mac())
        ) {
            let target = Ipv6Addr::from(target);
            let src = Ipv6Addr::from(src);
            prop_assume!(!target.is_multicast() && !src.is_unspecified());
            let repr = if solicit {
                ndisc::NdiscRepr::NeighborSolicit { target, source_lladdr: lladdr }
            } else {
                ndisc::NdiscRepr::NeighborAdvert {
                    flags: ndisc::NeighborFlags { router: flags.0, solicited: flags.1, override_: flags.2 },
                    target,
                    target_lladdr: lladdr,
                }
            };
            let dst = ndisc::solicited_node(target);
            let ip = ipv6::Ipv6Repr {
                src, dst, next_header: ipv6::NEXT_HEADER_ICMPV6, hop_limit: 255,
                payload_len: repr.buffer_len() as u16,
            };
            let mut buf = vec![0u8; ip.buffer_len() + repr.buffer_len()];
            ip.emit(&mut buf).unwrap();
            repr.emit(src, dst, &mut buf[ipv6::HEADER_LEN..]).unwrap();
            let packet = ipv6::Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(ndisc::NdiscRepr::parse_validated(&packet), Ok((ip, repr)));
        }
    }

    #[test]
    fn ipv6_multicast_mac_keeps_the_last_four_bytes_of_the_group() {
        let group: std::net::Ipv6Addr = "ff02::1:ff00:64".parse().unwrap();
        assert_eq!(
            MacAddr::ipv6_multicast(group),
            MacAddr([0x33, 0x33, 0xff, 0x00, 0x00, 0x64])
        );
        assert!(MacAddr::ipv6_multicast(group).is_multicast());
        assert!(!MacAddr([2, 0, 0, 0, 0, 1]).is_multicast());
    }

    #[test]
    fn mac_displays_as_lowercase_colon_separated_hex() {
        assert_eq!(
            MacAddr([0x02, 0xab, 0, 1, 0x10, 0xff]).to_string(),
            "02:ab:00:01:10:ff"
        );
    }
}
