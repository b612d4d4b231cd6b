//! The anomaly event: what detectors produce and the event sink writes.

use crate::base::Addr;
pub use crate::base::kind::{ALL_KINDS, AnomalyKind, Category, Severity};
use crate::base::time::Timestamp;

/// Where an episode is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// The episode opened.
    Start,
    /// Still going; running totals.
    Update,
    /// Closed after a quiet cool-down or at end of input.
    End,
}

impl Phase {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Update => "update",
            Phase::End => "end",
        }
    }
}

/// One connection's 5-tuple, oriented from the actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowTuple {
    /// Sender address.
    pub src: Addr,
    /// Receiver address.
    pub dst: Addr,
    /// Sender port (ICMP: type).
    pub sport: u16,
    /// Receiver port (ICMP: code).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// A learned baseline, for events that compare against one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    /// Mean of the metric.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// Number of intervals learned from.
    pub samples: u64,
}

/// One anomaly event (a phase of an episode), as written to the JSON lines.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// Packet time of the observation.
    pub ts: Timestamp,
    /// Episode phase.
    pub phase: Phase,
    /// Stable across one episode's events.
    pub episode_id: String,
    /// What was found.
    pub kind: AnomalyKind,
    /// How urgent.
    pub severity: Severity,
    /// The actor.
    pub src: Option<Addr>,
    /// The target.
    pub dst: Option<Addr>,
    /// The one flow concerned, when there is exactly one.
    pub flow: Option<FlowTuple>,
    /// The measured value that crossed the line.
    pub observed: f64,
    /// Unit of `observed` and `threshold`.
    pub unit: &'static str,
    /// The learned normal, when a baseline was involved.
    pub baseline: Option<Baseline>,
    /// The line that was crossed.
    pub threshold: f64,
    /// How far from normal.
    pub score: f64,
    /// Counters, samples, first/last seen.
    pub evidence: serde_json::Map<String, serde_json::Value>,
    /// One sentence for the analyst.
    pub message: String,
    /// Triage rank of `start` and `update` events (set by the host stage).
    pub priority: Option<super::priority::Priority>,
}

impl Anomaly {
    /// The method that found it.
    pub fn category(&self) -> Category {
        self.kind.category()
    }

    /// The total order events are written in: packet time, then a stable
    /// tie-break, so output is identical for any number of workers.
    pub fn order_key(&self) -> (Timestamp, AnomalyKind, Option<Addr>, Option<Addr>, Phase, &str) {
        (self.ts, self.kind, self.src, self.dst, self.phase, &self.episode_id)
    }
}
