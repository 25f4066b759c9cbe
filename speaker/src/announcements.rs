//! The announcement planner: from what this node should announce and what it announces now, the
//! ordered list of actions for the driver to execute against `cairn-arp` and `cairn-bgp`.
//!
//! [`desired`] computes the target state of one node: the VIPs it owns by L2 (on the interfaces its
//! L2Advertisements give) and, per BGP peer, the prefixes it announces with their attributes —
//! nothing at all unless the lease keeper says it [may announce](crate::lease::LeaseKeeper::may_announce).
//! [`plan`] diffs two states. Actions come in this order, each group sorted:
//!
//! 1. L2 withdrawals — losing ownership removes the VIP before anything else happens;
//! 2. BGP withdrawals;
//! 3. L2 announcements (an announcer burst plus adding the VIP to the responder);
//! 4. BGP announcements, also used to change the attributes of a prefix already announced (an
//!    UPDATE replaces the route; no withdrawal first and never a session reset).
//!
//! Aggregated prefixes are shared by the VIPs inside them: one stays announced while any of its
//! VIPs is eligible. Plain data in, plain data out; no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::eligibility::{Evaluator, RouteAttributes, Snapshot, Vip};

/// What a node announces: VIP -> L2 interfaces, and peer -> prefix -> attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announcements {
    /// VIP -> interfaces it is announced on by L2.
    pub l2: BTreeMap<IpAddr, BTreeSet<String>>,
    /// BGP peer -> prefix -> attributes it is announced with.
    pub bgp: BTreeMap<String, BTreeMap<IpNet, RouteAttributes>>,
}

/// One step for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop answering for `vip` on `interface`.
    L2Withdraw {
        /// The VIP.
        vip: IpAddr,
        /// The interface.
        interface: String,
    },
    /// Withdraw `prefix` from `peer`.
    BgpWithdraw {
        /// The peer (BGPPeer name).
        peer: String,
        /// The prefix.
        prefix: IpNet,
    },
    /// Announce `vip` on `interface`: gratuitous ARP / unsolicited NA burst, then answer for it.
    L2Announce {
        /// The VIP.
        vip: IpAddr,
        /// The interface.
        interface: String,
    },
    /// Announce `prefix` to `peer` with `attributes` (or change the attributes it has).
    BgpAnnounce {
        /// The peer (BGPPeer name).
        peer: String,
        /// The prefix.
        prefix: IpNet,
        /// Communities and local preference.
        attributes: RouteAttributes,
    },
}

impl Announcements {
    /// Records that `action` was carried out.
    pub fn apply(&mut self, action: &Action) {
        match action {
            Action::L2Withdraw { vip, interface } => {
                if let Some(ifaces) = self.l2.get_mut(vip) {
                    ifaces.remove(interface);
                    if ifaces.is_empty() {
                        self.l2.remove(vip);
                    }
                }
            }
            Action::BgpWithdraw { peer, prefix } => {
                if let Some(prefixes) = self.bgp.get_mut(peer) {
                    prefixes.remove(prefix);
                    if prefixes.is_empty() {
                        self.bgp.remove(peer);
                    }
                }
            }
            Action::L2Announce { vip, interface } => {
                self.l2.entry(*vip).or_default().insert(interface.clone());
            }
            Action::BgpAnnounce {
                peer,
                prefix,
                attributes,
            } => {
                self.bgp
                    .entry(peer.clone())
                    .or_default()
                    .insert(*prefix, attributes.clone());
            }
        }
    }
}

/// What `node` should announce. `candidates` are the nodes membership counts as ownership
/// candidates ([`crate::membership::Membership::candidates`]); `may_announce` is this node's own
/// lease verdict, which overrides whatever `candidates` says about it.
pub fn desired(
    snapshot: &Snapshot,
    vips: &[Vip],
    node: &str,
    may_announce: bool,
    candidates: &BTreeSet<String>,
) -> Announcements {
    let mut out = Announcements::default();
    if !may_announce {
        return out;
    }
    let mut live = candidates.clone();
    live.insert(node.to_string());
    let mut eval = Evaluator::new(snapshot);
    for vip in vips {
        if eval.l2_owner(vip, &live) == Some(node) {
            if let Ok(grant) = eval.l2_eligibility(vip, node) {
                out.l2.insert(vip.ip, grant.interfaces);
            }
        }
        if let Ok(routes) = eval.bgp_eligibility(vip, node) {
            for (peer, prefixes) in routes {
                let mine = out.bgp.entry(peer).or_default();
                for (prefix, attrs) in prefixes {
                    mine.entry(prefix)
                        .and_modify(|a| a.merge(&attrs))
                        .or_insert(attrs);
                }
            }
        }
    }
    out
}

