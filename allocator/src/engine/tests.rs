//! Table tests of the engine: each builds its own engine and names the rule it checks.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cairn_api::selector::{Requirement, Selector};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn range(start: &str, end: &str) -> AddressRange {
    AddressRange::new(ip(start), ip(end)).expect("test range")
}

fn pool(name: &str, ranges: &[(&str, &str)]) -> Pool {
    Pool::new(name, ranges.iter().map(|(s, e)| range(s, e)).collect())
}

fn svc(namespace: &str, name: &str) -> ServiceRequest {
    ServiceRequest::new(ServiceKey::new(namespace, name))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector(key: &str, value: &str) -> Selector {
    Selector::new(vec![Requirement::In(key.into(), vec![value.into()])])
}

fn tcp(port: u16) -> Port {
    Port {
        protocol: Protocol::Tcp,
        port,
    }
}

fn engine_with(pools: Vec<Pool>) -> Engine {
    let mut engine = Engine::new();
    for p in pools {
        engine.upsert_pool(p);
    }
    engine
}

fn ips(binding: &Binding) -> Vec<IpAddr> {
    binding.ips.clone()
}

fn assign_ips(engine: &mut Engine, request: ServiceRequest) -> Vec<IpAddr> {
    ips(&engine.assign(request).expect("assignment"))
}

fn shared(request: ServiceRequest, key: &str, ports: &[u16]) -> ServiceRequest {
    ServiceRequest {
        sharing_key: Some(key.into()),
        ports: ports.iter().map(|p| tcp(*p)).collect(),
        ..request
    }
}

#[test]
fn first_service_gets_the_lowest_address_of_the_pool() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.10", "192.0.2.20")])]);
    let b = e.assign(svc("ns", "a")).unwrap();
    assert_eq!(
        b,
        Binding {
            pool: "p".into(),
            ips: vec![ip("192.0.2.10")]
        }
    );
}

#[test]
fn metallb_2723_deleting_a_service_does_not_move_the_others() {
    // Pool .1-.3, A and B get addresses, B is deleted, everything is reprocessed: A keeps its own.
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.3")])]);
    let a = assign_ips(&mut e, svc("ns", "a"));
    let b = assign_ips(&mut e, svc("ns", "b"));
    assert_eq!(
        (a.clone(), b),
        (vec![ip("192.0.2.1")], vec![ip("192.0.2.2")])
    );
    e.release(&ServiceKey::new("ns", "b"));
    assert_eq!(assign_ips(&mut e, svc("ns", "a")), a);
    // Even when A is processed after a newcomer, and after a restart.
    assert_eq!(assign_ips(&mut e, svc("ns", "c")), vec![ip("192.0.2.3")]);
    assert_eq!(assign_ips(&mut e, svc("ns", "a")), a);
    let mut restarted = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.3")])]);
    let persisted: Vec<_> = ["a", "c"]
        .iter()
        .map(|n| {
            (
                svc("ns", n),
                e.binding(&ServiceKey::new("ns", *n)).unwrap().clone(),
            )
        })
        .collect();
    restarted.restore(persisted).unwrap();
    assert_eq!(assign_ips(&mut restarted, svc("ns", "a")), a);
}

#[test]
fn freed_addresses_are_reused_only_after_never_used_ones_oldest_first() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.4")])]);
    for n in ["a", "b", "c"] {
        e.assign(svc("ns", n)).unwrap();
    }
    e.release(&ServiceKey::new("ns", "b")); // .2 freed first
    e.release(&ServiceKey::new("ns", "a")); // .1 freed second
    assert_eq!(
        assign_ips(&mut e, svc("ns", "d")),
        vec![ip("192.0.2.4")],
        "never used first"
    );
    assert_eq!(
        assign_ips(&mut e, svc("ns", "e")),
        vec![ip("192.0.2.2")],
        "oldest freed next"
    );
    assert_eq!(assign_ips(&mut e, svc("ns", "f")), vec![ip("192.0.2.1")]);
    assert_eq!(
        e.assign(svc("ns", "g")),
        Err(Refusal::PoolsExhausted { family: Family::V4 })
    );
}

