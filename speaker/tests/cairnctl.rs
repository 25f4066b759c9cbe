//! The `cairnctl` binary against the lab API server (`cairn_e2e::apiserver::LabApiServer`, real
//! HTTP) holding objects this test writes as the allocator and the speakers would: a pool with
//! its usage, an L2Advertisement that excludes control-plane nodes, Nodes, EndpointSlices, a
//! Service with an address, one without (and the allocator's `AllocationFailed` Event), and the
//! speakers' Leases with their `cairn.io/announcing` records: n1 live and announcing, n2
//! released (holder cleared, a stale record left behind), n3 live but a control-plane node.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_api::v1alpha1::{IPAddressPool, L2Advertisement};
use cairn_e2e::apiserver::{LabApiServer, Options};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

async fn client_for(server: &LabApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(cfg).expect("client")
}

fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a well-formed object")
}

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &object(value))
        .await
        .expect("create")
}

/// Now, as RFC 3339 with microseconds (a MicroTime).
fn now_micro() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A fresh directory for one test's kubeconfig.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cairnctl-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn lease(node: &str, holder: &str, announcing: Value) -> Value {
    json!({
        "metadata": {
            "name": format!("cairn-speaker-{node}"),
            "namespace": "cairn-system",
            "annotations": {
                "cairn.io/l2-interfaces-up": "eth0",
                "cairn.io/announcing": announcing.to_string(),
            },
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 3600,
            "renewTime": now_micro(),
        },
    })
}

/// Writes the cluster's objects and returns the server (kept alive by the caller).
async fn cluster() -> LabApiServer {
    let server = LabApiServer::start(Options::default())
        .await
        .expect("lab API server starts");
    let client = client_for(&server).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in cairn_api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["cairn-system", "default"] {
        // The server may have made `default` already.
        let _ = namespaces
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": ns}})),
            )
            .await;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, control_plane) in [("cairn-n1", false), ("cairn-n2", false), ("cairn-n3", true)] {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if control_plane {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        create(
            &nodes,
            json!({"metadata": {"name": name, "labels": labels}}),
        )
        .await;
    }

    let pools: Api<IPAddressPool> = Api::namespaced(client.clone(), "cairn-system");
    create(
        &pools,
        json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "l2-pool", "namespace": "cairn-system",
                         "labels": {"cairn.io/announce": "l2"}},
            "spec": {"addresses": ["192.0.2.200-192.0.2.239"]},
        }),
    )
    .await;
    pools
        .patch_status(
            "l2-pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "assignedIPv4": 2, "availableIPv4": 38, "assignedIPv6": 0, "availableIPv6": 0,
                "conditions": [{"type": "Valid", "status": "True", "reason": "Valid",
                                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            }})),
        )
        .await
        .expect("pool status");
    let l2: Api<L2Advertisement> = Api::namespaced(client.clone(), "cairn-system");
    create(
        &l2,
        json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "l2", "namespace": "cairn-system"},
            "spec": {
                "ipAddressPoolSelectors": [{"matchLabels": {"cairn.io/announce": "l2"}}],
                "nodeSelectors": [{"matchExpressions": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}
                ]}],
                "interfaces": ["eth0"],
            },
        }),
    )
    .await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    create(
        &services,
        json!({
            "metadata": {"name": "web", "namespace": "default", "annotations": {
                "cairn.io/allocated-ips": "192.0.2.200",
                "cairn.io/allocated-pool": "l2-pool",
            }},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        }),
    )
    .await;
    create(
        &services,
        json!({
            "metadata": {"name": "routed", "namespace": "default", "annotations": {
                "cairn.io/allocated-ips": "203.0.113.1",
                "cairn.io/allocated-pool": "bgp-pool",
            }},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        }),
    )
    .await;
    create(
        &services,
        json!({
            "metadata": {"name": "nowhere", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        }),
    )
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    create(
        &slices,
        json!({
            "metadata": {"name": "web-v4", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["192.0.2.11"], "nodeName": "cairn-n1", "conditions": {"ready": true}},
                {"addresses": ["192.0.2.12"], "nodeName": "cairn-n2", "conditions": {"ready": true}},
            ],
            "ports": [{"port": 8080}],
        }),
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    create(
        &events,
        json!({
            "metadata": {"name": "nowhere.1", "namespace": "default"},
            "eventTime": now_micro(),
            "type": "Warning",
            "reason": "AllocationFailed",
            "action": "Allocate",
            "note": "no pool with a free address accepts this Service",
            "reportingController": "cairn.io/allocator",
            "reportingInstance": "cairn-allocator-0",
            "regarding": {"kind": "Service", "namespace": "default", "name": "nowhere",
                          "apiVersion": "v1"},
        }),
    )
    .await;

    let leases: Api<Lease> = Api::namespaced(client, "cairn-system");
    create(
        &leases,
        lease(
            "cairn-n1",
            "cairn-n1",
            json!({"l2": {"192.0.2.200": ["eth0"]},
                   "bgp": {"tor": {"session": "Established", "prefixes": ["203.0.113.1/32"]}}}),
        ),
    )
    .await;
    // Released: its stale record must count for nothing.
    create(
        &leases,
        lease("cairn-n2", "", json!({"l2": {"192.0.2.200": ["eth0"]}})),
    )
    .await;
    create(
        &leases,
        lease(
            "cairn-n3",
            "cairn-n3",
            json!({"bgp": {"tor": {"session": "Established", "prefixes": ["203.0.113.0/24"]}}}),
        ),
    )
    .await;
    server
}

