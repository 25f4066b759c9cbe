//! End to end through real kernels in network namespaces: a client, two load-balancer nodes
//! (`xdp_lb` on their uplink) and three backend nodes (`xdp_decap` on their uplink, the VIPs on
//! loopback, TCP and UDP servers that answer with their name and the peer address they see),
//! all on one bridged, dual-stack segment. The client routes the IPv4 and IPv6 VIPs via a load
//! balancer, which tunnels IPv4 IP-in-IP to the backends' IPv4 addresses and IPv6 in IPv6 to
//! their IPv6 addresses; backends reply to the client directly from the VIP (direct server
//! return). Needs root.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_e2e::netns::Netns;
use cairn_xdp::{
    Dataplane, DataplaneConfig, Decap, FlowTuple, NextHop, Protocol, Service, Sink, SinkKind,
    WeightedBackend,
};

const CLIENT: &str = "198.51.100.100";
const VIP: &str = "203.0.113.10";
const SEED: u32 = 77;
const CLIENT6: &str = "2001:db8:100::100";
const VIP6: &str = "2001:db8:10::10";

fn addr(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn backend_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11 + i as u8))
}

fn lb_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + i as u8))
}

fn backend_ip6(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100,
        0,
        0,
        0,
        0,
        0x11 + i as u16,
    ))
}

fn lb_ip6(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100,
        0,
        0,
        0,
        0,
        1 + i as u16,
    ))
}

fn tcp_service6() -> Service {
    Service {
        vip: addr(VIP6),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

fn udp_service6() -> Service {
    Service {
        vip: addr(VIP6),
        port: 53,
        protocol: Protocol::Udp,
    }
}

fn weighted6(backends: &[usize]) -> Vec<WeightedBackend> {
    backends
        .iter()
        .map(|&i| WeightedBackend {
            addr: backend_ip6(i),
            weight: 1,
        })
        .collect()
}

fn tcp_service() -> Service {
    Service {
        vip: addr(VIP),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

fn udp_service() -> Service {
    Service {
        vip: addr(VIP),
        port: 53,
        protocol: Protocol::Udp,
    }
}

fn weighted(backends: &[usize]) -> Vec<WeightedBackend> {
    backends
        .iter()
        .map(|&i| WeightedBackend {
            addr: backend_ip(i),
            weight: 1,
        })
        .collect()
}

/// Stops server threads when dropped.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Lab {
    // Field order is drop order: programs and servers go before their namespaces.
    _stop: Stop,
    lbs: Vec<Dataplane>,
    _decaps: Vec<Decap>,
    _sinks: Vec<Sink>,
    client: Netns,
    _lb_ns: Vec<Netns>,
    _backend_ns: Vec<Netns>,
    _switch: Netns,
}

fn sysctl(ns: &Netns, kv: &str) {
    ns.exec(&["sysctl", "-qw", kv]).expect("sysctl");
}

/// Starts the UDP and TCP servers of backend `name` on both VIPs, with sockets opened inside
/// `ns`.
fn start_servers(ns: &Netns, name: String, stop: Arc<AtomicBool>) {
    for vip in [VIP, VIP6] {
        start_servers_on(ns, addr(vip), name.clone(), stop.clone());
    }
}

fn start_servers_on(ns: &Netns, vip: IpAddr, name: String, stop: Arc<AtomicBool>) {
    let (udp, tcp) = ns
        .run(|| {
            let udp = UdpSocket::bind((vip, 53)).expect("udp bind");
            let tcp = TcpListener::bind((vip, 80)).expect("tcp bind");
            (udp, tcp)
        })
        .expect("enter backend");
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    tcp.set_nonblocking(true).expect("nonblocking");
    let udp_name = name.clone();
    let udp_stop = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !udp_stop.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(format!("{udp_name} {peer}").as_bytes(), peer);
            }
        }
    });
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((stream, peer)) => {
                    let name = name.clone();
                    std::thread::spawn(move || serve_tcp(stream, peer, name));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
}

