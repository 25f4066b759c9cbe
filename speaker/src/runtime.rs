//! The speaker's runtime: the announcing side of one node, wiring the pure core to the cluster
//! caches ([`crate::cluster`]), the lease driver ([`crate::lease_driver`]), `cairn-arp` and
//! `cairn-bgp`. [`run`] is what the `cairn-speaker` binary runs.
//!
//! A reconcile happens on any change of the cluster caches, of the [`MembershipView`], or of the
//! link state of the served L2 interfaces (and once a second while an action failed, to retry):
//! [`adapter::convert`] → [`announcements::desired`] → [`announcements::plan`], carried out in
//! three steps so that nothing is announced before what must go has gone:
//! 1. every withdrawal, L2 first (the planner's order);
//! 2. BGP sessions: stopped for BGPPeers gone or changed, started for new or changed ones
//!    ([`peers::changes`]); an unchanged peer is never touched;
//! 3. every announcement, planned again against what is now running.
//!
//! With the XDP data plane (`--dataplane xdp`), the node's [`XdpProgrammer`] gets the plan of
//! [`dataplane::plan_cluster`] before step 3, so that a VIP is forwarded before it is announced;
//! the programme does not depend on ownership (every node balances what reaches it and
//! decapsulates for its own endpoints), so self-fencing leaves it alone. Backend nodes whose MAC
//! is still being resolved make the reconcile run again at the next refresh.
//!
//! Each action done is recorded with [`Announcements::apply`]; an L2 announcement that fails is
//! not recorded and is retried. When [`MembershipView::may_announce`] turns false (self-fencing,
//! a stale watch, a release) the runtime withdraws everything at once, L2 first, without looking
//! at the cluster at all. That withdrawal is not what fences the node in time, though: the L2
//! announcer is handed to the lease driver's fence ([`LeaseDriver::spawn_with_fence`] on
//! [`L2Announcer::claim_deadline`]), so every claim frame is checked against the live fence
//! deadline at send time, even when this task runs late (after SIGSTOP). This node's own L2 interfaces come from the kernel's link events and
//! are published in its Lease for the other nodes; one counts as up while it is up in the kernel
//! and in the Lease as observed ([`usable_interfaces`]): down at once, up together with the
//! other nodes' view.
//!
//! After each reconcile: `nodeAssigned` Events for what changed ([`crate::events`]), the status
//! record on the Lease ([`crate::status`], only when it changed), metrics, and readiness
//! (caches synced and `may_announce`; the line `speaker ready` is logged when it turns true).
//! Invalid objects are logged once per change of the set of problems, never fatal.
//!
//! On shutdown: withdraw everything, release the Lease (peers take over on the watch event),
//! end the BGP sessions with a Cease, log `speaker stopped`.
//!
//! What it must not do: decide ownership itself (the core does), announce anything while
//! `may_announce` is false, reset a BGP session to change its prefixes, or crash on an invalid
//! object.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_arp::{ClaimDeadline, Claims, L2Announcer, LinkEvent};
use cairn_bgp::{LargeCommunity, PeerConfig, Peers, RouteAttrs, State};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::{broadcast, mpsc, watch};

use crate::adapter::{self, Converted};
use crate::announcements::{self, Action, Announcements};
use crate::cluster::{CacheStopped, Caches, ClusterState};
use crate::dataplane::{self, XdpProgrammer};
use crate::eligibility::{Community, RouteAttributes, Vip};
use crate::events::{self, Assignment, NODE_ASSIGNED, REPORTING_CONTROLLER};
use crate::lease::LeaseConfig;
use crate::lease_driver::{DriverConfig, DriverError, LeaseDriver, MembershipView};
use crate::membership::DEFAULT_JOIN_DELAY;
use crate::metrics::{AnnouncedKey, Health, Metrics, PeerFigures, Protocol};
use crate::peers::{self, LocalNode};
use crate::status::NodeStatus;

