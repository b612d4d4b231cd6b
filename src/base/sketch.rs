//! Small mergeable summaries for per-interval counters: distinct counts and
//! heavy hitters.
//!
//! Both have a fixed size, merge across shards without loss of meaning, and
//! cost a hash and a few instructions per packet. Both say how exact they
//! are, so an event never prints an estimate as a fact.

use crate::base::Addr;

/// A distinct count as evidence: the value, and how far it can be trusted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Count {
    /// The count (for a saturated sketch: a lower bound).
    pub value: u64,
    /// True when every distinct item was kept: the value is exact.
    pub exact: bool,
    /// For an estimate: relative error at 95 % confidence (two standard errors).
    pub error: f64,
    /// The sketch is full: the true count is at least `value`.
    pub saturated: bool,
}

impl Count {
    /// The count in words: "17", "about 230 (±4%)", "at least 3,540".
    pub fn words(&self) -> String {
        if self.exact {
            self.value.to_string()
        } else if self.saturated {
            format!("at least {}", self.value)
        } else {
            format!("about {} (±{:.0}%)", self.value, (self.error * 100.0).max(1.0))
        }
    }
}

/// Distinct count: exact while it has seen at most `W` distinct items, then
/// a linear-counting bitmap of `32·W` bits (Whang et al., 1990) in the same
/// storage.
///
/// Items are 32-bit fingerprints of a well-mixed 64-bit hash, so two of the
/// first `W` collide with probability below `W²/2³³` (one in 17 million for
/// `W` = 16). Past `W` the estimate's relative error (95 %) is about 4 % up
/// to `8·W` items and grows to about 10 % near `64·W`, where the bitmap
/// saturates and the count becomes a lower bound. The estimate is also
/// clamped to the number of insertions, which no distinct count can exceed.
/// Merging is a union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Distinct<const W: usize = 16> {
    /// Insertions (saturating): an upper bound on the distinct count.
    inserts: u32,
    /// Exact mode: items held; [`SKETCH`] once the bitmap took over.
    len: u16,
    // Counters first, then the items in use: a set of a few items touches
    // one cache line, not the whole array.
    slots: [u32; W],
}

/// `len` of a [`Distinct`] in bitmap mode.
const SKETCH: u16 = u16::MAX;

impl<const W: usize> Default for Distinct<W> {
    fn default() -> Self {
        Distinct { slots: [0; W], len: 0, inserts: 0 }
    }
}

impl<const W: usize> Distinct<W> {
    const BITS: u32 = (W * 32) as u32;

    /// Records one item by its (any) 64-bit hash.
    #[inline]
    pub fn insert_hash(&mut self, h: u64) {
        self.inserts = self.inserts.saturating_add(1);
        // The finaliser makes the fingerprint uniform whatever the input
        // hash's structure (sequential ports must not fill the bitmap evenly).
        let fp = (mix(h) >> 32) as u32 | 1;
        self.insert_fp(fp);
    }

    #[inline]
    fn insert_fp(&mut self, fp: u32) {
        if self.len == SKETCH {
            self.set_bit(fp);
        } else if !self.slots[..usize::from(self.len).min(W)].contains(&fp) {
            if usize::from(self.len) < W {
                self.slots[usize::from(self.len)] = fp;
                self.len += 1;
            } else {
                self.switch_to_bitmap();
                self.set_bit(fp);
            }
        }
    }

    #[inline]
    fn set_bit(&mut self, fp: u32) {
        // Bit index from the fingerprint's top bits; W is a power of two.
        let bit = (u64::from(fp) * u64::from(Self::BITS)) >> 32;
        self.slots[(bit >> 5) as usize] |= 1 << (bit & 31);
    }

    fn switch_to_bitmap(&mut self) {
        let held = self.slots;
        self.slots = [0; W];
        self.len = SKETCH;
        for fp in held {
            self.set_bit(fp);
        }
    }

    /// Records an address (its two halves folded; the finaliser mixes them).
    #[inline]
    pub fn insert_addr(&mut self, a: &Addr) {
        let v = u128::from_ne_bytes(a.0);
        self.insert_hash((v as u64) ^ ((v >> 64) as u64).rotate_left(29));
    }

    /// Records a port.
    #[inline]
    pub fn insert_port(&mut self, p: u16) {
        self.insert_hash(u64::from(p));
    }

