//! Detect: the host stage, where shard intervals meet and episodes live.
//!
//! The host stage waits until every shard has reported interval `t` (a
//! watermark), merges the per-host summaries and the families' shard
//! reports, lets every detector family judge the interval, and returns the
//! interval's events in a total order. Because it only ever sees complete,
//! merged intervals, its output is the same for any number of shards and
//! any replay speed.
//!
//! Each detector family is one module owning both of its halves (see
//! [`family`]); the list below registers them, in judging order.

pub mod anomaly;
pub mod baseline;
pub mod beacon;
pub mod bruteforce;
pub mod dnsspoof;
pub mod episode;
pub mod evidence;
pub mod exfil;
pub mod family;
pub mod history;
pub mod l2watch;
pub mod lateral;
pub mod macchurn;
pub mod misuse;
pub mod ml;
pub mod priority;
pub mod rules;
pub mod scan;
pub mod slowhttp;
pub mod spike;
pub mod tunnel;

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use crate::base::time::{NANOS_PER_SEC, Timestamp};
use crate::base::{Addr, Cidr, LocalNets};
use crate::config::{
    BeaconConfig, BruteConfig, Config, ExfilConfig, HostGroup, LateralConfig, MacChurnConfig, MlConfig,
    ScanConfig, SlowConfig, SpikeConfig, TunnelConfig,
};
use crate::track::{HostCounters, HostRow, Merge, Returned, ShardReport, ShardStats};
pub use anomaly::{Anomaly, AnomalyKind, Category, Phase, Severity};
use episode::EpisodePolicy;
use family::{Context, Facts, Restored};

family::families! {
    /// Statistical: per-host baselines and traffic spikes (judged first: it
    /// tells the others which hosts are under a flood).
    spike: spike::SpikeDetector,
    /// Rule-based: per-packet protocol misuse and fragment tricks.
    misuse: misuse::Misuse,
    /// Rule-based: port, host and distributed scans (concurrent: on a busy
    /// link it is a third of the host stage's work, and reads no facts).
    scan: scan::ScanDetector => concurrent,
    /// Rule-based: DNS and ICMP tunnels.
    tunnel: tunnel::TunnelDetector,
    /// Rule-based: ARP spoofing and rogue router advertisements.
    l2: l2watch::L2Watch,
    /// Rule-based: password guessing against authentication services.
    brute: bruteforce::BruteForce,
    /// Rule-based: forged DNS answers racing the real server.
    dns_spoof: dnsspoof::DnsSpoof,
    /// Statistical: connections held open without an answer (Slowloris).
    slow: slowhttp::SlowHttp,
    /// Rule-based: one MAC opening flows from many source addresses.
    mac_churn: macchurn::MacChurn,
    /// Behaviour: data leaving the site beyond each host's history.
    exfil: exfil::ExfilDetector,
    /// Behaviour: administrative sessions to internal peers never used that way.
    lateral: lateral::LateralDetector,
    /// Behaviour: regular check-ins with one service (command and control).
    beacon: beacon::BeaconDetector,
    /// Machine learning: the behaviour model.
    ml: ml::BehaviourModel,
}

/// Detector settings the host stage needs, built from the configuration.
#[derive(Clone, Debug, Default)]
pub struct DetectConfig {
    /// Episode timing (all detectors).
    pub episodes: EpisodePolicy,
    /// Whether the misuse rules raise events at all.
    pub misuse_enabled: bool,
    /// Statistical detectors.
    pub spike: SpikeConfig,
    /// Allowlisted networks and the kinds they may not open (empty: all).
    pub allow: Vec<(Cidr, Vec<AnomalyKind>)>,
    /// Host groups with their members.
    pub hostgroups: Vec<(Vec<Cidr>, HostGroup)>,
    /// Interval length in nanoseconds.
    pub interval_ns: u64,
    /// Scan detectors.
    pub scan: ScanConfig,
    /// Tunnel detectors.
    pub tunnel: TunnelConfig,
    /// The behaviour model.
    pub ml: MlConfig,
    /// The site's own networks.
    pub local: LocalNets,
    /// Exfiltration detector.
    pub exfil: ExfilConfig,
    /// Lateral-movement detector.
    pub lateral: LateralConfig,
    /// Beaconing detector.
    pub beacon: BeaconConfig,
    /// Brute-force detector.
    pub brute: BruteConfig,
    /// Slow-HTTP detector.
    pub slow: SlowConfig,
    /// One-MAC-many-addresses detector.
    pub mac_churn: MacChurnConfig,
}

