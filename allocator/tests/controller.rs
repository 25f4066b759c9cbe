//! The allocator controller against the lab API server (a faithful stand-in for kube-apiserver):
//! each test starts its own server and its own allocator replicas through the library entry point.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_allocator::controller::{self, Health};
use cairn_allocator::metrics::Metrics;
use cairn_api::annotations as keys;
use cairn_api::v1alpha1::{IPAddressPool, IPAddressPoolSpec, ServiceAllocation};
use cairn_e2e::apiserver::{LabApiServer, Options};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const POOL_NS: &str = "cairn-system";

struct Lab {
    server: LabApiServer,
    client: Client,
}

async fn lab(namespaces: &[&str]) -> Lab {
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
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for name in std::iter::once(&POOL_NS).chain(namespaces) {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some([("team".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        ns_api
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }
    Lab { server, client }
}

fn pool(name: &str, addresses: &[&str], allocate_to: Option<ServiceAllocation>) -> IPAddressPool {
    let mut pool = IPAddressPool::new(
        name,
        IPAddressPoolSpec {
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            allocate_to,
        },
    );
    pool.metadata.namespace = Some(POOL_NS.into());
    pool
}

fn lb_service(name: &str, annotations: &[(&str, &str)], class: Option<&str>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_class: class.map(str::to_owned),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

impl Lab {
    fn services(&self, ns: &str) -> Api<Service> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn pools(&self) -> Api<IPAddressPool> {
        Api::namespaced(self.client.clone(), POOL_NS)
    }

    async fn create_pool(&self, pool: IPAddressPool) {
        self.pools()
            .create(&PostParams::default(), &pool)
            .await
            .expect("pool");
    }

    async fn create_service(&self, ns: &str, svc: Service) {
        self.services(ns)
            .create(&PostParams::default(), &svc)
            .await
            .expect("service");
    }

    /// The Service's recorded addresses, once annotations and status agree.
    async fn bound(&self, ns: &str, name: &str) -> Option<Vec<IpAddr>> {
        let svc = self.services(ns).get_opt(name).await.ok()??;
        let annotated: Vec<IpAddr> = svc
            .metadata
            .annotations
            .as_ref()?
            .get(keys::ALLOCATED_IPS)?
            .split(',')
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let status: Vec<IpAddr> = svc
            .status?
            .load_balancer?
            .ingress?
            .iter()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        (!annotated.is_empty() && annotated == status).then_some(annotated)
    }

    async fn wait_bound(&self, ns: &str, name: &str) -> Vec<IpAddr> {
        eventually(&format!("{ns}/{name} bound"), || self.bound(ns, name)).await
    }

    async fn events(&self, ns: &str, reason: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    }

    async fn lease_holder(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), POOL_NS);
        api.get_opt("cairn-allocator")
            .await
            .ok()??
            .spec?
            .holder_identity
    }
}

/// Polls `probe` every 50 ms until it yields a value; fails after 30 s naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Allocator {
    identity: String,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), controller::ControllerError>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

fn start_allocator(lab: &Lab, identity: &str) -> Allocator {
    let config = controller::Config {
        lb_class: keys::DEFAULT_LOAD_BALANCER_CLASS.into(),
        namespace: POOL_NS.into(),
        lease_name: "cairn-allocator".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_interval: Duration::from_millis(400),
        write_concurrency: 16,
    };
    let (shutdown, rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let task = tokio::spawn(controller::run(
        lab.client.clone(),
        config,
        metrics.clone(),
        health.clone(),
        rx,
    ));
    Allocator {
        identity: identity.into(),
        shutdown,
        task,
        metrics,
        health,
    }
}

impl Allocator {
    /// SIGTERM-like: stop and release the lease.
    async fn stop(self) {
        self.shutdown.send_replace(true);
        self.task.await.expect("no panic").expect("clean stop");
    }

    /// kill -9-like: gone at once, lease left to expire.
    fn kill(self) {
        self.task.abort();
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn five_services_get_addresses_annotations_status_and_events() {
    let lab = lab(&["shop"]).await;
    lab.create_pool(pool("web", &["192.0.2.10-192.0.2.20"], None))
        .await;
    for i in 0..5 {
        lab.create_service("shop", lb_service(&format!("svc{i}"), &[], None))
            .await;
    }
    let allocator = start_allocator(&lab, "a");
    let mut seen = Vec::new();
    for i in 0..5 {
        let ips = lab.wait_bound("shop", &format!("svc{i}")).await;
        assert_eq!(ips.len(), 1);
        assert!(ips[0] >= ip("192.0.2.10") && ips[0] <= ip("192.0.2.20"));
        assert!(!seen.contains(&ips[0]), "{} handed out twice", ips[0]);
        seen.push(ips[0]);
        let svc = lab.services("shop").get(&format!("svc{i}")).await.unwrap();
        let annotations = svc.metadata.annotations.unwrap();
        assert_eq!(annotations[keys::ALLOCATED_POOL], "web");
        let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
        assert_eq!(ingress[0].ip_mode.as_deref(), Some("VIP"));
    }
    eventually("5 IPAllocated events", || async {
        (lab.events("shop", "IPAllocated").await.len() >= 5).then_some(())
    })
    .await;
    let status = eventually("pool status", || async {
        let status = lab.pools().get("web").await.ok()?.status?;
        (status.assigned_ipv4 == 5).then_some(status)
    })
    .await;
    assert_eq!(status.available_ipv4, 6);
    assert_eq!(status.conditions[0].type_, "Valid");
    assert_eq!(status.conditions[0].status, "True");
    assert!(allocator.health.is_ready());
    assert!(allocator
        .metrics
        .encode()
        .contains("cairn_allocator_services_allocated_total 5"));
    allocator.stop().await;
}

#[tokio::test]
async fn deleting_a_service_never_moves_another_even_across_a_restart() {
    // MetalLB #2723: pool .1-.3, A and B bound, B deleted, everything reprocessed.
    let lab = lab(&["shop"]).await;
    lab.create_pool(pool("small", &["192.0.2.1-192.0.2.3"], None))
        .await;
    lab.create_service("shop", lb_service("a", &[], None)).await;
    let allocator = start_allocator(&lab, "a");
    let a = lab.wait_bound("shop", "a").await;
    lab.create_service("shop", lb_service("b", &[], None)).await;
    lab.wait_bound("shop", "b").await;
    lab.services("shop")
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    lab.create_service("shop", lb_service("c", &[], None)).await;
    lab.wait_bound("shop", "c").await;
    assert_eq!(lab.bound("shop", "a").await, Some(a.clone()));
    allocator.stop().await;
    let restarted = start_allocator(&lab, "a2");
    lab.create_service("shop", lb_service("d", &[], None)).await;
    lab.wait_bound("shop", "d").await;
    assert_eq!(lab.bound("shop", "a").await, Some(a));
    restarted.stop().await;
}

#[tokio::test]
async fn changes_made_while_the_allocator_is_down_move_no_existing_address() {
    let lab = lab(&["shop"]).await;
    lab.create_pool(pool("web", &["192.0.2.1-192.0.2.8"], None))
        .await;
    for name in ["a", "b", "c"] {
        lab.create_service("shop", lb_service(name, &[], None))
            .await;
    }
    let allocator = start_allocator(&lab, "a");
    let a = lab.wait_bound("shop", "a").await;
    let b = lab.wait_bound("shop", "b").await;
    let c = lab.wait_bound("shop", "c").await;
    allocator.kill();
    lab.services("shop")
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    lab.create_service("shop", lb_service("d", &[], None)).await;
    let restarted = start_allocator(&lab, "b");
    let d = lab.wait_bound("shop", "d").await;
    assert_eq!(lab.bound("shop", "a").await, Some(a.clone()));
    assert_eq!(lab.bound("shop", "c").await, Some(c.clone()));
    assert!(d != a && d != c);
    // After a restart the engine knows only what is bound: b's address counts as never used
    // and, being the lowest, is the next one handed out (the engine's documented order).
    assert_eq!(d, b);
    restarted.stop().await;
}

#[tokio::test]
async fn a_standby_takes_over_from_a_killed_leader_without_changing_any_binding() {
    let lab = lab(&["shop"]).await;
    lab.create_pool(pool("web", &["192.0.2.1-192.0.2.20"], None))
        .await;
    for i in 0..3 {
        lab.create_service("shop", lb_service(&format!("old{i}"), &[], None))
            .await;
    }
    let first = start_allocator(&lab, "first");
    let mut old = BTreeMap::new();
    for i in 0..3 {
        old.insert(i, lab.wait_bound("shop", &format!("old{i}")).await);
    }
    let second = start_allocator(&lab, "second");
    let holder = eventually("a lease holder", || lab.lease_holder()).await;
    assert_eq!(holder, "first");
    // Only the leader wrote: every Event comes from it.
    for event in lab.events("shop", "IPAllocated").await {
        assert_eq!(event.reporting_instance.as_deref(), Some("first"));
    }
    assert!(second
        .metrics
        .encode()
        .contains("cairn_leader{component=\"allocator\"} 0"));
    first.kill();
    lab.create_service("shop", lb_service("new", &[], None))
        .await;
    let new = lab.wait_bound("shop", "new").await;
    assert_eq!(
        lab.lease_holder().await.as_deref(),
        Some(second.identity.as_str())
    );
    for (i, ips) in &old {
        assert_eq!(
            lab.bound("shop", &format!("old{i}")).await.as_ref(),
            Some(ips)
        );
        assert_ne!(&new, ips);
    }
    second.stop().await;
    assert_eq!(
        lab.lease_holder().await,
        None,
        "a stopping leader releases its lease"
    );
}

#[tokio::test]
async fn an_invalid_pool_is_reported_and_the_others_keep_working() {
    let lab = lab(&["shop"]).await;
    lab.create_pool(pool("bad", &["192.0.2.300/32"], None))
        .await;
    lab.create_pool(pool("good", &["198.51.100.0/28"], None))
        .await;
    lab.create_service("shop", lb_service("web", &[], None))
        .await;
    let allocator = start_allocator(&lab, "a");
    let ips = lab.wait_bound("shop", "web").await;
    assert!(ips[0] >= ip("198.51.100.0") && ips[0] <= ip("198.51.100.15"));
    let condition = eventually("the bad pool's condition", || async {
        let status = lab.pools().get("bad").await.ok()?.status?;
        status.conditions.into_iter().find(|c| c.type_ == "Valid")
    })
    .await;
    assert_eq!(condition.status, "False");
    assert!(
        condition.message.contains("spec.addresses[0]"),
        "{}",
        condition.message
    );
    eventually("a PoolInvalid event", || async {
        let events = lab.events(POOL_NS, "PoolInvalid").await;
        events
            .iter()
            .any(|e| {
                e.note
                    .as_deref()
                    .unwrap_or_default()
                    .contains("192.0.2.300")
            })
            .then_some(())
    })
    .await;
    allocator.stop().await;
}

#[tokio::test]
async fn an_address_from_a_pool_the_namespace_may_not_use_is_refused() {
    let lab = lab(&["team-a", "team-b"]).await;
    let only_team_a = ServiceAllocation {
        namespaces: vec!["team-a".into()],
        ..Default::default()
    };
    lab.create_pool(pool("team-a", &["192.0.2.0/28"], Some(only_team_a)))
        .await;
    lab.create_service(
        "team-b",
        lb_service("thief", &[(keys::LOAD_BALANCER_IPS, "192.0.2.5")], None),
    )
    .await;
    lab.create_service(
        "team-a",
        lb_service("owner", &[(keys::LOAD_BALANCER_IPS, "192.0.2.6")], None),
    )
    .await;
    let allocator = start_allocator(&lab, "a");
    assert_eq!(lab.wait_bound("team-a", "owner").await, [ip("192.0.2.6")]);
    let event = eventually("an AllocationFailed event", || async {
        lab.events("team-b", "AllocationFailed")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("192.0.2.5"),
        "{:?}",
        event.note
    );
    let thief = lab.services("team-b").get("thief").await.unwrap();
    assert!(!thief
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(keys::ALLOCATED_IPS));
    assert!(thief
        .status
        .and_then(|s| s.load_balancer?.ingress)
        .unwrap_or_default()
        .is_empty());
    allocator.stop().await;
}

#[tokio::test]
async fn services_of_another_load_balancer_class_are_untouched() {
    let lab = lab(&["shop"]).await;
    lab.create_pool(pool("web", &["192.0.2.0/28"], None)).await;
    lab.create_service("shop", lb_service("foreign", &[], Some("other.example/lb")))
        .await;
    lab.create_service("shop", lb_service("ours", &[], Some("cairn.io/lb")))
        .await;
    let allocator = start_allocator(&lab, "a");
    lab.wait_bound("shop", "ours").await;
    let before = lab.services("shop").get("foreign").await.unwrap();
    // Let a few more passes run, then check the foreign Service was never written.
    lab.create_service("shop", lb_service("later", &[], None))
        .await;
    lab.wait_bound("shop", "later").await;
    let after = lab.services("shop").get("foreign").await.unwrap();
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    assert!(after.metadata.annotations.unwrap_or_default().is_empty());
    let events = lab.events("shop", "IPAllocated").await;
    assert!(events
        .iter()
        .all(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) != Some("foreign")));
    allocator.stop().await;
    drop(lab.server);
}

#[tokio::test]
async fn shrinking_a_pool_under_a_service_keeps_its_address_and_reports_it() {
    let lab = lab(&["shop"]).await;
    lab.create_pool(pool("web", &["192.0.2.1-192.0.2.4"], None))
        .await;
    lab.create_service(
        "shop",
        lb_service("a", &[(keys::LOAD_BALANCER_IPS, "192.0.2.4")], None),
    )
    .await;
    let allocator = start_allocator(&lab, "a");
    assert_eq!(lab.wait_bound("shop", "a").await, [ip("192.0.2.4")]);
    let mut shrunk = lab.pools().get("web").await.unwrap();
    shrunk.spec.addresses = vec!["192.0.2.1-192.0.2.2".into()];
    lab.pools()
        .replace("web", &PostParams::default(), &shrunk)
        .await
        .unwrap();
    eventually("a BindingOrphaned event", || async {
        lab.events("shop", "BindingOrphaned")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(lab.bound("shop", "a").await, Some(vec![ip("192.0.2.4")]));
    allocator.stop().await;
}
