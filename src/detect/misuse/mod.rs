//! Protocol-misuse family: per-packet checks in the shards, episodes in the host stage.
//!
//! The shard half ([`MisuseShard`]) turns each offending packet into a
//! *hit* and folds hits into a per-interval aggregate keyed by (kind,
//! source, destination); fragment tracking (`fragments.rs`) adds its
//! findings as hits too. Episodes are opened and closed only by the host
//! half ([`Misuse`]) from the merged aggregates, so a source whose bad
//! packets spread over several flows (and shards) is still one episode, and
//! the output does not depend on the number of workers.

pub mod fragments;

use std::collections::BTreeMap;

use hashbrown::HashMap;
use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, FlowTuple, Phase, Severity};
use super::episode::{EpisodeKey, EpisodeState, Episodes};
use super::family::{Context, Family};
use crate::base::time::Timestamp;
use crate::decode::{PacketMeta, Prejudged, anomaly, ip_proto, tcp_flags};
use crate::track::{FlowView, Observer, ShardConfig};

/// Invalid TCP flag combinations, one bit each (the `detail` of a hit).
pub mod combo {
    /// SYN and FIN together.
    pub const SYN_FIN: u32 = 1 << 0;
    /// SYN and RST together.
    pub const SYN_RST: u32 = 1 << 1;
    /// No flags at all (NULL scan).
    pub const NULL: u32 = 1 << 2;
    /// FIN+PSH+URG without ACK (Xmas scan).
    pub const XMAS: u32 = 1 << 3;
    /// FIN without ACK (FIN scan).
    pub const FIN_NO_ACK: u32 = 1 << 4;
    /// PSH or URG without ACK.
    pub const PSH_URG_NO_ACK: u32 = 1 << 5;
    /// Every one of the six classic flags set.
    pub const ALL: u32 = 1 << 6;

    /// Names for the evidence, in bit order.
    pub const NAMES: [(u32, &str); 7] = [
        (SYN_FIN, "syn_fin"),
        (SYN_RST, "syn_rst"),
        (NULL, "null"),
        (XMAS, "xmas"),
        (FIN_NO_ACK, "fin_without_ack"),
        (PSH_URG_NO_ACK, "psh_or_urg_without_ack"),
        (ALL, "all_flags"),
    ];
}

/// Classifies a TCP flag set; 0 when it is one a real stack may send.
///
/// ```
/// use netvigil::decode::tcp_flags::{ACK, FIN, PSH, SYN, URG};
/// use netvigil::detect::misuse::{combo, invalid_tcp_flags};
/// assert_eq!(invalid_tcp_flags(SYN), 0);
/// assert_eq!(invalid_tcp_flags(FIN | ACK), 0);
/// assert_eq!(invalid_tcp_flags(FIN | PSH | URG), combo::XMAS);
/// assert_eq!(invalid_tcp_flags(SYN | FIN), combo::SYN_FIN);
/// ```
///
/// RFC 9293: every segment after the initial SYN carries ACK, and SYN never
/// travels with FIN or RST. Bare SYN and bare RST (the reply to a segment
/// without ACK) are the only flag sets legal without ACK. ECE/CWR/NS are ignored (ECN negotiation sets them
/// on SYNs legitimately).
pub fn invalid_tcp_flags(flags: u16) -> u32 {
    use tcp_flags::*;
    let f = flags & (FIN | SYN | RST | PSH | ACK | URG);
    let has = |b| f & b != 0;
    if f == FIN | SYN | RST | PSH | ACK | URG {
        return combo::ALL;
    }
    if f == 0 {
        return combo::NULL;
    }
    if has(SYN) && has(FIN) {
        return combo::SYN_FIN;
    }
    if has(SYN) && has(RST) {
        return combo::SYN_RST;
    }
    // FIN, PSH and URG only mean something inside a synchronised connection,
    // where ACK is always on: without it the segment is a probe.
    if has(ACK) || !has(FIN | PSH | URG) {
        return 0;
    }
    if f == FIN | PSH | URG {
        return combo::XMAS;
    }
    if has(FIN) {
        return combo::FIN_NO_ACK;
    }
    combo::PSH_URG_NO_ACK
}

