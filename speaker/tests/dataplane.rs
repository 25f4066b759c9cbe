//! The speaker's XDP data plane end to end, through real kernels in network namespaces: a
//! client, a load-balancing node `n1` (the [`XdpProgrammer`]'s balancer on its uplink) and two
//! backend nodes `n2`, `n3` (the programmer's decap program on their uplink, both VIPs local on
//! loopback, a TCP echo server bound to [::] for both families that answers with its node name
//! and the peer address it saw), all on one dual-stack bridge. Each node's programme is planned
//! from the same Kubernetes objects (a dual-stack Service with its allocated VIPs, its IPv4 and
//! IPv6 EndpointSlices, Nodes with InternalIPs), as the speaker does. The load balancer's node
//! does not forward IP, so an answer proves the reply went straight from the backend node to the
//! client (direct server return). Also: next hops read from the kernel's routing and neighbour
//! tables, the one-XDP-program-per-interface limit, and nodes that balance and decapsulate on
//! their one interface (n1 → n2 and n2 → n1). Needs root.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_e2e::netns::Netns;
use cairn_speaker::dataplane::{
    neighbour, plan_cluster, XdpConfig, XdpError, XdpPlan, XdpProgrammer,
};
use cairn_xdp::{DataplaneConfig, Protocol, Service, Sink, SinkKind};
use k8s_openapi::api::core::v1::{Node, Service as K8sService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

const CLIENT: &str = "198.51.100.100";
const CLIENT6: &str = "2001:db8:100::100";
const VIP: &str = "203.0.113.10";
const VIP6: &str = "2001:db8:10::10";
const PORT: u16 = 8080;

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Node `nN`'s address: 198.51.100.N.
fn node_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, n)
}

/// Node `nN`'s IPv6 address: 2001:db8:100::N.
fn node_ip6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, u16::from(n))
}

fn from<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object deserializes")
}

/// The cluster's objects: the dual-stack Service bound to both VIPs, its IPv4 and IPv6 slices
/// with one ready endpoint (pod) on each of `backend_nodes`, and the three dual-stack Nodes.
fn objects(backend_nodes: &[u8]) -> (Vec<K8sService>, Vec<EndpointSlice>, Vec<Node>) {
    let service = from(json!({
        "metadata": {"namespace": "web", "name": "echo", "annotations": {
            "cairn.io/allocated-ips": format!("{VIP},{VIP6}"),
            "cairn.io/allocated-pool": "lab"}},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                 "ports": [{"port": PORT, "protocol": "TCP"}]},
    }));
    let slice = |family: &str, pod: &dyn Fn(u8) -> String| -> EndpointSlice {
        let endpoints: Vec<Value> = backend_nodes
            .iter()
            .map(|&n| {
                json!({"addresses": [pod(n)], "nodeName": format!("n{n}"),
                       "conditions": {"ready": true}})
            })
            .collect();
        from(json!({
            "metadata": {"namespace": "web", "name": format!("echo-{family}"),
                         "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": family, "endpoints": endpoints,
        }))
    };
    let slices = vec![
        slice("IPv4", &|n| format!("192.0.2.{n}")),
        slice("IPv6", &|n| format!("2001:db8:2::{n}")),
    ];
    let nodes = (1..=3)
        .map(|n| {
            from(json!({
                "metadata": {"name": format!("n{n}")},
                "status": {"addresses": [
                    {"type": "InternalIP", "address": node_ip(n).to_string()},
                    {"type": "InternalIP", "address": node_ip6(n).to_string()}]},
            }))
        })
        .collect();
    (vec![service], slices, nodes)
}

/// Node `nN`'s programme when `backend_nodes` hold the endpoints.
fn plan_for(n: u8, backend_nodes: &[u8]) -> XdpPlan {
    let (services, slices, nodes) = objects(backend_nodes);
    let (plan, problems) = plan_cluster(&format!("n{n}"), &services, &slices, &nodes);
    assert!(problems.is_empty(), "{problems:?}");
    plan
}

fn service() -> Service {
    service_on(VIP)
}

fn service_on(vip: &str) -> Service {
    Service {
        vip: addr(vip),
        port: PORT,
        protocol: Protocol::Tcp,
    }
}

