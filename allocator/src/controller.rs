//! The allocator controller: the engine driven by a live cluster.
//!
//! Order of work, which is what keeps addresses from moving:
//! 1. Reflectors for Services, `IPAddressPool`s and Namespaces sync their caches.
//! 2. Once this replica leads (see [`crate::leader`]), a fresh engine is loaded with the valid
//!    pools and restored from every Service's persisted binding (annotations, then status, then
//!    MetalLB's hint) **before** anything new is allocated. Only then is the replica ready.
//! 3. Passes, each triggered by any cache change: every Service of ours is assigned (idempotent
//!    for bound Services), Services gone or no longer ours are released, and only differences are
//!    written: annotations with a merge patch carrying the cached `resourceVersion` (a 409 means
//!    the cache is behind; the watch event that follows triggers a new pass), then the status.
//!
//! A replica writes only while [`crate::leader::Elector`] says it leads; when leadership lapses
//! the engine is dropped and rebuilt from the cluster on the next term, so a standby that takes
//! over changes nothing that was already bound.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::v1alpha1::IPAddressPool;
use cairn_api::validation::{self, ValidPool};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::adapter;
use crate::engine::{Binding, Engine, Family, Refusal, ServiceKey};
use crate::leader::{self, ElectorConfig};
use crate::metrics::Metrics;

/// What the controller needs to know about its deployment.
#[derive(Clone, Debug)]
pub struct Config {
    /// Services with this `spec.loadBalancerClass` (or none) are handled.
    pub lb_class: String,
    /// Namespace of the pools and of the leader Lease.
    pub namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Lease renew interval.
    pub renew_interval: Duration,
    /// Concurrent writes to the API server during a pass.
    pub write_concurrency: usize,
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A cache's writer went away before it synced (its watch task ended).
    #[error("the {0} cache stopped before it synced")]
    CacheStopped(&'static str),
    /// The election could not run.
    #[error(transparent)]
    Election(#[from] leader::ElectionError),
}

/// Readiness, shared with the health endpoint.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// True once this replica leads and has restored every binding, or is a synced standby.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

/// The caches the controller reads.
struct Caches {
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    namespaces: Store<Namespace>,
}

/// Background tasks that die with the controller, as they would with its process.
struct TaskGuard(Vec<tokio::task::AbortHandle>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts a reflector for `api`, waking `changed` on every event.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(_)) => changed.notify_one(),
                Ok(None) => break,
                Err(e) => tracing::warn!(error = %e, "watch error; retrying with backoff"),
            }
        }
    });
    (reader, task)
}

/// Runs the controller until `shutdown` turns true.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    let changed = Arc::new(Notify::new());
    let (services, t1) = reflect(Api::<Service>::all(client.clone()), changed.clone());
    let (pools, t2) = reflect(
        Api::<IPAddressPool>::namespaced(client.clone(), &config.namespace),
        changed.clone(),
    );
    let (namespaces, t3) = reflect(Api::<Namespace>::all(client.clone()), changed.clone());
    let caches = Caches {
        services,
        pools,
        namespaces,
    };
    let (leading_tx, leading) = watch::channel(None);
    let election = tokio::spawn(leader::run(
        Api::<Lease>::namespaced(client.clone(), &config.namespace),
        config.lease_name.clone(),
        ElectorConfig {
            identity: config.identity.clone(),
            lease_duration: config.lease_duration,
            renew_interval: config.renew_interval,
            margin: config.renew_interval / 2,
        },
        leading_tx,
        shutdown.clone(),
    ));
    let _guard = TaskGuard(vec![
        t1.abort_handle(),
        t2.abort_handle(),
        t3.abort_handle(),
        election.abort_handle(),
    ]);
    let result = serve(
        &client, &config, &caches, &changed, leading, &metrics, &health, shutdown,
    )
    .await;
    if let Ok(Err(e)) = election.await {
        return Err(e.into());
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    client: &Client,
    config: &Config,
    caches: &Caches,
    changed: &Notify,
    mut leading: watch::Receiver<Option<Instant>>,
    metrics: &Metrics,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ControllerError> {
    for (name, ready) in [
        ("Service", caches.services.wait_until_ready().await),
        ("IPAddressPool", caches.pools.wait_until_ready().await),
        ("Namespace", caches.namespaces.wait_until_ready().await),
    ] {
        ready.map_err(|_| ControllerError::CacheStopped(name))?;
    }
    tracing::info!("caches synced");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "cairn-allocator".into(),
            instance: Some(config.identity.clone()),
        },
    );
    let leads = |l: &Option<Instant>| l.is_some_and(|until| Instant::now() < until);
    while !*shutdown.borrow() {
        metrics.set_leader(false);
        health.set_ready(false);
        tokio::select! {
            _ = leading.wait_for(leads) => {}
            _ = shutdown.changed() => continue,
        }
        let mut term = Term::begin(client, config, caches, &recorder, leading.clone(), metrics);
        health.set_ready(true);
        metrics.set_leader(true);
        tracing::info!(
            restored = term.engine.bindings().count(),
            "leading: bindings restored"
        );
        loop {
            term.pass().await;
            let deadline = (*leading.borrow()).unwrap_or_else(Instant::now);
            tokio::select! {
                _ = changed.notified() => {}
                _ = leading.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = shutdown.changed() => break,
            }
            if !term.leads() {
                tracing::warn!("leadership lost: writes stopped, state dropped");
                break;
            }
        }
    }
    Ok(())
}

