//! Statistical detectors: per-host baselines and traffic spikes.
//!
//! Each closed interval, every host with traffic is measured on seven
//! metrics and compared with a line: during warm-up (a fresh sensor, or a
//! host never seen before) a fixed ceiling in the manner of FastNetMon;
//! after it, the host's own learned normal (see [`baseline`](super::baseline)).
//! An episode opens when the line is crossed in `persistence` of the last
//! `window` intervals, or at once when the interval has the unmistakable shape
//! of a flood (many sources, or hundreds of new flows, none of it answered),
//! or is ten times over the line and unanswered. Anomalous intervals never
//! teach the baseline: learning is frozen while an episode is open and
//! clipped at the line otherwise.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::anomaly::{Anomaly, AnomalyKind, Baseline, Phase, Severity};
use super::baseline::{MetricBaseline, ThresholdRule, alpha_for_half_life};
use super::episode::{EpisodeKey, EpisodeState, Episodes};
use super::evidence::put_count;
use super::family::{Context, Family, Restored};
use super::{DetectConfig, HostInterval};
use crate::base::time::{Span, Timestamp};
use crate::base::{Addr, SlabMap};
use crate::config::Tuning;
use crate::track::{HostCounters, ShardConfig};

/// The metrics with a baseline, in [`SPECS`] order.
pub const METRICS: usize = 8;

/// One statistical detector: which metric, which kind, and whose episode it is.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The kind reported.
    pub kind: AnomalyKind,
    /// Unit of the metric.
    pub unit: &'static str,
    /// The host is the actor (outbound metrics) rather than the target.
    pub actor: bool,
    /// Short metric name for evidence and state files.
    pub name: &'static str,
}

/// The seven metrics, in index order.
pub const SPECS: [Spec; METRICS] = [
    Spec { kind: AnomalyKind::SynFlood, unit: "unanswered SYN/s", actor: false, name: "half_open_in" },
    Spec { kind: AnomalyKind::UdpFlood, unit: "packets/s", actor: false, name: "udp_in" },
    Spec { kind: AnomalyKind::IcmpFlood, unit: "packets/s", actor: false, name: "icmp_in" },
    Spec { kind: AnomalyKind::Amplification, unit: "bytes/s", actor: false, name: "amp_bytes_in" },
    Spec { kind: AnomalyKind::VolumeSpike, unit: "bytes/s", actor: false, name: "bytes_in" },
    Spec { kind: AnomalyKind::VolumeSpike, unit: "bytes/s", actor: true, name: "bytes_out" },
    Spec { kind: AnomalyKind::FanoutSpike, unit: "distinct peers/s", actor: true, name: "peers_out" },
    // Appended: saved states list the metrics in this order.
    Spec {
        kind: AnomalyKind::ConnectionFlood,
        unit: "completed connections/s",
        actor: false,
        name: "handshakes_in",
    },
];

/// Sources (or new flows) in one interval that make a storm unmistakable.
const FLOOD_SOURCES: u64 = 32;
const FLOOD_FLOWS: u64 = 100;
/// Distinct reflectors that make unsolicited responses an attack, not a stray.
const AMP_REFLECTORS: u64 = 3;
/// A SYN storm on more ports than this from few sources is a scan, not a flood.
const SCAN_PORTS: u64 = 64;
/// "Unanswered": the target sent back at most this fraction.
const ANSWERED_MAX: f64 = 0.1;
/// Over the line by this factor and unanswered: no persistence needed.
const EXTREME: f64 = 10.0;

/// Flood metrics judged per prefix: the first three of [`SPECS`]
/// (unanswered SYNs, UDP, ICMP).
const PREFIX_METRICS: usize = 3;
/// Destinations of one prefix a flood must hit to be a carpet: the
/// threshold Zeek uses for an address scan is 25; a /24 carpet hits most of
/// its 256 addresses every second, and 16 keeps a small subnet in reach.
const PREFIX_HOSTS: u32 = 16;
/// The key standing for the whole link: no prefix can be it (a /24 or /64
/// ends in zero bytes). It was `::`, which is also the /64 of `::1` and of
/// the IPv4-compatible block, so those prefixes shared the link's baseline.
const LINK: Addr = Addr([0xff; 16]);
/// The actor of a prefix or link episode's key: no address, and not the
/// unspecified one, so these are never taken for one host's flood.
const PREFIX_MARK: Addr = Addr([0xff; 16]);

/// The destination prefix of `a`: IPv4 /24, IPv6 /64.
fn prefix_of(a: &Addr) -> Addr {
    let mut b = a.0;
    if a.is_v4() {
        b[15] = 0;
    } else {
        b[8..].fill(0);
    }
    Addr(b)
}

/// One interval's flood traffic toward one prefix (or the link).
#[derive(Clone, Copy, Debug, Default)]
struct PrefixAgg {
    /// Unanswered SYNs, UDP and ICMP packets received, summed over hosts.
    sum: [u64; PREFIX_METRICS],
    /// Hosts receiving each.
    hosts: [u32; PREFIX_METRICS],
    /// The largest single host's share of each, and who.
    top: [u64; PREFIX_METRICS],
    top_host: [Addr; PREFIX_METRICS],
    udp_out: u64,
    icmp_out: u64,
    /// Distinct sources (union of the hosts' sketches).
    sources: crate::base::Distinct<8>,
    span: Span,
}

impl PrefixAgg {
    fn add(&mut self, a: &Addr, h: &HostCounters, v: &[u64; PREFIX_METRICS]) {
        for (i, &x) in v.iter().enumerate() {
            self.sum[i] += x;
            self.hosts[i] += u32::from(x > 0);
            // Ties go to the lower address: the same whatever the map order.
            if x > self.top[i] || (x == self.top[i] && x > 0 && *a < self.top_host[i]) {
                self.top[i] = x;
                self.top_host[i] = *a;
            }
        }
        self.udp_out += h.udp_out;
        self.icmp_out += h.icmp_out;
        self.sources.merge(&h.peers_in);
        self.span.merge(&h.span_in);
    }
}

/// A prefix's learned flood baselines (not saved: a prefix re-learns in
/// one warm-up).
#[derive(Clone, Debug, Default)]
struct PrefixState {
    base: [MetricBaseline; PREFIX_METRICS],
    over: [u32; PREFIX_METRICS],
    first: u64,
    last: u64,
}

#[allow(clippy::too_many_arguments)]
fn prefix_observation(
    i: usize,
    p: Addr,
    agg: &PrefixAgg,
    v: f64,
    line: f64,
    baseline: Option<Baseline>,
    t: Timestamp,
    cfg: &DetectConfig,
    st: &PrefixState,
    over: bool,
    persistent: bool,
) -> SpikeObs {
    let where_ = if p == LINK {
        "the link".to_string()
    } else if p.is_v4() {
        format!("{p}/24")
    } else {
        format!("{p}/64")
    };
    let mut ev = Map::new();
    ev.insert("prefix".into(), json!(where_));
    ev.insert("hosts_hit".into(), json!(agg.hosts[i]));
    ev.insert("largest_host".into(), json!({"ip": agg.top_host[i].to_string(), "value": agg.top[i]}));
    put_count(&mut ev, "distinct_sources", agg.sources.count());
    let (what, answers) = match i {
        0 => (format!("{v:.0} connection attempts/s that never complete"), String::new()),
        1 => (format!("{v:.0} UDP packets/s"), format!(", answered by {}", agg.udp_out)),
        _ => (format!("{v:.0} ICMP packets/s"), format!(", answered by {}", agg.icmp_out)),
    };
    let name = ["SYN", "UDP", "ICMP"][i];
    let text = format!(
        "{name} flood with no single victim: {where_} receives {what} spread over {} destinations (the most on one: {} at {}) from {} sources{answers}",
        agg.hosts[i],
        agg.top_host[i],
        agg.top[i],
        agg.sources.count().words(),
    );
    SpikeObs {
        ts: t,
        host: p,
        value: v,
        threshold: line,
        baseline,
        dominant: None,
        evidence: ev,
        spec: i,
        what: text,
        over,
        onset: onset_of(t, st.over[i], cfg.interval_ns),
        opened_by: if persistent {
            format!("spread over the prefix and over the line in {} intervals", st.over[i].count_ones())
        } else {
            "spread over the prefix, ten times over the line".to_string()
        },
        span: agg.span,
    }
}