#[test]
fn assign_is_idempotent_for_an_unchanged_request() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    let first = e.assign(svc("ns", "a")).unwrap();
    e.assign(svc("ns", "b")).unwrap();
    assert_eq!(e.assign(svc("ns", "a")).unwrap(), first);
    assert_eq!(e.usage("p").unwrap().v4.assigned, 2);
}

#[test]
fn an_explicitly_requested_pool_wins_over_selector_and_auto_assign_pools() {
    let mut special = pool("special", &[("198.51.100.1", "198.51.100.9")]);
    special.auto_assign = false;
    let mut chosen = pool("by-selector", &[("203.0.113.1", "203.0.113.9")]);
    chosen.allocate_to.service_selectors = vec![selector("app", "web")];
    let mut e = engine_with(vec![
        pool("default", &[("192.0.2.1", "192.0.2.9")]),
        special,
        chosen,
    ]);
    let request = ServiceRequest {
        labels: labels(&[("app", "web")]),
        requested_pool: Some("special".into()),
        ..svc("ns", "a")
    };
    assert_eq!(e.assign(request).unwrap().pool, "special");
}

#[test]
fn selector_pools_come_before_auto_assign_pools_by_priority() {
    let mut low = pool("a-low", &[("198.51.100.1", "198.51.100.9")]);
    low.allocate_to = AllocateTo {
        priority: Some(20),
        namespaces: vec!["team".into()],
        ..AllocateTo::default()
    };
    let mut high = pool("z-high", &[("203.0.113.1", "203.0.113.9")]);
    high.allocate_to = AllocateTo {
        priority: Some(10),
        namespace_selectors: vec![selector("tier", "gold")],
        ..AllocateTo::default()
    };
    let mut e = engine_with(vec![
        pool("0-default", &[("192.0.2.1", "192.0.2.9")]),
        low,
        high,
    ]);
    let gold = ServiceRequest {
        namespace_labels: labels(&[("tier", "gold")]),
        ..svc("team", "a")
    };
    assert_eq!(
        e.assign(gold).unwrap().pool,
        "z-high",
        "priority 10 before 20"
    );
    assert_eq!(
        e.assign(svc("team", "b")).unwrap().pool,
        "a-low",
        "selector pool before default"
    );
    assert_eq!(e.assign(svc("other", "c")).unwrap().pool, "0-default");
}

#[test]
fn pools_of_equal_rank_are_chosen_by_name() {
    let mut e = engine_with(vec![
        pool("beta", &[("198.51.100.1", "198.51.100.9")]),
        pool("alpha", &[("203.0.113.1", "203.0.113.9")]),
    ]);
    assert_eq!(e.assign(svc("ns", "a")).unwrap().pool, "alpha");
}

#[test]
fn a_full_pool_falls_through_to_the_next_one() {
    let mut e = engine_with(vec![
        pool("alpha", &[("192.0.2.1", "192.0.2.1")]),
        pool("beta", &[("198.51.100.1", "198.51.100.9")]),
    ]);
    assert_eq!(e.assign(svc("ns", "a")).unwrap().pool, "alpha");
    assert_eq!(e.assign(svc("ns", "b")).unwrap().pool, "beta");
}

#[test]
fn a_pool_without_auto_assign_serves_only_explicit_requests() {
    let mut manual = pool("manual", &[("192.0.2.1", "192.0.2.9")]);
    manual.auto_assign = false;
    let mut e = engine_with(vec![manual]);
    assert_eq!(e.assign(svc("ns", "a")), Err(Refusal::NoEligiblePool));
    let by_ip = ServiceRequest {
        requested_ips: vec![ip("192.0.2.5")],
        ..svc("ns", "b")
    };
    assert_eq!(assign_ips(&mut e, by_ip), vec![ip("192.0.2.5")]);
    let by_pool = ServiceRequest {
        requested_pool: Some("manual".into()),
        ..svc("ns", "c")
    };
    assert_eq!(assign_ips(&mut e, by_pool), vec![ip("192.0.2.1")]);
}

#[test]
fn a_requested_address_outside_every_pool_is_refused() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    let request = ServiceRequest {
        requested_ips: vec![ip("198.51.100.1")],
        ..svc("ns", "a")
    };
    assert_eq!(
        e.assign(request),
        Err(Refusal::AddressNotInAnyPool {
            ip: ip("198.51.100.1")
        })
    );
}

