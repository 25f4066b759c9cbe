//! The announcement schedule of one interface: which VIP is due for its next gratuitous ARP /
//! unsolicited NA round, and when the next one falls due.
//!
//! Sans-IO: it contains no networking code and does not read a clock; every call takes `now`.
//! Use it as: `start`/`cancel` on ownership changes, then `poll_transmit(now)` until it returns
//! `None`, sending one announcement round per VIP it returns, then sleep until `poll_timeout()`.
//! Cancelling a VIP removes it at once: no later `poll_transmit` returns it.
//!
//! RFC 5227 §2.3 sends two announcements two seconds apart; like MetalLB and keepalived, the
//! default here sends more rounds, closer together (five, 1 s apart), because switches and
//! neighbours that miss the first frame keep stale entries until the next one.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How a VIP is announced after it is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstConfig {
    /// Rounds in the burst; the first is sent at once. Zero sends nothing (respond only).
    pub count: u32,
    /// Time between rounds of the burst.
    pub spacing: Duration,
    /// After the burst, one more round every `refresh`, for as long as the VIP is held. `None`
    /// (the default) stops after the burst.
    pub refresh: Option<Duration>,
}

impl Default for BurstConfig {
    fn default() -> Self {
        Self {
            count: 5,
            spacing: Duration::from_secs(1),
            refresh: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the next round is due.
    due: Instant,
    /// Burst rounds still to send after the one due at `due` (refresh rounds not counted).
    left: u32,
}

/// Per-interface announcement timers.
#[derive(Debug, Clone)]
pub struct AnnounceSchedule {
    config: BurstConfig,
    // vip -> its next round
    entries: HashMap<IpAddr, Entry>,
    // (due, vip), ordered: the first element is the next round due
    queue: BTreeSet<(Instant, IpAddr)>,
}

impl AnnounceSchedule {
    /// An empty schedule.
    pub fn new(config: BurstConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
        }
    }

    /// Starts (or restarts from the first round) the burst for `vip`, first round due `now`.
    pub fn start(&mut self, now: Instant, vip: IpAddr) {
        self.cancel(vip);
        if self.config.count == 0 {
            return;
        }
        self.insert(
            vip,
            Entry {
                due: now,
                left: self.config.count - 1,
            },
        );
    }

    /// Stops announcing `vip`; true when it was scheduled.
    pub fn cancel(&mut self, vip: IpAddr) -> bool {
        match self.entries.remove(&vip) {
            Some(entry) => {
                self.queue.remove(&(entry.due, vip));
                true
            }
            None => false,
        }
    }

    /// True when `vip` has rounds still to come.
    pub fn is_scheduled(&self, vip: IpAddr) -> bool {
        self.entries.contains_key(&vip)
    }

    /// The next VIP whose round is due at `now`, if any; the caller sends one round for it.
    /// Its following round is scheduled `spacing` (or `refresh`) after `now`, so a late caller
    /// never gets a catch-up flood.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<IpAddr> {
        let &(due, vip) = self.queue.first()?;
        if due > now {
            return None;
        }
        self.queue.remove(&(due, vip));
        let entry = self.entries.remove(&vip)?;
        let next = if entry.left > 0 {
            Some(Entry {
                due: now + self.config.spacing,
                left: entry.left - 1,
            })
        } else {
            self.config.refresh.map(|refresh| Entry {
                due: now + refresh,
                left: 0,
            })
        };
        if let Some(next) = next {
            self.insert(vip, next);
        }
        Some(vip)
    }

