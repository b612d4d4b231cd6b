//! Scan family: vertical (port), horizontal (host) and distributed scans.
//!
//! Counting is the way Zeek's scan policy and Snort's port_scan do it:
//! distinct targets of *connection attempts*, within a window of packet
//! time, and only when attempts mostly fail. The shard half
//! ([`ProbeTable`]) aggregates probes per interval (a flow's first packet
//! from its originator: a bare SYN, a stealth NULL/FIN/Xmas probe, a new UDP
//! flow, an ICMP echo request, an ARP who-has; and a bare ACK or FIN+ACK
//! once the target answers it with a reset) and the successes that answer
//! them; the host half ([`ScanDetector`]) keeps tumbling windows and decides.

use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, EpisodePolicy, Episodes};
use super::evidence::put_count;
use super::family::{Context, Family};
use super::rules::{IntervalTable, RuleEpisode, RuleObs, Win, roll};
use crate::base::sketch::PortSet;
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::base::{Addr, Distinct, SlabIndex, SlabMap};
use crate::config::ScanConfig;
use crate::decode::{L3, PacketMeta, ip_proto, tcp_flags};
use crate::track::{ConnState, FlowView, Observer, REFLECTOR_PORTS, ShardConfig};

/// Ports one source must probe on a host to count as sharing a distributed scan.
const SHARE_PORTS: u64 = 5;

/// Pseudo-protocol number for ARP sweeps.
pub const PROTO_ARP: u8 = 0;

/// How a probe was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A bare SYN opening a flow.
    Syn,
    /// A NULL/FIN/Xmas-style segment opening a flow.
    Stealth,
    /// A datagram opening a UDP flow.
    Udp,
    /// A bare ACK or FIN+ACK opening a flow, answered by RST: an ACK,
    /// window or Maimon scan (the RST answers it, but no connection exists).
    Ack,
}

/// Probes from one source to one host within an interval (or window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PairAgg {
    /// Packet times of the first and last probe.
    pub span: Span,
    /// Probes sent.
    pub probes: u32,
    /// Of which bare SYNs.
    pub syn: u32,
    /// Of which stealth probes.
    pub stealth: u32,
    /// Of which UDP.
    pub udp: u32,
    /// Of which ACK or FIN+ACK probes answered by RST.
    pub ack: u32,
    /// Of which first packets of another IP protocol (GRE, ESP, SCTP, bare headers…).
    pub other: u32,
    /// IP protocol numbers probed (a 256-bit set, exact).
    pub protos: [u64; 4],
    /// Connections that completed (TCP handshake).
    pub established: u32,
    /// UDP flows the target answered.
    pub answered: u32,
    /// Lowest port probed.
    pub low_port: u16,
    /// Highest port probed.
    pub high_port: u16,
    /// Distinct destination ports probed (exact up to 16, past the default line of 15).
    pub ports: PortSet,
}

impl PairAgg {
    fn merge(&mut self, o: &PairAgg) {
        if self.probes == 0 {
            self.low_port = o.low_port;
            self.high_port = o.high_port;
        } else if o.probes > 0 {
            self.low_port = self.low_port.min(o.low_port);
            self.high_port = self.high_port.max(o.high_port);
        }
        self.ports.merge(&o.ports);
        self.span.merge(&o.span);
        self.probes += o.probes;
        self.syn += o.syn;
        self.stealth += o.stealth;
        self.ack += o.ack;
        self.other += o.other;
        for (a, b) in self.protos.iter_mut().zip(o.protos) {
            *a |= b;
        }
        self.udp += o.udp;
        self.established += o.established;
        self.answered += o.answered;
    }
}

/// Probes from one source to one port (or ICMP echo / ARP) across hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepAgg {
    /// Distinct hosts probed (exact up to 16; estimated, ±6 %, at the default line of 25).
    pub dsts: Distinct,
    /// Packet times of the first and last probe.
    pub span: Span,
    /// Probes sent.
    pub probes: u32,
    /// Successes (handshakes, UDP answers).
    pub ok: u32,
}

impl SweepAgg {
    /// One probe of `dst` at `ts`.
    fn add_probe(&mut self, ts: Timestamp, dst: &Addr) {
        self.dsts.insert_addr(dst);
        self.span.add(ts);
        self.probes += 1;
    }

    fn merge(&mut self, o: &SweepAgg) {
        self.dsts.merge(&o.dsts);
        self.span.merge(&o.span);
        self.probes += o.probes;
        self.ok += o.ok;
    }
}

/// Key of a sweep aggregate: source, port, protocol (ICMP echo: port 0; ARP: [`PROTO_ARP`]).
pub type SweepKey = (Addr, u16, u8);

/// Probe aggregates by (source, target).
pub type PairList = Vec<((Addr, Addr), PairAgg)>;
/// Probe aggregates by sweep key.
pub type SweepList = Vec<(SweepKey, SweepAgg)>;

/// One interval of a shard's probes: aggregates of the probes recorded at
/// once, and the opening probes that waited for their outcome, as they are.
///
/// The waiting probes are aggregated in the host stage, by sorting, not in
/// the shard: in the shard that was four random table lookups a probe, a
/// tenth of a second at every interval close on the replay benchmark while
/// the capture thread and the host stage stood waiting for the shard.
#[derive(Default)]
pub struct ScanReport {
    /// Pair aggregates recorded at once (stealth, ACK and protocol probes,
    /// answers to earlier intervals' probes, probes past the pending cap).
    pub pairs: PairList,
    /// Sweep aggregates recorded at once (ICMP echo, ARP, the same as above).
    pub sweeps: SweepList,
    /// The interval's opening probes with their outcomes.
    pub pending: Vec<Pending>,
}

