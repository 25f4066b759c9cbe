//! This node's own speaker Lease: acquisition, compare-and-swap renewal, self-fencing, release.
//!
//! Every write is a `create` or a `replace` carrying the `resourceVersion` last read, so a write
//! based on a stale view fails with 409 instead of overwriting someone else's (see DESIGN.md,
//! "Leases"). Another holder's lease is judged expired by our monotonic clock, from the moment we
//! read it, never from its wall-clock `renewTime`.
//!
//! **Self-fencing.** [`LeaseKeeper::may_announce`] is true only while
//! `now < sent_at + lease_duration − safety_margin`, where `sent_at` is when the last *successful*
//! renewal was *sent*. A peer observes that renewal no earlier than it was committed, hence no
//! earlier than it was sent, and judges it expired `lease_duration` after observing it: so this
//! node goes silent at least `safety_margin` before any peer that has seen its latest renewal can
//! consider it gone, whatever the observation delay. The margin must cover the delay between a
//! renewal's commit and its delivery to peers' watches when renewals are late (a peer that has not
//! yet seen the latest renewal judges by the one before).
//!
//! **Settling.** After being fenced (or on first acquisition) the node waits `settle` after the
//! successful renewal before announcing again, so that peers see its lease live — and stop
//! announcing its VIPs, after their join delay ([`crate::membership`]) — before it claims them
//! back.
//!
//! **Release.** [`LeaseKeeper::release`] makes `may_announce` false at once and for good; the
//! driver withdraws every announcement and then sends the clearing write the keeper produces, so
//! peers take over on the watch event instead of at expiry.
//!
//! No IO and no clock: the driver calls, in this order, whenever it wakes up:
//! [`LeaseKeeper::handle_timeout`], then [`LeaseKeeper::poll_request`] (execute what it returns and
//! feed the outcome to [`LeaseKeeper::handle_response`]), then reads
//! [`LeaseKeeper::may_announce`], and sleeps until [`LeaseKeeper::poll_timeout`].

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::time::Instant;

/// Tunables of the lease keeper. [`LeaseConfig::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// `holderIdentity` written into the Lease: unique per speaker process (the pod name).
    pub holder: String,
    /// `leaseDurationSeconds` (whole seconds). Default 3 s.
    pub lease_duration: Duration,
    /// Time between successful renewals. Default 1 s.
    pub renew_interval: Duration,
    /// Time before retrying after a failed request. Default 250 ms.
    pub retry_interval: Duration,
    /// A request without an answer after this long is abandoned and retried. Default 1 s.
    pub request_timeout: Duration,
    /// How long before peers could see the lease expire this node stops announcing. Default
    /// 500 ms.
    pub safety_margin: Duration,
    /// How long after (re)gaining the lease this node waits before announcing. Default 1 s.
    pub settle: Duration,
}

impl LeaseConfig {
    /// The defaults: lease 3 s, renew every 1 s, retry after 250 ms, request timeout 1 s, safety
    /// margin 500 ms, settle 1 s.
    pub fn new(holder: impl Into<String>) -> Self {
        Self {
            holder: holder.into(),
            lease_duration: Duration::from_secs(3),
            renew_interval: Duration::from_secs(1),
            retry_interval: Duration::from_millis(250),
            request_timeout: Duration::from_secs(1),
            safety_margin: Duration::from_millis(500),
            settle: Duration::from_secs(1),
        }
    }

    /// Checks the invariants the fencing argument needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.holder.is_empty() {
            return Err(ConfigError::EmptyHolder);
        }
        let secs = self.lease_duration.as_secs();
        if self.lease_duration.subsec_nanos() != 0 || secs == 0 || secs > i32::MAX as u64 {
            return Err(ConfigError::LeaseDuration(self.lease_duration));
        }
        if self.safety_margin.is_zero() || self.safety_margin >= self.lease_duration {
            return Err(ConfigError::SafetyMargin(self.safety_margin));
        }
        if self.renew_interval.is_zero()
            || self.renew_interval >= self.lease_duration - self.safety_margin
        {
            return Err(ConfigError::RenewInterval(self.renew_interval));
        }
        if self.retry_interval.is_zero() {
            return Err(ConfigError::ZeroInterval("retry_interval"));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::ZeroInterval("request_timeout"));
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        // validate() bounds the value, so this never saturates for a keeper that exists.
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// A [`LeaseConfig`] that cannot give the fencing guarantee.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The holder identity is empty (an empty holder means "released").
    #[error("the holder identity must not be empty")]
    EmptyHolder,
    /// The lease duration is not a positive whole number of seconds that fits an i32.
    #[error("lease duration {0:?} must be a positive whole number of seconds")]
    LeaseDuration(Duration),
    /// The safety margin is zero or not shorter than the lease.
    #[error("safety margin {0:?} must be positive and shorter than the lease duration")]
    SafetyMargin(Duration),
    /// The renew interval is zero or leaves no time to renew before fencing.
    #[error(
        "renew interval {0:?} must be positive and shorter than lease duration minus safety margin"
    )]
    RenewInterval(Duration),
    /// An interval that must be positive is zero.
    #[error("{0} must be positive")]
    ZeroInterval(&'static str),
}

