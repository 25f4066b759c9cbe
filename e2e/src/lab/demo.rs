//! The demo's scenario (`cargo xtask demo`): on a lab that is up with Cairn's processes, it
//! applies `manifests/examples`, creates Services, and writes a readable account of what Cairn
//! does, checking each step against what should happen.
//!
//! Steps: addresses allocated (an L2 Service, one with `externalTrafficPolicy: Local` backed on
//! one node only, two sharing a BGP address by `cairn.io/allow-shared-ip`, a dual-stack one);
//! `cairnctl status` (owner node of each L2 address, BGP peers); FRR's BGP table and the ECMP
//! next hops of the shared address; a request from each client (the L2 client on the node
//! segment, the routed client behind the router) to each address, with the client address the
//! backend saw; a failover (SIGTERM to the owner's speaker) measured with [`crate::probe`], and
//! the speaker's return; the deletion of a Service, showing that no other address or owner
//! moved. Each check is an [`Expectation`]; the caller prints the summary.
//!
//! It never decides anything Cairn decides: owners and routes are read from `cairnctl`, the
//! router and the echo servers' answers. Timings are measured and printed, and the only timing
//! checks are generous bounds (the lease duration), so that a loaded machine does not fail it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

use super::{
    block_on, create_service, io_error, manifests_dir, wait_until, Dataplane, Lab, LabError,
    Signal, CLIENT_V4, CLIENT_V6, ECHO_PORT, L2CLIENT_V4, L2CLIENT_V6,
};
use crate::netns::Netns;
use crate::probe::{parse_answer, Probe};

/// One checked expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// What should happen.
    pub what: String,
    /// Whether it did.
    pub met: bool,
    /// What was seen.
    pub seen: String,
}

/// The demo's Services: name, protocol of the port, backend nodes, extra spec, annotations and
/// labels.
struct DemoService {
    name: &'static str,
    what: &'static str,
    protocol: &'static str,
    nodes: &'static [&'static str],
    spec: serde_json::Value,
    annotations: serde_json::Value,
    labels: serde_json::Value,
}

fn services() -> Vec<DemoService> {
    use serde_json::json;
    let all: &[&str] = &["cairn-n1", "cairn-n2", "cairn-n3"];
    vec![
        DemoService {
            name: "web",
            what: "L2, backends on every node",
            protocol: "UDP",
            nodes: all,
            spec: json!({}),
            annotations: json!({}),
            labels: json!({}),
        },
        DemoService {
            name: "web-local",
            what: "L2, externalTrafficPolicy Local, backend on cairn-n3 only",
            protocol: "UDP",
            nodes: &["cairn-n3"],
            spec: json!({"externalTrafficPolicy": "Local"}),
            annotations: json!({}),
            labels: json!({}),
        },
        DemoService {
            name: "dns-tcp",
            what: "BGP pool, shares its address with dns-udp",
            protocol: "TCP",
            nodes: all,
            spec: json!({}),
            annotations: json!({"cairn.io/allow-shared-ip": "dns"}),
            // bgp-pool serves the Services its allocateTo.serviceSelectors match
            // (manifests/examples/bgp.yaml).
            labels: json!({"cairn.io/exposure": "routed"}),
        },
        DemoService {
            name: "dns-udp",
            what: "BGP pool, shares its address with dns-tcp",
            protocol: "UDP",
            nodes: all,
            spec: json!({}),
            annotations: json!({"cairn.io/allow-shared-ip": "dns"}),
            // bgp-pool serves the Services its allocateTo.serviceSelectors match
            // (manifests/examples/bgp.yaml).
            labels: json!({"cairn.io/exposure": "routed"}),
        },
        DemoService {
            name: "dual",
            what: "L2, dual-stack (IPv4 and IPv6)",
            protocol: "UDP",
            nodes: all,
            spec: json!({"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}),
            annotations: json!({}),
            labels: json!({}),
        },
    ]
}

fn service_object(s: &DemoService) -> Result<Service, LabError> {
    let mut spec = serde_json::json!({
        "type": "LoadBalancer",
        "ports": [{"name": s.protocol.to_lowercase(), "port": ECHO_PORT, "protocol": s.protocol}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), s.spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": s.name,
            "namespace": "default",
            "annotations": s.annotations,
            "labels": s.labels,
        },
        "spec": spec,
    }))
    .map_err(|e| LabError::Invalid(format!("Service {}: {e}", s.name)))
}

