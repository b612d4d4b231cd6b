//! Decoder tests: hand-built frames (etherparse's builder) and hostile bytes.

use etherparse::PacketBuilder;
use proptest::prelude::*;

use super::*;

const T: Timestamp = Timestamp(1_000);

fn eth_tcp(
    flags: impl Fn(
        etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    ) -> etherparse::PacketBuilderStep<etherparse::TcpHeader>,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 1234, 65535);
    let b = flags(b);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn ethernet_ipv4_tcp_round_trip() {
    let f = eth_tcp(|b| b.syn().ack(99), b"hello");
    let m = decode(LinkType::Ethernet, T, f.len() as u32, &f);
    assert_eq!(m.l3, L3::Ipv4);
    assert_eq!(m.src, Addr::v4([10, 0, 0, 1]));
    assert_eq!(m.dst, Addr::v4([10, 0, 0, 2]));
    assert_eq!((m.sport, m.dport, m.proto, m.ttl), (40000, 443, ip_proto::TCP, 64));
    assert_eq!(m.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!((m.tcp_seq, m.tcp_ack, m.tcp_window), (1234, 99, 65535));
    assert_eq!(m.payload_len, 5);
    assert_eq!(&m.payload_head[..5], b"hello");
    assert_eq!(m.src_mac, [1, 2, 3, 4, 5, 6]);
    assert_eq!(m.anomalies, 0);
    assert!(m.has_ports() && m.has_tcp_flags());
}

#[test]
fn truncated_tcp_keeps_ports_and_wire_payload() {
    let f = eth_tcp(|b| b.syn(), &[0u8; 100]);
    let cut = &f[..14 + 20 + 16]; // ports and flags present, options/payload cut
    let m = decode(LinkType::Ethernet, T, f.len() as u32, cut);
    assert_eq!((m.sport, m.dport), (40000, 443));
    assert!(m.has_tcp_flags());
    assert_eq!(m.tcp_flags, tcp_flags::SYN);
    assert_ne!(m.anomalies & anomaly::TRUNCATED_L4, 0);
    assert_eq!(m.payload_len, 100, "wire view of the payload survives the snaplen");
}

#[test]
fn vlan_and_qinq() {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .double_vlan(etherparse::VlanId::try_new(100).unwrap(), etherparse::VlanId::try_new(200).unwrap())
        .ipv6([1; 16], [2; 16], 7)
        .udp(53, 5353);
    let mut f = Vec::new();
    b.write(&mut f, &[0xab; 12]).unwrap();
    let m = decode(LinkType::Ethernet, T, f.len() as u32, &f);
    assert_eq!((m.vlan_count, m.vlan), (2, [100, 200]));
    assert_eq!((m.l3, m.proto, m.sport, m.dport, m.payload_len), (L3::Ipv6, ip_proto::UDP, 53, 5353, 12));
    assert_eq!(m.ttl, 7);
}

#[test]
fn raw_ip_and_icmp() {
    let b = PacketBuilder::ipv4([192, 168, 0, 1], [192, 168, 0, 2], 1).icmpv4_echo_request(7, 1);
    let mut f = Vec::new();
    b.write(&mut f, &[0; 56]).unwrap();
    let m = decode(LinkType::RawIp, T, f.len() as u32, &f);
    assert_eq!((m.proto, m.icmp_type, m.icmp_code, m.payload_len), (ip_proto::ICMP, 8, 0, 56));
    assert!(m.has_icmp());
    let sll2 = {
        let mut h = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 9, 9, 9, 9, 9, 9, 0, 0];
        h.extend_from_slice(&f);
        h
    };
    let m2 = decode(LinkType::LinuxSll2, T, sll2.len() as u32, &sll2);
    assert_eq!((m2.src, m2.icmp_type, m2.src_mac), (m.src, 8, [9; 6]));
}

#[test]
fn arp_and_non_ip() {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0xaa; 6]);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&[0xaa; 6]);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&[0xbb; 6]);
    f.extend_from_slice(&[10, 0, 0, 2]);
    let m = decode(LinkType::Ethernet, T, f.len() as u32, &f);
    assert_eq!(
        (m.l3, m.arp_op, m.src, m.dst),
        (L3::Arp, 2, Addr::v4([10, 0, 0, 1]), Addr::v4([10, 0, 0, 2]))
    );
    assert_eq!((m.arp_sha, m.arp_tha), ([0xaa; 6], [0xbb; 6]));
    f[12] = 0x88;
    f[13] = 0xcc; // LLDP
    assert_eq!(decode(LinkType::Ethernet, T, 60, &f).anomalies, anomaly::NON_IP);
}

