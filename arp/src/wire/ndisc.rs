//! ICMPv6 Neighbor Solicitation and Neighbor Advertisement (RFC 4861 §4.3, §4.4) with the
//! source/target link-layer address options (§4.6.1), and the receive-side validation of
//! RFC 4861 §7.1.1 / §7.1.2 (`parse_validated`).
//!
//! Options other than the link-layer address ones are skipped, as §4.6 requires; an option of
//! length zero or one running past the message makes the whole message invalid.

use std::net::Ipv6Addr;

use super::ipv6::{self, pseudo_header_sum, Ipv6Repr, NEXT_HEADER_ICMPV6};
use super::{check_len, check_room, write_u16, MacAddr, WireError};

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// NA flags (R, S, O); reserved in a NS.
    pub const FLAGS: usize = 4;
    pub const RESERVED: Range<usize> = 5..8;
    pub const TARGET: Range<usize> = 8..24;
    pub const OPTIONS: usize = 24;

    pub const OPTION_TYPE: usize = 0;
    pub const OPTION_LEN: usize = 1;
    pub const OPTION_DATA: usize = 2;
    /// Option lengths count units of this many bytes.
    pub const OPTION_UNIT: usize = 8;
}

/// ICMPv6 type of a Neighbor Solicitation.
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Option type: source link-layer address.
pub const OPTION_SOURCE_LLADDR: u8 = 1;
/// Option type: target link-layer address.
pub const OPTION_TARGET_LLADDR: u8 = 2;
/// The hop limit every neighbor discovery message is sent and must be received with.
pub const HOP_LIMIT: u8 = 255;

const NA_FLAG_ROUTER: u8 = 0x80;
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;
/// Length of a link-layer address option for Ethernet: one 8-byte unit.
const LLADDR_OPTION_LEN: usize = 8;

/// A view of a neighbor discovery ICMPv6 message (NS or NA).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer after checking it holds the fixed 24 bytes of a NS/NA. After this, no
    /// accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_len("neighbor discovery", field::OPTIONS, buffer.as_ref().len())?;
        Ok(Self { buffer })
    }

    /// ICMPv6 type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// ICMPv6 code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The flags byte (R, S, O in a NA).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Target address.
    pub fn target_addr(&self) -> Ipv6Addr {
        let mut octets = [0; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        Ipv6Addr::from(octets)
    }

    /// True when the ICMPv6 checksum is right for this pseudo-header.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        pseudo_header_sum(src, dst, NEXT_HEADER_ICMPV6, self.buffer.as_ref()) == 0xffff
    }

    /// The options, in order.
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.buffer.as_ref()[field::OPTIONS..],
        }
    }
}

/// One neighbor discovery option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdiscOption<'a> {
    /// Option type.
    pub kind: u8,
    /// Option bytes after the type and length.
    pub data: &'a [u8],
}

/// Iterator over neighbor discovery options; yields one error and stops on a bad length.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<NdiscOption<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = self
            .rest
            .get(field::OPTION_LEN)
            .map(|units| usize::from(*units) * field::OPTION_UNIT);
        match len {
            Some(len) if len > 0 && len <= self.rest.len() => {
                let (option, rest) = self.rest.split_at(len);
                self.rest = rest;
                Some(Ok(NdiscOption {
                    kind: option[field::OPTION_TYPE],
                    data: &option[field::OPTION_DATA..],
                }))
            }
            _ => {
                self.rest = &[];
                Some(Err(WireError::BadOption))
            }
        }
    }
}

/// Neighbor Advertisement flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NeighborFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: sent in response to a solicitation.
    pub solicited: bool,
    /// O: override an existing cache entry.
    pub override_: bool,
}

impl NeighborFlags {
    fn from_byte(byte: u8) -> Self {
        Self {
            router: byte & NA_FLAG_ROUTER != 0,
            solicited: byte & NA_FLAG_SOLICITED != 0,
            override_: byte & NA_FLAG_OVERRIDE != 0,
        }
    }

    fn to_byte(self) -> u8 {
        (if self.router { NA_FLAG_ROUTER } else { 0 })
            | (if self.solicited { NA_FLAG_SOLICITED } else { 0 })
            | (if self.override_ { NA_FLAG_OVERRIDE } else { 0 })
    }
}

