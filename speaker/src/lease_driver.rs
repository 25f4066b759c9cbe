//! The thin tokio + kube driver of [`LeaseKeeper`] and [`Membership`]: it keeps this node's Lease
//! `cairn-speaker-<node>` and watches every speaker Lease in the namespace, and publishes what
//! the announcing side needs as a [`MembershipView`] on a `watch` channel.
//!
//! - Lease writes follow the keeper (DESIGN.md, "Leases"): `create`, or `replace` carrying the
//!   `resourceVersion` read. Kubernetes answers map onto [`Response`]: 409 → `Conflict`; 404 on
//!   `replace` (the Lease was deleted) → `Conflict`, so the keeper reads again; 404 on `get` →
//!   absent; anything else (connection errors, 5xx, 403, a 404 on `create` because the namespace
//!   is missing) → `Failed`. The keeper's own request timeout abandons a hanging request (its
//!   future is dropped).
//! - Membership is fed from kube-runtime's `watcher` on all Leases of the namespace, those named
//!   `cairn-speaker-<node>` kept (the namespace may hold other Leases). Every event is stamped
//!   with the driver's monotonic clock ([`crate::time::Instant`] counted from the driver's
//!   start); a re-list goes through [`Membership::relist`].
//! - [`MembershipView::may_announce`] is the keeper's self-fencing verdict *and* a healthy
//!   watch: from a watch error until the next event that proves the watch works again, this
//!   node's picture of its peers may be stale (a peer it believes dead may be renewing), so it
//!   does not announce.
//!
//! - The keeper's fence deadline is also published on a [`ClaimDeadline`] (a shared atomic, not
//!   the view, whose changes trigger reconciles): `Until(deadline)` as a `std::time::Instant`
//!   while the keeper lets this node announce, `Closed` otherwise (not yet held, settling,
//!   fenced, releasing). It moves on every successful renewal, is written before the view that
//!   says `may_announce` (so the first burst is not refused) and closes by itself when the
//!   deadline passes, whether or not this task runs: the L2 announcer checks it before every
//!   frame that claims a VIP, which makes self-fencing independent of task scheduling (a process
//!   resumed after SIGSTOP answers nothing before it has renewed again).
//!
//! - The node's [`NodeStatus`] record ([`crate::status`]) rides on the Lease writes the keeper
//!   makes anyway: [`LeaseDriver::set_status`] changes what the next renewal carries, never
//!   causes a write of its own.
//!
//! What it must not do: decide ownership or announce anything (the caller does, from the view),
//! compare anyone's wall-clock `renewTime`, or write a Lease without a `resourceVersion`
//! precondition (other than `create`).

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use cairn_arp::{ClaimDeadline, Claims};

use crate::adapter::{lease_from_spec, lease_object, lease_observation};
use crate::lease::{ConfigError, LeaseConfig, LeaseKeeper, Request, RequestId, Response};
use crate::membership::{
    lease_name, node_of_lease, LeaseObservation, Membership, DEFAULT_JOIN_DELAY, LEASE_NAMESPACE,
};
use crate::status::{NodeStatus, ANNOUNCING_ANNOTATION};
use crate::time::Instant;

/// What the driver needs to run.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The namespace of the speaker Leases (normally [`LEASE_NAMESPACE`]).
    pub namespace: String,
    /// This node's name; the Lease is `cairn-speaker-<node>`.
    pub node: String,
    /// The keeper's tunables (holder identity: the pod name).
    pub lease: LeaseConfig,
    /// How long a node must be seen live before it becomes an ownership candidate
    /// ([`DEFAULT_JOIN_DELAY`]).
    pub join_delay: Duration,
}

impl DriverConfig {
    /// The defaults: namespace [`LEASE_NAMESPACE`], [`LeaseConfig::new`]`(holder)` and
    /// [`DEFAULT_JOIN_DELAY`].
    pub fn new(node: impl Into<String>, holder: impl Into<String>) -> Self {
        Self {
            namespace: LEASE_NAMESPACE.to_string(),
            node: node.into(),
            lease: LeaseConfig::new(holder),
            join_delay: DEFAULT_JOIN_DELAY,
        }
    }
}