    /// Adds another sketch's items.
    pub fn merge(&mut self, o: &Distinct<W>) {
        if self.inserts == 0 {
            // Into an empty sketch (the host stage's first shard): a copy.
            *self = *o;
            return;
        }
        self.inserts = self.inserts.saturating_add(o.inserts);
        match (self.len == SKETCH, o.len == SKETCH) {
            (_, false) => {
                for &fp in &o.slots[..usize::from(o.len)] {
                    self.insert_fp(fp);
                }
            }
            (false, true) => {
                let mine = *self;
                *self = *o;
                self.inserts = mine.inserts;
                for &fp in &mine.slots[..usize::from(mine.len)] {
                    self.set_bit(fp);
                }
            }
            (true, true) => {
                for (a, b) in self.slots.iter_mut().zip(o.slots.iter()) {
                    *a |= b;
                }
            }
        }
    }

    /// The distinct count (estimated past `W` items), without the error
    /// bound: what detectors compare with their lines.
    pub fn estimate(&self) -> u64 {
        if self.len != SKETCH {
            return u64::from(self.len);
        }
        self.count().value
    }

    /// The distinct count with its exactness, for evidence.
    pub fn count(&self) -> Count {
        if self.len != SKETCH {
            return Count { value: u64::from(self.len), exact: true, error: 0.0, saturated: false };
        }
        let ones: u32 = self.slots.iter().map(|w| w.count_ones()).sum();
        linear_count(ones, Self::BITS, W as u64 + 1, u64::from(self.inserts))
    }
}

/// Linear counting (Whang et al., 1990) from a bitmap with `ones` of `bits`
/// set, for a set known to hold at least `floor` and at most `cap` items.
fn linear_count(ones: u32, bits: u32, floor: u64, cap: u64) -> Count {
    let m = f64::from(bits);
    let zeros = f64::from(bits - ones);
    let cap = cap.max(floor);
    if zeros == 0.0 {
        // Every bit set: all that is known is that the count is at least
        // what one empty bit would have meant.
        let value = ((m * m.ln()).round() as u64).clamp(floor, cap);
        return Count { value, exact: false, error: 0.0, saturated: true };
    }
    let n = -m * (zeros / m).ln();
    let t = n / m;
    let error = 2.0 * (m * (t.exp() - t - 1.0)).sqrt() / n.max(1.0);
    let value = (n.round() as u64).clamp(floor, cap);
    Count { value, exact: false, error: (error * 100.0).round() / 100.0, saturated: false }
}

/// Distinct ports: exact (the ports themselves) up to 16, then a 256-bit
/// linear-counting bitmap in the same 32 bytes; half the size of a
/// [`Distinct`] of the same exact width, for the scan detector's
/// per-pair tables, which hold one entry per probed pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PortSet {
    inserts: u32,
    /// Exact mode: ports held; [`SKETCH`] once the bitmap took over.
    len: u16,
    slots: [u16; 16],
}

impl PortSet {
    /// Records a port.
    #[inline]
    pub fn insert_port(&mut self, p: u16) {
        self.inserts = self.inserts.saturating_add(1);
        self.insert(p);
    }

    #[inline]
    fn insert(&mut self, p: u16) {
        if self.len == SKETCH {
            self.set_bit(p);
        } else if !self.slots[..usize::from(self.len).min(16)].contains(&p) {
            if self.len < 16 {
                self.slots[usize::from(self.len)] = p;
                self.len += 1;
            } else {
                let held = self.slots;
                self.slots = [0; 16];
                self.len = SKETCH;
                held.iter().for_each(|&q| self.set_bit(q));
                self.set_bit(p);
            }
        }
    }

    #[inline]
    fn set_bit(&mut self, p: u16) {
        let bit = (mix(u64::from(p)) >> 56) as usize;
        self.slots[bit >> 4] |= 1 << (bit & 15);
    }

    /// Adds another set's ports.
    pub fn merge(&mut self, o: &PortSet) {
        if self.inserts == 0 {
            *self = *o;
            return;
        }
        let inserts = self.inserts.saturating_add(o.inserts);
        match (self.len == SKETCH, o.len == SKETCH) {
            (_, false) => o.slots[..usize::from(o.len)].iter().for_each(|&p| self.insert(p)),
            (false, true) => {
                let mine = *self;
                *self = *o;
                mine.slots[..usize::from(mine.len)].iter().for_each(|&p| self.set_bit(p));
            }
            (true, true) => self.slots.iter_mut().zip(o.slots.iter()).for_each(|(a, b)| *a |= b),
        }
        self.inserts = inserts;
    }

    /// The distinct count (estimated past 16 ports).
    pub fn estimate(&self) -> u64 {
        self.count().value
    }

