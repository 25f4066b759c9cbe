//! The object store behind the lab API server: objects as `serde_json::Value`, keyed by
//! (group, resource) then (namespace, name), with the semantics of kube-apiserver's generic
//! registry over etcd: one global, monotonically increasing `resourceVersion`; `uid`,
//! `creationTimestamp`, `generation`; optimistic concurrency on writes; status-subresource
//! isolation; finalizers and `deletionTimestamp`; a bounded history of change events from which
//! watches resume (older resume points get 410 Expired, like a compacted etcd); label and field
//! selection; `limit`/`continue` paging.
//!
//! The store is synchronous and does no IO: watchers are channels that receive ready-to-send
//! watch-event lines while the store is locked, so an event can never be missed or reordered
//! between a watch's replay and its live stream. HTTP, timers and persistence live in the server.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::resources::{crd_resources, GroupResource, Registry, ResourceInfo};
use super::selector::{FieldSelector, LabelSelector};

/// Namespaces a fresh server starts with, as a fresh cluster does.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Label and field selectors of one list, watch or deletecollection.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl Selectors {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main resource: `status` is kept from the stored object when the resource has a
    /// status subresource.
    Main,
    /// The `/status` subresource: only `status` is taken from the request.
    Status,
}

/// Delete preconditions (`DeleteOptions.preconditions`).
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    /// Required `metadata.uid`.
    pub uid: Option<String>,
    /// Required `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, kept in the history window for watch resumption.
#[derive(Debug)]
struct Event {
    rv: u64,
    gr: GroupResource,
    namespace: String,
    kind: EventType,
    object: Arc<Value>,
    /// The previous state, for `Modified` (to turn selector entry/exit into ADDED/DELETED).
    old: Option<Arc<Value>>,
}

/// An open watch: what it follows and where its lines go.
struct Watcher {
    gr: GroupResource,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    selectors: Selectors,
    tx: UnboundedSender<Bytes>,
}

impl Watcher {
    fn send(&self, kind: &str, obj: &Value) -> bool {
        let mut line = Vec::with_capacity(256);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        let written = if obj["apiVersion"].as_str() == Some(self.api_version.as_str()) {
            serde_json::to_writer(&mut line, obj)
        } else {
            let mut o = obj.clone();
            o["apiVersion"] = json!(self.api_version);
            serde_json::to_writer(&mut line, &o)
        };
        if written.is_err() {
            return false;
        }
        line.extend_from_slice(b"}\n");
        self.tx.send(Bytes::from(line)).is_ok()
    }

    /// Send `ev` if it concerns this watch; false when the client has gone away.
    fn deliver(&self, ev: &Event) -> bool {
        if ev.gr != self.gr {
            return true;
        }
        if let Some(ns) = &self.namespace {
            if ev.namespace != *ns {
                return true;
            }
        }
        let now = self.selectors.matches(&ev.object);
        let kind = match ev.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => now.then_some("DELETED"),
            EventType::Modified => {
                let before = ev.old.as_ref().is_some_and(|o| self.selectors.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        };
        kind.is_none_or(|k| self.send(k, &ev.object))
    }
}

/// Random-looking identifiers (uids, generateName suffixes) without a dependency.
struct IdGen {
    seed: std::collections::hash_map::RandomState,
    n: u64,
}

impl IdGen {
    fn next(&mut self) -> u64 {
        self.n += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.n);
        h.finish()
    }

    /// An RFC 4122 version-4-shaped uid.
    fn uid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Five characters from the alphabet upstream uses for `generateName`.
    fn suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut x = self.next();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(x % ALPHABET.len() as u64) as usize];
                x /= ALPHABET.len() as u64;
                c as char
            })
            .collect()
    }
}

