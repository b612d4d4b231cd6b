//! Protocol-misuse rules: per-packet checks in the shards, episodes in the host stage.
//!
//! A shard turns each offending packet into a *hit* and folds hits into a
//! per-interval aggregate keyed by (kind, source, destination). Episodes are
//! opened and closed only by the host stage from the merged aggregates, so a
//! source whose bad packets spread over several flows (and shards) is still
//! one episode, and the output does not depend on the number of workers.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use serde_json::{Map, Value, json};

use super::anomaly::{Anomaly, AnomalyKind, FlowTuple, Phase, Severity};
use super::episode::{EpisodeKey, EpisodeState};
use crate::decode::{PacketMeta, ip_proto, tcp_flags};
use crate::time::Timestamp;

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
        }
    }

    /// Folds `o` into `self`; commutative, so merge order never matters.
    pub fn merge(&mut self, o: &HitAgg) {
        self.count += o.count;
        self.last = self.last.max(o.last);
        self.many_flows |= o.many_flows || o.sample != self.sample;
        self.detail |= o.detail;
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

    /// Runs every per-packet rule on `m` and records what fires.
    pub fn inspect(&mut self, m: &PacketMeta) {
        if !m.is_ip() {
            return;
        }
        if m.has_tcp_flags() {
            let bad = invalid_tcp_flags(m.tcp_flags);
            if bad != 0 {
                self.hit(AnomalyKind::TcpInvalidFlags, m, bad);
            }
        }
        // LAND: a packet addressed to its own sender, same port. Ports must
        // have been read; port-less protocols cannot be LAND-shaped this way.
        if m.src == m.dst
            && m.has_ports()
            && m.sport == m.dport
            && matches!(m.proto, ip_proto::TCP | ip_proto::UDP)
            && !m.src.ip().is_unspecified()
        {
            self.hit(AnomalyKind::Land, m, 0);
        }
    }

    fn hit(&mut self, kind: AnomalyKind, m: &PacketMeta, detail: u32) {
        let key = EpisodeKey { kind, src: m.src, dst: m.dst };
        if let Some(agg) = self.map.get_mut(&key) {
            agg.merge(&HitAgg::new(m, detail));
        } else if self.map.len() < self.cap {
            self.map.insert(key, HitAgg::new(m, detail));
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
        let (severity, message) = match key.kind {
            AnomalyKind::TcpInvalidFlags => {
                let names: Vec<Value> =
                    combo::NAMES.iter().filter(|(b, _)| t.detail & b != 0).map(|(_, n)| json!(n)).collect();
                let joined: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                let joined = joined.join(", ");
                ev.insert("flag_sets".into(), Value::Array(names));
                ev.insert("sample_flags".into(), json!(tcp_flags::describe(t.sample_flags)));
                let sev = if t.count >= 100 { Severity::High } else { Severity::Medium };
                let msg = format!(
                    "{} sent {} TCP segment{} with impossible flag sets ({}) to {}: no conforming stack does this; typical of stealth scans and OS fingerprinting",
                    key.src,
                    t.count,
                    if t.count == 1 { "" } else { "s" },
                    joined,
                    key.dst
                );
                (sev, msg)
            }
            // Land; no other kind is ever hit by these rules.
            _ => {
                let msg = format!(
                    "{} received {} packet{} claiming to come from itself on the same port ({}): a LAND attack, which can lock up vulnerable stacks",
                    key.dst,
                    t.count,
                    if t.count == 1 { "" } else { "s" },
                    t.sample.sport
                );
                (Severity::High, msg)
            }
        };
        Anomaly {
            ts,
            phase,
            episode_id: id.to_string(),
            kind: key.kind,
            severity,
            src: Some(key.src),
            dst: Some(key.dst),
            flow: (!t.many_flows).then_some(t.sample),
            observed: t.count as f64,
            unit: "packets",
            baseline: None,
            threshold: 1.0,
            score: t.count as f64,
            evidence: ev,
            message,
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
