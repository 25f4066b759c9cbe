//! Which `nodeAssigned` Events a change of this node's announcements calls for, as a pure
//! function of the announcements before and after the change.
//!
//! An Event is due for a VIP when this node starts announcing it by L2, or starts announcing it
//! by BGP, or when the interfaces (L2) or the peers (BGP) it is announced on change to another
//! non-empty set. It goes on every Service sharing the VIP. Nothing is due while nothing changes,
//! however often the runtime reconciles, and stopping to announce raises none (the node that
//! takes over raises its own).
//!
//! What it must not do: talk to the API server (the runtime publishes the Events).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::announcements::Announcements;
use crate::eligibility::Vip;
use crate::endpoints::ServiceKey;

/// The Event reason.
pub const NODE_ASSIGNED: &str = "nodeAssigned";

/// The `reportingController` of the speaker's Events.
pub const REPORTING_CONTROLLER: &str = "cairn.io/speaker";

/// One Event to raise on each of `services`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The VIP.
    pub ip: IpAddr,
    /// Every Service sharing it.
    pub services: Vec<ServiceKey>,
    /// The Event's note.
    pub note: String,
}

/// The BGP peers `ip` is announced to, by a prefix covering it (itself or an aggregate).
fn bgp_peers(announced: &Announcements, ip: IpAddr) -> BTreeSet<&str> {
    announced
        .bgp
        .iter()
        .filter(|(_, prefixes)| prefixes.keys().any(|p| p.contains(&ip)))
        .map(|(peer, _)| peer.as_str())
        .collect()
}

fn l2_interfaces(announced: &Announcements, ip: IpAddr) -> BTreeSet<&str> {
    announced
        .l2
        .get(&ip)
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn join(items: &BTreeSet<&str>) -> String {
    items.iter().copied().collect::<Vec<_>>().join(", ")
}

/// The Events due for the change `before` → `after` on `node`, L2 first, in VIP order.
pub fn assignments(
    node: &str,
    vips: &[Vip],
    before: &Announcements,
    after: &Announcements,
) -> Vec<Assignment> {
    let mut out = Vec::new();
    for vip in vips {
        let services: Vec<ServiceKey> = vip.services.iter().map(|s| s.key.clone()).collect();
        let ifaces = l2_interfaces(after, vip.ip);
        if !ifaces.is_empty() && ifaces != l2_interfaces(before, vip.ip) {
            out.push(Assignment {
                ip: vip.ip,
                services: services.clone(),
                note: format!(
                    "announcing {} from node {node} via L2 ({})",
                    vip.ip,
                    join(&ifaces)
                ),
            });
        }
        let peers = bgp_peers(after, vip.ip);
        if !peers.is_empty() && peers != bgp_peers(before, vip.ip) {
            out.push(Assignment {
                ip: vip.ip,
                services,
                note: format!(
                    "announcing {} from node {node} via BGP (peers: {})",
                    vip.ip,
                    join(&peers)
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eligibility::RouteAttributes;
    use ipnet::IpNet;

    fn vip(ip: &str, services: &[&str]) -> Vip {
        Vip::shared_by(ip, services)
    }

    fn l2(ip: &str, ifaces: &[&str]) -> Announcements {
        Announcements {
            l2: [(
                ip.parse().expect("ip"),
                ifaces.iter().map(|s| s.to_string()).collect(),
            )]
            .into(),
            ..Announcements::default()
        }
    }

    fn bgp(routes: &[(&str, &str)]) -> Announcements {
        let mut a = Announcements::default();
        for (peer, prefix) in routes {
            let prefix: IpNet = prefix.parse().expect("prefix");
            a.bgp
                .entry(peer.to_string())
                .or_default()
                .insert(prefix, RouteAttributes::default());
        }
        a
    }

    #[test]
    fn starting_to_announce_by_l2_raises_one_event_on_every_sharing_service() {
        let vips = [vip("192.0.2.200", &["tcp", "udp"])];
        let due = assignments(
            "cairn-n1",
            &vips,
            &Announcements::default(),
            &l2("192.0.2.200", &["eth0"]),
        );
        assert_eq!(
            due,
            vec![Assignment {
                ip: "192.0.2.200".parse().expect("ip"),
                services: vec![ServiceKey::new("web", "tcp"), ServiceKey::new("web", "udp")],
                note: "announcing 192.0.2.200 from node cairn-n1 via L2 (eth0)".into(),
            }]
        );
    }

    #[test]
    fn an_unchanged_announcement_raises_nothing_and_stopping_raises_nothing() {
        let vips = [vip("192.0.2.200", &["s"])];
        let on = l2("192.0.2.200", &["eth0"]);
        assert!(assignments("n1", &vips, &on, &on).is_empty());
        assert!(assignments("n1", &vips, &on, &Announcements::default()).is_empty());
    }

    #[test]
    fn a_bgp_announcement_names_every_peer_and_counts_aggregates() {
        let vips = [vip("203.0.113.1", &["s"]), vip("203.0.113.9", &["t"])];
        let after = bgp(&[("tor-b", "203.0.113.0/24"), ("tor-a", "203.0.113.1/32")]);
        let due = assignments("cairn-n1", &vips, &Announcements::default(), &after);
        let notes: Vec<_> = due.iter().map(|a| a.note.as_str()).collect();
        assert_eq!(
            notes,
            [
                "announcing 203.0.113.1 from node cairn-n1 via BGP (peers: tor-a, tor-b)",
                "announcing 203.0.113.9 from node cairn-n1 via BGP (peers: tor-b)",
            ]
        );
        let one_more_prefix = bgp(&[
            ("tor-b", "203.0.113.0/24"),
            ("tor-a", "203.0.113.1/32"),
            ("tor-a", "203.0.113.5/32"),
        ]);
        assert!(
            assignments("cairn-n1", &vips, &after, &one_more_prefix).is_empty(),
            "same peers for both VIPs"
        );
    }

    #[test]
    fn moving_to_another_interface_raises_a_new_event() {
        let vips = [vip("192.0.2.200", &["s"])];
        let due = assignments(
            "n1",
            &vips,
            &l2("192.0.2.200", &["eth0"]),
            &l2("192.0.2.200", &["eth1"]),
        );
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].note,
            "announcing 192.0.2.200 from node n1 via L2 (eth1)"
        );
    }
}
