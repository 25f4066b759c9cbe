//! The speaker's Prometheus metrics and its `/metrics`, `/healthz`, `/readyz` endpoint.
//!
//! Metrics live in a [`Metrics`] value owned by the binary and passed to the runtime (no global
//! registry), so tests can build their own and read them. The L2, BGP and lease counters are
//! kept by `cairn-arp`, `cairn-bgp` and the lease driver as running totals; the runtime hands
//! them over as they are and this module adds what grew since the last look (a total that went
//! down belongs to a restarted session and counts from zero).
//!
//! Names (all prefixed `cairn_`): `speaker_announced{service,ip,protocol}`,
//! `l2_requests_received_total{interface}`, `l2_responses_sent_total{interface}`,
//! `l2_gratuitous_sent_total{interface}`, `l2_fenced_suppressed_total{interface}` (claims not
//! sent because this node's lease deadline had passed), `bgp_session_up{peer}`,
//! `bgp_announced_prefixes{peer}`, `bgp_updates_total{peer}`, `membership_live_nodes`,
//! `lease_renew_failures_total`, `speaker_invalid_objects`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn_arp::Counters;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// How a VIP is announced, as the `protocol` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// Gratuitous ARP / NA and answering ARP / NS.
    L2,
    /// BGP to one or more peers.
    Bgp,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::L2 => "l2",
            Protocol::Bgp => "bgp",
        }
    }
}

/// One announced (Service, VIP, protocol): `service` is `namespace/name`.
pub type AnnouncedKey = (String, std::net::IpAddr, Protocol);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnouncedLabels {
    service: String,
    ip: String,
    protocol: String,
}

