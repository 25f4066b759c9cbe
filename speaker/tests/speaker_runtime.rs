//! The speaker runtime (`cairn_speaker::runtime::run`, what the binary runs) for two nodes,
//! against the lab API server, with real L2 announcers in network namespaces: two node
//! namespaces and a client namespace on one bridge. The client's kernel neighbour table and
//! `arping` show who answers for the VIP.
//!
//! The Service is bound by hand (the allocator's annotations), so no allocator runs here; the
//! process-level failover scenarios (kill -9, SIGSTOP, many runs) are in `e2e/tests/`.
//! Assertions are on outcomes within generous deadlines only, never on durations.

use std::sync::Arc;
use std::time::Duration;

use cairn_arp::{InterfaceSelection, L2Announcer, L2Config, MacAddr};
use cairn_e2e::apiserver::{LabApiServer, Options};
use cairn_e2e::netns::Netns;
use cairn_speaker::metrics::{Health, Metrics};
use cairn_speaker::ownership::rendezvous;
use cairn_speaker::runtime::{self, Config, RuntimeError};
use cairn_speaker::status::NodeStatus;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod speaker_lab;

use speaker_lab::{
    arping, cluster, eventually, lab, lease_of, neighbour, short_lease, status_of, NODES, VIP,
};

struct Speaker {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), RuntimeError>>,
}

/// Starts the runtime of `node`, its L2 announcer opened inside `ns` (the API client stays in
/// the host namespace, where the lab API server listens).
fn start_speaker(
    rt: &tokio::runtime::Runtime,
    server: &LabApiServer,
    node: &str,
    ns: &Netns,
) -> Speaker {
    let handle = rt.handle().clone();
    let l2 = ns
        .run(move || {
            let _entered = handle.enter();
            L2Announcer::new(L2Config::new(InterfaceSelection::AllEligible))
        })
        .expect("enter namespace")
        .expect("L2 announcer");
    let client = {
        let _entered = rt.enter();
        server.client().expect("client")
    };
    let config = Config {
        lease: short_lease(node),
        join_delay: Duration::from_millis(200),
        ..Config::new(node, node)
    };
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (shutdown, stop) = watch::channel(false);
    let task = rt.spawn(runtime::run(
        client,
        config,
        Some(l2),
        None,
        metrics.clone(),
        health.clone(),
        stop,
    ));
    Speaker {
        metrics,
        health,
        shutdown,
        task,
    }
}

/// Two speakers running, the owner of the VIP answering for it. Fields drop in order: the
/// speakers' tasks with the runtime, then the API server, then the namespaces.
struct Scenario {
    speakers: Vec<Speaker>,
    rt: tokio::runtime::Runtime,
    api: kube::Client,
    server: LabApiServer,
    /// eth0 MAC of each node
    macs: Vec<String>,
    /// Index in [`NODES`] of the VIP's owner (the rendezvous winner), and of the other node.
    owner: usize,
    other: usize,
    lab: speaker_lab::Lab,
}

fn two_speakers() -> Scenario {
    let lab = lab();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt
        .block_on(LabApiServer::start(Options::default()))
        .expect("lab API server");
    let api = {
        let _entered = rt.enter();
        server.client().expect("client")
    };
    rt.block_on(cluster(&api));
    let macs: Vec<String> = lab
        .nodes
        .iter()
        .map(|ns| MacAddr(ns.mac("eth0").expect("mac")).to_string())
        .collect();
    let speakers: Vec<Speaker> = NODES
        .iter()
        .zip(&lab.nodes)
        .map(|(node, ns)| start_speaker(&rt, &server, node, ns))
        .collect();
    let vip = VIP.parse().expect("vip");
    let owner = NODES
        .iter()
        .position(|n| Some(*n) == rendezvous(vip, NODES))
        .expect("an owner");
    let s = Scenario {
        speakers,
        rt,
        api,
        server,
        macs,
        owner,
        other: 1 - owner,
        lab,
    };
    eventually("both speakers ready", || {
        s.speakers.iter().all(|s| s.health.is_ready())
    });
    s.wait_for_answer_from(owner);
    s
}

impl Scenario {
    /// Waits until the client's kernel maps the VIP to `node`'s MAC, then checks with `arping`
    /// that `node` alone answers.
    fn wait_for_answer_from(&self, node: usize) {
        let mac = &self.macs[node];
        eventually(
            &format!("the client maps {VIP} to {mac} ({})", NODES[node]),
            || neighbour(&self.lab.client, VIP).as_deref() == Some(mac.as_str()),
        );
        let said = arping(&self.lab.client, VIP);
        assert!(
            said.contains(mac),
            "{} does not answer: {said}",
            NODES[node]
        );
        let other = &self.macs[1 - node];
        assert!(!said.contains(other), "both nodes answer: {said}");
    }

