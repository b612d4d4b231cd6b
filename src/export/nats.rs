//! Events on NATS JetStream (`--events nats://HOST:PORT[,HOST:PORT]/SUBJECT`).
//!
//! The host stage appends each event to the on-disk spool and returns; a
//! publisher thread sends the spool in order, one event at a time, waiting
//! for the stream's acknowledgement before the next, so per-episode order
//! holds even across a server restart. Every message carries
//! `Nats-Msg-Id: <sensor>:<episode_id>:<phase>:<seq>`: a retry after a lost
//! acknowledgement is dropped by the stream's duplicate window instead of
//! stored twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::metrics as M;
use super::spool::{SpoolCounters, SpoolReader, SpoolWriter};
use crate::detect::Phase;
use crate::detect::anomaly::Anomaly;

/// How long the stream remembers message ids when netvigil creates it: an
/// outage shorter than this can never store an event twice.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
/// How long one publish waits for its acknowledgement before trying again.
const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Retry pause bounds while the servers are away.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Errors of the NATS output.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The `nats://` target is malformed.
    #[error("bad NATS target {0:?}: expected nats://HOST:PORT[,HOST:PORT...]/SUBJECT")]
    Target(String),
    /// The spool (which needs `--state-dir`) could not be opened.
    #[error("{0}")]
    Spool(#[from] super::spool::SpoolError),
    /// NATS output without a state directory for its spool.
    #[error(
        "--events nats://… needs --state-dir DIR: events wait in DIR/spool while the servers are away, so none is lost"
    )]
    NoStateDir,
    /// The publisher thread could not start.
    #[error("cannot start the NATS publisher: {0}")]
    Start(std::io::Error),
}

/// Where events go on NATS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// Server URLs (`nats://host:port`), tried in turn.
    pub servers: Vec<String>,
    /// Subject events are published on.
    pub subject: String,
}

impl FromStr for NatsTarget {
    type Err = NatsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NatsError::Target(s.to_string());
        let rest = s.strip_prefix("nats://").ok_or_else(bad)?;
        let (hosts, subject) = rest.split_once('/').ok_or_else(bad)?;
        let subject_ok = !subject.is_empty()
            && !subject.starts_with('.')
            && !subject.ends_with('.')
            && !subject.contains("..")
            && subject.chars().all(|c| c.is_ascii_graphic() && c != '*' && c != '>');
        let servers: Vec<String> = hosts.split(',').map(|h| format!("nats://{}", h.trim())).collect();
        let hosts_ok = servers.iter().all(|h| h.len() > "nats://".len() && !h.contains(' '));
        if !subject_ok || !hosts_ok {
            return Err(bad());
        }
        Ok(NatsTarget { servers, subject: subject.to_string() })
    }
}

/// Settings of the NATS output (`[events]` in the config).
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// Servers and subject.
    pub target: NatsTarget,
    /// Spool directory (`<state-dir>/spool`).
    pub spool_dir: PathBuf,
    /// Spool cap in bytes; events beyond it are dropped and counted.
    pub spool_cap: u64,
    /// Stream created for the subject when no stream takes it.
    pub stream: String,
    /// At shutdown, how long to keep sending what is spooled.
    pub drain: Duration,
    /// This sensor's name (part of every message id).
    pub sensor: String,
}

/// What the NATS output did, for the run summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NatsReport {
    /// Events appended to the spool.
    pub spooled: u64,
    /// Events the stream acknowledged.
    pub acknowledged: u64,
    /// Of those, events the stream already held (a retry after a lost
    /// acknowledgement, dropped by its duplicate window).
    pub duplicates: u64,
    /// Events dropped at the spool's cap.
    pub dropped: u64,
    /// Bytes still spooled at exit (sent on the next start).
    pub left_bytes: u64,
}

struct Shared {
    counters: Arc<SpoolCounters>,
    wake: tokio::sync::Notify,
    closing: AtomicBool,
    /// Wall-clock deadline for draining, as ms since `epoch`.
    deadline_ms: AtomicU64,
    epoch: Instant,
}

/// The NATS side of the event writer.
pub struct NatsSink {
    spool: SpoolWriter,
    shared: Arc<Shared>,
    seq: HashMap<String, u32>,
    sensor: String,
    drain: Duration,
    thread: Option<JoinHandle<()>>,
    warned_full: bool,
}

