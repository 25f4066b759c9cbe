//! Lab API server throughput: 10 000 Services created through kube 5 (16 requests in flight)
//! while one watch follows them. Prints
//! `bench apiserver_create_per_s <creates per second> ops/s` and
//! `bench apiserver_watch_lag_ms_p99 <p99 of (watch event received − create issued)> ms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_e2e::apiserver::{LabApiServer, Options};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

const SERVICES: usize = 10_000;
const IN_FLIGHT: usize = 16;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let server = LabApiServer::start(Options::default())
        .await
        .expect("server starts");
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(cfg).expect("client");
    let svcs: Api<Service> = Api::namespaced(client, "default");

    // name -> when its create was issued
    let issued: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let rv = svcs
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("list resourceVersion");
    let mut stream = svcs
        .watch(&WatchParams::default().timeout(600), &rv)
        .await
        .expect("watch")
        .boxed();
    let watch_issued = issued.clone();
    let follower = tokio::spawn(async move {
        let mut lags = Vec::with_capacity(SERVICES);
        while lags.len() < SERVICES {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Added(s))) => {
                    let seen = Instant::now();
                    let name = s.metadata.name.unwrap_or_default();
                    let sent = watch_issued
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&name)
                        .copied();
                    if let Some(sent) = sent {
                        lags.push(seen.saturating_duration_since(sent));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("watch ended after {} events", lags.len()),
                Err(e) => panic!("watch failed: {e}"),
            }
        }
        lags
    });

    let start = Instant::now();
    futures::stream::iter(0..SERVICES)
        .map(|i| {
            let svcs = svcs.clone();
            let issued = issued.clone();
            async move {
                let name = format!("svc-{i}");
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "labels": {"app": "bench"}},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
                }))
                .expect("service");
                issued
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, Instant::now());
                svcs.create(&PostParams::default(), &svc)
                    .await
                    .expect("create");
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<()>()
        .await;
    let elapsed = start.elapsed();
    let mut lags = tokio::time::timeout(Duration::from_secs(120), follower)
        .await
        .expect("watch caught up")
        .expect("follower");
    lags.sort();
    let p99 = lags[(lags.len() * 99 / 100).min(lags.len() - 1)];
    println!(
        "bench apiserver_create_per_s {:.0} ops/s",
        SERVICES as f64 / elapsed.as_secs_f64()
    );
    println!(
        "bench apiserver_watch_lag_ms_p99 {:.2} ms",
        p99.as_secs_f64() * 1000.0
    );
}
