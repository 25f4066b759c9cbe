//! The lease driver against the lab API server, with the default tunables (lease 3 s, renew
//! every 1 s, settle 1 s, join delay 500 ms), three speakers:
//!
//! - `lease_api_writes_per_s_3_nodes`: Lease writes (create + update) per second once all three
//!   hold their Lease, over 10 s. It depends on the number of nodes only: the driver writes
//!   nothing per Service.
//! - `lease_release_seen_ms_p50` / `_max`: from the start of a graceful release
//!   ([`LeaseDriver::release`]) until a peer's view no longer lists the node, over 10 runs.
//! - `lease_kill_seen_ms_p50` / `_max`: from aborting a driver (no release) until a peer's view
//!   no longer lists the node, over 5 runs killed at phases 0, 200, ..., 800 ms after the driver
//!   started announcing: the lease duration minus the time since the last renewal.
//!
//! Lines are `bench <metric> <value> <unit>`.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_e2e::apiserver::{LabApiServer, Options};
use cairn_speaker::lease_driver::{DriverConfig, LeaseDriver, MembershipView};
use cairn_speaker::membership::LEASE_NAMESPACE;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;
use tokio::time::Instant;

const LEASES: &str = "leases.coordination.k8s.io";

async fn client_for(server: &LabApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(cfg).expect("client")
}

async fn spawn(server: &LabApiServer, node: &str) -> LeaseDriver {
    LeaseDriver::spawn(
        client_for(server).await,
        DriverConfig::new(node, format!("speaker-{node}")),
    )
    .expect("driver starts")
}

async fn wait(rx: &mut watch::Receiver<MembershipView>, pred: impl FnMut(&MembershipView) -> bool) {
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(pred))
        .await
        .expect("reached within a minute")
        .expect("driver runs");
}

fn all(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn all_announcing(drivers: &[&LeaseDriver], nodes: &BTreeSet<String>) {
    for d in drivers {
        wait(&mut d.view(), |v| v.may_announce && v.candidates == *nodes).await;
    }
}

fn p50_max(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

async fn bench() {
    let server = LabApiServer::start(Options::default())
        .await
        .expect("lab API server starts");
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": LEASE_NAMESPACE}}))
            .expect("namespace object");
    Api::<Namespace>::all(client_for(&server).await)
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    let nodes = all(&["n1", "n2", "n3"]);
    let n1 = spawn(&server, "n1").await;
    let n2 = spawn(&server, "n2").await;
    let mut n3 = spawn(&server, "n3").await;
    all_announcing(&[&n1, &n2, &n3], &nodes).await;

    let writes = || {
        let c = server.request_counts();
        c.get("create", LEASES) + c.get("update", LEASES)
    };
    let (before, start) = (writes(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let per_s = (writes() - before) as f64 / start.elapsed().as_secs_f64();
    println!("bench lease_api_writes_per_s_3_nodes {per_s:.2} writes/s");

    let mut released = Vec::new();
    for _ in 0..10 {
        let mut peer = n1.view();
        let t = Instant::now();
        n3.release(Duration::from_secs(10))
            .await
            .expect("release completes");
        wait(&mut peer, |v| !v.live_nodes.contains("n3")).await;
        released.push(t.elapsed().as_secs_f64() * 1e3);
        n3 = spawn(&server, "n3").await;
        all_announcing(&[&n1, &n2, &n3], &nodes).await;
    }
    let (p50, max) = p50_max(released);
    println!("bench lease_release_seen_ms_p50 {p50:.1} ms");
    println!("bench lease_release_seen_ms_max {max:.1} ms");

    let mut killed = Vec::new();
    for i in 0..5 {
        // Spread the kill over the renew interval (a driver starts announcing right when it
        // renews, so killing at once would always kill just after a renewal).
        tokio::time::sleep(Duration::from_millis(200 * i)).await;
        let mut peer = n1.view();
        let t = Instant::now();
        drop(n3);
        wait(&mut peer, |v| !v.live_nodes.contains("n3")).await;
        killed.push(t.elapsed().as_secs_f64() * 1e3);
        n3 = spawn(&server, "n3").await;
        all_announcing(&[&n1, &n2, &n3], &nodes).await;
    }
    let (p50, max) = p50_max(killed);
    println!("bench lease_kill_seen_ms_p50 {p50:.1} ms");
    println!("bench lease_kill_seen_ms_max {max:.1} ms");
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench());
}