impl AnnouncedLabels {
    fn of((service, ip, protocol): &AnnouncedKey) -> Self {
        Self {
            service: service.clone(),
            ip: ip.to_string(),
            protocol: protocol.label().to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// One BGP peer's figures, as `cairn-bgp` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerFigures {
    /// The session is Established.
    pub up: bool,
    /// Prefixes the peer has from us.
    pub prefixes: usize,
    /// UPDATEs sent by the current session's task since it started.
    pub updates_sent: u64,
}

/// Running totals last handed over, to count only what grew.
#[derive(Default)]
struct Seen {
    // interface -> counters
    l2: BTreeMap<String, Counters>,
    // peer -> updates sent
    updates: BTreeMap<String, u64>,
    renew_failures: u64,
    announced: BTreeSet<AnnouncedKey>,
    peers: BTreeSet<String>,
}

/// What grew from `last` to `now`; a smaller `now` is a restart, counted from zero.
fn grown(last: u64, now: u64) -> u64 {
    now.checked_sub(last).unwrap_or(now)
}

/// The speaker's metrics.
pub struct Metrics {
    registry: Registry,
    announced: Family<AnnouncedLabels, Gauge>,
    l2_requests: Family<InterfaceLabels, Counter>,
    l2_responses: Family<InterfaceLabels, Counter>,
    l2_gratuitous: Family<InterfaceLabels, Counter>,
    l2_fenced: Family<InterfaceLabels, Counter>,
    bgp_up: Family<PeerLabels, Gauge>,
    bgp_prefixes: Family<PeerLabels, Gauge>,
    bgp_updates: Family<PeerLabels, Counter>,
    live_nodes: Gauge,
    renew_failures: Counter,
    invalid_objects: Gauge,
    seen: Mutex<Seen>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let m = Self {
            registry: Registry::default(),
            announced: Family::default(),
            l2_requests: Family::default(),
            l2_responses: Family::default(),
            l2_gratuitous: Family::default(),
            l2_fenced: Family::default(),
            bgp_up: Family::default(),
            bgp_prefixes: Family::default(),
            bgp_updates: Family::default(),
            live_nodes: Gauge::default(),
            renew_failures: Counter::default(),
            invalid_objects: Gauge::default(),
            seen: Mutex::default(),
        };
        registry.register(
            "speaker_announced",
            "1 for each Service address this node announces, by protocol",
            m.announced.clone(),
        );
        registry.register(
            "l2_requests_received",
            "ARP requests and Neighbor Solicitations received, per interface",
            m.l2_requests.clone(),
        );
        registry.register(
            "l2_responses_sent",
            "ARP replies and Neighbor Advertisements sent in answer, per interface",
            m.l2_responses.clone(),
        );
        registry.register(
            "l2_gratuitous_sent",
            "Gratuitous ARP and unsolicited Neighbor Advertisements sent, per interface",
            m.l2_gratuitous.clone(),
        );
        registry.register(
            "l2_fenced_suppressed",
            "ARP/NDP frames claiming a VIP not sent because the lease deadline had passed, per interface",
            m.l2_fenced.clone(),
        );
        registry.register(
            "bgp_session_up",
            "1 while the session to the BGPPeer is Established",
            m.bgp_up.clone(),
        );
        registry.register(
            "bgp_announced_prefixes",
            "Prefixes the BGPPeer currently has from this node",
            m.bgp_prefixes.clone(),
        );
        registry.register(
            "bgp_updates",
            "BGP UPDATE messages sent to the BGPPeer",
            m.bgp_updates.clone(),
        );
        registry.register(
            "membership_live_nodes",
            "Speakers whose Lease is live, this node included",
            m.live_nodes.clone(),
        );
        registry.register(
            "lease_renew_failures",
            "Lease requests of this node that failed or timed out",
            m.renew_failures.clone(),
        );
        registry.register(
            "speaker_invalid_objects",
            "Cairn resources, Services and BGPPeers skipped as invalid or unusable",
            m.invalid_objects.clone(),
        );
        Self { registry, ..m }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets what this node announces: each key at 1, keys no longer announced removed.
    pub fn set_announced(&self, now: BTreeSet<AnnouncedKey>) {
        let mut seen = self.seen();
        for gone in seen.announced.difference(&now) {
            self.announced.remove(&AnnouncedLabels::of(gone));
        }
        for key in &now {
            self.announced
                .get_or_create(&AnnouncedLabels::of(key))
                .set(1);
        }
        seen.announced = now;
    }

    /// Hands over the L2 announcer's running totals per interface.
    pub fn observe_l2(&self, counters: &BTreeMap<String, Counters>) {
        let mut seen = self.seen();
        for (interface, now) in counters {
            let last = seen.l2.get(interface).copied().unwrap_or_default();
            let labels = InterfaceLabels {
                interface: interface.clone(),
            };
            for (family, last, now) in [
                (
                    &self.l2_requests,
                    last.requests_received,
                    now.requests_received,
                ),
                (&self.l2_responses, last.replies_sent, now.replies_sent),
                (
                    &self.l2_gratuitous,
                    last.gratuitous_sent,
                    now.gratuitous_sent,
                ),
                (
                    &self.l2_fenced,
                    last.fenced_suppressed,
                    now.fenced_suppressed,
                ),
            ] {
                family.get_or_create(&labels).inc_by(grown(last, now));
            }
            seen.l2.insert(interface.clone(), *now);
        }
    }

    /// Hands over every running peer's figures; peers no longer running lose their gauges.
    pub fn observe_bgp(&self, peers: &BTreeMap<String, PeerFigures>) {
        let mut seen = self.seen();
        let now: BTreeSet<String> = peers.keys().cloned().collect();
        for gone in seen.peers.difference(&now) {
            let labels = PeerLabels { peer: gone.clone() };
            self.bgp_up.remove(&labels);
            self.bgp_prefixes.remove(&labels);
        }
        for (peer, figures) in peers {
            let labels = PeerLabels { peer: peer.clone() };
            self.bgp_up
                .get_or_create(&labels)
                .set(i64::from(figures.up));
            self.bgp_prefixes
                .get_or_create(&labels)
                .set(i64::try_from(figures.prefixes).unwrap_or(i64::MAX));
            let last = seen.updates.get(peer).copied().unwrap_or(0);
            self.bgp_updates
                .get_or_create(&labels)
                .inc_by(grown(last, figures.updates_sent));
            seen.updates.insert(peer.clone(), figures.updates_sent);
        }
        seen.updates.retain(|peer, _| now.contains(peer));
        seen.peers = now;
    }

    /// Hands over the membership figures: live nodes and the running total of renew failures.
    pub fn observe_membership(&self, live_nodes: usize, renew_failures: u64) {
        let mut seen = self.seen();
        self.live_nodes
            .set(i64::try_from(live_nodes).unwrap_or(i64::MAX));
        self.renew_failures
            .inc_by(grown(seen.renew_failures, renew_failures));
        seen.renew_failures = renew_failures;
    }

    /// Sets how many objects are currently skipped as invalid or unusable.
    pub fn set_invalid_objects(&self, count: usize) {
        self.invalid_objects
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Readiness, shared with the health endpoint: caches synced and this node's Lease held.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// True once the caches are synced and the node holds its Lease (may announce).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Sets readiness; returns the previous value.
    pub fn set_ready(&self, ready: bool) -> bool {
        self.ready.swap(ready, Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` (the process is up) and `/readyz` (see [`Health`]) on `addr`
/// until the task is dropped. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (metrics, health) = (metrics.clone(), health.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let response = respond(req.uri().path(), &metrics, &health);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn respond(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.encode()),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" if health.is_ready() => (StatusCode::OK, "ready\n".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(text: &str, line: &str) {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }

    #[test]
    fn every_metric_of_the_issue_is_exported_under_its_name() {
        let m = Metrics::new();
        m.set_announced(
            [(
                "web/s".to_string(),
                "192.0.2.200".parse().expect("ip"),
                Protocol::L2,
            )]
            .into(),
        );
        let counters = Counters {
            requests_received: 5,
            replies_sent: 4,
            gratuitous_sent: 3,
            malformed_dropped: 0,
            fenced_suppressed: 6,
        };
        m.observe_l2(&[("eth0".to_string(), counters)].into());
        m.observe_bgp(
            &[(
                "tor".to_string(),
                PeerFigures {
                    up: true,
                    prefixes: 2,
                    updates_sent: 7,
                },
            )]
            .into(),
        );
        m.observe_membership(3, 1);
        m.set_invalid_objects(2);
        let text = m.encode();
        for line in [
            "cairn_speaker_announced{service=\"web/s\",ip=\"192.0.2.200\",protocol=\"l2\"} 1",
            "cairn_l2_requests_received_total{interface=\"eth0\"} 5",
            "cairn_l2_responses_sent_total{interface=\"eth0\"} 4",
            "cairn_l2_gratuitous_sent_total{interface=\"eth0\"} 3",
            "cairn_l2_fenced_suppressed_total{interface=\"eth0\"} 6",
            "cairn_bgp_session_up{peer=\"tor\"} 1",
            "cairn_bgp_announced_prefixes{peer=\"tor\"} 2",
            "cairn_bgp_updates_total{peer=\"tor\"} 7",
            "cairn_membership_live_nodes 3",
            "cairn_lease_renew_failures_total 1",
            "cairn_speaker_invalid_objects 2",
        ] {
            has(&text, line);
        }
    }

    #[test]
    fn running_totals_count_only_growth_and_a_restarted_session_counts_from_zero() {
        let m = Metrics::new();
        let figures = |updates_sent| {
            [(
                "tor".to_string(),
                PeerFigures {
                    up: true,
                    prefixes: 1,
                    updates_sent,
                },
            )]
            .into()
        };
        m.observe_bgp(&figures(10));
        m.observe_bgp(&figures(12));
        m.observe_bgp(&figures(3));
        has(&m.encode(), "cairn_bgp_updates_total{peer=\"tor\"} 15");
        m.observe_membership(1, 2);
        m.observe_membership(1, 2);
        m.observe_membership(1, 5);
        has(&m.encode(), "cairn_lease_renew_failures_total 5");
    }

    #[test]
    fn an_address_no_longer_announced_and_a_peer_removed_disappear() {
        let m = Metrics::new();
        let key = (
            "web/s".to_string(),
            "203.0.113.1".parse().expect("ip"),
            Protocol::Bgp,
        );
        m.set_announced([key].into());
        m.observe_bgp(&[("tor".to_string(), PeerFigures::default())].into());
        m.set_announced(BTreeSet::new());
        m.observe_bgp(&BTreeMap::new());
        let text = m.encode();
        assert!(!text.contains("203.0.113.1"), "{text}");
        assert!(!text.contains("cairn_bgp_session_up{"), "{text}");
    }

    #[test]
    fn readiness_follows_health() {
        let m = Metrics::new();
        let health = Health::default();
        assert_eq!(
            respond("/readyz", &m, &health).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(!health.set_ready(true));
        assert_eq!(respond("/readyz", &m, &health).status(), StatusCode::OK);
        assert_eq!(respond("/healthz", &m, &health).status(), StatusCode::OK);
        assert_eq!(
            respond("/nope", &m, &health).status(),
            StatusCode::NOT_FOUND
        );
    }
}
