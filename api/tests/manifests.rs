//! The checked-in manifests agree with the code: CRDs are what the types generate, the
//! kustomization renders with a real kubectl, and the examples validate.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn checked_in_crds_match_the_rust_types() {
    for (file, crd) in cairn_api::crds() {
        let path = manifests().join("crds").join(file);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crds`", path.display()));
        assert_eq!(
            on_disk,
            cairn_api::crd_yaml(&crd).unwrap(),
            "{} is stale: run `cargo xtask crds`",
            path.display()
        );
    }
}

#[test]
fn every_crd_in_the_folder_is_generated_and_listed_in_the_kustomization() {
    let generated: Vec<&str> = cairn_api::crds().iter().map(|(f, _)| *f).collect();
    let kustomization = std::fs::read_to_string(manifests().join("kustomization.yaml")).unwrap();
    for entry in std::fs::read_dir(manifests().join("crds")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            generated.contains(&name.as_str()),
            "crds/{name} is not generated"
        );
        assert!(
            kustomization.contains(&format!("crds/{name}")),
            "crds/{name} not in kustomization"
        );
    }
}

#[test]
fn the_kustomization_renders_with_kubectl() {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(manifests())
        .output()
        .expect("kubectl is installed by `cargo xtask test`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_documents(&String::from_utf8_lossy(&out.stdout));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "CustomResourceDefinition")
            .count(),
        5
    );
    for kind in [
        "Namespace",
        "Deployment",
        "DaemonSet",
        "ClusterRole",
        "Role",
        "ServiceAccount",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let speaker = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let pod = &speaker["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let security = &pod["containers"][0]["securityContext"];
    assert_ne!(
        security["privileged"], true,
        "the speaker must not be privileged"
    );
    let added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(added, ["NET_RAW", "NET_ADMIN", "BPF", "PERFMON"]);
}

#[test]
fn the_speaker_role_writes_only_leases_and_events() {
    let text = std::fs::read_to_string(manifests().join("rbac.yaml")).unwrap();
    let write_verbs = ["create", "update", "patch", "delete"];
    for doc in yaml_documents(&text) {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        if name != "cairn-speaker" || !doc["kind"].as_str().unwrap_or_default().ends_with("Role") {
            continue;
        }
        for rule in doc["rules"].as_array().unwrap() {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            if verbs.iter().any(|v| write_verbs.contains(v)) {
                assert!(
                    resources.iter().all(|r| *r == "leases" || *r == "events"),
                    "speaker may write {resources:?}"
                );
            }
        }
    }
}

#[test]
fn the_examples_validate() {
    use cairn_api::v1alpha1::*;
    use cairn_api::validation;
    let mut seen = Vec::new();
    let mut aliases = std::collections::BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let docs: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|f| yaml_documents(&std::fs::read_to_string(f).unwrap()))
        .collect();
    for doc in docs.iter().filter(|d| d["kind"] == "Community") {
        let spec: CommunitySpec = serde_json::from_value(doc["spec"].clone()).unwrap();
        aliases.extend(validation::community_aliases(&spec).unwrap());
    }
    for doc in &docs {
        let spec = doc["spec"].clone();
        let kind = doc["kind"].as_str().unwrap();
        match kind {
            "IPAddressPool" => {
                drop(validation::pool(&serde_json::from_value(spec).unwrap()).unwrap())
            }
            "L2Advertisement" => {
                drop(validation::l2_advertisement(&serde_json::from_value(spec).unwrap()).unwrap())
            }
            "BGPPeer" => drop(
                validation::bgp_peer(&serde_json::from_value::<BGPPeerSpec>(spec).unwrap())
                    .unwrap(),
            ),
            "BGPAdvertisement" => drop(
                validation::bgp_advertisement(&serde_json::from_value(spec).unwrap(), &aliases)
                    .unwrap(),
            ),
            _ => {}
        }
        seen.push(kind.to_owned());
    }
    for kind in [
        "IPAddressPool",
        "L2Advertisement",
        "BGPPeer",
        "BGPAdvertisement",
        "Community",
    ] {
        assert!(seen.iter().any(|k| k == kind), "no example {kind}");
    }
}
