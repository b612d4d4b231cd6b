//! Slow HTTP (Slowloris, slow headers, slow POST): one client holding many
//! connections to one server open without the server ever answering.
//!
//! Slowloris completes the handshake, sends a request that never ends (a
//! header line every few seconds), and keeps hundreds of such connections
//! open until the server's worker pool is full. Nothing about one packet is
//! wrong and the rates are tiny; what stands out is how many of one
//! client's connections are *pending*: handshake done, no data from the
//! server yet (no segment with PSH from it), not closed. The shard half
//! reports each interval's net change of that count per (client, server,
//! port): +1 when a handshake completes with the server silent, -1 when
//! the server first pushes data, when either side closes, or when the flow
//! leaves the table. Connections answered within the interval cancel out
//! and are never reported. The host half keeps the count and opens an
//! episode when it stays at or above `connections` (and `ratio` times the
//! server's usual peak per client) for `hold` seconds. Servers that speak
//! first (SSH, SMTP, FTP banners) and TLS (the server hello) leave the
//! pending state at once, so Slowloris over TLS is not seen here.

use hashbrown::HashMap;
use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, Episodes};
use super::family::{Context, Family};
use super::history::DecayingPeak;
use super::rules::{IntervalTable, RuleEpisode, RuleObs, merged_by_key};
use crate::base::Addr;
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::decode::{PacketMeta, ip_proto, tcp_flags};
use crate::track::{ConnState, EndReason, Flow, FlowView, Observer, ShardConfig};

/// (client, server, server port) keys a shard reports per interval.
const MAX_KEYS: usize = 16_384;
/// Pairs with a pending count, and servers with a usual peak, kept at most.
const MAX_TRACKED: usize = 65_536;
/// Half-life of a server's usual peak of pending connections per client.
const USUAL_HALF_LIFE_S: f64 = 86_400.0;

/// One interval's change of one pair's pending count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendAgg {
    /// Net change.
    pub delta: i32,
    /// Packet times of the handshakes that made connections pending.
    pub span: Span,
}

impl PendAgg {
    fn merge(&mut self, o: &PendAgg) {
        self.delta += o.delta;
        self.span.merge(&o.span);
    }
}

/// (client, server, server port).
pub type PendKey = (Addr, Addr, u16);
/// One interval's changes.
pub type PendList = Vec<(PendKey, PendAgg)>;

/// The shard half.
pub struct PendingTable {
    table: IntervalTable<PendKey, PendAgg>,
}

impl PendingTable {
    fn add(&mut self, key: PendKey, delta: i32, ts: Option<Timestamp>) {
        if let Some(a) = self.table.entry(key) {
            a.delta += delta;
            if let Some(t) = ts {
                a.span.add(t);
            }
        }
    }
}

impl Observer for PendingTable {
    type Report = PendList;

    fn packet(&mut self, _: &PacketMeta) {}

    #[inline]
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>) {
        let t = f.touch;
        if m.proto != ip_proto::TCP || !m.has_tcp_flags() {
            return;
        }
        let from_orig = f.from_orig();
        // The server's flags before this packet.
        let server_flags = if from_orig { t.peer_flags } else { t.own_flags };
        if server_flags & tcp_flags::PSH != 0 {
            return; // answered already: not pending, counted out when it was
        }
        let pushes = !from_orig && m.tcp_flags & tcp_flags::PSH != 0;
        let opened = matches!(t.before, ConnState::SynSent | ConnState::SynAckSeen)
            && t.after == ConnState::Established;
        let delta = if opened {
            i32::from(!pushes)
        } else if t.before == ConnState::Established && (pushes || t.after != ConnState::Established) {
            -1
        } else {
            0
        };
        // The key only for the few packets that change a count.
        if delta != 0 {
            let key = if from_orig { (m.src, m.dst, m.dport) } else { (m.dst, m.src, m.sport) };
            self.add(key, delta, (delta > 0).then_some(m.ts));
        }
    }

    fn flow_end(&mut self, f: &Flow, _: EndReason) {
        let resp = f.orig.other();
        if f.key.proto != ip_proto::TCP
            || f.state != ConnState::Established
            || f.flags[resp.idx()] & tcp_flags::PSH != 0
        {
            return;
        }
        let (k, o) = (&f.key, f.orig);
        let key = match o {
            crate::track::key::Side::A => (k.a, k.b, k.port_b),
            crate::track::key::Side::B => (k.b, k.a, k.port_a),
        };
        self.add(key, -1, None);
    }

    fn close(&mut self, _: Timestamp) -> PendList {
        let mut v = self.table.close();
        v.retain(|(_, a)| a.delta != 0);
        v
    }

    fn recycle(&mut self, spare: PendList) {
        self.table.recycle(spare);
    }

    fn overflow(&self) -> u64 {
        self.table.overflow
    }
}

/// One pair's pending connections, as the host half keeps them.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    n: i64,
    /// Handshakes of the connections pending since the count last was 0.
    span: Span,
    /// Interval at which the count reached the line (none: under it).
    over_since: Option<Timestamp>,
    peak: i64,
}