/// Decode anomalies that are protocol violations by the sender (not capture artefacts).
pub const HEADER_ANOMALIES: u32 = anomaly::IPV4_BAD_IHL
    | anomaly::IPV4_BAD_TOTAL_LEN
    | anomaly::IPV4_BAD_OPTIONS
    | anomaly::IPV4_RESERVED_FLAG
    | anomaly::IPV6_BAD_PAYLOAD_LEN
    | anomaly::TTL_ZERO
    | anomaly::TCP_BAD_OFFSET
    | anomaly::UDP_BAD_LEN;

/// `invalid_source` detail bits.
pub mod bad_source {
    /// Multicast source.
    pub const MULTICAST: u32 = 1;
    /// Broadcast source.
    pub const BROADCAST: u32 = 2;
    /// Loopback source seen on a wire.
    pub const LOOPBACK: u32 = 4;
    /// Unspecified source outside DHCP and neighbour discovery.
    pub const UNSPECIFIED: u32 = 8;
    /// Names in bit order.
    pub const NAMES: [(u32, &str); 4] = [
        (MULTICAST, "multicast"),
        (BROADCAST, "broadcast"),
        (LOOPBACK, "loopback"),
        (UNSPECIFIED, "unspecified"),
    ];
}

fn invalid_source(m: &PacketMeta) -> u32 {
    use std::net::IpAddr;
    match m.src.ip() {
        IpAddr::V4(a) => {
            if a.is_multicast() {
                bad_source::MULTICAST
            } else if a.is_broadcast() {
                bad_source::BROADCAST
            } else if a.is_loopback() && !m.dst.ip().is_loopback() {
                bad_source::LOOPBACK
            } else if a.is_unspecified()
                && !(m.proto == ip_proto::UDP && m.sport == 68 && m.dport == 67)
                && m.proto != 2
            {
                // DHCP clients and IGMP reports may use 0.0.0.0 (RFC 2131, RFC 2236).
                bad_source::UNSPECIFIED
            } else {
                0
            }
        }
        IpAddr::V6(a) => {
            if a.is_multicast() {
                bad_source::MULTICAST
            } else if a.is_loopback() && !m.dst.ip().is_loopback() {
                bad_source::LOOPBACK
            } else if a.is_unspecified()
                && !(m.proto == ip_proto::ICMPV6 && matches!(m.icmp_type, 131 | 133 | 135 | 143))
            {
                // Router and neighbour solicitation (DAD) and MLD reports may use :: (RFC 4861, RFC 3810).
                bad_source::UNSPECIFIED
            } else {
                0
            }
        }
    }
}

/// Says whether any stateless per-packet rule fires on `m`. The capture
/// thread runs it (it has cycles to spare; the shard is the pipeline's
/// busiest thread), so the shard re-runs the rules, and records what they
/// find, only for the rare packet that breaks one.
pub fn prejudge(m: &PacketMeta) -> Prejudged {
    let mut fires = false;
    per_packet_rules(m, |_, _| fires = true);
    if fires { Prejudged::Fires } else { Prejudged::Clean }
}

/// Every stateless per-packet rule on `m`, each finding handed to `found`
/// as (kind, detail bits).
#[inline]
fn per_packet_rules(m: &PacketMeta, mut found: impl FnMut(AnomalyKind, u32)) {
    if !m.is_ip() {
        return;
    }
    if m.has_tcp_flags() {
        let bad = invalid_tcp_flags(m.tcp_flags);
        if bad != 0 {
            found(AnomalyKind::TcpInvalidFlags, bad);
        }
    }
    let ports = m.has_ports() && matches!(m.proto, ip_proto::TCP | ip_proto::UDP);
    // LAND: a packet addressed to its own sender, same port. Ports must
    // have been read; port-less protocols cannot be LAND-shaped this way.
    if ports && m.src == m.dst && m.sport == m.dport && !m.src.ip().is_unspecified() {
        found(AnomalyKind::Land, 0);
    }
    // A RST from port 0 is the target refusing a port-0 probe: a reaction, not misuse.
    let refusal = m.has_tcp_flags() && m.tcp_flags & tcp_flags::RST != 0;
    if ports && (m.dport == 0 || (m.sport == 0 && !refusal)) {
        found(AnomalyKind::PortZero, if m.proto == ip_proto::TCP { 1 } else { 2 });
    }
    let header = m.anomalies & HEADER_ANOMALIES;
    if header != 0 {
        found(AnomalyKind::IpHeaderAnomaly, header);
    }
    let bad_src = invalid_source(m);
    if bad_src != 0 {
        found(AnomalyKind::InvalidSource, bad_src);
    }
    if m.v6ext != 0 {
        found(AnomalyKind::Ipv6ExtHeaderAbuse, u32::from(m.v6ext));
    }
    let icmp = icmp_misuse(m);
    if icmp != 0 {
        found(AnomalyKind::IcmpMisuse, icmp);
    }
    // Something that is not DNS on UDP port 53: tunnels and C2 hide
    // there because port 53 is open everywhere. Judged only on packets
    // captured whole, so a short snap length cannot fake it.
    if m.proto == ip_proto::UDP
        && m.has_ports()
        && (m.dport == 53 || m.sport == 53)
        && m.frag & crate::decode::frag::IS_FRAGMENT == 0
        && m.cap_len >= m.wire_len
        && m.payload_len > 0
        && !m.dns.is_valid()
    {
        found(AnomalyKind::ProtocolPortMismatch, 1);
    }
}

