//! The XDP programme this node should run, computed from plain data, and the difference
//! between two programmes.
//!
//! Rules (each tested below):
//! - A backend of a service is a *node*, weighted by its number of ready endpoints of the
//!   Kubernetes Service. When no node has a ready endpoint, nodes with serving-terminating
//!   endpoints are used instead, as kube-proxy does (KEP-1672). Endpoints without `nodeName` are
//!   ignored. A dual-stack Service lists each pod once per address family, so a node's count is
//!   the larger of its IPv4 and IPv6 slice counts (a pod counts once).
//! - The tunnel goes to the node's `InternalIP` of the VIP's family, else of the other family
//!   (IPv4 in IPv6 and IPv6 in IPv4 both work); a node with neither is left out and reported.
//! - This node is never its own backend: an XDP program sends its packets out of the uplink, so
//!   it cannot deliver to its own stack. With other backend nodes, this node's own endpoints get
//!   no share of the traffic it receives (they get theirs from the other nodes, under ECMP); when
//!   it is the only backend node, the service is not programmed and its packets pass to this
//!   node's stack.
//! - `externalTrafficPolicy: Local`: the local node only, so such a service is never programmed
//!   here. Eligibility already lets only nodes with a usable local endpoint announce it, and their
//!   stacks deliver to their own endpoints without a second hop, as Kubernetes specifies.
//! - A service without any backend node is not programmed (its packets pass to the stack).
//! - This node decapsulates every VIP of a Service with a usable endpoint on it (same readiness
//!   rule as above), whatever the policy.
//! - Two Services claiming the same (VIP, port, protocol): the first by namespace/name is kept,
//!   the other reported. SCTP ports are reported (the XDP stage knows TCP and UDP only).
//!
//! No IO, no clock: [`plan_input`] reads API objects, [`plan`] and [`changes`] are functions of
//! their arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cairn_xdp::{Protocol, Service};
use k8s_openapi::api::core::v1::{Node, Service as K8sService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::adapter;
use crate::eligibility::TrafficPolicy;
use crate::endpoints::{Readiness, ServiceKey};

/// A Kubernetes Service as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbService {
    /// The Service.
    pub key: ServiceKey,
    /// Its allocated VIPs (`cairn.io/allocated-ips`).
    pub vips: Vec<IpAddr>,
    /// Its `externalTrafficPolicy`.
    pub traffic_policy: TrafficPolicy,
    /// Its ports (`spec.ports[].port`) and protocols.
    pub ports: Vec<(u16, Protocol)>,
}

/// A Service's endpoints on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeEndpoints {
    /// Ready endpoints.
    pub ready: u32,
    /// Endpoints that are terminating but still serving.
    pub serving_terminating: u32,
}

/// A node's `InternalIP` addresses (the first of each family).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeAddresses {
    /// IPv4 `InternalIP`.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 `InternalIP`.
    pub v6: Option<Ipv6Addr>,
}

impl NodeAddresses {
    /// The tunnel destination for a VIP: the address of its family, else the other one.
    fn for_vip(&self, vip: IpAddr) -> Option<IpAddr> {
        let v4 = self.v4.map(IpAddr::V4);
        let v6 = self.v6.map(IpAddr::V6);
        if vip.is_ipv4() {
            v4.or(v6)
        } else {
            v6.or(v4)
        }
    }
}

/// Everything the planner reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanInput {
    /// This node's name.
    pub local_node: String,
    /// The Services bound to VIPs.
    pub services: Vec<LbService>,
    /// Service -> node -> its endpoints there.
    pub endpoints: BTreeMap<ServiceKey, BTreeMap<String, NodeEndpoints>>,
    /// Node -> its `InternalIP` addresses.
    pub nodes: BTreeMap<String, NodeAddresses>,
}

/// The XDP programme of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpPlan {
    /// (VIP, port, protocol) -> backend node address -> weight. Never an empty map, never a
    /// zero weight.
    pub services: BTreeMap<Service, BTreeMap<IpAddr, u32>>,
    /// The VIPs this node decapsulates.
    pub decap: BTreeSet<IpAddr>,
}

