//! End to end against GoBGP 3 (gobgpd) as the top-of-rack router, in network namespaces:
//! eBGP over IPv4 and IPv6 and iBGP with TCP MD5, both speakers' paths for the same /32 in gobgpd's RIB,
//! attributes in its JSON, withdrawal, and a router restart.
//!
//! gobgpd has no FIB here (its zebra integration is not used, see DESIGN.md), so ECMP in a
//! kernel FIB is checked against FRR (`tests/frr.rs`); here the RIB holds both paths.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use cairn_bgp::{LargeCommunity, Peers, RouteAttrs};
use cairn_e2e::netns::{is_root, Netns};
use cairn_e2e::routers::{wait_for, Gobgp, Neighbor, RouterConfig};
use common::{link, peer, NsSpeaker};

const WAIT: Duration = Duration::from_secs(30);

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn next_hops(paths: &[serde_json::Value]) -> Vec<String> {
    let mut hops: Vec<String> = paths
        .iter()
        .flat_map(|p| p["attrs"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["nexthop"].as_str().map(str::to_owned))
        .collect();
    hops.sort();
    hops
}

fn wait_paths(gobgp: &Gobgp, prefix: &str, want: &[&str]) -> Vec<serde_json::Value> {
    let got = wait_for(WAIT, || {
        let paths = gobgp.rib_paths(prefix).ok()?;
        (next_hops(&paths) == want).then_some(paths)
    });
    got.unwrap_or_else(|| {
        panic!(
            "{prefix}: want next hops {want:?}, gobgpd has {:?}",
            gobgp.rib_paths(prefix)
        )
    })
}

#[test]
fn gobgp_learns_ebgp_and_md5_ibgp_paths_over_ipv4_and_ipv6_with_attributes_and_withdrawals() {
    assert!(is_root(), "network namespace tests need root");
    let router = Netns::new("bgpg").unwrap();
    let s1 = Netns::new("bgpg").unwrap();
    let s2 = Netns::new("bgpg").unwrap();
    link(&router, &s1, "a", "192.0.2", "2001:db8:a");
    link(&router, &s2, "b", "198.51.100", "2001:db8:b");
    let mut gobgp = Gobgp::start(
        &router,
        &Gobgp::config_toml(&RouterConfig {
            asn: 65000,
            router_id: "203.0.113.254".parse().unwrap(),
            neighbors: vec![
                Neighbor::new("192.0.2.2".parse().unwrap(), 65001),
                Neighbor::new("2001:db8:a::2".parse().unwrap(), 65001),
                Neighbor {
                    password: Some("cairn-md5".into()),
                    ..Neighbor::new("198.51.100.2".parse().unwrap(), 65000)
                },
            ],
        }),
    )
    .unwrap();
    // Speaker 1: eBGP over IPv4 and IPv6. Speaker 2: iBGP over IPv4 with TCP MD5.
    let sp1 = NsSpeaker::start(&s1);
    let sp2 = NsSpeaker::start(&s2);
    sp1.speaker
        .add_peer(peer("192.0.2.1", 65001, 65000, "192.0.2.2"))
        .unwrap();
    sp1.speaker
        .add_peer(peer("2001:db8:a::1", 65001, 65000, "192.0.2.2"))
        .unwrap();
    let mut ibgp = peer("198.51.100.1", 65000, 65000, "198.51.100.2");
    ibgp.md5_password = Some("cairn-md5".into());
    sp2.speaker.add_peer(ibgp).unwrap();
    let attrs = RouteAttrs {
        local_pref: Some(300),
        communities: vec![65001 << 16 | 100],
        large_communities: vec![LargeCommunity {
            global: 65001,
            local1: 7,
            local2: 9,
        }],
        ..RouteAttrs::default()
    };
    for sp in [&sp1, &sp2] {
        sp.speaker
            .announce(net("203.0.113.10/32"), attrs.clone(), Peers::All);
    }
    sp1.speaker
        .announce(net("2001:db8:ff::10/128"), attrs.clone(), Peers::All);
    let paths = wait_paths(&gobgp, "203.0.113.10/32", &["192.0.2.2", "198.51.100.2"]);
    wait_paths(&gobgp, "2001:db8:ff::10/128", &["2001:db8:a::2"]);
    let text = serde_json::to_string(&paths).unwrap();
    // Communities as numbers (65001:100), large community fields, LOCAL_PREF from iBGP only.
    assert!(text.contains(&(65001u32 << 16 | 100).to_string()), "{text}");
    assert!(
        text.contains(r#"{"ASN":65001,"LocalData1":7,"LocalData2":9}"#),
        "{text}"
    );
    // eBGP: AS_PATH is one AS_SEQUENCE (type 2) holding our AS.
    assert!(
        text.contains(r#"{"asns":[65001],"num":1,"segment_type":2}"#),
        "{text}"
    );
    let local_prefs: Vec<&serde_json::Value> = paths
        .iter()
        .flat_map(|p| p["attrs"].as_array().into_iter().flatten())
        .filter(|a| a["type"] == 5)
        .collect();
    assert_eq!(local_prefs.len(), 1, "{text}");
    assert_eq!(local_prefs[0]["value"], 300, "{text}");

    // Router restart: sessions come back and the table is sent again.
    gobgp.stop();
    gobgp.start_daemon().unwrap();
    wait_paths(&gobgp, "203.0.113.10/32", &["192.0.2.2", "198.51.100.2"]);
    wait_paths(&gobgp, "2001:db8:ff::10/128", &["2001:db8:a::2"]);

    sp1.speaker.withdraw(net("203.0.113.10/32"));
    sp1.speaker.withdraw(net("2001:db8:ff::10/128"));
    wait_paths(&gobgp, "203.0.113.10/32", &["198.51.100.2"]);
    wait_paths(&gobgp, "2001:db8:ff::10/128", &[]);
    let established = sp1
        .speaker
        .peer_stats()
        .iter()
        .all(|s| s.session.state == cairn_bgp::State::Established);
    assert!(established);
    assert!(gobgp.neighbor_established("198.51.100.2".parse::<IpAddr>().unwrap()));
}
