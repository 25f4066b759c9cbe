//! XDP load-balancer benchmarks (root only). Prints `bench <metric> <value> <unit>` lines:
//!
//! - `xdp_ns_per_pkt_hit` / `xdp_ns_per_pkt_miss`: run time of `xdp_lb` per packet as measured
//!   by the kernel in BPF_PROG_TEST_RUN, for a TCP packet to a VIP with 100 backends, whose
//!   backend comes from the flow table (an ACK of a known flow) or from the Maglev table (a SYN
//!   of a new flow: hash, ring lookup and flow-table insert). Each figure averages single runs
//!   (`repeat` = 1), because with `repeat` > 1 the kernel feeds the already encapsulated packet
//!   back in, which is no longer addressed to a VIP. A single run's figure includes the
//!   harness around the program (timer reads, bh disable/enable); that harness cost, measured
//!   the same way on an empty XDP program, is subtracted and printed as
//!   `xdp_test_run_overhead_ns`.
//! - `xdp_ns_per_pkt_hit_warm` / `xdp_ns_per_pkt_miss_warm`: the same decision paths with warm
//!   caches, using `repeat` = 100000 on a packet one byte too long for the configured MTU: the
//!   program parses, looks up the service, the flow table (hit) or Maglev ring plus flow-table
//!   update (miss), the backend and next hop, and then drops it as too big instead of growing
//!   it, so every repetition sees the same packet. Encapsulation itself (head adjust, 34 bytes
//!   of header writes and a checksum) is not included.
//! - `xdp_ns_per_pkt_pass_warm`: the same for a TCP packet to a non-VIP address (what every
//!   other packet on the interface pays: parse and one service lookup that misses), and
//!   `xdp_test_run_overhead_warm_ns`: an empty XDP program run the same way (the repeat loop's
//!   own cost, included in the three `*_warm` figures).
//! - `xdp_pps`, `nft_dnat_pps`, `kernel_fwd_pps`, `xdp_vs_nft_ratio`: packets per second
//!   received behind a load-balancer namespace. trafgen sends 60-byte UDP packets (256 flows) to
//!   the VIP over a veth into the LB namespace, which forwards them out of a second veth to a
//!   sink namespace that counts and drops them in XDP. The LB forwards with plain routing,
//!   nftables DNAT (conntrack), or `xdp_lb` (IP-in-IP, bpf_redirect), in turn, with the same
//!   namespaces and generator. On veth, generator, LB and sink share the same 2 CPUs and the
//!   sender pays for the receive path, so the gap is far smaller than on real NICs, where XDP
//!   runs in the driver before any skb is allocated.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use cairn_e2e::netns::{is_root, Netns};
use cairn_xdp::{
    Dataplane, DataplaneConfig, NextHop, Protocol, Service, Sink, SinkKind, WeightedBackend,
};
use common::*;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const RUNS: u32 = 200_000;

fn main() {
    if !is_root() {
        eprintln!("the xdp benchmark loads BPF programs and builds namespaces: run it as root");
        std::process::exit(1);
    }
    let (hit, miss, overhead) = test_run_figures();
    println!("bench xdp_ns_per_pkt_hit {:.1} ns", hit - overhead);
    println!("bench xdp_ns_per_pkt_miss {:.1} ns", miss - overhead);
    println!("bench xdp_test_run_overhead_ns {overhead:.1} ns");
    let warm = warm_figures();
    println!("bench xdp_ns_per_pkt_hit_warm {:.1} ns", warm.hit);
    println!("bench xdp_ns_per_pkt_miss_warm {:.1} ns", warm.miss);
    println!("bench xdp_ns_per_pkt_pass_warm {:.1} ns", warm.pass);
    println!(
        "bench xdp_test_run_overhead_warm_ns {:.1} ns",
        warm.overhead
    );
    let (kernel, nft, xdp) = pps_figures();
    println!("bench xdp_pps {xdp:.0} pps");
    println!("bench nft_dnat_pps {nft:.0} pps");
    println!("bench kernel_fwd_pps {kernel:.0} pps");
    println!("bench xdp_vs_nft_ratio {:.2} x", xdp / nft);
}

/// Average kernel-measured duration of single runs of `run` over `packets` (cycled).
fn average_ns(packets: &[Vec<u8>], run: impl Fn(&[u8]) -> Duration) -> f64 {
    let mut total = Duration::ZERO;
    for i in 0..RUNS as usize {
        total += run(&packets[i % packets.len()]);
    }
    total.as_nanos() as f64 / f64::from(RUNS)
}