impl NatsSink {
    /// Opens the spool and starts the publisher thread.
    pub fn start(opts: NatsOptions) -> Result<NatsSink, NatsError> {
        let counters = Arc::new(SpoolCounters::default());
        let spool = SpoolWriter::open(&opts.spool_dir, opts.spool_cap, counters.clone())?;
        let shared = Arc::new(Shared {
            counters,
            wake: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
            deadline_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        });
        let reader = SpoolReader::open(&opts.spool_dir);
        let th_shared = shared.clone();
        let th_opts = opts.clone();
        let thread = std::thread::Builder::new()
            .name("netvigil-nats".into())
            .spawn(move || publisher(th_opts, reader, th_shared))
            .map_err(NatsError::Start)?;
        let left = shared.counters.pending_bytes();
        if left > 0 {
            tracing::info!(
                "event spool {} holds {left} bytes from an earlier run; sending them first",
                opts.spool_dir.display()
            );
        }
        Ok(NatsSink {
            spool,
            shared,
            seq: HashMap::new(),
            sensor: opts.sensor,
            drain: opts.drain,
            thread: Some(thread),
            warned_full: false,
        })
    }

    /// Spools one event (never waits on the network).
    pub fn push(&mut self, a: &Anomaly, json: &str) -> std::io::Result<()> {
        let seq = self.seq.entry(a.episode_id.clone()).or_insert(0);
        let id = format!("{}:{}:{}:{}", self.sensor, a.episode_id, a.phase.as_str(), *seq);
        *seq += 1;
        if a.phase == Phase::End {
            self.seq.remove(&a.episode_id);
        }
        if !self.spool.append(&id, json)? {
            let dropped = self.shared.counters.dropped.load(Ordering::Acquire);
            if !self.warned_full || dropped.is_power_of_two() {
                tracing::warn!(
                    "event spool full (events.spool_mib): {dropped} event(s) dropped so far; the NATS servers have been away too long"
                );
                self.warned_full = true;
            }
            metrics::counter!(M::EVENTS_DROPPED, "reason" => "spool_full").increment(1);
        } else {
            metrics::counter!(M::EVENTS_SPOOLED).increment(1);
        }
        Ok(())
    }

