//! The lab brought up for real under test-only name prefixes (`cairn-t<pid>…`).
//!
//! - Without Cairn's processes: checked from the inside (FRR, pings across the segment and the
//!   external net, an echo server's view of the L2 client, the kube-proxy stand-in delivering
//!   VIP ranges locally while the kernel answers neither ARP (arping) nor NDP (ndisc6) for them,
//!   `kubectl get nodes` against the lab API server from the host and from a node namespace, a
//!   Service with the EndpointSlices the lab makes for it), then torn down and checked gone; and
//!   a crashed lab remade by `up` and removed by `down` from another handle.
//! - With the real `cairn-allocator` and three `cairn-speaker` processes (built by
//!   `cargo build --workspace --bins`): the L2 example applied, a Service gets an address that
//!   exactly one MAC answers ARP for and that the L2 client reaches; SIGTERM to the owner's
//!   speaker moves it to another node; the speaker restarts; `down` leaves nothing, a frozen
//!   speaker included.
//! - The demo's scenario (`cairn_e2e::lab::demo`, what `cargo xtask demo` runs) on a lab of its
//!   own, every expectation met, so that the demo cannot rot unnoticed.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_e2e::lab::{
    self, Dataplane, Lab, LabConfig, Signal, UpOutcome, ECHO_PORT, NODES, ROUTER_V4, ROUTER_V6,
};
use cairn_e2e::netns::{is_root, Netns};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

