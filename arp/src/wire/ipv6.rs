//! The IPv6 fixed header (RFC 8200 §3) and the upper-layer checksum over the IPv6
//! pseudo-header (RFC 8200 §8.1, used by ICMPv6 per RFC 4443 §2.3).
//!
//! Extension headers are not walked: neighbor discovery messages carry none (a NS behind an
//! extension header is not answered, as `next_header()` is then not ICMPv6).

use std::net::Ipv6Addr;

use super::{check_len, check_room, read_u16, write_u16, WireError};

mod field {
    use std::ops::Range;
    pub const VERSION_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SOURCE: Range<usize> = 8..24;
    pub const DESTINATION: Range<usize> = 24..40;
    pub const HEADER_LEN: usize = 40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::HEADER_LEN;

/// The ICMPv6 next-header value.
pub const NEXT_HEADER_ICMPV6: u8 = 58;

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(bytes);
    Ipv6Addr::from(octets)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer after checking the version and that the header and the payload length it
    /// announces fit. After this, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self { buffer };
        let len = packet.buffer.as_ref().len();
        check_len("ipv6", field::HEADER_LEN, len)?;
        if packet.version() != 6 {
            return Err(WireError::BadVersion(packet.version()));
        }
        check_len(
            "ipv6 payload",
            field::HEADER_LEN + usize::from(packet.payload_len()),
            len,
        )?;
        Ok(packet)
    }

    /// The version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_TC_FLOW.start] >> 4
    }

    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Next header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit field.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SOURCE])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// The payload as long as the header says (link-layer padding after it is cut off).
    pub fn payload(&self) -> &[u8] {
        let end = field::HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[field::HEADER_LEN..end]
    }
}

/// The meaning of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length.
    pub payload_len: u16,
}

impl Ipv6Repr {
    /// Reads a checked packet's header. Traffic class and flow label are not kept.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Self {
        Self {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            payload_len: packet.payload_len(),
        }
    }

    /// Header length `emit` writes.
    pub fn buffer_len(&self) -> usize {
        field::HEADER_LEN
    }

    /// Writes the header (traffic class and flow label zero) at the start of `buffer`.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<(), WireError> {
        check_room(field::HEADER_LEN, buffer.len())?;
        buffer[field::VERSION_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
        write_u16(buffer, field::PAYLOAD_LEN, self.payload_len);
        buffer[field::NEXT_HEADER] = self.next_header;
        buffer[field::HOP_LIMIT] = self.hop_limit;
        buffer[field::SOURCE].copy_from_slice(&self.src.octets());
        buffer[field::DESTINATION].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

fn ones_complement_sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The folded one's-complement sum of the pseudo-header (RFC 8200 §8.1) and `message`, as the
/// message stands (checksum field included). A message with a correct checksum sums to 0xffff.
pub fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, message: &[u8]) -> u16 {
    let mut acc = ones_complement_sum(0, &src.octets());
    acc = ones_complement_sum(acc, &dst.octets());
    // Upper-layer length as 32 bits, three zero bytes, next header. Messages handled here are
    // bounded by a 16-bit payload length, so the length fits the low 32 bits.
    let len = message.len() as u32;
    acc += len >> 16;
    acc += len & 0xffff;
    acc += u32::from(next_header);
    fold(ones_complement_sum(acc, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrips_and_cuts_padding_off_the_payload() {
        let repr = Ipv6Repr {
            src: "2001:db8::a".parse().unwrap(),
            dst: "ff02::1:ff00:64".parse().unwrap(),
            next_header: NEXT_HEADER_ICMPV6,
            hop_limit: 255,
            payload_len: 2,
        };
        let mut buf = [0u8; 44];
        repr.emit(&mut buf).unwrap();
        buf[40..].copy_from_slice(&[1, 2, 0xee, 0xee]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet), repr);
        assert_eq!(packet.payload(), &[1, 2]);
    }

    #[test]
    fn payload_length_past_the_buffer_is_truncated() {
        let mut buf = [0u8; 40];
        buf[0] = 0x60;
        buf[5] = 1;
        assert!(matches!(
            Packet::new_checked(&buf[..]),
            Err(WireError::Truncated { needed: 41, .. })
        ));
    }

    #[test]
    fn version_four_is_rejected() {
        let mut buf = [0u8; 40];
        buf[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&buf[..]).err(),
            Some(WireError::BadVersion(4))
        );
    }

    #[test]
    fn checksum_of_odd_length_message_pads_with_zero() {
        let src = Ipv6Addr::UNSPECIFIED;
        let dst = Ipv6Addr::UNSPECIFIED;
        // Sum: length 3 + next header 58 + 0x0102 + 0x0300.
        assert_eq!(
            pseudo_header_sum(src, dst, 58, &[1, 2, 3]),
            3 + 58 + 0x0102 + 0x0300
        );
    }
}