/// Stops server threads when dropped.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Accepts TCP connections on [::]:PORT, both families (opened in `ns`), and answers every line
/// with "<name> <peer address>".
fn start_echo(ns: &Netns, name: &'static str, stop: Arc<AtomicBool>) {
    let listener = ns
        .run(|| TcpListener::bind((Ipv6Addr::UNSPECIFIED, PORT)))
        .expect("enter backend")
        .expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    std::thread::spawn(move || serve(stream, peer, name));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

fn serve(stream: TcpStream, peer: SocketAddr, name: &str) {
    let _ = stream.set_nonblocking(false);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let seen = peer.ip().to_canonical();
        if line.is_err() || writeln!(writer, "{name} {seen}").is_err() {
            return;
        }
    }
}

fn sysctl(ns: &Netns, kv: &str) {
    ns.exec(&["sysctl", "-qw", kv]).expect("sysctl");
}

/// A programmer for any node of the three-node lab, where only n1's balancer is attached (the
/// tunnels' source addresses are n1's).
fn programmer() -> XdpProgrammer {
    programmer_for(1)
}

/// A programmer whose tunnels leave from node `nN`'s addresses.
fn programmer_for(n: u8) -> XdpProgrammer {
    XdpProgrammer::load(XdpConfig {
        balancer: DataplaneConfig {
            local_v4: Some(node_ip(n)),
            local_v6: Some(node_ip6(n)),
            mtu: 1600,
            ..DataplaneConfig::default()
        },
        decap_pin_dir: None,
    })
    .expect("load programs")
}

struct Lab {
    // Field order is drop order: programs and servers go before their namespaces.
    _stop: Stop,
    lb: XdpProgrammer,
    backends: Vec<XdpProgrammer>,
    _sink: Sink,
    client: Netns,
    lb_ns: Netns,
    backend_ns: Vec<Netns>,
    _switch: Netns,
}

impl Lab {
    fn new() -> Lab {
        assert!(cairn_e2e::netns::is_root(), "namespace tests need root");
        let switch = Netns::new("dpsw").expect("switch");
        switch.add_bridge("br0").expect("bridge");
        let plug = |ns: &Netns, port: &str, n: u8, mtu: &str| {
            switch.veth(port, ns, "eth0").expect("veth");
            switch
                .ip(&["link", "set", port, "master", "br0", "mtu", "1600"])
                .expect("port");
            ns.ip(&["link", "set", "eth0", "mtu", mtu]).expect("mtu");
            let (ip, ip6) = match n {
                0 => (CLIENT.to_string(), CLIENT6.to_string()),
                n => (node_ip(n).to_string(), node_ip6(n).to_string()),
            };
            ns.addr("eth0", &format!("{ip}/24")).expect("addr");
            ns.addr("eth0", &format!("{ip6}/64")).expect("addr6");
        };
        let client = Netns::new("dpcl").expect("client");
        plug(&client, "s-client", 0, "1500");
        client
            .disable_tx_checksum_offload("eth0")
            .expect("checksum offload off");
        client
            .ip(&[
                "route",
                "add",
                &format!("{VIP}/32"),
                "via",
                &node_ip(1).to_string(),
            ])
            .expect("route to the VIP");
        client
            .ip(&[
                "route",
                "add",
                &format!("{VIP6}/128"),
                "via",
                &node_ip6(1).to_string(),
            ])
            .expect("route to the IPv6 VIP");
        let stop = Arc::new(AtomicBool::new(false));
        let mut backend_ns = Vec::new();
        let mut backends = Vec::new();
        for (n, name) in [(2, "n2"), (3, "n3")] {
            let ns = Netns::new("dpbe").expect("backend");
            plug(&ns, &format!("s-n{n}"), n, "1600");
            for vip in [VIP, VIP6] {
                ns.ip(&["route", "add", "local", vip, "dev", "lo"])
                    .expect("VIP local");
            }
            sysctl(&ns, "net.ipv4.conf.all.arp_ignore=1");
            let mut decap = programmer();
            ns.run(|| decap.attach_decap("eth0"))
                .expect("enter")
                .expect("attach decap");
            start_echo(&ns, name, stop.clone());
            backends.push(decap);
            backend_ns.push(ns);
        }
        let lb_ns = Netns::new("dplb").expect("lb");
        plug(&lb_ns, "s-n1", 1, "1600");
        // No IP forwarding: whatever reaches the client from the VIP cannot have come through
        // this node's stack.
        sysctl(&lb_ns, "net.ipv4.ip_forward=0");
        sysctl(&lb_ns, "net.ipv6.conf.all.forwarding=0");
        // XDP_TX on the LB's eth0 needs an XDP program on its veth peer.
        let (sink, _) = switch
            .run(|| Sink::attach(SinkKind::Pass, "s-n1"))
            .expect("enter switch")
            .expect("sink");
        let mut lb = programmer();
        lb_ns
            .run(|| lb.attach_balancer("eth0"))
            .expect("enter")
            .expect("attach balancer");
        Lab {
            _stop: Stop(stop),
            lb,
            backends,
            _sink: sink,
            client,
            lb_ns,
            backend_ns,
            _switch: switch,
        }
    }

