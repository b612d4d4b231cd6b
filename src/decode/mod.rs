//! Decode: raw frame bytes → [`PacketMeta`], on the capture thread.
//!
//! Pure functions over `&[u8]`: no allocation, no I/O, no globals, and no
//! panics on any input (every read is bounds-checked; fuzzed in `fuzz/` and
//! property-tested below). Truncated frames decode as far as they go: a SYN
//! cut after its ports still counts toward its flow.
//!
//! Layer 2 encapsulations are stripped here (see [`link`]). The common case
//! (IPv4 without options or fragmentation, IPv6 without extension headers,
//! carrying a whole TCP, UDP or ICMP header) is read straight from the
//! bytes; everything else is sliced by etherparse's lax parser, and a test
//! holds the two paths equal on every bundled capture and on damaged
//! packets. Fields etherparse does not expose (reserved bit, options
//! sanity, first-fragment ports) are read from the header bytes it hands
//! back.

pub mod dns;
pub mod link;
pub mod meta;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice, err::Layer};

pub use link::LinkType;
pub use meta::{Addr, L3, PacketMeta, Prejudged, anomaly, frag, ip_proto, l4, tcp_flags, v6ext};

use crate::base::time::Timestamp;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// Deepest VLAN stack we walk; anything deeper is almost surely garbage.
const MAX_VLAN_TAGS: usize = 4;

/// Decodes one frame of link type `link` captured at `ts`.
///
/// `wire_len` is the frame's length on the wire; `data` is what was captured
/// (possibly cut by the snap length). Never fails: what cannot be decoded is
/// recorded in [`PacketMeta::anomalies`].
pub fn decode(link: LinkType, ts: Timestamp, wire_len: u32, data: &[u8]) -> PacketMeta {
    decode_with(link, ts, wire_len, data, true)
}

/// [`decode`], with the common path ([`decode_common_v4`]) or with
/// etherparse's lax slicer for every IP packet (`common` false, for the
/// test that holds the two equal).
fn decode_with(link: LinkType, ts: Timestamp, wire_len: u32, data: &[u8], common: bool) -> PacketMeta {
    let mut m = PacketMeta::default();
    fill(&mut m, link, ts, wire_len, data, common);
    m
}

/// [`decode`] into `m` (every field rewritten): the capture thread decodes
/// into its own record and copies it once, into the shard's batch, where a
/// returned record was copied three times (192 bytes each, every packet).
pub fn decode_into(m: &mut PacketMeta, link: LinkType, ts: Timestamp, wire_len: u32, data: &[u8]) {
    fill(m, link, ts, wire_len, data, true);
}

/// [`decode_with`] into `m`.
fn fill(m: &mut PacketMeta, link: LinkType, ts: Timestamp, wire_len: u32, data: &[u8], common: bool) {
    // Field by field: a struct literal is built aside and then copied.
    *m = PacketMeta::default();
    m.ts = ts;
    m.wire_len = wire_len;
    m.cap_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    // Bytes the snap length cut off; wire-view lengths below add them back.
    let cut = wire_len.saturating_sub(m.cap_len);
    let wire_of = |rest: &[u8]| -> u32 { u32::try_from(rest.len()).unwrap_or(u32::MAX).saturating_add(cut) };
    match link {
        LinkType::Ethernet => {
            let Some(hdr) = data.get(..14) else {
                m.anomalies |= anomaly::TRUNCATED_LINK;
                return;
            };
            m.dst_mac.copy_from_slice(&hdr[..6]);
            m.src_mac.copy_from_slice(&hdr[6..12]);
            let mut et = u16::from_be_bytes([hdr[12], hdr[13]]);
            let mut off = 14;
            let mut tags = 0;
            while matches!(et, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD) {
                let Some(tag) = data.get(off..off + 4) else {
                    m.anomalies |= anomaly::TRUNCATED_LINK;
                    return;
                };
                if tags < 2 {
                    m.vlan[tags] = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
                }
                tags += 1;
                et = u16::from_be_bytes([tag[2], tag[3]]);
                off += 4;
                if tags >= MAX_VLAN_TAGS {
                    break;
                }
            }
            m.vlan_count = tags.min(2) as u8;
            let rest = data.get(off..).unwrap_or(&[]);
            decode_ether_type(m, et, rest, wire_of(rest), common);
        }
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => {
            decode_ip(m, None, data, wire_of(data), common);
        }
        LinkType::Unsupported(_) => m.anomalies |= anomaly::UNSUPPORTED_LINK,
        other => match link::parse_header(other, data) {
            None => m.anomalies |= anomaly::TRUNCATED_LINK,
            Some(h) => {
                if let Some(mac) = h.src_mac {
                    m.src_mac = mac;
                }
                let rest = data.get(h.len..).unwrap_or(&[]);
                match h.inner {
                    link::Inner::EtherType(et) => decode_ether_type(m, et, rest, wire_of(rest), common),
                    link::Inner::Ip => decode_ip(m, None, rest, wire_of(rest), common),
                    link::Inner::Other => m.anomalies |= anomaly::NON_IP,
                }
            }
        },
    }
}