/// `icmp_misuse` detail bits.
pub mod icmp_bad {
    /// ICMP/ICMPv6 redirect.
    pub const REDIRECT: u32 = 1;
    /// Packet Too Big / fragmentation needed with an MTU below the protocol minimum.
    pub const SMALL_MTU: u32 = 2;
    /// Echo request reassembling to more than 10,000 bytes.
    pub const OVERSIZED_ECHO: u32 = 4;
    /// Names in bit order.
    pub const NAMES: [(u32, &str); 3] =
        [(REDIRECT, "redirect"), (SMALL_MTU, "too_big_small_mtu"), (OVERSIZED_ECHO, "oversized_echo")];
}

fn icmp_misuse(m: &PacketMeta) -> u32 {
    if !m.has_icmp() {
        return 0;
    }
    match (m.proto, m.icmp_type, m.icmp_code) {
        (ip_proto::ICMP, 5, _) | (ip_proto::ICMPV6, 137, _) => icmp_bad::REDIRECT,
        // IPv6 links carry at least 1,280 bytes (RFC 8200): a smaller PTB
        // only serves to force atomic fragments (RFC 8021).
        (ip_proto::ICMPV6, 2, 0) if m.icmp_rest < 1280 => icmp_bad::SMALL_MTU,
        // IPv4 needs 68 (RFC 791); 0 is the pre-RFC 1191 "no MTU given".
        (ip_proto::ICMP, 3, 4) if (1..68).contains(&(m.icmp_rest & 0xffff)) => icmp_bad::SMALL_MTU,
        _ => 0,
    }
}

/// `ip_fragment_abuse` detail bits.
pub mod frag_bad {
    /// First fragment too small to hold the transport header (RFC 1858).
    pub const TINY: u32 = 1;
    /// Fragments overlapping (teardrop, evasion).
    pub const OVERLAP: u32 = 2;
    /// Reassembles past 65,535 bytes (ping of death).
    pub const OVERSIZE: u32 = 4;
    /// A fragment with more to follow whose data is not a multiple of 8
    /// bytes: offsets count in 8-byte units, so no stack sends one (RFC 791,
    /// RFC 8200 §4.5 has receivers discard it).
    pub const UNALIGNED: u32 = 8;
    /// Pieces with more to follow and no final fragment by the reassembly
    /// timeout (reported when the datagram times out).
    pub const INCOMPLETE: u32 = 16;
    /// Names in bit order.
    pub const NAMES: [(u32, &str); 5] = [
        (TINY, "tiny_first_fragment"),
        (OVERLAP, "overlap"),
        (OVERSIZE, "oversized"),
        (UNALIGNED, "non_final_not_multiple_of_8"),
        (INCOMPLETE, "never_completed"),
    ];
}