#[test]
fn a_tenant_cannot_claim_an_address_of_another_tenants_pool() {
    let mut red = pool("red", &[("192.0.2.1", "192.0.2.9")]);
    red.allocate_to.namespaces = vec!["red".into()];
    let mut e = engine_with(vec![
        red,
        pool("shared", &[("198.51.100.1", "198.51.100.9")]),
    ]);
    let request = ServiceRequest {
        requested_ips: vec![ip("192.0.2.3")],
        ..svc("blue", "a")
    };
    let refusal = e.assign(request).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::AddressNotAllowed {
            ip: ip("192.0.2.3"),
            pool: "red".into()
        }
    );
    assert_eq!(
        refusal.to_string(),
        "requested address 192.0.2.3 belongs to pool \"red\", which this Service may not use"
    );
    let request = ServiceRequest {
        requested_ips: vec![ip("192.0.2.3")],
        ..svc("red", "a")
    };
    assert_eq!(assign_ips(&mut e, request), vec![ip("192.0.2.3")]);
}

#[test]
fn a_requested_address_must_lie_in_the_requested_pool() {
    let mut e = engine_with(vec![
        pool("p", &[("192.0.2.1", "192.0.2.9")]),
        pool("q", &[("198.51.100.1", "198.51.100.9")]),
    ]);
    let request = ServiceRequest {
        requested_ips: vec![ip("192.0.2.1")],
        requested_pool: Some("q".into()),
        ..svc("ns", "a")
    };
    assert_eq!(
        e.assign(request),
        Err(Refusal::AddressNotInRequestedPool {
            ip: ip("192.0.2.1"),
            pool: "q".into()
        })
    );
}

#[test]
fn requested_pools_must_exist_and_allow_the_service() {
    let mut locked = pool("locked", &[("192.0.2.1", "192.0.2.9")]);
    locked.allocate_to.service_selectors = vec![selector("app", "db")];
    let mut e = engine_with(vec![locked]);
    let missing = ServiceRequest {
        requested_pool: Some("nope".into()),
        ..svc("ns", "a")
    };
    assert_eq!(
        e.assign(missing),
        Err(Refusal::UnknownPool {
            pool: "nope".into()
        })
    );
    let wrong = ServiceRequest {
        requested_pool: Some("locked".into()),
        ..svc("ns", "a")
    };
    assert_eq!(
        e.assign(wrong),
        Err(Refusal::ServiceNotAllowed {
            pool: "locked".into()
        })
    );
}

#[test]
fn avoid_buggy_ips_skips_addresses_ending_in_0_and_255() {
    let mut p = pool("p", &[("192.0.2.254", "192.0.3.1")]);
    p.avoid_buggy_ips = true;
    let mut e = engine_with(vec![p]);
    assert_eq!(e.usage("p").unwrap().v4.available, 2);
    assert_eq!(assign_ips(&mut e, svc("ns", "a")), vec![ip("192.0.2.254")]);
    assert_eq!(assign_ips(&mut e, svc("ns", "b")), vec![ip("192.0.3.1")]);
    let request = ServiceRequest {
        requested_ips: vec![ip("192.0.2.255")],
        ..svc("ns", "c")
    };
    assert_eq!(
        e.assign(request),
        Err(Refusal::AddressAvoided {
            ip: ip("192.0.2.255"),
            pool: "p".into()
        })
    );
}

#[test]
fn single_stack_ipv6_gets_an_ipv6_address() {
    let mut e = engine_with(vec![pool(
        "p",
        &[("192.0.2.1", "192.0.2.9"), ("2001:db8::1", "2001:db8::9")],
    )]);
    let request = ServiceRequest {
        family_policy: FamilyPolicy::SingleStack(Family::V6),
        ..svc("ns", "a")
    };
    assert_eq!(assign_ips(&mut e, request), vec![ip("2001:db8::1")]);
}

