//! Katran-style fixtures for `lb.bpf.c` and `decap.bpf.c`, run by the kernel with
//! BPF_PROG_TEST_RUN: {description, input frame, expected verdict, expected output frame},
//! including `xdp_lb` as a tunnel end (decap VIPs) checked against `xdp_decap` byte for byte.
//! Needs root (loading BPF programs).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cairn_xdp::{
    Dataplane, DataplaneConfig, Decap, DecapCounters, DropReason, FlowTuple, NextHop, Protocol,
    Service, WeightedBackend,
};
use common::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const SEED: u32 = 0x5eed;
const NH_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0xee];
const NH_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const B13_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x13];

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}
fn ip6(s: &str) -> Ipv6Addr {
    s.parse().expect("test address")
}

const LOCAL4: &str = "198.51.100.1";
const LOCAL6: &str = "2001:db8:1::1";
const CLIENT4: &str = "192.0.2.7";
const CLIENT6: &str = "2001:db8:c::7";

fn service(vip: &str, port: u16, protocol: Protocol) -> Service {
    Service {
        vip: vip.parse().expect("vip"),
        port,
        protocol,
    }
}

fn one(addr: &str) -> Vec<WeightedBackend> {
    vec![WeightedBackend {
        addr: addr.parse().expect("backend"),
        weight: 1,
    }]
}

fn hundred() -> Vec<WeightedBackend> {
    (0..100u32)
        .map(|i| WeightedBackend {
            addr: IpAddr::V4(Ipv4Addr::from(0xc633_6400 + 20 + i)),
            weight: 1,
        })
        .collect()
}

/// A dataplane with the services every fixture below refers to.
fn lab_dataplane() -> Dataplane {
    assert!(cairn_e2e::netns::is_root(), "BPF fixtures need root");
    let mut dp = Dataplane::load(DataplaneConfig {
        hash_seed: SEED,
        local_v4: Some(ip4(LOCAL4)),
        local_v6: Some(ip6(LOCAL6)),
        ..DataplaneConfig::default()
    })
    .expect("load lb");
    dp.set_default_next_hop(NextHop {
        dst_mac: NH_DST,
        src_mac: NH_SRC,
    })
    .expect("default next hop");
    dp.set_next_hop(
        "198.51.100.13".parse().expect("addr"),
        NextHop {
            dst_mac: B13_MAC,
            src_mac: NH_SRC,
        },
    )
    .expect("next hop");
    let services = [
        (
            service("203.0.113.10", 80, Protocol::Tcp),
            one("198.51.100.11"),
        ),
        (
            service("203.0.113.10", 53, Protocol::Udp),
            one("198.51.100.12"),
        ),
        (
            service("203.0.113.20", 0, Protocol::Tcp),
            one("198.51.100.13"),
        ),
        (service("203.0.113.30", 80, Protocol::Tcp), hundred()),
        (
            service("2001:db8:10::1", 80, Protocol::Tcp),
            one("2001:db8:1::11"),
        ),
        (
            service("2001:db8:10::2", 80, Protocol::Tcp),
            one("198.51.100.14"),
        ),
    ];
    for (svc, backends) in services {
        dp.set_vip(svc, &backends).expect("set_vip");
    }
    dp
}

fn encap4(backend: &str, inner_l3: &[u8], tos: u8, dst_mac: [u8; 6], vlan: Option<u16>) -> Vec<u8> {
    frame(
        eth(dst_mac, NH_SRC, ETH_IPV4, vlan),
        &outer_v4(
            ip4(LOCAL4),
            ip4(backend),
            tos,
            inner_l3,
            inner_l3[0] >> 4 == 6,
        ),
    )
}

fn tcp4(dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    V4::new(ip4(CLIENT4), ip4(dst), TCP).packet(&tcp(sport, dport, flags, b"hello"))
}

fn in_frame(l3: &[u8]) -> Vec<u8> {
    frame(eth(LB_MAC, CLIENT_MAC, ETH_IPV4, None), l3)
}

fn in_frame6(l3: &[u8]) -> Vec<u8> {
    frame(eth(LB_MAC, CLIENT_MAC, ETH_IPV6, None), l3)
}

struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    verdict: u32,
    /// `None`: the output must equal the input.
    output: Option<Vec<u8>>,
}

