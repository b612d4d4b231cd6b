//! Detect: the host stage, where shard intervals meet and episodes live.
//!
//! The host stage waits until every shard has reported interval `t` (a
//! watermark), merges the per-host summaries and misuse hits, runs the
//! detectors, and returns the interval's events in a total order. Because it
//! only ever sees complete, merged intervals, its output is the same for any
//! number of shards and any replay speed.

pub mod anomaly;
pub mod baseline;
pub mod episode;
pub mod fragments;
pub mod l2watch;
pub mod misuse;
pub mod ml;
pub mod rules;
pub mod scan;
pub mod spike;
pub mod tunnel;

use std::collections::BTreeMap;

use hashbrown::HashMap;

use crate::decode::Addr;
use crate::time::Timestamp;
use crate::track::{HostCounters, ShardReport, ShardStats};
pub use anomaly::{Anomaly, AnomalyKind, Category, Phase, Severity};
use episode::{EpisodeKey, EpisodePolicy, Episodes};
use misuse::{HitAgg, HitKey, MisuseEpisode};

/// Detector settings the host stage needs.
#[derive(Clone, Debug, Default)]
pub struct DetectConfig {
    /// Episode timing (all detectors).
    pub misuse_episodes: EpisodePolicy,
    /// Whether the misuse rules raise events at all.
    pub misuse_enabled: bool,
    /// Statistical detectors.
    pub spike: crate::config::SpikeConfig,
    /// Allowlisted networks and the kinds they may not open (empty: all).
    pub allow: Vec<(crate::config::Cidr, Vec<AnomalyKind>)>,
    /// Host groups with their members.
    pub hostgroups: Vec<(Vec<crate::config::Cidr>, crate::config::HostGroup)>,
    /// Interval length in nanoseconds.
    pub interval_ns: u64,
    /// Scan detectors.
    pub scan: scan::ScanConfig,
    /// Tunnel detectors.
    pub tunnel: tunnel::TunnelConfig,
    /// The behaviour model.
    pub ml: ml::MlConfig,
}

impl DetectConfig {
    /// True when `a` is allowlisted for `kind`.
    pub fn allowed(&self, a: &Addr, kind: AnomalyKind) -> bool {
        self.allow.iter().any(|(c, kinds)| c.contains(a) && (kinds.is_empty() || kinds.contains(&kind)))
    }
}

/// One merged interval: every host's traffic across all shards.
#[derive(Default)]
pub struct HostInterval {
    /// The interval's end.
    pub end: Timestamp,
    /// Per-host counters, merged over shards.
    pub hosts: HashMap<Addr, HostCounters, foldhash::fast::FixedState>,
}

struct Pending {
    reports: usize,
    last: bool,
    hits: Vec<(HitKey, HitAgg)>,
    hosts: HashMap<Addr, HostCounters, foldhash::fast::FixedState>,
    rules: crate::track::RuleAggs,
}

/// The single host-stage state machine.
pub struct HostStage {
    shards: usize,
    pending: BTreeMap<Timestamp, Pending>,
    interval: HostInterval,
    shard_stats: Vec<ShardStats>,
    misuse: Episodes<MisuseEpisode>,
    spike: spike::SpikeDetector,
    scans: scan::ScanDetector,
    tunnels: tunnel::TunnelDetector,
    l2: l2watch::L2Watch,
    ml: ml::BehaviourModel,
    cfg: DetectConfig,
    finished: usize,
    spare_hosts: Option<HashMap<Addr, HostCounters, foldhash::fast::FixedState>>,
    returned: Vec<(usize, Vec<(Addr, HostCounters)>)>,
}

impl HostStage {
    /// A host stage expecting reports from `shards` shards.
    pub fn new(shards: usize, cfg: DetectConfig) -> HostStage {
        HostStage {
            shards: shards.max(1),
            pending: BTreeMap::new(),
            interval: HostInterval::default(),
            shard_stats: vec![ShardStats::default(); shards.max(1)],
            misuse: Episodes::new(cfg.misuse_episodes),
            spike: spike::SpikeDetector::new(&cfg),
            scans: scan::ScanDetector::new(cfg.misuse_episodes, &cfg.scan),
            tunnels: tunnel::TunnelDetector::new(cfg.misuse_episodes, &cfg.tunnel),
            l2: l2watch::L2Watch::new(cfg.misuse_episodes),
            ml: ml::BehaviourModel::new(&cfg.ml, cfg.misuse_episodes),
            cfg,
            finished: 0,
            spare_hosts: None,
            returned: Vec::new(),
        }
    }

    /// Accepts one shard report; when it completes an interval, appends that
    /// interval's events to `out` (sorted) and returns true.
    pub fn on_report(&mut self, r: ShardReport, out: &mut Vec<Anomaly>) -> bool {
        if let Some(s) = self.shard_stats.get_mut(r.shard) {
            *s = r.stats;
        }
        if r.last {
            self.finished += 1;
        }
        let spare = &mut self.spare_hosts;
        let p = self.pending.entry(r.tick).or_insert_with(|| Pending {
            reports: 0,
            last: false,
            hits: Vec::new(),
            // A cleared map from an earlier interval: its pages are already
            // resident, so a busy link does not fault in megabytes per second.
            hosts: spare.take().unwrap_or_else(|| HashMap::with_hasher(Default::default())),
            rules: crate::track::RuleAggs::default(),
        });
        p.reports += 1;
        p.last |= r.last;
        p.hits.extend(r.hits);
        p.rules.append(r.rules);
        let mut hosts = r.hosts;
        for (a, h) in hosts.drain(..) {
            p.hosts.entry(a).or_default().merge(&h);
        }
        self.returned.push((r.shard, hosts));
        let mut completed = false;
        // Intervals complete in order: each shard reports its ticks in order.
        while let Some(entry) = self.pending.first_entry() {
            let done =
                entry.get().reports >= self.shards || (entry.get().last && self.finished >= self.shards);
            if !done {
                break;
            }
            let (t, p) = entry.remove_entry();
            self.close_interval(t, p, out);
            completed = true;
        }
        completed
    }

