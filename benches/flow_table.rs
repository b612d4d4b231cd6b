//! Flow table update cost: hit, miss (new flow), and miss at the cap (eviction).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use netvigil::base::time::Timestamp;
use netvigil::decode::{Addr, L3, PacketMeta, ip_proto, l4, tcp_flags};
use netvigil::track::{FlowKey, FlowTable, TableLimits};

fn syn(i: u32, t: u64) -> PacketMeta {
    PacketMeta {
        ts: Timestamp(t),
        wire_len: 60,
        l3: L3::Ipv4,
        proto: ip_proto::TCP,
        l4: l4::PORTS | l4::TCP_FLAGS,
        src: Addr::v4(i.to_be_bytes()),
        dst: Addr::v4([10, 0, 0, 1]),
        sport: (i % 60_000) as u16 + 1024,
        dport: 80,
        tcp_flags: tcp_flags::SYN,
        ..PacketMeta::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_table");
    g.throughput(Throughput::Elements(1));
    let mut warm = FlowTable::new(TableLimits::default());
    let pkts: Vec<PacketMeta> = (0..10_000).map(|i| syn(i, 1)).collect();
    for m in &pkts {
        let (k, s) = FlowKey::of(m);
        warm.touch(m, k, s, &mut |_, _| {});
    }
    let mut i = 0usize;
    g.bench_function("hit_10k_flows", |b| {
        b.iter(|| {
            let m = &pkts[i % pkts.len()];
            i += 1;
            let (k, s) = FlowKey::of(m);
            warm.touch(m, k, s, &mut |_, _| {})
        })
    });
    // 100,000 new flows per iteration: report per-flow throughput.
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("miss_until_100k", |b| {
        b.iter_batched(
            || FlowTable::new(TableLimits::default()),
            |mut t| {
                for n in 0..100_000u32 {
                    let m = syn(n.wrapping_mul(2_654_435_761), u64::from(n));
                    let (k, s) = FlowKey::of(&m);
                    t.touch(&m, k, s, &mut |_, _| {});
                }
                t
            },
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(1));
    let limits = TableLimits { max_flows: 10_000, ..TableLimits::default() };
    let mut full = FlowTable::new(limits);
    let mut n: u32 = 0;
    g.bench_function("miss_at_cap_evicts", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let m = syn(n.wrapping_mul(2_654_435_761), u64::from(n));
            let (k, s) = FlowKey::of(&m);
            full.touch(&m, k, s, &mut |_, _| {})
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
