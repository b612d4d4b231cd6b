//! DNS answer spoofing: two different answers to one query.
//!
//! A DNS server answers a query once. An off-path or on-path attacker who
//! wants to poison a client or resolver cache races the real server with a
//! forged answer: same source address and port, same destination port,
//! same query ID, different records. Whichever arrives first is believed
//! and the other is dropped, so on the wire the query gets two answers that
//! disagree (Kaminsky-style poisoning and `dnsspoof`/`ettercap` both look
//! like this). The shard half remembers each answer for [`WINDOW_NS`] by
//! (server, client, client port, query ID) and reports a second answer
//! whose digest ([`crate::decode::dns::DnsInfo::answer_hash`]: response
//! code and records, TTLs and order left out) differs from the first. A
//! retransmitted query answered twice from a cache gives the same records
//! and is not reported. Answers from another address than the one asked
//! are unsolicited responses, which stub resolvers drop; they are not
//! judged here (they meet in one shard only by chance, and the outcome
//! must not depend on the number of workers).

use serde_json::{Map, json};

use super::DetectConfig;
use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, Episodes};
use super::family::{Context, Family};
use super::rules::{RuleEpisode, RuleObs, merged_by_key};
use crate::base::Addr;
use crate::base::time::{NANOS_PER_SEC, Span, Timestamp};
use crate::decode::{PacketMeta, ip_proto};
use crate::track::{FlowView, Observer, ShardConfig};

/// How long an answer is remembered. A forged answer races the real one,
/// so both arrive within the server's response time (milliseconds to a
/// few hundred); a client retransmits after 1 s (Windows) to 5 s (glibc),
/// and a cache answers the retry with the same records anyway.
pub const WINDOW_NS: u64 = 2 * NANOS_PER_SEC;
/// Answers a shard remembers at once (about 30 bytes each): 8,192 answers
/// per second per shard before any is turned away.
const MAX_ANSWERS: usize = 16_384;

/// One answer as remembered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Answer {
    /// Packet time.
    pub ts: Timestamp,
    /// Digest of the records.
    pub digest: u32,
    /// First IPv4 address answered.
    pub v4: [u8; 4],
    /// The IP TTL it arrived with: a forger's hop count differs from the server's.
    pub ip_ttl: u8,
    /// Response code.
    pub rcode: u8,
}

/// (client port, query ID).
type QueryKey = (Addr, Addr, u16, u16);

/// Conflicting answers from one server to one client in one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoofAgg {
    /// Answers that contradicted an earlier answer to the same query.
    pub conflicts: u32,
    /// Packet times of the contradicting answers and of the answers they contradicted.
    pub span: Span,
    /// The earliest conflict: client port, query ID, question type, domain,
    /// and the two answers in arrival order.
    pub port: u16,
    /// Query ID of the earliest conflict.
    pub qid: u16,
    /// Question type of the earliest conflict.
    pub qtype: u16,
    /// Parent domain of the question (as the decoder keeps it).
    pub domain: [u8; 24],
    /// The answer that arrived first.
    pub first: Answer,
    /// The answer that contradicted it.
    pub second: Answer,
}

impl SpoofAgg {
    fn merge(&mut self, o: &SpoofAgg) {
        if o.conflicts == 0 {
            return;
        }
        if self.conflicts == 0 || (o.second.ts, o.port, o.qid) < (self.second.ts, self.port, self.qid) {
            let c = self.conflicts;
            let span = self.span;
            *self = *o;
            self.conflicts = c;
            self.span = span;
        }
        self.conflicts += o.conflicts;
        self.span.merge(&o.span);
    }
}

/// (server, client).
pub type SpoofKey = (Addr, Addr);
/// One interval's conflicts.
pub type SpoofList = Vec<(SpoofKey, SpoofAgg)>;