/// What a pass last did for a Service, so Events are raised on changes only and writes that are
/// already under way are not repeated.
#[derive(Default)]
struct ServiceMemory {
    /// last outcome announced by an Event
    outcome: Option<Result<Binding, String>>,
    /// problems last announced
    problems: Vec<String>,
    /// resourceVersion an annotation write was based on, and what it wrote
    pending: Option<(String, Option<Binding>)>,
}

/// One leadership term: an engine rebuilt from the cluster, and what was written during it.
struct Term<'a> {
    client: &'a Client,
    config: &'a Config,
    caches: &'a Caches,
    recorder: &'a Recorder,
    leading: watch::Receiver<Option<Instant>>,
    metrics: &'a Metrics,
    engine: Engine,
    /// pool name -> the validated spec the engine has
    pools: BTreeMap<String, ValidPool>,
    /// pool name -> last Valid message written (None: valid)
    pool_validity: BTreeMap<String, Option<String>>,
    /// pool name -> last status written
    pool_status: BTreeMap<String, serde_json::Value>,
    services: HashMap<ServiceKey, ServiceMemory>,
}

impl<'a> Term<'a> {
    /// Loads the pools and restores every persisted binding, before anything is assigned.
    fn begin(
        client: &'a Client,
        config: &'a Config,
        caches: &'a Caches,
        recorder: &'a Recorder,
        leading: watch::Receiver<Option<Instant>>,
        metrics: &'a Metrics,
    ) -> Self {
        let mut term = Term {
            client,
            config,
            caches,
            recorder,
            leading,
            metrics,
            engine: Engine::new(),
            pools: BTreeMap::new(),
            pool_validity: BTreeMap::new(),
            pool_status: BTreeMap::new(),
            services: HashMap::new(),
        };
        term.sync_pools();
        let pools = &term.pools;
        let pool_of = |ips: &[IpAddr]| {
            pools
                .iter()
                .find(|(_, p)| {
                    ips.iter()
                        .all(|ip| p.ranges.iter().any(|r| r.contains(*ip)))
                })
                .map(|(name, _)| name.clone())
        };
        let ns_labels = namespace_labels(caches);
        let entries: Vec<_> = caches
            .services
            .state()
            .iter()
            .filter(|svc| adapter::is_ours(svc, &config.lb_class))
            .filter_map(|svc| {
                let binding = adapter::persisted_binding(svc, pool_of)?;
                let labels = ns_labels
                    .get(svc.namespace().as_deref().unwrap_or_default())
                    .cloned()
                    .unwrap_or_default();
                let request = adapter::service_request(svc, &labels).ok()?;
                Some((request, binding))
            })
            .collect();
        if let Err(e) = term.engine.restore(entries) {
            // A fresh engine has never assigned, so restore cannot be refused.
            tracing::error!(error = %e, "restore refused");
        }
        term
    }