/// The Lease fields this keeper writes. The driver maps them onto `coordination.k8s.io/v1` Lease
/// (`interfaces_up` goes into [`crate::membership::INTERFACES_ANNOTATION`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSpec {
    /// `spec.holderIdentity` (`None`: released).
    pub holder_identity: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub lease_duration_seconds: i32,
    /// `spec.acquireTime` (wall clock, informational).
    pub acquire_time: Option<SystemTime>,
    /// `spec.renewTime` (wall clock, informational: nobody compares it).
    pub renew_time: Option<SystemTime>,
    /// `spec.leaseTransitions`.
    pub lease_transitions: i32,
    /// The L2 interfaces up on this node, for peers' eligibility decisions.
    pub interfaces_up: BTreeSet<String>,
}

/// The Lease as read from the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseObject {
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// Its spec.
    pub spec: LeaseSpec,
}

/// A request the driver sends to the API server for this node's Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// GET the Lease (answer with [`Response::Found`]).
    Get,
    /// CREATE the Lease.
    Create(LeaseSpec),
    /// REPLACE the Lease, with `metadata.resourceVersion` set to `resource_version`.
    Replace {
        /// The resourceVersion the write is conditional on.
        resource_version: String,
        /// The new spec.
        spec: LeaseSpec,
    },
}

/// Identifies a request, so a late answer to an abandoned request is recognised and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(u64);

/// A request and its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// Pass it back with the response.
    pub id: RequestId,
    /// What to send.
    pub request: Request,
}

/// The outcome of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// CREATE or REPLACE succeeded; the Lease now has this resourceVersion.
    Written {
        /// The new resourceVersion.
        resource_version: String,
    },
    /// GET answered: the Lease, or `None` on 404.
    Found(Option<LeaseObject>),
    /// 409: the resourceVersion was stale, or CREATE found the Lease already there. Report a 404
    /// on REPLACE (the Lease was deleted) as this too: either way the keeper reads again.
    Conflict,
    /// Anything else (connection error, 5xx, 403, the driver's own timeout).
    Failed,
}

/// Whether this node holds its Lease, as far as the keeper knows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Must read the Lease before writing.
    Unknown,
    /// The Lease does not exist: create it.
    Absent,
    /// Someone else holds it (or nobody does); take it over with a conditional replace at
    /// `takeover_at`.
    Contended {
        resource_version: String,
        takeover_at: Instant,
    },
    /// We hold it at this resourceVersion.
    Held { resource_version: String },
    /// Released (or there was nothing to release): the keeper is done.
    Released,
}

/// What a request in flight was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Read,
    /// Create, renew or take over; the spec written.
    Hold,
    Release,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    id: RequestId,
    sent_at: Instant,
    purpose: Purpose,
    spec: Option<LeaseSpec>,
}

/// The keeper's timers; [`LeaseKeeper::poll_timeout`] returns the earliest armed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The next request is due.
    Attempt,
    /// The request in flight times out.
    Request,
    /// Announcing must stop (fence deadline).
    Fence,
    /// Announcing may start (settle period over).
    Settle,
}

impl Timer {
    const ALL: [Timer; 4] = [Timer::Attempt, Timer::Request, Timer::Fence, Timer::Settle];
}

/// The state machine keeping this node's Lease. See the module docs for the driving order.
#[derive(Clone, Debug)]
pub struct LeaseKeeper {
    config: LeaseConfig,
    phase: Phase,
    in_flight: Option<InFlight>,
    next_id: u64,
    /// When the next request may be sent.
    next_attempt: Instant,
    /// When the last successful holding write was sent.
    last_success_sent: Option<Instant>,
    /// When the current unbroken term of holding began (response of its first success).
    term_started: Option<Instant>,
    acquire_time: Option<SystemTime>,
    transitions: i32,
    interfaces_up: BTreeSet<String>,
    releasing: bool,
}

