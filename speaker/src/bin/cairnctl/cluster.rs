//! Everything `cairnctl` reads, fetched once with plain list calls, and what the speakers'
//! Leases say about each node: live or not, its interfaces, what it announces.
//!
//! Reading only: nothing here writes to the API server. Liveness is judged from each Lease's
//! `renewTime + leaseDurationSeconds` against this machine's wall clock (a one-shot command
//! has no earlier observation to measure from, unlike the speakers), so clock skew between
//! this machine and the speakers' shows up here; a Lease with an empty holder is never live.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use cairn_api::v1alpha1::{BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement};
use cairn_speaker::adapter::ClusterObjects;
use cairn_speaker::membership::{node_of_lease, parse_interfaces, INTERFACES_ANNOTATION};
use cairn_speaker::status::{NodeStatus, ANNOUNCING_ANNOTATION};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

/// The objects `cairnctl` works from.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Services of every namespace.
    pub services: Vec<Service>,
    /// EndpointSlices of every namespace.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// IPAddressPools in Cairn's namespace.
    pub pools: Vec<IPAddressPool>,
    /// L2Advertisements in Cairn's namespace.
    pub l2_advertisements: Vec<L2Advertisement>,
    /// BGPAdvertisements in Cairn's namespace.
    pub bgp_advertisements: Vec<BGPAdvertisement>,
    /// BGPPeers in Cairn's namespace.
    pub bgp_peers: Vec<BGPPeer>,
    /// Communities in Cairn's namespace.
    pub communities: Vec<Community>,
    /// Leases in Cairn's namespace (the speakers' among them).
    pub leases: Vec<Lease>,
    /// `events.k8s.io/v1` Events of every namespace about Services.
    pub events: Vec<Event>,
}

/// What a speaker's Lease says about its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerRecord {
    /// The node.
    pub node: String,
    /// The Lease's holder (empty when released).
    pub holder: String,
    /// Whether the Lease is held and unexpired now.
    pub live: bool,
    /// The interfaces the speaker reports up.
    pub interfaces_up: BTreeSet<String>,
    /// What it announces; empty when not live, whatever the record says.
    pub announcing: NodeStatus,
    /// A record that could not be read.
    pub problem: Option<String>,
}

async fn list<K>(api: Api<K>, what: &str) -> anyhow::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    use anyhow::Context;
    Ok(api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {what}"))?
        .items)
}

impl Cluster {
    /// Lists everything with `client`; Cairn's resources and the speaker Leases in `namespace`.
    pub async fn fetch(client: &Client, namespace: &str) -> anyhow::Result<Self> {
        let c = || client.clone();
        let (services, endpoint_slices, nodes, leases, events) = futures::try_join!(
            list(Api::<Service>::all(c()), "Services"),
            list(Api::<EndpointSlice>::all(c()), "EndpointSlices"),
            list(Api::<Node>::all(c()), "Nodes"),
            list(Api::<Lease>::namespaced(c(), namespace), "Leases"),
            list(Api::<Event>::all(c()), "Events"),
        )?;
        let (pools, l2_advertisements, bgp_advertisements, bgp_peers, communities) = futures::try_join!(
            list(
                Api::<IPAddressPool>::namespaced(c(), namespace),
                "IPAddressPools"
            ),
            list(
                Api::<L2Advertisement>::namespaced(c(), namespace),
                "L2Advertisements"
            ),
            list(
                Api::<BGPAdvertisement>::namespaced(c(), namespace),
                "BGPAdvertisements"
            ),
            list(Api::<BGPPeer>::namespaced(c(), namespace), "BGPPeers"),
            list(Api::<Community>::namespaced(c(), namespace), "Communities"),
        )?;
        let events = events
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("Service"))
            })
            .collect();
        Ok(Self {
            services,
            endpoint_slices,
            nodes,
            pools,
            l2_advertisements,
            bgp_advertisements,
            bgp_peers,
            communities,
            leases,
            events,
        })
    }

    /// The objects in the form the speakers' adapter takes.
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

    /// One record per speaker Lease (`cairn-speaker-<node>`), sorted by node, judged at `now`.
    pub fn speakers(&self, now: SystemTime) -> Vec<SpeakerRecord> {
        let mut records: Vec<SpeakerRecord> = self
            .leases
            .iter()
            .filter_map(|lease| speaker_record(lease, now))
            .collect();
        records.sort_by(|a, b| a.node.cmp(&b.node));
        records
    }
}

