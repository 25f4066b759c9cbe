//! The resources the lab API server serves: a static table of built-in kinds plus one entry per
//! served version of every CustomResourceDefinition stored through it. This module only answers
//! "what lives at group/version/plural and how does it behave" (scope, status subresource,
//! kind); it holds no objects and does no IO.

use serde_json::Value;

/// One served resource at one group/version (what `/apis/<g>/<v>` lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, empty for the core group.
    pub group: String,
    /// Served version.
    pub version: String,
    /// Lower-case plural, the URL segment.
    pub plural: String,
    /// Lower-case singular.
    pub singular: String,
    /// Kind of one object.
    pub kind: String,
    /// Kind of a list of objects.
    pub list_kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether the `status` subresource is served (and `status` is isolated from main writes).
    pub status: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Name of the CRD that defines this resource, `None` for built-ins.
    pub crd: Option<String>,
}

/// Where objects of a resource are stored: versions of one resource share their objects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group, empty for core.
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl ResourceInfo {
    /// `apiVersion` of objects served here (`v1`, `coordination.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key shared by all versions.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    /// `plural.group` as the real server prints it in messages (`leases.coordination.k8s.io`).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether this is the CustomResourceDefinition resource itself.
    pub fn is_crd(&self) -> bool {
        self.group == CRD_GROUP && self.plural == "customresourcedefinitions"
    }

    /// Whether this is the core Namespace resource.
    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }
}

/// Group of CustomResourceDefinition.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";

/// (group, version, plural, singular, kind, namespaced, status subresource, short names)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
);

/// The built-in resources. Only what Cairn, its manifests and kubectl use.
const BUILTIN: &[Row] = &[
    (
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        true,
        &["ns"],
    ),
    (
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        true,
        &["svc"],
    ),
    ("", "v1", "nodes", "node", "Node", false, true, &["no"]),
    ("", "v1", "secrets", "secret", "Secret", true, false, &[]),
    ("", "v1", "events", "event", "Event", true, false, &["ev"]),
    (
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        false,
        &["cm"],
    ),
    (
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        false,
        &["sa"],
    ),
    ("", "v1", "pods", "pod", "Pod", true, true, &["po"]),
    (
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        false,
        &[],
    ),
    (
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        false,
        &[],
    ),
    (
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        false,
        &["ev"],
    ),
    (
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        true,
        &["deploy"],
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        true,
        &["ds"],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        false,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        false,
        &[],
    ),
    (
        CRD_GROUP,
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        true,
        &["crd", "crds"],
    ),
];

/// Every verb the lab server implements, in the order discovery lists them.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The served resources: built-ins first, then CRD versions in creation order.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        let resources = BUILTIN
            .iter()
            .map(
                |&(group, version, plural, singular, kind, namespaced, status, short)| {
                    ResourceInfo {
                        group: group.into(),
                        version: version.into(),
                        plural: plural.into(),
                        singular: singular.into(),
                        kind: kind.into(),
                        list_kind: format!("{kind}List"),
                        namespaced,
                        status,
                        short_names: short.iter().map(|s| (*s).to_owned()).collect(),
                        crd: None,
                    }
                },
            )
            .collect();
        Self { resources }
    }
}

impl Registry {
    /// The resource served at group/version/plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Any served version of a stored resource (for cascades and snapshots).
    pub fn any_version(&self, gr: &GroupResource) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == gr.group && r.plural == gr.resource)
    }

    /// All served resources.
    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// Groups (non-core) with their versions in preference order, groups in first-served order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.resources.iter().filter(|r| !r.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Resources served at one group/version.
    pub fn at(&self, group: &str, version: &str) -> Vec<&ResourceInfo> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }

    /// Serve (or re-serve, after an update) the versions a CRD object declares.
    pub fn register_crd(&mut self, crd_name: &str, infos: Vec<ResourceInfo>) {
        self.unregister_crd(crd_name);
        self.resources.extend(infos);
    }

    /// Stop serving a CRD's resources.
    pub fn unregister_crd(&mut self, crd_name: &str) {
        self.resources
            .retain(|r| r.crd.as_deref() != Some(crd_name));
    }
}

/// Read the served resources out of a CustomResourceDefinition object, or say why it is invalid.
/// Follows `apiextensions.k8s.io/v1`: `spec.group`, `spec.names.{plural,singular,kind,listKind,
/// shortNames}`, `spec.scope` (`Namespaced`|`Cluster`), `spec.versions[].{name,served,
/// subresources.status}`; the object's name must be `<plural>.<group>`.
pub fn crd_resources(crd: &Value) -> Result<Vec<ResourceInfo>, String> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = spec["group"]
        .as_str()
        .filter(|g| !g.is_empty())
        .ok_or("spec.group: Required value")?;
    let names = &spec["names"];
    let plural = names["plural"]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or("spec.names.plural: Required value")?;
    let kind = names["kind"]
        .as_str()
        .filter(|k| !k.is_empty())
        .ok_or("spec.names.kind: Required value")?;
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let singular = names["singular"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = names["listKind"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{kind}List"));
    let short_names: Vec<String> = names["shortNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    let mut out = Vec::new();
    for v in versions {
        let version = v["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("spec.versions[].name: Required value")?;
        if v["served"].as_bool() != Some(true) {
            continue;
        }
        out.push(ResourceInfo {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            list_kind: list_kind.clone(),
            namespaced,
            status: v["subresources"]["status"].is_object(),
            short_names: short_names.clone(),
            crd: Some(name.to_owned()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(scope: &str) -> Value {
        json!({
            "metadata": {"name": "ipaddresspools.cairn.io"},
            "spec": {
                "group": "cairn.io",
                "scope": scope,
                "names": {"plural": "ipaddresspools", "kind": "IPAddressPool"},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": true,
                     "subresources": {"status": {}}},
                    {"name": "v1alpha0", "served": false, "storage": false}
                ]
            }
        })
    }

    #[test]
    fn crd_serves_only_served_versions_with_declared_status_and_scope() {
        let infos = crd_resources(&crd("Cluster")).unwrap();
        assert_eq!(infos.len(), 1);
        assert!(infos[0].status);
        assert!(!infos[0].namespaced);
        assert_eq!(infos[0].list_kind, "IPAddressPoolList");
        assert_eq!(infos[0].singular, "ipaddresspool");
        assert!(crd_resources(&crd("Namespaced")).unwrap()[0].namespaced);
    }

    #[test]
    fn crd_with_mismatched_name_or_bad_scope_is_invalid() {
        let mut c = crd("Cluster");
        c["metadata"]["name"] = json!("pools.cairn.io");
        assert!(crd_resources(&c).is_err());
        assert!(crd_resources(&crd("Global")).is_err());
    }

    #[test]
    fn registry_lists_groups_and_unregisters_crds() {
        let mut reg = Registry::default();
        reg.register_crd(
            "ipaddresspools.cairn.io",
            crd_resources(&crd("Cluster")).unwrap(),
        );
        assert!(reg.find("cairn.io", "v1alpha1", "ipaddresspools").is_some());
        assert!(reg.groups().iter().any(|(g, _)| g == "cairn.io"));
        reg.unregister_crd("ipaddresspools.cairn.io");
        assert!(reg.find("cairn.io", "v1alpha1", "ipaddresspools").is_none());
        assert!(!reg.groups().iter().any(|(g, _)| g == "cairn.io"));
    }
}
