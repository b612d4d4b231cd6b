//! Lateral-movement family: administrative sessions to internal peers a
//! host never used that way.
//!
//! The shard half reports each *successful* administrative session between
//! two local hosts once: TCP to a configured service (SSH, SMB, RDP, WinRM…)
//! whose handshake completed and that carried payload both ways. Failures
//! and probes are the scan family's business; lateral movement is a working
//! login, one hop at a time.
//!
//! The host half remembers, per client, the (peer, service) pairs it has
//! used, bounded and forgetting the least recently used. Once the client
//! has been seen on the network for the learning period, a new pair is
//! judged:
//!
//! - from a host whose history holds no administrative session at all, one
//!   new session is enough (low severity: a workstation that never
//!   administers anything just did);
//! - from a host that does administer, `new_peers` distinct new peers within
//!   `window` (default 3 in 10 min) make a high-severity episode: an
//!   operator's routine touches known machines, a worm or an intruder
//!   walking the network touches new ones.
//!
//! Jump hosts and management stations go in a `[[hostgroup]]` with
//! `skip = ["lateral_movement"]`: they still learn, they never alert.

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, Episodes};
use super::family::{Context, Family, HostSignals, Restored, SIG_ADMIN, Signal};
use super::history::{Clock, Memory, Recent, Saved, Used, addr};
use super::rules::{RuleEpisode, RuleObs};
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::base::{Addr, PortBits};
use crate::decode::{PacketMeta, ip_proto};
use crate::track::{ConnState, FlowKey, FlowView, Observer, ShardConfig};

/// Sessions a shard follows at once until they prove successful.
const MAX_PENDING: usize = 16_384;
/// A session proves itself within its first packets; later ones are not examined.
const EARLY_PACKETS: u32 = 32;
/// Pending sessions silent this long (ns) are dropped.
const PENDING_TTL: u64 = 600 * NANOS_PER_SEC;
/// Layout version of the saved state.
const STATE_VERSION: u32 = 1;
/// File of the learned state inside `--state-dir`.
pub const STATE_FILE: &str = "lateral.json";

/// One successful administrative session, reported once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Session {
    /// When it proved successful (payload both ways).
    pub ts: Timestamp,
    /// Who opened it.
    pub client: Addr,
    /// Who served it.
    pub server: Addr,
    /// The service port.
    pub port: u16,
    /// Its first packet.
    pub first: Timestamp,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    first: Timestamp,
    last: Timestamp,
    /// Payload seen from the opener and from the server.
    data: [bool; 2],
    done: bool,
}

/// The shard half: follows administrative sessions between local hosts.
pub struct AdminTable {
    services: PortBits,
    pending: HashMap<FlowKey, Pending, foldhash::fast::FixedState>,
    found: Vec<Session>,
    spare: Option<Vec<Session>>,
    overflow: u64,
}

impl AdminTable {
    fn new(services: &[u16]) -> AdminTable {
        AdminTable {
            services: PortBits::of(services),
            pending: HashMap::with_hasher(Default::default()),
            found: Vec::new(),
            spare: None,
            overflow: 0,
        }
    }
}

impl Observer for AdminTable {
    type Report = Vec<Session>;

    fn packet(&mut self, _: &PacketMeta) {}

