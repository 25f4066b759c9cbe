//! Leader election among allocator replicas with one Lease and compare-and-swap writes.
//!
//! Why not kube-leader-election: it takes a lease with GET + merge patch without
//! `resourceVersion`, so two contenders can both believe they hold it (DESIGN.md). Here every
//! write is a `replace` carrying the `resourceVersion` that was read, so of two contenders
//! exactly one succeeds and the other gets 409.
//!
//! [`Elector`] is the pure core: it is told what was read and when (a monotonic instant), and
//! says what to write. Another holder's lease counts as expired only when its `resourceVersion`
//! has not changed for a whole lease duration *as observed on our own monotonic clock*; its
//! wall-clock `renewTime` is never compared with ours. A leader counts itself leader only until
//! `sent + duration - margin`, where `sent` is when its last successful write was *sent*: every
//! other replica observes that write later than it was sent, so the leader has stopped writing
//! before anyone can take over, whatever the delays. [`run`] is the thin IO loop around it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;

/// Timing and identity of one contender.
#[derive(Clone, Debug)]
pub struct ElectorConfig {
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
    /// How often the lease is read and, when held, renewed.
    pub renew_interval: Duration,
    /// How long before the lease could be seen expired a leader stops acting.
    pub margin: Duration,
}

/// What was read of the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity`; `None` or empty when released.
    pub holder: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
}

impl LeaseView {
    /// The view of a Lease object, if it carries a resourceVersion.
    pub fn of(lease: &Lease) -> Option<Self> {
        let spec = lease.spec.clone().unwrap_or_default();
        Some(Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            resource_version: lease.metadata.resource_version.clone()?,
            duration: Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            ),
            transitions: spec.lease_transitions.unwrap_or(0),
        })
    }
}

/// The write the elector wants next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease exists: create it with us as holder.
    Create,
    /// Replace the lease read at `resource_version` with us as holder; `transitions` is the
    /// new transition count (bumped when taking it from someone else).
    Write {
        /// The resourceVersion the write must carry.
        resource_version: String,
        /// `spec.leaseTransitions` to write.
        transitions: i32,
        /// Whether we are taking it over (sets `acquireTime`).
        acquiring: bool,
    },
    /// Someone else holds a live lease: do nothing until the next read.
    Wait,
}

/// The pure election state of one contender. See the module documentation.
#[derive(Debug)]
pub struct Elector {
    config: ElectorConfig,
    /// the last lease read, and when its resourceVersion was first seen
    observed: Option<(LeaseView, Instant)>,
    /// whether the last read found no lease at all
    absent: bool,
    /// leader until this instant (last successful write sent + duration - margin)
    leading_until: Option<Instant>,
}

impl Elector {
    /// A contender that holds nothing yet.
    pub fn new(config: ElectorConfig) -> Self {
        Self {
            config,
            observed: None,
            absent: false,
            leading_until: None,
        }
    }

    /// Records a read of the lease (`None`: it does not exist).
    pub fn observe(&mut self, now: Instant, lease: Option<LeaseView>) {
        self.absent = lease.is_none();
        self.observed = match (lease, self.observed.take()) {
            (None, _) => None,
            (Some(view), Some((old, since))) if old.resource_version == view.resource_version => {
                Some((view, since))
            }
            (Some(view), _) => Some((view, now)),
        };
        if let Some((view, _)) = &self.observed {
            if view.holder.as_deref() != Some(&self.config.identity) {
                self.leading_until = None;
            }
        }
    }

    /// The write to make now, given the last read.
    pub fn decide(&self, now: Instant) -> Decision {
        if self.absent {
            return Decision::Create;
        }
        let Some((view, since)) = &self.observed else {
            return Decision::Wait;
        };
        let ours = view.holder.as_deref() == Some(&self.config.identity);
        let expired = now >= *since + view.duration;
        if ours || view.holder.is_none() || expired {
            Decision::Write {
                resource_version: view.resource_version.clone(),
                transitions: view.transitions + i32::from(!ours),
                acquiring: !ours,
            }
        } else {
            Decision::Wait
        }
    }

    /// Records a successful write sent at `sent`, and the lease it produced.
    pub fn written(&mut self, sent: Instant, now: Instant, lease: LeaseView) {
        let duration = self.config.lease_duration;
        self.leading_until = Some(sent + duration.saturating_sub(self.config.margin));
        self.absent = false;
        self.observed = Some((lease, now));
    }

