//! One machine, many addresses: one MAC opening flows from far more IP
//! source addresses than it usually does.
//!
//! A host has one address per family, a few with IPv6 privacy addresses;
//! a router forwards for many, but the flows its MAC *opens* are the ones
//! remote hosts start (responses ride on flows the local side opened), and
//! it opens them at its own steady rate. A box rotating its source address
//! (DHCP starvation that also rotates the client address, `hping3
//! --rand-source`, spoofed floods from one machine inside the site) opens a
//! flow per forged address, hundreds in seconds, from one MAC. The shard
//! half counts distinct source addresses of the flows each MAC opens per
//! interval (flows are created per address, so this costs one sketch insert
//! per new flow, nothing per packet); the host half sums them in tumbling
//! windows and opens an episode when a window holds at least `sources` and
//! more than `ratio` times the MAC's usual peak (a day-long decaying
//! maximum of its closed windows). A MAC's first window is learned, not
//! judged: the sensor cannot tell a router it has just met from a spoofer.

use hashbrown::HashMap;
use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, Episodes};
use super::evidence::put_count;
use super::family::{Context, Family};
use super::history::DecayingPeak;
use super::l2watch::mac_str;
use super::rules::{IntervalTable, RuleEpisode, RuleObs, merged_by_key};
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::base::{Addr, Distinct};
use crate::decode::PacketMeta;
use crate::track::{FlowView, Observer, ShardConfig};

/// MACs a shard reports per interval.
const MAX_KEYS: usize = 8_192;
/// MACs with a history kept at most.
const MAX_MACS: usize = 65_536;
/// Half-life of a MAC's usual peak.
const USUAL_HALF_LIFE_S: f64 = 86_400.0;
/// Addresses named in the evidence.
const SAMPLES: usize = 4;

/// Flows one MAC opened in one interval (or window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacAgg {
    /// Distinct source addresses (exact up to 64).
    pub sources: Distinct<64>,
    /// Flows opened.
    pub flows: u32,
    /// Packet times of the flows' first packets.
    pub span: Span,
    /// The numerically lowest source addresses (a choice that does not
    /// depend on how flows were spread over shards).
    pub sample: [Addr; SAMPLES],
    /// How many of `sample` are filled.
    pub sampled: u8,
}

impl MacAgg {
    #[inline]
    fn add_sample(&mut self, a: Addr) {
        let n = usize::from(self.sampled);
        // Kept sorted: a full sample only takes addresses below its highest.
        if (n == SAMPLES && a >= self.sample[SAMPLES - 1]) || self.sample[..n].contains(&a) {
            return;
        }
        if n < SAMPLES {
            self.sample[n] = a;
            self.sampled += 1;
        } else if let Some(max) = self.sample.iter_mut().max() {
            if a < *max {
                *max = a;
            }
        }
        let n = usize::from(self.sampled);
        self.sample[..n].sort_unstable();
    }

    fn merge(&mut self, o: &MacAgg) {
        self.sources.merge(&o.sources);
        self.flows += o.flows;
        self.span.merge(&o.span);
        for &a in &o.sample[..usize::from(o.sampled)] {
            self.add_sample(a);
        }
    }
}

/// A source MAC.
pub type Mac = [u8; 6];
/// One interval's flows by MAC.
pub type MacList = Vec<(Mac, MacAgg)>;

/// The shard half.
pub struct MacTable {
    table: IntervalTable<Mac, MacAgg>,
}

impl Observer for MacTable {
    type Report = MacList;

    fn packet(&mut self, _: &PacketMeta) {}

    #[inline]
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>) {
        // Unicast MACs only: a group MAC as a source is itself invalid.
        if !f.touch.created || m.src_mac == [0; 6] || m.src_mac[0] & 1 != 0 {
            return;
        }
        if let Some(a) = self.table.entry(m.src_mac) {
            a.sources.insert_addr(&m.src);
            a.flows += 1;
            a.span.add(m.ts);
            a.add_sample(m.src);
        }
    }

    fn close(&mut self, _: Timestamp) -> MacList {
        self.table.close()
    }

    fn recycle(&mut self, spare: MacList) {
        self.table.recycle(spare);
    }

    fn overflow(&self) -> u64 {
        self.table.overflow
    }
}

/// One MAC's window and history.
#[derive(Clone, Copy, Debug, Default)]
struct MacState {
    first_seen: Timestamp,
    start: Timestamp,
    agg: MacAgg,
    /// The window has been reported (its count is not learned).
    flagged: bool,
    usual: DecayingPeak,
}

/// A MAC as an episode key: the modified EUI-64 link-local address it
/// would form (unique per MAC; never shown as an address).
fn mac_key(m: &Mac) -> Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8..11].copy_from_slice(&[m[0] ^ 2, m[1], m[2]]);
    b[11] = 0xff;
    b[12] = 0xfe;
    b[13..16].copy_from_slice(&m[3..6]);
    Addr(b)
}