fn check(dp: &Dataplane, fixtures: Vec<Fixture>) {
    let mut failures = Vec::new();
    for f in fixtures {
        let got = dp.test_run(&f.input, 1).expect("test run");
        let want = f.output.unwrap_or_else(|| f.input.clone());
        if got.verdict != f.verdict || got.data != want {
            failures.push(format!(
                "{}: verdict {} (want {}), output {:02x?}\n want {:02x?}",
                f.description, got.verdict, f.verdict, got.data, want
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lb_fixtures_give_the_expected_verdict_and_bytes() {
    let mut dp = lab_dataplane();
    let syn = tcp4("203.0.113.10", 40000, 80, SYN);
    let mut options = V4::new(ip4(CLIENT4), ip4("203.0.113.10"), TCP);
    options.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    let with_options = options.packet(&tcp(40001, 80, SYN, b"opt"));
    let mut dscp = V4::new(ip4(CLIENT4), ip4("203.0.113.10"), TCP);
    dscp.tos = 0xb8;
    let dscp_pkt = dscp.packet(&tcp(40002, 80, ACK, b"ef"));
    let udp4 = V4::new(ip4(CLIENT4), ip4("203.0.113.10"), UDP).packet(&udp(5353, 53, b"query"));
    let any_port = tcp4("203.0.113.20", 40003, 4444, SYN);
    let v6_syn = v6_packet(
        ip6(CLIENT6),
        ip6("2001:db8:10::1"),
        TCP,
        &tcp(40004, 80, SYN, b"six"),
    );
    let v6_hash = FlowTuple {
        src: CLIENT6.parse().expect("addr"),
        dst: "2001:db8:10::1".parse().expect("addr"),
        sport: 40004,
        dport: 80,
        protocol: Protocol::Tcp,
    }
    .hash(SEED);
    let v6_over_v4 = v6_packet(
        ip6(CLIENT6),
        ip6("2001:db8:10::2"),
        TCP,
        &tcp(40005, 80, SYN, b"6in4"),
    );
    let vlan_syn = tcp4("203.0.113.10", 40006, 80, SYN);
    let non_vip = tcp4("198.51.100.99", 40007, 80, SYN);
    let ping = V4::new(ip4(CLIENT4), ip4("203.0.113.10"), 1).packet(&icmp(8, 0, 1, b"ping"));
    let other_port = tcp4("203.0.113.10", 40008, 443, SYN);
    let mut frag = V4::new(ip4(CLIENT4), ip4("203.0.113.10"), UDP);
    frag.frag = 0x2000; // more fragments, offset 0
    let first_fragment = frag.packet(&udp(5353, 53, b"part one"));
    frag.frag = 0x0003; // offset 24, last
    let later_fragment = frag.packet(b"part two");
    let v6_frag = v6_packet(
        ip6(CLIENT6),
        ip6("2001:db8:10::1"),
        44,
        &[6, 0, 0, 1, 0, 0, 0, 1],
    );
    let v6_hop = v6_packet(
        ip6(CLIENT6),
        ip6("2001:db8:10::1"),
        0,
        &[6, 0, 1, 4, 0, 0, 0, 0],
    );
    let mut other_frag = V4::new(ip4(CLIENT4), ip4("198.51.100.99"), UDP);
    other_frag.frag = 0x2000;
    let non_vip_fragment = other_frag.packet(&udp(5353, 53, b"not ours"));
    let non_vip_v6_frag = v6_packet(
        ip6(CLIENT6),
        ip6("2001:db8:99::1"),
        44,
        &[6, 0, 0, 1, 0, 0, 0, 1],
    );
    let mut non_vip_truncated = tcp4("198.51.100.99", 40017, 80, SYN);
    non_vip_truncated.truncate(30);
    non_vip_truncated[2..4].copy_from_slice(&30u16.to_be_bytes());
    let mut truncated_tcp = tcp4("203.0.113.10", 40009, 80, SYN);
    truncated_tcp.truncate(30); // IP header + 10 bytes of TCP
    truncated_tcp[2..4].copy_from_slice(&30u16.to_be_bytes());
    let mut long_total = tcp4("203.0.113.10", 40010, 80, SYN);
    long_total[2..4].copy_from_slice(&1000u16.to_be_bytes());
    let mut short_ihl = tcp4("203.0.113.10", 40011, 80, SYN);
    short_ihl[0] = 0x44;
    let big =
        V4::new(ip4(CLIENT4), ip4("203.0.113.10"), TCP).packet(&tcp(40012, 80, ACK, &[0u8; 1460]));
    let fits =
        V4::new(ip4(CLIENT4), ip4("203.0.113.10"), TCP).packet(&tcp(40013, 80, ACK, &[0u8; 1440]));
    // ICMP frag-needed from a router for a reply the backend sent (VIP:80 → client:40014).
    let reply = V4::new(ip4("203.0.113.30"), ip4(CLIENT4), TCP).packet(&tcp(80, 40014, ACK, b""));
    let frag_needed = V4::new(ip4("198.51.100.254"), ip4("203.0.113.30"), 1).packet(&icmp(
        3,
        4,
        1400,
        &reply[..28],
    ));
    let client_flow = FlowTuple {
        src: CLIENT4.parse().expect("addr"),
        dst: "203.0.113.30".parse().expect("addr"),
        sport: 40014,
        dport: 80,
        protocol: Protocol::Tcp,
    };
    let owner = dp
        .maglev_backend(service("203.0.113.30", 80, Protocol::Tcp), &client_flow)
        .expect("owner")
        .to_string();
    let reply6 = v6_packet(
        ip6("2001:db8:10::1"),
        ip6(CLIENT6),
        TCP,
        &tcp(80, 40015, ACK, b""),
    );
    let too_big6 = v6_packet(
        ip6("2001:db8:f::1"),
        ip6("2001:db8:10::1"),
        58,
        &icmp(2, 0, 1280, &reply6[..48]),
    );
    let too_big6_hash = FlowTuple {
        src: CLIENT6.parse().expect("addr"),
        dst: "2001:db8:10::1".parse().expect("addr"),
        sport: 40015,
        dport: 80,
        protocol: Protocol::Tcp,
    }
    .hash(SEED);
    let mut padded = in_frame(&tcp4("203.0.113.10", 40016, 80, SYN));
    let padded_inner = padded[14..].to_vec();
    padded.extend_from_slice(&[0u8; 6]); // Ethernet padding after the IP packet

    let fixtures = vec![
        Fixture {
            description: "TCP SYN to a VIP is encapsulated IP-in-IP to its backend",
            input: in_frame(&syn),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.11", &syn, 0, NH_DST, None)),
        },
        Fixture {
            description: "IPv4 options are carried through unchanged",
            input: in_frame(&with_options),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.11", &with_options, 0, NH_DST, None)),
        },
        Fixture {
            description: "DSCP is copied to the outer header",
            input: in_frame(&dscp_pkt),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.11", &dscp_pkt, 0xb8, NH_DST, None)),
        },
        Fixture {
            description: "UDP to a VIP",
            input: in_frame(&udp4),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.12", &udp4, 0, NH_DST, None)),
        },
        Fixture {
            description: "any-port service, with the backend's own next hop",
            input: in_frame(&any_port),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.13", &any_port, 0, B13_MAC, None)),
        },
        Fixture {
            description: "IPv6 in IPv6, flow label from the flow hash",
            input: in_frame6(&v6_syn),
            verdict: XDP_TX,
            output: Some(frame(
                eth(NH_DST, NH_SRC, ETH_IPV6, None),
                &outer_v6(ip6(LOCAL6), ip6("2001:db8:1::11"), v6_hash, &v6_syn, true),
            )),
        },
        Fixture {
            description: "IPv6 VIP with an IPv4 backend: 6in4",
            input: in_frame6(&v6_over_v4),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.14", &v6_over_v4, 0, NH_DST, None)),
        },
        Fixture {
            description: "802.1Q-tagged frame keeps its tag",
            input: frame(eth(LB_MAC, CLIENT_MAC, ETH_IPV4, Some(42)), &vlan_syn),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.11", &vlan_syn, 0, NH_DST, Some(42))),
        },
        Fixture {
            description:
                "Ethernet padding after the IP packet is carried, outer length excludes it",
            input: padded,
            verdict: XDP_TX,
            output: Some({
                let mut f = encap4("198.51.100.11", &padded_inner, 0, NH_DST, None);
                f.extend_from_slice(&[0u8; 6]);
                f
            }),
        },
        Fixture {
            description: "ICMP frag-needed goes to the backend owning the embedded flow",
            input: in_frame(&frag_needed),
            verdict: XDP_TX,
            output: Some(encap4(&owner, &frag_needed, 0, NH_DST, None)),
        },
        Fixture {
            description: "ICMPv6 packet-too-big goes to the backend owning the embedded flow",
            input: in_frame6(&too_big6),
            verdict: XDP_TX,
            output: Some(frame(
                eth(NH_DST, NH_SRC, ETH_IPV6, None),
                &outer_v6(
                    ip6(LOCAL6),
                    ip6("2001:db8:1::11"),
                    too_big6_hash,
                    &too_big6,
                    true,
                ),
            )),
        },
        Fixture {
            description: "a packet that just fits the MTU is forwarded",
            input: in_frame(&fits),
            verdict: XDP_TX,
            output: Some(encap4("198.51.100.11", &fits, 0, NH_DST, None)),
        },
        Fixture {
            description: "non-VIP traffic passes untouched",
            input: in_frame(&non_vip),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "ping to a VIP passes to the stack",
            input: in_frame(&ping),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "a VIP port without a service passes",
            input: in_frame(&other_port),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "ARP passes",
            input: frame(eth([0xff; 6], CLIENT_MAC, 0x0806, None), &[0u8; 28]),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "an IPv4 frame with no IP header passes (the stack drops it)",
            input: eth(LB_MAC, CLIENT_MAC, ETH_IPV4, None),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "an IPv4 header cut short passes (cannot tell the destination)",
            input: in_frame(&syn[..12]),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "first IPv4 fragment to a VIP is dropped",
            input: in_frame(&first_fragment),
            verdict: XDP_DROP,
            output: None,
        },
        Fixture {
            description: "later IPv4 fragment to a VIP is dropped",
            input: in_frame(&later_fragment),
            verdict: XDP_DROP,
            output: None,
        },
        Fixture {
            description: "IPv6 fragment header to a VIP is dropped",
            input: in_frame6(&v6_frag),
            verdict: XDP_DROP,
            output: None,
        },
        Fixture {
            description: "IPv6 hop-by-hop header to a VIP is dropped",
            input: in_frame6(&v6_hop),
            verdict: XDP_DROP,
            output: None,
        },
        Fixture {
            description: "truncated TCP header is dropped",
            input: in_frame(&truncated_tcp),
            verdict: XDP_DROP,
            output: None,
        },
        Fixture {
            description: "total length beyond the frame is dropped",
            input: in_frame(&long_total),
            verdict: XDP_DROP,
            output: None,
        },
        Fixture {
            description: "IHL below 5 is dropped",
            input: in_frame(&short_ihl),
            verdict: XDP_DROP,
            output: None,
        },
        Fixture {
            description: "an IPv4 fragment to a non-VIP address passes untouched",
            input: in_frame(&non_vip_fragment),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "an IPv6 fragment to a non-VIP address passes untouched",
            input: in_frame6(&non_vip_v6_frag),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "a truncated TCP header to a non-VIP address passes untouched",
            input: in_frame(&non_vip_truncated),
            verdict: XDP_PASS,
            output: None,
        },
        Fixture {
            description: "oversize after encapsulation is dropped",
            input: in_frame(&big),
            verdict: XDP_DROP,
            output: None,
        },
    ];
    check(&dp, fixtures);

    let global = dp.global_counters().expect("global counters");
    assert_eq!(global.drops(DropReason::Fragment), 3);
    assert_eq!(global.drops(DropReason::Ipv6ExtensionHeader), 1);
    assert_eq!(global.drops(DropReason::Malformed), 3);
    let web = dp
        .counters(service("203.0.113.10", 80, Protocol::Tcp))
        .expect("counters")
        .expect("service exists");
    assert_eq!(web.drops(DropReason::TooBig), 1);
    assert_eq!(web.packets, 6);
    assert!(web.bytes > 6 * 54);
}

fn outer_dst(frame: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]))
}

#[test]
fn bpf_hash_and_rust_maglev_agree_on_the_backend_for_many_flows() {
    let dp = lab_dataplane();
    let svc = service("203.0.113.30", 80, Protocol::Tcp);
    let mut seen = std::collections::HashSet::new();
    for sport in 20_000..20_200u16 {
        let out = dp
            .test_run(&in_frame(&tcp4("203.0.113.30", sport, 80, SYN)), 1)
            .expect("run");
        assert_eq!(out.verdict, XDP_TX);
        let flow = FlowTuple {
            src: CLIENT4.parse().expect("addr"),
            dst: "203.0.113.30".parse().expect("addr"),
            sport,
            dport: 80,
            protocol: Protocol::Tcp,
        };
        assert_eq!(
            Some(outer_dst(&out.data)),
            dp.maglev_backend(svc, &flow),
            "sport {sport}"
        );
        seen.insert(outer_dst(&out.data));
    }
    assert!(
        seen.len() > 50,
        "200 flows reached only {} backends",
        seen.len()
    );
}

/// A client port whose flow Maglev maps to `want` in `dp`'s table for `svc`.
fn port_mapping_to(dp: &Dataplane, svc: Service, want: IpAddr, avoid: Option<IpAddr>) -> u16 {
    (30_000..40_000u16)
        .find(|&sport| {
            let flow = FlowTuple {
                src: CLIENT4.parse().expect("addr"),
                dst: svc.vip,
                sport,
                dport: svc.port,
                protocol: svc.protocol,
            };
            dp.maglev_backend(svc, &flow) == Some(want) && avoid.is_none_or(|a| a != want)
        })
        .expect("some port maps to the backend")
}

/// The highest online CPU (not `available_parallelism`, which follows cgroup quotas).
fn last_cpu() -> usize {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).map_or(0, |n| n.saturating_sub(1))
}

/// Moves the calling thread to `cpu` (BPF_PROG_TEST_RUN runs the program on the caller's CPU).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity(0 = this thread) only
    // touch the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
    }
}

