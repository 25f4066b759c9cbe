//! Failover end to end (issue 7).
//!
//! First the measurement tools themselves, against plain kernels in namespaces of this test: the
//! observer catches two hosts answering for one address and sees none once only one answers, the
//! probe follows an address moved from one host to another, and the observer records the IPv6
//! Neighbor Advertisements for its VIP and no other.
//!
//! Then Cairn in the lab (`cairn_e2e::lab`: lab API server, `cairn-allocator`, three
//! `cairn-speaker` processes, FRR, an L2 client on the node segment), one lab per test, the tests
//! taking turns so that no failover runs beside another lab's (both need the two cores):
//! - L2: the client reaches an L2 VIP; kill -9, SIGTERM and SIGSTOP of the owner each move the
//!   traffic to another node (SIGTERM also releases the Lease; after SIGCONT the frozen speaker
//!   does not answer beside the new owner); with the API server unreachable for 10 s the owner
//!   stops answering ARP (it cannot renew, so it fences itself) and traffic comes back after;
//!   a soliciting observer in the L2 client finds no split brain (another MAC's claims within
//!   100 ms on both sides of a claim) across all of it.
//! - `externalTrafficPolicy: Local`: only the node with the endpoint announces; moving the
//!   endpoint moves the VIP.
//! - BGP: three nodes announce a VIP, FRR has 3-way ECMP; kill -9 one speaker and the route
//!   loses that next hop within the hold time; the external client keeps being answered.
//!
//! The speaker and allocator binaries come from the directory of this crate's binaries
//! (`cargo build --workspace --bins` first, as `cargo xtask test` does). No timing is asserted
//! except the protocol bound of the BGP case; the gaps are measured by `benches/failover.rs`.
//! A failed test keeps the lab's logs in `<CARGO_TARGET_TMPDIR>/failover-logs/<lab prefix>/`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_arp::MacAddr;
use cairn_e2e::lab::{Lab, LabConfig, Signal, ECHO_PORT, L2CLIENT_V4, NODES};
use cairn_e2e::netns::{is_root, Netns};
use cairn_e2e::observer::{
    claimants, describe_around, split_brain, Claim, ClaimKind, Observer, Solicitation,
};
use cairn_e2e::probe::{Probe, ProbeRecord};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};

/// The split-brain window of the issue.
const WINDOW: Duration = Duration::from_millis(100);
/// The hold time the lab's FRR and the example BGPPeer agree on.
const HOLD_TIME: Duration = Duration::from_secs(9);
/// Failovers of each kind the L2 test repeats after the first (the benchmark does 20).
const REPEATS: usize = 1;

/// The labs take turns (see the module doc).
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Sends one announcement for `vip` from `dev` of `ns` (what a new owner does): gratuitous ARP
/// for IPv4, an unsolicited Neighbor Advertisement for IPv6.
fn announce(ns: &Netns, dev: &str, vip: IpAddr) {
    let mac = MacAddr(ns.mac(dev).expect("MAC"));
    let dev = dev.to_owned();
    let protocol = match vip {
        IpAddr::V4(_) => cairn_arp::sys::ETH_P_ARP,
        IpAddr::V6(_) => cairn_arp::sys::ETH_P_IPV6,
    };
    ns.run(move || {
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a NUL-terminated name we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let socket =
            cairn_arp::sys::PacketSocket::open(ifindex, protocol, None).expect("packet socket");
        for frame in cairn_arp::frames::announcement(mac, vip) {
            socket
                .send(&frame, protocol)
                .expect("send the announcement");
        }
    })
    .expect("enter the namespace");
}

