//! The HTTP/1.1 front of the lab API server (hyper 1): URL routing the way kube-apiserver's
//! `RequestInfoFactory` does it (`/api/v1/...`, `/apis/<g>/<v>/...`, `namespaces/<ns>/...`,
//! subresource `status`), verbs from method + URL + `watch`, query parameters, chunked watch
//! streams, discovery, the lab-only `/debug/requests` and `/debug/faults` endpoints, request
//! counting and fault injection at the connection level. Object semantics are the store's; this
//! module must not decide them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::control::{Faults, RequestCounter};
use super::discovery;
use super::error::ApiError;
use super::patch::{self, PatchKind};
use super::resources::ResourceInfo;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Preconditions, Selectors, Store, Target};

/// Largest request body accepted (objects in etcd are limited to 1.5 MiB).
const MAX_BODY: usize = 16 << 20;
/// Watch duration when the client sets no `timeoutSeconds` (upstream picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long a connection being cut may still finish the response it is writing.
const CUT_GRACE: Duration = Duration::from_millis(100);

/// State shared by the accept loop, connections, watches and the handle.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub counter: RequestCounter,
    pub faults: watch::Sender<Faults>,
    pub shutdown: watch::Sender<bool>,
    pub addr: SocketAddr,
    pub bookmark_interval: Duration,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A response body: a whole JSON document or a watch stream.
type ResBody = Either<Full<Bytes>, WatchBody>;

/// A chunked body fed by the store's watch channel; it ends when the store drops the watcher.
pub(crate) struct WatchBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn json_response(code: u16, v: &Value) -> Response<ResBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(v.to_string()))));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<ResBody> {
    json_response(e.code, &e.to_status())
}

/// Accept connections until shutdown. While the server is faulted unreachable, accepted
/// connections are closed at once and open ones are cut.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        if shared.faults.borrow().unreachable_at(Instant::now()) {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, shared.clone()));
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let mut faults = shared.faults.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(req, shared).await) }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = faults.changed() => {
                if changed.is_err() || faults.borrow().unreachable_at(Instant::now()) {
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    // Let a response already being written (such as the `/debug/faults` answer that caused
    // this) go out, take no new request, then cut whatever is still open (watches).
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CUT_GRACE, conn).await;
}

/// What a URL addresses.
enum Route {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    Health,
    OpenApiV2,
    DebugRequests,
    DebugFaults,
    Resource {
        res: Box<ResourceInfo>,
        ns: Option<String>,
        name: Option<String>,
        status: bool,
    },
}

fn route(path: &str, store: &Store) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || ApiError::no_route(path);
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", g] => return Ok(Route::Group((*g).to_owned())),
        ["api", v] => return Ok(Route::GroupVersion(String::new(), (*v).to_owned())),
        ["apis", g, v] => return Ok(Route::GroupVersion((*g).to_owned(), (*v).to_owned())),
        ["healthz" | "livez" | "readyz"] => return Ok(Route::Health),
        ["openapi", "v2"] => return Ok(Route::OpenApiV2),
        ["debug", "requests"] => return Ok(Route::DebugRequests),
        ["debug", "faults"] => return Ok(Route::DebugFaults),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..]
            if !matches!(tail.first(), None | Some(&"status" | &"finalize")) =>
        {
            (Some((*ns).to_owned()), tail)
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_owned()), None),
        [p, n, s] => (*p, Some((*n).to_owned()), Some(*s)),
        _ => return Err(not_found()),
    };
    let res = store
        .registry()
        .find(group, version, plural)
        .cloned()
        .ok_or_else(not_found)?;
    let status = match sub {
        None => false,
        Some("status") if res.status => true,
        Some(_) => return Err(not_found()),
    };
    if (res.namespaced && name.is_some() && ns.is_none()) || (!res.namespaced && ns.is_some()) {
        return Err(not_found());
    }
    Ok(Route::Resource {
        res: Box::new(res),
        ns,
        name,
        status,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn selectors(q: &HashMap<String, String>) -> Result<Selectors, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok(Selectors { labels, fields })
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ApiError::too_large(format!("cannot read the request body: {e}")))
}

