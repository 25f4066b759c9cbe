//! The lab API server: an in-process stand-in for kube-apiserver, for tests and the demo on
//! machines where no real one can run. It serves plain HTTP on loopback and behaves like the real
//! server for everything Cairn, kube 5 (`Api`, `Discovery`, kube-runtime's `watcher`) and
//! `kubectl` use. It is lab infrastructure only: product code must work against a real cluster
//! unchanged and must never detect or special-case it.
//!
//! What it implements faithfully:
//! - resources: the built-in table in `resources` (core `namespaces`, `services`, `nodes`,
//!   `secrets`, `events`, `configmaps`, `serviceaccounts`, `pods`; `endpointslices`, `leases`,
//!   `events.k8s.io` events, `apps` deployments/daemonsets, RBAC, CRDs) and every version of every
//!   CRD created through it (scope from `spec.scope`, `status` subresource when declared);
//! - verbs get, list, watch, create, update (PUT), patch, delete, deletecollection, on the main
//!   resource and on `/status`;
//! - one global, increasing `resourceVersion`; `uid`, `creationTimestamp`, `generation` (bumped
//!   when anything outside `metadata` — and `status` when there is a status subresource —
//!   changes); no-op updates do not bump `resourceVersion`;
//! - optimistic concurrency: a stale `metadata.resourceVersion` in an update or in a patch's
//!   result is 409 `Conflict`; create of an existing name is 409 `AlreadyExists`; errors are
//!   `Status` objects with upstream's `code`, `reason` and `details`;
//! - status isolation both ways (a create drops `status`, except for Nodes); finalizers, `deletionTimestamp`, removal when an update empties
//!   the finalizers; delete preconditions; namespaced creates in a missing namespace are 404;
//! - watch: `resourceVersion=N` resumes after N from a bounded global history window (410
//!   `Expired` as an `ERROR` event when N is older), unset/`0` starts with synthetic ADDED events,
//!   `allowWatchBookmarks`, `timeoutSeconds`, selector entry/exit as ADDED/DELETED, streaming
//!   lists (`sendInitialEvents=true` ending with the `k8s.io/initial-events-end` bookmark);
//! - `labelSelector`, `fieldSelector` (`metadata.name`, `metadata.namespace`), `limit`/`continue`;
//! - `/version`, legacy discovery, and `/healthz`, `/livez`, `/readyz` answering `ok`.
//!
//! Where it differs from the real server (on purpose, to stay small):
//! - plain HTTP, no authentication or authorization, no admission; no OpenAPI: `/openapi/v2`
//!   is an empty document (so kubectl's client-side validation finds no schema and skips, and
//!   `kubectl apply` works without `--validate=false`), `/openapi/v3` is 404; no schema
//!   validation or defaulting beyond Service `spec.type` and Namespace `status.phase`;
//!   `fieldValidation`, `fieldManager`, `propagationPolicy` and `gracePeriodSeconds` are
//!   ignored; `dryRun` is refused (400, so `kubectl diff` fails instead of writing); no
//!   `managedFields`;
//! - JSON only: request bodies in protobuf get 415 (kubectl's imperative `create <kind>`
//!   generators send protobuf: use `kubectl apply/create -f`), responses are JSON whatever the
//!   `Accept` (no `as=Table`: kubectl falls back to client-side printing; no aggregated
//!   discovery: clients fall back to legacy discovery);
//! - strategic merge patch has no schemas: lists merge by key only where the key is known from
//!   `$setElementOrder` or a table of well-known lists, other lists are replaced; server-side
//!   apply is a merge patch/create without field ownership (details in `patch`);
//! - no controllers: Services get no `clusterIP`/`nodePort`, Deployments no Pods, deleting a
//!   Namespace removes its objects at once (finalizers of those objects are not waited for),
//!   deleting a CRD removes its objects; no garbage collection by `ownerReferences`;
//! - `events` and `events.k8s.io` events are separate collections; a list's `continue` pages
//!   show current objects after the last key (not a snapshot at the first page's version) and
//!   never expire; list `resourceVersion`/`resourceVersionMatch` are ignored (always latest);
//!   a streaming list (`sendInitialEvents=true`) always starts from the current state, whatever
//!   `resourceVersion` says;
//! - the history window counts events across all resources (like etcd compaction), not per
//!   resource like the watch cache.
//!
//! Lab-only additions: request counts per verb and resource ([`LabApiServer::request_counts`],
//! `GET /debug/requests`) and fault injection ([`LabApiServer::set_latency`],
//! [`LabApiServer::set_unreachable_for`], [`LabApiServer::drop_watches`], `POST /debug/faults`).
//! "Unreachable" closes new connections right after accept and cuts open ones after letting a
//! response already being written finish (100 ms), so clients see connection errors, not HTTP
//! errors; it always has an end so that `/debug/faults` stays usable. This module must not grow
//! behaviour that Cairn, kube or kubectl do not exercise, and it listens only where `listen`
//! says (loopback by default).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_e2e::apiserver::{LabApiServer, Options};
//! let server = LabApiServer::start(Options::default()).await?;
//! let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig())?;
//! let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
//! let client = kube::Client::try_from(config)?;
//! // ... run the component under test with `client` ...
//! server.set_unreachable_for(Some(std::time::Duration::from_secs(10)));
//! let api_requests = server.request_counts().total();
//! # let _ = (client, api_requests);
//! # Ok(())
//! # }
//! ```

