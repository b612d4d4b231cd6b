//! Pipeline: threads, channels, sharding, ticks and shutdown order.
//!
//! ```text
//! capture thread ──Batch/Tick/Finish──▶ N shard threads ──ShardReport──▶ host stage ──▶ events, metrics
//! (decode, shard by flow key)  bounded   (flows, host summaries, hits)  bounded  (episodes, order)
//! ```
//! Replay sends block (lossless, deterministic); live sends drop the newest
//! batch when a shard queue is full and count it. Live capture may run
//! several capture threads (AF_PACKET fanout); their ticks then go through
//! one coordinator, which closes an interval once all of them have passed it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::capture::{CaptureStats, Frame, FrameSink};
use crate::config::Config;
use crate::decode::{self, LinkType, PacketMeta, anomaly};
use crate::detect::{Anomaly, HostStage};
use crate::export::{EventWriter, EventsError, metrics};
use crate::time::Timestamp;
use crate::track::{self, FlowKey, Shard, ShardMsg, ShardReport, ShardStats, key::shard_hash};

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
}

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
}

/// The capture thread's side of the pipeline: decode, shard, batch, tick.
pub struct Dispatcher {
    shards: Vec<Sender<ShardMsg>>,
    batches: Vec<Vec<PacketMeta>>,
    recycle: Receiver<Vec<PacketMeta>>,
    batch_size: usize,
    interval: u64,
    next_tick: Option<Timestamp>,
    watermark: Option<Timestamp>,
    first: Option<Timestamp>,
    backpressure: Backpressure,
    stats: CaptureStats,
    publish: bool,
    dead: bool,
    skew: u64,
    stop: Arc<AtomicBool>,
    /// With several capture threads: this thread's number and the tick
    /// coordinator, which closes an interval once every thread has passed it.
    coord: Option<(usize, Sender<CoordMsg>)>,
}

/// What a capture thread tells the tick coordinator (several capture threads).
enum CoordMsg {
    /// This thread's packet time passed `t` (its batches before it are sent).
    Boundary { from: usize, t: Timestamp, stats: CaptureStats },
    /// This thread's input ended at `t` (everything is sent).
    Finish { from: usize, t: Option<Timestamp>, stats: CaptureStats },
}

/// Backward time jumps larger than this rebase the input instead of clamping.
const REBASE_NS: u64 = crate::time::NANOS_PER_SEC;

impl Dispatcher {
    fn get_batch(&self) -> Vec<PacketMeta> {
        self.recycle.try_recv().unwrap_or_else(|_| Vec::with_capacity(self.batch_size))
    }

    fn send_batch(&mut self, i: usize) {
        if self.batches[i].is_empty() {
            return;
        }
        let fresh = self.get_batch();
        let batch = std::mem::replace(&mut self.batches[i], fresh);
        match self.backpressure {
            Backpressure::Block => {
                if self.shards[i].send(ShardMsg::Batch(batch)).is_err() {
                    self.dead = true;
                }
            }
            Backpressure::DropNewest => match self.shards[i].try_send(ShardMsg::Batch(batch)) {
                Ok(()) => {}
                Err(TrySendError::Full(ShardMsg::Batch(mut b))) => {
                    self.stats.queue_drops += b.len() as u64;
                    b.clear();
                    self.batches[i] = b;
                }
                Err(_) => self.dead = true,
            },
        }
    }

    fn broadcast(&mut self, msg: impl Fn() -> ShardMsg) {
        for s in &self.shards {
            // Ticks always block: they are rare and the watermark needs them.
            if s.send(msg()).is_err() {
                self.dead = true;
            }
        }
    }

