//! Beaconing family: one host checking in with one service at a regular
//! period, as implants do with their command server.
//!
//! A *check-in* is a connection a local host opens (a SYN, or a new UDP
//! flow), or, inside a connection it opened and kept alive, a packet with
//! payload after at least `burst_gap` of silence: implants that hold one
//! TLS session open and send a heartbeat every few seconds show up as
//! bursts, not as connections. Check-ins closer than `burst_gap` are one
//! (a browser opening six connections at once checks in once).
//!
//! Per (source, destination, port, protocol) the host stage keeps the gaps
//! between the latest check-ins in a small ring and scores them as RITA
//! scores Zeek's connection logs, online:
//!
//! - dispersion: 1 − MAD/median of the gaps (a sleep with ±20 % jitter
//!   keeps 0.9; Poisson arrivals, MAD/median ≈ 0.69, fall to about 0.3);
//! - symmetry: 1 − |Bowley skew| of the gaps (Poisson: about 0.74);
//!
//! and the score weighs dispersion two to one; at `score` (0.75) and above, with enough
//! check-ins, it is a beacon. What is periodic and benign has another
//! shape: a poller (monitoring, backup, configuration management) contacts
//! *many* destinations on the same port with the same period; a shared
//! service (updates, telemetry, NTP, resolvers) is polled by *many* local
//! sources. Both are set aside, and periodic-by-design ports are skipped.

use hashbrown::HashMap;
use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, EpisodePolicy, Episodes};
use super::family::{Context, Family, HostSignals, SIG_REGULAR, Signal};
use super::history::{Memory, Recent, Used};
use super::rules::{RuleEpisode, RuleObs};
use crate::base::Addr;
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::config::BeaconConfig;
use crate::decode::{PacketMeta, ip_proto, tcp_flags};
use crate::track::{FlowView, Observer, ShardConfig, is_unicast};

/// Check-ins a shard reports per interval; past it they are counted, not kept.
const MAX_CHECKINS: usize = 16_384;
/// Gaps remembered per pair: enough for a median and quartiles that one
/// missed check-in cannot move, small enough for 65,536 pairs.
const RING: usize = 32;
/// A pair is new to its host when it began this long (ns) after the host's
/// first check-in: the first two minutes are the host's history (the
/// exfiltration and lateral-movement families learn as long by default).
const NEW_PAIR_AFTER: u64 = 120 * NANOS_PER_SEC;
/// An episode ends this long (ns) after the last check-in at the earliest:
/// a beacon has stopped only when several periods passed without one.
const BEACON_COOLDOWN: u64 = 3600 * NANOS_PER_SEC;

/// One check-in, as a shard saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CheckIn {
    /// When (packet time).
    pub ts: Timestamp,
    /// The local host checking in.
    pub src: Addr,
    /// The service it checks in with.
    pub dst: Addr,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Payload bytes of the packet that began it (0 for a bare SYN).
    pub size: u32,
}

/// The shard half: notes check-ins of local hosts.
pub struct CheckInTable {
    gap: u64,
    skip: Vec<u16>,
    found: Vec<CheckIn>,
    spare: Option<Vec<CheckIn>>,
    overflow: u64,
}

impl Observer for CheckInTable {
    type Report = Vec<CheckIn>;

    fn packet(&mut self, _: &PacketMeta) {}

    #[inline]
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>) {
        let t = f.touch;
        // Cheapest tests first: most packets continue a busy conversation.
        if !(t.created || t.gap >= self.gap) || !f.from_orig() || !f.local.of(f.side) {
            return;
        }
        let starts = match m.proto {
            ip_proto::TCP if t.created => m.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN,
            ip_proto::TCP | ip_proto::UDP => m.payload_len > 0,
            _ => false,
        };
        if !starts || self.skip.contains(&m.dport) || !is_unicast(&m.dst) {
            return;
        }
        if self.found.len() >= MAX_CHECKINS {
            self.overflow += 1;
            return;
        }
        self.found.push(CheckIn {
            ts: m.ts,
            src: m.src,
            dst: m.dst,
            dport: m.dport,
            proto: m.proto,
            size: m.payload_len,
        });
    }

    fn close(&mut self, _: Timestamp) -> Vec<CheckIn> {
        let mut v = self.spare.take().unwrap_or_default();
        v.append(&mut self.found);
        v
    }

    fn recycle(&mut self, spare: Vec<CheckIn>) {
        self.spare = Some(spare);
    }

    fn overflow(&self) -> u64 {
        self.overflow
    }
}