/// Start of the oldest interval over the line still in the persistence
/// window `over` (this one's start when it opens by shape alone; the last
/// interval of an input ends at its last packet).
fn onset_of(t: Timestamp, over: u32, interval_ns: u64) -> Timestamp {
    let this_start = Timestamp(t.as_nanos().saturating_sub(1)).floor_to(interval_ns.max(1));
    let back = match over {
        0 => 0,
        bits => u64::from(31 - bits.leading_zeros()),
    };
    Timestamp(this_start.as_nanos().saturating_sub(back.saturating_mul(interval_ns)))
}

/// One host's learned state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HostBaseline {
    /// Per-metric baselines, in [`SPECS`] order (a state saved with fewer
    /// metrics loads, the new ones starting empty).
    #[serde(deserialize_with = "metrics_padded")]
    pub base: [MetricBaseline; METRICS],
    /// Interval index at which the host was first seen.
    pub first: u64,
    /// Interval index of the last update.
    pub last: u64,
    /// Over-the-line history per metric, newest in bit 0.
    #[serde(skip)]
    over: [u32; METRICS],
}

fn metrics_padded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[MetricBaseline; METRICS], D::Error> {
    let v: Vec<MetricBaseline> = Vec::deserialize(d)?;
    if v.len() > METRICS {
        return Err(serde::de::Error::invalid_length(v.len(), &"at most as many metrics as this build has"));
    }
    let mut out: [MetricBaseline; METRICS] = Default::default();
    for (o, b) in out.iter_mut().zip(v) {
        *o = b;
    }
    Ok(out)
}

/// What one interval says about one metric of one host.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeObs {
    /// End of the interval.
    pub ts: Timestamp,
    /// The host.
    pub host: Addr,
    /// The measured value.
    pub value: f64,
    /// The line.
    pub threshold: f64,
    /// Baseline (mean, stddev, samples), `None` during warm-up.
    pub baseline: Option<Baseline>,
    /// The single source (or destination) carrying most of the traffic.
    pub dominant: Option<Addr>,
    /// Evidence fields.
    pub evidence: Map<String, Value>,
    /// Which metric.
    pub spec: usize,
    /// Rendered message fragment (what happened).
    pub what: String,
    /// The value was over the line (an immediate shape can open below it).
    pub over: bool,
    /// Start of the first interval over the line in this run (the onset).
    pub onset: Timestamp,
    /// What opened the episode: persistence over the line, or a shape.
    pub opened_by: String,
    /// Packet times of the host's traffic in this interval (empty when not tracked).
    pub span: Span,
}

/// Running state of one spike episode.
#[derive(Clone, Debug)]
pub struct SpikeEpisode {
    first: Timestamp,
    last: Timestamp,
    /// Intervals observed over the line (not every second of the episode).
    over: u64,
    /// Intervals observed (over the line, or opening by shape).
    observed: u64,
    onset: Timestamp,
    opened_by: String,
    /// Sum of the metric over the observed intervals (packets, bytes…).
    total: f64,
    latest: SpikeObs,
    peak: SpikeObs,
}

impl EpisodeState for SpikeEpisode {
    type Obs = SpikeObs;

    fn open(obs: &SpikeObs) -> Self {
        let s = obs.span.or_at(obs.ts);
        SpikeEpisode {
            first: s.first,
            last: s.last,
            over: u64::from(obs.over),
            observed: 1,
            onset: obs.onset,
            opened_by: obs.opened_by.clone(),
            total: obs.value,
            latest: obs.clone(),
            peak: obs.clone(),
        }
    }

    fn merge(&mut self, obs: &SpikeObs) {
        let s = obs.span.or_at(obs.ts);
        self.first = self.first.min(s.first);
        self.last = self.last.max(s.last);
        self.over += u64::from(obs.over);
        self.observed += 1;
        self.total += obs.value;
        if obs.value > self.peak.value {
            self.peak = obs.clone();
        }
        self.latest = obs.clone();
    }

    fn last_seen(&self) -> Timestamp {
        self.last
    }