impl crate::track::Merge for ScanReport {
    fn absorb(&mut self, o: ScanReport) {
        self.pairs.absorb(o.pairs);
        self.sweeps.absorb(o.sweeps);
        self.pending.absorb(o.pending);
    }
}

/// A TCP SYN or UDP probe held until the interval closes, when its outcome
/// is known, and then handed to the host stage as it is.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    src: Addr,
    dst: Addr,
    ts: Timestamp,
    port: u16,
    proto: u8,
    how: Probe,
    /// 0: unanswered so far; [`ANSWERED`] or [`ESTABLISHED`].
    outcome: u8,
}

impl Pending {
    /// The opening probe `m`, its outcome not known yet.
    fn of(m: &PacketMeta, how: Probe) -> Pending {
        Pending { src: m.src, dst: m.dst, ts: m.ts, port: m.dport, proto: m.proto, how, outcome: 0 }
    }
}

/// A pending probe's outcome: the target answered (UDP).
const ANSWERED: u8 = 1;
/// A pending probe's outcome: the handshake completed (TCP).
const ESTABLISHED: u8 = 2;

/// Bits of a flow mark that hold the pending probe's position (plus one).
const MARK_INDEX_BITS: u32 = 20;

/// Per-shard, per-interval probe aggregates (capped).
///
/// As in Zeek's scan policy, a scan is made of attempts that fail. The
/// opening probes of TCP and UDP flows wait in a list until the interval
/// closes; a (source, target) pair or a (source, port) sweep is aggregated
/// only when at least one of its probes went unanswered, and then with its
/// answered probes too, so its success share is what it was. Ordinary
/// traffic, where every attempt is answered, costs an append per flow
/// instead of four hash-table updates here and a window in the host stage
/// (measured on the 5.4 M-packet benchmark: the scan family was a quarter
/// of all CPU).
pub struct ProbeTable {
    pairs: IntervalTable<(Addr, Addr), PairAgg>,
    sweeps: IntervalTable<SweepKey, SweepAgg>,
    pending: Vec<Pending>,
    /// The list the host stage gave back, filled next.
    spare: Option<Vec<Pending>>,
    pending_cap: usize,
    /// This interval's tag in flow marks (1..=4095, never 0: 0 is "no
    /// mark"). A mark lives at most a flow's active timeout (30 min by
    /// default), far less than the 68 min before a tag comes back.
    tag: u32,
}

impl ProbeTable {
    /// Holds at most `cap` pairs and `cap` sweeps per interval.
    pub fn new(cap: usize) -> ProbeTable {
        // Past this many a probe is aggregated at once, as before.
        let pending_cap = cap.saturating_mul(4).min((1 << MARK_INDEX_BITS) - 2);
        ProbeTable {
            pairs: IntervalTable::new(cap),
            sweeps: IntervalTable::new(cap),
            // Room for the cap at once, as the interval tables have: grown by
            // doubling, the list was copied into fresh pages at every step
            // (twice its size faulted in). Room never filled is never touched.
            pending: Vec::with_capacity(pending_cap),
            spare: None,
            pending_cap,
            tag: 1,
        }
    }

    /// Records a TCP/UDP probe from `src` to `dst:port`.
    pub fn probe(&mut self, ts: Timestamp, src: Addr, dst: Addr, port: u16, proto: u8, how: Probe) {
        if let Some(p) = self.pairs.entry((src, dst)) {
            add_probe(p, ts, port, proto, how);
        }
        self.sweep(ts, src, dst, port, proto);
    }

    /// Holds the opening probe of the flow behind `mark` until the interval
    /// closes (or records it now when the list is full).
    fn defer(&mut self, mark: &std::cell::Cell<u32>, p: Pending) {
        if self.pending.len() >= self.pending_cap {
            self.probe(p.ts, p.src, p.dst, p.port, p.proto, p.how);
            return;
        }
        self.pending.push(p);
        mark.set(self.tag << MARK_INDEX_BITS | self.pending.len() as u32);
    }

    /// Notes that the probe behind `mark` was answered; false when it is not
    /// pending this interval (it was recorded in an earlier one).
    fn settle(&mut self, mark: u32, outcome: u8) -> bool {
        if mark >> MARK_INDEX_BITS != self.tag {
            return false;
        }
        let i = (mark & ((1 << MARK_INDEX_BITS) - 1)) as usize;
        match i.checked_sub(1).and_then(|i| self.pending.get_mut(i)) {
            Some(p) => {
                p.outcome = p.outcome.max(outcome);
                true
            }
            None => false,
        }
    }

    /// Records the first packet of a flow of an IP protocol without ports
    /// (nor ICMP): what an IP protocol scan sends, one protocol at a time.
    pub fn proto_probe(&mut self, ts: Timestamp, src: Addr, dst: Addr, proto: u8) {
        if let Some(p) = self.pairs.entry((src, dst)) {
            p.span.add(ts);
            p.probes += 1;
            p.other += 1;
            p.protos[usize::from(proto / 64)] |= 1 << (proto % 64);
        }
    }

    /// Records a probe of `dst` on a sweep key (ICMP echo, ARP, or a port).
    pub fn sweep(&mut self, ts: Timestamp, src: Addr, dst: Addr, port: u16, proto: u8) {
        if let Some(s) = self.sweeps.entry((src, port, proto)) {
            s.add_probe(ts, &dst);
        }
    }