    /// The distinct count with its exactness, for evidence.
    pub fn count(&self) -> Count {
        if self.len != SKETCH {
            return Count { value: u64::from(self.len), exact: true, error: 0.0, saturated: false };
        }
        let ones: u32 = self.slots.iter().map(|w| w.count_ones()).sum();
        linear_count(ones, 256, 17, u64::from(self.inserts))
    }
}

/// SplitMix64's finaliser: full avalanche of a 64-bit value.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Number of slots in a [`TopK`].
pub const TOPK: usize = 4;

/// The heaviest few peers of a host by packets (Space-Saving, Metwally et
/// al. 2005), with each slot's error so that lower bounds can be reported.
///
/// A slot's count is an upper bound on that peer's packets and `count -
/// error` a guaranteed lower bound; a peer holding more than 1/K of the
/// traffic is always present. Merging follows the mergeable summaries of
/// Agarwal et al. (2012): a peer absent from a full summary may have had up
/// to its smallest count there, which is added to both its count and error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopK {
    addrs: [Addr; TOPK],
    counts: [u32; TOPK],
    errors: [u32; TOPK],
}

/// One heavy-hitter slot: the peer and bounds on its packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heavy {
    /// The peer.
    pub addr: Addr,
    /// At most this many packets.
    pub upper: u32,
    /// At least this many packets (guaranteed).
    pub lower: u32,
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
        // A newcomer inherits the evicted slot's count as its error.
        self.addrs[min_i] = a;
        self.errors[min_i] = self.counts[min_i];
        self.counts[min_i] = self.counts[min_i].saturating_add(n);
    }

    /// The smallest count held when every slot is taken (what an absent
    /// peer may have had), else 0.
    fn floor(&self) -> u32 {
        if self.counts.iter().all(|&c| c > 0) { self.counts.iter().copied().min().unwrap_or(0) } else { 0 }
    }

    /// Merges another summary into this one (no allocation: the host stage
    /// merges two of these per host per shard per interval).
    pub fn merge(&mut self, o: &TopK) {
        let (mine, theirs) = (self.floor(), o.floor());
        // (peer, count, error) over the union; a side that lacks the peer
        // contributes its floor to both.
        let mut all = [(Addr::UNSPECIFIED, 0u32, 0u32); 2 * TOPK];
        let mut n = 0;
        for i in (0..TOPK).filter(|&i| self.counts[i] > 0) {
            let (c, e) = match (0..TOPK).find(|&j| o.counts[j] > 0 && o.addrs[j] == self.addrs[i]) {
                Some(j) => (o.counts[j], o.errors[j]),
                None => (theirs, theirs),
            };
            all[n] = (self.addrs[i], self.counts[i].saturating_add(c), self.errors[i].saturating_add(e));
            n += 1;
        }
        for j in (0..TOPK).filter(|&j| o.counts[j] > 0) {
            if !all[..n].iter().any(|(x, _, _)| *x == o.addrs[j]) {
                all[n] = (o.addrs[j], o.counts[j].saturating_add(mine), o.errors[j].saturating_add(mine));
                n += 1;
            }
        }
        let all = &mut all[..n];
        all.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        *self = TopK::default();
        for (i, (a, c, e)) in all.iter().take(TOPK).enumerate() {
            self.addrs[i] = *a;
            self.counts[i] = *c;
            self.errors[i] = *e;
        }
    }

    /// Peers that stand out: more than half of each one's count is
    /// guaranteed (its lower bound exceeds its error), heaviest guaranteed
    /// first (ties by address). Under spoofing, where slots change hands
    /// every packet, nobody qualifies.
    pub fn heavy(&self) -> Vec<Heavy> {
        let mut v: Vec<Heavy> = (0..TOPK)
            .filter(|&i| self.counts[i] - self.errors[i] > self.errors[i])
            .map(|i| Heavy {
                addr: self.addrs[i],
                upper: self.counts[i],
                lower: self.counts[i] - self.errors[i],
            })
            .collect();
        v.sort_by(|x, y| y.lower.cmp(&x.lower).then(y.upper.cmp(&x.upper)).then(x.addr.cmp(&y.addr)));
        v
    }
}

/// A set of ports as a 65,536-bit map: one load to test a port, for the
/// per-packet checks of configured service lists.
#[derive(Clone, Debug)]
pub struct PortBits(Box<[u64; 1024]>);

impl PortBits {
    /// The set of `ports`.
    pub fn of(ports: &[u16]) -> PortBits {
        let mut bits = Box::new([0u64; 1024]);
        for &p in ports {
            bits[usize::from(p / 64)] |= 1 << (p % 64);
        }
        PortBits(bits)
    }