/// How often metrics and the status record are refreshed from the BGP sessions and the L2
/// counters, and failed actions retried.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a BGP session may take to send its Cease when it is stopped.
const SESSION_STOP_TIMEOUT: Duration = Duration::from_millis(500);

/// What the runtime needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name.
    pub node: String,
    /// The speaker's namespace: Leases, Cairn resources, BGP password Secrets.
    pub namespace: String,
    /// Services with another `spec.loadBalancerClass` are not announced.
    pub lb_class: String,
    /// The Lease keeper's tunables (holder identity: the pod name).
    pub lease: LeaseConfig,
    /// How long a node must be seen live before it becomes an ownership candidate.
    pub join_delay: Duration,
    /// How long the release of the Lease may take on shutdown.
    pub release_timeout: Duration,
}

impl Config {
    /// Defaults for `node` with holder identity `holder`: namespace `cairn-system`, class
    /// `cairn.io/lb`, [`LeaseConfig::new`], [`DEFAULT_JOIN_DELAY`], release within 1 s.
    pub fn new(node: impl Into<String>, holder: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            namespace: crate::membership::LEASE_NAMESPACE.to_string(),
            lb_class: cairn_api::annotations::DEFAULT_LOAD_BALANCER_CLASS.to_string(),
            lease: LeaseConfig::new(holder),
            join_delay: DEFAULT_JOIN_DELAY,
            release_timeout: Duration::from_secs(1),
        }
    }
}

/// Why the runtime stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The lease driver could not start.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A cache stopped before it synced.
    #[error(transparent)]
    Cache(#[from] CacheStopped),
    /// The lease driver stopped by itself; everything was withdrawn.
    #[error("the lease driver stopped; every announcement was withdrawn")]
    DriverStopped,
}

/// One running BGP session: its configuration and its own `cairn-bgp` speaker (one per peer,
/// so that each peer gets its own attributes for a prefix and can be reset alone).
struct Session {
    config: PeerConfig,
    speaker: cairn_bgp::Speaker,
}

