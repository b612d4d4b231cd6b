//! The JSON-lines event sink (contract.md, "Anomaly events").

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::community_id::community_id;
use crate::detect::anomaly::{Anomaly, Baseline};

/// Errors of the event sink.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The events file could not be opened.
    #[error("cannot open events file {path}: {source}; check the directory exists and is writable")]
    Open {
        /// The path given with `--events`.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The reader of the events went away (e.g. `| head`).
    #[error("event output closed by the reader (broken pipe)")]
    BrokenPipe,
    /// Writing failed (disk full, I/O error).
    #[error("cannot write events: {0}")]
    Write(io::Error),
}

#[derive(Serialize)]
struct BaselineOut {
    mean: f64,
    stddev: f64,
    samples: u64,
}

#[derive(Serialize)]
struct Record<'a> {
    timestamp: String,
    event_type: &'static str,
    phase: &'static str,
    episode_id: &'a str,
    category: &'static str,
    kind: &'static str,
    severity: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    community_id: Option<String>,
    observed: f64,
    unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<BaselineOut>,
    threshold: f64,
    score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority_reasons: Option<&'a [String]>,
    evidence: &'a serde_json::Map<String, serde_json::Value>,
    message: &'a str,
}

fn open_append(path: &Path) -> Result<std::fs::File, EventsError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| EventsError::Open { path: path.to_path_buf(), source })
}

/// Name of an IP protocol as written in events.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "ipv6-icmp",
        132 => "sctp",
        _ => "ip",
    }
}

/// Serialises one event to its JSON line (without the newline).
pub fn to_json_line(a: &Anomaly) -> String {
    let flow = a.flow.as_ref();
    let ports = flow.filter(|f| matches!(f.proto, 6 | 17 | 132));
    let rec = Record {
        timestamp: a.ts.to_string(),
        event_type: "anomaly",
        phase: a.phase.as_str(),
        episode_id: &a.episode_id,
        category: a.category().as_str(),
        kind: a.kind.as_str(),
        severity: a.severity.as_str(),
        src_ip: a.src.map(|s| s.to_string()),
        dst_ip: a.dst.map(|s| s.to_string()),
        src_port: ports.map(|f| f.sport),
        dst_port: ports.map(|f| f.dport),
        proto: flow.map(|f| proto_name(f.proto)),
        community_id: flow.map(community_id),
        observed: a.observed,
        unit: a.unit,
        baseline: a.baseline.map(|Baseline { mean, stddev, samples }| BaselineOut { mean, stddev, samples }),
        threshold: a.threshold,
        score: a.score,
        priority: a.priority.as_ref().map(|p| p.value),
        priority_reasons: a.priority.as_ref().map(|p| p.reasons.as_slice()),
        evidence: &a.evidence,
        message: &a.message,
    };
    // Serialising plain strings and finite numbers cannot fail; a non-finite
    // float would become null rather than abort the sensor.
    serde_json::to_string(&rec)
        .unwrap_or_else(|e| format!("{{\"event_type\":\"error\",\"message\":\"{e}\"}}"))
}

/// Writes events as JSON lines, flushed per line, and counts them.
pub struct EventWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    path: Option<PathBuf>,
    /// Events written, by kind name.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Total events written.
    pub total: u64,
}

impl EventWriter {
    /// Opens `path` for appending, or stdout for `-`.
    pub fn open(path: &Path) -> Result<EventWriter, EventsError> {
        if path == Path::new("-") {
            return Ok(EventWriter::new(Box::new(io::stdout())));
        }
        let mut w = EventWriter::new(Box::new(open_append(path)?));
        w.path = Some(path.to_path_buf());
        Ok(w)
    }

    /// Reopens the events file (after logrotate moved it: SIGHUP); a no-op on stdout.
    pub fn reopen(&mut self) -> Result<(), EventsError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let f = open_append(&path)?;
        let _ = self.out.flush();
        self.out = BufWriter::new(Box::new(f));
        Ok(())
    }

    /// Wraps any writer (tests use a `Vec<u8>`).
    pub fn new(out: Box<dyn Write + Send>) -> EventWriter {
        EventWriter { out: BufWriter::new(out), path: None, by_kind: BTreeMap::new(), total: 0 }
    }

    /// Writes and flushes one event.
    pub fn write(&mut self, a: &Anomaly) -> Result<(), EventsError> {
        let line = to_json_line(a);
        let res = self
            .out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
            .and_then(|_| self.out.flush());
        match res {
            Ok(()) => {
                self.total += 1;
                if a.phase == crate::detect::Phase::Start {
                    *self.by_kind.entry(a.kind.as_str()).or_default() += 1;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(EventsError::BrokenPipe),
            Err(e) => Err(EventsError::Write(e)),
        }
    }
}