impl LeaseKeeper {
    /// A keeper that will start by reading the Lease.
    pub fn new(config: LeaseConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            phase: Phase::Unknown,
            in_flight: None,
            next_id: 0,
            next_attempt: Instant::ZERO,
            last_success_sent: None,
            term_started: None,
            acquire_time: None,
            transitions: 0,
            interfaces_up: BTreeSet::new(),
            releasing: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// The moment announcing must stop unless a renewal succeeds first.
    pub fn fence_deadline(&self) -> Option<Instant> {
        let sent = self.last_success_sent?;
        Some(sent + (self.config.lease_duration - self.config.safety_margin))
    }

    /// True while this node may announce anything: it holds its Lease, its last successful
    /// renewal was sent less than `lease_duration − safety_margin` ago, the settle period after
    /// (re)gaining the Lease is over, and it is not releasing.
    pub fn may_announce(&self, now: Instant) -> bool {
        // `Unknown` here means "re-reading after a 409": we may still hold the Lease, and the
        // fence deadline keeps running meanwhile.
        !self.releasing
            && matches!(self.phase, Phase::Held { .. } | Phase::Unknown)
            && self.fence_deadline().is_some_and(|d| now < d)
            && self
                .term_started
                .is_some_and(|t| now >= t + self.config.settle)
    }

    /// True once the release write succeeded, or there was nothing to release.
    pub fn is_released(&self) -> bool {
        self.phase == Phase::Released
    }

    /// Publishes a new set of L2 interfaces that are up; a write carrying it is sent at once
    /// (if the Lease is held), so peers stop counting on an interface that went down.
    pub fn set_interfaces_up(&mut self, now: Instant, interfaces: BTreeSet<String>) {
        if interfaces != self.interfaces_up {
            self.interfaces_up = interfaces;
            if matches!(self.phase, Phase::Held { .. }) {
                self.next_attempt = self.next_attempt.min(now);
            }
        }
    }

    /// Stops announcing at once and for good, and queues the write that clears the holder. The
    /// driver withdraws every announcement before sending that write. If the API server cannot
    /// be reached the write is retried until the driver's shutdown deadline; peers then see the
    /// lease expire instead.
    pub fn release(&mut self, now: Instant) {
        self.releasing = true;
        self.next_attempt = now;
    }

    /// Abandons a request that has gone unanswered for `request_timeout`; its late answer, if
    /// any, is ignored, and the next request goes out at once.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(f) = &self.in_flight {
            if now >= f.sent_at + self.config.request_timeout {
                self.in_flight = None;
                self.next_attempt = now;
            }
        }
    }

    /// The earliest moment the driver must wake up and call the keeper again.
    #[must_use]
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        Timer::ALL.iter().filter_map(|t| self.timer(*t, now)).min()
    }

    fn timer(&self, timer: Timer, now: Instant) -> Option<Instant> {
        match timer {
            Timer::Attempt => (self.in_flight.is_none() && self.phase != Phase::Released)
                .then_some(self.next_attempt),
            Timer::Request => self
                .in_flight
                .as_ref()
                .map(|f| f.sent_at + self.config.request_timeout),
            Timer::Fence => self.fence_deadline().filter(|d| *d > now),
            Timer::Settle => self
                .term_started
                .map(|t| t + self.config.settle)
                .filter(|s| *s > now),
        }
    }

    /// The next request to send, if one is due and none is in flight. `wall` is the wall-clock
    /// time copied into `renewTime`/`acquireTime`; it is never compared with anything.
    #[must_use]
    pub fn poll_request(&mut self, now: Instant, wall: SystemTime) -> Option<Outgoing> {
        if self.in_flight.is_some() || now < self.next_attempt {
            return None;
        }
        let (purpose, request) = match &self.phase {
            Phase::Released => return None,
            Phase::Absent | Phase::Contended { .. } if self.releasing => {
                // Nothing of ours to clear.
                self.phase = Phase::Released;
                return None;
            }
            Phase::Unknown => (Purpose::Read, Request::Get),
            Phase::Absent => {
                let spec = self.holding_spec(wall, Some(wall), 0);
                (Purpose::Hold, Request::Create(spec))
            }
            Phase::Contended {
                resource_version,
                takeover_at,
            } => {
                if now < *takeover_at {
                    return None;
                }
                let spec = self.holding_spec(wall, Some(wall), self.transitions.saturating_add(1));
                (
                    Purpose::Hold,
                    Request::Replace {
                        resource_version: resource_version.clone(),
                        spec,
                    },
                )
            }
            Phase::Held { resource_version } if self.releasing => {
                let spec = LeaseSpec {
                    holder_identity: None,
                    lease_duration_seconds: self.config.duration_seconds(),
                    acquire_time: None,
                    renew_time: Some(wall),
                    lease_transitions: self.transitions,
                    interfaces_up: BTreeSet::new(),
                };
                (
                    Purpose::Release,
                    Request::Replace {
                        resource_version: resource_version.clone(),
                        spec,
                    },
                )
            }
            Phase::Held { resource_version } => {
                let spec = self.holding_spec(wall, self.acquire_time, self.transitions);
                (
                    Purpose::Hold,
                    Request::Replace {
                        resource_version: resource_version.clone(),
                        spec,
                    },
                )
            }
        };
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let spec = match &request {
            Request::Get => None,
            Request::Create(spec) | Request::Replace { spec, .. } => Some(spec.clone()),
        };
        self.in_flight = Some(InFlight {
            id,
            sent_at: now,
            purpose,
            spec,
        });
        Some(Outgoing { id, request })
    }

    fn holding_spec(
        &self,
        wall: SystemTime,
        acquire: Option<SystemTime>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.holder.clone()),
            lease_duration_seconds: self.config.duration_seconds(),
            acquire_time: acquire,
            renew_time: Some(wall),
            lease_transitions: transitions,
            interfaces_up: self.interfaces_up.clone(),
        }
    }

    /// Feeds the outcome of request `id`. Answers to abandoned or unknown requests are ignored.
    pub fn handle_response(&mut self, now: Instant, id: RequestId, response: Response) {
        let Some(f) = self.in_flight.take_if(|f| f.id == id) else {
            return;
        };
        match (f.purpose, response) {
            (Purpose::Read, Response::Found(found)) => self.on_read(now, found),
            (Purpose::Hold, Response::Written { resource_version }) => {
                self.on_held(now, f.sent_at, f.spec, resource_version)
            }
            (Purpose::Release, Response::Written { .. }) => self.phase = Phase::Released,
            (Purpose::Hold | Purpose::Release, Response::Conflict) => {
                // Our view is stale: read, then decide. The fence deadline keeps running.
                self.phase = Phase::Unknown;
                self.next_attempt = now;
            }
            // Failures, and answers that do not fit the request (a driver bug), are retried.
            (
                _,
                Response::Failed
                | Response::Conflict
                | Response::Found(_)
                | Response::Written { .. },
            ) => {
                self.next_attempt = now + self.config.retry_interval;
            }
        }
    }

    fn on_read(&mut self, now: Instant, found: Option<LeaseObject>) {
        self.next_attempt = now;
        let Some(lease) = found else {
            self.lose_term();
            self.phase = if self.releasing {
                Phase::Released
            } else {
                Phase::Absent
            };
            return;
        };
        self.transitions = lease.spec.lease_transitions;
        let holder = lease.spec.holder_identity.filter(|h| !h.is_empty());
        match holder {
            Some(h) if h == self.config.holder => {
                // Ours (an earlier write whose answer we missed, or our previous incarnation).
                // Holding continues; the fence deadline still runs from our last known success.
                self.acquire_time = lease.spec.acquire_time;
                self.phase = Phase::Held {
                    resource_version: lease.resource_version,
                };
            }
            _ if self.releasing => self.phase = Phase::Released,
            None => {
                self.lose_term();
                self.phase = Phase::Contended {
                    resource_version: lease.resource_version,
                    takeover_at: now,
                };
            }
            Some(_) => {
                // Someone else holds it: wait out their lease on our clock, then take it over
                // with a conditional write (a 409 means they renewed meanwhile).
                self.lose_term();
                let theirs = u64::try_from(lease.spec.lease_duration_seconds)
                    .ok()
                    .filter(|s| *s > 0)
                    .map_or(self.config.lease_duration, Duration::from_secs);
                self.phase = Phase::Contended {
                    resource_version: lease.resource_version,
                    takeover_at: now + theirs,
                };
                self.next_attempt = now + theirs;
            }
        }
    }

    fn on_held(
        &mut self,
        now: Instant,
        sent_at: Instant,
        spec: Option<LeaseSpec>,
        resource_version: String,
    ) {
        // A term is unbroken only if this success arrived before the previous one's fence
        // deadline; otherwise peers may have seen us expire, and we settle again.
        let unbroken =
            self.term_started.is_some() && self.fence_deadline().is_some_and(|d| now < d);
        if !unbroken {
            self.term_started = Some(now);
        }
        if let Some(spec) = spec {
            self.acquire_time = spec.acquire_time;
            self.transitions = spec.lease_transitions;
        }
        self.last_success_sent = Some(sent_at);
        self.phase = Phase::Held { resource_version };
        // Released while this write was in flight: clear the holder at once.
        self.next_attempt = if self.releasing {
            now
        } else {
            sent_at + self.config.renew_interval
        };
    }

    fn lose_term(&mut self) {
        self.term_started = None;
        self.last_success_sent = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{lease_name, LeaseObservation, Membership};
    use proptest::prelude::*;

    const ME: &str = "speaker-n1";

    fn ms(v: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(v))
    }

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// A one-Lease API server: resourceVersions, 404 and 409 as the real one does them.
    #[derive(Default)]
    struct FakeApi {
        lease: Option<LeaseObject>,
        version: u64,
        writes: usize,
    }

    impl FakeApi {
        fn store(&mut self, spec: LeaseSpec) -> String {
            self.version += 1;
            self.writes += 1;
            let rv = self.version.to_string();
            self.lease = Some(LeaseObject {
                resource_version: rv.clone(),
                spec,
            });
            rv
        }

        fn execute(&mut self, request: Request) -> Response {
            match request {
                Request::Get => Response::Found(self.lease.clone()),
                Request::Create(spec) => {
                    if self.lease.is_some() {
                        Response::Conflict
                    } else {
                        Response::Written {
                            resource_version: self.store(spec),
                        }
                    }
                }
                Request::Replace {
                    resource_version,
                    spec,
                } => match &self.lease {
                    Some(l) if l.resource_version == resource_version => Response::Written {
                        resource_version: self.store(spec),
                    },
                    _ => Response::Conflict,
                },
            }
        }

        fn holder(&self) -> Option<String> {
            self.lease.as_ref()?.spec.holder_identity.clone()
        }
    }

    fn keeper() -> LeaseKeeper {
        LeaseKeeper::new(LeaseConfig::new(ME)).unwrap()
    }

    /// Runs the keeper at `now` against `api` with instant answers, as a driver would.
    fn drive(k: &mut LeaseKeeper, api: &mut FakeApi, now: Instant) {
        k.handle_timeout(now);
        while let Some(out) = k.poll_request(now, wall()) {
            let response = api.execute(out.request);
            k.handle_response(now, out.id, response);
        }
    }

    /// Drives from `from` to `until`, waking at every timeout.
    fn run(k: &mut LeaseKeeper, api: &mut FakeApi, from: Instant, until: Instant) {
        let mut now = from;
        while now <= until {
            drive(k, api, now);
            match k.poll_timeout(now) {
                Some(next) if next > now => now = next,
                _ => break,
            }
        }
    }

    #[test]
    fn default_config_is_lease_3s_renew_1s() {
        let c = LeaseConfig::new(ME);
        assert_eq!(c.lease_duration, Duration::from_secs(3));
        assert_eq!(c.renew_interval, Duration::from_secs(1));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn configs_that_break_fencing_are_rejected() {
        let bad = |f: fn(&mut LeaseConfig)| {
            let mut c = LeaseConfig::new(ME);
            f(&mut c);
            c.validate()
        };
        assert_eq!(bad(|c| c.holder.clear()), Err(ConfigError::EmptyHolder));
        assert!(matches!(
            bad(|c| c.lease_duration = Duration::from_millis(2500)),
            Err(ConfigError::LeaseDuration(_))
        ));
        assert!(matches!(
            bad(|c| c.safety_margin = Duration::ZERO),
            Err(ConfigError::SafetyMargin(_))
        ));
        assert!(matches!(
            bad(|c| c.safety_margin = Duration::from_secs(3)),
            Err(ConfigError::SafetyMargin(_))
        ));
        assert!(matches!(
            bad(|c| c.renew_interval = Duration::from_millis(2500)),
            Err(ConfigError::RenewInterval(_))
        ));
        assert_eq!(
            bad(|c| c.retry_interval = Duration::ZERO),
            Err(ConfigError::ZeroInterval("retry_interval"))
        );
        assert_eq!(
            bad(|c| c.request_timeout = Duration::ZERO),
            Err(ConfigError::ZeroInterval("request_timeout"))
        );
        assert!(LeaseKeeper::new(LeaseConfig {
            holder: String::new(),
            ..LeaseConfig::new(ME)
        })
        .is_err());
    }

    #[test]
    fn a_missing_lease_is_read_then_created_with_this_holder() {
        let mut k = keeper();
        let first = k.poll_request(ms(0), wall()).unwrap();
        assert_eq!(first.request, Request::Get);
        assert_eq!(k.poll_request(ms(0), wall()), None, "one request at a time");
        k.handle_response(ms(0), first.id, Response::Found(None));
        let create = k.poll_request(ms(0), wall()).unwrap();
        let Request::Create(spec) = &create.request else {
            panic!("expected create, got {create:?}")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, 3);
        assert_eq!(spec.acquire_time, Some(wall()));
        assert_eq!(spec.renew_time, Some(wall()));
        assert_eq!(spec.lease_transitions, 0);
    }

    #[test]
    fn announcing_starts_only_after_the_settle_period() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        drive(&mut k, &mut api, ms(0));
        assert_eq!(api.holder().as_deref(), Some(ME));
        assert!(!k.may_announce(ms(0)));
        assert!(!k.may_announce(ms(999)));
        assert!(k.may_announce(ms(1000)));
        assert!(k.poll_timeout(ms(0)).is_some_and(|t| t <= ms(1000)));
    }

    #[test]
    fn renewals_are_conditional_replaces_every_interval() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        drive(&mut k, &mut api, ms(0));
        assert_eq!(k.poll_timeout(ms(0)), Some(ms(1000)));
        assert_eq!(k.poll_request(ms(999), wall()), None);
        let renew = k.poll_request(ms(1000), wall()).unwrap();
        let Request::Replace {
            resource_version,
            spec,
        } = &renew.request
        else {
            panic!("{renew:?}")
        };
        assert_eq!(resource_version, "1");
        assert_eq!(
            spec.acquire_time,
            Some(wall()),
            "acquireTime is kept on renewal"
        );
        let response = api.execute(renew.request);
        k.handle_response(ms(1000), renew.id, response);
        run(&mut k, &mut api, ms(1000), ms(10_000));
        // Create at 0 and one renewal per second since.
        assert_eq!(api.writes, 11);
        assert!(k.may_announce(ms(10_000)));
    }

    #[test]
    fn failing_renewals_fence_at_last_successful_send_plus_duration_minus_margin() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        assert_eq!(k.fence_deadline(), Some(ms(4500)));
        // From now on every request fails.
        let mut now = ms(2000);
        loop {
            k.handle_timeout(now);
            while let Some(out) = k.poll_request(now, wall()) {
                k.handle_response(now, out.id, Response::Failed);
            }
            if now >= ms(6000) {
                break;
            }
            now = k.poll_timeout(now).unwrap();
        }
        assert!(k.may_announce(ms(4499)));
        assert!(!k.may_announce(ms(4500)));
        assert!(!k.may_announce(ms(6000)));
    }

    #[test]
    fn the_fence_deadline_is_a_timer() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        // A renewal is in flight and never answered before the deadline's timer.
        let out = k.poll_request(ms(3000), wall()).unwrap();
        assert_eq!(
            k.poll_timeout(ms(3000)),
            Some(ms(4000)),
            "request timeout first"
        );
        k.handle_timeout(ms(4000));
        k.handle_response(ms(4000), out.id, Response::Failed);
        let _stuck = k.poll_request(ms(4000), wall()).unwrap();
        assert_eq!(
            k.poll_timeout(ms(4000)),
            Some(ms(4500)),
            "then the fence deadline"
        );
    }

    #[test]
    fn after_being_fenced_a_successful_renewal_resumes_announcing_once_settled() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        // Requests fail from 2.0 s to 5.0 s: fenced at 4.5 s.
        let mut now = ms(2000);
        while now < ms(5000) {
            k.handle_timeout(now);
            while let Some(out) = k.poll_request(now, wall()) {
                k.handle_response(now, out.id, Response::Failed);
            }
            now = k.poll_timeout(now).unwrap();
        }
        assert!(!k.may_announce(now));
        let resumed_at = now;
        drive(&mut k, &mut api, now);
        assert!(
            !k.may_announce(resumed_at),
            "settles before announcing again"
        );
        run(
            &mut k,
            &mut api,
            resumed_at,
            resumed_at + Duration::from_millis(1000),
        );
        assert!(k.may_announce(resumed_at + Duration::from_millis(1000)));
    }

    #[test]
    fn a_renewal_that_succeeds_in_time_keeps_announcing_without_a_new_settle() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        for t in [3000, 3250, 3500] {
            let out = k.poll_request(ms(t), wall()).unwrap();
            k.handle_response(ms(t), out.id, Response::Failed);
        }
        let out = k.poll_request(ms(3750), wall()).unwrap();
        let r = api.execute(out.request);
        k.handle_response(ms(3750), out.id, r);
        assert!(k.may_announce(ms(3750)));
        assert_eq!(k.fence_deadline(), Some(ms(6250)));
    }

    #[test]
    fn a_stale_resource_version_rereads_and_keeps_holding() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(1500));
        // Our own earlier write landed but its answer was lost: the API is one version ahead.
        let spec = api.lease.as_ref().unwrap().spec.clone();
        api.store(spec);
        let out = k.poll_request(ms(2000), wall()).unwrap();
        let r = api.execute(out.request);
        assert_eq!(r, Response::Conflict);
        k.handle_response(ms(2000), out.id, r);
        assert!(k.may_announce(ms(2000)), "a conflict alone does not fence");
        let get = k.poll_request(ms(2000), wall()).unwrap();
        assert_eq!(get.request, Request::Get);
        let r = api.execute(get.request);
        k.handle_response(ms(2000), get.id, r);
        drive(&mut k, &mut api, ms(2000));
        assert_eq!(k.fence_deadline(), Some(ms(4500)));
        assert!(k.may_announce(ms(2000)));
    }

    #[test]
    fn another_holder_is_waited_out_on_the_local_clock_then_taken_over() {
        let mut api = FakeApi::default();
        api.store(LeaseSpec {
            holder_identity: Some("speaker-n1-old".into()),
            lease_duration_seconds: 5,
            acquire_time: None,
            renew_time: Some(SystemTime::UNIX_EPOCH),
            lease_transitions: 4,
            interfaces_up: BTreeSet::new(),
        });
        let mut k = keeper();
        drive(&mut k, &mut api, ms(100));
        assert_eq!(
            api.writes, 1,
            "no write while the other holder's lease runs"
        );
        assert_eq!(k.poll_timeout(ms(100)), Some(ms(5100)));
        assert_eq!(k.poll_request(ms(5099), wall()), None);
        drive(&mut k, &mut api, ms(5100));
        let lease = api.lease.clone().unwrap();
        assert_eq!(lease.spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(lease.spec.lease_transitions, 5);
        assert_eq!(lease.spec.acquire_time, Some(wall()));
        assert!(!k.may_announce(ms(5100)));
        run(&mut k, &mut api, ms(5100), ms(6100));
        assert!(k.may_announce(ms(6100)));
    }

    #[test]
    fn a_takeover_loses_to_a_renewal_by_the_holder() {
        let mut api = FakeApi::default();
        let other = LeaseSpec {
            holder_identity: Some("intruder".into()),
            lease_duration_seconds: 3,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 0,
            interfaces_up: BTreeSet::new(),
        };
        api.store(other.clone());
        let mut k = keeper();
        drive(&mut k, &mut api, ms(0));
        api.store(other);
        drive(&mut k, &mut api, ms(3000));
        assert_eq!(api.holder().as_deref(), Some("intruder"));
        assert!(!k.may_announce(ms(3000)));
        // It re-read at 3 s and waits a whole lease again.
        assert_eq!(k.poll_timeout(ms(3000)), Some(ms(6000)));
    }

    #[test]
    fn a_vacant_lease_is_taken_at_once() {
        let mut api = FakeApi::default();
        api.store(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: 3,
            acquire_time: None,
            renew_time: None,
            lease_transitions: 2,
            interfaces_up: BTreeSet::new(),
        });
        let mut k = keeper();
        drive(&mut k, &mut api, ms(0));
        assert_eq!(api.holder().as_deref(), Some(ME));
        assert_eq!(api.lease.as_ref().unwrap().spec.lease_transitions, 3);
    }

    #[test]
    fn release_stops_announcing_at_once_and_clears_the_holder() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        assert!(k.may_announce(ms(2100)));
        k.release(ms(2100));
        assert!(!k.may_announce(ms(2100)));
        assert!(!k.is_released());
        let out = k.poll_request(ms(2100), wall()).unwrap();
        let Request::Replace { spec, .. } = &out.request else {
            panic!("{out:?}")
        };
        assert_eq!(spec.holder_identity, None);
        let r = api.execute(out.request);
        k.handle_response(ms(2100), out.id, r);
        assert!(k.is_released());
        assert_eq!(api.holder(), None);
        assert_eq!(k.poll_request(ms(9000), wall()), None);
        assert_eq!(k.poll_timeout(ms(9000)), None);
    }

    #[test]
    fn release_while_a_renewal_is_in_flight_clears_the_holder_after_it() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        let renew = k.poll_request(ms(3000), wall()).unwrap();
        k.release(ms(3000));
        let r = api.execute(renew.request);
        k.handle_response(ms(3010), renew.id, r);
        assert!(!k.may_announce(ms(3010)));
        drive(&mut k, &mut api, ms(3010));
        assert!(k.is_released());
        assert_eq!(api.holder(), None);
    }

    #[test]
    fn release_after_a_conflict_rereads_and_still_clears_the_holder() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        let spec = api.lease.as_ref().unwrap().spec.clone();
        api.store(spec);
        k.release(ms(2100));
        drive(&mut k, &mut api, ms(2100));
        assert!(k.is_released());
        assert_eq!(api.holder(), None);
    }

    #[test]
    fn release_before_holding_has_nothing_to_clear() {
        let mut k = keeper();
        k.release(ms(0));
        let get = k.poll_request(ms(0), wall()).unwrap();
        k.handle_response(ms(0), get.id, Response::Found(None));
        assert!(k.is_released());
        assert_eq!(k.poll_request(ms(0), wall()), None);
    }

    #[test]
    fn an_unanswered_request_is_abandoned_and_its_late_answer_ignored() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(2000));
        let slow = k.poll_request(ms(3000), wall()).unwrap();
        assert_eq!(k.poll_timeout(ms(3000)), Some(ms(4000)));
        k.handle_timeout(ms(4000));
        let retry = k.poll_request(ms(4000), wall()).unwrap();
        assert_ne!(retry.id, slow.id);
        k.handle_response(
            ms(4100),
            slow.id,
            Response::Written {
                resource_version: "99".into(),
            },
        );
        assert_eq!(
            k.fence_deadline(),
            Some(ms(4500)),
            "the late success does not count"
        );
        let r = api.execute(retry.request);
        k.handle_response(ms(4100), retry.id, r);
        assert_eq!(k.fence_deadline(), Some(ms(6500)));
    }

    #[test]
    fn a_changed_interface_set_is_written_at_once() {
        let mut k = keeper();
        let mut api = FakeApi::default();
        run(&mut k, &mut api, ms(0), ms(1500));
        let ifaces: BTreeSet<String> = ["eth1".to_string()].into();
        k.set_interfaces_up(ms(1600), ifaces.clone());
        drive(&mut k, &mut api, ms(1600));
        assert_eq!(api.lease.as_ref().unwrap().spec.interfaces_up, ifaces);
        let writes = api.writes;
        k.set_interfaces_up(ms(1700), ifaces);
        drive(&mut k, &mut api, ms(1700));
        assert_eq!(api.writes, writes, "an unchanged set writes nothing");
    }

    #[test]
    fn answers_that_do_not_fit_the_request_are_retried_not_trusted() {
        let mut k = keeper();
        let get = k.poll_request(ms(0), wall()).unwrap();
        k.handle_response(
            ms(0),
            get.id,
            Response::Written {
                resource_version: "1".into(),
            },
        );
        assert!(!k.may_announce(ms(5000)));
        assert_eq!(k.poll_timeout(ms(0)), Some(ms(250)));
        assert_eq!(
            k.poll_request(ms(250), wall()).map(|o| o.request),
            Some(Request::Get)
        );
    }

    proptest! {
        /// A peer that observes a successful renewal at any delay ≥ 0 after it was committed
        /// (itself at or after it was sent) sees it expire strictly after this node fenced itself.
        #[test]
        fn the_fence_comes_before_any_peer_observed_expiry(
            sent in 0u64..10_000,
            commit_delay in 0u64..2_000,
            answer_delay in 0u64..2_000,
            observe_delay in 0u64..100_000,
        ) {
            let mut k = keeper();
            let mut api = FakeApi::default();
            // Get the lease at `sent`, first request being the create.
            let get = k.poll_request(ms(sent), wall()).unwrap();
            let r = api.execute(get.request);
            k.handle_response(ms(sent), get.id, r);
            let create = k.poll_request(ms(sent), wall()).unwrap();
            let committed_at = sent + commit_delay;
            let r = api.execute(create.request);
            k.handle_response(ms(committed_at + answer_delay), create.id, r);

            let mut peer = Membership::default();
            peer.observe(ms(committed_at + observe_delay), LeaseObservation {
                name: lease_name("n1"),
                holder: Some(ME.into()),
                duration: Some(Duration::from_secs(3)),
                resource_version: api.lease.as_ref().unwrap().resource_version.clone(),
                interfaces_up: BTreeSet::new(),
            }).unwrap();
            let fence = k.fence_deadline().unwrap();
            let expiry = peer.peer("n1").unwrap().expires_at().unwrap();
            prop_assert!(fence < expiry, "fenced at {:?}, peer sees expiry at {:?}", fence, expiry);
            prop_assert!(!k.may_announce(fence));
            prop_assert!(peer.is_live("n1", fence.saturating_sub(Duration::from_nanos(1))));
        }

        /// End to end on simulated time: requests with random latency, failures, lost answers and
        /// hangs, and a peer whose watch delivers each committed write in order within the safety
        /// margin. Whenever this node may announce, the peer considers it live (so the peer does
        /// not announce its VIPs).
        #[test]
        fn no_moment_where_this_node_announces_while_a_peer_thinks_it_dead(
            script in proptest::collection::vec((0u64..1_500, any::<bool>(), any::<bool>(), 0u64..=500), 1..40),
        ) {
            let margin = 500u64;
            let mut k = keeper();
            let mut api = FakeApi::default();
            let mut peer = Membership::default();
            // (answer time, id, response) of requests in flight
            let mut answers: Vec<(u64, RequestId, Response)> = Vec::new();
            // (delivery time, observation) of committed writes
            let mut watch: Vec<(u64, LeaseObservation)> = Vec::new();
            let mut last_delivery = 0u64;
            let mut steps = script.iter().cycle().take(script.len() * 4);
            for t in 0..20_000u64 {
                let now = ms(t);
                // Anything due at an earlier millisecond (including ones queued during it).
                for (_, o) in watch.iter().filter(|(at, _)| *at <= t) {
                    peer.observe(now, o.clone()).unwrap();
                }
                watch.retain(|(at, _)| *at > t);
                let due: Vec<_> = answers.iter().filter(|(at, _, _)| *at <= t).cloned().collect();
                answers.retain(|(at, _, _)| *at > t);
                for (_, id, response) in due {
                    k.handle_response(now, id, response);
                }
                k.handle_timeout(now);
                while let Some(out) = k.poll_request(now, wall()) {
                    let Some(&(latency, commit, answer, observe_delay)) = steps.next() else {
                        // Script exhausted: the API server stops answering.
                        break;
                    };
                    let is_write = out.request != Request::Get;
                    let response = if is_write && !commit {
                        Response::Failed
                    } else {
                        let r = api.execute(out.request);
                        if let Response::Written { resource_version } = &r {
                            let spec = &api.lease.as_ref().unwrap().spec;
                            let at = (t + observe_delay.min(margin)).max(last_delivery);
                            last_delivery = at;
                            watch.push((at, LeaseObservation {
                                name: lease_name("n1"),
                                holder: spec.holder_identity.clone(),
                                duration: Some(Duration::from_secs(spec.lease_duration_seconds as u64)),
                                resource_version: resource_version.clone(),
                                interfaces_up: BTreeSet::new(),
                            }));
                        }
                        r
                    };
                    if answer {
                        answers.push((t + latency, out.id, response));
                    }
                }
                if k.may_announce(now) {
                    prop_assert!(peer.is_live("n1", now), "announcing at {} ms while the peer sees the lease expired", t);
                }
            }
        }
    }
}
