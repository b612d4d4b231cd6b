//! Pipeline: threads, channels, sharding, ticks and shutdown order.
//!
//! ```text
//! capture thread ──Batch/Tick/Finish──▶ N shard threads ──ShardReport──▶ host stage ──▶ events, metrics
//! (decode, shard by flow key)  bounded   (flows, host summaries,          bounded  (families judge,
//!  dispatch.rs                            families' shard halves)                   order) host.rs
//! ```
//! Replay sends block (lossless, deterministic); live sends drop the newest
//! batch when a shard queue is full and count it. Live capture may run
//! several capture threads (AF_PACKET fanout); their ticks then go through
//! one coordinator (`coordinate.rs`), which closes an interval once all of
//! them have passed it. `summary.rs` renders what a run did.

mod coordinate;
mod dispatch;
pub mod evidence;
mod host;
mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};

use crate::base::time::Timestamp;
use crate::capture::CaptureStats;
use crate::config::Config;
use crate::decode::PacketMeta;
use crate::detect::{DetectConfig, HostStage, Reports, ShardHalves};
use crate::export::EventWriter;
use crate::track::{self, Shard, ShardConfig, ShardMsg, ShardReport};
use dispatch::CoordMsg;
pub use dispatch::Dispatcher;
pub use summary::{Summary, peak_rss_bytes};

/// How the capture side hands packets to the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait for room: nothing is lost (replay).
    Block,
    /// Drop the newest batch and count it (live: never stall the capture).
    DropNewest,
}

/// Run-time options that are not in the config file.
pub struct Options {
    /// Tracker threads.
    pub workers: usize,
    /// Batch sends policy.
    pub backpressure: Backpressure,
    /// Where events go.
    pub events: EventWriter,
    /// Whether a metrics exporter is installed (publish to it).
    pub metrics: bool,
    /// Where learned baselines are loaded from and saved to.
    pub state_dir: Option<PathBuf>,
    /// Set by SIGHUP: reload the config file and reopen the events file.
    pub reload: Arc<AtomicBool>,
    /// The config file to reload from (built-in defaults when `None`).
    pub config_path: Option<PathBuf>,
    /// Where evidence pcaps go (`--evidence-dir`), if anywhere.
    pub evidence_dir: Option<PathBuf>,
}

/// The capture source of a run.
pub enum Source {
    /// Savefiles, in order.
    Replay {
        /// The files.
        paths: Vec<PathBuf>,
        /// Pacing.
        speed: crate::capture::replay::Speed,
        /// Optional BPF filter.
        bpf: Option<String>,
        /// Called with packets read so far in the current file.
        progress: Box<dyn FnMut(u64)>,
    },
    /// A live device, already opened.
    Live {
        /// The activated captures: one, or several in one AF_PACKET fanout
        /// group (one capture thread each).
        caps: Vec<pcap::Capture<pcap::Active>>,
        /// Their settings.
        opts: crate::capture::live::LiveOptions,
        /// Called about once a second.
        status: Box<dyn FnMut(&CaptureStats) + Send>,
    },
}

/// Replays savefiles at full speed into `events`, without metrics, state or
/// signals: the in-process entry for benchmarks and fuzzing.
pub fn replay_files(paths: Vec<PathBuf>, cfg: &Config, workers: usize, events: EventWriter) -> Summary {
    let opts = Options {
        workers,
        backpressure: Backpressure::Block,
        events,
        metrics: false,
        state_dir: None,
        reload: Arc::new(AtomicBool::new(false)),
        config_path: None,
        evidence_dir: None,
    };
    let source = Source::Replay {
        paths,
        speed: crate::capture::replay::Speed::Max,
        bpf: None,
        progress: Box::new(|_| {}),
    };
    run(source, cfg, opts, Arc::new(AtomicBool::new(false))).0
}

