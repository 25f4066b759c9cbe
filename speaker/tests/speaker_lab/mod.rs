//! What the speaker's integration tests share: the network namespaces (a client and two nodes on
//! one bridge), the cluster objects (CRDs, namespaces, two Nodes, a pool, an L2Advertisement,
//! bound Services), a forwarder that makes the lab API server answer inside a namespace, the
//! client's view of who answers for the VIP, the speakers' Lease status records, and polling
//! with a generous deadline.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_api::annotations as keys;
use cairn_api::v1alpha1::{IPAddressPool, L2Advertisement};
use cairn_e2e::netns::{is_root, Netns};
use cairn_speaker::lease::LeaseConfig;
use cairn_speaker::membership::{lease_name, LEASE_NAMESPACE};
use cairn_speaker::status::{NodeStatus, ANNOUNCING_ANNOTATION};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinHandle;

/// The VIP of the Service.
pub const VIP: &str = "192.0.2.200";
/// The Nodes (eth0 addresses 192.0.2.1 and 192.0.2.2).
pub const NODES: [&str; 2] = ["cairn-n1", "cairn-n2"];
/// Far longer than anything here takes on an idle machine: only a failure reaches it.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Deserializes a test object.
pub fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("test object")
}

/// Creates the namespaced `object` (JSON) in its namespace.
pub async fn create<K>(client: &Client, object: serde_json::Value)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let object: K = from(object);
    let ns = object
        .meta()
        .namespace
        .clone()
        .expect("a namespaced object");
    Api::<K>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {object:?}: {e}"));
}

/// A Service `web/<name>` bound by the allocator's annotations to `ip` of `pool`.
pub fn bound_service(name: &str, ip: &str, pool: &str) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "namespace": "web", "annotations": {
            keys::ALLOCATED_IPS: ip, keys::ALLOCATED_POOL: pool,
        }},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}

/// CRDs, namespaces `cairn-system` and `web`, and both Nodes (InternalIP 192.0.2.1 and .2).
pub async fn base_cluster(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in cairn_api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    for ns in [LEASE_NAMESPACE, "web"] {
        let namespace: Namespace = from(json!({"metadata": {"name": ns}}));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("namespace");
    }
    for (i, name) in NODES.iter().enumerate() {
        let address = format!("192.0.2.{}", i + 1);
        let node: Node = from(json!({
            "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }));
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
    }
}

/// [`base_cluster`], a pool, an L2Advertisement for every node, and Service `web/site` bound
/// to [`VIP`].
pub async fn cluster(client: &Client) {
    base_cluster(client).await;
    create::<IPAddressPool>(
        client,
        json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "lab", "namespace": LEASE_NAMESPACE},
            "spec": {"addresses": ["192.0.2.200/29"]},
        }),
    )
    .await;
    create::<L2Advertisement>(
        client,
        json!({
            "apiVersion": "cairn.io/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "everywhere", "namespace": LEASE_NAMESPACE},
            "spec": {},
        }),
    )
    .await;
    create::<Service>(client, bound_service("site", VIP, "lab")).await;
}

/// Lease 1 s, renew every 300 ms, margin 500 ms, settle 300 ms: fast tests, and a fence
/// deadline that is never far ahead.
pub fn short_lease(holder: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(1),
        renew_interval: Duration::from_millis(300),
        retry_interval: Duration::from_millis(100),
        request_timeout: Duration::from_millis(300),
        safety_margin: Duration::from_millis(500),
        settle: Duration::from_millis(300),
        ..LeaseConfig::new(holder)
    }
}

/// stdout and stderr of a command, lower-cased (MACs compare as `MacAddr` prints them).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .to_lowercase()
}

/// The client kernel's neighbour entry for `ip`.
pub fn neighbour(client: &Netns, ip: &str) -> Option<String> {
    let out = client
        .exec(&["ip", "neigh", "show", ip, "dev", "eth0"])
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_lowercase)
}

/// What `arping` from the client's eth0 hears for `ip` over three requests (see [`text`]).
pub fn arping(client: &Netns, ip: &str) -> String {
    let out = client
        .command(&["arping", "-c", "3", "-w", "3", "-i", "eth0", ip])
        .output()
        .expect("run arping");
    text(&out)
}

/// Polls `check` every 20 ms until it holds; panics with `what` after [`DEADLINE`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "not reached in time: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client namespace and two node namespaces, each with an `eth0` on one bridge.
pub struct Lab {
    pub client: Netns,
    pub nodes: [Netns; 2],
    _bridge: Netns,
}

pub fn lab() -> Lab {
    assert!(is_root(), "network namespace tests need root");
    let bridge = Netns::new("spkbr").expect("bridge namespace");
    let client = Netns::new("spkc").expect("client namespace");
    let nodes = [
        Netns::new("spk1").expect("node namespace"),
        Netns::new("spk2").expect("node namespace"),
    ];
    bridge
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    bridge.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    for (ns, port) in [(&client, "pc"), (&nodes[0], "p1"), (&nodes[1], "p2")] {
        bridge.veth(port, ns, "eth0").expect("veth");
        bridge
            .ip(&["link", "set", port, "master", "br0"])
            .expect("enslave port");
    }
    client.addr("eth0", "192.0.2.10/24").expect("addr");
    nodes[0].addr("eth0", "192.0.2.1/24").expect("addr");
    nodes[1].addr("eth0", "192.0.2.2/24").expect("addr");
    // Let the client's kernel learn from gratuitous ARP.
    client
        .exec(&["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
        .expect("sysctl");
    Lab {
        client,
        nodes,
        _bridge: bridge,
    }
}

pub async fn lease_of(client: &Client, node: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE)
        .get(&lease_name(node))
        .await
        .expect("lease")
}

pub fn status_of(lease: &Lease) -> NodeStatus {
    lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOUNCING_ANNOTATION))
        .map(|a| NodeStatus::from_annotation(a).expect("status record"))
        .unwrap_or_default()
}

/// Makes `target` (an address of the host namespace) answer inside `ns`: a listener opened in
/// `ns`, each connection relayed from the host namespace.
pub fn forward_into(
    ns: &Netns,
    rt: &tokio::runtime::Runtime,
    target: SocketAddr,
) -> JoinHandle<()> {
    let listener = ns
        .run(move || std::net::TcpListener::bind(target))
        .expect("enter namespace")
        .expect("bind inside the namespace");
    listener.set_nonblocking(true).expect("non-blocking");
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}
