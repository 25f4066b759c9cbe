//! Failover of an L2 VIP in the lab (issue 7), measured from the L2 client, and the API load of
//! the speakers.
//!
//! A lab with Cairn running (lab API server, `cairn-allocator`, three `cairn-speaker`), one UDP
//! echo Service on an L2 VIP; the probe (`cairn_e2e::probe`) sends a request every 10 ms from the
//! L2 client. Each run stops the owner node's data path (nftables drops the echo port in its
//! namespace: the node's kernel would otherwise keep answering the client until the new owner
//! announces) and signals its speaker (SIGTERM, kill -9 or SIGSTOP) at the same moment, waits
//! until the traffic is answered by another node, takes the longest time without an answer from
//! just before the signal, then restores the data path, brings the speaker back (restart, or
//! SIGCONT) and lets the traffic settle. A soliciting observer (`cairn_e2e::observer`) watches ARP for the VIP all along.
//!
//! Then 1 000 Services (IPv6 addresses of a pool of this benchmark, announced over L2), and the
//! API writes (create, update, patch, delete) counted by the lab API server over a 10 s steady
//! window, with the allocator frozen (SIGSTOP) during the window so that only the speakers'
//! writes count; the same window is measured with the one Service first.
//!
//! Prints `failover_{sigterm,kill,sigstop}_gap_ms_{p50,max}` (p50 is the nearest-rank median),
//! `failover_split_brain_claims` (claims made while another MAC claimed within 100 ms; 0 is the
//! requirement), `api_writes_per_s` (1 000 Services) and `api_writes_per_s_1_service`.
//!
//! Cairn's binaries come from `target/debug` next to this benchmark's `target/release` (`cargo
//! xtask bench failover` builds them), or from `$CAIRN_BIN_DIR`. `$CAIRN_BENCH_FAILOVER_RUNS`
//! overrides the 20 runs per kind.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn_e2e::lab::{Lab, LabConfig, Signal, ECHO_PORT, L2CLIENT_V4, NODES};
use cairn_e2e::netns::{is_root, Netns};
use cairn_e2e::observer::{describe_around, split_brain, Observer, Solicitation};
use cairn_e2e::probe::Probe;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};

const RUNS: usize = 20;
const SERVICES: usize = 1000;
const WINDOW: Duration = Duration::from_millis(100);
const STEADY_WINDOW: Duration = Duration::from_secs(10);
/// Two lease durations: time for a resumed speaker to renew and act on it.
const RESUME_SETTLE: Duration = Duration::from_secs(6);
/// The nftables table the benchmark adds to a node namespace to stop its data path.
const TABLE: &str = "cairn_bench_blackhole";
const BENCH_POOL: &str = r#"
apiVersion: cairn.io/v1alpha1
kind: IPAddressPool
metadata:
  name: bench-pool
  namespace: cairn-system
  labels:
    cairn.io/announce: l2
spec:
  addresses:
    - 2001:db8:3::1000/116
  autoAssign: false
"#;

/// Tears the lab down at the end, also on a panic.
struct LabGuard(Lab);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let to = std::env::temp_dir().join(format!("{}-logs", self.0.config().prefix));
            match self.0.keep_logs(&to) {
                Ok(()) => eprintln!("the lab's logs are kept in {}", to.display()),
                Err(e) => eprintln!("keeping the lab's logs in {}: {e}", to.display()),
            }
        }
        if let Err(e) = self.0.down() {
            eprintln!("tearing the benchmark lab down: {e}");
        }
    }
}

fn main() -> ExitCode {
    if !is_root() {
        eprintln!("the failover benchmark needs root (network namespaces)");
        return ExitCode::FAILURE;
    }
    let runs = std::env::var("CAIRN_BENCH_FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    let bin_dir = std::env::var_os("CAIRN_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_cairn-lab-echo"))
                .parent()
                .and_then(Path::parent)
                .map(|target| target.join("debug"))
                .unwrap_or_else(|| PathBuf::from("target/debug"))
        });
    if !bin_dir.join("cairn-speaker").exists() {
        eprintln!(
            "{} has no cairn-speaker: run `cargo build --workspace --bins` first",
            bin_dir.display()
        );
        return ExitCode::FAILURE;
    }
    let tmp = std::env::temp_dir();
    let config = match LabConfig::for_test("fb", &bin_dir, &tmp) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lab configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lab = LabGuard(Lab::new(config));
    if let Err(e) = lab.0.up() {
        eprintln!("lab up: {e}");
        return ExitCode::FAILURE;
    }
    run(&lab.0, runs);
    ExitCode::SUCCESS
}

