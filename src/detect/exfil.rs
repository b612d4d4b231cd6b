//! Exfiltration family: bytes a local host sends outside, judged against
//! that host's own history at several time scales.
//!
//! Only payload the host sends in connections *it opened* to an address
//! outside `[networks] local` counts: a download's acknowledgements carry no
//! payload, and a server answering outside clients sends in connections
//! they opened, so neither looks like an upload.
//!
//! Per host and per window length (10 s, 1 min, 10 min, 1 h by default,
//! packet time) the host's usual bytes are a long-memory mean of its closed
//! windows, and its peak a slowly decaying maximum. Each outside destination
//! network (/24 or /48) the host uses is remembered with its first use;
//! bytes to one it never used before need less excess than bytes to its
//! routine targets:
//!
//! - to new destinations: more than `new_ratio` × usual, more than the
//!   host's peak, and at least `min_new_bytes`;
//! - to anywhere outside: more than `ratio` × usual, twice the peak, and at
//!   least `min_bytes`.
//!
//! A window is judged while it fills, so a burst is reported within an
//! interval of crossing the line, not when its window closes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, Episodes};
use super::evidence::human_bytes;
use super::family::{Context, Family, HostSignals, Restored, SIG_NEW_DEST, SIG_OUTSIDE, Signal};
use super::history::{Clock, Memory, Recent, Saved, Used, addr};
use super::rules::{IntervalTable, RuleEpisode, RuleObs, merged_by_key};
use crate::base::Addr;
use crate::base::addr::prefix_of;
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::config::ExfilConfig;
use crate::decode::PacketMeta;
use crate::track::{FlowView, Observer, ShardConfig};

/// (local sender, outside receiver) pairs a shard keeps per interval.
const MAX_PAIRS: usize = 16_384;
/// Closed windows at a scale before its own mean is trusted; until then the
/// shortest trusted scale's rate stands in, scaled to the window.
const MIN_CLOSED: u32 = 4;
/// Closed windows an hour-of-day slot needs before it replaces the
/// all-day usual: three days of one-hour windows.
const MIN_SLOT: u32 = 3;
/// Half-life of the usual volume and of the peak, in seconds of packet time:
/// a day, so a busy morning does not redefine normal by the afternoon.
const HALF_LIFE: f64 = 86_400.0;
/// Destinations listed in an event.
const LISTED: usize = 5;
/// Layout version of the saved state.
const STATE_VERSION: u32 = 1;
/// File of the learned state inside `--state-dir`.
pub const STATE_FILE: &str = "exfiltration.json";

/// What one local host sent one outside address in one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutAgg {
    /// Payload bytes sent.
    pub bytes: u64,
    /// Packet times of the first and last packet.
    pub span: Span,
}

impl OutAgg {
    fn merge(&mut self, o: &OutAgg) {
        self.bytes += o.bytes;
        self.span.merge(&o.span);
    }
}

/// One interval's uploads: ((sender, receiver), aggregate).
pub type OutList = Vec<((Addr, Addr), OutAgg)>;

/// The shard half: per-interval bytes each local host sends each outside address.
pub struct OutTable(IntervalTable<(Addr, Addr), OutAgg>);

impl Observer for OutTable {
    type Report = OutList;

    fn packet(&mut self, _: &PacketMeta) {}

    #[inline]
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>) {
        if !f.from_orig() || !f.local.of(f.side) || f.local.of(f.side.other()) || m.payload_len == 0 {
            return;
        }
        if let Some(a) = self.0.entry((m.src, m.dst)) {
            a.bytes += u64::from(m.payload_len);
            a.span.add(m.ts);
        }
    }

    fn close(&mut self, _: Timestamp) -> OutList {
        self.0.close()
    }

    fn recycle(&mut self, spare: OutList) {
        self.0.recycle(spare);
    }

    fn overflow(&self) -> u64 {
        self.0.overflow
    }
}

