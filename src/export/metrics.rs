//! Prometheus metrics: every name in one place, published per interval.
//!
//! Stages keep plain local counters; at each tick the cumulative values are
//! handed to the `metrics` facade with `absolute`, so no packet ever touches
//! a global or an atomic.

use std::net::SocketAddr;

use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::capture::CaptureStats;
use crate::decode::anomaly;
use crate::track::{PROTO_LABELS, ShardStats};

/// Packets seen, by protocol.
pub const PACKETS: &str = "netvigil_packets_total";
/// Wire bytes seen, by protocol.
pub const BYTES: &str = "netvigil_bytes_total";
/// Packets lost before analysis, by where (kernel, interface, queue_full).
pub const DROPPED: &str = "netvigil_packets_dropped_total";
/// Decode anomalies, by reason.
pub const DECODE_ANOMALIES: &str = "netvigil_decode_anomalies_total";
/// Flows in the tables now.
pub const FLOWS_ACTIVE: &str = "netvigil_flows_active";
/// Flow records created.
pub const FLOWS_CREATED: &str = "netvigil_flows_created_total";
/// Flows evicted at the table cap.
pub const FLOWS_EVICTED: &str = "netvigil_flows_evicted_total";
/// Flows ended by timeout, by reason (idle, active).
pub const FLOWS_EXPIRED: &str = "netvigil_flows_expired_total";
/// Distinct hosts in the last interval.
pub const HOSTS: &str = "netvigil_hosts_tracked";
/// Anomaly episodes opened, by category, kind and severity.
pub const ANOMALIES: &str = "netvigil_anomalies_total";
/// Episodes open now.
pub const EPISODES_OPEN: &str = "netvigil_episodes_open";
/// Packet time of the last closed interval, Unix seconds.
pub const PACKET_TIME: &str = "netvigil_packet_time_seconds";
/// Hosts with a learned baseline.
pub const BASELINE_HOSTS: &str = "netvigil_baseline_hosts";
/// Hosts still in warm-up (judged by ceilings, not their own baseline).
pub const BASELINE_WARMING: &str = "netvigil_baseline_hosts_warming";
/// Build information (value 1).
pub const BUILD_INFO: &str = "netvigil_build_info";
/// Process start time, Unix seconds.
pub const START_TIME: &str = "netvigil_start_time_seconds";

/// Starts the Prometheus HTTP endpoint on `addr` and describes every metric.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe_counter!(PACKETS, metrics::Unit::Count, "Packets seen, by protocol.");
    describe_counter!(BYTES, metrics::Unit::Bytes, "Wire bytes seen, by protocol.");
    describe_counter!(DROPPED, metrics::Unit::Count, "Packets lost before analysis, by where.");
    describe_counter!(DECODE_ANOMALIES, metrics::Unit::Count, "Decode anomalies, by reason.");
    describe_gauge!(FLOWS_ACTIVE, metrics::Unit::Count, "Flows tracked now.");
    describe_counter!(FLOWS_CREATED, metrics::Unit::Count, "Flow records created.");
    describe_counter!(FLOWS_EVICTED, metrics::Unit::Count, "Flows evicted at the table cap.");
    describe_counter!(FLOWS_EXPIRED, metrics::Unit::Count, "Flows ended by timeout, by reason.");
    describe_gauge!(HOSTS, metrics::Unit::Count, "Distinct hosts in the last interval.");
    describe_counter!(ANOMALIES, metrics::Unit::Count, "Anomaly episodes opened.");
    describe_gauge!(EPISODES_OPEN, metrics::Unit::Count, "Anomaly episodes open now.");
    describe_gauge!(PACKET_TIME, metrics::Unit::Seconds, "Packet time of the last closed interval.");
    describe_gauge!(BASELINE_HOSTS, metrics::Unit::Count, "Hosts with a learned baseline.");
    describe_gauge!(BASELINE_WARMING, metrics::Unit::Count, "Hosts still in baseline warm-up.");
    describe_gauge!(BUILD_INFO, "Build information.");
    describe_gauge!(START_TIME, metrics::Unit::Seconds, "Process start time since the Unix epoch.");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    gauge!(START_TIME).set(start);
    Ok(())
}

/// Publishes the shards' cumulative counters (host stage, once per interval).
pub fn publish_tracking(s: &ShardStats, hosts: usize, open_episodes: usize, packet_time: f64) {
    for (i, p) in PROTO_LABELS.iter().enumerate() {
        counter!(PACKETS, "protocol" => *p).absolute(s.by_proto[i]);
        counter!(BYTES, "protocol" => *p).absolute(s.bytes_by_proto[i]);
    }
    gauge!(FLOWS_ACTIVE).set(s.flows_open as f64);
    counter!(FLOWS_CREATED).absolute(s.flows_created);
    counter!(FLOWS_EVICTED).absolute(s.flows_evicted);
    counter!(FLOWS_EXPIRED, "reason" => "idle").absolute(s.flows_idle);
    counter!(FLOWS_EXPIRED, "reason" => "active").absolute(s.flows_active_timeout);
    gauge!(HOSTS).set(hosts as f64);
    gauge!(EPISODES_OPEN).set(open_episodes as f64);
    gauge!(PACKET_TIME).set(packet_time);
}

/// Publishes the baseline table's size and warm-up state (host stage).
pub fn publish_baselines(hosts: usize, warming: usize) {
    gauge!(BASELINE_HOSTS).set(hosts as f64);
    gauge!(BASELINE_WARMING).set(warming as f64);
}

/// Counts one opened episode.
pub fn count_anomaly(category: &'static str, kind: &'static str, severity: &'static str) {
    counter!(ANOMALIES, "category" => category, "kind" => kind, "severity" => severity).increment(1);
}

/// Publishes the capture side's cumulative counters (capture thread, per tick).
pub fn publish_capture(c: &CaptureStats) {
    counter!(DROPPED, "reason" => "kernel").absolute(c.kernel_drops);
    counter!(DROPPED, "reason" => "interface").absolute(c.if_drops);
    counter!(DROPPED, "reason" => "queue_full").absolute(c.queue_drops);
    for (i, (_, name)) in anomaly::NAMES.iter().enumerate() {
        counter!(DECODE_ANOMALIES, "reason" => *name).absolute(c.decode_anomalies[i]);
    }
}