    /// Emptied host vectors to hand back to their shards, with the shard index.
    pub fn take_returned(&mut self) -> impl Iterator<Item = (usize, Vec<(Addr, HostCounters)>)> + '_ {
        self.returned.drain(..)
    }

    /// True once every shard has sent its final report.
    pub fn all_finished(&self) -> bool {
        self.finished >= self.shards
    }

    fn close_interval(&mut self, t: Timestamp, p: Pending, out: &mut Vec<Anomaly>) {
        let start = out.len();
        self.interval.end = t;
        let mut old = std::mem::replace(&mut self.interval.hosts, p.hosts);
        if self.spare_hosts.is_none() {
            old.clear();
            self.spare_hosts = Some(old);
        }
        if self.cfg.spike.enabled {
            self.spike.on_interval(&self.interval, t, &self.cfg, out);
        }
        if self.cfg.misuse_enabled {
            let merged =
                misuse::merge_hits(p.hits.into_iter().filter(|(k, _)| !self.cfg.allowed(&k.src, k.kind)));
            let misuse_open = |k: &EpisodeKey| self.misuse.is_open(k);
            for (key, agg) in misuse::spread_over_sources(merged, &misuse_open) {
                // Redirects toward a host under a flood are the flood's
                // backscatter (routers answering spoofed packets), not an attack of their own.
                let backscatter = key.kind == AnomalyKind::IcmpMisuse
                    && agg.detail == misuse::icmp_bad::REDIRECT
                    && self.spike.flood_open(&key.dst);
                if !backscatter {
                    self.misuse.observe(key, agg.first, &agg, out);
                }
            }
        }
        let cfg = &self.cfg;
        let allowed = |a: &Addr, k: AnomalyKind| cfg.allowed(a, k);
        let r = p.rules;
        if cfg.scan.enabled {
            self.scans.on_interval(r.pairs, r.sweeps, t, &cfg.scan, &allowed, out);
        }
        if cfg.tunnel.enabled {
            self.tunnels.on_interval(r.dns, r.echo, t, &cfg.tunnel, &allowed, out);
        }
        if cfg.misuse_enabled {
            self.l2.on_interval(r.l2, t, &allowed, out);
        }
        if cfg.ml.enabled {
            self.ml.on_interval(&self.interval, t, &allowed, out);
        }
        if p.last {
            self.misuse.close_all(t, out);
            self.spike.close_all(t, out);
            self.scans.close_all(t, out);
            self.tunnels.close_all(t, out);
            self.l2.close_all(t, out);
            self.ml.close_all(t, out);
        } else {
            self.misuse.tick(t, out);
            self.spike.tick(t, out);
            self.scans.tick(t, out);
            self.tunnels.tick(t, out);
            self.l2.tick(t, out);
            self.ml.tick(t, out);
        }
        out[start..].sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    }

    /// The latest cumulative counters, summed over shards.
    pub fn stats(&self) -> ShardStats {
        let mut t = ShardStats::default();
        for s in &self.shard_stats {
            t.merge(s);
        }
        t
    }

    /// Episodes open now, over all detectors.
    pub fn open_episodes(&self) -> usize {
        self.misuse.open_count()
            + self.spike.open_count()
            + self.scans.open_count()
            + self.tunnels.open_count()
            + self.l2.open_count()
            + self.ml.open_count()
    }

    /// Applies a new configuration (SIGHUP): thresholds, allowlists, host
    /// groups and episode timing change from the next interval on; learned
    /// baselines, windows and open episodes are kept.
    pub fn reload(&mut self, cfg: DetectConfig) {
        self.misuse.set_policy(cfg.misuse_episodes);
        self.spike.reconfigure(&cfg);
        self.scans.reconfigure(cfg.misuse_episodes, &cfg.scan);
        self.tunnels.reconfigure(cfg.misuse_episodes, &cfg.tunnel);
        self.l2.reconfigure(cfg.misuse_episodes);
        self.cfg = cfg;
    }

    /// The statistical detector (baselines, persistence of learned state).
    pub fn spike(&self) -> &spike::SpikeDetector {
        &self.spike
    }

    /// Mutable access to the statistical detector (restoring saved state).
    pub fn spike_mut(&mut self) -> &mut spike::SpikeDetector {
        &mut self.spike
    }

    /// The behaviour model.
    pub fn ml(&self) -> &ml::BehaviourModel {
        &self.ml
    }

    /// Mutable access to the behaviour model (restoring saved state).
    pub fn ml_mut(&mut self) -> &mut ml::BehaviourModel {
        &mut self.ml
    }

    /// The detector settings.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// The last merged interval (for detectors and tests).
    pub fn last_interval(&self) -> &HostInterval {
        &self.interval
    }
}