/// Names of the detail bits of `kind`, for evidence and messages.
pub fn detail_names(kind: AnomalyKind, detail: u32) -> Vec<&'static str> {
    let table: &[(u32, &str)] = match kind {
        AnomalyKind::TcpInvalidFlags => &combo::NAMES,
        AnomalyKind::IpHeaderAnomaly => &anomaly::NAMES,
        AnomalyKind::InvalidSource => &bad_source::NAMES,
        AnomalyKind::Ipv6ExtHeaderAbuse => &[
            (crate::decode::v6ext::RH0 as u32, "routing_header_type_0"),
            (crate::decode::v6ext::REPEATED as u32, "repeated_header"),
            (crate::decode::v6ext::HBH_NOT_FIRST as u32, "hop_by_hop_not_first"),
            (crate::decode::v6ext::UNKNOWN_OPTION as u32, "unknown_option"),
            (crate::decode::v6ext::TOO_MANY as u32, "too_many_headers"),
        ],
        AnomalyKind::IcmpMisuse => &icmp_bad::NAMES,
        AnomalyKind::IpFragmentAbuse => &frag_bad::NAMES,
        AnomalyKind::PortZero => &[(1, "tcp"), (2, "udp")],
        AnomalyKind::ProtocolPortMismatch => &[(1, "non_dns_on_udp_53")],
        _ => &[],
    };
    table.iter().filter(|(b, _)| detail & b != 0).map(|(_, n)| *n).collect()
}

/// Key of a hit aggregate: the episode it feeds.
pub type HitKey = EpisodeKey;

/// Hits of one key within one interval (or merged across intervals).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HitAgg {
    /// Offending packets.
    pub count: u64,
    /// First offending packet.
    pub first: Timestamp,
    /// Last offending packet.
    pub last: Timestamp,
    /// The first offending packet's flow.
    pub sample: FlowTuple,
    /// The TCP flags of the first offending packet.
    pub sample_flags: u16,
    /// Hits came from more than one flow.
    pub many_flows: bool,
    /// OR of kind-specific detail bits (e.g. [`combo`]).
    pub detail: u32,
    /// Distinct sources folded into this aggregate (1 unless spread over many).
    pub sources: u32,
}

impl HitAgg {
    fn new(m: &PacketMeta, detail: u32) -> HitAgg {
        HitAgg {
            count: 1,
            first: m.ts,
            last: m.ts,
            sample: FlowTuple { src: m.src, dst: m.dst, sport: m.sport, dport: m.dport, proto: m.proto },
            sample_flags: m.tcp_flags,
            many_flows: false,
            detail,
            sources: 1,
        }
    }

    /// Folds `o` into `self`; commutative, so merge order never matters.
    pub fn merge(&mut self, o: &HitAgg) {
        self.count += o.count;
        self.last = self.last.max(o.last);
        self.many_flows |= o.many_flows || o.sample != self.sample;
        self.detail |= o.detail;
        self.sources = self.sources.max(o.sources);
        if (o.first, o.sample, o.sample_flags) < (self.first, self.sample, self.sample_flags) {
            self.first = o.first;
            self.sample = o.sample;
            self.sample_flags = o.sample_flags;
        }
    }
}

/// Per-shard, per-interval hit aggregates with a hard cap.
pub struct HitTable {
    map: HashMap<HitKey, HitAgg, foldhash::fast::FixedState>,
    cap: usize,
    /// Hits dropped because the table was full this interval.
    pub overflow: u64,
}

impl HitTable {
    /// An empty table holding at most `cap` keys per interval.
    pub fn new(cap: usize) -> HitTable {
        HitTable { map: HashMap::with_hasher(Default::default()), cap, overflow: 0 }
    }

    /// Runs every per-packet rule on `m` and records what fires. A packet
    /// the capture thread already found clean (see [`prejudge`]) is skipped.
    pub fn inspect(&mut self, m: &PacketMeta) {
        if m.prejudged == Prejudged::Clean {
            return;
        }
        per_packet_rules(m, |kind, detail| self.hit(kind, m, detail));
    }

    /// Records a finding made outside the per-packet rules (fragment tracking).
    pub fn record(&mut self, kind: AnomalyKind, m: &PacketMeta, detail: u32) {
        self.hit(kind, m, detail);
    }

    /// Records an aggregate built outside a packet (a datagram timing out).
    pub fn record_agg(
        &mut self,
        kind: AnomalyKind,
        src: crate::base::Addr,
        dst: crate::base::Addr,
        agg: HitAgg,
    ) {
        self.add(EpisodeKey { kind, src, dst }, agg);
    }

    fn hit(&mut self, kind: AnomalyKind, m: &PacketMeta, detail: u32) {
        self.add(EpisodeKey { kind, src: m.src, dst: m.dst }, HitAgg::new(m, detail));
    }