/// The host half.
pub struct MacChurn {
    macs: HashMap<Mac, MacState, foldhash::fast::FixedState>,
    episodes: Episodes<RuleEpisode>,
    idx: Vec<(Mac, u32)>,
    /// MACs not tracked because the table was full.
    pub forgotten: u64,
}

impl Family for MacChurn {
    type Shard = MacTable;

    fn new(cfg: &DetectConfig) -> MacChurn {
        MacChurn {
            macs: HashMap::with_hasher(Default::default()),
            episodes: Episodes::new(cfg.episodes),
            idx: Vec::new(),
            forgotten: 0,
        }
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) -> MacTable {
        MacTable { table: IntervalTable::new(MAX_KEYS) }
    }

    fn judge(&mut self, report: &mut MacList, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let (t, cfg) = (cx.t, cx.cfg);
        let c = &cfg.mac_churn;
        let window = c.window.saturating_mul(NANOS_PER_SEC);
        let mut idx = std::mem::take(&mut self.idx);
        for (mac, agg) in merged_by_key(report, &mut idx, MacAgg::merge) {
            if !self.macs.contains_key(&mac) && self.macs.len() >= MAX_MACS {
                self.forgotten += 1;
                continue;
            }
            let s = self.macs.entry(mac).or_insert_with(|| MacState {
                first_seen: agg.span.or_at(t).first,
                start: t,
                ..MacState::default()
            });
            if t.since(s.start) >= window {
                // A closed window teaches the usual, unless it was the anomaly.
                if !s.flagged {
                    let n = s.agg.sources.estimate() as f64;
                    s.usual.raise(t, n, USUAL_HALF_LIFE_S);
                }
                s.start = t;
                s.agg = MacAgg::default();
                s.flagged = false;
            }
            s.agg.merge(&agg);
            let learning = t.since(s.first_seen) < window;
            let count = s.agg.sources.count();
            let usual = s.usual.value(t, USUAL_HALF_LIFE_S);
            let line = f64::from(c.sources).max(c.ratio * usual);
            if learning || (count.value as f64) < line {
                continue;
            }
            s.flagged = true;
            let key =
                EpisodeKey { kind: AnomalyKind::OneMacManyIps, src: mac_key(&mac), dst: Addr::UNSPECIFIED };
            let sample = &s.agg.sample[..usize::from(s.agg.sampled)];
            if !c.enabled || sample.iter().any(|a| cfg.allowed(a, AnomalyKind::OneMacManyIps)) {
                continue;
            }
            let span = s.agg.span;
            let mut ev = Map::new();
            ev.insert("mac".into(), json!(mac_str(&mac)));
            put_count(&mut ev, "distinct_sources", count);
            ev.insert("flows_opened".into(), json!(s.agg.flows));
            ev.insert(
                "lowest_sources".into(),
                json!(sample.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            );
            ev.insert("usual_peak".into(), json!((usual * 10.0).round() / 10.0));
            ev.insert("window_seconds".into(), json!(c.window));
            let secs = span.secs().max(0.001);
            let obs = RuleObs {
                ts: t,
                span,
                window: s.start,
                totals: Vec::new(),
                observed_total: None,
                observed: count.value as f64,
                threshold: line,
                unit: "distinct source addresses",
                severity: if count.value >= 4 * u64::from(c.sources) {
                    Severity::High
                } else {
                    Severity::Medium
                },
                src: None,
                dst: None,
                evidence: ev,
                message: format!(
                    "MAC {} opened {} flows from {} distinct source addresses in {secs:.1} s (usually at most {usual:.0} per {} s; line {line:.0}): one machine rotating its address (IP spoofing, DHCP starvation) rather than one host",
                    mac_str(&mac),
                    s.agg.flows,
                    count.words(),
                    c.window,
                ),
            };
            self.episodes.observe(key, span.or_at(t).first, &obs, out);
        }
        self.idx = idx;
        report.clear();
    }

    crate::detect::family::episodes_tick!(reconfigure);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_the_lowest_whatever_the_order() {
        let addrs: Vec<Addr> = (1..=9u8).map(|i| Addr::v4([10, 0, 0, i])).collect();
        let mut a = MacAgg::default();
        for x in addrs.iter().rev() {
            a.add_sample(*x);
        }
        let (mut b, mut c) = (MacAgg::default(), MacAgg::default());
        for (i, x) in addrs.iter().enumerate() {
            if i % 2 == 0 { b.add_sample(*x) } else { c.add_sample(*x) }
        }
        c.merge(&b);
        assert_eq!(a.sample, c.sample);
        assert_eq!(a.sample[0], addrs[0]);
        assert_eq!(a.sample[3], addrs[3]);
    }

    #[test]
    fn mac_keys_differ_per_mac() {
        assert_ne!(mac_key(&[2, 0, 0, 0, 0, 1]), mac_key(&[2, 0, 0, 0, 0, 2]));
    }
}
