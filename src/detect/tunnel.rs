//! Tunnel family: DNS queries and ICMP echoes that carry data.
//!
//! The shard half ([`TunnelTable`]) aggregates per interval; the host half
//! ([`TunnelDetector`]) keeps tumbling windows per (client, server, parent
//! domain) for DNS and per (sender, receiver) for ICMP echo, and applies the
//! rules below.

use hashbrown::HashMap;
use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, EpisodePolicy, Episodes};
use super::evidence::put_count;
use super::family::{Context, Family};
use super::rules::{RuleEpisode, RuleObs, Win, merged_by_key, roll};
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::base::{Addr, Distinct};
use crate::config::TunnelConfig;
use crate::decode::{PacketMeta, ip_proto};
use crate::track::{FlowView, Observer, ShardConfig};

/// DNS (and echo) aggregates a shard keeps per interval.
const MAX_KEYS: usize = 16_384;

/// Query types tunnels favour for their large answers.
fn bulky(qtype: u16) -> bool {
    matches!(qtype, 10 | 16 | 5 | 15 | 255) // NULL, TXT, CNAME, MX, ANY
}

/// DNS queries of one client to one server under one parent domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsAgg {
    /// Queries.
    pub queries: u32,
    /// Distinct query names.
    pub names: Distinct,
    /// Queries whose longest label looks encoded.
    pub encoded: u32,
    /// Queries of NULL/TXT/CNAME/MX/ANY type.
    pub bulky: u32,
    /// Sum of name lengths.
    pub name_bytes: u64,
    /// Longest name.
    pub longest: u8,
    /// The parent domain, for the message.
    pub parent: [u8; 24],
    /// Packet times of the first and last query.
    pub span: Span,
}

impl DnsAgg {
    fn merge(&mut self, o: &DnsAgg) {
        self.queries += o.queries;
        self.names.merge(&o.names);
        self.encoded += o.encoded;
        self.bulky += o.bulky;
        self.name_bytes += o.name_bytes;
        self.longest = self.longest.max(o.longest);
        self.span.merge(&o.span);
        if self.parent == [0; 24] {
            self.parent = o.parent;
        }
    }
}

/// Echo requests from one host to another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoAgg {
    /// Echo requests.
    pub echoes: u32,
    /// Distinct payload sizes.
    pub sizes: Distinct,
    /// Requests with more than 64 bytes of payload.
    pub large: u32,
    /// Payload bytes.
    pub bytes: u64,
    /// Packet times of the first and last request.
    pub span: Span,
}

impl EchoAgg {
    fn merge(&mut self, o: &EchoAgg) {
        self.echoes += o.echoes;
        self.sizes.merge(&o.sizes);
        self.large += o.large;
        self.bytes += o.bytes;
        self.span.merge(&o.span);
    }
}

/// DNS aggregate key: client, server, parent-domain hash.
pub type DnsKey = (Addr, Addr, u32);

/// DNS aggregates by key.
pub type DnsList = Vec<(DnsKey, DnsAgg)>;
/// Echo aggregates by (sender, receiver).
pub type EchoList = Vec<((Addr, Addr), EchoAgg)>;

/// Per-shard, per-interval tunnel aggregates.
pub struct TunnelTable {
    dns: HashMap<DnsKey, DnsAgg, foldhash::fast::FixedState>,
    echo: HashMap<(Addr, Addr), EchoAgg, foldhash::fast::FixedState>,
    spare: Option<(DnsList, EchoList)>,
    cap: usize,
    /// Records not kept because the table was full.
    pub overflow: u64,
}

impl TunnelTable {
    /// At most `cap` keys of each kind per interval.
    pub fn new(cap: usize) -> TunnelTable {
        TunnelTable {
            dns: HashMap::with_hasher(Default::default()),
            echo: HashMap::with_hasher(Default::default()),
            spare: None,
            cap,
            overflow: 0,
        }
    }