#[test]
fn observer_catches_two_hosts_answering_for_one_address_and_probe_follows_it_moving() {
    assert!(is_root(), "network namespace tests need root");
    let vip = Ipv4Addr::new(192, 0, 2, 200);
    let sw = Netns::new("fo-sw").expect("switch");
    let client = Netns::new("fo-cl").expect("client");
    let a = Netns::new("fo-a").expect("host a");
    let b = Netns::new("fo-b").expect("host b");
    sw.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    sw.ip(&["link", "set", "br0", "up"]).unwrap();
    for (port, ns, addr) in [
        ("pc", &client, "192.0.2.100/24"),
        ("pa", &a, "192.0.2.11/24"),
        ("pb", &b, "192.0.2.12/24"),
    ] {
        sw.veth(port, ns, "eth0").unwrap();
        sw.ip(&["link", "set", port, "master", "br0"]).unwrap();
        ns.addr("eth0", addr).unwrap();
    }
    client
        .exec(&["sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"])
        .unwrap();
    let echo = env!("CARGO_BIN_EXE_cairn-lab-echo");
    for (ns, name) in [(&a, "host-a"), (&b, "host-b")] {
        ns.spawn(&[echo, "--name", name], None).unwrap();
    }
    let mac_a = MacAddr(a.mac("eth0").unwrap());
    let mac_b = MacAddr(b.mac("eth0").unwrap());

    // Both hosts hold the address: both answer every solicitation.
    a.addr("eth0", "192.0.2.200/32").unwrap();
    b.addr("eth0", "192.0.2.200/32").unwrap();
    let observer = Observer::start(
        &client,
        "eth0",
        &[IpAddr::V4(vip)],
        Some(Solicitation {
            every: Duration::from_millis(20),
            from_v4: Some(Ipv4Addr::new(192, 0, 2, 100)),
            from_v6: None,
        }),
    )
    .expect("observer");
    std::thread::sleep(Duration::from_millis(300));
    let both = observer.split_brain(WINDOW);
    assert!(!both.is_empty(), "{:?}", observer.claims());
    assert!(both
        .iter()
        .all(|s| [mac_a, mac_b].contains(&s.claim.mac) && s.before.mac != s.claim.mac));
    let seen = claimants(&observer.claims(), IpAddr::V4(vip));
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), {
        let mut macs = vec![mac_a, mac_b];
        macs.sort();
        macs
    });

    // Only a holds it: the client's traffic reaches a, and nobody else claims it.
    b.ip(&["addr", "del", "192.0.2.200/32", "dev", "eth0"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    observer.clear();
    let target = SocketAddr::new(IpAddr::V4(vip), 8080);
    client
        .ip(&["neigh", "flush", "dev", "eth0"])
        .expect("flush the client's neighbours");
    let probe = Probe::start(&client, target).expect("probe");
    assert!(
        probe.wait_for(Duration::from_secs(5), Instant::now(), |r| r
            .answered_by()
            .contains_key("host-a")),
        "{:?}",
        probe.record()
    );

    // The address moves to b, which announces it: the probe follows, with one outage.
    a.ip(&["addr", "del", "192.0.2.200/32", "dev", "eth0"])
        .unwrap();
    b.addr("eth0", "192.0.2.200/32").unwrap();
    announce(&b, "eth0", IpAddr::V4(vip));
    assert!(
        probe.wait_for(Duration::from_secs(5), Instant::now(), |r| r
            .answers
            .iter()
            .rev()
            .take(10)
            .filter(|a| a.node == "host-b")
            .count()
            == 10),
        "{:?}",
        probe.record().answered_by()
    );
    let record = probe.stop();
    let claims = observer.stop();
    assert!(
        cairn_e2e::observer::split_brain(&claims, WINDOW).is_empty(),
        "{claims:?}"
    );
    assert_eq!(
        record.answered_by().keys().cloned().collect::<Vec<_>>(),
        ["host-a", "host-b"]
    );
    let a_last = record
        .answers
        .iter()
        .rposition(|x| x.node == "host-a")
        .unwrap();
    let b_first = record
        .answers
        .iter()
        .position(|x| x.node == "host-b")
        .unwrap();
    assert!(a_last < b_first, "answers interleave: {:?}", record.answers);
    assert!(record
        .answers
        .iter()
        .all(|x| x.client.ip() == IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))));
    assert!(record.gap() >= record.answers[b_first].at - record.answers[a_last].at);
    let seen = claimants(&claims, IpAddr::V4(vip));
    assert!(
        seen.contains_key(&mac_a) && seen.contains_key(&mac_b),
        "{seen:?}"
    );
}