/// The actions that take `current` to `desired`, in the order documented on the module.
pub fn plan(current: &Announcements, desired: &Announcements) -> Vec<Action> {
    let mut l2_withdraw = Vec::new();
    let mut l2_announce = Vec::new();
    for (vip, ifaces) in &current.l2 {
        let keep = desired.l2.get(vip);
        for interface in ifaces {
            if !keep.is_some_and(|k| k.contains(interface)) {
                l2_withdraw.push(Action::L2Withdraw {
                    vip: *vip,
                    interface: interface.clone(),
                });
            }
        }
    }
    for (vip, ifaces) in &desired.l2 {
        let have = current.l2.get(vip);
        for interface in ifaces {
            if !have.is_some_and(|h| h.contains(interface)) {
                l2_announce.push(Action::L2Announce {
                    vip: *vip,
                    interface: interface.clone(),
                });
            }
        }
    }
    let mut bgp_withdraw = Vec::new();
    let mut bgp_announce = Vec::new();
    for (peer, prefixes) in &current.bgp {
        let keep = desired.bgp.get(peer);
        for prefix in prefixes.keys() {
            if !keep.is_some_and(|k| k.contains_key(prefix)) {
                bgp_withdraw.push(Action::BgpWithdraw {
                    peer: peer.clone(),
                    prefix: *prefix,
                });
            }
        }
    }
    for (peer, prefixes) in &desired.bgp {
        let have = current.bgp.get(peer);
        for (prefix, attributes) in prefixes {
            if have.and_then(|h| h.get(prefix)) != Some(attributes) {
                bgp_announce.push(Action::BgpAnnounce {
                    peer: peer.clone(),
                    prefix: *prefix,
                    attributes: attributes.clone(),
                });
            }
        }
    }
    let mut actions = l2_withdraw;
    actions.extend(bgp_withdraw);
    actions.extend(l2_announce);
    actions.extend(bgp_announce);
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eligibility::{
        BgpAdvertisement, BgpPeer, Community, L2Advertisement, Node, PoolScope, SharingService,
        TrafficPolicy,
    };
    use crate::endpoints::ServiceKey;
    use proptest::prelude::*;

    fn strings(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn vip(s: &str) -> Vip {
        Vip {
            ip: ip(s),
            pool: "pool-a".into(),
            services: vec![SharingService {
                key: ServiceKey::new("default", s),
                traffic_policy: TrafficPolicy::Cluster,
            }],
        }
    }

    fn snapshot(nodes: &[&str], aggregation_v4: u8) -> Snapshot {
        let mut attributes = RouteAttributes::default();
        attributes
            .communities
            .insert(Community::Standard(64512, 100));
        Snapshot {
            nodes: nodes
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        Node {
                            labels: BTreeMap::new(),
                            interfaces_up: strings(&["eth0"]),
                        },
                    )
                })
                .collect(),
            l2_advertisements: vec![L2Advertisement {
                name: "l2".into(),
                pools: PoolScope::All,
                node_selectors: vec![],
                interfaces: BTreeSet::new(),
            }],
            bgp_advertisements: vec![BgpAdvertisement {
                name: "bgp".into(),
                pools: PoolScope::All,
                node_selectors: vec![],
                peers: None,
                aggregation_length_v4: aggregation_v4,
                aggregation_length_v6: 128,
                attributes,
            }],
            bgp_peers: vec![BgpPeer {
                name: "tor".into(),
                node_selectors: vec![],
            }],
            ..Default::default()
        }
    }

    fn l2(vip: &str, iface: &str) -> (IpAddr, BTreeSet<String>) {
        (ip(vip), strings(&[iface]))
    }

    #[test]
    fn withdrawals_come_first_l2_before_bgp_then_announcements() {
        let current = Announcements {
            l2: [l2("192.0.2.1", "eth0")].into(),
            bgp: [(
                "tor".to_string(),
                [(net("192.0.2.1/32"), RouteAttributes::default())].into(),
            )]
            .into(),
        };
        let desired = Announcements {
            l2: [l2("192.0.2.2", "eth0")].into(),
            bgp: [(
                "tor".to_string(),
                [(net("192.0.2.2/32"), RouteAttributes::default())].into(),
            )]
            .into(),
        };
        assert_eq!(
            plan(&current, &desired),
            vec![
                Action::L2Withdraw {
                    vip: ip("192.0.2.1"),
                    interface: "eth0".into()
                },
                Action::BgpWithdraw {
                    peer: "tor".into(),
                    prefix: net("192.0.2.1/32")
                },
                Action::L2Announce {
                    vip: ip("192.0.2.2"),
                    interface: "eth0".into()
                },
                Action::BgpAnnounce {
                    peer: "tor".into(),
                    prefix: net("192.0.2.2/32"),
                    attributes: RouteAttributes::default(),
                },
            ]
        );
    }

    #[test]
    fn nothing_changes_when_current_is_desired() {
        let s = snapshot(&["n1"], 32);
        let d = desired(&s, &[vip("192.0.2.1")], "n1", true, &BTreeSet::new());
        assert!(!d.l2.is_empty());
        assert_eq!(plan(&d, &d), vec![]);
    }

    #[test]
    fn new_attributes_are_re_announced_without_a_withdrawal() {
        let prefix = net("192.0.2.1/32");
        let current = Announcements {
            l2: BTreeMap::new(),
            bgp: [(
                "tor".to_string(),
                [(prefix, RouteAttributes::default())].into(),
            )]
            .into(),
        };
        let new = RouteAttributes {
            communities: BTreeSet::new(),
            local_pref: Some(200),
        };
        let desired = Announcements {
            l2: BTreeMap::new(),
            bgp: [("tor".to_string(), [(prefix, new.clone())].into())].into(),
        };
        assert_eq!(
            plan(&current, &desired),
            vec![Action::BgpAnnounce {
                peer: "tor".into(),
                prefix,
                attributes: new
            }]
        );
    }

    #[test]
    fn moving_a_vip_to_another_interface_withdraws_the_old_one_first() {
        let current = Announcements {
            l2: [l2("192.0.2.1", "eth0")].into(),
            bgp: BTreeMap::new(),
        };
        let desired = Announcements {
            l2: [l2("192.0.2.1", "eth1")].into(),
            bgp: BTreeMap::new(),
        };
        assert_eq!(
            plan(&current, &desired),
            vec![
                Action::L2Withdraw {
                    vip: ip("192.0.2.1"),
                    interface: "eth0".into()
                },
                Action::L2Announce {
                    vip: ip("192.0.2.1"),
                    interface: "eth1".into()
                },
            ]
        );
    }

    #[test]
    fn a_node_that_may_not_announce_wants_nothing_and_withdraws_everything() {
        let s = snapshot(&["n1", "n2"], 32);
        let vips = [vip("192.0.2.1"), vip("192.0.2.2")];
        let live = strings(&["n1", "n2"]);
        let before = desired(&s, &vips, "n1", true, &live);
        assert!(!before.bgp.is_empty());
        let fenced = desired(&s, &vips, "n1", false, &live);
        assert_eq!(fenced, Announcements::default());
        let actions = plan(&before, &fenced);
        assert!(!actions.is_empty());
        assert!(actions
            .iter()
            .all(|a| matches!(a, Action::L2Withdraw { .. } | Action::BgpWithdraw { .. })));
    }

    #[test]
    fn only_the_owner_announces_by_l2_while_every_node_announces_by_bgp() {
        let s = snapshot(&["n1", "n2", "n3"], 32);
        let v = vip("192.0.2.1");
        let live = strings(&["n1", "n2", "n3"]);
        let owner = s.l2_owner(&v, &live).unwrap().to_string();
        for n in ["n1", "n2", "n3"] {
            let d = desired(&s, std::slice::from_ref(&v), n, true, &live);
            assert_eq!(d.l2.contains_key(&v.ip), n == owner, "node {n}");
            let routes = &d.bgp["tor"];
            let attrs = &routes[&net("192.0.2.1/32")];
            assert!(attrs.communities.contains(&Community::Standard(64512, 100)));
        }
    }

    #[test]
    fn a_node_counts_itself_live_when_it_may_announce_whatever_the_membership_view() {
        let s = snapshot(&["n1"], 32);
        let d = desired(&s, &[vip("192.0.2.1")], "n1", true, &BTreeSet::new());
        assert_eq!(d.l2.get(&ip("192.0.2.1")), Some(&strings(&["eth0"])));
    }

    #[test]
    fn an_aggregate_stays_announced_while_any_of_its_vips_is_eligible() {
        let s = snapshot(&["n1"], 24);
        let both = [vip("192.0.2.1"), vip("192.0.2.2")];
        let d = desired(&s, &both, "n1", true, &BTreeSet::new());
        assert_eq!(
            d.bgp["tor"].keys().collect::<Vec<_>>(),
            [&net("192.0.2.0/24")]
        );
        let one = desired(&s, &both[..1], "n1", true, &BTreeSet::new());
        assert_eq!(
            plan(&d, &one)
                .iter()
                .filter(|a| matches!(a, Action::BgpWithdraw { .. }))
                .count(),
            0
        );
        let none = desired(&s, &[], "n1", true, &BTreeSet::new());
        let bgp: Vec<Action> = plan(&one, &none)
            .into_iter()
            .filter(|a| matches!(a, Action::BgpWithdraw { .. } | Action::BgpAnnounce { .. }))
            .collect();
        assert_eq!(
            bgp,
            vec![Action::BgpWithdraw {
                peer: "tor".into(),
                prefix: net("192.0.2.0/24")
            }]
        );
    }

    fn arb_state() -> impl Strategy<Value = Announcements> {
        let l2 = proptest::collection::btree_map(
            (0u8..6).prop_map(|i| IpAddr::from([192, 0, 2, i])),
            proptest::collection::btree_set(
                prop_oneof![Just("eth0".to_string()), Just("eth1".to_string())],
                1..3,
            ),
            0..5,
        );
        let attrs = (proptest::option::of(0u32..3)).prop_map(|local_pref| RouteAttributes {
            communities: BTreeSet::new(),
            local_pref,
        });
        let prefixes = proptest::collection::btree_map(
            (0u8..6).prop_map(|i| IpNet::from(IpAddr::from([198, 51, 100, i]))),
            attrs,
            1..4,
        );
        let bgp = proptest::collection::btree_map(
            prop_oneof![Just("a".to_string()), Just("b".to_string())],
            prefixes,
            0..3,
        );
        (l2, bgp).prop_map(|(l2, bgp)| Announcements { l2, bgp })
    }

    proptest! {
        #[test]
        fn applying_the_plan_reaches_the_desired_state_withdrawals_first(current in arb_state(), target in arb_state()) {
            let actions = plan(&current, &target);
            let first_announce = actions.iter().position(|a| matches!(a, Action::L2Announce { .. } | Action::BgpAnnounce { .. }));
            if let Some(i) = first_announce {
                let only_announcements = actions[i..]
                    .iter()
                    .all(|a| matches!(a, Action::L2Announce { .. } | Action::BgpAnnounce { .. }));
                prop_assert!(only_announcements);
            }
            let mut state = current.clone();
            for a in &actions {
                state.apply(a);
            }
            prop_assert_eq!(&state, &target);
            prop_assert!(plan(&state, &target).is_empty());
        }

        /// With one shared view of who is live, at most one node announces each VIP by L2, and
        /// exactly one does when any live node is eligible.
        #[test]
        fn with_a_shared_view_each_vip_has_exactly_one_l2_announcer(
            live_mask in proptest::collection::vec(any::<bool>(), 4),
            down_mask in proptest::collection::vec(any::<bool>(), 4),
            count in 1u8..40,
        ) {
            let names = ["n0", "n1", "n2", "n3"];
            let mut s = snapshot(&names, 32);
            for (n, down) in names.iter().zip(&down_mask) {
                if *down {
                    s.nodes.get_mut(*n).unwrap().interfaces_up.clear();
                }
            }
            let vips: Vec<Vip> = (0..count).map(|i| vip(&format!("203.0.113.{i}"))).collect();
            let live: BTreeSet<String> = names.iter().zip(&live_mask).filter(|(_, l)| **l).map(|(n, _)| n.to_string()).collect();
            let plans: Vec<Announcements> = names
                .iter()
                .map(|n| desired(&s, &vips, n, live.contains(*n), &live))
                .collect();
            let any_candidate = names.iter().zip(live_mask.iter().zip(&down_mask)).any(|(_, (l, d))| *l && !*d);
            for v in &vips {
                let announcers = plans.iter().filter(|p| p.l2.contains_key(&v.ip)).count();
                prop_assert_eq!(announcers, usize::from(any_candidate));
            }
        }
    }
}
