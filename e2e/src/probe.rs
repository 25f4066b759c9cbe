//! A traffic probe for the failover tests, benchmark and demo: from inside a network namespace
//! it sends one UDP datagram to a VIP's echo port (the lab's `cairn-lab-echo`, port 8080) every
//! 10 ms and records every answer: when it came (monotonic), which node answered and which client
//! address that node saw (the echo line `<node> <client address:port>`). [`ProbeRecord::gap`] is
//! the longest time without an answer — the outage a client saw during a failover.
//!
//! Requests are not matched to answers (the echo server does not repeat the payload); a lost
//! request simply shows as time without an answer. Answers from any source other than the
//! target are ignored, as are lines that do not parse. The probe only sends to its target and
//! never changes anything in the namespace.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{Netns, NetnsError};

/// The probe's default interval between two requests.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(10);

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// When it arrived (monotonic).
    pub at: Instant,
    /// The node that answered (the echo server's name).
    pub node: String,
    /// The client address the node saw.
    pub client: SocketAddr,
}

/// What a probe saw between `started` and `ended`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRecord {
    /// When the first request was sent.
    pub started: Instant,
    /// When the record was taken (or the probe stopped).
    pub ended: Instant,
    /// Requests sent.
    pub sent: u64,
    /// Every answer, in arrival order.
    pub answers: Vec<Answer>,
}

impl ProbeRecord {
    /// The longest stretch of the probe's running time without an answer: from the start to
    /// the first answer, between two answers, or from the last answer to the end. The whole
    /// running time when nothing answered.
    pub fn gap(&self) -> Duration {
        longest_gap(self.started, self.ended, self.answers.iter().map(|a| a.at))
    }

    /// The same, counting only the part of the running time from `from` on (answers before it
    /// are ignored; `from` is clamped to the record's span).
    pub fn gap_since(&self, from: Instant) -> Duration {
        let from = from.clamp(self.started, self.ended);
        longest_gap(
            from,
            self.ended,
            self.answers.iter().map(|a| a.at).filter(|at| *at >= from),
        )
    }

    /// Answers per node.
    pub fn answered_by(&self) -> BTreeMap<String, usize> {
        let mut by_node = BTreeMap::new();
        for answer in &self.answers {
            *by_node.entry(answer.node.clone()).or_insert(0) += 1;
        }
        by_node
    }

    /// The answers that arrived at or after `from`.
    pub fn answers_since(&self, from: Instant) -> impl Iterator<Item = &Answer> {
        self.answers.iter().filter(move |a| a.at >= from)
    }

    /// The node of the latest answer.
    pub fn last_node(&self) -> Option<&str> {
        self.answers.last().map(|a| a.node.as_str())
    }
}

/// The longest interval in `[start, end]` containing none of `times` (which need not be sorted;
/// times outside the interval are clamped to it).
pub fn longest_gap(start: Instant, end: Instant, times: impl Iterator<Item = Instant>) -> Duration {
    let end = end.max(start);
    let mut times: Vec<Instant> = times.map(|t| t.clamp(start, end)).collect();
    times.sort_unstable();
    let mut longest = Duration::ZERO;
    let mut previous = start;
    for t in times.into_iter().chain([end]) {
        longest = longest.max(t.duration_since(previous));
        previous = t;
    }
    longest
}

/// Reads an echo line `<node> <client address:port>` (trailing newline optional).
pub fn parse_answer(payload: &[u8]) -> Option<(String, SocketAddr)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (node, client) = text.trim_end_matches(['\n', '\r']).split_once(' ')?;
    if node.is_empty() {
        return None;
    }
    Some((node.to_owned(), client.parse().ok()?))
}

/// Errors starting a probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The UDP socket could not be opened.
    #[error("opening the probe's UDP socket: {0}")]
    Socket(#[source] io::Error),
}

/// A running probe; it stops on [`Probe::stop`] or drop.
pub struct Probe {
    target: SocketAddr,
    started: Instant,
    answers: Arc<Mutex<Vec<Answer>>>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Probe {
    /// Starts probing `target` (a VIP and the echo port) from namespace `ns` every
    /// [`DEFAULT_INTERVAL`].
    pub fn start(ns: &Netns, target: SocketAddr) -> Result<Self, ProbeError> {
        Self::start_every(ns, target, DEFAULT_INTERVAL)
    }

    /// Starts probing `target` from namespace `ns` every `interval`.
    pub fn start_every(
        ns: &Netns,
        target: SocketAddr,
        interval: Duration,
    ) -> Result<Self, ProbeError> {
        let bind: SocketAddr = if target.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = ns
            .run(move || UdpSocket::bind(bind))?
            .map_err(ProbeError::Socket)?;
        let answers = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (answers, sent, stop) = (answers.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || probe(&socket, target, interval, &answers, &sent, &stop))
        };
        Ok(Self {
            target,
            started,
            answers,
            sent,
            stop,
            thread: Some(thread),
        })
    }

    /// The address probed.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// What the probe saw so far.
    pub fn record(&self) -> ProbeRecord {
        self.record_since(self.started)
    }

    /// What the probe saw from `from` on (the record starts at `from`, or when the probe
    /// started if later; `sent` still counts every request). Copies only those answers, so it
    /// stays cheap on a probe that has run for long.
    pub fn record_since(&self, from: Instant) -> ProbeRecord {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        // Answers are appended in arrival order.
        let first = answers.partition_point(|a| a.at < from);
        ProbeRecord {
            started: from.max(self.started),
            ended: Instant::now(),
            sent: self.sent.load(Ordering::Relaxed),
            answers: answers[first..].to_vec(),
        }
    }

