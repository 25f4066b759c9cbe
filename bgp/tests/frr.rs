//! End to end against FRR 8.4 (zebra + bgpd) as the top-of-rack router, in network namespaces:
//! eBGP and iBGP, IPv4 and IPv6, ECMP in the router's kernel FIB, withdrawal, attributes in
//! FRR's JSON, TCP MD5, and a router restart.

mod common;

use std::time::Duration;

use cairn_bgp::{LargeCommunity, Peers, RouteAttrs};
use cairn_e2e::netns::{is_root, Netns};
use cairn_e2e::routers::{kernel_next_hops, wait_for, Frr, Neighbor, RouterConfig};
use common::{link, peer, NsSpeaker};

const WAIT: Duration = Duration::from_secs(30);

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn wait_next_hops(router: &Netns, prefix: &str, want: &[&str]) {
    let got = wait_for(WAIT, || {
        let hops = kernel_next_hops(router, prefix).ok()?;
        (hops == want).then_some(hops)
    });
    assert!(
        got.is_some(),
        "{prefix}: want next hops {want:?}, kernel has {:?}",
        kernel_next_hops(router, prefix)
    );
}

/// Router in AS 65000 with two speakers, each on its own link, each with one IPv4 and one
/// IPv6 session; both speakers announce the same /32 and /128.
#[test]
fn frr_installs_ecmp_from_two_ebgp_speakers_for_ipv4_and_ipv6_and_removes_on_withdraw() {
    assert!(is_root(), "network namespace tests need root");
    let router = Netns::new("bgpr").unwrap();
    let s1 = Netns::new("bgps").unwrap();
    let s2 = Netns::new("bgps").unwrap();
    link(&router, &s1, "a", "192.0.2", "2001:db8:a");
    link(&router, &s2, "b", "198.51.100", "2001:db8:b");
    let neighbors = vec![
        Neighbor::new("192.0.2.2".parse().unwrap(), 65001),
        Neighbor::new("2001:db8:a::2".parse().unwrap(), 65001),
        Neighbor::new("198.51.100.2".parse().unwrap(), 65002),
        Neighbor::new("2001:db8:b::2".parse().unwrap(), 65002),
    ];
    let frr = Frr::start(
        &router,
        &Frr::bgpd_conf(&RouterConfig {
            asn: 65000,
            router_id: "203.0.113.254".parse().unwrap(),
            neighbors,
        }),
    )
    .unwrap();
    let sp1 = NsSpeaker::start(&s1);
    let sp2 = NsSpeaker::start(&s2);
    for (sp, asn, id, v4, v6) in [
        (&sp1, 65001, "192.0.2.2", "192.0.2.1", "2001:db8:a::1"),
        (&sp2, 65002, "198.51.100.2", "198.51.100.1", "2001:db8:b::1"),
    ] {
        sp.speaker.add_peer(peer(v4, asn, 65000, id)).unwrap();
        sp.speaker.add_peer(peer(v6, asn, 65000, id)).unwrap();
    }
    let attrs = RouteAttrs {
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
        sp.speaker
            .announce(net("2001:db8:ff::10/128"), attrs.clone(), Peers::All);
    }
    wait_next_hops(&router, "203.0.113.10", &["192.0.2.2", "198.51.100.2"]);
    wait_next_hops(
        &router,
        "2001:db8:ff::10",
        &["2001:db8:a::2", "2001:db8:b::2"],
    );

    let route = frr.bgp_route("203.0.113.10/32").unwrap();
    let path = &route["paths"][0];
    assert_eq!(path["community"]["string"], "65001:100", "{route:#}");
    assert_eq!(path["largeCommunity"]["string"], "65001:7:9", "{route:#}");
    let stats = sp1.speaker.peer_stats();
    assert!(
        stats.iter().all(|s| s.session.prefixes_advertised == 1),
        "{stats:?}"
    );

    sp1.speaker.withdraw(net("203.0.113.10/32"));
    sp1.speaker.withdraw(net("2001:db8:ff::10/128"));
    wait_next_hops(&router, "203.0.113.10", &["198.51.100.2"]);
    wait_next_hops(&router, "2001:db8:ff::10", &["2001:db8:b::2"]);
    sp2.speaker.withdraw(net("203.0.113.10/32"));
    sp2.speaker.withdraw(net("2001:db8:ff::10/128"));
    wait_next_hops(&router, "203.0.113.10", &[]);
    wait_next_hops(&router, "2001:db8:ff::10", &[]);
}

/// One router and one speaker on one link (IPv4 + IPv6 addresses).
fn single_link(tag: &str) -> (Netns, Netns) {
    assert!(is_root(), "network namespace tests need root");
    let router = Netns::new(tag).unwrap();
    let speaker = Netns::new(tag).unwrap();
    link(&router, &speaker, "a", "192.0.2", "2001:db8:a");
    (router, speaker)
}

