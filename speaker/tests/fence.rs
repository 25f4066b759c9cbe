//! Self-fencing that does not depend on task scheduling: the lease driver publishes its fence
//! deadline on a [`ClaimDeadline`], and the runtime hands the L2 announcer's gate to the driver,
//! so a speaker whose driver and runtime are stuck (as after SIGSTOP) sends no claim for its VIP
//! past the deadline, before any withdrawal could run.
//!
//! Against the lab API server (real HTTP, resourceVersions, watches) with the real kube client;
//! the wiring test also uses network namespaces and `arping` from a client namespace.
//! Assertions are on orderings and generous deadlines only, never on durations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cairn_arp::{Claims, InterfaceSelection, L2Announcer, L2Config, MacAddr};
use cairn_e2e::apiserver::{LabApiServer, Options};
use cairn_speaker::lease_driver::{DriverConfig, LeaseDriver};
use cairn_speaker::metrics::{Health, Metrics};
use cairn_speaker::runtime::{self, Config};
use tokio::sync::watch;

mod speaker_lab;

use speaker_lab::{
    base_cluster, cluster, eventually, lab, neighbour, short_lease, text, NODES, VIP,
};

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A lab API server with the cluster objects of [`base_cluster`] (the Leases' namespace
/// included), on its own runtime, and a client for it.
fn api_server(rt: &tokio::runtime::Runtime, objects: bool) -> (LabApiServer, kube::Client) {
    let server = rt
        .block_on(LabApiServer::start(Options::default()))
        .expect("lab API server");
    let api = {
        let _entered = rt.enter();
        server.client().expect("client")
    };
    if objects {
        rt.block_on(cluster(&api));
    } else {
        rt.block_on(base_cluster(&api));
    }
    (server, api)
}

fn deadline_of(claims: Claims) -> Option<Instant> {
    match claims {
        Claims::Until(at) => Some(at),
        Claims::Closed | Claims::Unbounded => None,
    }
}

/// A lease driver on `rt` with `client` (made on `rt` too).
fn spawn_driver(
    rt: &tokio::runtime::Runtime,
    client: kube::Client,
    config: DriverConfig,
) -> LeaseDriver {
    let _entered = rt.enter();
    LeaseDriver::spawn(client, config).expect("driver")
}

#[test]
fn the_fence_deadline_moves_with_renewals_and_closes_on_release() {
    let rt = runtime(2);
    let (_server, api) = api_server(&rt, false);
    let driver = spawn_driver(
        &rt,
        api,
        DriverConfig {
            lease: short_lease(NODES[0]),
            join_delay: Duration::from_millis(200),
            ..DriverConfig::new(NODES[0], NODES[0])
        },
    );
    let fence = driver.fence();
    assert_eq!(
        fence.claims(),
        Claims::Closed,
        "open before the Lease is held"
    );

    eventually("the gate opens once the Lease is held", || {
        deadline_of(fence.claims()).is_some()
    });
    let first = deadline_of(fence.claims()).expect("a deadline");
    eventually("a renewal moves the deadline forward", || {
        deadline_of(fence.claims()).is_some_and(|later| later > first)
    });
    assert!(driver.view().borrow().may_announce);

    let reader = driver.fence();
    rt.block_on(driver.release(Duration::from_secs(5)))
        .expect("released");
    assert_eq!(reader.claims(), Claims::Closed, "open after the release");
}

#[test]
fn a_driver_that_stops_running_leaves_a_gate_that_closes_at_its_deadline_by_itself() {
    let rt = runtime(2);
    let (_server, api) = api_server(&rt, false);
    let driver = spawn_driver(
        &rt,
        api,
        DriverConfig {
            lease: short_lease(NODES[0]),
            ..DriverConfig::new(NODES[0], NODES[0])
        },
    );
    let fence = driver.fence();
    eventually("the gate opens once the Lease is held", || {
        deadline_of(fence.claims()).is_some()
    });
    // Nobody writes the gate any more, as when the process is frozen.
    drop(driver);
    let deadline = deadline_of(fence.claims()).expect("a deadline");
    assert!(fence.allows(deadline - Duration::from_nanos(1)));
    assert!(!fence.allows(deadline));
    eventually("the gate closes by itself", || !fence.allows_now());
    assert_eq!(fence.claims(), Claims::Until(deadline), "someone wrote it");
}

#[test]
fn a_stuck_speaker_sends_no_arp_reply_past_its_fence_deadline_before_withdrawing() {
    let lab = lab();
    // The API server, the speaker (runtime + lease driver) and the announcer's tasks each on
    // their own runtime, so the speaker can be frozen alone, with the responder still running.
    let api_rt = runtime(1);
    let (server, _api) = api_server(&api_rt, true);
    let l2_rt = runtime(1);
    let speaker_rt = runtime(1);
    let handle = l2_rt.handle().clone();
    let l2 = lab.nodes[0]
        .run(move || {
            let _entered = handle.enter();
            L2Announcer::new(L2Config::new(InterfaceSelection::AllEligible))
        })
        .expect("enter namespace")
        .expect("L2 announcer");
    let gate = l2.claim_deadline();
    let mac = MacAddr(lab.nodes[0].mac("eth0").expect("mac")).to_string();
    let client = {
        let _entered = speaker_rt.enter();
        server.client().expect("client")
    };
    let health = Arc::new(Health::default());
    let (shutdown, stop) = watch::channel(false);
    let task = speaker_rt.spawn(runtime::run(
        client,
        Config {
            lease: short_lease(NODES[0]),
            join_delay: Duration::from_millis(200),
            ..Config::new(NODES[0], NODES[0])
        },
        Some(l2),
        None,
        Arc::new(Metrics::new()),
        health.clone(),
        stop,
    ));
    eventually("the speaker is ready", || health.is_ready());
    eventually("the client maps the VIP to the speaker", || {
        neighbour(&lab.client, VIP).as_deref() == Some(mac.as_str())
    });
    assert!(deadline_of(gate.claims()).is_some(), "{:?}", gate.claims());

    // Freeze the speaker's only worker thread: no driver, no withdrawal, no timer runs there.
    let thawed = Arc::new(AtomicBool::new(false));
    let (frozen_tx, frozen) = mpsc::channel();
    let flag = thawed.clone();
    speaker_rt.spawn(async move {
        let _ = frozen_tx.send(());
        std::thread::sleep(Duration::from_secs(10));
        flag.store(true, Ordering::SeqCst);
    });
    frozen.recv().expect("the speaker froze");
    eventually("the fence deadline passes", || !gate.allows_now());
    let out = lab
        .client
        .command(&["arping", "-c", "2", "-w", "2", "-i", "eth0", VIP])
        .output()
        .expect("run arping");
    assert!(
        !thawed.load(Ordering::SeqCst),
        "the freeze ended before arping did; the check proves nothing"
    );
    assert!(
        !text(&out).contains(&mac),
        "answered past the fence deadline: {}",
        text(&out)
    );
    assert!(!out.status.success(), "{}", text(&out));

    // Thawed, the speaker renews, opens the gate again and answers.
    eventually("the freeze ends", || thawed.load(Ordering::SeqCst));
    eventually("the speaker answers again after renewing", || {
        let out = lab
            .client
            .command(&["arping", "-c", "1", "-w", "1", "-i", "eth0", VIP])
            .output()
            .expect("run arping");
        text(&out).contains(&mac)
    });
    shutdown.send(true).expect("runtime listening");
    speaker_rt
        .block_on(task)
        .expect("runtime task")
        .expect("runtime stopped cleanly");
    assert_eq!(gate.claims(), Claims::Closed, "open after shutdown");
}
