//! The host-stage thread: merge shard reports, write events, publish
//! metrics, save and restore learned state, apply reloads.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::base::time::Timestamp;
use crate::config::Config;
use crate::detect::family::Restored;
use crate::detect::{Anomaly, DetectConfig, HostStage, Reports};
use crate::export::{EventWriter, EventsError, metrics};
use crate::track::{Returned, ShardReport, ShardStats};

/// What the host stage reports when the run ends.
pub(super) struct HostResult {
    pub tracking: ShardStats,
    pub by_kind: std::collections::BTreeMap<&'static str, u64>,
    pub written: u64,
    pub error: Option<String>,
    pub baseline_hosts: usize,
    pub restored: usize,
    pub saved: Option<PathBuf>,
    pub latency_us: Option<(u64, u64, u64)>,
    pub reloads: (u64, u64),
    pub nats: Option<crate::export::nats::NatsReport>,
}

/// What the host-stage thread needs besides its data.
pub(super) struct Control {
    pub publish: bool,
    pub live: bool,
    pub reload: Arc<AtomicBool>,
    pub config_path: Option<PathBuf>,
    pub started: Instant,
    /// Interval length in ns (an interval's start is its end minus this).
    pub interval: u64,
    /// Evidence pcaps: asks the capture thread for each episode's packets.
    pub evidence: Option<super::evidence::EvidenceHost>,
}

/// Saving learned state from the host stage, on a packet-time timer.
pub(super) struct Persist {
    dir: Option<PathBuf>,
    every: u64,
    last: Option<Timestamp>,
    warned: bool,
}

impl Persist {
    /// Saves into `dir` (if any) every `every` ns of packet time.
    pub fn new(dir: Option<PathBuf>, every: u64) -> Persist {
        Persist { dir, every, last: None, warned: false }
    }

    /// Restores every family's saved state into `host`; returns how many
    /// hosts' traffic baselines came back (the other families log theirs).
    /// Unusable files are set aside, never fatal.
    fn restore(&self, host: &mut HostStage) -> usize {
        let Some(dir) = &self.dir else { return 0 };
        let mut hosts = 0;
        host.load_states(
            &mut |file| match crate::export::state::read(dir, file) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            },
            &mut |file, r| match r {
                Restored::Loaded(n) => {
                    if file == crate::detect::spike::BASELINES_FILE {
                        hosts += n;
                    }
                    tracing::info!("restored {file} from {} ({n} hosts)", dir.display());
                }
                Restored::Ignored(why) => tracing::warn!("{}: {why}", dir.join(file).display()),
                Restored::Bad(problem) => {
                    tracing::warn!("{}", crate::export::state::set_aside(dir, file, &problem))
                }
            },
        );
        hosts
    }

    /// Saves when due (or always when `force`); returns the directory when
    /// every file was written.
    fn maybe_save(&mut self, host: &HostStage, now: Timestamp, force: bool) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        // The timer starts at the first interval; shutdown always saves.
        let last = *self.last.get_or_insert(now);
        if !force && now.since(last) < self.every.max(1) {
            return None;
        }
        self.last = Some(now);
        let mut failed = None;
        host.save_states(&mut |file, bytes| {
            if let Err(e) = crate::export::state::write_atomic(dir, file, &bytes) {
                failed.get_or_insert(format!("cannot save {file} to {}: {e}", dir.display()));
            }
        });
        match failed {
            None => Some(dir.join(crate::detect::spike::BASELINES_FILE)),
            Some(e) => {
                if !self.warned || force {
                    tracing::warn!("{e}; learning continues in memory");
                    self.warned = true;
                }
                None
            }
        }
    }
}

/// Runs the host stage until every shard has finished (or the reports stop).
pub(super) fn run(
    mut host: HostStage,
    rx: Receiver<ShardReport<Reports>>,
    writer: &mut EventWriter,
    stop: &AtomicBool,
    mut persist: Persist,
    mut ctl: Control,
    give_back: Vec<Sender<Returned<Reports>>>,
) -> HostResult {
    let mut evidence = ctl.evidence.take();
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
        let iv_start = now.saturating_sub(ctl.interval);
        // The last interval ends at the last packet, which belongs in it.
        let iv_end = if host.all_finished() { now.saturating_add(1) } else { now };
        for mut a in out.drain(..) {
            if let Some(ev) = evidence.as_mut() {
                ev.on_event(&mut a, iv_start, iv_end);
            }
            if error.is_some() {
                continue;
            }
            if ctl.publish && a.phase == crate::detect::Phase::Start {
                metrics::count_anomaly(
                    a.category().as_str(),
                    a.kind.as_str(),
                    a.severity.as_str(),
                    a.priority.as_ref().map(|p| p.value),
                );
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
        if let Some(ev) = &evidence {
            ev.advance(now);
        }
        if error.is_none()
            && let Err(e) = writer.end_batch()
        {
            tracing::error!("{e}");
            error = Some(e.to_string());
            stop.store(true, Ordering::Relaxed);
        }
        let lat = sent.map(|s| s.elapsed());
        if let (Some(h), Some(l)) = (latency.as_mut(), lat) {
            let _ = h.record((l.as_micros() as u64).max(1));
        }
        if ctl.publish {
            let sp = &host.families().spike;
            metrics::publish_baselines(sp.hosts_tracked(), sp.hosts_warming(now, host.config()));
            let iv = host.last_interval();
            metrics::publish_tracking(
                &host.stats(),
                iv.host_count,
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
    // Every episode has ended: the recorder may close its files.
    drop(evidence);
    // Events are out of the pipeline: let NATS have what is spooled.
    let nats = writer.finish();
    HostResult {
        nats,
        tracking: host.stats(),
        by_kind: writer.by_kind.clone(),
        written: writer.total,
        error,
        baseline_hosts: host.families().spike.hosts_tracked(),
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
            host.reload(DetectConfig::from_config(&cfg));
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