    /// Records that `dst:port` answered `src` (handshake or UDP reply).
    pub fn success(&mut self, src: Addr, dst: Addr, port: u16, proto: u8, established: bool) {
        if let Some(p) = self.pairs.entry((src, dst)) {
            if established {
                p.established += 1;
            } else {
                p.answered += 1;
            }
        }
        if let Some(s) = self.sweeps.entry((src, port, proto)) {
            s.ok += 1;
        }
    }

    /// Moves this interval's aggregates and pending probes out (leaving the
    /// recycled lists); answers after this no longer settle those probes.
    pub fn drain(&mut self) -> ScanReport {
        // The host stage's list back, or a fresh one while it still holds both.
        let mut spare = self.spare.take().unwrap_or_else(|| Vec::with_capacity(self.pending_cap));
        spare.clear();
        let pending = std::mem::replace(&mut self.pending, spare);
        self.tag = self.tag % ((1 << (32 - MARK_INDEX_BITS)) - 1) + 1;
        ScanReport { pairs: self.pairs.close(), sweeps: self.sweeps.close(), pending }
    }
}

/// Adds one probe to a pair's aggregate.
fn add_probe(p: &mut PairAgg, ts: Timestamp, port: u16, proto: u8, how: Probe) {
    if p.probes == 0 {
        p.low_port = port;
        p.high_port = port;
    }
    p.low_port = p.low_port.min(port);
    p.high_port = p.high_port.max(port);
    p.ports.insert_port(port);
    p.span.add(ts);
    p.probes += 1;
    match how {
        Probe::Syn => p.syn += 1,
        Probe::Stealth => p.stealth += 1,
        Probe::Udp => p.udp += 1,
        Probe::Ack => p.ack += 1,
    }
    p.protos[usize::from(proto / 64)] |= 1 << (proto % 64);
}

impl Observer for ProbeTable {
    type Report = ScanReport;

    /// ARP who-has: a sweep of the link's addresses, flows or not; an ARP
    /// reply to the sweeper answers one of its probes.
    #[inline]
    fn packet(&mut self, m: &PacketMeta) {
        if m.l3 != L3::Arp || m.src == m.dst || m.src.ip().is_unspecified() {
            return;
        }
        match m.arp_op {
            1 => self.sweep(m.ts, m.src, m.dst, 0, PROTO_ARP),
            2 => {
                if let Some(s) = self.sweeps.entry((m.dst, 0, PROTO_ARP)) {
                    s.ok += 1;
                }
            }
            _ => {}
        }
    }