fn decode_ether_type(m: &mut PacketMeta, et: u16, rest: &[u8], wire: u32, common: bool) {
    match et {
        ETHERTYPE_IPV4 => decode_ip(m, Some(4), rest, wire, common),
        ETHERTYPE_IPV6 => decode_ip(m, Some(6), rest, wire, common),
        ETHERTYPE_ARP => decode_arp(m, rest),
        _ => m.anomalies |= anomaly::NON_IP,
    }
}

fn decode_arp(m: &mut PacketMeta, b: &[u8]) {
    m.l3 = L3::Arp;
    // htype(2) ptype(2) hlen(1) plen(1) op(2) sha(6) spa(4) tha(6) tpa(4)
    let Some(a) = b.get(..28) else {
        m.anomalies |= anomaly::ARP_MALFORMED;
        return;
    };
    if a[4] != 6 || a[5] != 4 || u16::from_be_bytes([a[2], a[3]]) != ETHERTYPE_IPV4 {
        m.anomalies |= anomaly::ARP_MALFORMED;
        return;
    }
    m.arp_op = u16::from_be_bytes([a[6], a[7]]);
    m.arp_sha.copy_from_slice(&a[8..14]);
    m.src = Addr::v4([a[14], a[15], a[16], a[17]]);
    m.arp_tha.copy_from_slice(&a[18..24]);
    m.dst = Addr::v4([a[24], a[25], a[26], a[27]]);
}

