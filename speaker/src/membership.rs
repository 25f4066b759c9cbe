//! Which speakers are live, from the speaker Leases (`cairn-speaker-<node>` in `cairn-system`).
//!
//! A peer is live while `now < observed_at + lease duration`, where `observed_at` is the local
//! monotonic time at which this speaker last observed a *change* of the peer's Lease (a new
//! `resourceVersion`). The peer's wall-clock `renewTime` is never compared with our clock: clocks
//! of different machines disagree, while "I saw it change n seconds ago" only needs our own
//! monotonic clock. A Lease whose holder is cleared (graceful release) or that is deleted makes
//! its node not live at once. A re-list after a watch restart delivers unchanged Leases with their
//! old `resourceVersion`; those do not count as renewals.
//!
//! **Joining.** A node that becomes live is an ownership candidate only once it has been seen live
//! for the join delay ([`Membership::candidates`]). The joiner itself waits its settle period
//! ([`crate::lease::LeaseConfig::settle`]) before claiming anything; with
//! `join delay ≤ settle − watch delay`, the current owner stops before the joiner starts, so a
//! VIP moving to a (re)joining node is never announced twice. The defaults (join delay 500 ms,
//! settle 1 s) tolerate a watch delay of up to 500 ms, the same bound self-fencing needs.
//!
//! This module is fed by the driver's Lease watch and does no IO itself. Poll order for a driver:
//! after any input, re-read [`Membership::candidates`]; sleep until [`Membership::poll_timeout`],
//! the next moment a peer expires or becomes a candidate, and re-read then.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::time::Instant;

/// The namespace of the speaker Leases.
pub const LEASE_NAMESPACE: &str = "cairn-system";

/// The prefix of a speaker Lease's name; the node name follows it.
pub const LEASE_PREFIX: &str = "cairn-speaker-";

/// The Lease annotation where a speaker publishes its L2 interfaces that are up, comma separated
/// and sorted, so peers can tell whether it is L2-eligible.
pub const INTERFACES_ANNOTATION: &str = "cairn.io/l2-interfaces-up";

/// The default join delay (see the module docs).
pub const DEFAULT_JOIN_DELAY: Duration = Duration::from_millis(500);

/// The name of `node`'s speaker Lease.
pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

/// The node a speaker Lease belongs to, or `None` for a Lease that is not a speaker Lease.
pub fn node_of_lease(lease_name: &str) -> Option<&str> {
    lease_name
        .strip_prefix(LEASE_PREFIX)
        .filter(|node| !node.is_empty())
}