/// Answers every line with "<name> <peer>" until the client closes.
fn serve_tcp(stream: TcpStream, peer: SocketAddr, name: String) {
    let _ = stream.set_nonblocking(false);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        if line.is_err() || writeln!(writer, "{name} {peer}").is_err() {
            return;
        }
    }
}

impl Lab {
    /// Client, `lbs` load balancers and three backends on one bridge; every LB serves the TCP
    /// and UDP services with `backends`, the client routes the VIP via LB 0.
    fn new(lbs: usize, backends: &[usize]) -> Lab {
        assert!(cairn_e2e::netns::is_root(), "namespace tests need root");
        let switch = Netns::new("xdpsw").expect("switch");
        switch.add_bridge("br0").expect("bridge");
        let mut sinks = Vec::new();
        let plug = |ns: &Netns, port: &str, ip: &str, ip6: &str, mtu: &str| {
            switch.veth(port, ns, "eth0").expect("veth");
            switch
                .ip(&["link", "set", port, "master", "br0", "mtu", "1600"])
                .expect("port");
            ns.ip(&["link", "set", "eth0", "mtu", mtu]).expect("mtu");
            ns.addr("eth0", &format!("{ip}/24")).expect("addr");
            ns.addr("eth0", &format!("{ip6}/64")).expect("addr6");
        };
        let client = Netns::new("xdpcl").expect("client");
        plug(&client, "s-client", CLIENT, CLIENT6, "1500");
        // A frame that meets XDP on its way loses a veth's checksum-offload promise.
        client
            .disable_tx_checksum_offload("eth0")
            .expect("checksum offload off");
        let stop = Arc::new(AtomicBool::new(false));
        let mut backend_ns = Vec::new();
        let mut decaps = Vec::new();
        for i in 0..3 {
            let ns = Netns::new("xdpbe").expect("backend");
            plug(
                &ns,
                &format!("s-b{i}"),
                &backend_ip(i).to_string(),
                &backend_ip6(i).to_string(),
                "1600",
            );
            ns.addr("lo", &format!("{VIP}/32")).expect("vip on lo");
            ns.addr("lo", &format!("{VIP6}/128")).expect("vip6 on lo");
            sysctl(&ns, "net.ipv4.conf.all.arp_ignore=1");
            sysctl(&ns, "net.ipv4.conf.all.arp_announce=2");
            let mut decap = Decap::load().expect("decap");
            decap.add_vip(addr(VIP)).expect("decap vip");
            decap.add_vip(addr(VIP6)).expect("decap vip6");
            ns.run(|| decap.attach("eth0"))
                .expect("enter")
                .expect("attach decap");
            start_servers(&ns, format!("b{i}"), stop.clone());
            decaps.push(decap);
            backend_ns.push(ns);
        }
        let mut lb_ns = Vec::new();
        let mut dataplanes = Vec::new();
        for i in 0..lbs {
            let ns = Netns::new("xdplb").expect("lb");
            let port = format!("s-lb{i}");
            plug(
                &ns,
                &port,
                &lb_ip(i).to_string(),
                &lb_ip6(i).to_string(),
                "1600",
            );
            // XDP_TX on the LB's eth0 needs an XDP program on its peer.
            let (sink, _) = switch
                .run(|| Sink::attach(SinkKind::Pass, &port))
                .expect("enter switch")
                .expect("sink");
            sinks.push(sink);
            let (IpAddr::V4(local), IpAddr::V6(local6)) = (lb_ip(i), lb_ip6(i)) else {
                unreachable!("lab addresses are IPv4 and IPv6")
            };
            let mut dp = Dataplane::load(DataplaneConfig {
                hash_seed: SEED,
                local_v4: Some(local),
                local_v6: Some(local6),
                mtu: 1600,
                ..DataplaneConfig::default()
            })
            .expect("load lb");
            let lb_mac = ns.mac("eth0").expect("mac");
            for (b, bns) in backend_ns.iter().enumerate() {
                let hop = NextHop {
                    dst_mac: bns.mac("eth0").expect("mac"),
                    src_mac: lb_mac,
                };
                dp.set_next_hop(backend_ip(b), hop).expect("next hop");
                dp.set_next_hop(backend_ip6(b), hop).expect("next hop 6");
            }
            dp.set_vip(tcp_service(), &weighted(backends))
                .expect("tcp vip");
            dp.set_vip(udp_service(), &weighted(backends))
                .expect("udp vip");
            dp.set_vip(tcp_service6(), &weighted6(backends))
                .expect("tcp vip6");
            dp.set_vip(udp_service6(), &weighted6(backends))
                .expect("udp vip6");
            ns.run(|| dp.attach("eth0"))
                .expect("enter")
                .expect("attach lb");
            dataplanes.push(dp);
            lb_ns.push(ns);
        }
        let lab = Lab {
            _stop: Stop(stop),
            lbs: dataplanes,
            _decaps: decaps,
            _sinks: sinks,
            client,
            _lb_ns: lb_ns,
            _backend_ns: backend_ns,
            _switch: switch,
        };
        lab.route_via(0);
        lab
    }