/// (source, destination, port, protocol).
type PairKey = (Addr, Addr, u16, u8);

/// One pair's check-in history.
#[derive(Clone, Debug)]
struct Track {
    used: Used,
    /// Check-ins seen (bursts merged).
    count: u64,
    /// Connections or bursts folded into an earlier check-in (closer than `burst_gap`).
    merged: u64,
    /// Latest gaps in milliseconds, oldest first.
    gaps: Vec<u32>,
    /// Payload sizes of the latest check-ins that carried payload.
    sizes: Vec<u32>,
}

impl Recent for Track {
    fn used(&self) -> Used {
        self.used
    }
    fn shift(&mut self, ns: i64) {
        self.used.shift(ns);
    }
}

fn push_ring(v: &mut Vec<u32>, x: u32) {
    if v.len() >= RING {
        v.remove(0);
    }
    v.push(x);
}

/// Regularity of a series of gaps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Regularity {
    /// Median gap (the period).
    pub median: f64,
    /// Median absolute deviation from it (the jitter).
    pub mad: f64,
    /// Bowley's quartile skewness, −1..1.
    pub skew: f64,
    /// 0..1: dispersion (1 − MAD/median) weighted two to one over symmetry
    /// (1 − |skew|): how tightly the gaps sit around the period says more
    /// than their balance, which a few dozen samples estimate poorly.
    pub score: f64,
}

/// The regularity of `gaps` (any unit); `None` for fewer than three.
pub fn regularity(gaps: &[f64]) -> Option<Regularity> {
    if gaps.len() < 3 {
        return None;
    }
    let mut v = gaps.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        // Linear interpolation between order statistics.
        let x = p * (v.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x.fract());
        v[i] + (v[(i + 1).min(v.len() - 1)] - v[i]) * f
    };
    let (q1, median, q3) = (q(0.25), q(0.5), q(0.75));
    if median <= 0.0 {
        return None;
    }
    let mut dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let m = dev.len() / 2;
    let mad = if dev.len() % 2 == 1 { dev[m] } else { (dev[m - 1] + dev[m]) / 2.0 };
    // Bowley's skew, over a spread of at least a tenth of the period: a
    // timer whose gaps differ by milliseconds has no shape to speak of, and
    // its quartiles' ratio would swing to ±1 on noise.
    let skew = (q3 + q1 - 2.0 * median) / (q3 - q1).max(0.1 * median);
    let dispersion = 1.0 - (mad / median).min(1.0);
    let symmetry = 1.0 - skew.abs().min(1.0);
    Some(Regularity { median, mad, skew, score: (2.0 * dispersion + symmetry) / 3.0 })
}

/// The host-stage half.
pub struct BeaconDetector {
    pairs: Memory<PairKey, Track>,
    /// Local sources seen per (destination, port, protocol), up to `max_sources`.
    sources: Seen,
    /// Destinations seen per (source, port, protocol), up to 16 (poller test).
    fanout: Seen,
    /// Local hosts that checked in with anything (the network's size, for
    /// telling a service most hosts use from one a few use).
    active: Memory<Addr, Used>,
    episodes: Episodes<RuleEpisode>,
}

/// Most destinations remembered per (source, port) for the poller test.
const FANOUT: usize = 16;

fn policy(p: EpisodePolicy) -> EpisodePolicy {
    EpisodePolicy { cooldown: p.cooldown.max(BEACON_COOLDOWN), ..p }
}

/// (service or source, port, protocol) → the addresses seen with it.
type Seen = HashMap<(Addr, u16, u8), (Used, Vec<Addr>), foldhash::fast::FixedState>;

