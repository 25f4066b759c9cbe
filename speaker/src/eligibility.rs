//! Which nodes may announce a VIP, and why the others may not.
//!
//! Pure functions of plain inputs (a [`Snapshot`] of nodes, advertisements, peers and local
//! endpoints, and a [`Vip`]); the Kubernetes adapter builds those from the API objects. Liveness
//! is not judged here: [`crate::membership`] says who is live, [`crate::ownership`] picks the owner
//! among the live eligible nodes, and [`Snapshot::explain`] joins the three for `cairnctl why`.
//!
//! L2 eligibility of a node for a VIP: the node exists; it does not carry the label
//! [`EXCLUDE_LABEL`] (any value, as the Kubernetes service controller reads it); some
//! [`L2Advertisement`] covers the VIP's pool and selects the node (empty node selector list: every
//! node; otherwise any selector matching) and one of that advertisement's interfaces is up on the
//! node (no interfaces listed: any usable interface); and, when any Service sharing the VIP has
//! `externalTrafficPolicy: Local`, the node has a usable local endpoint of **every** such Service
//! (see [`LocalEndpoints::check`]). Ownership is per IP, so Services sharing an IP are co-owned.
//!
//! BGP eligibility: the same node, exclusion and Local rules; a [`BgpAdvertisement`] covering the
//! pool and selecting the node; and at least one [`BgpPeer`] that selects the node (and is named by
//! the advertisement, if it names peers). Every BGP-eligible live node announces (ECMP); the VIP is
//! announced as the prefix of the advertisement's aggregation length, with its communities and
//! local preference. Interfaces do not matter to BGP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use cairn_api::selector::Selector;
use cairn_api::validation::any_selector_matches;
pub use cairn_api::validation::Community;
use ipnet::IpNet;

use crate::endpoints::{LocalEndpointGap, LocalEndpoints, ServiceKey};
use crate::ownership;

/// The well-known label that takes a node out of every load balancer's pool (its value is
/// ignored).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A node as eligibility sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// The node's labels.
    pub labels: BTreeMap<String, String>,
    /// The node's L2 interfaces that are up and usable for announcing: for this node, what the
    /// driver sees locally; for peers, what they publish in their Lease
    /// ([`crate::membership::INTERFACES_ANNOTATION`]).
    pub interfaces_up: BTreeSet<String>,
}

/// The pools an advertisement covers. The adapter resolves `ipAddressPoolSelectors` into names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolScope {
    /// Neither pools nor pool selectors given: every pool.
    All,
    /// Exactly these pools.
    Named(BTreeSet<String>),
}

impl PoolScope {
    /// Whether `pool` is covered.
    pub fn covers(&self, pool: &str) -> bool {
        match self {
            PoolScope::All => true,
            PoolScope::Named(pools) => pools.contains(pool),
        }
    }
}

/// An L2Advertisement, reduced to what eligibility needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Advertisement {
    /// The advertisement's name (for reasons).
    pub name: String,
    /// The pools it covers.
    pub pools: PoolScope,
    /// Node selectors (empty: every node).
    pub node_selectors: Vec<Selector>,
    /// Interfaces to announce on (empty: every usable interface that is up).
    pub interfaces: BTreeSet<String>,
}

/// Path attributes a prefix is announced with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteAttributes {
    /// Communities.
    pub communities: BTreeSet<Community>,
    /// LOCAL_PREF (iBGP only; the session decides whether it is sent).
    pub local_pref: Option<u32>,
}

impl RouteAttributes {
    /// Merges the attributes of a second advertisement of the same prefix to the same peer:
    /// communities are united and the highest local preference wins.
    pub fn merge(&mut self, other: &RouteAttributes) {
        self.communities.extend(other.communities.iter().copied());
        self.local_pref = self.local_pref.max(other.local_pref);
    }
}

/// A BGPAdvertisement, reduced to what eligibility needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpAdvertisement {
    /// The advertisement's name (for reasons).
    pub name: String,
    /// The pools it covers.
    pub pools: PoolScope,
    /// Node selectors (empty: every node).
    pub node_selectors: Vec<Selector>,
    /// The peers it is limited to, by BGPPeer name (`None`: every peer).
    pub peers: Option<BTreeSet<String>>,
    /// Prefix length IPv4 VIPs are announced as (32: the address itself).
    pub aggregation_length_v4: u8,
    /// Prefix length IPv6 VIPs are announced as (128: the address itself).
    pub aggregation_length_v6: u8,
    /// Communities and local preference.
    pub attributes: RouteAttributes,
}

/// A BGPPeer, reduced to what eligibility needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpPeer {
    /// The peer's name.
    pub name: String,
    /// Nodes that peer with it (empty: every node).
    pub node_selectors: Vec<Selector>,
}

/// `spec.externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// Any node may receive the traffic.
    Cluster,
    /// Only nodes with a usable local endpoint may.
    Local,
}

/// A Service using a VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharingService {
    /// The Service.
    pub key: ServiceKey,
    /// Its `externalTrafficPolicy`.
    pub traffic_policy: TrafficPolicy,
}

/// A VIP with the pool it came from and every Service that uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    /// The address.
    pub ip: IpAddr,
    /// The pool it was allocated from.
    pub pool: String,
    /// The Services using it (more than one when shared).
    pub services: Vec<SharingService>,
}

#[cfg(test)]
impl Vip {
    /// A VIP of pool `p` used by the Services `web/<name>` for each of `services`, all with
    /// `externalTrafficPolicy: Cluster` (a test fixture).
    pub(crate) fn shared_by(ip: &str, services: &[&str]) -> Self {
        Self {
            ip: ip.parse().expect("ip"),
            pool: "p".into(),
            services: services
                .iter()
                .map(|s| SharingService {
                    key: ServiceKey::new("web", *s),
                    traffic_policy: TrafficPolicy::Cluster,
                })
                .collect(),
        }
    }
}

/// One Service's allocated addresses, as the allocator recorded them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAddresses {
    /// The Service.
    pub key: ServiceKey,
    /// The pool its addresses came from.
    pub pool: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its `externalTrafficPolicy`.
    pub traffic_policy: TrafficPolicy,
}

/// Services sharing an IP but recorded with different pools (an allocator bug or a hand edit).
/// Such an IP is not announced: nobody can tell which pool's advertisements apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConflict {
    /// The address.
    pub ip: IpAddr,
    /// The pools claimed for it.
    pub pools: BTreeSet<String>,
    /// The Services using it.
    pub services: Vec<ServiceKey>,
}