impl DetectConfig {
    /// The detector settings of a (validated) configuration.
    pub fn from_config(cfg: &Config) -> DetectConfig {
        let e = &cfg.episodes;
        DetectConfig {
            episodes: EpisodePolicy {
                cooldown: e.cooldown * NANOS_PER_SEC,
                update_every: e.update_interval * NANOS_PER_SEC,
                max_open: e.max_open,
            },
            misuse_enabled: cfg.misuse.enabled,
            spike: cfg.spike.clone(),
            allow: cfg
                .allow
                .iter()
                .filter_map(|a| {
                    let kinds = a.kinds.iter().filter_map(|k| AnomalyKind::from_name(k)).collect();
                    Cidr::parse(&a.cidr).map(|c| (c, kinds))
                })
                // A host group's `skip` is an allowlist entry per member.
                .chain(cfg.hostgroup.iter().filter(|g| !g.skip.is_empty()).flat_map(|g| {
                    let kinds: Vec<AnomalyKind> =
                        g.skip.iter().filter_map(|k| AnomalyKind::from_name(k)).collect();
                    g.cidrs.iter().filter_map(move |c| Cidr::parse(c).map(|c| (c, kinds.clone())))
                }))
                .collect(),
            hostgroups: cfg
                .hostgroup
                .iter()
                .map(|g| (g.cidrs.iter().filter_map(|c| Cidr::parse(c)).collect(), g.clone()))
                .collect(),
            interval_ns: cfg.interval_ns(),
            scan: cfg.scan.clone(),
            tunnel: cfg.tunnel.clone(),
            ml: cfg.ml.clone(),
            local: cfg.networks.local_nets(),
            exfil: cfg.exfiltration.clone(),
            lateral: cfg.lateral.clone(),
            beacon: cfg.beaconing.clone(),
            brute: cfg.bruteforce.clone(),
            slow: cfg.slow_http.clone(),
            mac_churn: cfg.one_mac_many_ips.clone(),
        }
    }

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
    /// Per-host counters, merged over shards (while the interval is judged;
    /// the list goes back to a shard right after).
    pub hosts: HostTable,
    /// Hosts the interval held.
    pub host_count: usize,
}

/// Per-host counters of one interval, merged over shards.
///
/// A list in arrival order found through an index of `u32` slot numbers
/// (like a shard's host slab): merging a shard's summaries appends to the
/// list instead of scattering half-kilobyte records over a hash table, so an
/// interval of a hundred thousand hosts touches (and faults in) only the
/// pages it fills. Iteration order is arrival order: detectors that need an
/// order sort, as they did with the hash map.
#[derive(Default)]
pub struct HostTable {
    index: crate::base::SlabIndex,
    list: Vec<HostRow>,
    hasher: foldhash::fast::FixedState,
}

