//! Announcing 10 000 host routes to FRR: Cairn against gobgpd, same router, same run.
//!
//! Both senders hold the whole table before their session to FRR comes up; the clock starts
//! when FRR's session with the sender reaches Established (FRR's `%ADJCHANGE … Up` log line,
//! millisecond timestamps: the same clock for both; never from process start, as gobgpd waits
//! 5–9 s before connecting)
//! and stops when FRR reports all 10 000 prefixes received from that neighbour (polled with
//! vtysh without pause). Each sender runs five rounds (session reset between rounds); medians are printed.
//!
//! The prefixes are IPv6 /128s from 2001:db8:100::/48: the documentation IPv4 ranges the lab
//! may use hold only 768 distinct /32s.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_bgp::{Peers, RouteAttrs};
use cairn_e2e::netns::{is_root, Netns};
use cairn_e2e::routers::{wait_for, Frr, Gobgp, Neighbor, RouterConfig};
use common::{link, peer, NsSpeaker};

const ROUTES: u32 = 10_000;
const ROUNDS: usize = 5;

fn prefix(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(0x2001_0db8_0100_u128 << 80 | u128::from(i))
}

/// Waits until FRR has all routes from `neighbor`; returns when it saw them (ms of day).
fn wait_all(frr: &Frr, neighbor: IpAddr) -> u64 {
    wait_for_fast(Duration::from_secs(120), || {
        (frr.neighbor_prefixes(neighbor, true).ok()?? == u64::from(ROUTES))
            .then(|| ms_of_day(SystemTime::now()))
    })
    .expect("FRR received every route")
}

/// Milliseconds since midnight UTC (FRR logs in UTC: `main` sets TZ for its children).
fn ms_of_day(t: SystemTime) -> u64 {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    (ms % DAY_MS as u128) as u64
}

const DAY_MS: u64 = 86_400_000;

/// When FRR's session with `neighbor` last came up, as milliseconds since midnight, from the
/// `%ADJCHANGE: neighbor … Up` line of its log (millisecond timestamps), so both senders are
/// timed by the same clock.
fn established_ms_of_day(frr: &Frr, neighbor: IpAddr) -> u64 {
    let log = std::fs::read_to_string(frr.dir().join("bgpd.log")).unwrap();
    let needle = format!("%ADJCHANGE: neighbor {neighbor}");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(&needle) && l.trim_end().ends_with("Up"))
        .expect("FRR logged the session coming up");
    // "2026/11/22 02:50:01.123 BGP: ..."
    let time = line.split_whitespace().nth(1).expect("timestamp");
    let mut parts = time
        .split([':', '.'])
        .map(|p| p.parse::<u64>().expect("number"));
    let (h, m, s, ms) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    ((h * 60 + m) * 60 + s) * 1000 + ms
}

/// Milliseconds from the session coming up (FRR's log) to FRR holding every route.
fn elapsed_ms(frr: &Frr, neighbor: IpAddr) -> f64 {
    let done = wait_all(frr, neighbor);
    let up = established_ms_of_day(frr, neighbor);
    ((done + DAY_MS - up) % DAY_MS) as f64
}

fn wait_none(frr: &Frr, neighbor: IpAddr) {
    wait_for(Duration::from_secs(60), || {
        (frr.neighbor_prefixes(neighbor, true).ok()?.unwrap_or(0) == 0).then_some(())
    })
    .expect("FRR dropped the routes");
}

/// Like `wait_for` but polling without pause (each vtysh call takes a few milliseconds).
fn wait_for_fast<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = check() {
            return Some(v);
        }
    }
    None
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An MRT TABLE_DUMP_V2 file (RFC 6396 §4.3) holding the routes, for `gobgp mrt inject`.
fn mrt_file(next_hop: Ipv6Addr) -> Vec<u8> {
    fn record(out: &mut Vec<u8>, subtype: u16, body: &[u8]) {
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&13u16.to_be_bytes()); // TABLE_DUMP_V2
        out.extend_from_slice(&subtype.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut out = Vec::new();
    // PEER_INDEX_TABLE: collector id, empty view name, one IPv6 peer with a 4-byte AS.
    let mut peers = vec![198, 51, 100, 2, 0, 0, 0, 1, 0x03, 198, 51, 100, 2];
    peers.extend_from_slice(&next_hop.octets());
    peers.extend_from_slice(&65002u32.to_be_bytes());
    record(&mut out, 1, &peers);
    // The gobgp CLI exits before gobgpd has read the last few hundred paths of its stream, so
    // the first 2 000 routes are repeated at the end as padding (re-adding a path is a no-op).
    for i in (0..ROUTES).chain(0..2_000) {
        // ORIGIN IGP, empty AS_PATH, MP_REACH in full form (gobgp's MRT reader wants AFI/SAFI).
        let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 0, 0x80, 14, 21, 0, 2, 1, 16];
        attrs.extend_from_slice(&next_hop.octets());
        attrs.push(0);
        let mut body = i.to_be_bytes().to_vec();
        body.push(128);
        body.extend_from_slice(&prefix(i).octets());
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        record(&mut out, 4, &body); // RIB_IPV6_UNICAST
    }
    out
}

