//! Discovery documents (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`)
//! built from the served resources, in the legacy (unaggregated) `meta/v1` shapes: `APIVersions`,
//! `APIGroupList`, `APIGroup`, `APIResourceList`. Aggregated discovery (`apidiscovery.k8s.io/v2`)
//! is not served: clients asking for it get the legacy document with `Content-Type:
//! application/json`, which client-go and kube take as "fall back to legacy discovery".
//! No OpenAPI documents are served (`/openapi/v2`, `/openapi/v3` are 404). Pure functions.

use serde_json::{json, Value};

use super::resources::{Registry, ResourceInfo, VERBS};

/// `/version`: the Kubernetes version the lab server claims to be (that of k8s-openapi's
/// `v1_33` feature, which Cairn is built against).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "cairn-lab-apiserver",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group(name: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": gvs,
        "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(name, versions)| group(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<g>`, or `None` when no version of the group is served.
pub fn api_group(reg: &Registry, name: &str) -> Option<Value> {
    let groups = reg.groups();
    let (_, versions) = groups.iter().find(|(g, _)| g == name)?;
    let mut g = group(name, versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn resource_entries(r: &ResourceInfo) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    let mut out = vec![main];
    if r.status {
        out.push(json!({
            "name": format!("{}/status", r.plural),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

/// `/api/v1` or `/apis/<g>/<v>`, or `None` when nothing is served there.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let resources = reg.at(group, version);
    if resources.is_empty() {
        return None;
    }
    let entries: Vec<Value> = resources.into_iter().flat_map(resource_entries).collect();
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resource_list_has_status_subresource_entries() {
        let reg = Registry::default();
        let list = resource_list(&reg, "", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"services"));
        assert!(names.contains(&"services/status"));
        assert!(!names.contains(&"configmaps/status"));
        assert!(resource_list(&reg, "", "v2").is_none());
    }

    #[test]
    fn group_list_names_every_builtin_group_once() {
        let reg = Registry::default();
        let list = group_list(&reg);
        let groups: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(groups.contains(&"coordination.k8s.io"));
        assert_eq!(
            groups
                .iter()
                .filter(|g| **g == "rbac.authorization.k8s.io")
                .count(),
            1
        );
        assert!(api_group(&reg, "nope.example.com").is_none());
    }
}