/// Groups Services by IP, so that each VIP carries every Service that shares it. Output is sorted
/// by IP; an IP whose Services disagree on the pool is reported instead of grouped.
pub fn group_by_ip(services: &[ServiceAddresses]) -> (Vec<Vip>, Vec<PoolConflict>) {
    // ip -> (pools, services)
    let mut by_ip: BTreeMap<IpAddr, (BTreeSet<String>, Vec<SharingService>)> = BTreeMap::new();
    for service in services {
        for ip in &service.ips {
            let (pools, sharing) = by_ip.entry(*ip).or_default();
            pools.insert(service.pool.clone());
            if !sharing.iter().any(|s| s.key == service.key) {
                sharing.push(SharingService {
                    key: service.key.clone(),
                    traffic_policy: service.traffic_policy,
                });
            }
        }
    }
    let mut vips = Vec::new();
    let mut conflicts = Vec::new();
    for (ip, (pools, mut sharing)) in by_ip {
        sharing.sort_by(|a, b| a.key.cmp(&b.key));
        let mut only = pools.iter();
        match (only.next(), only.next()) {
            (Some(pool), None) => vips.push(Vip {
                ip,
                pool: pool.clone(),
                services: sharing,
            }),
            _ => conflicts.push(PoolConflict {
                ip,
                pools,
                services: sharing.into_iter().map(|s| s.key).collect(),
            }),
        }
    }
    (vips, conflicts)
}

/// Why a node does not announce a VIP. `cairnctl why` prints these.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The node's speaker lease is not live (or, for this node itself, it is fenced).
    NotLive,
    /// No Node object by that name.
    UnknownNode,
    /// The node carries [`EXCLUDE_LABEL`].
    ExcludedByLabel,
    /// No L2Advertisement covers the VIP's pool.
    NoL2AdvertisementForPool {
        /// The pool.
        pool: String,
    },
    /// No BGPAdvertisement covers the VIP's pool.
    NoBgpAdvertisementForPool {
        /// The pool.
        pool: String,
    },
    /// Advertisements cover the pool, but none selects the node.
    NodeSelectorMismatch {
        /// The advertisements covering the pool.
        advertisements: Vec<String>,
    },
    /// Advertisements select the node, but none of their interfaces is up on it.
    InterfaceDown {
        /// The advertisements selecting the node.
        advertisements: Vec<String>,
    },
    /// Advertisements select the node, but no BGPPeer both selects the node and is allowed by
    /// them.
    NoPeerForNode {
        /// The advertisements selecting the node.
        advertisements: Vec<String>,
    },
    /// An advertisement that would apply has an aggregation length too long for the address
    /// family.
    InvalidAggregationLength {
        /// The advertisement.
        advertisement: String,
        /// Its length for this family.
        length: u8,
    },
    /// `externalTrafficPolicy: Local` and no usable endpoint of this Service on the node.
    NoReadyLocalEndpoint {
        /// The Service.
        service: ServiceKey,
    },
    /// `externalTrafficPolicy: Local` and only terminating endpoints of this Service on the node,
    /// while other nodes have ready ones.
    OnlyTerminatingLocalEndpoint {
        /// The Service.
        service: ServiceKey,
    },
}

/// Names sorted and deduplicated, so reasons do not depend on the order objects were listed in.
fn sorted_names<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: BTreeSet<&String> = names.collect();
    set.into_iter().cloned().collect()
}

fn names(list: &[String]) -> String {
    list.join(", ")
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotLive => write!(f, "the node's speaker lease is not live"),
            Reason::UnknownNode => write!(f, "no Node object by that name"),
            Reason::ExcludedByLabel => write!(f, "the node is labelled {EXCLUDE_LABEL}"),
            Reason::NoL2AdvertisementForPool { pool } => {
                write!(f, "no L2Advertisement covers pool {pool}")
            }
            Reason::NoBgpAdvertisementForPool { pool } => {
                write!(f, "no BGPAdvertisement covers pool {pool}")
            }
            Reason::NodeSelectorMismatch { advertisements } => write!(
                f,
                "the node selectors of {} do not match the node",
                names(advertisements)
            ),
            Reason::InterfaceDown { advertisements } => write!(
                f,
                "no interface of {} is up on the node",
                names(advertisements)
            ),
            Reason::NoPeerForNode { advertisements } => write!(
                f,
                "no BGPPeer allowed by {} selects the node",
                names(advertisements)
            ),
            Reason::InvalidAggregationLength {
                advertisement,
                length,
            } => write!(
                f,
                "{advertisement}: aggregation length {length} is too long for the address family"
            ),
            Reason::NoReadyLocalEndpoint { service } => write!(
                f,
                "externalTrafficPolicy Local: no ready endpoint of {service} on the node"
            ),
            Reason::OnlyTerminatingLocalEndpoint { service } => write!(
                f,
                "externalTrafficPolicy Local: only terminating endpoints of {service} on the node \
                 while other nodes have ready ones"
            ),
        }
    }
}

/// What an L2-eligible node would announce a VIP on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Grant {
    /// The interfaces to announce on (union over the applicable advertisements).
    pub interfaces: BTreeSet<String>,
    /// The advertisements that apply.
    pub advertisements: BTreeSet<String>,
}

/// What a BGP-eligible node announces for a VIP: peer -> prefix -> attributes.
pub type BgpRoutes = BTreeMap<String, BTreeMap<IpNet, RouteAttributes>>;

/// Everything eligibility is computed from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// node name -> node.
    pub nodes: BTreeMap<String, Node>,
    /// L2Advertisements.
    pub l2_advertisements: Vec<L2Advertisement>,
    /// BGPAdvertisements.
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    /// BGPPeers.
    pub bgp_peers: Vec<BgpPeer>,
    /// Local endpoints per Service and node.
    pub endpoints: LocalEndpoints,
}

/// `cairnctl why` for one VIP on one node, L2 side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L2Verdict {
    /// The node owns the VIP and announces it on these interfaces.
    Owner(L2Grant),
    /// The node is live and eligible but another node won the rendezvous hash.
    Standby {
        /// The owner.
        owner: String,
    },
    /// The node may not announce the VIP.
    Ineligible(Vec<Reason>),
}

