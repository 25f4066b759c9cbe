//! The lease driver against the lab API server (`cairn_e2e::apiserver::LabApiServer`: real HTTP,
//! resourceVersions, 409s, watches, fault injection) with the real kube client: several speakers'
//! drivers in one process, each with its own client, each test with its own server.
//!
//! Assertions are on orderings and generous deadlines only, never on durations.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_e2e::apiserver::{LabApiServer, Options};
use cairn_speaker::lease::LeaseConfig;
use cairn_speaker::lease_driver::{DriverConfig, LeaseDriver, MembershipView, ReleaseError};
use cairn_speaker::membership::{lease_name, LEASE_NAMESPACE};
use cairn_speaker::status::{NodeStatus, ANNOUNCING_ANNOTATION};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;
use tokio::time::Instant;

/// Far longer than anything here takes on an idle machine: only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(30);

async fn start() -> LabApiServer {
    let server = LabApiServer::start(Options::default())
        .await
        .expect("lab API server starts");
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": LEASE_NAMESPACE}
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client_for(&server).await)
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
    server
}

async fn client_for(server: &LabApiServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(cfg).expect("client")
}

/// Lease 1 s, renew every 300 ms: expiry is quick to reach.
fn short_lease(holder: &str) -> LeaseConfig {
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

/// Lease 30 s, renew every second: a peer cannot see such a lease expire sooner than about 29 s
/// after any moment the speaker was running normally.
fn long_lease(holder: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(30),
        renew_interval: Duration::from_secs(1),
        safety_margin: Duration::from_secs(10),
        settle: Duration::from_millis(300),
        ..LeaseConfig::new(holder)
    }
}

async fn spawn(server: &LabApiServer, node: &str, lease: LeaseConfig) -> LeaseDriver {
    LeaseDriver::spawn(
        client_for(server).await,
        DriverConfig {
            namespace: LEASE_NAMESPACE.to_string(),
            node: node.to_string(),
            lease,
            join_delay: Duration::from_millis(200),
        },
    )
    .expect("driver starts")
}