#[test]
fn prefer_dual_stack_takes_both_families_from_one_pool_primary_first() {
    let mut e = engine_with(vec![
        pool("a-v4-only", &[("198.51.100.1", "198.51.100.9")]),
        pool(
            "b-dual",
            &[("192.0.2.1", "192.0.2.9"), ("2001:db8::1", "2001:db8::9")],
        ),
    ]);
    let request = ServiceRequest {
        family_policy: FamilyPolicy::PreferDualStack {
            primary: Family::V6,
        },
        ..svc("ns", "a")
    };
    let b = e.assign(request).unwrap();
    assert_eq!(
        b,
        Binding {
            pool: "b-dual".into(),
            ips: vec![ip("2001:db8::1"), ip("192.0.2.1")]
        }
    );
}

#[test]
fn prefer_dual_stack_settles_for_one_family_when_no_pool_has_both() {
    let mut e = engine_with(vec![pool("v4", &[("192.0.2.1", "192.0.2.9")])]);
    let request = ServiceRequest {
        family_policy: FamilyPolicy::PreferDualStack {
            primary: Family::V6,
        },
        ..svc("ns", "a")
    };
    assert_eq!(assign_ips(&mut e, request.clone()), vec![ip("192.0.2.1")]);
    // Adding IPv6 later does not change a binding made under the same policy.
    e.upsert_pool(pool(
        "v4",
        &[("192.0.2.1", "192.0.2.9"), ("2001:db8::1", "2001:db8::9")],
    ));
    assert_eq!(assign_ips(&mut e, request), vec![ip("192.0.2.1")]);
}

#[test]
fn prefer_dual_stack_without_a_dual_pool_takes_the_primary_family_first() {
    let mut e = engine_with(vec![
        pool("a-v4", &[("192.0.2.1", "192.0.2.9")]),
        pool("b-v6", &[("2001:db8::1", "2001:db8::9")]),
    ]);
    let request = ServiceRequest {
        family_policy: FamilyPolicy::PreferDualStack {
            primary: Family::V6,
        },
        ..svc("ns", "a")
    };
    assert_eq!(
        e.assign(request).unwrap(),
        Binding {
            pool: "b-v6".into(),
            ips: vec![ip("2001:db8::1")]
        }
    );
}

#[test]
fn require_dual_stack_without_a_dual_stack_pool_is_refused() {
    let mut e = engine_with(vec![
        pool("v4", &[("192.0.2.1", "192.0.2.9")]),
        pool("v6", &[("2001:db8::1", "2001:db8::9")]),
    ]);
    let request = ServiceRequest {
        family_policy: FamilyPolicy::RequireDualStack {
            primary: Family::V4,
        },
        ..svc("ns", "a")
    };
    assert_eq!(e.assign(request), Err(Refusal::NoDualStackPool));
}

#[test]
fn require_dual_stack_reports_the_family_that_ran_out() {
    let mut e = engine_with(vec![pool(
        "p",
        &[("192.0.2.1", "192.0.2.9"), ("2001:db8::1", "2001:db8::1")],
    )]);
    let v6 = ServiceRequest {
        family_policy: FamilyPolicy::SingleStack(Family::V6),
        ..svc("ns", "a")
    };
    e.assign(v6).unwrap();
    let dual = ServiceRequest {
        family_policy: FamilyPolicy::RequireDualStack {
            primary: Family::V4,
        },
        ..svc("ns", "b")
    };
    assert_eq!(
        e.assign(dual),
        Err(Refusal::PoolsExhausted { family: Family::V6 })
    );
}

#[test]
fn requested_addresses_must_fit_the_family_policy() {
    let mut e = engine_with(vec![pool(
        "p",
        &[("192.0.2.1", "192.0.2.9"), ("2001:db8::1", "2001:db8::9")],
    )]);
    let two_v4 = ServiceRequest {
        requested_ips: vec![ip("192.0.2.1"), ip("192.0.2.2")],
        family_policy: FamilyPolicy::PreferDualStack {
            primary: Family::V4,
        },
        ..svc("ns", "a")
    };
    assert!(matches!(
        e.assign(two_v4),
        Err(Refusal::FamilyMismatch { .. })
    ));
    let v6_for_v4 = ServiceRequest {
        requested_ips: vec![ip("2001:db8::1")],
        ..svc("ns", "b")
    };
    assert!(matches!(
        e.assign(v6_for_v4),
        Err(Refusal::FamilyMismatch { .. })
    ));
    let dual = ServiceRequest {
        requested_ips: vec![ip("192.0.2.3"), ip("2001:db8::3")],
        family_policy: FamilyPolicy::RequireDualStack {
            primary: Family::V6,
        },
        ..svc("ns", "c")
    };
    assert_eq!(
        assign_ips(&mut e, dual),
        vec![ip("2001:db8::3"), ip("192.0.2.3")]
    );
}

