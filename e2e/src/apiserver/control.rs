//! Lab-only controls of the API server: per-verb request counters (what "API requests made"
//! reports) and fault injection (added latency, unreachable periods). Plain data with locks and
//! a `watch` channel; the server reads them, tests and `/debug/*` endpoints set them. Nothing
//! here exists on a real kube-apiserver, and product code must never call it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

/// Requests served, by (verb, resource). Verbs are the Kubernetes API verbs (`get`, `list`,
/// `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`); discovery requests count
/// as verb `discovery` with resource `-`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// (verb, resource such as `leases.coordination.k8s.io`) -> requests
    pub by_verb_resource: BTreeMap<(String, String), u64>,
}

impl RequestCounts {
    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.by_verb_resource.values().sum()
    }

    /// Requests with one verb, over all resources.
    pub fn verb(&self, verb: &str) -> u64 {
        self.by_verb_resource
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests with one verb on one resource (`leases.coordination.k8s.io`, `services`).
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.by_verb_resource
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// JSON form served at `GET /debug/requests`:
    /// `{"total": N, "byVerb": {"get": N}, "byVerbResource": {"get leases.coordination.k8s.io": N}}`.
    pub fn to_json(&self) -> Value {
        let mut by_verb = BTreeMap::new();
        for ((verb, _), n) in &self.by_verb_resource {
            *by_verb.entry(verb.clone()).or_insert(0u64) += n;
        }
        let by_vr: BTreeMap<String, u64> = self
            .by_verb_resource
            .iter()
            .map(|((v, r), n)| (format!("{v} {r}"), *n))
            .collect();
        json!({"total": self.total(), "byVerb": by_verb, "byVerbResource": by_vr})
    }
}

/// Thread-safe request counter.
#[derive(Debug, Default)]
pub struct RequestCounter(Mutex<RequestCounts>);

impl RequestCounter {
    /// Count one request.
    pub fn count(&self, verb: &str, resource: &str) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *c.by_verb_resource
            .entry((verb.to_owned(), resource.to_owned()))
            .or_insert(0) += 1;
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Faults currently injected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Added before every API request is handled (not `/debug/*`).
    pub latency: Duration,
    /// While `Some(t)` and `now < t`, new connections are closed on accept and open ones
    /// (watches included) are cut.
    pub unreachable_until: Option<Instant>,
}

impl Faults {
    /// Whether the server is unreachable at `now`.
    pub fn unreachable_at(&self, now: Instant) -> bool {
        self.unreachable_until.is_some_and(|t| now < t)
    }
}