    /// [`ProbeRecord::gap`] so far.
    pub fn gap(&self) -> Duration {
        self.record().gap()
    }

    /// [`ProbeRecord::answered_by`] so far.
    pub fn answered_by(&self) -> BTreeMap<String, usize> {
        self.record().answered_by()
    }

    /// Polls the record since `from` ([`Probe::record_since`]) every 10 ms until `done` holds
    /// (true) or `timeout` passes (false).
    pub fn wait_for(
        &self,
        timeout: Duration,
        from: Instant,
        mut done: impl FnMut(&ProbeRecord) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.record_since(from)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops probing and returns the whole record.
    pub fn stop(mut self) -> ProbeRecord {
        self.halt();
        self.record()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.halt();
    }
}

fn probe(
    socket: &UdpSocket,
    target: SocketAddr,
    interval: Duration,
    answers: &Mutex<Vec<Answer>>,
    sent: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut next_send = Instant::now();
    let mut buf = [0u8; 512];
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_send {
            sequence += 1;
            // Errors (an ICMP error reported on the socket, no route for a moment) are
            // outages like any other: they show in the gap.
            if socket
                .send_to(format!("probe {sequence}\n").as_bytes(), target)
                .is_ok()
            {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            next_send += interval;
            if next_send < now {
                next_send = now + interval;
            }
        }
        let wait = next_send
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if socket.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let at = Instant::now();
            if from != target {
                continue;
            }
            if let Some((node, client)) = buf.get(..n).and_then(parse_answer) {
                answers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Answer { at, node, client });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_echo_line_gives_the_node_and_the_client_address() {
        assert_eq!(
            parse_answer(b"cairn-n2 192.0.2.100:40000\n"),
            Some(("cairn-n2".into(), "192.0.2.100:40000".parse().unwrap()))
        );
        assert_eq!(
            parse_answer(b"cairn-n1 [2001:db8:2::100]:5"),
            Some(("cairn-n1".into(), "[2001:db8:2::100]:5".parse().unwrap()))
        );
    }

    #[test]
    fn lines_that_are_not_echo_answers_are_refused() {
        for bad in [
            &b""[..],
            b"\n",
            b"cairn-n1\n",
            b" 192.0.2.100:1\n",
            b"cairn-n1 not-an-address\n",
            b"cairn-n1 192.0.2.100\n",
            b"\xff\xfe 192.0.2.100:1",
        ] {
            assert_eq!(parse_answer(bad), None, "{bad:?}");
        }
    }

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn the_gap_counts_the_start_the_middle_and_the_end() {
        let t = Instant::now();
        let gap = |answers: &[u64], end: u64| {
            longest_gap(t, at(t, end), answers.iter().map(|ms| at(t, *ms)))
        };
        assert_eq!(gap(&[10, 20, 400, 410], 420), Duration::from_millis(380));
        assert_eq!(gap(&[300, 310], 320), Duration::from_millis(300));
        assert_eq!(gap(&[10, 20], 900), Duration::from_millis(880));
        assert_eq!(gap(&[], 50), Duration::from_millis(50));
    }

    #[test]
    fn a_record_counts_answers_per_node_and_the_gap_since_a_moment() {
        let t = Instant::now();
        let client: SocketAddr = "192.0.2.100:40000".parse().unwrap();
        let answer = |ms, node: &str| Answer {
            at: at(t, ms),
            node: node.into(),
            client,
        };
        let record = ProbeRecord {
            started: t,
            ended: at(t, 1000),
            sent: 100,
            answers: vec![
                answer(5, "cairn-n1"),
                answer(15, "cairn-n1"),
                answer(600, "cairn-n2"),
                answer(990, "cairn-n2"),
            ],
        };
        assert_eq!(
            record.answered_by(),
            [("cairn-n1".into(), 2), ("cairn-n2".into(), 2)].into()
        );
        assert_eq!(record.gap(), Duration::from_millis(585));
        assert_eq!(record.gap_since(at(t, 700)), Duration::from_millis(290));
        assert_eq!(record.last_node(), Some("cairn-n2"));
        assert_eq!(record.answers_since(at(t, 600)).count(), 2);
    }

    proptest! {
        #[test]
        fn the_gap_is_the_largest_spacing_and_more_answers_never_widen_it(
            times in proptest::collection::vec(0u64..10_000, 0..100),
            extra in 0u64..10_000,
        ) {
            let t = Instant::now();
            let end = at(t, 10_000);
            let gap = longest_gap(t, end, times.iter().map(|ms| at(t, *ms)));
            // The answers cut the run into len + 1 pieces; the longest is at least the mean.
            prop_assert!(gap * (times.len() as u32 + 1) >= Duration::from_millis(10_000));
            let mut sorted = times.clone();
            sorted.sort_unstable();
            let mut edges = vec![0];
            edges.extend(&sorted);
            edges.push(10_000);
            let widest = edges.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
            prop_assert_eq!(gap, Duration::from_millis(widest));
            let more = longest_gap(t, end, times.iter().chain([&extra]).map(|ms| at(t, *ms)));
            prop_assert!(more <= gap);
        }
    }
}
