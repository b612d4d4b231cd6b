//! Track: per-connection state in N shards that share nothing.
//!
//! Each shard owns a [`FlowTable`], the per-interval host summaries of the
//! packets it saw, and an [`Observer`]: the per-packet halves of the
//! detector families, which this module knows only through that trait (the
//! families live in `detect` and are registered there). At every `Tick` a
//! shard expires idle flows and hands its interval to the host stage as one
//! [`ShardReport`]; nothing here reads a clock or does I/O.

pub mod hosts;
pub mod key;
pub mod table;

use crate::base::time::{NANOS_PER_SEC, Timestamp};
use crate::base::{Addr, Distinct, TopK};
use crate::config::Config;
use crate::decode::{PacketMeta, ip_proto, tcp_flags};
use crossbeam_channel::{Receiver, Sender};
pub use key::{FlowKey, Side};
pub use table::{ConnState, EndReason, Flow, FlowTable, Locality, TableLimits};

/// What the capture thread sends a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// Decoded packets, in capture order.
    Batch(Vec<PacketMeta>),
    /// Every packet before this time has been sent: close the interval.
    /// The instant is when the capture thread sent it (for latency metrics only).
    Tick(Timestamp, std::time::Instant),
    /// End of input at this packet time: report, end every flow, stop.
    Finish(Timestamp),
}

/// One host's traffic within one interval, as one shard saw it.
///
/// Laid out (`repr(C)`, inside a cache-line-aligned [`HostRow`] after the
/// address) by how often a field is touched: every packet updates its
/// sender's first line (the address and the sent counters) and its
/// receiver's second (received counters and span), plus both ends' top-K;
/// the sets and the rarer counters, touched once a flow or less, come last.
/// Before, a received packet touched four lines of its receiver's record;
/// now it touches three, and the lookup's key compare shares the line the
/// sender's counters are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HostCounters {
    /// Packets sent.
    pub pkts_out: u64,
    /// Wire bytes sent.
    pub bytes_out: u64,
    /// Bare SYNs sent (connection attempts).
    pub syn_out: u64,
    /// UDP packets sent (answers, for telling a flood from a conversation).
    pub udp_out: u64,
    /// ICMP packets sent.
    pub icmp_out: u64,
    /// Flows this host opened.
    pub flows_out: u64,
    /// Packets received.
    pub pkts_in: u64,
    /// Wire bytes received.
    pub bytes_in: u64,
    /// Bare SYNs received.
    pub syn_in: u64,
    /// TCP packets received.
    pub tcp_in: u64,
    /// UDP packets received.
    pub udp_in: u64,
    /// ICMP/ICMPv6 packets received.
    pub icmp_in: u64,
    /// Packet times of the first and last packet received.
    pub span_in: crate::base::time::Span,
    /// Heaviest destinations of this host.
    pub top_dst: TopK,
    /// Heaviest sources toward this host.
    pub top_src: TopK,
    /// DNS queries this host sent.
    pub dns_queries: u64,
    /// Of those, queries whose name looks like encoded data (long, random label).
    pub dns_encoded: u64,
    /// Other IP packets received.
    pub other_in: u64,
    /// Flows opened toward this host.
    pub flows_in: u64,
    /// Connections to this host whose three-way handshake completed.
    pub handshakes_in: u64,
    /// Unsolicited reflector-style packets received: UDP from amplifier
    /// ports or UDP fragments in flows the remote side opened, and SYN-ACKs
    /// answering no SYN.
    pub amp_pkts_in: u64,
    /// Wire bytes of those packets.
    pub amp_bytes_in: u64,
    /// Distinct destinations this host talked to (exact up to 8).
    pub peers_out: Distinct<8>,
    /// Distinct destination ports this host sent to (exact up to 8).
    pub ports_out: Distinct<8>,
    /// Distinct sources talking to this host (exact up to 8).
    pub peers_in: Distinct<8>,
    /// Distinct destination ports hit on this host (exact up to 8).
    pub ports_in: Distinct<8>,
    /// Distinct sources of the unsolicited reflector traffic (exact up to 8).
    pub amp_sources: Distinct<8>,
}

/// A host's address and its counters for one interval: one shard's slab
/// entry and the host stage's merged entry. Aligned to a cache line so the
/// field groups of [`HostCounters`] fall on the lines they were laid out for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct HostRow(pub Addr, pub HostCounters);