/// Decodes an IP packet; `expect` is the version the link layer announced.
fn decode_ip(m: &mut PacketMeta, expect: Option<u8>, ip: &[u8], wire: u32, common: bool) {
    let Some(&first) = ip.first() else {
        m.anomalies |= anomaly::TRUNCATED_IP;
        return;
    };
    let version = first >> 4;
    if expect.is_some_and(|v| v != version) || !matches!(version, 4 | 6) {
        m.anomalies |= anomaly::IP_BAD_VERSION;
        return;
    }
    if common && if version == 4 { decode_common_v4(m, ip) } else { decode_common_v6(m, ip) } {
        finish_ip(m);
        return;
    }
    let sliced = if version == 4 {
        LaxSlicedPacket::from_ether_type(EtherType(ETHERTYPE_IPV4), ip)
    } else {
        LaxSlicedPacket::from_ether_type(EtherType(ETHERTYPE_IPV6), ip)
    };
    match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let hb = h.slice();
            m.l3 = L3::Ipv4;
            m.src = Addr::v4(h.source());
            m.dst = Addr::v4(h.destination());
            m.ttl = h.ttl();
            m.proto = h.protocol().0;
            m.ip_id = u32::from(h.identification());
            m.frag_offset = u32::from(h.fragments_offset().value()) * 8;
            if h.more_fragments() {
                m.frag |= frag::MORE;
            }
            if h.dont_fragment() {
                m.frag |= frag::DONT;
            }
            if hb.get(6).is_some_and(|b| b & 0x80 != 0) {
                m.frag |= frag::RESERVED;
                m.anomalies |= anomaly::IPV4_RESERVED_FLAG;
            }
            let hdr_len = u32::from(h.ihl()) * 4;
            let mut total = u32::from(h.total_len());
            if total == 0 && m.proto == ip_proto::TCP && wire >= hdr_len + 20 {
                // TSO super-frame: the NIC writes the length per segment later.
                m.anomalies |= anomaly::IPV4_OFFLOAD_ZERO_LEN;
                total = wire;
            } else if total < hdr_len || total > wire {
                m.anomalies |= anomaly::IPV4_BAD_TOTAL_LEN;
            }
            if !ipv4_options_ok(hb.get(20..).unwrap_or(&[])) {
                m.anomalies |= anomaly::IPV4_BAD_OPTIONS;
            }
            if !ipv4_checksum_ok(hb) {
                m.anomalies |= anomaly::IPV4_BAD_CHECKSUM;
            }
            let end = if total >= hdr_len { total.min(wire) } else { wire };
            let l4_wire = end.saturating_sub(hdr_len);
            decode_l4(m, &sliced, v4.payload().payload, l4_wire);
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            m.l3 = L3::Ipv6;
            m.src = Addr::v6(h.source());
            m.dst = Addr::v6(h.destination());
            m.ttl = h.hop_limit();
            let plen = u32::from(h.payload_length());
            if plen > wire.saturating_sub(40) {
                m.anomalies |= anomaly::IPV6_BAD_PAYLOAD_LEN;
            }
            let exts = v6.extensions();
            // Our own bounds-checked walk: etherparse 0.21's extension
            // iterator reads past a truncated header (found by cargo-fuzz).
            walk_ipv6_extensions(m, ip, h.next_header().0);
            let payload = v6.payload();
            m.proto = payload.ip_number.0;
            let ext_len = u32::try_from(exts.slice().len()).unwrap_or(u32::MAX);
            let end = if plen == 0 { wire } else { (plen + 40).min(wire) };
            let l4_wire = end.saturating_sub(40).saturating_sub(ext_len);
            decode_l4(m, &sliced, payload.payload, l4_wire);
        }
        Some(LaxNetSlice::Arp(_)) | None => ip_fallback(m, version, ip),
    }
    finish_ip(m);
    if let Some((err, layer)) = &sliced.stop_err {
        m.anomalies |= match layer {
            Layer::Ipv6ExtHeader
            | Layer::Ipv6HopByHopHeader
            | Layer::Ipv6DestOptionsHeader
            | Layer::Ipv6RouteHeader
            | Layer::Ipv6FragHeader
            | Layer::IpAuthHeader => anomaly::IPV6_BAD_EXT,
            Layer::TcpHeader => match err {
                etherparse::err::packet::SliceError::Tcp(_) => anomaly::TCP_BAD_OFFSET,
                _ => anomaly::TRUNCATED_L4,
            },
            Layer::UdpHeader | Layer::Icmpv4 | Layer::Icmpv6 => anomaly::TRUNCATED_L4,
            _ => 0,
        };
    }
}

/// What every IP packet gets after its headers are read, on either path.
fn finish_ip(m: &mut PacketMeta) {
    if m.frag_offset > 0 || m.frag & frag::MORE != 0 {
        m.frag |= frag::IS_FRAGMENT;
    }
    if m.is_ip() && m.ttl == 0 {
        m.anomalies |= anomaly::TTL_ZERO;
    }
}