fn run(lab: &Lab, runs: usize) {
    let examples = cairn_e2e::lab::manifests_dir().join("examples");
    lab.kubectl(&["apply", "-f", &examples.join("l2.yaml").to_string_lossy()])
        .expect("apply the L2 example");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(lab.client()).expect("client");
    let all = ["cairn-n1", "cairn-n2", "cairn-n3"];
    rt.block_on(create_service(&client, "echo", "IPv4", None, &all));
    let vip = rt
        .block_on(wait_addresses(&client, 1))
        .into_iter()
        .next()
        .expect("the VIP");

    let l2client = Netns::adopt(&lab.l2client_namespace());
    let observer = Observer::start(
        &l2client,
        "eth0",
        &[vip],
        Some(Solicitation {
            every: Duration::from_millis(20),
            from_v4: L2CLIENT_V4.parse().ok(),
            from_v6: None,
        }),
    )
    .expect("observer");
    let probe = Probe::start(&l2client, SocketAddr::new(vip, ECHO_PORT)).expect("probe");
    // When each failover's signal was sent, to say where a split-brain moment happened.
    let mut signals: Vec<(Instant, String)> = Vec::new();
    for (name, signal) in [
        ("sigterm", Signal::Term),
        ("kill", Signal::Kill),
        ("sigstop", Signal::Stop),
    ] {
        let mut gaps: Vec<Duration> = (0..runs)
            .map(|run| {
                let (signalled, gap) = failover_gap(lab, &probe, signal);
                signals.push((signalled, format!("{name} run {}", run + 1)));
                gap
            })
            .collect();
        gaps.sort_unstable();
        let p50 = gaps[gaps.len().saturating_sub(1) / 2];
        let max = gaps.last().copied().unwrap_or_default();
        println!("bench failover_{name}_gap_ms_p50 {:.1} ms", ms(p50));
        println!("bench failover_{name}_gap_ms_max {:.1} ms", ms(max));
    }
    drop(probe);
    let claims = observer.stop();
    let found = split_brain(&claims, WINDOW);
    for moment in &found {
        let at = moment.claim.at;
        let (signalled, run) = signals
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map_or((at, "before the first run"), |(t, run)| (*t, run.as_str()));
        eprintln!(
            "split brain in {run}, {} ms after the signal: {}",
            (at - signalled).as_millis(),
            describe_around(&claims, at, Duration::from_millis(300), |mac| lab
                .name_of_mac(mac))
        );
    }
    println!("bench failover_split_brain_claims {} claims", found.len());

    let one = writes_per_s(lab);
    let pool = lab.config().dir.join("bench-pool.yaml");
    std::fs::write(&pool, BENCH_POOL).expect("write the pool");
    lab.kubectl(&["apply", "-f", &pool.to_string_lossy()])
        .expect("apply the pool");
    rt.block_on(async {
        for i in 1..SERVICES {
            create_service(
                &client,
                &format!("bench-{i}"),
                "IPv6",
                Some("bench-pool"),
                &all,
            )
            .await;
        }
        wait_addresses(&client, SERVICES).await;
    });
    // Let the speakers finish announcing and writing their Events.
    std::thread::sleep(Duration::from_secs(10));
    let many = writes_per_s(lab);
    println!("bench api_writes_per_s {many:.2} writes/s");
    println!("bench api_writes_per_s_1_service {one:.2} writes/s");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One failover: the owner's node stops serving (its echo port is dropped) and its speaker gets
/// `signal` at the same moment, as when a node fails; the result is when the signal was sent
/// and the longest time without an answer, from 200 ms before the signal until the traffic is
/// answered by another node. Then the node serves again, the speaker is brought back and
/// traffic settles.
fn failover_gap(lab: &Lab, probe: &Probe, signal: Signal) -> (Instant, Duration) {
    let old = settled_owner(probe);
    let node = NODES.iter().find(|n| n.name == old).expect("a lab node");
    let ns = lab.node_namespace(node);
    blackhole(lab, &ns, true);
    let t0 = Instant::now();
    lab.stop_speaker(&old, signal).expect("signal the owner");
    let mut gap = Duration::ZERO;
    let before = t0 - Duration::from_millis(200);
    let moved = probe.wait_for(Duration::from_secs(60), before, |r| {
        let recent: Vec<&str> = r.answers_since(t0).map(|a| a.node.as_str()).collect();
        let last = &recent[recent.len().saturating_sub(20)..];
        let done = last.len() == 20 && last.iter().all(|n| *n != old);
        if done {
            gap = r.gap();
        }
        done
    });
    assert!(
        moved,
        "traffic did not move away from {old} after {signal:?}: answers since the signal {:?}",
        probe.record_since(t0).answered_by()
    );
    blackhole(lab, &ns, false);
    match signal {
        Signal::Stop => lab.stop_speaker(&old, Signal::Cont).map(drop),
        _ => lab.start_speaker(&old).map(drop),
    }
    .expect("bring the speaker back");
    if signal == Signal::Stop {
        // The resumed speaker renews its Lease and may take the VIP back: let that happen
        // before the next run picks the owner.
        std::thread::sleep(RESUME_SETTLE);
    }
    settled_owner(probe);
    (t0, gap)
}

/// Makes namespace `ns` drop (or stop dropping) what arrives for the echo port: without it the
/// node whose speaker died would keep answering the client until the new owner's announcement
/// (its data path does not depend on the speaker), and the probe would see no outage at all.
fn blackhole(lab: &Lab, ns: &str, on: bool) {
    let script = if on {
        format!(
            "table inet {TABLE} {{ chain input {{ type filter hook input priority 0; \
             udp dport {ECHO_PORT} drop; }}; }}"
        )
    } else {
        format!("delete table inet {TABLE}")
    };
    lab.run_in(ns, &["nft", script.as_str()])
        .expect("nft in the node namespace");
}

/// Waits until the last 2 s of answers (at least 100) all came from one node; returns it.
fn settled_owner(probe: &Probe) -> String {
    let mut owner = String::new();
    let lookback = Instant::now()
        .checked_sub(Duration::from_secs(2))
        .unwrap_or_else(Instant::now);
    let settled = probe.wait_for(Duration::from_secs(60), lookback, |r| {
        let since = r.ended - Duration::from_secs(2);
        let recent: Vec<&str> = r.answers_since(since).map(|a| a.node.as_str()).collect();
        let one = recent.len() >= 100 && recent.iter().all(|n| *n == recent[0]);
        if one {
            owner = recent[0].to_owned();
        }
        one
    });
    assert!(settled, "traffic to {} did not settle", probe.target());
    owner
}

async fn create_service(
    client: &kube::Client,
    name: &str,
    family: &str,
    pool: Option<&str>,
    endpoints: &[&str],
) {
    let annotations = match pool {
        Some(pool) => serde_json::json!({"cairn.io/address-pool": pool}),
        None => serde_json::json!({}),
    };
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "ipFamilies": [family],
            "ports": [{"name": "echo", "port": ECHO_PORT, "targetPort": ECHO_PORT, "protocol": "UDP"}],
        },
    }))
    .expect("Service");
    cairn_e2e::lab::create_service(client, &service, endpoints)
        .await
        .expect("create the Service");
}

