//! Prometheus metrics: every name in one place, published per interval.
//!
//! Stages keep plain local counters; at each tick the cumulative values are
//! handed to the `metrics` facade with `absolute`, so no packet ever touches
//! a global or an atomic.

use std::net::SocketAddr;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::capture::CaptureStats;
use crate::decode::anomaly;
use crate::track::{PROTO_LABELS, ShardStats};

/// Packets seen, by protocol.
pub const PACKETS: &str = "netvigil_packets_total";
/// Wire bytes seen, by protocol.
pub const BYTES: &str = "netvigil_bytes_total";
/// Packets lost before analysis, by where (kernel, interface, queue_full).
pub const DROPPED: &str = "netvigil_packets_dropped_total";
/// Packets a little out of time order (multi-CPU/queue capture), kept in order.
pub const REORDERED: &str = "netvigil_packets_reordered_total";
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
/// Wall time from the capture thread closing an interval to the host stage finishing it.
pub const PIPELINE_LATENCY: &str = "netvigil_pipeline_latency_seconds";
/// Wall clock minus the packet time of the last closed interval (live capture).
pub const PACKET_TIME_LAG: &str = "netvigil_packet_time_lag_seconds";
/// Seconds since the process started.
pub const UPTIME: &str = "netvigil_uptime_seconds";
/// Configuration reloads (SIGHUP), by result.
pub const RELOADS: &str = "netvigil_config_reloads_total";
/// Build information (value 1).
pub const BUILD_INFO: &str = "netvigil_build_info";
/// Process start time, Unix seconds.
pub const START_TIME: &str = "netvigil_start_time_seconds";

/// Events sent to NATS (retries included).
pub const EVENTS_PUBLISHED: &str = "netvigil_events_published_total";
/// Events the JetStream stream acknowledged.
pub const EVENTS_ACKED: &str = "netvigil_events_acknowledged_total";
/// Events appended to the NATS spool.
pub const EVENTS_SPOOLED: &str = "netvigil_events_spooled_total";
/// Events dropped, by reason (spool_full).
pub const EVENTS_DROPPED: &str = "netvigil_events_dropped_total";
/// Bytes in the NATS spool not yet acknowledged.
pub const SPOOL_BYTES: &str = "netvigil_event_spool_bytes";
/// Time from sending an event to its acknowledgement.
pub const PUBLISH_LATENCY: &str = "netvigil_event_publish_seconds";

/// Starts the Prometheus HTTP endpoint on `addr` and describes every metric.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    // Fixed buckets (not summaries) so several sensors aggregate in PromQL.
    let latency = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let lag = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(PIPELINE_LATENCY.into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(PACKET_TIME_LAG.into()), &lag))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(PUBLISH_LATENCY.into()), &latency))
        .map_err(|e| format!("cannot configure metrics: {e}"))?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    describe_counter!(PACKETS, metrics::Unit::Count, "Packets seen, by protocol.");
    describe_counter!(BYTES, metrics::Unit::Bytes, "Wire bytes seen, by protocol.");
    describe_counter!(DROPPED, metrics::Unit::Count, "Packets lost before analysis, by where.");
    describe_counter!(DECODE_ANOMALIES, metrics::Unit::Count, "Decode anomalies, by reason.");
    describe_counter!(
        REORDERED,
        metrics::Unit::Count,
        "Packets stamped up to a second before one already seen (multi-CPU capture), kept in order."
    );
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
    describe_histogram!(
        PIPELINE_LATENCY,
        metrics::Unit::Seconds,
        "Wall time from an interval's close in capture to its end in the host stage."
    );
    describe_histogram!(
        PACKET_TIME_LAG,
        metrics::Unit::Seconds,
        "Wall clock minus packet time of the last closed interval (live)."
    );
    describe_gauge!(UPTIME, metrics::Unit::Seconds, "Seconds since the process started.");
    describe_counter!(RELOADS, metrics::Unit::Count, "Configuration reloads by result.");
    describe_gauge!(BUILD_INFO, "Build information.");
    describe_counter!(EVENTS_PUBLISHED, metrics::Unit::Count, "Events sent to NATS, retries included.");
    describe_counter!(EVENTS_ACKED, metrics::Unit::Count, "Events the JetStream stream acknowledged.");
    describe_counter!(EVENTS_SPOOLED, metrics::Unit::Count, "Events appended to the NATS spool.");
    describe_counter!(EVENTS_DROPPED, metrics::Unit::Count, "Events dropped, by reason.");
    describe_gauge!(SPOOL_BYTES, metrics::Unit::Bytes, "Bytes in the NATS spool not yet acknowledged.");
    describe_histogram!(
        PUBLISH_LATENCY,
        metrics::Unit::Seconds,
        "Time from sending an event to its acknowledgement."
    );
    describe_gauge!(START_TIME, metrics::Unit::Seconds, "Process start time since the Unix epoch.");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Series that exist from the start, so dashboards show 0, not "no data".
    counter!(RELOADS, "result" => "ok").absolute(0);
    // The event-shipping panels and alerts read 0, not "no data", on a
    // sensor without NATS output.
    for c in [EVENTS_SPOOLED, EVENTS_PUBLISHED, EVENTS_ACKED] {
        counter!(c).absolute(0);
    }
    counter!(EVENTS_DROPPED, "reason" => "spool_full").absolute(0);
    gauge!(SPOOL_BYTES).set(0.0);
    counter!(RELOADS, "result" => "failed").absolute(0);
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

