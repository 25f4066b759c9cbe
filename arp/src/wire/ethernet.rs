//! Ethernet II frames with at most one IEEE 802.1Q tag.
//!
//! A tagged frame's `ethertype()` is the inner one; the tag control information (priority,
//! DEI, VLAN id) is kept whole so a reply can carry the same tag back. Stacked tags (QinQ) are
//! reported as the inner ethertype `0x8100`/`0x88a8`, which no caller of this crate handles.

use super::{check_len, check_room, read_u16, write_u16, MacAddr, WireError};

mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    /// Tag control information, present when `ETHERTYPE` holds 0x8100.
    pub const TCI: usize = 14;
    /// The inner ethertype of a tagged frame.
    pub const INNER_ETHERTYPE: usize = 16;
    pub const UNTAGGED_HEADER_LEN: usize = 14;
    pub const TAGGED_HEADER_LEN: usize = 18;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::UNTAGGED_HEADER_LEN;

/// The ethertypes this crate tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800.
    Ipv4,
    /// 0x0806.
    Arp,
    /// 0x8100, an 802.1Q tag.
    Vlan,
    /// 0x86dd.
    Ipv6,
    /// Anything else, kept as read.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => Self::Ipv4,
            0x0806 => Self::Arp,
            0x8100 => Self::Vlan,
            0x86dd => Self::Ipv6,
            other => Self::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

/// A view of an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking it holds the whole header (including the tag when the
    /// outer ethertype says there is one). After this, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        let len = frame.buffer.as_ref().len();
        check_len("ethernet", field::UNTAGGED_HEADER_LEN, len)?;
        if frame.is_tagged() {
            check_len("802.1Q", field::TAGGED_HEADER_LEN, len)?;
        }
        Ok(frame)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    pub fn dst_addr(&self) -> MacAddr {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        MacAddr(mac)
    }

    /// Source MAC.
    pub fn src_addr(&self) -> MacAddr {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        MacAddr(mac)
    }

    fn is_tagged(&self) -> bool {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE)) == EtherType::Vlan
    }

    /// The 802.1Q tag control information, when the frame is tagged.
    pub fn vlan_tci(&self) -> Option<u16> {
        self.is_tagged()
            .then(|| read_u16(self.buffer.as_ref(), field::TCI))
    }

    /// The ethertype of the payload (the inner one for a tagged frame).
    pub fn ethertype(&self) -> EtherType {
        let at = if self.is_tagged() {
            field::INNER_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        EtherType::from(read_u16(self.buffer.as_ref(), at))
    }

    /// Header length: 14, or 18 with a tag.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            field::TAGGED_HEADER_LEN
        } else {
            field::UNTAGGED_HEADER_LEN
        }
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// The meaning of an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// 802.1Q tag control information, `None` for an untagged frame.
    pub vlan_tci: Option<u16>,
    /// Payload ethertype.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Self {
        Self {
            dst: frame.dst_addr(),
            src: frame.src_addr(),
            vlan_tci: frame.vlan_tci(),
            ethertype: frame.ethertype(),
        }
    }

    /// Header length this repr emits.
    pub fn buffer_len(&self) -> usize {
        if self.vlan_tci.is_some() {
            field::TAGGED_HEADER_LEN
        } else {
            field::UNTAGGED_HEADER_LEN
        }
    }

    /// Writes the header at the start of `buffer`.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), WireError> {
        check_room(self.buffer_len(), buffer.len())?;
        buffer[field::DESTINATION].copy_from_slice(&self.dst.0);
        buffer[field::SOURCE].copy_from_slice(&self.src.0);
        match self.vlan_tci {
            Some(tci) => {
                write_u16(buffer, field::ETHERTYPE, EtherType::Vlan.into());
                write_u16(buffer, field::TCI, tci);
                write_u16(buffer, field::INNER_ETHERTYPE, self.ethertype.into());
            }
            None => write_u16(buffer, field::ETHERTYPE, self.ethertype.into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // src
        0x81, 0x00, 0x20, 0x64, // 802.1Q, PCP 1, VLAN 100
        0x08, 0x06, // ARP
        0xde, 0xad, // payload
    ];

    #[test]
    fn tagged_frame_deconstructs_to_inner_ethertype_and_tag() {
        let frame = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([2, 0, 0, 0, 0, 10]));
        assert_eq!(frame.vlan_tci(), Some(0x2064));
        assert_eq!(frame.ethertype(), EtherType::Arp);
        assert_eq!(frame.payload(), &[0xde, 0xad]);
    }

    #[test]
    fn tagged_repr_emits_the_fixture_header() {
        let repr = EthernetRepr::parse(&Frame::new_checked(&TAGGED[..]).unwrap());
        let mut out = [0u8; 18];
        repr.emit(&mut out).unwrap();
        assert_eq!(out[..], TAGGED[..18]);
    }

    #[test]
    fn untagged_unknown_ethertype_survives_roundtrip() {
        let repr = EthernetRepr {
            dst: MacAddr([1; 6]),
            src: MacAddr([2; 6]),
            vlan_tci: None,
            ethertype: EtherType::Unknown(0x88cc),
        };
        let mut out = [0u8; 14];
        repr.emit(&mut out).unwrap();
        assert_eq!(&out[12..], &[0x88, 0xcc]);
        assert_eq!(
            EthernetRepr::parse(&Frame::new_checked(&out[..]).unwrap()),
            repr
        );
    }

    #[test]
    fn header_cut_inside_the_tag_is_truncated() {
        assert!(matches!(
            Frame::new_checked(&TAGGED[..16]),
            Err(WireError::Truncated { needed: 18, .. })
        ));
        assert!(matches!(
            Frame::new_checked(&TAGGED[..13]),
            Err(WireError::Truncated { needed: 14, .. })
        ));
    }
}