/// `cairnctl why` for one VIP on one node, BGP side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BgpVerdict {
    /// The node announces these routes.
    Announces(BgpRoutes),
    /// The node may not announce the VIP.
    Ineligible(Vec<Reason>),
}

/// Why each node does or does not announce one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The VIP.
    pub ip: IpAddr,
    /// The L2 owner, if any.
    pub l2_owner: Option<String>,
    /// node -> L2 verdict, for every known or live node.
    pub l2: BTreeMap<String, L2Verdict>,
    /// node -> BGP verdict, for every known or live node.
    pub bgp: BTreeMap<String, BgpVerdict>,
}

impl Snapshot {
    /// Whether `node` may announce `vip` by L2 (liveness aside), with the interfaces to use.
    pub fn l2_eligibility(&self, vip: &Vip, node: &str) -> Result<L2Grant, Vec<Reason>> {
        Evaluator::new(self).l2_eligibility(vip, node)
    }

    /// Whether `node` may announce `vip` by BGP (liveness aside), with the routes per peer.
    pub fn bgp_eligibility(&self, vip: &Vip, node: &str) -> Result<BgpRoutes, Vec<Reason>> {
        Evaluator::new(self).bgp_eligibility(vip, node)
    }

    /// The L2 owner of `vip`: the rendezvous winner among the `live` nodes that are L2-eligible.
    /// `live` is the set of ownership candidates ([`crate::membership::Membership::candidates`]).
    pub fn l2_owner(&self, vip: &Vip, live: &BTreeSet<String>) -> Option<&str> {
        Evaluator::new(self).l2_owner(vip, live)
    }

    /// Why each node (known or live) does or does not announce `vip`, given the `live` nodes
    /// (the ownership candidates, as for [`Snapshot::l2_owner`]).
    pub fn explain(&self, vip: &Vip, live: &BTreeSet<String>) -> Explanation {
        let mut eval = Evaluator::new(self);
        let l2_owner = eval.l2_owner(vip, live).map(str::to_string);
        let all: BTreeSet<&str> = self
            .nodes
            .keys()
            .chain(live.iter())
            .map(String::as_str)
            .collect();
        let with_liveness = |node: &str, mut reasons: Vec<Reason>| {
            if !live.contains(node) {
                reasons.insert(0, Reason::NotLive);
            }
            reasons
        };
        let mut l2 = BTreeMap::new();
        let mut bgp = BTreeMap::new();
        for node in all {
            let l2_verdict = match (eval.l2_eligibility(vip, node), live.contains(node)) {
                (Ok(grant), true) if l2_owner.as_deref() == Some(node) => L2Verdict::Owner(grant),
                (Ok(_), true) => L2Verdict::Standby {
                    // A live eligible node exists, so the rendezvous has a winner.
                    owner: l2_owner.clone().unwrap_or_default(),
                },
                (Ok(_), false) => L2Verdict::Ineligible(vec![Reason::NotLive]),
                (Err(reasons), _) => L2Verdict::Ineligible(with_liveness(node, reasons)),
            };
            let bgp_verdict = match (eval.bgp_eligibility(vip, node), live.contains(node)) {
                (Ok(routes), true) => BgpVerdict::Announces(routes),
                (Ok(_), false) => BgpVerdict::Ineligible(vec![Reason::NotLive]),
                (Err(reasons), _) => BgpVerdict::Ineligible(with_liveness(node, reasons)),
            };
            l2.insert(node.to_string(), l2_verdict);
            bgp.insert(node.to_string(), bgp_verdict);
        }
        Explanation {
            ip: vip.ip,
            l2_owner,
            l2,
            bgp,
        }
    }
}

/// A BGPAdvertisement that applies to a node, with the peers it announces to there.
#[derive(Clone, Debug)]
struct BgpRule<'s> {
    advertisement: &'s BgpAdvertisement,
    peers: Vec<&'s str>,
}

/// Eligibility of many VIPs against one [`Snapshot`]. The advertisement-level verdicts depend
/// only on (node, pool), so they are computed once per pair and reused for every VIP of the pool;
/// the per-VIP checks (exclusion, local endpoints, prefixes) run each time. This is the only
/// implementation: the [`Snapshot`] methods use a fresh evaluator.
#[derive(Debug)]
pub struct Evaluator<'s> {
    snapshot: &'s Snapshot,
    /// node -> pool -> L2 advertisement verdict
    l2: HashMap<&'s str, HashMap<String, Result<L2Grant, Reason>>>,
    /// node -> pool -> applicable BGP rules
    bgp: HashMap<&'s str, HashMap<String, Result<Vec<BgpRule<'s>>, Reason>>>,
}

impl<'s> Evaluator<'s> {
    /// An evaluator with nothing memoized yet.
    pub fn new(snapshot: &'s Snapshot) -> Self {
        Self {
            snapshot,
            l2: HashMap::new(),
            bgp: HashMap::new(),
        }
    }

    /// Checks common to L2 and BGP: the node exists, is not excluded, and has the local
    /// endpoints `Local` Services need. Returns the node (with its map key) and the reasons.
    fn common(&self, vip: &Vip, node: &str) -> (Option<(&'s str, &'s Node)>, Vec<Reason>) {
        let Some((name, n)) = self.snapshot.nodes.get_key_value(node) else {
            return (None, vec![Reason::UnknownNode]);
        };
        let mut reasons = Vec::new();
        if n.labels.contains_key(EXCLUDE_LABEL) {
            reasons.push(Reason::ExcludedByLabel);
        }
        for service in &vip.services {
            if service.traffic_policy != TrafficPolicy::Local {
                continue;
            }
            match self.snapshot.endpoints.check(&service.key, node) {
                Ok(()) => {}
                Err(LocalEndpointGap::None) => reasons.push(Reason::NoReadyLocalEndpoint {
                    service: service.key.clone(),
                }),
                Err(LocalEndpointGap::OnlyTerminating) => {
                    reasons.push(Reason::OnlyTerminatingLocalEndpoint {
                        service: service.key.clone(),
                    })
                }
            }
        }
        (Some((name.as_str(), n)), reasons)
    }

    /// The L2 advertisement verdict for `pool` on node `n`, memoized.
    fn l2_ads(&mut self, name: &'s str, n: &'s Node, pool: &str) -> &Result<L2Grant, Reason> {
        let snapshot = self.snapshot;
        let per_node = self.l2.entry(name).or_default();
        if !per_node.contains_key(pool) {
            per_node.insert(pool.to_string(), l2_ads(snapshot, n, pool));
        }
        &per_node[pool]
    }