/// Tears the lab down when the test ends, also on failure.
struct Guard(Lab);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.0.down() {
            eprintln!("tearing the test lab down: {e}");
        }
    }
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cairn-lab-echo"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A lab of the network and the lab's own processes only (no allocator, no speakers).
fn test_config() -> LabConfig {
    let mut config = LabConfig::for_test("", &bin_dir(), Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("a test lab configuration");
    config.start_cairn = false;
    config
}

/// True when `arping` from `ns` gets any answer for `ip` on eth0.
fn arp_answers(ns: &str, ip: &str) -> Vec<String> {
    let out = Netns::adopt(ns)
        .command(&["arping", "-r", "-c", "2", "-w", "2", "-i", "eth0", ip])
        .output()
        .expect("arping runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// True when `ndisc6` from `ns` gets a neighbour advertisement for `ip` on eth0.
fn ndp_answers(ns: &str, ip: &str) -> bool {
    Netns::adopt(ns)
        .command(&["ndisc6", "-q", "-r", "2", "-w", "500", ip, "eth0"])
        .output()
        .expect("ndisc6 runs")
        .status
        .success()
}

fn ping(ns: &str, target: &str) {
    Netns::adopt(ns)
        .exec(&["ping", "-c1", "-W3", target])
        .unwrap_or_else(|e| panic!("{ns} cannot ping {target}: {e}"));
}

/// True when `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn all_namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lab_comes_up_answers_from_every_namespace_and_leaves_nothing_after_down() {
    assert!(is_root(), "the lab needs root (network namespaces)");
    let config = test_config();
    let prefix = format!("{}-", config.prefix);
    let dir = config.dir.clone();
    let lab = Guard(Lab::new(config));

    let UpOutcome::Created(made) = lab.0.up().expect("lab up") else {
        panic!("a fresh lab reported itself already up");
    };
    assert!(!made.is_empty());
    assert_eq!(lab.0.up().expect("second up"), UpOutcome::AlreadyUp);

    // FRR runs and bgpd listens for BGP.
    let status = lab.0.status();
    assert!(status.healthy(), "{status:?}");
    for daemon in ["frr-zebra", "frr-bgpd", "apiserver", "forward", "echo-n1"] {
        assert!(
            status.processes.iter().any(|p| p.name == daemon && p.alive),
            "{daemon} not running: {status:?}"
        );
    }
    let listening = Netns::adopt(&lab.0.router_namespace())
        .exec(&["ss", "-Hltn", "sport = :179"])
        .expect("ss");
    assert!(
        !String::from_utf8_lossy(&listening.stdout).trim().is_empty(),
        "bgpd does not listen on port 179"
    );
    assert!(status.bgp_summary.is_some_and(|s| s.contains("192.0.2.11")));

    // Both clients reach the router; every node reaches it over IPv4 and IPv6.
    ping(&lab.0.l2client_namespace(), ROUTER_V4);
    ping(&lab.0.l2client_namespace(), ROUTER_V6);
    ping(&lab.0.client_namespace(), "198.51.100.1");
    ping(&lab.0.client_namespace(), "2001:db8:4::1");
    for node in &NODES {
        ping(&lab.0.node_namespace(node), ROUTER_V4);
        ping(&lab.0.node_namespace(node), ROUTER_V6);
    }

    // The echo server in n1 tells the L2 client which address it came from, over TCP and UDP.
    let server: SocketAddr = format!("{}:{ECHO_PORT}", NODES[0].v4).parse().unwrap();
    let (tcp_local, tcp_line, udp_local, udp_line) = Netns::adopt(&lab.0.l2client_namespace())
        .run(move || {
            let stream = TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
            let tcp_local = stream.local_addr().unwrap();
            let mut tcp_line = String::new();
            BufReader::new(stream).read_line(&mut tcp_line).unwrap();
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.connect(server).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            socket.send(b"hello\n").unwrap();
            let mut buf = [0u8; 256];
            let n = socket.recv(&mut buf).unwrap();
            let udp_line = String::from_utf8_lossy(&buf[..n]).into_owned();
            (tcp_local, tcp_line, socket.local_addr().unwrap(), udp_line)
        })
        .expect("enter the L2 client");
    assert_eq!(tcp_line, format!("cairn-n1 {tcp_local}\n"));
    assert_eq!(udp_line, format!("cairn-n1 {udp_local}\n"));
    assert!(tcp_line.contains("192.0.2.100:"));

    // UDP replies leave from the address the datagram was sent to, as direct server return
    // needs: an address on n1's loopback, reached through a host route on the L2 client, answers
    // a connected socket (which would drop a reply from any other address).
    let n1 = Netns::adopt(&lab.0.node_namespace(&NODES[0]));
    let l2client = Netns::adopt(&lab.0.l2client_namespace());
    for (vip, via) in [
        ("192.0.2.250", NODES[0].v4),
        ("2001:db8:2::fa", NODES[0].v6),
    ] {
        let prefix_len = if vip.contains(':') { 128 } else { 32 };
        n1.addr("lo", &format!("{vip}/{prefix_len}"))
            .expect("VIP on lo");
        l2client
            .ip(&["route", "add", &format!("{vip}/{prefix_len}"), "via", via])
            .expect("host route to the VIP");
        let target = SocketAddr::new(vip.parse().unwrap(), ECHO_PORT);
        let (local, line) = l2client
            .run(move || {
                let bind = if target.is_ipv6() {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let socket = UdpSocket::bind(bind).unwrap();
                socket.connect(target).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                socket.send(b"hello\n").unwrap();
                let mut buf = [0u8; 256];
                let n = socket.recv(&mut buf).expect("a reply from the VIP");
                (
                    socket.local_addr().unwrap(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                )
            })
            .expect("enter the L2 client");
        assert_eq!(line, format!("cairn-n1 {local}\n"));
    }

    // The kube-proxy stand-in: the VIP ranges are local on every node, yet the kernel answers
    // neither ARP nor NDP for them (only Cairn may), not even for an address on n1's loopback.
    for vip in ["192.0.2.240", "192.0.2.250"] {
        assert_eq!(
            arp_answers(&lab.0.l2client_namespace(), vip),
            Vec::<String>::new(),
            "the kernel answered ARP for {vip}"
        );
    }
    assert!(!ndp_answers(&lab.0.l2client_namespace(), "2001:db8:2::f0"));
    assert!(
        !arp_answers(&lab.0.l2client_namespace(), NODES[0].v4).is_empty(),
        "arping itself works: n1 answers for its own address"
    );
    assert!(ndp_answers(&lab.0.l2client_namespace(), NODES[0].v6));

    // The lab API server holds the three Nodes.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(lab.0.kubeconfig())
        .arg("--cache-dir")
        .arg(dir.join("kubectl-cache"))
        .args(["get", "nodes", "-o", "name"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut nodes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node/cairn-n1", "node/cairn-n2", "node/cairn-n3"]);

    // The lab plays endpoint controller: a dual-stack Service backed by n1 and n2 gets one
    // EndpointSlice per family, with ready endpoints on those nodes.
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "RequireDualStack",
            "ports": [{"name": "tcp", "port": 80, "targetPort": ECHO_PORT, "protocol": "TCP"}],
        },
    }))
    .unwrap();
    let kubeconfig = lab.0.kubeconfig();
    let slices = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = lab::client(&kubeconfig).await.expect("client");
        lab::create_service(&client, &service, &["cairn-n1", "cairn-n2"])
            .await
            .expect("create the Service");
        let api: Api<EndpointSlice> = Api::namespaced(client, "default");
        api.list(&ListParams::default().labels("kubernetes.io/service-name=echo"))
            .await
            .expect("list EndpointSlices")
            .items
    });
    let mut seen: Vec<(String, String, String, i32)> = slices
        .iter()
        .flat_map(|s| {
            s.endpoints.iter().map(|e| {
                assert_eq!(e.conditions.as_ref().and_then(|c| c.ready), Some(true));
                (
                    s.address_type.clone(),
                    e.node_name.clone().unwrap_or_default(),
                    e.addresses.join(","),
                    s.ports.as_ref().and_then(|p| p[0].port).unwrap_or_default(),
                )
            })
        })
        .collect();
    seen.sort();
    let port = i32::from(ECHO_PORT);
    assert_eq!(
        seen,
        [
            ("IPv4".into(), "cairn-n1".into(), "192.0.2.11".into(), port),
            ("IPv4".into(), "cairn-n2".into(), "192.0.2.12".into(), port),
            (
                "IPv6".into(),
                "cairn-n1".into(),
                "2001:db8:2::11".into(),
                port
            ),
            (
                "IPv6".into(),
                "cairn-n2".into(),
                "2001:db8:2::12".into(),
                port
            ),
        ]
    );

    // The same kubeconfig works from inside a node namespace (where the speakers run).
    let inside = Netns::adopt(&lab.0.node_namespace(&NODES[2]))
        .exec(&[
            "kubectl".as_ref(),
            "--kubeconfig".as_ref(),
            lab.0.kubeconfig().as_os_str(),
            "--cache-dir".as_ref(),
            dir.join("kubectl-cache-n3").as_os_str(),
            "get".as_ref(),
            "node".as_ref(),
            "cairn-n3".as_ref(),
            "-o".as_ref(),
            "name".as_ref(),
        ])
        .expect("kubectl inside n3");
    assert_eq!(String::from_utf8_lossy(&inside.stdout), "node/cairn-n3\n");

    // Down removes every namespace, process and file.
    let pids: Vec<u32> = lab.0.status().processes.iter().map(|p| p.pid).collect();
    lab.0.down().expect("lab down");
    assert!(
        !all_namespaces().contains(&prefix),
        "namespaces left: {}",
        all_namespaces()
    );
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
        assert!(!running, "process {pid} survived down: {stat}");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(lab.0.status().processes.is_empty());
}

