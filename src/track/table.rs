//! The per-shard flow table: bounded, evicting, timed out in packet time.
//!
//! Flows live in a slab (`Vec<Flow>`) and are found through an index of
//! `u32` slot numbers ([`crate::base::SlabIndex`]), so the key is stored once
//! and the index costs 16 to 32 bytes a flow. Each timeout class keeps an intrusive
//! LRU list ordered by last-seen time; since packet time only moves forward,
//! expiry pops list heads (O(expired), never a full scan) and eviction at the
//! cap takes the most idle head.

use super::key::{FlowKey, Side};
use crate::base::time::{NANOS_PER_SEC, Timestamp};
use crate::decode::{PacketMeta, ip_proto, tcp_flags};

const NIL: u32 = u32::MAX;

/// TCP connection progress as seen on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Not TCP, or nothing decisive seen yet.
    #[default]
    None,
    /// The originator sent a SYN; no answer yet.
    SynSent,
    /// The responder answered SYN-ACK; the final ACK is pending.
    SynAckSeen,
    /// Three-way handshake completed.
    Established,
    /// Picked up mid-connection (no SYN seen): treated as established.
    Midstream,
    /// One side sent FIN.
    HalfClosed,
    /// Both sides sent FIN.
    Closed,
    /// The responder refused the SYN with RST.
    Rejected,
    /// Torn down by RST after it was open.
    Reset,
}

/// Timeout classes: each has its own idle timeout and LRU list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TimeoutClass {
    /// TCP before the handshake completes.
    TcpEmbryonic = 0,
    /// Open TCP.
    TcpEstablished = 1,
    /// TCP after FIN/RST.
    TcpClosed = 2,
    /// UDP.
    Udp = 3,
    /// ICMP and ICMPv6.
    Icmp = 4,
    /// Other IP protocols and non-IP.
    Other = 5,
}

/// Number of timeout classes.
pub const CLASS_COUNT: usize = 6;

/// Why a flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Idle longer than its class timeout.
    Idle,
    /// Open longer than the active timeout (the flow restarts as a new record).
    Active,
    /// Evicted to make room at the table cap.
    Evicted,
    /// Still open when the input ended.
    Shutdown,
}

/// Timeouts and cap for one table.
#[derive(Clone, Copy, Debug)]
pub struct TableLimits {
    /// Maximum flows held; the most idle is evicted past it.
    pub max_flows: usize,
    /// Idle timeout per [`TimeoutClass`], in nanoseconds.
    pub idle: [u64; CLASS_COUNT],
    /// Active timeout in nanoseconds.
    pub active: u64,
}

impl Default for TableLimits {
    fn default() -> Self {
        let s = NANOS_PER_SEC;
        TableLimits {
            max_flows: 1 << 20,
            idle: [30 * s, 300 * s, 10 * s, 60 * s, 60 * s, 60 * s],
            active: 1800 * s,
        }
    }
}

/// One tracked connection.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    /// The canonical key.
    pub key: FlowKey,
    /// First packet time.
    pub first: Timestamp,
    /// Last packet time.
    pub last: Timestamp,
    /// Bytes on the wire from side A and side B.
    pub bytes: [u64; 2],
    /// Packets from side A and side B.
    pub pkts: [u32; 2],
    /// OR of TCP flags sent by side A and side B.
    pub flags: [u16; 2],
    /// Handshake progress.
    pub state: ConnState,
    /// The side that opened the connection.
    pub orig: Side,
    /// Which ends are inside `[networks] local` (set by the shard when the
    /// flow is created, so a packet never checks prefixes).
    pub local: Locality,
    class: TimeoutClass,
    prev: u32,
    next: u32,
    /// The shard's host-summary slots of both ends, valid for one interval.
    pub hosts: HostSlots,
    /// A word a detector family keeps on the flow (the scan family: where
    /// the flow's opening probe waits for its outcome); 0 when unset.
    pub mark: u32,
}

/// Where a flow's two endpoints sit in the shard's per-interval host
/// summaries: cached on the flow so a packet of a known flow finds its hosts
/// without two more hash lookups. Valid only while `epoch` is the shard's.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostSlots {
    /// The shard interval these slots belong to (a multiple of 4; 0: never
    /// filled), plus in its two low bits, bit [`Side::idx`] once that side
    /// has sent in the interval: its peer and port (both in the key) are
    /// already in the hosts' sets. (Packed so a flow stays 112 bytes.)
    pub epoch: u32,
    /// Slot of side A's and side B's address.
    pub idx: [u32; 2],
}