    /// Moves packet time to `t`, closing intervals it crosses.
    fn advance(&mut self, t: Timestamp) {
        match self.next_tick {
            None => self.next_tick = Some(t.floor_to(self.interval).saturating_add(self.interval)),
            Some(nt) if t >= nt => {
                for i in 0..self.batches.len() {
                    self.send_batch(i);
                }
                // One tick however far time jumped: a gap of years is one
                // long quiet interval, not millions of empty ones.
                let boundary = t.floor_to(self.interval);
                match &self.coord {
                    None => {
                        let sent = Instant::now();
                        self.broadcast(|| ShardMsg::Tick(boundary, sent));
                    }
                    Some((from, tx)) => {
                        let msg = CoordMsg::Boundary { from: *from, t: boundary, stats: self.stats.clone() };
                        if tx.send(msg).is_err() {
                            self.dead = true;
                        }
                    }
                }
                self.next_tick = Some(boundary.saturating_add(self.interval));
                if self.publish {
                    metrics::publish_capture(&self.stats);
                }
            }
            Some(_) => {}
        }
    }

    fn finish(&mut self) {
        for i in 0..self.batches.len() {
            self.send_batch(i);
        }
        if let Some((from, tx)) = &self.coord {
            let msg = CoordMsg::Finish { from: *from, t: self.watermark, stats: self.stats.clone() };
            if tx.send(msg).is_err() {
                self.dead = true;
            }
            return;
        }
        let end = self.watermark.unwrap_or(Timestamp::ZERO);
        self.broadcast(|| ShardMsg::Finish(end));
        if self.publish {
            metrics::publish_capture(&self.stats);
        }
    }
}

impl FrameSink for Dispatcher {
    fn frame(&mut self, link: LinkType, f: &Frame<'_>) {
        if self.dead && !self.stop.swap(true, Ordering::Relaxed) {
            tracing::error!("a tracker thread stopped unexpectedly; ending capture");
        }
        self.stats.packets += 1;
        self.stats.bytes += u64::from(f.wire_len);
        let ts = Timestamp::from_parts(f.secs, f.nanos).saturating_add(self.skew);
        let mut m = decode::decode(link, ts, f.wire_len, f.data);
        // Packet time never runs backwards inside the pipeline. A packet a
        // little late (reordering across NIC queues: microseconds to
        // milliseconds) is stamped with the latest time seen. A jump back of
        // more than REBASE_NS (two captures concatenated, a clock step) shifts
        // the rest of the input forward instead, so its packets keep their
        // spacing rather than all piling into one interval and faking a spike.
        match self.watermark {
            Some(w) if ts < w => {
                if w.since(ts) > REBASE_NS {
                    self.skew = self.skew.saturating_add(w.since(ts));
                }
                m.ts = w;
                m.anomalies |= anomaly::TS_BACKWARDS;
            }
            _ => self.watermark = Some(ts),
        }
        self.first.get_or_insert(m.ts);
        self.advance(m.ts);
        self.stats.count_anomalies(m.anomalies);
        let i = if self.shards.len() == 1 {
            0
        } else {
            (shard_hash(&FlowKey::of(&m).0) % self.shards.len() as u64) as usize
        };
        self.batches[i].push(m);
        if self.batches[i].len() >= self.batch_size {
            self.send_batch(i);
        }
    }

    fn flush(&mut self) {
        for i in 0..self.batches.len() {
            self.send_batch(i);
        }
    }

    fn idle(&mut self, now: Timestamp) {
        if self.coord.is_some() && self.watermark.is_none() {
            // A fanout member that has seen no packet yet still moves its
            // clock, or the coordinator would wait for it forever.
            self.advance(now);
        } else if self.watermark.is_some_and(|w| now > w) {
            self.watermark = Some(now);
            self.advance(now);
        }
    }

    fn stats(&mut self) -> &mut CaptureStats {
        &mut self.stats
    }
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
    let (report_tx, report_rx) = bounded::<ShardReport>(workers * 4);
    let (recycle_tx, recycle_rx) = bounded::<Vec<PacketMeta>>(workers * (depth + 2));
    let shard_cfg = cfg.shard_config(workers);
    let mut shard_txs = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    let mut give_back = Vec::with_capacity(workers);
    for id in 0..workers {
        let (tx, rx) = bounded::<ShardMsg>(depth);
        shard_txs.push(tx);
        let shard = Shard::new(id, shard_cfg);
        let (rtx, ctx) = (report_tx.clone(), recycle_tx.clone());
        let (back_tx, back_rx) = bounded(2);
        give_back.push(back_tx);
        let h = thread::Builder::new()
            .name(format!("netvigil-shard-{id}"))
            .spawn(move || track::run_shard(shard, rx, rtx, ctx, back_rx));
        match h {
            Ok(h) => handles.push(h),
            Err(e) => tracing::error!("cannot start shard thread: {e}"),
        }
    }
    drop(report_tx);
    drop(recycle_tx);