    #[inline]
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>) {
        if m.proto != ip_proto::TCP || !(f.local.a && f.local.b) || f.touch.sent > EARLY_PACKETS {
            return;
        }
        let from_orig = f.from_orig();
        let port = if from_orig { m.dport } else { m.sport };
        if !self.services.contains(port) || m.payload_len == 0 || f.touch.after != ConnState::Established {
            return;
        }
        if !self.pending.contains_key(f.key) && self.pending.len() >= MAX_PENDING {
            self.overflow += 1;
            return;
        }
        let p = self.pending.entry(*f.key).or_insert(Pending {
            first: m.ts,
            last: m.ts,
            data: [false; 2],
            done: false,
        });
        p.last = m.ts;
        p.data[usize::from(!from_orig)] = true;
        if p.data == [true, true] && !p.done {
            p.done = true;
            let (client, server) = if from_orig { (m.src, m.dst) } else { (m.dst, m.src) };
            self.found.push(Session { ts: m.ts, client, server, port, first: p.first });
        }
    }

    fn close(&mut self, t: Timestamp) -> Vec<Session> {
        self.pending.retain(|_, p| t.since(p.last) < PENDING_TTL);
        let mut v = self.spare.take().unwrap_or_default();
        v.append(&mut self.found);
        v
    }

    fn recycle(&mut self, spare: Vec<Session>) {
        self.spare = Some(spare);
    }

    fn overflow(&self) -> u64 {
        self.overflow
    }
}

/// A (peer, service) pair a host has used.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Pair {
    used: Used,
    sessions: u64,
}

impl Recent for Pair {
    fn used(&self) -> Used {
        self.used
    }
    fn shift(&mut self, ns: i64) {
        self.used.shift(ns);
    }
}

/// One host's administrative history.
#[derive(Clone, Debug)]
struct Host {
    last: Timestamp,
    pairs: Memory<(Addr, u16), Pair>,
    /// New pairs judged within the current window.
    recent: Vec<(Addr, u16, Timestamp)>,
}

impl Recent for Host {
    fn used(&self) -> Used {
        Used { first: self.last, last: self.last }
    }
    fn shift(&mut self, ns: i64) {
        self.last = self.last.offset(ns);
        self.pairs.shift(ns);
        for r in &mut self.recent {
            r.2 = r.2.offset(ns);
        }
    }
}

/// A host's saved pairs: (peer, service, pair).
type SavedPairs = Vec<(String, u16, Pair)>;

/// What is saved: when each local host was first seen, and its pairs.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    seen: Vec<(String, Used)>,
    hosts: Vec<(String, SavedPairs)>,
}

/// The host-stage half.
pub struct LateralDetector {
    hosts: Memory<Addr, Host>,
    /// Every local host's first sighting: a host's own learning period
    /// starts there, so one that appears mid-run is not judged on its
    /// first minute (a capture of sessions years apart is not a history).
    seen: Memory<Addr, Used>,
    episodes: Episodes<RuleEpisode>,
    clock: Clock,
}

impl LateralDetector {
    /// No history.
    pub fn new(cfg: &DetectConfig) -> LateralDetector {
        LateralDetector {
            hosts: Memory::new(cfg.lateral.max_hosts),
            seen: Memory::new(cfg.lateral.max_hosts),
            episodes: Episodes::new(cfg.episodes),
            clock: Clock::default(),
        }
    }

