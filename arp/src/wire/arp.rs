//! ARP packets (RFC 826). The view reads any hardware/protocol combination whose lengths fit
//! the buffer; `ArpRepr` accepts only Ethernet + IPv4 (hlen 6, plen 4), the only kind this
//! crate answers.

use std::net::Ipv4Addr;

use super::{check_len, check_room, read_u16, write_u16, MacAddr, WireError};

mod field {
    use std::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const FIXED_LEN: usize = 8;

    /// The four variable-length address fields, given hlen and plen.
    pub fn sha(hlen: u8, _plen: u8) -> Range<usize> {
        FIXED_LEN..FIXED_LEN + hlen as usize
    }
    pub fn spa(hlen: u8, plen: u8) -> Range<usize> {
        let start = sha(hlen, plen).end;
        start..start + plen as usize
    }
    pub fn tha(hlen: u8, plen: u8) -> Range<usize> {
        let start = spa(hlen, plen).end;
        start..start + hlen as usize
    }
    pub fn tpa(hlen: u8, plen: u8) -> Range<usize> {
        let start = tha(hlen, plen).end;
        start..start + plen as usize
    }
}

/// ARP hardware type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardware {
    /// 1.
    Ethernet,
    /// Anything else.
    Unknown(u16),
}

impl From<u16> for Hardware {
    fn from(value: u16) -> Self {
        match value {
            1 => Self::Ethernet,
            other => Self::Unknown(other),
        }
    }
}

impl From<Hardware> for u16 {
    fn from(value: Hardware) -> Self {
        match value {
            Hardware::Ethernet => 1,
            Hardware::Unknown(other) => other,
        }
    }
}

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// 1.
    Request,
    /// 2.
    Reply,
    /// Anything else (RARP, InARP, ...).
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(value: u16) -> Self {
        match value {
            1 => Self::Request,
            2 => Self::Reply,
            other => Self::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(value: Operation) -> Self {
        match value {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

const PTYPE_IPV4: u16 = 0x0800;

/// A view of an ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking it holds the fixed part and the four addresses of the
    /// lengths it announces. After this, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        check_len("arp", field::FIXED_LEN, len)?;
        let end = field::tpa(packet.hardware_len(), packet.protocol_len()).end;
        check_len("arp", end, len)?;
        Ok(packet)
    }

    /// Hardware type.
    pub fn hardware_type(&self) -> Hardware {
        Hardware::from(read_u16(self.buffer.as_ref(), field::HTYPE))
    }

    /// Protocol type (an ethertype; 0x0800 for IPv4).
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    pub fn operation(&self) -> Operation {
        Operation::from(read_u16(self.buffer.as_ref(), field::OPER))
    }

    /// Sender hardware address bytes.
    pub fn source_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::sha(self.hardware_len(), self.protocol_len())]
    }

    /// Sender protocol address bytes.
    pub fn source_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::spa(self.hardware_len(), self.protocol_len())]
    }

    /// Target hardware address bytes.
    pub fn target_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::tha(self.hardware_len(), self.protocol_len())]
    }

    /// Target protocol address bytes.
    pub fn target_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[field::tpa(self.hardware_len(), self.protocol_len())]
    }
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Request, reply, or another operation kept as read.
    pub operation: Operation,
    /// Sender hardware address.
    pub source_hardware_addr: MacAddr,
    /// Sender protocol address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target hardware address.
    pub target_hardware_addr: MacAddr,
    /// Target protocol address.
    pub target_protocol_addr: Ipv4Addr,
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_IPV4_LEN: usize = 28;

fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    let mut octets = [0; 4];
    octets.copy_from_slice(bytes);
    Ipv4Addr::from(octets)
}

fn mac(bytes: &[u8]) -> MacAddr {
    let mut octets = [0; 6];
    octets.copy_from_slice(bytes);
    MacAddr(octets)
}

