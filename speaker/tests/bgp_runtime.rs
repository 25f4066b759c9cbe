//! The speaker runtime announcing by BGP to a real router: gobgpd (GoBGP 3) in a router
//! namespace, the runtime on a tokio runtime whose threads live in the node namespace (so its
//! BGP sessions start there), the lab API server reached through an in-test forwarder.
//!
//! The session is configured from the BGPPeer (TCP MD5 password from its Secret, router id from
//! the Node's InternalIP), routes carry the BGPAdvertisement's community, a second Service adds
//! its prefix to the running session without resetting it, and a graceful stop withdraws.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::v1alpha1::{BGPAdvertisement, BGPPeer, IPAddressPool};
use cairn_e2e::apiserver::{LabApiServer, Options};
use cairn_e2e::netns::{is_root, Netns};
use cairn_e2e::routers::{wait_for, Gobgp, Neighbor, RouterConfig};
use cairn_speaker::metrics::{Health, Metrics};
use cairn_speaker::runtime::{self, Config};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::sync::watch;

mod speaker_lab;

use speaker_lab::{
    base_cluster, bound_service, create, eventually, forward_into, lease_of, status_of,
};

const NODE: &str = "cairn-n1";
const NODE_ADDR: &str = "192.0.2.1";
const ROUTER_ADDR: &str = "192.0.2.254";
const PASSWORD: &str = "cairn-md5";
/// gobgpd answers slowly on a busy machine; only a failure reaches this.
const WAIT: Duration = Duration::from_secs(30);

