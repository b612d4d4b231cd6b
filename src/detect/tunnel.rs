//! Tunnel family: DNS queries and ICMP echoes that carry data.
//!
//! The shard half ([`TunnelTable`]) aggregates per interval; the host half
//! ([`TunnelDetector`]) keeps tumbling windows per (client, server, parent
//! domain) for DNS and per (sender, receiver) for ICMP echo, and applies the
//! rules below.

use serde_json::{Map, Value, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, EpisodePolicy, Episodes};
use super::evidence::put_count;
use super::family::{Context, Family};
use super::rules::{IntervalTable, RuleEpisode, RuleObs, Win, merged_by_key, roll};
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::base::{Addr, Distinct, SlabMap};
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

/// UDP port-53 traffic of one (client, server) pair that does not parse as DNS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawAgg {
    /// Datagrams on port 53 (either way) captured whole.
    pub packets: u32,
    /// Of which not DNS.
    pub raw: u32,
    /// Payload bytes of those.
    pub raw_bytes: u64,
    /// Packet times of the first and last non-DNS datagram.
    pub span: Span,
}

impl RawAgg {
    fn merge(&mut self, o: &RawAgg) {
        self.packets += o.packets;
        self.raw += o.raw;
        self.raw_bytes += o.raw_bytes;
        self.span.merge(&o.span);
    }
}

/// Raw port-53 aggregates by (client, server).
pub type RawList = Vec<((Addr, Addr), RawAgg)>;

/// One interval's tunnel observations.
#[derive(Default)]
pub struct TunnelReport {
    /// DNS queries by (client, server, parent).
    pub dns: DnsList,
    /// Echo requests by (sender, receiver).
    pub echo: EchoList,
    /// Port-53 datagrams that are not DNS, by (client, server).
    pub raw: RawList,
}

impl crate::track::Merge for TunnelReport {
    fn absorb(&mut self, o: TunnelReport) {
        self.dns.absorb(o.dns);
        self.echo.absorb(o.echo);
        self.raw.absorb(o.raw);
    }
}

/// DNS aggregate key: client, server, parent-domain hash.
pub type DnsKey = (Addr, Addr, u32);

/// DNS aggregates by key.
pub type DnsList = Vec<(DnsKey, DnsAgg)>;
/// Echo aggregates by (sender, receiver).
pub type EchoList = Vec<((Addr, Addr), EchoAgg)>;

/// Per-shard, per-interval tunnel aggregates: slabs behind an index, like
/// every other interval table (one lookup per packet, where the hash maps
/// they replace took two: a membership test for the cap, then the entry).
pub struct TunnelTable {
    dns: IntervalTable<DnsKey, DnsAgg>,
    echo: IntervalTable<(Addr, Addr), EchoAgg>,
    raw: IntervalTable<(Addr, Addr), RawAgg>,
}

impl TunnelTable {
    /// At most `cap` keys of each kind per interval.
    pub fn new(cap: usize) -> TunnelTable {
        TunnelTable {
            dns: IntervalTable::new(cap),
            echo: IntervalTable::new(cap),
            raw: IntervalTable::new(cap),
        }
    }

    /// Accounts a packet if it is a DNS query or an ICMP echo request.
    pub fn inspect(&mut self, m: &PacketMeta) {
        let d = &m.dns;
        // Every whole datagram on UDP 53 counts toward its pair's share of
        // non-DNS: a raw-mode tunnel (iodine) speaks its own format there.
        if m.proto == ip_proto::UDP
            && m.has_ports()
            && (m.dport == 53) != (m.sport == 53)
            && m.frag & crate::decode::frag::IS_FRAGMENT == 0
            && m.cap_len >= m.wire_len
            && m.payload_len > 0
        {
            let key = if m.dport == 53 { (m.src, m.dst) } else { (m.dst, m.src) };
            if let Some(a) = self.raw.entry(key) {
                a.packets += 1;
                if !d.is_valid() {
                    a.raw += 1;
                    a.raw_bytes += u64::from(m.payload_len);
                    a.span.add(m.ts);
                }
            }
        }
        if d.is_valid() && d.flags & crate::decode::dns::DNS_RESPONSE == 0 && m.dport == 53 {
            let Some(a) = self.dns.entry((m.src, m.dst, d.parent_hash)) else {
                return;
            };
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
            let Some(a) = self.echo.entry((m.src, m.dst)) else {
                return;
            };
            a.echoes += 1;
            a.span.add(m.ts);
            a.sizes.insert_hash(u64::from(m.payload_len).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            a.large += u32::from(m.payload_len > 64);
            a.bytes += u64::from(m.payload_len);
        }
    }

    /// Moves this interval's aggregates out (into the recycled lists).
    pub fn drain(&mut self) -> TunnelReport {
        let mut raw = self.raw.close();
        // Pairs with no non-DNS datagram need no judging.
        raw.retain(|(_, a)| a.raw > 0);
        TunnelReport { dns: self.dns.close(), echo: self.echo.close(), raw }
    }
}

impl Observer for TunnelTable {
    type Report = TunnelReport;