/// Something the planner left out, and why (for logs and Events).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub enum PlanProblem {
    /// A port whose protocol the XDP stage does not forward.
    #[error(
        "Service {service} port {port}/{protocol}: protocol not supported by the XDP data plane"
    )]
    UnsupportedProtocol {
        /// The Service.
        service: ServiceKey,
        /// The port.
        port: u16,
        /// The protocol as written.
        protocol: String,
    },
    /// A port number outside 1..=65535.
    #[error("Service {service}: port {port} is not a valid port number")]
    BadPort {
        /// The Service.
        service: ServiceKey,
        /// The number as written.
        port: i32,
    },
    /// Two Services claim one (VIP, port, protocol); `skipped` is not programmed for it.
    #[error("{vip} port {port}/{protocol:?} belongs to Service {kept}; Service {skipped} is not programmed for it")]
    PortConflict {
        /// The VIP.
        vip: IpAddr,
        /// The port.
        port: u16,
        /// The protocol.
        protocol: Protocol,
        /// The Service that keeps it (first by namespace/name).
        kept: ServiceKey,
        /// The Service left out.
        skipped: ServiceKey,
    },
    /// A node with endpoints but no `InternalIP` to tunnel to.
    #[error("node {node} has endpoints but no InternalIP address; it gets no tunnelled traffic")]
    NoNodeAddress {
        /// The node.
        node: String,
    },
}

/// Which nodes carry a Service's traffic, with their endpoint counts: the nodes with ready
/// endpoints, or, when there are none, those with serving-terminating ones.
fn usable_nodes(nodes: &BTreeMap<String, NodeEndpoints>) -> BTreeMap<&str, u32> {
    let ready: BTreeMap<&str, u32> = nodes
        .iter()
        .filter(|(_, e)| e.ready > 0)
        .map(|(n, e)| (n.as_str(), e.ready))
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    nodes
        .iter()
        .filter(|(_, e)| e.serving_terminating > 0)
        .map(|(n, e)| (n.as_str(), e.serving_terminating))
        .collect()
}

/// The programme for `input.local_node`, and what was left out.
pub fn plan(input: &PlanInput) -> (XdpPlan, Vec<PlanProblem>) {
    let none = BTreeMap::new();
    let mut services: Vec<&LbService> = input.services.iter().collect();
    services.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out = XdpPlan::default();
    // (VIP, port, protocol) -> the Service that claimed it.
    let mut claimed: BTreeMap<Service, &ServiceKey> = BTreeMap::new();
    let mut problems = BTreeSet::new();
    for svc in services {
        let usable = usable_nodes(input.endpoints.get(&svc.key).unwrap_or(&none));
        if usable.contains_key(input.local_node.as_str()) {
            out.decap.extend(svc.vips.iter().copied());
        }
        for &vip in &svc.vips {
            for &(port, protocol) in &svc.ports {
                let service = Service {
                    vip,
                    port,
                    protocol,
                };
                if let Some(kept) = claimed.get(&service) {
                    problems.insert(PlanProblem::PortConflict {
                        vip,
                        port,
                        protocol,
                        kept: (*kept).clone(),
                        skipped: svc.key.clone(),
                    });
                    continue;
                }
                claimed.insert(service, &svc.key);
                if svc.traffic_policy == TrafficPolicy::Local {
                    continue;
                }
                let mut backends = BTreeMap::new();
                for (&node, &count) in &usable {
                    if node == input.local_node {
                        continue;
                    }
                    match input.nodes.get(node).and_then(|a| a.for_vip(vip)) {
                        Some(addr) => {
                            *backends.entry(addr).or_insert(0u32) += count;
                        }
                        None => {
                            problems.insert(PlanProblem::NoNodeAddress {
                                node: node.to_string(),
                            });
                        }
                    }
                }
                if !backends.is_empty() {
                    out.services.insert(service, backends);
                }
            }
        }
    }
    (out, problems.into_iter().collect())
}

/// What turns one programme into another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services to (re)program with these backends (new, or with other backends or weights).
    pub set: Vec<(Service, BTreeMap<IpAddr, u32>)>,
    /// Services to remove.
    pub remove: Vec<Service>,
    /// VIPs to start decapsulating.
    pub decap_add: Vec<IpAddr>,
    /// VIPs to stop decapsulating.
    pub decap_remove: Vec<IpAddr>,
}

impl Changes {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.remove.is_empty()
            && self.decap_add.is_empty()
            && self.decap_remove.is_empty()
    }
}