    /// Records a write refused with 409: someone else wrote first, so we are not leader.
    pub fn conflicted(&mut self) {
        self.leading_until = None;
    }

    /// Whether this replica may act as leader at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leading_until.is_some_and(|until| now < until)
    }

    /// The instant until which this replica may act as leader.
    pub fn leading_until(&self) -> Option<Instant> {
        self.leading_until
    }

    /// The lease read last, if we hold it (what a release must replace).
    pub fn held(&self) -> Option<&LeaseView> {
        self.observed
            .as_ref()
            .map(|(v, _)| v)
            .filter(|v| v.holder.as_deref() == Some(&self.config.identity))
    }

    /// Gives up leadership at once (before a release write).
    pub fn step_down(&mut self) {
        self.leading_until = None;
    }
}

/// Errors of the election loop that end it.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The lease duration is too short for the margin and renew interval.
    #[error(
        "lease duration {lease:?} must exceed renew interval {renew:?} plus margin {margin:?}"
    )]
    Timing {
        /// Configured lease duration.
        lease: Duration,
        /// Configured renew interval.
        renew: Duration,
        /// Configured margin.
        margin: Duration,
    },
}

fn lease_object(
    name: &str,
    config: &ElectorConfig,
    holder: Option<&str>,
    resource_version: Option<String>,
    transitions: i32,
    acquiring: bool,
) -> Lease {
    let now = MicroTime(Timestamp::now());
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version,
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(
                i32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: acquiring.then(|| now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

/// Runs the election on `api`'s lease `name` until `shutdown` turns true, publishing on
/// `leading` the instant until which this replica may act as leader (`None`: not leader).
/// On shutdown a held lease is released (holder cleared) so a standby takes over at once.
pub async fn run(
    api: Api<Lease>,
    name: String,
    config: ElectorConfig,
    leading: watch::Sender<Option<Instant>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ElectionError> {
    if config.lease_duration <= config.renew_interval + config.margin {
        return Err(ElectionError::Timing {
            lease: config.lease_duration,
            renew: config.renew_interval,
            margin: config.margin,
        });
    }
    let mut elector = Elector::new(config.clone());
    let mut was_leader = false;
    while !*shutdown.borrow() {
        round(&api, &name, &config, &mut elector).await;
        let leader = elector.is_leader(Instant::now());
        if leader != was_leader {
            tracing::info!(identity = %config.identity, leader, "leadership changed");
            was_leader = leader;
        }
        leading.send_replace(elector.leading_until());
        let next = tokio::time::sleep(config.renew_interval);
        tokio::select! {
            _ = next => {}
            _ = shutdown.changed() => {}
        }
    }
    elector.step_down();
    leading.send_replace(None);
    if let Some(held) = elector.held().cloned() {
        let release = lease_object(
            &name,
            &config,
            None,
            Some(held.resource_version),
            held.transitions,
            false,
        );
        match api.replace(&name, &PostParams::default(), &release).await {
            Ok(_) => tracing::info!(identity = %config.identity, "lease released"),
            Err(e) => tracing::warn!(error = %e, "could not release the lease; it will expire"),
        }
    }
    Ok(())
}

/// One read-decide-write round.
async fn round(api: &Api<Lease>, name: &str, config: &ElectorConfig, elector: &mut Elector) {
    let read = match api.get_opt(name).await {
        Ok(lease) => lease,
        Err(e) => {
            tracing::warn!(error = %e, "reading the leader lease failed");
            return;
        }
    };
    let now = Instant::now();
    elector.observe(now, read.as_ref().and_then(LeaseView::of));
    let sent = Instant::now();
    let result = match elector.decide(now) {
        Decision::Wait => return,
        Decision::Create => {
            let lease = lease_object(name, config, Some(&config.identity), None, 0, true);
            api.create(&PostParams::default(), &lease).await
        }
        Decision::Write {
            resource_version,
            transitions,
            acquiring,
        } => {
            let lease = lease_object(
                name,
                config,
                Some(&config.identity),
                Some(resource_version),
                transitions,
                acquiring,
            );
            api.replace(name, &PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(lease) => match LeaseView::of(&lease) {
            Some(view) => elector.written(sent, Instant::now(), view),
            None => tracing::warn!("the API server returned a lease without resourceVersion"),
        },
        Err(kube::Error::Api(status)) if status.code == 409 => elector.conflicted(),
        Err(e) => tracing::warn!(error = %e, "writing the leader lease failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(identity: &str) -> ElectorConfig {
        ElectorConfig {
            identity: identity.into(),
            lease_duration: 10 * SECOND,
            renew_interval: 2 * SECOND,
            margin: SECOND,
        }
    }

    fn view(holder: Option<&str>, rv: &str) -> LeaseView {
        LeaseView {
            holder: holder.map(str::to_owned),
            resource_version: rv.into(),
            duration: 10 * SECOND,
            transitions: 3,
        }
    }

    #[test]
    fn a_missing_lease_is_created() {
        let t0 = Instant::now();
        let mut e = Elector::new(config("a"));
        e.observe(t0, None);
        assert_eq!(e.decide(t0), Decision::Create);
        assert!(!e.is_leader(t0));
    }

    #[test]
    fn a_live_lease_of_another_is_left_alone_until_unchanged_for_a_whole_duration() {
        let t0 = Instant::now();
        let mut e = Elector::new(config("b"));
        e.observe(t0, Some(view(Some("a"), "5")));
        assert_eq!(e.decide(t0 + 9 * SECOND), Decision::Wait);
        // a renewal (new resourceVersion) restarts the clock
        e.observe(t0 + 9 * SECOND, Some(view(Some("a"), "6")));
        assert_eq!(e.decide(t0 + 18 * SECOND), Decision::Wait);
        e.observe(t0 + 19 * SECOND, Some(view(Some("a"), "6")));
        assert_eq!(
            e.decide(t0 + 19 * SECOND),
            Decision::Write {
                resource_version: "6".into(),
                transitions: 4,
                acquiring: true
            }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let mut e = Elector::new(config("b"));
        e.observe(t0, Some(view(None, "7")));
        assert!(matches!(
            e.decide(t0),
            Decision::Write {
                acquiring: true,
                ..
            }
        ));
    }

    #[test]
    fn the_holder_renews_without_a_transition() {
        let t0 = Instant::now();
        let mut e = Elector::new(config("a"));
        e.observe(t0, Some(view(Some("a"), "8")));
        assert_eq!(
            e.decide(t0),
            Decision::Write {
                resource_version: "8".into(),
                transitions: 3,
                acquiring: false
            }
        );
    }

    #[test]
    fn a_leader_stops_acting_before_any_peer_can_see_its_lease_expire() {
        let t0 = Instant::now();
        let mut leader = Elector::new(config("a"));
        leader.observe(t0, Some(view(None, "1")));
        // the write is sent at t0 and observed by a peer at some later instant
        leader.written(t0, t0 + SECOND, view(Some("a"), "2"));
        for delay_ms in [0u64, 1, 500, 3000] {
            let observed = t0 + Duration::from_millis(delay_ms);
            let mut peer = Elector::new(config("b"));
            peer.observe(observed, Some(view(Some("a"), "2")));
            // first instant the peer would take over
            let takeover = observed + 10 * SECOND;
            assert!(matches!(peer.decide(takeover), Decision::Write { .. }));
            assert!(!leader.is_leader(takeover), "delay {delay_ms} ms");
            assert!(leader.leading_until().unwrap() + SECOND <= takeover);
        }
    }

    #[test]
    fn a_conflict_ends_leadership_at_once() {
        let t0 = Instant::now();
        let mut e = Elector::new(config("a"));
        e.written(t0, t0, view(Some("a"), "2"));
        assert!(e.is_leader(t0 + SECOND));
        e.conflicted();
        assert!(!e.is_leader(t0 + SECOND));
    }

    #[test]
    fn seeing_another_holder_ends_leadership() {
        let t0 = Instant::now();
        let mut e = Elector::new(config("a"));
        e.written(t0, t0, view(Some("a"), "2"));
        e.observe(t0 + SECOND, Some(view(Some("b"), "3")));
        assert!(!e.is_leader(t0 + SECOND));
        assert_eq!(e.held(), None);
    }

    #[test]
    fn failed_renewals_let_leadership_lapse_by_itself() {
        let t0 = Instant::now();
        let mut e = Elector::new(config("a"));
        e.written(t0, t0, view(Some("a"), "2"));
        // no successful write after t0: leader until t0 + 10 s - 1 s margin
        assert!(e.is_leader(t0 + 8 * SECOND));
        assert!(!e.is_leader(t0 + 9 * SECOND));
    }
}
