//! BGP message wire format: framing, OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH, and the
//! length checks of a received UPDATE.
//!
//! Every received message goes through [`check_header`] before anything else reads it: marker all
//! ones, 19 ≤ length ≤ 4096, a known type and the per-type minimum length (RFC 4271 §4.1, §6.1).
//! Parsers here only index after checking the length and return a [`SessionError`] (which maps
//! to the NOTIFICATION the RFC asks for) instead of panicking, whatever the bytes.
//!
//! This module must not decode received path attributes: the speaker imports no routes, so a
//! received UPDATE is only checked for consistent lengths (RFC 4271 §6.3, first paragraph).
//! Building UPDATEs lives in [`crate::update`].
//!
//! Extended optional parameters (RFC 9072) are not parsed: a peer sends them only when its
//! parameters exceed 255 bytes, and such an OPEN is refused with "unsupported optional
//! parameter".
//!
//! Follows RFC 4271 §4 (messages), RFC 5492 (capabilities), RFC 4760 §8 (multiprotocol),
//! RFC 6793 (four-octet AS), RFC 2918 (route refresh), RFC 4724 §3 (graceful restart).

use std::net::Ipv4Addr;

use crate::error::{HeaderError, OpenError, SessionError};

/// Named offsets into a message, so code never indexes with bare numbers.
mod field {
    use std::ops::Range;
    pub const MARKER: Range<usize> = 0..16;
    pub const LENGTH: Range<usize> = 16..18;
    pub const TYPE: usize = 18;
    /// OPEN body offsets (relative to the end of the header).
    pub const OPEN_VERSION: usize = 0;
    pub const OPEN_MY_AS: Range<usize> = 1..3;
    pub const OPEN_HOLD: Range<usize> = 3..5;
    pub const OPEN_ID: Range<usize> = 5..9;
    pub const OPEN_OPT_LEN: usize = 9;
    pub const OPEN_OPTS: usize = 10;
}

/// Length of the common header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest message RFC 4271 allows (no extended messages, RFC 8654, here).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The only BGP version spoken.
pub const BGP_VERSION: u8 = 4;
/// AS number placed in the two-octet "My AS" field when the real one does not fit (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// Address family identifiers (RFC 4760 §3, IANA).
pub const AFI_IPV4: u16 = 1;
/// IPv6 address family.
pub const AFI_IPV6: u16 = 2;
/// Unicast sub-address family.
pub const SAFI_UNICAST: u8 = 1;

/// Capability codes (IANA "Capability Codes").
mod capability {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
}

/// Optional parameter type carrying capabilities (RFC 5492 §4).
const OPT_PARAM_CAPABILITIES: u8 = 2;

/// The five message types (RFC 4271 §4.1, RFC 2918 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Session opening with parameters and capabilities.
    Open,
    /// Route announcements and withdrawals.
    Update,
    /// Error report; the session closes after it.
    Notification,
    /// Liveness.
    Keepalive,
    /// Request to re-send the Adj-RIB-Out of one family.
    RouteRefresh,
}

impl MessageType {
    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Open),
            2 => Some(Self::Update),
            3 => Some(Self::Notification),
            4 => Some(Self::Keepalive),
            5 => Some(Self::RouteRefresh),
            _ => None,
        }
    }

    /// The type code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Update => 2,
            Self::Notification => 3,
            Self::Keepalive => 4,
            Self::RouteRefresh => 5,
        }
    }

    /// Smallest valid total length of this message type, header included.
    fn min_len(self) -> usize {
        match self {
            Self::Open => 29,
            Self::Update => 23,
            Self::Notification => 21,
            Self::Keepalive => 19,
            Self::RouteRefresh => 23,
        }
    }
}

/// Checks the header at the start of `buf` (RFC 4271 §6.1).
///
/// Returns `Ok(None)` when fewer than 19 bytes are buffered, otherwise the message type and its
/// total length (the caller waits until that many bytes are buffered).
pub fn check_header(buf: &[u8]) -> Result<Option<(MessageType, usize)>, SessionError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[field::MARKER].iter().any(|&b| b != 0xff) {
        return Err(SessionError::Header(HeaderError::NotSynchronized));
    }
    let len = usize::from(u16::from_be_bytes([
        buf[field::LENGTH.start],
        buf[field::LENGTH.start + 1],
    ]));
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(SessionError::Header(HeaderError::BadLength(len as u16)));
    }
    let code = buf[field::TYPE];
    let kind =
        MessageType::from_code(code).ok_or(SessionError::Header(HeaderError::BadType(code)))?;
    let exact_len_ok = match kind {
        MessageType::Keepalive => len == HEADER_LEN,
        MessageType::RouteRefresh => len == kind.min_len(),
        _ => len >= kind.min_len(),
    };
    if !exact_len_ok {
        return Err(SessionError::Header(HeaderError::BadLength(len as u16)));
    }
    Ok(Some((kind, len)))
}