/// Notes `a` under `k` (at most `cap` addresses, `keys` keys); returns how many it holds.
fn note(map: &mut Seen, k: (Addr, u16, u8), a: Addr, cap: usize, keys: usize, t: Timestamp) -> usize {
    if !map.contains_key(&k) && map.len() >= keys {
        return 0;
    }
    let e = map.entry(k).or_insert_with(|| (Used::at(t), Vec::new()));
    e.0.touch(t);
    if !e.1.contains(&a) && e.1.len() < cap {
        e.1.push(a);
    }
    e.1.len()
}

impl BeaconDetector {
    /// No history.
    pub fn new(cfg: &DetectConfig) -> BeaconDetector {
        BeaconDetector {
            pairs: Memory::new(cfg.beacon.max_tracked),
            sources: HashMap::with_hasher(Default::default()),
            fanout: HashMap::with_hasher(Default::default()),
            active: Memory::new(cfg.beacon.max_tracked),
            episodes: Episodes::new(policy(cfg.episodes)),
        }
    }

    fn on_interval(
        &mut self,
        list: &mut [CheckIn],
        t: Timestamp,
        cfg: &DetectConfig,
        signals: &mut Vec<(Addr, HostSignals)>,
        out: &mut Vec<Anomaly>,
    ) {
        let b = &cfg.beacon;
        // Shards report in any order: fold in packet order.
        list.sort_unstable();
        let gap_ns = b.burst_gap.saturating_mul(NANOS_PER_SEC);
        let mut touched: Vec<PairKey> = Vec::new();
        for c in list.iter() {
            let key = (c.src, c.dst, c.dport, c.proto);
            self.active.entry(c.src, || Used::at(c.ts)).touch(c.ts);
            note(
                &mut self.sources,
                (c.dst, c.dport, c.proto),
                c.src,
                b.max_sources as usize,
                b.max_tracked,
                c.ts,
            );
            note(&mut self.fanout, (c.src, c.dport, c.proto), c.dst, FANOUT, b.max_tracked, c.ts);
            let tr = self.pairs.entry(key, || Track {
                used: Used::at(c.ts),
                count: 0,
                merged: 0,
                gaps: Vec::new(),
                sizes: Vec::new(),
            });
            if tr.count > 0 && c.ts.since(tr.used.last) < gap_ns {
                tr.merged += 1;
                tr.used.touch(c.ts);
                continue;
            }
            if tr.count > 0 {
                let ms = c.ts.since(tr.used.last) / 1_000_000;
                push_ring(&mut tr.gaps, u32::try_from(ms).unwrap_or(u32::MAX));
            }
            if c.size > 0 {
                push_ring(&mut tr.sizes, c.size);
            }
            tr.count += 1;
            tr.used.touch(c.ts);
            if tr.count >= u64::from(b.min_checkins_long) {
                touched.push(key);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            if let Some(sig) = self.new_regular_pair(&key, b) {
                signals.push((key.0, sig));
            }
            self.judge_pair(key, t, cfg, b, out);
        }
        if t.as_nanos() / NANOS_PER_SEC % 600 == 0 {
            // Sources and fan-out describe the last day; pairs are capped.
            let day = 86_400 * NANOS_PER_SEC;
            self.sources.retain(|_, (u, _)| t.since(u.last) < day);
            self.fanout.retain(|_, (u, _)| t.since(u.last) < day);
            self.pairs.expire(t, day);
            self.active.expire(t, day);
        }
    }

    fn stats(&self, key: &PairKey) -> Option<(Regularity, u64)> {
        let tr = self.pairs.get(key)?;
        if tr.merged > tr.count {
            // More connections inside bursts than bursts: continuous activity
            // (a brute-force run, a busy client) whose merged gaps only echo
            // the burst gap. An implant sleeps between check-ins.
            return None;
        }
        let gaps: Vec<f64> = tr.gaps.iter().map(|&g| f64::from(g) / 1e3).collect();
        regularity(&gaps).map(|r| (r, tr.count))
    }

    /// Local sources seen using the pair's service.
    fn sources_of(&self, &(_, dst, dport, proto): &PairKey) -> usize {
        self.sources.get(&(dst, dport, proto)).map_or(1, |e| e.1.len())
    }

    /// A shared service: used by `max_sources` local hosts, or by two or
    /// more that are half the hosts seen (a small office's only web server
    /// is everybody's, not an implant's).
    fn shared(&self, key: &PairKey, b: &BeaconConfig) -> bool {
        let sources = self.sources_of(key);
        sources >= b.max_sources as usize || (sources >= 2 && 2 * sources >= self.active.len())
    }

    /// A poller: other destinations on the same port, checked in with at
    /// about the same period (within 15 %). Their regularity is not
    /// required: one slow target must not turn a poller into an implant.
    fn poller(&self, &(src, dst, dport, proto): &PairKey, r: &Regularity, b: &BeaconConfig) -> bool {
        let peers = self.fanout.get(&(src, dport, proto)).map_or(&[][..], |e| &e.1[..]);
        let alike = peers
            .iter()
            .filter(|&&d| {
                d == dst
                    || self
                        .stats(&(src, d, dport, proto))
                        .is_some_and(|(o, _)| (o.median - r.median).abs() <= 0.15 * r.median)
            })
            .count();
        alike >= b.poller_peers as usize
    }

    /// The regularity of a pair new to its host, for the behaviour model:
    /// only a pair that began after the host's own history
    /// (`NEW_PAIR_AFTER` past its first check-in) and has checked in
    /// `min_checkins_long` times, at `min_period` or slower, with neither a
    /// shared service's nor a poller's shape. A routine the host kept
    /// before (a backup, a poll) is its history, whatever its regularity.
    fn new_regular_pair(&self, key: &PairKey, b: &BeaconConfig) -> Option<HostSignals> {
        let tr = self.pairs.get(key)?;
        let since = self.active.get(&key.0)?.first;
        if tr.used.first.since(since) < NEW_PAIR_AFTER || tr.count < u64::from(b.min_checkins_long) {
            return None;
        }
        let (r, count) = self.stats(key)?;
        if r.median < b.min_period as f64 || self.shared(key, b) || self.poller(key, &r, b) {
            return None;
        }
        Some(HostSignals::one(
            SIG_REGULAR,
            Signal { value: r.score, now: r.median, usual: r.mad, seconds: 0, peer: Some(key.1), count },
        ))
    }

    fn judge_pair(
        &mut self,
        key: PairKey,
        t: Timestamp,
        cfg: &DetectConfig,
        b: &BeaconConfig,
        out: &mut Vec<Anomaly>,
    ) {
        let (src, dst, dport, proto) = key;
        let Some((r, count)) = self.stats(&key) else { return };
        if r.median < b.min_period as f64 || r.score < b.score {
            return;
        }
        // A timer this tight (score 0.9: jitter within about ±10 %) is a
        // machine after half the check-ins a looser one needs.
        let base = if r.score >= 0.9 { b.min_checkins.div_ceil(2) } else { b.min_checkins };
        let required = ((b.long_span as f64 / r.median).ceil() as u64)
            .clamp(u64::from(b.min_checkins_long.min(base)), u64::from(base));
        if count < required {
            return;
        }
        let sources = self.sources_of(&key);
        if self.shared(&key, b)
            || cfg.allowed(&src, AnomalyKind::Beaconing)
            || cfg.allowed(&dst, AnomalyKind::Beaconing)
            || self.poller(&key, &r, b)
        {
            return;
        }
        let Some(tr) = self.pairs.get(&key) else { return };
        let mut sizes = tr.sizes.clone();
        sizes.sort_unstable();
        let size = sizes.get(sizes.len() / 2).copied();
        let proto_name = match proto {
            ip_proto::TCP => "TCP",
            ip_proto::UDP => "UDP",
            _ => "IP",
        };
        let mut ev = Map::new();
        ev.insert("period_seconds".into(), json!(round2(r.median)));
        ev.insert("jitter_seconds".into(), json!(round2(r.mad)));
        ev.insert("skew".into(), json!(round2(r.skew)));
        ev.insert("regularity".into(), json!(round2(r.score)));
        ev.insert("checkins".into(), json!(count));
        ev.insert("gaps_scored".into(), json!(tr.gaps.len()));
        ev.insert("merged_into_bursts".into(), json!(tr.merged));
        ev.insert("first_checkin".into(), json!(tr.used.first.to_string()));
        ev.insert("last_checkin".into(), json!(tr.used.last.to_string()));
        ev.insert("dst_port".into(), json!(dport));
        ev.insert("protocol".into(), json!(proto_name));
        ev.insert("payload_bytes_per_checkin".into(), json!(size));
        ev.insert("local_sources_of_destination".into(), json!(sources));
        let severity =
            if r.score >= 0.9 && count >= 2 * required { Severity::High } else { Severity::Medium };
        let message = format!(
            "{src} checked in with {dst}:{dport}/{proto_name} {count} times, every {:.1} s ± {:.1} s (regularity {:.2}){}: possible command-and-control beaconing",
            r.median,
            r.mad,
            r.score,
            if sources <= 1 { ", and no other local host uses that service" } else { "" },
        );
        let obs = RuleObs {
            ts: t,
            span: Span { first: tr.used.first, last: tr.used.last },
            window: tr.used.first,
            totals: vec![("checkins", count)],
            observed_total: None,
            observed: count as f64,
            threshold: required as f64,
            unit: "regular check-ins",
            severity,
            src: Some(src),
            dst: Some(dst),
            evidence: ev,
            message,
        };
        let first = tr.used.first;
        self.episodes.observe(EpisodeKey { kind: AnomalyKind::Beaconing, src, dst }, first, &obs, out);
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Family for BeaconDetector {
    type Shard = CheckInTable;

    fn new(cfg: &DetectConfig) -> BeaconDetector {
        BeaconDetector::new(cfg)
    }

    fn shard(cfg: &DetectConfig, _: &ShardConfig) -> CheckInTable {
        CheckInTable {
            gap: cfg.beacon.burst_gap.saturating_mul(NANOS_PER_SEC),
            skip: cfg.beacon.skip_ports.clone(),
            found: Vec::new(),
            spare: None,
            overflow: 0,
        }
    }

    fn judge(&mut self, report: &mut Vec<CheckIn>, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        if cx.cfg.beacon.enabled {
            self.on_interval(report, cx.t, cx.cfg, &mut cx.facts.behaviour, out);
        }
        report.clear();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.episodes.set_policy(policy(cfg.episodes));
        self.pairs.set_cap(cfg.beacon.max_tracked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so the test needs no crate.
    fn uniform(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn perfectly_periodic_scores_one() {
        let r = regularity(&[30.0; 20]).unwrap();
        assert_eq!((r.median, r.mad, r.skew, r.score), (30.0, 0.0, 0.0, 1.0));
    }

    #[test]
    fn jittered_sleeps_stay_regular() {
        let mut s = 0x9e37_79b9_7f4a_7c15;
        // sleep(10 s ± 20 %), uniform.
        let gaps: Vec<f64> = (0..31).map(|_| 8.0 + 4.0 * uniform(&mut s)).collect();
        let r = regularity(&gaps).unwrap();
        assert!((r.median - 10.0).abs() < 1.0, "{r:?}");
        assert!(r.score >= 0.85, "{r:?}");
    }

    #[test]
    fn poisson_arrivals_are_not_a_beacon() {
        let mut s = 12345;
        for _ in 0..20 {
            let gaps: Vec<f64> = (0..31).map(|_| -10.0 * (1.0 - uniform(&mut s)).ln()).collect();
            let r = regularity(&gaps).unwrap();
            assert!(r.score < 0.8, "{r:?}");
        }
    }

    #[test]
    fn one_missed_checkin_does_not_break_the_period() {
        let mut gaps = vec![60.0; 24];
        gaps[10] = 120.0;
        let r = regularity(&gaps).unwrap();
        assert_eq!(r.median, 60.0);
        assert!(r.score > 0.95, "{r:?}");
    }

    #[test]
    fn a_tight_timer_with_millisecond_noise_has_no_skew() {
        let mut gaps = vec![13.531; 15];
        gaps[3] = 13.602;
        gaps[9] = 13.498;
        gaps[12] = 13.9;
        let r = regularity(&gaps).unwrap();
        assert!(r.skew.abs() < 0.1 && r.score > 0.95, "{r:?}");
    }

    #[test]
    fn too_few_gaps_give_no_verdict() {
        assert!(regularity(&[5.0, 5.0]).is_none());
    }
}