#[test]
fn both_requested_addresses_must_come_from_one_pool() {
    let mut e = engine_with(vec![
        pool("v4", &[("192.0.2.1", "192.0.2.9")]),
        pool("v6", &[("2001:db8::1", "2001:db8::9")]),
    ]);
    let request = ServiceRequest {
        requested_ips: vec![ip("192.0.2.1"), ip("2001:db8::1")],
        family_policy: FamilyPolicy::RequireDualStack {
            primary: Family::V4,
        },
        ..svc("ns", "a")
    };
    assert!(matches!(
        e.assign(request),
        Err(Refusal::AddressesInDifferentPools { .. })
    ));
}

#[test]
fn services_with_the_same_key_and_disjoint_ports_share_an_address() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    let a = assign_ips(&mut e, shared(svc("ns", "a"), "k", &[80]));
    let b = assign_ips(&mut e, shared(svc("ns", "b"), "k", &[443]));
    assert_eq!(a, b);
    assert_eq!(e.usage("p").unwrap().v4.assigned, 1);
    // Releasing one keeps the address held by the other.
    e.release(&ServiceKey::new("ns", "a"));
    assert_eq!(assign_ips(&mut e, svc("ns", "c")), vec![ip("192.0.2.2")]);
}

#[test]
fn sharing_is_refused_with_a_reason_for_each_conflict() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    let local = ServiceRequest {
        local_traffic_policy: true,
        selector: labels(&[("app", "a")]),
        ..shared(svc("ns", "a"), "k", &[80])
    };
    let held = assign_ips(&mut e, local)[0];
    let cases = [
        (svc("ns", "b"), SharingConflict::NoSharingKey),
        (
            shared(svc("ns", "b"), "other", &[443]),
            SharingConflict::DifferentSharingKey,
        ),
        (
            shared(svc("ns", "b"), "k", &[80]),
            SharingConflict::PortClash(tcp(80)),
        ),
        (
            shared(svc("ns", "b"), "k", &[443]),
            SharingConflict::LocalBackendsDiffer,
        ),
    ];
    for (request, conflict) in cases {
        let request = ServiceRequest {
            requested_ips: vec![held],
            ..request
        };
        assert_eq!(
            e.assign(request),
            Err(Refusal::AddressInUse {
                ip: held,
                holder: ServiceKey::new("ns", "a"),
                conflict
            })
        );
    }
    let same_backends = ServiceRequest {
        requested_ips: vec![held],
        selector: labels(&[("app", "a")]),
        ..shared(svc("ns", "b"), "k", &[443])
    };
    assert_eq!(assign_ips(&mut e, same_backends), vec![held]);
}

#[test]
fn a_service_without_a_compatible_sharer_gets_its_own_address() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    assign_ips(&mut e, shared(svc("ns", "a"), "k", &[80]));
    assert_eq!(
        assign_ips(&mut e, shared(svc("ns", "b"), "k", &[80])),
        vec![ip("192.0.2.2")]
    );
}

#[test]
fn changing_the_sharing_key_moves_only_that_service() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    let a = assign_ips(&mut e, shared(svc("ns", "a"), "k", &[80]));
    assign_ips(&mut e, shared(svc("ns", "b"), "k", &[443]));
    let b_moved = assign_ips(&mut e, shared(svc("ns", "b"), "other", &[443]));
    assert_ne!(b_moved, a);
    assert_eq!(assign_ips(&mut e, shared(svc("ns", "a"), "k", &[80])), a);
    // Alone on its address, a Service keeps it when its key changes.
    assert_eq!(assign_ips(&mut e, shared(svc("ns", "a"), "new", &[80])), a);
}