/// The changes that turn `current` into `desired`.
pub fn changes(current: &XdpPlan, desired: &XdpPlan) -> Changes {
    Changes {
        set: desired
            .services
            .iter()
            .filter(|(s, b)| current.services.get(s) != Some(b))
            .map(|(s, b)| (*s, b.clone()))
            .collect(),
        remove: current
            .services
            .keys()
            .filter(|s| !desired.services.contains_key(s))
            .copied()
            .collect(),
        decap_add: desired.decap.difference(&current.decap).copied().collect(),
        decap_remove: current.decap.difference(&desired.decap).copied().collect(),
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} services set, {} removed, {} decap VIPs added, {} removed",
            self.set.len(),
            self.remove.len(),
            self.decap_add.len(),
            self.decap_remove.len()
        )
    }
}

/// This node's programme straight from the API objects: [`plan_input`] then [`plan`], with the
/// problems of both.
pub fn plan_cluster(
    local_node: &str,
    services: &[K8sService],
    slices: &[EndpointSlice],
    nodes: &[Node],
) -> (XdpPlan, Vec<PlanProblem>) {
    let (input, mut problems) = plan_input(local_node, services, slices, nodes);
    let (plan, more) = plan(&input);
    problems.extend(more);
    (plan, problems)
}

/// The planner's input from API objects. Services the allocator has not bound (or whose binding
/// is broken: [`adapter::convert`] reports those) are skipped.
pub fn plan_input(
    local_node: &str,
    services: &[K8sService],
    slices: &[EndpointSlice],
    nodes: &[Node],
) -> (PlanInput, Vec<PlanProblem>) {
    let mut problems = Vec::new();
    let mut lb_services = Vec::new();
    for svc in services {
        let Ok(Some(addresses)) = adapter::service_addresses(svc) else {
            continue;
        };
        let mut ports = Vec::new();
        for p in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            let Some(port) = u16::try_from(p.port).ok().filter(|&n| n != 0) else {
                problems.push(PlanProblem::BadPort {
                    service: addresses.key.clone(),
                    port: p.port,
                });
                continue;
            };
            match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => ports.push((port, Protocol::Tcp)),
                "UDP" => ports.push((port, Protocol::Udp)),
                other => problems.push(PlanProblem::UnsupportedProtocol {
                    service: addresses.key.clone(),
                    port,
                    protocol: other.to_string(),
                }),
            }
        }
        lb_services.push(LbService {
            key: addresses.key,
            vips: addresses.ips,
            traffic_policy: addresses.traffic_policy,
            ports,
        });
    }
    // (Service, address type) -> node -> endpoints
    let mut by_family: BTreeMap<(ServiceKey, String), BTreeMap<String, NodeEndpoints>> =
        BTreeMap::new();
    for slice in slices {
        let Some(converted) = adapter::endpoint_slice(slice) else {
            continue;
        };
        let nodes = by_family
            .entry((converted.service, slice.address_type.clone()))
            .or_default();
        for endpoint in converted.endpoints {
            let Some(node) = endpoint.node_name else {
                continue;
            };
            let counts = nodes.entry(node).or_default();
            match endpoint.conditions.readiness() {
                Some(Readiness::Ready) => counts.ready += 1,
                Some(Readiness::ServingTerminating) => counts.serving_terminating += 1,
                None => {}
            }
        }
    }
    let mut endpoints: BTreeMap<ServiceKey, BTreeMap<String, NodeEndpoints>> = BTreeMap::new();
    for ((service, _family), nodes) in by_family {
        let merged = endpoints.entry(service).or_default();
        for (node, counts) in nodes {
            let m = merged.entry(node).or_default();
            m.ready = m.ready.max(counts.ready);
            m.serving_terminating = m.serving_terminating.max(counts.serving_terminating);
        }
    }
    let node_addresses = nodes
        .iter()
        .map(|n| (n.name_any(), internal_ips(n)))
        .collect();
    (
        PlanInput {
            local_node: local_node.to_string(),
            services: lb_services,
            endpoints,
            nodes: node_addresses,
        },
        problems,
    )
}

