//! The allocator's Prometheus metrics and its `/metrics`, `/healthz`, `/readyz` endpoint.
//!
//! Metrics live in a [`Metrics`] value owned by the binary and passed to the controller (no
//! global registry), so tests can build their own and read them.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::controller::Health;
use crate::engine::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

/// The allocator's metrics (all prefixed `cairn_`).
pub struct Metrics {
    registry: Registry,
    addresses: MetricFamily<PoolLabels, Gauge>,
    in_use: MetricFamily<PoolLabels, Gauge>,
    services_allocated: Gauge,
    errors: MetricFamily<ReasonLabels, Counter>,
    leader: MetricFamily<ComponentLabels, Gauge>,
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
        let addresses = MetricFamily::<PoolLabels, Gauge>::default();
        let in_use = MetricFamily::<PoolLabels, Gauge>::default();
        let services_allocated = Gauge::default();
        let errors = MetricFamily::<ReasonLabels, Counter>::default();
        let leader = MetricFamily::<ComponentLabels, Gauge>::default();
        registry.register(
            "allocator_addresses_total",
            "Addresses in each pool (saturates for huge IPv6 pools)",
            addresses.clone(),
        );
        registry.register(
            "allocator_addresses_in_use_total",
            "Addresses of each pool bound to Services",
            in_use.clone(),
        );
        registry.register(
            "allocator_services_allocated_total",
            "Services holding a binding",
            services_allocated.clone(),
        );
        registry.register(
            "allocator_errors",
            "Allocation failures, invalid pools and failed writes, by reason",
            errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads its component",
            leader.clone(),
        );
        Self {
            registry,
            addresses,
            in_use,
            services_allocated,
            errors,
            leader,
        }
    }

    /// Records a pool's size and usage for one family.
    pub fn set_pool(&self, pool: &str, family: Family, in_use: u128, total: u128) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
            family: match family {
                Family::V4 => "ipv4".into(),
                Family::V6 => "ipv6".into(),
            },
        };
        let clamp = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
        self.addresses.get_or_create(&labels).set(clamp(total));
        self.in_use.get_or_create(&labels).set(clamp(in_use));
    }

    /// Records how many Services hold a binding.
    pub fn set_services_allocated(&self, count: usize) {
        self.services_allocated
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts one error of the given reason.
    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader
            .get_or_create(&ComponentLabels {
                component: "allocator".into(),
            })
            .set(i64::from(leading));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
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

    #[test]
    fn metrics_are_prefixed_and_labelled() {
        let m = Metrics::new();
        m.set_pool("web", Family::V4, 3, 16);
        m.set_services_allocated(3);
        m.error("allocation_failed");
        m.set_leader(true);
        let text = m.encode();
        for line in [
            "cairn_allocator_addresses_total{pool=\"web\",family=\"ipv4\"} 16",
            "cairn_allocator_addresses_in_use_total{pool=\"web\",family=\"ipv4\"} 3",
            "cairn_allocator_services_allocated_total 3",
            "cairn_allocator_errors_total{reason=\"allocation_failed\"} 1",
            "cairn_leader{component=\"allocator\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn readiness_follows_health() {
        let m = Metrics::new();
        let health = Health::default();
        assert_eq!(
            respond("/readyz", &m, &health).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond("/healthz", &m, &health).status(), StatusCode::OK);
        assert_eq!(
            respond("/nope", &m, &health).status(),
            StatusCode::NOT_FOUND
        );
    }
}
