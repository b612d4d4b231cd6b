//! The behaviour model's second head: each host against its own history.
//!
//! The first head (the trees) sees every host as a point of the whole
//! network's traffic: rates, fan-out, answer ratios. Stealthy behaviour
//! hides there: a slow upload, three new admin sessions or a beacon every
//! ten seconds are small next to the network's busy hosts. The behaviour
//! families already keep each host's own history (what it usually sends
//! outside, the networks and admin peers it uses, its regular check-ins);
//! they publish, per host and interval, four signals measured against that
//! history ([`HostSignals`]), each 0 while the host has none:
//!
//! - bytes sent outside over the busiest window of the same length the host
//!   ever sent (10 s to 1 h; the exfiltration family's windows);
//! - bytes to outside networks new to the host, over the same;
//! - new internal administrative peers within ten minutes, per peer (plus
//!   one) already in its history;
//! - the regularity (0-1) of check-ins with a service the host began using
//!   after its own history, once judgeable (eight check-ins).
//!
//! They are a separate head rather than more features of the trees (tried:
//! the sparse signals took splits from the scan features, 15 → 9 of 17
//! attacks found). And they are judged by a monotone per-signal line rather
//! than by density: each signal is already a distance from the host's own
//! usual, so what is left to learn is how far this network's benign hosts
//! stray. A density model flattens that tail (a host at 30x its peak lands
//! as "where nothing was seen" as one at 3x); a line keeps it ordered.
//!
//! The line of each signal is calibrated with the first head, in the same
//! learning period: every host-interval with signals is sampled (the same
//! reservoir), and at calibration each line is set above the signal's
//! `quantile` with the same margin, never below a floor that says what an
//! excess is at all (twice the busiest window; the busiest window itself to
//! a new network; one new peer per known peer; the beaconing family's
//! regularity of 0.75). Lines are saved in `model.json`; a file from before
//! the head gives floors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::super::family::{HostSignals, SIG_ADMIN, SIG_NEW_DEST, SIG_OUTSIDE, SIG_REGULAR, SIGNALS, Signal};
use crate::base::Addr;
use crate::detect::evidence::human_bytes;

/// Signals in words, in `SIG_*` order.
pub const SIGNAL_NAMES: [&str; SIGNALS] = [
    "bytes sent outside",
    "bytes to outside networks new to it",
    "new administrative peers",
    "regularity of check-ins with a service new to it",
];

/// The lowest line of each signal, whatever learning saw: twice the
/// host's busiest window outside; its busiest window, to networks new to
/// it; one new administrative peer per peer it knows (plus one); the
/// beaconing family's default regularity.
pub const FLOORS: [f64; SIGNALS] = [2.0, 1.0, 0.75, 0.75];

/// The head's learned state (saved inside `model.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeadState {
    /// The calibrated line per signal, once learning is over.
    pub lines: Option<[f64; SIGNALS]>,
    /// Host-intervals' signals kept for calibration while learning.
    pub calibration: Vec<[f64; SIGNALS]>,
    /// Host-intervals offered to the calibration sample so far.
    pub calibration_seen: u64,
}

/// The second head: a sample while learning, per-signal lines after.
#[derive(Debug, Default)]
pub struct Head {
    /// What it learned.
    pub state: HeadState,
}

impl Head {
    /// Offers one host-interval's signals to the calibration sample (the
    /// first head's reservoir, at most `cap`: the same for any number of
    /// workers, hosts come in address order).
    pub fn sample(&mut self, x: [f64; SIGNALS], cap: usize) {
        let st = &mut self.state;
        super::reservoir(&mut st.calibration, &mut st.calibration_seen, cap, x);
    }

    /// Sets every signal's line from the sample (`line_of` as the first
    /// head's calibration, never below the floor) and drops the sample.
    pub fn calibrate(&mut self, quantile: f64, line_of: impl Fn(&mut [f64], f64) -> f64) -> [f64; SIGNALS] {
        let mut lines = FLOORS;
        for (i, line) in lines.iter_mut().enumerate() {
            let mut col: Vec<f64> = self.state.calibration.iter().map(|x| x[i]).collect();
            if !col.is_empty() {
                *line = line.max(line_of(&mut col, quantile));
            }
        }
        self.state = HeadState { lines: Some(lines), calibration: Vec::new(), calibration_seen: 0 };
        lines
    }