/// Which ends of a flow are inside the site (`[networks] local`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    /// Side A is local.
    pub a: bool,
    /// Side B is local.
    pub b: bool,
}

impl Locality {
    /// True when the end `side` is local.
    #[inline]
    pub fn of(self, side: Side) -> bool {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }
}

/// What one packet did to the table.
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    /// The packet opened a new flow record.
    pub created: bool,
    /// The flow's handshake state before this packet.
    pub before: ConnState,
    /// The flow's handshake state after this packet.
    pub after: ConnState,
    /// The originator of the flow.
    pub orig: Side,
    /// TCP flags seen so far from the other side (before this packet).
    pub peer_flags: u16,
    /// TCP flags this packet's sender sent before it.
    pub own_flags: u16,
    /// Packets this packet's sender has now sent in the flow (1 for its first).
    pub sent: u32,
    /// Nanoseconds since the flow's previous packet (`u64::MAX` when created):
    /// a packet after a long gap starts a new burst of the conversation.
    pub gap: u64,
    /// The flow's slot, for [`FlowTable::slot_mut`] within the same packet.
    pub slot: u32,
}

/// Counters kept by a table (cumulative).
#[derive(Clone, Copy, Debug, Default)]
pub struct TableStats {
    /// Flow records created.
    pub created: u64,
    /// Ended by idle timeout.
    pub idle: u64,
    /// Ended by active timeout.
    pub active: u64,
    /// Evicted at the cap.
    pub evicted: u64,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

/// A bounded flow table for one shard.
pub struct FlowTable {
    index: crate::base::SlabIndex,
    slots: Vec<Flow>,
    free: Vec<u32>,
    lists: [List; CLASS_COUNT],
    limits: TableLimits,
    /// Cumulative counters.
    pub stats: TableStats,
}

impl FlowTable {
    /// An empty table with the given limits.
    pub fn new(limits: TableLimits) -> FlowTable {
        FlowTable {
            // The index is sized for the cap up front (16 bytes a flow): growing
            // it moves every bucket, and that cost lands in the middle of a
            // traffic surge. The slab's room too: grown by doubling, it was
            // copied into fresh pages at each step (the pages of room never
            // filled are never touched, so they cost no memory).
            index: crate::base::SlabIndex::with_capacity(limits.max_flows.clamp(1, 1 << 22)),
            slots: Vec::with_capacity(limits.max_flows.clamp(1, 1 << 22)),
            free: Vec::new(),
            lists: [List { head: NIL, tail: NIL }; CLASS_COUNT],
            // A per-process random seed: spoofed keys cannot be chosen to collide.
            limits: TableLimits { max_flows: limits.max_flows.max(1), ..limits },
            stats: TableStats::default(),
        }
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no flow is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Approximate bytes of memory held (slab + index), for the memory budget.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Flow>()
            + self.index.memory_bytes()
            + self.free.capacity() * 4
    }

    /// Hints the cache toward the index bucket of a packet's flow hash.
    #[inline]
    pub fn prefetch_bucket(&self, h: u64) {
        self.index.prefetch(h);
    }

    /// Hints the cache toward the record probably filed under `h` (its bucket
    /// should be cached by now: see [`FlowTable::prefetch_bucket`]).
    #[inline]
    pub fn prefetch_flow(&self, h: u64) {
        if let Some(f) = self.probable(h) {
            let p: *const Flow = f;
            crate::base::prefetch(p);
            crate::base::prefetch(p.cast::<u8>().wrapping_add(std::mem::size_of::<Flow>() - 1));
        }
    }

    /// The record probably filed under `h`, unchecked (for prefetching).
    #[inline]
    pub fn probable(&self, h: u64) -> Option<&Flow> {
        self.index.probable(h).and_then(|i| self.slots.get(i as usize))
    }

    /// The flow in `slot` (from [`Touch::slot`] of the packet just touched).
    pub fn slot_mut(&mut self, slot: u32) -> Option<&mut Flow> {
        self.slots.get_mut(slot as usize)
    }

    /// Looks a flow up without touching it.
    pub fn get(&self, key: &FlowKey) -> Option<&Flow> {
        let h = super::key::flow_hash(key);
        let slots = &self.slots;
        self.index.find(h, |i| slots[i as usize].key == *key).map(|i| &slots[i as usize])
    }