/// A Neighbor Solicitation or Advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdiscRepr {
    /// RFC 4861 §4.3.
    NeighborSolicit {
        /// The address being resolved.
        target: Ipv6Addr,
        /// The solicitor's MAC, from the source link-layer address option.
        source_lladdr: Option<MacAddr>,
    },
    /// RFC 4861 §4.4.
    NeighborAdvert {
        /// R, S, O.
        flags: NeighborFlags,
        /// The address being advertised.
        target: Ipv6Addr,
        /// The advertiser's MAC, from the target link-layer address option.
        target_lladdr: Option<MacAddr>,
    },
}

fn lladdr_option<T: AsRef<[u8]>>(
    packet: &Packet<T>,
    wanted: u8,
) -> Result<Option<MacAddr>, WireError> {
    let mut found = None;
    for option in packet.options() {
        let option = option?;
        if option.kind == wanted && found.is_none() {
            found = Some(MacAddr::from_slice(option.data).ok_or(WireError::BadOption)?);
        }
    }
    Ok(found)
}

impl NdiscRepr {
    /// Interprets a checked message (type and code; options). The checksum is not looked at
    /// here: see `parse_validated`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, WireError> {
        let repr = match packet.msg_type() {
            TYPE_NEIGHBOR_SOLICIT => Self::NeighborSolicit {
                target: packet.target_addr(),
                source_lladdr: lladdr_option(packet, OPTION_SOURCE_LLADDR)?,
            },
            TYPE_NEIGHBOR_ADVERT => Self::NeighborAdvert {
                flags: NeighborFlags::from_byte(packet.flags()),
                target: packet.target_addr(),
                target_lladdr: lladdr_option(packet, OPTION_TARGET_LLADDR)?,
            },
            other => return Err(WireError::NotNeighborDiscovery(other)),
        };
        if packet.code() != 0 {
            return Err(WireError::BadCode(packet.code()));
        }
        Ok(repr)
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        let lladdr = match self {
            Self::NeighborSolicit { source_lladdr, .. } => source_lladdr,
            Self::NeighborAdvert { target_lladdr, .. } => target_lladdr,
        };
        field::OPTIONS
            + if lladdr.is_some() {
                LLADDR_OPTION_LEN
            } else {
                0
            }
    }

    /// Writes the message, checksum included for the given pseudo-header addresses, at the
    /// start of `buffer`.
    pub fn emit(&self, src: Ipv6Addr, dst: Ipv6Addr, buffer: &mut [u8]) -> Result<(), WireError> {
        let len = self.buffer_len();
        check_room(len, buffer.len())?;
        let buffer = &mut buffer[..len];
        let (msg_type, flags, target, option) = match *self {
            Self::NeighborSolicit {
                target,
                source_lladdr,
            } => (
                TYPE_NEIGHBOR_SOLICIT,
                0,
                target,
                source_lladdr.map(|mac| (OPTION_SOURCE_LLADDR, mac)),
            ),
            Self::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => (
                TYPE_NEIGHBOR_ADVERT,
                flags.to_byte(),
                target,
                target_lladdr.map(|mac| (OPTION_TARGET_LLADDR, mac)),
            ),
        };
        buffer[field::TYPE] = msg_type;
        buffer[field::CODE] = 0;
        buffer[field::CHECKSUM].fill(0);
        buffer[field::FLAGS] = flags;
        buffer[field::RESERVED].fill(0);
        buffer[field::TARGET].copy_from_slice(&target.octets());
        if let Some((kind, mac)) = option {
            let opt = &mut buffer[field::OPTIONS..field::OPTIONS + LLADDR_OPTION_LEN];
            opt[field::OPTION_TYPE] = kind;
            opt[field::OPTION_LEN] = (LLADDR_OPTION_LEN / field::OPTION_UNIT) as u8;
            opt[field::OPTION_DATA..].copy_from_slice(&mac.0);
        }
        let checksum = !pseudo_header_sum(src, dst, NEXT_HEADER_ICMPV6, buffer);
        write_u16(buffer, field::CHECKSUM.start, checksum);
        Ok(())
    }

    /// Parses and validates a neighbor discovery message carried in an IPv6 packet, applying
    /// RFC 4861 §7.1.1 (NS) and §7.1.2 (NA): ICMPv6 with no extension header and type NS or NA
    /// (anything else is `UnexpectedNextHeader` / `NotNeighborDiscovery`, not malformed), hop limit 255,
    /// correct checksum, code 0, at least 24 bytes, well-formed options, a unicast NS target, and
    /// for a solicitation from the unspecified address a solicited-node destination and no
    /// source link-layer address option.
    pub fn parse_validated<T: AsRef<[u8]>>(
        ip: &ipv6::Packet<T>,
    ) -> Result<(Ipv6Repr, Self), WireError> {
        let ip_repr = Ipv6Repr::parse(ip);
        if ip_repr.next_header != NEXT_HEADER_ICMPV6 {
            return Err(WireError::UnexpectedNextHeader(ip_repr.next_header));
        }
        // Tell other ICMPv6 traffic apart before judging it by neighbor discovery's rules.
        match ip.payload().first() {
            Some(&(TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT)) => {}
            Some(&other) => return Err(WireError::NotNeighborDiscovery(other)),
            None => check_len("icmpv6", 1, 0)?,
        }
        if ip_repr.hop_limit != HOP_LIMIT {
            return Err(WireError::BadHopLimit(ip_repr.hop_limit));
        }
        let packet = Packet::new_checked(ip.payload())?;
        if !packet.verify_checksum(ip_repr.src, ip_repr.dst) {
            return Err(WireError::BadChecksum);
        }
        let repr = Self::parse(&packet)?;
        if let Self::NeighborSolicit {
            target,
            source_lladdr,
        } = repr
        {
            if target.is_multicast() {
                return Err(WireError::MulticastTarget);
            }
            if ip_repr.src.is_unspecified()
                && (source_lladdr.is_some() || !is_solicited_node(ip_repr.dst))
            {
                return Err(WireError::BadDadSolicitation);
            }
        }
        Ok((ip_repr, repr))
    }
}