mod control;
mod discovery;
mod error;
mod http;
mod patch;
mod resources;
mod selector;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use control::{Faults, RequestCounts};
pub use error::{ApiError, StartError};

use store::Store;

use control::RequestCounter;
use http::Shared;

/// How to start a [`LabApiServer`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port (see [`LabApiServer::addr`]).
    pub listen: SocketAddr,
    /// Where to persist objects (written shortly after each change and at shutdown) and to
    /// reload them from at start.
    pub state_file: Option<PathBuf>,
    /// How many change events the watch history keeps; resuming before them is 410.
    pub history_window: usize,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_file: None,
            history_window: 100_000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// A running lab API server. Dropping it stops serving (use [`LabApiServer::shutdown`] to also
/// wait for the final state-file write).
pub struct LabApiServer {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    state_file: Option<PathBuf>,
}

/// How often a dirty store is written to the state file.
const PERSIST_EVERY: Duration = Duration::from_millis(200);

impl LabApiServer {
    /// Bind, load the state file when there is one, and serve on the current tokio runtime.
    pub async fn start(options: Options) -> Result<Self, StartError> {
        let store = match &options.state_file {
            Some(path) if path.exists() => load_state(path, options.history_window)?,
            _ => Store::new(options.history_window),
        };
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: options.listen,
            source,
        })?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            counter: RequestCounter::default(),
            faults: watch::Sender::new(Faults::default()),
            shutdown: watch::Sender::new(false),
            addr,
            bookmark_interval: options.bookmark_interval,
        });
        let mut tasks = vec![tokio::spawn(http::accept_loop(listener, shared.clone()))];
        if let Some(path) = &options.state_file {
            tasks.push(tokio::spawn(persist_loop(shared.clone(), path.clone())));
        }
        Ok(Self {
            shared,
            tasks,
            state_file: options.state_file,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig (JSON, which is YAML) for this server: one cluster, one context with
    /// namespace `default`, an empty user. kube's `Kubeconfig::read_from` and kubectl load it.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    /// A kube client for this server, as tests and the lab act on it (no kubeconfig file needed).
    pub fn client(&self) -> Result<kube::Client, StartError> {
        let url = self.url();
        let uri = url.parse().map_err(|e| StartError::Client {
            url: url.clone(),
            reason: format!("{e}"),
        })?;
        kube::Client::try_from(kube::Config::new(uri)).map_err(|e| StartError::Client {
            url,
            reason: e.to_string(),
        })
    }

    /// Write [`LabApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), StartError> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| StartError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// The faults currently injected.
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// Requests served so far, by verb and resource.
    pub fn request_counts(&self) -> RequestCounts {
        self.shared.counter.snapshot()
    }

    /// Delay every API request by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.faults.send_modify(|f| f.latency = latency);
    }

    /// Make the server unreachable for `period` from now (`None` or zero: reachable again at
    /// once). Open connections, watches included, are cut when it starts.
    pub fn set_unreachable_for(&self, period: Option<Duration>) {
        let until = period.filter(|p| !p.is_zero()).map(|p| Instant::now() + p);
        self.shared
            .faults
            .send_modify(|f| f.unreachable_until = until);
    }

    /// End every open watch stream (clients see a clean end of stream and re-watch).
    pub fn drop_watches(&self) {
        self.shared.store().drop_watches();
    }

    /// How many watches are open.
    pub fn watch_count(&self) -> usize {
        self.shared.store().watch_count()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Stop serving, end watches and write the state file a last time.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        self.shared.shutdown.send_replace(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        match &self.state_file {
            Some(path) => write_state(&self.shared, path).await,
            None => Ok(()),
        }
    }
}

impl Drop for LabApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A kubeconfig pointing at `server` without credentials.
pub fn kubeconfig(server: &str) -> String {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cairn-lab", "cluster": {"server": server}}],
        "users": [{"name": "cairn-lab", "user": {}}],
        "contexts": [{"name": "cairn-lab",
                      "context": {"cluster": "cairn-lab", "user": "cairn-lab", "namespace": "default"}}],
        "current-context": "cairn-lab",
        "preferences": {},
    });
    format!("{doc:#}\n")
}

fn load_state(path: &Path, history_window: usize) -> Result<Store, StartError> {
    let text = std::fs::read(path).map_err(|source| StartError::ReadState {
        path: path.to_owned(),
        source,
    })?;
    let bad = |reason: String| StartError::BadState {
        path: path.to_owned(),
        reason,
    };
    let snapshot = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    Store::restore(&snapshot, history_window).map_err(bad)
}

async fn write_state(shared: &Shared, path: &Path) -> Result<(), StartError> {
    let snapshot = shared.store().snapshot();
    let tmp = path.with_extension("tmp");
    let err = |source| StartError::Write {
        path: path.to_owned(),
        source,
    };
    tokio::fs::write(&tmp, format!("{snapshot:#}\n"))
        .await
        .map_err(err)?;
    tokio::fs::rename(&tmp, path).await.map_err(err)
}

async fn persist_loop(shared: Arc<Shared>, path: PathBuf) {
    let mut written = u64::MAX;
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let changes = shared.store().changes();
        if changes != written {
            match write_state(&shared, &path).await {
                Ok(()) => written = changes,
                Err(e) => eprintln!("cairn-lab-apiserver: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PERSIST_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}