    /// Accounts packet `m` (already keyed) to its flow, creating it if needed.
    ///
    /// `on_end` sees every flow that leaves the table as a side effect (an
    /// active-timeout split or an eviction at the cap).
    pub fn touch(
        &mut self,
        m: &PacketMeta,
        key: FlowKey,
        side: Side,
        on_end: &mut impl FnMut(&Flow, EndReason),
    ) -> Touch {
        let now = m.ts;
        // The capture thread's hash of this packet's key, when it made one.
        let h = if m.flow_hash != 0 { m.flow_hash } else { super::key::flow_hash(&key) };
        debug_assert_eq!(h, super::key::flow_hash(&key), "the packet's flow hash is its key's");
        let found = {
            let slots = &self.slots;
            self.index.find(h, |i| slots[i as usize].key == key)
        };
        let (idx, created) = match found {
            Some(i) if now.since(self.slots[i as usize].first) < self.limits.active => (i, false),
            Some(i) => {
                // Active timeout: close this record and start a fresh one in place.
                on_end(&self.slots[i as usize], EndReason::Active);
                self.stats.active += 1;
                self.unlink(i);
                self.slots[i as usize] = Flow::new(key, now, side, m);
                self.push_tail(i);
                self.stats.created += 1;
                (i, true)
            }
            None => {
                if self.index.len() >= self.limits.max_flows {
                    self.evict_one(now, on_end);
                }
                let flow = Flow::new(key, now, side, m);
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = flow;
                        i
                    }
                    None => {
                        self.slots.push(flow);
                        u32::try_from(self.slots.len() - 1).unwrap_or(NIL - 1)
                    }
                };
                self.index.insert(h, i);
                self.push_tail(i);
                self.stats.created += 1;
                (i, true)
            }
        };
        let f = &mut self.slots[idx as usize];
        let before = if created { ConnState::None } else { f.state };
        let s = side.idx();
        let gap = if created { u64::MAX } else { now.since(f.last) };
        f.last = f.last.max(now);
        f.pkts[s] = f.pkts[s].saturating_add(1);
        f.bytes[s] = f.bytes[s].saturating_add(u64::from(m.wire_len));
        let own_flags = f.flags[s];
        if m.has_tcp_flags() {
            f.flags[s] |= m.tcp_flags;
            f.state = next_state(f.state, side == f.orig, m.tcp_flags);
        }
        let after = f.state;
        let orig = f.orig;
        let peer_flags = f.flags[side.other().idx()];
        let sent = f.pkts[s];
        let class = class_of(&f.key, after);
        if class != f.class || !created {
            self.unlink(idx);
            self.slots[idx as usize].class = class;
            self.push_tail(idx);
        }
        Touch { created, before, after, orig, peer_flags, own_flags, sent, gap, slot: idx }
    }

    /// Ends every flow idle past its class timeout at `now`.
    pub fn expire(&mut self, now: Timestamp, on_end: &mut impl FnMut(&Flow, EndReason)) {
        for c in 0..CLASS_COUNT {
            let timeout = self.limits.idle[c];
            loop {
                let head = self.lists[c].head;
                if head == NIL || now.since(self.slots[head as usize].last) < timeout {
                    break;
                }
                on_end(&self.slots[head as usize], EndReason::Idle);
                self.stats.idle += 1;
                self.remove(head);
            }
        }
    }

    /// Ends every flow (end of input), in slab order.
    ///
    /// Slab order reads the table front to back, which the hardware
    /// prefetches; the idle lists' order jumps across it, one cache miss a
    /// flow (measured: the end-of-input drain was a quarter of all
    /// last-level cache misses replaying the 1 M-packet benchmark mix).
    pub fn drain(&mut self, on_end: &mut impl FnMut(&Flow, EndReason)) {
        let mut free = vec![false; self.slots.len()];
        for &i in &self.free {
            if let Some(x) = free.get_mut(i as usize) {
                *x = true;
            }
        }
        for (f, _) in self.slots.iter().zip(&free).filter(|(_, free)| !**free) {
            on_end(f, EndReason::Shutdown);
        }
        self.lists = [List { head: NIL, tail: NIL }; CLASS_COUNT];
        // Everything goes at once: no per-flow hash lookups.
        self.index.clear();
        self.slots.clear();
        self.free.clear();
    }

    fn evict_one(&mut self, now: Timestamp, on_end: &mut impl FnMut(&Flow, EndReason)) {
        // The most idle head relative to its own timeout goes first: a stale
        // UDP flow before a TCP connection that merely paused.
        let mut best: Option<(u32, u128)> = None;
        for c in 0..CLASS_COUNT {
            let head = self.lists[c].head;
            if head == NIL {
                continue;
            }
            let idle = u128::from(now.since(self.slots[head as usize].last));
            let score = idle * 1_000_000 / u128::from(self.limits.idle[c].max(1));
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((head, score));
            }
        }
        if let Some((victim, _)) = best {
            on_end(&self.slots[victim as usize], EndReason::Evicted);
            self.stats.evicted += 1;
            self.remove(victim);
        }
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let key = self.slots[i as usize].key;
        let h = super::key::flow_hash(&key);
        self.index.remove(h, i);
        self.free.push(i);
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, c) = {
            let f = &self.slots[i as usize];
            (f.prev, f.next, f.class as usize)
        };
        if prev == NIL {
            self.lists[c].head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[c].tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
        let f = &mut self.slots[i as usize];
        f.prev = NIL;
        f.next = NIL;
    }

    fn push_tail(&mut self, i: u32) {
        let c = self.slots[i as usize].class as usize;
        let tail = self.lists[c].tail;
        {
            let f = &mut self.slots[i as usize];
            f.prev = tail;
            f.next = NIL;
        }
        if tail == NIL {
            self.lists[c].head = i;
        } else {
            self.slots[tail as usize].next = i;
        }
        self.lists[c].tail = i;
    }
}