    fn render(&self, key: &EpisodeKey, phase: Phase, ts: Timestamp, id: &str) -> Anomaly {
        // Start and updates describe the latest interval, the end the peak;
        // the whole episode is under `episode_totals`.
        let (o, which) = if phase == Phase::End { (&self.peak, "peak") } else { (&self.latest, "latest") };
        let spec = &SPECS[o.spec];
        let score = if o.threshold > 0.0 { o.value / o.threshold } else { o.value };
        let severity = severity(key.kind, score);
        let mut ev = o.evidence.clone();
        ev.insert("first_seen".into(), json!(self.first.to_string()));
        ev.insert("last_seen".into(), json!(self.last.to_string()));
        ev.insert("intervals_over".into(), json!(self.over));
        ev.insert("intervals_observed".into(), json!(self.observed));
        ev.insert("onset".into(), json!(self.onset.to_string()));
        ev.insert("opened_by".into(), json!(self.opened_by));
        ev.insert("reported_interval".into(), json!(which));
        ev.insert("episode_totals".into(), json!({ spec.name: round2(self.total) }));
        ev.insert("metric".into(), json!(spec.name));
        if phase != Phase::Start {
            ev.insert("peak_at".into(), json!(self.peak.ts.to_string()));
        }
        // The link as a whole has no address.
        let host = (o.host != LINK).then_some(o.host);
        let (src, dst) = if spec.actor { (host, o.dominant) } else { (o.dominant, host) };
        let normal = match &o.baseline {
            Some(b) => format!("normal {}", human(b.mean, spec.unit)),
            None => "no baseline yet, warm-up ceiling".to_string(),
        };
        let message =
            format!("{} (line {}, {normal}; {:.1}x over)", o.what, human(o.threshold, spec.unit), score);
        Anomaly {
            ts,
            phase,
            episode_id: id.to_string(),
            kind: key.kind,
            severity,
            src,
            dst,
            flow: None,
            observed: round2(o.value),
            unit: spec.unit,
            baseline: o.baseline,
            threshold: round2(o.threshold),
            score: round2(score),
            evidence: ev,
            message,
            priority: None,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn severity(kind: AnomalyKind, score: f64) -> Severity {
    let floods = !matches!(kind, AnomalyKind::VolumeSpike | AnomalyKind::FanoutSpike);
    match (floods, score) {
        (true, s) if s >= 10.0 => Severity::Critical,
        (true, s) if s >= 2.0 => Severity::High,
        (true, _) => Severity::Medium,
        (false, s) if s >= 5.0 => Severity::High,
        (false, s) if s >= 2.0 => Severity::Medium,
        _ => Severity::Low,
    }
}

/// A rate in words: bit rates for bytes/s, plain numbers otherwise.
fn human(v: f64, unit: &str) -> String {
    if unit == "bytes/s" {
        let bits = v * 8.0;
        return if bits >= 1e9 {
            format!("{:.2} Gbit/s", bits / 1e9)
        } else if bits >= 1e6 {
            format!("{:.1} Mbit/s", bits / 1e6)
        } else {
            format!("{:.0} kbit/s", bits / 1e3)
        };
    }
    format!("{v:.0} {unit}")
}

/// The statistical detectors and their learned state.
pub struct SpikeDetector {
    hosts: SlabMap<Addr, HostBaseline>,
    alphas: (f64, f64),
    episodes: Episodes<SpikeEpisode>,
    /// Hosts forgotten to stay under `max_hosts`.
    pub forgotten: u64,
    /// Detections not opened because of an allowlist.
    pub allowlisted: u64,
    /// The latest interval judged (its index).
    latest: u64,
    /// After a restore: the interval the state was saved at, so the time the
    /// sensor was not running is not taken for silence of every host.
    resume_from: Option<u64>,
    /// Flood baselines per destination prefix and for the whole link.
    prefixes: SlabMap<Addr, PrefixState>,
    /// Per-interval prefix sums, kept between intervals for their memory.
    prefix_sums: SlabMap<Addr, PrefixAgg>,
    /// Scratch: the addresses in open episodes' keys (kept between intervals).
    in_episode: Vec<Addr>,
}

/// Learned state as saved to disk.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpikeState {
    /// Schema version; a mismatch is reported and the file set aside.
    pub version: u32,
    /// Interval length the baselines were learned at, in ns.
    pub interval_ns: u64,
    /// Per-host baselines.
    pub hosts: Vec<(String, HostBaseline)>,
    /// Index of the last interval judged before saving (0 in files written
    /// before it existed: the hosts' latest `last` stands in).
    #[serde(default)]
    pub saved_at: u64,
}

/// Current [`SpikeState::version`].
pub const STATE_VERSION: u32 = 1;

impl SpikeDetector {
    /// A detector with no history.
    pub fn new(cfg: &DetectConfig) -> SpikeDetector {
        let secs_per_interval = cfg.interval_ns.max(1) as f64 / 1e9;
        let hl = cfg.spike.half_lives;
        SpikeDetector {
            // Room for the cap at once (untouched until filled).
            hosts: SlabMap::with_room(cfg.spike.max_hosts),
            alphas: (
                alpha_for_half_life(hl[0] as f64 / secs_per_interval),
                alpha_for_half_life(hl[1] as f64 / secs_per_interval),
            ),
            episodes: Episodes::new(cfg.episodes),
            forgotten: 0,
            allowlisted: 0,
            latest: 0,
            resume_from: None,
            prefixes: SlabMap::default(),
            prefix_sums: SlabMap::default(),
            in_episode: Vec::new(),
        }
    }

    /// Episodes open now.
    pub fn open_count(&self) -> usize {
        self.episodes.open_count()
    }

    /// Takes new half-lives and episode timing; learned baselines stay.
    pub fn reconfigure(&mut self, cfg: &DetectConfig) {
        let fresh = SpikeDetector::new(cfg);
        self.alphas = fresh.alphas;
        self.episodes.set_policy(cfg.episodes);
    }

    /// Hosts with a baseline.
    pub fn hosts_tracked(&self) -> usize {
        self.hosts.len()
    }

    /// Hosts still in warm-up at interval `t`.
    pub fn hosts_warming(&self, t: Timestamp, cfg: &DetectConfig) -> usize {
        let idx = t.as_nanos() / cfg.interval_ns.max(1);
        let warm = warmup_intervals(cfg);
        self.hosts.values().filter(|h| idx.saturating_sub(h.first) < warm).count()
    }

    /// Judges the merged interval ending at `t`; new and ongoing episodes go to `out`.
    pub fn on_interval(
        &mut self,
        iv: &HostInterval,
        t: Timestamp,
        cfg: &DetectConfig,
        out: &mut Vec<Anomaly>,
    ) {
        let sp = &cfg.spike;
        let idx = t.as_nanos() / cfg.interval_ns.max(1);
        if let Some(from) = self.resume_from.take() {
            // The sensor was down from `from` to now: move every restored
            // host's clock forward by the gap, so the downtime neither
            // decays baselines (a 1-h half-life would leave nothing of a
            // night) nor counts toward warm-up.
            let gap = idx.saturating_sub(from.saturating_add(1));
            for h in self.hosts.values_mut() {
                h.last = h.last.saturating_add(gap);
                h.first = h.first.saturating_add(gap);
            }
        }
        self.latest = idx;
        let warm_after = warmup_intervals(cfg);
        let mut hosts: Vec<(&Addr, &HostCounters)> = iv.hosts.iter().collect();
        hosts.sort_unstable_by_key(|(a, _)| **a);
        // Every address in an open episode's key, sorted: a host outside it
        // (nearly all of them) has no open episode, and the up to twelve
        // lookups per host that would say so are skipped. Taken before the
        // loop; what the loop opens concerns only the host it is judging.
        let mut in_episode = std::mem::take(&mut self.in_episode);
        in_episode.clear();
        in_episode.extend(self.episodes.keys().flat_map(|k| [k.src, k.dst]));
        in_episode.sort_unstable();
        in_episode.dedup();
        for (a, h) in hosts {
            if !self.hosts.contains_key(a) {
                if h.pkts_in + h.pkts_out < sp.admission_packets {
                    continue;
                }
                if self.hosts.len() >= sp.max_hosts {
                    self.forget_oldest(sp.max_hosts);
                }
                self.hosts.insert(*a, HostBaseline { first: idx, last: idx, ..HostBaseline::default() });
            }
            let values = metric_values(h);
            let group = cfg.hostgroups.iter().position(|(cidrs, _)| cidrs.iter().any(|c| c.contains(a)));
            let Some(hb) = self.hosts.get_mut(a) else {
                continue;
            };
            let (shift, warm) = catch_up(&mut hb.base, hb.first, hb.last, idx, self.alphas, warm_after);
            let any_open = in_episode.binary_search(a).is_ok();
            let is_open = |k: &EpisodeKey| any_open && self.episodes.is_open(k);
            let flood_key = |k: AnomalyKind| EpisodeKey { kind: k, src: Addr::UNSPECIFIED, dst: *a };
            let open_flood = FLOOD_KINDS.iter().position(|k| is_open(&flood_key(*k)));
            let mut d: [Decision; METRICS] = Default::default();
            for (i, spec) in SPECS.iter().enumerate() {
                let tuning = tuning_for(cfg, spec.kind, group);
                let v = values[i];
                let base = &hb.base[i];
                let rule = ThresholdRule { k: sp.k, ratio: sp.ratio, floor: tuning.floor };
                let trusted = warm && base.samples > 0;
                let line = if trusted { base.threshold(&rule) } else { tuning.ceiling };
                let over = v >= line && v > 0.0;
                let window_mask = if tuning.window >= 32 { u32::MAX } else { (1u32 << tuning.window) - 1 };
                hb.over[i] = (hb.over[i].checked_shl(shift).unwrap_or(0) | u32::from(over)) & window_mask;
                let key = if spec.actor {
                    EpisodeKey { kind: spec.kind, src: *a, dst: Addr::UNSPECIFIED }
                } else {
                    flood_key(spec.kind)
                };
                // Under both the floor and the line no shape opens at once
                // (each needs the floor, or ten times the line): its
                // distinct-count estimates are skipped.
                let shape = if v >= tuning.floor.min(line) {
                    shape_of(i, a, h, v, tuning.floor, line, open_flood.is_some())
                } else {
                    Shape { eligible: false, immediate: false, why: "" }
                };
                let persistent = hb.over[i].count_ones() >= tuning.persistence;
                let trigger = tuning.enabled && shape.eligible && ((over && persistent) || shape.immediate);
                // Words and baseline only for what is reported (made there).
                let opened_by = if over && persistent {
                    OpenedBy::Persistence(hb.over[i].count_ones(), tuning.window)
                } else {
                    OpenedBy::Shape(shape.why)
                };
                d[i] = Decision {
                    v,
                    line,
                    over,
                    onset: onset_of(t, hb.over[i], cfg.interval_ns),
                    opened_by,
                    trigger,
                    report: trigger,
                    open: is_open(&key),
                    key,
                    trusted,
                };
            }
            // Attack typing: one flood episode per target, of the protocol that
            // carries most of the excess (FastNetMon's rule); the other vectors
            // show in its protocol mix.
            let flood_pkts = [h.syn_in.saturating_sub(h.handshakes_in), h.udp_in, h.icmp_in, h.amp_pkts_in];
            let chosen = open_flood.or_else(|| {
                (0..FLOOD_KINDS.len())
                    .filter(|&i| d[i].trigger)
                    .max_by_key(|&i| (flood_pkts[i], std::cmp::Reverse(i)))
            });
            for (i, di) in d.iter_mut().enumerate().take(FLOOD_KINDS.len()) {
                if chosen.is_some_and(|c| c != i) {
                    di.report = false;
                }
            }
            for (i, di) in d.iter_mut().enumerate() {
                if di.report || (di.open && di.over) {
                    let spec = &SPECS[i];
                    let who = if spec.actor { di.key.src } else { di.key.dst };
                    if cfg.allowed(&who, spec.kind) {
                        self.allowlisted += 1;
                    } else {
                        let baseline = di.trusted.then(|| {
                            let (mean, sd) = hb.base[i].reported();
                            Baseline { mean: round2(mean), stddev: round2(sd), samples: hb.base[i].samples }
                        });
                        let mut obs = observation(
                            i,
                            *a,
                            h,
                            di.v,
                            di.line,
                            baseline,
                            t,
                            idx.saturating_sub(hb.first),
                            cfg.interval_ns as f64 / 1e9,
                        );
                        obs.over = di.over;
                        obs.onset = di.onset;
                        obs.opened_by = di.opened_by.words();
                        self.episodes.observe(di.key, t, &obs, out);
                    }
                }
                // Anomalous intervals never teach the baseline: frozen while an
                // episode is open or opening, clipped at the line otherwise.
                if !di.open && !di.trigger {
                    hb.base[i].learn(di.v.min(di.line), self.alphas);
                }
            }
            hb.last = idx;
        }
        self.in_episode = in_episode;
        self.judge_prefixes(iv, t, idx, cfg, out);
    }

    /// Carpet bombing and floods with no single victim: the flood metrics
    /// summed per destination prefix (IPv4 /24, IPv6 /64) and over the whole
    /// link, judged like a host when spread over many destinations, none of
    /// which holds half of it (a single victim is the per-host detectors'
    /// job). The link total is judged only when no prefix explains it.
    fn judge_prefixes(
        &mut self,
        iv: &HostInterval,
        t: Timestamp,
        idx: u64,
        cfg: &DetectConfig,
        out: &mut Vec<Anomaly>,
    ) {
        let mut sums = std::mem::take(&mut self.prefix_sums);
        sums.clear();
        let mut link = PrefixAgg::default();
        for (a, h) in &iv.hosts {
            let v = [h.syn_in.saturating_sub(h.handshakes_in), h.udp_in, h.icmp_in];
            if v == [0; 3] || all_hosts(a) {
                continue;
            }
            sums.get_or_default(prefix_of(a)).add(a, h, &v);
            link.add(a, h, &v);
        }
        let mut keys: Vec<Addr> = sums.keys().copied().collect();
        keys.sort_unstable();
        let mut fired = [false; PREFIX_METRICS];
        for p in keys {
            if let Some(agg) = sums.get(&p) {
                let f = self.judge_prefix(p, agg, t, idx, cfg, out, &[false; PREFIX_METRICS]);
                for (x, y) in fired.iter_mut().zip(f) {
                    *x |= y;
                }
            }
        }
        let explained: [bool; PREFIX_METRICS] = std::array::from_fn(|i| {
            fired[i]
                || self
                    .episodes
                    .keys()
                    .any(|k| k.src == PREFIX_MARK && k.dst != LINK && k.kind == FLOOD_KINDS[i])
        });
        if link.hosts.iter().any(|&n| n > 0) {
            self.judge_link(&link, &explained, t, idx, cfg, out);
        }
        self.prefix_sums = sums;
        if self.prefixes.len() > cfg.spike.max_hosts {
            // Prefixes seen least recently go first, as hosts do.
            let mut by_age: Vec<(u64, Addr)> = self.prefixes.iter().map(|(a, s)| (s.last, *a)).collect();
            by_age.sort_unstable();
            // Down to seven eighths of the cap, as hosts are: a flood of new
            // /64s each interval cannot grow the table past it.
            let excess = self.prefixes.len() - (cfg.spike.max_hosts - cfg.spike.max_hosts / 8);
            for (_, a) in by_age.into_iter().take(excess) {
                self.prefixes.remove(&a);
            }
        }
    }

    fn judge_link(
        &mut self,
        agg: &PrefixAgg,
        explained: &[bool; PREFIX_METRICS],
        t: Timestamp,
        idx: u64,
        cfg: &DetectConfig,
        out: &mut Vec<Anomaly>,
    ) {
        let mut quiet = *agg;
        for (i, e) in explained.iter().enumerate() {
            if *e {
                quiet.sum[i] = 0;
            }
        }
        self.judge_prefix(LINK, &quiet, t, idx, cfg, out, explained);
    }

    /// Judges one prefix's interval; returns which metrics opened or fed an
    /// episode. Metrics in `explained` (the link's share that prefix
    /// episodes already report, zeroed by the caller) are not learned: a
    /// baseline fed zeros through a long flood would sit far below the
    /// link's usual traffic when the flood ends.
    #[allow(clippy::too_many_arguments)]
    fn judge_prefix(
        &mut self,
        p: Addr,
        agg: &PrefixAgg,
        t: Timestamp,
        idx: u64,
        cfg: &DetectConfig,
        out: &mut Vec<Anomaly>,
        explained: &[bool; PREFIX_METRICS],
    ) -> [bool; PREFIX_METRICS] {
        let sp = &cfg.spike;
        let warm_after = warmup_intervals(cfg);
        let st = self.prefixes.get_or_insert_with(p, || PrefixState {
            first: idx,
            last: idx,
            ..PrefixState::default()
        });
        let (shift, warm) = catch_up(&mut st.base, st.first, st.last, idx, self.alphas, warm_after);
        let mut fired = [false; PREFIX_METRICS];
        for i in 0..PREFIX_METRICS {
            let kind = FLOOD_KINDS[i];
            let tuning = tuning_for(cfg, kind, None);
            let v = agg.sum[i] as f64;
            let base = &st.base[i];
            let trusted = warm && base.samples > 0;
            let rule = ThresholdRule { k: sp.k, ratio: sp.ratio, floor: tuning.floor };
            let line = if trusted { base.threshold(&rule) } else { tuning.ceiling };
            // Spread: many destinations, none holding half; unanswered.
            // Many destinations, none holding half, and many sources: one
            // source sweeping a prefix is a scan (the scan detector's), not
            // a flood, as for a single host (`FLOOD_SOURCES`).
            let spread = agg.hosts[i] >= PREFIX_HOSTS
                && agg.top[i] * 2 < agg.sum[i]
                && agg.sources.estimate() >= FLOOD_SOURCES;
            let unanswered = match i {
                0 => true,
                1 => !answered(agg.udp_out, agg.sum[1]),
                _ => !answered(agg.icmp_out, agg.sum[2]),
            };
            let over = v >= line && v > 0.0 && spread && unanswered;
            let window_mask = if tuning.window >= 32 { u32::MAX } else { (1u32 << tuning.window) - 1 };
            st.over[i] = (st.over[i].checked_shl(shift).unwrap_or(0) | u32::from(over)) & window_mask;
            let key = EpisodeKey { kind, src: PREFIX_MARK, dst: p };
            let open = self.episodes.is_open(&key);
            let persistent = st.over[i].count_ones() >= tuning.persistence;
            let immediate = over && v >= EXTREME * line;
            let trigger = tuning.enabled && sp.enabled && over && (persistent || immediate);
            if trigger || (open && over) {
                fired[i] = true;
                if cfg.allowed(&p, kind) {
                    self.allowlisted += 1;
                } else {
                    let obs = prefix_observation(
                        i,
                        p,
                        agg,
                        v,
                        line,
                        trusted.then(|| {
                            let (mean, sd) = base.reported();
                            Baseline { mean: round2(mean), stddev: round2(sd), samples: base.samples }
                        }),
                        t,
                        cfg,
                        st,
                        over,
                        persistent,
                    );
                    self.episodes.observe(key, t, &obs, out);
                }
            }
            if !open && !trigger && !explained[i] {
                st.base[i].learn(v.min(line), self.alphas);
            }
        }
        st.last = idx;
        fired
    }

    /// Drops the least recently seen eighth of the table (ties by address).
    fn forget_oldest(&mut self, cap: usize) {
        let mut by_age: Vec<(u64, Addr)> = self.hosts.iter().map(|(a, h)| (h.last, *a)).collect();
        by_age.sort_unstable();
        let drop = (cap / 8).max(1).min(by_age.len());
        for (_, a) in by_age.into_iter().take(drop) {
            self.hosts.remove(&a);
            self.forgotten += 1;
        }
    }

    /// The learned state, in a stable order, for saving.
    pub fn snapshot(&self, interval_ns: u64) -> SpikeState {
        let mut hosts: Vec<(Addr, &HostBaseline)> = self.hosts.iter().map(|(a, h)| (*a, h)).collect();
        hosts.sort_by_key(|(a, _)| *a);
        SpikeState {
            version: STATE_VERSION,
            interval_ns,
            hosts: hosts.into_iter().map(|(a, h)| (a.to_string(), h.clone())).collect(),
            saved_at: self.latest,
        }
    }

    /// Loads saved state; returns how many hosts were restored.
    pub fn restore(&mut self, st: SpikeState, max_hosts: usize) -> usize {
        let newest = st.hosts.iter().map(|(_, h)| h.last).max().unwrap_or(0);
        self.resume_from = Some(if st.saved_at > 0 { st.saved_at } else { newest });
        let mut n = 0;
        for (a, h) in st.hosts.into_iter().take(max_hosts) {
            if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                self.hosts.insert(Addr::from(ip), h);
                n += 1;
            }
        }
        n
    }
}

/// File of the learned baselines inside `--state-dir`.
pub const BASELINES_FILE: &str = "baselines.json";

impl Family for SpikeDetector {
    type Shard = ();