    let host = HostStage::new(handles.len().max(1), cfg.detect_config());
    let publish = opts.metrics;
    let stop_host = stop.clone();
    let mut writer = opts.events;
    let state_dir = opts.state_dir.clone();
    let save_every = cfg.spike.save_interval.saturating_mul(crate::time::NANOS_PER_SEC);
    let ctl = HostControl {
        publish,
        live: opts.backpressure == Backpressure::DropNewest,
        reload: opts.reload.clone(),
        config_path: opts.config_path.clone(),
        started,
    };
    let host_handle = thread::Builder::new().name("netvigil-host".into()).spawn(move || {
        let persist = Persist { dir: state_dir, every: save_every, last: None, warned: false };
        host_stage(host, report_rx, &mut writer, &stop_host, persist, ctl, give_back)
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
    };
    let (result, stats, first, watermark) = match source {
        Source::Replay { paths, speed, bpf, progress } => {
            let mut d = dispatcher(None);
            let r = crate::capture::replay::run(&paths, speed, bpf.as_deref(), &stop, &mut d, progress);
            d.finish();
            (r, d.stats, d.first, d.watermark)
        }
        Source::Live { mut caps, opts: lo, status } if caps.len() <= 1 => match caps.pop() {
            Some(cap) => {
                let mut d = dispatcher(None);
                let r = crate::capture::live::run(cap, &lo, &stop, &mut d, status);
                d.finish();
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
                .spawn(move || coordinate(coord_rx, shards, n, publish, status));
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
            }
            Err(_) => summary.events_error = Some("host stage crashed".into()),
        },
        Err(e) => summary.events_error = Some(format!("cannot start host stage: {e}")),
    }
    summary.wall = started.elapsed();
    (summary, result)
}

/// The tick coordinator of several capture threads: an interval closes at
/// the shards once every running capture thread has passed its boundary, and
/// the input ends when all of them have ended. Each thread's batches reach
/// the shards before its message reaches here, so a tick never overtakes
/// the packets it closes. (A thread ahead of the others may land a few
/// packets of the next interval in the one closing: live capture is not
/// replayed, so this costs nothing but a sliver of attribution.)
fn coordinate(
    rx: Receiver<CoordMsg>,
    shards: Vec<Sender<ShardMsg>>,
    n: usize,
    publish: bool,
    mut status: Box<dyn FnMut(&CaptureStats) + Send>,
) {
    let mut marks: Vec<Option<Timestamp>> = vec![None; n];
    let mut done = vec![false; n];
    let mut stats = vec![CaptureStats::default(); n];
    let mut last: Option<Timestamp> = None;
    let mut end: Option<Timestamp> = None;
    let mut last_status = Instant::now();
    let broadcast = |msg: &dyn Fn() -> ShardMsg| {
        for s in &shards {
            let _ = s.send(msg());
        }
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            CoordMsg::Boundary { from, t, stats: st } => {
                if let Some(m) = marks.get_mut(from) {
                    *m = (*m).max(Some(t));
                    stats[from] = st;
                }
            }
            CoordMsg::Finish { from, t, stats: st } => {
                if let Some(d) = done.get_mut(from) {
                    *d = true;
                    stats[from] = st;
                    end = end.max(t);
                }
            }
        }
        let running: Vec<Option<Timestamp>> = (0..n).filter(|&i| !done[i]).map(|i| marks[i]).collect();
        if !running.is_empty() && running.iter().all(Option::is_some) {
            let low = running.iter().flatten().min().copied();
            if low > last {
                if let Some(t) = low {
                    let sent = Instant::now();
                    broadcast(&|| ShardMsg::Tick(t, sent));
                }
                last = low;
            }
        }
        let mut total = CaptureStats::default();
        stats.iter().for_each(|s| total.merge(s));
        if publish {
            metrics::publish_capture(&total);
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            status(&total);
        }
        if done.iter().all(|d| *d) {
            let t = end.max(last).unwrap_or(Timestamp::ZERO);
            broadcast(&|| ShardMsg::Finish(t));
            return;
        }
    }
}