/// Records one interval's pipeline latency, live lag and the uptime.
pub fn publish_timing(latency: f64, lag: Option<f64>, uptime: f64) {
    histogram!(PIPELINE_LATENCY).record(latency);
    if let Some(l) = lag {
        histogram!(PACKET_TIME_LAG).record(l.max(0.0));
    }
    gauge!(UPTIME).set(uptime);
}

/// Counts a configuration reload.
pub fn count_reload(ok: bool) {
    counter!(RELOADS, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// Counts one opened episode, with its priority band (what to read first).
pub fn count_anomaly(
    category: &'static str,
    kind: &'static str,
    severity: &'static str,
    priority: Option<u8>,
) {
    let band = priority_band(priority);
    counter!(ANOMALIES, "category" => category, "kind" => kind, "severity" => severity, "priority" => band)
        .increment(1);
}

/// The `priority` label: five bands of twenty, so the series stay few (a
/// dashboard sorts by band; the event itself carries the exact number).
pub fn priority_band(priority: Option<u8>) -> &'static str {
    match priority {
        None => "none",
        Some(80..) => "80-100",
        Some(60..=79) => "60-79",
        Some(40..=59) => "40-59",
        Some(20..=39) => "20-39",
        Some(_) => "0-19",
    }
}

/// Publishes the capture side's cumulative counters (capture thread, per tick).
pub fn publish_capture(c: &CaptureStats) {
    counter!(DROPPED, "reason" => "kernel").absolute(c.kernel_drops);
    counter!(DROPPED, "reason" => "interface").absolute(c.if_drops);
    counter!(DROPPED, "reason" => "queue_full").absolute(c.queue_drops);
    counter!(REORDERED).absolute(c.reordered);
    for (i, (_, name)) in anomaly::NAMES.iter().enumerate() {
        counter!(DECODE_ANOMALIES, "reason" => *name).absolute(c.decode_anomalies[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::priority_band;

    #[test]
    fn priority_bands_cover_0_to_100() {
        assert_eq!(priority_band(None), "none");
        assert_eq!(priority_band(Some(0)), "0-19");
        assert_eq!(priority_band(Some(19)), "0-19");
        assert_eq!(priority_band(Some(20)), "20-39");
        assert_eq!(priority_band(Some(59)), "40-59");
        assert_eq!(priority_band(Some(79)), "60-79");
        assert_eq!(priority_band(Some(80)), "80-100");
        assert_eq!(priority_band(Some(100)), "80-100");
    }
}
