//! The Kubernetes side of the engine, as pure functions: which Services are ours, what a Service
//! asks for, what binding it already carries, and the patches that persist a binding.
//!
//! Nothing here talks to the API server; [`crate::controller`] does, with these functions. A
//! Service's request comes from its annotations (Cairn's first, then MetalLB's current, then
//! MetalLB's legacy ones) and `spec.loadBalancerIP`; its persisted binding from
//! `cairn.io/allocated-ips` + `cairn.io/allocated-pool`, else `status.loadBalancer.ingress` (with
//! MetalLB's `ip-allocated-from-pool` hint or the pool that holds the addresses).

use std::collections::BTreeMap;
use std::net::IpAddr;

use cairn_api::annotations::{self as keys, first_of};
use cairn_api::validation::ValidPool;
use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};

use crate::engine::{
    AllocateTo, Binding, Family, FamilyPolicy, Pool, Port, Protocol, ServiceKey, ServiceRequest,
};

/// Why a Service's request cannot be read; quoted in an `AllocationFailed` Event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An entry of the requested-addresses annotation (or `spec.loadBalancerIP`) is not an address.
    #[error("{source_field}: {value:?} is not an IP address")]
    BadAddress {
        /// The annotation key or `spec.loadBalancerIP`.
        source_field: String,
        /// The offending text.
        value: String,
    },
    /// More than one address of a family was requested.
    #[error("{source_field}: at most one IPv4 and one IPv6 address may be requested")]
    TooManyAddresses {
        /// The annotation key or `spec.loadBalancerIP`.
        source_field: String,
    },
    /// `spec.ipFamilyPolicy` or `spec.ipFamilies` holds an unknown value.
    #[error("{field}: unknown value {value:?}")]
    UnknownFamilyValue {
        /// The field path.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// The Service has no namespace or name (never the case for objects from the API server).
    #[error("the Service has no namespace or name")]
    Unnamed,
}

/// The key of a Service, if it has a namespace and a name.
pub fn service_key(svc: &Service) -> Option<ServiceKey> {
    Some(ServiceKey::new(
        svc.metadata.namespace.clone()?,
        svc.metadata.name.clone()?,
    ))
}

/// Whether the allocator handles this Service: `type: LoadBalancer`, not being deleted, and no
/// `spec.loadBalancerClass` or exactly `lb_class`.
pub fn is_ours(svc: &Service, lb_class: &str) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer")
        && svc.metadata.deletion_timestamp.is_none()
        && spec
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == lb_class)
}

/// Whether the Service carries a Cairn binding (so that one it no longer handles is released).
pub fn has_cairn_binding(svc: &Service) -> bool {
    annotations(svc).contains_key(keys::ALLOCATED_IPS)
}

fn annotations(svc: &Service) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    svc.metadata.annotations.as_ref().unwrap_or(&EMPTY)
}

/// What the Service asks for.
pub fn service_request(
    svc: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<ServiceRequest, RequestError> {
    let key = service_key(svc).ok_or(RequestError::Unnamed)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let annotations = annotations(svc);
    let requested_ips = requested_ips(svc)?;
    let family_policy = family_policy(
        spec.ip_family_policy.as_deref(),
        spec.ip_families.as_deref().unwrap_or_default(),
        requested_ips.first(),
    )?;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| Port {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            },
            port: u16::try_from(p.port).unwrap_or(0),
        })
        .collect();
    Ok(ServiceRequest {
        key,
        namespace_labels: namespace_labels.clone(),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        requested_ips,
        requested_pool: first_of(annotations, &keys::REQUESTED_POOL_KEYS).map(str::to_owned),
        family_policy,
        sharing_key: first_of(annotations, &keys::SHARING_KEY_KEYS).map(str::to_owned),
        ports,
        local_traffic_policy: spec.external_traffic_policy.as_deref() == Some("Local"),
        selector: spec.selector.unwrap_or_default(),
    })
}