    fn leads(&self) -> bool {
        self.leading
            .borrow()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Validates every pool and keeps the engine's pools in line. Returns every pool object with
    /// its problems (`None`: valid).
    fn sync_pools(&mut self) -> Vec<(Arc<IPAddressPool>, Option<String>)> {
        let objects = self.caches.pools.state();
        let mut valid: BTreeMap<String, ValidPool> = BTreeMap::new();
        let mut invalid: BTreeMap<String, String> = BTreeMap::new();
        for pool in &objects {
            match validation::pool(&pool.spec) {
                Ok(v) => {
                    valid.insert(pool.name_any(), v);
                }
                Err(problems) => {
                    invalid.insert(pool.name_any(), problems.to_string());
                }
            }
        }
        for (name, problems) in
            validation::pool_overlaps(valid.iter().map(|(n, p)| (n.as_str(), p)))
        {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            invalid.insert(name.clone(), text.join("; "));
            valid.remove(&name);
        }
        let gone: Vec<String> = self
            .pools
            .keys()
            .filter(|n| !valid.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.engine.remove_pool(&name);
            self.pools.remove(&name);
        }
        for (name, pool) in valid {
            if self.pools.get(&name) != Some(&pool) {
                self.engine.upsert_pool(adapter::engine_pool(&name, &pool));
                self.pools.insert(name, pool);
            }
        }
        objects
            .into_iter()
            .map(|pool| {
                let validity = invalid.get(&pool.name_any()).cloned();
                (pool, validity)
            })
            .collect()
    }

    /// One level-triggered pass over pools and Services.
    async fn pass(&mut self) {
        for (pool, validity) in self.sync_pools() {
            if self.pool_validity.get(&pool.name_any()) == Some(&validity) {
                continue;
            }
            self.pool_validity.insert(pool.name_any(), validity.clone());
            if let Some(message) = &validity {
                self.metrics.error("pool_invalid");
                self.event(pool.as_ref(), EventType::Warning, "PoolInvalid", message)
                    .await;
            }
        }
        let ns_labels = namespace_labels(self.caches);
        let mut services: Vec<Arc<Service>> = self.caches.services.state();
        services.sort_by(|a, b| {
            let created = |s: &Service| s.metadata.creation_timestamp.clone().map(|t| t.0);
            (created(a), a.namespace(), a.name_any()).cmp(&(
                created(b),
                b.namespace(),
                b.name_any(),
            ))
        });
        let mut live: HashMap<ServiceKey, ()> = HashMap::new();
        let mut writes: Vec<(Arc<Service>, Option<Binding>)> = Vec::new();
        for svc in &services {
            let Some(key) = adapter::service_key(svc) else {
                continue;
            };
            if !adapter::is_ours(svc, &self.config.lb_class) {
                if adapter::has_cairn_binding(svc) {
                    // No longer a LoadBalancer of ours: free it and erase our record.
                    self.engine.release(&key);
                    writes.push((svc.clone(), None));
                }
                continue;
            }
            live.insert(key.clone(), ());
            let labels = ns_labels.get(&key.namespace).cloned().unwrap_or_default();
            let outcome = match adapter::service_request(svc, &labels) {
                Ok(request) => self
                    .engine
                    .assign(request)
                    .map_err(|r: Refusal| r.to_string()),
                Err(e) => {
                    self.engine.release(&key);
                    Err(e.to_string())
                }
            };
            self.announce(svc, &key, &outcome).await;
            let binding = outcome.ok();
            if !adapter::annotations_record(svc, binding.as_ref())
                || !adapter::status_records(svc, binding.as_ref())
            {
                writes.push((svc.clone(), binding));
            }
        }
        let released: Vec<ServiceKey> = self
            .engine
            .bindings()
            .map(|(k, _)| k.clone())
            .filter(|k| !live.contains_key(k))
            .collect();
        for key in released {
            self.engine.release(&key);
            self.services.remove(&key);
        }
        self.services.retain(|k, _| live.contains_key(k));
        self.write_bindings(writes).await;
        self.write_pool_status().await;
        self.update_metrics();
    }

    /// Raises Events when a Service's outcome or problems changed.
    async fn announce(
        &mut self,
        svc: &Service,
        key: &ServiceKey,
        outcome: &Result<Binding, String>,
    ) {
        let problems: Vec<String> = self
            .engine
            .problems(key)
            .iter()
            .map(ToString::to_string)
            .collect();
        let memory = self.services.entry(key.clone()).or_default();
        let outcome_changed = memory.outcome.as_ref() != Some(outcome);
        let problems_changed = memory.problems != problems;
        memory.outcome = Some(outcome.clone());
        memory.problems = problems.clone();
        if outcome_changed {
            match outcome {
                Ok(b) => {
                    let ips: Vec<String> = b.ips.iter().map(ToString::to_string).collect();
                    let note = format!("Assigned IP {} from pool {}", ips.join(","), b.pool);
                    self.event(svc, EventType::Normal, "IPAllocated", &note)
                        .await;
                }
                Err(reason) => {
                    self.metrics.error("allocation_failed");
                    self.event(svc, EventType::Warning, "AllocationFailed", reason)
                        .await;
                }
            }
        }
        if problems_changed && !problems.is_empty() {
            self.metrics.error("binding_orphaned");
            let note = format!("Kept its address, but: {}", problems.join("; "));
            self.event(svc, EventType::Warning, "BindingOrphaned", &note)
                .await;
        }
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Allocate".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }

    /// Writes annotations (with the cached resourceVersion) and then status, concurrently across
    /// Services, skipping writes already made against the same resourceVersion.
    async fn write_bindings(&mut self, writes: Vec<(Arc<Service>, Option<Binding>)>) {
        let mut todo = Vec::new();
        for (svc, binding) in writes {
            let Some(key) = adapter::service_key(&svc) else {
                continue;
            };
            let rv = svc.resource_version().unwrap_or_default();
            let memory = self.services.entry(key).or_default();
            let attempt = Some((rv.clone(), binding.clone()));
            if memory.pending == attempt {
                continue;
            }
            memory.pending = attempt;
            todo.push((svc, binding, rv));
        }
        let client = self.client;
        let leading = &self.leading;
        let metrics = self.metrics;
        futures::stream::iter(todo)
            .for_each_concurrent(self.config.write_concurrency, |(svc, binding, rv)| async move {
                let leads = leading.borrow().is_some_and(|until| Instant::now() < until);
                if !leads {
                    return;
                }
                let (Some(ns), name) = (svc.namespace(), svc.name_any()) else { return };
                let api: Api<Service> = Api::namespaced(client.clone(), &ns);
                let params = PatchParams::default();
                if !adapter::annotations_record(&svc, binding.as_ref()) {
                    let patch = adapter::annotations_patch(binding.as_ref(), &rv);
                    match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 409 => {
                            // The cache is behind; the coming watch event triggers a new pass.
                            return;
                        }
                        Err(e) => {
                            metrics.error("write_failed");
                            tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "writing the binding failed");
                            return;
                        }
                    }
                }
                if !adapter::status_records(&svc, binding.as_ref()) {
                    let patch = adapter::status_patch(binding.as_ref());
                    if let Err(e) = api.patch_status(&name, &params, &Patch::Merge(&patch)).await {
                        metrics.error("write_failed");
                        tracing::warn!(service = %format!("{ns}/{name}"), error = %e, "writing the status failed");
                    }
                }
            })
            .await;
    }