fn next_hops(paths: &[serde_json::Value]) -> Vec<String> {
    let mut hops: Vec<String> = paths
        .iter()
        .flat_map(|p| p["attrs"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["nexthop"].as_str().map(str::to_owned))
        .collect();
    hops.sort();
    hops
}

fn wait_paths(gobgp: &Gobgp, prefix: &str, want: &[&str]) -> Vec<serde_json::Value> {
    let got = wait_for(WAIT, || {
        let paths = gobgp.rib_paths(prefix).ok()?;
        (next_hops(&paths) == want).then_some(paths)
    });
    got.unwrap_or_else(|| {
        panic!(
            "{prefix}: want next hops {want:?}, gobgpd has {:?}",
            gobgp.rib_paths(prefix)
        )
    })
}

/// What gobgpd says of the session with the node: (when it came up, OPENs received). A reset
/// changes both (the second only if the reset came within the same second).
fn session_mark(gobgp: &Gobgp) -> Option<(serde_json::Value, serde_json::Value)> {
    let json = gobgp.cli_json(&["neighbor", NODE_ADDR]).ok()?;
    let uptime = json["timers"]["state"]["uptime"].clone();
    let opens = json["state"]["messages"]["received"]["open"].clone();
    (!uptime.is_null() && !opens.is_null()).then_some((uptime, opens))
}

/// The BGP identifier gobgpd sees for the node.
fn router_id(gobgp: &Gobgp) -> Option<String> {
    let json = gobgp.cli_json(&["neighbor", NODE_ADDR]).ok()?;
    json["state"]["router_id"].as_str().map(str::to_owned)
}

#[test]
fn the_runtime_peers_with_md5_from_the_secret_adds_prefixes_without_reset_and_withdraws_on_stop() {
    assert!(is_root(), "network namespace tests need root");
    let router = Netns::new("spkr").expect("router namespace");
    let node = Netns::new("spkn").expect("node namespace");
    router.veth("r0", &node, "eth0").expect("veth");
    router
        .addr("r0", &format!("{ROUTER_ADDR}/24"))
        .expect("addr");
    node.addr("eth0", &format!("{NODE_ADDR}/24")).expect("addr");
    let neighbor: IpAddr = NODE_ADDR.parse().expect("ip");
    let gobgp = Gobgp::start(
        &router,
        &Gobgp::config_toml(&RouterConfig {
            asn: 65000,
            router_id: "203.0.113.254".parse().expect("id"),
            neighbors: vec![Neighbor {
                password: Some(PASSWORD.into()),
                ..Neighbor::new(neighbor, 65001)
            }],
        }),
    )
    .expect("gobgpd");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    let server = rt
        .block_on(LabApiServer::start(Options::default()))
        .expect("lab API server");
    let api = server.client().expect("client");
    rt.block_on(async {
        base_cluster(&api).await;
        create::<IPAddressPool>(
            &api,
            json!({
                "apiVersion": "cairn.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "bgp", "namespace": "cairn-system"},
                "spec": {"addresses": ["203.0.113.0/28"]},
            }),
        )
        .await;
        create::<Secret>(
            &api,
            json!({
                "metadata": {"name": "bgp-auth", "namespace": "cairn-system"},
                // base64 of PASSWORD
                "data": {"password": "Y2Fpcm4tbWQ1"},
            }),
        )
        .await;
        create::<BGPPeer>(
            &api,
            json!({
                "apiVersion": "cairn.io/v1alpha1", "kind": "BGPPeer",
                "metadata": {"name": "tor", "namespace": "cairn-system"},
                "spec": {"myASN": 65001, "peerASN": 65000, "peerAddress": ROUTER_ADDR,
                         "connectTime": "1s",
                         "passwordSecret": {"name": "bgp-auth", "key": "password"}},
            }),
        )
        .await;
        create::<BGPAdvertisement>(
            &api,
            json!({
                "apiVersion": "cairn.io/v1alpha1", "kind": "BGPAdvertisement",
                "metadata": {"name": "tag", "namespace": "cairn-system"},
                "spec": {"ipAddressPools": ["bgp"], "communities": ["65001:100"]},
            }),
        )
        .await;
        create::<Service>(&api, bound_service("a", "203.0.113.1", "bgp")).await;
    });

    // The runtime's threads live in the node namespace; the API server is reached through the
    // forwarder at the same address.
    let _forward = forward_into(&node, &rt, server.addr());
    let node_rt = node
        .run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        })
        .expect("enter namespace")
        .expect("node runtime");
    let kubeconfig = server.kubeconfig();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (shutdown, stop) = watch::channel(false);
    let speaker = {
        let (metrics, health) = (metrics.clone(), health.clone());
        node_rt.spawn(async move {
            let kc = Kubeconfig::from_yaml(&kubeconfig).expect("kubeconfig");
            let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig loads");
            let client = kube::Client::try_from(cfg).expect("client");
            runtime::run(
                client,
                Config::new(NODE, NODE),
                None,
                None,
                metrics,
                health,
                stop,
            )
            .await
        })
    };

    let paths = wait_paths(&gobgp, "203.0.113.1/32", &[NODE_ADDR]);
    let text = serde_json::to_string(&paths).expect("json");
    assert!(text.contains(&(65001u32 << 16 | 100).to_string()), "{text}");
    assert!(gobgp.neighbor_established(neighbor));
    eventually("metrics show the session up with one prefix", || {
        let m = metrics.encode();
        m.contains("cairn_bgp_session_up{peer=\"tor\"} 1")
            && m.contains("cairn_bgp_announced_prefixes{peer=\"tor\"} 1")
    });
    eventually(
        "the Lease's status record shows the peer and prefix",
        || {
            let status = status_of(&rt.block_on(lease_of(&api, NODE)));
            status.bgp.get("tor").is_some_and(|p| {
                p.session == "Established"
                    && p.prefixes == ["203.0.113.1/32".parse().expect("net")].into()
            })
        },
    );
    assert_eq!(
        router_id(&gobgp).as_deref(),
        Some(NODE_ADDR),
        "router id = the Node's InternalIP"
    );
    let mark = session_mark(&gobgp).expect("gobgpd reports the session");

    // A second Service: its prefix joins the running session.
    rt.block_on(create::<Service>(
        &api,
        bound_service("b", "203.0.113.2", "bgp"),
    ));
    wait_paths(&gobgp, "203.0.113.2/32", &[NODE_ADDR]);
    assert_eq!(
        session_mark(&gobgp),
        Some(mark),
        "the session was reset to add a prefix"
    );

    // Graceful stop: both routes go.
    assert!(health.is_ready());
    shutdown.send_replace(true);
    node_rt
        .block_on(speaker)
        .expect("runtime task")
        .expect("runtime stops cleanly");
    wait_paths(&gobgp, "203.0.113.1/32", &[]);
    wait_paths(&gobgp, "203.0.113.2/32", &[]);
    drop(node_rt);
}
