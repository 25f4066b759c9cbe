//! The Kubernetes side of the core, as pure functions: API objects in, the core's plain inputs
//! out.
//!
//! - `Node` → [`eligibility::Node`] (labels, the exclusion label
//!   [`EXCLUDE_FROM_EXTERNAL_LB_LABEL`] among them, and the interfaces the node's speaker
//!   publishes in its Lease);
//! - `discovery.k8s.io/v1` `EndpointSlice` → [`endpoints::EndpointSlice`] (Service from the label
//!   [`SERVICE_NAME_LABEL`], each endpoint's `nodeName` and `conditions`);
//! - `Service` → [`ServiceAddresses`]: the allocator's binding (annotations
//!   [`annotations::ALLOCATED_IPS`] + [`annotations::ALLOCATED_POOL`]) and
//!   `externalTrafficPolicy`; [`eligibility::group_by_ip`] then groups Services sharing an IP;
//! - Cairn's resources, validated by [`cairn_api::validation`] (pool label selectors resolved to
//!   pool names with the pools' labels, community aliases resolved) → advertisements and peers;
//! - `coordination.k8s.io/v1` `Lease` ↔ [`LeaseObservation`] / [`LeaseObject`] / [`LeaseSpec`].
//!
//! An invalid resource is skipped whole and returned as a [`Problem`] (the binary raises an Event
//! on it); it is never half-applied. Nothing here talks to the API server, reads a clock or
//! panics on API data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use cairn_api::annotations::{self, EXCLUDE_FROM_EXTERNAL_LB_LABEL};
use cairn_api::v1alpha1::{BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use cairn_api::validation::{
    self, Community as CommunityValue, PoolSelection, Problems, ValidPeer,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec as K8sLeaseSpec};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::eligibility::{
    self, group_by_ip, PoolConflict, PoolScope, RouteAttributes, ServiceAddresses, Snapshot,
    TrafficPolicy, Vip,
};
use crate::endpoints::{self, EndpointConditions, LocalEndpoints, ServiceKey};
use crate::lease::{LeaseObject, LeaseSpec};
use crate::membership::{
    format_interfaces, parse_interfaces, LeaseObservation, INTERFACES_ANNOTATION,
};

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The label Cairn puts on its speaker Leases.
pub const LEASE_COMPONENT_LABEL: (&str, &str) = ("app.kubernetes.io/component", "cairn-speaker");

/// Which object a [`Problem`] is about (enough to raise an Event on it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The object's kind (`Service`, `L2Advertisement`, ...).
    pub kind: &'static str,
    /// Its namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    fn of(kind: &'static str, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// Why an object was skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The spec failed validation (every problem, with field paths).
    #[error("invalid spec: {0}")]
    Invalid(#[from] Problems),
    /// The allocator's address annotation does not parse.
    #[error("annotation {key} is {value:?}, not a comma-separated list of IP addresses", key = annotations::ALLOCATED_IPS)]
    BadAllocatedIps {
        /// The annotation's value.
        value: String,
    },
    /// The allocator's address annotation is present without its pool annotation.
    #[error("annotation {ips} is set but {pool} is missing", ips = annotations::ALLOCATED_IPS, pool = annotations::ALLOCATED_POOL)]
    MissingAllocatedPool,
    /// Two Community resources define the same alias with different values; the alias is
    /// dropped, so advertisements using it are reported invalid.
    #[error("community alias {alias:?} is also defined, with another value, by Community {other}")]
    AliasConflict {
        /// The alias.
        alias: String,
        /// The other Community (`namespace/name`).
        other: String,
    },
}

/// One skipped object and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The object.
    pub object: ObjectRef,
    /// What is wrong with it.
    pub error: AdapterError,
}

/// A Node as eligibility sees it, with the interfaces its speaker published. Labels are copied
/// whole, so [`EXCLUDE_FROM_EXTERNAL_LB_LABEL`] reaches [`eligibility`] whatever its value.
pub fn node(node: &Node, interfaces_up: &BTreeSet<String>) -> eligibility::Node {
    eligibility::Node {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        interfaces_up: interfaces_up.clone(),
    }
}

/// Whether the Node carries [`EXCLUDE_FROM_EXTERNAL_LB_LABEL`] (any value).
pub fn is_excluded(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_FROM_EXTERNAL_LB_LABEL))
}

