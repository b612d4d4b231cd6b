//! What the behaviour families remember about each host: bounded maps that
//! forget the least recently used entries, and the clock shift that keeps a
//! sensor's downtime from counting as the hosts' silence.

use std::hash::Hash;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::base::time::Timestamp;

/// When something was first and last used (packet time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Used {
    /// First use.
    pub first: Timestamp,
    /// Latest use.
    pub last: Timestamp,
}

impl Used {
    /// First and last used at `t`.
    pub fn at(t: Timestamp) -> Used {
        Used { first: t, last: t }
    }

    /// Marks a use at `t`.
    pub fn touch(&mut self, t: Timestamp) {
        self.last = self.last.max(t);
    }
}

/// An entry that knows when it was used.
pub trait Recent {
    /// Its first and last use.
    fn used(&self) -> Used;
    /// Moves every time it holds by `ns` (downtime after a restore; backward
    /// when older captures are replayed after newer ones were learned).
    fn shift(&mut self, ns: i64);
}

impl Recent for Used {
    fn used(&self) -> Used {
        *self
    }
    fn shift(&mut self, ns: i64) {
        self.first = self.first.offset(ns);
        self.last = self.last.offset(ns);
    }
}

/// A map with at most `cap` entries: past it, the least recently used
/// eighth goes at once, so an insert costs amortised O(log n), not a scan.
#[derive(Clone, Debug)]
pub struct Memory<K, V> {
    map: HashMap<K, V, foldhash::fast::FixedState>,
    cap: usize,
    /// Entries forgotten to stay within the cap (cumulative).
    pub forgotten: u64,
}

impl<K: Hash + Eq + Copy + Ord, V: Recent> Memory<K, V> {
    /// An empty memory of at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        Memory { map: HashMap::with_hasher(Default::default()), cap: cap.max(1), forgotten: 0 }
    }

    /// Changes the cap (config reload); takes effect at the next insert.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry of `k`, if remembered.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// The entry of `k`, if remembered (mutable).
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k)
    }

    /// The entry of `k`, made with `make` (after making room) when absent.
    pub fn entry(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            self.evict();
        }
        self.map.entry(k).or_insert_with(make)
    }

    fn evict(&mut self) {
        // Oldest first; ties broken by key so every run forgets the same ones.
        let mut ages: Vec<(Timestamp, K)> = self.map.iter().map(|(k, v)| (v.used().last, *k)).collect();
        let n = (self.cap / 8).max(1).min(ages.len());
        ages.select_nth_unstable(n - 1);
        for (_, k) in &ages[..n] {
            self.map.remove(k);
        }
        self.forgotten += n as u64;
    }

    /// Drops entries unused for `ttl` ns at `now`.
    pub fn expire(&mut self, now: Timestamp, ttl: u64) {
        let before = self.map.len();
        self.map.retain(|_, v| now.since(v.used().last) < ttl);
        self.forgotten += (before - self.map.len()) as u64;
    }

    /// Every entry, in key order (for saving and for stable output).
    pub fn sorted(&self) -> Vec<(K, &V)> {
        let mut v: Vec<(K, &V)> = self.map.iter().map(|(k, v)| (*k, v)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Every entry, unordered.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Every entry, unordered (mutable).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut()
    }

    /// Moves every entry's times forward by `ns`.
    pub fn shift(&mut self, ns: i64) {
        for v in self.map.values_mut() {
            v.shift(ns);
        }
    }
}

/// Packet time a family saved its state at, and the shift owed on restore.
///
/// A sensor restarted after a night off must not see its hosts as silent
/// for the night: the first interval after a restore moves every learned
/// time forward by the downtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// The latest interval end seen (what `saved_at` records).
    pub now: Timestamp,
    resume_from: Option<Timestamp>,
}

impl Clock {
    /// Records the restored state's save time.
    pub fn restored(&mut self, saved_at: Timestamp) {
        self.resume_from = Some(saved_at);
        self.now = saved_at;
    }

    /// Advances to `t`; returns the shift to add to restored times (0 normally).
    pub fn advance(&mut self, t: Timestamp) -> i64 {
        let shift = self.resume_from.take().map_or(0, |from| {
            let d = i128::from(t.as_nanos()) - i128::from(from.as_nanos());
            i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
        });
        self.now = if shift != 0 { t } else { self.now.max(t) };
        shift
    }
}

/// Envelope of a behaviour family's saved state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved<T> {
    /// Layout version of `state`.
    pub version: u32,
    /// Packet time of the save.
    pub saved_at: Timestamp,
    /// The family's own state.
    pub state: T,
}

impl<T: Serialize + serde::de::DeserializeOwned> Saved<T> {
    /// The bytes to save.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }

    /// Parses saved text of layout `version`; what went wrong otherwise.
    pub fn parse(text: &str, version: u32) -> Result<Saved<T>, super::family::Restored> {
        use super::family::Restored;
        match serde_json::from_str::<Saved<T>>(text) {
            Ok(s) if s.version != version => {
                Err(Restored::Bad(format!("schema version {} (this build reads {version})", s.version)))
            }
            Ok(s) => Ok(s),
            Err(e) => Err(Restored::Bad(format!("corrupt ({e})"))),
        }
    }
}

/// Parses an address saved as text.
pub fn addr(s: &str) -> Option<crate::base::Addr> {
    s.parse::<std::net::IpAddr>().ok().map(crate::base::Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_forgets_the_least_recently_used() {
        let mut m: Memory<u32, Used> = Memory::new(16);
        for k in 0..16u32 {
            m.entry(k, || Used::at(Timestamp(u64::from(k))));
        }
        m.get_mut(&0).unwrap().touch(Timestamp(100));
        m.entry(99, || Used::at(Timestamp(200)));
        assert!(m.len() <= 16);
        assert!(m.get(&0).is_some(), "recently used entry kept");
        assert!(m.get(&1).is_none() && m.get(&2).is_none(), "oldest forgotten");
        m.expire(Timestamp(150), 60);
        assert_eq!(m.sorted().iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![0, 99]);
    }

    #[test]
    fn clock_shifts_once_after_restore() {
        let mut c = Clock::default();
        assert_eq!(c.advance(Timestamp(5)), 0);
        c.restored(Timestamp(10));
        assert_eq!(c.advance(Timestamp(1_000)), 990);
        assert_eq!(c.advance(Timestamp(1_001)), 0);
        // State learned from later traffic than what is replayed now.
        c.restored(Timestamp(5_000));
        assert_eq!(c.advance(Timestamp(2_000)), -3_000);
        assert_eq!(c.now, Timestamp(2_000));
    }
}

/// A peak that halves every `half_life_s` seconds of packet time: a usual
/// maximum that forgets a busy day slowly (slow-HTTP servers, MACs).
#[derive(Clone, Copy, Debug, Default)]
pub struct DecayingPeak {
    peak: f64,
    at: Timestamp,
}

impl DecayingPeak {
    /// The peak as of `t`.
    pub fn value(&self, t: Timestamp, half_life_s: f64) -> f64 {
        let dt = t.since(self.at) as f64 / crate::base::time::NANOS_PER_SEC as f64;
        self.peak * 0.5f64.powf(dt / half_life_s)
    }

    /// Raises the peak to `x` at `t` if `x` is higher than what is left of it.
    pub fn raise(&mut self, t: Timestamp, x: f64, half_life_s: f64) {
        *self = DecayingPeak { peak: self.value(t, half_life_s).max(x), at: t };
    }
}