/// A long-memory mean that is exact while it has few samples (bias-corrected EWMA).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    /// Folds `n` windows of value `x`, each decaying the past by `keep`.
    fn push(&mut self, x: f64, n: u64, keep: f64) {
        // n equal windows at once (usually zeros after a quiet spell).
        let k = keep.powf(n as f64);
        let geometric = if keep < 1.0 { (1.0 - k) / (1.0 - keep) } else { n as f64 };
        self.sum = self.sum * k + x * geometric;
        self.weight = self.weight * k + geometric;
    }

    fn value(&self) -> f64 {
        if self.weight > 0.0 { self.sum / self.weight } else { 0.0 }
    }
}

/// One window length's running window and learned usual.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Scale {
    /// Start of the window filling now.
    start: Timestamp,
    /// Bytes sent outside in it so far.
    total: u64,
    /// Of those, bytes to destinations new to the host.
    new: u64,
    /// Of those, bytes of an open episode: not learned as usual (an
    /// exfiltration must not teach the host that exfiltrating is normal).
    #[serde(default)]
    flagged: u64,
    /// Usual bytes per window.
    usual: Mean,
    /// Largest closed window, decaying.
    peak: f64,
    /// When `peak` was last decayed.
    peak_at: Timestamp,
    /// Windows closed (zeros included).
    closed: u32,
    /// Per hour of day (24 slots, when `profile = "hour_of_day"`): the same
    /// usual and peak, learned only from windows that began in that hour.
    #[serde(default)]
    hours: Vec<Slot>,
}

/// One hour of day's usual volume at one window length.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Slot {
    usual: Mean,
    peak: f64,
    closed: u32,
}

/// Half-life of an hour-of-day slot, in seconds of that hour's own windows:
/// a week of days, so one odd night does not redefine 02:00.
const SLOT_HALF_LIFE: f64 = 7.0 * 3600.0;

/// Hour of day (0-23) of `t`, shifted by `offset_min` minutes from UTC.
fn hour_of(t: Timestamp, offset_min: i32) -> usize {
    let secs = t.as_nanos() / NANOS_PER_SEC;
    let local = secs as i64 + i64::from(offset_min) * 60;
    (local.rem_euclid(86_400) / 3600) as usize
}

fn fold_slot(s: &mut Scale, start: Timestamp, x: f64, len: u64, offset_min: i32) {
    if s.hours.len() != 24 {
        return;
    }
    let keep = 0.5f64.powf(len as f64 / 1e9 / SLOT_HALF_LIFE);
    let slot = &mut s.hours[hour_of(start, offset_min)];
    slot.usual.push(x, 1, keep);
    slot.peak = slot.peak.max(x);
    slot.closed = slot.closed.saturating_add(1);
}

/// A destination of an open episode.
#[derive(Clone, Copy, Debug)]
struct EpDest {
    addr: Addr,
    bytes: u64,
    first_packet: Timestamp,
    new: bool,
}

/// One local host's history of sending outside.
#[derive(Clone, Debug)]
struct Host {
    used: Used,
    scales: Vec<Scale>,
    dests: Memory<Addr, Used>,
    /// Destinations of the open episode (empty when none is open).
    episode: Vec<EpDest>,
}

impl Recent for Host {
    fn used(&self) -> Used {
        self.used
    }
    fn shift(&mut self, ns: i64) {
        self.used.shift(ns);
        for s in &mut self.scales {
            s.start = s.start.offset(ns);
            s.peak_at = s.peak_at.offset(ns);
        }
        self.dests.shift(ns);
    }
}

/// What is saved of a host.
#[derive(Debug, Serialize, Deserialize)]
struct SavedHost {
    addr: String,
    used: Used,
    windows: Vec<u64>,
    scales: Vec<Scale>,
    dests: Vec<(String, Used)>,
}

/// The host-stage half: per-host windows, usual volumes and destination memory.
pub struct ExfilDetector {
    hosts: Memory<Addr, Host>,
    episodes: Episodes<RuleEpisode>,
    clock: Clock,
    idx: Vec<((Addr, Addr), u32)>,
}

/// How one window compares with its lines.
#[derive(Clone, Copy, Debug)]
struct Verdict {
    seconds: u64,
    total: u64,
    new: u64,
    usual: f64,
    peak: f64,
    line_new: f64,
    line_all: f64,
}