/// An EndpointSlice, or `None` when it belongs to no Service (no [`SERVICE_NAME_LABEL`]) or has
/// no namespace.
pub fn endpoint_slice(slice: &EndpointSlice) -> Option<endpoints::EndpointSlice> {
    let namespace = slice.metadata.namespace.clone()?;
    let service = slice.labels().get(SERVICE_NAME_LABEL)?.clone();
    let endpoints = slice
        .endpoints
        .iter()
        .map(|e| endpoints::Endpoint {
            node_name: e.node_name.clone(),
            conditions: e
                .conditions
                .as_ref()
                .map(|c| EndpointConditions {
                    ready: c.ready,
                    serving: c.serving,
                    terminating: c.terminating,
                })
                .unwrap_or_default(),
        })
        .collect();
    Some(endpoints::EndpointSlice {
        service: ServiceKey::new(namespace, service),
        endpoints,
    })
}

/// The addresses a Service is bound to, or `Ok(None)` when it has none to announce: not
/// `type: LoadBalancer`, being deleted, or without the allocator's binding. Only the allocator
/// writes the binding, so the speaker trusts it and does not re-check `loadBalancerClass`.
pub fn service_addresses(svc: &Service) -> Result<Option<ServiceAddresses>, AdapterError> {
    let (Some(namespace), Some(name), Some(spec)) = (
        svc.metadata.namespace.as_ref(),
        svc.metadata.name.as_ref(),
        svc.spec.as_ref(),
    ) else {
        return Ok(None);
    };
    if spec.type_.as_deref() != Some("LoadBalancer") || svc.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let annotations = svc.annotations();
    let Some(text) = annotations.get(annotations::ALLOCATED_IPS) else {
        return Ok(None);
    };
    let ips = annotations::parse_ip_list(text).ok_or_else(|| AdapterError::BadAllocatedIps {
        value: text.clone(),
    })?;
    if ips.is_empty() {
        return Ok(None);
    }
    let pool = annotations
        .get(annotations::ALLOCATED_POOL)
        .filter(|p| !p.is_empty())
        .ok_or(AdapterError::MissingAllocatedPool)?;
    let traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    Ok(Some(ServiceAddresses {
        key: ServiceKey::new(namespace.clone(), name.clone()),
        pool: pool.clone(),
        ips,
        traffic_policy,
    }))
}

/// The pools a selection covers, label selectors resolved against `pools`' labels. Named pools
/// are kept even if no such pool exists (yet).
pub fn pool_scope(selection: &PoolSelection, pools: &[IPAddressPool]) -> PoolScope {
    if selection.names.is_empty() && selection.selectors.is_empty() {
        return PoolScope::All;
    }
    let mut names: BTreeSet<String> = selection.names.iter().cloned().collect();
    for pool in pools {
        let name = pool.name_any();
        if selection.covers(&name, pool.labels()) {
            names.insert(name);
        }
    }
    PoolScope::Named(names)
}

/// The community aliases of every Community resource. An alias defined twice with different
/// values is dropped and reported on both resources.
pub fn community_aliases(
    communities: &[Community],
) -> (BTreeMap<String, CommunityValue>, Vec<Problem>) {
    let mut problems = Vec::new();
    // alias -> (value, defining resource)
    let mut defined: BTreeMap<String, (CommunityValue, ObjectRef)> = BTreeMap::new();
    let mut conflicting = BTreeSet::new();
    for c in communities {
        let object = ObjectRef::of("Community", &c.metadata);
        match validation::community_aliases(&c.spec) {
            Err(e) => problems.push(Problem {
                object,
                error: e.into(),
            }),
            Ok(aliases) => {
                for (alias, value) in aliases {
                    match defined.get(&alias) {
                        Some((v, _)) if *v == value => {}
                        Some((_, other)) => {
                            conflicting.insert(alias.clone());
                            for (here, there) in [(&object, other), (other, &object)] {
                                problems.push(Problem {
                                    object: here.clone(),
                                    error: AdapterError::AliasConflict {
                                        alias: alias.clone(),
                                        other: qualified(there),
                                    },
                                });
                            }
                        }
                        None => {
                            defined.insert(alias, (value, object.clone()));
                        }
                    }
                }
            }
        }
    }
    let aliases = defined
        .into_iter()
        .filter(|(alias, _)| !conflicting.contains(alias))
        .map(|(alias, (value, _))| (alias, value))
        .collect();
    (aliases, problems)
}

