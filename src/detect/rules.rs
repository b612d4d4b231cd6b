//! Episodes for the windowed rule detectors (scans, tunnels, ARP/RA watch).

use serde_json::{Map, Value, json};

use super::anomaly::{Anomaly, Phase, Severity};
use super::episode::{EpisodeKey, EpisodeState};
use crate::base::time::{Span, Timestamp};
use std::hash::BuildHasher;

use crate::decode::Addr;

/// One window's verdict from a rule detector.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleObs {
    /// When it was judged (the interval's end).
    pub ts: Timestamp,
    /// Packet times of the evidence (empty: not tracked, the interval stands in).
    pub span: Span,
    /// Start of the window this observation belongs to: observations of one
    /// window are cumulative, of different windows additive.
    pub window: Timestamp,
    /// Additive counts of the window so far (probes, queries, bytes…),
    /// summed over windows into the episode's totals.
    pub totals: Vec<(&'static str, u64)>,
    /// When set, the event's `observed` is the episode total of this count
    /// (each observation is one more offence, e.g. a spoofed ARP reply).
    pub observed_total: Option<&'static str>,
    /// The measured value (distinct ports, queries…).
    pub observed: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// Unit of both.
    pub unit: &'static str,
    /// How urgent.
    pub severity: Severity,
    /// Actor shown in the event (may differ from the key, e.g. a MAC's IP).
    pub src: Option<Addr>,
    /// Target shown in the event.
    pub dst: Option<Addr>,
    /// Evidence.
    pub evidence: Map<String, Value>,
    /// The analyst's sentence.
    pub message: String,
}

/// Running state of one rule episode.
#[derive(Clone, Debug)]
pub struct RuleEpisode {
    first: Timestamp,
    last: Timestamp,
    windows: u64,
    /// Totals of the windows already over.
    done: Vec<(&'static str, u64)>,
    latest: RuleObs,
    peak: RuleObs,
}

fn add_into(acc: &mut Vec<(&'static str, u64)>, v: &[(&'static str, u64)]) {
    for &(k, n) in v {
        match acc.iter_mut().find(|(a, _)| *a == k) {
            Some(e) => e.1 += n,
            None => acc.push((k, n)),
        }
    }
}

impl RuleEpisode {
    /// The episode's totals: finished windows plus the current one.
    fn totals(&self) -> Vec<(&'static str, u64)> {
        let mut t = self.done.clone();
        add_into(&mut t, &self.latest.totals);
        t
    }
}

impl EpisodeState for RuleEpisode {
    type Obs = RuleObs;

    fn open(o: &RuleObs) -> Self {
        let s = o.span.or_at(o.ts);
        RuleEpisode {
            first: s.first,
            last: s.last,
            windows: 1,
            done: Vec::new(),
            latest: o.clone(),
            peak: o.clone(),
        }
    }

    fn merge(&mut self, o: &RuleObs) {
        let s = o.span.or_at(o.ts);
        self.first = self.first.min(s.first);
        self.last = self.last.max(s.last);
        self.windows += 1;
        if o.window != self.latest.window {
            // The latest window is over: its last (cumulative) counts stand.
            let finished = std::mem::take(&mut self.latest.totals);
            add_into(&mut self.done, &finished);
        }
        // The peak is the window furthest over its line (the same as the
        // largest observation where the line is fixed).
        if excess(o) >= excess(&self.peak) {
            self.peak = o.clone();
        }
        self.latest = o.clone();
    }

    fn last_seen(&self) -> Timestamp {
        self.last
    }

    fn render(&self, key: &EpisodeKey, phase: Phase, ts: Timestamp, id: &str) -> Anomaly {
        // Start and updates describe the latest window; the end, the peak
        // window. Whole-episode counts are under `episode_totals`.
        let (o, which) = if phase == Phase::End { (&self.peak, "peak") } else { (&self.latest, "latest") };
        let totals = self.totals();
        let mut ev = o.evidence.clone();
        ev.insert("first_seen".into(), json!(self.first.to_string()));
        ev.insert("last_seen".into(), json!(self.last.to_string()));
        ev.insert("observations".into(), json!(self.windows));
        ev.insert("reported_window".into(), json!(which));
        if !totals.is_empty() {
            let m: Map<String, Value> = totals.iter().map(|(k, n)| ((*k).to_string(), json!(n))).collect();
            ev.insert("episode_totals".into(), Value::Object(m));
        }
        let observed = match o.observed_total.and_then(|k| totals.iter().find(|(a, _)| *a == k)) {
            Some((_, n)) => *n as f64,
            None => o.observed,
        };
        let score = if o.threshold > 0.0 { observed / o.threshold } else { observed };
        Anomaly {
            ts,
            phase,
            episode_id: id.to_string(),
            kind: key.kind,
            severity: o.severity,
            src: o.src,
            dst: o.dst,
            flow: None,
            observed,
            unit: o.unit,
            baseline: None,
            threshold: o.threshold,
            score: (score * 100.0).round() / 100.0,
            evidence: ev,
            message: o.message.clone(),
            priority: None,
        }
    }
}