    /// Routes both VIPs via load balancer `lb`.
    fn route_via(&self, lb: usize) {
        for (vip, via) in [
            (format!("{VIP}/32"), lb_ip(lb)),
            (format!("{VIP6}/128"), lb_ip6(lb)),
        ] {
            self.client
                .ip(&["route", "replace", &vip, "via", &via.to_string()])
                .expect("route");
        }
    }

    /// A UDP socket of the client bound to `port` on its IPv4 address.
    fn udp_socket(&self, port: u16) -> UdpSocket {
        self.udp_socket_on(addr(CLIENT), port)
    }

    /// A UDP socket of the client bound to (`local`, `port`).
    fn udp_socket_on(&self, local: IpAddr, port: u16) -> UdpSocket {
        let socket = self
            .client
            .run(|| UdpSocket::bind((local, port)))
            .expect("enter client")
            .expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        socket
    }

    /// Sends one datagram from `socket` to the UDP VIP of its family and returns (backend
    /// name, peer it saw).
    fn ask_udp(&self, socket: &UdpSocket) -> (String, String) {
        let mut buf = [0u8; 256];
        let vip = match socket.local_addr().expect("local addr") {
            SocketAddr::V4(_) => addr(VIP),
            SocketAddr::V6(_) => addr(VIP6),
        };
        for _ in 0..6 {
            socket.send_to(b"who", (vip, 53)).expect("send");
            if let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (name, peer) = text.split_once(' ').expect("reply format");
                return (name.to_owned(), peer.to_owned());
            }
        }
        panic!("no UDP answer through the load balancer");
    }

    fn connect(&self) -> (BufReader<TcpStream>, TcpStream) {
        self.connect_to(addr(VIP))
    }

    fn connect_to(&self, vip: IpAddr) -> (BufReader<TcpStream>, TcpStream) {
        let stream = self
            .client
            .run(|| TcpStream::connect_timeout(&SocketAddr::new(vip, 80), Duration::from_secs(5)))
            .expect("enter client")
            .expect("connect through the load balancer");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        (BufReader::new(stream), writer)
    }
}

fn ask_tcp(conn: &mut (BufReader<TcpStream>, TcpStream)) -> (String, String) {
    writeln!(conn.1, "who").expect("write");
    let mut line = String::new();
    conn.0.read_line(&mut line).expect("read answer");
    let (name, peer) = line.trim().split_once(' ').expect("reply format");
    (name.to_owned(), peer.to_owned())
}