    fn add(&mut self, key: EpisodeKey, agg: HitAgg) {
        if let Some(a) = self.map.get_mut(&key) {
            a.merge(&agg);
        } else if self.map.len() < self.cap {
            self.map.insert(key, agg);
        } else {
            self.overflow += 1;
        }
    }

    /// Moves this interval's aggregates into `out` and starts afresh.
    pub fn drain_into(&mut self, out: &mut Vec<(HitKey, HitAgg)>) {
        out.extend(self.map.drain());
    }
}

/// Merges shard aggregates of one interval into key order.
pub fn merge_hits(parts: impl IntoIterator<Item = (HitKey, HitAgg)>) -> BTreeMap<HitKey, HitAgg> {
    let mut merged: BTreeMap<HitKey, HitAgg> = BTreeMap::new();
    for (k, a) in parts {
        merged.entry(k).and_modify(|m| m.merge(&a)).or_insert(a);
    }
    merged
}

/// Sources of one kind toward one target in one interval beyond which they
/// are folded into a single target episode: spoofed packets come from
/// thousands of addresses, and one episode per address is an alert storm.
pub const SPREAD_SOURCES: usize = 8;

/// Folds hits of one kind toward one target from many sources into one
/// aggregate keyed by the target alone (source unspecified). Applies when an
/// interval has more than [`SPREAD_SOURCES`] sources, or when such an
/// aggregate episode is already open.
pub fn spread_over_sources(
    merged: BTreeMap<HitKey, HitAgg>,
    open: &dyn Fn(&HitKey) -> bool,
) -> Vec<(HitKey, HitAgg)> {
    let mut groups: BTreeMap<(AnomalyKind, crate::decode::Addr), Vec<(HitKey, HitAgg)>> = BTreeMap::new();
    for (k, a) in merged {
        groups.entry((k.kind, k.dst)).or_default().push((k, a));
    }
    let mut out = Vec::new();
    for ((kind, dst), members) in groups {
        let wide = EpisodeKey { kind, src: crate::decode::Addr::UNSPECIFIED, dst };
        if members.len() > SPREAD_SOURCES || open(&wide) {
            let n = members.len() as u32;
            let mut it = members.into_iter();
            if let Some((_, mut acc)) = it.next() {
                for (_, a) in it {
                    acc.merge(&a);
                }
                acc.sources = acc.sources.max(n);
                acc.many_flows = true;
                out.push((wide, acc));
            }
        } else {
            out.extend(members);
        }
    }
    spread_over_pairs(out, open)
}

/// Single-source episodes of one kind in one interval beyond which they are
/// folded into one episode with neither source nor target: spoofed random
/// sources toward random destinations (a carpet of forged packets) make a
/// new (source, target) pair with every packet.
pub const SPREAD_PAIRS: usize = 32;

/// Folds a kind's single-source aggregates into one (source and target
/// unspecified) when an interval has more than [`SPREAD_PAIRS`] of them, or
/// when such an episode is already open. Per-target folds stay as they are.
fn spread_over_pairs(v: Vec<(HitKey, HitAgg)>, open: &dyn Fn(&HitKey) -> bool) -> Vec<(HitKey, HitAgg)> {
    use crate::decode::Addr;
    let mut per_kind: BTreeMap<AnomalyKind, usize> = BTreeMap::new();
    for (k, _) in &v {
        if k.src != Addr::UNSPECIFIED {
            *per_kind.entry(k.kind).or_default() += 1;
        }
    }
    let wide = |kind| EpisodeKey { kind, src: Addr::UNSPECIFIED, dst: Addr::UNSPECIFIED };
    let fold =
        |kind: AnomalyKind| per_kind.get(&kind).is_some_and(|&n| n > SPREAD_PAIRS) || open(&wide(kind));
    let mut folded: BTreeMap<AnomalyKind, HitAgg> = BTreeMap::new();
    let mut out = Vec::with_capacity(v.len());
    for (k, a) in v {
        if k.src != Addr::UNSPECIFIED && fold(k.kind) {
            folded
                .entry(k.kind)
                .and_modify(|acc| {
                    acc.merge(&a);
                    acc.sources += 1;
                })
                .or_insert(HitAgg { sources: 1, many_flows: true, ..a });
        } else {
            out.push((k, a));
        }
    }
    out.extend(folded.into_iter().map(|(kind, a)| (wide(kind), a)));
    out
}