impl HostCounters {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &HostCounters) {
        self.pkts_out += o.pkts_out;
        self.pkts_in += o.pkts_in;
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
        self.syn_out += o.syn_out;
        self.syn_in += o.syn_in;
        self.handshakes_in += o.handshakes_in;
        self.flows_out += o.flows_out;
        self.flows_in += o.flows_in;
        self.tcp_in += o.tcp_in;
        self.udp_in += o.udp_in;
        self.icmp_in += o.icmp_in;
        self.other_in += o.other_in;
        self.udp_out += o.udp_out;
        self.icmp_out += o.icmp_out;
        self.amp_pkts_in += o.amp_pkts_in;
        self.amp_bytes_in += o.amp_bytes_in;
        self.dns_queries += o.dns_queries;
        self.dns_encoded += o.dns_encoded;
        self.peers_in.merge(&o.peers_in);
        self.ports_in.merge(&o.ports_in);
        self.peers_out.merge(&o.peers_out);
        self.ports_out.merge(&o.ports_out);
        self.amp_sources.merge(&o.amp_sources);
        self.span_in.merge(&o.span_in);
        self.top_src.merge(&o.top_src);
        self.top_dst.merge(&o.top_dst);
    }
}

/// UDP source ports of services abused as amplifiers in reflection attacks
/// (US-CERT TA14-017A and later: chargen, QOTD, DNS, portmap, NTP, NetBIOS,
/// SNMP, CLDAP, ISAKMP, MSSQL, SSDP, ARD, WS-Discovery, NAT-T, CoAP, Ubiquiti
/// discovery, memcached).
pub const REFLECTOR_PORTS: [u16; 17] =
    [17, 19, 53, 111, 123, 137, 161, 389, 500, 1434, 1900, 3283, 3702, 4500, 5683, 10001, 11211];

/// A shard's cumulative counters (the host stage keeps the latest per shard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Packets processed.
    pub packets: u64,
    /// Wire bytes processed.
    pub bytes: u64,
    /// Packets by protocol: TCP, UDP, ICMP (v4+v6), other IP, non-IP.
    pub by_proto: [u64; 5],
    /// Wire bytes by protocol, same order.
    pub bytes_by_proto: [u64; 5],
    /// Flow records created.
    pub flows_created: u64,
    /// Flows ended by idle timeout.
    pub flows_idle: u64,
    /// Flows split by the active timeout.
    pub flows_active_timeout: u64,
    /// Flows evicted at the cap.
    pub flows_evicted: u64,
    /// Flows open now.
    pub flows_open: u64,
    /// Approximate memory of the flow table in bytes.
    pub flow_table_bytes: u64,
    /// Host summaries folded into the overflow bucket (per-interval cap hit).
    pub host_overflow: u64,
    /// Rule observations (misuse hits, probes, DNS/echo aggregates, fragments,
    /// ARP/RA) turned away at their per-interval caps.
    pub hit_overflow: u64,
}

impl ShardStats {
    /// Adds another shard's counters (for totals over shards).
    pub fn merge(&mut self, s: &ShardStats) {
        self.packets += s.packets;
        self.bytes += s.bytes;
        for i in 0..self.by_proto.len() {
            self.by_proto[i] += s.by_proto[i];
            self.bytes_by_proto[i] += s.bytes_by_proto[i];
        }
        self.flows_created += s.flows_created;
        self.flows_idle += s.flows_idle;
        self.flows_active_timeout += s.flows_active_timeout;
        self.flows_evicted += s.flows_evicted;
        self.flows_open += s.flows_open;
        self.flow_table_bytes += s.flow_table_bytes;
        self.host_overflow += s.host_overflow;
        self.hit_overflow += s.hit_overflow;
    }
}

/// Protocol label order of [`ShardStats::by_proto`].
pub const PROTO_LABELS: [&str; 5] = ["tcp", "udp", "icmp", "other_ip", "non_ip"];

/// What a shard knows about an IP packet once its flow record is found.
#[derive(Clone, Copy, Debug)]
pub struct FlowView<'a> {
    /// The flow's key (direction-independent).
    pub key: &'a FlowKey,
    /// Which end of the key sent this packet.
    pub side: Side,
    /// What this packet did to the flow.
    pub touch: &'a table::Touch,
    /// Which ends are inside the site.
    pub local: Locality,
    /// The flow's [`Flow::mark`], for the family that keeps one.
    pub mark: &'a std::cell::Cell<u32>,
}