/// Writes a header for a message of `total_len` bytes and type `kind` into `out`.
pub(crate) fn push_header(out: &mut Vec<u8>, kind: MessageType, total_len: usize) {
    debug_assert!((HEADER_LEN..=MAX_MESSAGE_LEN).contains(&total_len));
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&(total_len as u16).to_be_bytes());
    out.push(kind.code());
}

/// Sets the length field of a message built in `msg` (header first) to `msg.len()`.
pub(crate) fn fix_length(msg: &mut [u8]) {
    let len = (msg.len() as u16).to_be_bytes();
    msg[field::LENGTH].copy_from_slice(&len);
}

/// A KEEPALIVE message.
pub fn keepalive() -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    push_header(&mut out, MessageType::Keepalive, HEADER_LEN);
    out
}

/// Graceful-restart parameters advertised in OPEN (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Seconds the peer should keep our routes after the session drops (at most 4095).
    pub restart_time: u16,
    /// Whether forwarding survives a restart of this speaker (the F bit per family).
    pub forwarding_preserved: bool,
}

/// An OPEN message, both what we send and what we parsed from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's AS (the four-octet one when the capability was present).
    pub asn: u32,
    /// Proposed hold time in seconds (0 or ≥ 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Families from the multiprotocol capabilities, as (AFI, SAFI).
    pub families: Vec<(u16, u8)>,
    /// Route refresh capability present.
    pub route_refresh: bool,
    /// Four-octet AS capability present.
    pub four_octet_as: bool,
    /// Graceful restart capability, when present.
    pub graceful_restart: Option<GracefulRestart>,
}

impl Open {
    /// Encodes the OPEN, with all capabilities in one optional parameter.
    pub fn encode(&self) -> Vec<u8> {
        let mut caps = Vec::new();
        for &(afi, safi) in &self.families {
            caps.extend_from_slice(&[capability::MULTIPROTOCOL, 4]);
            caps.extend_from_slice(&afi.to_be_bytes());
            caps.extend_from_slice(&[0, safi]);
        }
        if self.route_refresh {
            caps.extend_from_slice(&[capability::ROUTE_REFRESH, 0]);
        }
        if self.four_octet_as {
            caps.extend_from_slice(&[capability::FOUR_OCTET_AS, 4]);
            caps.extend_from_slice(&self.asn.to_be_bytes());
        }
        if let Some(gr) = self.graceful_restart {
            caps.push(capability::GRACEFUL_RESTART);
            caps.push((2 + 4 * self.families.len()) as u8);
            caps.extend_from_slice(&(gr.restart_time & 0x0fff).to_be_bytes());
            for &(afi, safi) in &self.families {
                caps.extend_from_slice(&afi.to_be_bytes());
                caps.push(safi);
                caps.push(if gr.forwarding_preserved { 0x80 } else { 0 });
            }
        }
        let my_as = u16::try_from(self.asn).unwrap_or(AS_TRANS);
        let opt_len = if caps.is_empty() { 0 } else { caps.len() + 2 };
        let total = HEADER_LEN + field::OPEN_OPTS + opt_len;
        let mut out = Vec::with_capacity(total);
        push_header(&mut out, MessageType::Open, total);
        out.push(BGP_VERSION);
        out.extend_from_slice(&my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.router_id.octets());
        out.push(opt_len as u8);
        if !caps.is_empty() {
            out.extend_from_slice(&[OPT_PARAM_CAPABILITIES, caps.len() as u8]);
            out.extend_from_slice(&caps);
        }
        out
    }