#[test]
fn every_backend_gets_traffic_sees_the_client_address_and_a_second_lb_picks_the_same_backend() {
    let mut lab = Lab::new(2, &[0, 1, 2]);
    let ports: Vec<u16> = (41000..41045).collect();
    let sockets: Vec<UdpSocket> = ports.iter().map(|&p| lab.udp_socket(p)).collect();
    let mut via_first = Vec::new();
    for (socket, port) in sockets.iter().zip(&ports) {
        let (name, peer) = lab.ask_udp(socket);
        assert_eq!(
            peer,
            format!("{CLIENT}:{port}"),
            "backend saw another source"
        );
        via_first.push(name);
    }
    for b in ["b0", "b1", "b2"] {
        assert!(
            via_first.iter().any(|n| n == b),
            "{b} got no traffic: {via_first:?}"
        );
    }
    // TCP too, with the client's address preserved.
    let mut conn = lab.connect();
    let local = conn.1.local_addr().expect("local addr");
    let (_, peer) = ask_tcp(&mut conn);
    assert_eq!(peer, local.to_string());

    lab.route_via(1);
    for ((socket, port), first) in sockets.iter().zip(&ports).zip(&via_first) {
        let (name, _) = lab.ask_udp(socket);
        assert_eq!(
            &name, first,
            "port {port}: the second LB chose another backend"
        );
    }
    let second = lab.lbs[1]
        .counters(udp_service())
        .expect("counters")
        .expect("service");
    assert!(
        second.packets >= ports.len() as u64,
        "LB 1 forwarded {}",
        second.packets
    );
}

#[test]
fn ipv6_reaches_every_backend_in_ipv6_with_the_client_address_and_a_second_lb_agrees() {
    let mut lab = Lab::new(2, &[0, 1, 2]);
    let ports: Vec<u16> = (43000..43045).collect();
    let sockets: Vec<UdpSocket> = ports
        .iter()
        .map(|&p| lab.udp_socket_on(addr(CLIENT6), p))
        .collect();
    let mut via_first = Vec::new();
    for (socket, port) in sockets.iter().zip(&ports) {
        let (name, peer) = lab.ask_udp(socket);
        assert_eq!(
            peer,
            format!("[{CLIENT6}]:{port}"),
            "backend saw another source"
        );
        via_first.push(name);
    }
    for b in ["b0", "b1", "b2"] {
        assert!(
            via_first.iter().any(|n| n == b),
            "{b} got no traffic: {via_first:?}"
        );
    }
    let mut conn = lab.connect_to(addr(VIP6));
    let local = conn.1.local_addr().expect("local addr");
    assert_eq!(local.ip(), addr(CLIENT6));
    let (_, peer) = ask_tcp(&mut conn);
    assert_eq!(peer, local.to_string());
    // Every packet went to the IPv6 services (IPv6 in IPv6), none to the IPv4 ones.
    let first = lab.lbs[0]
        .counters(udp_service6())
        .expect("counters")
        .expect("service");
    assert!(first.packets >= ports.len() as u64);
    let tcp6 = lab.lbs[0]
        .counters(tcp_service6())
        .expect("counters")
        .expect("service");
    assert!(tcp6.packets >= 3, "SYN, ACK and data went through the LB");
    assert_eq!(
        lab.lbs[0]
            .counters(udp_service())
            .expect("counters")
            .expect("service")
            .packets,
        0
    );

    lab.route_via(1);
    for ((socket, port), first) in sockets.iter().zip(&ports).zip(&via_first) {
        let (name, _) = lab.ask_udp(socket);
        assert_eq!(
            &name, first,
            "port {port}: the second LB chose another backend"
        );
    }
    let second = lab.lbs[1]
        .counters(udp_service6())
        .expect("counters")
        .expect("service");
    assert!(
        second.packets >= ports.len() as u64,
        "LB 1 forwarded {}",
        second.packets
    );
}