#[test]
fn ipv4_header_anomalies() {
    let mut f = eth_tcp(|b| b.syn(), &[]);
    f[14] = 0x44; // IHL 4
    let m = decode(LinkType::Ethernet, T, f.len() as u32, &f);
    assert_ne!(m.anomalies & anomaly::IPV4_BAD_IHL, 0);
    assert_eq!(m.src, Addr::v4([10, 0, 0, 1]), "addresses still read");
    let mut f = eth_tcp(|b| b.syn(), &[]);
    f[14 + 6] |= 0x80; // evil bit
    f[14 + 8] = 0; // TTL 0
    let m = decode(LinkType::Ethernet, T, f.len() as u32, &f);
    assert_ne!(m.anomalies & anomaly::IPV4_RESERVED_FLAG, 0);
    assert_ne!(m.anomalies & anomaly::TTL_ZERO, 0);
    assert_ne!(m.anomalies & anomaly::IPV4_BAD_CHECKSUM, 0);
    let short = &eth_tcp(|b| b.syn(), &[])[..14 + 10];
    assert_ne!(decode(LinkType::Ethernet, T, 60, short).anomalies & anomaly::TRUNCATED_IP, 0);
    assert_eq!(decode(LinkType::Ethernet, T, 60, &[0; 8]).anomalies, anomaly::TRUNCATED_LINK);
    assert_eq!(decode(LinkType::Unsupported(160), T, 60, &[0; 60]).anomalies, anomaly::UNSUPPORTED_LINK);
}

/// Regression: a TCP segmentation-offload super-frame (IPv4 total length 0,
/// 4,879 bytes captured on the sender) is offload, not a malformed header.
#[test]
fn tso_super_frame_is_offload_not_a_bad_length() {
    let mut f = eth_tcp(|b| b.ack(1), &[0x41; 4800]);
    f[14 + 2] = 0;
    f[14 + 3] = 0;
    let m = decode(LinkType::Ethernet, T, f.len() as u32, &f);
    assert_eq!(m.anomalies & anomaly::IPV4_BAD_TOTAL_LEN, 0);
    assert_ne!(m.anomalies & anomaly::IPV4_OFFLOAD_ZERO_LEN, 0);
    assert_eq!((m.sport, m.dport, m.payload_len), (40000, 443, 4800));
    // A zero length without a TCP segment behind it is still malformed.
    let mut short = eth_tcp(|b| b.ack(1), &[]);
    short[14 + 2] = 0;
    short[14 + 3] = 0;
    short[14 + 9] = 17;
    let m = decode(LinkType::Ethernet, T, short.len() as u32, &short);
    assert_ne!(m.anomalies & anomaly::IPV4_BAD_TOTAL_LEN, 0);
}

#[test]
fn options_parser() {
    assert!(ipv4_options_ok(&[]));
    assert!(ipv4_options_ok(&[1, 1, 1, 0]));
    assert!(ipv4_options_ok(&[7, 7, 4, 0, 0, 0, 0, 0]));
    assert!(!ipv4_options_ok(&[7, 1]));
    assert!(!ipv4_options_ok(&[130, 3, 0, 0]));
    assert!(!ipv4_options_ok(&[68, 40]));
    assert!(!ipv4_options_ok(&[99]));
}

#[test]
fn first_fragment_yields_ports() {
    // A 28-byte first fragment of a UDP datagram: header present, MF set.
    let mut ip = vec![0x45, 0, 0, 28, 0, 1, 0x20, 0, 64, 17, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
    ip.extend_from_slice(&[0x12, 0x34, 0, 53, 0, 200, 0, 0]);
    let m = decode(LinkType::RawIp, T, ip.len() as u32, &ip);
    assert_ne!(m.frag & frag::IS_FRAGMENT, 0);
    assert_eq!((m.sport, m.dport), (0x1234, 53));
    // A later fragment has no ports.
    ip[6] = 0x00;
    ip[7] = 0x10;
    let m = decode(LinkType::RawIp, T, ip.len() as u32, &ip);
    assert_eq!((m.frag_offset, m.has_ports()), (128, false));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..200), dlt in prop::sample::select(vec![0, 1, 9, 12, 101, 108, 113, 160, 228, 229, 276]), wire in any::<u32>()) {
        let _ = decode(LinkType::from_dlt(dlt), T, wire, &data);
    }

    #[test]
    fn tcp_fields_round_trip(sport in any::<u16>(), dport in any::<u16>(), seq in any::<u32>(), win in any::<u16>(), ttl in 1u8.., payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6]).ipv4([1, 2, 3, 4], [5, 6, 7, 8], ttl).tcp(sport, dport, seq, win).psh().ack(7);
        let mut f = Vec::new();
        b.write(&mut f, &payload).unwrap();
        let m = decode(LinkType::Ethernet, T, f.len() as u32, &f);
        prop_assert_eq!((m.sport, m.dport, m.tcp_seq, m.tcp_window, m.ttl), (sport, dport, seq, win, ttl));
        prop_assert_eq!(m.tcp_flags, tcp_flags::PSH | tcp_flags::ACK);
        prop_assert_eq!(m.payload_len as usize, payload.len());
        prop_assert_eq!(m.anomalies, 0);
    }
}