fn parse_json(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(
            "the lab API server does not decode protobuf request bodies (kubectl's imperative \
             `create <kind>` generators send them); send JSON, e.g. kubectl apply/create -f",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::unsupported_media_type(format!(
            "the lab API server accepts JSON bodies only: {e}"
        ))
    })
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<ResBody> {
    let path = req.uri().path().to_owned();
    let query = query_params(req.uri().query());
    let routed = route(&path, &shared.store());
    let route = match routed {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    if !matches!(route, Route::DebugRequests | Route::DebugFaults) {
        let latency = shared.faults.borrow().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
    let result = match route {
        Route::Version => {
            shared.counter.count("discovery", "-");
            Ok(json_response(200, &discovery::version()))
        }
        Route::CoreVersions => {
            shared.counter.count("discovery", "-");
            Ok(json_response(
                200,
                &discovery::core_versions(&shared.addr.to_string()),
            ))
        }
        Route::Groups => {
            shared.counter.count("discovery", "-");
            let doc = discovery::group_list(shared.store().registry());
            Ok(json_response(200, &doc))
        }
        Route::Group(g) => {
            shared.counter.count("discovery", "-");
            let doc = discovery::api_group(shared.store().registry(), &g);
            doc.map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(&path))
        }
        Route::GroupVersion(g, v) => {
            shared.counter.count("discovery", "-");
            let doc = discovery::resource_list(shared.store().registry(), &g, &v);
            doc.map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(&path))
        }
        Route::Health => {
            let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(b"ok"))));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        Route::OpenApiV2 => {
            shared.counter.count("discovery", "-");
            Ok(openapi_v2(&req))
        }
        Route::DebugRequests => Ok(json_response(200, &shared.counter.snapshot().to_json())),
        Route::DebugFaults => debug_faults(req, &shared).await,
        Route::Resource {
            res,
            ns,
            name,
            status,
        } => resource(req, &shared, &query, *res, ns, name, status).await,
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// `/openapi/v2` without any definition: an empty protobuf `openapi_v2.Document` (zero bytes)
/// when protobuf is accepted, else the equivalent JSON. kubectl's client-side validation then
/// finds no schema for any kind and skips validation, instead of failing to download OpenAPI.
fn openapi_v2(req: &Request<Incoming>) -> Response<ResBody> {
    const PROTO: &str = "application/octet-stream";
    let accepts_proto = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("protobuf"));
    if accepts_proto {
        let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROTO));
        r
    } else {
        json_response(
            200,
            &json!({"swagger": "2.0", "info": {"title": "cairn-lab", "version": "v1.33.0"}, "paths": {}}),
        )
    }
}

/// `GET /debug/faults` shows the faults; `POST` with `{"latencyMs": N, "unreachableForMs": N,
/// "dropWatches": true}` (every field optional) sets them.
async fn debug_faults(
    req: Request<Incoming>,
    shared: &Shared,
) -> Result<Response<ResBody>, ApiError> {
    if req.method() == Method::POST {
        let body = parse_json(&read_body(req.into_body()).await?, "application/json")?;
        if let Some(ms) = body["latencyMs"].as_u64() {
            shared
                .faults
                .send_modify(|f| f.latency = Duration::from_millis(ms));
        }
        if let Some(ms) = body["unreachableForMs"].as_u64() {
            let until = Instant::now() + Duration::from_millis(ms);
            shared
                .faults
                .send_modify(|f| f.unreachable_until = (ms > 0).then_some(until));
        }
        if body["dropWatches"].as_bool() == Some(true) {
            shared.store().drop_watches();
        }
    }
    let f = shared.faults.borrow().clone();
    let remaining = f
        .unreachable_until
        .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64)
        .unwrap_or(0);
    Ok(json_response(
        200,
        &json!({"latencyMs": f.latency.as_millis() as u64, "unreachableForMs": remaining}),
    ))
}