/// The shard half: recent answers, and this interval's conflicts.
pub struct AnswerTable {
    recent: hashbrown::HashMap<QueryKey, (Answer, u16), foldhash::fast::FixedState>,
    conflicts: super::rules::IntervalTable<SpoofKey, SpoofAgg>,
    overflow: u64,
}

impl Observer for AnswerTable {
    type Report = SpoofList;

    #[inline]
    fn packet(&mut self, m: &PacketMeta) {
        if m.proto != ip_proto::UDP || m.sport != 53 || m.dns.answer_hash == 0 || !m.is_ip() {
            return;
        }
        // A cut answer cannot be compared with a whole one.
        if m.cap_len < m.wire_len || m.dns.flags & crate::decode::dns::DNS_RESPONSE == 0 {
            return;
        }
        let qid = u16::from_be_bytes([m.payload_head[0], m.payload_head[1]]);
        let key = (m.src, m.dst, m.dport, qid);
        let ans = Answer {
            ts: m.ts,
            digest: m.dns.answer_hash,
            v4: m.dns.answer_v4,
            ip_ttl: m.ttl,
            rcode: m.dns.rcode,
        };
        match self.recent.get(&key) {
            Some(&(first, qtype)) if m.ts.since(first.ts) <= WINDOW_NS => {
                if first.digest != ans.digest && qtype == m.dns.qtype {
                    if let Some(a) = self.conflicts.entry((m.src, m.dst)) {
                        // The evidence spans both answers: the first is the likely forgery.
                        let mut span = Span::at(first.ts);
                        span.add(m.ts);
                        a.merge(&SpoofAgg {
                            conflicts: 1,
                            span,
                            port: m.dport,
                            qid,
                            qtype,
                            domain: m.dns_parent,
                            first,
                            second: ans,
                        });
                    }
                }
            }
            _ if self.recent.len() >= MAX_ANSWERS && !self.recent.contains_key(&key) => self.overflow += 1,
            _ => {
                self.recent.insert(key, (ans, m.dns.qtype));
            }
        }
    }

    fn flow_packet(&mut self, _: &PacketMeta, _: &FlowView<'_>) {}

    fn close(&mut self, t: Timestamp) -> SpoofList {
        self.recent.retain(|_, (a, _)| t.since(a.ts) <= WINDOW_NS);
        self.conflicts.close()
    }

    fn recycle(&mut self, spare: SpoofList) {
        self.conflicts.recycle(spare);
    }

    fn overflow(&self) -> u64 {
        self.overflow + self.conflicts.overflow
    }
}

fn answer_json(a: &Answer) -> serde_json::Value {
    json!({
        "time": a.ts.to_string(),
        "first_ipv4": (a.v4 != [0; 4]).then(|| std::net::Ipv4Addr::from(a.v4).to_string()),
        "ip_ttl": a.ip_ttl,
        "rcode": a.rcode,
    })
}

fn answer_words(a: &Answer) -> String {
    let what = if a.v4 != [0; 4] {
        std::net::Ipv4Addr::from(a.v4).to_string()
    } else if a.rcode == 3 {
        "NXDOMAIN".to_string()
    } else {
        format!("records without an IPv4 address (rcode {})", a.rcode)
    };
    format!("{what} at {} (IP TTL {})", a.ts, a.ip_ttl)
}

/// The host half.
pub struct DnsSpoof {
    episodes: Episodes<RuleEpisode>,
    idx: Vec<(SpoofKey, u32)>,
}

impl Family for DnsSpoof {
    type Shard = AnswerTable;

    fn new(cfg: &DetectConfig) -> DnsSpoof {
        DnsSpoof { episodes: Episodes::new(cfg.episodes), idx: Vec::new() }
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) -> AnswerTable {
        AnswerTable {
            recent: hashbrown::HashMap::with_hasher(Default::default()),
            conflicts: super::rules::IntervalTable::new(4096),
            overflow: 0,
        }
    }