impl Verdict {
    /// The larger excess of the two tests (over 1: crossed).
    fn excess(&self) -> f64 {
        (self.new as f64 / self.line_new).max(self.total as f64 / self.line_all)
    }

    fn new_crossed(&self) -> bool {
        self.new as f64 > self.line_new
    }

    fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "bytes": self.total,
            "bytes_to_new": self.new,
            "usual_bytes": self.usual.round(),
            "peak_bytes": self.peak.round(),
            "line_new_bytes": self.line_new.round(),
            "line_all_bytes": self.line_all.round(),
        })
    }
}

impl ExfilDetector {
    /// No history.
    pub fn new(cfg: &DetectConfig) -> ExfilDetector {
        ExfilDetector {
            hosts: Memory::new(cfg.exfil.max_hosts),
            episodes: Episodes::new(cfg.episodes),
            clock: Clock::default(),
            idx: Vec::new(),
        }
    }

    fn on_interval(
        &mut self,
        list: &[((Addr, Addr), OutAgg)],
        t: Timestamp,
        cfg: &DetectConfig,
        signals: &mut Vec<(Addr, HostSignals)>,
        out: &mut Vec<Anomaly>,
    ) {
        let x = &cfg.exfil;
        let shift = self.clock.advance(t);
        if shift != 0 {
            self.hosts.shift(shift);
        }
        let secs: Vec<u64> = x.windows.iter().map(|w| w * NANOS_PER_SEC).collect();
        let new_for = x.new_for.saturating_mul(NANOS_PER_SEC);
        let learning = x.learning.saturating_mul(NANOS_PER_SEC);
        let mut idx = std::mem::take(&mut self.idx);
        // Pairs arrive sorted by (sender, receiver): one host's destinations together.
        let mut pairs = merged_by_key(list, &mut idx, OutAgg::merge).peekable();
        while let Some(((src, dst), agg)) = pairs.next() {
            let mut batch = vec![(dst, agg)];
            while let Some(((s2, d2), a2)) = pairs.next_if(|((s2, _), _)| *s2 == src) {
                let _ = s2;
                batch.push((d2, a2));
            }
            self.on_host(src, &batch, t, &secs, new_for, learning, cfg, signals, out);
        }
        drop(pairs);
        self.idx = idx;
        if t.as_nanos() / NANOS_PER_SEC % 3600 == 0 {
            let ttl = x.forget_after.saturating_mul(NANOS_PER_SEC);
            self.hosts.expire(t, ttl);
            for h in self.hosts.values_mut() {
                h.dests.expire(t, ttl);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_host(
        &mut self,
        src: Addr,
        batch: &[(Addr, OutAgg)],
        t: Timestamp,
        secs: &[u64],
        new_for: u64,
        learning: u64,
        cfg: &DetectConfig,
        signals: &mut Vec<(Addr, HostSignals)>,
        out: &mut Vec<Anomaly>,
    ) {
        let x = &cfg.exfil;
        let max_dests = x.max_destinations;
        let first = batch.iter().map(|(_, a)| a.span.first).min().unwrap_or(t).min(t);
        let h = self.hosts.entry(src, || Host {
            used: Used { first, last: t },
            scales: Vec::new(),
            dests: Memory::new(max_dests),
            episode: Vec::new(),
        });
        h.used.touch(t);
        h.dests.set_cap(max_dests);
        if h.scales.len() != secs.len() {
            // First sight, or the window lengths changed on reload: start over.
            h.scales = secs.iter().map(|_| Scale { start: t, peak_at: t, ..Scale::default() }).collect();
        }
        let profile = x.profile == crate::config::Profile::HourOfDay;
        for (s, &len) in h.scales.iter_mut().zip(secs) {
            if profile && s.hours.len() != 24 {
                s.hours = vec![Slot::default(); 24];
            } else if !profile && !s.hours.is_empty() {
                s.hours = Vec::new();
            }
            roll(s, t, len, x.utc_offset_minutes);
        }
        let learned = t.since(h.used.first) >= learning;
        let key = EpisodeKey { kind: AnomalyKind::DataExfiltration, src, dst: Addr::UNSPECIFIED };
        if !self.episodes.is_open(&key) {
            h.episode.clear();
        }
        let mut new_bytes = 0u64;
        let mut total = 0u64;
        let mut touched_episode = 0u64;
        let mut new_dests = 0u64;
        let mut fresh: Vec<(Addr, OutAgg, bool)> = Vec::with_capacity(batch.len());
        for &(dst, a) in batch {
            let net = prefix_of(&dst);
            let d = h.dests.entry(net, || Used { first: a.span.first.min(t), last: t });
            d.touch(t);
            // An allowlisted destination (an offsite backup) is remembered
            // but its bytes are neither judged nor learned as usual.
            if cfg.allowed(&dst, AnomalyKind::DataExfiltration) {
                continue;
            }
            // New: first used after the host's learning and less than `new_for` ago.
            let is_new = learned && d.first.since(h.used.first) >= learning && t.since(d.first) < new_for;
            total += a.bytes;
            if is_new {
                new_bytes += a.bytes;
                new_dests += 1;
            }
            if let Some(e) = h.episode.iter_mut().find(|e| e.addr == dst) {
                e.bytes += a.bytes;
                touched_episode += a.bytes;
            }
            fresh.push((dst, a, is_new));
        }
        for s in &mut h.scales {
            s.total += total;
            s.new += new_bytes;
        }
        if learned {
            let top_new =
                fresh.iter().filter(|f| f.2).max_by(|a, b| a.1.bytes.cmp(&b.1.bytes).then(b.0.cmp(&a.0)));
            let found = host_signals(&h.scales, secs, x, t, new_dests, top_new.map(|f| f.0));
            signals.push((src, found));
        }
        if !learned || !x.enabled || cfg.allowed(&src, AnomalyKind::DataExfiltration) {
            return;
        }
        let verdicts = judge(&h.scales, secs, x, t);
        // Verdicts come shortest window first; on a tie the shortest tells
        // the analyst most ("in 10 s" rather than "in 1 h").
        let worst = verdicts.iter().copied().reduce(|a, b| if b.excess() > a.excess() { b } else { a });
        let Some(worst) = worst else { return };
        let crossed = worst.excess() > 1.0;
        let continues = self.episodes.is_open(&key) && touched_episode > 0;
        if !crossed && !continues {
            return;
        }
        if crossed {
            // Destinations that carried the excess join the episode.
            fresh.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
            for (dst, a, is_new) in &fresh {
                let counts = if worst.new_crossed() { *is_new } else { true };
                if counts
                    && a.bytes > 0
                    && h.episode.len() < 2 * LISTED
                    && !h.episode.iter().any(|e| e.addr == *dst)
                {
                    h.episode.push(EpDest {
                        addr: *dst,
                        bytes: a.bytes,
                        first_packet: a.span.first,
                        new: *is_new,
                    });
                }
            }
        }
        let mut listed = h.episode.clone();
        listed.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.addr.cmp(&b.addr)));
        listed.truncate(LISTED);
        let (span, ep_bytes) = fresh.iter().filter(|(d, _, _)| h.episode.iter().any(|e| e.addr == *d)).fold(
            (Span::default(), 0u64),
            |(mut s, n), (_, a, _)| {
                s.merge(&a.span);
                (s, n + a.bytes)
            },
        );
        let dests: Vec<Value> = listed
            .iter()
            .map(|e| {
                let net = h.dests.get(&prefix_of(&e.addr));
                json!({
                    "address": e.addr.to_string(),
                    "bytes": e.bytes,
                    "first_packet": e.first_packet.to_string(),
                    "network": net_str(&e.addr),
                    "network_first_used": net.map(|d| d.first.to_string()),
                    "new": e.new,
                })
            })
            .collect();
        for s in &mut h.scales {
            s.flagged += ep_bytes;
        }
        let top = listed.first().map(|e| e.addr);
        let new_count = h.episode.iter().filter(|e| e.new).count();
        let mut ev = Map::new();
        ev.insert("windows".into(), Value::Array(verdicts.iter().map(Verdict::json).collect()));
        ev.insert("judged_window_seconds".into(), json!(worst.seconds));
        ev.insert("destinations".into(), Value::Array(dests));
        ev.insert("destinations_known".into(), json!(h.dests.len()));
        ev.insert("history_since".into(), json!(h.used.first.to_string()));
        let (observed, line, what) = if worst.new_crossed() || !crossed {
            (worst.new as f64, worst.line_new, "to destinations it never used")
        } else {
            (worst.total as f64, worst.line_all, "outside")
        };
        let severity = if worst.excess() >= 10.0 { Severity::High } else { Severity::Medium };
        let message = format!(
            "{src} sent {} {what} in {} (usually {} per {} window, peak {}; line {}){}: possible data exfiltration",
            human_bytes(observed),
            dur(worst.seconds),
            human_bytes(worst.usual),
            dur(worst.seconds),
            human_bytes(worst.peak),
            human_bytes(line),
            match (top, new_count) {
                (Some(d), n) if n > 0 =>
                    format!(", mostly to {d} ({n} new destination{})", if n == 1 { "" } else { "s" }),
                (Some(d), _) => format!(", mostly to {d}"),
                (None, _) => String::new(),
            }
        );
        let obs = RuleObs {
            ts: t,
            span,
            window: t,
            totals: vec![("bytes_to_episode_destinations", ep_bytes)],
            observed_total: None,
            observed,
            threshold: line.round(),
            unit: "bytes",
            severity,
            src: Some(src),
            dst: top,
            evidence: ev,
            message,
        };
        self.episodes.observe(key, span.or_at(t).first, &obs, out);
    }

    /// The learned state, in a stable order.
    fn snapshot(&self, cfg: &DetectConfig) -> Saved<Vec<SavedHost>> {
        let hosts = self
            .hosts
            .sorted()
            .into_iter()
            .map(|(a, h)| SavedHost {
                addr: a.to_string(),
                used: h.used,
                windows: cfg.exfil.windows.clone(),
                scales: h.scales.clone(),
                dests: h.dests.sorted().into_iter().map(|(n, d)| (n.to_string(), *d)).collect(),
            })
            .collect();
        Saved { version: STATE_VERSION, saved_at: self.clock.now, state: hosts }
    }

    fn restore(&mut self, saved: Saved<Vec<SavedHost>>, cfg: &DetectConfig) -> usize {
        self.clock.restored(saved.saved_at);
        let mut n = 0;
        for sh in saved.state {
            let Some(host) = addr(&sh.addr) else { continue };
            let mut dests = Memory::new(cfg.exfil.max_destinations);
            for (net, d) in sh.dests {
                if let Some(net) = addr(&net) {
                    dests.entry(net, || d);
                }
            }
            // Windows learned at other lengths are not comparable: relearn them.
            let scales = if sh.windows == cfg.exfil.windows { sh.scales } else { Vec::new() };
            self.hosts.entry(host, || Host { used: sh.used, scales, dests, episode: Vec::new() });
            n += 1;
        }
        n
    }
}

/// Closes `s`'s window if `t` is past it: the finished window and every
/// empty one since are folded into the usual volume and the peak.
fn roll(s: &mut Scale, t: Timestamp, len: u64, offset_min: i32) {
    let len = len.max(1);
    if t.since(s.start) < len {
        return;
    }
    let windows = t.since(s.start) / len;
    let keep = 0.5f64.powf(len as f64 / 1e9 / HALF_LIFE);
    let learned = s.total.saturating_sub(s.flagged) as f64;
    s.usual.push(learned, 1, keep);
    if windows > 1 {
        s.usual.push(0.0, windows - 1, keep);
    }
    if s.hours.len() == 24 {
        let start = s.start;
        fold_slot(s, start, learned, len, offset_min);
        // The quiet windows since, each in its own hour (a day of them at
        // most: older silence has decayed away in every slot anyway).
        let day = (86_400 * NANOS_PER_SEC / len).max(1);
        for k in windows.saturating_sub(day).max(1)..windows {
            fold_slot(s, start.saturating_add(k * len), 0.0, len, offset_min);
        }
    }
    let decay = 0.5f64.powf(t.since(s.peak_at) as f64 / 1e9 / HALF_LIFE);
    s.peak = (s.peak * decay).max(learned);
    s.peak_at = t;
    s.closed = s.closed.saturating_add(u32::try_from(windows).unwrap_or(u32::MAX));
    s.start = s.start.saturating_add(windows * len);
    s.total = 0;
    s.new = 0;
    s.flagged = 0;
}

/// Every window against its lines. A scale with too few closed windows
/// borrows the shortest trusted scale's rate, scaled to its length; peaks
/// of shorter windows bound longer ones from below (a minute holds its
/// busiest ten seconds).
fn judge(scales: &[Scale], secs: &[u64], x: &ExfilConfig, t: Timestamp) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..scales.len()).collect();
    order.sort_by_key(|&i| secs[i]);
    let trusted = order.iter().copied().find(|&i| scales[i].closed >= MIN_CLOSED);
    let mut peak_below = 0.0f64;
    let mut out = Vec::with_capacity(scales.len());
    for &i in &order {
        let s = &scales[i];
        // This hour of day's own history, once it has some: a nightly
        // backup is usual at 02:00 and still unusual at 14:00.
        let slot = s.hours.get(hour_of(s.start, x.utc_offset_minutes)).filter(|h| h.closed >= MIN_SLOT);
        let usual = if let Some(h) = slot {
            h.usual.value()
        } else if s.closed >= MIN_CLOSED {
            s.usual.value()
        } else {
            trusted.map_or(0.0, |j| scales[j].usual.value() * secs[i] as f64 / secs[j] as f64)
        };
        let decay = 0.5f64.powf(t.since(s.peak_at) as f64 / 1e9 / HALF_LIFE);
        let overall = s.peak * decay;
        let peak = slot.map_or(overall, |h| h.peak).max(peak_below);
        peak_below = peak;
        out.push(Verdict {
            seconds: secs[i] / NANOS_PER_SEC,
            total: s.total,
            new: s.new,
            usual,
            peak,
            line_new: (x.min_new_bytes as f64).max(x.new_ratio * usual).max(peak).max(1.0),
            line_all: (x.min_bytes as f64).max(x.ratio * usual).max(2.0 * peak).max(1.0),
        });
    }
    out
}