#[test]
fn a_crashed_lab_with_cairn_is_remade_by_up_and_removed_by_down_from_another_handle() {
    assert!(is_root(), "the lab needs root (network namespaces)");
    // With Cairn's processes: the allocator lives in the host namespace, where only its pid
    // file leads `down` to it.
    let config = LabConfig::for_test("c", &bin_dir(), Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("a test lab configuration");
    let prefix = format!("{}-", config.prefix);
    let dir = config.dir.clone();
    let first = Guard(Lab::new(config.clone()));
    assert!(matches!(
        first.0.up().expect("lab up"),
        UpOutcome::Created(_)
    ));

    // A crash: one backend dies, and the handle that made the lab is gone.
    let echo = first
        .0
        .status()
        .processes
        .into_iter()
        .find(|p| p.name == "echo-n2")
        .expect("echo-n2 recorded");
    let crashed: Vec<u32> = first.0.status().processes.iter().map(|p| p.pid).collect();
    // SAFETY: kill(2) on the pid of the echo server this test's lab started.
    unsafe { libc::kill(echo.pid as i32, libc::SIGKILL) };
    // The signal is delivered asynchronously: wait for the process to be gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(echo.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::mem::forget(first);

    let second = Guard(Lab::new(config));
    assert!(!second.0.status().healthy());
    assert!(matches!(
        second.0.up().expect("up again"),
        UpOutcome::Created(_)
    ));
    assert!(second.0.status().healthy());
    for name in ["allocator", "speaker-n1", "speaker-n2", "speaker-n3"] {
        assert!(
            second
                .0
                .status()
                .processes
                .iter()
                .any(|p| p.name == name && p.alive),
            "{name} not running after up"
        );
    }
    // Nothing of the crashed lab survived the remake, the host-namespace allocator included.
    for pid in crashed {
        assert!(!running(pid), "process {pid} of the crashed lab survived");
    }
    let pids: Vec<u32> = second.0.status().processes.iter().map(|p| p.pid).collect();

    second.0.down().expect("lab down");
    assert!(!all_namespaces().contains(&prefix), "{}", all_namespaces());
    for pid in pids {
        assert!(!running(pid), "process {pid} survived down");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Sends UDP requests to `target` from `ns` until one is answered (up to `within`), and returns
/// the answer line and the local address it was sent from.
fn udp_ask(ns: &str, target: SocketAddr, within: Duration) -> Option<(String, SocketAddr)> {
    Netns::adopt(ns)
        .run(move || {
            let deadline = std::time::Instant::now() + within;
            let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
            socket.connect(target).ok()?;
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .ok()?;
            let mut buf = [0u8; 256];
            while std::time::Instant::now() < deadline {
                // An ICMP error (no neighbour yet) surfaces as a send or recv error: retry.
                if socket.send(b"hello\n").is_err() {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                if let Ok(n) = socket.recv(&mut buf) {
                    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                    return Some((line, socket.local_addr().ok()?));
                }
            }
            None
        })
        .expect("enter the namespace")
}

#[test]
fn a_lab_with_cairn_gives_a_service_a_vip_that_the_l2_client_reaches_across_a_handover() {
    assert!(is_root(), "the lab needs root (network namespaces)");
    let config = LabConfig::for_test("k", &bin_dir(), Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("a test lab configuration");
    assert!(config.start_cairn);
    let prefix = format!("{}-", config.prefix);
    let dir = config.dir.clone();
    let lab = Guard(Lab::new(config));
    lab.0
        .up()
        .expect("lab up with the allocator and the speakers (cargo build --workspace --bins)");
    let status = lab.0.status();
    for name in ["allocator", "speaker-n1", "speaker-n2", "speaker-n3"] {
        assert!(
            status.processes.iter().any(|p| p.name == name && p.alive),
            "{name} not running: {status:?}"
        );
    }

    // The L2 example pool, and a Service backed by all three echo servers.
    let examples = lab::manifests_dir().join("examples/l2.yaml");
    lab.0
        .kubectl(&["apply", "-f", &examples.to_string_lossy()])
        .expect("apply the L2 example");
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"name": "udp", "port": ECHO_PORT, "protocol": "UDP"}],
        },
    }))
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let vip: String = runtime.block_on(async {
        let client = lab.0.client().await.expect("client");
        lab::create_service(&client, &service, &["cairn-n1", "cairn-n2", "cairn-n3"])
            .await
            .expect("create the Service");
        let api: Api<Service> = Api::namespaced(client, "default");
        for _ in 0..100 {
            let svc = api.get("echo").await.expect("get the Service");
            let ip = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|i| i.into_iter().find_map(|i| i.ip));
            if let Some(ip) = ip {
                return ip;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the allocator gave the Service no address");
    });
    assert!(vip.starts_with("192.0.2.2"), "{vip} is not from l2-pool");

    // One node answers ARP for the VIP, and its echo server answers the L2 client.
    let target: SocketAddr = format!("{vip}:{ECHO_PORT}").parse().unwrap();
    let l2client = lab.0.l2client_namespace();
    let (line, local) =
        udp_ask(&l2client, target, Duration::from_secs(15)).expect("the VIP answers");
    let owner = line
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(line, format!("{owner} {local}\n"));
    assert!(NODES.iter().any(|n| n.name == owner), "{line}");
    let macs: std::collections::BTreeSet<String> =
        arp_answers(&l2client, &vip).into_iter().collect();
    assert_eq!(macs.len(), 1, "ARP answers for {vip}: {macs:?}");

    // SIGTERM the owner: another node takes the VIP over; the old speaker restarts.
    lab.0
        .stop_speaker(&owner, Signal::Term)
        .expect("stop the owner");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let next = loop {
        let (line, _) = udp_ask(&l2client, target, Duration::from_secs(15))
            .expect("the VIP answers after the handover");
        let node = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if node != owner {
            break node;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{owner} still answers after its speaker stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(NODES.iter().any(|n| n.name == next));
    assert!(lab.0.speaker_pid(&owner).is_none());
    let pid = lab.0.start_speaker(&owner).expect("restart the speaker");
    assert_eq!(lab.0.speaker_pid(&owner), Some(pid));

    // Down stops the Cairn processes with the rest, a frozen speaker among them.
    lab.0
        .stop_speaker("cairn-n3", Signal::Stop)
        .expect("freeze a speaker");
    let pids: Vec<u32> = lab.0.status().processes.iter().map(|p| p.pid).collect();
    lab.0.down().expect("lab down");
    assert!(!all_namespaces().contains(&prefix), "{}", all_namespaces());
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
        assert!(!running, "process {pid} survived down: {stat}");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn the_demo_scenario_meets_every_expectation_on_a_lab_of_its_own() {
    demo_meets_every_expectation("d", Dataplane::Kernel);
}

/// The same scenario with the speakers' XDP stage: VIP packets are tunnelled by the owner (or
/// the router's ECMP choice) to other backend nodes, whose XDP program strips the tunnel; the
/// demo checks that flows to an L2 VIP are answered by the other nodes, not the owner, and that
/// every backend saw the client's own address.
#[test]
fn the_demo_scenario_meets_every_expectation_with_the_xdp_data_plane() {
    demo_meets_every_expectation("x", Dataplane::Xdp);
}

fn demo_meets_every_expectation(tag: &str, dataplane: Dataplane) {
    assert!(is_root(), "the lab needs root (network namespaces)");
    let mut config = LabConfig::for_test(tag, &bin_dir(), Path::new(env!("CARGO_TARGET_TMPDIR")))
        .expect("a test lab configuration");
    config.dataplane = dataplane;
    let lab = Guard(Lab::new(config));
    lab.0
        .up()
        .expect("lab up with the allocator and the speakers (cargo build --workspace --bins)");
    let mut account = Vec::new();
    let expectations = lab::demo::run(&lab.0, &mut account).expect("the demo runs");
    let account = String::from_utf8_lossy(&account);
    assert!(expectations.len() >= 20, "{account}");
    let failed: Vec<String> = expectations
        .iter()
        .filter(|e| !e.met)
        .map(|e| format!("{}: {}", e.what, e.seen))
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}\n{account}");
    let pins = lab.0.bpf_pin_dir();
    drop(lab);
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mount table");
    assert!(
        !mounts.contains(&*pins.to_string_lossy()),
        "the lab's bpffs {} is still mounted after down",
        pins.display()
    );
}