#[test]
fn packet_meta_stays_compact() {
    // Three cache lines: a batch of 256 stays within L2.
    assert!(std::mem::size_of::<PacketMeta>() <= 192, "{}", std::mem::size_of::<PacketMeta>());
}

/// Regression (cargo-fuzz, decode target): a truncated IPv6 extension header
/// made etherparse 0.21's extension iterator read out of bounds.
#[test]
fn fuzz_regression_ipv6_extension_overread() {
    let data: &[u8] = include_bytes!("../../tests/data/fuzz/decode-ipv6-ext-overread.bin");
    const DLTS: [i32; 12] = [0, 1, 9, 12, 14, 50, 101, 108, 113, 228, 229, 276];
    let (&sel, frame) = data.split_first().unwrap();
    let link = LinkType::from_dlt(DLTS[usize::from(sel) % DLTS.len()]);
    // Decoding must not read out of bounds; the misuse rules run on the
    // result in `detect::misuse`'s own regression test.
    let _ = decode(link, T, frame.len() as u32, frame);
}

#[test]
fn ipv6_extension_walk_reads_fragment_and_routing_headers() {
    // IPv6 + routing header type 0 + fragment header + 8 bytes of UDP.
    let mut p = vec![0x60, 0, 0, 0, 0, 32, 43, 64];
    p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]); // routing, type 0, next = fragment
    p.extend_from_slice(&[17, 0, 0x00, 0x11, 0, 0, 0x12, 0x34]); // offset 2 (16 bytes), MF, id 0x1234
    p.extend_from_slice(&[0; 16]);
    let m = decode(LinkType::RawIp, T, p.len() as u32, &p);
    assert_ne!(m.v6ext & v6ext::RH0, 0);
    assert_eq!((m.frag_offset, m.ip_id, m.proto), (16, 0x1234, ip_proto::UDP));
    assert_ne!(m.frag & frag::MORE, 0);
    // Cut inside the fragment header: the walk stops, nothing is read past the end.
    let m = decode(LinkType::RawIp, T, 60, &p[..52]);
    assert_eq!(m.frag_offset, 0);
}

/// Every packet of every bundled capture decodes the same on the common
/// path as through etherparse's lax slicer alone.
#[test]
fn common_path_agrees_with_etherparse() {
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/captures"))];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                files.push(p);
            }
        }
    }
    let mut compared = 0;
    for f in files {
        let Ok(mut cap) = pcap::Capture::from_file(&f) else { continue };
        let link = LinkType::from_dlt(cap.get_datalink().0);
        while let Ok(p) = cap.next_packet() {
            let (a, b) = (
                decode_with(link, T, p.header.len, p.data, true),
                decode_with(link, T, p.header.len, p.data, false),
            );
            assert_eq!(a, b, "{} packet {compared}", f.display());
            compared += 1;
        }
    }
    assert!(compared > 10_000, "{compared}");
}

/// IPv4 and IPv6 packets of each common transport, with a few bytes of
/// payload, as raw IP.
fn common_packets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let payload = [0u8, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1];
    for v6 in [false, true] {
        for t in 0..3 {
            let ip = if v6 {
                PacketBuilder::ipv6([1; 16], [2; 16], 64)
            } else {
                PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            };
            let mut f = Vec::new();
            match t {
                0 => ip.tcp(40000, 80, 1, 1000).syn().write(&mut f, &payload),
                1 => ip.udp(40000, 53).write(&mut f, &payload),
                _ if v6 => ip.icmpv6_echo_request(1, 2).write(&mut f, &payload),
                _ => ip.icmpv4_echo_request(1, 2).write(&mut f, &payload),
            }
            .unwrap();
            out.push(f);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Damaged common packets (bytes changed, cut short, a wire length of
    /// any size) decode the same on both paths.
    #[test]
    fn common_path_agrees_on_damaged_packets(
        which in 0usize..6,
        edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        cut in prop::option::of(1usize..8),
        extra in prop::option::of(1u32..3000),
    ) {
        let mut f = common_packets().swap_remove(which);
        for (at, v) in edits {
            if let Some(b) = f.get_mut(at) {
                *b = v;
            }
        }
        f.truncate(f.len() - cut.unwrap_or(0));
        let wire = f.len() as u32 + extra.unwrap_or(0);
        prop_assert_eq!(
            decode_with(LinkType::RawIp, T, wire, &f, true),
            decode_with(LinkType::RawIp, T, wire, &f, false)
        );
    }
}
