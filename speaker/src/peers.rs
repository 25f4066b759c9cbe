//! Which BGP sessions this node runs, as a pure function of the validated BGPPeers, the node's
//! labels and addresses, and the password Secrets; and how to go from the sessions running to
//! the sessions wanted.
//!
//! - A BGPPeer applies to the node when it has no node selector or any of its selectors matches
//!   the node's labels.
//! - The BGP identifier is `spec.routerID`, else the node's first IPv4 `InternalIP`. The IPv6
//!   next hop sent over an IPv4 session (and the IPv4 one over an IPv6 session) is the node's first
//!   `InternalIP` of that family, so both families can be announced over one session (RFC 4760
//!   §3, RFC 2545 §3).
//! - A password is read from `spec.passwordSecret` (a Secret in the speaker's namespace). A
//!   missing Secret or key, or a password the kernel cannot take, keeps that one peer from
//!   starting and is reported as a [`PeerProblem`]; it never stops the others.
//! - `holdTime` and `connectTime` are passed on; `keepaliveTime` is not, as `cairn-bgp` sends
//!   keepalives at a third of the negotiated hold time (RFC 4271 §10's suggestion).
//! - Two BGPPeers with the same address on one node would fight over one TCP session: the first
//!   by name is kept, the other reported.
//!
//! [`changes`] diffs running and wanted sessions: a peer whose configuration changed is stopped
//! and started again (only that peer); a peer that did not change is left alone whatever else
//! changes, and prefixes never enter a session's configuration, so announcing a prefix never
//! resets a session. No IO here: the runtime carries the changes out on `cairn-bgp`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cairn_api::validation::ValidPeer;
use cairn_bgp::sockopt::MD5_MAX_KEY_LEN;
use cairn_bgp::{GracefulRestart, PeerConfig, SessionConfig};
use k8s_openapi::api::core::v1::Node;

/// Graceful-restart time advertised when a BGPPeer enables it (seconds).
pub const GRACEFUL_RESTART_TIME: u16 = 120;

/// The IP TTL used for `ebgpMultiHop` peers.
pub const MULTI_HOP_TTL: u8 = 255;

/// Secret name -> key -> value, for the Secrets of the speaker's namespace.
pub type Secrets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// What this node knows about itself for peering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNode {
    /// The node's labels.
    pub labels: BTreeMap<String, String>,
    /// Its first IPv4 `InternalIP`.
    pub ipv4: Option<Ipv4Addr>,
    /// Its first IPv6 `InternalIP`.
    pub ipv6: Option<Ipv6Addr>,
}

impl LocalNode {
    /// Labels and first `InternalIP` of each family of a Node object.
    pub fn from_node(node: &Node) -> Self {
        let mut local = LocalNode {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ..LocalNode::default()
        };
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten();
        for a in addresses.filter(|a| a.type_ == "InternalIP") {
            match a.address.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) if local.ipv4.is_none() => local.ipv4 = Some(v4),
                Ok(IpAddr::V6(v6)) if local.ipv6.is_none() => local.ipv6 = Some(v6),
                _ => {}
            }
        }
        local
    }
}

/// Why one BGPPeer does not get a session on this node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerProblem {
    /// The password Secret does not exist (or is not readable by the speaker).
    #[error("password Secret {secret:?} not found in the speaker's namespace")]
    MissingSecret {
        /// The Secret's name.
        secret: String,
    },
    /// The Secret exists without the key.
    #[error("password Secret {secret:?} has no key {key:?}")]
    MissingSecretKey {
        /// The Secret's name.
        secret: String,
        /// The key.
        key: String,
    },
    /// The password is not UTF-8 text.
    #[error("the password in Secret {secret:?} is not UTF-8 text")]
    PasswordNotText {
        /// The Secret's name.
        secret: String,
    },
    /// The password is longer than TCP MD5 allows.
    #[error("the password in Secret {secret:?} has {len} bytes; TCP MD5 takes at most {MD5_MAX_KEY_LEN}")]
    PasswordTooLong {
        /// The Secret's name.
        secret: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Neither `spec.routerID` nor an IPv4 `InternalIP` of the node.
    #[error("no BGP identifier: set spec.routerID or give the Node an IPv4 InternalIP")]
    NoRouterId,
    /// Another BGPPeer for this node has the same address.
    #[error("BGPPeer {other:?} already peers with {address} from this node")]
    DuplicateAddress {
        /// The peer's address.
        address: IpAddr,
        /// The BGPPeer kept.
        other: String,
    },
}