impl HostTable {
    /// Hosts held.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when no host is held.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn find(&self, h: u64, a: &Addr) -> Option<usize> {
        let list = &self.list;
        self.index.find(h, |i| list[i as usize].0 == *a).map(|i| i as usize)
    }

    /// The counters of `a`.
    pub fn get(&self, a: &Addr) -> Option<&HostCounters> {
        let h = self.hasher.hash_one(a);
        self.find(h, a).and_then(|i| self.list.get(i)).map(|HostRow(_, c)| c)
    }

    /// True when `a` is held.
    pub fn contains_key(&self, a: &Addr) -> bool {
        self.find(self.hasher.hash_one(a), a).is_some()
    }

    /// The counters of `a`, created empty if needed.
    pub fn entry_or_default(&mut self, a: Addr) -> &mut HostCounters {
        let h = self.hasher.hash_one(a);
        let i = match self.find(h, &a) {
            Some(i) => i,
            None => {
                let i = self.list.len();
                self.list.push(HostRow(a, HostCounters::default()));
                self.index.insert(h, i as u32);
                i
            }
        };
        &mut self.list[i].1
    }

    /// Sets the counters of `a`, returning what it held before.
    pub fn insert(&mut self, a: Addr, c: HostCounters) -> Option<HostCounters> {
        let had = self.contains_key(&a);
        let slot = self.entry_or_default(a);
        let old = std::mem::replace(slot, c);
        had.then_some(old)
    }

    /// Every host's address.
    pub fn keys(&self) -> impl Iterator<Item = &Addr> {
        self.list.iter().map(|HostRow(a, _)| a)
    }

    /// Every host's counters.
    pub fn values(&self) -> impl Iterator<Item = &HostCounters> {
        self.list.iter().map(|HostRow(_, c)| c)
    }

    /// Every host with its counters.
    pub fn iter(&self) -> impl Iterator<Item = (&Addr, &HostCounters)> {
        self.list.iter().map(|HostRow(a, c)| (a, c))
    }

    /// Takes a shard's host summaries as the table's list, without copying
    /// them, and returns the (emptied) list the table held. The table must be
    /// empty. A shard summarises each host once; a list that names one twice
    /// anyway is merged entry by entry instead.
    fn adopt(&mut self, hosts: Vec<HostRow>) -> Vec<HostRow> {
        self.clear();
        let mut old = std::mem::replace(&mut self.list, hosts);
        let (index, list, hasher) = (&mut self.index, &self.list, &self.hasher);
        index.reserve(list.len());
        let mut twice = false;
        for (i, HostRow(a, _)) in list.iter().enumerate() {
            let h = hasher.hash_one(a);
            if index.find(h, |j| list[j as usize].0 == *a).is_some() {
                twice = true;
                break;
            }
            index.insert(h, i as u32);
        }
        if twice {
            let hosts = std::mem::replace(&mut self.list, std::mem::take(&mut old));
            self.clear();
            for HostRow(a, h) in &hosts {
                self.entry_or_default(*a).merge(h);
            }
            old = hosts;
        }
        old.clear();
        old
    }

    /// Empties the table, keeping its memory.
    pub fn clear(&mut self) {
        self.index.clear();
        self.list.clear();
    }

    /// Empties the table, keeping its index, and hands its list out (emptied).
    fn take_list(&mut self) -> Vec<HostRow> {
        self.index.clear();
        let mut list = std::mem::take(&mut self.list);
        list.clear();
        list
    }
}

impl<'a> IntoIterator for &'a HostTable {
    type Item = (&'a Addr, &'a HostCounters);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, HostRow>, fn(&'a HostRow) -> (&'a Addr, &'a HostCounters)>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter().map(|HostRow(a, c)| (a, c))
    }
}

struct Pending {
    reports: usize,
    last: bool,
    hosts: HostTable,
    /// Shards' host summaries waiting to be merged in shard order: the
    /// heavy-hitter merge keeps the top few, so its result depends on order.
    parts: Vec<(usize, Vec<HostRow>)>,
    families: Reports,
    /// The shard whose report vectors `families` took over (they go back to it).
    families_from: Option<usize>,
}

/// Intervals with at least this many hosts judge the concurrent families
/// on a helper thread. Starting and joining a thread costs tens of
/// microseconds; the scan family's half of an interval this busy costs a
/// millisecond and more, and on the replay benchmark (50,000 hosts an
/// interval) a third of the host stage, which after the last packet runs
/// alone while both CPUs could share it.
const CONCURRENT_FROM: usize = 2048;

/// The single host-stage state machine.
pub struct HostStage {
    shards: usize,
    pending: BTreeMap<Timestamp, Pending>,
    interval: HostInterval,
    shard_stats: Vec<ShardStats>,
    families: Families,
    cfg: DetectConfig,
    finished: usize,
    spare_hosts: Option<HostTable>,
    returned: Vec<(usize, Returned<Reports>)>,
    triage: priority::Triage,
}

impl HostStage {
    /// A host stage expecting reports from `shards` shards.
    pub fn new(shards: usize, cfg: DetectConfig) -> HostStage {
        HostStage {
            shards: shards.max(1),
            pending: BTreeMap::new(),
            interval: HostInterval::default(),
            shard_stats: vec![ShardStats::default(); shards.max(1)],
            families: Families::new(&cfg),
            cfg,
            finished: 0,
            spare_hosts: None,
            returned: Vec::new(),
            triage: priority::Triage::default(),
        }
    }