/// `metav1.Time` format: RFC 3339, seconds, UTC.
fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Upstream's name rule: RBAC objects only need to be a valid path segment (`system:...` names
/// are common); everything else here must be a DNS-1123 subdomain.
fn valid_name(res: &ResourceInfo, name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    if res.group == "rbac.authorization.k8s.io" {
        return name != "." && name != ".." && !name.contains(['/', '%']);
    }
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str().filter(|s| !s.is_empty())
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match obj["metadata"].as_object_mut() {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

fn has_finalizers(obj: &Value) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

/// The object without the parts whose change does not bump `generation`.
fn generation_relevant(obj: &Value, has_status: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        if has_status {
            m.remove("status");
        }
    }
    o
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    format!("{rv}\n{ns}\n{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '\n');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

/// The objects, their history and the open watches.
pub struct Store {
    registry: Registry,
    rv: u64,
    // (group, resource) -> (namespace, name) -> object
    objects: HashMap<GroupResource, BTreeMap<(String, String), Arc<Value>>>,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Highest resourceVersion whose event has left the history window.
    compacted_rv: u64,
    // watch id -> watcher
    watchers: HashMap<u64, Watcher>,
    next_watch: u64,
    ids: IdGen,
    changes: u64,
}

impl Store {
    /// A store holding the initial namespaces, keeping at most `history_limit` events
    /// (at least one) for watch resumption.
    pub fn new(history_limit: usize) -> Self {
        let mut store = Self::empty(history_limit);
        let ns = store.registry.find("", "v1", "namespaces").cloned();
        if let Some(ns) = ns {
            for name in INITIAL_NAMESPACES {
                // Creating a fixed, valid namespace in an empty store cannot fail.
                let _ = store.create(&ns, None, json!({"metadata": {"name": name}}));
            }
        }
        store
    }

    fn empty(history_limit: usize) -> Self {
        Self {
            registry: Registry::default(),
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted_rv: 0,
            watchers: HashMap::new(),
            next_watch: 0,
            ids: IdGen {
                seed: std::collections::hash_map::RandomState::new(),
                n: 0,
            },
            changes: 0,
        }
    }

    /// The served resources.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// How many changes have been committed (for persistence).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// How many watches are open.
    pub fn watch_count(&self) -> usize {
        self.watchers.len()
    }

    fn current(&self, res: &ResourceInfo, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(&res.group_resource())?
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    fn present(obj: &Value, res: &ResourceInfo) -> Value {
        let mut o = obj.clone();
        o["apiVersion"] = json!(res.api_version());
        o
    }

    /// GET one object.
    pub fn get(&self, res: &ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.current(res, ns, name)
            .map(|o| Self::present(&o, res))
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// LIST, optionally in one namespace, filtered, paged by `limit`/`continue`.
    pub fn list(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        selectors: &Selectors,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (list_rv, start) = match continue_token.filter(|t| !t.is_empty()) {
            Some(token) => {
                let (rv, ns, name) = decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
                (rv, Some((ns, name)))
            }
            None => (self.rv, None),
        };
        let empty = BTreeMap::new();
        let coll = self.objects.get(&res.group_resource()).unwrap_or(&empty);
        let lower = match &start {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut matching = coll
            .range((lower, Bound::Unbounded))
            .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
            .filter(|(_, o)| selectors.matches(o));
        let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut last = None;
        for (key, obj) in matching.by_ref() {
            items.push(Self::present(obj, res));
            last = Some(key);
            if items.len() == limit {
                break;
            }
        }
        let remaining = matching.count();
        let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
        if remaining > 0 {
            if let Some((lns, lname)) = last {
                metadata["continue"] = json!(encode_continue(list_rv, lns, lname));
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "kind": res.list_kind,
            "apiVersion": res.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get(&GroupResource {
                group: String::new(),
                resource: "namespaces".into(),
            })
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_owned())))
    }

    /// CREATE (POST). `ns` is the namespace from the URL (ignored for cluster-scoped kinds).
    pub fn create(
        &mut self,
        res: &ResourceInfo,
        ns: Option<&str>,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let name = match (meta_str(&body, "name"), meta_str(&body, "generateName")) {
            (Some(n), _) => n.to_owned(),
            (None, Some(prefix)) => format!("{prefix}{}", self.ids.suffix()),
            (None, None) => {
                return Err(ApiError::invalid(
                    res,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        };
        if !valid_name(res, &name) {
            return Err(ApiError::invalid(
                res,
                &name,
                format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
            ));
        }
        let ns = if res.namespaced {
            let ns = ns.or(meta_str(&body, "namespace")).unwrap_or("default");
            if meta_str(&body, "namespace").is_some_and(|b| b != ns) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if !self.namespace_exists(ns) {
                return Err(ApiError::namespace_not_found(ns));
            }
            ns.to_owned()
        } else {
            String::new()
        };
        if meta_str(&body, "resourceVersion").is_some() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if self.current(res, &ns, &name).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        let stamp = now();
        let uid = self.ids.uid();
        {
            let meta = meta_mut(&mut body);
            meta.insert("name".into(), json!(name));
            if res.namespaced {
                meta.insert("namespace".into(), json!(ns));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), json!(uid));
            meta.insert("creationTimestamp".into(), json!(stamp));
            meta.insert("generation".into(), json!(1));
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.remove("generateName");
        }
        body["apiVersion"] = json!(res.api_version());
        body["kind"] = json!(res.kind);
        // Upstream resets status on create for every kind with a status subresource except
        // Node, which kubelet registers together with its status (addresses, conditions).
        let keeps_status = res.group.is_empty() && res.plural == "nodes";
        if res.status && !keeps_status {
            if let Some(m) = body.as_object_mut() {
                m.remove("status");
            }
        }
        if res.is_namespace() {
            body["status"] = json!({"phase": "Active"});
        }
        if res.group.is_empty() && res.plural == "services" {
            if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("type").or_insert_with(|| json!("ClusterIP"));
            }
        }
        fold_string_data(res, &mut body);
        if res.is_crd() {
            let infos = crd_resources(&body).map_err(|e| ApiError::invalid(res, &name, e))?;
            body["status"] = crd_status(&body, &stamp);
            self.registry.register_crd(&name, infos);
        }
        let obj = self.commit_put(res.group_resource(), (ns, name), body, None);
        Ok(Self::present(&obj, res))
    }

    /// UPDATE (PUT) of the main resource or of `/status`. A `metadata.resourceVersion` in the
    /// body must equal the stored one (409 Conflict otherwise); without one the write is
    /// unconditional, as upstream allows for these resources.
    pub fn update(
        &mut self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        body: Value,
        target: Target,
    ) -> Result<Value, ApiError> {
        let cur = self
            .current(res, ns, name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        if let Some(body_name) = meta_str(&body, "name") {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if res.namespaced && meta_str(&body, "namespace").is_some_and(|b| b != ns) {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if meta_str(&body, "resourceVersion")
            .is_some_and(|rv| Some(rv) != meta_str(&cur, "resourceVersion"))
        {
            return Err(ApiError::conflict(res, name));
        }
        if meta_str(&body, "uid").is_some_and(|uid| Some(uid) != meta_str(&cur, "uid")) {
            return Err(ApiError::precondition_failed(
                res,
                name,
                "UID in object meta does not match the stored object",
            ));
        }
        let mut new = match target {
            Target::Main => {
                let mut n = body;
                if res.status {
                    match cur.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                n
            }
            Target::Status => {
                let mut n = (*cur).clone();
                match body.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
        };
        // Server-owned metadata always comes from the stored object.
        {
            let meta = meta_mut(&mut new);
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ] {
                match cur["metadata"].get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
        }
        new["apiVersion"] = cur["apiVersion"].clone();
        new["kind"] = cur["kind"].clone();
        fold_string_data(res, &mut new);
        if res.is_crd() && target == Target::Main {
            let infos = crd_resources(&new).map_err(|e| ApiError::invalid(res, name, e))?;
            let names = new["spec"]["names"].clone();
            if let Some(status) = new.get_mut("status").and_then(Value::as_object_mut) {
                status.insert("acceptedNames".into(), names);
            }
            self.registry.register_crd(name, infos);
        }
        let generation = cur["metadata"]["generation"].as_i64().unwrap_or(1);
        let bumped = generation_relevant(&cur, res.status) != generation_relevant(&new, res.status);
        meta_mut(&mut new).insert("generation".into(), json!(generation + i64::from(bumped)));
        if cur["metadata"].get("deletionTimestamp").is_some() {
            let before = cur["metadata"]["finalizers"].as_array();
            let added = new["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| !before.is_some_and(|b| b.contains(x))));
            if added {
                return Err(ApiError::invalid(
                    res,
                    name,
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if new == *cur {
            return Ok(Self::present(&cur, res));
        }
        let key = (ns.to_owned(), name.to_owned());
        if cur["metadata"].get("deletionTimestamp").is_some() && !has_finalizers(&new) {
            let obj = self.remove(res, key, Some(new));
            return Ok(Self::present(&obj, res));
        }
        let obj = self.commit_put(res.group_resource(), key, new, Some(cur));
        Ok(Self::present(&obj, res))
    }

    /// PATCH: apply `patch_fn` to the stored object, then update with the result, so a
    /// `metadata.resourceVersion` carried by the patch is checked like an update's.
    pub fn patch(
        &mut self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        target: Target,
        patch_fn: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let cur = self
            .current(res, ns, name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let mut obj = (*cur).clone();
        patch_fn(&mut obj)?;
        self.update(res, ns, name, obj, target)
    }

    /// DELETE. With finalizers the object only gets a `deletionTimestamp`; it goes when an
    /// update empties them.
    pub fn delete(
        &mut self,
        res: &ResourceInfo,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Value, ApiError> {
        let cur = self
            .current(res, ns, name)
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if let Some(uid) = &pre.uid {
            if Some(uid.as_str()) != meta_str(&cur, "uid") {
                return Err(ApiError::precondition_failed(res, name, "UID mismatch"));
            }
        }
        if let Some(rv) = &pre.resource_version {
            if Some(rv.as_str()) != meta_str(&cur, "resourceVersion") {
                return Err(ApiError::precondition_failed(
                    res,
                    name,
                    "ResourceVersion mismatch",
                ));
            }
        }
        let key = (ns.to_owned(), name.to_owned());
        if has_finalizers(&cur) {
            if cur["metadata"].get("deletionTimestamp").is_some() {
                return Ok(Self::present(&cur, res));
            }
            let mut new = (*cur).clone();
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".into(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            let obj = self.commit_put(res.group_resource(), key, new, Some(cur));
            return Ok(Self::present(&obj, res));
        }
        let obj = self.remove(res, key, None);
        Ok(Self::present(&obj, res))
    }

    /// DELETE on a collection: delete every matching object; returns the list of them.
    pub fn delete_collection(
        &mut self,
        res: &ResourceInfo,
        ns: Option<&str>,
        selectors: &Selectors,
    ) -> Result<Value, ApiError> {
        let keys: Vec<(String, String)> = self
            .objects
            .get(&res.group_resource())
            .map(|m| {
                m.iter()
                    .filter(|((ons, _), o)| ns.is_none_or(|n| n == ons) && selectors.matches(o))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut items = Vec::new();
        for (ons, name) in keys {
            items.push(self.delete(res, &ons, &name, &Preconditions::default())?);
        }
        Ok(json!({
            "kind": res.list_kind,
            "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }

    /// Remove an object (its final state is `last`, or the stored one), with cascades:
    /// a Namespace takes its objects along, a CRD its custom objects and its routes.
    fn remove(
        &mut self,
        res: &ResourceInfo,
        key: (String, String),
        last: Option<Value>,
    ) -> Arc<Value> {
        let gr = res.group_resource();
        let stored = self
            .objects
            .get_mut(&gr)
            .and_then(|m| m.remove(&key))
            .unwrap_or_else(|| Arc::new(json!({})));
        let mut obj = last.unwrap_or_else(|| (*stored).clone());
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let obj = Arc::new(obj);
        self.record(Event {
            rv: self.rv,
            gr,
            namespace: key.0.clone(),
            kind: EventType::Deleted,
            object: obj.clone(),
            old: None,
        });
        if res.is_namespace() {
            let doomed: Vec<(GroupResource, (String, String))> = self
                .objects
                .iter()
                .flat_map(|(gr, m)| {
                    m.keys()
                        .filter(|(ons, _)| *ons == key.1)
                        .map(move |k| (gr.clone(), k.clone()))
                })
                .collect();
            for (gr, k) in doomed {
                if let Some(r) = self.registry.any_version(&gr).cloned() {
                    self.remove(&r, k, None);
                }
            }
        }
        if res.is_crd() {
            let served: Vec<ResourceInfo> = self
                .registry
                .all()
                .iter()
                .filter(|r| r.crd.as_deref() == Some(key.1.as_str()))
                .cloned()
                .collect();
            if let Some(r) = served.first() {
                let keys: Vec<_> = self
                    .objects
                    .get(&r.group_resource())
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                for k in keys {
                    self.remove(r, k, None);
                }
            }
            self.registry.unregister_crd(&key.1);
        }
        obj
    }

    fn commit_put(
        &mut self,
        gr: GroupResource,
        key: (String, String),
        mut obj: Value,
        old: Option<Arc<Value>>,
    ) -> Arc<Value> {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let obj = Arc::new(obj);
        self.objects
            .entry(gr.clone())
            .or_default()
            .insert(key.clone(), obj.clone());
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rv: self.rv,
            gr,
            namespace: key.0,
            kind,
            object: obj.clone(),
            old,
        });
        obj
    }

    fn record(&mut self, ev: Event) {
        self.watchers.retain(|_, w| w.deliver(&ev));
        self.history.push_back(ev);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
        self.changes += 1;
    }

    /// Open a watch. `resource_version` unset or "0", or `send_initial_events` (a streaming
    /// list): synthetic ADDED for every current object, then changes; with
    /// `send_initial_events` the ADDED events are followed by a BOOKMARK annotated
    /// `k8s.io/initial-events-end: "true"`. Otherwise "N": every change after N, or 410 Expired
    /// when N is older than the history window. Lines go to `tx`; returns the watch id.
    pub fn watch(
        &mut self,
        res: &ResourceInfo,
        ns: Option<&str>,
        selectors: Selectors,
        resource_version: Option<&str>,
        send_initial_events: bool,
        tx: UnboundedSender<Bytes>,
    ) -> Result<u64, ApiError> {
        let w = Watcher {
            gr: res.group_resource(),
            api_version: res.api_version(),
            kind: res.kind.clone(),
            namespace: ns.map(str::to_owned),
            selectors,
            tx,
        };
        let resume =
            resource_version.filter(|rv| !rv.is_empty() && *rv != "0" && !send_initial_events);
        match resume {
            None => {
                if let Some(coll) = self.objects.get(&w.gr) {
                    for ((ons, _), obj) in coll {
                        if w.namespace.as_ref().is_none_or(|n| n == ons) && w.selectors.matches(obj)
                        {
                            w.send("ADDED", obj);
                        }
                    }
                }
            }
            Some(rv) => {
                let n: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?;
                if n < self.compacted_rv {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {n} ({})",
                        self.compacted_rv + 1
                    )));
                }
                for ev in self.history.iter().filter(|e| e.rv > n) {
                    w.deliver(ev);
                }
            }
        }
        if send_initial_events {
            let line = json!({
                "type": "BOOKMARK",
                "object": {
                    "kind": w.kind,
                    "apiVersion": w.api_version,
                    "metadata": {
                        "resourceVersion": self.rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                },
            });
            let _ = w.tx.send(Bytes::from(format!("{line}\n")));
        }
        self.next_watch += 1;
        self.watchers.insert(self.next_watch, w);
        Ok(self.next_watch)
    }

    /// Send a BOOKMARK carrying the current resourceVersion to watch `id`. Every change up to
    /// it has already been queued to that watch. False when the watch is gone.
    pub fn bookmark(&mut self, id: u64) -> bool {
        let Some(w) = self.watchers.get(&id) else {
            return false;
        };
        let line = json!({
            "type": "BOOKMARK",
            "object": {
                "kind": w.kind,
                "apiVersion": w.api_version,
                "metadata": {"resourceVersion": self.rv.to_string()},
            },
        });
        let alive = w.tx.send(Bytes::from(format!("{line}\n"))).is_ok();
        if !alive {
            self.watchers.remove(&id);
        }
        alive
    }

    /// Whether watch `id` is open and its client still reading; forgets it otherwise.
    pub fn watch_alive(&mut self, id: u64) -> bool {
        let alive = self.watchers.get(&id).is_some_and(|w| !w.tx.is_closed());
        if !alive {
            self.watchers.remove(&id);
        }
        alive
    }

    /// Close watch `id` (its stream ends).
    pub fn unwatch(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    /// Close every open watch (fault injection).
    pub fn drop_watches(&mut self) {
        self.watchers.clear();
    }

    /// Everything needed to rebuild the store: the resourceVersion and every object, CRDs first.
    pub fn snapshot(&self) -> Value {
        let mut entries: Vec<(&GroupResource, &Arc<Value>)> = self
            .objects
            .iter()
            .flat_map(|(gr, m)| m.values().map(move |o| (gr, o)))
            .collect();
        entries.sort_by_key(|(gr, o)| {
            (
                gr.resource != "customresourcedefinitions",
                (*gr).clone(),
                o["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        });
        let objects: Vec<Value> = entries
            .into_iter()
            .map(|(gr, o)| json!({"group": gr.group, "resource": gr.resource, "object": **o}))
            .collect();
        json!({"resourceVersion": self.rv, "objects": objects})
    }

    /// Rebuild a store from [`Store::snapshot`] output. History starts empty, so watches
    /// resuming from before the snapshot get 410, as after a real server's restart.
    pub fn restore(snapshot: &Value, history_limit: usize) -> Result<Self, String> {
        let mut store = Self::empty(history_limit);
        let rv = snapshot["resourceVersion"]
            .as_u64()
            .ok_or("resourceVersion missing")?;
        let objects = snapshot["objects"].as_array().ok_or("objects missing")?;
        for entry in objects {
            let gr = GroupResource {
                group: entry["group"].as_str().ok_or("group missing")?.to_owned(),
                resource: entry["resource"]
                    .as_str()
                    .ok_or("resource missing")?
                    .to_owned(),
            };
            let obj = entry["object"].clone();
            let name = meta_str(&obj, "name")
                .ok_or("object without name")?
                .to_owned();
            let ns = meta_str(&obj, "namespace").unwrap_or("").to_owned();
            if store.registry.any_version(&gr).is_none() {
                return Err(format!("{}.{} is not served", gr.resource, gr.group));
            }
            if gr.resource == "customresourcedefinitions" {
                store.registry.register_crd(&name, crd_resources(&obj)?);
            }
            store
                .objects
                .entry(gr)
                .or_default()
                .insert((ns, name), Arc::new(obj));
        }
        store.rv = rv;
        store.compacted_rv = rv;
        Ok(store)
    }
}

/// The status kube-apiserver's CRD controllers would write: names accepted, established.
fn crd_status(crd: &Value, stamp: &str) -> Value {
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": stamp},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": stamp},
        ],
        "storedVersions": stored,
    })
}

/// Secrets: `stringData` is write-only; like upstream, each of its keys is merged into `data`
/// (base64, overriding a `data` key of the same name) and `stringData` itself is dropped.
fn fold_string_data(res: &ResourceInfo, body: &mut Value) {
    use base64::Engine as _;
    if !(res.group.is_empty() && res.plural == "secrets") {
        return;
    }
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let Some(Value::Object(string_data)) = obj.remove("stringData") else {
        return;
    };
    let data = obj.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in string_data {
            if let Value::String(text) = value {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, Value::String(encoded));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn lease(store: &Store) -> ResourceInfo {
        store
            .registry()
            .find("coordination.k8s.io", "v1", "leases")
            .cloned()
            .unwrap()
    }

    fn lines(rx: &mut mpsc::UnboundedReceiver<Bytes>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(serde_json::from_slice(&b).unwrap());
        }
        out
    }

    #[test]
    fn resource_versions_increase_globally_across_resources() {
        let mut s = Store::new(100);
        let l = lease(&s);
        let a = s
            .create(&l, Some("default"), json!({"metadata": {"name": "a"}}))
            .unwrap();
        let cm = s.registry().find("", "v1", "configmaps").cloned().unwrap();
        let b = s
            .create(&cm, Some("default"), json!({"metadata": {"name": "b"}}))
            .unwrap();
        let ra: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let rb: u64 = b["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rb > ra);
        assert_eq!(rb, s.resource_version());
    }

    #[test]
    fn unchanged_update_does_not_bump_resource_version() {
        let mut s = Store::new(100);
        let l = lease(&s);
        let a = s
            .create(
                &l,
                Some("default"),
                json!({"metadata": {"name": "a"}, "spec": {"holderIdentity": "x"}}),
            )
            .unwrap();
        let b = s
            .update(&l, "default", "a", a.clone(), Target::Main)
            .unwrap();
        assert_eq!(
            a["metadata"]["resourceVersion"],
            b["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn watch_sees_selector_exit_as_deleted_and_entry_as_added() {
        let mut s = Store::new(100);
        let l = lease(&s);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sel = Selectors {
            labels: LabelSelector::parse("app=x").unwrap(),
            fields: FieldSelector::default(),
        };
        let rv = s.resource_version().to_string();
        s.watch(&l, Some("default"), sel, Some(&rv), false, tx)
            .unwrap();
        let a = s
            .create(
                &l,
                Some("default"),
                json!({"metadata": {"name": "a", "labels": {"app": "y"}}}),
            )
            .unwrap();
        let mut b = a.clone();
        b["metadata"]["labels"]["app"] = json!("x");
        let b = s.update(&l, "default", "a", b, Target::Main).unwrap();
        let mut c = b.clone();
        c["metadata"]["labels"]["app"] = json!("z");
        s.update(&l, "default", "a", c, Target::Main).unwrap();
        let types: Vec<_> = lines(&mut rx)
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types, ["ADDED", "DELETED"]);
    }

    #[test]
    fn snapshot_restores_objects_crds_and_resource_version() {
        let mut s = Store::new(100);
        let crd = s
            .registry()
            .find(
                super::super::resources::CRD_GROUP,
                "v1",
                "customresourcedefinitions",
            )
            .cloned()
            .unwrap();
        s.create(
            &crd,
            None,
            json!({
                "metadata": {"name": "widgets.example.com"},
                "spec": {"group": "example.com", "scope": "Namespaced",
                         "names": {"plural": "widgets", "kind": "Widget"},
                         "versions": [{"name": "v1", "served": true, "storage": true}]}
            }),
        )
        .unwrap();
        let w = s
            .registry()
            .find("example.com", "v1", "widgets")
            .cloned()
            .unwrap();
        s.create(&w, Some("default"), json!({"metadata": {"name": "w1"}}))
            .unwrap();
        let restored = Store::restore(&s.snapshot(), 10).unwrap();
        assert_eq!(restored.resource_version(), s.resource_version());
        assert!(restored.get(&w, "default", "w1").is_ok());
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut restored = restored;
        let err = restored
            .watch(&w, None, Selectors::default(), Some("1"), false, tx)
            .unwrap_err();
        assert_eq!(err.code, 410);
    }

    #[test]
    fn oddly_shaped_objects_are_handled_without_panicking() {
        let mut s = Store::new(100);
        let svc = s.registry().find("", "v1", "services").cloned().unwrap();
        let created = s
            .create(
                &svc,
                Some("default"),
                json!({"metadata": {"name": "a"}, "spec": "oops"}),
            )
            .unwrap();
        assert_eq!(created["spec"], "oops");
        assert!(s
            .create(&svc, Some("default"), json!({"metadata": "x"}))
            .is_err());
        assert_eq!(
            s.update(&svc, "default", "a", json!([1]), Target::Main)
                .unwrap_err()
                .code,
            400
        );
        let replaced_root = s.patch(&svc, "default", "a", Target::Main, |o| {
            *o = json!(5);
            Ok(())
        });
        assert_eq!(replaced_root.unwrap_err().code, 400);
    }

    #[test]
    fn create_keeps_status_only_for_nodes() {
        let mut s = Store::new(100);
        let status = json!({"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]});
        let node = s.registry().find("", "v1", "nodes").cloned().unwrap();
        let n = s
            .create(
                &node,
                None,
                json!({"metadata": {"name": "n1"}, "status": status}),
            )
            .unwrap();
        assert_eq!(n["status"], status);
        let svc = s.registry().find("", "v1", "services").cloned().unwrap();
        let v = s
            .create(
                &svc,
                Some("default"),
                json!({"metadata": {"name": "v"}, "status": status}),
            )
            .unwrap();
        assert!(v.get("status").is_none());
    }

    #[test]
    fn secret_string_data_is_merged_into_data_on_create_and_update() {
        let mut s = Store::new(100);
        let secret = s.registry().find("", "v1", "secrets").cloned().unwrap();
        let created = s
            .create(
                &secret,
                Some("default"),
                json!({"metadata": {"name": "pw"}, "data": {"keep": "eA==", "password": "b2xk"},
                       "stringData": {"password": "lab-only-password"}}),
            )
            .unwrap();
        assert!(created.get("stringData").is_none());
        assert_eq!(created["data"]["password"], "bGFiLW9ubHktcGFzc3dvcmQ=");
        assert_eq!(created["data"]["keep"], "eA==");
        let mut body = created.clone();
        body["stringData"] = json!({"user": "cairn"});
        let updated = s
            .update(&secret, "default", "pw", body, Target::Main)
            .unwrap();
        assert!(updated.get("stringData").is_none());
        assert_eq!(updated["data"]["user"], "Y2Fpcm4=");
        assert_eq!(updated["data"]["password"], "bGFiLW9ubHktcGFzc3dvcmQ=");
    }

    /// One client operation in the property test below.
    #[derive(Debug, Clone)]
    enum Op {
        Create(u8),
        Update(u8, u8, bool),
        Delete(u8),
        Finalize(u8),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..4).prop_map(Op::Create),
            (0u8..4, any::<u8>(), any::<bool>()).prop_map(|(n, v, s)| Op::Update(n, v, s)),
            (0u8..4).prop_map(Op::Delete),
            (0u8..4).prop_map(Op::Finalize),
        ]
    }

    fn state(s: &Store, cm: &ResourceInfo) -> BTreeMap<String, Value> {
        let list = s
            .list(cm, Some("default"), &Selectors::default(), None, None)
            .unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_owned(),
                    o.clone(),
                )
            })
            .collect()
    }

    proptest::proptest! {
        /// Whatever the operations, resourceVersions only grow, and a watch resumed from any
        /// list taken inside the history window, replayed onto that list, gives today's list;
        /// resuming from before the window is 410.
        #[test]
        fn watch_replay_from_any_listed_version_reaches_the_current_state(
            ops in proptest::collection::vec(op(), 1..40),
            window in 1usize..30,
        ) {
            let mut s = Store::new(window);
            let cm = s.registry().find("", "v1", "configmaps").cloned().unwrap();
            let mut lists = vec![(s.resource_version(), state(&s, &cm))];
            for op in ops {
                let before = s.resource_version();
                let name = |n: u8| format!("c{n}");
                let _ = match op {
                    Op::Create(n) => s.create(&cm, Some("default"), json!({"metadata": {"name": name(n)}})),
                    Op::Update(n, v, stale) => match s.get(&cm, "default", &name(n)) {
                        Ok(mut o) => {
                            o["data"] = json!({"v": v.to_string()});
                            if stale {
                                o["metadata"]["resourceVersion"] = json!("1");
                            }
                            s.update(&cm, "default", &name(n), o, Target::Main)
                        }
                        Err(e) => Err(e),
                    },
                    Op::Delete(n) => s.delete(&cm, "default", &name(n), &Preconditions::default()),
                    Op::Finalize(n) => s.patch(&cm, "default", &name(n), Target::Main, |o| {
                        let has = o["metadata"]["finalizers"].is_array();
                        o["metadata"]["finalizers"] = if has { Value::Null } else { json!(["x/y"]) };
                        Ok(())
                    }),
                };
                proptest::prop_assert!(s.resource_version() >= before);
                lists.push((s.resource_version(), state(&s, &cm)));
            }
            let now = state(&s, &cm);
            for (rv, mut list) in lists {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let opened = s.watch(&cm, Some("default"), Selectors::default(), Some(&rv.to_string()), false, tx);
                if rv < s.compacted_rv {
                    proptest::prop_assert_eq!(opened.unwrap_err().code, 410);
                    continue;
                }
                let id = opened.unwrap();
                for ev in lines(&mut rx) {
                    let name = ev["object"]["metadata"]["name"].as_str().unwrap().to_owned();
                    match ev["type"].as_str().unwrap() {
                        "DELETED" => { list.remove(&name); }
                        _ => { list.insert(name, ev["object"].clone()); }
                    }
                }
                s.unwatch(id);
                proptest::prop_assert_eq!(&list, &now);
            }
        }
    }

    #[test]
    fn continue_token_round_trips() {
        let t = encode_continue(42, "ns", "na\nme");
        assert_eq!(
            decode_continue(&t),
            Some((42, "ns".into(), "na\nme".into()))
        );
        assert_eq!(decode_continue("zz"), None);
    }

    #[test]
    fn generated_uids_are_distinct_and_uuid_shaped() {
        let mut ids = IdGen {
            seed: Default::default(),
            n: 0,
        };
        let a = ids.uid();
        assert_ne!(a, ids.uid());
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }
}