fn verb_of(method: &Method, has_name: bool, watch: bool) -> Option<&'static str> {
    Some(match (method.as_str(), has_name) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    })
}

async fn resource(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    q: &HashMap<String, String>,
    res: ResourceInfo,
    ns: Option<String>,
    name: Option<String>,
    status: bool,
) -> Result<Response<ResBody>, ApiError> {
    let watch = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = verb_of(req.method(), name.is_some(), watch).ok_or_else(|| {
        ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            req.method(),
            req.uri().path()
        ))
    })?;
    shared.counter.count(verb, &res.qualified());
    if !matches!(verb, "get" | "list" | "watch") && q.get("dryRun").is_some_and(|d| !d.is_empty()) {
        // Refused rather than ignored: ignoring it would apply a `kubectl diff` for real.
        return Err(ApiError::bad_request(
            "the lab API server does not support dryRun",
        ));
    }
    if verb == "create" && res.namespaced && ns.is_none() {
        // Upstream serves namespaced creates only under `namespaces/<ns>/`.
        return Err(ApiError::no_route(req.uri().path()));
    }
    let target = if status { Target::Status } else { Target::Main };
    let nsr = ns.as_deref().unwrap_or("");
    let name = name.unwrap_or_default();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    match verb {
        "get" => Ok(json_response(200, &shared.store().get(&res, nsr, &name)?)),
        "list" => {
            let sel = selectors(q)?;
            let limit = match q.get("limit") {
                Some(l) => Some(
                    l.parse::<usize>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
                ),
                None => None,
            };
            let list = shared.store().list(
                &res,
                ns.as_deref(),
                &sel,
                limit,
                q.get("continue").map(String::as_str),
            )?;
            Ok(json_response(200, &list))
        }
        "watch" => start_watch(shared, q, &res, ns.as_deref()),
        "create" => {
            let body = parse_json(&read_body(req.into_body()).await?, &content_type)?;
            let obj = shared.store().create(&res, ns.as_deref(), body)?;
            Ok(json_response(201, &obj))
        }
        "update" => {
            let body = parse_json(&read_body(req.into_body()).await?, &content_type)?;
            let obj = shared.store().update(&res, nsr, &name, body, target)?;
            Ok(json_response(200, &obj))
        }
        "patch" => {
            let kind = PatchKind::from_content_type(&content_type)?;
            let p = patch::parse(kind, &read_body(req.into_body()).await?)?;
            let mut store = shared.store();
            if kind == PatchKind::Apply && store.get(&res, nsr, &name).is_err() && !status {
                let mut body = p;
                super::store::meta_mut(&mut body).insert("name".into(), json!(name));
                return Ok(json_response(
                    201,
                    &store.create(&res, ns.as_deref(), body)?,
                ));
            }
            let obj = store.patch(&res, nsr, &name, target, |o| patch::apply(kind, o, &p))?;
            Ok(json_response(200, &obj))
        }
        "delete" => {
            let body = read_body(req.into_body()).await?;
            let pre = if body.is_empty() {
                Preconditions::default()
            } else {
                let opts = parse_json(&body, &content_type)?;
                let p = &opts["preconditions"];
                Preconditions {
                    uid: p["uid"].as_str().map(str::to_owned),
                    resource_version: p["resourceVersion"].as_str().map(str::to_owned),
                }
            };
            let obj = shared.store().delete(&res, nsr, &name, &pre)?;
            Ok(json_response(200, &obj))
        }
        "deletecollection" => {
            let sel = selectors(q)?;
            let list = shared
                .store()
                .delete_collection(&res, ns.as_deref(), &sel)?;
            Ok(json_response(200, &list))
        }
        _ => Err(ApiError::method_not_allowed(verb)),
    }
}