    /// Parses an OPEN body (the bytes after the header). Checks the version and the structure;
    /// the session checks AS, hold time and identifier against its configuration.
    pub fn parse(body: &[u8]) -> Result<Self, SessionError> {
        if body.len() < field::OPEN_OPTS {
            return Err(SessionError::Open(OpenError::Malformed));
        }
        let version = body[field::OPEN_VERSION];
        if version != BGP_VERSION {
            return Err(SessionError::Open(OpenError::UnsupportedVersion(version)));
        }
        let my_as = u16::from_be_bytes([
            body[field::OPEN_MY_AS.start],
            body[field::OPEN_MY_AS.start + 1],
        ]);
        let hold_time = u16::from_be_bytes([
            body[field::OPEN_HOLD.start],
            body[field::OPEN_HOLD.start + 1],
        ]);
        let id = &body[field::OPEN_ID];
        let router_id = Ipv4Addr::new(id[0], id[1], id[2], id[3]);
        let opt_len = usize::from(body[field::OPEN_OPT_LEN]);
        let opts = &body[field::OPEN_OPTS..];
        if opts.len() != opt_len {
            return Err(SessionError::Open(OpenError::Malformed));
        }
        let mut open = Open {
            asn: u32::from(my_as),
            hold_time,
            router_id,
            families: Vec::new(),
            route_refresh: false,
            four_octet_as: false,
            graceful_restart: None,
        };
        let mut rest = opts;
        while !rest.is_empty() {
            let Some((&[kind, len], tail)) = rest.split_first_chunk::<2>() else {
                return Err(SessionError::Open(OpenError::Malformed));
            };
            let len = usize::from(len);
            if tail.len() < len {
                return Err(SessionError::Open(OpenError::Malformed));
            }
            let (value, tail) = tail.split_at(len);
            if kind != OPT_PARAM_CAPABILITIES {
                return Err(SessionError::Open(OpenError::UnsupportedOptionalParameter(
                    kind,
                )));
            }
            parse_capabilities(value, &mut open)?;
            rest = tail;
        }
        Ok(open)
    }
}

fn parse_capabilities(mut caps: &[u8], open: &mut Open) -> Result<(), SessionError> {
    let malformed = SessionError::Open(OpenError::Malformed);
    while !caps.is_empty() {
        let Some((&[code, len], tail)) = caps.split_first_chunk::<2>() else {
            return Err(malformed);
        };
        let len = usize::from(len);
        if tail.len() < len {
            return Err(malformed);
        }
        let (value, tail) = tail.split_at(len);
        match code {
            capability::MULTIPROTOCOL => {
                let &[a0, a1, _, safi] = value else {
                    return Err(malformed);
                };
                open.families.push((u16::from_be_bytes([a0, a1]), safi));
            }
            capability::ROUTE_REFRESH => open.route_refresh = true,
            capability::FOUR_OCTET_AS => {
                let &[b0, b1, b2, b3] = value else {
                    return Err(malformed);
                };
                open.four_octet_as = true;
                open.asn = u32::from_be_bytes([b0, b1, b2, b3]);
            }
            capability::GRACEFUL_RESTART => {
                if value.len() < 2 || (value.len() - 2) % 4 != 0 {
                    return Err(malformed);
                }
                let flags_time = u16::from_be_bytes([value[0], value[1]]);
                open.graceful_restart = Some(GracefulRestart {
                    restart_time: flags_time & 0x0fff,
                    forwarding_preserved: value[2..].chunks_exact(4).any(|f| f[3] & 0x80 != 0),
                });
            }
            // Unknown capabilities are ignored (RFC 5492 §3).
            _ => {}
        }
        caps = tail;
    }
    Ok(())
}

/// A NOTIFICATION: error code, subcode and data (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code (1 header, 2 OPEN, 3 UPDATE, 4 hold timer, 5 FSM, 6 cease).
    pub code: u8,
    /// Error subcode, 0 when unspecific.
    pub subcode: u8,
    /// Diagnostic data the RFC defines per error.
    pub data: Vec<u8>,
}

impl Notification {
    /// Encodes the NOTIFICATION, truncating data so the message fits in 4096 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let data = &self.data[..self.data.len().min(MAX_MESSAGE_LEN - 21)];
        let total = HEADER_LEN + 2 + data.len();
        let mut out = Vec::with_capacity(total);
        push_header(&mut out, MessageType::Notification, total);
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(data);
        out
    }

    /// Parses a NOTIFICATION body (at least two bytes, guaranteed by [`check_header`]).
    pub fn parse(body: &[u8]) -> Result<Self, SessionError> {
        match body {
            [code, subcode, data @ ..] => Ok(Self {
                code: *code,
                subcode: *subcode,
                data: data.to_vec(),
            }),
            _ => Err(SessionError::Header(HeaderError::BadLength(
                (HEADER_LEN + body.len()) as u16,
            ))),
        }
    }
}