/// The solicited-node multicast group of an address (RFC 4291 §2.7.1): ff02::1:ff00:0/104 plus
/// the address's low 24 bits.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// True for an address inside ff02::1:ff00:0/104.
pub fn is_solicited_node(addr: Ipv6Addr) -> bool {
    addr.octets()[..13] == solicited_node(Ipv6Addr::UNSPECIFIED).octets()[..13]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NS from 2001:db8::a (02:00:00:00:00:0a) for 2001:db8::64, sent to ff02::1:ff00:64;
    /// checksum computed independently.
    const SOLICIT: [u8; 32] = [
        135, 0, 0x1b, 0x51, 0, 0, 0, 0, // type, code, checksum, reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64, // target
        1, 1, 0x02, 0, 0, 0, 0, 0x0a, // source link-layer address
    ];

    /// Solicited NA (S, O) from 2001:db8::64 (02:00:00:00:00:0b) to 2001:db8::a.
    const ADVERT: [u8; 32] = [
        136, 0, 0x89, 0x9b, 0x60, 0, 0, 0, // type, code, checksum, flags S|O
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64, // target
        2, 1, 0x02, 0, 0, 0, 0, 0x0b, // target link-layer address
    ];

    fn addr(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    #[test]
    fn solicitation_deconstructs_and_has_a_valid_checksum() {
        let packet = Packet::new_checked(&SOLICIT[..]).unwrap();
        assert_eq!(packet.msg_type(), TYPE_NEIGHBOR_SOLICIT);
        assert_eq!(packet.target_addr(), addr("2001:db8::64"));
        assert!(packet.verify_checksum(addr("2001:db8::a"), addr("ff02::1:ff00:64")));
        assert!(!packet.verify_checksum(addr("2001:db8::b"), addr("ff02::1:ff00:64")));
        assert_eq!(
            NdiscRepr::parse(&packet),
            Ok(NdiscRepr::NeighborSolicit {
                target: addr("2001:db8::64"),
                source_lladdr: Some(MacAddr([2, 0, 0, 0, 0, 0x0a])),
            })
        );
    }

    #[test]
    fn advert_emits_the_fixture_bytes_with_checksum() {
        let repr = NdiscRepr::NeighborAdvert {
            flags: NeighborFlags {
                router: false,
                solicited: true,
                override_: true,
            },
            target: addr("2001:db8::64"),
            target_lladdr: Some(MacAddr([2, 0, 0, 0, 0, 0x0b])),
        };
        let mut out = [0u8; 32];
        repr.emit(addr("2001:db8::64"), addr("2001:db8::a"), &mut out)
            .unwrap();
        assert_eq!(out, ADVERT);
        assert_eq!(
            NdiscRepr::parse(&Packet::new_checked(&out[..]).unwrap()),
            Ok(repr)
        );
    }

    #[test]
    fn zero_length_option_is_malformed() {
        let mut bytes = SOLICIT;
        bytes[25] = 0;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(NdiscRepr::parse(&packet), Err(WireError::BadOption));
    }

    #[test]
    fn option_running_past_the_message_is_malformed() {
        let mut bytes = SOLICIT;
        bytes[25] = 2;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(NdiscRepr::parse(&packet), Err(WireError::BadOption));
    }

    #[test]
    fn unknown_options_are_skipped() {
        let mut bytes = [0u8; 40];
        bytes[..24].copy_from_slice(&SOLICIT[..24]);
        bytes[24..32].copy_from_slice(&[14, 1, 9, 9, 9, 9, 9, 9]); // nonce option
        bytes[32..].copy_from_slice(&SOLICIT[24..]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(matches!(
            NdiscRepr::parse(&packet),
            Ok(NdiscRepr::NeighborSolicit {
                source_lladdr: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn other_icmpv6_types_and_nonzero_codes_are_rejected() {
        let mut bytes = SOLICIT;
        bytes[0] = 128; // echo request
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            NdiscRepr::parse(&packet),
            Err(WireError::NotNeighborDiscovery(128))
        );
        let mut bytes = SOLICIT;
        bytes[1] = 1;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(NdiscRepr::parse(&packet), Err(WireError::BadCode(1)));
    }

    fn wrap(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, msg: &[u8]) -> Vec<u8> {
        let ip = Ipv6Repr {
            src,
            dst,
            next_header: NEXT_HEADER_ICMPV6,
            hop_limit,
            payload_len: msg.len() as u16,
        };
        let mut out = vec![0u8; 40 + msg.len()];
        ip.emit(&mut out).unwrap();
        out[40..].copy_from_slice(msg);
        out
    }

    #[test]
    fn validated_parse_accepts_the_fixture() {
        let bytes = wrap(addr("2001:db8::a"), addr("ff02::1:ff00:64"), 255, &SOLICIT);
        let ip = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        assert!(NdiscRepr::parse_validated(&ip).is_ok());
    }

    #[test]
    fn validated_parse_rejects_hop_limit_below_255() {
        let bytes = wrap(addr("2001:db8::a"), addr("ff02::1:ff00:64"), 64, &SOLICIT);
        let ip = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            NdiscRepr::parse_validated(&ip),
            Err(WireError::BadHopLimit(64))
        );
    }

    #[test]
    fn validated_parse_rejects_a_flipped_checksum_bit() {
        let mut msg = SOLICIT;
        msg[3] ^= 0x01;
        let bytes = wrap(addr("2001:db8::a"), addr("ff02::1:ff00:64"), 255, &msg);
        let ip = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(NdiscRepr::parse_validated(&ip), Err(WireError::BadChecksum));
    }

    #[test]
    fn validated_parse_rejects_dad_probe_with_source_lladdr() {
        let repr = NdiscRepr::NeighborSolicit {
            target: addr("2001:db8::64"),
            source_lladdr: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        };
        let dst = solicited_node(addr("2001:db8::64"));
        let mut msg = [0u8; 32];
        repr.emit(Ipv6Addr::UNSPECIFIED, dst, &mut msg).unwrap();
        let bytes = wrap(Ipv6Addr::UNSPECIFIED, dst, 255, &msg);
        let ip = ipv6::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            NdiscRepr::parse_validated(&ip),
            Err(WireError::BadDadSolicitation)
        );
    }

    #[test]
    fn solicited_node_group_keeps_the_low_24_bits() {
        assert_eq!(
            solicited_node(addr("2001:db8::12:3456")),
            addr("ff02::1:ff12:3456")
        );
        assert!(is_solicited_node(addr("ff02::1:ff12:3456")));
        assert!(!is_solicited_node(addr("ff02::1")));
    }
}