fn frr_with(router: &Netns, asn: u32, neighbors: Vec<Neighbor>) -> Frr<'_> {
    Frr::start(
        router,
        &Frr::bgpd_conf(&RouterConfig {
            asn,
            router_id: "203.0.113.254".parse().unwrap(),
            neighbors,
        }),
    )
    .unwrap()
}

#[test]
fn frr_ibgp_routes_carry_local_pref_empty_as_path_and_the_bound_source_as_next_hop() {
    let (router, s) = single_link("bgpi");
    // The IPv4 session binds a second address: FRR must see it as the peer and next hop.
    s.addr("s-a", "192.0.2.3/24").unwrap();
    let frr = frr_with(
        &router,
        65000,
        vec![
            Neighbor::new("192.0.2.3".parse().unwrap(), 65000),
            Neighbor::new("2001:db8:a::2".parse().unwrap(), 65000),
        ],
    );
    let sp = NsSpeaker::start(&s);
    let mut v4 = peer("192.0.2.1", 65000, 65000, "192.0.2.2");
    v4.local_address = Some("192.0.2.3".parse().unwrap());
    sp.speaker.add_peer(v4).unwrap();
    sp.speaker
        .add_peer(peer("2001:db8:a::1", 65000, 65000, "192.0.2.2"))
        .unwrap();
    let attrs = RouteAttrs {
        local_pref: Some(250),
        ..RouteAttrs::default()
    };
    sp.speaker
        .announce(net("203.0.113.20/32"), attrs.clone(), Peers::All);
    sp.speaker
        .announce(net("2001:db8:ff::20/128"), attrs, Peers::All);
    wait_next_hops(&router, "203.0.113.20", &["192.0.2.3"]);
    wait_next_hops(&router, "2001:db8:ff::20", &["2001:db8:a::2"]);
    for prefix in ["203.0.113.20/32", "2001:db8:ff::20/128"] {
        let route = frr.bgp_route(prefix).unwrap();
        let path = &route["paths"][0];
        assert_eq!(path["locPrf"], 250, "{route:#}");
        assert_eq!(path["aspath"]["string"], "Local", "{route:#}");
    }

    // Removing the peer ends the session with Cease / Administrative Shutdown.
    sp.remove_peer("192.0.2.1".parse().unwrap());
    let neighbor = "192.0.2.3";
    let reason = wait_for(WAIT, || {
        let json = frr
            .vtysh_json(&format!("show bgp neighbors {neighbor} json"))
            .ok()?;
        let reason = json[neighbor]["lastNotificationReason"]
            .as_str()?
            .to_owned();
        (json[neighbor]["bgpState"] != "Established").then_some(reason)
    });
    assert_eq!(reason.as_deref(), Some("Cease/Administrative Shutdown"));
    wait_next_hops(&router, "203.0.113.20", &[]);
}

#[test]
fn frr_md5_session_establishes_with_the_right_password_only() {
    let (router, s) = single_link("bgpm");
    let mut right = Neighbor::new("192.0.2.2".parse().unwrap(), 65001);
    right.password = Some("cairn-secret".into());
    let mut wrong = Neighbor::new("2001:db8:a::2".parse().unwrap(), 65001);
    wrong.password = Some("cairn-secret".into());
    let frr = frr_with(&router, 65000, vec![right, wrong]);
    let sp = NsSpeaker::start(&s);
    let mut good = peer("192.0.2.1", 65001, 65000, "192.0.2.2");
    good.md5_password = Some("cairn-secret".into());
    let mut bad = peer("2001:db8:a::1", 65001, 65000, "192.0.2.2");
    bad.md5_password = Some("not-the-secret".into());
    sp.speaker.add_peer(good).unwrap();
    sp.speaker.add_peer(bad).unwrap();
    sp.wait_established("192.0.2.1".parse().unwrap(), WAIT);
    // Give the wrong-password session several connect attempts (retry 1 s, at most 2 s).
    std::thread::sleep(Duration::from_secs(6));
    let stats = sp.speaker.peer_stats();
    let bad_stats = stats
        .iter()
        .find(|s| s.peer == "2001:db8:a::1".parse::<std::net::IpAddr>().unwrap())
        .unwrap();
    assert_ne!(
        bad_stats.session.state,
        cairn_bgp::State::Established,
        "{stats:?}"
    );
    assert_eq!(bad_stats.session.messages_in, 0, "{stats:?}");
    assert_eq!(
        frr.neighbor_state("192.0.2.2".parse().unwrap()).as_deref(),
        Some("Established")
    );
    assert_ne!(
        frr.neighbor_state("2001:db8:a::2".parse().unwrap())
            .as_deref(),
        Some("Established")
    );
}