    /// The nodes whose MAC answers one ARP request for the VIP.
    fn answering(&self) -> Vec<usize> {
        let out = self
            .lab
            .client
            .command(&["arping", "-c", "1", "-w", "1", "-i", "eth0", VIP])
            .output()
            .expect("run arping");
        let said = speaker_lab::text(&out);
        (0..NODES.len())
            .filter(|&n| said.contains(&self.macs[n]))
            .collect()
    }

    fn status(&self, node: usize) -> NodeStatus {
        status_of(&self.rt.block_on(lease_of(&self.api, NODES[node])))
    }
}

fn announced_line() -> String {
    format!("cairn_speaker_announced{{service=\"web/site\",ip=\"{VIP}\",protocol=\"l2\"}} 1")
}

#[test]
fn the_owner_answers_arp_for_the_vip_and_after_its_graceful_stop_the_other_node_does() {
    let mut s = two_speakers();
    let (owner, other) = (s.owner, s.other);
    let vip = VIP.parse().expect("vip");

    // What the owner reports: status record on its Lease, Event, metrics.
    eventually("the owner's Lease lists the VIP on eth0", || {
        s.status(owner).l2.get(&vip) == Some(&["eth0".to_string()].into())
    });
    assert!(s.status(other).l2.is_empty(), "{:?}", s.status(other));
    let note = format!("announcing {VIP} from node {} via L2 (eth0)", NODES[owner]);
    eventually("a nodeAssigned Event on the Service", || {
        let events = s
            .rt
            .block_on(Api::<Event>::namespaced(s.api.clone(), "web").list(&ListParams::default()))
            .expect("events");
        events.items.iter().any(|e| {
            e.reason.as_deref() == Some("nodeAssigned")
                && e.note.as_deref() == Some(note.as_str())
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("site")
                && e.reporting_controller.as_deref() == Some("cairn.io/speaker")
                && e.reporting_instance.as_deref() == Some(NODES[owner])
        })
    });
    eventually("the owner's metrics show the announcement", || {
        s.speakers[owner]
            .metrics
            .encode()
            .contains(&announced_line())
    });
    assert!(!s.speakers[other]
        .metrics
        .encode()
        .contains(&announced_line()));
    assert!(s.speakers[owner]
        .metrics
        .encode()
        .contains("cairn_membership_live_nodes 2"));

    // Graceful stop of the owner: it withdraws, releases its Lease, and the other node takes over.
    let Speaker { shutdown, task, .. } = s.speakers.remove(owner);
    shutdown.send_replace(true);
    s.rt.block_on(task)
        .expect("runtime task")
        .expect("runtime stops cleanly");
    let lease = s.rt.block_on(lease_of(&s.api, NODES[owner]));
    assert_eq!(
        lease.spec.and_then(|l| l.holder_identity),
        None,
        "the Lease is released"
    );
    s.wait_for_answer_from(other);
}

#[test]
fn an_owner_whose_link_goes_down_gives_the_vip_up_and_takes_it_back_when_the_link_returns() {
    let s = two_speakers();
    let (owner, other) = (s.owner, s.other);
    let vip = VIP.parse().expect("vip");
    let owner_ns = &s.lab.nodes[owner];

    owner_ns
        .ip(&["link", "set", "eth0", "down"])
        .expect("link down");
    eventually("the owner withdraws and publishes eth0 as down", || {
        s.status(owner).l2.is_empty()
    });
    assert!(!s.speakers[owner]
        .metrics
        .encode()
        .contains(&announced_line()));
    s.wait_for_answer_from(other);
    assert!(s.status(other).l2.contains_key(&vip));

    owner_ns
        .ip(&["link", "set", "eth0", "up"])
        .expect("link up");
    s.wait_for_answer_from(owner);
    eventually("the other node gives the VIP back", || {
        s.status(other).l2.is_empty()
    });
}

#[test]
fn speakers_cut_off_from_the_api_server_fall_silent_and_the_owner_resumes_when_it_returns() {
    let s = two_speakers();
    s.server.set_unreachable_for(Some(Duration::from_secs(600)));
    eventually("both speakers fence themselves", || {
        s.speakers
            .iter()
            .all(|sp| !sp.health.is_ready() && !sp.metrics.encode().contains(&announced_line()))
    });
    assert_eq!(s.answering(), Vec::<usize>::new(), "a fenced node answers");

    s.server.set_unreachable_for(None);
    eventually("the owner answers again", || s.answering() == [s.owner]);
    s.wait_for_answer_from(s.owner);
}