/// The host's outside volume against its own history, for the behaviour
/// model: per window length with a trusted history, the window's bytes
/// over the busiest such window it ever sent (decaying), and its bytes to
/// networks new to it over the same; the window where each is highest.
/// Below `min_bytes / 2` (all) or `min_new_bytes` (new) a busiest window
/// does not count as one: a host that never uploads is not unusual for
/// posting a form.
fn host_signals(
    scales: &[Scale],
    secs: &[u64],
    x: &ExfilConfig,
    t: Timestamp,
    new_dests: u64,
    top_new: Option<Addr>,
) -> HostSignals {
    let mut out = HostSignals::default();
    for (s, &len) in scales.iter().zip(secs) {
        if s.closed < MIN_CLOSED {
            continue;
        }
        let decay = 0.5f64.powf(t.since(s.peak_at) as f64 / 1e9 / HALF_LIFE);
        let peak = s.peak * decay;
        let seconds = len / NANOS_PER_SEC;
        let all = Signal {
            value: s.total as f64 / peak.max(x.min_bytes as f64 / 2.0).max(1.0),
            now: s.total as f64,
            usual: peak,
            seconds,
            peer: None,
            count: 0,
        };
        let new = Signal {
            value: s.new as f64 / peak.max(x.min_new_bytes as f64).max(1.0),
            now: s.new as f64,
            usual: peak,
            seconds,
            peer: top_new,
            count: new_dests,
        };
        for (i, sig) in [(SIG_OUTSIDE, all), (SIG_NEW_DEST, new)] {
            if sig.value > out.signals[i].value {
                out.signals[i] = sig;
            }
        }
    }
    out
}