/// Open a watch and return its chunked response. A too-old `resourceVersion` is answered like
/// upstream does: 200, then one `ERROR` event carrying a 410 `Status`, then end of stream.
fn start_watch(
    shared: &Arc<Shared>,
    q: &HashMap<String, String>,
    res: &ResourceInfo,
    ns: Option<&str>,
) -> Result<Response<ResBody>, ApiError> {
    let sel = selectors(q)?;
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => match t.parse::<u64>() {
            // Upstream treats 0 like an absent timeout.
            Ok(0) => DEFAULT_WATCH_TIMEOUT,
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid timeoutSeconds: {t}"
                )))
            }
        },
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = q.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let (tx, rx) = mpsc::unbounded_channel();
    let opened = shared.store().watch(
        res,
        ns,
        sel,
        q.get("resourceVersion").map(String::as_str),
        q.get("sendInitialEvents").map(String::as_str) == Some("true"),
        tx.clone(),
    );
    drop(tx);
    let mut response = Response::new(Either::Right(WatchBody(rx)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    match opened {
        Ok(id) => {
            tokio::spawn(keep_watch(shared.clone(), id, timeout, bookmarks));
        }
        Err(e) if e.code == 410 => {
            let (tx, rx) = mpsc::unbounded_channel();
            let line = json!({"type": "ERROR", "object": e.to_status()});
            let _ = tx.send(Bytes::from(format!("{line}\n")));
            *response.body_mut() = Either::Right(WatchBody(rx));
        }
        Err(e) => return Err(e),
    }
    Ok(response)
}

/// Ends watch `id` at its timeout or at shutdown; meanwhile sends bookmarks (when asked) and
/// notices clients that have gone away.
async fn keep_watch(shared: Arc<Shared>, id: u64, timeout: Duration, bookmarks: bool) {
    let mut shutdown = shared.shutdown.subscribe();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(shared.bookmark_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                let mut store = shared.store();
                let alive = if bookmarks { store.bookmark(id) } else { store.watch_alive(id) };
                if !alive {
                    return;
                }
            }
        }
    }
    shared.store().unwatch(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_and_plus_decoded() {
        let q = query_params(Some(
            "labelSelector=app%20in%20(a%2Cb)&fieldSelector=metadata.name%3Dx&x=a+b&bad=%zz",
        ));
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["fieldSelector"], "metadata.name=x");
        assert_eq!(q["x"], "a b");
        assert_eq!(q["bad"], "%zz");
    }

    #[test]
    fn urls_route_like_kube_apiserver() {
        let store = Store::new(10);
        let r = |p: &str| route(p, &store);
        assert!(matches!(r("/api/v1/namespaces/a/services/b/status"),
            Ok(Route::Resource { ns: Some(ns), name: Some(n), status: true, .. }) if ns == "a" && n == "b"));
        assert!(matches!(r("/api/v1/namespaces/a"),
            Ok(Route::Resource { ns: None, name: Some(n), .. }) if n == "a"));
        assert!(matches!(
            r("/api/v1/namespaces/a/status"),
            Ok(Route::Resource {
                ns: None,
                status: true,
                ..
            })
        ));
        assert!(matches!(
            r("/apis/coordination.k8s.io/v1/leases"),
            Ok(Route::Resource {
                ns: None,
                name: None,
                ..
            })
        ));
        // Namespaced object without a namespace, cluster object with one, unknown subresource.
        assert!(r("/api/v1/services/x").is_err());
        assert!(r("/api/v1/namespaces/a/nodes/n").is_err());
        assert!(r("/api/v1/namespaces/a/configmaps/c/status").is_err());
        assert!(r("/openapi/v3").is_err());
        assert!(matches!(r("/readyz"), Ok(Route::Health)));
    }
}