fn qualified(object: &ObjectRef) -> String {
    match &object.namespace {
        Some(ns) => format!("{ns}/{}", object.name),
        None => object.name.clone(),
    }
}

/// The valid L2Advertisements, pools resolved; the invalid ones reported.
pub fn l2_advertisements(
    advertisements: &[L2Advertisement],
    pools: &[IPAddressPool],
) -> (Vec<eligibility::L2Advertisement>, Vec<Problem>) {
    let mut valid = Vec::new();
    let mut problems = Vec::new();
    for adv in advertisements {
        match validation::l2_advertisement(&adv.spec) {
            Ok(v) => valid.push(eligibility::L2Advertisement {
                name: adv.name_any(),
                pools: pool_scope(&v.pools, pools),
                node_selectors: v.node_selectors,
                interfaces: v.interfaces.into_iter().collect(),
            }),
            Err(e) => problems.push(Problem {
                object: ObjectRef::of("L2Advertisement", &adv.metadata),
                error: e.into(),
            }),
        }
    }
    (valid, problems)
}

/// The valid BGPAdvertisements, pools and community aliases resolved; the invalid ones reported.
pub fn bgp_advertisements(
    advertisements: &[BGPAdvertisement],
    pools: &[IPAddressPool],
    aliases: &BTreeMap<String, CommunityValue>,
) -> (Vec<eligibility::BgpAdvertisement>, Vec<Problem>) {
    let mut valid = Vec::new();
    let mut problems = Vec::new();
    for adv in advertisements {
        match validation::bgp_advertisement(&adv.spec, aliases) {
            Ok(v) => valid.push(eligibility::BgpAdvertisement {
                name: adv.name_any(),
                pools: pool_scope(&v.pools, pools),
                node_selectors: v.node_selectors,
                peers: (!v.peers.is_empty()).then(|| v.peers.into_iter().collect()),
                aggregation_length_v4: v.aggregation_length,
                aggregation_length_v6: v.aggregation_length_v6,
                attributes: RouteAttributes {
                    communities: v.communities.into_iter().collect(),
                    local_pref: v.local_pref,
                },
            }),
            Err(e) => problems.push(Problem {
                object: ObjectRef::of("BGPAdvertisement", &adv.metadata),
                error: e.into(),
            }),
        }
    }
    (valid, problems)
}

/// The valid BGPPeers by name (what the BGP sessions are configured from); the invalid ones
/// reported.
pub fn bgp_peers(peers: &[BGPPeer]) -> (BTreeMap<String, ValidPeer>, Vec<Problem>) {
    let mut valid = BTreeMap::new();
    let mut problems = Vec::new();
    for peer in peers {
        match validation::bgp_peer(&peer.spec) {
            Ok(v) => {
                valid.insert(peer.name_any(), v);
            }
            Err(e) => problems.push(Problem {
                object: ObjectRef::of("BGPPeer", &peer.metadata),
                error: e.into(),
            }),
        }
    }
    (valid, problems)
}

/// Every object the speaker watches, as the binary's reflector stores hold them.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterObjects<'a> {
    /// Nodes.
    pub nodes: &'a [Node],
    /// EndpointSlices.
    pub endpoint_slices: &'a [EndpointSlice],
    /// Services.
    pub services: &'a [Service],
    /// IPAddressPools (for their labels).
    pub pools: &'a [IPAddressPool],
    /// L2Advertisements.
    pub l2_advertisements: &'a [L2Advertisement],
    /// BGPAdvertisements.
    pub bgp_advertisements: &'a [BGPAdvertisement],
    /// BGPPeers.
    pub bgp_peers: &'a [BGPPeer],
    /// Communities.
    pub communities: &'a [Community],
}

/// The core's inputs built from the cluster's objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Converted {
    /// What eligibility is computed from.
    pub snapshot: Snapshot,
    /// The VIPs, each with every Service sharing it, sorted by IP.
    pub vips: Vec<Vip>,
    /// IPs whose Services disagree on the pool (not announced).
    pub pool_conflicts: Vec<PoolConflict>,
    /// The valid BGPPeers by name.
    pub peers: BTreeMap<String, ValidPeer>,
    /// Every skipped object and why.
    pub problems: Vec<Problem>,
}

