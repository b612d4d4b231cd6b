//! Episodes: one `start`, rate-limited `update`s, one `end` per (kind, actor, target).
//!
//! Alert fatigue is the enemy: however many packets or intervals an attack
//! spans, the analyst sees one episode. Iteration is in key order (a
//! `BTreeMap`) so the events come out the same on every run.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use super::anomaly::{Anomaly, AnomalyKind, Phase};
use crate::base::Addr;
use crate::base::time::{NANOS_PER_SEC, Timestamp};

/// What identifies an episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpisodeKey {
    /// What was found.
    pub kind: AnomalyKind,
    /// The actor (the sender of the offending traffic).
    pub src: Addr,
    /// The target.
    pub dst: Addr,
}

/// Detector-specific running state of an open episode.
pub trait EpisodeState: Sized {
    /// What one interval contributes.
    type Obs;
    /// State for a newly opened episode.
    fn open(obs: &Self::Obs) -> Self;
    /// Folds a later interval's observation in.
    fn merge(&mut self, obs: &Self::Obs);
    /// Packet time of the latest offending traffic.
    fn last_seen(&self) -> Timestamp;
    /// The event for `phase` at `ts`.
    fn render(&self, key: &EpisodeKey, phase: Phase, ts: Timestamp, id: &str) -> Anomaly;
}

/// Timing rules for episodes.
#[derive(Clone, Copy, Debug)]
pub struct EpisodePolicy {
    /// Quiet time after the last offending traffic before `end`, in ns.
    pub cooldown: u64,
    /// Minimum time between `update` events of one episode, in ns.
    pub update_every: u64,
    /// Most episodes open at once per detector; more are counted, not opened.
    pub max_open: usize,
}

impl Default for EpisodePolicy {
    fn default() -> Self {
        EpisodePolicy { cooldown: 60 * NANOS_PER_SEC, update_every: 60 * NANOS_PER_SEC, max_open: 10_000 }
    }
}

struct Open<S> {
    id: String,
    last_emit: Timestamp,
    dirty: bool,
    state: S,
}

/// The open episodes of one detector.
pub struct Episodes<S> {
    open: BTreeMap<EpisodeKey, Open<S>>,
    policy: EpisodePolicy,
    /// Observations not opened because `max_open` was reached.
    pub suppressed: u64,
}

impl<S: EpisodeState> Episodes<S> {
    /// No open episodes.
    pub fn new(policy: EpisodePolicy) -> Self {
        Episodes { open: BTreeMap::new(), policy, suppressed: 0 }
    }

    /// Episodes currently open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// True when an episode with this key is open.
    pub fn is_open(&self, key: &EpisodeKey) -> bool {
        self.open.contains_key(key)
    }

    /// Replaces the timing rules (config reload); open episodes keep going.
    pub fn set_policy(&mut self, policy: EpisodePolicy) {
        self.policy = policy;
    }

    /// Feeds one interval's observation; emits `start` when it opens an episode.
    pub fn observe(&mut self, key: EpisodeKey, first: Timestamp, obs: &S::Obs, out: &mut Vec<Anomaly>) {
        if let Some(o) = self.open.get_mut(&key) {
            o.state.merge(obs);
            o.dirty = true;
            return;
        }
        if self.open.len() >= self.policy.max_open {
            self.suppressed += 1;
            return;
        }
        let state = S::open(obs);
        let id = episode_id(&key, first);
        out.push(state.render(&key, Phase::Start, first, &id));
        self.open.insert(key, Open { id, last_emit: first, dirty: false, state });
    }

    /// At interval boundary `now`: rate-limited updates, and ends after the cool-down.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<Anomaly>) {
        let policy = self.policy;
        self.open.retain(|key, o| {
            let last = o.state.last_seen();
            if now.since(last) >= policy.cooldown {
                out.push(o.state.render(key, Phase::End, now.max(last), &o.id));
                return false;
            }
            if o.dirty && now.since(o.last_emit) >= policy.update_every {
                out.push(o.state.render(key, Phase::Update, now, &o.id));
                o.last_emit = now;
                o.dirty = false;
            }
            true
        });
    }

    /// At a boundary: [`tick`](Self::tick), or at end of input [`close_all`](Self::close_all).
    pub fn tick_or_close(&mut self, now: Timestamp, last: bool, out: &mut Vec<Anomaly>) {
        if last { self.close_all(now, out) } else { self.tick(now, out) }
    }

    /// Open episodes' keys, in key order.
    pub fn keys(&self) -> impl Iterator<Item = &EpisodeKey> {
        self.open.keys()
    }

    /// Ends every open episode at `now` (end of input or shutdown).
    pub fn close_all(&mut self, now: Timestamp, out: &mut Vec<Anomaly>) {
        for (key, o) in std::mem::take(&mut self.open) {
            let ts = now.max(o.state.last_seen());
            out.push(o.state.render(&key, Phase::End, ts, &o.id));
        }
    }
}

/// A short id, the same on every run for the same episode.
fn episode_id(key: &EpisodeKey, first: Timestamp) -> String {
    let h = foldhash::fast::FixedState::with_seed(0x6570_6973_6f64_6531).hash_one((key, first));
    format!("{h:016x}")
}