/// What the announcing side reads; a new value is published whenever any field changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipView {
    /// This node may announce: it holds its Lease, is not fenced, has settled, is not releasing,
    /// and its Lease watch is healthy.
    pub may_announce: bool,
    /// The Lease watch has delivered a complete list and no error since its last event.
    pub watch_healthy: bool,
    /// Nodes whose speaker Lease is live (this node included once its Lease is observed).
    pub live_nodes: BTreeSet<String>,
    /// Live nodes seen live for the join delay: the nodes ownership is computed over.
    pub candidates: BTreeSet<String>,
    /// node -> L2 interfaces it published as up, for every live node.
    pub interfaces_up: BTreeMap<String, BTreeSet<String>>,
    /// Lease requests that failed or were abandoned after the request timeout, since the start
    /// (`cairn_lease_renew_failures_total`).
    pub renew_failures: u64,
}

/// Why the driver cannot start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The lease configuration cannot give the fencing guarantee.
    #[error("lease configuration: {0}")]
    Config(#[from] ConfigError),
    /// The node name is empty.
    #[error("the node name must not be empty")]
    EmptyNode,
}

/// Why [`LeaseDriver::release`] did not confirm the release.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// The clearing write did not succeed in time (the API server is unreachable?); peers will
    /// see the Lease expire instead.
    #[error("the lease was not released within {0:?}; peers will see it expire instead")]
    TimedOut(Duration),
    /// The driver task had already stopped.
    #[error("the lease driver had stopped")]
    Stopped,
}

enum Command {
    SetInterfaces(BTreeSet<String>),
    SetStatus(NodeStatus),
    Release(oneshot::Sender<()>),
}

/// A running driver. Dropping it aborts the task without releasing the Lease (as a crash
/// would); call [`LeaseDriver::release`] on a graceful shutdown.
pub struct LeaseDriver {
    view: watch::Receiver<MembershipView>,
    fence: ClaimDeadline,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl LeaseDriver {
    /// Starts keeping this node's Lease and watching its peers' on the current tokio runtime,
    /// with a claim gate of its own ([`LeaseDriver::fence`]).
    pub fn spawn(client: Client, config: DriverConfig) -> Result<Self, DriverError> {
        Self::spawn_with_fence(client, config, ClaimDeadline::new(Claims::Closed))
    }

    /// [`LeaseDriver::spawn`], publishing the fence deadline on `fence` (typically the L2
    /// announcer's [`cairn_arp::L2Announcer::claim_deadline`]); it is closed at once and opens
    /// when the keeper lets this node announce.
    pub fn spawn_with_fence(
        client: Client,
        config: DriverConfig,
        fence: ClaimDeadline,
    ) -> Result<Self, DriverError> {
        if config.node.is_empty() {
            return Err(DriverError::EmptyNode);
        }
        let keeper = LeaseKeeper::new(config.lease.clone())?;
        let (view_tx, view) = watch::channel(MembershipView::default());
        let (commands, commands_rx) = mpsc::unbounded_channel();
        fence.set(None);
        let task = tokio::spawn(run(
            client,
            config,
            keeper,
            view_tx,
            fence.clone(),
            commands_rx,
        ));
        Ok(Self {
            view,
            fence,
            commands,
            task,
        })
    }

    /// A receiver of the current view and its changes.
    pub fn view(&self) -> watch::Receiver<MembershipView> {
        self.view.clone()
    }

    /// The claim gate the driver publishes its fence deadline on (see the module docs).
    pub fn fence(&self) -> ClaimDeadline {
        self.fence.clone()
    }

    /// Publishes the L2 interfaces up on this node in the Lease (written at once if changed).
    pub fn set_interfaces_up(&self, interfaces: BTreeSet<String>) {
        // A send error means the task stopped; there is nothing left to update.
        let _ = self.commands.send(Command::SetInterfaces(interfaces));
    }

    /// Sets the status record the next Lease renewals carry (at most one renew interval later;
    /// no write of its own).
    pub fn set_status(&self, status: NodeStatus) {
        // A send error means the task stopped; there is nothing left to update.
        let _ = self.commands.send(Command::SetStatus(status));
    }

    /// Graceful shutdown: `may_announce` turns false at once, then the holder is cleared with a
    /// conditional write, so peers take over on the watch event instead of at expiry. Call it
    /// after withdrawing every announcement. Gives up after `timeout`; the task stops either way.
    pub async fn release(self, timeout: Duration) -> Result<(), ReleaseError> {
        let (done, released) = oneshot::channel();
        self.commands
            .send(Command::Release(done))
            .map_err(|_| ReleaseError::Stopped)?;
        match tokio::time::timeout(timeout, released).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ReleaseError::Stopped),
            Err(_) => Err(ReleaseError::TimedOut(timeout)),
        }
    }
}