/// The shard half: per-packet rules and fragment tracking.
pub struct MisuseShard {
    hits: HitTable,
    frags: fragments::FragTracker,
    spare: Vec<(HitKey, HitAgg)>,
}

/// Datagrams a shard tracks for fragment checks at once.
const MAX_DATAGRAMS: usize = 4096;

impl Observer for MisuseShard {
    type Report = Vec<(HitKey, HitAgg)>;

    #[inline]
    fn packet(&mut self, m: &PacketMeta) {
        self.hits.inspect(m);
        if m.is_ip() && m.frag & crate::decode::frag::IS_FRAGMENT != 0 {
            self.frags.observe(m, &mut self.hits);
        }
    }

    fn flow_packet(&mut self, _: &PacketMeta, _: &FlowView<'_>) {}

    fn close(&mut self, t: Timestamp) -> Self::Report {
        self.frags.expire(t, &mut self.hits);
        let mut hits = std::mem::take(&mut self.spare);
        self.hits.drain_into(&mut hits);
        hits
    }

    fn recycle(&mut self, spare: Self::Report) {
        self.spare = spare;
    }

    fn overflow(&self) -> u64 {
        self.hits.overflow + self.frags.overflow
    }
}

/// The host half: misuse episodes from the merged hits.
pub struct Misuse {
    episodes: Episodes<MisuseEpisode>,
}

impl Family for Misuse {
    type Shard = MisuseShard;

    fn new(cfg: &DetectConfig) -> Misuse {
        Misuse { episodes: Episodes::new(cfg.episodes) }
    }

    fn shard(_: &DetectConfig, shard: &ShardConfig) -> MisuseShard {
        MisuseShard {
            hits: HitTable::new(shard.max_hits),
            frags: fragments::FragTracker::new(MAX_DATAGRAMS),
            spare: Vec::new(),
        }
    }

    fn judge(&mut self, hits: &mut Vec<(HitKey, HitAgg)>, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let cfg = cx.cfg;
        if !cfg.misuse_enabled {
            hits.clear();
            return;
        }
        let merged = merge_hits(hits.drain(..).filter(|(k, _)| !cfg.allowed(&k.src, k.kind)));
        let open = |k: &EpisodeKey| self.episodes.is_open(k);
        for (key, agg) in spread_over_sources(merged, &open) {
            // Redirects toward a host under a flood are the flood's
            // backscatter (routers answering spoofed packets), not an attack of their own.
            let backscatter = key.kind == AnomalyKind::IcmpMisuse
                && agg.detail == icmp_bad::REDIRECT
                && cx.facts.under_flood(&key.dst);
            if !backscatter {
                self.episodes.observe(key, agg.first, &agg, out);
            }
        }
    }

    crate::detect::family::episodes_tick!(reconfigure);
}

/// The ICMP-misuse sentence: each reason says what it does.
fn icmp_sentence(src: &str, n: u64, dst: &str, detail: u32) -> String {
    let pl = if n == 1 { "" } else { "s" };
    let mut what = Vec::new();
    if detail & icmp_bad::REDIRECT != 0 {
        what.push(format!(
            "redirects that rewrite how {dst} routes (check whether {src} is a legitimate router)"
        ));
    }
    if detail & icmp_bad::SMALL_MTU != 0 {
        what.push(
            "Packet Too Big / fragmentation-needed below the minimum MTU, which forces tiny or atomic fragments (evasion, RFC 8021)"
                .to_string(),
        );
    }
    if detail & icmp_bad::OVERSIZED_ECHO != 0 {
        what.push("echo requests reassembling to more than 10,000 bytes (ping-of-death style)".to_string());
    }
    format!("{src} sent {n} ICMP message{pl} to {dst}: {}", what.join("; "))
}

/// Running state of one misuse episode.
#[derive(Clone, Debug)]
pub struct MisuseEpisode {
    total: HitAgg,
}

impl EpisodeState for MisuseEpisode {
    type Obs = HitAgg;

    fn open(obs: &HitAgg) -> Self {
        MisuseEpisode { total: *obs }
    }