/// Runs cairnctl with the server's kubeconfig; returns stdout, failing on a non-zero exit.
async fn cairnctl(server: &LabApiServer, dir: &Path, args: &[&str]) -> String {
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(&args)
            .output()
            .expect("cairnctl runs")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "cairnctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn row<'a>(text: &'a str, first: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_pool_usage_addresses_owners_and_peers_from_live_leases_only() {
    let server = cluster().await;
    let dir = temp_dir("status");
    let text = cairnctl(&server, &dir, &["status"]).await;

    let header = text
        .lines()
        .find(|l| l.starts_with("SERVICE "))
        .expect("a Services table");
    let web = row(&text, "default/web");
    assert_eq!(
        web.split_whitespace().collect::<Vec<_>>(),
        [
            "default/web",
            "192.0.2.200",
            "l2-pool",
            "L2",
            "cairn-n1",
            "-"
        ],
        "{text}"
    );
    // Columns are aligned under their headers.
    for (column, value) in [("IP", "192.0.2.200"), ("OWNER", "cairn-n1")] {
        assert_eq!(header.find(column), web.find(value), "{text}");
    }
    let routed: Vec<&str> = row(&text, "default/routed").split_whitespace().collect();
    assert_eq!(
        routed,
        [
            "default/routed",
            "203.0.113.1",
            "bgp-pool",
            "BGP",
            "-",
            "tor:",
            "cairn-n1",
            "cairn-n3"
        ],
        "{text}"
    );
    assert!(
        row(&text, "default/nowhere").contains("<pending>"),
        "{text}"
    );
    let pool: Vec<&str> = row(&text, "l2-pool").split_whitespace().collect();
    assert_eq!(pool[1..4], ["2/40", "0/0", "True"], "{text}");
    let n2: Vec<&str> = row(&text, "cairn-n2").split_whitespace().collect();
    assert_eq!(n2[1..3], ["no", "0"], "{text}");

    let json: Value =
        serde_json::from_str(&cairnctl(&server, &dir, &["status", "-o", "json"]).await)
            .expect("JSON output");
    let services = json["services"].as_array().expect("services");
    let web = services
        .iter()
        .find(|s| s["service"] == "default/web")
        .expect("default/web");
    assert_eq!(web["ip"], "192.0.2.200");
    assert_eq!(web["owner"], "cairn-n1");
    assert_eq!(web["protocol"], "L2");
    let routed = services
        .iter()
        .find(|s| s["service"] == "default/routed")
        .expect("default/routed");
    assert_eq!(routed["bgp"], json!({"tor": ["cairn-n1", "cairn-n3"]}));
    assert_eq!(json["pools"][0]["assignedIPv4"], 2);
    let speakers = json["speakers"].as_array().expect("speakers");
    let live: Vec<(&str, bool)> = speakers
        .iter()
        .map(|s| (s["node"].as_str().unwrap_or(""), s["live"] == true))
        .collect();
    assert_eq!(
        live,
        [("cairn-n1", true), ("cairn-n2", false), ("cairn-n3", true)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_gives_the_allocators_reason_for_a_service_without_an_address() {
    let server = cluster().await;
    let dir = temp_dir("nowhere");
    let text = cairnctl(&server, &dir, &["why", "default/nowhere"]).await;
    assert!(
        text.contains("Service default/nowhere has no address"),
        "{text}"
    );
    assert!(
        text.contains("the allocator: no pool with a free address accepts this Service"),
        "{text}"
    );
    let json: Value = serde_json::from_str(
        &cairnctl(&server, &dir, &["why", "default/nowhere", "-o", "json"]).await,
    )
    .expect("JSON output");
    assert_eq!(json["ips"], json!([]));
    assert_eq!(
        json["noAddressReasons"],
        json!(["the allocator: no pool with a free address accepts this Service"])
    );
    assert_eq!(json["events"][0]["reason"], "AllocationFailed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_names_the_owner_and_each_other_nodes_reason_not_to_announce() {
    let server = cluster().await;
    let dir = temp_dir("web");
    let json: Value =
        serde_json::from_str(&cairnctl(&server, &dir, &["why", "default/web", "-o", "json"]).await)
            .expect("JSON output");
    let address = &json["addresses"][0];
    assert_eq!(address["ip"], "192.0.2.200");
    assert_eq!(address["l2Owner"], "cairn-n1");
    assert_eq!(address["announcedByL2"], "cairn-n1");
    let nodes: Vec<(&str, &str, String)> = address["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or(""),
                n["l2"]["state"].as_str().unwrap_or(""),
                n["l2"]["details"][0].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("cairn-n1", "owner", "announces on eth0 (l2)".to_string()),
            (
                "cairn-n2",
                "ineligible",
                "the node's speaker lease is not live".to_string()
            ),
            (
                "cairn-n3",
                "ineligible",
                "the node selectors of l2 do not match the node".to_string()
            ),
        ]
    );

    let text = cairnctl(&server, &dir, &["why", "default/web"]).await;
    assert!(
        text.contains("Service default/web has 192.0.2.200 from pool l2-pool"),
        "{text}"
    );
    assert!(
        row(&text, "cairn-n3").contains("ineligible: the node selectors of l2 do not match"),
        "{text}"
    );
    assert!(
        row(&text, "cairn-n1").contains("owner: announces on eth0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_refuses_an_unknown_service_with_an_error() {
    let server = cluster().await;
    let dir = temp_dir("missing");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["why", "default/missing"])
            .output()
            .expect("cairnctl runs")
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Service default/missing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_comes_from_kubeconfig_in_the_environment_like_kubectl() {
    let server = cluster().await;
    let dir = temp_dir("env");
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .env("KUBECONFIG", &kubeconfig)
            .args(["status", "-o", "json"])
            .output()
            .expect("cairnctl runs")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(json["pools"][0]["name"], "l2-pool");
}