#[test]
fn observer_records_the_neighbor_advertisements_answering_its_solicitations() {
    assert!(is_root(), "network namespace tests need root");
    let vip: Ipv6Addr = "2001:db8:2::c8".parse().unwrap();
    let other: Ipv6Addr = "2001:db8:2::c9".parse().unwrap();
    let client = Netns::new("fo-cl6").expect("client");
    let host = Netns::new("fo-h6").expect("host");
    client.veth("eth0", &host, "eth0").unwrap();
    client.addr("eth0", "2001:db8:2::100/64").unwrap();
    host.addr("eth0", "2001:db8:2::c8/64").unwrap();
    host.addr("eth0", "2001:db8:2::c9/64").unwrap();
    let observer = Observer::start(
        &client,
        "eth0",
        &[IpAddr::V6(vip)],
        Some(Solicitation {
            every: Duration::from_millis(20),
            from_v4: None,
            from_v6: Some("2001:db8:2::100".parse().unwrap()),
        }),
    )
    .expect("observer");
    // The host's kernel answers the solicitations for the VIP; an announcement of its other
    // address is not about the VIP, and one of the VIP is.
    std::thread::sleep(Duration::from_millis(200));
    announce(&host, "eth0", IpAddr::V6(other));
    announce(&host, "eth0", IpAddr::V6(vip));
    std::thread::sleep(Duration::from_millis(100));
    let claims = observer.stop();
    let mac = MacAddr(host.mac("eth0").unwrap());
    assert!(claims.len() >= 5, "{claims:?}");
    assert!(claims
        .iter()
        .all(|c| c.vip == IpAddr::V6(vip) && c.mac == mac && c.kind == ClaimKind::NeighborAdvert));
    assert!(!claims.iter().any(|c| c.vip == IpAddr::V6(other)));
}

/// Tears the lab down when the test ends, also on failure.
struct LabGuard(Lab);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_logs(&self.0);
        }
        if let Err(e) = self.0.down() {
            eprintln!("tearing the test lab down: {e}");
        }
    }
}

/// Copies the lab's logs out of its directory (which `down` removes), for a failed test.
fn keep_logs(lab: &Lab) {
    let to = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("failover-logs")
        .join(&lab.config().prefix);
    let copied = lab.keep_logs(&to);
    match copied {
        Ok(()) => eprintln!("the lab's logs are kept in {}", to.display()),
        Err(e) => eprintln!("keeping the lab's logs in {}: {e}", to.display()),
    }
}

/// What the test was doing when: to tell in which step a split brain happened.
#[derive(Default)]
struct Phases(Vec<(Instant, String)>);

impl Phases {
    fn mark(&mut self, what: String) {
        eprintln!("{what}");
        self.0.push((Instant::now(), what));
    }

    fn at(&self, when: Instant) -> &str {
        self.0
            .iter()
            .rev()
            .find(|(t, _)| *t <= when)
            .map_or("before the first step", |(_, what)| what.as_str())
    }
}