fn test_run_figures() -> (f64, f64, f64) {
    let mut dp = Dataplane::load(DataplaneConfig {
        local_v4: Some(Ipv4Addr::new(198, 51, 100, 1)),
        flow_table_size: 1 << 20,
        ..DataplaneConfig::default()
    })
    .expect("load");
    dp.set_default_next_hop(NextHop {
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_mac: [2, 0, 0, 0, 0, 1],
    })
    .expect("next hop");
    let backends: Vec<WeightedBackend> = (0..100u32)
        .map(|i| WeightedBackend {
            addr: IpAddr::V4(Ipv4Addr::from(0xc633_6400 + 10 + i)),
            weight: 1,
        })
        .collect();
    let service = Service {
        vip: IpAddr::V4(VIP),
        port: 80,
        protocol: Protocol::Tcp,
    };
    dp.set_vip(service, &backends).expect("vip");
    let packet = |client: u32, sport: u16, flags: u8| {
        frame(
            eth(LB_MAC, CLIENT_MAC, ETH_IPV4, None),
            &V4::new(Ipv4Addr::from(0xc000_0200 + client), VIP, TCP)
                .packet(&tcp(sport, 80, flags, &[0u8; 6])),
        )
    };
    let ack = packet(7, 40_000, ACK);
    assert_eq!(dp.test_run(&ack, 1).expect("run").verdict, 3, "XDP_TX");
    let hit = average_ns(std::slice::from_ref(&ack), |p| {
        dp.test_run(p, 1).expect("run").duration
    });
    // New flows: distinct (client, port) per run so each SYN inserts a fresh flow entry.
    let syns: Vec<Vec<u8>> = (0..RUNS)
        .map(|i| packet(i % 250, 1024 + (i / 250) as u16, SYN))
        .collect();
    let miss = average_ns(&syns, |p| dp.test_run(p, 1).expect("run").duration);
    let counters = dp.counters(service).expect("counters").expect("service");
    assert_eq!(
        counters.packets,
        2 * u64::from(RUNS) + 1,
        "every run forwarded"
    );
    let empty = Sink::load(SinkKind::Pass).expect("empty program");
    let overhead = average_ns(std::slice::from_ref(&ack), |p| {
        empty.test_run(p, 1).expect("run").duration
    });
    (hit, miss, overhead)
}

/// Kernel-measured ns per repetition with `repeat` > 1.
struct WarmFigures {
    hit: f64,
    miss: f64,
    pass: f64,
    overhead: f64,
}

fn warm_figures() -> WarmFigures {
    const REPEAT: u32 = 100_000;
    let mut dp = Dataplane::load(DataplaneConfig {
        local_v4: Some(Ipv4Addr::new(198, 51, 100, 1)),
        mtu: 200,
        ..DataplaneConfig::default()
    })
    .expect("load");
    dp.set_default_next_hop(NextHop {
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_mac: [2, 0, 0, 0, 0, 1],
    })
    .expect("next hop");
    let backends: Vec<WeightedBackend> = (0..100u32)
        .map(|i| WeightedBackend {
            addr: IpAddr::V4(Ipv4Addr::from(0xc633_6400 + 10 + i)),
            weight: 1,
        })
        .collect();
    let service = Service {
        vip: IpAddr::V4(VIP),
        port: 80,
        protocol: Protocol::Tcp,
    };
    dp.set_vip(service, &backends).expect("vip");
    // 20 (IP) + 20 (TCP) + 141 = 181 bytes of IP; + 20 outer = 201 > mtu 200.
    let packet = |flags: u8| {
        frame(
            eth(LB_MAC, CLIENT_MAC, ETH_IPV4, None),
            &V4::new(Ipv4Addr::new(192, 0, 2, 7), VIP, TCP).packet(&tcp(
                40_000,
                80,
                flags,
                &[0u8; 141],
            )),
        )
    };
    let (syn, ack) = (packet(SYN), packet(ACK));
    let miss = dp.test_run(&syn, REPEAT).expect("run");
    let hit = dp.test_run(&ack, REPEAT).expect("run");
    assert_eq!((miss.verdict, hit.verdict), (1, 1), "XDP_DROP (too big)");
    let counters = dp.counters(service).expect("counters").expect("service");
    assert_eq!(
        counters.flow_hits,
        u64::from(REPEAT),
        "every ACK hit the flow table"
    );
    let other = frame(
        eth(LB_MAC, CLIENT_MAC, ETH_IPV4, None),
        &V4::new(
            Ipv4Addr::new(192, 0, 2, 7),
            Ipv4Addr::new(203, 0, 113, 99),
            TCP,
        )
        .packet(&tcp(40_000, 80, ACK, &[0u8; 6])),
    );
    let pass = dp.test_run(&other, REPEAT).expect("run");
    assert_eq!(pass.verdict, 2, "XDP_PASS");
    let empty = Sink::load(SinkKind::Pass).expect("empty program");
    let overhead = empty.test_run(&other, REPEAT).expect("run");
    let ns = |d: Duration| d.as_nanos() as f64;
    WarmFigures {
        hit: ns(hit.duration),
        miss: ns(miss.duration),
        pass: ns(pass.duration),
        overhead: ns(overhead.duration),
    }
}

struct PpsLab {
    gen: Netns,
    lb: Netns,
    sink_ns: Netns,
}