/// The transport header of a packet on the common path, checked whole.
enum Common<'a> {
    /// A TCP segment and its header length.
    Tcp(&'a [u8], usize),
    /// A UDP header and the payload etherparse's lax slicer would give.
    Udp(&'a [u8], &'a [u8]),
    /// An ICMP or ICMPv6 message (8-byte header).
    Icmp(&'a [u8]),
}

/// The transport header in `l4` when it is whole and ordinary (what
/// etherparse would slice without an error), else `None`.
fn common_l4(proto: u8, l4: &[u8]) -> Option<Common<'_>> {
    match proto {
        ip_proto::TCP => {
            let hdr = usize::from(l4.get(12)? >> 4) * 4;
            (hdr >= 20 && l4.len() >= hdr).then_some(Common::Tcp(l4, hdr))
        }
        ip_proto::UDP => {
            let h = l4.get(..8)?;
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            // As `UdpSlice::from_slice_lax`: the length field unless it is
            // out of range, then the slice.
            let end = if len < 8 || len > l4.len() { l4.len() } else { len };
            Some(Common::Udp(h, l4.get(8..end)?))
        }
        // ICMP timestamps have a 20-byte header in etherparse: left to it.
        ip_proto::ICMP => {
            let h = l4.get(..2)?;
            (l4.len() >= 8 && !(matches!(h[0], 13 | 14) && h[1] == 0)).then_some(Common::Icmp(l4))
        }
        ip_proto::ICMPV6 => (l4.len() >= 8).then_some(Common::Icmp(l4)),
        _ => None,
    }
}

/// The common IPv4 case read straight from the bytes: no options, not a
/// fragment, the total length within what was captured, and a whole TCP,
/// UDP or ICMP header. Writes nothing and returns false otherwise, for
/// etherparse's lax slicer to decode. On the replay benchmark slicing
/// every packet with it was half of the capture thread's instructions;
/// `tests::common_path_agrees_with_etherparse` holds both paths equal.
fn decode_common_v4(m: &mut PacketMeta, ip: &[u8]) -> bool {
    let Some(h) = ip.get(..20) else { return false };
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let flags_offset = u16::from_be_bytes([h[6], h[7]]);
    // IHL 5, and of the flags and offset only Don't Fragment may be set.
    if h[0] & 0x0f != 5 || flags_offset & !0x4000 != 0 || total < 20 || total > ip.len() {
        return false;
    }
    let Some(l4) = ip.get(20..total).and_then(|b| common_l4(h[9], b)) else { return false };
    fixed_v4(m, h);
    m.ip_id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    if flags_offset & 0x4000 != 0 {
        m.frag |= frag::DONT;
    }
    if !ipv4_checksum_ok(h) {
        m.anomalies |= anomaly::IPV4_BAD_CHECKSUM;
    }
    common_fields(m, l4, (total - 20) as u32);
    true
}

/// The common IPv6 case: no extension headers, a payload length within what
/// was captured, and a whole TCP, UDP or ICMPv6 header (see [`decode_common_v4`]).
fn decode_common_v6(m: &mut PacketMeta, ip: &[u8]) -> bool {
    let Some(h) = ip.get(..40) else { return false };
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if plen == 0 || 40 + plen > ip.len() {
        return false;
    }
    let Some(l4) = ip.get(40..40 + plen).and_then(|b| common_l4(h[6], b)) else { return false };
    fixed_v6(m, h);
    common_fields(m, l4, plen as u32);
    true
}

/// Kind, addresses, TTL and protocol from a whole 20-byte IPv4 header.
fn fixed_v4(m: &mut PacketMeta, h: &[u8]) {
    let Some(h) = h.get(..20) else { return };
    m.l3 = L3::Ipv4;
    m.ttl = h[8];
    m.proto = h[9];
    m.src = Addr::v4([h[12], h[13], h[14], h[15]]);
    m.dst = Addr::v4([h[16], h[17], h[18], h[19]]);
}