/// What one Lease says, or `None` when it is not a speaker's.
pub fn speaker_record(lease: &Lease, now: SystemTime) -> Option<SpeakerRecord> {
    let node = node_of_lease(lease.metadata.name.as_deref()?)?.to_string();
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    let expires = spec.renew_time.and_then(|t| {
        let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).ok()?;
        Some(SystemTime::from(t.0) + Duration::from_secs(seconds))
    });
    let live = !holder.is_empty() && expires.is_some_and(|e| e > now);
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    let interfaces_up = annotations
        .get(INTERFACES_ANNOTATION)
        .map(|a| parse_interfaces(a))
        .unwrap_or_default();
    let (announcing, problem) = match annotations.get(ANNOUNCING_ANNOTATION) {
        None => (NodeStatus::default(), None),
        Some(text) => match NodeStatus::from_annotation(text) {
            Ok(status) => (status, None),
            Err(e) => (NodeStatus::default(), Some(e.to_string())),
        },
    };
    Some(SpeakerRecord {
        node,
        holder,
        live,
        interfaces_up,
        announcing: if live {
            announcing
        } else {
            NodeStatus::default()
        },
        problem,
    })
}

/// node -> interfaces up, for the live speakers (what [`cairn_speaker::adapter::convert`] takes).
pub fn interfaces_up(records: &[SpeakerRecord]) -> BTreeMap<String, BTreeSet<String>> {
    records
        .iter()
        .map(|r| (r.node.clone(), r.interfaces_up.clone()))
        .collect()
}

/// The live nodes: the ownership candidates as the speakers see them.
pub fn live_nodes(records: &[SpeakerRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r.live)
        .map(|r| r.node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(name: &str, holder: &str, renewed: SystemTime, record: &str) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "namespace": "cairn-system",
                "annotations": {
                    INTERFACES_ANNOTATION: "eth0",
                    ANNOUNCING_ANNOTATION: record,
                },
            },
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 3,
                "renewTime": MicroTime(renewed.try_into().unwrap()),
            },
        }))
        .unwrap()
    }

    const RECORD: &str = r#"{"l2": {"192.0.2.200": ["eth0"]}}"#;

    #[test]
    fn a_held_unexpired_lease_is_live_and_announces_its_record() {
        let now = SystemTime::now();
        let record = speaker_record(&lease("cairn-speaker-n1", "n1", now, RECORD), now).unwrap();
        assert_eq!(record.node, "n1");
        assert!(record.live);
        assert_eq!(record.interfaces_up, BTreeSet::from(["eth0".to_string()]));
        assert_eq!(record.announcing.l2.len(), 1);
    }

    #[test]
    fn an_expired_or_released_lease_announces_nothing_whatever_its_record_says() {
        let now = SystemTime::now();
        let old = now - Duration::from_secs(4);
        for lease in [
            lease("cairn-speaker-n1", "n1", old, RECORD),
            lease("cairn-speaker-n1", "", now, RECORD),
        ] {
            let record = speaker_record(&lease, now).unwrap();
            assert!(!record.live);
            assert!(record.announcing.is_empty());
        }
    }

    #[test]
    fn an_unreadable_record_is_reported_not_trusted() {
        let now = SystemTime::now();
        let record =
            speaker_record(&lease("cairn-speaker-n1", "n1", now, "not json"), now).unwrap();
        assert!(record.live);
        assert!(record.announcing.is_empty());
        assert!(record.problem.is_some());
    }

    #[test]
    fn leases_of_other_components_are_not_speakers() {
        let now = SystemTime::now();
        assert!(speaker_record(&lease("cairn-allocator", "a", now, RECORD), now).is_none());
    }
}
