//! The per-node status record: what a speaker announces, published on its own Lease so that
//! `cairnctl` (and an operator with `kubectl get lease -o yaml`) can see, per VIP, which node
//! answers for it by L2 and which nodes announce it to which BGP peers.
//!
//! The record is the annotation [`ANNOUNCING_ANNOTATION`] on `cairn-speaker-<node>`, a JSON
//! document rewritten with the Lease's renewals, so it costs no API write of its own (a change
//! is visible within one renew interval). Per-Service status objects would cost a write per
//! Service per node on every failover — the load DESIGN.md's one-lease-per-node decision avoids.
//!
//! A Lease whose holder is empty, or which has expired, announces nothing whatever its record
//! says: a killed speaker cannot clear it. Readers must check liveness first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::announcements::Announcements;

/// The Lease annotation carrying a node's [`NodeStatus`] as JSON.
pub const ANNOUNCING_ANNOTATION: &str = "cairn.io/announcing";

/// What one node announces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// VIP -> interfaces it is announced on by L2 (this node is its owner).
    #[serde(default)]
    pub l2: BTreeMap<IpAddr, BTreeSet<String>>,
    /// BGP peer (BGPPeer name) -> session state and prefixes announced to it.
    #[serde(default)]
    pub bgp: BTreeMap<String, PeerStatus>,
}

/// One BGP peer as seen by the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The session state (`Established`, `Connect`, …) as the BGP speaker names it.
    pub session: String,
    /// Prefixes announced to the peer.
    #[serde(default)]
    pub prefixes: BTreeSet<IpNet>,
}

/// Why an annotation is not a status record.
#[derive(Debug, thiserror::Error)]
#[error("the {ANNOUNCING_ANNOTATION} annotation is not a status record: {0}")]
pub struct StatusError(#[from] serde_json::Error);

impl NodeStatus {
    /// The record of what `announced` holds, with each peer's session state from `sessions`
    /// (peers without a known state are reported as `Unknown`; peers with a session and no
    /// prefix are listed too, so a down session shows).
    pub fn from_announcements(
        announced: &Announcements,
        sessions: &BTreeMap<String, String>,
    ) -> Self {
        let mut bgp: BTreeMap<String, PeerStatus> = sessions
            .iter()
            .map(|(peer, session)| {
                let status = PeerStatus {
                    session: session.clone(),
                    prefixes: BTreeSet::new(),
                };
                (peer.clone(), status)
            })
            .collect();
        for (peer, prefixes) in &announced.bgp {
            let entry = bgp.entry(peer.clone()).or_insert_with(|| PeerStatus {
                session: "Unknown".into(),
                prefixes: BTreeSet::new(),
            });
            entry.prefixes.extend(prefixes.keys().copied());
        }
        Self {
            l2: announced.l2.clone(),
            bgp,
        }
    }

    /// Parses the annotation's value.
    pub fn from_annotation(value: &str) -> Result<Self, StatusError> {
        Ok(serde_json::from_str(value)?)
    }

    /// The annotation's value (compact JSON, keys sorted).
    pub fn to_annotation(&self) -> String {
        // Maps with string-like keys and plain values always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether the node announces nothing.
    pub fn is_empty(&self) -> bool {
        self.l2.is_empty() && self.bgp.values().all(|p| p.prefixes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eligibility::RouteAttributes;

    fn sample() -> NodeStatus {
        let mut announced = Announcements::default();
        announced.l2.insert(
            "192.0.2.200".parse().unwrap(),
            BTreeSet::from(["eth0".to_string()]),
        );
        announced.bgp.insert(
            "tor".into(),
            BTreeMap::from([(
                "203.0.113.1/32".parse().unwrap(),
                RouteAttributes::default(),
            )]),
        );
        let sessions = BTreeMap::from([
            ("tor".to_string(), "Established".to_string()),
            ("spare".to_string(), "Connect".to_string()),
        ]);
        NodeStatus::from_announcements(&announced, &sessions)
    }

    #[test]
    fn the_record_is_the_documented_json() {
        let text = sample().to_annotation();
        assert_eq!(
            text,
            r#"{"l2":{"192.0.2.200":["eth0"]},"bgp":{"spare":{"session":"Connect","prefixes":[]},"tor":{"session":"Established","prefixes":["203.0.113.1/32"]}}}"#
        );
        assert_eq!(NodeStatus::from_annotation(&text).unwrap(), sample());
    }

    #[test]
    fn a_peer_without_a_known_session_is_reported_unknown() {
        let mut announced = Announcements::default();
        announced.bgp.insert(
            "tor".into(),
            BTreeMap::from([(
                "2001:db8:3::1/128".parse().unwrap(),
                RouteAttributes::default(),
            )]),
        );
        let status = NodeStatus::from_announcements(&announced, &BTreeMap::new());
        assert_eq!(status.bgp["tor"].session, "Unknown");
        assert!(!status.is_empty());
    }

    #[test]
    fn missing_sections_read_as_empty_and_garbage_is_an_error() {
        assert!(NodeStatus::from_annotation("{}").unwrap().is_empty());
        let err = NodeStatus::from_annotation("l2=192.0.2.1").unwrap_err();
        assert!(err.to_string().contains(ANNOUNCING_ANNOTATION));
        assert!(NodeStatus::from_annotation(r#"{"l2":{"not-an-ip":[]}}"#).is_err());
    }
}