impl Flow {
    fn new(key: FlowKey, now: Timestamp, side: Side, m: &PacketMeta) -> Flow {
        // A SYN-ACK as the first packet means we missed the SYN: the *other*
        // side opened the connection (Zeek flips the same way).
        let syn_ack = m.has_tcp_flags()
            && m.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK;
        let orig = match (syn_ack, side) {
            (true, Side::A) => Side::B,
            (true, Side::B) => Side::A,
            (false, s) => s,
        };
        Flow {
            key,
            first: now,
            last: now,
            bytes: [0; 2],
            pkts: [0; 2],
            flags: [0; 2],
            state: ConnState::None,
            orig,
            local: Locality::default(),
            class: class_of(&key, ConnState::None),
            prev: NIL,
            next: NIL,
            hosts: HostSlots::default(),
            mark: 0,
        }
    }

    /// Total packets both ways.
    pub fn packets(&self) -> u64 {
        u64::from(self.pkts[0]) + u64::from(self.pkts[1])
    }
}

fn class_of(key: &FlowKey, state: ConnState) -> TimeoutClass {
    match key.proto {
        ip_proto::TCP => match state {
            ConnState::None | ConnState::SynSent | ConnState::SynAckSeen => TimeoutClass::TcpEmbryonic,
            ConnState::Established | ConnState::Midstream | ConnState::HalfClosed => {
                TimeoutClass::TcpEstablished
            }
            ConnState::Closed | ConnState::Rejected | ConnState::Reset => TimeoutClass::TcpClosed,
        },
        ip_proto::UDP => TimeoutClass::Udp,
        ip_proto::ICMP | ip_proto::ICMPV6 => TimeoutClass::Icmp,
        _ => TimeoutClass::Other,
    }
}