#[test]
fn established_flows_stay_on_their_backend_across_cpus_and_table_changes_but_syn_rehashes() {
    let mut dp = lab_dataplane();
    let svc = service("203.0.113.40", 80, Protocol::Tcp);
    let a: IpAddr = "198.51.100.51".parse().expect("addr");
    let c: IpAddr = "198.51.100.53".parse().expect("addr");
    let backends = |addrs: &[IpAddr]| -> Vec<WeightedBackend> {
        addrs
            .iter()
            .map(|&addr| WeightedBackend { addr, weight: 1 })
            .collect()
    };
    dp.set_vip(svc, &backends(&[a])).expect("set");
    // After adding c, find a flow that the new table gives to c.
    let mut probe = lab_dataplane();
    probe.set_vip(svc, &backends(&[a, c])).expect("set");
    let sport = port_mapping_to(&probe, svc, c, None);
    drop(probe);

    let syn = in_frame(&tcp4("203.0.113.40", sport, 80, SYN));
    let ack = in_frame(&tcp4("203.0.113.40", sport, 80, ACK));
    // The SYN runs on the first CPU and the ACK on the last: flows are shared across CPUs.
    pin_to_cpu(0);
    assert_eq!(outer_dst(&dp.test_run(&syn, 1).expect("run").data), a);
    dp.set_vip(svc, &backends(&[a, c])).expect("add c");
    pin_to_cpu(last_cpu());
    assert_eq!(
        outer_dst(&dp.test_run(&ack, 1).expect("run").data),
        a,
        "established flow must stay on its backend"
    );
    assert_eq!(
        outer_dst(&dp.test_run(&syn, 1).expect("run").data),
        c,
        "a new connection follows the new table"
    );
    let counters = dp.counters(svc).expect("counters").expect("exists");
    assert_eq!((counters.flow_hits, counters.flow_misses), (1, 2));
}