impl ArpRepr {
    /// Interprets a checked packet; anything other than Ethernet/IPv4 with lengths 6/4 is an
    /// error.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, WireError> {
        match packet.hardware_type() {
            Hardware::Ethernet => {}
            Hardware::Unknown(other) => return Err(WireError::UnsupportedHardware(other)),
        }
        if packet.protocol_type() != PTYPE_IPV4 {
            return Err(WireError::UnsupportedProtocol(packet.protocol_type()));
        }
        if packet.hardware_len() != 6 || packet.protocol_len() != 4 {
            return Err(WireError::BadAddressLength {
                hlen: packet.hardware_len(),
                plen: packet.protocol_len(),
            });
        }
        Ok(Self {
            operation: packet.operation(),
            source_hardware_addr: mac(packet.source_hardware_addr()),
            source_protocol_addr: ipv4(packet.source_protocol_addr()),
            target_hardware_addr: mac(packet.target_hardware_addr()),
            target_protocol_addr: ipv4(packet.target_protocol_addr()),
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        ARP_IPV4_LEN
    }

    /// Writes the packet at the start of `buffer`.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), WireError> {
        check_room(ARP_IPV4_LEN, buffer.len())?;
        write_u16(buffer, field::HTYPE, Hardware::Ethernet.into());
        write_u16(buffer, field::PTYPE, PTYPE_IPV4);
        buffer[field::HLEN] = 6;
        buffer[field::PLEN] = 4;
        write_u16(buffer, field::OPER, self.operation.into());
        buffer[field::sha(6, 4)].copy_from_slice(&self.source_hardware_addr.0);
        buffer[field::spa(6, 4)].copy_from_slice(&self.source_protocol_addr.octets());
        buffer[field::tha(6, 4)].copy_from_slice(&self.target_hardware_addr.0);
        buffer[field::tpa(6, 4)].copy_from_slice(&self.target_protocol_addr.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `arping -c1 192.0.2.100` from 192.0.2.10 / 02:00:00:00:00:0a, as captured.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 192, 0, 2, 10, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 100, // target
    ];

    fn request_repr() -> ArpRepr {
        ArpRepr {
            operation: Operation::Request,
            source_hardware_addr: MacAddr([2, 0, 0, 0, 0, 10]),
            source_protocol_addr: Ipv4Addr::new(192, 0, 2, 10),
            target_hardware_addr: MacAddr::ZERO,
            target_protocol_addr: Ipv4Addr::new(192, 0, 2, 100),
        }
    }

    #[test]
    fn request_deconstructs_field_by_field() {
        let packet = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(packet.hardware_type(), Hardware::Ethernet);
        assert_eq!(packet.protocol_type(), 0x0800);
        assert_eq!((packet.hardware_len(), packet.protocol_len()), (6, 4));
        assert_eq!(packet.operation(), Operation::Request);
        assert_eq!(packet.source_protocol_addr(), &[192, 0, 2, 10]);
        assert_eq!(packet.target_protocol_addr(), &[192, 0, 2, 100]);
    }

    #[test]
    fn request_parses_to_repr_and_emits_the_same_bytes() {
        let packet = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet), Ok(request_repr()));
        let mut out = [0u8; 28];
        request_repr().emit(&mut out).unwrap();
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn wrong_types_and_lengths_are_rejected_by_parse() {
        let mut bytes = REQUEST;
        bytes[1] = 6; // IEEE 802
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            ArpRepr::parse(&packet),
            Err(WireError::UnsupportedHardware(6))
        );

        let mut bytes = REQUEST;
        bytes[2] = 0x86;
        bytes[3] = 0xdd;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            ArpRepr::parse(&packet),
            Err(WireError::UnsupportedProtocol(0x86dd))
        );

        let mut bytes = REQUEST;
        bytes[4] = 4; // hlen 4: fits the buffer, but is not Ethernet
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            ArpRepr::parse(&packet),
            Err(WireError::BadAddressLength { hlen: 4, plen: 4 })
        );
    }

    #[test]
    fn announced_lengths_past_the_buffer_are_truncated() {
        let mut bytes = REQUEST;
        bytes[5] = 16; // plen 16 needs 8 + 2 * (6 + 16) bytes
        assert!(matches!(
            Packet::new_checked(&bytes[..]),
            Err(WireError::Truncated { needed: 52, .. })
        ));
        assert!(matches!(
            Packet::new_checked(&REQUEST[..27]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_operation_survives_roundtrip() {
        let repr = ArpRepr {
            operation: Operation::Unknown(8), // InARP request
            ..request_repr()
        };
        let mut out = [0u8; 28];
        repr.emit(&mut out).unwrap();
        assert_eq!(
            ArpRepr::parse(&Packet::new_checked(&out[..]).unwrap()),
            Ok(repr)
        );
    }
}