#[test]
fn changing_the_requested_address_moves_only_that_service() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    let a = assign_ips(&mut e, svc("ns", "a"));
    assign_ips(&mut e, svc("ns", "b"));
    let request = ServiceRequest {
        requested_ips: vec![ip("192.0.2.7")],
        ..svc("ns", "b")
    };
    assert_eq!(assign_ips(&mut e, request), vec![ip("192.0.2.7")]);
    assert_eq!(e.binding(&ServiceKey::new("ns", "a")).unwrap().ips, a);
}

#[test]
fn switching_to_prefer_dual_stack_keeps_the_address_and_adds_the_other_family() {
    let mut e = engine_with(vec![pool(
        "p",
        &[("192.0.2.1", "192.0.2.9"), ("2001:db8::1", "2001:db8::9")],
    )]);
    let v4 = assign_ips(&mut e, svc("ns", "a"));
    let dual = ServiceRequest {
        family_policy: FamilyPolicy::PreferDualStack {
            primary: Family::V4,
        },
        ..svc("ns", "a")
    };
    assert_eq!(assign_ips(&mut e, dual), vec![v4[0], ip("2001:db8::1")]);
}

#[test]
fn a_refused_changed_request_releases_the_old_address() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.9")])]);
    assign_ips(&mut e, svc("ns", "a"));
    let impossible = ServiceRequest {
        requested_pool: Some("nope".into()),
        ..svc("ns", "a")
    };
    assert!(e.assign(impossible).is_err());
    assert_eq!(e.binding(&ServiceKey::new("ns", "a")), None);
    assert_eq!(e.usage("p").unwrap().v4.assigned, 0);
}

#[test]
fn restore_keeps_every_binding_exactly_and_new_services_avoid_them() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.4")])]);
    let bindings = vec![
        (
            svc("ns", "a"),
            Binding {
                pool: "p".into(),
                ips: vec![ip("192.0.2.3")],
            },
        ),
        (
            svc("ns", "b"),
            Binding {
                pool: "p".into(),
                ips: vec![ip("192.0.2.1")],
            },
        ),
    ];
    assert_eq!(e.restore(bindings.clone()), Ok(vec![]));
    for (request, binding) in &bindings {
        assert_eq!(e.binding(&request.key), Some(binding));
        assert_eq!(e.assign(request.clone()).as_ref(), Ok(binding));
    }
    assert_eq!(assign_ips(&mut e, svc("ns", "c")), vec![ip("192.0.2.2")]);
    assert_eq!(assign_ips(&mut e, svc("ns", "d")), vec![ip("192.0.2.4")]);
}

#[test]
fn restore_keeps_the_last_entry_of_a_service_listed_twice() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.4")])]);
    let first = Binding {
        pool: "p".into(),
        ips: vec![ip("192.0.2.1")],
    };
    let last = Binding {
        pool: "p".into(),
        ips: vec![ip("192.0.2.2")],
    };
    e.restore(vec![
        (svc("ns", "a"), first),
        (svc("ns", "a"), last.clone()),
    ])
    .unwrap();
    assert_eq!(e.binding(&a_key()), Some(&last));
    assert_eq!(
        e.usage("p").unwrap().v4.assigned,
        1,
        "the first entry's address is free"
    );
}

#[test]
fn restore_is_refused_after_an_assignment() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.4")])]);
    e.assign(svc("ns", "a")).unwrap();
    let late = vec![(
        svc("ns", "b"),
        Binding {
            pool: "p".into(),
            ips: vec![ip("192.0.2.1")],
        },
    )];
    assert_eq!(e.restore(late), Err(RestoreError::AfterAssign));
}

