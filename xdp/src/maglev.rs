//! Weighted Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4), pure: no IO, no clock, no randomness.
//!
//! Every node that builds a table from the same backend set, weights, size and seed gets the
//! same table, whatever order the backends were given in (they are sorted by address first), so
//! a router's ECMP rehash onto another node does not move a flow. Each backend's preference list
//! is the permutation `offset + j·skip (mod M)` of §3.4, with `offset` and `skip` derived from
//! its address by [`jhash2`](crate::hash::jhash2). Weights follow Katran's weighted variant: in
//! each round a backend accumulates its weight and claims its next preferred free slot each time
//! the accumulator passes the largest weight, so shares are proportional to weights.
//!
//! What it must not do: keep state between builds (a table depends only on its inputs), or
//! allocate anything proportional to more than `M` slots.

use std::net::IpAddr;

use crate::hash::{jhash2, le_words};

/// The default table size (a prime, as §3.4 requires).
pub const DEFAULT_TABLE_SIZE: u32 = 16_381;
/// The largest table size accepted.
pub const MAX_TABLE_SIZE: u32 = 65_537;
/// The smallest table size accepted.
pub const MIN_TABLE_SIZE: u32 = 3;

/// Reasons a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The size is not a prime in `MIN_TABLE_SIZE..=MAX_TABLE_SIZE`.
    #[error("table size {0} is not a prime between {MIN_TABLE_SIZE} and {MAX_TABLE_SIZE}")]
    BadSize(u32),
    /// More backends with non-zero weight than slots.
    #[error("{backends} backends do not fit in a table of {size} slots")]
    TooManyBackends {
        /// Backends with a non-zero weight.
        backends: usize,
        /// Table size.
        size: u32,
    },
    /// The same backend address appears twice.
    #[error("backend {0} is listed twice")]
    DuplicateBackend(IpAddr),
}

/// A validated table size: a prime in `MIN_TABLE_SIZE..=MAX_TABLE_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize(u32);

impl TableSize {
    /// Checks that `size` is an acceptable prime.
    pub fn new(size: u32) -> Result<Self, MaglevError> {
        if (MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&size) && is_prime(size) {
            Ok(Self(size))
        } else {
            Err(MaglevError::BadSize(size))
        }
    }

    /// The number of slots.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for TableSize {
    fn default() -> Self {
        Self(DEFAULT_TABLE_SIZE)
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// One backend and its weight (0 = drained: it gets no slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightedBackend {
    /// The backend node's address (the outer destination of the encapsulated packet).
    pub addr: IpAddr,
    /// Relative weight.
    pub weight: u32,
}

/// A built table: `slots[i]` is an index into `backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    backends: Vec<IpAddr>,
    slots: Vec<u32>,
}

impl MaglevTable {
    /// The backends with a non-zero weight, sorted by address; slot values index this list.
    pub fn backends(&self) -> &[IpAddr] {
        &self.backends
    }

    /// Slot → index into [`backends`](Self::backends). Empty when no backend has a weight.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The backend owning slot `slot`, if the table has any backend.
    pub fn backend_at(&self, slot: usize) -> Option<IpAddr> {
        let index = *self.slots.get(slot)?;
        self.backends.get(usize::try_from(index).ok()?).copied()
    }
}

fn addr_words(addr: IpAddr) -> Vec<u32> {
    match addr {
        IpAddr::V4(v4) => le_words(&v4.octets()),
        IpAddr::V6(v6) => le_words(&v6.octets()),
    }
}

