//! PATCH bodies, chosen by `Content-Type` as kube-apiserver does:
//! - `application/merge-patch+json`: JSON Merge Patch, RFC 7386 §2 (null deletes, objects
//!   merge recursively, everything else — lists included — replaces);
//! - `application/json-patch+json`: JSON Patch, RFC 6902 §4 (add, remove, replace, move, copy,
//!   test; a failed `test` or a bad path is 422);
//! - `application/strategic-merge-patch+json`: a merge patch in which lists of objects are
//!   merged by a merge key and the directives `$patch: replace|delete`, `$retainKeys`,
//!   `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` are honoured. Upstream takes
//!   merge keys from the Go types' `patchMergeKey` tags; without schemas the lab server takes the
//!   key from `$setElementOrder/<list>` (which kubectl apply always sends: entries holding only
//!   the key) or else from a small table of well-known lists (`ports`→`port` (`containerPort`
//!   in containers), `containers`/`initContainers`/`volumes`/`env`→`name`, `conditions`→`type`,
//!   `ownerReferences`→`uid`); other lists are replaced, lists of scalars are replaced (upstream
//!   merges a few, e.g. `finalizers`).
//! - `application/apply-patch+yaml` (server-side apply) with a JSON body: applied as a merge
//!   patch (or a create when the object does not exist). There is no field ownership, no
//!   `managedFields` and no apply conflict; a non-JSON (YAML) body is refused with 415.
//!
//! This module only transforms values; the store checks the result (resourceVersion, status).

use serde_json::Value;

use super::error::ApiError;

/// The patch flavours the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7386.
    Merge,
    /// RFC 6902.
    Json,
    /// Strategic merge patch, approximated as described in the module doc.
    Strategic,
    /// Server-side apply, approximated as described in the module doc.
    Apply,
}

impl PatchKind {
    /// The kind for a request `Content-Type` (parameters ignored), or 415.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        match essence {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/strategic-merge-patch+json, application/apply-patch+yaml (got \"{other}\")"
            ))),
        }
    }
}

/// Parse a patch body for `kind`.
pub fn parse(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| match kind {
        PatchKind::Apply => ApiError::unsupported_media_type(format!(
            "the lab API server accepts server-side apply bodies only as JSON: {e}"
        )),
        _ => ApiError::bad_request(format!("the patch is not valid JSON: {e}")),
    })?;
    match kind {
        PatchKind::Json if !v.is_array() => Err(ApiError::bad_request(
            "a JSON patch must be an array of operations",
        )),
        PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply if !v.is_object() => {
            Err(ApiError::bad_request("a merge patch must be a JSON object"))
        }
        _ => Ok(v),
    }
}

/// Apply a parsed patch to `target` in place.
pub fn apply(kind: PatchKind, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::Apply => {
            json_patch::merge(target, patch);
            Ok(())
        }
        PatchKind::Strategic => {
            strategic_merge(target, patch);
            Ok(())
        }
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &ops).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch could not be applied: {e}"),
                details: None,
            })
        }
    }
}

/// A patch value without its `$`-directives (for values that are inserted, not merged).
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Merge key of a list of objects named `field`, from the well-known lists.
fn known_merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let key = match field {
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env" => "name",
        "conditions" => "type",
        "ownerReferences" => "uid",
        _ => return None,
    };
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

/// Strategic merge patch (see the module doc for what is and is not honoured).
fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(gone)) = (t.get_mut(list), v.as_array()) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            Value::Array(patch_items) => {
                let order = p
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                let key = order
                    .and_then(|o| o.first())
                    .and_then(Value::as_object)
                    .filter(|e| e.len() == 1)
                    .and_then(|e| e.keys().next().cloned())
                    .or_else(|| known_merge_key(k, patch_items).map(str::to_owned));
                let current = t.get(k).and_then(Value::as_array).cloned();
                match (key, current) {
                    (Some(key), Some(current)) if patch_items.iter().all(Value::is_object) => {
                        let merged = merge_list(current, patch_items, &key, order);
                        t.insert(k.clone(), Value::Array(merged));
                    }
                    _ => {
                        let items = patch_items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .map(strip_directives)
                            .collect();
                        t.insert(k.clone(), Value::Array(items));
                    }
                }
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k.as_str())));
    }
}