    fn new(cfg: &DetectConfig) -> SpikeDetector {
        SpikeDetector::new(cfg)
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) {}

    fn judge(&mut self, _: &mut (), cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        if cx.cfg.spike.enabled {
            self.on_interval(cx.hosts, cx.t, cx.cfg, out);
        }
        cx.facts.flood_targets = self
            .episodes
            .keys()
            .filter(|k| k.src == Addr::UNSPECIFIED && FLOOD_KINDS.contains(&k.kind))
            .map(|k| k.dst)
            .collect();
        cx.facts.flood_targets.sort_unstable();
        cx.facts.flood_targets.dedup();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        SpikeDetector::reconfigure(self, cfg);
    }

    fn state_file(&self, _: &DetectConfig) -> Option<&'static str> {
        Some(BASELINES_FILE)
    }

    fn save_state(&self, cfg: &DetectConfig) -> Option<Vec<u8>> {
        serde_json::to_vec(&self.snapshot(cfg.interval_ns)).ok()
    }

    fn load_state(&mut self, text: &str, cfg: &DetectConfig) -> Restored {
        match serde_json::from_str::<SpikeState>(text) {
            Ok(st) if st.version != STATE_VERSION => {
                Restored::Bad(format!("schema version {} (this build reads {STATE_VERSION})", st.version))
            }
            Ok(st) if st.interval_ns != cfg.interval_ns => Restored::Bad(format!(
                "learned at a {} ms interval (now {} ms)",
                st.interval_ns / 1_000_000,
                cfg.interval_ns / 1_000_000
            )),
            Ok(st) => Restored::Loaded(self.restore(st, cfg.spike.max_hosts)),
            Err(e) => Restored::Bad(format!("corrupt ({e})")),
        }
    }
}