/// Builds the table for `backends` (any order) with `size` slots, permutations seeded by `seed`.
pub fn build(
    backends: &[WeightedBackend],
    size: TableSize,
    seed: u32,
) -> Result<MaglevTable, MaglevError> {
    let mut live: Vec<WeightedBackend> =
        backends.iter().copied().filter(|b| b.weight > 0).collect();
    live.sort_by_key(|b| b.addr);
    if let Some(pair) = live.windows(2).find(|pair| pair[0].addr == pair[1].addr) {
        return Err(MaglevError::DuplicateBackend(pair[0].addr));
    }
    let m = size.get();
    if live.len() > m as usize {
        return Err(MaglevError::TooManyBackends {
            backends: live.len(),
            size: m,
        });
    }
    let addrs: Vec<IpAddr> = live.iter().map(|b| b.addr).collect();
    if live.is_empty() {
        return Ok(MaglevTable {
            backends: addrs,
            slots: Vec::new(),
        });
    }
    // §3.4: offset ∈ [0, M), skip ∈ [1, M); M prime makes every skip a generator.
    let mut position: Vec<u32> = Vec::with_capacity(live.len());
    let mut skip: Vec<u32> = Vec::with_capacity(live.len());
    for backend in &live {
        let words = addr_words(backend.addr);
        position.push(jhash2(&words, seed) % m);
        skip.push(jhash2(&words, seed ^ 0x9e37_79b9) % (m - 1) + 1);
    }
    let max_weight = u64::from(live.iter().map(|b| b.weight).max().unwrap_or(1));
    let mut credit = vec![0u64; live.len()];
    let mut slots = vec![u32::MAX; m as usize];
    let mut filled = 0u32;
    'fill: loop {
        for (i, backend) in live.iter().enumerate() {
            credit[i] += u64::from(backend.weight);
            if credit[i] < max_weight {
                continue;
            }
            credit[i] -= max_weight;
            // The next free slot in this backend's preference list; one exists since filled < M.
            loop {
                let slot = position[i] as usize;
                position[i] = ((u64::from(position[i]) + u64::from(skip[i])) % u64::from(m)) as u32;
                if slots[slot] == u32::MAX {
                    slots[slot] = i as u32;
                    break;
                }
            }
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    Ok(MaglevTable {
        backends: addrs,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc633_6400 + n)) // 198.51.100.0 + n (wraps into 198.51.10x)
    }

    fn equal(n: u32) -> Vec<WeightedBackend> {
        (1..=n)
            .map(|i| WeightedBackend {
                addr: v4(i),
                weight: 1,
            })
            .collect()
    }

    fn shares(table: &MaglevTable) -> Vec<usize> {
        let mut counts = vec![0usize; table.backends().len()];
        for &slot in table.slots() {
            counts[slot as usize] += 1;
        }
        counts
    }

    #[test]
    fn sizes_must_be_prime_and_in_range() {
        assert!(TableSize::new(16_381).is_ok());
        assert!(TableSize::new(65_537).is_ok());
        assert_eq!(TableSize::new(16_380), Err(MaglevError::BadSize(16_380)));
        assert_eq!(TableSize::new(65_539), Err(MaglevError::BadSize(65_539)));
        assert_eq!(TableSize::new(2), Err(MaglevError::BadSize(2)));
        assert_eq!(TableSize::default().get(), DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn every_slot_is_filled_and_backend_order_does_not_matter() {
        let backends = equal(7);
        let table = build(&backends, TableSize::default(), 1).expect("table");
        assert_eq!(table.slots().len(), DEFAULT_TABLE_SIZE as usize);
        assert!(table.slots().iter().all(|&s| (s as usize) < 7));
        let mut reversed = backends.clone();
        reversed.reverse();
        assert_eq!(build(&reversed, TableSize::default(), 1), Ok(table.clone()));
        assert_ne!(build(&backends, TableSize::default(), 2), Ok(table));
    }

    #[test]
    fn zero_weight_backends_get_no_slot_and_no_backends_give_an_empty_table() {
        let mut backends = equal(3);
        backends[1].weight = 0;
        let table = build(&backends, TableSize::new(1009).expect("prime"), 0).expect("table");
        assert_eq!(table.backends(), &[v4(1), v4(3)]);
        let none = build(&[], TableSize::default(), 0).expect("empty");
        assert!(none.slots().is_empty());
        assert_eq!(none.backend_at(0), None);
    }

    #[test]
    fn duplicates_and_too_many_backends_are_rejected() {
        let mut backends = equal(2);
        backends.push(backends[0]);
        assert_eq!(
            build(&backends, TableSize::default(), 0),
            Err(MaglevError::DuplicateBackend(v4(1)))
        );
        assert_eq!(
            build(&equal(14), TableSize::new(13).expect("prime"), 0),
            Err(MaglevError::TooManyBackends {
                backends: 14,
                size: 13
            })
        );
    }

    #[test]
    fn ipv6_backends_are_placed_too() {
        let backends: Vec<WeightedBackend> = (1..=3u16)
            .map(|i| WeightedBackend {
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)),
                weight: 1,
            })
            .collect();
        let table = build(&backends, TableSize::new(1009).expect("prime"), 0).expect("table");
        assert!(shares(&table).iter().all(|&s| s > 300));
    }

    /// Fraction of slots whose owner changed between two tables, split into slots that belonged
    /// to `removed` (which must all move) and slots of every other backend (which ideally stay).
    fn removal_disruption(
        before: &MaglevTable,
        after: &MaglevTable,
        removed: IpAddr,
    ) -> (usize, usize) {
        let mut moved_removed = 0;
        let mut moved_others = 0;
        for slot in 0..before.slots().len() {
            let (old, new) = (before.backend_at(slot), after.backend_at(slot));
            if old == Some(removed) {
                moved_removed += 1;
            } else if old != new {
                moved_others += 1;
            }
        }
        (moved_removed, moved_others)
    }

    #[test]
    fn removing_one_of_ten_backends_moves_its_slots_and_almost_nothing_else() {
        let backends = equal(10);
        let size = TableSize::default();
        let before = build(&backends, size, 0).expect("table");
        let removed = backends[4].addr;
        let after = build(
            &backends[..4]
                .iter()
                .chain(&backends[5..])
                .copied()
                .collect::<Vec<_>>(),
            size,
            0,
        )
        .expect("table");
        let (moved_removed, moved_others) = removal_disruption(&before, &after, removed);
        let m = size.get() as f64;
        let fraction_moved = (moved_removed + moved_others) as f64 / m;
        let fraction_others = moved_others as f64 / m;
        println!("removed 1 of 10: {fraction_moved:.4} of slots moved, {fraction_others:.4} from other backends");
        assert!(after
            .slots()
            .iter()
            .all(|&i| after.backends()[i as usize] != removed));
        assert!(
            (fraction_moved - 0.1).abs() < 0.02,
            "moved {fraction_moved}"
        );
        assert!(
            fraction_others < 0.02,
            "other backends lost {fraction_others}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Shares are within 1% of ideal when the table is more than 100× the backend count.
        #[test]
        fn weighted_shares_are_within_one_percent_of_ideal(
            weights in proptest::collection::vec(1u32..=4, 2..=60),
            seed in any::<u32>(),
        ) {
            let backends: Vec<WeightedBackend> = weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| WeightedBackend { addr: v4(i as u32 + 1), weight })
                .collect();
            let size = TableSize::default();
            prop_assume!(size.get() as usize > 100 * backends.len());
            let table = build(&backends, size, seed).expect("table");
            let total: u32 = weights.iter().sum();
            for (i, count) in shares(&table).iter().enumerate() {
                let ideal = f64::from(weights[i]) / f64::from(total);
                let got = *count as f64 / f64::from(size.get());
                prop_assert!((got - ideal).abs() <= 0.01 * ideal,
                    "backend {i}: share {got} vs ideal {ideal}");
            }
        }

        /// Removing one of N backends reassigns its slots (≈ 1/N) and at most a quarter as many
        /// of the others' (Maglev is near-minimal, not minimal: measured ≈ 0.4% for N = 10).
        #[test]
        fn removing_a_backend_remaps_about_one_nth(
            n in 3u32..=40,
            victim in any::<prop::sample::Index>(),
            seed in any::<u32>(),
        ) {
            let backends = equal(n);
            let removed = backends[victim.index(n as usize)].addr;
            let rest: Vec<WeightedBackend> = backends.iter().copied().filter(|b| b.addr != removed).collect();
            let size = TableSize::default();
            let before = build(&backends, size, seed).expect("table");
            let after = build(&rest, size, seed).expect("table");
            let (moved_removed, moved_others) = removal_disruption(&before, &after, removed);
            let m = f64::from(size.get());
            let ideal = 1.0 / f64::from(n);
            prop_assert!((moved_removed as f64 / m - ideal).abs() <= 0.01 * ideal);
            prop_assert!((moved_others as f64 / m) < 0.25 * ideal + 0.005,
                "n={n}: other backends lost {} of slots", moved_others as f64 / m);
        }
    }
}