    /// Writes each pool's usage and `Valid` condition when they changed.
    async fn write_pool_status(&mut self) {
        let api: Api<IPAddressPool> = Api::namespaced(self.client.clone(), &self.config.namespace);
        for pool in self.caches.pools.state() {
            let name = pool.name_any();
            let validity = self.pool_validity.get(&name).cloned().flatten();
            let usage = self.engine.usage(&name).unwrap_or_default();
            let clamp = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
            let condition = |status: &str, reason: &str, message: String| Condition {
                type_: "Valid".into(),
                status: status.into(),
                reason: reason.into(),
                message,
                last_transition_time: Time(Timestamp::now()),
                observed_generation: pool.metadata.generation,
            };
            let valid = match &validity {
                None => condition("True", "Valid", "The pool is in use".into()),
                Some(problems) => condition("False", "Invalid", problems.clone()),
            };
            let status = json!({
                "assignedIPv4": clamp(usage.v4.assigned),
                "assignedIPv6": clamp(usage.v6.assigned),
                "availableIPv4": clamp(usage.v4.available),
                "availableIPv6": clamp(usage.v6.available),
                "conditions": [valid],
            });
            // Compare without the transition time, which changes on every build of the value.
            let mut comparable = status.clone();
            comparable["conditions"][0]["lastTransitionTime"] = serde_json::Value::Null;
            if self.pool_status.get(&name) == Some(&comparable) || !self.leads() {
                continue;
            }
            let patch = json!({ "status": status });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.pool_status.insert(name, comparable);
                }
                Err(e) => {
                    self.metrics.error("write_failed");
                    tracing::warn!(pool = %name, error = %e, "writing the pool status failed");
                }
            }
        }
    }

    fn update_metrics(&self) {
        for name in self.pools.keys() {
            if let Some(usage) = self.engine.usage(name) {
                for (family, u) in [(Family::V4, usage.v4), (Family::V6, usage.v6)] {
                    self.metrics
                        .set_pool(name, family, u.assigned, u.assigned + u.available);
                }
            }
        }
        self.metrics
            .set_services_allocated(self.engine.bindings().count());
    }
}

fn namespace_labels(caches: &Caches) -> HashMap<String, BTreeMap<String, String>> {
    caches
        .namespaces
        .state()
        .iter()
        .map(|ns| (ns.name_any(), ns.labels().clone()))
        .collect()
}