#[test]
fn set_vip_writes_only_the_slots_that_change() {
    let mut dp = lab_dataplane();
    let svc = service("203.0.113.43", 80, Protocol::Tcp);
    let set = |n: u8| -> Vec<WeightedBackend> {
        (1..=n)
            .map(|i| WeightedBackend {
                addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 80 + i)),
                weight: 1,
            })
            .collect()
    };
    let size = cairn_xdp::TableSize::default().get() as usize;
    assert_eq!(dp.set_vip(svc, &set(3)).expect("first"), size);
    assert_eq!(dp.set_vip(svc, &set(3)).expect("again"), 0);
    let grown = dp.set_vip(svc, &set(4)).expect("grow");
    let quarter = size / 4;
    assert!(
        grown >= quarter && grown < quarter + size / 50,
        "adding a 4th backend rewrote {grown} of {size} slots"
    );
}

#[test]
fn removing_a_backend_purges_its_flows_and_moves_only_them() {
    let mut dp = lab_dataplane();
    let svc = service("203.0.113.41", 53, Protocol::Udp);
    let addrs: Vec<IpAddr> = (61..64)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect();
    let all: Vec<WeightedBackend> = addrs
        .iter()
        .map(|&addr| WeightedBackend { addr, weight: 1 })
        .collect();
    dp.set_vip(svc, &all).expect("set");
    let datagram = |sport: u16| {
        in_frame(&V4::new(ip4(CLIENT4), ip4("203.0.113.41"), UDP).packet(&udp(sport, 53, b"q")))
    };
    let before: Vec<IpAddr> = (1000..1300u16)
        .map(|p| outer_dst(&dp.test_run(&datagram(p), 1).expect("run").data))
        .collect();
    dp.set_vip(svc, &all[..2]).expect("remove the third");
    let after: Vec<IpAddr> = (1000..1300u16)
        .map(|p| outer_dst(&dp.test_run(&datagram(p), 1).expect("run").data))
        .collect();
    let mut moved_from_removed = 0;
    for (b, a) in before.iter().zip(&after) {
        if *b == addrs[2] {
            assert_ne!(*a, addrs[2]);
            moved_from_removed += 1;
        } else {
            assert_eq!(a, b, "a flow of a remaining backend moved");
        }
    }
    assert!(
        moved_from_removed > 50,
        "only {moved_from_removed} flows were on the removed backend"
    );
}

