//! Layer 2 benchmarks in network namespaces (root only), printing `bench <metric> <value> <unit>`:
//!
//! - `garp_first_round_10k_ms`: from the first of 10 000 `announce` calls (IPv6 VIPs, the only
//!   documentation range with room for 10 000) until the first round of all of them is on the
//!   wire (one unsolicited NA each); `garp_first_round_512v4_ms` the same for 512 IPv4 VIPs
//!   (GARP request + reply each).
//! - `arp_replies_per_s` / `ns_replies_per_s`: replies sent by node A while the client floods it
//!   with ARP requests / Neighbor Solicitations for an owned VIP for 2 s from a raw socket.
//! - `neigh_flip_ms` / `neigh_flip_v6_ms`: median over 10 moves between A and B of the time from
//!   B's `announce` (its first frame leaves at once) to the client kernel's RTM_NEWNEIGH carrying
//!   B's MAC, read from an rtnetlink subscription inside the client namespace.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cairn_arp::frames;
use cairn_arp::sys;
use cairn_arp::{BurstConfig, L2Announcer, L2Config, MacAddr};
use common::{eth0, Lab, CLIENT4, CLIENT6};

fn main() {
    let lab = common::lab();
    first_round(&lab);
    replies_per_s(&lab);
    neigh_flip(&lab);
}

fn wait_for_gratuitous(node: &L2Announcer, frames: u64) {
    while node.counters()["eth0"].gratuitous_sent < frames {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn first_round(lab: &Lab) {
    let node = lab.announcer(&lab.a, eth0()).expect("announcer");
    let vips: Vec<IpAddr> = (0..10_000u16)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0x10, 0, 0, 1, i)))
        .collect();
    let start = Instant::now();
    for vip in &vips {
        node.announce("eth0", *vip).expect("announce");
    }
    wait_for_gratuitous(&node, vips.len() as u64);
    println!(
        "bench garp_first_round_10k_ms {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    drop(node);

    let node = lab.announcer(&lab.a, eth0()).expect("announcer");
    let vips: Vec<IpAddr> = (0..=255u8)
        .flat_map(|i| [[198, 51, 100, i], [203, 0, 113, i]])
        .map(|octets| IpAddr::V4(Ipv4Addr::from(octets)))
        .collect();
    let start = Instant::now();
    for vip in &vips {
        node.announce("eth0", *vip).expect("announce");
    }
    wait_for_gratuitous(&node, 2 * vips.len() as u64);
    println!(
        "bench garp_first_round_512v4_ms {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
}

/// Floods `frame` from the client for 2 s; returns replies per second node A sent, counted until
/// its reply counter stops moving.
fn flood(lab: &Lab, node: &L2Announcer, protocol: u16, frame: &[u8]) -> f64 {
    let socket = common::packet_socket(&lab.client, protocol);
    let before = node.counters()["eth0"].replies_sent;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        match socket.send(frame, protocol) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("flood send: {e}"),
        }
    }
    let mut last = node.counters()["eth0"].replies_sent;
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_millis(200) {
        std::thread::sleep(Duration::from_millis(5));
        let now = node.counters()["eth0"].replies_sent;
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let elapsed = last_change.duration_since(start).as_secs_f64();
    (last - before) as f64 / elapsed
}

fn replies_per_s(lab: &Lab) {
    let client_mac = MacAddr(lab.client.mac("eth0").expect("mac"));
    let node = lab
        .announcer(
            &lab.a,
            L2Config {
                burst: BurstConfig {
                    count: 0,
                    ..BurstConfig::default()
                },
                ..eth0()
            },
        )
        .expect("announcer");
    let vip4 = Ipv4Addr::new(192, 0, 2, 100);
    let vip6: Ipv6Addr = "2001:db8::64".parse().expect("vip");
    node.announce("eth0", vip4.into()).expect("announce");
    node.announce("eth0", vip6.into()).expect("announce");

    let client4: Ipv4Addr = CLIENT4.parse().expect("client address");
    let request = frames::arp_request(client_mac, client4, vip4);
    let rate = flood(lab, &node, sys::ETH_P_ARP, &request);
    println!("bench arp_replies_per_s {rate:.0} replies/s");

    let client6: Ipv6Addr = CLIENT6.parse().expect("client address");
    let solicit = frames::neighbor_solicit(client_mac, client6, vip6);
    let rate = flood(lab, &node, sys::ETH_P_IPV6, &solicit);
    println!("bench ns_replies_per_s {rate:.0} replies/s");
}

/// (when, destination, link-layer address) of an RTM_NEWNEIGH.
type NeighEvent = (Instant, IpAddr, Vec<u8>);

