//! Decode cost per link type and packet shape.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use netvigil::base::time::Timestamp;
use netvigil::decode::{LinkType, decode};

fn frames() -> Vec<(&'static str, LinkType, Vec<u8>)> {
    let mut tcp = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 443, 1, 65535)
        .syn()
        .write(&mut tcp, &[])
        .unwrap_or_default();
    let mut udp6 = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .single_vlan(etherparse::VlanId::try_new(10).unwrap_or(etherparse::VlanId::ZERO))
        .ipv6([1; 16], [2; 16], 64)
        .udp(5353, 53)
        .write(&mut udp6, &[0u8; 1200])
        .unwrap_or_default();
    let mut raw = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut raw, &[0u8; 56])
        .unwrap_or_default();
    vec![
        ("ethernet_ipv4_tcp_syn", LinkType::Ethernet, tcp),
        ("ethernet_vlan_ipv6_udp_1200", LinkType::Ethernet, udp6),
        ("raw_ipv4_icmp", LinkType::RawIp, raw),
        ("garbage_64", LinkType::Ethernet, (0..64u8).map(|b| b.wrapping_mul(37)).collect()),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    for (name, link, f) in frames() {
        g.bench_function(name, |b| {
            b.iter(|| decode(link, Timestamp(1), f.len() as u32, std::hint::black_box(&f)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