/// Waits until `count` Services have an address; returns the addresses.
async fn wait_addresses(client: &kube::Client, count: usize) -> Vec<IpAddr> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let services = api
            .list(&ListParams::default())
            .await
            .expect("list Services");
        let ips: Vec<IpAddr> = services
            .items
            .into_iter()
            .filter_map(|svc| {
                svc.status?
                    .load_balancer?
                    .ingress?
                    .into_iter()
                    .find_map(|i| i.ip)?
                    .parse()
                    .ok()
            })
            .collect();
        if ips.len() >= count {
            return ips;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} Services got an address",
            ips.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// API writes per second over a steady window, with the allocator frozen so that only the
/// speakers' writes count.
fn writes_per_s(lab: &Lab) -> f64 {
    let allocator = lab
        .status()
        .processes
        .into_iter()
        .find(|p| p.name == "allocator" && p.alive)
        .expect("the allocator runs");
    // SAFETY: kill(2) on the pid of the allocator this benchmark's lab started.
    unsafe { libc::kill(allocator.pid as i32, libc::SIGSTOP) };
    let before = writes(lab);
    let start = Instant::now();
    std::thread::sleep(STEADY_WINDOW);
    let after = writes(lab);
    let elapsed = start.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(allocator.pid as i32, libc::SIGCONT) };
    (after - before) as f64 / elapsed.as_secs_f64()
}

/// Write requests served so far by the lab API server (`GET /debug/requests`).
fn writes(lab: &Lab) -> u64 {
    let mut stream =
        TcpStream::connect(("127.0.0.1", lab.config().api_port)).expect("reach the API server");
    stream
        .write_all(b"GET /debug/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let json: serde_json::Value = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .expect("a JSON body");
    ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .map(|verb| json["byVerb"][verb].as_u64().unwrap_or(0))
        .sum()
}
