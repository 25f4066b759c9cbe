//! Ownership throughput, on 10 000 IPv4 VIPs over 3 nodes:
//!
//! - `ownership_10k_vips_3_nodes_us`: the rendezvous owner of every VIP;
//! - `desired_10k_vips_3_nodes_us`: one node's whole desired state (L2 eligibility of every node,
//!   ownership, BGP routes), what the speaker recomputes on each event.
//!
//! Each figure is the median of 21 runs, printed as `bench <metric> <value> us`.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use cairn_speaker::announcements::desired;
use cairn_speaker::eligibility::{
    BgpAdvertisement, BgpPeer, L2Advertisement, Node, PoolScope, RouteAttributes, SharingService,
    Snapshot, TrafficPolicy, Vip,
};
use cairn_speaker::endpoints::ServiceKey;
use cairn_speaker::ownership::rendezvous;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn median_us(mut f: impl FnMut()) -> f64 {
    let mut runs = Vec::with_capacity(21);
    for _ in 0..21 {
        let start = Instant::now();
        f();
        runs.push(start.elapsed().as_secs_f64() * 1e6);
    }
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() {
    let base = u32::from(Ipv4Addr::new(198, 51, 100, 0));
    let ips: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(base.wrapping_add(i))))
        .collect();

    let owners = median_us(|| {
        let mut owned_by_a = 0usize;
        for ip in &ips {
            if rendezvous(black_box(*ip), black_box(NODES)) == Some("node-a") {
                owned_by_a += 1;
            }
        }
        black_box(owned_by_a);
    });
    println!("bench ownership_10k_vips_3_nodes_us {owners:.0} us");

    let snapshot = Snapshot {
        nodes: NODES
            .iter()
            .map(|n| {
                let node = Node {
                    labels: BTreeMap::new(),
                    interfaces_up: ["eth0".to_string()].into(),
                };
                (n.to_string(), node)
            })
            .collect(),
        l2_advertisements: vec![L2Advertisement {
            name: "l2".into(),
            pools: PoolScope::All,
            node_selectors: vec![],
            interfaces: BTreeSet::new(),
        }],
        bgp_advertisements: vec![BgpAdvertisement {
            name: "bgp".into(),
            pools: PoolScope::All,
            node_selectors: vec![],
            peers: None,
            aggregation_length_v4: 32,
            aggregation_length_v6: 128,
            attributes: RouteAttributes::default(),
        }],
        bgp_peers: vec![BgpPeer {
            name: "tor".into(),
            node_selectors: vec![],
        }],
        ..Default::default()
    };
    let vips: Vec<Vip> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| Vip {
            ip: *ip,
            pool: "pool".into(),
            services: vec![SharingService {
                key: ServiceKey::new("default", format!("svc-{i}")),
                traffic_policy: TrafficPolicy::Cluster,
            }],
        })
        .collect();
    let candidates: BTreeSet<String> = NODES.iter().map(|n| n.to_string()).collect();
    let plan = median_us(|| {
        black_box(desired(
            black_box(&snapshot),
            &vips,
            "node-a",
            true,
            &candidates,
        ));
    });
    println!("bench desired_10k_vips_3_nodes_us {plan:.0} us");
}