    /// Ends a batch: one fsync, then wakes the publisher.
    pub fn end_batch(&mut self) -> std::io::Result<()> {
        self.spool.sync()?;
        metrics::gauge!(M::SPOOL_BYTES).set(self.shared.counters.pending_bytes() as f64);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Syncs the spool, lets the publisher send what it can within the
    /// drain time, and stops it. What is left stays for the next start.
    pub fn finish(mut self) -> NatsReport {
        if let Err(e) = self.spool.sync() {
            tracing::error!("event spool: {e}");
        }
        let sh = &self.shared;
        let deadline = sh.epoch.elapsed() + self.drain;
        sh.deadline_ms.store(deadline.as_millis() as u64, Ordering::Release);
        sh.closing.store(true, Ordering::Release);
        sh.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let c = &sh.counters;
        let report = NatsReport {
            spooled: c.spooled.load(Ordering::Acquire),
            acknowledged: c.acked.load(Ordering::Acquire),
            duplicates: c.duplicates.load(Ordering::Acquire),
            dropped: c.dropped.load(Ordering::Acquire),
            left_bytes: c.pending_bytes(),
        };
        metrics::gauge!(M::SPOOL_BYTES).set(report.left_bytes as f64);
        if report.left_bytes > 0 {
            tracing::warn!(
                "{} bytes of events stay in the spool (NATS unreachable); they are sent on the next start",
                report.left_bytes
            );
        }
        report
    }
}

fn publisher(opts: NatsOptions, reader: SpoolReader, shared: Arc<Shared>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match rt {
        Ok(rt) => rt.block_on(publish_loop(opts, reader, shared)),
        Err(e) => tracing::error!("NATS publisher: cannot start its runtime: {e}; events stay in the spool"),
    }
}

impl Shared {
    fn past_deadline(&self) -> bool {
        self.closing.load(Ordering::Acquire)
            && self.epoch.elapsed().as_millis() as u64 >= self.deadline_ms.load(Ordering::Acquire)
    }
}

async fn publish_loop(opts: NatsOptions, mut reader: SpoolReader, shared: Arc<Shared>) {
    let connect = async_nats::ConnectOptions::new()
        .name(format!("netvigil {}", opts.sensor))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| BACKOFF_MAX.min(BACKOFF_MIN * attempts.max(1) as u32))
        .event_callback(|ev| async move {
            match ev {
                async_nats::Event::Connected => tracing::info!("NATS: connected"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS: disconnected; events wait in the spool")
                }
                other => tracing::debug!("NATS: {other}"),
            }
        })
        .connect(opts.target.servers.clone())
        .await;
    let client = match connect {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("NATS: {e}; events stay in the spool {}", opts.spool_dir.display());
            return;
        }
    };
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(ACK_TIMEOUT);
    let c = &shared.counters;
    let mut stream_ready = false;
    let mut backoff = BACKOFF_MIN;
    let mut outage: Option<String> = None;
    let mut since_saved = 0u32;
    loop {
        if shared.past_deadline() {
            break;
        }
        if !stream_ready {
            match ensure_stream(&js, &opts).await {
                Ok(()) => stream_ready = true,
                Err(e) => {
                    note_outage(&mut outage, e, &opts.spool_dir);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let rec = match reader.peek() {
            Ok(Some(r)) => r.clone(),
            Ok(None) => {
                if since_saved > 0 {
                    save(&reader);
                    since_saved = 0;
                }
                if shared.closing.load(Ordering::Acquire) {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(250), shared.wake.notified()).await;
                continue;
            }
            Err(e) => {
                tracing::error!("event spool {}: {e}", opts.spool_dir.display());
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            }
        };
        let t0 = Instant::now();
        metrics::counter!(M::EVENTS_PUBLISHED).increment(1);
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .message_id(&rec.id)
            .payload(rec.json.into_bytes().into());
        let res = match js.send_publish(opts.target.subject.clone(), msg).await {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(ack) => {
                reader.consume();
                c.acked.fetch_add(1, Ordering::AcqRel);
                c.acked_bytes.fetch_add(rec.len, Ordering::AcqRel);
                if ack.duplicate {
                    c.duplicates.fetch_add(1, Ordering::AcqRel);
                }
                metrics::counter!(M::EVENTS_ACKED).increment(1);
                metrics::histogram!(M::PUBLISH_LATENCY).record(t0.elapsed().as_secs_f64());
                metrics::gauge!(M::SPOOL_BYTES).set(c.pending_bytes() as f64);
                if let Some(why) = outage.take() {
                    tracing::info!(
                        "NATS: publishing again after: {why}; {} bytes still spooled",
                        c.pending_bytes()
                    );
                }
                backoff = BACKOFF_MIN;
                since_saved += 1;
                if since_saved >= 64 {
                    save(&reader);
                    since_saved = 0;
                }
            }
            Err(e) => {
                if e.contains("no stream") {
                    stream_ready = false;
                }
                note_outage(&mut outage, e, &opts.spool_dir);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    save(&reader);
}

fn save(reader: &SpoolReader) {
    if let Err(e) = reader.save_position() {
        tracing::warn!("event spool: cannot save its position: {e}; a restart may send some events again");
    }
}

/// Logs the first failure of an outage, not every retry.
fn note_outage(outage: &mut Option<String>, why: String, spool: &Path) {
    if outage.is_none() {
        tracing::warn!(
            "NATS: {why}; events wait in the spool {} and are sent in order on return",
            spool.display()
        );
        *outage = Some(why);
    }
}

/// Uses the stream that takes the subject, or creates one (file storage,
/// a duplicate window of [`DUPLICATE_WINDOW`]).
async fn ensure_stream(js: &async_nats::jetstream::Context, opts: &NatsOptions) -> Result<(), String> {
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    match js.stream_by_subject(opts.target.subject.clone()).await {
        Ok(name) => {
            tracing::info!("NATS: publishing on {} into stream {name}", opts.target.subject);
            Ok(())
        }
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
            let cfg = async_nats::jetstream::stream::Config {
                name: opts.stream.clone(),
                subjects: vec![opts.target.subject.clone()],
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            };
            js.create_stream(cfg).await.map_err(|e| format!("cannot create stream {}: {e}", opts.stream))?;
            tracing::info!("NATS: created stream {} for {}", opts.stream, opts.target.subject);
            Ok(())
        }
        Err(e) => Err(format!("cannot look up the stream for {}: {e}", opts.target.subject)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_parse_and_reject() {
        let t: NatsTarget = "nats://127.0.0.1:4222,10.0.0.2:4222/netvigil.events".parse().unwrap();
        assert_eq!(t.servers, vec!["nats://127.0.0.1:4222", "nats://10.0.0.2:4222"]);
        assert_eq!(t.subject, "netvigil.events");
        for bad in ["nats://h:1", "nats://h:1/", "nats:///x", "nats://h:1/a.*", "nats://h/a..b", "http://h/x"]
        {
            assert!(bad.parse::<NatsTarget>().is_err(), "{bad}");
        }
    }
}