    /// Connection attempts and what answered them.
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>) {
        let (key, touch) = (f.key, f.touch);
        let opener = touch.orig == f.side;
        match m.proto {
            ip_proto::TCP if m.has_tcp_flags() && m.has_ports() => {
                let fl = m.tcp_flags;
                if touch.created && opener {
                    let how = if fl & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN {
                        Some(Probe::Syn)
                    } else if super::misuse::invalid_tcp_flags(fl) != 0 {
                        Some(Probe::Stealth)
                    } else {
                        None
                    };
                    match how {
                        Some(Probe::Syn) => self.defer(f.mark, Pending::of(m, Probe::Syn)),
                        Some(how) => self.probe(m.ts, m.src, m.dst, m.dport, m.proto, how),
                        None => {}
                    }
                }
                // The responder's first word is a RST to a flow its peer opened
                // with nothing but ACK (or FIN+ACK): no connection ever
                // existed, so that ACK was a probe. A connection picked up
                // midway is answered with data or an ACK, not a reset.
                let ack_only = touch.peer_flags & !(tcp_flags::ACK | tcp_flags::FIN) == 0
                    && touch.peer_flags & tcp_flags::ACK != 0;
                if !opener && touch.sent == 1 && fl & tcp_flags::RST != 0 && ack_only {
                    self.probe(m.ts, m.dst, m.src, m.sport, m.proto, Probe::Ack);
                }
                if touch.after == ConnState::Established && touch.before != ConnState::Established {
                    let (o, _) = key.endpoint(touch.orig);
                    let (r, rp) = key.endpoint(touch.orig.other());
                    if !self.settle(f.mark.get(), ESTABLISHED) {
                        self.success(o, r, rp, ip_proto::TCP, true);
                    }
                }
            }
            ip_proto::UDP if m.has_ports() => {
                // A datagram from a service port to a high port is a response
                // (reflection traffic, a late answer), not a probe.
                let response_shaped =
                    REFLECTOR_PORTS.contains(&m.sport) || (m.sport < 1024 && m.dport >= 1024);
                if touch.created && opener && !response_shaped {
                    self.defer(f.mark, Pending::of(m, Probe::Udp));
                } else if !opener && touch.sent == 1 && !self.settle(f.mark.get(), ANSWERED) {
                    self.success(m.dst, m.src, m.sport, ip_proto::UDP, false);
                }
            }
            ip_proto::ICMP | ip_proto::ICMPV6 if m.has_icmp() => match (m.proto, m.icmp_type) {
                (ip_proto::ICMP, 8) | (ip_proto::ICMPV6, 128) => self.sweep(m.ts, m.src, m.dst, 0, m.proto),
                (ip_proto::ICMP, 0) | (ip_proto::ICMPV6, 129) => {
                    self.success(m.dst, m.src, 0, m.proto, false)
                }
                _ => {}
            },
            ip_proto::TCP | ip_proto::UDP | ip_proto::ICMP | ip_proto::ICMPV6 => {}
            _ if touch.created && opener && m.frag_offset == 0 => {
                self.proto_probe(m.ts, m.src, m.dst, m.proto)
            }
            _ => {}
        }
    }

    fn close(&mut self, _: Timestamp) -> ScanReport {
        self.drain()
    }

    fn recycle(&mut self, r: ScanReport) {
        self.pairs.recycle(r.pairs);
        self.sweeps.recycle(r.sweeps);
        if r.pending.capacity() > 0 {
            self.spare = Some(r.pending);
        }
    }

    /// Probes not recorded because a table was full (cumulative).
    fn overflow(&self) -> u64 {
        self.pairs.overflow + self.sweeps.overflow
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct DstAgg {
    sources: Distinct,
    ports: PortSet,
    probes: u32,
    ok: u32,
}

/// The host-stage scan detector.
pub struct ScanDetector {
    pairs: SlabMap<(Addr, Addr), Win<PairAgg>>,
    sweeps: SlabMap<SweepKey, Win<SweepAgg>>,
    dsts: SlabMap<Addr, Win<DstAgg>>,
    episodes: Episodes<RuleEpisode>,
    /// Sort buffers kept between intervals.
    pair_idx: Grouping,
    sweep_idx: Grouping,
    /// Scratch lists kept between intervals (targets probed, protocol-scan keys).
    touched: Vec<Addr>,
    proto_keys: Vec<(Addr, Addr)>,
    /// Windows dropped to stay under `max_tracked`.
    pub forgotten: u64,
}

impl ScanDetector {
    /// No history. Episodes last at least a window past the last probe.
    pub fn new(policy: EpisodePolicy, cfg: &ScanConfig) -> ScanDetector {
        let policy = EpisodePolicy { cooldown: policy.cooldown.max(cfg.window * NANOS_PER_SEC), ..policy };
        ScanDetector {
            // Room for the cap at once: grown by doubling, each map was
            // copied into fresh pages at every step (4 % of the replay
            // benchmark's CPU). Room never filled is never touched.
            pairs: SlabMap::with_room(cfg.max_tracked),
            sweeps: SlabMap::with_room(cfg.max_tracked),
            dsts: SlabMap::with_room(cfg.max_tracked),
            episodes: Episodes::new(policy),
            pair_idx: Grouping::default(),
            sweep_idx: Grouping::default(),
            touched: Vec::new(),
            proto_keys: Vec::new(),
            forgotten: 0,
        }
    }

    /// Takes new episode timing; windows and open episodes stay.
    pub fn reconfigure(&mut self, policy: EpisodePolicy, cfg: &ScanConfig) {
        self.episodes.set_policy(EpisodePolicy {
            cooldown: policy.cooldown.max(cfg.window * NANOS_PER_SEC),
            ..policy
        });
    }

    /// Folds in one merged interval of probes and judges what changed.
    pub fn on_interval(
        &mut self,
        report: &ScanReport,
        t: Timestamp,
        cfg: &ScanConfig,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        let window = cfg.window.saturating_mul(NANOS_PER_SEC);
        let ScanReport { pairs, sweeps, pending } = report;
        // Shard parts of the same key merged, in key order (determinism).
        let (mut pair_idx, mut sweep_idx) =
            (std::mem::take(&mut self.pair_idx), std::mem::take(&mut self.sweep_idx));
        let cap = cfg.max_tracked;
        self.bound(cap, t, window);
        let (mut touched, mut proto_keys) =
            (std::mem::take(&mut self.touched), std::mem::take(&mut self.proto_keys));
        touched.clear();
        proto_keys.clear();
        for ((src, dst), agg) in with_pending(
            pairs,
            pending,
            &mut pair_idx,
            |p| (p.src, p.dst),
            PairAgg::merge,
            |a, p| {
                add_probe(a, p.ts, p.port, p.proto, p.how);
                a.established += u32::from(p.outcome == ESTABLISHED);
                a.answered += u32::from(p.outcome == ANSWERED);
            },
        ) {
            if !admits(&self.pairs, &(src, dst), cap, agg.probes) {
                self.forgotten += 1;
                continue;
            }
            if agg.probes > 0 {
                touched.push(dst);
            }
            let w = roll(&mut self.pairs, (src, dst), t, window);
            w.agg.merge(&agg);
            let p = w.agg;
            if agg.protos.iter().any(|b| b.count_ones() > 0)
                && p.protos.iter().map(|b| b.count_ones()).sum::<u32>() > 2
            {
                proto_keys.push((src, dst));
            }
            let start = w.start;
            let failing = failing(p.probes, p.established + p.answered, cfg.max_success);
            if admits(&self.dsts, &dst, cap, agg.probes) {
                let d = roll(&mut self.dsts, dst, t, window);
                if agg.probes > 0 {
                    d.agg.sources.insert_addr(&src);
                    d.agg.ports.merge(&agg.ports);
                }
                d.agg.probes += agg.probes;
                d.agg.ok += agg.established + agg.answered;
            }
            let count = p.ports.count();
            let ports = count.value;
            let key = EpisodeKey { kind: AnomalyKind::PortScan, src, dst };
            // Once open, continued probing keeps the episode alive across windows.
            let ongoing = agg.probes > 0 && self.episodes.is_open(&key);
            if (ongoing || ports >= cfg.ports && failing) && !allowed(&src, AnomalyKind::PortScan) {
                let how = probe_mix(&p);
                let mut ev = Map::new();
                put_count(&mut ev, "distinct_ports", count);
                ev.insert("port_range".into(), json!([p.low_port, p.high_port]));
                ev.insert("probes".into(), json!(p.probes));
                ev.insert(
                    "probe_types".into(),
                    json!({"syn": p.syn, "stealth": p.stealth, "udp": p.udp, "ack": p.ack}),
                );
                ev.insert("connections_completed".into(), json!(p.established));
                ev.insert("udp_answered".into(), json!(p.answered));
                ev.insert("first_probe".into(), json!(p.span.first.to_string()));
                ev.insert("last_probe".into(), json!(p.span.last.to_string()));
                ev.insert("window_start".into(), json!(start.to_string()));
                let obs = RuleObs {
                    ts: t,
                    span: p.span,
                    window: start,
                    totals: vec![("probes", u64::from(p.probes))],
                    observed_total: None,
                    observed: ports as f64,
                    threshold: cfg.ports as f64,
                    unit: "distinct ports",
                    severity: if ports >= 1000 { Severity::High } else { Severity::Medium },
                    src: Some(src),
                    dst: Some(dst),
                    evidence: ev,
                    message: format!(
                        "{src} probed {} distinct ports of {dst} (ports {}-{}) with {how} between {} and {}; {} completed: a port scan",
                        count.words(),
                        p.low_port,
                        p.high_port,
                        p.span.first,
                        p.span.last,
                        p.established + p.answered
                    ),
                };
                self.episodes.observe(key, t, &obs, out);
            }
        }
        for &(src, dst) in &proto_keys {
            let Some(w) = self.pairs.get(&(src, dst)) else { continue };
            let p = w.agg;
            let protos: u32 = p.protos.iter().map(|b| b.count_ones()).sum();
            let key = EpisodeKey { kind: AnomalyKind::ProtocolScan, src, dst };
            let failing = failing(p.probes, p.established + p.answered, cfg.max_success);
            let judged = u64::from(protos) >= cfg.protocols && failing;
            if !(judged || self.episodes.is_open(&key)) || allowed(&src, AnomalyKind::ProtocolScan) {
                continue;
            }
            let list: Vec<u32> = (0..256u32)
                .filter(|&i| p.protos[(i / 64) as usize] & (1 << (i % 64)) != 0)
                .take(64)
                .collect();
            let mut ev = Map::new();
            ev.insert("distinct_protocols".into(), json!(protos));
            ev.insert("protocols".into(), json!(list));
            ev.insert("probes".into(), json!(p.probes));
            ev.insert("first_probe".into(), json!(p.span.first.to_string()));
            ev.insert("last_probe".into(), json!(p.span.last.to_string()));
            ev.insert("window_start".into(), json!(w.start.to_string()));
            let obs = RuleObs {
                ts: t,
                span: p.span,
                window: w.start,
                totals: vec![("probes", u64::from(p.probes))],
                observed_total: None,
                observed: f64::from(protos),
                threshold: cfg.protocols as f64,
                unit: "distinct IP protocols",
                severity: Severity::Medium,
                src: Some(src),
                dst: Some(dst),
                evidence: ev,
                message: format!(
                    "{src} sent {dst} packets of {protos} different IP protocols ({} probes) between {} and {}: an IP protocol scan (nmap -sO) mapping what the host's stack accepts",
                    p.probes, p.span.first, p.span.last
                ),
            };
            self.episodes.observe(key, t, &obs, out);
        }
        for ((src, port, proto), agg) in with_pending(
            sweeps,
            pending,
            &mut sweep_idx,
            |p| (p.src, p.port, p.proto),
            SweepAgg::merge,
            |a, p| {
                a.add_probe(p.ts, &p.dst);
                a.ok += u32::from(p.outcome != 0);
            },
        ) {
            if !admits(&self.sweeps, &(src, port, proto), cap, agg.probes) {
                self.forgotten += 1;
                continue;
            }
            let w = roll(&mut self.sweeps, (src, port, proto), t, window);
            w.agg.merge(&agg);
            let s = w.agg;
            let start = w.start;
            let count = s.dsts.count();
            let hosts = count.value;
            let (method, need, check_ok) = match proto {
                PROTO_ARP => ("ARP who-has".to_string(), cfg.arp_hosts, false),
                1 | 58 => ("ICMP echo".to_string(), cfg.hosts, false),
                6 => (format!("TCP port {port}"), cfg.hosts, true),
                17 => (format!("UDP port {port}"), cfg.hosts, true),
                p => (format!("protocol {p}"), cfg.hosts, true),
            };
            // A ping or ARP sweep is a sweep whether or not hosts answer;
            // for TCP/UDP a crawler that connects everywhere is not a scan.
            let counts = !check_ok || failing(s.probes, s.ok, cfg.max_success);
            let key = EpisodeKey { kind: AnomalyKind::HostScan, src, dst: Addr::UNSPECIFIED };
            let ongoing = agg.probes > 0 && self.episodes.is_open(&key);
            if (ongoing || hosts >= need && counts) && !allowed(&src, AnomalyKind::HostScan) {
                let mut ev = Map::new();
                put_count(&mut ev, "distinct_hosts", count);
                ev.insert("method".into(), json!(method));
                ev.insert("probes".into(), json!(s.probes));
                ev.insert("successes".into(), json!(s.ok));
                ev.insert("first_probe".into(), json!(s.span.first.to_string()));
                ev.insert("last_probe".into(), json!(s.span.last.to_string()));
                ev.insert("window_start".into(), json!(start.to_string()));
                let obs = RuleObs {
                    ts: t,
                    span: s.span,
                    window: start,
                    totals: vec![("probes", u64::from(s.probes))],
                    observed_total: None,
                    observed: hosts as f64,
                    threshold: need as f64,
                    unit: "distinct hosts",
                    severity: Severity::Medium,
                    src: Some(src),
                    dst: None,
                    evidence: ev,
                    message: format!(
                        "{src} swept {} hosts with {method} ({} {} between {} and {}, {} answered): a host scan",
                        count.words(),
                        s.probes,
                        // A TCP/UDP probe is a new flow's first packet, not every datagram.
                        if check_ok { "new flows" } else { "probes" },
                        s.span.first,
                        s.span.last,
                        s.ok
                    ),
                };
                self.episodes.observe(key, t, &obs, out);
            }
        }
        (self.pair_idx, self.sweep_idx) = (pair_idx, sweep_idx);
        // Only targets probed in this interval can have crossed a line.
        touched.sort_unstable();
        touched.dedup();
        for &dst in &touched {
            let Some(w) = self.dsts.get(&dst).copied() else { continue };
            let d = w.agg;
            let (port_count, source_count) = (d.ports.count(), d.sources.count());
            let (ports, sources) = (port_count.value, source_count.value);
            let key = EpisodeKey { kind: AnomalyKind::DistributedScan, src: Addr::UNSPECIFIED, dst };
            if ports < cfg.distributed_ports || sources < cfg.distributed_sources {
                continue;
            }
            // Internet background radiation also reaches many ports from many
            // sources, but each source tries one or two. A distributed scan
            // splits a range: several sources each walk a share of it.
            let sharing = self
                .pairs
                .iter()
                .filter(|((_, d), w)| {
                    *d == dst
                        && w.agg.ports.estimate() >= SHARE_PORTS
                        && failing(w.agg.probes, w.agg.established + w.agg.answered, cfg.max_success)
                })
                .count() as u64;
            if sharing >= cfg.distributed_sources
                && failing(d.probes, d.ok, cfg.max_success)
                && !allowed(&dst, AnomalyKind::DistributedScan)
            {
                let mut ev = Map::new();
                put_count(&mut ev, "distinct_ports", port_count);
                put_count(&mut ev, "distinct_sources", source_count);
                ev.insert("sources_walking_ranges".into(), json!(sharing));
                ev.insert("probes".into(), json!(d.probes));
                ev.insert("window_start".into(), json!(w.start.to_string()));
                let obs = RuleObs {
                    ts: t,
                    span: Span::default(),
                    window: w.start,
                    totals: vec![("probes", u64::from(d.probes))],
                    observed_total: None,
                    observed: ports as f64,
                    threshold: cfg.distributed_ports as f64,
                    unit: "distinct ports",
                    severity: Severity::Medium,
                    src: None,
                    dst: Some(dst),
                    evidence: ev,
                    message: format!(
                        "{} sources together probed {} distinct ports of {dst} ({} probes, mostly failing): a distributed port scan",
                        source_count.words(),
                        port_count.words(),
                        d.probes
                    ),
                };
                self.episodes.observe(key, t, &obs, out);
            }
        }
        (self.touched, self.proto_keys) = (touched, proto_keys);
    }

    /// Makes room at the start of an interval when a window table is more
    /// than three quarters full: windows older than half a window go, then
    /// windows of a single probe (a scan is many probes; under a spoofed
    /// flood nearly every window is one probe from a source never seen
    /// again), and if that is not enough, all of them (counted). During the
    /// interval [`admits`] keeps each table within `cap`, the room reserved
    /// for it (a table filled past its room was moved, whole, into twice
    /// the room).
    fn bound(&mut self, cap: usize, now: Timestamp, window: u64) {
        let total = |d: &Self| d.pairs.len() + d.sweeps.len() + d.dsts.len();
        let line = cap - cap / 4;
        let full = |d: &Self| d.pairs.len() >= line || d.sweeps.len() >= line || d.dsts.len() >= line;
        if !full(self) {
            return;
        }
        let before = total(self);
        self.pairs.retain(|_, w| now.since(w.start) < window / 2);
        self.sweeps.retain(|_, w| now.since(w.start) < window / 2);
        self.dsts.retain(|_, w| now.since(w.start) < window / 2);
        if full(self) {
            self.pairs.retain(|_, w| w.agg.probes > 1);
            self.sweeps.retain(|_, w| w.agg.probes > 1);
            self.dsts.retain(|_, w| w.agg.probes > 1);
        }
        if full(self) {
            self.pairs.clear();
            self.sweeps.clear();
            self.dsts.clear();
        }
        self.forgotten += (before - total(self)) as u64;
    }
}

/// Whether `k` gets (or has) a window in `map`, which holds at most `cap`:
/// a new key of one probe only while an eighth of the room is still free,
/// so that under a flood of one-probe sources the sources that probe
/// repeatedly still find room.
fn admits<K: std::hash::Hash + Eq, V>(map: &SlabMap<K, Win<V>>, k: &K, cap: usize, probes: u32) -> bool {
    let room = if probes > 1 { cap } else { cap - cap / 8 };
    map.len() < room || map.contains_key(k)
}

impl Family for ScanDetector {
    type Shard = ProbeTable;

    fn new(cfg: &DetectConfig) -> ScanDetector {
        ScanDetector::new(cfg.episodes, &cfg.scan)
    }

    fn shard(_: &DetectConfig, shard: &ShardConfig) -> ProbeTable {
        ProbeTable::new(shard.max_hosts)
    }

    fn judge(&mut self, report: &mut ScanReport, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let cfg = cx.cfg;
        if cfg.scan.enabled {
            self.on_interval(report, cx.t, &cfg.scan, &|a, k| cfg.allowed(a, k), out);
        }
        report.pairs.clear();
        report.sweeps.clear();
        report.pending.clear();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        ScanDetector::reconfigure(self, cfg.episodes, &cfg.scan);
    }
}

/// The probes in words, by kind: "100 TCP SYN probes", or for a mix
/// "300 probes (200 TCP SYN, 100 stealth NULL/FIN/Xmas)".
fn probe_mix(p: &PairAgg) -> String {
    let kinds: Vec<String> =
        [(p.syn, "TCP SYN"), (p.stealth, "stealth NULL/FIN/Xmas"), (p.udp, "UDP"), (p.ack, "ACK or FIN/ACK")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, name)| format!("{n} {name}"))
            .collect();
    let pl = if p.probes == 1 { "" } else { "s" };
    match kinds.as_slice() {
        [one] => format!("{one} probe{pl}"),
        _ => format!("{} probe{pl} ({})", p.probes, kinds.join(", ")),
    }
}

