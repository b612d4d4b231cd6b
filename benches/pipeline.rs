//! Host-stage interval merge, event serialisation, and a whole replay.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use netvigil::base::time::Timestamp;
use netvigil::config::Config;
use netvigil::decode::Addr;
use netvigil::detect::{DetectConfig, HostStage, Reports};
use netvigil::export::EventWriter;
use netvigil::export::events::to_json_line;
use netvigil::pipeline;
use netvigil::track::{HostCounters, HostRow, ShardReport, ShardStats};

fn report(shard: usize, tick: u64, hosts: u32) -> ShardReport<Reports> {
    ShardReport {
        shard,
        tick: Timestamp::from_secs(tick),
        last: false,
        hosts: (0..hosts)
            .map(|i| {
                let mut h = HostCounters {
                    pkts_in: 10,
                    pkts_out: 10,
                    bytes_in: 6000,
                    bytes_out: 900,
                    ..Default::default()
                };
                h.peers_out.insert_addr(&Addr::v4([10, 0, 0, 1]));
                HostRow(Addr::v4((i + 0x0a00_0000).to_be_bytes()), h)
            })
            .collect(),
        families: Reports::default(),
        stats: ShardStats::default(),
        sent: None,
    }
}

fn bench(c: &mut Criterion) {
    let cfg = Config::default();
    let mut g = c.benchmark_group("host_stage");
    g.throughput(Throughput::Elements(2 * 10_000));
    g.bench_function("merge_and_judge_2_shards_x_10k_hosts", |b| {
        let mut stage = HostStage::new(2, DetectConfig::from_config(&cfg));
        let mut out = Vec::new();
        let mut tick = 1_000_000u64;
        b.iter_batched(
            || {
                tick += 1;
                (report(0, tick, 10_000), report(1, tick, 10_000))
            },
            |(a, b2)| {
                stage.on_report(a, &mut out);
                stage.on_report(b2, &mut out);
                out.clear();
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let sample = netvigil::detect::Anomaly {
        ts: Timestamp::from_secs(1_700_000_000),
        phase: netvigil::detect::Phase::Start,
        episode_id: "0123456789abcdef".into(),
        kind: netvigil::detect::AnomalyKind::PortScan,
        severity: netvigil::detect::Severity::Medium,
        src: Some(Addr::v4([10, 0, 0, 1])),
        dst: Some(Addr::v4([10, 0, 0, 2])),
        flow: None,
        observed: 1000.0,
        unit: "distinct ports",
        baseline: None,
        threshold: 15.0,
        score: 66.67,
        evidence: serde_json::json!({"distinct_ports": 1000, "probes": 1002, "port_range": [1, 65389]})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        message: "10.0.0.1 probed 1000 distinct ports of 10.0.0.2: a port scan".into(),
        priority: None,
    };
    let mut g = c.benchmark_group("events");
    g.throughput(Throughput::Elements(1));
    g.bench_function("serialise_one_event", |b| b.iter(|| to_json_line(std::hint::black_box(&sample))));
    g.finish();

    let file = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/captures/benign/chrissanders_http_espn.pcapng"
    ));
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(956));
    g.sample_size(20);
    g.bench_function("replay_espn_956_packets", |b| {
        b.iter(|| {
            pipeline::replay_files(vec![file.clone()], &cfg, 1, EventWriter::new(Box::new(std::io::sink())))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