/// The TCP state after a segment with `flags` from the originator (`from_orig`) or responder.
fn next_state(s: ConnState, from_orig: bool, flags: u16) -> ConnState {
    use ConnState::*;
    let syn = flags & tcp_flags::SYN != 0;
    let ack = flags & tcp_flags::ACK != 0;
    let fin = flags & tcp_flags::FIN != 0;
    let rst = flags & tcp_flags::RST != 0;
    match s {
        None if syn && !ack => SynSent,
        None if syn && ack => SynAckSeen,
        None if rst => Reset,
        None => Midstream,
        SynSent if rst && !from_orig => Rejected,
        // The originator's ACK after its SYN: the SYN-ACK went by on a path
        // this sensor does not see (asymmetric routing, one-way tap).
        SynSent if ack && !syn && !rst && from_orig => Established,
        SynSent if syn && ack && !from_orig => SynAckSeen,
        SynAckSeen if rst => Rejected,
        SynAckSeen if ack && !syn && from_orig => Established,
        Established | Midstream if rst => Reset,
        Established | Midstream if fin => HalfClosed,
        HalfClosed if rst => Reset,
        HalfClosed if fin => Closed,
        // The same ports reused for a new connection once the last one is
        // over (clients under load, RST-closed sockets, floods): its
        // handshake is tracked like any other.
        Closed | Reset | Rejected if syn && !ack && !rst && from_orig => SynSent,
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::{Addr, L3, l4};

    /// A TCP segment between 10.0.0.`src` and 10.0.0.`dst` at second `t` (shared by the track tests).
    pub(crate) fn seg(src: u8, dst: u8, sport: u16, dport: u16, flags: u16, t: u64) -> PacketMeta {
        PacketMeta {
            ts: Timestamp::from_secs(t),
            wire_len: 60,
            l3: L3::Ipv4,
            proto: ip_proto::TCP,
            l4: l4::PORTS | l4::TCP_FLAGS,
            src: Addr::v4([10, 0, 0, src]),
            dst: Addr::v4([10, 0, 0, dst]),
            sport,
            dport,
            tcp_flags: flags,
            ..PacketMeta::default()
        }
    }

    fn feed(t: &mut FlowTable, m: &PacketMeta) -> Touch {
        let (k, s) = FlowKey::of(m);
        t.touch(m, k, s, &mut |_, _| {})
    }

    #[test]
    fn handshake_and_close() {
        use tcp_flags::*;
        let mut t = FlowTable::new(TableLimits::default());
        assert!(feed(&mut t, &seg(2, 1, 5000, 80, SYN, 1)).created);
        assert_eq!(feed(&mut t, &seg(1, 2, 80, 5000, SYN | ACK, 1)).after, ConnState::SynAckSeen);
        assert_eq!(feed(&mut t, &seg(2, 1, 5000, 80, ACK, 1)).after, ConnState::Established);
        feed(&mut t, &seg(2, 1, 5000, 80, FIN | ACK, 2));
        let last = feed(&mut t, &seg(1, 2, 80, 5000, FIN | ACK, 2));
        assert_eq!(last.after, ConnState::Closed);
        assert_eq!(t.len(), 1);
        let (k, _) = FlowKey::of(&seg(2, 1, 5000, 80, 0, 0));
        let f = t.get(&k).unwrap();
        assert_eq!(f.packets(), 5);
        assert_eq!(f.key.endpoint(f.orig).0, Addr::v4([10, 0, 0, 2]));
        // Closed flows use the short close timeout (10 s by default).
        let mut ended = Vec::new();
        t.expire(Timestamp::from_secs(13), &mut |f, r| ended.push((f.key, r)));
        assert_eq!(ended, vec![(k, EndReason::Idle)]);
        assert!(t.is_empty());
    }

    #[test]
    fn syn_ack_first_flips_originator_and_rst_rejects() {
        use tcp_flags::*;
        let mut t = FlowTable::new(TableLimits::default());
        let tc = feed(&mut t, &seg(1, 2, 80, 5000, SYN | ACK, 1));
        assert_eq!(tc.orig, FlowKey::of(&seg(1, 2, 80, 5000, 0, 0)).1.other());
        let mut t = FlowTable::new(TableLimits::default());
        feed(&mut t, &seg(2, 1, 5000, 81, SYN, 1));
        assert_eq!(feed(&mut t, &seg(1, 2, 81, 5000, RST | ACK, 1)).after, ConnState::Rejected);
    }

    #[test]
    fn cap_evicts_most_idle_and_counts() {
        let limits = TableLimits { max_flows: 100, ..TableLimits::default() };
        let mut t = FlowTable::new(limits);
        let mut evicted = 0;
        for i in 0..1000u32 {
            let m = seg((i % 250) as u8, 1, (i / 250) as u16 + 1000, 80, tcp_flags::SYN, u64::from(i));
            let (k, s) = FlowKey::of(&m);
            t.touch(&m, k, s, &mut |_, r| {
                assert_eq!(r, EndReason::Evicted);
                evicted += 1;
            });
            assert!(t.len() <= 100);
        }
        assert_eq!(evicted, 900);
        assert_eq!(t.stats.evicted, 900);
        // The survivors are the 100 most recent.
        let newest = seg((999 % 250) as u8, 1, 999 / 250 + 1000, 80, 0, 0);
        assert!(t.get(&FlowKey::of(&newest).0).is_some());
        let oldest = seg(0, 1, 1000, 80, 0, 0);
        assert!(t.get(&FlowKey::of(&oldest).0).is_none());
    }

    #[test]
    fn active_timeout_splits() {
        let limits = TableLimits { active: 10 * NANOS_PER_SEC, ..TableLimits::default() };
        let mut t = FlowTable::new(limits);
        let mut reasons = Vec::new();
        for s in 0..25 {
            let m = seg(2, 1, 5000, 80, tcp_flags::ACK, s);
            let (k, side) = FlowKey::of(&m);
            t.touch(&m, k, side, &mut |_, r| reasons.push(r));
        }
        assert_eq!(reasons, vec![EndReason::Active, EndReason::Active]);
        assert_eq!(t.stats.created, 3);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn flow_is_small() {
        assert!(std::mem::size_of::<Flow>() <= 112, "{}", std::mem::size_of::<Flow>());
    }
}