impl FlowView<'_> {
    /// True when this packet's sender opened the flow.
    #[inline]
    pub fn from_orig(&self) -> bool {
        self.side == self.touch.orig
    }
}

/// One interval's observations, merged across shards by the host stage.
pub trait Merge: Default + Send {
    /// Takes in another shard's observations of the same interval.
    fn absorb(&mut self, other: Self);
}

impl Merge for () {
    fn absorb(&mut self, _: ()) {}
}

impl<T: Send> Merge for Vec<T> {
    fn absorb(&mut self, mut other: Vec<T>) {
        if self.is_empty() {
            // The first (or only) shard's list: taken as it is, not copied.
            *self = other;
        } else {
            self.append(&mut other);
        }
    }
}

impl<A: Merge, B: Merge> Merge for (A, B) {
    fn absorb(&mut self, other: (A, B)) {
        self.0.absorb(other.0);
        self.1.absorb(other.1);
    }
}

/// The per-packet half of the detector families, as a shard drives it.
///
/// Called for every packet on the shard's thread; implementations keep
/// bounded per-interval tables and allocate nothing per packet in steady state.
pub trait Observer: Send {
    /// One interval's observations, handed to the host stage.
    type Report: Merge;
    /// Every decoded packet, before flow tracking (non-IP included).
    fn packet(&mut self, m: &PacketMeta);
    /// IP packets, once their flow record is found.
    fn flow_packet(&mut self, m: &PacketMeta, f: &FlowView<'_>);
    /// A flow left the table (idle or active timeout, eviction, shutdown);
    /// ends seen in its packets (FIN, RST) came through `flow_packet`.
    fn flow_end(&mut self, _f: &Flow, _why: EndReason) {}
    /// Closes the interval ending at `t` and starts a fresh one.
    fn close(&mut self, t: Timestamp) -> Self::Report;
    /// Takes back an emptied report, so the next `close` fills its
    /// vectors instead of faulting in fresh pages every interval.
    fn recycle(&mut self, _spare: Self::Report) {}
    /// Observations turned away at per-interval caps so far (cumulative).
    fn overflow(&self) -> u64;
}

/// No per-packet half: families that judge host summaries only.
impl Observer for () {
    type Report = ();
    fn packet(&mut self, _: &PacketMeta) {}
    fn flow_packet(&mut self, _: &PacketMeta, _: &FlowView<'_>) {}
    fn close(&mut self, _: Timestamp) {}
    fn overflow(&self) -> u64 {
        0
    }
}

/// One shard's interval, handed to the host stage at a tick.
#[derive(Debug)]
pub struct ShardReport<R> {
    /// Which shard.
    pub shard: usize,
    /// The interval boundary (or end-of-input time when `last`).
    pub tick: Timestamp,
    /// True for the final report at end of input.
    pub last: bool,
    /// Per-host counters of this interval.
    pub hosts: Vec<HostRow>,
    /// The detector families' observations of this interval.
    pub families: R,
    /// Cumulative shard counters.
    pub stats: ShardStats,
    /// When the tick that closed this interval left the capture thread.
    pub sent: Option<std::time::Instant>,
}

/// Per-shard settings.
#[derive(Clone, Copy, Debug)]
pub struct ShardConfig {
    /// Flow table limits (per shard).
    pub limits: TableLimits,
    /// Most distinct hosts summarised per interval; the rest are counted only.
    pub max_hosts: usize,
    /// Most misuse aggregates per interval.
    pub max_hits: usize,
    /// The site's own networks: flows know which ends are inside.
    pub local: crate::base::LocalNets,
}

impl ShardConfig {
    /// Per-shard settings for `workers` shards: the totals of `[flow]` split evenly.
    pub fn from_config(cfg: &Config, workers: usize) -> ShardConfig {
        let f = &cfg.flow;
        let s = NANOS_PER_SEC;
        ShardConfig {
            limits: TableLimits {
                max_flows: (f.max_flows / workers.max(1)).max(1),
                idle: [
                    f.tcp_embryonic_timeout * s,
                    f.tcp_established_timeout * s,
                    f.tcp_closed_timeout * s,
                    f.udp_timeout * s,
                    f.icmp_timeout * s,
                    f.other_timeout * s,
                ],
                active: f.active_timeout * s,
            },
            max_hosts: (f.max_hosts_per_interval / workers.max(1)).max(1),
            max_hits: 4096,
            local: cfg.networks.local_nets(),
        }
    }
}

/// One tracker shard, with the per-packet halves of the detector families.
pub struct Shard<O> {
    id: usize,
    table: FlowTable,
    hosts: hosts::HostSlab,
    /// Interval number, counted in fours: flows' cached host slots are valid only within one.
    epoch: u32,
    observer: O,
    stats: ShardStats,
    local: crate::base::LocalNets,
    /// Host vectors the host stage has emptied and handed back.
    pub spare: Vec<Vec<HostRow>>,
}

impl<O: Observer> Shard<O> {
    /// A fresh shard feeding `observer`.
    pub fn new(id: usize, cfg: ShardConfig, observer: O) -> Shard<O> {
        Shard {
            id,
            table: FlowTable::new(cfg.limits),
            hosts: hosts::HostSlab::new(cfg.max_hosts),
            // Counts in fours: the low two bits of a flow's copy are its sides' sent bits.
            epoch: 4,
            observer,
            stats: ShardStats::default(),
            local: cfg.local,
            spare: Vec::new(),
        }
    }