#[test]
fn a_long_lived_tcp_connection_survives_adding_a_backend() {
    let mut lab = Lab::new(1, &[0, 1]);
    // Open connections until one of them would be moved to b2 by the new table.
    let mut grown = Dataplane::load(DataplaneConfig {
        hash_seed: SEED,
        ..DataplaneConfig::default()
    })
    .expect("probe dataplane");
    grown
        .set_vip(tcp_service(), &weighted(&[0, 1, 2]))
        .expect("probe table");
    let mut moved = None;
    let mut others = Vec::new();
    for _ in 0..60 {
        let mut conn = lab.connect();
        let local = conn.1.local_addr().expect("local");
        let (name, _) = ask_tcp(&mut conn);
        let flow = FlowTuple {
            src: local.ip(),
            dst: addr(VIP),
            sport: local.port(),
            dport: 80,
            protocol: Protocol::Tcp,
        };
        if grown.maglev_backend(tcp_service(), &flow) == Some(backend_ip(2)) {
            moved = Some((conn, name));
            break;
        }
        others.push((conn, name));
    }
    let (mut conn, name) = moved.expect("no connection would be remapped to the new backend");
    lab.lbs[0]
        .set_vip(tcp_service(), &weighted(&[0, 1, 2]))
        .expect("add b2");
    for _ in 0..3 {
        assert_eq!(ask_tcp(&mut conn).0, name, "the connection changed backend");
    }
    for (conn, name) in others.iter_mut() {
        assert_eq!(&ask_tcp(conn).0, name);
    }
    // New connections do reach the new backend.
    let reached_new = (0..60).any(|_| ask_tcp(&mut lab.connect()).0 == "b2");
    assert!(reached_new, "no new connection reached b2");
}

#[test]
fn removing_a_backend_moves_only_that_backends_flows() {
    let mut lab = Lab::new(1, &[0, 1, 2]);
    let ports: Vec<u16> = (42000..42045).collect();
    let sockets: Vec<UdpSocket> = ports.iter().map(|&p| lab.udp_socket(p)).collect();
    let before: Vec<String> = sockets.iter().map(|s| lab.ask_udp(s).0).collect();
    assert!(
        before.iter().any(|n| n == "b2"),
        "b2 had no flow: {before:?}"
    );
    lab.lbs[0]
        .set_vip(udp_service(), &weighted(&[0, 1]))
        .expect("remove b2");
    for ((socket, port), old) in sockets.iter().zip(&ports).zip(&before) {
        let (new, _) = lab.ask_udp(socket);
        if old == "b2" {
            assert_ne!(new, "b2", "port {port} still reaches the removed backend");
        } else {
            assert_eq!(&new, old, "port {port} moved although its backend stayed");
        }
    }
}

/// A bpffs directory for a test's pins, removed (with whatever is left in it) on drop, so a
/// failing test does not leak pinned maps or links.
struct PinDir(std::path::PathBuf);

impl PinDir {
    fn new(tag: &str) -> Self {
        Self(std::path::PathBuf::from(format!(
            "/sys/fs/bpf/cairn-xdp-e2e-{tag}-{}",
            std::process::id()
        )))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    let out = ns.ip(&["link", "show", "dev", dev]).expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn a_pinned_attachment_outlives_the_process_handle_is_reused_and_shutdown_detaches() {
    assert!(cairn_e2e::netns::is_root(), "namespace tests need root");
    let ns = Netns::new("xdppin").expect("ns");
    let peer = Netns::new("xdppin").expect("peer");
    ns.veth("eth0", &peer, "eth0").expect("veth");
    let pins = PinDir::new("pin");
    let dir = pins.0.clone();
    let config = DataplaneConfig {
        pin_dir: Some(dir.clone()),
        local_v4: Some(Ipv4Addr::new(198, 51, 100, 1)),
        ..DataplaneConfig::default()
    };
    let mut first = Dataplane::load(config.clone()).expect("load");
    let mode = ns
        .run(|| first.attach("eth0"))
        .expect("enter")
        .expect("attach");
    assert_eq!(
        mode,
        cairn_xdp::AttachMode::Native,
        "veth supports native XDP"
    );
    drop(first);
    assert!(
        xdp_attached(&ns, "eth0"),
        "the pinned link keeps the program attached"
    );
    let mut second = Dataplane::load(config).expect("reload");
    let mode = ns
        .run(|| second.attach("eth0"))
        .expect("enter")
        .expect("attach");
    assert_eq!(mode, cairn_xdp::AttachMode::Reused);
    assert!(xdp_attached(&ns, "eth0"));
    second.shutdown().expect("shutdown");
    assert!(!xdp_attached(&ns, "eth0"), "shutdown detaches");
    assert!(!dir.exists(), "shutdown removes the pins");
}

/// Sends `inner` (an IPv4 packet) from the calling thread's namespace to `to`, inside an
/// IP-in-IP header the kernel adds (a raw socket of protocol 4; no ipip module needed).
fn send_ipip(to: Ipv4Addr, inner: &[u8]) -> std::io::Result<()> {
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: socket(2)/sendto(2)/close(2) with a valid buffer and sockaddr that outlive the
    // calls; the fd is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_IPIP);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sent = libc::sendto(
            fd,
            inner.as_ptr().cast(),
            inner.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(err);
        }
    }
    Ok(())
}

