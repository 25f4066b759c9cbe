//! The speaker's view of the cluster: kube-runtime reflectors for every kind of object the
//! announcement decision reads, one shared "something changed" notification, and a consistent
//! copy of the caches ([`ClusterState`]) to feed [`crate::adapter::convert`].
//!
//! Watched: Nodes, EndpointSlices and Services cluster-wide; IPAddressPools, L2Advertisements,
//! BGPAdvertisements, BGPPeers, Communities and Secrets (BGP passwords) in the speaker's
//! namespace only. Watch errors are retried with kube-runtime's default backoff and logged; a
//! cache keeps its last content meanwhile.
//!
//! What it must not do: write anything, or decide anything (the runtime does, from a
//! [`ClusterState`]).

use std::sync::Arc;

use cairn_api::v1alpha1::{BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::adapter::ClusterObjects;
use crate::peers::Secrets;

/// Why the caches did not sync.
#[derive(Debug, thiserror::Error)]
#[error("the {0} cache stopped before it synced")]
pub struct CacheStopped(pub &'static str);

/// The reflector caches; dropping this stops their watches.
pub struct Caches {
    nodes: Store<Node>,
    endpoint_slices: Store<EndpointSlice>,
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    l2_advertisements: Store<L2Advertisement>,
    bgp_advertisements: Store<BGPAdvertisement>,
    bgp_peers: Store<BGPPeer>,
    communities: Store<Community>,
    secrets: Store<Secret>,
    changed: Arc<Notify>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts a reflector for `api`, waking `changed` on every event.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>, tasks: &mut Vec<AbortHandle>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => changed.notify_one(),
                Ok(None) => break,
                Err(e) => tracing::warn!(kind, error = %e, "watch error; retrying with backoff"),
            }
        }
    });
    tasks.push(task.abort_handle());
    reader
}

impl Caches {
    /// Starts every watch; `namespace` is the speaker's (Cairn resources and Secrets).
    pub fn start(client: &Client, namespace: &str) -> Self {
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let c = &changed;
        let t = &mut tasks;
        Self {
            nodes: reflect(Api::all(client.clone()), c.clone(), t),
            endpoint_slices: reflect(Api::all(client.clone()), c.clone(), t),
            services: reflect(Api::all(client.clone()), c.clone(), t),
            pools: reflect(Api::namespaced(client.clone(), namespace), c.clone(), t),
            l2_advertisements: reflect(Api::namespaced(client.clone(), namespace), c.clone(), t),
            bgp_advertisements: reflect(Api::namespaced(client.clone(), namespace), c.clone(), t),
            bgp_peers: reflect(Api::namespaced(client.clone(), namespace), c.clone(), t),
            communities: reflect(Api::namespaced(client.clone(), namespace), c.clone(), t),
            secrets: reflect(Api::namespaced(client.clone(), namespace), c.clone(), t),
            changed,
            tasks,
        }
    }

    /// Waits until every cache has its first complete list.
    pub async fn wait_until_ready(&self) -> Result<(), CacheStopped> {
        let r = |ready: Result<(), _>, kind| ready.map_err(|_| CacheStopped(kind));
        r(self.nodes.wait_until_ready().await, "Node")?;
        r(
            self.endpoint_slices.wait_until_ready().await,
            "EndpointSlice",
        )?;
        r(self.services.wait_until_ready().await, "Service")?;
        r(self.pools.wait_until_ready().await, "IPAddressPool")?;
        r(
            self.l2_advertisements.wait_until_ready().await,
            "L2Advertisement",
        )?;
        r(
            self.bgp_advertisements.wait_until_ready().await,
            "BGPAdvertisement",
        )?;
        r(self.bgp_peers.wait_until_ready().await, "BGPPeer")?;
        r(self.communities.wait_until_ready().await, "Community")?;
        r(self.secrets.wait_until_ready().await, "Secret")?;
        Ok(())
    }

    /// The notification raised on every change of any cache (permits coalesce).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// A copy of every cache, taken now. Services of another `spec.loadBalancerClass` than
    /// `lb_class` are left out.
    pub fn state(&self, lb_class: &str) -> ClusterState {
        fn copy<K: Resource + Clone>(store: &Store<K>) -> Vec<K>
        where
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.state().iter().map(|o| (**o).clone()).collect()
        }
        let services = self
            .services
            .state()
            .iter()
            .filter(|s| is_our_class(s, lb_class))
            .map(|s| (**s).clone())
            .collect();
        let secrets = self
            .secrets
            .state()
            .iter()
            .filter_map(|s| {
                let name = s.metadata.name.clone()?;
                let data = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                Some((name, data))
            })
            .collect();
        ClusterState {
            nodes: copy(&self.nodes),
            endpoint_slices: copy(&self.endpoint_slices),
            services,
            pools: copy(&self.pools),
            l2_advertisements: copy(&self.l2_advertisements),
            bgp_advertisements: copy(&self.bgp_advertisements),
            bgp_peers: copy(&self.bgp_peers),
            communities: copy(&self.communities),
            secrets,
        }
    }
}

/// Whether the Service is ours to announce: no `spec.loadBalancerClass`, or `lb_class`.
pub fn is_our_class(service: &Service, lb_class: &str) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.load_balancer_class.as_deref())
        .is_none_or(|class| class == lb_class)
}

/// A copy of the caches at one moment.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    /// Nodes.
    pub nodes: Vec<Node>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Services of our load-balancer class (or none).
    pub services: Vec<Service>,
    /// IPAddressPools.
    pub pools: Vec<IPAddressPool>,
    /// L2Advertisements.
    pub l2_advertisements: Vec<L2Advertisement>,
    /// BGPAdvertisements.
    pub bgp_advertisements: Vec<BGPAdvertisement>,
    /// BGPPeers.
    pub bgp_peers: Vec<BGPPeer>,
    /// Communities.
    pub communities: Vec<Community>,
    /// The Secrets of the speaker's namespace.
    pub secrets: Secrets,
}

impl ClusterState {
    /// The objects as [`crate::adapter::convert`] takes them.
    pub fn objects(&self) -> ClusterObjects<'_> {
        ClusterObjects {
            nodes: &self.nodes,
            endpoint_slices: &self.endpoint_slices,
            services: &self.services,
            pools: &self.pools,
            l2_advertisements: &self.l2_advertisements,
            bgp_advertisements: &self.bgp_advertisements,
            bgp_peers: &self.bgp_peers,
            communities: &self.communities,
        }
    }

    /// The Node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(class: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "web", "name": "s"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": class},
        }))
        .expect("service")
    }

    #[test]
    fn services_of_another_load_balancer_class_are_not_ours() {
        assert!(is_our_class(&service(None), "cairn.io/lb"));
        assert!(is_our_class(&service(Some("cairn.io/lb")), "cairn.io/lb"));
        assert!(!is_our_class(
            &service(Some("metallb.io/lb")),
            "cairn.io/lb"
        ));
    }

    #[test]
    fn the_state_finds_nodes_and_services_by_name() {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).expect("node");
        let state = ClusterState {
            nodes: vec![node],
            services: vec![service(None)],
            ..ClusterState::default()
        };
        assert!(state.node("n1").is_some());
        assert!(state.node("n2").is_none());
        assert!(state.service("web", "s").is_some());
        assert!(state.service("other", "s").is_none());
        assert_eq!(state.objects().services.len(), 1);
    }
}
