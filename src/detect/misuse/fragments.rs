//! Fragment tracking: tiny first fragments, overlaps, oversized datagrams and
//! trains that never complete.
//!
//! Runs in the shards (fragments of one datagram share a flow key, so they
//! meet in one shard) on fragment headers only: nothing is reassembled.

use hashbrown::HashMap;

use super::{HitAgg, HitTable, frag_bad, icmp_bad};
use crate::base::Addr;
use crate::base::kind::AnomalyKind;
use crate::base::time::{NANOS_PER_SEC, Timestamp};
use crate::decode::{PacketMeta, ip_proto};
use crate::detect::anomaly::FlowTuple;

/// Most ranges remembered per datagram; more fragments than this are judged
/// against the first ones only (a datagram in 16+ pieces is itself unusual).
const MAX_RANGES: usize = 16;
/// Reassembly timeout (Linux `ipfrag_time`, RFC 791's suggestion is 15 s).
const TIMEOUT_NS: u64 = 30 * NANOS_PER_SEC;
/// Smallest transport header a first fragment must carry (RFC 1858).
const TCP_MIN: u32 = 20;
const UDP_MIN: u32 = 8;
/// Fragments with more to follow, and no final one by the reassembly
/// timeout, that make a train worth reporting. Loss of one final fragment
/// happens (a 4-fragment datagram missing its tail); a sender that never
/// sends tails ties up the receiver's reassembly buffers for 30 s each
/// (the "rose" attack, fragment floods), so 3 pieces and no end is reported,
/// once per datagram, when it times out, at low severity on its own.
pub const INCOMPLETE_TRAIN: u16 = 3;
/// An echo request reassembling past this is not a ping anyone needs: normal
/// pings carry 56 bytes, MTU probes at most a jumbo frame (9,000).
pub const OVERSIZED_ECHO: u32 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DatagramKey {
    src: Addr,
    dst: Addr,
    proto: u8,
    id: u32,
}

#[derive(Clone, Copy, Debug)]
struct Datagram {
    first_seen: Timestamp,
    last_seen: Timestamp,
    /// Fragments seen (saturating), and whether one ended the datagram.
    frags: u16,
    final_seen: bool,
    sport: u16,
    dport: u16,
    ranges: [(u32, u32); MAX_RANGES],
    n: u8,
    echo: bool,
    reported: u32,
}

/// Per-shard fragment state, bounded.
pub struct FragTracker {
    map: HashMap<DatagramKey, Datagram, foldhash::fast::FixedState>,
    cap: usize,
    /// Datagrams not tracked because the table was full.
    pub overflow: u64,
}

impl FragTracker {
    /// Tracks at most `cap` datagrams at once.
    pub fn new(cap: usize) -> FragTracker {
        FragTracker { map: HashMap::with_hasher(Default::default()), cap, overflow: 0 }
    }

    /// Accounts one fragment; findings go to `hits` once per datagram.
    pub fn observe(&mut self, m: &PacketMeta, hits: &mut HitTable) {
        let key = DatagramKey { src: m.src, dst: m.dst, proto: m.proto, id: m.ip_id };
        let start = m.frag_offset;
        let len = m.payload_len; // for fragments: the fragment's data length
        let end = start.saturating_add(len);
        let mut found = 0;
        if start == 0 && m.frag & crate::decode::frag::MORE != 0 {
            let min = match m.proto {
                ip_proto::TCP => TCP_MIN,
                ip_proto::UDP => UDP_MIN,
                _ => 0,
            };
            if len < min {
                found |= frag_bad::TINY;
            }
        }
        if m.frag & crate::decode::frag::MORE != 0 && len % 8 != 0 {
            found |= frag_bad::UNALIGNED;
        }
        // IPv4 counts its 20-byte header inside the 65,535; IPv6 does not.
        let limit = if m.src.is_v4() { 65_535 - 20 } else { 65_535 };
        if end > limit {
            found |= frag_bad::OVERSIZE;
        }
        if !self.map.contains_key(&key) {
            if self.map.len() >= self.cap {
                self.overflow += 1;
                self.report(m, found, 0, hits);
                return;
            }
            self.map.insert(
                key,
                Datagram {
                    first_seen: m.ts,
                    last_seen: m.ts,
                    frags: 0,
                    final_seen: false,
                    sport: 0,
                    dport: 0,
                    ranges: [(0, 0); MAX_RANGES],
                    n: 0,
                    echo: false,
                    reported: 0,
                },
            );
        }
        let Some(d) = self.map.get_mut(&key) else { return };
        d.last_seen = d.last_seen.max(m.ts);
        d.frags = d.frags.saturating_add(1);
        d.final_seen |= m.frag & crate::decode::frag::MORE == 0;
        if start == 0 && m.has_ports() {
            (d.sport, d.dport) = (m.sport, m.dport);
        }
        if start == 0 && matches!((m.proto, m.icmp_type), (ip_proto::ICMP, 8) | (ip_proto::ICMPV6, 128)) {
            d.echo = m.has_icmp();
        }
        if len > 0 && d.ranges[..usize::from(d.n)].iter().any(|&(s, e)| start < e && s < end) {
            found |= frag_bad::OVERLAP;
        }
        if usize::from(d.n) < MAX_RANGES {
            d.ranges[usize::from(d.n)] = (start, end);
            d.n += 1;
        }
        // Past 65,535 it is reported as an oversized fragment already (ping of death).
        let echo_big = d.echo
            && (d.reported | found) & frag_bad::OVERSIZE == 0
            && d.ranges[..usize::from(d.n)].iter().any(|&(_, e)| e > OVERSIZED_ECHO);
        let new = found & !d.reported;
        d.reported |= found;
        let echo_new = echo_big && d.reported & (1 << 16) == 0;
        if echo_new {
            d.reported |= 1 << 16;
        }
        self.report(m, new, u32::from(echo_new), hits);
    }

    fn report(&self, m: &PacketMeta, frag: u32, echo: u32, hits: &mut HitTable) {
        if frag != 0 {
            hits.record(AnomalyKind::IpFragmentAbuse, m, frag);
        }
        if echo != 0 {
            hits.record(AnomalyKind::IcmpMisuse, m, icmp_bad::OVERSIZED_ECHO);
        }
    }

    /// Forgets datagrams older than the reassembly timeout; those that never
    /// got their final fragment are reported as incomplete trains, unless
    /// already reported for something else (their packets are counted there).
    pub fn expire(&mut self, now: Timestamp, hits: &mut HitTable) {
        self.map.retain(|k, d| {
            if now.since(d.first_seen) < TIMEOUT_NS {
                return true;
            }
            if !d.final_seen && d.frags >= INCOMPLETE_TRAIN && d.reported == 0 {
                let sample =
                    FlowTuple { src: k.src, dst: k.dst, sport: d.sport, dport: d.dport, proto: k.proto };
                let agg = HitAgg {
                    count: u64::from(d.frags),
                    first: d.first_seen,
                    last: d.last_seen,
                    sample,
                    sample_flags: 0,
                    many_flows: false,
                    detail: frag_bad::INCOMPLETE,
                    sources: 1,
                };
                hits.record_agg(AnomalyKind::IpFragmentAbuse, k.src, k.dst, agg);
            }
            false
        });
    }
}