/// The requested addresses: the first annotation present (Cairn's, MetalLB's, legacy), else
/// `spec.loadBalancerIP`. At most one per family.
fn requested_ips(svc: &Service) -> Result<Vec<IpAddr>, RequestError> {
    let annotations = annotations(svc);
    let (source_field, text) = match keys::REQUESTED_IPS_KEYS
        .iter()
        .find_map(|k| annotations.get(*k).map(|v| (k.to_string(), v.clone())))
    {
        Some(found) => found,
        None => match svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.clone())
            .filter(|ip| !ip.is_empty())
        {
            Some(ip) => ("spec.loadBalancerIP".to_string(), ip),
            None => return Ok(Vec::new()),
        },
    };
    let mut ips = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| RequestError::BadAddress {
            source_field: source_field.clone(),
            value: part.to_owned(),
        })?;
        if ips
            .iter()
            .any(|other: &IpAddr| other.is_ipv4() == ip.is_ipv4())
        {
            return Err(RequestError::TooManyAddresses { source_field });
        }
        ips.push(ip);
    }
    Ok(ips)
}

fn family_policy(
    policy: Option<&str>,
    families: &[String],
    first_requested: Option<&IpAddr>,
) -> Result<FamilyPolicy, RequestError> {
    let primary = match families.first().map(String::as_str) {
        Some("IPv4") => Family::V4,
        Some("IPv6") => Family::V6,
        Some(other) => {
            return Err(RequestError::UnknownFamilyValue {
                field: "spec.ipFamilies",
                value: other.to_owned(),
            })
        }
        // The real API server always fills ipFamilies; without it, a requested address decides.
        None => first_requested.map_or(Family::V4, Family::of),
    };
    match policy {
        None | Some("SingleStack") => Ok(FamilyPolicy::SingleStack(primary)),
        Some("PreferDualStack") => Ok(FamilyPolicy::PreferDualStack { primary }),
        Some("RequireDualStack") => Ok(FamilyPolicy::RequireDualStack { primary }),
        Some(other) => Err(RequestError::UnknownFamilyValue {
            field: "spec.ipFamilyPolicy",
            value: other.to_owned(),
        }),
    }
}

fn nonempty_ip_list(text: &str) -> Option<Vec<IpAddr>> {
    keys::parse_ip_list(text).filter(|ips| !ips.is_empty())
}

/// The addresses in `status.loadBalancer.ingress`.
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

/// The binding a Service carries from an earlier run, in order of trust: Cairn's annotations,
/// then the status (pool from MetalLB's hint, else `pool_of`). `pool_of` names the pool holding
/// all the given addresses.
pub fn persisted_binding(
    svc: &Service,
    pool_of: impl Fn(&[IpAddr]) -> Option<String>,
) -> Option<Binding> {
    let annotations = annotations(svc);
    if let Some(ips) = annotations
        .get(keys::ALLOCATED_IPS)
        .and_then(|t| nonempty_ip_list(t))
    {
        let pool = annotations
            .get(keys::ALLOCATED_POOL)
            .cloned()
            .or_else(|| pool_of(&ips))?;
        return Some(Binding { pool, ips });
    }
    let ips = status_ips(svc);
    if ips.is_empty() {
        return None;
    }
    let pool = first_of(annotations, &keys::ALLOCATED_FROM_POOL_KEYS)
        .map(str::to_owned)
        .or_else(|| pool_of(&ips))?;
    Some(Binding { pool, ips })
}

/// Whether the Service's annotations already record exactly `binding` (or nothing, for `None`).
pub fn annotations_record(svc: &Service, binding: Option<&Binding>) -> bool {
    let annotations = annotations(svc);
    let recorded_ips = annotations.get(keys::ALLOCATED_IPS);
    let recorded_pool = annotations.get(keys::ALLOCATED_POOL);
    match binding {
        None => recorded_ips.is_none() && recorded_pool.is_none(),
        Some(b) => {
            recorded_ips.and_then(|t| nonempty_ip_list(t)).as_ref() == Some(&b.ips)
                && recorded_pool == Some(&b.pool)
        }
    }
}

/// Whether `status.loadBalancer.ingress` already lists exactly the binding's addresses.
pub fn status_records(svc: &Service, binding: Option<&Binding>) -> bool {
    status_ips(svc) == binding.map(|b| b.ips.clone()).unwrap_or_default()
}