    /// The BGP rules for `pool` on node `n`, memoized.
    fn bgp_ads(
        &mut self,
        name: &'s str,
        n: &'s Node,
        pool: &str,
    ) -> &Result<Vec<BgpRule<'s>>, Reason> {
        let snapshot = self.snapshot;
        let per_node = self.bgp.entry(name).or_default();
        if !per_node.contains_key(pool) {
            per_node.insert(pool.to_string(), bgp_ads(snapshot, n, pool));
        }
        &per_node[pool]
    }

    /// Whether `node` may announce `vip` by L2 (liveness aside), with the interfaces to use.
    pub fn l2_eligibility(&mut self, vip: &Vip, node: &str) -> Result<L2Grant, Vec<Reason>> {
        let (found, mut reasons) = self.common(vip, node);
        let Some((name, n)) = found else {
            return Err(reasons);
        };
        match self.l2_ads(name, n, &vip.pool) {
            Ok(grant) if reasons.is_empty() => Ok(grant.clone()),
            Ok(_) => Err(reasons),
            Err(reason) => {
                reasons.push(reason.clone());
                Err(reasons)
            }
        }
    }

    /// Whether `node` is L2-eligible for `vip`, without building the grant or the reasons.
    fn is_l2_eligible(&mut self, vip: &Vip, node: &'s str) -> bool {
        let Some(n) = self.snapshot.nodes.get(node) else {
            return false;
        };
        let local_ok = vip.services.iter().all(|s| {
            s.traffic_policy != TrafficPolicy::Local
                || self.snapshot.endpoints.check(&s.key, node).is_ok()
        });
        !n.labels.contains_key(EXCLUDE_LABEL) && local_ok && self.l2_ads(node, n, &vip.pool).is_ok()
    }

    /// Whether `node` may announce `vip` by BGP (liveness aside), with the routes per peer.
    pub fn bgp_eligibility(&mut self, vip: &Vip, node: &str) -> Result<BgpRoutes, Vec<Reason>> {
        let (found, mut reasons) = self.common(vip, node);
        let Some((name, n)) = found else {
            return Err(reasons);
        };
        let rules = match self.bgp_ads(name, n, &vip.pool) {
            Ok(rules) => rules,
            Err(reason) => {
                reasons.push(reason.clone());
                return Err(reasons);
            }
        };
        let routes = bgp_routes(vip.ip, rules);
        match routes {
            Ok(routes) if reasons.is_empty() => Ok(routes),
            Ok(_) => Err(reasons),
            Err(bad) => {
                reasons.extend(bad);
                Err(reasons)
            }
        }
    }

    /// The L2 owner of `vip`: the rendezvous winner among the `live` nodes that are L2-eligible.
    /// `live` is the set of ownership candidates ([`crate::membership::Membership::candidates`]).
    pub fn l2_owner(&mut self, vip: &Vip, live: &BTreeSet<String>) -> Option<&'s str> {
        let snapshot = self.snapshot;
        let eligible: Vec<&'s str> = snapshot
            .nodes
            .keys()
            .map(String::as_str)
            .filter(|n| live.contains(*n) && self.is_l2_eligible(vip, n))
            .collect();
        ownership::owner(vip.ip, live, eligible)
    }
}

/// The L2 advertisement verdict for `pool` on node `n`: the interfaces and advertisements that
/// apply, or the reason none does.
fn l2_ads(snapshot: &Snapshot, n: &Node, pool: &str) -> Result<L2Grant, Reason> {
    let covering: Vec<&L2Advertisement> = snapshot
        .l2_advertisements
        .iter()
        .filter(|a| a.pools.covers(pool))
        .collect();
    if covering.is_empty() {
        return Err(Reason::NoL2AdvertisementForPool {
            pool: pool.to_string(),
        });
    }
    let selecting: Vec<&L2Advertisement> = covering
        .iter()
        .copied()
        .filter(|a| any_selector_matches(&a.node_selectors, &n.labels))
        .collect();
    if selecting.is_empty() {
        return Err(Reason::NodeSelectorMismatch {
            advertisements: sorted_names(covering.iter().map(|a| &a.name)),
        });
    }
    let mut grant = L2Grant {
        interfaces: BTreeSet::new(),
        advertisements: BTreeSet::new(),
    };
    for a in &selecting {
        let up: Vec<&String> = if a.interfaces.is_empty() {
            n.interfaces_up.iter().collect()
        } else {
            a.interfaces.intersection(&n.interfaces_up).collect()
        };
        if !up.is_empty() {
            grant.interfaces.extend(up.into_iter().cloned());
            grant.advertisements.insert(a.name.clone());
        }
    }
    if grant.interfaces.is_empty() {
        return Err(Reason::InterfaceDown {
            advertisements: sorted_names(selecting.iter().map(|a| &a.name)),
        });
    }
    Ok(grant)
}

/// The BGP advertisements that apply to `pool` on node `n`, each with the peers it announces to
/// there, or the reason none does.
fn bgp_ads<'s>(snapshot: &'s Snapshot, n: &Node, pool: &str) -> Result<Vec<BgpRule<'s>>, Reason> {
    let covering: Vec<&BgpAdvertisement> = snapshot
        .bgp_advertisements
        .iter()
        .filter(|a| a.pools.covers(pool))
        .collect();
    if covering.is_empty() {
        return Err(Reason::NoBgpAdvertisementForPool {
            pool: pool.to_string(),
        });
    }
    let selecting: Vec<&BgpAdvertisement> = covering
        .iter()
        .copied()
        .filter(|a| any_selector_matches(&a.node_selectors, &n.labels))
        .collect();
    if selecting.is_empty() {
        return Err(Reason::NodeSelectorMismatch {
            advertisements: sorted_names(covering.iter().map(|a| &a.name)),
        });
    }
    let node_peers: Vec<&BgpPeer> = snapshot
        .bgp_peers
        .iter()
        .filter(|p| any_selector_matches(&p.node_selectors, &n.labels))
        .collect();
    let rules: Vec<BgpRule<'s>> = selecting
        .iter()
        .filter_map(|a| {
            let peers: Vec<&str> = node_peers
                .iter()
                .filter(|p| {
                    a.peers
                        .as_ref()
                        .is_none_or(|allowed| allowed.contains(&p.name))
                })
                .map(|p| p.name.as_str())
                .collect();
            (!peers.is_empty()).then_some(BgpRule {
                advertisement: a,
                peers,
            })
        })
        .collect();
    if rules.is_empty() {
        return Err(Reason::NoPeerForNode {
            advertisements: sorted_names(selecting.iter().map(|a| &a.name)),
        });
    }
    Ok(rules)
}

