//! The monotonic time the sans-IO core is driven with.
//!
//! [`Instant`] is a point on the driver's monotonic clock, counted from an arbitrary origin the
//! driver picks (typically the `std::time::Instant` at which the process started). The core never
//! reads a clock: every `now` comes in as an argument, so tests jump simulated time instead of
//! sleeping. Wall-clock time (`SystemTime`) is only ever copied into Lease fields for humans and is
//! never compared with anything.

use std::ops::Add;
use std::time::Duration;

/// A point on the local monotonic clock, as an offset from the driver's chosen origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    /// The clock's origin.
    pub const ZERO: Instant = Instant(Duration::ZERO);

    /// The instant `since_origin` after the origin.
    pub const fn from_origin(since_origin: Duration) -> Self {
        Instant(since_origin)
    }

    /// How far this instant lies after the origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `self - d`, or the origin if that would lie before it.
    pub fn saturating_sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    /// Saturates at the largest representable instant instead of panicking.
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_saturates_instead_of_panicking() {
        let late = Instant::from_origin(Duration::MAX);
        assert_eq!(late + Duration::from_secs(1), late);
    }

    #[test]
    fn duration_since_a_later_instant_is_zero() {
        let a = Instant::from_origin(Duration::from_secs(1));
        let b = Instant::from_origin(Duration::from_secs(2));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        assert_eq!(b.saturating_duration_since(a), Duration::from_secs(1));
        assert_eq!(a.saturating_sub(Duration::from_secs(5)), Instant::ZERO);
    }
}
