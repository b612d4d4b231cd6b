//! The run summary: what a run did, as one screen on stderr and as JSON.

use std::path::PathBuf;
use std::time::Duration;

use crate::base::time::Timestamp;
use crate::capture::CaptureStats;
use crate::decode::anomaly;
use crate::track::{self, ShardStats};

/// What a run did, for the summary and the tests.
#[derive(Debug, Default)]
pub struct Summary {
    /// Capture-side counters.
    pub capture: CaptureStats,
    /// Tracking counters summed over shards.
    pub tracking: ShardStats,
    /// Episodes opened, by kind.
    pub episodes_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Event lines written.
    pub events_written: u64,
    /// First and last packet time.
    pub first_ts: Option<Timestamp>,
    /// Last packet time.
    pub last_ts: Option<Timestamp>,
    /// Wall time of the run.
    pub wall: Duration,
    /// Set when the event output failed; the run stopped early.
    pub events_error: Option<String>,
    /// Hosts with a learned baseline at the end.
    pub baseline_hosts: usize,
    /// Hosts whose baselines were restored from `--state-dir` at start.
    pub baseline_restored: usize,
    /// Where the baselines were saved at the end, if they were.
    pub state_saved: Option<PathBuf>,
    /// Pipeline latency per interval in microseconds: p50, p99, max.
    pub latency_us: Option<(u64, u64, u64)>,
    /// Configuration reloads: applied, rejected.
    pub reloads: (u64, u64),
    /// What the NATS output did, when there was one.
    pub nats: Option<crate::export::nats::NatsReport>,
    /// What the evidence recorder wrote, when there was one.
    pub evidence: Option<super::evidence::EvidenceReport>,
}