/// Background tasks that end with the runtime.
struct TaskGuard(Vec<tokio::task::AbortHandle>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The announcing side's state.
struct Node {
    name: String,
    l2: Option<L2Announcer>,
    /// The XDP data plane, when the node forwards VIP packets itself.
    xdp: Option<XdpProgrammer>,
    /// XDP plan problems last logged.
    xdp_problems: BTreeSet<String>,
    /// The served L2 interfaces that are up, from the kernel.
    interfaces_up: BTreeSet<String>,
    /// BGPPeer name -> its session.
    sessions: BTreeMap<String, Session>,
    /// What is announced now.
    current: Announcements,
    /// The VIPs of the last full reconcile (for metrics and Events).
    vips: Vec<Vip>,
    /// Problems last logged.
    problems: BTreeSet<String>,
    /// The status record last handed to the lease driver.
    status: Option<NodeStatus>,
    /// An action failed: reconcile again at the next refresh.
    retry: bool,
    events: mpsc::UnboundedSender<(ObjectReference, String)>,
}

/// Runs the speaker of `config.node` until `shutdown` turns true (or its sender is dropped), then
/// withdraws everything and releases the Lease. `l2` is the announcer of the node's L2
/// interfaces (`None`: BGP only) and `xdp` the node's XDP data plane, loaded and attached
/// (`None`: the kernel delivers VIP packets); both must have been created in the node's network
/// namespace.
pub async fn run(
    client: Client,
    config: Config,
    l2: Option<L2Announcer>,
    xdp: Option<XdpProgrammer>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RuntimeError> {
    // The announcer claims nothing until the driver opens its gate (the Lease held and settled).
    let fence = l2.as_ref().map_or_else(
        || ClaimDeadline::new(Claims::Closed),
        L2Announcer::claim_deadline,
    );
    let driver = LeaseDriver::spawn_with_fence(
        client.clone(),
        DriverConfig {
            namespace: config.namespace.clone(),
            node: config.node.clone(),
            lease: config.lease.clone(),
            join_delay: config.join_delay,
        },
        fence,
    )?;
    let caches = Caches::start(&client, &config.namespace);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let publisher = tokio::spawn(publish_events(client, config.node.clone(), events_rx));
    let _guard = TaskGuard(vec![publisher.abort_handle()]);
    let mut node = Node {
        name: config.node.clone(),
        interfaces_up: BTreeSet::new(),
        l2,
        xdp,
        xdp_problems: BTreeSet::new(),
        sessions: BTreeMap::new(),
        current: Announcements::default(),
        vips: Vec::new(),
        problems: BTreeSet::new(),
        status: None,
        retry: false,
        events: events_tx,
    };
    // Subscribe before reading the link states, so no change between the two is missed.
    let mut links = node.l2.as_ref().map(L2Announcer::link_events);
    node.interfaces_up = node.local_interfaces_up();
    driver.set_interfaces_up(node.interfaces_up.clone());

    tokio::select! {
        synced = caches.wait_until_ready() => synced?,
        () = stop_requested(&mut shutdown) => {
            node.stop(driver, config.release_timeout).await;
            return Ok(());
        }
    }
    tracing::info!("caches synced");
    let changed = caches.changed();
    let mut view_rx = driver.view();
    let mut refresh = tokio::time::interval(REFRESH_INTERVAL);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let outcome = loop {
        let view = view_rx.borrow_and_update().clone();
        if dirty {
            dirty = false;
            node.reconcile(&view, &caches, &config).await;
        }
        node.refresh(&view, &driver, &metrics);
        let ready = view.may_announce;
        match (health.set_ready(ready), ready) {
            (false, true) => tracing::info!(node = %node.name, "speaker ready"),
            (true, false) => {
                tracing::warn!(node = %node.name, "speaker not ready: may not announce")
            }
            _ => {}
        }
        tokio::select! {
            biased;
            () = stop_requested(&mut shutdown) => break Ok(()),
            changed = view_rx.changed() => {
                if changed.is_err() {
                    break Err(RuntimeError::DriverStopped);
                }
                dirty = true;
            }
            link = next_link_event(&mut links) => {
                if link.is_none() {
                    links = None;
                }
                let up = node.local_interfaces_up();
                if up != node.interfaces_up {
                    tracing::info!(interfaces = ?up, "L2 interfaces up changed");
                    node.interfaces_up = up.clone();
                    driver.set_interfaces_up(up);
                    dirty = true;
                }
            }
            _ = changed.notified() => dirty = true,
            _ = refresh.tick() => dirty = node.retry,
        }
    };
    health.set_ready(false);
    node.stop(driver, config.release_timeout).await;
    outcome
}

/// Resolves once shutdown is asked for: `true` sent, or the sender dropped.
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // The guard the wait returns is not `Send`; it is dropped here.
    let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
}

/// The next link event; `None` once the announcer's link monitor is gone (and forever when
/// there is no announcer).
async fn next_link_event(links: &mut Option<broadcast::Receiver<LinkEvent>>) -> Option<()> {
    let Some(rx) = links.as_mut() else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        // A lagged receiver missed events: the caller reads the link states afresh anyway.
        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Some(()),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

async fn publish_events(
    client: Client,
    node: String,
    mut rx: mpsc::UnboundedReceiver<(ObjectReference, String)>,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: REPORTING_CONTROLLER.into(),
            instance: Some(node),
        },
    );
    while let Some((reference, note)) = rx.recv().await {
        let event = Event {
            type_: EventType::Normal,
            reason: NODE_ASSIGNED.into(),
            note: Some(note),
            action: "Announce".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
}

impl Node {
    fn local_interfaces_up(&self) -> BTreeSet<String> {
        self.l2
            .iter()
            .flat_map(L2Announcer::interfaces)
            .filter(|i| i.up)
            .map(|i| i.name)
            .collect()
    }

    async fn reconcile(&mut self, view: &MembershipView, caches: &Caches, config: &Config) {
        if !view.may_announce {
            // Self-fencing (or a stale watch, or a release): all of it goes, now.
            self.withdraw_all();
            return;
        }
        let state = caches.state(&config.lb_class);
        let mut interfaces = view.interfaces_up.clone();
        let own = usable_interfaces(&self.interfaces_up, interfaces.get(&self.name));
        interfaces.insert(self.name.clone(), own);
        let converted = adapter::convert(&state.objects(), &interfaces);
        let local = state
            .node(&self.name)
            .map(LocalNode::from_node)
            .unwrap_or_default();
        let wanted = peers::wanted(&converted.peers, &local, &state.secrets);
        self.log_problems(&converted, &wanted.problems, &state);
        let mut desired = announcements::desired(
            &converted.snapshot,
            &converted.vips,
            &self.name,
            view.may_announce,
            &view.candidates,
        );
        desired
            .bgp
            .retain(|peer, _| wanted.sessions.contains_key(peer));
        let before = self.current.clone();
        self.retry = false;
        // 1. Withdrawals, L2 first.
        for action in announcements::plan(&self.current, &desired) {
            if matches!(
                action,
                Action::L2Withdraw { .. } | Action::BgpWithdraw { .. }
            ) {
                self.execute(&action);
            }
        }
        // 2. Sessions.
        self.update_sessions(wanted.sessions).await;
        self.program_xdp(&state);
        // 3. Announcements.
        for action in announcements::plan(&self.current, &desired) {
            self.execute(&action);
        }
        for assignment in events::assignments(&self.name, &converted.vips, &before, &self.current) {
            self.raise(&assignment, &state);
        }
        self.vips = converted.vips;
    }

    /// Programs the XDP data plane (if any) from the cluster; a failure is logged and retried.
    fn program_xdp(&mut self, state: &ClusterState) {
        let Some(xdp) = self.xdp.as_mut() else {
            return;
        };
        let (plan, problems) = dataplane::plan_cluster(
            &self.name,
            &state.services,
            &state.endpoint_slices,
            &state.nodes,
        );
        let lines: BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
        for line in lines.difference(&self.xdp_problems) {
            tracing::warn!("XDP: {line}");
        }
        self.xdp_problems = lines;
        match xdp.apply(&plan) {
            // The programmer logs what it changed and which backends it left out.
            Ok(report) => self.retry |= !report.pending.is_empty(),
            Err(e) => {
                tracing::warn!(error = %e, "XDP programming failed; will retry");
                self.retry = true;
            }
        }
    }

    /// Withdraws everything, L2 first (the planner's order); sessions stay up.
    fn withdraw_all(&mut self) {
        for action in announcements::plan(&self.current, &Announcements::default()) {
            self.execute(&action);
        }
    }

    async fn update_sessions(&mut self, mut wanted: BTreeMap<String, PeerConfig>) {
        let running: BTreeMap<String, PeerConfig> = self
            .sessions
            .iter()
            .map(|(name, s)| (name.clone(), s.config.clone()))
            .collect();
        let changes = peers::changes(&running, &wanted);
        for name in &changes.stop {
            if let Some(session) = self.sessions.remove(name) {
                tracing::info!(peer = %name, address = %session.config.address, "stopping BGP session");
                stop_session(&session).await;
            }
            // The session's routes went with it.
            self.current.bgp.remove(name);
        }
        for name in &changes.start {
            let Some(config) = wanted.remove(name) else {
                continue;
            };
            let speaker = cairn_bgp::Speaker::new();
            match speaker.add_peer(config.clone()) {
                Ok(()) => {
                    tracing::info!(peer = %name, address = %config.address, "starting BGP session");
                    self.sessions
                        .insert(name.clone(), Session { config, speaker });
                }
                Err(e) => tracing::warn!(peer = %name, error = %e, "cannot start BGP session"),
            }
        }
    }

    /// Carries out one action and records it (a failed L2 announcement is not recorded).
    fn execute(&mut self, action: &Action) {
        match action {
            Action::L2Withdraw { vip, interface } => {
                if let Some(l2) = &self.l2 {
                    // The VIP is out of the responder's set even when leaving its multicast
                    // group fails, so the withdrawal counts as done either way.
                    if let Err(e) = l2.withdraw(interface, *vip) {
                        tracing::warn!(%vip, interface, error = %e, "L2 withdrawal incomplete");
                    }
                }
                tracing::info!(%vip, interface, "stopped announcing by L2");
            }
            Action::BgpWithdraw { peer, prefix } => {
                if let Some(session) = self.sessions.get(peer) {
                    session.speaker.withdraw(*prefix);
                }
                tracing::info!(%prefix, peer, "withdrew BGP route");
            }
            Action::L2Announce { vip, interface } => {
                let Some(l2) = &self.l2 else {
                    // Without an announcer no interface is up, so no L2 grant reaches here.
                    tracing::warn!(%vip, interface, "no L2 announcer on this node");
                    return;
                };
                if let Err(e) = l2.announce(interface, *vip) {
                    tracing::warn!(%vip, interface, error = %e, "L2 announcement failed; will retry");
                    self.retry = true;
                    return;
                }
                tracing::info!(%vip, interface, "announcing by L2");
            }
            Action::BgpAnnounce {
                peer,
                prefix,
                attributes,
            } => {
                let Some(session) = self.sessions.get(peer) else {
                    return;
                };
                session
                    .speaker
                    .announce(*prefix, route_attrs(attributes), Peers::All);
                tracing::info!(%prefix, peer, "announcing by BGP");
            }
        }
        self.current.apply(action);
    }

    fn raise(&self, assignment: &Assignment, state: &ClusterState) {
        for key in &assignment.services {
            let reference = match state.service(&key.namespace, &key.name) {
                Some(svc) => svc.object_ref(&()),
                None => ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Service".into()),
                    namespace: Some(key.namespace.clone()),
                    name: Some(key.name.clone()),
                    ..ObjectReference::default()
                },
            };
            tracing::debug!(service = %key, "{}", assignment.note);
            // A send error means the publisher stopped with the runtime.
            let _ = self.events.send((reference, assignment.note.clone()));
        }
    }

    fn log_problems(
        &mut self,
        converted: &Converted,
        peer_problems: &BTreeMap<String, peers::PeerProblem>,
        state: &ClusterState,
    ) {
        let mut now = problem_lines(converted, peer_problems);
        if state.node(&self.name).is_none() {
            now.insert(format!(
                "Node {}: not found; this node is not eligible for any VIP",
                self.name
            ));
        }
        for line in now.difference(&self.problems) {
            tracing::warn!("skipped: {line}");
        }
        for line in self.problems.difference(&now) {
            tracing::info!("resolved: {line}");
        }
        self.problems = now;
    }

    /// Metrics and the status record, from the sessions' and the announcer's current figures.
    fn refresh(&mut self, view: &MembershipView, driver: &LeaseDriver, metrics: &Metrics) {
        let stats: BTreeMap<String, cairn_bgp::PeerStats> = self
            .sessions
            .iter()
            .filter_map(|(name, s)| {
                let stats = s.speaker.peer_stats().into_iter().next()?;
                Some((name.clone(), stats))
            })
            .collect();
        let figures = stats
            .iter()
            .map(|(name, s)| {
                let f = PeerFigures {
                    up: s.session.state == State::Established,
                    prefixes: s.session.prefixes_advertised,
                    updates_sent: s.session.updates_out,
                };
                (name.clone(), f)
            })
            .collect();
        metrics.observe_bgp(&figures);
        if let Some(l2) = &self.l2 {
            metrics.observe_l2(&l2.counters());
        }
        metrics.observe_membership(view.live_nodes.len(), view.renew_failures);
        metrics.set_invalid_objects(self.problems.len());
        metrics.set_announced(announced_keys(&self.vips, &self.current));
        let sessions = stats
            .iter()
            .map(|(name, s)| (name.clone(), format!("{:?}", s.session.state)))
            .collect();
        let status = NodeStatus::from_announcements(&self.current, &sessions);
        if self.status.as_ref() != Some(&status) {
            driver.set_status(status.clone());
            self.status = Some(status);
        }
    }

    /// Withdraws everything, releases the Lease, ends the sessions.
    async fn stop(mut self, driver: LeaseDriver, release_timeout: Duration) {
        self.withdraw_all();
        driver.set_status(NodeStatus::default());
        match driver.release(release_timeout).await {
            Ok(()) => tracing::info!("lease released"),
            Err(e) => tracing::warn!(error = %e, "lease not released"),
        }
        let sessions = std::mem::take(&mut self.sessions);
        futures::future::join_all(sessions.values().map(stop_session)).await;
        tracing::info!(node = %self.name, "speaker stopped");
    }
}

async fn stop_session(session: &Session) {
    if tokio::time::timeout(SESSION_STOP_TIMEOUT, session.speaker.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(address = %session.config.address, "BGP session did not end in time");
    }
}

/// The interfaces this node counts as up for L2 ownership: up in the kernel *and* published in
/// its observed Lease. A link that goes down stops counting at once; one that comes up counts
/// only once the other nodes can see it in the Lease too, so that the node that was covering for
/// it and this one move on the same watch event.
pub fn usable_interfaces(
    local: &BTreeSet<String>,
    published: Option<&BTreeSet<String>>,
) -> BTreeSet<String> {
    match published {
        Some(published) => local.intersection(published).cloned().collect(),
        None => BTreeSet::new(),
    }
}

/// The `cairn-bgp` attributes of a route.
pub fn route_attrs(attributes: &RouteAttributes) -> RouteAttrs {
    let mut attrs = RouteAttrs {
        local_pref: attributes.local_pref,
        ..RouteAttrs::default()
    };
    for community in &attributes.communities {
        match *community {
            Community::Standard(asn, value) => attrs
                .communities
                .push(u32::from(asn) << 16 | u32::from(value)),
            Community::Large(global, local1, local2) => {
                attrs.large_communities.push(LargeCommunity {
                    global,
                    local1,
                    local2,
                })
            }
        }
    }
    attrs
}

/// (Service, VIP, protocol) for everything announced: L2 when the VIP is on an interface, BGP
/// when a prefix covering it goes to any peer.
pub fn announced_keys(vips: &[Vip], current: &Announcements) -> BTreeSet<AnnouncedKey> {
    let mut out = BTreeSet::new();
    for vip in vips {
        let l2 = current.l2.contains_key(&vip.ip);
        let bgp = current
            .bgp
            .values()
            .any(|prefixes| prefixes.keys().any(|p| p.contains(&vip.ip)));
        for service in &vip.services {
            for (on, protocol) in [(l2, Protocol::L2), (bgp, Protocol::Bgp)] {
                if on {
                    out.insert((service.key.to_string(), vip.ip, protocol));
                }
            }
        }
    }
    out
}

/// One line per skipped object, pool conflict and BGPPeer without a session.
pub fn problem_lines(
    converted: &Converted,
    peer_problems: &BTreeMap<String, peers::PeerProblem>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in &converted.problems {
        let name = match &p.object.namespace {
            Some(ns) => format!("{ns}/{}", p.object.name),
            None => p.object.name.clone(),
        };
        out.insert(format!("{} {name}: {}", p.object.kind, p.error));
    }
    for c in &converted.pool_conflicts {
        let services: Vec<String> = c.services.iter().map(ToString::to_string).collect();
        out.insert(format!(
            "address {}: Services {} disagree on the pool ({}); not announced",
            c.ip,
            services.join(", "),
            c.pools.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    for (peer, problem) in peer_problems {
        out.insert(format!("BGPPeer {peer}: {problem}; no session"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{AdapterError, ObjectRef, Problem};
    use crate::eligibility::PoolConflict;
    use crate::endpoints::ServiceKey;
    use ipnet::IpNet;
    use std::net::IpAddr;

    fn vip(ip: &str, services: &[&str]) -> Vip {
        Vip::shared_by(ip, services)
    }

    fn names(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_interface_counts_when_up_locally_and_published_down_at_once_up_once_observed() {
        let published = names(&["eth0", "eth1"]);
        assert_eq!(
            usable_interfaces(&names(&["eth0"]), Some(&published)),
            names(&["eth0"]),
            "eth1 went down: gone before the Lease says so"
        );
        assert_eq!(
            usable_interfaces(&names(&["eth0", "eth1", "eth2"]), Some(&published)),
            published,
            "eth2 came up: not yet, the Lease does not show it"
        );
        assert!(usable_interfaces(&names(&["eth0"]), None).is_empty());
    }

    #[test]
    fn communities_and_local_pref_reach_the_bgp_attributes() {
        let attributes = RouteAttributes {
            communities: [
                Community::Standard(65535, 65281),
                Community::Large(64512, 1, 2),
            ]
            .into(),
            local_pref: Some(200),
        };
        let attrs = route_attrs(&attributes);
        assert_eq!(attrs.communities, vec![0xFFFF_FF01]);
        assert_eq!(
            attrs.large_communities,
            vec![LargeCommunity {
                global: 64512,
                local1: 1,
                local2: 2
            }]
        );
        assert_eq!(attrs.local_pref, Some(200));
        assert_eq!(attrs.next_hop, None, "next hop self");
    }

    #[test]
    fn every_service_sharing_a_vip_is_counted_per_protocol() {
        let vips = [vip("192.0.2.7", &["a", "b"]), vip("203.0.113.9", &["c"])];
        let mut current = Announcements::default();
        current.l2.insert(
            "192.0.2.7".parse().expect("ip"),
            ["eth0".to_string()].into(),
        );
        let aggregate: IpNet = "203.0.113.0/24".parse().expect("net");
        current
            .bgp
            .entry("tor".into())
            .or_default()
            .insert(aggregate, RouteAttributes::default());
        let keys = announced_keys(&vips, &current);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            keys,
            [
                ("web/a".to_string(), ip("192.0.2.7"), Protocol::L2),
                ("web/b".to_string(), ip("192.0.2.7"), Protocol::L2),
                ("web/c".to_string(), ip("203.0.113.9"), Protocol::Bgp),
            ]
            .into()
        );
    }

    #[test]
    fn problems_name_the_object_and_say_why() {
        let converted = Converted {
            problems: vec![Problem {
                object: ObjectRef {
                    kind: "Service",
                    namespace: Some("web".into()),
                    name: "s".into(),
                },
                error: AdapterError::MissingAllocatedPool,
            }],
            pool_conflicts: vec![PoolConflict {
                ip: "192.0.2.9".parse().expect("ip"),
                pools: ["a".to_string(), "b".to_string()].into(),
                services: vec![ServiceKey::new("web", "x"), ServiceKey::new("web", "y")],
            }],
            ..Converted::default()
        };
        let peer_problems = [(
            "tor".to_string(),
            peers::PeerProblem::MissingSecret {
                secret: "bgp-auth".into(),
            },
        )]
        .into();
        let lines: Vec<String> = problem_lines(&converted, &peer_problems)
            .into_iter()
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("BGPPeer tor: password Secret \"bgp-auth\" not found"));
        assert!(lines[1].starts_with("Service web/s: annotation"));
        assert!(lines[2].starts_with("address 192.0.2.9: Services web/x, web/y disagree"));
    }
}