struct HostResult {
    tracking: ShardStats,
    by_kind: std::collections::BTreeMap<&'static str, u64>,
    written: u64,
    error: Option<String>,
    baseline_hosts: usize,
    restored: usize,
    saved: Option<PathBuf>,
    latency_us: Option<(u64, u64, u64)>,
    reloads: (u64, u64),
}

/// What the host-stage thread needs besides its data.
struct HostControl {
    publish: bool,
    live: bool,
    reload: Arc<AtomicBool>,
    config_path: Option<PathBuf>,
    started: Instant,
}

/// Saving learned state from the host stage, on a packet-time timer.
struct Persist {
    dir: Option<PathBuf>,
    every: u64,
    last: Option<Timestamp>,
    warned: bool,
}

impl Persist {
    /// Restores saved baselines into `host`; returns how many hosts.
    fn restore(&self, host: &mut HostStage) -> usize {
        let Some(dir) = &self.dir else { return 0 };
        let interval = host.config().interval_ns;
        let restored = match crate::export::state::load(dir, interval) {
            Ok(Some(st)) => {
                let max = host.config().spike.max_hosts;
                let n = host.spike_mut().restore(st, max);
                tracing::info!("restored baselines of {n} hosts from {}", dir.display());
                n
            }
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!("{e}");
                0
            }
        };
        if host.config().ml.enabled {
            match crate::export::state::load_model(dir) {
                Ok(Some(st)) => {
                    if host.ml_mut().restore(st) {
                        tracing::info!("restored the behaviour model from {}", dir.display());
                    } else {
                        tracing::warn!("the saved behaviour model has another shape; it starts fresh");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        restored
    }

    /// Saves when due (or always when `force`); returns the file on success.
    fn maybe_save(&mut self, host: &HostStage, now: Timestamp, force: bool) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        // The timer starts at the first interval; shutdown always saves.
        let last = *self.last.get_or_insert(now);
        if !force && now.since(last) < self.every.max(1) {
            return None;
        }
        self.last = Some(now);
        let st = host.spike().snapshot(host.config().interval_ns);
        if host.config().ml.enabled {
            if let Err(e) = crate::export::state::save_model(dir, &host.ml().snapshot()) {
                tracing::warn!("cannot save the behaviour model to {}: {e}", dir.display());
            }
        }
        match crate::export::state::save(dir, &st) {
            Ok(()) => Some(crate::export::state::baselines_path(dir)),
            Err(e) => {
                if !self.warned || force {
                    tracing::warn!(
                        "cannot save baselines to {}: {e}; learning continues in memory",
                        dir.display()
                    );
                    self.warned = true;
                }
                None
            }
        }
    }
}

fn host_stage(
    mut host: HostStage,
    rx: Receiver<ShardReport>,
    writer: &mut EventWriter,
    stop: &AtomicBool,
    mut persist: Persist,
    ctl: HostControl,
    give_back: Vec<Sender<Vec<(crate::decode::Addr, track::HostCounters)>>>,
) -> HostResult {
    let mut out: Vec<Anomaly> = Vec::new();
    let mut error: Option<String> = None;
    let restored = persist.restore(&mut host);
    let mut saved = None;
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).ok();
    let mut reloads = (0, 0);
    let mut last_watchdog = Instant::now();
    let mut clock_offset: Option<f64> = None;
    while let Ok(r) = rx.recv() {
        let sent = r.sent;
        let completed = host.on_report(r, &mut out);
        for (shard, v) in host.take_returned() {
            if let Some(tx) = give_back.get(shard) {
                let _ = tx.try_send(v);
            }
        }
        if !completed {
            continue;
        }
        let now = host.last_interval().end;
        if host.all_finished() {
            saved = persist.maybe_save(&host, now, true);
        } else {
            persist.maybe_save(&host, now, false);
        }
        for a in out.drain(..) {
            if error.is_some() {
                continue;
            }
            if ctl.publish && a.phase == crate::detect::Phase::Start {
                metrics::count_anomaly(a.category().as_str(), a.kind.as_str(), a.severity.as_str());
            }
            if let Err(e) = writer.write(&a) {
                // Keep draining the shards so they never block, but stop the
                // capture: nobody is reading what we find.
                if !matches!(e, EventsError::BrokenPipe) {
                    tracing::error!("{e}");
                }
                error = Some(e.to_string());
                stop.store(true, Ordering::Relaxed);
            }
        }
        let lat = sent.map(|s| s.elapsed());
        if let (Some(h), Some(l)) = (latency.as_mut(), lat) {
            let _ = h.record((l.as_micros() as u64).max(1));
        }
        if ctl.publish {
            let sp = host.spike();
            metrics::publish_baselines(sp.hosts_tracked(), sp.hosts_warming(now, host.config()));
            let iv = host.last_interval();
            metrics::publish_tracking(
                &host.stats(),
                iv.hosts.len(),
                host.open_episodes(),
                iv.end.as_secs_f64(),
            );
            // Lag behind the stream's own clock: live packet time is the wall
            // clock; a replay's clock starts when its first interval closes.
            let behind = crate::capture::live::wall_now().as_secs_f64() - iv.end.as_secs_f64();
            let offset = *clock_offset.get_or_insert(if ctl.live { 0.0 } else { behind });
            let lag = Some((behind - offset).max(0.0));
            metrics::publish_timing(
                lat.map(|l| l.as_secs_f64()).unwrap_or(0.0),
                lag,
                ctl.started.elapsed().as_secs_f64(),
            );
        }
        if ctl.reload.swap(false, Ordering::Relaxed) {
            match reload(&mut host, writer, ctl.config_path.as_deref()) {
                Ok(()) => reloads.0 += 1,
                Err(()) => reloads.1 += 1,
            }
            if ctl.publish {
                metrics::count_reload(reloads.1 == 0);
            }
        }
        if ctl.live && last_watchdog.elapsed() >= Duration::from_secs(1) {
            // Proof of progress for systemd's watchdog: intervals still close.
            crate::export::systemd::notify("WATCHDOG=1");
            last_watchdog = Instant::now();
        }
        if host.all_finished() {
            break;
        }
    }
    let latency_us = latency
        .filter(|h| !h.is_empty())
        .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()));
    HostResult {
        tracking: host.stats(),
        by_kind: writer.by_kind.clone(),
        written: writer.total,
        error,
        baseline_hosts: host.spike().hosts_tracked(),
        restored,
        saved,
        latency_us,
        reloads,
    }
}

/// SIGHUP: re-read the config (a bad one keeps the old and says why) and
/// reopen the events file (logrotate).
fn reload(host: &mut HostStage, writer: &mut EventWriter, path: Option<&std::path::Path>) -> Result<(), ()> {
    if let Err(e) = writer.reopen() {
        tracing::warn!("reload: {e}; events keep going to the old file");
    }
    let Some(path) = path else {
        tracing::info!("reload: no --config given; defaults stay, events file reopened");
        return Ok(());
    };
    match Config::load(path) {
        Ok(cfg) => {
            host.reload(cfg.detect_config());
            tracing::warn!(
                "reloaded {}: thresholds, allowlists and episode timing now in force (capture and flow-table settings need a restart)",
                path.display()
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!("reload failed, keeping the previous configuration: {e}");
            Err(())
        }
    }
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
            "drops": {"kernel": c.kernel_drops, "interface": c.if_drops, "queue_full": c.queue_drops},
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
        if let Some(e) = &self.events_error {
            let _ = writeln!(s, "  events       stopped: {e}");
        }
        s
    }
}