/// Kind, addresses, hop limit and next header from a whole 40-byte IPv6 header.
fn fixed_v6(m: &mut PacketMeta, h: &[u8]) {
    let Some(h) = h.get(..40) else { return };
    let mut a = [0u8; 16];
    m.l3 = L3::Ipv6;
    m.ttl = h[7];
    m.proto = h[6];
    a.copy_from_slice(&h[8..24]);
    m.src = Addr::v6(a);
    a.copy_from_slice(&h[24..40]);
    m.dst = Addr::v6(a);
}

/// Transport fields of a header [`common_l4`] checked.
fn common_fields(m: &mut PacketMeta, l4: Common<'_>, l4_wire: u32) {
    match l4 {
        Common::Tcp(seg, hdr) => tcp_fields(m, seg, hdr, l4_wire),
        Common::Udp(h, payload) => udp_fields(m, h, payload, l4_wire),
        Common::Icmp(msg) => icmp_fields(m, msg, msg.get(8..).unwrap_or(&[]), l4_wire),
    }
}

/// Ports, flags, window, sequence numbers and payload of a TCP segment
/// whose header (`hdr` bytes, at least 20) is whole in `seg`.
fn tcp_fields(m: &mut PacketMeta, seg: &[u8], hdr: usize, l4_wire: u32) {
    let Some(h) = seg.get(..20) else { return };
    let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    m.sport = u16::from_be_bytes([h[0], h[1]]);
    m.dport = u16::from_be_bytes([h[2], h[3]]);
    m.l4 |= l4::PORTS | l4::TCP_FLAGS;
    m.tcp_flags = tcp_flags_raw(h);
    m.tcp_window = u16::from_be_bytes([h[14], h[15]]);
    m.tcp_seq = be32(4);
    m.tcp_ack = be32(8);
    m.payload_len = l4_wire.saturating_sub(hdr as u32);
    copy_head(&mut m.payload_head, seg.get(hdr..).unwrap_or(&[]));
}

/// Ports, length check, payload and DNS message of a UDP datagram.
fn udp_fields(m: &mut PacketMeta, h: &[u8], payload: &[u8], l4_wire: u32) {
    let Some(h) = h.get(..8) else { return };
    m.sport = u16::from_be_bytes([h[0], h[1]]);
    m.dport = u16::from_be_bytes([h[2], h[3]]);
    m.l4 |= l4::PORTS;
    let len = u32::from(u16::from_be_bytes([h[4], h[5]]));
    let valid = len >= 8 && len <= l4_wire;
    if !valid {
        m.anomalies |= anomaly::UDP_BAD_LEN;
    }
    m.payload_len = if valid { len - 8 } else { l4_wire.saturating_sub(8) };
    copy_head(&mut m.payload_head, payload);
    if m.sport == 53 || m.dport == 53 {
        if let Some(d) = dns::parse(payload) {
            m.dns = d;
            parent_name(payload, d.labels, &mut m.dns_parent);
        }
    }
}

/// Type, code and rest of header of an ICMP or ICMPv6 message.
fn icmp_fields(m: &mut PacketMeta, msg: &[u8], payload: &[u8], l4_wire: u32) {
    let Some(h) = msg.get(..2) else { return };
    m.icmp_type = h[0];
    m.icmp_code = h[1];
    m.icmp_rest = rest_of_header(msg);
    m.l4 |= l4::ICMP;
    m.payload_len = l4_wire.saturating_sub(8);
    copy_head(&mut m.payload_head, payload);
}