/// Sort and lookup buffers [`with_pending`] keeps between intervals.
#[derive(Default)]
struct Grouping {
    /// (key hash, index) of the direct aggregates and the unanswered probes.
    idx: Vec<(u64, u32)>,
    /// Each group's ordinal, by key hash (answered probes look up their
    /// group); the key is checked against the group's first entry, so no
    /// key is copied (under a spoofed flood an interval has a million).
    groups: SlabIndex,
    /// The index (as in `idx`) of each group's first entry.
    firsts: Vec<u32>,
    /// (group ordinal, probe index) of answered probes with a group.
    late: Vec<(u32, u32)>,
    /// Counting-sort offsets, one per group, and its output.
    starts: Vec<u32>,
    scratch: Vec<(u32, u32)>,
}

/// Orders `v` by group ordinal (below `groups`), keeping the order within
/// each group: a counting sort in place of a stable comparison sort.
fn by_group(v: &mut Vec<(u32, u32)>, groups: usize, starts: &mut Vec<u32>, scratch: &mut Vec<(u32, u32)>) {
    starts.clear();
    starts.resize(groups + 1, 0);
    for &(o, _) in v.iter() {
        starts[o as usize + 1] += 1;
    }
    for g in 1..starts.len() {
        starts[g] += starts[g - 1];
    }
    scratch.clear();
    scratch.resize(v.len(), (0, 0));
    for &(o, i) in v.iter() {
        let at = &mut starts[o as usize];
        scratch[*at as usize] = (o, i);
        *at += 1;
    }
    std::mem::swap(v, scratch);
}