/// A lab of this test's own (prefix, directory and API port), up with Cairn running and the
/// example L2 and BGP configuration applied.
fn lab_up(tag: &str) -> LabGuard {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cairn-lab-echo"))
        .parent()
        .expect("binary directory");
    let config = LabConfig::for_test(tag, bin_dir, Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("lab configuration");
    let lab = LabGuard(Lab::new(config));
    lab.0.up().expect("lab up");
    let examples = cairn_e2e::lab::manifests_dir().join("examples");
    for file in ["l2.yaml", "bgp.yaml"] {
        lab.0
            .kubectl(&["apply", "-f", &examples.join(file).to_string_lossy()])
            .expect("apply the example configuration");
    }
    lab
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Creates a UDP echo Service (backed by `endpoints`, with the given pool annotation and traffic
/// policy) and waits for its address.
fn create_service(
    rt: &tokio::runtime::Runtime,
    lab: &Lab,
    name: &str,
    pool: Option<&str>,
    local: bool,
    endpoints: &[&str],
) -> IpAddr {
    // The example BGP pool serves only Services labelled for it; the annotation says which.
    let (annotations, labels) = match pool {
        Some(pool) => (
            serde_json::json!({"cairn.io/address-pool": pool}),
            serde_json::json!({"cairn.io/exposure": "routed"}),
        ),
        None => (serde_json::json!({}), serde_json::json!({})),
    };
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "annotations": annotations,
            "labels": labels,
        },
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
            "ipFamilies": ["IPv4"],
            "ports": [{"name": "echo", "port": ECHO_PORT, "targetPort": ECHO_PORT, "protocol": "UDP"}],
        },
    }))
    .expect("Service");
    rt.block_on(async {
        let client = lab.client().await.expect("client");
        cairn_e2e::lab::create_service(&client, &service, endpoints)
            .await
            .expect("create the Service");
        let api: Api<Service> = Api::namespaced(client, "default");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let svc = api.get(name).await.expect("get the Service");
            let ip = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|i| i.into_iter().find_map(|i| i.ip))
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            if let Some(ip) = ip {
                return ip;
            }
            assert!(Instant::now() < deadline, "{name} got no address");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The MAC of `node`'s eth0 (what its ARP replies carry).
fn node_mac(lab: &Lab, node: &str) -> MacAddr {
    let node = NODES.iter().find(|n| n.name == node).expect("lab node");
    lab.node_mac(node).expect("node MAC")
}

/// Waits until the last second of answers (at least 50 of them) all came from one node, and
/// returns it.
fn settled_owner(probe: &Probe, timeout: Duration) -> String {
    let mut owner = None;
    let lookback = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    let settled = probe.wait_for(timeout, lookback, |r| {
        let since = r.ended - Duration::from_secs(1);
        let recent: Vec<&str> = r.answers_since(since).map(|a| a.node.as_str()).collect();
        let one = recent.len() >= 50 && recent.iter().all(|n| *n == recent[0]);
        if one {
            owner = Some(recent[0].to_owned());
        }
        one
    });
    assert!(
        settled,
        "traffic to {} did not settle on one node: {:?}",
        probe.target(),
        tail(&probe.record())
    );
    owner.unwrap_or_default()
}

/// Waits until the 20 latest answers after `since` all came from a node other than `old`, and
/// returns that node.
fn moved_from(probe: &Probe, old: &str, since: Instant, timeout: Duration) -> String {
    let mut new = None;
    let moved = probe.wait_for(timeout, since, |r| {
        let recent: Vec<&str> = r.answers_since(since).map(|a| a.node.as_str()).collect();
        let last = &recent[recent.len().saturating_sub(20)..];
        let done = last.len() == 20 && last.iter().all(|n| *n != old && *n == last[0]);
        if done {
            new = Some(last[0].to_owned());
        }
        done
    });
    assert!(
        moved,
        "traffic to {} did not move away from {old}: {:?}",
        probe.target(),
        tail(&probe.record())
    );
    new.unwrap_or_default()
}

/// The nodes that answered, in order, with repeats collapsed (for failure messages).
fn tail(record: &ProbeRecord) -> Vec<(String, usize)> {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for answer in &record.answers {
        match runs.last_mut() {
            Some((node, n)) if *node == answer.node => *n += 1,
            _ => runs.push((answer.node.clone(), 1)),
        }
    }
    runs
}

/// The MACs that claimed the VIP after `since`, in order, with repeats collapsed.
fn claim_runs(claims: &[Claim], since: Instant) -> Vec<MacAddr> {
    let mut runs: Vec<MacAddr> = Vec::new();
    let mut recent: Vec<&Claim> = claims.iter().filter(|c| c.at >= since).collect();
    recent.sort_by_key(|c| c.at);
    for claim in recent {
        if runs.last() != Some(&claim.mac) {
            runs.push(claim.mac);
        }
    }
    runs
}

/// The claims from `span` before `at` to `span` after, as runs of (ms from `at`, node, kind,
/// how many), for failure messages.
fn around(lab: &Lab, claims: &[Claim], at: Instant, span: Duration) -> String {
    describe_around(claims, at, span, |mac| lab.name_of_mac(mac))
}

/// An observer of `vip` on the L2 client's segment that solicits it every 20 ms from the
/// client's own address.
fn lab_observer(client: &Netns, vip: IpAddr) -> Observer {
    Observer::start(
        client,
        "eth0",
        &[vip],
        Some(Solicitation {
            every: Duration::from_millis(20),
            from_v4: Some(L2CLIENT_V4.parse().expect("address")),
            from_v6: None,
        }),
    )
    .expect("observer")
}

/// One request to the lab API server's lab-only `/debug/*` endpoints; returns the JSON body.
fn api_debug(lab: &Lab, method: &str, path: &str, body: &str) -> serde_json::Value {
    let mut stream =
        TcpStream::connect(("127.0.0.1", lab.config().api_port)).expect("reach the API server");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (_, json) = response.split_once("\r\n\r\n").expect("an HTTP response");
    serde_json::from_str(json).expect("a JSON body")
}

fn lease_holder(rt: &tokio::runtime::Runtime, lab: &Lab, node: &str) -> Option<String> {
    rt.block_on(async {
        let client = lab.client().await.expect("client");
        let leases: Api<Lease> = Api::namespaced(client, "cairn-system");
        leases
            .get(&format!("cairn-speaker-{node}"))
            .await
            .expect("the speaker's Lease")
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
    })
}

/// One failover of the L2 VIP: signals its owner, waits for the traffic to move, brings the
/// speaker back (restart, or SIGCONT) and waits for the traffic to settle again. Returns (old
/// owner, new owner).
fn l2_failover(lab: &Lab, probe: &Probe, signal: Signal, phases: &mut Phases) -> (String, String) {
    let old = settled_owner(probe, Duration::from_secs(30));
    phases.mark(format!("{signal:?} of {old}"));
    let t0 = Instant::now();
    lab.stop_speaker(&old, signal).expect("signal the owner");
    let new = moved_from(probe, &old, t0, Duration::from_secs(30));
    assert_ne!(new, old);
    phases.mark(format!("{old} back after {signal:?}, {new} owned the VIP"));
    match signal {
        Signal::Stop => {
            lab.stop_speaker(&old, Signal::Cont).expect("SIGCONT");
            // Two lease durations: time for the resumed speaker to renew and act on it (it may
            // take the VIP back) before the traffic is judged settled.
            std::thread::sleep(Duration::from_secs(6));
        }
        _ => {
            lab.start_speaker(&old).expect("restart the speaker");
        }
    }
    settled_owner(probe, Duration::from_secs(30));
    (old, new)
}

#[test]
fn l2_vip_fails_over_on_kill_term_stop_and_api_outage_without_split_brain() {
    assert!(is_root(), "the lab needs root (network namespaces)");
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab_up("l2");
    let lab = &lab.0;
    let rt = runtime();
    let vip = create_service(
        &rt,
        lab,
        "echo-l2",
        None,
        false,
        &["cairn-n1", "cairn-n2", "cairn-n3"],
    );
    assert!(
        matches!(vip, IpAddr::V4(v4) if v4.octets()[..3] == [192, 0, 2]),
        "{vip}"
    );
    let client = Netns::adopt(&lab.l2client_namespace());
    let observer = lab_observer(&client, vip);
    let probe = Probe::start(&client, SocketAddr::new(vip, ECHO_PORT)).expect("probe");

    // The client reaches the VIP on one node, which sees the client's own address.
    let owner = settled_owner(&probe, Duration::from_secs(30));
    let record = probe.record();
    let last = record.answers.last().expect("an answer");
    assert_eq!(last.client.ip(), IpAddr::V4(L2CLIENT_V4.parse().unwrap()));
    let claimed_by: Vec<String> = claimants(&observer.claims(), vip)
        .keys()
        .map(|mac| lab.name_of_mac(*mac))
        .collect();
    assert_eq!(claimed_by, [owner], "only the owner answers ARP");

    // kill -9: a peer takes over at lease expiry.
    let mut phases = Phases::default();
    l2_failover(lab, &probe, Signal::Kill, &mut phases);

    // SIGTERM: handover, and the Lease is released on the way out.
    let old = settled_owner(&probe, Duration::from_secs(30));
    phases.mark(format!("Term of {old}"));
    let t0 = Instant::now();
    lab.stop_speaker(&old, Signal::Term).expect("SIGTERM");
    assert_eq!(
        lease_holder(&rt, lab, &old),
        None,
        "{old} left its Lease held"
    );
    let new = moved_from(&probe, &old, t0, Duration::from_secs(30));
    phases.mark(format!("{old} back after Term, {new} owned the VIP"));
    lab.start_speaker(&old).expect("restart");

    // SIGSTOP: the frozen speaker is fenced out; once resumed it does not answer beside the
    // node that took over (it may take the VIP back afterwards, in one clean handover).
    let old = settled_owner(&probe, Duration::from_secs(30));
    phases.mark(format!("Stop of {old}"));
    let old_mac = node_mac(lab, &old);
    let t0 = Instant::now();
    lab.stop_speaker(&old, Signal::Stop).expect("SIGSTOP");
    let new = moved_from(&probe, &old, t0, Duration::from_secs(30));
    let new_mac = node_mac(lab, &new);
    phases.mark(format!("Cont of {old}, {new} owns the VIP"));
    let resumed = Instant::now();
    lab.stop_speaker(&old, Signal::Cont).expect("SIGCONT");
    // Three lease durations: time for the resumed speaker to renew and act on it.
    std::thread::sleep(Duration::from_secs(9));
    let claims = observer.claims();
    let after = claim_runs(&claims, resumed);
    assert!(
        after == [new_mac] || after == [new_mac, old_mac],
        "after SIGCONT of {old} the VIP was claimed by {:?} (new owner {new}); claims: {}",
        after
            .iter()
            .map(|mac| lab.name_of_mac(*mac))
            .collect::<Vec<_>>(),
        around(lab, &claims, resumed, Duration::from_secs(2)),
    );
    let record = probe.record();
    let answers = tail(&ProbeRecord {
        answers: record.answers_since(resumed).cloned().collect(),
        ..record
    });
    assert!(answers.len() <= 2, "answers after SIGCONT: {answers:?}");
    eprintln!("answers after SIGCONT: {answers:?}");

    // Again, each kind.
    for _ in 0..REPEATS {
        for signal in [Signal::Kill, Signal::Term, Signal::Stop] {
            l2_failover(lab, &probe, signal, &mut phases);
        }
    }

    // The API server unreachable for 10 s: no speaker can renew its Lease, so the owner fences
    // itself (the VIP goes silent for a while: longer than the 20 ms between solicitations by
    // far) and no two nodes ever answer at once; traffic comes back afterwards.
    settled_owner(&probe, Duration::from_secs(30));
    phases.mark("API server unreachable for 10 s".into());
    let outage = Instant::now();
    let faults = api_debug(
        lab,
        "POST",
        "/debug/faults",
        r#"{"unreachableForMs": 10000}"#,
    );
    assert!(
        faults["unreachableForMs"].as_u64().unwrap_or(0) > 0,
        "{faults}"
    );
    std::thread::sleep(Duration::from_secs(10));
    phases.mark("API server back".into());
    let back = settled_owner(&probe, Duration::from_secs(60));
    let claims = observer.stop();
    let silence = cairn_e2e::probe::longest_gap(
        outage,
        outage + Duration::from_secs(10),
        claims.iter().map(|c| c.at),
    );
    eprintln!(
        "API outage: longest time without traffic {:?}, without ARP claims {silence:?}; \
         claims by {:?}; then {back} owns the VIP",
        probe.record().gap_since(outage),
        claim_runs(&claims, outage)
            .iter()
            .map(|mac| lab.name_of_mac(*mac))
            .collect::<Vec<_>>()
    );

    let found = split_brain(&claims, WINDOW);
    let mut by_phase: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in &found {
        *by_phase.entry(phases.at(s.claim.at)).or_default() += 1;
    }
    assert!(
        found.is_empty(),
        "split brain by step: {by_phase:?}\nclaims around the first: {}\n{} split-brain claims; the first: {} answered between two claims by {} during \"{}\" ({:?})",
        found.first().map_or(String::new(), |s| around(lab, &claims, s.claim.at, Duration::from_millis(300))),
        found.len(),
        found.first().map_or(String::new(), |s| lab.name_of_mac(s.claim.mac)),
        found.first().map_or(String::new(), |s| lab.name_of_mac(s.before.mac)),
        found.first().map_or("", |s| phases.at(s.claim.at)),
        found.first().map(|s| s.claim.kind),
    );
    assert!(
        silence > Duration::from_secs(1),
        "the owner kept answering ARP through the API outage (longest silence {silence:?})"
    );
}

#[test]
fn local_traffic_policy_vip_is_announced_only_where_its_endpoint_is_and_follows_it() {
    assert!(is_root(), "the lab needs root (network namespaces)");
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab_up("lo");
    let lab = &lab.0;
    let rt = runtime();
    let vip = create_service(&rt, lab, "echo-local", None, true, &["cairn-n2"]);
    let client = Netns::adopt(&lab.l2client_namespace());
    let observer = lab_observer(&client, vip);
    let probe = Probe::start(&client, SocketAddr::new(vip, ECHO_PORT)).expect("probe");
    assert_eq!(settled_owner(&probe, Duration::from_secs(30)), "cairn-n2");
    let n2 = node_mac(lab, "cairn-n2");
    assert_eq!(
        claimants(&observer.claims(), vip)
            .into_keys()
            .collect::<Vec<_>>(),
        [n2]
    );

    // The endpoint moves to n3 (as when its pod is rescheduled): so does the VIP.
    let moved = Instant::now();
    rt.block_on(async {
        let client = lab.client().await.expect("client");
        let slices: Api<EndpointSlice> = Api::namespaced(client, "default");
        let n3 = &NODES[2];
        let patch = serde_json::json!({"endpoints": [{
            "addresses": [n3.v4],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": n3.name,
        }]});
        slices
            .patch(
                "echo-local-v4",
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("move the endpoint");
    });
    assert_eq!(
        moved_from(&probe, "cairn-n2", moved, Duration::from_secs(30)),
        "cairn-n3"
    );
    let claims = observer.stop();
    let n3 = node_mac(lab, "cairn-n3");
    // n2 may have answered a last solicitation after the patch was sent; never after n3.
    let runs = claim_runs(&claims, moved);
    assert!(runs == [n3] || runs == [n2, n3], "{runs:?}");
    assert!(
        claims.iter().all(|c| c.mac == n2 || c.mac == n3),
        "a node without an endpoint claimed the VIP: {:?}",
        claimants(&claims, vip)
    );
    assert!(split_brain(&claims, WINDOW).is_empty());
}

/// The next hops FRR installed for `prefix` (`show ip route <prefix> json`).
fn next_hops(lab: &Lab, prefix: &str) -> Vec<String> {
    let text = lab
        .router_vtysh(&format!("show ip route {prefix} json"))
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut hops: Vec<String> = json[prefix]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|route| route["selected"].as_bool() == Some(true))
        .flat_map(|route| route["nexthops"].as_array().cloned().unwrap_or_default())
        .filter(|hop| hop["active"].as_bool() == Some(true))
        .filter_map(|hop| hop["ip"].as_str().map(str::to_owned))
        .collect();
    hops.sort();
    hops
}

fn wait_next_hops(lab: &Lab, prefix: &str, want: &[&str], timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let hops = next_hops(lab, prefix);
        if hops == want {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "FRR's next hops for {prefix}: {hops:?}, wanted {want:?}\n{}",
            lab.router_vtysh("show bgp summary").unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bgp_vip_has_three_way_ecmp_and_loses_a_killed_node_within_the_hold_time() {
    assert!(is_root(), "the lab needs root (network namespaces)");
    let _turn = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab_up("bgp");
    let lab = &lab.0;
    let rt = runtime();
    let all = ["cairn-n1", "cairn-n2", "cairn-n3"];
    let vip = create_service(&rt, lab, "echo-bgp", Some("bgp-pool"), false, &all);
    assert!(
        matches!(vip, IpAddr::V4(v4) if v4.octets()[..3] == [203, 0, 113]),
        "{vip}"
    );
    let prefix = format!("{vip}/32");
    let hops: Vec<&str> = NODES.iter().map(|n| n.v4).collect();
    wait_next_hops(lab, &prefix, &hops, Duration::from_secs(60));

    // The external client, behind the router, is answered by one of the nodes.
    let client = Netns::adopt(&lab.client_namespace());
    let probe = Probe::start(&client, SocketAddr::new(vip, ECHO_PORT)).expect("probe");
    let serving = settled_owner(&probe, Duration::from_secs(30));
    assert_eq!(
        probe.record().answers.last().map(|a| a.client.ip()),
        Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 100)))
    );

    // kill -9 the speaker of the node serving the client: its next hop goes (the session's
    // TCP connection closes, or at the latest the hold timer fires) and traffic moves.
    let victim = NODES.iter().find(|n| n.name == serving).expect("lab node");
    let t0 = Instant::now();
    lab.stop_speaker(victim.name, Signal::Kill)
        .expect("kill -9");
    let rest: Vec<&str> = hops.iter().copied().filter(|h| *h != victim.v4).collect();
    let gone = wait_next_hops(lab, &prefix, &rest, HOLD_TIME + Duration::from_secs(5));
    // The protocol bound, plus 1 s for FRR to install the route and this loop to poll it.
    assert!(
        gone - t0 <= HOLD_TIME + Duration::from_secs(1),
        "the next hop of the killed node stayed {:?}",
        gone - t0
    );
    moved_from(&probe, victim.name, t0, Duration::from_secs(30));

    // Back: the restarted speaker announces again.
    lab.start_speaker(victim.name).expect("restart");
    wait_next_hops(lab, &prefix, &hops, Duration::from_secs(60));
    drop(probe);
}
