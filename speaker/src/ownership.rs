//! Who owns a VIP: rendezvous (highest-random-weight) hashing of (node, VIP) over the live,
//! eligible nodes (Thaler & Ravishankar, "Using name-based mappings to increase hit rates", 1998).
//!
//! Every node computes the same answer from the same inputs, with no coordination: the weight of a
//! node for a VIP is SipHash-2-4 under the fixed key [`OWNERSHIP_KEY`] of the byte string
//!
//! ```text
//! u32 little-endian length of the node name ‖ node name (UTF-8) ‖ 4 or 6 ‖ the address octets
//! ```
//!
//! and the owner is the candidate with the highest weight (ties, which need a 64-bit collision, go
//! to the lexicographically smallest name). The encoding and the key are part of the protocol
//! between speakers: changing either moves VIPs during a rolling upgrade, and a test pins them.
//!
//! Properties that follow and are tested: VIPs spread evenly over nodes; when a node leaves only
//! its VIPs move; when one joins only the VIPs it wins move (about 1/N); the answer does not depend
//! on the order of the inputs. Ownership is per IP, so Services sharing an IP are co-owned.
//!
//! This module decides nothing about eligibility (see [`crate::eligibility`]) and does no IO.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::hash::siphash24;

/// The SipHash key of the ownership weights. Fixed forever (see the module docs).
pub const OWNERSHIP_KEY: [u8; 16] = *b"cairn.io/owner/1";

/// The rendezvous weight of `node` for `vip`.
pub fn weight(node: &str, vip: IpAddr) -> u64 {
    let name = node.as_bytes();
    let mut buf = Vec::with_capacity(4 + name.len() + 17);
    // A name longer than u32::MAX bytes cannot be a Kubernetes node name; saturate rather than
    // wrap so the encoding stays injective for every name that can occur.
    let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(name);
    match vip {
        IpAddr::V4(v4) => {
            buf.push(4);
            buf.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            buf.push(6);
            buf.extend_from_slice(&v6.octets());
        }
    }
    siphash24(&OWNERSHIP_KEY, &buf)
}

/// The rendezvous winner for `vip` among `candidates` (duplicates are harmless), or `None` when
/// there are none.
pub fn rendezvous<'a>(
    vip: IpAddr,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|node| (weight(node, vip), node))
        .max_by(|a, b| rank(*a, *b))
        .map(|(_, node)| node)
}

/// Orders two (weight, name) candidates: greater means "wins". Highest weight wins; on equal
/// weight the smaller name wins, so the result never depends on the input order.
fn rank(a: (u64, &str), b: (u64, &str)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1))
}