fn sample_pps(lab: &PpsLab, counter: &mut Sink, config: &std::path::Path) -> f64 {
    lab.gen
        .spawn(
            &[
                "trafgen",
                "--dev",
                "eth0",
                "--conf",
                config.to_str().expect("utf-8 path"),
                "-P",
                "1",
                "-Q",
                "--no-sock-mem",
                "-C",
            ],
            None,
        )
        .expect("trafgen");
    std::thread::sleep(Duration::from_millis(1000));
    let (start_count, _) = counter.counts().expect("counts");
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let (end_count, _) = counter.counts().expect("counts");
    let elapsed = start.elapsed().as_secs_f64();
    lab.gen.kill_all();
    std::thread::sleep(Duration::from_millis(300));
    (end_count - start_count) as f64 / elapsed
}

fn pps_figures() -> (f64, f64, f64) {
    let gen = Netns::new("xdpbgen").expect("gen ns");
    let lb = Netns::new("xdpblb").expect("lb ns");
    let sink_ns = Netns::new("xdpbsink").expect("sink ns");
    gen.veth("eth0", &lb, "eth0").expect("veth gen");
    lb.veth("eth1", &sink_ns, "eth0").expect("veth sink");
    gen.addr("eth0", "198.51.100.100/24").expect("addr");
    lb.addr("eth0", "198.51.100.1/24").expect("addr");
    lb.addr("eth1", "192.0.2.1/24").expect("addr");
    sink_ns.addr("eth0", "192.0.2.2/24").expect("addr");
    lb.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .expect("forwarding");
    let sink_mac = sink_ns.mac("eth0").expect("mac");
    let lb_in_mac = lb.mac("eth0").expect("mac");
    let lb_out_mac = lb.mac("eth1").expect("mac");
    let gen_mac = gen.mac("eth0").expect("mac");
    let mac_text = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    // The sink's stack never sees a packet (XDP drops them), so its neighbour entry is static.
    lb.ip(&[
        "neigh",
        "add",
        "192.0.2.2",
        "lladdr",
        &mac_text(sink_mac),
        "dev",
        "eth1",
    ])
    .expect("neigh");
    let (mut counter, _) = sink_ns
        .run(|| Sink::attach(SinkKind::CountDrop, "eth0"))
        .expect("enter sink")
        .expect("count-drop sink");
    let hex = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let config = std::env::temp_dir().join(format!("cairn-xdp-bench-{}.cfg", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "{{ {}, {}, 0x08, 0x00,\n\
             0x45, 0x00, 0x00, 0x2e, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, csumip(14, 33),\n\
             198, 51, 100, 100, 203, 0, 113, 10,\n\
             0x80, dinc(0, 255), 0x00, 0x35, 0x00, 0x1a, csumudp(14, 34),\n\
             fill(0x61, 18) }}\n",
            hex(lb_in_mac),
            hex(gen_mac)
        ),
    )
    .expect("trafgen config");
    let lab = PpsLab { gen, lb, sink_ns };

    // 1. Plain kernel forwarding: the VIP routed to the sink.
    lab.lb
        .ip(&["route", "add", "203.0.113.10/32", "via", "192.0.2.2"])
        .expect("route");
    let kernel = sample_pps(&lab, &mut counter, &config);
    lab.lb
        .ip(&["route", "del", "203.0.113.10/32"])
        .expect("route del");

    // 2. nftables DNAT of the VIP to the sink's address.
    lab.lb
        .exec(&[
            "nft",
            "add table ip cairnbench; \
             add chain ip cairnbench pre { type nat hook prerouting priority -100; }; \
             add rule ip cairnbench pre ip daddr 203.0.113.10 udp dport 53 dnat to 192.0.2.2",
        ])
        .expect("nft");
    let nft = sample_pps(&lab, &mut counter, &config);
    lab.lb
        .exec(&["nft", "delete table ip cairnbench"])
        .expect("nft delete");

    // 3. xdp_lb: IP-in-IP to the sink, redirected out of eth1.
    let egress = lab
        .lb
        .run(|| {
            // SAFETY: if_nametoindex reads a NUL-terminated string we own.
            unsafe { libc::if_nametoindex(c"eth1".as_ptr()) }
        })
        .expect("enter lb");
    assert_ne!(egress, 0, "eth1 exists");
    let mut dp = Dataplane::load(DataplaneConfig {
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        egress_ifindex: Some(egress),
        ..DataplaneConfig::default()
    })
    .expect("load lb");
    dp.set_default_next_hop(NextHop {
        dst_mac: sink_mac,
        src_mac: lb_out_mac,
    })
    .expect("next hop");
    dp.set_vip(
        Service {
            vip: IpAddr::V4(VIP),
            port: 53,
            protocol: Protocol::Udp,
        },
        &[WeightedBackend {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            weight: 1,
        }],
    )
    .expect("vip");
    lab.lb
        .run(|| dp.attach("eth0"))
        .expect("enter")
        .expect("attach");
    let xdp = sample_pps(&lab, &mut counter, &config);
    drop(dp);
    let _ = std::fs::remove_file(&config);
    drop(counter);
    drop(lab.sink_ns);
    (kernel, nft, xdp)
}
