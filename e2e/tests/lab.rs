//! The lab brought up for real under a test-only name prefix (`cairn-t<pid>`), checked from the
//! inside (FRR, pings across the segment and the external net, an echo server's view of the L2
//! client, `kubectl get nodes` against the lab API server from the host and from a node
//! namespace, a Service with the EndpointSlices the lab makes for it), then torn down and
//! checked gone.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_e2e::lab::{self, Lab, LabConfig, UpOutcome, ECHO_PORT, NODES, ROUTER_V4, ROUTER_V6};
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

fn test_config() -> LabConfig {
    let pid = std::process::id();
    let free_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    LabConfig {
        prefix: format!("cairn-t{pid}"),
        dir: Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-{pid}")),
        bin_dir: Path::new(env!("CARGO_BIN_EXE_cairn-lab-echo"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        api_port: free_port,
    }
}

fn ping(ns: &str, target: &str) {
    Netns::adopt(ns)
        .exec(&["ping", "-c1", "-W3", target])
        .unwrap_or_else(|e| panic!("{ns} cannot ping {target}: {e}"));
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
fn a_lab_with_a_dead_process_is_remade_by_up_and_removed_by_down_from_another_handle() {
    assert!(is_root(), "the lab needs root (network namespaces)");
    let mut config = test_config();
    config.prefix = format!("{}c", config.prefix);
    config.dir = config.dir.with_extension("crash");
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
    // SAFETY: kill(2) on the pid of the echo server this test's lab started.
    unsafe { libc::kill(echo.pid as i32, libc::SIGKILL) };
    std::mem::forget(first);

    let second = Guard(Lab::new(config));
    assert!(!second.0.status().healthy());
    assert!(matches!(
        second.0.up().expect("up again"),
        UpOutcome::Created(_)
    ));
    assert!(second.0.status().healthy());
    let pids: Vec<u32> = second.0.status().processes.iter().map(|p| p.pid).collect();

    second.0.down().expect("lab down");
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
