//! The claim gate: the moment after which no frame claiming a VIP may leave this node.
//!
//! A node that cannot renew its membership lease must fall silent at
//! `last successful renewal + lease duration − safety margin` (self-fencing), whatever order its
//! tasks run in. After a freeze (SIGSTOP, a long GC-like stall, a VM pause) the responder may run
//! before whoever withdraws the VIPs, and requests queued in its socket during the freeze would
//! otherwise be answered at once. So the IO layer asks the gate immediately before *every* claim
//! it sends (ARP replies, solicited NAs, gratuitous ARP, unsolicited NAs), on the clock at send
//! time; a frame refused is counted, not an error.
//!
//! [`ClaimDeadline`] is a cheap shared handle (one `AtomicU64`): the lease driver writes it on
//! every renewal, the announcer's tasks read it per frame. The deadline is stored as nanoseconds
//! since a process-wide `std::time::Instant` origin; two values are reserved: `0` for closed (no
//! claims at all) and `u64::MAX` for unbounded (no fencing, the default of an announcer nobody
//! gates). The encoding ([`encode`], [`allows`]) is pure and takes every instant as an argument.
//!
//! What it must not do: decide when a node may announce (the lease keeper does), or block a
//! sender (a load and a clock read, nothing else).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What the gate lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claims {
    /// Nothing: no frame claiming a VIP may be sent.
    Closed,
    /// Claims sent strictly before this instant.
    Until(Instant),
    /// Every claim (no fencing).
    Unbounded,
}

const CLOSED: u64 = 0;
const UNBOUNDED: u64 = u64::MAX;

/// Encodes `claims` relative to `origin`. A deadline at or before `origin` is closed (it has
/// passed for every instant the gate is asked about); one too far away for 64-bit nanoseconds
/// (about 584 years) is clamped just below unbounded.
pub fn encode(origin: Instant, claims: Claims) -> u64 {
    match claims {
        Claims::Closed => CLOSED,
        Claims::Unbounded => UNBOUNDED,
        Claims::Until(deadline) => match deadline.checked_duration_since(origin) {
            Some(after) => {
                u64::try_from(after.as_nanos()).map_or(UNBOUNDED - 1, |n| n.min(UNBOUNDED - 1))
            }
            None => CLOSED,
        },
    }
}

/// Decodes a value written by [`encode`] with the same `origin`.
pub fn decode(origin: Instant, encoded: u64) -> Claims {
    match encoded {
        CLOSED => Claims::Closed,
        UNBOUNDED => Claims::Unbounded,
        n => origin
            .checked_add(std::time::Duration::from_nanos(n))
            .map_or(Claims::Unbounded, Claims::Until),
    }
}

/// Whether a claim sent at `now` is allowed by the gate value `encoded` (relative to `origin`).
pub fn allows(origin: Instant, encoded: u64, now: Instant) -> bool {
    match encoded {
        CLOSED => false,
        UNBOUNDED => true,
        deadline => {
            let now = now
                .checked_duration_since(origin)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(UNBOUNDED));
            now < deadline
        }
    }
}

/// The process-wide origin of the encoding: fixed at first use, never moved.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// A shared, cheaply read claim gate. Clones share one value: what one writes, every other
/// clone (and every task of the announcer that holds one) sees at its next frame.
#[derive(Debug, Clone)]
pub struct ClaimDeadline(Arc<AtomicU64>);

impl ClaimDeadline {
    /// A gate letting `claims` through.
    pub fn new(claims: Claims) -> Self {
        Self(Arc::new(AtomicU64::new(encode(origin(), claims))))
    }

    /// Lets through claims sent before `deadline`; `None` closes the gate.
    pub fn set(&self, deadline: Option<Instant>) {
        self.set_claims(deadline.map_or(Claims::Closed, Claims::Until));
    }

    /// Replaces what the gate lets through.
    pub fn set_claims(&self, claims: Claims) {
        self.0.store(encode(origin(), claims), Ordering::SeqCst);
    }

    /// What the gate lets through now (the deadline rounded down to a nanosecond).
    pub fn claims(&self) -> Claims {
        decode(origin(), self.0.load(Ordering::SeqCst))
    }

    /// Whether a claim sent at `now` may leave.
    pub fn allows(&self, now: Instant) -> bool {
        allows(origin(), self.0.load(Ordering::SeqCst), now)
    }

    /// Whether a claim sent right now may leave.
    pub fn allows_now(&self) -> bool {
        self.allows(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn closed_allows_nothing_and_unbounded_allows_everything() {
        let origin = Instant::now();
        let later = origin + Duration::from_secs(3600);
        for now in [origin, later] {
            assert!(!allows(origin, encode(origin, Claims::Closed), now));
            assert!(allows(origin, encode(origin, Claims::Unbounded), now));
        }
    }

    #[test]
    fn a_deadline_at_or_before_the_origin_is_closed() {
        let origin = Instant::now() + Duration::from_secs(10);
        assert_eq!(encode(origin, Claims::Until(origin)), CLOSED);
        assert_eq!(
            encode(origin, Claims::Until(origin - Duration::from_secs(1))),
            CLOSED
        );
    }

    #[test]
    fn a_claim_at_the_deadline_itself_is_refused() {
        let origin = Instant::now();
        let deadline = origin + Duration::from_millis(2500);
        let gate = encode(origin, Claims::Until(deadline));
        assert!(allows(origin, gate, deadline - Duration::from_nanos(1)));
        assert!(!allows(origin, gate, deadline));
    }

    #[test]
    fn the_shared_handle_is_seen_by_every_clone() {
        let gate = ClaimDeadline::new(Claims::Unbounded);
        let reader = gate.clone();
        assert!(reader.allows_now());
        gate.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!reader.allows_now());
        let future = Instant::now() + Duration::from_secs(60);
        gate.set(Some(future));
        assert!(reader.allows_now());
        assert!(!reader.allows(future));
        gate.set(None);
        assert_eq!(reader.claims(), Claims::Closed);
        assert!(!reader.allows_now());
    }

    proptest! {
        #[test]
        fn a_claim_is_allowed_exactly_before_the_deadline(
            deadline_ns in 1u64..u64::MAX / 4,
            now_ns in 0u64..u64::MAX / 4,
        ) {
            let origin = Instant::now();
            let deadline = origin + Duration::from_nanos(deadline_ns);
            let now = origin + Duration::from_nanos(now_ns);
            let gate = encode(origin, Claims::Until(deadline));
            prop_assert_eq!(allows(origin, gate, now), now < deadline);
            prop_assert_eq!(decode(origin, gate), Claims::Until(deadline));
        }

        #[test]
        fn a_claim_before_the_origin_is_judged_as_at_the_origin(
            deadline_ns in 1u64..1_000_000_000,
            before_ns in 1u64..1_000_000_000,
        ) {
            let origin = Instant::now() + Duration::from_secs(2);
            let gate = encode(origin, Claims::Until(origin + Duration::from_nanos(deadline_ns)));
            prop_assert!(allows(origin, gate, origin - Duration::from_nanos(before_ns)));
        }
    }
}