fn warmup_intervals(cfg: &DetectConfig) -> u64 {
    let secs = cfg.interval_ns.max(1) as f64 / 1e9;
    (cfg.spike.warmup as f64 / secs).ceil() as u64
}

/// Brings baselines last updated at interval `last` up to `idx` (quiet
/// intervals between decay them) and returns the shift for the
/// over-the-line bit windows and whether warm-up (from `first`) is done.
fn catch_up(
    base: &mut [MetricBaseline],
    first: u64,
    last: u64,
    idx: u64,
    alphas: (f64, f64),
    warm_after: u64,
) -> (u32, bool) {
    let gap = idx.saturating_sub(last);
    if gap > 1 {
        for b in base.iter_mut() {
            b.idle(gap - 1, alphas);
        }
    }
    (gap.clamp(1, 32) as u32, idx.saturating_sub(first) >= warm_after)
}

fn tuning_for(cfg: &DetectConfig, kind: AnomalyKind, group: Option<usize>) -> Tuning {
    let sp = &cfg.spike;
    let mut t = match kind {
        AnomalyKind::SynFlood => sp.syn_flood,
        AnomalyKind::UdpFlood => sp.udp_flood,
        AnomalyKind::IcmpFlood => sp.icmp_flood,
        AnomalyKind::Amplification => sp.amplification,
        AnomalyKind::VolumeSpike => sp.volume_spike,
        AnomalyKind::ConnectionFlood => sp.connection_flood,
        _ => sp.fanout_spike,
    };
    if let Some((_, g)) = group.and_then(|i| cfg.hostgroups.get(i)) {
        let o = match kind {
            AnomalyKind::SynFlood => g.syn_flood,
            AnomalyKind::UdpFlood => g.udp_flood,
            AnomalyKind::IcmpFlood => g.icmp_flood,
            AnomalyKind::Amplification => g.amplification,
            AnomalyKind::VolumeSpike => g.volume_spike,
            AnomalyKind::ConnectionFlood => g.connection_flood,
            _ => g.fanout_spike,
        };
        if let Some(o) = o {
            t.floor = o.floor.unwrap_or(t.floor);
            t.ceiling = o.ceiling.unwrap_or(t.ceiling).max(t.floor);
        }
    }
    t
}

/// The seven metric values of one host in one interval.
pub fn metric_values(h: &HostCounters) -> [f64; METRICS] {
    [
        h.syn_in.saturating_sub(h.handshakes_in) as f64,
        h.udp_in as f64,
        h.icmp_in as f64,
        h.amp_bytes_in as f64,
        h.bytes_in as f64,
        h.bytes_out as f64,
        h.peers_out.estimate() as f64,
        h.handshakes_in as f64,
    ]
}

/// The flood kinds, in [`SPECS`] order (indices 0..4).
const FLOOD_KINDS: [AnomalyKind; 4] =
    [AnomalyKind::SynFlood, AnomalyKind::UdpFlood, AnomalyKind::IcmpFlood, AnomalyKind::Amplification];

/// One metric's verdict for one host and interval.
#[derive(Clone, Debug)]
struct Decision {
    v: f64,
    line: f64,
    over: bool,
    onset: Timestamp,
    opened_by: OpenedBy,
    trigger: bool,
    report: bool,
    open: bool,
    key: EpisodeKey,
    /// The baseline is warm: events report it.
    trusted: bool,
}