/// Converts everything at once. `interfaces_up` is node -> interfaces its speaker published (see
/// [`crate::lease_driver::MembershipView::interfaces_up`]); a node missing from it has none.
pub fn convert(
    objects: &ClusterObjects<'_>,
    interfaces_up: &BTreeMap<String, BTreeSet<String>>,
) -> Converted {
    let none = BTreeSet::new();
    let nodes = objects
        .nodes
        .iter()
        .map(|n| {
            let name = n.name_any();
            let ifaces = interfaces_up.get(&name).unwrap_or(&none);
            (name, node(n, ifaces))
        })
        .collect();
    let slices: Vec<_> = objects
        .endpoint_slices
        .iter()
        .filter_map(endpoint_slice)
        .collect();
    let mut problems = Vec::new();
    let mut services = Vec::new();
    for svc in objects.services {
        match service_addresses(svc) {
            Ok(Some(s)) => services.push(s),
            Ok(None) => {}
            Err(error) => problems.push(Problem {
                object: ObjectRef::of("Service", &svc.metadata),
                error,
            }),
        }
    }
    let (vips, pool_conflicts) = group_by_ip(&services);
    let (aliases, p) = community_aliases(objects.communities);
    problems.extend(p);
    let (l2_advertisements, p) = l2_advertisements(objects.l2_advertisements, objects.pools);
    problems.extend(p);
    let (bgp_advertisements, p) =
        bgp_advertisements(objects.bgp_advertisements, objects.pools, &aliases);
    problems.extend(p);
    let (peers, p) = bgp_peers(objects.bgp_peers);
    problems.extend(p);
    let bgp_peers = peers
        .iter()
        .map(|(name, v)| eligibility::BgpPeer {
            name: name.clone(),
            node_selectors: v.node_selectors.clone(),
        })
        .collect();
    Converted {
        snapshot: Snapshot {
            nodes,
            l2_advertisements,
            bgp_advertisements,
            bgp_peers,
            endpoints: LocalEndpoints::from_slices(&slices),
        },
        vips,
        pool_conflicts,
        peers,
        problems,
    }
}

/// A speaker Lease as membership observes it, or `None` without a name or resourceVersion.
pub fn lease_observation(lease: &Lease) -> Option<LeaseObservation> {
    let spec = lease.spec.as_ref();
    Some(LeaseObservation {
        name: lease.metadata.name.clone()?,
        holder: spec.and_then(|s| s.holder_identity.clone()),
        duration: spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
        resource_version: lease.metadata.resource_version.clone()?,
        interfaces_up: interfaces_of(lease),
    })
}

fn interfaces_of(lease: &Lease) -> BTreeSet<String> {
    lease
        .annotations()
        .get(INTERFACES_ANNOTATION)
        .map(|a| parse_interfaces(a))
        .unwrap_or_default()
}

/// A Lease as the lease keeper reads it, or `None` without a resourceVersion.
pub fn lease_object(lease: &Lease) -> Option<LeaseObject> {
    let spec = lease.spec.clone().unwrap_or_default();
    Some(LeaseObject {
        resource_version: lease.metadata.resource_version.clone()?,
        spec: LeaseSpec {
            holder_identity: spec.holder_identity,
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.map(|t| SystemTime::from(t.0)),
            renew_time: spec.renew_time.map(|t| SystemTime::from(t.0)),
            lease_transitions: spec.lease_transitions.unwrap_or(0),
            interfaces_up: interfaces_of(lease),
        },
    })
}