#[test]
fn frr_restart_reestablishes_and_receives_the_current_table_again_after_end_of_rib() {
    let (router, s) = single_link("bgpx");
    let mut frr = frr_with(
        &router,
        65000,
        vec![Neighbor::new("192.0.2.2".parse().unwrap(), 65001)],
    );
    let sp = NsSpeaker::start(&s);
    let mut config = peer("192.0.2.1", 65001, 65000, "192.0.2.2");
    config.session.graceful_restart = Some(cairn_bgp::GracefulRestart {
        restart_time: 120,
        forwarding_preserved: true,
    });
    sp.speaker.add_peer(config).unwrap();
    for i in 1..=3 {
        sp.speaker.announce(
            net(&format!("203.0.113.{i}/32")),
            RouteAttrs::default(),
            Peers::All,
        );
    }
    wait_next_hops(&router, "203.0.113.3", &["192.0.2.2"]);
    // Graceful restart: FRR saw the capability (timer, F bit) and End-of-RIB after the table.
    let json = frr.vtysh_json("show bgp neighbors 192.0.2.2 json").unwrap();
    let gr = &json["192.0.2.2"]["gracefulRestartInfo"];
    assert_eq!(gr["timers"]["receivedRestartTimer"], 120, "{gr:#}");
    assert_eq!(gr["ipv4Unicast"]["fBit"], true, "{gr:#}");
    assert_eq!(gr["endOfRibRecv"]["ipv4Unicast"], true, "{gr:#}");

    // Route refresh: FRR asks again and the speaker re-sends the table in the same session.
    let updates_before = sp.speaker.peer_stats()[0].session.updates_out;
    frr.vtysh("clear bgp ipv4 unicast 192.0.2.2 soft in")
        .unwrap();
    let resent = wait_for(WAIT, || {
        let stats = sp.speaker.peer_stats();
        (stats[0].session.updates_out > updates_before).then_some(stats)
    });
    let stats = resent.expect("UPDATE re-sent after ROUTE-REFRESH");
    assert_eq!(stats[0].session.last_error, None, "{stats:?}");
    frr.stop_bgpd();
    // zebra removes a dead bgpd's routes, so what comes back below was sent again.
    wait_next_hops(&router, "203.0.113.3", &[]);
    // While the router is down, one route goes away: the restarted router must not get it.
    sp.speaker.withdraw(net("203.0.113.1/32"));
    frr.start_bgpd().unwrap();
    wait_next_hops(&router, "203.0.113.2", &["192.0.2.2"]);
    wait_next_hops(&router, "203.0.113.3", &["192.0.2.2"]);
    let count = wait_for(WAIT, || {
        frr.bgp_prefix_count(false).ok().filter(|&n| n == 2)
    });
    assert_eq!(count, Some(2), "{:?}", frr.bgp_prefix_count(false));
    assert!(kernel_next_hops(&router, "203.0.113.1").unwrap().is_empty());
    let stats = sp.speaker.peer_stats();
    assert!(stats[0].session.last_error.is_some(), "{stats:?}");
}

#[test]
fn frozen_router_trips_the_hold_timer_and_the_session_comes_back_with_its_routes() {
    let (router, s) = single_link("bgph");
    let frr = frr_with(
        &router,
        65000,
        vec![Neighbor::new("192.0.2.2".parse().unwrap(), 65001)],
    );
    let sp = NsSpeaker::start(&s);
    let mut config = peer("192.0.2.1", 65001, 65000, "192.0.2.2");
    config.session.hold_time = 3;
    sp.speaker.add_peer(config).unwrap();
    sp.speaker
        .announce(net("203.0.113.30/32"), RouteAttrs::default(), Peers::All);
    wait_next_hops(&router, "203.0.113.30", &["192.0.2.2"]);

    frr.pause_bgpd(true);
    let hold_expired = Some(cairn_bgp::DownReason::Sent(
        cairn_bgp::SessionError::HoldTimerExpired,
    ));
    let tripped = wait_for(WAIT, || {
        let stats = sp.speaker.peer_stats();
        (stats[0].session.last_error == hold_expired).then_some(())
    });
    frr.pause_bgpd(false);
    assert!(tripped.is_some(), "{:?}", sp.speaker.peer_stats());
    sp.wait_established("192.0.2.1".parse().unwrap(), WAIT);
    let count = wait_for(WAIT, || {
        frr.bgp_prefix_count(false).ok().filter(|&n| n == 1)
    });
    assert_eq!(count, Some(1));
    wait_next_hops(&router, "203.0.113.30", &["192.0.2.2"]);
}