/// Marks an index into the pending probes (not the aggregates) while sorting.
const PENDING_BIT: u32 = 1 << 31;

/// Seeds the key hash that orders the groups: fixed, so the order is the
/// same in every run and for any number of shards.
const GROUP_SEED: u64 = 0x7363_616e_6772_7570;

/// The aggregates of `direct` and the `pending` probes by key, as the
/// shard used to settle them: an unanswered probe always counts, an
/// answered one only toward a key that also has an unanswered probe or a
/// direct aggregate this interval (so a success share is what it was, and
/// ordinary answered traffic leaves nothing).
///
/// Keys come in the order of a fixed hash: the same for any split of the
/// interval over shards, and when the windows are full, the keys that
/// still find room are not the lowest addresses (as in key order). Only
/// the direct aggregates and unanswered probes are sorted, as (hash,
/// index) pairs with keys compared on a tie of hashes; answered probes,
/// most of a link's openings, join their key's group by lookup (sorting
/// them too was 9 % of the replay benchmark's instructions).
fn with_pending<'a, K: Ord + Copy + std::hash::Hash, V: Copy + Default>(
    direct: &'a [(K, V)],
    pending: &'a [Pending],
    g: &'a mut Grouping,
    key: fn(&Pending) -> K,
    merge: fn(&mut V, &V),
    add: fn(&mut V, &Pending),
) -> impl Iterator<Item = (K, V)> + 'a {
    let Grouping { idx, groups, firsts, late, starts, scratch } = g;
    let key_at = move |i: u32| {
        if i & PENDING_BIT == 0 {
            direct.get(i as usize).map(|(k, _)| *k)
        } else {
            pending.get((i & !PENDING_BIT) as usize).map(key)
        }
    };
    let hash =
        |k: &K| std::hash::BuildHasher::hash_one(&foldhash::fast::FixedState::with_seed(GROUP_SEED), k);
    idx.clear();
    idx.extend(direct.iter().enumerate().map(|(i, (k, _))| (hash(k), i as u32)));
    let unanswered = pending.iter().enumerate().filter(|(_, p)| p.outcome == 0);
    idx.extend(unanswered.map(|(i, p)| (hash(&key(p)), i as u32 | PENDING_BIT)));
    // Keys compared only when their hashes tie; index order within a key.
    idx.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| key_at(a.1).cmp(&key_at(b.1))).then(a.1.cmp(&b.1))
    });
    groups.clear();
    firsts.clear();
    late.clear();
    if pending.iter().any(|p| p.outcome != 0) {
        let mut prev = None;
        for &(h, i) in idx.iter() {
            let k = key_at(i);
            if k != prev {
                groups.insert(h, firsts.len() as u32);
                firsts.push(i);
                prev = k;
            }
        }
        let first_key = |o: u32| firsts.get(o as usize).and_then(|&i| key_at(i));
        for (i, p) in pending.iter().enumerate().filter(|(_, p)| p.outcome != 0) {
            let k = key(p);
            if let Some(o) = groups.find(hash(&k), |o| first_key(o) == Some(k)) {
                late.push((o, i as u32));
            }
        }
        // Pushed in index order; grouped by a counting sort, which keeps
        // that order within a group and is linear (a client's answered
        // openings nearly all join its sweep group: a comparison sort of
        // them cost more than the rest of the grouping).
        by_group(late, firsts.len(), starts, scratch);
    }
    let mut rest: &'a [(u64, u32)] = idx;
    let mut late: &'a [(u32, u32)] = late;
    let mut ordinal = 0u32;
    std::iter::from_fn(move || {
        let &(_, first) = rest.first()?;
        let k = key_at(first)?;
        let n = rest.iter().position(|&(_, i)| key_at(i) != Some(k)).unwrap_or(rest.len());
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let mut acc = V::default();
        for &(_, i) in group {
            if i & PENDING_BIT == 0 {
                if let Some((_, v)) = direct.get(i as usize) {
                    merge(&mut acc, v);
                }
            } else if let Some(p) = pending.get((i & !PENDING_BIT) as usize) {
                add(&mut acc, p);
            }
        }
        let m = late.iter().position(|&(o, _)| o != ordinal).unwrap_or(late.len());
        for &(_, i) in &late[..m] {
            if let Some(p) = pending.get(i as usize) {
                add(&mut acc, p);
            }
        }
        late = &late[m..];
        ordinal += 1;
        Some((k, acc))
    })
}