    /// The host's excess over the lines (over 1: an outlier) and the
    /// signals that cross, furthest first; `None` before calibration.
    pub fn judge(&self, s: &HostSignals) -> Option<(f64, Vec<usize>)> {
        let lines = self.state.lines?;
        let mut over: Vec<(f64, usize)> = (0..SIGNALS)
            .map(|i| (s.signals[i].value / lines[i].max(f64::MIN_POSITIVE), i))
            .filter(|(r, _)| *r > 1.0)
            .collect();
        over.sort_by(|p, q| q.0.total_cmp(&p.0).then(p.1.cmp(&q.1)));
        let score = over.first().map_or(0.0, |p| p.0);
        Some((score, over.into_iter().map(|(_, i)| i).collect()))
    }
}

/// One crossing signal in plain words, with the host's usual.
pub fn words(which: usize, s: &Signal) -> String {
    let to = |p: Option<Addr>| p.map_or(String::new(), |p| format!(", mostly to {p}"));
    match which {
        SIG_OUTSIDE => format!(
            "sent {} outside in {} s (its busiest {} s so far: {})",
            human_bytes(s.now),
            s.seconds,
            s.seconds,
            human_bytes(s.usual)
        ),
        SIG_NEW_DEST => format!(
            "sent {} to outside networks new to it in {} s{} (its busiest {} s so far, anywhere: {})",
            human_bytes(s.now),
            s.seconds,
            to(s.peer),
            s.seconds,
            human_bytes(s.usual)
        ),
        SIG_ADMIN => format!(
            "{:.0} new administrative peer{} within {} s, latest {}:{} ({:.0} peer{} in its history)",
            s.now,
            if s.now == 1.0 { "" } else { "s" },
            s.seconds,
            s.peer.map_or("?".to_string(), |p| p.to_string()),
            s.count,
            s.usual,
            if s.usual == 1.0 { "" } else { "s" }
        ),
        SIG_REGULAR => format!(
            "checks in with {}, a service new to it, every {:.1} s ± {:.1} s ({} check-ins, regularity {:.2})",
            s.peer.map_or("?".to_string(), |p| p.to_string()),
            s.now,
            s.usual,
            s.count,
            s.value
        ),
        _ => String::new(),
    }
}

/// The evidence of one head verdict: each signal's value and line, and the
/// crossing ones in words.
pub fn evidence(s: &HostSignals, lines: &[f64; SIGNALS], over: &[usize]) -> Map<String, serde_json::Value> {
    let mut ev = Map::new();
    let signals: Map<String, serde_json::Value> = (0..SIGNALS)
        .map(|i| {
            (
                SIGNAL_NAMES[i].to_string(),
                json!({"value": super::significant(s.signals[i].value, 4), "line": super::significant(lines[i], 4)}),
            )
        })
        .collect();
    ev.insert("signals".into(), serde_json::Value::Object(signals));
    ev.insert(
        "top_features".into(),
        json!(over.iter().map(|&i| words(i, &s.signals[i])).collect::<Vec<_>>()),
    );
    ev.insert("model".into(), json!({"kind": "own history", "signals": SIGNALS}));
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(v: f64) -> Signal {
        Signal { value: v, ..Signal::default() }
    }

    #[test]
    fn lines_rise_above_what_learning_saw_and_never_below_the_floors() {
        let mut h = Head::default();
        for i in 0..100u64 {
            // Benign hosts reached 3x their busiest window outside.
            h.sample([if i == 7 { 3.0 } else { 0.5 }, 0.0, 0.0, 0.0], 4096);
        }
        let lines = h.calibrate(0.999, |v, q| {
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            let (m, hi) = (at(0.5), at(q));
            hi + (hi - m) * 0.5
        });
        assert_eq!(lines, [4.25, 1.0, 0.75, 0.75]);
        assert!(h.state.calibration.is_empty());
        let quiet = HostSignals { signals: [sig(4.0), sig(0.0), sig(0.5), sig(0.7)] };
        assert_eq!(h.judge(&quiet).map(|j| j.1.len()), Some(0));
        let lateral = HostSignals { signals: [sig(0.1), sig(0.0), sig(1.5), sig(0.0)] };
        let (score, over) = h.judge(&lateral).unwrap_or_default();
        assert_eq!(over, vec![SIG_ADMIN]);
        assert!((score - 2.0).abs() < 1e-9);
        // Both crossing: the furthest first.
        let both = HostSignals { signals: [sig(42.5), sig(0.0), sig(1.5), sig(0.0)] };
        assert_eq!(h.judge(&both).map(|j| j.1), Some(vec![SIG_OUTSIDE, SIG_ADMIN]));
        assert!(Head::default().judge(&both).is_none(), "no verdict before calibration");
    }
}
