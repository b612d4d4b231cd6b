//! The index every slab table shares: hash → slot number, one cache line
//! per lookup.
//!
//! The flow table, the shards' per-interval host and pair tables and the
//! host stage's merged hosts all keep their records in a `Vec` (a slab)
//! and find them through an index of `u32` slot numbers. hashbrown keeps
//! its control bytes and its buckets in two regions, so a lookup in a table
//! too large for the cache missed twice before it even reached the record
//! (measured: the host lookup's cycles split 17 % control bytes, 26 %
//! bucket, 50 % record). Here a bucket is 8 bytes, a 32-bit hash tag beside
//! the slot, probed linearly at a load of at most one half: one miss, then
//! the record. The tag's low bits are the home bucket, so growing and
//! deleting (backward shift, no tombstones) never rehash a key. (Fetching
//! buckets a few packets ahead was tried in the shard loop and bought
//! nothing measurable on the replay benchmark, so it is not here.)

/// A bucket: `slot == FREE` when empty.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tag: u32,
    slot: u32,
}

/// The slot value of an empty bucket; slabs hold fewer than `u32::MAX` records.
const FREE: u32 = u32::MAX;

const EMPTY: Bucket = Bucket { tag: 0, slot: FREE };

/// Open-addressing index from 64-bit hashes to slab slots; the slab holds
/// the keys, so lookups take an `eq` on the slot.
#[derive(Clone, Debug, Default)]
pub struct SlabIndex {
    buckets: Vec<Bucket>,
    len: usize,
}

/// The tag kept for a hash: its high half (foldhash mixes all 64 bits).
#[inline]
fn tag(h: u64) -> u32 {
    (h >> 32) as u32
}

impl SlabIndex {
    /// An index with room for `n` slots before it grows.
    pub fn with_capacity(n: usize) -> SlabIndex {
        let mut s = SlabIndex::default();
        s.grow_to(n);
        s
    }

    /// Slots held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of index memory.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The slot whose key `eq` accepts, among those filed under `h`.
    #[inline]
    pub fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let (t, mask) = (tag(h), self.mask());
        let mut i = t as usize & mask;
        loop {
            let b = self.buckets[i];
            if b.slot == FREE {
                return None;
            }
            if b.tag == t && eq(b.slot) {
                return Some(b.slot);
            }
            i = (i + 1) & mask;
        }
    }

    /// Hints the cache toward the bucket where a lookup of `h` starts.
    #[inline]
    pub fn prefetch(&self, h: u64) {
        if let Some(b) = self.buckets.get(tag(h) as usize & self.mask()) {
            super::prefetch(b);
        }
    }

    /// The slot of the first bucket carrying `h`'s tag: the key's slot as
    /// likely as not, but unchecked. For prefetching only; lookups use
    /// [`SlabIndex::find`].
    #[inline]
    pub fn probable(&self, h: u64) -> Option<u32> {
        self.find(h, |_| true)
    }

    /// Files `slot` under `h` (the caller knows it is not there yet).
    #[inline]
    pub fn insert(&mut self, h: u64, slot: u32) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow_to(self.len + 1);
        }
        self.put(Bucket { tag: tag(h), slot });
        self.len += 1;
    }

    fn put(&mut self, b: Bucket) {
        let mask = self.mask();
        let mut i = b.tag as usize & mask;
        while self.buckets[i].slot != FREE {
            i = (i + 1) & mask;
        }
        self.buckets[i] = b;
    }

    /// The bucket holding `slot`, filed under `h`.
    fn bucket_of(&self, h: u64, slot: u32) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = tag(h) as usize & mask;
        loop {
            match self.buckets[i].slot {
                FREE => return None,
                s if s == slot => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Removes `slot`, filed under `h`; false if it was not there.
    pub fn remove(&mut self, h: u64, slot: u32) -> bool {
        let Some(i) = self.bucket_of(h, slot) else {
            return false;
        };
        let mask = self.mask();
        // Backward shift: pull later members of the run into the hole when
        // their home is not between the hole and where they sit, so every
        // probe still meets its key before a free bucket.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let b = self.buckets[j];
            if b.slot == FREE {
                break;
            }
            let home = b.tag as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.buckets[hole] = b;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Files the key under `h` held in slot `from` as slot `to` instead
    /// (its record moved); false if `from` was not there.
    pub fn relabel(&mut self, h: u64, from: u32, to: u32) -> bool {
        match self.bucket_of(h, from) {
            Some(i) => {
                self.buckets[i].slot = to;
                true
            }
            None => false,
        }
    }

    /// Empties the index, keeping its memory.
    pub fn clear(&mut self) {
        if self.len > 0 {
            self.buckets.fill(EMPTY);
            self.len = 0;
        }
    }

    /// Makes room for `n` slots without growing again.
    pub fn reserve(&mut self, n: usize) {
        if n * 2 > self.buckets.len() {
            self.grow_to(n);
        }
    }

    fn grow_to(&mut self, n: usize) {
        let want = (n.max(4) * 2).next_power_of_two();
        if want <= self.buckets.len() {
            return;
        }
        let old = std::mem::replace(&mut self.buckets, vec![EMPTY; want]);
        for b in old.into_iter().filter(|b| b.slot != FREE) {
            self.put(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A poor hash so runs collide and wrap: the backward shift is exercised.
    fn h(k: u32, spread: u32) -> u64 {
        u64::from(k % spread) << 32 | u64::from(k)
    }

    proptest! {
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((0u8..3, 0u32..200), 1..600), spread in 1u32..64) {
            let mut idx = SlabIndex::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (op, k) in ops {
                let slot = k + 1000;
                match op {
                    0 if !model.contains_key(&k) => { idx.insert(h(k, spread), slot); model.insert(k, slot); }
                    1 => prop_assert_eq!(idx.remove(h(k, spread), slot), model.remove(&k).is_some()),
                    _ => {}
                }
                prop_assert_eq!(idx.len(), model.len());
                for (&k, &s) in &model {
                    prop_assert_eq!(idx.find(h(k, spread), |x| x == s), Some(s));
                }
                prop_assert_eq!(idx.find(h(k, spread), |x| x == slot), model.get(&k).copied());
            }
            idx.clear();
            prop_assert!(idx.is_empty());
            prop_assert_eq!(idx.find(h(1, spread), |_| true), None);
        }
    }

    #[test]
    fn load_stays_at_most_half() {
        let mut idx = SlabIndex::with_capacity(10);
        for k in 0..1000u32 {
            idx.insert(u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15), k);
            assert!(idx.len() * 2 <= idx.buckets.len());
        }
        assert_eq!(idx.memory_bytes(), idx.buckets.len() * 8);
    }
}