/// Merge `patch` items into `current` by `key`; `$patch: delete` items remove; the result
/// follows `order` (`$setElementOrder`) when given, unlisted items after it.
fn merge_list(
    mut current: Vec<Value>,
    patch: &[Value],
    key: &str,
    order: Option<&Vec<Value>>,
) -> Vec<Value> {
    for item in patch {
        let id = item.get(key);
        let pos = current
            .iter()
            .position(|c| id.is_some() && c.get(key) == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                current.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut current[i], item),
            (None, false) => current.push(strip_directives(item)),
        }
    }
    let Some(order) = order else {
        return current;
    };
    let mut ordered = Vec::with_capacity(current.len());
    for want in order {
        if let Some(i) = current.iter().position(|c| c.get(key) == want.get(key)) {
            ordered.push(current.remove(i));
        }
    }
    ordered.extend(current);
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386_examples() {
        // RFC 7386 §3, first example.
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        apply(
            PatchKind::Merge,
            &mut doc,
            &json!({"a": "z", "c": {"f": null}}),
        )
        .unwrap();
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        // Lists are replaced.
        let mut doc = json!({"l": [1, 2, 3]});
        apply(PatchKind::Merge, &mut doc, &json!({"l": [4]})).unwrap();
        assert_eq!(doc, json!({"l": [4]}));
    }

    #[test]
    fn json_patch_applies_operations_and_failed_test_is_invalid() {
        let mut doc = json!({"spec": {"a": 1}});
        let p = json!([{"op": "add", "path": "/spec/b", "value": 2}, {"op": "remove", "path": "/spec/a"}]);
        apply(PatchKind::Json, &mut doc, &p).unwrap();
        assert_eq!(doc, json!({"spec": {"b": 2}}));
        let failing = json!([{"op": "test", "path": "/spec/b", "value": 3}]);
        assert_eq!(
            apply(PatchKind::Json, &mut doc, &failing).unwrap_err().code,
            422
        );
    }

    #[test]
    fn strategic_patch_from_kubectl_apply_merges_ports_by_key_in_the_given_order() {
        // What kubectl apply sends after naming port 80 and adding 8080, keeping 443.
        let mut doc = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 443}]}});
        let p = json!({"spec": {
            "$setElementOrder/ports": [{"port": 443}, {"port": 80}, {"port": 8080}],
            "ports": [{"port": 80, "name": "http"}, {"port": 8080}]
        }});
        apply(PatchKind::Strategic, &mut doc, &p).unwrap();
        let want = json!({"spec": {"ports": [
            {"port": 443},
            {"port": 80, "protocol": "TCP", "name": "http"},
            {"port": 8080}
        ]}});
        assert_eq!(doc, want);
    }

    #[test]
    fn strategic_patch_directives_delete_replace_and_retain() {
        let mut doc = json!({
            "spec": {
                "containers": [{"name": "a", "image": "x"}, {"name": "b"}],
                "strategy": {"type": "R", "rolling": {"max": 1}}
            },
            "metadata": {"labels": {"k": "v"}}
        });
        let p = json!({
            "spec": {
                "containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "image": "y"}],
                "strategy": {"$retainKeys": ["type"], "type": "Recreate"}
            },
            "metadata": {"labels": {"$patch": "replace", "n": "w"}}
        });
        apply(PatchKind::Strategic, &mut doc, &p).unwrap();
        let want = json!({
            "spec": {"containers": [{"name": "a", "image": "y"}], "strategy": {"type": "Recreate"}},
            "metadata": {"labels": {"n": "w"}}
        });
        assert_eq!(doc, want);
    }

    #[test]
    fn strategic_patch_replaces_lists_without_a_merge_key() {
        let mut doc = json!({"data": {"l": [1, 2]}, "args": ["a"], "finalizers": ["x", "y"]});
        let p = json!({"args": ["b"], "$deleteFromPrimitiveList/finalizers": ["x"]});
        apply(PatchKind::Strategic, &mut doc, &p).unwrap();
        assert_eq!(
            doc,
            json!({"data": {"l": [1, 2]}, "args": ["b"], "finalizers": ["y"]})
        );
    }

    #[test]
    fn content_types_map_to_kinds_and_unknown_is_415() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchKind::Merge
        );
        assert_eq!(
            PatchKind::from_content_type("text/plain").unwrap_err().code,
            415
        );
        assert_eq!(parse(PatchKind::Apply, b"a: b").unwrap_err().code, 415);
        assert_eq!(parse(PatchKind::Json, b"{}").unwrap_err().code, 400);
    }
}