    /// Accounts a packet if it is a DNS query or an ICMP echo request.
    pub fn inspect(&mut self, m: &PacketMeta) {
        let d = &m.dns;
        if d.is_valid() && d.flags & crate::decode::dns::DNS_RESPONSE == 0 && m.dport == 53 {
            let key = (m.src, m.dst, d.parent_hash);
            if !self.dns.contains_key(&key) && self.dns.len() >= self.cap {
                self.overflow += 1;
                return;
            }
            let a = self.dns.entry(key).or_default();
            a.queries += 1;
            a.span.add(m.ts);
            a.names.insert_hash(u64::from(d.name_hash) << 32 | u64::from(d.name_hash));
            let encoded = d.looks_encoded();
            a.encoded += u32::from(encoded);
            a.bulky += u32::from(bulky(d.qtype));
            a.name_bytes += u64::from(d.name_len);
            a.longest = a.longest.max(d.name_len);
            if a.parent == [0; 24] {
                a.parent = m.dns_parent;
            }
        } else if m.has_icmp()
            && matches!((m.proto, m.icmp_type), (ip_proto::ICMP, 8) | (ip_proto::ICMPV6, 128))
        {
            let key = (m.src, m.dst);
            if !self.echo.contains_key(&key) && self.echo.len() >= self.cap {
                self.overflow += 1;
                return;
            }
            let a = self.echo.entry(key).or_default();
            a.echoes += 1;
            a.span.add(m.ts);
            a.sizes.insert_hash(u64::from(m.payload_len).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            a.large += u32::from(m.payload_len > 64);
            a.bytes += u64::from(m.payload_len);
        }
    }

    /// Moves this interval's aggregates out (into the recycled lists).
    pub fn drain(&mut self) -> (DnsList, EchoList) {
        let (mut dns, mut echo) = self.spare.take().unwrap_or_default();
        dns.extend(self.dns.drain());
        echo.extend(self.echo.drain());
        (dns, echo)
    }
}

impl Observer for TunnelTable {
    type Report = (DnsList, EchoList);

    #[inline]
    fn packet(&mut self, m: &PacketMeta) {
        if m.is_ip() {
            self.inspect(m);
        }
    }