#[test]
fn next_hops_reach_backends_already_in_use_and_any_port_services_only_while_they_exist() {
    assert!(cairn_e2e::netns::is_root(), "BPF fixtures need root");
    let mut dp = Dataplane::load(DataplaneConfig {
        hash_seed: SEED,
        local_v4: Some(ip4(LOCAL4)),
        ..DataplaneConfig::default()
    })
    .expect("load");
    let svc = service("203.0.113.50", 80, Protocol::Tcp);
    let a: IpAddr = "198.51.100.81".parse().expect("addr");
    dp.set_vip(svc, &[WeightedBackend { addr: a, weight: 1 }])
        .expect("set");
    let syn = in_frame(&tcp4("203.0.113.50", 46000, 80, SYN));
    assert_eq!(dp.test_run(&syn, 1).expect("run").verdict, XDP_DROP);
    let counters = dp.counters(svc).expect("counters").expect("exists");
    assert_eq!(counters.drops(DropReason::NoNextHop), 1);

    // The default, set after the backend got its index, is copied into its entry.
    dp.set_default_next_hop(NextHop {
        dst_mac: NH_DST,
        src_mac: NH_SRC,
    })
    .expect("default hop");
    let out = dp.test_run(&syn, 1).expect("run");
    assert_eq!((out.verdict, &out.data[..6]), (XDP_TX, &NH_DST[..]));
    // The backend's own next hop wins over the default.
    dp.set_next_hop(
        a,
        NextHop {
            dst_mac: B13_MAC,
            src_mac: NH_SRC,
        },
    )
    .expect("own hop");
    let out = dp.test_run(&syn, 1).expect("run");
    assert_eq!((out.verdict, &out.data[..6]), (XDP_TX, &B13_MAC[..]));

    // An "any port" service is looked up while it exists, and only then.
    let any = service("203.0.113.51", 0, Protocol::Tcp);
    let to_any = in_frame(&tcp4("203.0.113.51", 46001, 4444, SYN));
    assert_eq!(dp.test_run(&to_any, 1).expect("run").verdict, XDP_PASS);
    dp.set_vip(any, &[WeightedBackend { addr: a, weight: 1 }])
        .expect("set any");
    let out = dp.test_run(&to_any, 1).expect("run");
    assert_eq!((out.verdict, outer_dst(&out.data)), (XDP_TX, a));
    assert!(dp.remove_vip(any).expect("remove any"));
    let out = dp.test_run(&to_any, 1).expect("run");
    assert_eq!((out.verdict, &out.data), (XDP_PASS, &to_any));
}