/// The Lease object to create, or to replace conditionally on `resource_version`.
pub fn lease_from_spec(
    name: &str,
    namespace: &str,
    resource_version: Option<&str>,
    spec: &LeaseSpec,
) -> Lease {
    let micro = |t: SystemTime| Timestamp::try_from(t).ok().map(MicroTime);
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            resource_version: resource_version.map(str::to_string),
            labels: Some(BTreeMap::from([(
                LEASE_COMPONENT_LABEL.0.to_string(),
                LEASE_COMPONENT_LABEL.1.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                INTERFACES_ANNOTATION.to_string(),
                format_interfaces(&spec.interfaces_up),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(K8sLeaseSpec {
            holder_identity: spec.holder_identity.clone(),
            lease_duration_seconds: Some(spec.lease_duration_seconds),
            acquire_time: spec.acquire_time.and_then(micro),
            renew_time: spec.renew_time.and_then(micro),
            lease_transitions: Some(spec.lease_transitions),
            ..K8sLeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eligibility::Reason;
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::net::IpAddr;

    fn from<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("test object deserializes")
    }

    fn lb_service(name: &str, annotations: Value, policy: &str) -> Service {
        from(json!({
            "metadata": {"namespace": "web", "name": name, "annotations": annotations},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy},
        }))
    }

    fn bound(ips: &str, pool: &str) -> Value {
        json!({annotations::ALLOCATED_IPS: ips, annotations::ALLOCATED_POOL: pool})
    }

    fn pool(name: &str, labels: Value) -> IPAddressPool {
        from(json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"namespace": "cairn-system", "name": name, "labels": labels},
            "spec": {"addresses": ["192.0.2.0/28"]},
        }))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn names(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_exclusion_label_is_the_one_eligibility_checks() {
        assert_eq!(EXCLUDE_FROM_EXTERNAL_LB_LABEL, eligibility::EXCLUDE_LABEL);
    }

    #[test]
    fn an_excluded_node_keeps_its_label_and_is_not_eligible() {
        let nodes: Vec<Node> = vec![
            from(
                json!({"metadata": {"name": "n1", "labels": {EXCLUDE_FROM_EXTERNAL_LB_LABEL: ""}}}),
            ),
            from(json!({"metadata": {"name": "n2", "labels": {"rack": "a"}}})),
        ];
        assert!(is_excluded(&nodes[0]));
        assert!(!is_excluded(&nodes[1]));
        let services = [lb_service("s", bound("192.0.2.1", "p"), "Cluster")];
        let l2: Vec<L2Advertisement> = vec![from(json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"namespace": "cairn-system", "name": "all"}, "spec": {},
        }))];
        let interfaces = BTreeMap::from([
            ("n1".to_string(), names(&["eth0"])),
            ("n2".to_string(), names(&["eth0"])),
        ]);
        let c = convert(
            &ClusterObjects {
                nodes: &nodes,
                services: &services,
                l2_advertisements: &l2,
                ..ClusterObjects::default()
            },
            &interfaces,
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.snapshot.nodes["n2"].labels["rack"], "a");
        assert_eq!(c.snapshot.nodes["n2"].interfaces_up, names(&["eth0"]));
        let vip = &c.vips[0];
        assert_eq!(
            c.snapshot.l2_eligibility(vip, "n1"),
            Err(vec![Reason::ExcludedByLabel])
        );
        assert!(c.snapshot.l2_eligibility(vip, "n2").is_ok());
    }

    #[test]
    fn an_endpoint_slice_carries_its_service_nodes_and_conditions() {
        let slice: EndpointSlice = from(json!({
            "metadata": {"namespace": "web", "name": "s-abcde",
                         "labels": {SERVICE_NAME_LABEL: "s"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.51.100.1"], "nodeName": "n1",
                 "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["198.51.100.2"], "nodeName": "n2"},
                {"addresses": ["198.51.100.3"]},
            ],
        }));
        let converted = endpoint_slice(&slice).expect("a Service's slice");
        assert_eq!(converted.service, ServiceKey::new("web", "s"));
        assert_eq!(
            converted.endpoints,
            vec![
                endpoints::Endpoint {
                    node_name: Some("n1".into()),
                    conditions: EndpointConditions {
                        ready: Some(false),
                        serving: Some(true),
                        terminating: Some(true),
                    },
                },
                endpoints::Endpoint {
                    node_name: Some("n2".into()),
                    conditions: EndpointConditions::default(),
                },
                endpoints::Endpoint {
                    node_name: None,
                    conditions: EndpointConditions::default(),
                },
            ]
        );
    }

    #[test]
    fn a_slice_without_a_service_label_is_ignored() {
        let slice: EndpointSlice = from(json!({
            "metadata": {"namespace": "web", "name": "manual"},
            "addressType": "IPv4", "endpoints": [],
        }));
        assert_eq!(endpoint_slice(&slice), None);
    }

    #[test]
    fn a_bound_service_gives_its_addresses_pool_and_traffic_policy() {
        let svc = lb_service("s", bound("192.0.2.7, 2001:db8::7", "web-pool"), "Local");
        assert_eq!(
            service_addresses(&svc),
            Ok(Some(ServiceAddresses {
                key: ServiceKey::new("web", "s"),
                pool: "web-pool".into(),
                ips: vec![ip("192.0.2.7"), ip("2001:db8::7")],
                traffic_policy: TrafficPolicy::Local,
            }))
        );
        let cluster = lb_service("s", bound("192.0.2.7", "p"), "Cluster");
        assert_eq!(
            service_addresses(&cluster).unwrap().unwrap().traffic_policy,
            TrafficPolicy::Cluster
        );
    }

    #[test]
    fn services_without_a_binding_to_announce_are_skipped_silently() {
        let unbound = lb_service("s", json!({}), "Cluster");
        let mut cluster_ip = lb_service("s", bound("192.0.2.7", "p"), "Cluster");
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let mut deleting = lb_service("s", bound("192.0.2.7", "p"), "Cluster");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        let empty = lb_service("s", bound("", "p"), "Cluster");
        for svc in [unbound, cluster_ip, deleting, empty] {
            assert_eq!(service_addresses(&svc), Ok(None), "{svc:?}");
        }
    }

    #[test]
    fn a_broken_binding_is_reported_with_the_service() {
        let services = [
            lb_service("garbage", bound("192.0.2.7,not-an-ip", "p"), "Cluster"),
            lb_service(
                "no-pool",
                json!({annotations::ALLOCATED_IPS: "192.0.2.8"}),
                "Cluster",
            ),
            lb_service("fine", bound("192.0.2.9", "p"), "Cluster"),
        ];
        let c = convert(
            &ClusterObjects {
                services: &services,
                ..ClusterObjects::default()
            },
            &BTreeMap::new(),
        );
        assert_eq!(
            c.problems,
            vec![
                Problem {
                    object: ObjectRef {
                        kind: "Service",
                        namespace: Some("web".into()),
                        name: "garbage".into(),
                    },
                    error: AdapterError::BadAllocatedIps {
                        value: "192.0.2.7,not-an-ip".into(),
                    },
                },
                Problem {
                    object: ObjectRef {
                        kind: "Service",
                        namespace: Some("web".into()),
                        name: "no-pool".into(),
                    },
                    error: AdapterError::MissingAllocatedPool,
                },
            ]
        );
        assert_eq!(c.vips.len(), 1);
        assert_eq!(c.vips[0].ip, ip("192.0.2.9"));
    }

    #[test]
    fn services_sharing_an_ip_become_one_vip_with_both_services() {
        let services = [
            lb_service("tcp", bound("192.0.2.7", "p"), "Cluster"),
            lb_service("udp", bound("192.0.2.7", "p"), "Local"),
        ];
        let c = convert(
            &ClusterObjects {
                services: &services,
                ..ClusterObjects::default()
            },
            &BTreeMap::new(),
        );
        assert_eq!(c.vips.len(), 1);
        let keys: Vec<_> = c.vips[0]
            .services
            .iter()
            .map(|s| s.key.name.as_str())
            .collect();
        assert_eq!(keys, ["tcp", "udp"]);
        assert_eq!(c.vips[0].services[1].traffic_policy, TrafficPolicy::Local);
    }

    #[test]
    fn pool_selectors_resolve_to_the_names_of_matching_pools() {
        let pools = [
            pool("gold", json!({"tier": "gold"})),
            pool("silver", json!({"tier": "silver"})),
            pool("other", json!({})),
        ];
        let everything = PoolSelection::default();
        assert_eq!(pool_scope(&everything, &pools), PoolScope::All);
        let selector = cairn_api::selector::Selector::parse(&from(json!({
            "matchLabels": {"tier": "gold"}
        })))
        .expect("selector");
        let selection = PoolSelection {
            names: vec!["missing-yet".into()],
            selectors: vec![selector],
        };
        assert_eq!(
            pool_scope(&selection, &pools),
            PoolScope::Named(names(&["gold", "missing-yet"]))
        );
    }

    #[test]
    fn an_invalid_l2_advertisement_is_reported_and_the_valid_one_kept() {
        let advs: Vec<L2Advertisement> = vec![
            from(json!({
                "apiVersion": "cairn.io/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"namespace": "cairn-system", "name": "bad"},
                "spec": {"interfaces": ["not a valid interface name"]},
            })),
            from(json!({
                "apiVersion": "cairn.io/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"namespace": "cairn-system", "name": "good"},
                "spec": {"ipAddressPoolSelectors": [{"matchLabels": {"tier": "gold"}}],
                         "interfaces": ["eth1"]},
            })),
        ];
        let pools = [pool("gold", json!({"tier": "gold"}))];
        let (valid, problems) = l2_advertisements(&advs, &pools);
        assert_eq!(
            valid,
            vec![eligibility::L2Advertisement {
                name: "good".into(),
                pools: PoolScope::Named(names(&["gold"])),
                node_selectors: vec![],
                interfaces: names(&["eth1"]),
            }]
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object.name, "bad");
        assert!(
            matches!(&problems[0].error, AdapterError::Invalid(p) if p.0[0].path == "spec.interfaces[0]")
        );
    }

    fn community(name: &str, aliases: Value) -> Community {
        from(json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "Community",
            "metadata": {"namespace": "cairn-system", "name": name},
            "spec": {"communities": aliases},
        }))
    }

    fn bgp_adv(name: &str, spec: Value) -> BGPAdvertisement {
        from(json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "BGPAdvertisement",
            "metadata": {"namespace": "cairn-system", "name": name}, "spec": spec,
        }))
    }

    #[test]
    fn bgp_advertisements_resolve_aliases_pools_and_peers() {
        let communities = [community(
            "c",
            json!([{"name": "no-export", "value": "65535:65281"}]),
        )];
        let (aliases, problems) = community_aliases(&communities);
        assert!(problems.is_empty());
        let advs = [
            bgp_adv(
                "ok",
                json!({
                    "ipAddressPools": ["gold"], "communities": ["no-export", "64512:1"],
                    "localPref": 200, "aggregationLength": 24, "peers": ["tor1"],
                }),
            ),
            bgp_adv("all", json!({})),
            bgp_adv("unknown-alias", json!({"communities": ["nope"]})),
        ];
        let (valid, problems) = bgp_advertisements(&advs, &[], &aliases);
        assert_eq!(valid.len(), 2);
        assert_eq!(valid[0].name, "ok");
        assert_eq!(valid[0].pools, PoolScope::Named(names(&["gold"])));
        assert_eq!(valid[0].peers, Some(names(&["tor1"])));
        assert_eq!(valid[0].aggregation_length_v4, 24);
        assert_eq!(valid[0].aggregation_length_v6, 128);
        assert_eq!(
            valid[0].attributes,
            RouteAttributes {
                communities: [
                    CommunityValue::Standard(65535, 65281),
                    CommunityValue::Standard(64512, 1)
                ]
                .into(),
                local_pref: Some(200),
            }
        );
        assert_eq!(valid[1].pools, PoolScope::All);
        assert_eq!(valid[1].peers, None, "no peers listed: every peer");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object.name, "unknown-alias");
    }

    #[test]
    fn an_alias_defined_twice_differently_is_dropped_and_reported_on_both() {
        let communities = [
            community(
                "a",
                json!([{"name": "x", "value": "1:1"}, {"name": "same", "value": "3:3"}]),
            ),
            community(
                "b",
                json!([{"name": "x", "value": "2:2"}, {"name": "same", "value": "3:3"}]),
            ),
        ];
        let (aliases, problems) = community_aliases(&communities);
        assert_eq!(
            aliases,
            BTreeMap::from([("same".to_string(), CommunityValue::Standard(3, 3))])
        );
        let reported: Vec<_> = problems.iter().map(|p| p.object.name.as_str()).collect();
        assert_eq!(reported, ["b", "a"]);
        assert_eq!(
            problems[0].error,
            AdapterError::AliasConflict {
                alias: "x".into(),
                other: "cairn-system/a".into(),
            }
        );
        let (_, problems) = bgp_advertisements(
            &[bgp_adv("uses-x", json!({"communities": ["x"]}))],
            &[],
            &aliases,
        );
        assert_eq!(
            problems.len(),
            1,
            "an advertisement using the dropped alias is invalid"
        );
    }

    #[test]
    fn only_valid_bgp_peers_reach_the_snapshot() {
        let peers: Vec<BGPPeer> = vec![
            from(json!({
                "apiVersion": "cairn.io/v1alpha1", "kind": "BGPPeer",
                "metadata": {"namespace": "cairn-system", "name": "tor1"},
                "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.254",
                         "nodeSelectors": [{"matchLabels": {"rack": "a"}}]},
            })),
            from(json!({
                "apiVersion": "cairn.io/v1alpha1", "kind": "BGPPeer",
                "metadata": {"namespace": "cairn-system", "name": "broken"},
                "spec": {"myASN": 0, "peerASN": 64513, "peerAddress": "nowhere"},
            })),
        ];
        let c = convert(
            &ClusterObjects {
                bgp_peers: &peers,
                ..ClusterObjects::default()
            },
            &BTreeMap::new(),
        );
        assert_eq!(c.peers.keys().collect::<Vec<_>>(), ["tor1"]);
        assert_eq!(c.peers["tor1"].peer_address, ip("192.0.2.254"));
        assert_eq!(c.snapshot.bgp_peers.len(), 1);
        assert_eq!(c.snapshot.bgp_peers[0].name, "tor1");
        assert_eq!(c.snapshot.bgp_peers[0].node_selectors.len(), 1);
        assert_eq!(c.problems.len(), 1);
        assert_eq!(c.problems[0].object.kind, "BGPPeer");
        assert_eq!(c.problems[0].object.name, "broken");
    }

    #[test]
    fn a_written_lease_reads_back_as_the_same_spec_and_observation() {
        let spec = LeaseSpec {
            holder_identity: Some("speaker-n1".into()),
            lease_duration_seconds: 3,
            acquire_time: Some(
                SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            ),
            renew_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_005)),
            lease_transitions: 4,
            interfaces_up: names(&["eth0", "eth1"]),
        };
        let written = lease_from_spec("cairn-speaker-n1", "cairn-system", Some("41"), &spec);
        // Through JSON, as the API server stores and returns it.
        let mut read: Lease = from(serde_json::to_value(&written).expect("serializes"));
        assert_eq!(read.metadata.resource_version.as_deref(), Some("41"));
        assert_eq!(
            read.labels()[LEASE_COMPONENT_LABEL.0],
            LEASE_COMPONENT_LABEL.1
        );
        read.metadata.resource_version = Some("42".into());
        assert_eq!(
            lease_object(&read),
            Some(LeaseObject {
                resource_version: "42".into(),
                spec: spec.clone(),
            })
        );
        assert_eq!(
            lease_observation(&read),
            Some(LeaseObservation {
                name: "cairn-speaker-n1".into(),
                holder: Some("speaker-n1".into()),
                duration: Some(Duration::from_secs(3)),
                resource_version: "42".into(),
                interfaces_up: names(&["eth0", "eth1"]),
            })
        );
    }

    #[test]
    fn a_released_lease_has_no_holder_and_a_lease_without_version_is_not_trusted() {
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: 3,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 1,
            interfaces_up: BTreeSet::new(),
        };
        let lease = lease_from_spec("cairn-speaker-n1", "cairn-system", Some("7"), &released);
        assert_eq!(lease_observation(&lease).and_then(|o| o.holder), None);
        let unversioned = lease_from_spec("cairn-speaker-n1", "cairn-system", None, &released);
        assert_eq!(lease_object(&unversioned), None);
        assert_eq!(lease_observation(&unversioned), None);
    }

    proptest! {
        /// Whatever the annotation holds, reading it never panics, and a well-formed list reads
        /// back exactly.
        #[test]
        fn the_allocated_ips_annotation_reads_back_or_is_reported(
            ips in proptest::collection::vec(any::<IpAddr>(), 1..4),
            junk in "[ -~]{0,20}",
        ) {
            let text = ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",");
            let svc = lb_service("s", bound(&text, "p"), "Cluster");
            prop_assert_eq!(service_addresses(&svc).unwrap().unwrap().ips, ips);
            let svc = lb_service("s", bound(&junk, "p"), "Cluster");
            match service_addresses(&svc) {
                Ok(Some(s)) => prop_assert!(!s.ips.is_empty()),
                Ok(None) => prop_assert!(junk.split(',').all(|p| p.trim().is_empty())),
                Err(e) => prop_assert_eq!(e, AdapterError::BadAllocatedIps { value: junk.clone() }),
            }
        }
    }
}