/// Parses a ROUTE-REFRESH body into (AFI, SAFI) (RFC 2918 §3).
pub fn parse_route_refresh(body: &[u8]) -> Result<(u16, u8), SessionError> {
    match body {
        [a0, a1, _, safi] => Ok((u16::from_be_bytes([*a0, *a1]), *safi)),
        _ => Err(SessionError::Header(HeaderError::BadLength(
            (HEADER_LEN + body.len()) as u16,
        ))),
    }
}

/// Checks that a received UPDATE body's length fields are consistent (RFC 4271 §6.3): the
/// withdrawn routes and the path attributes both fit in the message. Nothing else is decoded.
pub fn check_update(body: &[u8]) -> Result<(), SessionError> {
    let malformed = SessionError::UpdateMalformedAttributeList;
    let Some((&[w0, w1], rest)) = body.split_first_chunk::<2>() else {
        return Err(malformed);
    };
    let withdrawn = usize::from(u16::from_be_bytes([w0, w1]));
    let rest = rest.get(withdrawn..).ok_or(malformed.clone())?;
    let Some((&[a0, a1], rest)) = rest.split_first_chunk::<2>() else {
        return Err(malformed);
    };
    let attrs = usize::from(u16::from_be_bytes([a0, a1]));
    if rest.len() < attrs {
        return Err(malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u16, kind: u8) -> Vec<u8> {
        let mut h = vec![0xff; 16];
        h.extend_from_slice(&len.to_be_bytes());
        h.push(kind);
        h
    }

    #[test]
    fn keepalive_is_the_19_byte_header_alone() {
        assert_eq!(keepalive(), header(19, 4));
        assert_eq!(
            check_header(&keepalive()).unwrap(),
            Some((MessageType::Keepalive, 19))
        );
    }

    #[test]
    fn header_shorter_than_19_bytes_waits_for_more() {
        assert_eq!(check_header(&[0xff; 18]).unwrap(), None);
    }

    #[test]
    fn header_length_below_19_is_bad_message_length_not_a_panic() {
        for len in [0u16, 1, 18] {
            assert_eq!(
                check_header(&header(len, 4)),
                Err(SessionError::Header(HeaderError::BadLength(len)))
            );
        }
    }

    #[test]
    fn header_length_above_4096_is_bad_message_length() {
        assert_eq!(
            check_header(&header(4097, 2)),
            Err(SessionError::Header(HeaderError::BadLength(4097)))
        );
    }

    #[test]
    fn header_with_a_zero_in_the_marker_is_not_synchronized() {
        let mut h = header(19, 4);
        h[3] = 0;
        assert_eq!(
            check_header(&h),
            Err(SessionError::Header(HeaderError::NotSynchronized))
        );
    }

    #[test]
    fn header_with_unknown_type_is_bad_message_type() {
        assert_eq!(
            check_header(&header(19, 9)),
            Err(SessionError::Header(HeaderError::BadType(9)))
        );
    }

    #[test]
    fn keepalive_with_a_body_and_short_open_are_bad_length() {
        assert_eq!(
            check_header(&header(20, 4)),
            Err(SessionError::Header(HeaderError::BadLength(20)))
        );
        assert_eq!(
            check_header(&header(28, 1)),
            Err(SessionError::Header(HeaderError::BadLength(28)))
        );
    }

    /// Hand-checked: version 4, AS 65001, hold 90, id 192.0.2.1, capabilities MP v4 + v6,
    /// route refresh, four-octet AS 65001.
    const OPEN_VECTOR: [u8; 51] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x00, 0x33, 0x01, // header, length 51, OPEN
        0x04, 0xfd, 0xe9, 0x00, 0x5a, 0xc0, 0x00, 0x02, 0x01, // version, AS, hold, id
        0x16, // optional parameters: 22 bytes
        0x02, 0x14, // capabilities, 20 bytes
        0x01, 0x04, 0x00, 0x01, 0x00, 0x01, // MP IPv4 unicast
        0x01, 0x04, 0x00, 0x02, 0x00, 0x01, // MP IPv6 unicast
        0x02, 0x00, // route refresh
        0x41, 0x04, 0x00, 0x00, 0xfd, 0xe9, // four-octet AS 65001
    ];

    fn sample_open() -> Open {
        Open {
            asn: 65001,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
            route_refresh: true,
            four_octet_as: true,
            graceful_restart: None,
        }
    }

    #[test]
    fn open_encodes_to_the_hand_checked_vector_and_parses_back() {
        assert_eq!(sample_open().encode(), OPEN_VECTOR);
        assert_eq!(
            Open::parse(&OPEN_VECTOR[HEADER_LEN..]).unwrap(),
            sample_open()
        );
    }

    #[test]
    fn open_with_four_octet_asn_sends_as_trans_in_my_as() {
        let open = Open {
            asn: 4_200_000_000,
            ..sample_open()
        };
        let bytes = open.encode();
        assert_eq!(&bytes[20..22], &AS_TRANS.to_be_bytes());
        assert_eq!(
            Open::parse(&bytes[HEADER_LEN..]).unwrap().asn,
            4_200_000_000
        );
    }

    #[test]
    fn open_with_graceful_restart_carries_time_and_forwarding_bit_per_family() {
        let open = Open {
            graceful_restart: Some(GracefulRestart {
                restart_time: 120,
                forwarding_preserved: true,
            }),
            ..sample_open()
        };
        let bytes = open.encode();
        let gr = [0x40, 10, 0x00, 120, 0, 1, 1, 0x80, 0, 2, 1, 0x80];
        assert!(bytes.windows(gr.len()).any(|w| w == gr));
        assert_eq!(Open::parse(&bytes[HEADER_LEN..]).unwrap(), open);
    }

    #[test]
    fn open_with_version_3_is_unsupported_version() {
        let mut body = OPEN_VECTOR[HEADER_LEN..].to_vec();
        body[0] = 3;
        assert_eq!(
            Open::parse(&body),
            Err(SessionError::Open(OpenError::UnsupportedVersion(3)))
        );
    }

    #[test]
    fn open_whose_capability_overruns_its_parameter_is_malformed() {
        let mut body = OPEN_VECTOR[HEADER_LEN..].to_vec();
        body[13] = 0x20; // first capability claims 32 bytes
        assert_eq!(
            Open::parse(&body),
            Err(SessionError::Open(OpenError::Malformed))
        );
    }

    #[test]
    fn open_with_unknown_optional_parameter_is_rejected_with_its_type() {
        let mut body = OPEN_VECTOR[HEADER_LEN..10 + HEADER_LEN].to_vec();
        body[9] = 3;
        body.extend_from_slice(&[7, 1, 0]);
        assert_eq!(
            Open::parse(&body),
            Err(SessionError::Open(OpenError::UnsupportedOptionalParameter(
                7
            )))
        );
    }

    #[test]
    fn update_whose_attribute_length_overruns_the_message_is_malformed() {
        assert_eq!(check_update(&[0, 0, 0, 0]), Ok(()));
        assert_eq!(
            check_update(&[0, 0, 0, 5, 1, 2]),
            Err(SessionError::UpdateMalformedAttributeList)
        );
        assert_eq!(
            check_update(&[0, 9, 0, 0]),
            Err(SessionError::UpdateMalformedAttributeList)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_open_we_encode_parses_back_to_itself(
            asn in proptest::prelude::any::<u32>(),
            hold_time in proptest::prelude::any::<u16>(),
            id in proptest::prelude::any::<u32>(),
            families in proptest::collection::vec((1u16..=2, 1u8..=2), 1..4),
            route_refresh in proptest::prelude::any::<bool>(),
            gr in proptest::option::of((0u16..4096, proptest::prelude::any::<bool>())),
        ) {
            let open = Open {
                asn,
                hold_time,
                router_id: Ipv4Addr::from(id),
                families,
                route_refresh,
                four_octet_as: true,
                graceful_restart: gr.map(|(restart_time, forwarding_preserved)| GracefulRestart {
                    restart_time,
                    forwarding_preserved,
                }),
            };
            let bytes = open.encode();
            proptest::prop_assert_eq!(check_header(&bytes), Ok(Some((MessageType::Open, bytes.len()))));
            proptest::prop_assert_eq!(Open::parse(&bytes[HEADER_LEN..]), Ok(open));
        }
    }

    #[test]
    fn notification_roundtrips_code_subcode_and_data() {
        let n = Notification {
            code: 6,
            subcode: 2,
            data: vec![1, 2],
        };
        let bytes = n.encode();
        assert_eq!(&bytes[16..], &[0, 23, 3, 6, 2, 1, 2]);
        assert_eq!(Notification::parse(&bytes[HEADER_LEN..]).unwrap(), n);
    }
}