#[test]
fn a_restart_with_pinned_maps_keeps_services_forwarding_and_flows() {
    assert!(cairn_e2e::netns::is_root(), "BPF tests need root");
    let dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/cairn-xdp-test-{}", std::process::id()));
    let config = DataplaneConfig {
        pin_dir: Some(dir.clone()),
        hash_seed: SEED,
        local_v4: Some(ip4(LOCAL4)),
        ..DataplaneConfig::default()
    };
    let svc = service("203.0.113.42", 80, Protocol::Tcp);
    let a: IpAddr = "198.51.100.71".parse().expect("addr");
    let b: IpAddr = "198.51.100.72".parse().expect("addr");
    let hop = NextHop {
        dst_mac: NH_DST,
        src_mac: NH_SRC,
    };
    let syn = in_frame(&tcp4("203.0.113.42", 45000, 80, SYN));
    let ack = in_frame(&tcp4("203.0.113.42", 45000, 80, ACK));
    let first_backend;
    {
        let mut dp = Dataplane::load(config.clone()).expect("load");
        dp.set_default_next_hop(hop).expect("hop");
        dp.set_vip(svc, &[WeightedBackend { addr: a, weight: 1 }])
            .expect("set");
        first_backend = outer_dst(&dp.test_run(&syn, 1).expect("run").data);
        assert_eq!(first_backend, a);
    } // dropped without shutdown: pins stay
    let mut dp = Dataplane::load(config.clone()).expect("reload");
    // Before any call: the service is known again and packets forward from pinned maps.
    assert_eq!(dp.services().copied().collect::<Vec<_>>(), vec![svc]);
    let out = dp.test_run(&ack, 1).expect("run");
    assert_eq!((out.verdict, outer_dst(&out.data)), (XDP_TX, a));
    // Re-applying the same set writes nothing: the rings were recovered from the pins.
    assert_eq!(
        dp.set_vip(svc, &[WeightedBackend { addr: a, weight: 1 }])
            .expect("same set"),
        0
    );
    // The flow table survived: even with b added, the established flow stays on a.
    dp.set_vip(
        svc,
        &[
            WeightedBackend { addr: a, weight: 1 },
            WeightedBackend { addr: b, weight: 1 },
        ],
    )
    .expect("set");
    let counters = dp.counters(svc).expect("counters").expect("exists");
    assert!(counters.flow_hits >= 1);
    assert_eq!(outer_dst(&dp.test_run(&ack, 1).expect("run").data), a);
    // b, new after the restart, gets the default next hop recovered from the pins.
    let port = port_mapping_to(&dp, svc, b, None);
    let to_b = dp
        .test_run(&in_frame(&tcp4("203.0.113.42", port, 80, SYN)), 1)
        .expect("run");
    assert_eq!(
        (to_b.verdict, outer_dst(&to_b.data), &to_b.data[..6]),
        (XDP_TX, b, &NH_DST[..])
    );
    dp.shutdown().expect("shutdown");
    assert!(!dir.exists(), "shutdown removes the pins");
}

#[test]
fn decap_fixtures_strip_tunnels_to_known_vips_only() {
    assert!(cairn_e2e::netns::is_root(), "BPF fixtures need root");
    let mut decap = Decap::load().expect("load decap");
    decap
        .add_vip("203.0.113.10".parse().expect("vip"))
        .expect("vip");
    decap
        .add_vip("2001:db8:10::1".parse().expect("vip"))
        .expect("vip");
    let inner = tcp4("203.0.113.10", 40000, 80, SYN);
    let inner6 = v6_packet(
        ip6(CLIENT6),
        ip6("2001:db8:10::1"),
        TCP,
        &tcp(40004, 80, SYN, b"six"),
    );
    let other = tcp4("203.0.113.99", 40000, 80, SYN);
    let mac_b = [0x02, 0, 0, 0, 0, 0x11];
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "IP-in-IP to a VIP loses its outer header",
            encap4("198.51.100.11", &inner, 0, mac_b, None),
            frame(eth(mac_b, NH_SRC, ETH_IPV4, None), &inner),
        ),
        (
            "IPv6-in-IPv6 to a VIP loses its outer header",
            frame(
                eth(mac_b, NH_SRC, ETH_IPV6, None),
                &outer_v6(ip6(LOCAL6), ip6("2001:db8:1::11"), 7, &inner6, true),
            ),
            frame(eth(mac_b, NH_SRC, ETH_IPV6, None), &inner6),
        ),
        (
            "6in4 to an IPv6 VIP becomes an IPv6 frame",
            encap4("198.51.100.11", &inner6, 0, mac_b, None),
            frame(eth(mac_b, NH_SRC, ETH_IPV6, None), &inner6),
        ),
        (
            "VLAN tag is kept",
            encap4("198.51.100.11", &inner, 0, mac_b, Some(7)),
            frame(eth(mac_b, NH_SRC, ETH_IPV4, Some(7)), &inner),
        ),
    ];
    for (description, input, want) in cases {
        let out = decap.test_run(&input).expect("run");
        assert_eq!((out.verdict, &out.data), (XDP_PASS, &want), "{description}");
    }
    let untouched = [
        (
            "tunnel to a non-VIP",
            encap4("198.51.100.11", &other, 0, mac_b, None),
        ),
        ("plain TCP to the VIP", in_frame(&inner)),
        (
            "truncated tunnel",
            encap4("198.51.100.11", &inner, 0, mac_b, None)[..40].to_vec(),
        ),
        (
            "IPv6 ethertype, no header",
            eth(mac_b, NH_SRC, ETH_IPV6, None),
        ),
    ];
    for (description, input) in untouched {
        let out = decap.test_run(&input).expect("run");
        assert_eq!(
            (out.verdict, &out.data),
            (XDP_PASS, &input),
            "{description}"
        );
    }
    let counters = decap.counters().expect("counters");
    assert_eq!((counters.decapsulated, counters.passed), (4, 4));
    decap
        .remove_vip("203.0.113.10".parse().expect("vip"))
        .expect("remove");
    let input = encap4("198.51.100.11", &inner, 0, mac_b, None);
    assert_eq!(decap.test_run(&input).expect("run").data, input);
}

