//! Which nodes hold a usable endpoint of a Service, derived from EndpointSlice-like plain data.
//!
//! This is what `externalTrafficPolicy: Local` eligibility reads. The condition semantics follow
//! the `discovery.k8s.io/v1` API (KEP-1672, "Tracking Terminating Endpoints"):
//! - `ready`: nil means unknown and is read as ready; a terminating endpoint is never ready.
//! - `serving`: like `ready` but also set while terminating; nil is read as serving.
//! - `terminating`: nil is read as not terminating.
//!
//! A node's best endpoint of a Service is [`Readiness::Ready`] if one endpoint on it is ready,
//! else [`Readiness::ServingTerminating`] if one is serving while terminating. Endpoints without a
//! `nodeName` belong to no node and are ignored. No IO here: the adapter converts the API objects.

use std::collections::BTreeMap;
use std::fmt;

/// A Service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceKey {
    /// The key of Service `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The conditions of one endpoint, as in `discovery.k8s.io/v1` `EndpointConditions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointConditions {
    /// `ready` (nil: unknown, read as ready).
    pub ready: Option<bool>,
    /// `serving` (nil: unknown, read as serving).
    pub serving: Option<bool>,
    /// `terminating` (nil: unknown, read as not terminating).
    pub terminating: Option<bool>,
}

/// One endpoint of a slice: where it runs and its conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `nodeName`, when the endpoint runs on a node.
    pub node_name: Option<String>,
    /// Its conditions.
    pub conditions: EndpointConditions,
}

/// The parts of an EndpointSlice that matter here. The Service comes from the slice's
/// `kubernetes.io/service-name` label and its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The Service the slice belongs to.
    pub service: ServiceKey,
    /// The slice's endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// How usable the best endpoint of a Service on a node is. `Ready` ranks above
/// `ServingTerminating`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Readiness {
    /// Only terminating endpoints that still serve (usable as a fallback, as kube-proxy does).
    ServingTerminating,
    /// At least one ready endpoint.
    Ready,
}

impl EndpointConditions {
    /// The readiness this endpoint gives its node, if any.
    pub fn readiness(&self) -> Option<Readiness> {
        let terminating = self.terminating.unwrap_or(false);
        if terminating {
            self.serving
                .unwrap_or(true)
                .then_some(Readiness::ServingTerminating)
        } else {
            self.ready.unwrap_or(true).then_some(Readiness::Ready)
        }
    }
}

/// Why a node has no usable local endpoint of a Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalEndpointGap {
    /// No ready or serving endpoint on the node.
    None,
    /// Only serving-terminating endpoints on the node while other nodes have ready ones.
    OnlyTerminating,
}

/// Per Service, per node, the best local endpoint: Service -> node -> readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalEndpoints {
    by_service: BTreeMap<ServiceKey, BTreeMap<String, Readiness>>,
}

impl LocalEndpoints {
    /// Derives the table from all EndpointSlices (a Service may have several slices).
    pub fn from_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Self {
        let mut by_service: BTreeMap<ServiceKey, BTreeMap<String, Readiness>> = BTreeMap::new();
        for slice in slices {
            let nodes = by_service.entry(slice.service.clone()).or_default();
            for endpoint in &slice.endpoints {
                let (Some(node), Some(readiness)) =
                    (&endpoint.node_name, endpoint.conditions.readiness())
                else {
                    continue;
                };
                let best = nodes.entry(node.clone()).or_insert(readiness);
                *best = (*best).max(readiness);
            }
        }
        Self { by_service }
    }

    /// The best local endpoint of `service` on `node`.
    pub fn readiness(&self, service: &ServiceKey, node: &str) -> Option<Readiness> {
        self.by_service.get(service)?.get(node).copied()
    }

    /// Whether `node` may carry `service`'s traffic under `externalTrafficPolicy: Local`: it has a
    /// ready endpoint, or — only while no node has a ready one — a serving-terminating endpoint.
    pub fn check(&self, service: &ServiceKey, node: &str) -> Result<(), LocalEndpointGap> {
        let nodes = self.by_service.get(service);
        match nodes.and_then(|n| n.get(node)) {
            Some(Readiness::Ready) => Ok(()),
            Some(Readiness::ServingTerminating) => {
                let ready_elsewhere = nodes
                    .into_iter()
                    .flat_map(|n| n.values())
                    .any(|r| *r == Readiness::Ready);
                if ready_elsewhere {
                    Err(LocalEndpointGap::OnlyTerminating)
                } else {
                    Ok(())
                }
            }
            None => Err(LocalEndpointGap::None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(
        node: Option<&str>,
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Endpoint {
        Endpoint {
            node_name: node.map(str::to_string),
            conditions: EndpointConditions {
                ready,
                serving,
                terminating,
            },
        }
    }

    fn svc() -> ServiceKey {
        ServiceKey::new("default", "web")
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            service: svc(),
            endpoints,
        }
    }

    #[test]
    fn unknown_conditions_read_as_ready() {
        assert_eq!(
            EndpointConditions::default().readiness(),
            Some(Readiness::Ready)
        );
    }

    #[test]
    fn a_not_ready_endpoint_gives_nothing() {
        let c = EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(false),
        };
        assert_eq!(c.readiness(), None);
    }

    #[test]
    fn a_terminating_endpoint_that_serves_is_serving_terminating_even_if_marked_ready() {
        let c = EndpointConditions {
            ready: Some(true),
            serving: None,
            terminating: Some(true),
        };
        assert_eq!(c.readiness(), Some(Readiness::ServingTerminating));
        let stopped = EndpointConditions {
            serving: Some(false),
            ..c
        };
        assert_eq!(stopped.readiness(), None);
    }

    #[test]
    fn endpoints_without_a_node_are_ignored() {
        let t = LocalEndpoints::from_slices(&[slice(vec![ep(None, Some(true), None, None)])]);
        assert_eq!(t.check(&svc(), "n1"), Err(LocalEndpointGap::None));
    }

    #[test]
    fn the_best_endpoint_on_a_node_counts_across_slices() {
        let slices = [
            slice(vec![ep(Some("n1"), Some(false), Some(true), Some(true))]),
            slice(vec![ep(Some("n1"), Some(true), Some(true), Some(false))]),
        ];
        let t = LocalEndpoints::from_slices(&slices);
        assert_eq!(t.readiness(&svc(), "n1"), Some(Readiness::Ready));
        assert_eq!(t.check(&svc(), "n1"), Ok(()));
    }

    #[test]
    fn serving_terminating_counts_only_while_no_node_has_a_ready_endpoint() {
        let draining = slice(vec![ep(Some("n1"), Some(false), Some(true), Some(true))]);
        let t = LocalEndpoints::from_slices([&draining]);
        assert_eq!(t.check(&svc(), "n1"), Ok(()));

        let with_ready_elsewhere = slice(vec![
            ep(Some("n1"), Some(false), Some(true), Some(true)),
            ep(Some("n2"), Some(true), None, None),
        ]);
        let t = LocalEndpoints::from_slices([&with_ready_elsewhere]);
        assert_eq!(
            t.check(&svc(), "n1"),
            Err(LocalEndpointGap::OnlyTerminating)
        );
        assert_eq!(t.check(&svc(), "n2"), Ok(()));
    }

    #[test]
    fn an_unknown_service_has_no_local_endpoint() {
        let t = LocalEndpoints::default();
        assert_eq!(t.check(&svc(), "n1"), Err(LocalEndpointGap::None));
    }
}
