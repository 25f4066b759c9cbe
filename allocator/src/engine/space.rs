//! Free-address bookkeeping for one pool and one address family, without enumerating addresses.
//!
//! Addresses are `u128` (an IPv4 address is its `u32` value). A [`Space`] keeps two disjoint sets:
//! the *never used* addresses as an interval set (`BTreeMap` inclusive end → start) and the
//! *freed* addresses as a FIFO keyed by a release sequence number. [`Space::take`] hands out the
//! lowest never-used address first and, only when none is left, the address freed longest ago.
//! Every operation is O(log n) in the number of intervals or freed addresses, never in the size
//! of the pool, so a /64 costs the same as a /30.
//!
//! With `avoid_buggy` (IPv4 pools with `avoidBuggyIPs`) addresses ending in `.0` or `.255` are
//! never handed out and never counted as available; they are skipped arithmetically rather than
//! cut out of the intervals, so a /8 stays a single interval. This module holds no knowledge of
//! Services, pools' selectors or occupancy by other pools: the engine drives it.

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;

/// True for an IPv4 address ending in `.0` or `.255` (as a `u128` address value).
pub(super) fn is_buggy_v4(addr: u128) -> bool {
    matches!(addr & 0xff, 0 | 0xff)
}

/// Number of `x` in `0..=n` with `x % 256 == r`.
fn count_residue_upto(n: u128, r: u128) -> u128 {
    if n < r {
        0
    } else {
        (n - r) / 256 + 1
    }
}

/// Free addresses of one family of one pool.
#[derive(Clone, Debug)]
pub(super) struct Space {
    /// inclusive interval end -> interval start; addresses never handed out by this pool (may
    /// still contain avoided addresses, which are skipped and never counted). Keyed by the end so
    /// that taking the lowest address only moves the first interval's start.
    never_used: BTreeMap<u128, u128>,
    /// number of usable addresses in `never_used`
    never_used_count: u128,
    /// release sequence number -> address; the first entry was freed longest ago
    freed: BTreeMap<u64, u128>,
    /// address -> its release sequence number in `freed`
    freed_at: HashMap<u128, u64, RandomState>,
    /// skip addresses ending in .0 and .255 (IPv4 only)
    avoid_buggy: bool,
}

impl Space {
    /// A space whose every usable address in `ranges` (sorted, disjoint, not adjacent) is never used.
    pub(super) fn new(ranges: &[(u128, u128)], avoid_buggy: bool) -> Self {
        let mut space = Space {
            never_used: BTreeMap::new(),
            never_used_count: 0,
            freed: BTreeMap::new(),
            freed_at: HashMap::default(),
            avoid_buggy,
        };
        for &(start, end) in ranges {
            space.never_used.insert(end, start);
            space.never_used_count += space.count_usable(start, end);
        }
        space
    }

    /// True when this space may hand out `addr` at all.
    pub(super) fn is_usable(&self, addr: u128) -> bool {
        !(self.avoid_buggy && is_buggy_v4(addr))
    }

    /// Number of usable addresses in `start..=end`. Saturates for the whole IPv6 space.
    fn count_usable(&self, start: u128, end: u128) -> u128 {
        let size = (end - start).saturating_add(1);
        if !self.avoid_buggy {
            return size;
        }
        let buggy = |r| {
            count_residue_upto(end, r)
                - start.checked_sub(1).map_or(0, |s| count_residue_upto(s, r))
        };
        size - buggy(0) - buggy(0xff)
    }

    /// Usable addresses that [`Space::take`] can still hand out.
    pub(super) fn available(&self) -> u128 {
        self.never_used_count
            .saturating_add(self.freed.len() as u128)
    }

