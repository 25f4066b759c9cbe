//! `cargo xtask bench controller`: 5 000 LoadBalancer Services created at once against the lab
//! API server with one allocator running; time until every one is bound (annotations and
//! status), and the API requests the allocator made to get there (counted by the server).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_allocator::controller::{self, Health};
use cairn_allocator::metrics::Metrics;
use cairn_api::annotations as keys;
use cairn_api::v1alpha1::{IPAddressPool, IPAddressPoolSpec};
use cairn_e2e::apiserver::{LabApiServer, Options};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;

const SERVICES: usize = 5_000;

#[tokio::main]
async fn main() {
    let server = LabApiServer::start(Options::default())
        .await
        .expect("lab API server");
    let client = server.client().expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in cairn_api::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in ["cairn-system", "shop"] {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }
    let mut pool = IPAddressPool::new(
        "big",
        IPAddressPoolSpec {
            addresses: vec!["2001:db8:5::/112".into()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocate_to: None,
        },
    );
    pool.metadata.namespace = Some("cairn-system".into());
    Api::<IPAddressPool>::namespaced(client.clone(), "cairn-system")
        .create(&PostParams::default(), &pool)
        .await
        .expect("pool");

    let (shutdown, rx) = watch::channel(false);
    let config = controller::Config {
        lb_class: keys::DEFAULT_LOAD_BALANCER_CLASS.into(),
        namespace: "cairn-system".into(),
        lease_name: "cairn-allocator".into(),
        identity: "bench".into(),
        lease_duration: Duration::from_secs(10),
        renew_interval: Duration::from_secs(2),
        write_concurrency: 16,
    };
    let health = Arc::new(Health::default());
    let allocator = tokio::spawn(controller::run(
        client.clone(),
        config,
        Arc::new(Metrics::new()),
        health.clone(),
        rx,
    ));
    while !health.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let services: Api<Service> = Api::namespaced(client.clone(), "shop");
    let before = server.request_counts().total();
    let start = Instant::now();
    futures::stream::iter(0..SERVICES)
        .for_each_concurrent(32, |i| {
            let services = services.clone();
            async move {
                let svc = Service {
                    metadata: ObjectMeta {
                        name: Some(format!("svc-{i}")),
                        ..Default::default()
                    },
                    spec: Some(ServiceSpec {
                        type_: Some("LoadBalancer".into()),
                        ip_families: Some(vec!["IPv6".into()]),
                        ports: Some(vec![ServicePort {
                            port: 80,
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    status: None,
                };
                services
                    .create(&PostParams::default(), &svc)
                    .await
                    .expect("create");
            }
        })
        .await;
    let created = start.elapsed();
    loop {
        let list = services.list(&ListParams::default()).await.expect("list");
        let bound = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.load_balancer.as_ref()?.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty())
            })
            .count();
        if bound == SERVICES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_bound = start.elapsed();
    // Requests made by this bench itself: one create per Service, plus the polling lists.
    let counts = server.request_counts();
    let allocator_requests =
        counts.total() - before - counts.get("create", "services") - counts.get("list", "services");
    println!(
        "bench alloc_controller_5k_created_ms {} ms",
        created.as_millis()
    );
    println!(
        "bench alloc_controller_5k_all_bound_ms {} ms",
        all_bound.as_millis()
    );
    println!("bench alloc_controller_5k_api_requests {allocator_requests} requests");
    println!(
        "bench alloc_controller_api_requests_per_service {:.2} requests",
        allocator_requests as f64 / SERVICES as f64
    );
    shutdown.send_replace(true);
    let _ = allocator.await;
}