impl Drop for LeaseDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch retry delays: 100 ms doubling to 2 s, so the watch (and with it announcing) recovers
/// within about 2 s of the API server coming back.
struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(WATCH_BACKOFF_MAX);
        Some(d)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_FIRST;
    }
}

type LeaseEvents = Pin<Box<dyn Stream<Item = Result<Event<Lease>, watcher::Error>> + Send>>;

/// The driver task's state.
struct Driver {
    api: Api<Lease>,
    name: String,
    namespace: String,
    origin: tokio::time::Instant,
    keeper: LeaseKeeper,
    membership: Membership,
    view: watch::Sender<MembershipView>,
    /// Where the fence deadline is published.
    fence: ClaimDeadline,
    /// The request in flight and its answer.
    in_flight: Option<(RequestId, BoxFuture<'static, Response>)>,
    /// Speaker Leases listed since the last `Init`, until `InitDone`.
    relisting: Option<Vec<LeaseObservation>>,
    watch_healthy: bool,
    renew_failures: u64,
    /// Who to tell once the Lease is released.
    release_done: Option<oneshot::Sender<()>>,
    /// The status record the next Lease write carries.
    status: String,
}

async fn run(
    client: Client,
    config: DriverConfig,
    keeper: LeaseKeeper,
    view: watch::Sender<MembershipView>,
    fence: ClaimDeadline,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut events: LeaseEvents = Box::pin(
        watcher(api.clone(), watcher::Config::default()).backoff(WatchBackoff {
            next: WATCH_BACKOFF_FIRST,
        }),
    );
    let mut d = Driver {
        api,
        name: lease_name(&config.node),
        namespace: config.namespace,
        origin: tokio::time::Instant::now(),
        keeper,
        membership: Membership::new(config.join_delay),
        view,
        fence,
        in_flight: None,
        relisting: None,
        watch_healthy: false,
        renew_failures: 0,
        release_done: None,
        status: NodeStatus::default().to_annotation(),
    };
    let mut commands_open = true;
    loop {
        let now = d.now();
        d.keeper.handle_timeout(now);
        if let Some(out) = d.keeper.poll_request(now, SystemTime::now()) {
            // The keeper only asks again once it has abandoned the previous request (timed
            // out): dropping that request's future cancels it.
            if d.in_flight.is_some() {
                d.renew_failures += 1;
            }
            let request = execute(
                d.api.clone(),
                d.name.clone(),
                d.namespace.clone(),
                out.request,
                d.status.clone(),
            );
            d.in_flight = Some((out.id, Box::pin(request)));
        }
        d.publish(now);
        if d.keeper.is_released() {
            if let Some(done) = d.release_done.take() {
                let _ = done.send(());
            }
            return;
        }
        let wake = [d.keeper.poll_timeout(now), d.membership.poll_timeout(now)]
            .into_iter()
            .flatten()
            .min()
            .map(|at| d.origin + at.since_origin());
        let sleep = async move {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let in_flight = async {
            match d.in_flight.as_mut() {
                Some((id, answer)) => (*id, answer.await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (id, response) = in_flight => {
                d.in_flight = None;
                if response == Response::Failed {
                    d.renew_failures += 1;
                }
                let now = d.now();
                d.keeper.handle_response(now, id, response);
            }
            event = events.next() => d.on_event(event),
            command = commands.recv(), if commands_open => match command {
                Some(Command::SetInterfaces(interfaces)) => {
                    let now = d.now();
                    d.keeper.set_interfaces_up(now, interfaces);
                }
                Some(Command::SetStatus(status)) => d.status = status.to_annotation(),
                Some(Command::Release(done)) => {
                    let now = d.now();
                    d.keeper.release(now);
                    d.release_done = Some(done);
                }
                None => commands_open = false,
            },
            () = sleep => {}
        }
    }
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_origin(self.origin.elapsed())
    }

    fn on_event(&mut self, event: Option<Result<Event<Lease>, watcher::Error>>) {
        let now = self.now();
        match event {
            Some(Ok(Event::Init)) => self.relisting = Some(Vec::new()),
            Some(Ok(Event::InitApply(lease))) => {
                if let (Some(list), Some(o)) = (self.relisting.as_mut(), speaker_lease(&lease)) {
                    list.push(o);
                }
            }
            Some(Ok(Event::InitDone)) => {
                let listed = self.relisting.take().unwrap_or_default();
                // Only speaker Leases were kept, so nothing is refused here.
                let _ = self.membership.relist(now, listed);
                self.watch_healthy = true;
            }
            Some(Ok(Event::Apply(lease))) => {
                if let Some(o) = speaker_lease(&lease) {
                    let _ = self.membership.observe(now, o);
                }
                self.watch_healthy = self.relisting.is_none();
            }
            Some(Ok(Event::Delete(lease))) => {
                if let Some(name) = lease.metadata.name.as_deref() {
                    if node_of_lease(name).is_some() {
                        let _ = self.membership.deleted(name);
                    }
                }
                self.watch_healthy = self.relisting.is_none();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "speaker lease watch failed; not announcing until it recovers");
                self.watch_healthy = false;
            }
            None => {
                // The watcher never ends; if it did, the view would only go stale.
                tracing::error!("speaker lease watch ended");
                self.watch_healthy = false;
            }
        }
    }

    /// What the claim gate lets through: up to the fence deadline while the keeper lets this
    /// node announce, nothing otherwise.
    fn claims(&self, now: Instant) -> Claims {
        match self.keeper.fence_deadline() {
            Some(deadline) if self.keeper.may_announce(now) => {
                Claims::Until(self.origin.into_std() + deadline.since_origin())
            }
            _ => Claims::Closed,
        }
    }

    fn publish(&self, now: Instant) {
        // Before the view: whoever reads `may_announce` true finds the gate open already.
        self.fence.set_claims(self.claims(now));
        let live_nodes = self.membership.live_nodes(now);
        let interfaces_up = live_nodes
            .iter()
            .filter_map(|n| {
                let peer = self.membership.peer(n)?;
                Some((n.clone(), peer.interfaces_up.clone()))
            })
            .collect();
        let view = MembershipView {
            may_announce: self.keeper.may_announce(now) && self.watch_healthy,
            watch_healthy: self.watch_healthy,
            candidates: self.membership.candidates(now),
            live_nodes,
            interfaces_up,
            renew_failures: self.renew_failures,
        };
        self.view.send_if_modified(|current| {
            let changed = *current != view;
            if changed {
                *current = view;
            }
            changed
        });
    }
}

/// The observation of a speaker Lease; other Leases of the namespace are ignored.
fn speaker_lease(lease: &Lease) -> Option<LeaseObservation> {
    node_of_lease(lease.metadata.name.as_deref()?)?;
    lease_observation(lease)
}

/// Sends one keeper request, with the status record `status`, and maps the outcome.
async fn execute(
    api: Api<Lease>,
    name: String,
    namespace: String,
    request: Request,
    status: String,
) -> Response {
    let post = PostParams::default();
    match request {
        Request::Get => match api.get_opt(&name).await {
            Ok(Some(lease)) => {
                lease_object(&lease).map_or(Response::Failed, |o| Response::Found(Some(o)))
            }
            Ok(None) => Response::Found(None),
            Err(e) => failed("get", &e),
        },
        Request::Create(spec) => {
            let lease = with_status(lease_from_spec(&name, &namespace, None, &spec), status);
            match api.create(&post, &lease).await {
                Ok(lease) => written(&lease),
                Err(kube::Error::Api(s)) if s.code == 409 => Response::Conflict,
                Err(e) => failed("create", &e),
            }
        }
        Request::Replace {
            resource_version,
            spec,
        } => {
            let lease = with_status(
                lease_from_spec(&name, &namespace, Some(&resource_version), &spec),
                status,
            );
            match api.replace(&name, &post, &lease).await {
                Ok(lease) => written(&lease),
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Response::Conflict,
                Err(e) => failed("replace", &e),
            }
        }
    }
}

fn with_status(mut lease: Lease, status: String) -> Lease {
    lease
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOUNCING_ANNOTATION.to_string(), status);
    lease
}

fn written(lease: &Lease) -> Response {
    match &lease.metadata.resource_version {
        Some(rv) => Response::Written {
            resource_version: rv.clone(),
        },
        None => Response::Failed,
    }
}

fn failed(verb: &str, error: &kube::Error) -> Response {
    tracing::warn!(verb, %error, "speaker lease request failed");
    Response::Failed
}
