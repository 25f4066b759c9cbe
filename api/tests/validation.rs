//! Validation as a specification: what each resource accepts, and what it rejects with which
//! field named.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use cairn_api::v1alpha1::*;
use cairn_api::validation::{self, AddressRange, Community, FieldError};
use proptest::prelude::*;

fn pool_spec(addresses: &[&str]) -> IPAddressPoolSpec {
    IPAddressPoolSpec {
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocate_to: None,
    }
}

fn peer_spec() -> BGPPeerSpec {
    BGPPeerSpec {
        my_asn: 64512,
        peer_asn: 64513,
        peer_address: "198.51.100.1".into(),
        ..Default::default()
    }
}

fn only_problem(result: Result<impl std::fmt::Debug, validation::Problems>) -> FieldError {
    let problems = result.expect_err("expected a validation error").0;
    assert_eq!(
        problems.len(),
        1,
        "expected exactly one problem: {problems:?}"
    );
    problems.into_iter().next().unwrap()
}

#[test]
fn a_pool_of_cidrs_and_ranges_of_both_families_is_valid() {
    let pool = validation::pool(&pool_spec(&[
        "192.0.2.0/28",
        "198.51.100.10-198.51.100.20",
        "2001:db8::/120",
        "2001:db8:1::5-2001:db8:1::9",
    ]))
    .unwrap();
    assert_eq!(pool.ranges.len(), 4);
    assert_eq!(pool.ranges[0].len(), 16);
    assert_eq!(pool.ranges[1].len(), 11);
    assert_eq!(pool.ranges[2].len(), 256);
    assert!(pool.ranges[3].contains("2001:db8:1::7".parse().unwrap()));
    assert!(!pool.ranges[3].contains("192.0.2.7".parse().unwrap()));
}

#[test]
fn a_bad_cidr_is_rejected_naming_the_entry() {
    let e = only_problem(validation::pool(&pool_spec(&[
        "192.0.2.0/24",
        "192.0.2.300/32",
    ])));
    assert_eq!(e.path, "spec.addresses[1]");
    assert!(e.message.contains("192.0.2.300/32"), "{e}");
}

#[test]
fn a_cidr_with_host_bits_is_rejected_with_the_likely_intent() {
    let e = only_problem(validation::pool(&pool_spec(&["192.0.2.7/24"])));
    assert_eq!(e.path, "spec.addresses[0]");
    assert!(e.message.contains("192.0.2.0/24"), "{e}");
}

#[test]
fn a_reversed_range_is_rejected() {
    let e = only_problem(validation::pool(&pool_spec(&["192.0.2.20-192.0.2.10"])));
    assert_eq!(e.path, "spec.addresses[0]");
    assert!(e.message.contains("reversed"), "{e}");
}

#[test]
fn a_range_across_address_families_is_rejected() {
    let e = only_problem(validation::pool(&pool_spec(&["192.0.2.1-2001:db8::1"])));
    assert_eq!(e.path, "spec.addresses[0]");
    assert!(e.message.contains("mixes IPv4 and IPv6"), "{e}");
}

#[test]
fn an_empty_pool_is_rejected() {
    let e = only_problem(validation::pool(&pool_spec(&[])));
    assert_eq!(e.path, "spec.addresses");
}

#[test]
fn every_problem_of_a_pool_is_reported_at_once() {
    let mut spec = pool_spec(&["nonsense", "192.0.2.9-192.0.2.1"]);
    spec.allocate_to = Some(ServiceAllocation {
        namespaces: vec!["Not_A_Namespace".into()],
        ..Default::default()
    });
    let problems = validation::pool(&spec).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.addresses[0]",
            "spec.addresses[1]",
            "spec.allocateTo.namespaces[0]"
        ]
    );
}

#[test]
fn overlapping_entries_inside_one_pool_are_rejected() {
    let e = only_problem(validation::pool(&pool_spec(&[
        "192.0.2.0/28",
        "192.0.2.8-192.0.2.20",
    ])));
    assert_eq!(e.path, "spec.addresses[1]");
    assert!(e.message.contains("spec.addresses[0]"), "{e}");
}