#[test]
fn a_pinned_decap_keeps_decapsulating_after_the_process_handle_is_dropped_and_is_reused() {
    assert!(cairn_e2e::netns::is_root(), "namespace tests need root");
    let backend = Netns::new("xdpdpin").expect("backend");
    let lb = Netns::new("xdpdpin").expect("lb");
    backend.veth("eth0", &lb, "eth0").expect("veth");
    backend.addr("eth0", "198.51.100.21/24").expect("addr");
    lb.addr("eth0", "198.51.100.20/24").expect("addr");
    backend.addr("lo", &format!("{VIP}/32")).expect("vip on lo");
    let server = backend
        .run(|| UdpSocket::bind((addr(VIP), 53)))
        .expect("enter backend")
        .expect("bind");
    server
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    // The client's datagram as the load balancer would tunnel it (UDP checksum 0: none).
    let mut inner = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    inner.extend_from_slice(&CLIENT.parse::<Ipv4Addr>().expect("v4").octets());
    inner.extend_from_slice(&VIP.parse::<Ipv4Addr>().expect("v4").octets());
    inner.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 13, 0, 0]);
    inner.extend_from_slice(b"hello");
    let total = inner.len() as u16;
    inner[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = header_checksum(&inner[..20]);
    inner[10..12].copy_from_slice(&sum.to_be_bytes());
    // Sends tunnelled datagrams until one reaches the server; returns the source it saw.
    let delivered = || -> Option<SocketAddr> {
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            lb.run(|| send_ipip(Ipv4Addr::new(198, 51, 100, 21), &inner))
                .expect("enter lb")
                .expect("send ipip");
            if let Ok((_, peer)) = server.recv_from(&mut buf) {
                return Some(peer);
            }
        }
        None
    };
    let pins = PinDir::new("decap-pin");
    let dir = pins.0.clone();
    let mut first = Decap::load_pinned(&dir).expect("load");
    first.add_vip(addr(VIP)).expect("vip");
    let mode = backend
        .run(|| first.attach("eth0"))
        .expect("enter")
        .expect("attach");
    assert_eq!(mode, cairn_xdp::AttachMode::Native);
    let client: SocketAddr = format!("{CLIENT}:40000").parse().expect("socket addr");
    assert_eq!(delivered(), Some(client), "decapsulated while loaded");
    drop(first);
    assert!(xdp_attached(&backend, "eth0"), "the pinned link stays");
    assert_eq!(
        delivered(),
        Some(client),
        "still decapsulating with no process holding the program"
    );
    // A restarted process reuses the pinned VIP list and link without re-adding anything.
    let mut second = Decap::load_pinned(&dir).expect("reload");
    let mode = backend
        .run(|| second.attach("eth0"))
        .expect("enter")
        .expect("attach");
    assert_eq!(mode, cairn_xdp::AttachMode::Reused);
    assert_eq!(delivered(), Some(client), "the new program decapsulates");
    assert!(
        second.counters().expect("counters").decapsulated >= 3,
        "the counters were pinned too"
    );
    second.shutdown().expect("shutdown");
    assert!(!xdp_attached(&backend, "eth0"), "shutdown detaches");
    assert!(!dir.exists(), "shutdown removes the pins");
    assert_eq!(delivered(), None, "nothing decapsulates after shutdown");
}

/// The IPv4 header checksum (RFC 791) of `header`.
fn header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