#[test]
fn restore_keeps_and_flags_bindings_that_became_invalid() {
    let mut p = pool("p", &[("192.0.2.1", "192.0.2.4")]);
    p.allocate_to.namespaces = vec!["allowed".into()];
    let mut e = engine_with(vec![p]);
    let bindings = vec![
        (
            svc("allowed", "gone"),
            Binding {
                pool: "deleted".into(),
                ips: vec![ip("198.51.100.1")],
            },
        ),
        (
            svc("allowed", "shrunk"),
            Binding {
                pool: "p".into(),
                ips: vec![ip("192.0.2.9")],
            },
        ),
        (
            svc("other", "ns"),
            Binding {
                pool: "p".into(),
                ips: vec![ip("192.0.2.2")],
            },
        ),
    ];
    let flagged = e.restore(bindings.clone()).unwrap();
    assert_eq!(flagged.len(), 3);
    let key = |n: &str, m: &str| ServiceKey::new(n, m);
    assert_eq!(
        e.problems(&key("allowed", "gone")),
        [Problem::PoolDeleted {
            pool: "deleted".into()
        }]
    );
    assert_eq!(
        e.problems(&key("allowed", "shrunk")),
        [Problem::AddressOutsidePool {
            ip: ip("192.0.2.9"),
            pool: "p".into()
        }]
    );
    assert_eq!(
        e.problems(&key("other", "ns")),
        [Problem::NamespaceNotAllowed { pool: "p".into() }]
    );
    for (request, binding) in bindings {
        assert_eq!(
            e.assign(request).unwrap(),
            binding,
            "flagged bindings never move"
        );
    }
    let new = ServiceRequest {
        requested_ips: vec![ip("192.0.2.2")],
        ..svc("allowed", "new")
    };
    assert!(matches!(e.assign(new), Err(Refusal::AddressInUse { .. })));
}

#[test]
fn restore_flags_both_holders_of_an_address_they_may_not_share() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.4")])]);
    let binding = Binding {
        pool: "p".into(),
        ips: vec![ip("192.0.2.1")],
    };
    let flagged = e
        .restore(vec![
            (svc("ns", "a"), binding.clone()),
            (svc("ns", "b"), binding),
        ])
        .unwrap();
    assert_eq!(
        flagged,
        vec![ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b")]
    );
    e.release(&ServiceKey::new("ns", "a"));
    assert!(
        e.problems(&ServiceKey::new("ns", "b")).is_empty(),
        "conflict gone with a"
    );
}

#[test]
fn deleting_a_pool_flags_its_bindings_and_moves_nothing() {
    let mut e = engine_with(vec![
        pool("p", &[("192.0.2.1", "192.0.2.4")]),
        pool("q", &[("198.51.100.1", "198.51.100.4")]),
    ]);
    let a = e.assign(svc("ns", "a")).unwrap();
    assert_eq!(e.remove_pool("p"), vec![ServiceKey::new("ns", "a")]);
    assert_eq!(
        e.problems(&a_key()),
        [Problem::PoolDeleted { pool: "p".into() }]
    );
    assert_eq!(e.assign(svc("ns", "a")).unwrap(), a);
    // Re-creating the pool clears the flag, and the held address is not handed out again.
    assert_eq!(
        e.upsert_pool(pool("p", &[("192.0.2.1", "192.0.2.4")])),
        vec![a_key()]
    );
    assert!(e.problems(&a_key()).is_empty());
    let b = ServiceRequest {
        requested_pool: Some("p".into()),
        ..svc("ns", "b")
    };
    assert_eq!(assign_ips(&mut e, b), vec![ip("192.0.2.2")]);
}

fn a_key() -> ServiceKey {
    ServiceKey::new("ns", "a")
}

#[test]
fn shrinking_a_pool_flags_the_bindings_left_outside_and_keeps_them() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.4")])]);
    for n in ["a", "b"] {
        e.assign(svc("ns", n)).unwrap();
    }
    let changed = e.upsert_pool(pool("p", &[("192.0.2.1", "192.0.2.1")]));
    assert_eq!(changed, vec![ServiceKey::new("ns", "b")]);
    assert_eq!(assign_ips(&mut e, svc("ns", "b")), vec![ip("192.0.2.2")]);
    assert_eq!(
        e.assign(svc("ns", "c")),
        Err(Refusal::PoolsExhausted { family: Family::V4 })
    );
}