    /// Plans and applies every node's programme for `backend_nodes`, re-applying the load
    /// balancer's until no backend node is pending resolution.
    fn program(&mut self, backend_nodes: &[u8]) {
        for (i, (ns, decap)) in self.backend_ns.iter().zip(&mut self.backends).enumerate() {
            let desired = plan_for(i as u8 + 2, backend_nodes);
            ns.run(|| decap.apply(&desired))
                .expect("enter")
                .expect("apply decap");
            // Not a balancer: only the decap part is programmed.
            assert_eq!(decap.programmed().decap, desired.decap);
            assert!(decap.programmed().services.is_empty());
        }
        let desired = plan_for(1, backend_nodes);
        let lb = &mut self.lb;
        for _ in 0..100 {
            let report = self
                .lb_ns
                .run(|| lb.apply(&desired))
                .expect("enter")
                .expect("apply balancer");
            if report.pending.is_empty() {
                assert_eq!(lb.programmed(), &desired);
                let again = self
                    .lb_ns
                    .run(|| lb.apply(&desired))
                    .expect("enter")
                    .expect("apply balancer");
                assert!(again.applied.is_empty(), "second apply changed {:?}", again);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("backend nodes never resolved by the load balancer's node");
    }

    /// One new TCP connection to `vip`: (node that answered, client address it saw).
    fn ask(&self, vip: &str) -> (String, IpAddr) {
        ask(&self.client, vip)
    }
}

/// One new TCP connection from `client` to `vip`: (node that answered, client address it saw).
fn ask(client: &Netns, vip: &str) -> (String, IpAddr) {
    let target = SocketAddr::new(addr(vip), PORT);
    let stream = client
        .run(|| TcpStream::connect_timeout(&target, Duration::from_secs(3)))
        .expect("enter client")
        .expect("connect to the VIP");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    writeln!(writer, "hello").expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("answer");
    let mut parts = line.split_whitespace();
    let name = parts.next().expect("node name").to_string();
    let seen = parts
        .next()
        .expect("peer address")
        .parse()
        .expect("address");
    (name, seen)
}

#[test]
fn vip_traffic_is_tunnelled_to_every_backend_node_and_moves_off_a_node_that_loses_its_endpoint() {
    let mut lab = Lab::new();
    lab.program(&[2, 3]);
    assert_eq!(
        lab.lb.programmed().services,
        [
            (
                service_on(VIP),
                [(IpAddr::V4(node_ip(2)), 1), (IpAddr::V4(node_ip(3)), 1)].into()
            ),
            (
                service_on(VIP6),
                [(IpAddr::V6(node_ip6(2)), 1), (IpAddr::V6(node_ip6(3)), 1)].into()
            ),
        ]
        .into(),
        "each node weighs its one pod once, although both slices list it"
    );
    for (vip, client) in [(VIP, CLIENT), (VIP6, CLIENT6)] {
        let mut answered = std::collections::BTreeSet::new();
        for _ in 0..24 {
            let (node, seen) = lab.ask(vip);
            assert_eq!(seen, addr(client), "{node} saw another client address");
            answered.insert(node);
        }
        assert_eq!(
            answered,
            ["n2".to_string(), "n3".to_string()].into(),
            "new connections to {vip} (new source ports) reach both backend nodes"
        );
        let counters = lab
            .lb
            .counters(service_on(vip))
            .expect("counters")
            .expect("service programmed");
        assert!(
            counters.packets > 0,
            "the load balancer forwarded nothing to {vip}"
        );
    }

    // n3's endpoint goes away: n1 drops it from the service, n3 stops decapsulating the VIPs.
    lab.program(&[2]);
    assert!(lab.backends[1].programmed().decap.is_empty());
    for (vip, client) in [(VIP, CLIENT), (VIP6, CLIENT6)] {
        for _ in 0..16 {
            let (node, seen) = lab.ask(vip);
            assert_eq!(
                node, "n2",
                "a new connection to {vip} reached the node without endpoints"
            );
            assert_eq!(seen, addr(client));
        }
    }

    // No endpoint left anywhere: the services are removed (their packets pass to n1's stack).
    lab.program(&[]);
    assert!(lab.lb.programmed().services.is_empty());
}

#[test]
fn the_neighbour_table_gives_a_resolved_peers_mac_and_never_an_unresolved_one() {
    assert!(cairn_e2e::netns::is_root(), "namespace tests need root");
    let here = Netns::new("dpnb").expect("ns");
    let peer = Netns::new("dpnb").expect("peer");
    here.veth("eth0", &peer, "eth0").expect("veth");
    here.addr("eth0", "198.51.100.1/24").expect("addr");
    peer.addr("eth0", "198.51.100.2/24").expect("addr");
    let peer_mac = peer.mac("eth0").expect("mac");
    let here_mac = here.mac("eth0").expect("mac");
    let peer_ip = addr("198.51.100.2");
    let absent = addr("198.51.100.3");
    let (ifindex, mac) = here
        .run(|| {
            (
                neighbour::ifindex("eth0").expect("ifindex"),
                neighbour::interface_mac("eth0").expect("mac"),
            )
        })
        .expect("enter");
    assert_eq!(mac, here_mac);
    let lookup = |ip: IpAddr| {
        here.run(|| neighbour::dump().expect("dump"))
            .expect("enter")
            .into_iter()
            .find(|n| n.addr == ip && n.ifindex == ifindex)
    };
    assert_eq!(
        lookup(peer_ip),
        None,
        "a fresh namespace knows no neighbour"
    );
    for ip in [peer_ip, absent] {
        here.run(|| neighbour::solicit(ip))
            .expect("enter")
            .expect("solicit");
    }
    let resolved = (0..100).find_map(|_| {
        let mac = lookup(peer_ip).and_then(|n| n.usable_mac());
        if mac.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        mac
    });
    assert_eq!(resolved, Some(peer_mac));
    assert_eq!(
        lookup(absent).and_then(|n| n.usable_mac()),
        None,
        "an address nobody answers for has no MAC"
    );
    here.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2"])
        .expect("route via a gateway");
    let routes = here
        .run(|| {
            [peer_ip, addr("203.0.113.5"), addr("192.0.2.5")].map(|ip| neighbour::route(ip).ok())
        })
        .expect("enter");
    assert_eq!(
        routes,
        [
            Some(neighbour::Route {
                oif: Some(ifindex),
                gateway: None
            }),
            Some(neighbour::Route {
                oif: Some(ifindex),
                gateway: Some(peer_ip)
            }),
            None,
        ],
        "on-link, via a gateway, unreachable"
    );
}

/// n1 (`here`, balancer attached to eth0) and n2 (`peer`) on one veth pair. Drop order: the
/// programmer and sink first, then the namespaces.
fn pair(tag: &str) -> (XdpProgrammer, Sink, Netns, Netns) {
    assert!(cairn_e2e::netns::is_root(), "namespace tests need root");
    let here = Netns::new(tag).expect("ns");
    let peer = Netns::new(tag).expect("peer");
    here.veth("eth0", &peer, "eth0").expect("veth");
    here.addr("eth0", "198.51.100.1/24").expect("addr");
    peer.addr("eth0", "198.51.100.2/24").expect("addr");
    let (sink, _) = peer
        .run(|| Sink::attach(SinkKind::Pass, "eth0"))
        .expect("enter")
        .expect("sink");
    let mut lb = programmer();
    here.run(|| lb.attach_balancer("eth0"))
        .expect("enter")
        .expect("attach");
    (lb, sink, here, peer)
}

/// Attaches `programmer`'s balancer to `ns`'s eth0 and its tunnel end to the same interface.
fn attach_both(ns: &Netns, programmer: &mut XdpProgrammer) {
    let balancer = ns
        .run(|| programmer.attach_balancer("eth0"))
        .expect("enter")
        .expect("attach balancer");
    let decap = ns
        .run(|| programmer.attach_decap("eth0"))
        .expect("enter")
        .expect("the balancer's interface takes the tunnel end without a second program");
    assert_eq!(decap, balancer, "nothing else was attached");
}

/// Applies `desired` until no backend node is pending resolution.
fn apply_resolved(ns: &Netns, programmer: &mut XdpProgrammer, desired: &XdpPlan) {
    for _ in 0..100 {
        let report = ns
            .run(|| programmer.apply(desired))
            .expect("enter")
            .expect("apply");
        if report.pending.is_empty() {
            assert_eq!(programmer.programmed(), desired);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("backend nodes never resolved");
}

#[test]
fn one_node_balances_and_decapsulates_on_its_single_interface() {
    // n1 and n2 each have one interface carrying one XDP program, the balancer, and each has
    // an endpoint: each tunnels VIP traffic to the other (never to itself) and strips the
    // other's tunnels. The client reaches the VIP through n1, then through n2.
    assert!(cairn_e2e::netns::is_root(), "namespace tests need root");
    let switch = Netns::new("dpbo").expect("switch");
    switch.add_bridge("br0").expect("bridge");
    let plug = |ns: &Netns, port: &str, ip: String, ip6: String, mtu: &str| {
        switch.veth(port, ns, "eth0").expect("veth");
        switch
            .ip(&["link", "set", port, "master", "br0", "mtu", "1600"])
            .expect("port");
        ns.ip(&["link", "set", "eth0", "mtu", mtu]).expect("mtu");
        ns.addr("eth0", &format!("{ip}/24")).expect("addr");
        ns.addr("eth0", &format!("{ip6}/64")).expect("addr6");
    };
    let client = Netns::new("dpbo").expect("client");
    plug(
        &client,
        "s-client",
        CLIENT.to_string(),
        CLIENT6.to_string(),
        "1500",
    );
    client
        .disable_tx_checksum_offload("eth0")
        .expect("checksum offload off");
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = Stop(stop.clone());
    let mut sinks = Vec::new();
    let mut nodes = Vec::new();
    for (n, name) in [(1u8, "n1"), (2, "n2")] {
        let ns = Netns::new("dpbo").expect("node");
        plug(
            &ns,
            &format!("s-n{n}"),
            node_ip(n).to_string(),
            node_ip6(n).to_string(),
            "1600",
        );
        for vip in [VIP, VIP6] {
            ns.ip(&["route", "add", "local", vip, "dev", "lo"])
                .expect("VIP local");
        }
        sysctl(&ns, "net.ipv4.conf.all.arp_ignore=1");
        // Not forwarding: a VIP packet this node does not tunnel can only reach its own stack.
        sysctl(&ns, "net.ipv4.ip_forward=0");
        sysctl(&ns, "net.ipv6.conf.all.forwarding=0");
        // XDP_TX on the node's eth0 needs an XDP program on its veth peer.
        let (sink, _) = switch
            .run(|| Sink::attach(SinkKind::Pass, &format!("s-n{n}")))
            .expect("enter switch")
            .expect("sink");
        sinks.push(sink);
        let mut programmer = programmer_for(n);
        attach_both(&ns, &mut programmer);
        start_echo(&ns, name, stop.clone());
        nodes.push((n, programmer, ns));
    }
    for (n, programmer, ns) in &mut nodes {
        let desired = plan_for(*n, &[1, 2]);
        let other = 3 - *n;
        assert_eq!(
            desired.services[&service_on(VIP)],
            [(IpAddr::V4(node_ip(other)), 1)].into(),
            "n{n} balances to the other node only"
        );
        assert_eq!(desired.decap, [addr(VIP), addr(VIP6)].into());
        apply_resolved(ns, programmer, &desired);
    }
    for (via, answers) in [(1u8, "n2"), (2, "n1")] {
        for (prefix, gateway) in [
            (format!("{VIP}/32"), node_ip(via).to_string()),
            (format!("{VIP6}/128"), node_ip6(via).to_string()),
        ] {
            client
                .ip(&["route", "replace", &prefix, "via", &gateway])
                .expect("route to the VIP");
        }
        for (vip, client_addr) in [(VIP, CLIENT), (VIP6, CLIENT6)] {
            for _ in 0..4 {
                let (node, seen) = ask(&client, vip);
                assert_eq!(
                    (node.as_str(), seen),
                    (answers, addr(client_addr)),
                    "client → n{via} → {answers} for {vip}"
                );
            }
        }
    }
    for (n, programmer, _) in &mut nodes {
        let stripped = programmer
            .balancer_decap_counters()
            .expect("decap counters");
        assert!(
            stripped.decapsulated > 0,
            "n{n}'s balancer stripped no tunnel: {stripped:?}"
        );
        for vip in [VIP, VIP6] {
            let counters = programmer
                .counters(service_on(vip))
                .expect("counters")
                .expect("programmed");
            assert!(counters.packets > 0, "n{n} tunnelled nothing for {vip}");
        }
    }
}

#[test]
fn a_second_balancer_or_a_balancer_after_the_decap_program_is_refused_on_an_interface() {
    let (mut lb, _sink, here, _peer) = pair("dpsh");
    let again = here.run(|| lb.attach_balancer("eth0")).expect("enter");
    assert!(matches!(again, Err(XdpError::AlreadyAttached(_))));
    let there = Netns::new("dpsh").expect("ns");
    let other = Netns::new("dpsh").expect("peer");
    there.veth("eth0", &other, "eth0").expect("veth");
    let mut backend = programmer_for(2);
    there
        .run(|| backend.attach_decap("eth0"))
        .expect("enter")
        .expect("the decap program alone on eth0");
    let refused = there
        .run(|| backend.attach_balancer("eth0"))
        .expect("enter");
    assert!(
        matches!(&refused, Err(XdpError::DecapHoldsInterface(i)) if i == "eth0"),
        "{refused:?}"
    );
}

#[test]
fn a_backend_node_without_a_route_through_the_uplink_is_left_out_and_reported() {
    let (mut lb, _sink, here, _peer) = pair("dpur");
    let on_link = IpAddr::V4(node_ip(2));
    let unrouted = addr("192.0.2.99");
    let desired = XdpPlan {
        services: [(service(), [(on_link, 1), (unrouted, 1)].into())].into(),
        decap: Default::default(),
    };
    let report = (0..100)
        .map(|_| {
            let report = here
                .run(|| lb.apply(&desired))
                .expect("enter")
                .expect("apply");
            if !report.pending.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
            report
        })
        .find(|r| r.pending.is_empty())
        .expect("the on-link backend resolves");
    assert_eq!(report.unreachable, [unrouted].into());
    assert_eq!(
        lb.programmed().services[&service()],
        [(on_link, 1)].into(),
        "only the reachable backend is programmed"
    );
    lb.shutdown().expect("shutdown");
}

#[test]
fn a_restarted_programmer_recovers_the_pinned_decap_vips_and_removes_stale_ones() {
    assert!(cairn_e2e::netns::is_root(), "BPF tests need root");
    let dir = |what: &str| {
        std::path::PathBuf::from(format!(
            "/sys/fs/bpf/cairn-speaker-test-{what}-{}",
            std::process::id()
        ))
    };
    let config = XdpConfig {
        balancer: DataplaneConfig {
            pin_dir: Some(dir("lb")),
            local_v4: Some(node_ip(2)),
            ..DataplaneConfig::default()
        },
        decap_pin_dir: Some(dir("decap")),
    };
    let decap_only = |vips: &[&str]| XdpPlan {
        services: Default::default(),
        decap: vips.iter().map(|v| addr(v)).collect(),
    };
    {
        let mut first = XdpProgrammer::load(config.clone()).expect("load");
        first.apply(&decap_only(&[VIP, VIP6])).expect("apply");
    } // a restart: dropped without shutdown, pins stay
    let mut second = XdpProgrammer::load(config).expect("reload");
    assert_eq!(second.programmed(), &decap_only(&[VIP, VIP6]));
    let report = second.apply(&decap_only(&[VIP])).expect("apply");
    assert_eq!(
        report.applied.decap_remove,
        vec![addr(VIP6)],
        "the VIP the previous process added and the new plan lacks is removed"
    );
    assert!(report.applied.decap_add.is_empty());
    second.shutdown().expect("shutdown");
    assert!(!dir("lb").exists() && !dir("decap").exists());
}