fn failing(probes: u32, ok: u32, max_success: f64) -> bool {
    probes > 0 && f64::from(ok) <= max_success * f64::from(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> Addr {
        Addr::v4([198, 51, 100, i])
    }

    /// The events of one interval of `pairs` judged by a fresh detector.
    fn judge_once(pairs: PairList, cfg: &ScanConfig) -> Vec<Anomaly> {
        let mut det = ScanDetector::new(EpisodePolicy::default(), cfg);
        let mut out = Vec::new();
        let never = |_: &Addr, _: AnomalyKind| false;
        det.on_interval(
            &ScanReport { pairs, ..ScanReport::default() },
            Timestamp::from_secs(10),
            cfg,
            &never,
            &mut out,
        );
        out
    }

    #[test]
    fn mixed_probes_are_named_by_kind() {
        let one = PairAgg { probes: 100, syn: 100, ..PairAgg::default() };
        assert_eq!(probe_mix(&one), "100 TCP SYN probes");
        // Regression: 200 SYN plus 100 Xmas were "300 TCP SYN probes".
        let mixed = PairAgg { probes: 300, syn: 200, stealth: 100, ..PairAgg::default() };
        assert_eq!(probe_mix(&mixed), "300 probes (200 TCP SYN, 100 stealth NULL/FIN/Xmas)");
    }

    #[test]
    fn many_sources_walking_ranges_are_a_distributed_scan_background_is_not() {
        let target = Addr::v4([192, 0, 2, 1]);
        let cfg = ScanConfig::default();
        // Ten sources, each probing 12 ports of a 120-port range: each below
        // the port-scan line (15), together a distributed scan.
        let mut pairs = Vec::new();
        for s in 0..10u8 {
            let mut a = PairAgg::default();
            for p in 0..12u16 {
                a.ports.insert_port(1000 + u16::from(s) * 12 + p);
            }
            a.probes = 12;
            a.syn = 12;
            a.low_port = 1000 + u16::from(s) * 12;
            a.high_port = a.low_port + 11;
            pairs.push(((addr(s), target), a));
        }
        let out = judge_once(pairs, &cfg);
        let kinds: Vec<AnomalyKind> = out.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![AnomalyKind::DistributedScan], "{out:#?}");

        // Background radiation: 150 sources, one port each.
        let mut pairs = Vec::new();
        for s in 0..150u8 {
            let mut a = PairAgg::default();
            a.ports.insert_port(2000 + u16::from(s));
            a.probes = 1;
            a.syn = 1;
            pairs.push(((addr(s), target), a));
        }
        let out = judge_once(pairs, &cfg);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn a_slow_scan_outlives_a_flood_of_one_probe_windows_at_the_cap() {
        let never = |_: &Addr, _: AnomalyKind| false;
        let cfg = ScanConfig { max_tracked: 64, ..ScanConfig::default() };
        let mut det = ScanDetector::new(EpisodePolicy::default(), &cfg);
        let (scanner, target) = (Addr::v4([203, 0, 113, 9]), Addr::v4([192, 0, 2, 1]));
        let mut out = Vec::new();
        let mut port = 1000u16;
        for sec in 1..=20u64 {
            // The scanner: three ports a second, under the line for 5 s.
            let mut a =
                PairAgg { probes: 3, syn: 3, low_port: port, high_port: port + 2, ..PairAgg::default() };
            for p in port..port + 3 {
                a.ports.insert_port(p);
            }
            port += 3;
            let mut pairs = vec![((scanner, target), a)];
            // Forty spoofed sources a second, one SYN each, never seen again
            // (in one second, five hundred: more than the table holds).
            let burst = if sec == 10 { 500 } else { 40 };
            for i in 0..burst {
                let n = sec * 1000 + i;
                let mut f = PairAgg { probes: 1, syn: 1, low_port: 80, high_port: 80, ..PairAgg::default() };
                f.ports.insert_port(80);
                pairs.push(((Addr::v4([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]), target), f));
            }
            det.on_interval(
                &ScanReport { pairs, ..ScanReport::default() },
                Timestamp::from_secs(sec),
                &cfg,
                &never,
                &mut out,
            );
            assert!(det.pairs.len() <= cfg.max_tracked, "{} windows", det.pairs.len());
        }
        assert!(det.forgotten > 0);
        assert!(out.iter().any(|e| e.kind == AnomalyKind::PortScan && e.src == Some(scanner)), "{out:#?}");
    }
}