    fn on_interval(
        &mut self,
        sessions: &mut [Session],
        cx: &Context<'_>,
        signals: &mut Vec<(Addr, HostSignals)>,
        out: &mut Vec<Anomaly>,
    ) {
        let (t, cfg) = (cx.t, cx.cfg);
        let l = &cfg.lateral;
        let shift = self.clock.advance(t);
        if shift != 0 {
            self.hosts.shift(shift);
            self.seen.shift(shift);
        }
        let since = Timestamp(t.as_nanos().saturating_sub(cfg.interval_ns));
        for a in cx.hosts.hosts.keys() {
            if cfg.local.contains(a) {
                self.seen.entry(*a, || Used::at(since)).touch(t);
            }
        }
        // Shards report in any order: judge in packet order.
        sessions.sort_unstable();
        let window = l.window.saturating_mul(NANOS_PER_SEC);
        let max_pairs = l.max_pairs;
        for s in sessions.iter() {
            let h = self.hosts.entry(s.client, || Host {
                last: s.ts,
                pairs: Memory::new(max_pairs),
                recent: Vec::new(),
            });
            h.last = h.last.max(s.ts);
            h.pairs.set_cap(max_pairs);
            if let Some(p) = h.pairs.get_mut(&(s.server, s.port)) {
                p.used.touch(s.ts);
                p.sessions += 1;
                continue;
            }
            h.pairs.entry((s.server, s.port), || Pair { used: Used::at(s.ts), sessions: 1 });
            let first_seen = self.seen.get(&s.client).map_or(since, |x| x.first);
            let learning = s.ts.since(first_seen) < l.learning.saturating_mul(NANOS_PER_SEC);
            if learning {
                continue;
            }
            h.recent.retain(|r| s.ts.since(r.2) < window);
            h.recent.push((s.server, s.port, s.ts));
            let (new_peers, history) = novelty(&h.recent, &h.pairs);
            // The behaviour model judges the host against its own history
            // even where this family does not (off, or the host allowed).
            signals.push((s.client, admin_signal(new_peers.len(), history, s, l.window)));
            if !l.enabled || cfg.allowed(&s.client, AnomalyKind::LateralMovement) {
                continue;
            }
            let first_ever = history == 0;
            let many = new_peers.len() as u64 >= u64::from(l.new_peers);
            if !first_ever && !many {
                continue;
            }
            let (severity, threshold, why) = if many {
                (
                    Severity::High,
                    f64::from(l.new_peers),
                    format!("{} new peers within {} s", new_peers.len(), l.window),
                )
            } else {
                (Severity::Low, 1.0, "its first administrative session on record".to_string())
            };
            let listed: Vec<Value> = h
                .recent
                .iter()
                .map(|(peer, port, ts)| json!({"peer": peer.to_string(), "service": port, "first_session": ts.to_string()}))
                .collect();
            let mut ev = Map::new();
            ev.insert("new_sessions".into(), Value::Array(listed));
            ev.insert("new_peers".into(), json!(new_peers.len()));
            ev.insert("usual_peers".into(), json!(history));
            ev.insert("pairs_known".into(), json!(h.pairs.len()));
            ev.insert("service".into(), json!(s.port));
            ev.insert("session_first_packet".into(), json!(s.first.to_string()));
            ev.insert("window_seconds".into(), json!(l.window));
            let message = format!(
                "{} opened a working {} session to {} ({}), a peer it never administered before ({why}; {history} peer{} in its history): possible lateral movement",
                s.client,
                service_name(s.port),
                s.server,
                s.port,
                if history == 1 { "" } else { "s" },
            );
            let obs = RuleObs {
                ts: t,
                span: Span { first: s.first, last: s.ts },
                window: s.ts,
                totals: vec![("new_sessions", 1)],
                observed_total: None,
                observed: new_peers.len() as f64,
                threshold,
                unit: "new administrative peers",
                severity,
                src: Some(s.client),
                dst: Some(s.server),
                evidence: ev,
                message,
            };
            let key =
                EpisodeKey { kind: AnomalyKind::LateralMovement, src: s.client, dst: Addr::UNSPECIFIED };
            self.episodes.observe(key, s.first, &obs, out);
        }
        if t.as_nanos() / NANOS_PER_SEC % 3600 == 0 {
            let ttl = l.forget_after.saturating_mul(NANOS_PER_SEC);
            self.hosts.expire(t, ttl);
            self.seen.expire(t, ttl);
            for h in self.hosts.values_mut() {
                h.pairs.expire(t, ttl);
            }
        }
    }
}

/// The distinct new peers among `recent` and how many peers the host's
/// history holds besides them.
fn novelty(recent: &[(Addr, u16, Timestamp)], pairs: &Memory<(Addr, u16), Pair>) -> (Vec<Addr>, usize) {
    let mut new_peers: Vec<Addr> = recent.iter().map(|r| r.0).collect();
    new_peers.sort_unstable();
    new_peers.dedup();
    // The host's history: peers of pairs that are not among the new ones.
    let mut peers: Vec<Addr> = pairs
        .iter()
        .filter(|((a, p), _)| !recent.iter().any(|r| r.0 == *a && r.1 == *p))
        .map(|((a, _), _)| *a)
        .collect();
    peers.sort_unstable();
    peers.dedup();
    (new_peers, peers.len())
}