/// Walks the IPv6 extension-header chain after the fixed header, recording
/// fragment fields and abuse findings. Every read is bounds-checked; a chain
/// cut short simply ends the walk.
fn walk_ipv6_extensions(m: &mut PacketMeta, ip: &[u8], first: u8) {
    let mut next = first;
    let mut off = 40usize;
    let mut seen: u8 = 0;
    let mut dst_opts = 0;
    let mut count = 0;
    while matches!(next, 0 | 43 | 44 | 51 | 60) && count < 32 {
        let Some(hdr) = ip.get(off..off + 2) else { break };
        let len = match next {
            44 => 8,
            51 => (usize::from(hdr[1]) + 2) * 4,
            _ => (usize::from(hdr[1]) + 1) * 8,
        };
        let Some(body) = ip.get(off..off + len) else { break };
        count += 1;
        let bit = match next {
            0 => {
                if count > 1 {
                    m.v6ext |= v6ext::HBH_NOT_FIRST;
                }
                if !ipv6_options_known(body.get(2..).unwrap_or(&[])) {
                    m.v6ext |= v6ext::UNKNOWN_OPTION;
                }
                0x1
            }
            43 => {
                if body.get(2) == Some(&0) {
                    m.v6ext |= v6ext::RH0;
                }
                0x2
            }
            44 => {
                let fo = u16::from_be_bytes([body[2], body[3]]);
                m.frag_offset = u32::from(fo >> 3) * 8;
                if fo & 1 != 0 {
                    m.frag |= frag::MORE;
                }
                m.ip_id = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                0x4
            }
            60 => {
                dst_opts += 1;
                if !ipv6_options_known(body.get(2..).unwrap_or(&[])) {
                    m.v6ext |= v6ext::UNKNOWN_OPTION;
                }
                if dst_opts > 2 { 0x8 } else { 0 }
            }
            _ => 0x10,
        };
        if (bit != 0 && seen & bit != 0) || bit == 0x8 {
            m.v6ext |= v6ext::REPEATED;
        }
        seen |= bit;
        next = hdr[0];
        off += len;
    }
    if count > 8 {
        m.v6ext |= v6ext::TOO_MANY;
    }
}

/// Reads addresses straight from the header when etherparse refused it
/// (IHL < 5, header cut short): the packet still counts toward its hosts.
fn ip_fallback(m: &mut PacketMeta, version: u8, ip: &[u8]) {
    if version == 4 {
        let Some(h) = ip.get(..20) else {
            m.anomalies |= anomaly::TRUNCATED_IP;
            return;
        };
        fixed_v4(m, h);
        let ihl = h[0] & 0x0f;
        m.anomalies |= if ihl < 5 { anomaly::IPV4_BAD_IHL } else { anomaly::TRUNCATED_IP };
    } else {
        let Some(h) = ip.get(..40) else {
            m.anomalies |= anomaly::TRUNCATED_IP;
            return;
        };
        fixed_v6(m, h);
        m.anomalies |= anomaly::IPV6_BAD_EXT;
    }
}

fn decode_l4(m: &mut PacketMeta, p: &LaxSlicedPacket<'_>, payload: &[u8], l4_wire: u32) {
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => tcp_fields(m, t.slice(), t.header_len(), l4_wire),
        Some(TransportSlice::Udp(u)) => udp_fields(m, u.header_slice(), u.payload(), l4_wire),
        Some(TransportSlice::Icmpv4(i)) => icmp_fields(m, i.slice(), i.payload(), l4_wire),
        Some(TransportSlice::Icmpv6(i)) => icmp_fields(m, i.slice(), i.payload(), l4_wire),
        Some(TransportSlice::Igmp(_)) => m.payload_len = l4_wire,
        None => {
            // A first fragment, or a transport header cut short: read what is there.
            let first_fragment = m.frag_offset == 0;
            if first_fragment && matches!(m.proto, ip_proto::TCP | ip_proto::UDP) {
                if let Some(ports) = payload.get(..4) {
                    m.sport = u16::from_be_bytes([ports[0], ports[1]]);
                    m.dport = u16::from_be_bytes([ports[2], ports[3]]);
                    m.l4 |= l4::PORTS;
                }
                if m.proto == ip_proto::TCP && payload.len() >= 14 {
                    m.tcp_flags = tcp_flags_raw(payload);
                    m.l4 |= l4::TCP_FLAGS;
                }
            } else if first_fragment && matches!(m.proto, ip_proto::ICMP | ip_proto::ICMPV6) {
                if let Some(h) = payload.get(..2) {
                    m.icmp_type = h[0];
                    m.icmp_code = h[1];
                    m.l4 |= l4::ICMP;
                }
            }
            let hdr_min: u32 = match m.proto {
                ip_proto::TCP => 20,
                ip_proto::UDP | ip_proto::ICMP | ip_proto::ICMPV6 => 8,
                _ => 0,
            };
            let is_fragment = m.frag_offset > 0 || m.frag & frag::MORE != 0;
            if !is_fragment && (payload.len() as u64) < u64::from(hdr_min) {
                m.anomalies |= anomaly::TRUNCATED_L4;
            }
            // For a fragment, payload_len is the fragment's data length (what
            // reassembly checks need); otherwise the application payload.
            m.payload_len = if is_fragment { l4_wire } else { l4_wire.saturating_sub(hdr_min) };
        }
    }
}