/// Writes a line of the account; a closed stdout is not the demo's failure.
macro_rules! say {
    ($out:expr) => { let _ = writeln!($out); };
    ($out:expr, $($arg:tt)*) => { let _ = writeln!($out, $($arg)*); };
}

/// What `cairnctl status -o json` says: service -> [(ip, pool, protocol, owner, peer -> nodes)].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Announced {
    /// ip -> L2 owner.
    owners: BTreeMap<IpAddr, String>,
    /// ip -> BGP nodes (over every peer).
    bgp: BTreeMap<IpAddr, BTreeSet<String>>,
    /// service -> its addresses.
    addresses: BTreeMap<String, BTreeSet<IpAddr>>,
}

fn cairnctl(lab: &Lab, args: &[&str]) -> Result<String, LabError> {
    let out = std::process::Command::new(lab.config.bin_dir.join("cairnctl"))
        .arg("--kubeconfig")
        .arg(lab.kubeconfig())
        .args(args)
        .output()
        .map_err(io_error("running cairnctl"))?;
    if !out.status.success() {
        return Err(LabError::Io {
            what: format!("cairnctl {}", args.join(" ")),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn announced(lab: &Lab) -> Result<Announced, LabError> {
    let text = cairnctl(lab, &["status", "-o", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| LabError::Invalid(format!("cairnctl status -o json: {e}")))?;
    let mut found = Announced::default();
    for row in json["services"].as_array().into_iter().flatten() {
        let service = row["service"].as_str().unwrap_or_default().to_owned();
        let Some(ip) = row["ip"].as_str().and_then(|ip| ip.parse::<IpAddr>().ok()) else {
            found.addresses.entry(service).or_default();
            continue;
        };
        found.addresses.entry(service).or_default().insert(ip);
        if let Some(owner) = row["owner"].as_str() {
            found.owners.insert(ip, owner.to_owned());
        }
        for nodes in row["bgp"].as_object().into_iter().flat_map(|m| m.values()) {
            for node in nodes.as_array().into_iter().flatten() {
                if let Some(node) = node.as_str() {
                    found.bgp.entry(ip).or_default().insert(node.to_owned());
                }
            }
        }
    }
    Ok(found)
}

/// One UDP request to `target` from `ns`, retried for up to `within`: (node, address it saw).
fn udp_request(ns: &str, target: SocketAddr, within: Duration) -> Option<(String, SocketAddr)> {
    Netns::adopt(ns)
        .run(move || {
            let bind: SocketAddr = if target.is_ipv6() {
                "[::]:0".parse().ok()?
            } else {
                "0.0.0.0:0".parse().ok()?
            };
            let socket = UdpSocket::bind(bind).ok()?;
            socket.connect(target).ok()?;
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .ok()?;
            let deadline = Instant::now() + within;
            let mut buf = [0u8; 256];
            while Instant::now() < deadline {
                if socket.send(b"demo\n").is_err() {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                if let Ok(n) = socket.recv(&mut buf) {
                    return parse_answer(&buf[..n]);
                }
            }
            None
        })
        .ok()
        .flatten()
}

/// One TCP request to `target` from `ns`, retried for up to `within`.
fn tcp_request(ns: &str, target: SocketAddr, within: Duration) -> Option<(String, SocketAddr)> {
    Netns::adopt(ns)
        .run(move || {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut text = Vec::new();
                    if stream.read_to_end(&mut text).is_ok() || !text.is_empty() {
                        return parse_answer(&text);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            None
        })
        .ok()
        .flatten()
}

/// FRR's active next hops for `prefix` (`show ip route <prefix> json`).
fn next_hops(lab: &Lab, prefix: &str) -> Vec<String> {
    let family = if prefix.contains(':') { "ipv6" } else { "ip" };
    let Ok(text) = lab.router_vtysh(&format!("show {family} route {prefix} json")) else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut hops: Vec<String> = json[prefix]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["selected"] == true)
        .flat_map(|r| r["nexthops"].as_array().cloned().unwrap_or_default())
        .filter(|h| h["active"] == true)
        .filter_map(|h| h["ip"].as_str().map(str::to_owned))
        .collect();
    hops.sort();
    hops.dedup();
    hops
}

/// Addresses separated by commas, or `none`.
fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "none".into();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

struct Account<'a> {
    out: &'a mut dyn Write,
    expectations: Vec<Expectation>,
}

impl Account<'_> {
    fn expect(&mut self, what: impl Into<String>, met: bool, seen: impl Into<String>) {
        let (what, seen) = (what.into(), seen.into());
        say!(
            self.out,
            "  [{}] {what}: {seen}",
            if met { "ok" } else { "FAILED" }
        );
        self.expectations.push(Expectation { what, met, seen });
    }

    fn heading(&mut self, text: &str) {
        say!(self.out);
        say!(self.out, "== {text}");
    }
}

/// Runs the scenario on `lab` (up, with Cairn's processes), writing the account to `out`.
pub fn run(lab: &Lab, out: &mut dyn Write) -> Result<Vec<Expectation>, LabError> {
    let mut account = Account {
        out,
        expectations: Vec::new(),
    };
    let a = &mut account;

    a.heading("Configuration: kubectl apply -f manifests/examples");
    let applied = lab.kubectl(&[
        "apply",
        "-f",
        &manifests_dir().join("examples").to_string_lossy(),
    ])?;
    for line in applied.lines() {
        say!(a.out, "  {line}");
    }

    a.heading("Services (the lab plays endpoint controller: EndpointSlices on the backend nodes)");
    let demo = services();
    let objects: Vec<(Service, &[&str])> = demo
        .iter()
        .map(|s| service_object(s).map(|o| (o, s.nodes)))
        .collect::<Result<_, _>>()?;
    for s in &demo {
        say!(
            a.out,
            "  default/{:<10} {}/{:<4} {} (backends: {})",
            s.name,
            ECHO_PORT,
            s.protocol,
            s.what,
            s.nodes.join(" ")
        );
    }
    let kubeconfig = lab.kubeconfig();
    let allocated: BTreeMap<String, Vec<IpAddr>> = block_on(async {
        let client = super::client(&kubeconfig).await?;
        for (object, nodes) in &objects {
            create_service(&client, object, nodes).await?;
        }
        let api: Api<Service> = Api::namespaced(client, "default");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut found = BTreeMap::new();
            for s in services() {
                let svc = api
                    .get(s.name)
                    .await
                    .map_err(super::kube_error(format!("reading Service {}", s.name)))?;
                let ips: Vec<IpAddr> = svc
                    .status
                    .and_then(|st| st.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| i.ip.and_then(|ip| ip.parse().ok()))
                    .collect();
                found.insert(s.name.to_owned(), ips);
            }
            let want = |name: &str| if name == "dual" { 2 } else { 1 };
            if found.iter().all(|(n, ips)| ips.len() == want(n)) || Instant::now() > deadline {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })?;

    a.heading("Addresses allocated (status.loadBalancer.ingress, written by cairn-allocator)");
    for (name, ips) in &allocated {
        let text: Vec<String> = ips.iter().map(ToString::to_string).collect();
        say!(a.out, "  default/{name:<10} {}", text.join(", "));
    }
    let ip_of = |name: &str, v6: bool| -> Option<IpAddr> {
        allocated
            .get(name)
            .and_then(|ips| ips.iter().find(|ip| ip.is_ipv6() == v6).copied())
    };
    let l2_pool = |ip: &IpAddr| ip.to_string().starts_with("192.0.2.2") || ip.is_ipv6();
    for s in &demo {
        let ips = allocated.get(s.name).cloned().unwrap_or_default();
        let want = if s.name == "dual" { 2 } else { 1 };
        let from_pool = if s.name.starts_with("dns") {
            ips.iter()
                .all(|ip| ip.to_string().starts_with("203.0.113."))
        } else {
            ips.iter().all(l2_pool)
        };
        a.expect(
            format!("{} gets {want} address(es) from its pool", s.name),
            ips.len() == want && from_pool,
            list(&ips),
        );
    }
    let shared = ip_of("dns-tcp", false);
    a.expect(
        "dns-tcp and dns-udp share one address",
        shared.is_some() && shared == ip_of("dns-udp", false),
        format!(
            "{} and {}",
            list(&ip_of("dns-tcp", false).into_iter().collect::<Vec<_>>()),
            list(&ip_of("dns-udp", false).into_iter().collect::<Vec<_>>())
        ),
    );

    a.heading("Who announces what (cairnctl status, from the speakers' Lease records)");
    let l2_vips: Vec<IpAddr> = ["web", "web-local", "dual"]
        .iter()
        .flat_map(|n| allocated.get(*n).cloned().unwrap_or_default())
        .collect();
    let mut seen = Announced::default();
    wait_until(Duration::from_secs(30), || {
        seen = announced(lab).unwrap_or_default();
        l2_vips.iter().all(|ip| seen.owners.contains_key(ip))
            && shared.is_some_and(|ip| seen.bgp.get(&ip).is_some_and(|n| n.len() == 3))
    });
    let status = cairnctl(lab, &["status"])?;
    for line in status.lines() {
        say!(a.out, "  {line}");
    }
    for ip in &l2_vips {
        a.expect(
            format!("{ip} has one L2 owner"),
            seen.owners.contains_key(ip),
            seen.owners
                .get(ip)
                .cloned()
                .unwrap_or_else(|| "none".into()),
        );
    }
    if let Some(ip) = ip_of("web-local", false) {
        a.expect(
            "web-local (Local) is owned by the node with its endpoint",
            seen.owners.get(&ip).map(String::as_str) == Some("cairn-n3"),
            seen.owners
                .get(&ip)
                .cloned()
                .unwrap_or_else(|| "no owner".into()),
        );
    }

    a.heading("Why only cairn-n3 may announce web-local (cairnctl why, the speakers' own rules)");
    for line in cairnctl(lab, &["why", "default/web-local"])?.lines() {
        say!(a.out, "  {line}");
    }

    a.heading("The router's BGP table (FRR in the router namespace)");
    let shared_prefix = shared.map(|ip| format!("{ip}/32")).unwrap_or_default();
    let mut hops = Vec::new();
    wait_until(Duration::from_secs(30), || {
        hops = next_hops(lab, &shared_prefix);
        hops.len() == 3
    });
    if let Ok(table) = lab.router_vtysh("show ip bgp") {
        for line in table.lines().filter(|l| !l.trim().is_empty()) {
            say!(a.out, "  {line}");
        }
    }
    say!(
        a.out,
        "  route {shared_prefix}: ECMP next hops {}",
        hops.join(", ")
    );
    a.expect(
        format!("the router has 3-way ECMP for {shared_prefix}"),
        hops.len() == 3,
        hops.join(" "),
    );

    a.heading("A request from each client to each address (the echo server reports what it saw)");
    let clients = [
        (
            "L2 client",
            lab.l2client_namespace(),
            L2CLIENT_V4,
            L2CLIENT_V6,
        ),
        (
            "routed client",
            lab.client_namespace(),
            CLIENT_V4,
            CLIENT_V6,
        ),
    ];
    let mut targets: Vec<(&str, IpAddr, &str)> = Vec::new();
    for s in &demo {
        for ip in allocated.get(s.name).into_iter().flatten() {
            targets.push((s.name, *ip, s.protocol));
        }
    }
    for (client, ns, v4, v6) in &clients {
        for (name, ip, protocol) in &targets {
            let target = SocketAddr::new(*ip, ECHO_PORT);
            let answer = if *protocol == "TCP" {
                tcp_request(ns, target, Duration::from_secs(5))
            } else {
                udp_request(ns, target, Duration::from_secs(5))
            };
            let own = if ip.is_ipv6() { *v6 } else { *v4 };
            let (met, seen) = match &answer {
                Some((node, addr)) => (
                    addr.ip().to_string() == *own,
                    format!("answered by {node}, which saw {addr}"),
                ),
                None => (false, "no answer".into()),
            };
            a.expect(
                format!("{client} -> {name} {target}/{}", protocol.to_lowercase()),
                met,
                seen,
            );
        }
    }

    data_path(lab, a, ip_of("web", false), &seen);
    failover(lab, a, ip_of("web", false), &seen)?;
    deletion(lab, a)?;
    Ok(account.expectations)
}

/// Flows to `web` (backends on every node) from the L2 client, each from a new source port: with
/// the kernel data plane the owner's own backend answers them all; with XDP the owner tunnels
/// them to the other backend nodes (never to itself), spread by Maglev.
fn data_path(lab: &Lab, a: &mut Account<'_>, vip: Option<IpAddr>, seen: &Announced) {
    const FLOWS: usize = 16;
    let dataplane = lab.config().dataplane;
    a.heading(&format!(
        "Data path ({}): {FLOWS} flows from the L2 client to web, each from a new port",
        dataplane.as_str()
    ));
    let Some((vip, owner)) = vip.and_then(|ip| Some((ip, seen.owners.get(&ip)?.clone()))) else {
        a.expect("web's data path", false, "web has no address or owner");
        return;
    };
    let ns = lab.l2client_namespace();
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..FLOWS {
        let answer = udp_request(&ns, SocketAddr::new(vip, ECHO_PORT), Duration::from_secs(2));
        let node = answer.map_or_else(|| "no answer".to_owned(), |(node, _)| node);
        *answered.entry(node).or_default() += 1;
    }
    let counts = answered
        .iter()
        .map(|(node, n)| format!("{node}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    say!(a.out, "  owner {owner}; flows answered by {counts}");
    match dataplane {
        Dataplane::Kernel => a.expect(
            format!("kernel data path: the owner {owner} serves every flow to {vip}"),
            answered.get(&owner) == Some(&FLOWS),
            counts,
        ),
        Dataplane::Xdp => a.expect(
            format!("XDP on {owner} tunnels the flows to {vip} to the other backend nodes"),
            answered.len() >= 2
                && answered.values().sum::<usize>() == FLOWS
                && !answered.contains_key(&owner)
                && !answered.contains_key("no answer"),
            counts,
        ),
    }
}

/// SIGTERM to the owner of `web`'s address, with a probe from the L2 client; then its return.
fn failover(
    lab: &Lab,
    a: &mut Account<'_>,
    vip: Option<IpAddr>,
    seen: &Announced,
) -> Result<(), LabError> {
    a.heading("Failover: SIGTERM to the speaker owning web's address (probe every 10 ms)");
    let Some(vip) = vip else {
        a.expect("failover", false, "web has no address");
        return Ok(());
    };
    let Some(owner) = seen.owners.get(&vip).cloned() else {
        a.expect("failover", false, format!("{vip} has no owner"));
        return Ok(());
    };
    let target = SocketAddr::new(vip, ECHO_PORT);
    let probe = Probe::start(&Netns::adopt(&lab.l2client_namespace()), target)
        .map_err(|e| LabError::Invalid(format!("starting the probe: {e}")))?;
    let warm = wait_until(Duration::from_secs(5), || {
        probe.record().answers.len() >= 20
    });
    let stopped_at = Instant::now();
    let pid = lab.stop_speaker(&owner, Signal::Term)?;
    say!(
        a.out,
        "  {owner} owned {vip}; sent SIGTERM to its speaker (pid {pid})"
    );
    // Who answers is not who owns: with the XDP data plane the new owner tunnels the probe's
    // flow to whichever backend node its hash picks, which may be the old owner's (its echo
    // server still runs). So the takeover is read from the speakers' records, and the traffic
    // only has to keep flowing.
    let mut successor = None;
    let taken_over = wait_until(Duration::from_secs(15), || {
        successor = announced(lab)
            .ok()
            .and_then(|s| s.owners.get(&vip).cloned())
            .filter(|node| *node != owner);
        successor.is_some()
    });
    let flowing = wait_until(Duration::from_secs(15), || {
        probe.record().answers_since(stopped_at).count() >= 50
    });
    let record = probe.stop();
    let gap = record.gap_since(stopped_at);
    let successor = successor.unwrap_or_else(|| "nobody".into());
    let served = record
        .answers_since(stopped_at)
        .last()
        .map_or("nobody", |x| x.node.as_str());
    say!(
        a.out,
        "  {successor} took over {vip}; answers now from {served}; longest gap without an answer: {} ms (target for SIGTERM: <= 300 ms)",
        gap.as_millis()
    );
    // With the kernel data path the owner answers itself, so the answers must have moved too.
    let served_by_successor = match lab.config().dataplane {
        Dataplane::Kernel => served == successor,
        Dataplane::Xdp => true,
    };
    a.expect(
        format!("after SIGTERM of {owner}, another node announces {vip} and traffic keeps flowing"),
        warm && taken_over && flowing && served_by_successor,
        format!("{successor}, gap {} ms", gap.as_millis()),
    );
    a.expect(
        "the SIGTERM gap stays below the lease duration (3 s)",
        flowing && gap < Duration::from_secs(3),
        format!("{} ms", gap.as_millis()),
    );
    let pid = lab.start_speaker(&owner)?;
    let mut back = None;
    wait_until(Duration::from_secs(15), || {
        back = announced(lab)
            .ok()
            .and_then(|s| s.owners.get(&vip).cloned());
        back.as_deref() == Some(owner.as_str())
    });
    say!(
        a.out,
        "  restarted the speaker of {owner} (pid {pid}); owner of {vip} now {}",
        back.as_deref().unwrap_or("none")
    );
    a.expect(
        format!("{vip} returns to {owner}, its rendezvous-hash owner, when it is back"),
        back.as_deref() == Some(owner.as_str()),
        back.unwrap_or_else(|| "none".into()),
    );
    Ok(())
}

/// Deletes `dual` and checks that no other address or owner moved.
fn deletion(lab: &Lab, a: &mut Account<'_>) -> Result<(), LabError> {
    a.heading("Deleting Service dual: nothing else moves");
    let before = announced(lab)?;
    lab.kubectl(&["delete", "service", "dual", "-n", "default"])?;
    let mut after = before.clone();
    wait_until(Duration::from_secs(10), || {
        after = announced(lab).unwrap_or_default();
        !after.addresses.contains_key("default/dual")
    });
    // Give anything that would move the time to do so.
    std::thread::sleep(Duration::from_secs(2));
    after = announced(lab)?;
    let dual: Vec<IpAddr> = before
        .addresses
        .get("default/dual")
        .into_iter()
        .flatten()
        .copied()
        .collect();
    let mut moved = Vec::new();
    for (service, ips) in &before.addresses {
        if service == "default/dual" {
            continue;
        }
        if after.addresses.get(service) != Some(ips) {
            moved.push(format!(
                "{service} {ips:?} -> {:?}",
                after.addresses.get(service)
            ));
        }
    }
    for (ip, owner) in &before.owners {
        if dual.contains(ip) {
            continue;
        }
        if after.owners.get(ip) != Some(owner) {
            let now = after.owners.get(ip).map_or("none", String::as_str);
            moved.push(format!("{ip} owner {owner} -> {now}"));
        }
    }
    for (service, ips) in &after.addresses {
        let text: Vec<String> = ips.iter().map(ToString::to_string).collect();
        let owners: Vec<String> = ips
            .iter()
            .map(|ip| {
                after
                    .owners
                    .get(ip)
                    .cloned()
                    .unwrap_or_else(|| "BGP".into())
            })
            .collect();
        say!(
            a.out,
            "  {service:<18} {} (owner {})",
            text.join(", "),
            owners.join(", ")
        );
    }
    let released = dual.iter().all(|ip| !after.owners.contains_key(ip));
    a.expect(
        "dual's addresses are no longer announced",
        released && !after.addresses.contains_key("default/dual"),
        list(&dual),
    );
    a.expect(
        "no other Service's address or owner moved",
        moved.is_empty(),
        if moved.is_empty() {
            "all unchanged".into()
        } else {
            moved.join("; ")
        },
    );
    Ok(())
}
