//! Episodes for the windowed rule detectors (scans, tunnels, ARP/RA watch).

use serde_json::{Map, Value, json};

use super::anomaly::{Anomaly, Phase, Severity};
use super::episode::{EpisodeKey, EpisodeState};
use crate::base::time::Timestamp;
use crate::decode::Addr;

/// One window's verdict from a rule detector.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleObs {
    /// When it was judged.
    pub ts: Timestamp,
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
        RuleEpisode { first: o.ts, last: o.ts, windows: 1, latest: o.clone(), peak: o.clone() }
    }

    fn merge(&mut self, o: &RuleObs) {
        self.last = self.last.max(o.ts);
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