    /// Accounts one packet.
    pub fn process(&mut self, m: &PacketMeta) {
        let s = &mut self.stats;
        s.packets += 1;
        s.bytes += u64::from(m.wire_len);
        let p = match (m.is_ip(), m.proto) {
            (false, _) => 4,
            (true, ip_proto::TCP) => 0,
            (true, ip_proto::UDP) => 1,
            (true, ip_proto::ICMP | ip_proto::ICMPV6) => 2,
            _ => 3,
        };
        s.by_proto[p] += 1;
        s.bytes_by_proto[p] += u64::from(m.wire_len);
        self.observer.packet(m);
        if !m.is_ip() {
            return;
        }
        let (key, side) = FlowKey::of(m);
        let obs = &mut self.observer;
        let touch = self.table.touch(m, key, side, &mut |f, why| obs.flow_end(f, why));
        let flags = if m.has_tcp_flags() { m.tcp_flags } else { 0 };
        let syn_ack = tcp_flags::SYN | tcp_flags::ACK;
        let bare_syn = flags & (syn_ack | tcp_flags::RST) == tcp_flags::SYN;
        // Reflection traffic is what nobody asked for: a response-port UDP
        // datagram (or a trailing UDP fragment) in a flow its sender opened,
        // or a SYN-ACK to a host that never sent the SYN. Multicast and
        // broadcast receivers are service discovery, not victims.
        let unsolicited_udp = m.proto == ip_proto::UDP
            && touch.orig == side
            && ((m.has_ports() && REFLECTOR_PORTS.contains(&m.sport)) || m.frag_offset > 0);
        let unsolicited_synack = flags & syn_ack == syn_ack && touch.peer_flags & tcp_flags::SYN == 0;
        let amp = (unsolicited_udp || unsolicited_synack) && is_unicast(&m.dst);
        let wire = u64::from(m.wire_len);
        let (src, dst, proto, dport) = (m.src, m.dst, m.proto, m.dport);
        let ports = m.has_ports();
        let d = &m.dns;
        let query = d.is_valid() && d.flags & crate::decode::dns::DNS_RESPONSE == 0;
        let encoded = query && d.looks_encoded();
        // Both ends' slots are cached on the flow for the interval, so a
        // packet of a known flow goes straight to its hosts' counters.
        let (a_slot, b_slot, local, first_sent) = {
            let epoch = self.epoch;
            let hosts = &mut self.hosts;
            match self.table.slot_mut(touch.slot) {
                Some(f) => {
                    if touch.created {
                        f.local = Locality { a: self.local.contains(&key.a), b: self.local.contains(&key.b) };
                    }
                    if f.hosts.epoch & !3 != epoch {
                        f.hosts = table::HostSlots { epoch, idx: [hosts::UNSET; 2] };
                    }
                    for (i, a) in [(0, key.a), (1, key.b)] {
                        if f.hosts.idx[i] == hosts::UNSET {
                            f.hosts.idx[i] = hosts.slot(a);
                        }
                    }
                    let bit = 1u32 << side.idx();
                    let first = f.hosts.epoch & bit == 0;
                    f.hosts.epoch |= bit;
                    (f.hosts.idx[0], f.hosts.idx[1], f.local, first)
                }
                None => (hosts.slot(key.a), hosts.slot(key.b), Locality::default(), true),
            }
        };
        // The sets of peers and ports hear each flow direction once an
        // interval: every later packet of it repeats the same peer and (when
        // the key holds the ports: not a fragment) the same port.
        let new_peer = first_sent;
        let new_port = ports && (first_sent || m.frag & crate::decode::frag::IS_FRAGMENT != 0);
        let (src_slot, dst_slot) = match side {
            Side::A => (a_slot, b_slot),
            Side::B => (b_slot, a_slot),
        };
        // A packet addressed to its own sender (a spoofed multicast source
        // sent to that group, a LAND packet) is received, not sent: a host
        // does not answer itself.
        let own = src == dst;
        if !own {
            self.host(src_slot, |h| {
                // Only a query touches the DNS counters' line.
                if query {
                    h.dns_queries += 1;
                    h.dns_encoded += u64::from(encoded);
                }
                h.pkts_out += 1;
                h.bytes_out += wire;
                h.syn_out += u64::from(bare_syn);
                h.udp_out += u64::from(proto == ip_proto::UDP);
                h.icmp_out += u64::from(proto == ip_proto::ICMP || proto == ip_proto::ICMPV6);
                if new_peer {
                    h.peers_out.insert_addr(&dst);
                }
                if new_port {
                    h.ports_out.insert_port(dport);
                }
                h.top_dst.add(dst, 1);
            });
        }
        let ts = m.ts;
        self.host(dst_slot, |h| {
            h.pkts_in += 1;
            h.span_in.add(ts);
            h.bytes_in += wire;
            h.syn_in += u64::from(bare_syn);
            match proto {
                ip_proto::TCP => h.tcp_in += 1,
                ip_proto::UDP => h.udp_in += 1,
                ip_proto::ICMP | ip_proto::ICMPV6 => h.icmp_in += 1,
                _ => h.other_in += 1,
            }
            if new_peer {
                h.peers_in.insert_addr(&src);
            }
            if new_port {
                h.ports_in.insert_port(dport);
            }
            h.top_src.add(src, 1);
            if amp {
                h.amp_pkts_in += 1;
                h.amp_bytes_in += wire;
                h.amp_sources.insert_addr(&src);
            }
        });
        let (orig_slot, resp_slot) = match touch.orig {
            Side::A => (a_slot, b_slot),
            Side::B => (b_slot, a_slot),
        };
        if touch.created {
            // Credit the flow to whoever opened it, which is not always this
            // packet's sender (a SYN-ACK seen first).
            self.host(orig_slot, |h| h.flows_out += 1);
            self.host(resp_slot, |h| h.flows_in += 1);
        }
        let mut no_flow = 0;
        let mark = match self.table.slot_mut(touch.slot) {
            Some(f) => std::cell::Cell::from_mut(&mut f.mark),
            None => std::cell::Cell::from_mut(&mut no_flow),
        };
        self.observer.flow_packet(m, &FlowView { key: &key, side, touch: &touch, local, mark });
        if matches!(touch.before, ConnState::SynAckSeen | ConnState::SynSent)
            && touch.after == ConnState::Established
        {
            self.host(resp_slot, |h| h.handshakes_in += 1);
        }
    }