    fn merge(&mut self, obs: &HitAgg) {
        self.total.merge(obs);
    }

    fn last_seen(&self) -> Timestamp {
        self.total.last
    }

    fn render(&self, key: &EpisodeKey, phase: Phase, ts: Timestamp, id: &str) -> Anomaly {
        let t = &self.total;
        let mut ev = Map::new();
        ev.insert("packets".into(), json!(t.count));
        ev.insert("first_seen".into(), json!(t.first.to_string()));
        ev.insert("last_seen".into(), json!(t.last.to_string()));
        ev.insert("single_flow".into(), json!(!t.many_flows));
        let names = detail_names(key.kind, t.detail);
        let joined = names.join(", ");
        if !names.is_empty() {
            let key_name = if key.kind == AnomalyKind::TcpInvalidFlags { "flag_sets" } else { "reasons" };
            ev.insert(key_name.into(), json!(names));
        }
        let n = t.count;
        let pl = if n == 1 { "" } else { "s" };
        let (src, dst) = (key.src, key.dst);
        let spread = src == crate::decode::Addr::UNSPECIFIED;
        let pairs = spread && dst == crate::decode::Addr::UNSPECIFIED;
        if pairs {
            ev.insert("source_target_pairs".into(), json!(t.sources));
        } else if spread {
            ev.insert("sources".into(), json!(t.sources));
        }
        let src = if pairs {
            format!("{} spoofed source/target pairs", t.sources)
        } else if spread {
            format!("{} sources (spoofed or distributed)", t.sources)
        } else {
            src.to_string()
        };
        let dst = if pairs { "many targets".to_string() } else { dst.to_string() };
        let (severity, message) = match key.kind {
            AnomalyKind::TcpInvalidFlags => {
                ev.insert("sample_flags".into(), json!(tcp_flags::describe(t.sample_flags)));
                let sev = if n >= 100 { Severity::High } else { Severity::Medium };
                (
                    sev,
                    format!(
                        "{src} sent {n} TCP segment{pl} with impossible flag sets ({joined}) to {dst}: no conforming stack does this; typical of stealth scans and OS fingerprinting"
                    ),
                )
            }
            AnomalyKind::Land => (
                Severity::High,
                format!(
                    "{dst} received {n} packet{pl} claiming to come from itself on the same port ({}): a LAND attack, which can lock up vulnerable stacks",
                    t.sample.sport
                ),
            ),
            AnomalyKind::PortZero => (
                Severity::Medium,
                format!(
                    "{src} sent {n} packet{pl} to or from port 0 ({joined}) toward {dst}: no service uses port 0; scanners and fingerprinting tools do"
                ),
            ),
            AnomalyKind::IpHeaderAnomaly => (
                Severity::Medium,
                format!(
                    "{src} sent {n} packet{pl} with malformed IP headers ({joined}) to {dst}: crafted packets, used for evasion, fingerprinting or crashing parsers"
                ),
            ),
            AnomalyKind::InvalidSource => (
                Severity::High,
                format!(
                    "{n} packet{pl} to {dst} {} source addresses that cannot send ({joined}; from {src}): spoofed traffic (smurf-style reflection or evasion)",
                    if n == 1 { "carries" } else { "carry" }
                ),
            ),
            AnomalyKind::Ipv6ExtHeaderAbuse => (
                Severity::Medium,
                format!(
                    "{src} sent {n} IPv6 packet{pl} to {dst} with abusive extension headers ({joined}): source routing, firewall evasion or a covert channel"
                ),
            ),
            AnomalyKind::IcmpMisuse => (Severity::Medium, icmp_sentence(&src, n, &dst, t.detail)),
            AnomalyKind::IpFragmentAbuse if t.detail == frag_bad::INCOMPLETE => (
                // A lost tail looks the same once; many trains are the attack.
                if n >= 30 { Severity::Medium } else { Severity::Low },
                format!(
                    "{src} sent {n} IP fragment{pl} to {dst} in datagrams that never completed (no final fragment within the 30 s reassembly timeout): each holds a reassembly buffer, and a stream of them exhausts reassembly memory or evades inspection"
                ),
            ),
            AnomalyKind::IpFragmentAbuse => (
                Severity::High,
                format!(
                    "{src} sent {n} malicious IP fragment{pl} to {dst} ({joined}): reassembly attacks crash stacks and evade inspection"
                ),
            ),
            AnomalyKind::ProtocolPortMismatch => (
                Severity::Medium,
                format!(
                    "{n} datagram{pl} between {src} and {dst} on UDP port 53 {} not DNS: something is using the DNS port as a tunnel or covert channel",
                    if n == 1 { "is" } else { "are" }
                ),
            ),
            _ => (Severity::Medium, format!("{src} -> {dst}: {n} packet{pl} ({joined})")),
        };
        Anomaly {
            ts,
            phase,
            episode_id: id.to_string(),
            kind: key.kind,
            severity,
            src: super::rules::some_addr(key.src),
            dst: super::rules::some_addr(key.dst),
            flow: (!t.many_flows).then_some(t.sample),
            observed: t.count as f64,
            unit: "packets",
            baseline: None,
            threshold: 1.0,
            score: t.count as f64,
            evidence: ev,
            message,
            priority: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::*;

    #[test]
    fn flag_classes() {
        assert_eq!(invalid_tcp_flags(SYN), 0);
        assert_eq!(invalid_tcp_flags(SYN | ACK), 0);
        assert_eq!(invalid_tcp_flags(SYN | ECE | CWR), 0);
        assert_eq!(invalid_tcp_flags(RST), 0);
        assert_eq!(invalid_tcp_flags(FIN | ACK), 0);
        assert_eq!(invalid_tcp_flags(PSH | ACK | URG), 0);
        assert_eq!(invalid_tcp_flags(0), combo::NULL);
        assert_eq!(invalid_tcp_flags(SYN | FIN), combo::SYN_FIN);
        assert_eq!(invalid_tcp_flags(SYN | FIN | PSH | URG), combo::SYN_FIN);
        assert_eq!(invalid_tcp_flags(SYN | RST | ACK), combo::SYN_RST);
        assert_eq!(invalid_tcp_flags(FIN | PSH | URG), combo::XMAS);
        assert_eq!(invalid_tcp_flags(FIN), combo::FIN_NO_ACK);
        assert_eq!(invalid_tcp_flags(PSH), combo::PSH_URG_NO_ACK);
        assert_eq!(invalid_tcp_flags(0xff), combo::ALL);
        assert_eq!(invalid_tcp_flags(RST | FIN), combo::FIN_NO_ACK);
        assert_eq!(invalid_tcp_flags(SYN | PSH), combo::PSH_URG_NO_ACK);
        assert_eq!(invalid_tcp_flags(RST | FIN | ACK), 0);
        // Of the 64 combinations of the six classic flags, the legal ones are the
        // 20 with ACK and without SYN+FIN/SYN+RST, plus bare SYN and bare RST.
        let valid = (0u16..64).filter(|&f| invalid_tcp_flags(f) == 0).count();
        assert_eq!(valid, 22);
    }

    /// Regression (cargo-fuzz): the rules read every field of what the
    /// decoder made of a truncated IPv6 extension header.
    #[test]
    fn rules_run_on_the_fuzz_regression_packet() {
        let data: &[u8] = include_bytes!("../../../tests/data/fuzz/decode-ipv6-ext-overread.bin");
        const DLTS: [i32; 12] = [0, 1, 9, 12, 14, 50, 101, 108, 113, 228, 229, 276];
        let (&sel, frame) = data.split_first().unwrap();
        let link = crate::decode::LinkType::from_dlt(DLTS[usize::from(sel) % DLTS.len()]);
        let m = crate::decode::decode(link, Timestamp(1), frame.len() as u32, frame);
        let mut hits = HitTable::new(16);
        hits.inspect(&m);
    }

    #[test]
    fn merge_is_order_independent() {
        let m1 = PacketMeta { ts: Timestamp(5), sport: 1, ..PacketMeta::default() };
        let m2 = PacketMeta { ts: Timestamp(3), sport: 2, ..PacketMeta::default() };
        let mut a = HitAgg::new(&m1, 1);
        a.merge(&HitAgg::new(&m2, 2));
        let mut b = HitAgg::new(&m2, 2);
        b.merge(&HitAgg::new(&m1, 1));
        assert_eq!(a, b);
        assert_eq!((a.count, a.first, a.detail, a.many_flows), (2, Timestamp(3), 3, true));
    }
}