/// The sessions this node should run, by BGPPeer name, and the peers left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WantedSessions {
    /// BGPPeer name -> session configuration.
    pub sessions: BTreeMap<String, PeerConfig>,
    /// BGPPeer name -> why it has no session (only peers that select this node).
    pub problems: BTreeMap<String, PeerProblem>,
}

/// The sessions this node should run.
pub fn wanted(
    peers: &BTreeMap<String, ValidPeer>,
    node: &LocalNode,
    secrets: &Secrets,
) -> WantedSessions {
    let mut out = WantedSessions::default();
    // peer address -> BGPPeer name holding it
    let mut by_address: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (name, peer) in peers {
        let selected = peer.node_selectors.is_empty()
            || peer.node_selectors.iter().any(|s| s.matches(&node.labels));
        if !selected {
            continue;
        }
        let config = match session(peer, node, secrets) {
            Ok(config) => config,
            Err(problem) => {
                out.problems.insert(name.clone(), problem);
                continue;
            }
        };
        if let Some(other) = by_address.get(&peer.peer_address) {
            out.problems.insert(
                name.clone(),
                PeerProblem::DuplicateAddress {
                    address: peer.peer_address,
                    other: other.clone(),
                },
            );
            continue;
        }
        by_address.insert(peer.peer_address, name.clone());
        out.sessions.insert(name.clone(), config);
    }
    out
}

fn session(
    peer: &ValidPeer,
    node: &LocalNode,
    secrets: &Secrets,
) -> Result<PeerConfig, PeerProblem> {
    let router_id = peer
        .router_id
        .or(node.ipv4)
        .ok_or(PeerProblem::NoRouterId)?;
    let mut session = SessionConfig::new(peer.my_asn, peer.peer_asn, router_id);
    session.hold_time = u16::try_from(peer.hold_time.as_secs()).unwrap_or(u16::MAX);
    session.connect_retry = peer.connect_time;
    session.connect_retry_max = session.connect_retry_max.max(peer.connect_time);
    session.graceful_restart = peer.graceful_restart.then_some(GracefulRestart {
        restart_time: GRACEFUL_RESTART_TIME,
        forwarding_preserved: false,
    });
    match peer.peer_address {
        IpAddr::V4(_) => session.next_hop_v6 = node.ipv6,
        IpAddr::V6(_) => session.next_hop_v4 = node.ipv4,
    }
    let mut config = PeerConfig::new(peer.peer_address, session);
    config.port = peer.peer_port;
    config.local_address = peer.source_address;
    config.ebgp_multihop = peer.ebgp_multi_hop.then_some(MULTI_HOP_TTL);
    if let Some(reference) = &peer.password_secret {
        let secret = secrets
            .get(&reference.name)
            .ok_or_else(|| PeerProblem::MissingSecret {
                secret: reference.name.clone(),
            })?;
        let bytes = secret
            .get(&reference.key)
            .ok_or_else(|| PeerProblem::MissingSecretKey {
                secret: reference.name.clone(),
                key: reference.key.clone(),
            })?;
        let password =
            String::from_utf8(bytes.clone()).map_err(|_| PeerProblem::PasswordNotText {
                secret: reference.name.clone(),
            })?;
        if password.len() > MD5_MAX_KEY_LEN {
            return Err(PeerProblem::PasswordTooLong {
                secret: reference.name.clone(),
                len: password.len(),
            });
        }
        config.md5_password = Some(password);
    }
    Ok(config)
}

/// How to go from the running sessions to the wanted ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionChanges {
    /// Sessions to end: peers gone, and peers whose configuration changed.
    pub stop: BTreeSet<String>,
    /// Sessions to start: new peers, and peers whose configuration changed.
    pub start: BTreeSet<String>,
}