    /// Starts the cache misses a coming packet will take, one step per call
    /// (see [`Ahead`]); changes nothing, so events cannot depend on it.
    #[inline]
    pub fn ahead(&self, m: &PacketMeta, step: Ahead) {
        if !m.is_ip() || m.flow_hash == 0 {
            return;
        }
        match step {
            Ahead::Bucket => self.table.prefetch_bucket(m.flow_hash),
            Ahead::Flow => {
                self.table.prefetch_flow(m.flow_hash);
                // For a flow whose hosts are not cached yet this interval
                // (not known until its record arrives): their lookups' buckets.
                self.hosts.prefetch_bucket(m.src);
                self.hosts.prefetch_bucket(m.dst);
            }
            Ahead::Hosts => {
                let cached = self.table.probable(m.flow_hash).filter(|f| f.hosts.epoch & !3 == self.epoch);
                let Some(f) = cached else {
                    self.hosts.prefetch_probable(m.src, true);
                    self.hosts.prefetch_probable(m.dst, false);
                    return;
                };
                let (_, side) = FlowKey::of(m);
                let (s, d) = match side {
                    Side::A => (f.hosts.idx[0], f.hosts.idx[1]),
                    Side::B => (f.hosts.idx[1], f.hosts.idx[0]),
                };
                self.hosts.prefetch(s, true);
                self.hosts.prefetch(d, false);
            }
        }
    }