    #[inline]
    fn packet(&mut self, m: &PacketMeta) {
        if m.is_ip() {
            self.inspect(m);
        }
    }

    fn flow_packet(&mut self, _: &PacketMeta, _: &FlowView<'_>) {}

    fn close(&mut self, _: Timestamp) -> TunnelReport {
        self.drain()
    }

    fn recycle(&mut self, spare: TunnelReport) {
        self.dns.recycle(spare.dns);
        self.echo.recycle(spare.echo);
        self.raw.recycle(spare.raw);
    }

    fn overflow(&self) -> u64 {
        self.dns.overflow + self.echo.overflow + self.raw.overflow
    }
}

/// The host-stage tunnel detector.
pub struct TunnelDetector {
    dns: SlabMap<DnsKey, Win<DnsAgg>>,
    echo: SlabMap<(Addr, Addr), Win<EchoAgg>>,
    /// Every parent domain of a (client, server) pair together: names sent
    /// straight to a tunnel server, with no registered domain, have a
    /// "parent" of their own each and never accumulate under one.
    pairs: SlabMap<(Addr, Addr), Win<PairDns>>,
    raw: SlabMap<(Addr, Addr), Win<RawAgg>>,
    /// Pairs whose open episode the per-pair rules opened: their per-domain
    /// windows (one query each) must not feed it as well.
    by_pair: Vec<(Addr, Addr)>,
    episodes: Episodes<RuleEpisode>,
}

/// One (client, server) pair's queries over all parent domains.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairDns {
    /// The queries, merged.
    pub agg: DnsAgg,
    /// Distinct parent domains of the encoded-looking names.
    pub encoded_parents: Distinct,
}

/// The decoder's zero-padded parent domain as text.
pub(crate) fn parent_str(p: &[u8; 24]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

impl TunnelDetector {
    /// No history. Episodes last at least a window past the last activity.
    pub fn new(policy: EpisodePolicy, cfg: &TunnelConfig) -> TunnelDetector {
        let policy = EpisodePolicy { cooldown: policy.cooldown.max(cfg.window * NANOS_PER_SEC), ..policy };
        TunnelDetector {
            dns: SlabMap::default(),
            echo: SlabMap::default(),
            pairs: SlabMap::default(),
            raw: SlabMap::default(),
            by_pair: Vec::new(),
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
        r: &TunnelReport,
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
        self.pairs.retain(|_, w| t.since(w.start) < window);
        self.raw.retain(|_, w| t.since(w.start) < window);
        let episodes = &self.episodes;
        self.by_pair
            .retain(|&(c, s)| episodes.is_open(&EpisodeKey { kind: AnomalyKind::DnsTunnel, src: c, dst: s }));
        let (dns, echo) = (&r.dns, &r.echo);
        let mut judged: Vec<(Addr, Addr)> = Vec::new();
        let mut pair_keys: Vec<(Addr, Addr)> = Vec::new();
        // Shard parts of one key are judged together, once, in key order.
        let (mut dns_idx, mut echo_idx) = (Vec::new(), Vec::new());
        for (key, agg) in merged_by_key(dns, &mut dns_idx, DnsAgg::merge) {
            let (client, server, parent_hash) = key;
            // A window opens at the first query that could count toward a
            // rule (the pair's: an encoded-looking name; the domain's: that,
            // a bulky type, or a name as long as the many-names average) and
            // then takes every query until it expires. Ordinary lookups,
            // short A/AAAA names and nearly all of any network's DNS, leave
            // nothing behind: a window per client, server and domain for five
            // minutes was the largest memory the host stage held on a busy
            // link, and it had no cap.
            if agg.encoded > 0 || self.pairs.contains_key(&(client, server)) {
                let pw = roll(&mut self.pairs, (client, server), t, window);
                pw.agg.agg.merge(&agg);
                if agg.encoded > 0 {
                    pw.agg.encoded_parents.insert_hash(u64::from(parent_hash) << 32 | u64::from(parent_hash));
                }
                if pair_keys.last() != Some(&(client, server)) {
                    pair_keys.push((client, server));
                }
            }
            let signal = agg.encoded > 0 || agg.bulky > 0 || u64::from(agg.longest) >= cfg.many_names_avg_len;
            if !signal && !self.dns.contains_key(&key) {
                continue;
            }
            let w = roll(&mut self.dns, key, t, window);
            w.agg.merge(&agg);
            let a = w.agg;
            let parent = parent_str(&a.parent);
            if cfg.allow_domains.iter().any(|d| under_domain(&parent, d))
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
            let continues = self.episodes.is_open(&key_ep) && !self.by_pair.contains(&(client, server));
            if reasons.is_empty() && !continues {
                continue;
            }
            judged.push((client, server));
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
        judged.sort_unstable();
        for pair in pair_keys {
            if judged.binary_search(&pair).is_err() {
                self.judge_pair(pair, t, cfg, allowed, out);
            }
        }
        let mut raw_idx = Vec::new();
        for (pair, agg) in merged_by_key(&r.raw, &mut raw_idx, RawAgg::merge) {
            let w = roll(&mut self.raw, pair, t, window);
            w.agg.merge(&agg);
            let (a, start) = (w.agg, w.start);
            self.judge_raw(pair, a, start, t, cfg, allowed, out);
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

/// Whether `name` is `domain` or a name under it (no string built per test).
fn under_domain(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain).is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

impl TunnelDetector {
    /// Names a client sends one server under many parent domains, most of
    /// them encoded: data in the name itself, no registered domain needed.
    fn judge_pair(
        &mut self,
        (client, server): (Addr, Addr),
        t: Timestamp,
        cfg: &TunnelConfig,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        let Some(w) = self.pairs.get(&(client, server)) else { return };
        let (p, start) = (w.agg, w.start);
        let a = p.agg;
        let parents = p.encoded_parents.count();
        let key_ep = EpisodeKey { kind: AnomalyKind::DnsTunnel, src: client, dst: server };
        let judged = a.encoded >= cfg.encoded_names && parents.value >= u64::from(cfg.encoded_names);
        if !(judged || self.episodes.is_open(&key_ep)) || allowed(&client, AnomalyKind::DnsTunnel) {
            return;
        }
        let names = a.names.count();
        let avg = a.name_bytes / u64::from(a.queries.max(1));
        let mut ev = Map::new();
        ev.insert("domain".into(), Value::Null);
        ev.insert("queries".into(), json!(a.queries));
        put_count(&mut ev, "distinct_names", names);
        ev.insert("encoded_looking".into(), json!(a.encoded));
        put_count(&mut ev, "encoded_parent_domains", parents);
        ev.insert("null_txt_cname_mx".into(), json!(a.bulky));
        ev.insert("avg_name_len".into(), json!(avg));
        ev.insert("max_name_len".into(), json!(a.longest));
        ev.insert("reasons".into(), json!(["encoded_names_without_a_shared_domain"]));
        ev.insert("window_start".into(), json!(start.to_string()));
        let obs = RuleObs {
            span: a.span,
            window: start,
            totals: vec![("queries", u64::from(a.queries))],
            observed_total: None,
            ts: t,
            observed: a.encoded as f64,
            threshold: f64::from(cfg.encoded_names),
            unit: "encoded-looking query names",
            severity: Severity::High,
            src: Some(client),
            dst: Some(server),
            evidence: ev,
            message: format!(
                "{client} sent {server} {} DNS queries whose names look encoded ({} of them, under {} different parent domains; average name {avg} characters): data tunnelled over DNS straight to the server, with no registered domain",
                a.queries,
                a.encoded,
                parents.words()
            ),
        };
        if !self.episodes.is_open(&key_ep) {
            self.by_pair.push((client, server));
        }
        self.episodes.observe(key_ep, t, &obs, out);
    }

    /// A pair whose port-53 traffic is mostly not DNS: a raw-mode tunnel.
    #[allow(clippy::too_many_arguments)]
    fn judge_raw(
        &mut self,
        (client, server): (Addr, Addr),
        a: RawAgg,
        start: Timestamp,
        t: Timestamp,
        cfg: &TunnelConfig,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        let key_ep = EpisodeKey { kind: AnomalyKind::DnsTunnel, src: client, dst: server };
        let judged = a.raw >= cfg.raw_packets && 2 * a.raw >= a.packets;
        if !(judged || self.episodes.is_open(&key_ep) && a.raw > 0)
            || allowed(&client, AnomalyKind::DnsTunnel)
        {
            return;
        }
        let share = f64::from(a.raw) / f64::from(a.packets.max(1));
        let mut ev = Map::new();
        ev.insert("packets".into(), json!(a.raw));
        ev.insert("bytes".into(), json!(a.raw_bytes));
        ev.insert("port_53_packets".into(), json!(a.packets));
        ev.insert("share_not_dns".into(), json!((share * 1000.0).round() / 1000.0));
        ev.insert("reasons".into(), json!(["not_dns_on_port_53"]));
        ev.insert("window_start".into(), json!(start.to_string()));
        let obs = RuleObs {
            span: a.span,
            window: start,
            totals: vec![("packets", u64::from(a.raw)), ("bytes", a.raw_bytes)],
            observed_total: None,
            ts: t,
            observed: f64::from(a.raw),
            threshold: f64::from(cfg.raw_packets),
            unit: "non-DNS datagrams on port 53",
            severity: Severity::High,
            src: Some(client),
            dst: Some(server),
            evidence: ev,
            message: format!(
                "{client} and {server} exchanged {} datagrams on UDP port 53 that are not DNS ({} bytes, {:.0}% of their port-53 traffic): a raw-mode tunnel hiding on the DNS port",
                a.raw,
                a.raw_bytes,
                share * 100.0
            ),
        };
        self.episodes.observe(key_ep, t, &obs, out);
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

    fn judge(&mut self, report: &mut TunnelReport, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let cfg = cx.cfg;
        if cfg.tunnel.enabled {
            self.on_interval(report, cx.t, &cfg.tunnel, &|a, k| cfg.allowed(a, k), out);
        }
        report.dns.clear();
        report.echo.clear();
        report.raw.clear();
    }

    crate::detect::family::episodes_tick!();

    fn reconfigure(&mut self, cfg: &DetectConfig) {
        TunnelDetector::reconfigure(self, cfg.episodes, &cfg.tunnel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(client: u8, parent: u32, encoded: u32, longest: u8) -> (DnsKey, DnsAgg) {
        let mut names = Distinct::default();
        names.insert_hash(u64::from(parent) << 40 | u64::from(longest));
        let agg = DnsAgg {
            queries: 1,
            names,
            encoded,
            longest,
            name_bytes: u64::from(longest),
            ..Default::default()
        };
        ((Addr::v4([10, 0, 0, client]), Addr::v4([10, 0, 0, 53]), parent), agg)
    }

    #[test]
    fn allowlisted_domain_covers_its_subdomains_only() {
        assert!(under_domain("example.com", "example.com"));
        assert!(under_domain("cdn.example.com", "example.com"));
        assert!(!under_domain("badexample.com", "example.com"));
        assert!(!under_domain("com", "example.com"));
    }

    #[test]
    fn ordinary_lookups_open_no_window_and_an_open_window_takes_every_query() {
        let cfg = DetectConfig::default();
        let mut d = TunnelDetector::new(cfg.episodes, &cfg.tunnel);
        let mut out = Vec::new();
        let judge = |d: &mut TunnelDetector, dns: DnsList, s: u64, out: &mut Vec<Anomaly>| {
            let r = TunnelReport { dns, ..Default::default() };
            d.on_interval(&r, Timestamp::from_secs(s), &cfg.tunnel, &|_, _| false, out);
        };
        // Short names: nothing that could count toward a rule.
        judge(&mut d, vec![query(1, 7, 0, 20), query(2, 8, 0, 12)], 1, &mut out);
        assert_eq!((d.dns.len(), d.pairs.len()), (0, 0));
        // An encoded-looking name opens the domain's and the pair's windows…
        judge(&mut d, vec![query(1, 7, 1, 60)], 2, &mut out);
        assert_eq!((d.dns.len(), d.pairs.len()), (1, 1));
        // …which then count ordinary queries too; a long name alone opens
        // only the domain's (the pair's rule counts encoded names).
        judge(&mut d, vec![query(1, 7, 0, 20), query(3, 9, 0, 45)], 3, &mut out);
        assert_eq!((d.dns.len(), d.pairs.len()), (2, 1));
        let w = d.dns.get(&query(1, 7, 0, 0).0).map(|w| w.agg.queries);
        assert_eq!(w, Some(2));
        assert!(out.is_empty());
    }
}