fn internal_ips(node: &Node) -> NodeAddresses {
    let mut out = NodeAddresses::default();
    let addresses = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP");
    for a in addresses {
        match a.address.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if out.v4.is_none() => out.v4 = Some(v4),
            Ok(IpAddr::V6(v6)) if out.v6.is_none() => out.v6 = Some(v6),
            _ => {}
        }
    }
    out
}

impl XdpPlan {
    /// Applies `changes` (what the applier records after programming them).
    pub fn apply(&mut self, changes: &Changes) {
        for service in &changes.remove {
            self.services.remove(service);
        }
        for (service, backends) in &changes.set {
            self.services.insert(*service, backends.clone());
        }
        for vip in &changes.decap_remove {
            self.decap.remove(vip);
        }
        self.decap.extend(changes.decap_add.iter().copied());
    }

    /// The backend node addresses of every service.
    pub fn backends(&self) -> BTreeSet<IpAddr> {
        self.services
            .values()
            .flat_map(|b| b.keys().copied())
            .collect()
    }

    /// This plan without the backends in `left_out` (services left with none are dropped).
    pub fn without_backends(&self, left_out: &BTreeSet<IpAddr>) -> XdpPlan {
        let services = self
            .services
            .iter()
            .filter_map(|(s, b)| {
                let kept: BTreeMap<IpAddr, u32> = b
                    .iter()
                    .filter(|(a, _)| !left_out.contains(a))
                    .map(|(a, w)| (*a, *w))
                    .collect();
                (!kept.is_empty()).then_some((*s, kept))
            })
            .collect();
        XdpPlan {
            services,
            decap: self.decap.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const VIP: &str = "192.0.2.10";
    const VIP6: &str = "2001:db8::10";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("web", name)
    }

    fn node_ip(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, i))
    }

    fn node_ip6(i: u8) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(i)))
    }

    fn tcp(vip: &str, port: u16) -> Service {
        Service {
            vip: ip(vip),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn service(name: &str, vips: &[&str], policy: TrafficPolicy) -> LbService {
        LbService {
            key: key(name),
            vips: vips.iter().map(|v| ip(v)).collect(),
            traffic_policy: policy,
            ports: vec![(80, Protocol::Tcp)],
        }
    }

    fn ready(n: u32) -> NodeEndpoints {
        NodeEndpoints {
            ready: n,
            serving_terminating: 0,
        }
    }

    /// Nodes n1..n3 with 198.51.100.N and 2001:db8:1::N; this node is n1.
    fn input(services: Vec<LbService>, endpoints: &[(&str, &str, NodeEndpoints)]) -> PlanInput {
        let mut by_service: BTreeMap<ServiceKey, BTreeMap<String, NodeEndpoints>> = BTreeMap::new();
        for (svc, node, e) in endpoints {
            by_service
                .entry(key(svc))
                .or_default()
                .insert(node.to_string(), *e);
        }
        let nodes = (1..=3)
            .map(|i| {
                let (IpAddr::V4(v4), IpAddr::V6(v6)) = (node_ip(i), node_ip6(i)) else {
                    unreachable!("families fixed above")
                };
                (
                    format!("n{i}"),
                    NodeAddresses {
                        v4: Some(v4),
                        v6: Some(v6),
                    },
                )
            })
            .collect();
        PlanInput {
            local_node: "n1".into(),
            services,
            endpoints: by_service,
            nodes,
        }
    }

    #[test]
    fn a_cluster_service_goes_to_the_other_nodes_weighted_by_their_ready_endpoints() {
        let (plan, problems) = plan(&input(
            vec![service("s", &[VIP], TrafficPolicy::Cluster)],
            &[
                ("s", "n1", ready(1)),
                ("s", "n2", ready(2)),
                ("s", "n3", ready(1)),
            ],
        ));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            plan.services,
            BTreeMap::from([(
                tcp(VIP, 80),
                BTreeMap::from([(node_ip(2), 2), (node_ip(3), 1)])
            )])
        );
        assert_eq!(plan.decap, BTreeSet::from([ip(VIP)]));
    }

    #[test]
    fn a_service_whose_only_endpoints_are_local_is_left_to_the_stack_and_decapsulated() {
        let (plan, _) = plan(&input(
            vec![service("s", &[VIP], TrafficPolicy::Cluster)],
            &[("s", "n1", ready(3))],
        ));
        assert!(plan.services.is_empty());
        assert_eq!(plan.decap, BTreeSet::from([ip(VIP)]));
    }

    #[test]
    fn a_service_without_endpoints_is_not_programmed_nor_decapsulated() {
        let not_ready = NodeEndpoints::default();
        let (plan, _) = plan(&input(
            vec![service("s", &[VIP], TrafficPolicy::Cluster)],
            &[("s", "n2", not_ready)],
        ));
        assert_eq!(plan, XdpPlan::default());
    }

    #[test]
    fn a_local_policy_service_is_never_tunnelled_but_decapsulated_where_it_has_endpoints() {
        let services = vec![service("s", &[VIP], TrafficPolicy::Local)];
        let endpoints = [("s", "n1", ready(1)), ("s", "n2", ready(1))];
        let (here, _) = plan(&input(services.clone(), &endpoints));
        assert!(here.services.is_empty());
        assert_eq!(here.decap, BTreeSet::from([ip(VIP)]));
        let (elsewhere, _) = plan(&input(services, &endpoints[1..]));
        assert_eq!(elsewhere, XdpPlan::default());
    }

    #[test]
    fn serving_terminating_endpoints_count_only_while_no_node_has_a_ready_one() {
        let terminating = NodeEndpoints {
            ready: 0,
            serving_terminating: 4,
        };
        let services = vec![service("s", &[VIP], TrafficPolicy::Cluster)];
        let (with_ready, _) = plan(&input(
            services.clone(),
            &[("s", "n2", terminating), ("s", "n3", ready(1))],
        ));
        assert_eq!(
            with_ready.services[&tcp(VIP, 80)],
            BTreeMap::from([(node_ip(3), 1)])
        );
        let (fallback, _) = plan(&input(services, &[("s", "n2", terminating)]));
        assert_eq!(
            fallback.services[&tcp(VIP, 80)],
            BTreeMap::from([(node_ip(2), 4)])
        );
    }

    #[test]
    fn each_vip_is_tunnelled_to_the_node_address_of_its_family_else_the_other() {
        let mut i = input(
            vec![service("s", &[VIP, VIP6], TrafficPolicy::Cluster)],
            &[("s", "n2", ready(1)), ("s", "n3", ready(1))],
        );
        i.nodes.get_mut("n3").expect("n3").v6 = None;
        let (plan, problems) = plan(&i);
        assert!(problems.is_empty());
        assert_eq!(
            plan.services[&tcp(VIP, 80)],
            BTreeMap::from([(node_ip(2), 1), (node_ip(3), 1)])
        );
        assert_eq!(
            plan.services[&tcp(VIP6, 80)],
            BTreeMap::from([(node_ip6(2), 1), (node_ip(3), 1)])
        );
    }

    #[test]
    fn a_node_without_an_internal_ip_is_left_out_and_reported() {
        let mut i = input(
            vec![service("s", &[VIP], TrafficPolicy::Cluster)],
            &[("s", "n2", ready(1)), ("s", "n3", ready(1))],
        );
        i.nodes.remove("n3");
        let (plan, problems) = plan(&i);
        assert_eq!(
            plan.services[&tcp(VIP, 80)],
            BTreeMap::from([(node_ip(2), 1)])
        );
        assert_eq!(
            problems,
            vec![PlanProblem::NoNodeAddress { node: "n3".into() }]
        );
    }

    #[test]
    fn services_sharing_a_vip_on_one_port_keep_the_first_by_name_and_report_the_other() {
        let mut dns = service("dns", &[VIP], TrafficPolicy::Cluster);
        dns.ports = vec![(80, Protocol::Tcp), (53, Protocol::Udp)];
        let web = service("web", &[VIP], TrafficPolicy::Cluster);
        let (plan, problems) = plan(&input(
            vec![web, dns],
            &[("web", "n2", ready(1)), ("dns", "n3", ready(1))],
        ));
        assert_eq!(
            plan.services[&tcp(VIP, 80)],
            BTreeMap::from([(node_ip(3), 1)])
        );
        assert!(plan.services.contains_key(&Service {
            vip: ip(VIP),
            port: 53,
            protocol: Protocol::Udp
        }));
        assert_eq!(
            problems,
            vec![PlanProblem::PortConflict {
                vip: ip(VIP),
                port: 80,
                protocol: Protocol::Tcp,
                kept: key("dns"),
                skipped: key("web"),
            }]
        );
    }

    fn from<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("test object deserializes")
    }

    #[test]
    fn api_objects_give_ports_endpoint_counts_and_internal_ips() {
        let services: Vec<K8sService> = vec![
            from(json!({
                "metadata": {"namespace": "web", "name": "s", "annotations": {
                    "cairn.io/allocated-ips": VIP, "cairn.io/allocated-pool": "p"}},
                "spec": {"type": "LoadBalancer", "ports": [
                    {"port": 80}, {"port": 53, "protocol": "UDP"},
                    {"port": 9, "protocol": "SCTP"}]},
            })),
            from(json!({
                "metadata": {"namespace": "web", "name": "unbound"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            })),
        ];
        let slice = |name: &str, family: &str, endpoints: Value| -> EndpointSlice {
            from(json!({
                "metadata": {"namespace": "web", "name": name,
                             "labels": {"kubernetes.io/service-name": "s"}},
                "addressType": family, "endpoints": endpoints,
            }))
        };
        let slices = vec![
            slice(
                "s-v4",
                "IPv4",
                json!([
                    {"addresses": ["203.0.113.1"], "nodeName": "n2"},
                    {"addresses": ["203.0.113.2"], "nodeName": "n2"},
                    {"addresses": ["203.0.113.3"], "nodeName": "n3",
                     "conditions": {"ready": false}},
                    {"addresses": ["203.0.113.4"], "nodeName": "n3",
                     "conditions": {"ready": false, "serving": true, "terminating": true}},
                    {"addresses": ["203.0.113.5"]},
                ]),
            ),
            slice(
                "s-v6",
                "IPv6",
                json!([
                    {"addresses": ["2001:db8:2::1"], "nodeName": "n2"},
                    {"addresses": ["2001:db8:2::2"], "nodeName": "n2"},
                ]),
            ),
        ];
        let nodes: Vec<Node> = vec![from(json!({
            "metadata": {"name": "n2"},
            "status": {"addresses": [
                {"type": "ExternalIP", "address": "203.0.113.99"},
                {"type": "Hostname", "address": "n2"},
                {"type": "InternalIP", "address": "198.51.100.2"},
                {"type": "InternalIP", "address": "2001:db8:1::2"},
                {"type": "InternalIP", "address": "198.51.100.22"},
            ]},
        }))];
        let (input, problems) = plan_input("n1", &services, &slices, &nodes);
        assert_eq!(
            problems,
            vec![PlanProblem::UnsupportedProtocol {
                service: key("s"),
                port: 9,
                protocol: "SCTP".into(),
            }]
        );
        assert_eq!(input.local_node, "n1");
        assert_eq!(
            input.services,
            vec![LbService {
                key: key("s"),
                vips: vec![ip(VIP)],
                traffic_policy: TrafficPolicy::Cluster,
                ports: vec![(80, Protocol::Tcp), (53, Protocol::Udp)],
            }]
        );
        assert_eq!(
            input.endpoints[&key("s")],
            BTreeMap::from([
                ("n2".to_string(), ready(2)),
                (
                    "n3".to_string(),
                    NodeEndpoints {
                        ready: 0,
                        serving_terminating: 1
                    }
                ),
            ]),
            "dual-stack pods count once, not-ready ones not at all"
        );
        assert_eq!(
            input.nodes["n2"],
            NodeAddresses {
                v4: Some(Ipv4Addr::new(198, 51, 100, 2)),
                v6: Some("2001:db8:1::2".parse().expect("address")),
            }
        );
    }

    #[test]
    fn changes_list_only_what_differs() {
        let a = XdpPlan {
            services: BTreeMap::from([
                (tcp(VIP, 80), BTreeMap::from([(node_ip(2), 1)])),
                (tcp(VIP, 81), BTreeMap::from([(node_ip(2), 1)])),
                (tcp(VIP, 82), BTreeMap::from([(node_ip(2), 1)])),
            ]),
            decap: BTreeSet::from([ip(VIP)]),
        };
        let mut b = a.clone();
        b.services
            .insert(tcp(VIP, 81), BTreeMap::from([(node_ip(2), 2)]));
        b.services.remove(&tcp(VIP, 82));
        b.services
            .insert(tcp(VIP, 83), BTreeMap::from([(node_ip(3), 1)]));
        b.decap = BTreeSet::from([ip(VIP6)]);
        let c = changes(&a, &b);
        assert_eq!(
            c,
            Changes {
                set: vec![
                    (tcp(VIP, 81), BTreeMap::from([(node_ip(2), 2)])),
                    (tcp(VIP, 83), BTreeMap::from([(node_ip(3), 1)])),
                ],
                remove: vec![tcp(VIP, 82)],
                decap_add: vec![ip(VIP6)],
                decap_remove: vec![ip(VIP)],
            }
        );
    }

    #[test]
    fn leaving_out_a_pending_backend_drops_services_left_without_any() {
        let plan = XdpPlan {
            services: BTreeMap::from([
                (
                    tcp(VIP, 80),
                    BTreeMap::from([(node_ip(2), 1), (node_ip(3), 1)]),
                ),
                (tcp(VIP, 81), BTreeMap::from([(node_ip(3), 1)])),
            ]),
            decap: BTreeSet::from([ip(VIP)]),
        };
        let left = plan.without_backends(&BTreeSet::from([node_ip(3)]));
        assert_eq!(
            left.services,
            BTreeMap::from([(tcp(VIP, 80), BTreeMap::from([(node_ip(2), 1)]))])
        );
        assert_eq!(left.decap, plan.decap);
    }

    fn arb_plan() -> impl Strategy<Value = XdpPlan> {
        let service = (0u8..3, 79u16..82, any::<bool>()).prop_map(|(v, port, udp)| Service {
            vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, v)),
            port,
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        });
        let backends = proptest::collection::btree_map((1u8..6).prop_map(node_ip), 1u32..4, 1..4);
        (
            proptest::collection::btree_map(service, backends, 0..6),
            proptest::collection::btree_set(
                (0u8..4).prop_map(|v| ip(&format!("192.0.2.{v}"))),
                0..4,
            ),
        )
            .prop_map(|(services, decap)| XdpPlan { services, decap })
    }

    proptest! {
        #[test]
        fn applying_the_changes_reaches_the_plan_and_a_second_pass_changes_nothing(
            current in arb_plan(),
            desired in arb_plan(),
        ) {
            let todo = changes(&current, &desired);
            let mut programmed = current.clone();
            programmed.apply(&todo);
            prop_assert_eq!(&programmed, &desired);
            prop_assert!(changes(&programmed, &desired).is_empty());
            prop_assert_eq!(todo.is_empty(), current == desired);
        }

        #[test]
        fn weights_are_the_ready_endpoints_of_the_other_nodes(
            counts in proptest::collection::vec((0u32..4, 0u32..3), 3),
            policy_local in any::<bool>(),
        ) {
            let policy = if policy_local { TrafficPolicy::Local } else { TrafficPolicy::Cluster };
            let endpoints: Vec<(String, NodeEndpoints)> = counts
                .iter()
                .enumerate()
                .map(|(i, &(ready, serving_terminating))| {
                    (format!("n{}", i + 1), NodeEndpoints { ready, serving_terminating })
                })
                .collect();
            let refs: Vec<(&str, &str, NodeEndpoints)> =
                endpoints.iter().map(|(n, e)| ("s", n.as_str(), *e)).collect();
            let (plan, problems) = plan(&input(vec![service("s", &[VIP], policy)], &refs));
            prop_assert!(problems.is_empty());
            let any_ready = counts.iter().any(|c| c.0 > 0);
            let usable = |c: &(u32, u32)| if any_ready { c.0 } else { c.1 };
            let expected: BTreeMap<IpAddr, u32> = counts
                .iter()
                .enumerate()
                .skip(1) // n1 is this node
                .filter(|(_, c)| usable(c) > 0)
                .map(|(i, c)| (node_ip(i as u8 + 1), usable(c)))
                .collect();
            match plan.services.get(&tcp(VIP, 80)) {
                Some(backends) => {
                    prop_assert_eq!(policy, TrafficPolicy::Cluster);
                    prop_assert!(backends.values().all(|&w| w > 0));
                    prop_assert_eq!(backends, &expected);
                }
                None => prop_assert!(policy == TrafficPolicy::Local || expected.is_empty()),
            }
            prop_assert_eq!(plan.decap.contains(&ip(VIP)), usable(&counts[0]) > 0);
        }
    }
}