/// The owner of `vip`: the rendezvous winner among the nodes in `eligible` that are also `live`.
pub fn owner<'a>(
    vip: IpAddr,
    live: &BTreeSet<String>,
    eligible: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    rendezvous(vip, eligible.into_iter().filter(|n| live.contains(*n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn live(nodes: &[String]) -> BTreeSet<String> {
        nodes.iter().cloned().collect()
    }

    /// VIP -> owner, for `count` consecutive VIPs from 198.51.100.0 on.
    fn owners(nodes: &[String], count: u32) -> BTreeMap<IpAddr, String> {
        let base = u32::from(Ipv4Addr::new(198, 51, 100, 0));
        (0..count)
            .map(|i| {
                let vip = v4(base + i);
                let o = rendezvous(vip, nodes.iter().map(String::as_str)).map(str::to_string);
                (vip, o.unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn weights_are_pinned_across_builds_and_platforms() {
        // If this fails, the hash or its encoding changed: every VIP in every cluster would move
        // during a rolling upgrade. Do not update these numbers casually.
        let a = weight("node-a", "192.0.2.1".parse().unwrap());
        let b = weight("node-b", "2001:db8::1".parse().unwrap());
        assert_eq!((a, b), (PINNED_A, PINNED_B));
    }

    const PINNED_A: u64 = 0xe5dd_7114_5a4b_61ed;
    const PINNED_B: u64 = 0xce7e_3871_8ce6_cbc8;

    #[test]
    fn the_address_family_is_part_of_the_weight() {
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_ne!(weight("n", v4(0xc000_0201)), weight("n", mapped));
        assert_ne!(
            weight("n", v4(0)),
            weight("n", IpAddr::V6(Ipv6Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn ties_go_to_the_smallest_name_and_higher_weights_win() {
        assert_eq!(rank((7, "a"), (7, "b")), Ordering::Greater);
        assert_eq!(rank((7, "b"), (7, "a")), Ordering::Less);
        assert_eq!(rank((8, "z"), (7, "a")), Ordering::Greater);
        assert_eq!(rank((7, "a"), (7, "a")), Ordering::Equal);
    }

    #[test]
    fn no_candidates_means_no_owner() {
        assert_eq!(rendezvous(v4(1), []), None);
        let nodes = names(3);
        assert_eq!(
            owner(v4(1), &BTreeSet::new(), nodes.iter().map(String::as_str)),
            None
        );
    }

    #[test]
    fn a_node_that_is_not_live_never_owns() {
        let nodes = names(3);
        for i in 0..200 {
            let winner = rendezvous(v4(i), nodes.iter().map(String::as_str))
                .unwrap()
                .to_string();
            let mut alive = live(&nodes);
            alive.remove(&winner);
            let o = owner(v4(i), &alive, nodes.iter().map(String::as_str)).unwrap();
            assert_ne!(o, winner);
        }
    }

    #[test]
    fn a_live_node_that_is_not_eligible_never_owns() {
        let nodes = names(3);
        let alive = live(&nodes);
        for i in 0..200 {
            let o = owner(v4(i), &alive, nodes[1..].iter().map(String::as_str)).unwrap();
            assert_ne!(o, "node-0");
        }
    }

    #[test]
    fn three_nodes_share_three_thousand_vips_within_ten_percent_of_even() {
        let nodes = names(3);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for o in owners(&nodes, 3000).into_values() {
            *per_node.entry(o).or_default() += 1;
        }
        assert_eq!(per_node.len(), 3);
        for (node, count) in per_node {
            assert!((900..=1100).contains(&count), "{node} owns {count} of 3000");
        }
    }

    proptest! {
        #[test]
        fn balance_holds_for_any_node_names_and_vip_range(
            node_names in proptest::collection::btree_set("[a-z0-9-]{1,20}", 2..6),
            start in any::<u32>(),
        ) {
            let nodes: Vec<String> = node_names.into_iter().collect();
            let n = nodes.len();
            let count = 1000 * n as u32;
            let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
            for i in 0..count {
                let vip = v4(start.wrapping_add(i));
                *per_node.entry(rendezvous(vip, nodes.iter().map(String::as_str)).unwrap()).or_default() += 1;
            }
            // ±15%: 1000 expected per node gives a standard deviation of about 30, so this is
            // five deviations wide and a correct hash essentially never fails it.
            for node in &nodes {
                let c = per_node.get(node.as_str()).copied().unwrap_or(0);
                prop_assert!((850..=1150).contains(&c), "{} owns {} of {}", node, c, count);
            }
        }

        #[test]
        fn when_a_node_leaves_only_its_vips_move(n in 2usize..8, leaver in 0usize..8, start in any::<u32>()) {
            let nodes = names(n);
            let leaver = nodes[leaver % n].clone();
            let remaining: Vec<String> = nodes.iter().filter(|x| **x != leaver).cloned().collect();
            for i in 0..500u32 {
                let vip = v4(start.wrapping_add(i));
                let before = rendezvous(vip, nodes.iter().map(String::as_str)).unwrap();
                let after = rendezvous(vip, remaining.iter().map(String::as_str)).unwrap();
                if before != leaver {
                    prop_assert_eq!(before, after);
                }
            }
        }

        #[test]
        fn when_a_node_joins_only_vips_won_by_the_joiner_move_about_one_in_n(n in 1usize..8, start in any::<u32>()) {
            let nodes = names(n);
            let joined = names(n + 1);
            let joiner = &joined[n];
            let mut moved = 0usize;
            let count = 2000u32;
            for i in 0..count {
                let vip = v4(start.wrapping_add(i));
                let before = rendezvous(vip, nodes.iter().map(String::as_str)).unwrap();
                let after = rendezvous(vip, joined.iter().map(String::as_str)).unwrap();
                if before != after {
                    prop_assert_eq!(after, joiner.as_str());
                    moved += 1;
                }
            }
            // Each VIP moves with probability 1/(n+1), independently: allow five standard
            // deviations of the binomial, so a correct hash fails about once in 10^4 runs of
            // the 256 cases while a biased one (or one moving VIPs between old nodes) fails.
            let p = 1.0 / (n + 1) as f64;
            let expected = count as f64 * p;
            let sigma = (count as f64 * p * (1.0 - p)).sqrt();
            prop_assert!((moved as f64 - expected).abs() <= 5.0 * sigma, "{} moved, expected about {}", moved, expected);
        }

        #[test]
        fn the_owner_does_not_depend_on_input_order_or_duplicates(
            node_names in proptest::collection::vec("[a-z]{1,6}", 1..8),
            vip in any::<u32>(),
            seed in any::<u64>(),
        ) {
            let forward = rendezvous(v4(vip), node_names.iter().map(String::as_str));
            let mut shuffled = node_names.clone();
            // A deterministic shuffle driven by the generated seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            shuffled.extend(node_names.iter().cloned());
            prop_assert_eq!(forward, rendezvous(v4(vip), shuffled.iter().map(String::as_str)));
        }

    }
}
