//! Adj-RIB-Out of one peer: the routes we want the peer to have, and the routes it has.
//!
//! `desired` is what the caller announced; `sent` is what the peer holds from this session. The
//! UPDATEs to send are always the difference between the two, so a change sends only what
//! changed, and after a reconnect (where `sent` starts empty) or a route refresh for a family
//! (where that family is forgotten from `sent`) the peer receives exactly the current table
//! (RFC 4271 §3.2, §9.1.3; RFC 2918 §4). This module decides what to send; it builds no bytes.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::update::RouteAttrs;

/// The two tables of one peer. Both map prefix → attributes.
#[derive(Debug, Default, Clone)]
pub struct AdjRibOut {
    /// prefix → attributes the caller wants announced.
    desired: BTreeMap<IpNet, RouteAttrs>,
    /// prefix → attributes the peer has from us in this session.
    sent: BTreeMap<IpNet, RouteAttrs>,
}

/// The difference between what is desired and what was sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Prefixes to announce (new, or with changed attributes), in prefix order.
    pub announce: Vec<(IpNet, RouteAttrs)>,
    /// Prefixes the peer has but should not, in prefix order.
    pub withdraw: Vec<IpNet>,
}

impl AdjRibOut {
    /// Wants `prefix` announced with `attrs` (replacing earlier attributes).
    pub fn set(&mut self, prefix: IpNet, attrs: RouteAttrs) {
        self.desired.insert(prefix.trunc(), attrs);
    }

    /// Wants `prefix` withdrawn.
    pub fn remove(&mut self, prefix: &IpNet) {
        self.desired.remove(&prefix.trunc());
    }

    /// The session went down: the peer holds nothing from us any more.
    pub fn forget_sent(&mut self) {
        self.sent.clear();
    }

    /// The peer asked for a family again (route refresh): treat that family as never sent.
    pub fn forget_family(&mut self, ipv6: bool) {
        self.sent
            .retain(|prefix, _| matches!(prefix, IpNet::V6(_)) != ipv6);
    }

    /// What must be sent to make the peer's view equal to the desired table.
    pub fn diff(&self) -> Diff {
        let announce = self
            .desired
            .iter()
            .filter(|(prefix, attrs)| self.sent.get(prefix) != Some(attrs))
            .map(|(prefix, attrs)| (*prefix, attrs.clone()))
            .collect();
        let withdraw = self
            .sent
            .keys()
            .filter(|prefix| !self.desired.contains_key(prefix))
            .copied()
            .collect();
        Diff { announce, withdraw }
    }

    /// Records that `prefix` was announced with `attrs`.
    pub fn mark_announced(&mut self, prefix: IpNet, attrs: RouteAttrs) {
        self.sent.insert(prefix, attrs);
    }

    /// Records that `prefix` was withdrawn.
    pub fn mark_withdrawn(&mut self, prefix: &IpNet) {
        self.sent.remove(prefix);
    }

    /// Number of prefixes the peer currently has from us.
    pub fn advertised(&self) -> usize {
        self.sent.len()
    }

    /// Number of prefixes the caller wants announced.
    pub fn desired_len(&self) -> usize {
        self.desired.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn pref(p: u32) -> RouteAttrs {
        RouteAttrs {
            local_pref: Some(p),
            ..RouteAttrs::default()
        }
    }

    fn send_all(rib: &mut AdjRibOut) {
        let diff = rib.diff();
        for (p, a) in diff.announce {
            rib.mark_announced(p, a);
        }
        for p in diff.withdraw {
            rib.mark_withdrawn(&p);
        }
    }

    #[test]
    fn a_change_sends_only_the_difference() {
        let mut rib = AdjRibOut::default();
        rib.set(net("192.0.2.1/32"), pref(1));
        rib.set(net("192.0.2.2/32"), pref(1));
        send_all(&mut rib);
        rib.set(net("192.0.2.2/32"), pref(2));
        rib.set(net("192.0.2.3/32"), pref(1));
        rib.remove(&net("192.0.2.1/32"));
        assert_eq!(
            rib.diff(),
            Diff {
                announce: vec![
                    (net("192.0.2.2/32"), pref(2)),
                    (net("192.0.2.3/32"), pref(1))
                ],
                withdraw: vec![net("192.0.2.1/32")],
            }
        );
        send_all(&mut rib);
        assert_eq!(rib.diff(), Diff::default());
        assert_eq!(rib.advertised(), 2);
    }

    #[test]
    fn after_a_reconnect_exactly_the_current_table_is_sent() {
        let mut rib = AdjRibOut::default();
        rib.set(net("192.0.2.1/32"), pref(1));
        rib.set(net("192.0.2.2/32"), pref(1));
        send_all(&mut rib);
        rib.remove(&net("192.0.2.1/32"));
        rib.forget_sent();
        assert_eq!(
            rib.diff(),
            Diff {
                announce: vec![(net("192.0.2.2/32"), pref(1))],
                withdraw: vec![],
            }
        );
    }

    #[test]
    fn route_refresh_resends_only_the_requested_family() {
        let mut rib = AdjRibOut::default();
        rib.set(net("192.0.2.1/32"), pref(1));
        rib.set(net("2001:db8::1/128"), pref(1));
        send_all(&mut rib);
        rib.forget_family(true);
        assert_eq!(rib.diff().announce, vec![(net("2001:db8::1/128"), pref(1))]);
    }

    #[test]
    fn prefixes_are_stored_truncated_to_their_network() {
        let mut rib = AdjRibOut::default();
        rib.set(net("192.0.2.77/24"), pref(1));
        assert_eq!(rib.diff().announce[0].0, net("192.0.2.0/24"));
    }
}