    fn flow_packet(&mut self, _: &PacketMeta, _: &FlowView<'_>) {}

    fn close(&mut self, _: Timestamp) -> (DnsList, EchoList) {
        self.drain()
    }

    fn recycle(&mut self, spare: (DnsList, EchoList)) {
        self.spare = Some(spare);
    }

    fn overflow(&self) -> u64 {
        self.overflow
    }
}

/// The host-stage tunnel detector.
pub struct TunnelDetector {
    dns: HashMap<DnsKey, Win<DnsAgg>, foldhash::fast::FixedState>,
    echo: HashMap<(Addr, Addr), Win<EchoAgg>, foldhash::fast::FixedState>,
    episodes: Episodes<RuleEpisode>,
}

fn parent_str(p: &[u8; 24]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

impl TunnelDetector {
    /// No history. Episodes last at least a window past the last activity.
    pub fn new(policy: EpisodePolicy, cfg: &TunnelConfig) -> TunnelDetector {
        let policy = EpisodePolicy { cooldown: policy.cooldown.max(cfg.window * NANOS_PER_SEC), ..policy };
        TunnelDetector {
            dns: HashMap::with_hasher(Default::default()),
            echo: HashMap::with_hasher(Default::default()),
            episodes: Episodes::new(policy),
        }
    }

    /// Takes new episode timing; windows and open episodes stay.
    pub fn reconfigure(&mut self, policy: EpisodePolicy, cfg: &TunnelConfig) {
        self.episodes.set_policy(EpisodePolicy {
            cooldown: policy.cooldown.max(cfg.window * NANOS_PER_SEC),
            ..policy
        });
    }

    /// Folds in one merged interval and judges what changed.
    pub fn on_interval(
        &mut self,
        dns: &[(DnsKey, DnsAgg)],
        echo: &[((Addr, Addr), EchoAgg)],
        t: Timestamp,
        cfg: &TunnelConfig,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        let window = cfg.window.saturating_mul(NANOS_PER_SEC);
        // Old windows are dropped each interval: the maps hold only keys
        // active within one window, bounded by the shards' per-interval caps.
        self.dns.retain(|_, w| t.since(w.start) < window);
        self.echo.retain(|_, w| t.since(w.start) < window);
        // Shard parts of one key are judged together, once, in key order.
        let (mut dns_idx, mut echo_idx) = (Vec::new(), Vec::new());
        for (key, agg) in merged_by_key(dns, &mut dns_idx, DnsAgg::merge) {
            let w = roll(&mut self.dns, key, t, window);
            w.agg.merge(&agg);
            let a = w.agg;
            let (client, server, _) = key;
            let parent = parent_str(&a.parent);
            if cfg.allow_domains.iter().any(|d| parent == *d || parent.ends_with(&format!(".{d}")))
                || allowed(&client, AnomalyKind::DnsTunnel)
            {
                continue;
            }
            let name_count = a.names.count();
            let names = name_count.value;
            let avg = a.name_bytes / u64::from(a.queries.max(1));
            let mut reasons = Vec::new();
            if a.encoded >= cfg.encoded_names && names >= u64::from(cfg.encoded_names) {
                reasons.push("encoded_labels");
            }
            if names >= cfg.many_names && avg >= cfg.many_names_avg_len {
                reasons.push("many_long_names");
            }
            if a.bulky >= cfg.bulky_queries && names >= 10 {
                reasons.push("bulky_record_types");
            }
            let key_ep = EpisodeKey { kind: AnomalyKind::DnsTunnel, src: client, dst: server };
            if reasons.is_empty() && !self.episodes.is_open(&key_ep) {
                continue;
            }
            let mut ev = Map::new();
            ev.insert("domain".into(), json!(parent));
            ev.insert("queries".into(), json!(a.queries));
            put_count(&mut ev, "distinct_names", name_count);
            ev.insert("encoded_looking".into(), json!(a.encoded));
            ev.insert("null_txt_cname_mx".into(), json!(a.bulky));
            ev.insert("avg_name_len".into(), json!(avg));
            ev.insert("max_name_len".into(), json!(a.longest));
            ev.insert("reasons".into(), json!(reasons));
            ev.insert("window_start".into(), json!(w.start.to_string()));
            let obs = RuleObs {
                span: a.span,
                window: w.start,
                totals: vec![("queries", u64::from(a.queries))],
                observed_total: None,
                ts: t,
                observed: names as f64,
                threshold: f64::from(cfg.encoded_names),
                unit: "distinct query names",
                severity: Severity::High,
                src: Some(client),
                dst: Some(server),
                evidence: ev,
                message: format!(
                    "{client} sent {} DNS queries for {} distinct names under {parent} via {server} ({}; average name {avg} characters): data tunnelled over DNS (exfiltration or C2)",
                    a.queries,
                    name_count.words(),
                    reasons.join(", ")
                ),
            };
            self.episodes.observe(key_ep, t, &obs, out);
        }
        for (key, agg) in merged_by_key(echo, &mut echo_idx, EchoAgg::merge) {
            let w = roll(&mut self.echo, key, t, window);
            w.agg.merge(&agg);
            let a = w.agg;
            let (src, dst) = key;
            let size_count = a.sizes.count();
            let sizes = size_count.value;
            // Ping sends one payload size (56 bytes on Unix, 32 on Windows);
            // a tunnel's payloads follow the data: many sizes, mostly large.
            let key_ep = EpisodeKey { kind: AnomalyKind::IcmpTunnel, src, dst };
            let judged = a.echoes >= cfg.icmp_echoes && sizes >= cfg.icmp_sizes && a.large * 2 >= a.echoes;
            if (judged || self.episodes.is_open(&key_ep)) && !allowed(&src, AnomalyKind::IcmpTunnel) {
                let mut ev = Map::new();
                ev.insert("echo_requests".into(), json!(a.echoes));
                put_count(&mut ev, "distinct_payload_sizes", size_count);
                ev.insert("avg_payload".into(), json!(a.bytes / u64::from(a.echoes.max(1))));
                ev.insert("payload_bytes".into(), json!(a.bytes));
                ev.insert("window_start".into(), json!(w.start.to_string()));
                let obs = RuleObs {
                    span: a.span,
                    window: w.start,
                    totals: vec![("echo_requests", u64::from(a.echoes)), ("payload_bytes", a.bytes)],
                    observed_total: None,
                    ts: t,
                    observed: sizes as f64,
                    threshold: cfg.icmp_sizes as f64,
                    unit: "distinct payload sizes",
                    severity: Severity::High,
                    src: Some(src),
                    dst: Some(dst),
                    evidence: ev,
                    message: format!(
                        "{src} sent {dst} {} echo requests with {} different payload sizes ({} bytes in all): data tunnelled over ICMP",
                        a.echoes,
                        size_count.words(),
                        a.bytes
                    ),
                };
                self.episodes.observe(key_ep, t, &obs, out);
            }
        }
    }
}

impl Family for TunnelDetector {
    type Shard = TunnelTable;

    fn new(cfg: &DetectConfig) -> TunnelDetector {
        TunnelDetector::new(cfg.episodes, &cfg.tunnel)
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) -> TunnelTable {
        TunnelTable::new(MAX_KEYS)
    }

    fn judge(&mut self, report: &mut (DnsList, EchoList), cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let cfg = cx.cfg;
        let (dns, echo) = report;
        if cfg.tunnel.enabled {
            self.on_interval(dns, echo, cx.t, &cfg.tunnel, &|a, k| cfg.allowed(a, k), out);
        }
        dns.clear();
        echo.clear();
    }

    fn tick(&mut self, t: Timestamp, last: bool, out: &mut Vec<Anomaly>) {
        self.episodes.tick_or_close(t, last, out);
    }

    fn open_count(&self) -> usize {
        self.episodes.open_count()
    }

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        TunnelDetector::reconfigure(self, cfg.episodes, &cfg.tunnel);
    }
}