/// Formats an interface set for [`INTERFACES_ANNOTATION`].
pub fn format_interfaces(interfaces: &BTreeSet<String>) -> String {
    interfaces
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`INTERFACES_ANNOTATION`]; blanks are skipped, so a missing or empty annotation means
/// no interface up.
pub fn parse_interfaces(annotation: &str) -> BTreeSet<String> {
    annotation
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// One observed state of a speaker Lease, as a watch event or list item carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseObservation {
    /// `metadata.name`.
    pub name: String,
    /// `spec.holderIdentity` (`None` or empty: released).
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds` (`None`, zero or negative: the lease never counts as live).
    pub duration: Option<Duration>,
    /// `metadata.resourceVersion`: a different value means the Lease was written again.
    pub resource_version: String,
    /// The interfaces published in [`INTERFACES_ANNOTATION`].
    pub interfaces_up: BTreeSet<String>,
}

/// What membership remembers of a peer's Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerLease {
    /// The current holder (a speaker pod), `None` when released.
    pub holder: Option<String>,
    /// The lease duration last published.
    pub duration: Option<Duration>,
    /// The last `resourceVersion` seen.
    pub resource_version: String,
    /// Local time the last change was observed.
    pub observed_at: Instant,
    /// Local time the lease was last seen going from not live to live.
    pub live_since: Instant,
    /// The interfaces the peer last published as up.
    pub interfaces_up: BTreeSet<String>,
}

impl PeerLease {
    /// When this lease stops counting as live, or `None` if it does not count at all.
    pub fn expires_at(&self) -> Option<Instant> {
        self.holder.as_ref()?;
        let d = self.duration.filter(|d| !d.is_zero())?;
        Some(self.observed_at + d)
    }

    /// Whether the lease counts as live at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|e| now < e)
    }
}

/// An input that is not a speaker Lease.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The Lease's name does not start with [`LEASE_PREFIX`] followed by a node name.
    #[error("lease {0:?} is not a speaker lease (expected {LEASE_PREFIX}<node>)")]
    NotASpeakerLease(String),
}

/// The live-node tracker: node -> last observed Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    join_delay: Duration,
    peers: BTreeMap<String, PeerLease>,
}

impl Default for Membership {
    fn default() -> Self {
        Self::new(DEFAULT_JOIN_DELAY)
    }
}

impl Membership {
    /// An empty tracker (nobody live) whose nodes become candidates `join_delay` after they are
    /// first seen live.
    pub fn new(join_delay: Duration) -> Self {
        Self {
            join_delay,
            peers: BTreeMap::new(),
        }
    }

    /// Records a Lease seen at `now` (watch ADDED/MODIFIED or a list item). A new
    /// `resourceVersion` restarts the peer's expiry clock; the same one changes nothing. A cleared
    /// holder makes the node not live at once.
    pub fn observe(
        &mut self,
        now: Instant,
        lease: LeaseObservation,
    ) -> Result<(), MembershipError> {
        let Some(node) = node_of_lease(&lease.name) else {
            return Err(MembershipError::NotASpeakerLease(lease.name));
        };
        let holder = lease.holder.filter(|h| !h.is_empty());
        match self.peers.get_mut(node) {
            Some(peer) if peer.resource_version == lease.resource_version => {}
            Some(peer) => {
                let was_live = peer.is_live(now);
                peer.holder = holder;
                peer.duration = lease.duration;
                peer.resource_version = lease.resource_version;
                peer.observed_at = now;
                peer.interfaces_up = lease.interfaces_up;
                if !was_live {
                    peer.live_since = now;
                }
            }
            None => {
                self.peers.insert(
                    node.to_string(),
                    PeerLease {
                        holder,
                        duration: lease.duration,
                        resource_version: lease.resource_version,
                        observed_at: now,
                        live_since: now,
                        interfaces_up: lease.interfaces_up,
                    },
                );
            }
        }
        Ok(())
    }

    /// Records that a Lease was deleted: its node is not live from now on.
    pub fn deleted(&mut self, lease_name: &str) -> Result<(), MembershipError> {
        let Some(node) = node_of_lease(lease_name) else {
            return Err(MembershipError::NotASpeakerLease(lease_name.to_string()));
        };
        self.peers.remove(node);
        Ok(())
    }

    /// Replaces the whole view with a fresh list (after a watch restart or 410 Gone): Leases
    /// missing from the list are deleted; the others are observed as by [`Self::observe`], so an
    /// unchanged `resourceVersion` keeps its old observation time. Items that are not speaker
    /// Leases are skipped and returned as errors.
    pub fn relist(
        &mut self,
        now: Instant,
        leases: impl IntoIterator<Item = LeaseObservation>,
    ) -> Vec<MembershipError> {
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for lease in leases {
            if let Some(node) = node_of_lease(&lease.name) {
                seen.insert(node.to_string());
            }
            if let Err(e) = self.observe(now, lease) {
                errors.push(e);
            }
        }
        self.peers.retain(|node, _| seen.contains(node));
        errors
    }

    /// The nodes live at `now`.
    pub fn live_nodes(&self, now: Instant) -> BTreeSet<String> {
        self.peers
            .iter()
            .filter(|(_, p)| p.is_live(now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The nodes that may own VIPs at `now`: live, and seen live for at least the join delay.
    pub fn candidates(&self, now: Instant) -> BTreeSet<String> {
        self.peers
            .iter()
            .filter(|(_, p)| p.is_live(now) && now >= p.live_since + self.join_delay)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether `node` is live at `now`.
    pub fn is_live(&self, node: &str, now: Instant) -> bool {
        self.peers.get(node).is_some_and(|p| p.is_live(now))
    }

    /// What is known of `node`'s Lease.
    pub fn peer(&self, node: &str) -> Option<&PeerLease> {
        self.peers.get(node)
    }

    /// The next moment after `now` at which a live peer expires or becomes a candidate.
    #[must_use]
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| p.is_live(now))
            .flat_map(|p| [p.expires_at(), Some(p.live_since + self.join_delay)])
            .flatten()
            .filter(|e| *e > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    fn obs(node: &str, holder: Option<&str>, rv: &str) -> LeaseObservation {
        LeaseObservation {
            name: lease_name(node),
            holder: holder.map(str::to_string),
            duration: Some(Duration::from_secs(3)),
            resource_version: rv.to_string(),
            interfaces_up: BTreeSet::new(),
        }
    }

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lease_names_map_to_nodes_and_back() {
        assert_eq!(lease_name("n1"), "cairn-speaker-n1");
        assert_eq!(node_of_lease("cairn-speaker-n1"), Some("n1"));
        assert_eq!(node_of_lease("cairn-speaker-"), None);
        assert_eq!(node_of_lease("kube-scheduler"), None);
    }

    #[test]
    fn a_foreign_lease_is_an_error_and_changes_nothing() {
        let mut m = Membership::default();
        let mut foreign = obs("x", Some("p"), "1");
        foreign.name = "kube-controller-manager".into();
        assert_eq!(
            m.observe(at(0), foreign),
            Err(MembershipError::NotASpeakerLease(
                "kube-controller-manager".into()
            ))
        );
        assert!(m.live_nodes(at(0)).is_empty());
        assert!(m.deleted("other").is_err());
    }

    #[test]
    fn a_peer_is_live_until_its_duration_after_the_observed_change() {
        let mut m = Membership::default();
        m.observe(at(1000), obs("n1", Some("pod-1"), "1")).unwrap();
        assert!(m.is_live("n1", at(1000)));
        assert!(m.is_live("n1", at(3999)));
        assert!(!m.is_live("n1", at(4000)));
        assert_eq!(m.poll_timeout(at(1500)), Some(at(4000)));
        assert_eq!(m.poll_timeout(at(4000)), None);
    }

    #[test]
    fn a_node_becomes_a_candidate_once_seen_live_for_the_join_delay() {
        let mut m = Membership::default();
        m.observe(at(1000), obs("n1", Some("pod-1"), "1")).unwrap();
        assert_eq!(m.poll_timeout(at(1000)), Some(at(1500)));
        assert!(m.candidates(at(1499)).is_empty());
        assert_eq!(m.candidates(at(1500)), set(&["n1"]));
        // Renewals do not restart the join delay.
        m.observe(at(2000), obs("n1", Some("pod-1"), "2")).unwrap();
        assert_eq!(m.candidates(at(2000)), set(&["n1"]));
    }

    #[test]
    fn a_node_that_comes_back_after_expiring_waits_the_join_delay_again() {
        let mut m = Membership::default();
        m.observe(at(0), obs("n1", Some("pod-1"), "1")).unwrap();
        assert_eq!(m.candidates(at(2000)), set(&["n1"]));
        m.observe(at(5000), obs("n1", Some("pod-1"), "2")).unwrap();
        assert!(m.is_live("n1", at(5000)));
        assert!(m.candidates(at(5499)).is_empty());
        assert_eq!(m.candidates(at(5500)), set(&["n1"]));
        // Same after a release and a new holder.
        m.observe(at(6000), obs("n1", None, "3")).unwrap();
        m.observe(at(6100), obs("n1", Some("pod-2"), "4")).unwrap();
        assert!(m.candidates(at(6599)).is_empty());
        assert_eq!(m.candidates(at(6600)), set(&["n1"]));
    }

    #[test]
    fn a_new_resource_version_restarts_the_expiry_clock() {
        let mut m = Membership::default();
        m.observe(at(0), obs("n1", Some("pod-1"), "1")).unwrap();
        m.observe(at(2000), obs("n1", Some("pod-1"), "2")).unwrap();
        assert!(m.is_live("n1", at(4999)));
        assert!(!m.is_live("n1", at(5000)));
    }

    #[test]
    fn seeing_the_same_resource_version_again_is_not_a_renewal() {
        let mut m = Membership::default();
        m.observe(at(0), obs("n1", Some("pod-1"), "1")).unwrap();
        m.observe(at(2500), obs("n1", Some("pod-1"), "1")).unwrap();
        assert!(!m.is_live("n1", at(3000)));
    }

    #[test]
    fn a_released_lease_makes_the_node_not_live_at_once() {
        let mut m = Membership::default();
        m.observe(at(0), obs("n1", Some("pod-1"), "1")).unwrap();
        m.observe(at(10), obs("n1", None, "2")).unwrap();
        assert!(!m.is_live("n1", at(10)));
        assert_eq!(m.poll_timeout(at(10)), None);
        // An empty holder string is a release too (what client-go writes).
        m.observe(at(20), obs("n1", Some("pod-1"), "3")).unwrap();
        assert!(m.is_live("n1", at(20)));
        m.observe(at(30), obs("n1", Some(""), "4")).unwrap();
        assert!(!m.is_live("n1", at(30)));
    }

    #[test]
    fn a_deleted_lease_makes_the_node_not_live_at_once() {
        let mut m = Membership::default();
        m.observe(at(0), obs("n1", Some("pod-1"), "1")).unwrap();
        m.deleted(&lease_name("n1")).unwrap();
        assert!(!m.is_live("n1", at(0)));
        assert!(m.peer("n1").is_none());
    }

    #[test]
    fn a_lease_without_a_positive_duration_never_counts_as_live() {
        let mut m = Membership::default();
        let mut o = obs("n1", Some("pod-1"), "1");
        o.duration = None;
        m.observe(at(0), o.clone()).unwrap();
        assert!(!m.is_live("n1", at(0)));
        o.duration = Some(Duration::ZERO);
        o.resource_version = "2".into();
        m.observe(at(0), o).unwrap();
        assert!(!m.is_live("n1", at(0)));
    }

    #[test]
    fn relist_drops_missing_leases_and_keeps_old_observation_times() {
        let mut m = Membership::default();
        m.observe(at(0), obs("n1", Some("pod-1"), "1")).unwrap();
        m.observe(at(0), obs("n2", Some("pod-2"), "5")).unwrap();
        let errors = m.relist(
            at(2000),
            [obs("n1", Some("pod-1"), "1"), obs("n3", Some("pod-3"), "9")],
        );
        assert!(errors.is_empty());
        assert_eq!(m.live_nodes(at(2000)), set(&["n1", "n3"]));
        // n1 was not renewed: it still expires 3 s after the first observation.
        assert_eq!(m.live_nodes(at(3000)), set(&["n3"]));
    }

    #[test]
    fn published_interfaces_follow_the_latest_change() {
        let mut m = Membership::default();
        let mut o = obs("n1", Some("pod-1"), "1");
        o.interfaces_up = parse_interfaces("eth0, eth1,");
        m.observe(at(0), o).unwrap();
        assert_eq!(m.peer("n1").unwrap().interfaces_up, set(&["eth0", "eth1"]));
        assert_eq!(format_interfaces(&set(&["eth1", "eth0"])), "eth0,eth1");
        assert!(parse_interfaces("").is_empty());
    }

    proptest! {
        /// Whatever the order and timing of renewals, a peer is live exactly while the last
        /// distinct resourceVersion was observed less than a duration ago.
        #[test]
        fn liveness_is_judged_from_the_last_observed_change(
            events in proptest::collection::vec((0u64..5000, 0u8..4), 1..30),
            probe in 0u64..5000,
        ) {
            let mut m = Membership::default();
            let mut now = 0u64;
            let mut last_rv: Option<u8> = None;
            let mut last_change = 0u64;
            for (step, rv) in &events {
                now += step;
                m.observe(at(now), obs("n1", Some("pod-1"), &rv.to_string())).unwrap();
                if last_rv != Some(*rv) {
                    last_rv = Some(*rv);
                    last_change = now;
                }
            }
            let t = now + probe;
            prop_assert_eq!(m.is_live("n1", at(t)), t < last_change + 3000);
        }
    }
}