#[test]
fn a_pool_overlapping_another_is_reported_on_both() {
    let a = validation::pool(&pool_spec(&["2001:db8::/64", "192.0.2.0/28"])).unwrap();
    let b = validation::pool(&pool_spec(&["192.0.2.10-192.0.2.40"])).unwrap();
    let c = validation::pool(&pool_spec(&["192.0.2.64/28"])).unwrap();
    let overlaps = validation::pool_overlaps([("a", &a), ("b", &b), ("c", &c)]);
    assert_eq!(overlaps.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(overlaps["a"][0].path, "spec.addresses[1]");
    assert!(
        overlaps["a"][0].message.contains("\"b\""),
        "{}",
        overlaps["a"][0]
    );
    assert_eq!(overlaps["b"][0].path, "spec.addresses[0]");
    assert!(overlaps["b"][0].message.contains("\"a\""));
}

#[test]
fn pools_of_different_families_never_overlap() {
    let a = validation::pool(&pool_spec(&["0.0.0.0/0"])).unwrap();
    let b = validation::pool(&pool_spec(&["::/0"])).unwrap();
    assert!(validation::pool_overlaps([("a", &a), ("b", &b)]).is_empty());
}

#[test]
fn communities_parse_standard_and_large_forms() {
    assert_eq!("65000:100".parse(), Ok(Community::Standard(65000, 100)));
    assert_eq!(
        "large:4200000000:1:2".parse(),
        Ok(Community::Large(4_200_000_000, 1, 2))
    );
    assert_eq!(Community::Large(1, 2, 3).to_string(), "large:1:2:3");
}

#[test]
fn a_community_out_of_range_is_rejected_naming_the_field() {
    let spec = BGPAdvertisementSpec {
        communities: vec!["65000:100".into(), "65536:1".into()],
        ..Default::default()
    };
    let e = only_problem(validation::bgp_advertisement(&spec, &BTreeMap::new()));
    assert_eq!(e.path, "spec.communities[1]");
    assert!(e.message.contains("out of range"), "{e}");
    let large = BGPAdvertisementSpec {
        communities: vec!["large:1:2:4294967296".into()],
        ..Default::default()
    };
    let e = only_problem(validation::bgp_advertisement(&large, &BTreeMap::new()));
    assert_eq!(e.path, "spec.communities[0]");
}

#[test]
fn community_aliases_resolve_and_unknown_names_are_rejected() {
    let aliases = validation::community_aliases(&CommunitySpec {
        communities: vec![CommunityAlias {
            name: "no-advertise".into(),
            value: "65535:65282".into(),
        }],
    })
    .unwrap();
    let spec = BGPAdvertisementSpec {
        communities: vec!["no-advertise".into()],
        ..Default::default()
    };
    let adv = validation::bgp_advertisement(&spec, &aliases).unwrap();
    assert_eq!(adv.communities, [Community::Standard(65535, 65282)]);
    assert_eq!(
        (adv.aggregation_length, adv.aggregation_length_v6),
        (32, 128)
    );
    let unknown = BGPAdvertisementSpec {
        communities: vec!["no-export".into()],
        ..Default::default()
    };
    let e = only_problem(validation::bgp_advertisement(&unknown, &aliases));
    assert!(e.message.contains("alias"), "{e}");
}

#[test]
fn aggregation_lengths_beyond_the_family_are_rejected() {
    let spec = BGPAdvertisementSpec {
        aggregation_length: Some(33),
        aggregation_length_v6: Some(129),
        ..Default::default()
    };
    let problems = validation::bgp_advertisement(&spec, &BTreeMap::new())
        .unwrap_err()
        .0;
    assert_eq!(problems[0].path, "spec.aggregationLength");
    assert_eq!(problems[1].path, "spec.aggregationLengthV6");
}

#[test]
fn a_peer_gets_rfc_defaults() {
    let peer = validation::bgp_peer(&peer_spec()).unwrap();
    assert_eq!(peer.peer_port, 179);
    assert_eq!(peer.hold_time, Duration::from_secs(90));
    assert_eq!(peer.keepalive_time, Duration::from_secs(30));
    assert!(!peer.is_ibgp());
}

#[test]
fn a_hold_time_of_one_second_is_rejected() {
    let spec = BGPPeerSpec {
        hold_time: Some("1s".into()),
        ..peer_spec()
    };
    let problems = validation::bgp_peer(&spec).unwrap_err().0;
    assert_eq!(problems[0].path, "spec.holdTime");
    assert!(
        problems[0].message.contains("at least 3s"),
        "{}",
        problems[0]
    );
}

#[test]
fn a_hold_time_of_zero_disables_keepalives() {
    let spec = BGPPeerSpec {
        hold_time: Some("0s".into()),
        ..peer_spec()
    };
    let peer = validation::bgp_peer(&spec).unwrap();
    assert_eq!(
        (peer.hold_time, peer.keepalive_time),
        (Duration::ZERO, Duration::ZERO)
    );
}

#[test]
fn a_keepalive_not_below_the_hold_time_is_rejected() {
    let spec = BGPPeerSpec {
        hold_time: Some("9s".into()),
        keepalive_time: Some("9s".into()),
        ..peer_spec()
    };
    let e = only_problem(validation::bgp_peer(&spec));
    assert_eq!(e.path, "spec.keepaliveTime");
}

#[test]
fn a_bfd_profile_is_rejected_until_bfd_exists() {
    let spec = BGPPeerSpec {
        bfd_profile: Some("fast".into()),
        ..peer_spec()
    };
    let e = only_problem(validation::bgp_peer(&spec));
    assert_eq!(e.path, "spec.bfdProfile");
    assert!(e.message.contains("not supported"), "{e}");
}

#[test]
fn bad_peer_fields_are_all_reported() {
    let spec = BGPPeerSpec {
        my_asn: 0,
        peer_asn: 23456,
        peer_address: "router.example".into(),
        source_address: Some("2001:db8::1".into()),
        router_id: Some("0.0.0.0".into()),
        hold_time: Some("ninety".into()),
        password_secret: Some(SecretKeyRef {
            name: String::new(),
            key: "password".into(),
        }),
        ..Default::default()
    };
    let problems = validation::bgp_peer(&spec).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "spec.myASN",
        "spec.peerASN",
        "spec.peerAddress",
        "spec.holdTime",
        "spec.routerID",
        "spec.passwordSecret.name",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn a_source_address_of_the_other_family_is_rejected() {
    let spec = BGPPeerSpec {
        source_address: Some("2001:db8::1".into()),
        ..peer_spec()
    };
    let e = only_problem(validation::bgp_peer(&spec));
    assert_eq!(e.path, "spec.sourceAddress");
}

#[test]
fn durations_accept_kubernetes_forms_only() {
    assert_eq!(
        validation::parse_duration("1m30s"),
        Ok(Duration::from_secs(90))
    );
    assert_eq!(
        validation::parse_duration("500ms"),
        Ok(Duration::from_millis(500))
    );
    assert_eq!(
        validation::parse_duration("2h"),
        Ok(Duration::from_secs(7200))
    );
    for bad in ["", "90", "-1s", "1.5s", "s", "1d"] {
        assert!(validation::parse_duration(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn l2_interfaces_and_selectors_are_checked() {
    let spec = L2AdvertisementSpec {
        interfaces: vec![
            "eth0".into(),
            "a-name-much-too-long".into(),
            "bad/name".into(),
        ],
        ..Default::default()
    };
    let problems = validation::l2_advertisement(&spec).unwrap_err().0;
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["spec.interfaces[1]", "spec.interfaces[2]"]);
}

#[test]
fn an_advertisement_without_pools_covers_every_pool() {
    let adv = validation::l2_advertisement(&L2AdvertisementSpec::default()).unwrap();
    assert!(adv.pools.covers("anything", &BTreeMap::new()));
    let named = validation::l2_advertisement(&L2AdvertisementSpec {
        selection: AdvertisementSelection {
            ip_address_pools: vec!["web".into()],
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    assert!(named.pools.covers("web", &BTreeMap::new()));
    assert!(!named.pools.covers("db", &BTreeMap::new()));
}

proptest! {
    #[test]
    fn parsing_arbitrary_address_text_never_panics(text in "\\PC{0,40}") {
        let _ = text.parse::<AddressRange>();
        let _ = text.parse::<Community>();
        let _ = validation::parse_duration(&text);
    }

    #[test]
    fn a_range_contains_exactly_its_addresses(a: u32, b: u32, probe: u32) {
        let (lo, hi) = (a.min(b), a.max(b));
        let range = AddressRange::new(IpAddr::from(lo.to_be_bytes()), IpAddr::from(hi.to_be_bytes())).unwrap();
        prop_assert_eq!(range.len(), u128::from(hi - lo) + 1);
        prop_assert_eq!(range.contains(IpAddr::from(probe.to_be_bytes())), lo <= probe && probe <= hi);
    }

    #[test]
    fn overlap_detection_agrees_with_pairwise_comparison(
        ranges in proptest::collection::vec((0u32..64, 0u32..8), 1..8)
    ) {
        let pools: Vec<(String, validation::ValidPool)> = ranges
            .iter()
            .enumerate()
            .map(|(i, (start, len))| {
                let text = format!("192.0.2.{}-192.0.2.{}", start, start + len);
                (format!("p{i}"), validation::pool(&pool_spec(&[&text])).unwrap())
            })
            .collect();
        let reported = validation::pool_overlaps(pools.iter().map(|(n, p)| (n.as_str(), p)));
        for (i, (name, pool)) in pools.iter().enumerate() {
            let overlaps_any = pools
                .iter()
                .enumerate()
                .any(|(j, (_, other))| i != j && pool.ranges[0].overlaps(&other.ranges[0]));
            prop_assert_eq!(reported.contains_key(name), overlaps_any, "pool {}", name);
        }
    }
}
