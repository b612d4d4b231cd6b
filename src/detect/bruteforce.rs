//! Brute-force family: one source opening connection after connection to
//! one authentication service of one host.
//!
//! A person logs in once and stays; a password-guessing tool (Hydra,
//! Medusa, Ncrack) opens a connection per guess or per few guesses, at a
//! steady rate for as long as its word list lasts. The shard half notes
//! each connection attempt (a bare SYN) to an authentication port and each
//! handshake that completes; the host half counts them per (source, host,
//! service) in tumbling windows and opens an episode at `attempts` within
//! `window`. Web logins are not judged: browsers open many connections to
//! one server by design, and the guess is inside the encrypted payload.
//!
//! Kerberos (port 88) is counted by message, not by connection: each
//! AS-REQ (a logon's request for a ticket-granting ticket, over UDP or TCP)
//! is one attempt. A workstation sends one or two per user logon and many
//! TGS-REQs (not counted); password spraying against a domain controller
//! sends one AS-REQ per guessed account.

use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, EpisodePolicy, Episodes};
use super::family::{Context, Family};
use super::rules::{IntervalTable, RuleEpisode, RuleObs, Win, merged_by_key, roll};
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::base::{Addr, PortBits, SlabMap};
use crate::decode::{PacketMeta, ip_proto, tcp_flags};
use crate::track::{ConnState, FlowView, Observer, ShardConfig};

/// (source, host, port) keys a shard keeps per interval.
const MAX_KEYS: usize = 16_384;

/// Attempts on one authentication service from one source in an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthAgg {
    /// Connection attempts (bare SYNs).
    pub attempts: u32,
    /// Handshakes that completed.
    pub completed: u32,
    /// Packet times of the first and last attempt.
    pub span: Span,
}

impl AuthAgg {
    fn merge(&mut self, o: &AuthAgg) {
        self.attempts += o.attempts;
        self.completed += o.completed;
        self.span.merge(&o.span);
    }
}

/// (source, host, port).
pub type AuthKey = (Addr, Addr, u16);
/// One interval's attempts.
pub type AuthList = Vec<(AuthKey, AuthAgg)>;

/// The shard half.
pub struct AuthTable {
    services: PortBits,
    table: IntervalTable<AuthKey, AuthAgg>,
}

impl Observer for AuthTable {
    type Report = AuthList;

    fn packet(&mut self, _: &PacketMeta) {}

    #[inline]
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>) {
        if m.dport == KERBEROS || m.sport == KERBEROS {
            if m.dport == KERBEROS && is_as_req(m) && self.services.contains(KERBEROS) {
                if let Some(a) = self.table.entry((m.src, m.dst, KERBEROS)) {
                    a.attempts += 1;
                    a.span.add(m.ts);
                }
            }
            return;
        }
        let t = f.touch;
        if m.proto != ip_proto::TCP
            || !(t.created || t.after != t.before || m.tcp_flags & tcp_flags::SYN != 0)
        {
            return;
        }
        let port = if f.from_orig() { m.dport } else { m.sport };
        if !self.services.contains(port) {
            return;
        }
        let bare_syn = m.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN;
        // A new connection: a bare SYN, unless it repeats one still waiting
        // for its handshake (a retransmission). A SYN on a flow that is open
        // or over is the same ports reused for a new connection.
        let retransmit = matches!(t.before, ConnState::SynSent | ConnState::SynAckSeen);
        if bare_syn && !retransmit && (t.created || f.from_orig() || t.before != ConnState::None) {
            if let Some(a) = self.table.entry((m.src, m.dst, m.dport)) {
                a.attempts += 1;
                a.span.add(m.ts);
            }
        } else if t.after == ConnState::Established && t.before != ConnState::Established {
            let (client, server) = if f.from_orig() { (m.src, m.dst) } else { (m.dst, m.src) };
            if let Some(a) = self.table.entry((client, server, port)) {
                a.completed += 1;
            }
        }
    }

    fn close(&mut self, _: Timestamp) -> AuthList {
        self.table.close()
    }

    fn recycle(&mut self, spare: AuthList) {
        self.table.recycle(spare);
    }

    fn overflow(&self) -> u64 {
        self.table.overflow
    }
}

/// Kerberos' port.
const KERBEROS: u16 = 88;

/// A Kerberos AS-REQ (`[APPLICATION 10]`, DER tag 0x6a) as the first byte of
/// a UDP payload, or after TCP's 4-byte record mark (RFC 4120 §7.2.2).
fn is_as_req(m: &PacketMeta) -> bool {
    if m.payload_len == 0 || !m.has_ports() {
        return false;
    }
    match m.proto {
        ip_proto::UDP => m.payload_head[0] == 0x6a,
        ip_proto::TCP => m.payload_len > 4 && m.payload_head[4] == 0x6a && m.payload_head[0] & 0x80 == 0,
        _ => false,
    }
}