    /// Hands out the lowest never-used usable address, else the address freed longest ago.
    pub(super) fn take(&mut self) -> Option<u128> {
        let avoid_buggy = self.avoid_buggy;
        while let Some(mut first) = self.never_used.first_entry() {
            let (end, start) = (*first.key(), *first.get());
            // At most two avoided addresses (x.255, x+1.0) precede a usable one.
            match (start..=end)
                .take(3)
                .find(|&a| !(avoid_buggy && is_buggy_v4(a)))
            {
                Some(addr) => {
                    // start..addr are avoided addresses: dropping them changes no count.
                    if addr < end {
                        *first.get_mut() = addr + 1;
                    } else {
                        first.remove();
                    }
                    self.never_used_count -= 1;
                    return Some(addr);
                }
                // An interval of avoided addresses only: drop it, it holds nothing usable.
                None => {
                    first.remove();
                }
            }
        }
        let (_, addr) = self.freed.pop_first()?;
        self.freed_at.remove(&addr);
        Some(addr)
    }

    /// Removes `addr` from the free sets (it became occupied). False if it was not free here.
    pub(super) fn remove(&mut self, addr: u128) -> bool {
        if let Some((&end, start)) = self.never_used.range_mut(addr..).next() {
            let start_value = *start;
            if start_value <= addr {
                if addr < end {
                    *start = addr + 1;
                } else {
                    self.never_used.remove(&end);
                }
                if start_value < addr {
                    self.never_used.insert(addr - 1, start_value);
                }
                if self.is_usable(addr) {
                    self.never_used_count -= 1;
                }
                return true;
            }
        }
        match self.freed_at.remove(&addr) {
            Some(seq) => {
                self.freed.remove(&seq);
                true
            }
            None => false,
        }
    }

    /// Records `addr` (not free here, usable) as freed at release sequence `seq`.
    pub(super) fn push_freed(&mut self, addr: u128, seq: u64) {
        if self.is_usable(addr) && !self.freed_at.contains_key(&addr) {
            self.freed.insert(seq, addr);
            self.freed_at.insert(addr, seq);
        }
    }

    /// The freed addresses with their release sequence numbers, oldest first.
    pub(super) fn freed(&self) -> impl Iterator<Item = (u64, u128)> + '_ {
        self.freed.iter().map(|(&seq, &addr)| (seq, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_gives_lowest_never_used_then_oldest_freed() {
        let mut s = Space::new(&[(10, 12)], false);
        assert_eq!(s.take(), Some(10));
        assert_eq!(s.take(), Some(11));
        s.push_freed(10, 1);
        assert_eq!(s.take(), Some(12), "never-used 12 comes before freed 10");
        s.push_freed(11, 2);
        assert_eq!(s.take(), Some(10), "10 was freed before 11");
        assert_eq!(s.take(), Some(11));
        assert_eq!(s.take(), None);
    }

    #[test]
    fn avoided_addresses_are_neither_taken_nor_counted() {
        // 192.0.2.254 ..= 192.0.3.1 as u32 values: .254, .255, .0, .1
        let base = u128::from(u32::from_be_bytes([192, 0, 2, 254]));
        let mut s = Space::new(&[(base, base + 3)], true);
        assert_eq!(s.available(), 2);
        assert_eq!(s.take(), Some(base));
        assert_eq!(s.take(), Some(base + 3));
        assert_eq!(s.take(), None);
        assert_eq!(s.available(), 0);
    }

    #[test]
    fn removing_an_address_splits_its_interval() {
        let mut s = Space::new(&[(0, 9)], false);
        assert!(s.remove(0));
        assert!(s.remove(5));
        assert!(!s.remove(5));
        assert_eq!(s.available(), 8);
        let taken: Vec<_> = std::iter::from_fn(|| s.take()).collect();
        assert_eq!(taken, vec![1, 2, 3, 4, 6, 7, 8, 9]);
    }

    #[test]
    fn a_whole_ipv6_slash_64_is_one_interval() {
        let start = 0x2001_0db8_0000_0000_0000_0000_0000_0000u128;
        let end = start + u128::from(u64::MAX);
        let mut s = Space::new(&[(start, end)], false);
        assert_eq!(s.available(), 1u128 << 64);
        assert_eq!(s.take(), Some(start));
        assert!(s.remove(end));
        assert_eq!(s.available(), (1u128 << 64) - 2);
    }

    #[test]
    fn the_whole_ipv6_space_saturates_its_count() {
        let s = Space::new(&[(0, u128::MAX)], false);
        assert_eq!(s.available(), u128::MAX);
    }
}