    #[inline]
    fn host(&mut self, slot: u32, f: impl FnOnce(&mut HostCounters)) {
        match self.hosts.get_mut(slot) {
            Some(h) => f(h),
            None => self.stats.host_overflow += 1,
        }
    }

    /// Closes the interval ending at `t`: expires idle flows and builds the report.
    pub fn tick(&mut self, t: Timestamp, last: bool) -> ShardReport<O::Report> {
        if last {
            let obs = &mut self.observer;
            self.table.drain(&mut |f, why| obs.flow_end(f, why));
        } else {
            let obs = &mut self.observer;
            self.table.expire(t, &mut |f, why| obs.flow_end(f, why));
        }
        let ts = &self.table.stats;
        self.stats.flows_created = ts.created;
        self.stats.flows_idle = ts.idle;
        self.stats.flows_active_timeout = ts.active;
        self.stats.flows_evicted = ts.evicted;
        self.stats.flows_open = self.table.len() as u64;
        self.stats.flow_table_bytes = self.table.memory_bytes() as u64;
        // Everything a per-interval cap turned away, so nothing is dropped silently.
        self.stats.hit_overflow = self.observer.overflow();
        let families = self.observer.close(t);
        ShardReport {
            shard: self.id,
            tick: t,
            last,
            hosts: {
                self.epoch = self.epoch.wrapping_add(4).max(4);
                self.hosts.take(self.spare.pop().unwrap_or_default())
            },
            families,
            stats: self.stats,
            sent: None,
        }
    }
}

/// True for addresses of one host (not multicast/broadcast): what a
/// reflection attack can target, and what the behaviour model scores.
pub fn is_unicast(a: &Addr) -> bool {
    match a.ip() {
        std::net::IpAddr::V4(v4) => !v4.is_multicast() && !v4.is_broadcast(),
        std::net::IpAddr::V6(v6) => !v6.is_multicast(),
    }
}

/// What the host stage hands back to a shard after an interval: its emptied
/// host vector and, to one shard, the emptied family report.
pub type Returned<R> = (Vec<HostRow>, Option<R>);

/// Packets between the steps of the shard's lookahead: enough to cover a
/// memory access with a packet's work, few enough that the lines are still
/// cached when the packet comes.
const AHEAD: usize = 4;

/// One step of [`Shard::ahead`].
#[derive(Clone, Copy, Debug)]
pub enum Ahead {
    /// The flow index bucket.
    Bucket,
    /// The flow record the bucket names, and the host index buckets.
    Flow,
    /// The host rows the flow caches for this interval (or, when it caches
    /// none, the rows the host index names).
    Hosts,
}

/// Runs a shard until `Finish` (or until the capture side hangs up).
///
/// Emptied batch vectors go back through `recycle`, so steady state
/// allocates nothing per packet.
pub fn run_shard<O: Observer>(
    mut shard: Shard<O>,
    rx: Receiver<ShardMsg>,
    reports: Sender<ShardReport<O::Report>>,
    recycle: Sender<Vec<PacketMeta>>,
    returned: Receiver<Returned<O::Report>>,
) {
    let mut last_t = Timestamp::ZERO;
    while let Ok(msg) = rx.recv() {
        match msg {
            ShardMsg::Batch(mut b) => {
                // Each packet's table lines are requested a few packets
                // before it is processed, in three dependent steps (bucket,
                // then the flow it names, then the hosts the flow caches).
                for (i, m) in b.iter().enumerate() {
                    if let Some(n) = b.get(i + 3 * AHEAD) {
                        shard.ahead(n, Ahead::Bucket);
                    }
                    if let Some(n) = b.get(i + 2 * AHEAD) {
                        shard.ahead(n, Ahead::Flow);
                    }
                    if let Some(n) = b.get(i + AHEAD) {
                        shard.ahead(n, Ahead::Hosts);
                    }
                    shard.process(m);
                }
                if let Some(m) = b.last() {
                    last_t = m.ts;
                }
                b.clear();
                let _ = recycle.try_send(b);
            }
            ShardMsg::Tick(t, sent) => {
                last_t = t;
                while let Ok((v, families)) = returned.try_recv() {
                    if v.capacity() > 0 {
                        shard.spare.push(v);
                    }
                    if let Some(f) = families {
                        shard.observer.recycle(f);
                    }
                }
                let mut r = shard.tick(t, false);
                r.sent = Some(sent);
                if reports.send(r).is_err() {
                    return;
                }
            }
            ShardMsg::Finish(t) => {
                let _ = reports.send(shard.tick(t.max(last_t), true));
                return;
            }
        }
    }
    // The capture side vanished without Finish (it panicked or was killed):
    // still report what we have so nothing processed is lost.
    let _ = reports.send(shard.tick(last_t, true));
}

#[cfg(test)]
mod tests {
    use super::table::tests::seg;
    use super::*;