/// The process's peak resident set size (Linux `VmHWM`), if readable.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Summary {
    /// The summary as JSON, for scripts (`--summary-json`).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.capture;
        let t = &self.tracking;
        let decode: serde_json::Map<String, serde_json::Value> = anomaly::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| c.decode_anomalies[*i] > 0)
            .map(|(i, (_, n))| ((*n).to_string(), serde_json::json!(c.decode_anomalies[i])))
            .collect();
        let protocols: serde_json::Map<String, serde_json::Value> = track::PROTO_LABELS
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).to_string(), serde_json::json!(t.by_proto[i])))
            .collect();
        let links: serde_json::Map<String, serde_json::Value> =
            c.unsupported_links.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
        serde_json::json!({
            "packets": c.packets,
            "bytes": c.bytes,
            "first_packet": self.first_ts.map(|t| t.to_string()),
            "last_packet": self.last_ts.map(|t| t.to_string()),
            "wall_seconds": self.wall.as_secs_f64(),
            "packets_per_second": c.packets as f64 / self.wall.as_secs_f64().max(1e-9),
            "protocols": protocols,
            "flows": {
                "created": t.flows_created,
                "idle_expired": t.flows_idle,
                "active_split": t.flows_active_timeout,
                "evicted": t.flows_evicted,
                "table_bytes": t.flow_table_bytes,
            },
            "capped": {"host_summaries": t.host_overflow, "rule_observations": t.hit_overflow},
            "decode_anomalies": decode,
            "unsupported_link_types": links,
            "episodes": self.episodes_by_kind,
            "events_written": self.events_written,
            "nats": self.nats,
            "evidence": self.evidence,
            "drops": {"kernel": c.kernel_drops, "interface": c.if_drops, "queue_full": c.queue_drops},
            "reordered": {"packets": c.reordered, "max_step_us": c.reordered_max_ns / 1000},
            "errors": c.errors,
            "events_error": self.events_error,
            "reloads": {"applied": self.reloads.0, "rejected": self.reloads.1},
            "latency_us": self.latency_us.map(|(a, b, c)| serde_json::json!({"p50": a, "p99": b, "max": c})),
            "peak_rss_bytes": peak_rss_bytes(),
            "baselines": {
                "hosts": self.baseline_hosts,
                "restored": self.baseline_restored,
                "saved_to": self.state_saved.as_ref().map(|p| p.display().to_string()),
            },
        })
    }

    /// The one-screen end-of-run report printed on stderr.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let c = &self.capture;
        let t = &self.tracking;
        let secs = self.wall.as_secs_f64().max(1e-9);
        let span = match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) => format!("{a} .. {b}"),
            _ => "no packets".into(),
        };
        let _ = writeln!(s, "netvigil summary");
        let _ = writeln!(s, "  packets      {} ({} bytes), packet time {span}", c.packets, c.bytes);
        let _ = writeln!(
            s,
            "  throughput   {:.0} packets/s, {:.1} MB/s over {:.3} s wall",
            c.packets as f64 / secs,
            c.bytes as f64 / secs / 1e6,
            secs
        );
        let _ = writeln!(
            s,
            "  protocols    tcp {} udp {} icmp {} other-ip {} non-ip {}",
            t.by_proto[0], t.by_proto[1], t.by_proto[2], t.by_proto[3], t.by_proto[4]
        );
        let _ = writeln!(
            s,
            "  flows        {} created, {} idle-expired, {} split (active timeout), {} evicted",
            t.flows_created, t.flows_idle, t.flows_active_timeout, t.flows_evicted
        );
        if t.host_overflow + t.hit_overflow > 0 {
            let _ = writeln!(
                s,
                "  capped       {} host summaries and {} rule observations turned away at per-interval caps",
                t.host_overflow, t.hit_overflow
            );
        }
        let anomalies: Vec<String> = anomaly::NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| c.decode_anomalies[*i] > 0)
            .map(|(i, (_, n))| format!("{n} {}", c.decode_anomalies[i]))
            .collect();
        let _ = writeln!(
            s,
            "  decode       {}",
            if anomalies.is_empty() { "no anomalies".to_string() } else { anomalies.join(", ") }
        );
        if c.reordered > 0 {
            let _ = writeln!(
                s,
                "  reordered    {} packets a little out of time order (at most {:.3} ms back), kept in order",
                c.reordered,
                c.reordered_max_ns as f64 / 1e6
            );
        }
        for (dlt, n) in &c.unsupported_links {
            let _ = writeln!(s, "  link type    {dlt} unsupported: {n} packets counted, not analysed");
        }
        let kinds: Vec<String> = self.episodes_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            s,
            "  episodes     {} ({} event lines)",
            if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") },
            self.events_written
        );
        if let Some(rss) = peak_rss_bytes() {
            let _ = writeln!(s, "  memory       peak RSS {:.1} MB", rss as f64 / 1e6);
        }
        let _ = writeln!(
            s,
            "  drops        kernel {} interface {} queue {}",
            c.kernel_drops, c.if_drops, c.queue_drops
        );
        for e in &c.errors {
            let _ = writeln!(s, "  error        {e}");
        }
        let _ = writeln!(
            s,
            "  baselines    {} hosts ({} restored{})",
            self.baseline_hosts,
            self.baseline_restored,
            self.state_saved.as_ref().map(|p| format!(", saved to {}", p.display())).unwrap_or_default()
        );
        if let Some((p50, p99, max)) = self.latency_us {
            let _ = writeln!(
                s,
                "  latency      interval close to events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
                max as f64 / 1e3
            );
        }
        if self.reloads != (0, 0) {
            let _ = writeln!(s, "  reloads      {} applied, {} rejected", self.reloads.0, self.reloads.1);
        }
        if let Some(n) = &self.nats {
            let _ = writeln!(
                s,
                "  nats         {} spooled, {} acknowledged ({} already in the stream), {} dropped at the spool cap, {} bytes left for the next start",
                n.spooled, n.acknowledged, n.duplicates, n.dropped, n.left_bytes
            );
        }
        if let Some(e) = &self.evidence {
            let _ = writeln!(
                s,
                "  evidence     {} pcaps, {} packets, {} rotated out, {} ring overruns",
                e.files, e.packets, e.rotated, e.ring_overruns
            );
        }
        if let Some(e) = &self.events_error {
            let _ = writeln!(s, "  events       stopped: {e}");
        }
        s
    }
}
