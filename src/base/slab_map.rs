//! A long-lived map kept as a dense slab found through a [`SlabIndex`]: the
//! host stage's baselines and rule windows.
//!
//! hashbrown grows by allocating a table twice the size and moving every
//! entry into it, so a table that grows to n entries has written about
//! 2 × n / load of fresh memory on the way, and the kernel zeroes each new
//! page first (measured on the replay benchmark: rehash copies of the
//! spike, scan and tunnel maps were a third of all page faults). Here the
//! records sit packed in insertion order, the slab's room can be reserved
//! once for the map's cap (pages of room never filled are never touched),
//! and only the 8-byte index buckets are moved when the map grows.
//!
//! Removal moves the last record into the hole (one index bucket
//! relabelled); `retain` compacts in place, keeping the order, and rebuilds
//! the index. Iteration is in slab order, which is a function of the
//! sequence of inserts and removals, so it is as deterministic as they are.

use std::hash::{BuildHasher, Hash};

use super::SlabIndex;

/// A map from `K` to `V` stored as a slab of `(K, V)` with an index.
#[derive(Clone, Debug)]
pub struct SlabMap<K, V> {
    index: SlabIndex,
    slab: Vec<(K, V)>,
    hasher: foldhash::fast::FixedState,
}

impl<K, V> Default for SlabMap<K, V> {
    fn default() -> Self {
        SlabMap {
            index: SlabIndex::default(),
            slab: Vec::new(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }
}

impl<K: Hash + Eq, V> SlabMap<K, V> {
    /// An empty map whose slab has room for `n` records (reserved, not touched).
    pub fn with_room(n: usize) -> Self {
        SlabMap { slab: Vec::with_capacity(n.min(u32::MAX as usize - 1)), ..SlabMap::default() }
    }

    /// Records held.
    #[inline]
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no record is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    #[inline]
    fn slot_of(&self, h: u64, k: &K) -> Option<usize> {
        let slab = &self.slab;
        self.index.find(h, |i| slab[i as usize].0 == *k).map(|i| i as usize)
    }

    /// The value of `k`.
    #[inline]
    pub fn get(&self, k: &K) -> Option<&V> {
        let i = self.slot_of(self.hasher.hash_one(k), k)?;
        self.slab.get(i).map(|(_, v)| v)
    }

    /// The value of `k`, mutable.
    #[inline]
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = self.slot_of(self.hasher.hash_one(k), k)?;
        self.slab.get_mut(i).map(|(_, v)| v)
    }

    /// True when `k` is held.
    #[inline]
    pub fn contains_key(&self, k: &K) -> bool {
        self.slot_of(self.hasher.hash_one(k), k).is_some()
    }

    /// The value of `k`, made by `f` first if `k` is new.
    #[inline]
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        let h = self.hasher.hash_one(&k);
        let i = match self.slot_of(h, &k) {
            Some(i) => i,
            None => {
                let i = self.slab.len();
                self.slab.push((k, f()));
                self.index.insert(h, i as u32);
                i
            }
        };
        &mut self.slab[i].1
    }

    /// The value of `k`, the default first if `k` is new.
    #[inline]
    pub fn get_or_default(&mut self, k: K) -> &mut V
    where
        V: Default,
    {
        self.get_or_insert_with(k, V::default)
    }

    /// Sets the value of `k`, returning the one it replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let h = self.hasher.hash_one(&k);
        match self.slot_of(h, &k) {
            Some(i) => Some(std::mem::replace(&mut self.slab[i].1, v)),
            None => {
                let i = self.slab.len();
                self.slab.push((k, v));
                self.index.insert(h, i as u32);
                None
            }
        }
    }

    /// Removes `k`, returning its value; the last record takes its slot.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let h = self.hasher.hash_one(k);
        let i = self.slot_of(h, k)?;
        self.index.remove(h, i as u32);
        let last = self.slab.len() - 1;
        if i != last {
            let hl = self.hasher.hash_one(&self.slab[last].0);
            self.index.relabel(hl, last as u32, i as u32);
        }
        Some(self.slab.swap_remove(i).1)
    }

    /// Keeps the records `keep` accepts, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let before = self.slab.len();
        self.slab.retain_mut(|(k, v)| keep(k, v));
        if self.slab.len() != before {
            self.index.clear();
            let (index, hasher) = (&mut self.index, &self.hasher);
            for (i, (k, _)) in self.slab.iter().enumerate() {
                index.insert(hasher.hash_one(k), i as u32);
            }
        }
    }

    /// Empties the map, keeping its memory.
    pub fn clear(&mut self) {
        self.index.clear();
        self.slab.clear();
    }

    /// Every record, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slab.iter().map(|(k, v)| (k, v))
    }

    /// Every record, values mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.slab.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.slab.iter().map(|(k, _)| k)
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slab.iter().map(|(_, v)| v)
    }

    /// Every value, mutable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slab.iter_mut().map(|(_, v)| v)
    }
}

/// `map[&k]`, as for `HashMap`: panics when `k` is not held, so only for
/// keys known to be there (tests, invariants), never for input-derived ones.
impl<K: Hash + Eq, V> std::ops::Index<&K> for SlabMap<K, V> {
    type Output = V;
    fn index(&self, k: &K) -> &V {
        match self.get(k) {
            Some(v) => v,
            None => panic!("SlabMap: key not held"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Bump(u16),
        Retain(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..300, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0u16..300).prop_map(Op::Remove),
            (0u16..300).prop_map(Op::Bump),
            (2u16..7).prop_map(Op::Retain),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec(op(), 1..600)) {
            let mut m: SlabMap<u16, u32> = SlabMap::with_room(64);
            let mut r: std::collections::HashMap<u16, u32> = Default::default();
            for o in ops {
                match o {
                    Op::Insert(k, v) => prop_assert_eq!(m.insert(k, v), r.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(m.remove(&k), r.remove(&k)),
                    Op::Bump(k) => {
                        *m.get_or_default(k) += 1;
                        *r.entry(k).or_default() += 1;
                    }
                    Op::Retain(d) => {
                        m.retain(|k, _| k % d != 0);
                        r.retain(|k, _| k % d != 0);
                    }
                }
                prop_assert_eq!(m.len(), r.len());
            }
            for (k, v) in &r {
                prop_assert_eq!(m.get(k), Some(v));
            }
            let mut keys: Vec<u16> = m.keys().copied().collect();
            keys.sort_unstable();
            let mut want: Vec<u16> = r.keys().copied().collect();
            want.sort_unstable();
            prop_assert_eq!(keys, want);
        }
    }
}