/// New administrative peers within the window against the host's own
/// history, for the behaviour model: new peers per peer already known
/// (plus one), so one new peer is much for a host that administers
/// nothing and little for a management station.
fn admin_signal(new_peers: usize, history: usize, s: &Session, window: u64) -> HostSignals {
    HostSignals::one(
        SIG_ADMIN,
        Signal {
            value: new_peers as f64 / (1.0 + history as f64),
            now: new_peers as f64,
            usual: history as f64,
            seconds: window,
            peer: Some(s.server),
            count: u64::from(s.port),
        },
    )
}

/// The usual name of an administrative port.
fn service_name(p: u16) -> &'static str {
    match p {
        22 => "SSH",
        23 => "Telnet",
        135 => "RPC/DCOM",
        139 | 445 => "SMB",
        3389 => "RDP",
        5985 | 5986 => "WinRM",
        5900..=5903 => "VNC",
        _ => "administrative",
    }
}

impl Family for LateralDetector {
    type Shard = AdminTable;

    fn new(cfg: &DetectConfig) -> LateralDetector {
        LateralDetector::new(cfg)
    }

    fn shard(cfg: &DetectConfig, _: &ShardConfig) -> AdminTable {
        AdminTable::new(&cfg.lateral.services)
    }

    fn judge(&mut self, report: &mut Vec<Session>, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let mut signals = std::mem::take(&mut cx.facts.behaviour);
        self.on_interval(report, cx, &mut signals, out);
        cx.facts.behaviour = signals;
        report.clear();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.episodes.set_policy(cfg.episodes);
        self.hosts.set_cap(cfg.lateral.max_hosts);
        self.seen.set_cap(cfg.lateral.max_hosts);
    }

    fn state_file(&self, _: &DetectConfig) -> Option<&'static str> {
        Some(STATE_FILE)
    }

    fn save_state(&self, _: &DetectConfig) -> Option<Vec<u8>> {
        let hosts = self
            .hosts
            .sorted()
            .into_iter()
            .map(|(a, h)| {
                let pairs =
                    h.pairs.sorted().into_iter().map(|((p, port), v)| (p.to_string(), port, *v)).collect();
                (a.to_string(), pairs)
            })
            .collect();
        let seen = self.seen.sorted().into_iter().map(|(a, x)| (a.to_string(), *x)).collect();
        Saved { version: STATE_VERSION, saved_at: self.clock.now, state: State { seen, hosts } }.to_bytes()
    }

    fn load_state(&mut self, text: &str, cfg: &DetectConfig) -> Restored {
        let saved = match serde_json::from_str::<Saved<State>>(text) {
            Ok(s) if s.version != STATE_VERSION => {
                return Restored::Bad(format!(
                    "schema version {} (this build reads {STATE_VERSION})",
                    s.version
                ));
            }
            Ok(s) => s,
            Err(e) => return Restored::Bad(format!("corrupt ({e})")),
        };
        self.clock.restored(saved.saved_at);
        for (a, x) in saved.state.seen {
            if let Some(a) = addr(&a) {
                self.seen.entry(a, || x);
            }
        }
        let mut n = 0;
        for (a, pairs) in saved.state.hosts {
            let Some(host) = addr(&a) else { continue };
            let mut mem = Memory::new(cfg.lateral.max_pairs);
            let mut last = Timestamp::ZERO;
            for (peer, port, p) in pairs {
                if let Some(peer) = addr(&peer) {
                    last = last.max(p.used.last);
                    mem.entry((peer, port), || p);
                }
            }
            self.hosts.entry(host, || Host { last, pairs: mem, recent: Vec::new() });
            n += 1;
        }
        Restored::Loaded(n)
    }
}