/// The host half. Evidence times (`first_seen`, `last_seen`) are the
/// handshakes of the pending connections.
pub struct SlowHttp {
    pending: HashMap<PendKey, Pending, foldhash::fast::FixedState>,
    usual: HashMap<(Addr, u16), DecayingPeak, foldhash::fast::FixedState>,
    episodes: Episodes<RuleEpisode>,
    idx: Vec<(PendKey, u32)>,
    keys: Vec<PendKey>,
}

/// Learns a pair's count into its server's usual peak: only under the line,
/// so an attack never raises it, and only from counts held for `hold`
/// seconds (`settled`): a ramp-up (Slowloris opens its sockets over a few
/// seconds) is not usual.
fn learn(
    usual: &mut HashMap<(Addr, u16), DecayingPeak, foldhash::fast::FixedState>,
    key: PendKey,
    n: f64,
    settled: bool,
    t: Timestamp,
) {
    let (_, server, port) = key;
    if !settled || (usual.len() >= MAX_TRACKED && !usual.contains_key(&(server, port))) {
        return;
    }
    usual.entry((server, port)).or_default().raise(t, n, USUAL_HALF_LIFE_S);
}

impl Family for SlowHttp {
    type Shard = PendingTable;

    fn new(cfg: &DetectConfig) -> SlowHttp {
        SlowHttp {
            pending: HashMap::with_hasher(Default::default()),
            usual: HashMap::with_hasher(Default::default()),
            episodes: Episodes::new(cfg.episodes),
            idx: Vec::new(),
            keys: Vec::new(),
        }
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) -> PendingTable {
        PendingTable { table: IntervalTable::new(MAX_KEYS) }
    }

    fn judge(&mut self, report: &mut PendList, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let (t, cfg) = (cx.t, cx.cfg);
        let c = &cfg.slow;
        let hold = c.hold.saturating_mul(NANOS_PER_SEC);
        let floor = i64::from(c.connections);
        // Pairs at or above `connections` last interval, plus those that got
        // there now: the only ones that can be over the line.
        let mut keys = std::mem::take(&mut self.keys);
        keys.retain(|k| self.pending.get(k).is_some_and(|p| p.n >= floor));
        let mut idx = std::mem::take(&mut self.idx);
        for (key, a) in merged_by_key(report, &mut idx, PendAgg::merge) {
            if !self.pending.contains_key(&key) && (a.delta <= 0 || self.pending.len() >= MAX_TRACKED) {
                continue;
            }
            let p = self.pending.entry(key).or_default();
            if p.n == 0 {
                p.span = a.span;
            } else {
                p.span.merge(&a.span);
            }
            p.n += i64::from(a.delta);
            p.peak = p.peak.max(p.n);
            if p.n <= 0 {
                self.pending.remove(&key);
            } else if p.n >= floor {
                keys.push(key);
            } else {
                p.over_since = None;
                let (n, settled) = (p.n as f64, t.since(p.span.first) >= hold);
                learn(&mut self.usual, key, n, settled, t);
            }
        }
        self.idx = idx;
        report.clear();
        // In key order: deterministic events.
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            let Some(p) = self.pending.get_mut(key) else { continue };
            let (client, server, port) = *key;
            let usual = self.usual.get(&(server, port)).map_or(0.0, |u| u.value(t, USUAL_HALF_LIFE_S));
            let line = f64::from(c.connections).max(c.ratio * usual);
            let ep = EpisodeKey { kind: AnomalyKind::SlowHttp, src: client, dst: server };
            let n = p.n as f64;
            if n < line {
                p.over_since = None;
                learn(&mut self.usual, *key, n, t.since(p.span.first) >= hold, t);
                continue;
            }
            let since = *p.over_since.get_or_insert(t);
            let held = t.since(since);
            let open = self.episodes.is_open(&ep);
            if !c.enabled
                || (!open && held < hold)
                || cfg.allowed(&client, AnomalyKind::SlowHttp)
                || cfg.allowed(&server, AnomalyKind::SlowHttp)
            {
                continue;
            }
            let secs = t.since(p.span.first) as f64 / NANOS_PER_SEC as f64;
            let mut ev = Map::new();
            ev.insert("pending_connections".into(), json!(p.n));
            ev.insert("peak_pending_connections".into(), json!(p.peak));
            ev.insert("server_port".into(), json!(port));
            ev.insert("over_the_line_since".into(), json!(since.to_string()));
            // The count is of this moment: the interval's end.
            ev.insert("counted_at".into(), json!(t.to_string()));
            ev.insert("usual_peak_per_client".into(), json!((usual * 10.0).round() / 10.0));
            let obs = RuleObs {
                ts: t,
                span: p.span,
                window: p.span.first,
                totals: Vec::new(),
                observed_total: None,
                observed: n,
                threshold: line,
                unit: "pending connections",
                severity: Severity::High,
                src: Some(client),
                dst: Some(server),
                evidence: ev,
                message: format!(
                    "{client} holds {} connections to {server} port {port} open that the server has not answered, for {secs:.0} s (line {line:.0}; a browser keeps at most 6): Slowloris-style exhaustion of the server's connection slots",
                    p.n
                ),
            };
            self.episodes.observe(ep, p.span.first, &obs, out);
        }
        self.keys = keys;
    }

    crate::detect::family::episodes_tick!(reconfigure);
}