    /// When the next round falls due; `None` when nothing is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.first().map(|&(due, _)| due)
    }

    fn insert(&mut self, vip: IpAddr, entry: Entry) {
        self.entries.insert(vip, entry);
        self.queue.insert((entry.due, vip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    /// Drives the schedule by jumping to each timeout; returns (offset from t0, vip) per round.
    fn drive(
        schedule: &mut AnnounceSchedule,
        t0: Instant,
        until: Duration,
    ) -> Vec<(Duration, IpAddr)> {
        let mut sent = Vec::new();
        let mut now = t0;
        while now <= t0 + until {
            while let Some(v) = schedule.poll_transmit(now) {
                sent.push((now - t0, v));
            }
            match schedule.poll_timeout() {
                Some(next) => now = next,
                None => break,
            }
        }
        sent
    }

    #[test]
    fn default_burst_is_immediate_then_four_more_one_second_apart_then_stops() {
        let t0 = Instant::now();
        let mut schedule = AnnounceSchedule::new(BurstConfig::default());
        schedule.start(t0, vip(1));
        let sent = drive(&mut schedule, t0, Duration::from_secs(60));
        let offsets: Vec<u64> = sent.iter().map(|(d, _)| d.as_secs()).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4]);
        assert_eq!(schedule.poll_timeout(), None);
        assert!(!schedule.is_scheduled(vip(1)));
    }

    #[test]
    fn nothing_is_sent_before_the_next_round_is_due() {
        let t0 = Instant::now();
        let mut schedule = AnnounceSchedule::new(BurstConfig::default());
        schedule.start(t0, vip(1));
        assert_eq!(schedule.poll_transmit(t0), Some(vip(1)));
        assert_eq!(
            schedule.poll_transmit(t0 + Duration::from_millis(999)),
            None
        );
        assert_eq!(schedule.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn cancel_stops_the_burst_at_once() {
        let t0 = Instant::now();
        let mut schedule = AnnounceSchedule::new(BurstConfig::default());
        schedule.start(t0, vip(1));
        schedule.start(t0, vip(2));
        assert!(schedule.poll_transmit(t0).is_some());
        assert!(schedule.cancel(vip(1)));
        assert!(!schedule.cancel(vip(1)));
        let sent = drive(&mut schedule, t0, Duration::from_secs(60));
        assert!(sent.iter().all(|(_, v)| *v == vip(2)));
        assert!(!schedule.is_scheduled(vip(1)));
    }

    #[test]
    fn refresh_keeps_announcing_after_the_burst() {
        let t0 = Instant::now();
        let config = BurstConfig {
            count: 2,
            spacing: Duration::from_secs(1),
            refresh: Some(Duration::from_secs(30)),
        };
        let mut schedule = AnnounceSchedule::new(config);
        schedule.start(t0, vip(1));
        let sent = drive(&mut schedule, t0, Duration::from_secs(95));
        let offsets: Vec<u64> = sent.iter().map(|(d, _)| d.as_secs()).collect();
        assert_eq!(offsets, [0, 1, 31, 61, 91]);
        assert!(schedule.is_scheduled(vip(1)));
    }

    #[test]
    fn restart_begins_the_burst_again() {
        let t0 = Instant::now();
        let mut schedule = AnnounceSchedule::new(BurstConfig::default());
        schedule.start(t0, vip(1));
        let _ = drive(&mut schedule, t0, Duration::from_secs(3));
        let t1 = t0 + Duration::from_secs(10);
        schedule.start(t1, vip(1));
        let sent = drive(&mut schedule, t1, Duration::from_secs(60));
        assert_eq!(sent.len(), 5);
    }

    #[test]
    fn zero_count_schedules_nothing() {
        let t0 = Instant::now();
        let mut schedule = AnnounceSchedule::new(BurstConfig {
            count: 0,
            ..BurstConfig::default()
        });
        schedule.start(t0, vip(1));
        assert_eq!(schedule.poll_transmit(t0), None);
        assert_eq!(schedule.poll_timeout(), None);
    }

    #[test]
    fn ten_thousand_vips_are_all_due_in_the_first_round() {
        let t0 = Instant::now();
        let mut schedule = AnnounceSchedule::new(BurstConfig::default());
        for i in 0..10_000u32 {
            schedule.start(t0, IpAddr::from((0xc000_0000u32 + i).to_be_bytes()));
        }
        let mut first_round = 0;
        while schedule.poll_transmit(t0).is_some() {
            first_round += 1;
        }
        assert_eq!(first_round, 10_000);
        assert_eq!(schedule.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    }
}