/// A tunnel from another load balancer (198.51.100.2 / 2001:db8:1::2) to this node.
fn tunnel_to_me(inner_l3: &[u8], vlan: Option<u16>) -> Vec<u8> {
    frame(
        eth(LB_MAC, NH_DST, ETH_IPV4, vlan),
        &outer_v4(
            ip4("198.51.100.2"),
            ip4(LOCAL4),
            0,
            inner_l3,
            inner_l3[0] >> 4 == 6,
        ),
    )
}

fn tunnel6_to_me(inner_l3: &[u8]) -> Vec<u8> {
    frame(
        eth(LB_MAC, NH_DST, ETH_IPV6, None),
        &outer_v6(
            ip6("2001:db8:1::2"),
            ip6(LOCAL6),
            0x12345,
            inner_l3,
            inner_l3[0] >> 4 == 6,
        ),
    )
}

#[test]
fn lb_strips_tunnels_to_its_decap_vips_exactly_as_the_decap_program_does() {
    let mut dp = lab_dataplane();
    let mut decap = Decap::load().expect("load decap");
    // This node balances 203.0.113.10 and 2001:db8:10::1 and is a backend for them too.
    for vip in ["203.0.113.10", "2001:db8:10::1"] {
        let vip = vip.parse().expect("vip");
        dp.add_decap_vip(vip).expect("lb decap vip");
        decap.add_vip(vip).expect("decap vip");
    }
    assert_eq!(
        dp.decap_vips().expect("list"),
        decap.decap_vips().expect("list")
    );
    assert_eq!(
        dp.decap_vips().expect("list"),
        [addr_of("203.0.113.10"), addr_of("2001:db8:10::1")].into()
    );
    let inner = tcp4("203.0.113.10", 40000, 80, SYN);
    let inner6 = v6_packet(
        ip6(CLIENT6),
        ip6("2001:db8:10::1"),
        TCP,
        &tcp(40004, 80, ACK, b"six"),
    );
    // A service of this balancer, but not a decap VIP: its tunnels are not for this node.
    let balanced_only = tcp4("203.0.113.20", 40000, 22, SYN);
    let unknown = tcp4("203.0.113.99", 40000, 80, SYN);
    let stripped: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "IPv4-in-IPv4 to a decap VIP loses its outer header",
            tunnel_to_me(&inner, None),
            frame(eth(LB_MAC, NH_DST, ETH_IPV4, None), &inner),
        ),
        (
            "IPv6-in-IPv6 to a decap VIP loses its outer header",
            tunnel6_to_me(&inner6),
            frame(eth(LB_MAC, NH_DST, ETH_IPV6, None), &inner6),
        ),
        (
            "6in4 to an IPv6 decap VIP becomes an IPv6 frame",
            tunnel_to_me(&inner6, None),
            frame(eth(LB_MAC, NH_DST, ETH_IPV6, None), &inner6),
        ),
        (
            "the VLAN tag is kept",
            tunnel_to_me(&inner, Some(9)),
            frame(eth(LB_MAC, NH_DST, ETH_IPV4, Some(9)), &inner),
        ),
    ];
    let untouched: Vec<(&str, Vec<u8>)> = vec![
        (
            "a tunnel to a VIP not in the list",
            tunnel_to_me(&unknown, None),
        ),
        (
            "an IPv6 tunnel to a VIP not in the list",
            tunnel6_to_me(&v6_packet(
                ip6(CLIENT6),
                ip6("2001:db8:10::9"),
                TCP,
                &tcp(40004, 80, SYN, b""),
            )),
        ),
        (
            "a tunnel to a balanced VIP that is not a decap VIP",
            tunnel_to_me(&balanced_only, None),
        ),
        (
            "a tunnel whose inner header is cut short",
            tunnel_to_me(&inner[..12], None),
        ),
    ];
    let mut failures = Vec::new();
    for (description, input, want) in &stripped {
        for (program, out) in [
            ("xdp_lb", dp.test_run(input, 1).expect("run lb")),
            ("xdp_decap", decap.test_run(input).expect("run decap")),
        ] {
            if (out.verdict, &out.data) != (XDP_PASS, want) {
                failures.push(format!(
                    "{program}: {description}: verdict {} {:02x?}",
                    out.verdict, out.data
                ));
            }
        }
    }
    for (description, input) in &untouched {
        for (program, out) in [
            ("xdp_lb", dp.test_run(input, 1).expect("run lb")),
            ("xdp_decap", decap.test_run(input).expect("run decap")),
        ] {
            if (out.verdict, &out.data) != (XDP_PASS, input) {
                failures.push(format!(
                    "{program}: {description}: verdict {} {:02x?}",
                    out.verdict, out.data
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let want = DecapCounters {
        decapsulated: 4,
        passed: 4,
        malformed: 0,
    };
    assert_eq!(dp.decap_counters().expect("lb counters"), want);
    assert_eq!(decap.counters().expect("decap counters"), want);

    // Packets that are not tunnels keep the load balancer's path and are not the tunnel end's
    // to count: the VIP's own traffic is balanced, anything else passes.
    let to_vip = in_frame(&inner);
    let out = dp.test_run(&to_vip, 1).expect("run");
    assert_eq!(
        (out.verdict, outer_dst(&out.data)),
        (XDP_TX, addr_of("198.51.100.11"))
    );
    let other = in_frame(&unknown);
    assert_eq!(dp.test_run(&other, 1).expect("run").data, other);
    // An outer length beyond the frame is the load balancer's decision (pass, not counted).
    let truncated = tunnel_to_me(&inner, None)[..14 + 20 + 12].to_vec();
    let out = dp.test_run(&truncated, 1).expect("run");
    assert_eq!((out.verdict, &out.data), (XDP_PASS, &truncated));
    assert_eq!(dp.decap_counters().expect("lb counters"), want);

    dp.remove_decap_vip(addr_of("203.0.113.10"))
        .expect("remove");
    dp.remove_decap_vip(addr_of("203.0.113.10"))
        .expect("removing an absent VIP is not an error");
    assert_eq!(
        dp.decap_vips().expect("list"),
        [addr_of("2001:db8:10::1")].into()
    );
    let input = tunnel_to_me(&inner, None);
    let out = dp.test_run(&input, 1).expect("run");
    assert_eq!((out.verdict, &out.data), (XDP_PASS, &input));
}

fn addr_of(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn a_restart_with_pinned_maps_keeps_both_tunnel_ends_vip_lists_listed_and_stripping() {
    assert!(cairn_e2e::netns::is_root(), "BPF tests need root");
    let lb_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/cairn-xdp-test-lbdecap-{}",
        std::process::id()
    ));
    let decap_dir = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/cairn-xdp-test-decap-{}",
        std::process::id()
    ));
    let config = DataplaneConfig {
        pin_dir: Some(lb_dir.clone()),
        local_v4: Some(ip4(LOCAL4)),
        ..DataplaneConfig::default()
    };
    let vip = addr_of("203.0.113.10");
    let stale = addr_of("203.0.113.11");
    {
        let mut dp = Dataplane::load(config.clone()).expect("load");
        let mut decap = Decap::load_pinned(&decap_dir).expect("load decap");
        for v in [vip, stale] {
            dp.add_decap_vip(v).expect("lb decap vip");
            decap.add_vip(v).expect("decap vip");
        }
    } // dropped without shutdown: pins stay
    let mut dp = Dataplane::load(config).expect("reload");
    let mut decap = Decap::load_pinned(&decap_dir).expect("reload decap");
    // A restarted process can see what its predecessor accepted, and so remove stale VIPs.
    assert_eq!(dp.decap_vips().expect("list"), [vip, stale].into());
    assert_eq!(decap.decap_vips().expect("list"), [vip, stale].into());
    dp.remove_decap_vip(stale).expect("remove");
    decap.remove_vip(stale).expect("remove");
    let inner = tcp4("203.0.113.10", 40000, 80, SYN);
    let input = tunnel_to_me(&inner, None);
    let want = frame(eth(LB_MAC, NH_DST, ETH_IPV4, None), &inner);
    let lb_out = dp.test_run(&input, 1).expect("run");
    let decap_out = decap.test_run(&input).expect("run");
    assert_eq!((lb_out.verdict, &lb_out.data), (XDP_PASS, &want));
    assert_eq!((decap_out.verdict, &decap_out.data), (XDP_PASS, &want));
    let to_stale = tunnel_to_me(&tcp4("203.0.113.11", 40000, 80, SYN), None);
    assert_eq!(dp.test_run(&to_stale, 1).expect("run").data, to_stale);
    assert_eq!(dp.decap_vips().expect("list"), [vip].into());
    assert_eq!(decap.decap_vips().expect("list"), [vip].into());
    dp.shutdown().expect("shutdown");
    decap.shutdown().expect("shutdown decap");
    assert!(
        !lb_dir.exists() && !decap_dir.exists(),
        "shutdown removes the pins"
    );
}