fn main() {
    assert!(
        is_root(),
        "the benchmark builds network namespaces and needs root"
    );
    let router = Netns::new("bgpb").unwrap();
    let s = Netns::new("bgpb").unwrap();
    let g = Netns::new("bgpb").unwrap();
    link(&router, &s, "a", "192.0.2", "2001:db8:a");
    link(&router, &g, "b", "198.51.100", "2001:db8:b");
    let cairn_addr: IpAddr = "2001:db8:a::2".parse().unwrap();
    let gobgp_addr: IpAddr = "2001:db8:b::2".parse().unwrap();
    let router_on_a: IpAddr = "2001:db8:a::1".parse().unwrap();
    let frr = Frr::start(
        &router,
        &Frr::bgpd_conf(&RouterConfig {
            asn: 65000,
            router_id: "203.0.113.254".parse().unwrap(),
            neighbors: vec![
                Neighbor::new(cairn_addr, 65001),
                Neighbor::new(gobgp_addr, 65002),
            ],
        }),
    )
    .unwrap();

    // Cairn.
    let sp = NsSpeaker::start(&s);
    for i in 0..ROUTES {
        sp.speaker.announce(
            IpAddr::V6(prefix(i)).into(),
            RouteAttrs::default(),
            Peers::All,
        );
    }
    let mut cairn_ms = Vec::new();
    for _ in 0..ROUNDS {
        sp.speaker
            .add_peer(peer("2001:db8:a::1", 65001, 65000, "192.0.2.2"))
            .unwrap();
        cairn_ms.push(elapsed_ms(&frr, cairn_addr));
        let stats = sp.speaker.peer_stats();
        eprintln!(
            "cairn round: {:.1} ms, {} UPDATEs",
            cairn_ms.last().unwrap(),
            stats[0].session.updates_out
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(sp.speaker.remove_peer(router_on_a))
            .unwrap();
        wait_none(&frr, cairn_addr);
    }
    drop(sp);

    // GoBGP: routes injected first, neighbour added afterwards.
    let gobgp = Gobgp::start(
        &g,
        &Gobgp::config_toml(&RouterConfig {
            asn: 65002,
            router_id: "198.51.100.2".parse().unwrap(),
            neighbors: vec![],
        }),
    )
    .unwrap();
    let mrt = gobgp.dir().join("routes.mrt");
    std::fs::write(&mrt, mrt_file("2001:db8:b::2".parse().unwrap())).unwrap();
    let all = format!("Destination: {ROUTES},");
    wait_for(Duration::from_secs(60), || {
        gobgp
            .cli(&["mrt", "inject", "global", &mrt.display().to_string()])
            .ok()?;
        std::thread::sleep(Duration::from_millis(500));
        let summary = gobgp
            .cli(&["global", "rib", "-a", "ipv6", "summary"])
            .ok()?;
        summary.contains(&all).then_some(())
    })
    .expect("gobgpd holds every injected route");
    gobgp
        .cli(&["neighbor", "add", "2001:db8:b::1", "as", "65000"])
        .unwrap();
    let mut gobgp_ms = Vec::new();
    for round in 0..ROUNDS {
        gobgp_ms.push(elapsed_ms(&frr, gobgp_addr));
        eprintln!("gobgp round: {:.1} ms", gobgp_ms.last().unwrap());
        if round + 1 < ROUNDS {
            gobgp.cli(&["neighbor", "2001:db8:b::1", "reset"]).unwrap();
            wait_none(&frr, gobgp_addr);
        }
    }

    let cairn = median(cairn_ms);
    let gobgp = median(gobgp_ms);
    println!("bench bgp_10k_to_frr_ms {cairn:.1} ms");
    println!("bench gobgp_10k_to_frr_ms {gobgp:.1} ms");
    println!("bench bgp_vs_gobgp_ratio {:.3} ratio", cairn / gobgp);
}