fn nodes(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Waits until the view satisfies `pred`; returns it and when the test saw it.
async fn wait_until(
    what: &str,
    rx: &mut watch::Receiver<MembershipView>,
    deadline: Duration,
    pred: impl FnMut(&MembershipView) -> bool,
) -> (MembershipView, Instant) {
    let outcome = tokio::time::timeout(deadline, rx.wait_for(pred))
        .await
        .map(|r| r.map(|view| view.clone()));
    match outcome {
        Ok(Ok(view)) => (view, Instant::now()),
        Ok(Err(_)) => panic!("{what}: the driver stopped"),
        Err(_) => panic!(
            "{what}: not reached within {deadline:?}; last view {:?}",
            *rx.borrow()
        ),
    }
}

async fn all_live_and_announcing(drivers: &[&LeaseDriver], all: &BTreeSet<String>) {
    for (i, d) in drivers.iter().enumerate() {
        wait_until(
            &format!("driver {i} sees every node as a candidate and may announce"),
            &mut d.view(),
            DEADLINE,
            |v| v.may_announce && v.candidates == *all && v.live_nodes == *all,
        )
        .await;
    }
}

async fn lease_holder(server: &LabApiServer, node: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client_for(server).await, LEASE_NAMESPACE);
    let lease = leases.get(&lease_name(node)).await.expect("lease readable");
    lease.spec.and_then(|s| s.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_speakers_see_each_other_live_and_may_announce() {
    let server = start().await;
    let n1 = spawn(&server, "n1", short_lease("speaker-n1")).await;
    let n2 = spawn(&server, "n2", short_lease("speaker-n2")).await;
    let n3 = spawn(&server, "n3", short_lease("speaker-n3")).await;
    all_live_and_announcing(&[&n1, &n2, &n3], &nodes(&["n1", "n2", "n3"])).await;
    for node in ["n1", "n2", "n3"] {
        assert_eq!(
            lease_holder(&server, node).await.as_deref(),
            Some(format!("speaker-{node}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_interfaces_reach_the_peers() {
    let server = start().await;
    let n1 = spawn(&server, "n1", long_lease("speaker-n1")).await;
    let n2 = spawn(&server, "n2", long_lease("speaker-n2")).await;
    all_live_and_announcing(&[&n1, &n2], &nodes(&["n1", "n2"])).await;
    let ifaces = nodes(&["eth1", "eth2"]);
    n1.set_interfaces_up(ifaces.clone());
    wait_until("n2 sees n1's interfaces", &mut n2.view(), DEADLINE, |v| {
        v.interfaces_up.get("n1") == Some(&ifaces)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_record_rides_on_renewals_without_writes_of_its_own() {
    let server = start().await;
    let n1 = spawn(&server, "n1", long_lease("speaker-n1")).await;
    all_live_and_announcing(&[&n1], &nodes(&["n1"])).await;
    let writes_before = server.request_counts().verb("update");
    let mut last = NodeStatus::default();
    for i in 0..20u8 {
        last = NodeStatus::default();
        last.l2.insert(
            std::net::IpAddr::from([192, 0, 2, 200 + i]),
            nodes(&["eth0"]),
        );
        n1.set_status(last.clone());
    }
    let leases: Api<Lease> = Api::namespaced(client_for(&server).await, LEASE_NAMESPACE);
    let started = Instant::now();
    loop {
        let lease = leases.get(&lease_name("n1")).await.expect("lease read");
        let record = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOUNCING_ANNOTATION))
            .map(|v| NodeStatus::from_annotation(v).expect("a status record"));
        if record.as_ref() == Some(&last) {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "record never written: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writes = server.request_counts().verb("update") - writes_before;
    assert!(
        writes < 20,
        "20 status changes caused {writes} Lease writes; they must ride on renewals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_speaker_is_not_live_for_its_peers_at_once() {
    let server = start().await;
    let n1 = spawn(&server, "n1", long_lease("speaker-n1")).await;
    let n2 = spawn(&server, "n2", long_lease("speaker-n2")).await;
    let n3 = spawn(&server, "n3", long_lease("speaker-n3")).await;
    all_live_and_announcing(&[&n1, &n2, &n3], &nodes(&["n1", "n2", "n3"])).await;
    let mut n3_view = n3.view();
    let released_at = Instant::now();
    n3.release(Duration::from_secs(10))
        .await
        .expect("release completes");
    assert!(!n3_view.borrow_and_update().may_announce);
    assert_eq!(lease_holder(&server, "n3").await, None, "holder cleared");
    // n3's last renewal was sent about a renew interval (1 s) before `released_at` at the
    // earliest, and a peer judges it expired 30 s after observing it: seeing n3 gone well before
    // that can only come from the release.
    let expiry_bound = released_at + Duration::from_secs(25);
    for (name, d) in [("n1", &n1), ("n2", &n2)] {
        let (view, seen_at) = wait_until(
            &format!("{name} sees n3 gone"),
            &mut d.view(),
            DEADLINE,
            |v| !v.live_nodes.contains("n3"),
        )
        .await;
        assert!(seen_at < expiry_bound, "{name} saw n3 gone only at expiry");
        assert_eq!(view.live_nodes, nodes(&["n1", "n2"]));
        assert!(!view.candidates.contains("n3"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_speaker_expires_for_its_peers_after_the_lease_duration() {
    let server = start().await;
    let n1 = spawn(&server, "n1", short_lease("speaker-n1")).await;
    let n2 = spawn(&server, "n2", short_lease("speaker-n2")).await;
    let n3 = spawn(&server, "n3", short_lease("speaker-n3")).await;
    all_live_and_announcing(&[&n1, &n2, &n3], &nodes(&["n1", "n2", "n3"])).await;
    drop(n3); // the task is aborted: no release
    for (name, d) in [("n1", &n1), ("n2", &n2)] {
        wait_until(
            &format!("{name} sees n3 expire"),
            &mut d.view(),
            DEADLINE,
            |v| v.live_nodes == nodes(&["n1", "n2"]) && !v.candidates.contains("n3"),
        )
        .await;
    }
    assert_eq!(
        lease_holder(&server, "n3").await.as_deref(),
        Some("speaker-n3"),
        "the lease was never released: peers judged it expired on their own clocks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_fences_a_speaker_before_any_peer_sees_its_lease_expire() {
    let server = start().await;
    let n1 = spawn(&server, "n1", short_lease("speaker-n1")).await;
    let n2 = spawn(&server, "n2", short_lease("speaker-n2")).await;
    let n3 = spawn(&server, "n3", short_lease("speaker-n3")).await;
    all_live_and_announcing(&[&n1, &n2, &n3], &nodes(&["n1", "n2", "n3"])).await;

    let mut n1_view = n1.view();
    let fenced = tokio::spawn(async move {
        wait_until("n1 fenced", &mut n1_view, DEADLINE, |v| !v.may_announce)
            .await
            .1
    });
    let mut expiry_watchers = Vec::new();
    for (name, d) in [("n2", &n2), ("n3", &n3)] {
        let mut view = d.view();
        expiry_watchers.push(tokio::spawn(async move {
            wait_until(
                &format!("{name} sees n1 expire"),
                &mut view,
                DEADLINE,
                |v| !v.live_nodes.contains("n1"),
            )
            .await
            .1
        }));
    }
    server.set_unreachable_for(Some(Duration::from_secs(2)));

    let fenced_at = fenced.await.expect("fence watcher");
    for w in expiry_watchers {
        let expired_at = w.await.expect("expiry watcher");
        assert!(
            fenced_at < expired_at,
            "n1 stopped announcing only after a peer saw its lease expire"
        );
    }
    // The server comes back: everyone renews, settles and sees everyone again.
    all_live_and_announcing(&[&n1, &n2, &n3], &nodes(&["n1", "n2", "n3"])).await;
    assert!(n1.view().borrow().renew_failures > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speakers_racing_for_one_lease_never_both_hold_it() {
    let server = start().await;
    let a = spawn(&server, "n1", short_lease("speaker-a")).await;
    let b = spawn(&server, "n1", short_lease("speaker-b")).await;
    let (mut va, mut vb) = (a.view(), b.view());
    // Every published change of either view is checked, from the start until one of them
    // announces and then for three more lease durations, and on until exactly one announces
    // (a stalled holder may lose the lease to the other, which then settles first).
    let mut watch_until: Option<Instant> = None;
    let give_up = Instant::now() + DEADLINE;
    let a_holds = loop {
        let (ma, mb) = (
            va.borrow_and_update().may_announce,
            vb.borrow_and_update().may_announce,
        );
        assert!(!(ma && mb), "both speakers announce for the same lease");
        if (ma || mb) && watch_until.is_none() {
            watch_until = Some(Instant::now() + Duration::from_secs(3));
        }
        if watch_until.is_some_and(|t| Instant::now() >= t) && ma != mb {
            break ma;
        }
        assert!(
            Instant::now() < give_up,
            "no single holder within {DEADLINE:?} (a: {ma}, b: {mb})"
        );
        // Before the end of the watch: wake at its end; after: wait for the next change.
        let wake = watch_until
            .filter(|t| Instant::now() < *t)
            .unwrap_or(give_up);
        tokio::select! {
            r = va.changed() => r.expect("driver a runs"),
            r = vb.changed() => r.expect("driver b runs"),
            () = tokio::time::sleep_until(wake) => {}
        }
    };
    let winner = if a_holds { "speaker-a" } else { "speaker-b" };
    assert_eq!(lease_holder(&server, "n1").await.as_deref(), Some(winner));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_is_seen_at_once_after_the_watches_were_cut() {
    let server = start().await;
    let n1 = spawn(&server, "n1", long_lease("speaker-n1")).await;
    let n2 = spawn(&server, "n2", long_lease("speaker-n2")).await;
    all_live_and_announcing(&[&n1, &n2], &nodes(&["n1", "n2"])).await;
    server.drop_watches();
    let released_at = Instant::now();
    n2.release(Duration::from_secs(10))
        .await
        .expect("release completes");
    // As in the release test: only the resumed watch can explain seeing n2 gone this early.
    let (view, seen_at) = wait_until("n1 sees n2 gone", &mut n1.view(), DEADLINE, |v| {
        !v.live_nodes.contains("n2")
    })
    .await;
    assert!(seen_at < released_at + Duration::from_secs(25));
    assert_eq!(view.live_nodes, nodes(&["n1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_against_an_unreachable_server_stops_announcing_and_gives_up_in_time() {
    let server = start().await;
    let n1 = spawn(&server, "n1", long_lease("speaker-n1")).await;
    all_live_and_announcing(&[&n1], &nodes(&["n1"])).await;
    let mut view = n1.view();
    server.set_unreachable_for(Some(Duration::from_secs(60)));
    // The cut has reached the driver once its watch broke.
    wait_until("n1's watch breaks", &mut view, DEADLINE, |v| {
        !v.watch_healthy
    })
    .await;
    let outcome = n1.release(Duration::from_millis(500)).await;
    assert_eq!(
        outcome,
        Err(ReleaseError::TimedOut(Duration::from_millis(500)))
    );
    assert!(!view.borrow_and_update().may_announce);
    server.set_unreachable_for(None);
    assert_eq!(
        lease_holder(&server, "n1").await.as_deref(),
        Some("speaker-n1"),
        "nothing was cleared: peers will see the lease expire"
    );
}