/// The usual name of an authentication port.
fn service_name(p: u16) -> &'static str {
    match p {
        21 => "FTP",
        88 => "Kerberos",
        22 => "SSH",
        23 => "Telnet",
        25 | 465 | 587 => "SMTP",
        110 | 995 => "POP3",
        143 | 993 => "IMAP",
        389 | 636 => "LDAP",
        445 => "SMB",
        1433 => "MS SQL",
        3306 => "MySQL",
        3389 => "RDP",
        5432 => "PostgreSQL",
        5900 => "VNC",
        _ => "authentication",
    }
}

/// The host-stage half.
pub struct BruteForce {
    windows: SlabMap<AuthKey, Win<AuthAgg>>,
    episodes: Episodes<RuleEpisode>,
    idx: Vec<(AuthKey, u32)>,
}

fn policy(p: EpisodePolicy, window: u64) -> EpisodePolicy {
    EpisodePolicy { cooldown: p.cooldown.max(window * NANOS_PER_SEC), ..p }
}

impl Family for BruteForce {
    type Shard = AuthTable;

    fn new(cfg: &DetectConfig) -> BruteForce {
        BruteForce {
            windows: SlabMap::default(),
            episodes: Episodes::new(policy(cfg.episodes, cfg.brute.window)),
            idx: Vec::new(),
        }
    }

    fn shard(cfg: &DetectConfig, _: &ShardConfig) -> AuthTable {
        AuthTable { services: PortBits::of(&cfg.brute.services), table: IntervalTable::new(MAX_KEYS) }
    }

    fn judge(&mut self, report: &mut AuthList, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let (t, cfg) = (cx.t, cx.cfg);
        let b = &cfg.brute;
        let window = b.window.saturating_mul(NANOS_PER_SEC);
        self.windows.retain(|_, w| t.since(w.start) < window);
        let mut idx = std::mem::take(&mut self.idx);
        for (key, agg) in merged_by_key(report, &mut idx, AuthAgg::merge) {
            let w = roll(&mut self.windows, key, t, window);
            w.agg.merge(&agg);
            let (a, start) = (w.agg, w.start);
            let (src, dst, port) = key;
            let ep = EpisodeKey { kind: AnomalyKind::BruteForce, src, dst };
            let crossed = a.attempts >= b.attempts;
            let ongoing = agg.attempts > 0 && self.episodes.is_open(&ep);
            if !b.enabled || !(crossed || ongoing) || cfg.allowed(&src, AnomalyKind::BruteForce) {
                continue;
            }
            let mut ev = Map::new();
            ev.insert("service".into(), json!(port));
            ev.insert("attempts".into(), json!(a.attempts));
            ev.insert("handshakes_completed".into(), json!(a.completed));
            ev.insert("first_attempt".into(), json!(a.span.first.to_string()));
            ev.insert("last_attempt".into(), json!(a.span.last.to_string()));
            ev.insert("window_start".into(), json!(start.to_string()));
            let secs = a.span.secs().max(1.0);
            let obs = RuleObs {
                ts: t,
                span: a.span,
                window: start,
                totals: vec![("attempts", u64::from(a.attempts))],
                observed_total: None,
                observed: f64::from(a.attempts),
                threshold: f64::from(b.attempts),
                unit: "connection attempts",
                severity: if a.attempts >= 10 * b.attempts { Severity::High } else { Severity::Medium },
                src: Some(src),
                dst: Some(dst),
                evidence: ev,
                message: if port == KERBEROS {
                    format!(
                        "{src} sent {} Kerberos AS-REQs (logon attempts) to {dst} in {:.0} s, {:.1} per second: password spraying or guessing against the domain controller (a workstation sends one or two per logon)",
                        a.attempts,
                        secs,
                        f64::from(a.attempts) / secs,
                    )
                } else {
                    format!(
                        "{src} opened {} connections to {} on {dst} (port {port}) in {:.0} s, {:.1} per second ({} completed their handshake): password guessing",
                        a.attempts,
                        service_name(port),
                        secs,
                        f64::from(a.attempts) / secs,
                        a.completed
                    )
                },
            };
            self.episodes.observe(ep, a.span.or_at(t).first, &obs, out);
        }
        self.idx = idx;
        report.clear();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.episodes.set_policy(policy(cfg.episodes, cfg.brute.window));
    }
}