/// Parses RTM_NEWNEIGH messages (ndmsg + NDA_DST / NDA_LLADDR attributes) in one datagram.
fn parse_neigh(mut datagram: &[u8], at: Instant, out: &mpsc::Sender<NeighEvent>) {
    const NDMSG_LEN: usize = 12;
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes(datagram[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().expect("2 bytes"));
        if len < 16 || len > datagram.len() {
            return;
        }
        if kind == libc::RTM_NEWNEIGH && len >= 16 + NDMSG_LEN {
            let mut attrs = &datagram[16 + NDMSG_LEN..len];
            let (mut dst, mut lladdr) = (None, None);
            while attrs.len() >= 4 {
                let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                let atype = u16::from_ne_bytes([attrs[2], attrs[3]]);
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                let value = &attrs[4..alen];
                match (atype, value.len()) {
                    (libc::NDA_DST, 4) => {
                        dst = Some(IpAddr::from(<[u8; 4]>::try_from(value).expect("4")))
                    }
                    (libc::NDA_DST, 16) => {
                        dst = Some(IpAddr::from(<[u8; 16]>::try_from(value).expect("16")))
                    }
                    (libc::NDA_LLADDR, _) => lladdr = Some(value.to_vec()),
                    _ => {}
                }
                attrs = attrs.get((alen + 3) & !3..).unwrap_or(&[]);
            }
            if let (Some(dst), Some(lladdr)) = (dst, lladdr) {
                let _ = out.send((at, dst, lladdr));
            }
        }
        datagram = datagram.get((len + 3) & !3..).unwrap_or(&[]);
    }
}

/// Subscribes to neighbour changes inside the client namespace; events arrive on the channel
/// until `stop` is set.
fn watch_neighbours(lab: &Lab, stop: Arc<AtomicBool>) -> mpsc::Receiver<NeighEvent> {
    let fd = lab
        .client
        .run(|| {
            // SAFETY: socket(2), bind(2) and setsockopt(2) on a descriptor owned by OwnedFd.
            unsafe {
                let fd = libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_ROUTE,
                );
                assert!(fd >= 0, "netlink socket: {}", io::Error::last_os_error());
                let fd = OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_nl = zeroed();
                addr.nl_family = libc::AF_NETLINK as u16;
                addr.nl_groups = libc::RTMGRP_NEIGH as u32;
                let rc = libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_nl).cast(),
                    size_of::<libc::sockaddr_nl>() as u32,
                );
                assert_eq!(rc, 0, "netlink bind: {}", io::Error::last_os_error());
                let timeout = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32,
                );
                fd
            }
        })
        .expect("enter client");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if let Ok(n) = usize::try_from(n) {
                parse_neigh(&buf[..n], Instant::now(), &tx);
            }
        }
    });
    rx
}

fn wait_neighbour(events: &mpsc::Receiver<NeighEvent>, vip: IpAddr, mac: MacAddr) -> Instant {
    loop {
        let (at, dst, lladdr) = events
            .recv_timeout(Duration::from_secs(10))
            .expect("no neighbour change within 10 s");
        if dst == vip && lladdr == mac.0 {
            return at;
        }
    }
}

fn neigh_flip(lab: &Lab) {
    let one_round = || L2Config {
        burst: BurstConfig {
            count: 1,
            ..BurstConfig::default()
        },
        ..eth0()
    };
    let nodes = [
        (
            lab.announcer(&lab.a, one_round()).expect("announcer A"),
            MacAddr(lab.a.mac("eth0").expect("mac")),
        ),
        (
            lab.announcer(&lab.b, one_round()).expect("announcer B"),
            MacAddr(lab.b.mac("eth0").expect("mac")),
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let events = watch_neighbours(lab, Arc::clone(&stop));
    for (metric, vip) in [
        ("neigh_flip_ms", IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))),
        ("neigh_flip_v6_ms", "2001:db8::c8".parse().expect("vip")),
    ] {
        nodes[0].0.announce("eth0", vip).expect("announce");
        wait_neighbour(&events, vip, nodes[0].1);
        let mut samples = Vec::new();
        for round in 0..10 {
            let (from, to) = (&nodes[round % 2], &nodes[(round + 1) % 2]);
            std::thread::sleep(Duration::from_millis(1200));
            from.0.withdraw("eth0", vip).expect("withdraw");
            let start = Instant::now();
            to.0.announce("eth0", vip).expect("announce");
            let flipped = wait_neighbour(&events, vip, to.1);
            samples.push(flipped.duration_since(start).as_secs_f64() * 1e3);
        }
        for (node, _) in &nodes {
            node.withdraw("eth0", vip).expect("withdraw");
        }
        samples.sort_by(f64::total_cmp);
        println!("bench {metric} {:.3} ms", samples[samples.len() / 2]);
    }
    stop.store(true, Ordering::Relaxed);
}
