//! Session errors and the NOTIFICATION each one puts on the wire.
//!
//! [`SessionError`] is a closed set of the errors this speaker detects itself; every one maps to
//! exactly one NOTIFICATION code and subcode (RFC 4271 §4.5, §6; RFC 4486 for Cease subcodes;
//! RFC 6608 for FSM error subcodes). Events that end a session without us sending a NOTIFICATION
//! (the peer's NOTIFICATION, TCP closing) are [`DownReason`]s, not `SessionError`s.

use crate::wire::Notification;

/// Problems in the common header (NOTIFICATION code 1, RFC 4271 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The marker is not all ones.
    #[error("connection not synchronized (bad marker)")]
    NotSynchronized,
    /// The length field is outside 19..=4096 or wrong for the type.
    #[error("bad message length {0}")]
    BadLength(u16),
    /// The type code is not one we know.
    #[error("bad message type {0}")]
    BadType(u8),
}

/// Problems in the peer's OPEN (NOTIFICATION code 2, RFC 4271 §6.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Version other than 4.
    #[error("unsupported BGP version {0}")]
    UnsupportedVersion(u8),
    /// The peer's AS is not the configured one.
    #[error("bad peer AS: expected {expected}, got {got}")]
    BadPeerAs {
        /// Configured peer AS.
        expected: u32,
        /// AS in the peer's OPEN.
        got: u32,
    },
    /// Identifier 0.0.0.0, or equal to ours on an iBGP session.
    #[error("bad BGP identifier {0}")]
    BadIdentifier(std::net::Ipv4Addr),
    /// Hold time 1 or 2 seconds.
    #[error("unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    /// Optional parameter other than capabilities.
    #[error("unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    /// Optional parameters or capabilities whose lengths do not add up.
    #[error("malformed OPEN optional parameters")]
    Malformed,
}

/// An error detected by this speaker; the session sends the matching NOTIFICATION and resets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Bad common header.
    #[error("message header: {0}")]
    Header(#[from] HeaderError),
    /// Bad OPEN.
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    /// A received UPDATE whose length fields do not fit the message (code 3, subcode 1).
    #[error("UPDATE: malformed attribute list")]
    UpdateMalformedAttributeList,
    /// No KEEPALIVE or UPDATE within the hold time (code 4).
    #[error("hold timer expired")]
    HoldTimerExpired,
    /// A message that the current state does not accept (code 5, RFC 6608 subcodes).
    #[error("unexpected {message} in state {state:?}")]
    UnexpectedMessage {
        /// State the message arrived in.
        state: crate::fsm::State,
        /// The message type's name.
        message: &'static str,
    },
    /// We are closing the session on purpose (code 6, subcode 2 "Administrative Shutdown").
    #[error("administrative shutdown")]
    AdministrativeShutdown,
}

impl From<&SessionError> for Notification {
    fn from(error: &SessionError) -> Self {
        let (code, subcode, data) = match error {
            SessionError::Header(HeaderError::NotSynchronized) => (1, 1, Vec::new()),
            SessionError::Header(HeaderError::BadLength(len)) => (1, 2, len.to_be_bytes().to_vec()),
            SessionError::Header(HeaderError::BadType(t)) => (1, 3, vec![*t]),
            SessionError::Open(OpenError::UnsupportedVersion(_)) => (
                2,
                1,
                u16::from(crate::wire::BGP_VERSION).to_be_bytes().to_vec(),
            ),
            SessionError::Open(OpenError::BadPeerAs { .. }) => (2, 2, Vec::new()),
            SessionError::Open(OpenError::BadIdentifier(_)) => (2, 3, Vec::new()),
            SessionError::Open(OpenError::UnsupportedOptionalParameter(_)) => (2, 4, Vec::new()),
            SessionError::Open(OpenError::UnacceptableHoldTime(_)) => (2, 6, Vec::new()),
            SessionError::Open(OpenError::Malformed) => (2, 0, Vec::new()),
            SessionError::UpdateMalformedAttributeList => (3, 1, Vec::new()),
            SessionError::HoldTimerExpired => (4, 0, Vec::new()),
            SessionError::UnexpectedMessage { state, .. } => {
                let subcode = match state {
                    crate::fsm::State::OpenSent => 1,
                    crate::fsm::State::OpenConfirm => 2,
                    crate::fsm::State::Established => 3,
                    _ => 0,
                };
                (5, subcode, Vec::new())
            }
            SessionError::AdministrativeShutdown => (6, 2, Vec::new()),
        };
        Notification {
            code,
            subcode,
            data,
        }
    }
}

/// Why a session last went down: what [`crate::SessionStats::last_error`] reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownReason {
    /// We detected an error and sent its NOTIFICATION.
    #[error("sent NOTIFICATION: {0}")]
    Sent(SessionError),
    /// The peer sent a NOTIFICATION.
    #[error("received NOTIFICATION code {code} subcode {subcode}")]
    Received {
        /// Error code.
        code: u8,
        /// Error subcode.
        subcode: u8,
    },
    /// The TCP connection failed or closed (the text is the OS error).
    #[error("transport: {0}")]
    Transport(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_the_rfc_code_and_subcode() {
        let cases: [(SessionError, u8, u8); 11] = [
            (HeaderError::NotSynchronized.into(), 1, 1),
            (HeaderError::BadLength(5).into(), 1, 2),
            (HeaderError::BadType(7).into(), 1, 3),
            (OpenError::UnsupportedVersion(3).into(), 2, 1),
            (
                OpenError::BadPeerAs {
                    expected: 1,
                    got: 2,
                }
                .into(),
                2,
                2,
            ),
            (
                OpenError::BadIdentifier(std::net::Ipv4Addr::UNSPECIFIED).into(),
                2,
                3,
            ),
            (OpenError::UnsupportedOptionalParameter(9).into(), 2, 4),
            (OpenError::UnacceptableHoldTime(2).into(), 2, 6),
            (SessionError::UpdateMalformedAttributeList, 3, 1),
            (SessionError::HoldTimerExpired, 4, 0),
            (SessionError::AdministrativeShutdown, 6, 2),
        ];
        for (error, code, subcode) in cases {
            let n = Notification::from(&error);
            assert_eq!((n.code, n.subcode), (code, subcode), "{error}");
        }
    }

    #[test]
    fn bad_length_carries_the_length_and_bad_version_our_version() {
        assert_eq!(
            Notification::from(&SessionError::from(HeaderError::BadLength(18))).data,
            vec![0, 18]
        );
        assert_eq!(
            Notification::from(&SessionError::from(OpenError::UnsupportedVersion(3))).data,
            vec![0, 4]
        );
    }
}