/// The routes `rules` give for `ip`, or, when none is possible, the invalid aggregation lengths.
fn bgp_routes(ip: IpAddr, rules: &[BgpRule<'_>]) -> Result<BgpRoutes, Vec<Reason>> {
    let mut routes = BgpRoutes::new();
    let mut bad_lengths = Vec::new();
    for rule in rules {
        let a = rule.advertisement;
        let length = match ip {
            IpAddr::V4(_) => a.aggregation_length_v4,
            IpAddr::V6(_) => a.aggregation_length_v6,
        };
        let Ok(prefix) = IpNet::new(ip, length).map(|p| p.trunc()) else {
            bad_lengths.push(Reason::InvalidAggregationLength {
                advertisement: a.name.clone(),
                length,
            });
            continue;
        };
        for peer in &rule.peers {
            routes
                .entry(peer.to_string())
                .or_default()
                .entry(prefix)
                .and_modify(|attrs| attrs.merge(&a.attributes))
                .or_insert_with(|| a.attributes.clone());
        }
    }
    if routes.is_empty() {
        bad_lengths.sort();
        Err(bad_lengths)
    } else {
        Ok(routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::{Endpoint, EndpointConditions, EndpointSlice};
    use cairn_api::selector::Requirement;
    use proptest::prelude::*;

    fn strings(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn node(labels: &[(&str, &str)], ifaces: &[&str]) -> Node {
        Node {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            interfaces_up: strings(ifaces),
        }
    }

    fn label_is(key: &str, value: &str) -> Selector {
        Selector::new(vec![Requirement::In(key.into(), vec![value.into()])])
    }

    fn l2(
        name: &str,
        pools: PoolScope,
        selectors: Vec<Selector>,
        ifaces: &[&str],
    ) -> L2Advertisement {
        L2Advertisement {
            name: name.into(),
            pools,
            node_selectors: selectors,
            interfaces: strings(ifaces),
        }
    }

    fn bgp_ad(name: &str, pools: PoolScope, v4_len: u8) -> BgpAdvertisement {
        BgpAdvertisement {
            name: name.into(),
            pools,
            node_selectors: vec![],
            peers: None,
            aggregation_length_v4: v4_len,
            aggregation_length_v6: 128,
            attributes: RouteAttributes::default(),
        }
    }

    fn peer(name: &str, selectors: Vec<Selector>) -> BgpPeer {
        BgpPeer {
            name: name.into(),
            node_selectors: selectors,
        }
    }

    fn svc(name: &str) -> ServiceKey {
        ServiceKey::new("default", name)
    }

    fn vip(ip: &str, services: &[(&str, TrafficPolicy)]) -> Vip {
        Vip {
            ip: ip.parse().unwrap(),
            pool: "pool-a".into(),
            services: services
                .iter()
                .map(|(n, p)| SharingService {
                    key: svc(n),
                    traffic_policy: *p,
                })
                .collect(),
        }
    }

    fn cluster_vip() -> Vip {
        vip("192.0.2.10", &[("web", TrafficPolicy::Cluster)])
    }

    /// Three nodes with eth0 up and one L2Advertisement for every pool on every node.
    fn three_nodes() -> Snapshot {
        Snapshot {
            nodes: [
                ("n1".to_string(), node(&[("zone", "a")], &["eth0"])),
                ("n2".to_string(), node(&[("zone", "b")], &["eth0"])),
                ("n3".to_string(), node(&[("zone", "b")], &["eth0"])),
            ]
            .into(),
            l2_advertisements: vec![l2("l2-all", PoolScope::All, vec![], &[])],
            ..Default::default()
        }
    }

    fn ready_on(service: &str, nodes: &[&str]) -> EndpointSlice {
        EndpointSlice {
            service: svc(service),
            endpoints: nodes
                .iter()
                .map(|n| Endpoint {
                    node_name: Some(n.to_string()),
                    conditions: EndpointConditions::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_selected_node_with_an_interface_up_is_l2_eligible_on_it() {
        let s = three_nodes();
        let grant = s.l2_eligibility(&cluster_vip(), "n1").unwrap();
        assert_eq!(grant.interfaces, strings(&["eth0"]));
        assert_eq!(grant.advertisements, strings(&["l2-all"]));
    }

    #[test]
    fn the_exclusion_label_excludes_whatever_its_value() {
        let mut s = three_nodes();
        s.nodes
            .get_mut("n1")
            .unwrap()
            .labels
            .insert(EXCLUDE_LABEL.into(), String::new());
        assert_eq!(
            s.l2_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::ExcludedByLabel])
        );
    }

    #[test]
    fn an_unknown_node_is_not_eligible() {
        let s = three_nodes();
        assert_eq!(
            s.l2_eligibility(&cluster_vip(), "n9"),
            Err(vec![Reason::UnknownNode])
        );
        assert_eq!(
            s.bgp_eligibility(&cluster_vip(), "n9"),
            Err(vec![Reason::UnknownNode])
        );
    }

    #[test]
    fn a_pool_without_l2_advertisement_is_not_announced_by_l2() {
        let mut s = three_nodes();
        s.l2_advertisements = vec![l2(
            "other",
            PoolScope::Named(strings(&["pool-b"])),
            vec![],
            &[],
        )];
        assert_eq!(
            s.l2_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::NoL2AdvertisementForPool {
                pool: "pool-a".into()
            }])
        );
    }

    #[test]
    fn node_selectors_name_the_advertisements_that_did_not_select_the_node() {
        let mut s = three_nodes();
        s.l2_advertisements = vec![l2(
            "zone-b",
            PoolScope::All,
            vec![label_is("zone", "b")],
            &[],
        )];
        assert_eq!(
            s.l2_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::NodeSelectorMismatch {
                advertisements: vec!["zone-b".into()]
            }])
        );
        assert!(s.l2_eligibility(&cluster_vip(), "n2").is_ok());
    }

    #[test]
    fn any_one_node_selector_of_an_advertisement_suffices() {
        let mut s = three_nodes();
        s.l2_advertisements = vec![l2(
            "a-or-b",
            PoolScope::All,
            vec![label_is("zone", "a"), label_is("zone", "b")],
            &[],
        )];
        assert!(s.l2_eligibility(&cluster_vip(), "n1").is_ok());
        assert!(s.l2_eligibility(&cluster_vip(), "n2").is_ok());
    }

    #[test]
    fn a_node_whose_advertised_interfaces_are_down_is_not_l2_eligible() {
        let mut s = three_nodes();
        s.l2_advertisements = vec![l2("eth1-only", PoolScope::All, vec![], &["eth1"])];
        assert_eq!(
            s.l2_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::InterfaceDown {
                advertisements: vec!["eth1-only".into()]
            }])
        );
        let mut s = three_nodes();
        s.nodes.get_mut("n1").unwrap().interfaces_up.clear();
        assert_eq!(
            s.l2_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::InterfaceDown {
                advertisements: vec!["l2-all".into()]
            }])
        );
    }

    #[test]
    fn interfaces_are_united_over_the_applicable_advertisements() {
        let mut s = three_nodes();
        s.nodes.get_mut("n1").unwrap().interfaces_up = strings(&["eth0", "eth1", "eth2"]);
        s.l2_advertisements = vec![
            l2("one", PoolScope::All, vec![], &["eth1"]),
            l2("two", PoolScope::All, vec![], &["eth2", "eth9"]),
        ];
        let grant = s.l2_eligibility(&cluster_vip(), "n1").unwrap();
        assert_eq!(grant.interfaces, strings(&["eth1", "eth2"]));
    }

    #[test]
    fn local_policy_needs_a_ready_endpoint_of_every_sharing_service() {
        let mut s = three_nodes();
        s.endpoints = LocalEndpoints::from_slices(&[
            ready_on("web", &["n1", "n2"]),
            ready_on("api", &["n2"]),
        ]);
        let shared = vip(
            "192.0.2.10",
            &[("web", TrafficPolicy::Local), ("api", TrafficPolicy::Local)],
        );
        assert_eq!(
            s.l2_eligibility(&shared, "n1"),
            Err(vec![Reason::NoReadyLocalEndpoint {
                service: svc("api")
            }])
        );
        assert!(s.l2_eligibility(&shared, "n2").is_ok());
        assert_eq!(
            s.l2_eligibility(&shared, "n3"),
            Err(vec![
                Reason::NoReadyLocalEndpoint {
                    service: svc("web")
                },
                Reason::NoReadyLocalEndpoint {
                    service: svc("api")
                },
            ])
        );
        // The same rule holds for BGP.
        s.bgp_advertisements = vec![bgp_ad("bgp", PoolScope::All, 32)];
        s.bgp_peers = vec![peer("tor", vec![])];
        assert!(s.bgp_eligibility(&shared, "n1").is_err());
        assert!(s.bgp_eligibility(&shared, "n2").is_ok());
    }

    #[test]
    fn a_cluster_policy_service_sharing_with_a_local_one_adds_no_endpoint_requirement() {
        let mut s = three_nodes();
        s.endpoints = LocalEndpoints::from_slices(&[ready_on("web", &["n1"])]);
        let shared = vip(
            "192.0.2.10",
            &[
                ("web", TrafficPolicy::Local),
                ("api", TrafficPolicy::Cluster),
            ],
        );
        assert!(s.l2_eligibility(&shared, "n1").is_ok());
    }

    #[test]
    fn only_terminating_endpoints_are_a_reason_of_their_own() {
        let mut s = three_nodes();
        let draining = EndpointSlice {
            service: svc("web"),
            endpoints: vec![
                Endpoint {
                    node_name: Some("n1".into()),
                    conditions: EndpointConditions {
                        ready: Some(false),
                        serving: Some(true),
                        terminating: Some(true),
                    },
                },
                Endpoint {
                    node_name: Some("n2".into()),
                    conditions: EndpointConditions::default(),
                },
            ],
        };
        s.endpoints = LocalEndpoints::from_slices([&draining]);
        let v = vip("192.0.2.10", &[("web", TrafficPolicy::Local)]);
        assert_eq!(
            s.l2_eligibility(&v, "n1"),
            Err(vec![Reason::OnlyTerminatingLocalEndpoint {
                service: svc("web")
            }])
        );
    }

    #[test]
    fn every_independent_reason_is_reported() {
        let mut s = three_nodes();
        s.nodes
            .get_mut("n3")
            .unwrap()
            .labels
            .insert(EXCLUDE_LABEL.into(), "true".into());
        s.nodes.get_mut("n3").unwrap().interfaces_up.clear();
        let v = vip("192.0.2.10", &[("web", TrafficPolicy::Local)]);
        assert_eq!(
            s.l2_eligibility(&v, "n3"),
            Err(vec![
                Reason::ExcludedByLabel,
                Reason::NoReadyLocalEndpoint {
                    service: svc("web")
                },
                Reason::InterfaceDown {
                    advertisements: vec!["l2-all".into()]
                },
            ])
        );
    }

    #[test]
    fn the_l2_owner_is_the_rendezvous_winner_among_live_eligible_nodes() {
        let mut s = three_nodes();
        s.endpoints = LocalEndpoints::from_slices(&[ready_on("web", &["n2", "n3"])]);
        let v = vip("192.0.2.10", &[("web", TrafficPolicy::Local)]);
        let live = strings(&["n1", "n2", "n3"]);
        let expected = ownership::rendezvous(v.ip, ["n2", "n3"]);
        assert_eq!(s.l2_owner(&v, &live), expected);
        let loser = if expected == Some("n2") { "n3" } else { "n2" };
        assert_eq!(s.l2_owner(&v, &strings(&["n1", loser])), Some(loser));
        assert_eq!(s.l2_owner(&v, &strings(&["n1"])), None);
    }

    #[test]
    fn explain_says_who_owns_who_stands_by_and_why_the_rest_do_not_announce() {
        let mut s = three_nodes();
        s.endpoints = LocalEndpoints::from_slices(&[ready_on("web", &["n2", "n3"])]);
        let v = vip("192.0.2.10", &[("web", TrafficPolicy::Local)]);
        let live = strings(&["n1", "n2", "n3", "ghost"]);
        let e = s.explain(&v, &live);
        let owner = e.l2_owner.clone().unwrap();
        let standby = if owner == "n2" { "n3" } else { "n2" };
        assert!(matches!(e.l2[&owner], L2Verdict::Owner(_)));
        assert_eq!(
            e.l2[standby],
            L2Verdict::Standby {
                owner: owner.clone()
            }
        );
        assert_eq!(
            e.l2["n1"],
            L2Verdict::Ineligible(vec![Reason::NoReadyLocalEndpoint {
                service: svc("web")
            }])
        );
        assert_eq!(
            e.l2["ghost"],
            L2Verdict::Ineligible(vec![Reason::UnknownNode])
        );

        let e = s.explain(&v, &strings(&["n1"]));
        assert_eq!(e.l2_owner, None);
        assert_eq!(e.l2["n2"], L2Verdict::Ineligible(vec![Reason::NotLive]));
        assert_eq!(
            e.l2["n1"],
            L2Verdict::Ineligible(vec![Reason::NoReadyLocalEndpoint {
                service: svc("web")
            }])
        );
        assert_eq!(e.l2["n3"], L2Verdict::Ineligible(vec![Reason::NotLive]));
        assert_eq!(
            e.bgp["n2"],
            BgpVerdict::Ineligible(vec![
                Reason::NotLive,
                Reason::NoBgpAdvertisementForPool {
                    pool: "pool-a".into()
                }
            ])
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        let r = Reason::NoReadyLocalEndpoint {
            service: svc("web"),
        };
        assert_eq!(
            r.to_string(),
            "externalTrafficPolicy Local: no ready endpoint of default/web on the node"
        );
        assert_eq!(
            Reason::ExcludedByLabel.to_string(),
            format!("the node is labelled {EXCLUDE_LABEL}")
        );
        let c = Community::Large(64512, 1, 2);
        assert_eq!(c.to_string(), "large:64512:1:2");
        assert_eq!(Community::Standard(64512, 7).to_string(), "64512:7");
    }

    #[test]
    fn every_bgp_eligible_node_announces_to_each_peer_that_selects_it() {
        let mut s = three_nodes();
        s.bgp_advertisements = vec![bgp_ad("bgp", PoolScope::All, 32)];
        s.bgp_peers = vec![
            peer("tor-a", vec![label_is("zone", "a")]),
            peer("tor-b", vec![label_is("zone", "b")]),
        ];
        let prefix: IpNet = "192.0.2.10/32".parse().unwrap();
        let n1 = s.bgp_eligibility(&cluster_vip(), "n1").unwrap();
        assert_eq!(n1.keys().collect::<Vec<_>>(), ["tor-a"]);
        assert!(n1["tor-a"].contains_key(&prefix));
        for n in ["n2", "n3"] {
            let routes = s.bgp_eligibility(&cluster_vip(), n).unwrap();
            assert_eq!(routes.keys().collect::<Vec<_>>(), ["tor-b"]);
        }
    }

    #[test]
    fn bgp_announces_the_aggregate_with_merged_attributes() {
        let mut s = three_nodes();
        let mut a = bgp_ad("agg", PoolScope::All, 24);
        a.attributes
            .communities
            .insert(Community::Standard(64512, 1));
        a.attributes.local_pref = Some(100);
        let mut b = bgp_ad("agg-too", PoolScope::All, 24);
        b.attributes
            .communities
            .insert(Community::Standard(64512, 2));
        b.attributes.local_pref = Some(200);
        let host = bgp_ad("host", PoolScope::All, 32);
        s.bgp_advertisements = vec![a, b, host];
        s.bgp_peers = vec![peer("tor", vec![])];
        let routes = s.bgp_eligibility(&cluster_vip(), "n1").unwrap();
        let tor = &routes["tor"];
        let agg = &tor[&"192.0.2.0/24".parse::<IpNet>().unwrap()];
        assert_eq!(agg.local_pref, Some(200));
        assert_eq!(agg.communities.len(), 2);
        assert!(tor.contains_key(&"192.0.2.10/32".parse::<IpNet>().unwrap()));
    }

    #[test]
    fn an_advertisement_limited_to_other_peers_gives_no_route() {
        let mut s = three_nodes();
        let mut a = bgp_ad("only-x", PoolScope::All, 32);
        a.peers = Some(strings(&["x"]));
        s.bgp_advertisements = vec![a];
        s.bgp_peers = vec![peer("tor", vec![])];
        assert_eq!(
            s.bgp_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::NoPeerForNode {
                advertisements: vec!["only-x".into()]
            }])
        );
    }

    #[test]
    fn an_impossible_aggregation_length_is_reported() {
        let mut s = three_nodes();
        s.bgp_advertisements = vec![bgp_ad("bad", PoolScope::All, 33)];
        s.bgp_peers = vec![peer("tor", vec![])];
        assert_eq!(
            s.bgp_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::InvalidAggregationLength {
                advertisement: "bad".into(),
                length: 33
            }])
        );
    }

    #[test]
    fn bgp_reasons_cover_pool_and_node_selection() {
        let mut s = three_nodes();
        s.bgp_peers = vec![peer("tor", vec![])];
        assert_eq!(
            s.bgp_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::NoBgpAdvertisementForPool {
                pool: "pool-a".into()
            }])
        );
        let mut a = bgp_ad("zone-b", PoolScope::All, 32);
        a.node_selectors = vec![label_is("zone", "b")];
        s.bgp_advertisements = vec![a];
        assert_eq!(
            s.bgp_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::NodeSelectorMismatch {
                advertisements: vec!["zone-b".into()]
            }])
        );
    }

    #[test]
    fn group_by_ip_puts_sharing_services_on_one_vip_and_reports_pool_conflicts() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let services = [
            ServiceAddresses {
                key: svc("web"),
                pool: "a".into(),
                ips: vec![ip("192.0.2.1"), ip("2001:db8::1")],
                traffic_policy: TrafficPolicy::Local,
            },
            ServiceAddresses {
                key: svc("api"),
                pool: "a".into(),
                ips: vec![ip("192.0.2.1")],
                traffic_policy: TrafficPolicy::Cluster,
            },
            ServiceAddresses {
                key: svc("odd"),
                pool: "b".into(),
                ips: vec![ip("192.0.2.9")],
                traffic_policy: TrafficPolicy::Cluster,
            },
            ServiceAddresses {
                key: svc("clash"),
                pool: "a".into(),
                ips: vec![ip("192.0.2.9")],
                traffic_policy: TrafficPolicy::Cluster,
            },
        ];
        let (vips, conflicts) = group_by_ip(&services);
        assert_eq!(vips.len(), 2);
        assert_eq!(vips[0].ip, ip("192.0.2.1"));
        assert_eq!(
            vips[0]
                .services
                .iter()
                .map(|s| s.key.name.as_str())
                .collect::<Vec<_>>(),
            ["api", "web"]
        );
        assert_eq!(vips[1].ip, ip("2001:db8::1"));
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].pools, strings(&["a", "b"]));
    }

    #[test]
    fn reasons_list_advertisements_sorted_whatever_the_configuration_order() {
        let mut s = three_nodes();
        s.l2_advertisements = vec![
            l2("zeta", PoolScope::All, vec![label_is("zone", "x")], &[]),
            l2("alpha", PoolScope::All, vec![label_is("zone", "y")], &[]),
        ];
        assert_eq!(
            s.l2_eligibility(&cluster_vip(), "n1"),
            Err(vec![Reason::NodeSelectorMismatch {
                advertisements: vec!["alpha".into(), "zeta".into()]
            }])
        );
    }

    fn arb_policy() -> impl Strategy<Value = TrafficPolicy> {
        prop_oneof![Just(TrafficPolicy::Cluster), Just(TrafficPolicy::Local)]
    }

    proptest! {
        /// Eligibility and routes do not depend on the order advertisements and peers are listed.
        #[test]
        fn eligibility_does_not_depend_on_the_order_of_configuration_objects(
            ads in proptest::collection::vec((0u8..3, 24u8..=33, proptest::option::of(0u32..3), any::<bool>()), 0..5),
            peers in proptest::collection::vec((0u8..3, any::<bool>()), 0..4),
            rotate in 0usize..5,
        ) {
            let mut s = three_nodes();
            s.l2_advertisements = ads.iter().enumerate().map(|(i, (pool, _, _, zone_b))| {
                let selectors = if *zone_b { vec![label_is("zone", "b")] } else { vec![] };
                l2(&format!("l2-{i}"), PoolScope::Named(strings(&[&format!("pool-{}", (b'a' + pool) as char)])), selectors, &[])
            }).collect();
            s.bgp_advertisements = ads.iter().enumerate().map(|(i, (pool, len, pref, zone_b))| {
                let mut a = bgp_ad(&format!("bgp-{i}"), PoolScope::Named(strings(&[&format!("pool-{}", (b'a' + pool) as char)])), *len);
                a.attributes.local_pref = *pref;
                a.attributes.communities.insert(Community::Standard(64512, i as u16));
                if *zone_b {
                    a.node_selectors = vec![label_is("zone", "b")];
                }
                a
            }).collect();
            s.bgp_peers = peers.iter().enumerate().map(|(i, (_, zone_a))| {
                peer(&format!("peer-{i}"), if *zone_a { vec![label_is("zone", "a")] } else { vec![] })
            }).collect();
            let mut reordered = s.clone();
            reordered.l2_advertisements.reverse();
            reordered.bgp_advertisements.reverse();
            reordered.bgp_peers.reverse();
            if !reordered.bgp_advertisements.is_empty() {
                let k = rotate % reordered.bgp_advertisements.len();
                reordered.bgp_advertisements.rotate_left(k);
            }
            let v = cluster_vip();
            for n in ["n1", "n2", "n3"] {
                prop_assert_eq!(s.l2_eligibility(&v, n), reordered.l2_eligibility(&v, n));
                prop_assert_eq!(s.bgp_eligibility(&v, n), reordered.bgp_eligibility(&v, n));
            }
        }

        /// The owner of a shared IP has a usable endpoint of every Local Service on it, and when
        /// some live node qualifies an owner exists; grouping is independent of input order.
        #[test]
        fn the_owner_of_a_shared_ip_serves_every_local_service_on_it(
            services in proptest::collection::vec((0u8..6, arb_policy(), proptest::collection::btree_set(0usize..4, 0..4)), 1..12),
            live_mask in proptest::collection::vec(any::<bool>(), 4),
            order_seed in any::<u64>(),
        ) {
            let nodes = ["n0", "n1", "n2", "n3"];
            let mut s = Snapshot {
                nodes: nodes.iter().map(|n| (n.to_string(), node(&[], &["eth0"]))).collect(),
                l2_advertisements: vec![l2("l2", PoolScope::All, vec![], &[])],
                ..Default::default()
            };
            let mut addresses = Vec::new();
            let mut slices = Vec::new();
            for (i, (ip_index, policy, ready)) in services.iter().enumerate() {
                let name = format!("svc-{i}");
                addresses.push(ServiceAddresses {
                    key: svc(&name),
                    pool: "pool-a".into(),
                    ips: vec![IpAddr::from([203, 0, 113, *ip_index])],
                    traffic_policy: *policy,
                });
                let on: Vec<&str> = ready.iter().map(|n| nodes[*n]).collect();
                slices.push(ready_on(&name, &on));
            }
            s.endpoints = LocalEndpoints::from_slices(&slices);
            let live: BTreeSet<String> = nodes.iter().zip(&live_mask).filter(|(_, l)| **l).map(|(n, _)| n.to_string()).collect();

            let (vips, conflicts) = group_by_ip(&addresses);
            prop_assert!(conflicts.is_empty());
            // Grouping does not depend on the order Services arrive in.
            let mut shuffled = addresses.clone();
            let k = (order_seed as usize) % shuffled.len();
            shuffled.rotate_left(k);
            shuffled.reverse();
            prop_assert_eq!(&group_by_ip(&shuffled).0, &vips);

            for v in &vips {
                let owner = s.l2_owner(v, &live);
                let qualifies = |n: &str| v.services.iter().all(|sv| {
                    sv.traffic_policy == TrafficPolicy::Cluster
                        || services[sv.key.name[4..].parse::<usize>().unwrap()].2.contains(&nodes.iter().position(|x| *x == n).unwrap())
                });
                match owner {
                    Some(o) => {
                        prop_assert!(live.contains(o));
                        prop_assert!(qualifies(o), "{} owns {} without local endpoints", o, v.ip);
                    }
                    None => prop_assert!(!live.iter().any(|n| qualifies(n))),
                }
            }
        }
    }
}