/// The merge patch recording (or, for `None`, erasing) the binding in the annotations. It
/// carries the `resourceVersion` the decision was based on, so a concurrent change gives 409.
pub fn annotations_patch(binding: Option<&Binding>, resource_version: &str) -> Value {
    let (ips, pool) = match binding {
        Some(b) => (
            Value::from(keys::format_ip_list(&b.ips)),
            Value::from(b.pool.clone()),
        ),
        None => (Value::Null, Value::Null),
    };
    json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": { keys::ALLOCATED_IPS: ips, keys::ALLOCATED_POOL: pool },
        }
    })
}

/// The status-subresource merge patch listing the binding's addresses (`ipMode: VIP`: traffic
/// for them must reach the node, as opposed to kube-proxy short-circuiting it).
pub fn status_patch(binding: Option<&Binding>) -> Value {
    let ingress: Vec<Value> = binding
        .into_iter()
        .flat_map(|b| &b.ips)
        .map(|ip| json!({ "ip": ip.to_string(), "ipMode": "VIP" }))
        .collect();
    json!({ "status": { "loadBalancer": { "ingress": ingress } } })
}

/// The engine's view of a validated pool.
pub fn engine_pool(name: &str, pool: &ValidPool) -> Pool {
    Pool {
        name: name.to_owned(),
        ranges: pool.ranges.clone(),
        auto_assign: pool.auto_assign,
        avoid_buggy_ips: pool.avoid_buggy_ips,
        allocate_to: AllocateTo {
            priority: pool.priority,
            namespaces: pool.namespaces.clone(),
            namespace_selectors: pool.namespace_selectors.clone(),
            service_selectors: pool.service_selectors.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use kube::api::ObjectMeta;

    fn lb_service(annotations: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("web".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ports: Some(vec![ServicePort {
                    port: 443,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn with_status(mut svc: Service, ips: &[&str]) -> Service {
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ips.iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        });
        svc
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_load_balancers_of_our_class_or_no_class_are_ours() {
        let mut svc = lb_service(&[]);
        assert!(is_ours(&svc, "cairn.io/lb"));
        svc.spec.as_mut().unwrap().load_balancer_class = Some("cairn.io/lb".into());
        assert!(is_ours(&svc, "cairn.io/lb"));
        svc.spec.as_mut().unwrap().load_balancer_class = Some("other.example/lb".into());
        assert!(!is_ours(&svc, "cairn.io/lb"));
        let mut cluster_ip = lb_service(&[]);
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(!is_ours(&cluster_ip, "cairn.io/lb"));
    }

    #[test]
    fn cairn_annotations_win_over_metallb_and_spec() {
        let mut svc = lb_service(&[
            (keys::METALLB_LOAD_BALANCER_IPS, "192.0.2.9"),
            (keys::LOAD_BALANCER_IPS, "192.0.2.7, 2001:db8::7"),
            (keys::METALLB_LEGACY_ADDRESS_POOL, "legacy"),
            (keys::METALLB_ALLOW_SHARED_IP, "team-a"),
        ]);
        svc.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.1".into());
        let request = service_request(&svc, &BTreeMap::new()).unwrap();
        assert_eq!(request.requested_ips, [ip("192.0.2.7"), ip("2001:db8::7")]);
        assert_eq!(request.requested_pool.as_deref(), Some("legacy"));
        assert_eq!(request.sharing_key.as_deref(), Some("team-a"));
        assert_eq!(
            request.ports,
            [Port {
                protocol: Protocol::Tcp,
                port: 443
            }]
        );
    }

    #[test]
    fn spec_load_balancer_ip_is_a_request_when_no_annotation_is_set() {
        let mut svc = lb_service(&[]);
        svc.spec.as_mut().unwrap().load_balancer_ip = Some("2001:db8::5".into());
        let request = service_request(&svc, &BTreeMap::new()).unwrap();
        assert_eq!(request.requested_ips, [ip("2001:db8::5")]);
        assert_eq!(request.family_policy, FamilyPolicy::SingleStack(Family::V6));
    }

    #[test]
    fn a_malformed_request_is_an_error_naming_its_source() {
        let svc = lb_service(&[(keys::LOAD_BALANCER_IPS, "192.0.2.7,not-an-ip")]);
        let e = service_request(&svc, &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains(keys::LOAD_BALANCER_IPS), "{e}");
        let two_v4 = lb_service(&[(keys::LOAD_BALANCER_IPS, "192.0.2.7,192.0.2.8")]);
        assert!(matches!(
            service_request(&two_v4, &BTreeMap::new()),
            Err(RequestError::TooManyAddresses { .. })
        ));
    }

    #[test]
    fn family_policy_follows_the_spec() {
        let mut svc = lb_service(&[]);
        let spec = svc.spec.as_mut().unwrap();
        spec.ip_family_policy = Some("RequireDualStack".into());
        spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        let request = service_request(&svc, &BTreeMap::new()).unwrap();
        assert_eq!(
            request.family_policy,
            FamilyPolicy::RequireDualStack {
                primary: Family::V6
            }
        );
        svc.spec.as_mut().unwrap().ip_family_policy = Some("Sometimes".into());
        assert!(service_request(&svc, &BTreeMap::new()).is_err());
    }

    #[test]
    fn the_persisted_binding_prefers_annotations_then_status() {
        let annotated = lb_service(&[
            (keys::ALLOCATED_IPS, "192.0.2.7,2001:db8::7"),
            (keys::ALLOCATED_POOL, "web"),
        ]);
        let annotated = with_status(annotated, &["192.0.2.99"]);
        assert_eq!(
            persisted_binding(&annotated, |_| None),
            Some(Binding {
                pool: "web".into(),
                ips: vec![ip("192.0.2.7"), ip("2001:db8::7")]
            })
        );
        let from_metallb = with_status(
            lb_service(&[(keys::METALLB_ALLOCATED_FROM_POOL, "old")]),
            &["192.0.2.8"],
        );
        assert_eq!(
            persisted_binding(&from_metallb, |_| Some("ignored".into())),
            Some(Binding {
                pool: "old".into(),
                ips: vec![ip("192.0.2.8")]
            })
        );
        let status_only = with_status(lb_service(&[]), &["192.0.2.8"]);
        assert_eq!(
            persisted_binding(&status_only, |ips| (ips == [ip("192.0.2.8")])
                .then(|| "found".into())),
            Some(Binding {
                pool: "found".into(),
                ips: vec![ip("192.0.2.8")]
            })
        );
        assert_eq!(persisted_binding(&lb_service(&[]), |_| None), None);
    }

    #[test]
    fn a_garbled_binding_annotation_falls_back_to_the_status() {
        let svc = with_status(
            lb_service(&[
                (keys::ALLOCATED_IPS, "garbage"),
                (keys::ALLOCATED_POOL, "web"),
            ]),
            &["192.0.2.8"],
        );
        assert_eq!(
            persisted_binding(&svc, |_| Some("web".into())).map(|b| b.ips),
            Some(vec![ip("192.0.2.8")])
        );
    }

    #[test]
    fn patches_record_and_erase_bindings() {
        let binding = Binding {
            pool: "web".into(),
            ips: vec![ip("192.0.2.7"), ip("2001:db8::7")],
        };
        let patch = annotations_patch(Some(&binding), "42");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["metadata"]["annotations"][keys::ALLOCATED_IPS],
            "192.0.2.7,2001:db8::7"
        );
        let erase = annotations_patch(None, "43");
        assert!(erase["metadata"]["annotations"][keys::ALLOCATED_POOL].is_null());
        let status = status_patch(Some(&binding));
        assert_eq!(
            status["status"]["loadBalancer"]["ingress"][1]["ip"],
            "2001:db8::7"
        );
        assert_eq!(
            status["status"]["loadBalancer"]["ingress"][0]["ipMode"],
            "VIP"
        );
        assert_eq!(
            status_patch(None)["status"]["loadBalancer"]["ingress"],
            json!([])
        );
    }

    #[test]
    fn recorded_bindings_are_recognised() {
        let binding = Binding {
            pool: "web".into(),
            ips: vec![ip("192.0.2.7")],
        };
        let svc = with_status(
            lb_service(&[
                (keys::ALLOCATED_IPS, "192.0.2.7"),
                (keys::ALLOCATED_POOL, "web"),
            ]),
            &["192.0.2.7"],
        );
        assert!(annotations_record(&svc, Some(&binding)));
        assert!(status_records(&svc, Some(&binding)));
        assert!(!annotations_record(&svc, None));
        assert!(annotations_record(&lb_service(&[]), None));
        assert!(status_records(&lb_service(&[]), None));
    }
}