#[test]
fn a_namespace_relabel_flags_the_binding_instead_of_moving_it() {
    let mut p = pool("gold", &[("192.0.2.1", "192.0.2.4")]);
    p.allocate_to.namespace_selectors = vec![selector("tier", "gold")];
    let mut e = engine_with(vec![p, pool("plain", &[("198.51.100.1", "198.51.100.4")])]);
    let gold = ServiceRequest {
        namespace_labels: labels(&[("tier", "gold")]),
        ..svc("ns", "a")
    };
    let a = e.assign(gold).unwrap();
    assert_eq!(a.pool, "gold");
    assert_eq!(e.assign(svc("ns", "a")).unwrap(), a);
    assert_eq!(
        e.problems(&a_key()),
        [Problem::NamespaceNotAllowed {
            pool: "gold".into()
        }]
    );
}

#[test]
fn editing_a_pool_keeps_its_freed_history() {
    let mut e = engine_with(vec![pool("p", &[("192.0.2.1", "192.0.2.3")])]);
    e.assign(svc("ns", "a")).unwrap();
    e.release(&a_key());
    e.upsert_pool(pool("p", &[("192.0.2.1", "192.0.2.4")]));
    assert_eq!(
        assign_ips(&mut e, svc("ns", "b")),
        vec![ip("192.0.2.2")],
        ".1 was used"
    );
}

#[test]
fn overlapping_pools_never_hand_out_one_address_twice() {
    let mut e = engine_with(vec![
        pool("a", &[("192.0.2.1", "192.0.2.2")]),
        pool("b", &[("192.0.2.2", "192.0.2.3")]),
    ]);
    let mut seen: Vec<IpAddr> = Vec::new();
    for (n, p) in [("x", "a"), ("y", "a"), ("z", "b")] {
        let request = ServiceRequest {
            requested_pool: Some(p.into()),
            ..svc("ns", n)
        };
        seen.extend(assign_ips(&mut e, request));
    }
    assert_eq!(
        seen,
        vec![ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")]
    );
    assert_eq!(
        e.usage("b").unwrap().v4,
        FamilyUsage {
            assigned: 2,
            available: 0
        }
    );
}

#[test]
fn usage_counts_each_family_and_a_slash_64_without_enumerating_it() {
    let net: ipnet::IpNet = "2001:db8::/64".parse().unwrap();
    let mut p = pool("p", &[("192.0.2.0", "192.0.2.255")]);
    p.ranges.push(AddressRange::from_net(net));
    p.avoid_buggy_ips = true;
    let mut e = engine_with(vec![p]);
    let dual = ServiceRequest {
        family_policy: FamilyPolicy::RequireDualStack {
            primary: Family::V4,
        },
        ..svc("ns", "a")
    };
    assert_eq!(
        assign_ips(&mut e, dual),
        vec![ip("192.0.2.1"), ip("2001:db8::")]
    );
    let usage = e.usage("p").unwrap();
    assert_eq!(
        usage.v4,
        FamilyUsage {
            assigned: 1,
            available: 253
        }
    );
    assert_eq!(
        usage.v6,
        FamilyUsage {
            assigned: 1,
            available: (1u128 << 64) - 1
        }
    );
    e.release(&a_key());
    assert_eq!(e.usage("p").unwrap().v6.available, 1u128 << 64);
}

#[test]
fn address_ranges_reject_mixed_families_and_reversed_ends() {
    assert!(matches!(
        AddressRange::new(ip("192.0.2.1"), ip("2001:db8::1")),
        Err(AddressRangeError::MixedFamilies(_))
    ));
    assert!(matches!(
        AddressRange::new(ip("192.0.2.9"), ip("192.0.2.1")),
        Err(AddressRangeError::Reversed(_))
    ));
    let r = AddressRange::from_net("198.51.100.0/30".parse().unwrap());
    assert_eq!(
        (r.start(), r.end()),
        (ip("198.51.100.0"), ip("198.51.100.3"))
    );
}

#[test]
fn refusals_read_as_sentences() {
    let refusal = Refusal::AddressInUse {
        ip: ip("192.0.2.1"),
        holder: ServiceKey::new("ns", "a"),
        conflict: SharingConflict::PortClash(tcp(80)),
    };
    assert_eq!(
        refusal.to_string(),
        "requested address 192.0.2.1 is used by ns/a, which cannot share it: both expose TCP/80"
    );
    assert_eq!(
        Refusal::PoolsExhausted { family: Family::V6 }.to_string(),
        "no free IPv6 address in the eligible pools"
    );
}