/// Runs the whole pipeline over `source` until it ends or `stop` is set.
///
/// Returns the summary even when the capture failed part-way (the error is
/// returned beside it): what was processed is always flushed.
pub fn run(
    source: Source,
    cfg: &Config,
    opts: Options,
    stop: Arc<AtomicBool>,
) -> (Summary, Result<(), crate::capture::CaptureError>) {
    let started = Instant::now();
    let workers = opts.workers.max(1);
    let depth = cfg.capture.queue_batches;
    let (report_tx, report_rx) = bounded::<ShardReport<Reports>>(workers * 4);
    let (recycle_tx, recycle_rx) = bounded::<Vec<PacketMeta>>(workers * (depth + 2));
    let shard_cfg = ShardConfig::from_config(cfg, workers);
    let detect_cfg = DetectConfig::from_config(cfg);
    let mut shard_txs = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    let mut give_back = Vec::with_capacity(workers);
    for id in 0..workers {
        let (tx, rx) = bounded::<ShardMsg>(depth);
        shard_txs.push(tx);
        let (rtx, ctx) = (report_tx.clone(), recycle_tx.clone());
        let (back_tx, back_rx) = bounded(2);
        give_back.push(back_tx);
        let shard_detect = detect_cfg.clone();
        // Each thread builds its own tables (tens of MB faulted in at start)
        // while the capture thread opens the input and fills the queues.
        let h = thread::Builder::new().name(format!("netvigil-shard-{id}")).spawn(move || {
            let shard = Shard::new(id, shard_cfg, ShardHalves::new(&shard_detect, &shard_cfg));
            track::run_shard(shard, rx, rtx, ctx, back_rx)
        });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => tracing::error!("cannot start shard thread: {e}"),
        }
    }
    drop(report_tx);
    drop(recycle_tx);

    let shard_count = handles.len().max(1);
    let fanout = matches!(&source, Source::Live { caps, .. } if caps.len() > 1);
    let (evidence_host, mut recorder) = match &opts.evidence_dir {
        // Several capture threads would each hold part of an episode's packets.
        Some(_) if fanout => {
            tracing::warn!(
                "evidence pcaps need one capture thread; --evidence-dir is ignored with --capture-threads > 1"
            );
            (None, None)
        }
        Some(dir) => match evidence::pair(dir, &cfg.evidence, opts.backpressure == Backpressure::Block) {
            Ok((h, r)) => (Some(h), Some(r)),
            Err(e) => {
                tracing::error!("cannot use evidence directory {}: {e}; no evidence pcaps", dir.display());
                (None, None)
            }
        },
        None => (None, None),
    };
    let publish = opts.metrics;
    let stop_host = stop.clone();
    let mut writer = opts.events;
    let state_dir = opts.state_dir.clone();
    let save_every = cfg.spike.save_interval.saturating_mul(crate::base::time::NANOS_PER_SEC);
    let ctl = host::Control {
        publish,
        live: opts.backpressure == Backpressure::DropNewest,
        reload: opts.reload.clone(),
        config_path: opts.config_path.clone(),
        started,
        interval: cfg.interval_ns(),
        evidence: evidence_host,
    };
    let host_handle = thread::Builder::new().name("netvigil-host".into()).spawn(move || {
        yield_to_packets();
        let host = HostStage::new(shard_count, detect_cfg);
        let persist = host::Persist::new(state_dir, save_every);
        host::run(host, report_rx, &mut writer, &stop_host, persist, ctl, give_back)
    });

    let dispatcher = |coord: Option<(usize, Sender<CoordMsg>)>| Dispatcher {
        batches: (0..shard_txs.len()).map(|_| Vec::with_capacity(cfg.capture.batch_size)).collect(),
        shards: shard_txs.clone(),
        recycle: recycle_rx.clone(),
        batch_size: cfg.capture.batch_size,
        interval: cfg.interval_ns(),
        next_tick: None,
        watermark: None,
        first: None,
        backpressure: opts.backpressure,
        stats: CaptureStats::default(),
        // Several capture threads: the coordinator publishes their sum.
        publish: publish && coord.is_none(),
        dead: false,
        skew: 0,
        stop: stop.clone(),
        coord,
        evidence: None,
        meta: PacketMeta::default(),
    };
    let (result, stats, first, watermark) = match source {
        Source::Replay { paths, speed, bpf, progress } => {
            let mut d = dispatcher(None);
            d.evidence = recorder.take();
            let r = crate::capture::replay::run(&paths, speed, bpf.as_deref(), &stop, &mut d, progress);
            d.finish();
            recorder = d.evidence.take();
            (r, d.stats, d.first, d.watermark)
        }
        Source::Live { mut caps, opts: lo, status } if caps.len() <= 1 => match caps.pop() {
            Some(cap) => {
                let mut d = dispatcher(None);
                d.evidence = recorder.take();
                let r = crate::capture::live::run(cap, &lo, &stop, &mut d, status);
                d.finish();
                recorder = d.evidence.take();
                (r, d.stats, d.first, d.watermark)
            }
            None => (Ok(()), CaptureStats::default(), None, None),
        },
        Source::Live { caps, opts: lo, status } => {
            let n = caps.len();
            let (coord_tx, coord_rx) = bounded::<CoordMsg>(n * 64);
            let shards = shard_txs.clone();
            let coordinator = thread::Builder::new()
                .name("netvigil-ticks".into())
                .spawn(move || coordinate::run(coord_rx, shards, n, publish, status));
            let mut threads = Vec::with_capacity(n);
            for (k, cap) in caps.into_iter().enumerate() {
                let mut d = dispatcher(Some((k, coord_tx.clone())));
                let (lo, stop) = (lo.clone(), stop.clone());
                let t = thread::Builder::new().name(format!("netvigil-capture-{k}")).spawn(move || {
                    let r = crate::capture::live::run(cap, &lo, &stop, &mut d, |_| {});
                    d.finish();
                    (r, d.stats, d.first, d.watermark)
                });
                match t {
                    Ok(t) => threads.push(t),
                    Err(e) => tracing::error!("cannot start capture thread {k}: {e}"),
                }
            }
            drop(coord_tx);
            let mut all = (Ok(()), CaptureStats::default(), None::<Timestamp>, None::<Timestamp>);
            for t in threads {
                match t.join() {
                    Ok((r, st, f, w)) => {
                        if all.0.is_ok() {
                            all.0 = r;
                        }
                        all.1.merge(&st);
                        all.2 = match (all.2, f) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        all.3 = all.3.max(w);
                    }
                    Err(_) => tracing::error!("a capture thread crashed"),
                }
            }
            if let Ok(c) = coordinator {
                let _ = c.join();
            }
            all
        }
    };
    // Writes what the host stage still asks for as it ends every episode.
    let evidence_report = recorder.map(evidence::Recorder::finish);
    drop(shard_txs);
    drop(recycle_rx);
    for h in handles {
        let _ = h.join();
    }
    let mut summary = Summary { capture: stats, first_ts: first, last_ts: watermark, ..Summary::default() };
    match host_handle {
        Ok(h) => match h.join() {
            Ok(hs) => {
                summary.tracking = hs.tracking;
                summary.episodes_by_kind = hs.by_kind;
                summary.events_written = hs.written;
                summary.events_error = hs.error;
                summary.baseline_hosts = hs.baseline_hosts;
                summary.baseline_restored = hs.restored;
                summary.state_saved = hs.saved;
                summary.latency_us = hs.latency_us;
                summary.reloads = hs.reloads;
                summary.nats = hs.nats;
                summary.evidence = evidence_report;
            }
            Err(_) => summary.events_error = Some("host stage crashed".into()),
        },
        Err(e) => summary.events_error = Some(format!("cannot start host stage: {e}")),
    }
    summary.wall = started.elapsed();
    (summary, result)
}

/// Lowers this thread's scheduling priority five steps below the process's
/// (its helpers inherit it): judging an interval can wait a moment, reading
/// and tracking packets cannot, so when the CPUs are short the capture
/// thread and the shards go first (Suricata gives its management threads
/// low priority the same way).
fn yield_to_packets() {
    // SAFETY: getpriority and setpriority on the calling thread's own id
    // have no memory effects.
    #[allow(unsafe_code)]
    let r = unsafe {
        let me = libc::gettid() as libc::id_t;
        // -1 is also a valid nice value: errno tells an error apart.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, me);
        if now == -1 && *libc::__errno_location() != 0 {
            -1
        } else {
            libc::setpriority(libc::PRIO_PROCESS, me, (now + 5).min(19))
        }
    };
    if r != 0 {
        tracing::debug!("could not lower the host stage's priority: {}", std::io::Error::last_os_error());
    }
}