/// The sessions to stop and start; peers with an unchanged configuration appear in neither.
pub fn changes(
    running: &BTreeMap<String, PeerConfig>,
    wanted: &BTreeMap<String, PeerConfig>,
) -> SessionChanges {
    let mut out = SessionChanges::default();
    for (name, config) in running {
        if wanted.get(name) != Some(config) {
            out.stop.insert(name.clone());
        }
    }
    for (name, config) in wanted {
        if running.get(name) != Some(config) {
            out.start.insert(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::v1alpha1::BGPPeerSpec;
    use serde_json::json;

    fn valid(spec: serde_json::Value) -> ValidPeer {
        let spec: BGPPeerSpec = serde_json::from_value(spec).expect("spec");
        cairn_api::validation::bgp_peer(&spec).expect("valid peer")
    }

    fn tor(address: &str) -> ValidPeer {
        valid(json!({"myASN": 64512, "peerASN": 64513, "peerAddress": address}))
    }

    fn node(labels: &[(&str, &str)]) -> LocalNode {
        LocalNode {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 11)),
            ipv6: Some("2001:db8::11".parse().expect("v6")),
        }
    }

    fn peers(list: Vec<(&str, ValidPeer)>) -> BTreeMap<String, ValidPeer> {
        list.into_iter().map(|(n, p)| (n.to_string(), p)).collect()
    }

    #[test]
    fn the_router_id_defaults_to_the_nodes_ipv4_address_and_routerid_overrides_it() {
        let mut with_id = tor("192.0.2.254");
        with_id.router_id = Some(Ipv4Addr::new(10, 0, 0, 1));
        let w = wanted(
            &peers(vec![("a", tor("192.0.2.254")), ("b", tor("192.0.2.253"))]),
            &node(&[]),
            &Secrets::new(),
        );
        assert_eq!(
            w.sessions["a"].session.router_id,
            Ipv4Addr::new(192, 0, 2, 11)
        );
        let w = wanted(&peers(vec![("a", with_id)]), &node(&[]), &Secrets::new());
        assert_eq!(
            w.sessions["a"].session.router_id,
            Ipv4Addr::new(10, 0, 0, 1)
        );
    }

    #[test]
    fn an_ipv4_session_carries_the_nodes_ipv6_next_hop_and_vice_versa() {
        let w = wanted(
            &peers(vec![
                ("v4", tor("192.0.2.254")),
                ("v6", tor("2001:db8::fe")),
            ]),
            &node(&[]),
            &Secrets::new(),
        );
        assert_eq!(
            w.sessions["v4"].session.next_hop_v6,
            Some("2001:db8::11".parse().expect("v6"))
        );
        assert_eq!(w.sessions["v4"].session.next_hop_v4, None);
        assert_eq!(
            w.sessions["v6"].session.next_hop_v4,
            Some(Ipv4Addr::new(192, 0, 2, 11))
        );
    }

    #[test]
    fn a_node_without_ipv4_and_without_router_id_gets_a_problem_not_a_session() {
        let mut n = node(&[]);
        n.ipv4 = None;
        let w = wanted(&peers(vec![("a", tor("192.0.2.254"))]), &n, &Secrets::new());
        assert!(w.sessions.is_empty());
        assert_eq!(w.problems["a"], PeerProblem::NoRouterId);
    }

    #[test]
    fn only_peers_whose_node_selectors_match_are_started() {
        let rack_a = valid(json!({
            "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.254",
            "nodeSelectors": [{"matchLabels": {"rack": "a"}}],
        }));
        let rack_b = valid(json!({
            "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.253",
            "nodeSelectors": [{"matchLabels": {"rack": "b"}}],
        }));
        let w = wanted(
            &peers(vec![
                ("a", rack_a),
                ("b", rack_b),
                ("all", tor("192.0.2.252")),
            ]),
            &node(&[("rack", "a")]),
            &Secrets::new(),
        );
        assert_eq!(w.sessions.keys().collect::<Vec<_>>(), ["a", "all"]);
        assert!(w.problems.is_empty());
    }

    #[test]
    fn the_password_comes_from_the_secret_and_a_missing_one_keeps_only_that_peer_down() {
        let with_secret = |secret: &str| {
            valid(json!({
                "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.254",
                "passwordSecret": {"name": secret, "key": "password"},
            }))
        };
        let secrets: Secrets = [(
            "bgp-auth".to_string(),
            [("password".to_string(), b"s3cret".to_vec())].into(),
        )]
        .into();
        let w = wanted(
            &peers(vec![
                ("good", with_secret("bgp-auth")),
                ("missing", with_secret("nope")),
                ("plain", tor("192.0.2.1")),
            ]),
            &node(&[]),
            &secrets,
        );
        assert_eq!(w.sessions["good"].md5_password.as_deref(), Some("s3cret"));
        assert_eq!(w.sessions["plain"].md5_password, None);
        assert!(!w.sessions.contains_key("missing"));
        assert_eq!(
            w.problems["missing"],
            PeerProblem::MissingSecret {
                secret: "nope".into()
            }
        );
    }

    #[test]
    fn a_secret_without_the_key_or_with_a_too_long_password_is_reported() {
        let peer = valid(json!({
            "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.254",
            "passwordSecret": {"name": "s", "key": "password"},
        }));
        let other_key: Secrets =
            [("s".to_string(), [("pw".to_string(), b"x".to_vec())].into())].into();
        let w = wanted(&peers(vec![("p", peer.clone())]), &node(&[]), &other_key);
        assert_eq!(
            w.problems["p"],
            PeerProblem::MissingSecretKey {
                secret: "s".into(),
                key: "password".into()
            }
        );
        let long: Secrets = [(
            "s".to_string(),
            [("password".to_string(), vec![b'x'; MD5_MAX_KEY_LEN + 1])].into(),
        )]
        .into();
        let w = wanted(&peers(vec![("p", peer)]), &node(&[]), &long);
        assert_eq!(
            w.problems["p"],
            PeerProblem::PasswordTooLong {
                secret: "s".into(),
                len: MD5_MAX_KEY_LEN + 1
            }
        );
    }

    #[test]
    fn two_peers_with_one_address_keep_the_first_by_name() {
        let w = wanted(
            &peers(vec![("b", tor("192.0.2.254")), ("a", tor("192.0.2.254"))]),
            &node(&[]),
            &Secrets::new(),
        );
        assert_eq!(w.sessions.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            w.problems["b"],
            PeerProblem::DuplicateAddress {
                address: "192.0.2.254".parse().expect("ip"),
                other: "a".into()
            }
        );
    }

    #[test]
    fn a_changed_peer_is_restarted_alone_and_unchanged_peers_are_untouched() {
        let n = node(&[]);
        let before = wanted(
            &peers(vec![("a", tor("192.0.2.254")), ("b", tor("192.0.2.253"))]),
            &n,
            &Secrets::new(),
        )
        .sessions;
        let mut b_changed = tor("192.0.2.253");
        b_changed.peer_asn = 64999;
        let after = wanted(
            &peers(vec![
                ("a", tor("192.0.2.254")),
                ("b", b_changed),
                ("c", tor("192.0.2.252")),
            ]),
            &n,
            &Secrets::new(),
        )
        .sessions;
        let c = changes(&before, &after);
        assert_eq!(c.stop, ["b".to_string()].into());
        assert_eq!(c.start, ["b".to_string(), "c".to_string()].into());
        assert_eq!(changes(&after, &after), SessionChanges::default());
        let gone = changes(&after, &BTreeMap::new());
        assert_eq!(gone.stop.len(), 3);
        assert!(gone.start.is_empty());
    }

    #[test]
    fn the_node_addresses_are_the_first_internal_ip_of_each_family() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"rack": "a"}},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "203.0.113.5"},
                {"type": "InternalIP", "address": "2001:db8::5"},
                {"type": "InternalIP", "address": "192.0.2.5"},
                {"type": "InternalIP", "address": "192.0.2.6"},
            ]},
        }))
        .expect("node");
        let local = LocalNode::from_node(&n);
        assert_eq!(local.ipv4, Some(Ipv4Addr::new(192, 0, 2, 5)));
        assert_eq!(local.ipv6, Some("2001:db8::5".parse().expect("v6")));
        assert_eq!(local.labels["rack"], "a");
    }
}
