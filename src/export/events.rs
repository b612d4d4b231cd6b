//! The JSON-lines event sink (contract.md, "Anomaly events").

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::community_id::community_id;
use super::nats::{NatsError, NatsOptions, NatsReport, NatsSink, NatsTarget};
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
    /// The NATS output could not start.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// More than one file target.
    #[error("--events takes at most one file (or -) and one nats:// target; got {0} and {1}")]
    TwoFiles(String, String),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    sensor: Option<&'a str>,
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
    to_json_line_from(a, None)
}

/// Serialises one event as seen by the named sensor.
pub fn to_json_line_from(a: &Anomaly, sensor: Option<&str>) -> String {
    let flow = a.flow.as_ref();
    let ports = flow.filter(|f| matches!(f.proto, 6 | 17 | 132));
    let rec = Record {
        timestamp: a.ts.to_string(),
        event_type: "anomaly",
        sensor,
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

/// One `--events` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventTarget {
    /// `-`: standard output.
    Stdout,
    /// A JSON-lines file, appended to.
    File(PathBuf),
    /// A NATS JetStream subject.
    Nats(NatsTarget),
}

impl std::str::FromStr for EventTarget {
    type Err = NatsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "-" => EventTarget::Stdout,
            _ if s.starts_with("nats://") => EventTarget::Nats(s.parse()?),
            _ => EventTarget::File(PathBuf::from(s)),
        })
    }
}

/// How the event outputs are set up beyond their targets.
#[derive(Clone, Debug, Default)]
pub struct OutputOptions {
    /// The sensor's name, written in every event.
    pub sensor: Option<String>,
    /// `--state-dir`: the NATS spool lives in its `spool/`.
    pub state_dir: Option<PathBuf>,
    /// `[events]` settings.
    pub config: crate::config::EventsConfig,
}

/// Writes events as JSON lines, flushed per line, and counts them.
pub struct EventWriter {
    out: Option<BufWriter<Box<dyn Write + Send>>>,
    path: Option<PathBuf>,
    nats: Option<NatsSink>,
    sensor: Option<String>,
    /// Events written, by kind name.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Total events written.
    pub total: u64,
}

impl EventWriter {
    /// Opens every target: at most one file (or stdout) and one NATS subject.
    pub fn open_targets(targets: &[EventTarget], opts: &OutputOptions) -> Result<EventWriter, EventsError> {
        let mut w = EventWriter {
            out: None,
            path: None,
            nats: None,
            sensor: opts.sensor.clone(),
            by_kind: BTreeMap::new(),
            total: 0,
        };
        let mut file: Option<&EventTarget> = None;
        for t in targets {
            match t {
                EventTarget::Nats(target) => {
                    let dir = opts.state_dir.as_ref().ok_or(NatsError::NoStateDir)?;
                    let c = &opts.config;
                    w.nats = Some(NatsSink::start(NatsOptions {
                        target: target.clone(),
                        spool_dir: dir.join("spool"),
                        spool_cap: (c.spool_mib * 1_048_576.0) as u64,
                        stream: c.nats_stream.clone(),
                        drain: std::time::Duration::from_secs(c.drain_seconds),
                        sensor: opts.sensor.clone().unwrap_or_else(|| "netvigil".into()),
                    })?);
                }
                EventTarget::Stdout | EventTarget::File(_) => {
                    if let Some(prev) = file {
                        return Err(EventsError::TwoFiles(target_name(prev), target_name(t)));
                    }
                    file = Some(t);
                    if let EventTarget::File(path) = t {
                        w.out = Some(BufWriter::new(Box::new(open_append(path)?)));
                        w.path = Some(path.clone());
                    } else {
                        w.out = Some(BufWriter::new(Box::new(io::stdout())));
                    }
                }
            }
        }
        Ok(w)
    }

    /// Reopens the events file (after logrotate moved it: SIGHUP); a no-op on stdout.
    pub fn reopen(&mut self) -> Result<(), EventsError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let f = open_append(&path)?;
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
        self.out = Some(BufWriter::new(Box::new(f)));
        Ok(())
    }

    /// Wraps any writer (tests use a `Vec<u8>`).
    pub fn new(out: Box<dyn Write + Send>) -> EventWriter {
        EventWriter {
            out: Some(BufWriter::new(out)),
            path: None,
            nats: None,
            sensor: None,
            by_kind: BTreeMap::new(),
            total: 0,
        }
    }

    /// Ends a batch of events (one interval's): syncs the NATS spool once.
    pub fn end_batch(&mut self) -> Result<(), EventsError> {
        match self.nats.as_mut() {
            Some(n) => n.end_batch().map_err(EventsError::Write),
            None => Ok(()),
        }
    }

    /// Stops the outputs; the NATS publisher sends what it can within its
    /// drain time first.
    pub fn finish(&mut self) -> Option<NatsReport> {
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
        self.nats.take().map(NatsSink::finish)
    }

    /// Writes and flushes one event.
    pub fn write(&mut self, a: &Anomaly) -> Result<(), EventsError> {
        let line = to_json_line_from(a, self.sensor.as_deref());
        let mut res = match self.out.as_mut() {
            Some(out) => {
                out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush())
            }
            None => Ok(()),
        };
        if let (Ok(()), Some(n)) = (&res, self.nats.as_mut()) {
            res = n.push(a, &line);
        }
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

fn target_name(t: &EventTarget) -> String {
    match t {
        EventTarget::Stdout => "-".into(),
        EventTarget::File(p) => p.display().to_string(),
        EventTarget::Nats(n) => format!("nats://…/{}", n.subject),
    }
}
