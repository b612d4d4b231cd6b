//! Episodes for the windowed rule detectors (scans, tunnels, ARP/RA watch).

use serde_json::{Map, Value, json};

use super::anomaly::{Anomaly, Phase, Severity};
use super::episode::{EpisodeKey, EpisodeState};
use crate::base::time::{Span, Timestamp};
use crate::decode::Addr;

/// One window's verdict from a rule detector.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleObs {
    /// When it was judged (the interval's end).
    pub ts: Timestamp,
    /// Packet times of the evidence (empty: not tracked, the interval stands in).
    pub span: Span,
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
    latest: RuleObs,
    peak: RuleObs,
}

impl EpisodeState for RuleEpisode {
    type Obs = RuleObs;

    fn open(o: &RuleObs) -> Self {
        let s = packet_span(o);
        RuleEpisode { first: s.first, last: s.last, windows: 1, latest: o.clone(), peak: o.clone() }
    }

    fn merge(&mut self, o: &RuleObs) {
        let s = packet_span(o);
        self.first = self.first.min(s.first);
        self.last = self.last.max(s.last);
        self.windows += 1;
        if o.observed >= self.peak.observed {
            self.peak = o.clone();
        }
        self.latest = o.clone();
    }

    fn last_seen(&self) -> Timestamp {
        self.last
    }

    fn render(&self, key: &EpisodeKey, phase: Phase, ts: Timestamp, id: &str) -> Anomaly {
        let o = if phase == Phase::Start { &self.latest } else { &self.peak };
        let mut ev = o.evidence.clone();
        ev.insert("first_seen".into(), json!(self.first.to_string()));
        ev.insert("last_seen".into(), json!(self.last.to_string()));
        ev.insert("observations".into(), json!(self.windows));
        let score = if o.threshold > 0.0 { o.observed / o.threshold } else { o.observed };
        Anomaly {
            ts,
            phase,
            episode_id: id.to_string(),
            kind: key.kind,
            severity: o.severity,
            src: o.src,
            dst: o.dst,
            flow: None,
            observed: o.observed,
            unit: o.unit,
            baseline: None,
            threshold: o.threshold,
            score: (score * 100.0).round() / 100.0,
            evidence: ev,
            message: o.message.clone(),
        }
    }
}

/// The packet times an observation covers; the interval's end when it has none.
fn packet_span(o: &RuleObs) -> Span {
    if o.span.is_empty() { Span::at(o.ts) } else { o.span }
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
    map: &mut hashbrown::HashMap<K, Win<T>, foldhash::fast::FixedState>,
    k: K,
    now: Timestamp,
    window: u64,
) -> &mut Win<T> {
    let w = map.entry(k).or_insert_with(|| Win { start: now, agg: T::default() });
    if now.since(w.start) >= window {
        *w = Win { start: now, agg: T::default() };
    }
    w
}

/// `Some(a)` unless `a` is the "nobody" placeholder of an episode key.
pub fn some_addr(a: Addr) -> Option<Addr> {
    (a != Addr::UNSPECIFIED).then_some(a)
}

/// Merges the entries of equal keys (parts from several shards) and returns
/// them in key order. Sorts small (key, index) pairs rather than moving the
/// aggregates, which are a hundred bytes and more.
pub fn merge_by_key<K: Ord + Copy, V: Copy>(v: Vec<(K, V)>, merge: fn(&mut V, &V)) -> Vec<(K, V)> {
    let mut idx: Vec<(K, u32)> = v.iter().enumerate().map(|(i, (k, _))| (*k, i as u32)).collect();
    idx.sort_unstable();
    let mut out: Vec<(K, V)> = Vec::with_capacity(v.len());
    for (k, i) in idx {
        let a = &v[i as usize].1;
        match out.last_mut() {
            Some((lk, la)) if *lk == k => merge(la, a),
            _ => out.push((k, *a)),
        }
    }
    out
}