    /// True when `p` is in the set.
    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p / 64)] & (1 << (p % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_is_exact_up_to_its_width_then_estimates() {
        let mut d: Distinct = Distinct::default();
        assert_eq!(d.count(), Count { value: 0, exact: true, error: 0.0, saturated: false });
        for p in 0..16u16 {
            d.insert_port(p);
            d.insert_port(p); // duplicates do not count
        }
        assert_eq!(d.count().value, 16);
        assert!(d.count().exact);
        d.insert_port(16);
        let c = d.count();
        assert!(!c.exact && c.value >= 17 && c.value <= 18, "{c:?}");
        // Sequential ports: within the stated error, never above the insertions.
        for n in [20u16, 50, 100, 300, 1000] {
            let mut d: Distinct = Distinct::default();
            for p in 1..=n {
                d.insert_port(p);
            }
            let c = d.count();
            let err = (c.value as f64 - f64::from(n)).abs() / f64::from(n);
            assert!(err <= c.error.max(0.02) + 0.02, "{n}: {c:?}");
            assert!(c.value <= u64::from(n), "{n}: {c:?}");
        }
        let mut big: Distinct = Distinct::default();
        for p in 0..20_000u16 {
            big.insert_port(p);
        }
        let c = big.count();
        assert!(c.saturated && c.value < 20_000, "{c:?}");
        assert!(c.words().starts_with("at least"));
    }

    #[test]
    fn distinct_merges_as_a_union_in_any_order() {
        let fill = |from: u16, to: u16| {
            let mut d: Distinct = Distinct::default();
            (from..to).for_each(|p| d.insert_port(p));
            d
        };
        let (a, b) = (fill(0, 10), fill(5, 12));
        let mut ab = a;
        ab.merge(&b);
        assert_eq!(ab.count().value, 12);
        assert!(ab.count().exact);
        let (big, small) = (fill(0, 200), fill(190, 205));
        let (mut x, mut y) = (big, small);
        x.merge(&small);
        y.merge(&big);
        assert_eq!(x, y, "a union in either order");
        assert_eq!(x.inserts, 215);
    }

    #[test]
    fn port_sets_are_exact_to_sixteen_then_estimate_within_their_error() {
        let fill = |from: u16, to: u16| {
            let mut s = PortSet::default();
            (from..to).for_each(|p| s.insert_port(p));
            s
        };
        let s = fill(1, 17);
        assert_eq!((s.count().value, s.count().exact), (16, true));
        for n in [17u16, 50, 100, 300] {
            let c = fill(1, n + 1).count();
            let err = (c.value as f64 - f64::from(n)).abs() / f64::from(n);
            assert!(!c.exact && err <= c.error + 0.03 && c.value <= u64::from(n), "{n}: {c:?}");
        }
        let (a, b) = (fill(0, 10), fill(5, 30));
        let (mut x, mut y) = (a, b);
        x.merge(&b);
        y.merge(&a);
        assert_eq!(x, y);
        assert_eq!(fill(0, 12).count(), {
            let mut m = fill(0, 8);
            m.merge(&fill(4, 12));
            m.count()
        });
    }

    #[test]
    fn topk_keeps_heavy_hitters_with_guaranteed_lower_bounds() {
        let mut t = TopK::default();
        for i in 0..100u8 {
            t.add(Addr::v4([10, 0, 0, i]), 1);
            t.add(Addr::v4([1, 1, 1, 1]), 5);
        }
        let h = t.heavy();
        assert_eq!(h[0].addr, Addr::v4([1, 1, 1, 1]));
        assert_eq!((h[0].lower, h[0].upper), (500, 500));
        // The one-packet sources rotate through the other slots: none stands out.
        assert_eq!(h.len(), 1, "{h:?}");
        let mut u = TopK::default();
        u.add(Addr::v4([1, 1, 1, 1]), 7);
        u.add(Addr::v4([2, 2, 2, 2]), 600);
        t.merge(&u);
        let h = t.heavy();
        assert_eq!((h[0].addr, h[0].lower), (Addr::v4([2, 2, 2, 2]), 600));
        assert_eq!((h[1].addr, h[1].lower), (Addr::v4([1, 1, 1, 1]), 507));
    }

    #[test]
    fn spoofed_sources_get_no_guaranteed_count() {
        let mut t = TopK::default();
        for i in 0..5000u32 {
            t.add(Addr::v4(i.to_be_bytes()), 1);
        }
        assert!(t.heavy().is_empty(), "{:?}", t.heavy());
    }
}