/// What opened (or would open) an episode, put in words only when reported.
#[derive(Clone, Copy, Debug)]
enum OpenedBy {
    /// Over the line in this many of the last so many intervals.
    Persistence(u32, u32),
    /// A shape that opens at once, in words.
    Shape(&'static str),
}

impl OpenedBy {
    fn words(self) -> String {
        match self {
            OpenedBy::Persistence(n, w) => format!("over the line in {n} of the last {w} intervals"),
            OpenedBy::Shape(why) => why.to_string(),
        }
    }
}

impl Default for Decision {
    fn default() -> Self {
        Decision {
            v: 0.0,
            line: 0.0,
            over: false,
            onset: Timestamp::ZERO,
            opened_by: OpenedBy::Shape(""),
            trigger: false,
            report: false,
            open: false,
            key: EpisodeKey {
                kind: AnomalyKind::VolumeSpike,
                src: Addr::UNSPECIFIED,
                dst: Addr::UNSPECIFIED,
            },
            trusted: false,
        }
    }
}

/// True for destinations every host on the link must process: the IPv4
/// limited broadcast and IPv6 all-nodes. Floods there are storms at any rate
/// above the floor (smurf, broadcast and DHCP storms).
fn all_hosts(a: &Addr) -> bool {
    match a.ip() {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] == 0xff01 || s[0] == 0xff02) && s[1..7] == [0; 6] && s[7] == 1
        }
    }
}

struct Shape {
    /// The detector applies at all (e.g. not a scan, not reflection).
    eligible: bool,
    /// Open without waiting for persistence.
    immediate: bool,
    /// Why it opens at once, in words (when `immediate`).
    why: &'static str,
}

const STORM_WHY: &str = "a storm toward an address every host must process, above the floor";
const EXTREME_WHY: &str = "ten times over the line and unanswered";

fn answered(out: u64, inn: u64) -> bool {
    out as f64 > ANSWERED_MAX * inn as f64
}

fn shape_of(
    i: usize,
    host: &Addr,
    h: &HostCounters,
    v: f64,
    floor: f64,
    line: f64,
    flood_open: bool,
) -> Shape {
    let sources = h.peers_in.estimate();
    let above_floor = v >= floor && v > 0.0;
    let storm = above_floor && all_hosts(host);
    match SPECS[i].kind {
        AnomalyKind::SynFlood => Shape {
            // Many ports from few sources is a port scan (the scan detector's job).
            eligible: h.ports_in.estimate() <= SCAN_PORTS || sources >= FLOOD_SOURCES,
            // A burst ten times over the line is over before persistence
            // counts (hping3 sends thousands in a fraction of a second);
            // these SYNs never completed, so it is unanswered by definition.
            immediate: above_floor && (sources >= FLOOD_SOURCES || v >= EXTREME * line),
            why: if sources >= FLOOD_SOURCES {
                "a storm: above the floor from 32 or more sources at once"
            } else {
                "a burst ten times over the line, never completed"
            },
        },
        AnomalyKind::ConnectionFlood => Shape {
            eligible: true,
            immediate: above_floor && v >= EXTREME * line,
            why: "ten times over the line",
        },
        AnomalyKind::UdpFlood => {
            let unanswered = !answered(h.udp_out, h.udp_in);
            let spread = above_floor && (sources >= FLOOD_SOURCES || h.flows_in >= FLOOD_FLOWS);
            Shape {
                // Mostly reflector traffic is typed as amplification instead.
                eligible: h.amp_pkts_in * 2 < h.udp_in,
                immediate: storm || (unanswered && (spread || v >= EXTREME * line)),
                why: if storm {
                    STORM_WHY
                } else if spread {
                    "a storm: above the floor from 32 or more sources or over 100 new flows, unanswered"
                } else {
                    EXTREME_WHY
                },
            }
        }
        AnomalyKind::IcmpFlood => {
            let spread = above_floor && sources >= FLOOD_SOURCES;
            Shape {
                eligible: true,
                immediate: storm || spread || (v >= EXTREME * line && !answered(h.icmp_out, h.icmp_in)),
                why: if storm {
                    STORM_WHY
                } else if spread {
                    "a storm: above the floor from 32 or more sources at once"
                } else {
                    EXTREME_WHY
                },
            }
        }
        AnomalyKind::Amplification => Shape {
            eligible: true,
            immediate: above_floor && h.amp_sources.estimate() >= AMP_REFLECTORS,
            why: "unsolicited responses from 3 or more reflectors above the floor",
        },
        // Inbound volume during a flood is the flood: one episode, typed.
        AnomalyKind::VolumeSpike if !SPECS[i].actor => {
            Shape { eligible: !flood_open, immediate: false, why: "" }
        }
        _ => Shape { eligible: true, immediate: false, why: "" },
    }
}

/// The peers with a guaranteed share, each with the packets it certainly sent
/// (Space-Saving's lower bound): spoofed one-packet sources list nobody.
fn peers_json(top: &crate::base::TopK) -> Value {
    Value::Array(
        top.heavy().into_iter().map(|h| json!({"ip": h.addr.to_string(), "packets": h.lower})).collect(),
    )
}

