//! Tiny mergeable summaries for per-interval host counters.
//!
//! Both fit in a cache line or two, merge across shards without loss of
//! meaning, and cost a hash and a few instructions per packet.

use std::hash::BuildHasher;

use crate::base::Addr;

/// Distinct-count sketch: 256-bit linear counting (Whang et al., 1990).
///
/// Exact-ish up to a few hundred distinct items, saturating near 1,400:
/// enough to tell "a handful" from "hundreds" of peers or ports in one
/// second, at 32 bytes. Merging is a bitwise OR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Distinct([u64; 4]);

/// The most a [`Distinct`] can report (all bits set).
pub const DISTINCT_SATURATED: u64 = 1420;

impl Distinct {
    /// Records one item by its hash.
    #[inline]
    pub fn insert_hash(&mut self, h: u64) {
        let bit = (h >> 56) as usize; // top byte: the best-mixed bits of foldhash
        self.0[bit >> 6] |= 1 << (bit & 63);
    }

    /// Records an address.
    #[inline]
    pub fn insert_addr(&mut self, a: &Addr) {
        self.insert_hash(hash_of(a));
    }

    /// Records a port.
    #[inline]
    pub fn insert_port(&mut self, p: u16) {
        self.insert_hash(hash_of(&p));
    }

    /// Adds another sketch's items.
    pub fn merge(&mut self, o: &Distinct) {
        for i in 0..4 {
            self.0[i] |= o.0[i];
        }
    }

    /// Estimated number of distinct items.
    pub fn estimate(&self) -> u64 {
        let ones: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        let zeros = 256 - ones;
        if zeros == 0 {
            return DISTINCT_SATURATED;
        }
        let m = 256.0f64;
        (-m * (f64::from(zeros) / m).ln()).round() as u64
    }
}

fn hash_of<T: std::hash::Hash>(v: &T) -> u64 {
    foldhash::fast::FixedState::with_seed(0x736b_6574_6368_2121).hash_one(v)
}

/// Number of slots in a [`TopK`].
pub const TOPK: usize = 4;

/// The heaviest few peers of a host by packets (Space-Saving, Metwally et al. 2005).
///
/// Counts are upper bounds; a peer holding more than 1/K of the traffic is
/// always present. Merging sums counts of equal peers and keeps the largest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopK {
    addrs: [Addr; TOPK],
    counts: [u32; TOPK],
}

impl TopK {
    /// Counts `n` packets for `a`.
    #[inline]
    pub fn add(&mut self, a: Addr, n: u32) {
        let mut min_i = 0;
        for i in 0..TOPK {
            if self.counts[i] > 0 && self.addrs[i] == a {
                self.counts[i] = self.counts[i].saturating_add(n);
                return;
            }
            if self.counts[i] < self.counts[min_i] {
                min_i = i;
            }
        }
        self.addrs[min_i] = a;
        self.counts[min_i] = self.counts[min_i].saturating_add(n);
    }

    /// Merges another summary into this one (no allocation: the host stage
    /// merges two of these per host per shard per interval).
    pub fn merge(&mut self, o: &TopK) {
        let mut all = [(Addr::UNSPECIFIED, 0u32); 2 * TOPK];
        let mut n = 0;
        for i in (0..TOPK).filter(|&i| self.counts[i] > 0) {
            all[n] = (self.addrs[i], self.counts[i]);
            n += 1;
        }
        for i in (0..TOPK).filter(|&i| o.counts[i] > 0) {
            match all[..n].iter_mut().find(|(x, _)| *x == o.addrs[i]) {
                Some(e) => e.1 = e.1.saturating_add(o.counts[i]),
                None => {
                    all[n] = (o.addrs[i], o.counts[i]);
                    n += 1;
                }
            }
        }
        let all = &mut all[..n];
        all.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        *self = TopK::default();
        for (i, (a, c)) in all.iter().take(TOPK).enumerate() {
            self.addrs[i] = *a;
            self.counts[i] = *c;
        }
    }

    /// Non-empty slots, heaviest first (ties by address, for determinism).
    pub fn entries(&self) -> Vec<(Addr, u32)> {
        let mut v: Vec<(Addr, u32)> =
            (0..TOPK).filter(|&i| self.counts[i] > 0).map(|i| (self.addrs[i], self.counts[i])).collect();
        v.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_counts_small_sets_closely() {
        let mut d = Distinct::default();
        assert_eq!(d.estimate(), 0);
        for p in 0..50u16 {
            d.insert_port(p);
            d.insert_port(p); // duplicates do not count
        }
        let e = d.estimate();
        assert!((45..=56).contains(&e), "{e}");
        let mut big = Distinct::default();
        for p in 0..10_000u16 {
            big.insert_port(p);
        }
        assert_eq!(big.estimate(), DISTINCT_SATURATED);
        let (mut a, mut b) = (Distinct::default(), Distinct::default());
        for p in 0..30u16 {
            a.insert_port(p);
            b.insert_port(p + 15);
        }
        a.merge(&b);
        assert!((38..=52).contains(&a.estimate()), "{}", a.estimate());
    }

    #[test]
    fn topk_keeps_heavy_hitters_and_merges() {
        let mut t = TopK::default();
        for i in 0..100u8 {
            t.add(Addr::v4([10, 0, 0, i]), 1);
            t.add(Addr::v4([1, 1, 1, 1]), 5);
        }
        let e = t.entries();
        assert_eq!(e[0].0, Addr::v4([1, 1, 1, 1]));
        assert_eq!(e[0].1, 500);
        let mut u = TopK::default();
        u.add(Addr::v4([1, 1, 1, 1]), 7);
        u.add(Addr::v4([2, 2, 2, 2]), 600);
        t.merge(&u);
        let e = t.entries();
        assert_eq!(e[0], (Addr::v4([2, 2, 2, 2]), 600));
        assert_eq!(e[1], (Addr::v4([1, 1, 1, 1]), 507));
    }
}