fn net_str(a: &Addr) -> String {
    format!("{}/{}", prefix_of(a), if a.is_v4() { 24 } else { 48 })
}

/// A window length for a sentence: "10 s", "10 min", "1 h".
fn dur(s: u64) -> String {
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

impl Family for ExfilDetector {
    type Shard = OutTable;

    fn new(cfg: &DetectConfig) -> ExfilDetector {
        ExfilDetector::new(cfg)
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) -> OutTable {
        OutTable(IntervalTable::new(MAX_PAIRS))
    }

    fn judge(&mut self, report: &mut OutList, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        self.on_interval(report, cx.t, cx.cfg, &mut cx.facts.behaviour, out);
        report.clear();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.episodes.set_policy(cfg.episodes);
        self.hosts.set_cap(cfg.exfil.max_hosts);
    }

    fn state_file(&self, _: &DetectConfig) -> Option<&'static str> {
        Some(STATE_FILE)
    }

    fn save_state(&self, cfg: &DetectConfig) -> Option<Vec<u8>> {
        self.snapshot(cfg).to_bytes()
    }

    fn load_state(&mut self, text: &str, cfg: &DetectConfig) -> Restored {
        match Saved::parse(text, STATE_VERSION) {
            Ok(s) => Restored::Loaded(self.restore(s, cfg)),
            Err(bad) => bad,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_is_exact_for_few_windows_and_zeros_fold_at_once() {
        let mut m = Mean::default();
        let keep = 0.999;
        m.push(10.0, 1, keep);
        m.push(0.0, 1, keep);
        assert!((m.value() - 5.0).abs() < 0.01, "{}", m.value());
        let mut a = Mean::default();
        let mut b = Mean::default();
        a.push(8.0, 1, keep);
        b.push(8.0, 1, keep);
        a.push(0.0, 5, keep);
        for _ in 0..5 {
            b.push(0.0, 1, keep);
        }
        assert!((a.value() - b.value()).abs() < 1e-9);
    }

    #[test]
    fn a_window_rolls_over_quiet_spells() {
        let s0 = Timestamp::from_secs(1000);
        let mut s = Scale { start: s0, peak_at: s0, total: 500, ..Scale::default() };
        roll(&mut s, Timestamp::from_secs(1035), 10 * NANOS_PER_SEC, 0);
        assert_eq!(s.closed, 3);
        assert_eq!(s.start, Timestamp::from_secs(1030));
        assert_eq!(s.total, 0);
        assert!((s.usual.value() - 500.0 / 3.0).abs() < 1.0);
        assert!((s.peak - 500.0).abs() < 1.0);
    }

    #[test]
    fn a_nightly_backup_is_usual_at_night_only() {
        let x = ExfilConfig { profile: crate::config::Profile::HourOfDay, ..ExfilConfig::default() };
        let hour = 3600 * NANOS_PER_SEC;
        let day0 = Timestamp::from_secs(1_700_000_000 - 1_700_000_000 % 86_400);
        let mut s =
            Scale { start: day0, peak_at: day0, hours: vec![Slot::default(); 24], ..Scale::default() };
        // Four weeks of hourly windows: 5 GB uploaded in the 02:00 hour, 10 MB in every other.
        for h in 0..24 * 28u64 {
            s.total = if h % 24 == 2 { 5_000_000_000 } else { 10_000_000 };
            roll(&mut s, day0.saturating_add((h + 1) * hour), hour, 0);
        }
        let at = |h: u64| {
            let mut s = s.clone();
            s.start = day0.saturating_add((28 * 24 + h) * hour);
            s.total = 5_000_000_000;
            judge(&[s], &[hour], &x, day0.saturating_add((28 * 24 + h) * hour + 60))[0]
        };
        assert!(at(2).total as f64 <= at(2).line_all, "{:?}", at(2));
        assert!(at(14).total as f64 > at(14).line_all, "{:?}", at(14));
    }

    #[test]
    fn long_windows_borrow_the_short_rate_until_they_have_history() {
        let x = ExfilConfig::default();
        let t = Timestamp::from_secs(10_000);
        let short = Scale {
            usual: Mean { sum: 1e5, weight: 1.0 },
            closed: 12,
            peak: 2e6,
            peak_at: t,
            ..Scale::default()
        };
        let long = Scale { peak_at: t, ..Scale::default() };
        let v = judge(&[short, long], &[10 * NANOS_PER_SEC, 600 * NANOS_PER_SEC], &x, t);
        assert!((v[1].usual - 6e6).abs() < 1.0, "{:?}", v[1]);
        assert!(v[1].peak >= 2e6);
        assert_eq!(v[1].line_new, 2.4e7);
    }
}