#[allow(clippy::too_many_arguments)]
fn observation(
    i: usize,
    host: Addr,
    h: &HostCounters,
    v: f64,
    line: f64,
    baseline: Option<Baseline>,
    t: Timestamp,
    age: u64,
    interval_s: f64,
) -> SpikeObs {
    let spec = &SPECS[i];
    let mut ev = Map::new();
    let sources = h.peers_in.count();
    let (top, total) = if spec.actor { (&h.top_dst, h.pkts_out) } else { (&h.top_src, h.pkts_in) };
    // "Mostly from X" only on a guaranteed majority.
    let dominant = top.heavy().first().filter(|p| u64::from(p.lower) * 2 > total).map(|p| p.addr);
    if spec.actor {
        ev.insert("top_destinations".into(), peers_json(&h.top_dst));
        put_count(&mut ev, "distinct_destinations", h.peers_out.count());
        put_count(&mut ev, "distinct_dst_ports", h.ports_out.count());
        ev.insert("packets_out".into(), json!(h.pkts_out));
    } else {
        ev.insert("top_sources".into(), peers_json(&h.top_src));
        put_count(&mut ev, "distinct_sources", sources);
        put_count(&mut ev, "distinct_dst_ports", h.ports_in.count());
        ev.insert("new_flows_in".into(), json!(h.flows_in));
        ev.insert(
            "protocol_mix_in".into(),
            json!({"tcp": h.tcp_in, "udp": h.udp_in, "icmp": h.icmp_in, "other": h.other_in}),
        );
    }
    ev.insert("host_age_intervals".into(), json!(age));
    let who = |n: crate::base::sketch::Count| -> String {
        match dominant {
            Some(d) => format!("mostly from {d}"),
            None if n.value == 1 => "from 1 source".into(),
            None => format!("from {} sources, none of them the majority", n.words()),
        }
    };
    let what = match spec.kind {
        AnomalyKind::SynFlood => {
            ev.insert("syn_in".into(), json!(h.syn_in));
            ev.insert("handshakes_completed".into(), json!(h.handshakes_in));
            format!(
                "SYN flood: {host} receives {v:.0} connection attempts/s that never complete ({} SYNs, {} handshakes) {}",
                h.syn_in,
                h.handshakes_in,
                who(sources)
            )
        }
        AnomalyKind::UdpFlood => {
            ev.insert("udp_out".into(), json!(h.udp_out));
            format!(
                "UDP flood: {host} receives {v:.0} UDP packets/s over {} new flows {}, and answers {}",
                h.flows_in,
                who(sources),
                h.udp_out
            )
        }
        AnomalyKind::IcmpFlood => {
            ev.insert("icmp_out".into(), json!(h.icmp_out));
            format!(
                "ICMP flood: {host} receives {v:.0} ICMP packets/s {}, and answers {}",
                who(sources),
                h.icmp_out
            )
        }
        AnomalyKind::Amplification => {
            let refl = h.amp_sources.count();
            put_count(&mut ev, "reflectors", refl);
            ev.insert("unsolicited_packets".into(), json!(h.amp_pkts_in));
            format!(
                "Reflection/amplification: {host} receives {} of responses it never asked for (UDP from amplifier ports, fragments, or SYN-ACKs to no SYN) from {} reflectors",
                human(v, "bytes/s"),
                refl.words()
            )
        }
        AnomalyKind::VolumeSpike if spec.actor => {
            format!("Volume spike: {host} sends {} (exfiltration or a DDoS source?)", human(v, "bytes/s"))
        }
        AnomalyKind::VolumeSpike => {
            format!("Volume spike: {host} receives {} {}", human(v, "bytes/s"), who(sources))
        }
        AnomalyKind::ConnectionFlood => {
            ev.insert("syn_in".into(), json!(h.syn_in));
            ev.insert("handshakes_completed".into(), json!(h.handshakes_in));
            format!(
                "Connection flood: {host} receives {v:.0} TCP connections/s that complete their handshake {} (a SYN-flood line never sees these: bots that connect and abandon, HTTP floods)",
                who(sources)
            )
        }
        _ => format!(
            "Fan-out spike: {host} talks to {v:.0} distinct peers in one second (worm, scanner or compromised host?)"
        ),
    };
    // A burst shorter than the interval: say how short, so a per-interval
    // count is not read as the burst's rate.
    let mut what = what;
    if !spec.actor && !h.span_in.is_empty() {
        let secs = h.span_in.secs();
        ev.insert("active_seconds".into(), json!((secs * 1000.0).round() / 1000.0));
        if secs < 0.9 * interval_s {
            let n = h.pkts_in;
            if secs >= 0.01 {
                what.push_str(&format!(
                    "; its {n} packets arrived within {secs:.2} s (about {:.0} packets/s while it lasted)",
                    n as f64 / secs
                ));
            } else {
                what.push_str(&format!("; its {n} packets arrived within {:.0} ms", secs * 1000.0));
            }
        }
    }
    SpikeObs {
        ts: t,
        host,
        value: v,
        threshold: line,
        baseline,
        dominant,
        evidence: ev,
        spec: i,
        what,
        over: false,
        onset: t,
        opened_by: String::new(),
        span: if spec.actor { Span::default() } else { h.span_in },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::time::NANOS_PER_SEC;
    use crate::config::Config;

    const X: Addr = Addr([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 5]);

    fn cfg() -> DetectConfig {
        DetectConfig::from_config(&Config::default())
    }

    /// A state saved before `connection_flood` (seven metrics) still loads.
    #[test]
    fn states_with_fewer_metrics_load() {
        let hb = HostBaseline { first: 3, last: 9, ..HostBaseline::default() };
        let mut v = serde_json::to_value(&hb).unwrap();
        v["base"].as_array_mut().unwrap().pop();
        let back: HostBaseline = serde_json::from_value(v).unwrap();
        assert_eq!(back, hb);
        let mut v = serde_json::to_value(&hb).unwrap();
        v["base"].as_array_mut().unwrap().push(serde_json::to_value(MetricBaseline::default()).unwrap());
        assert!(serde_json::from_value::<HostBaseline>(v).is_err(), "more metrics than this build knows");
    }

    fn udp_host(pps: u64) -> HostCounters {
        HostCounters {
            pkts_in: pps,
            pkts_out: pps,
            udp_in: pps,
            udp_out: pps, // answered: a conversation, not a storm
            bytes_in: pps * 200,
            bytes_out: pps * 200,
            ..HostCounters::default()
        }
    }

    /// Runs intervals 1..=n with `f(i)` as host X's counters; returns events.
    fn run(
        det: &mut SpikeDetector,
        cfg: &DetectConfig,
        from: u64,
        to: u64,
        f: impl Fn(u64) -> HostCounters,
    ) -> Vec<Anomaly> {
        let mut out = Vec::new();
        for i in from..=to {
            let mut iv = HostInterval::default();
            iv.hosts.insert(X, f(i));
            let t = Timestamp(i * NANOS_PER_SEC);
            det.on_interval(&iv, t, cfg, &mut out);
            Family::tick(det, t, false, &mut out);
        }
        out
    }

    fn normal(i: u64) -> HostCounters {
        udp_host(100 + (i * 7919 % 41)) // 100..140 pps, deterministic jitter
    }

    #[test]
    fn learned_baseline_flags_a_sustained_rise_once_and_is_not_poisoned() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        assert!(run(&mut det, &cfg, 1, 600, normal).is_empty(), "normal traffic is quiet");
        // A single 8x interval is a burst, not a flood (answered, persistence 3/5).
        assert!(run(&mut det, &cfg, 601, 601, |_| udp_host(1_000)).is_empty());
        assert!(run(&mut det, &cfg, 602, 610, normal).is_empty());
        // Sustained: opens on the third interval over the line, once.
        let ev = run(&mut det, &cfg, 611, 640, |_| udp_host(1_500));
        let starts: Vec<&Anomaly> = ev.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(starts.len(), 1, "{ev:#?}");
        assert_eq!(starts[0].kind, AnomalyKind::UdpFlood);
        assert_eq!(starts[0].ts, Timestamp(613 * NANOS_PER_SEC));
        let b = starts[0].baseline.expect("judged against its own baseline");
        assert!(b.mean > 90.0 && b.mean < 150.0, "{b:?}");
        assert_eq!(starts[0].threshold, 500.0, "the floor dominates a quiet host's line");
        // Back to normal: the episode ends after the cool-down (60 s), and
        // the baseline still describes normal traffic.
        let ev = run(&mut det, &cfg, 641, 720, normal);
        assert_eq!(ev.iter().filter(|e| e.phase == Phase::End).count(), 1);
        let hb = &det.hosts[&X];
        assert!(hb.base[1].slow.mean < 150.0, "baseline poisoned: {:?}", hb.base[1]);
    }

    /// 200 hosts of 10.0.5.0/24, each hit by 30 unanswered UDP packets from
    /// a source of its own.
    fn carpet(iv: &mut HostInterval) {
        for h in 1..=200u8 {
            let mut c = HostCounters { udp_in: 30, pkts_in: 30, flows_in: 30, ..HostCounters::default() };
            c.peers_in.insert_addr(&Addr::v4([198, 51, 100, h]));
            iv.hosts.insert(Addr::v4([10, 0, 5, h]), c);
        }
    }

    /// Judges `iv` as interval `i` and ticks the episodes.
    fn judge(det: &mut SpikeDetector, cfg: &DetectConfig, i: u64, iv: &HostInterval, out: &mut Vec<Anomaly>) {
        let t = Timestamp(i * NANOS_PER_SEC);
        det.on_interval(iv, t, cfg, out);
        Family::tick(det, t, false, out);
    }

    /// 200 hosts of one /24 each get 30 unanswered UDP packets/s (under any
    /// host line); the prefix gets 6,000, three times the ceiling.
    #[test]
    fn a_carpet_over_one_prefix_is_one_episode_for_the_prefix() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        let mut out = Vec::new();
        for i in 1..=6u64 {
            let mut iv = HostInterval::default();
            carpet(&mut iv);
            // One ordinary host elsewhere.
            iv.hosts.insert(X, udp_host(100));
            judge(&mut det, &cfg, i, &iv, &mut out);
        }
        let starts: Vec<&Anomaly> = out.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(starts.len(), 1, "{starts:#?}");
        let e = starts[0];
        assert_eq!((e.kind, e.dst), (AnomalyKind::UdpFlood, Some(Addr::v4([10, 0, 5, 0]))));
        assert_eq!(e.evidence["prefix"], "10.0.5.0/24");
        assert_eq!(e.evidence["hosts_hit"], 200);
        assert_eq!(e.observed, 6000.0);
    }

    /// One source sweeping a /24 with 1,000 SYNs/s (4 to each host): a scan,
    /// not a flood of the prefix.
    #[test]
    fn one_source_sweeping_a_prefix_is_not_a_prefix_flood() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        let mut out = Vec::new();
        for i in 1..=6u64 {
            let mut iv = HostInterval::default();
            for h in 1..=254u8 {
                let mut c =
                    HostCounters { syn_in: 4, tcp_in: 4, pkts_in: 4, flows_in: 4, ..HostCounters::default() };
                c.peers_in.insert_addr(&Addr::v4([203, 0, 113, 9]));
                iv.hosts.insert(Addr::v4([10, 0, 5, h]), c);
            }
            let t = Timestamp(i * NANOS_PER_SEC);
            det.on_interval(&iv, t, &cfg, &mut out);
            Family::tick(&mut det, t, false, &mut out);
        }
        assert!(out.iter().all(|e| e.kind != AnomalyKind::SynFlood), "{out:#?}");
    }

    /// Random destinations all over: no prefix holds 16 of them; the link does.
    #[test]
    fn random_destinations_everywhere_are_a_link_episode() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        let mut out = Vec::new();
        for i in 1..=6u64 {
            let mut iv = HostInterval::default();
            for h in 0..300u32 {
                let mut c = HostCounters { udp_in: 20, pkts_in: 20, flows_in: 20, ..HostCounters::default() };
                let b = h.to_be_bytes();
                c.peers_in.insert_addr(&Addr::v4([198, 51, b[2], b[3]]));
                iv.hosts.insert(Addr::v4([11, b[2], b[3], 7]), c);
            }
            let t = Timestamp(i * NANOS_PER_SEC);
            det.on_interval(&iv, t, &cfg, &mut out);
            Family::tick(&mut det, t, false, &mut out);
        }
        let starts: Vec<&Anomaly> = out.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(starts.len(), 1, "{starts:#?}");
        assert_eq!((starts[0].kind, starts[0].dst), (AnomalyKind::UdpFlood, None));
        assert_eq!(starts[0].evidence["prefix"], "the link");
    }

    /// While a prefix episode reports the link's share, the link's baseline
    /// does not learn the zero it is handed in its place.
    #[test]
    fn a_prefix_flood_does_not_teach_the_link_zero() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        let mut out = Vec::new();
        let mut step = |det: &mut SpikeDetector, i: u64, flood: bool| {
            let mut iv = HostInterval::default();
            for h in 0..50u8 {
                let c = HostCounters { udp_in: 20, pkts_in: 20, flows_in: 1, ..HostCounters::default() };
                iv.hosts.insert(Addr::v4([10, 1, h, 7]), c);
            }
            if flood {
                carpet(&mut iv);
            }
            judge(det, &cfg, i, &iv, &mut out);
        };
        for i in 1..=400 {
            step(&mut det, i, false);
        }
        let before = det.prefixes[&LINK].base[1].fast.mean;
        for i in 401..=500 {
            step(&mut det, i, true);
        }
        let after = det.prefixes[&LINK].base[1].fast.mean;
        assert!(out.iter().any(|e| e.kind == AnomalyKind::UdpFlood && e.dst.is_some()), "{out:#?}");
        assert!(before > 500.0 && after > before * 0.9, "link baseline {before} -> {after}");
    }

    #[test]
    fn prefixes_of_ipv6_loopback_are_not_the_link() {
        assert_ne!(prefix_of(&Addr::from("::1".parse::<std::net::IpAddr>().unwrap())), LINK);
        assert_ne!(prefix_of(&Addr::v4([10, 0, 0, 1])), LINK);
    }

    #[test]
    fn warm_up_uses_the_ceiling() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        // 1,500 pps answered UDP from a new host: under the 2,000 ceiling.
        assert!(run(&mut det, &cfg, 1, 10, |_| udp_host(1_500)).is_empty());
        let ev = run(&mut det, &cfg, 11, 15, |_| udp_host(2_500));
        assert_eq!(ev.iter().filter(|e| e.phase == Phase::Start).count(), 1);
        assert!(ev[0].baseline.is_none(), "warm-up: no baseline claimed");
    }

    #[test]
    fn storm_shape_opens_at_once_and_allowlist_suppresses() {
        let storm = |_| HostCounters { udp_in: 900, pkts_in: 900, flows_in: 900, ..HostCounters::default() };
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        let ev = run(&mut det, &cfg, 1, 1, storm);
        assert_eq!(ev.len(), 1, "hundreds of unanswered new flows need no persistence");
        let mut allowed = cfg.clone();
        allowed.allow.push((crate::base::Cidr::parse("10.0.0.0/24").unwrap(), vec![AnomalyKind::UdpFlood]));
        let mut det = SpikeDetector::new(&allowed);
        assert!(run(&mut det, &allowed, 1, 5, storm).is_empty());
        assert!(det.allowlisted > 0);
    }

    #[test]
    fn saved_state_from_another_interval_or_corrupt_is_refused() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        run(&mut det, &cfg, 1, 5, normal);
        let bytes = det.save_state(&cfg).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut fresh = SpikeDetector::new(&cfg);
        assert_eq!(fresh.load_state(&text, &cfg), Restored::Loaded(1));
        let other = DetectConfig { interval_ns: cfg.interval_ns / 2, ..cfg.clone() };
        assert!(matches!(fresh.load_state(&text, &other), Restored::Bad(e) if e.contains("interval")));
        assert!(matches!(fresh.load_state("{not json", &cfg), Restored::Bad(e) if e.contains("corrupt")));
    }

    /// Regression (issue 15, learning that lasts): a baseline restored after
    /// a night of downtime is the baseline that was saved, not one decayed by
    /// every interval of the gap.
    #[test]
    fn downtime_between_save_and_restart_is_not_silence() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        run(&mut det, &cfg, 1, 900, normal);
        let saved = det.hosts[&X].base[1].slow.mean;
        let text = String::from_utf8(det.save_state(&cfg).unwrap()).unwrap();
        let mut fresh = SpikeDetector::new(&cfg);
        assert_eq!(fresh.load_state(&text, &cfg), Restored::Loaded(1));
        // Ten hours later the host speaks again, at its usual rate.
        let later = 900 + 36_000;
        run(&mut fresh, &cfg, later, later, normal);
        let mean = fresh.hosts[&X].base[1].slow.mean;
        assert!(mean > saved * 0.9, "baseline decayed over the downtime: {saved} -> {mean}");
        // Silence while the sensor runs still decays, as it should.
        let mut running = det;
        run(&mut running, &cfg, later, later, normal);
        assert!(running.hosts[&X].base[1].slow.mean < saved * 0.5);
    }

    #[test]
    fn state_round_trips() {
        let cfg = cfg();
        let mut det = SpikeDetector::new(&cfg);
        run(&mut det, &cfg, 1, 50, normal);
        let snap = det.snapshot(cfg.interval_ns);
        let text = serde_json::to_string(&snap).unwrap();
        let back: SpikeState = serde_json::from_str(&text).unwrap();
        let mut fresh = SpikeDetector::new(&cfg);
        assert_eq!(fresh.restore(back, 100), 1);
        assert_eq!(fresh.hosts[&X].base, det.hosts[&X].base);
    }
}