    /// Accepts one shard report; when it completes an interval, appends that
    /// interval's events to `out` (sorted) and returns true.
    pub fn on_report(&mut self, r: ShardReport<Reports>, out: &mut Vec<Anomaly>) -> bool {
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
            // A cleared map from an earlier interval: its pages are already
            // resident, so a busy link does not fault in megabytes per second.
            hosts: spare.take().unwrap_or_default(),
            parts: Vec::new(),
            families: Reports::default(),
            families_from: None,
        });
        p.reports += 1;
        p.last |= r.last;
        p.families_from.get_or_insert(r.shard);
        p.families.absorb(r.families);
        p.parts.push((r.shard, r.hosts));
        let mut completed = false;
        // Intervals complete in order: each shard reports its ticks in order.
        while let Some(entry) = self.pending.first_entry() {
            let done =
                entry.get().reports >= self.shards || (entry.get().last && self.finished >= self.shards);
            if !done {
                break;
            }
            let (t, mut p) = entry.remove_entry();
            p.parts.sort_unstable_by_key(|(shard, _)| *shard);
            for (shard, mut hosts) in std::mem::take(&mut p.parts) {
                if p.hosts.is_empty() {
                    // The first shard's summaries become the interval's list
                    // as they are (merging them into nothing would copy them);
                    // the list they replace goes back to be filled again.
                    let spare = p.hosts.adopt(hosts);
                    if spare.capacity() > 0 {
                        self.returned.push((shard, (spare, None)));
                    }
                    continue;
                }
                for HostRow(a, h) in hosts.drain(..) {
                    p.hosts.entry_or_default(a).merge(&h);
                }
                self.returned.push((shard, (hosts, None)));
            }
            let from = p.families_from;
            let families = self.close_interval(t, p, out);
            // The emptied report lists go back to a shard to be filled again.
            if let Some(r) = self.returned.iter_mut().find(|(s, _)| Some(*s) == from) {
                r.1.1 = Some(families);
            } else if let Some(s) = from {
                self.returned.push((s, (Vec::new(), Some(families))));
            }
            completed = true;
        }
        completed
    }

    /// Emptied host vectors to hand back to their shards, with the shard index.
    pub fn take_returned(&mut self) -> impl Iterator<Item = (usize, Returned<Reports>)> + '_ {
        self.returned.drain(..)
    }

    /// True once every shard has sent its final report.
    pub fn all_finished(&self) -> bool {
        self.finished >= self.shards
    }

    fn close_interval(&mut self, t: Timestamp, mut p: Pending, out: &mut Vec<Anomaly>) -> Reports {
        let start = out.len();
        self.interval.end = t;
        self.interval.host_count = p.hosts.len();
        // The last interval's table (its list already went back) keeps its
        // index for the next interval to merge into.
        let old = std::mem::replace(&mut self.interval.hosts, p.hosts);
        self.spare_hosts.get_or_insert(old);
        let mut cx = Context { t, hosts: &self.interval, cfg: &self.cfg, facts: Facts::default() };
        let concurrent = self.interval.host_count >= CONCURRENT_FROM;
        self.families.judge(&mut p.families, &mut cx, out, concurrent);
        self.families.tick(t, p.last, out);
        out[start..].sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        // In event order, so novelty is the same for any number of workers;
        // the model judged the same merged interval (it is judged last of
        // the families, so its view is this interval's).
        self.triage.assign(&mut out[start..], self.families.ml.unusual_now());
        // Judged: the list goes straight back to a shard to be filled again.
        // Kept until the next interval, it was a fourth half-kilobyte-a-host
        // list in circulation, and every list is faulted in fresh once.
        let list = self.interval.hosts.take_list();
        if list.capacity() > 0 {
            self.returned.push((p.families_from.unwrap_or(0), (list, None)));
        }
        p.families
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
        self.families.open_count()
    }

    /// Applies a new configuration (SIGHUP): thresholds, allowlists, host
    /// groups and episode timing change from the next interval on; learned
    /// baselines, windows and open episodes are kept.
    pub fn reload(&mut self, cfg: DetectConfig) {
        self.families.reconfigure(&cfg);
        self.cfg = cfg;
    }

    /// The detector families (for their gauges and tests).
    pub fn families(&self) -> &Families {
        &self.families
    }

    /// Mutable access to the families (restoring saved state in tests).
    pub fn families_mut(&mut self) -> &mut Families {
        &mut self.families
    }

    /// Every family's learned state to save: (file name, bytes).
    pub fn save_states(&self, f: &mut dyn FnMut(&'static str, Vec<u8>)) {
        self.families.save_states(&self.cfg, f);
    }

    /// Restores every family's saved state that `read` finds; `report`
    /// hears how each file went.
    pub fn load_states(
        &mut self,
        read: &mut dyn FnMut(&'static str) -> Option<String>,
        report: &mut dyn FnMut(&'static str, Restored),
    ) {
        self.families.load_states(&self.cfg, read, report);
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