fn excess(o: &RuleObs) -> f64 {
    if o.threshold > 0.0 { o.observed / o.threshold } else { o.observed }
}

/// A tumbling window of an aggregate, for the windowed rule detectors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Win<T> {
    /// When the window started (packet time).
    pub start: Timestamp,
    /// What it has accumulated.
    pub agg: T,
}

/// The window of `k`, restarted when it is older than `window` ns.
pub fn roll<K: std::hash::Hash + Eq, T: Default>(
    map: &mut crate::base::SlabMap<K, Win<T>>,
    k: K,
    now: Timestamp,
    window: u64,
) -> &mut Win<T> {
    let w = map.get_or_insert_with(k, || Win { start: now, agg: T::default() });
    if now.since(w.start) >= window {
        *w = Win { start: now, agg: T::default() };
    }
    w
}

/// A shard half's per-interval aggregates by key, at most `cap` keys (the
/// rest counted), handed over at the tick as a list whose vector comes back
/// to be filled again.
///
/// The aggregates live in that list itself, in arrival order, found through
/// an index of `u32` slot numbers (as the host slab and the flow table do):
/// a lookup probes a small index instead of a table of hundred-byte
/// buckets, a new key is appended where the last one was written, and the
/// tick hands the list over without copying it.
pub struct IntervalTable<K, V> {
    index: crate::base::SlabIndex,
    slab: Vec<(K, V)>,
    hasher: foldhash::fast::FixedState,
    spare: Option<Vec<(K, V)>>,
    cap: usize,
    /// Observations turned away at the cap (cumulative).
    pub overflow: u64,
}

impl<K: std::hash::Hash + Eq, V: Default> IntervalTable<K, V> {
    /// An empty table of at most `cap` keys.
    pub fn new(cap: usize) -> Self {
        IntervalTable {
            index: crate::base::SlabIndex::default(),
            // Room for the cap at once, as the host slab does.
            slab: Vec::with_capacity(cap.min(u32::MAX as usize)),
            hasher: foldhash::fast::FixedState::default(),
            spare: None,
            // Slot numbers are `u32`.
            cap: cap.min(u32::MAX as usize),
            overflow: 0,
        }
    }

    /// The aggregate of `k`, or `None` (counted) when the table is full.
    #[inline]
    pub fn entry(&mut self, k: K) -> Option<&mut V> {
        let h = self.hasher.hash_one(&k);
        let i = match self.find(h, &k) {
            Some(i) => i,
            None if self.slab.len() >= self.cap => {
                self.overflow += 1;
                return None;
            }
            None => {
                let i = self.slab.len();
                self.slab.push((k, V::default()));
                self.index.insert(h, i as u32);
                i
            }
        };
        self.slab.get_mut(i).map(|(_, v)| v)
    }

    /// The aggregate of `k` if it is already held (never inserts).
    #[inline]
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = self.find(self.hasher.hash_one(k), k)?;
        self.slab.get_mut(i).map(|(_, v)| v)
    }

    /// The slab position of `k`, filed under its hash `h`.
    #[inline]
    fn find(&self, h: u64, k: &K) -> Option<usize> {
        let slab = &self.slab;
        self.index.find(h, |i| slab[i as usize].0 == *k).map(|i| i as usize)
    }

    /// Keys held this interval.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no key was seen this interval.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The interval's aggregates (in arrival order), leaving the recycled
    /// list in their place.
    pub fn close(&mut self) -> Vec<(K, V)> {
        let mut spare = self.spare.take().unwrap_or_default();
        spare.clear();
        // The outgoing list's room at once when the recycled list is late or
        // small, rather than regrown by doubling (copying) next interval.
        spare.reserve(self.slab.capacity());
        self.index.clear();
        std::mem::replace(&mut self.slab, spare)
    }

    /// Takes back an emptied list.
    pub fn recycle(&mut self, spare: Vec<(K, V)>) {
        self.spare = Some(spare);
    }
}

/// `Some(a)` unless `a` is the "nobody" placeholder of an episode key.
pub fn some_addr(a: Addr) -> Option<Addr> {
    (a != Addr::UNSPECIFIED).then_some(a)
}

/// The entries of `v` in key order, equal keys (parts from several shards)
/// merged. Sorts small (key, index) pairs in `idx` (a buffer the caller
/// keeps between intervals) instead of moving the aggregates, which are a
/// hundred bytes and more, and builds no second list of them.
pub fn merged_by_key<'a, K: Ord + Copy, V: Copy>(
    v: &'a [(K, V)],
    idx: &'a mut Vec<(K, u32)>,
    merge: fn(&mut V, &V),
) -> impl Iterator<Item = (K, V)> + 'a {
    idx.clear();
    idx.extend(v.iter().enumerate().map(|(i, (k, _))| (*k, i as u32)));
    idx.sort_unstable();
    let mut it = idx.iter().peekable();
    std::iter::from_fn(move || {
        let &(k, i) = it.next()?;
        let mut acc = v[i as usize].1;
        while let Some(&&(k2, j)) = it.peek() {
            if k2 != k {
                break;
            }
            merge(&mut acc, &v[j as usize].1);
            it.next();
        }
        Some((k, acc))
    })
}