    fn judge(&mut self, report: &mut SpoofList, cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let (t, cfg) = (cx.t, cx.cfg);
        let mut idx = std::mem::take(&mut self.idx);
        for ((server, client), a) in merged_by_key(report, &mut idx, SpoofAgg::merge) {
            let kind = AnomalyKind::DnsSpoofing;
            if !cfg.misuse_enabled || cfg.allowed(&server, kind) || cfg.allowed(&client, kind) {
                continue;
            }
            let domain = super::tunnel::parent_str(&a.domain);
            let mut ev = Map::new();
            ev.insert("conflicting_answers".into(), json!(a.conflicts));
            ev.insert("first_seen".into(), json!(a.span.first.to_string()));
            ev.insert("last_seen".into(), json!(a.span.last.to_string()));
            ev.insert("query_id".into(), json!(a.qid));
            ev.insert("client_port".into(), json!(a.port));
            ev.insert("question_type".into(), json!(a.qtype));
            ev.insert("domain".into(), json!(domain));
            ev.insert("first_answer".into(), answer_json(&a.first));
            ev.insert("second_answer".into(), answer_json(&a.second));
            ev.insert("likely_forged".into(), json!("first_answer"));
            let n = a.conflicts;
            let obs = RuleObs {
                ts: t,
                span: a.span,
                window: t,
                totals: vec![("conflicting_answers", u64::from(n))],
                observed_total: Some("conflicting_answers"),
                observed: f64::from(n),
                threshold: 1.0,
                unit: "conflicting answers",
                severity: Severity::High,
                src: Some(server),
                dst: Some(client),
                evidence: ev,
                message: format!(
                    "{client} received two different answers from {server} to one DNS query (ID {}, port {}, type {}, under {domain}): first {}, then {}{}. A server answers once; the first to arrive wins the race and is most likely forged: cache poisoning or a man in the middle",
                    a.qid,
                    a.port,
                    a.qtype,
                    answer_words(&a.first),
                    answer_words(&a.second),
                    if n > 1 { format!("; {n} such answers") } else { String::new() },
                ),
            };
            let ep = EpisodeKey { kind, src: server, dst: client };
            self.episodes.observe(ep, a.span.first, &obs, out);
        }
        self.idx = idx;
        report.clear();
    }

    crate::detect::family::episodes_tick!(reconfigure);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(ts: u64, digest: u32) -> PacketMeta {
        let mut m = PacketMeta {
            ts: Timestamp(ts),
            proto: ip_proto::UDP,
            sport: 53,
            dport: 40_000,
            src: Addr::v4([10, 0, 0, 53]),
            dst: Addr::v4([10, 0, 0, 7]),
            cap_len: 100,
            wire_len: 100,
            l3: crate::decode::L3::Ipv4,
            payload_head: [0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1],
            ..PacketMeta::default()
        };
        m.dns.flags = crate::decode::dns::DNS_VALID | crate::decode::dns::DNS_RESPONSE;
        m.dns.answer_hash = digest;
        m
    }

    fn table() -> AnswerTable {
        AnswerTable {
            recent: hashbrown::HashMap::with_hasher(Default::default()),
            conflicts: crate::detect::rules::IntervalTable::new(16),
            overflow: 0,
        }
    }

    #[test]
    fn a_second_different_answer_is_a_conflict() {
        let mut t = table();
        t.packet(&answer(1_000, 7));
        t.packet(&answer(150_000_000, 9));
        let r = t.close(Timestamp(NANOS_PER_SEC));
        assert_eq!(r.len(), 1);
        let a = r[0].1;
        assert_eq!((a.conflicts, a.qid, a.first.digest, a.second.digest), (1, 0x1234, 7, 9));
    }

    #[test]
    fn a_repeated_answer_or_a_late_one_is_not() {
        let mut t = table();
        t.packet(&answer(1_000, 7));
        t.packet(&answer(900_000_000, 7));
        t.packet(&answer(1_000 + WINDOW_NS + 1, 9));
        assert!(t.close(Timestamp(4 * NANOS_PER_SEC)).is_empty());
    }
}