fn rest_of_header(icmp: &[u8]) -> u32 {
    icmp.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0)
}

/// Writes the last two labels of the question name, dotted, into `out`.
fn parent_name(msg: &[u8], labels: u8, out: &mut [u8; 24]) {
    let mut pos = 12;
    let skip = labels.saturating_sub(2);
    let mut n = 0;
    let mut w = 0;
    while let Some(&len) = msg.get(pos) {
        let len = usize::from(len);
        if len == 0 || len > 63 {
            break;
        }
        if n >= skip {
            if w > 0 && w < out.len() {
                out[w] = b'.';
                w += 1;
            }
            for &c in msg.get(pos + 1..pos + 1 + len).unwrap_or(&[]) {
                if w < out.len() {
                    out[w] = c.to_ascii_lowercase();
                    w += 1;
                }
            }
        }
        n += 1;
        pos += 1 + len;
    }
}

/// True when every option in a Hop-by-Hop or Destination Options area is
/// one a standard defines (IANA "Destination Options and Hop-by-Hop Options").
fn ipv6_options_known(opts: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&t) = opts.get(i) {
        if t == 0 {
            i += 1; // Pad1
            continue;
        }
        let Some(&len) = opts.get(i + 1) else { return false };
        // PadN, tunnel encapsulation limit, router alert, CALIPSO, SMF_DPD,
        // quick-start, RPL, MPL, ILNP nonce, line id, jumbo, home address, IOAM.
        if !matches!(
            t,
            0x01 | 0x04
                | 0x05
                | 0x07
                | 0x08
                | 0x26
                | 0x63
                | 0x6d
                | 0x8b
                | 0x8c
                | 0xc2
                | 0xc9
                | 0x11
                | 0x31
                | 0x23
        ) {
            return false;
        }
        i += 2 + usize::from(len);
    }
    true
}

fn tcp_flags_raw(tcp: &[u8]) -> u16 {
    let lo = tcp.get(13).copied().unwrap_or(0);
    let ns = tcp.get(12).copied().unwrap_or(0) & 1;
    u16::from(lo) | (u16::from(ns) << 8)
}

fn copy_head(dst: &mut [u8; 8], src: &[u8]) {
    let n = src.len().min(8);
    dst[..n].copy_from_slice(&src[..n]);
}

/// True when the IPv4 options area parses: every option fits, and the
/// fixed-size ones (RFC 791, RFC 1108) have their defined length.
fn ipv4_options_ok(opts: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return true, // end of options list
            1 => i += 1,      // no-operation
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return false;
                }
                let fixed_ok = match kind {
                    130 => len == 11,                                // basic security
                    136 => len == 4,                                 // stream id
                    7 | 131 | 137 => len >= 3 && (len - 3) % 4 == 0, // record/source route
                    68 => (4..=40).contains(&len),                   // timestamp
                    _ => true,
                };
                if !fixed_ok {
                    return false;
                }
                i += len;
            }
        }
    }
    true
}

/// Verifies the IPv4 header checksum (a counter only: offload makes bad ones common).
fn ipv4_checksum_ok(h: &[u8]) -> bool {
    let mut sum: u32 = 0;
    for pair in h.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[cfg(test)]
mod tests;