    fn shard(max_hosts: usize) -> Shard<()> {
        Shard::new(
            0,
            ShardConfig {
                limits: TableLimits::default(),
                max_hosts,
                max_hits: 64,
                local: Default::default(),
            },
            (),
        )
    }

    #[test]
    fn host_row_lines_hold_their_groups() {
        use std::mem::{offset_of, size_of};
        let at = |field: usize| offset_of!(HostRow, 1) + field;
        assert_eq!(size_of::<HostRow>(), 9 * 64);
        // Line 0: the address and the sent counters; line 1: received and span.
        assert_eq!(offset_of!(HostRow, 0), 0);
        assert!(at(offset_of!(HostCounters, flows_out)) + 8 <= 64);
        assert_eq!(at(offset_of!(HostCounters, pkts_in)), 64);
        assert_eq!(at(offset_of!(HostCounters, span_in)) + 16, 128);
        assert_eq!(at(offset_of!(HostCounters, top_dst)), 128);
    }

    fn counters(r: &ShardReport<()>, host: u8) -> HostCounters {
        let a = Addr::v4([10, 0, 0, host]);
        r.hosts.iter().find(|HostRow(x, _)| *x == a).map(|HostRow(_, c)| *c).unwrap_or_default()
    }

    #[test]
    fn a_flow_spanning_intervals_counts_its_hosts_in_each() {
        use tcp_flags::*;
        let mut s = shard(1024);
        s.process(&seg(2, 1, 5000, 80, SYN, 1));
        s.process(&seg(1, 2, 80, 5000, SYN | ACK, 1));
        s.process(&seg(2, 1, 5000, 80, ACK, 1));
        let r1 = s.tick(Timestamp::from_secs(2), false);
        assert_eq!(r1.hosts.len(), 2);
        let (c, srv) = (counters(&r1, 2), counters(&r1, 1));
        assert_eq!((c.pkts_out, c.pkts_in, c.flows_out, c.syn_out), (2, 1, 1, 1));
        assert_eq!((srv.pkts_out, srv.pkts_in, srv.flows_in, srv.handshakes_in), (1, 2, 1, 1));
        // The same flow in the next interval: its cached slots belong to the
        // last interval and must be looked up afresh, in this interval's summaries.
        s.spare.push(r1.hosts);
        s.process(&seg(1, 2, 80, 5000, ACK, 2));
        s.process(&seg(1, 2, 80, 5000, ACK, 2));
        let r2 = s.tick(Timestamp::from_secs(3), false);
        assert_eq!(r2.hosts.len(), 2);
        assert_eq!((counters(&r2, 1).pkts_out, counters(&r2, 2).pkts_in), (2, 2));
        assert_eq!(counters(&r2, 2).flows_out, 0, "the flow was opened in the first interval");
    }

    #[test]
    fn hosts_past_the_cap_are_counted_not_summarised() {
        use tcp_flags::*;
        let mut s = shard(2);
        s.process(&seg(2, 1, 5000, 80, SYN, 1));
        s.process(&seg(3, 1, 5001, 80, SYN, 1)); // host 3 is the third: refused
        s.process(&seg(3, 1, 5001, 80, SYN, 1));
        let r = s.tick(Timestamp::from_secs(2), false);
        assert_eq!(r.hosts.len(), 2);
        assert_eq!(counters(&r, 1).pkts_in, 3, "the server's own slot still counts every packet");
        assert!(r.stats.host_overflow >= 2, "{}", r.stats.host_overflow);
        // The next interval starts empty: host 3 fits again.
        s.process(&seg(3, 1, 5001, 80, SYN, 2));
        let r = s.tick(Timestamp::from_secs(3), false);
        assert_eq!(counters(&r, 3).pkts_out, 1);
    }
}
