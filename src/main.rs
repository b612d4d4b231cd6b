//! The `netvigil` binary: wiring only. Parse flags, load config, build the
//! pipeline, run it, map the outcome to an exit status.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;

/// mimalloc: the pipeline hands large per-interval vectors between threads
/// and frees them on another; glibc's malloc returned those pages to the
/// kernel and faulted them back in every interval (measured: ~5% of CPU in
/// page faults on the replay benchmark).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use netvigil::capture::{CaptureError, live};
use netvigil::cli::{Cli, Command, Common};
use netvigil::config::{Config, ConfigError};
use netvigil::export::events::{EventTarget, OutputOptions};
use netvigil::export::nats::NatsError;
use netvigil::export::{EventWriter, EventsError, metrics};
use netvigil::pipeline::{self, Backpressure, Options, Source, Summary};

/// Exit status for usage and configuration errors.
const EXIT_USAGE: u8 = 2;
/// Exit status for run-time failures.
const EXIT_RUNTIME: u8 = 1;

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, mimalloc v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the kernel 10 ms
/// after the free (mimalloc's default). The pipeline frees and rebuilds
/// its per-interval tables every interval, so each came back as fresh huge
/// pages the kernel had to zero: on the 5.4 M-packet replay benchmark
/// 8,400 faults of 2 MiB and 3.2 s of system time, against 780 faults and
/// 1.1 s without purging (peak RSS +10 %). Every table has a cap, so the
/// peak is what a sensor must be provisioned for anyway.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set is not thread-safe; this runs first in
        // main, before any thread is spawned.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
        };
    }
}

/// Inputs below this many bytes replay without transparent huge pages:
/// between the two `gencap` mixes measured, 16 MB (no gain in user time,
/// RSS 84 → 134 MB) and 48 MB (wall 0.43 → 0.30 s, RSS 141 → 195 MB).
const HUGE_PAGES_FROM: u64 = 32 << 20;

/// Keeps transparent huge pages (as the system sets them) only for jobs
/// whose tables grow large: a live sensor, and replays of at least
/// [`HUGE_PAGES_FROM`] bytes. The shard's lookups land on random records of
/// tables of tens to hundreds of MB, and with 4 KiB pages most of them also
/// miss the TLB: the 5.4 M-packet benchmark took 2.58-2.75 s with huge
/// pages, 2.83-3.11 s without (runs in a series; user 4.1-4.6 s against
/// 4.5-4.9 s). But every table reserves its cap's room, and with huge
/// pages its first record faults in 2 MiB: a 6 kB capture peaked at
/// 113 MB instead of 27 MB. `MIMALLOC_ALLOW_THP` in the environment
/// (mimalloc's switch: 0 off, 1 on) overrides the choice.
fn choose_huge_pages(cmd: &Command) {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    let small = |paths: &[PathBuf]| {
        paths.iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum::<u64>() < HUGE_PAGES_FROM
    };
    let keep = match cmd {
        Command::Replay(a) => !small(&a.pcaps),
        Command::Learn(a) => !small(&a.pcaps),
        _ => true,
    };
    if keep {
        return;
    }
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only
    // and changes only this process's memory policy, for faults from now
    // on (nothing large is allocated yet). A kernel without it returns an
    // error, which changes nothing and is ignored.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    choose_huge_pages(&cli.command);
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netvigil: error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<CaptureError>() {
        return if c.is_usage() { EXIT_USAGE } else { EXIT_RUNTIME };
    }
    if e.downcast_ref::<ConfigError>().is_some() {
        return EXIT_USAGE;
    }
    if let Some(netvigil::capture::privileges::PrivilegeError::NoUser(_)) = e.downcast_ref() {
        return EXIT_USAGE;
    }
    if let Some(
        EventsError::Open { .. } | EventsError::TwoFiles(..) | EventsError::Nats(NatsError::NoStateDir),
    ) = e.downcast_ref::<EventsError>()
    {
        return EXIT_USAGE;
    }
    EXIT_RUNTIME
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NETVIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => {
            let cfg = Config::load(&file)?;
            print!("# {}: valid\n{}", file.display(), cfg.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Learn(args) => {
            // A replay whose events go nowhere: what remains is the state it saves.
            let common = Common {
                config: args.config,
                events: vec![EventTarget::File(PathBuf::from("/dev/null"))],
                sensor_name: None,
                evidence_dir: None,
                workers: args.workers,
                metrics_listen: None,
                bpf: args.bpf,
                state_dir: Some(args.state_dir.clone()),
                metrics_linger: 0,
                summary_json: args.summary_json,
            };
            let (cfg, opts, stop) = prepare(&common, Backpressure::Block)?;
            let bar = progress_bar(cli.quiet);
            let progress_bar = bar.clone();
            let source = Source::Replay {
                paths: args.pcaps,
                speed: netvigil::capture::replay::Speed::Max,
                bpf: common.bpf.clone(),
                progress: Box::new(move |n| {
                    if let Some(b) = &progress_bar {
                        b.set_position(n);
                    }
                }),
            };
            let (summary, result) = pipeline::run(source, &cfg, opts, stop);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if !cli.quiet && result.is_ok() {
                eprintln!(
                    "learned from {} packets; state in {} (events were not raised)",
                    summary.capture.packets,
                    args.state_dir.display()
                );
            }
            finish(summary, result, cli.quiet, common.summary_json.as_deref())
        }
        Command::Replay(args) => {
            let (cfg, opts, stop) = prepare(&args.common, Backpressure::Block)?;
            let bar = progress_bar(cli.quiet);
            let progress_bar = bar.clone();
            let source = Source::Replay {
                paths: args.pcaps,
                speed: args.speed,
                bpf: args.common.bpf.clone(),
                progress: Box::new(move |n| {
                    if let Some(b) = &progress_bar {
                        b.set_position(n);
                    }
                }),
            };
            let (summary, result) = pipeline::run(source, &cfg, opts, stop);
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            linger(&args.common);
            finish(summary, result, cli.quiet, args.common.summary_json.as_deref())
        }
        Command::Live(args) => {
            let (cfg, opts, stop) = prepare(&args.common, Backpressure::DropNewest)?;
            let lo = live::LiveOptions {
                interface: args.interface.clone(),
                snaplen: cfg.capture.snaplen,
                buffer_mib: cfg.capture.buffer_mib,
                promiscuous: cfg.capture.promiscuous && !args.no_promisc,
                bpf: args.common.bpf.clone(),
            };
            let mut caps = vec![live::open(&lo)?];
            if args.capture_threads > 1 {
                let group = netvigil::capture::fanout::group_id();
                for _ in 1..args.capture_threads {
                    caps.push(live::open(&lo)?);
                }
                for cap in &caps {
                    netvigil::capture::fanout::join(cap, group, &lo.interface)?;
                }
                tracing::info!("{} capture threads in AF_PACKET fanout group {group}", caps.len());
            }
            if let Some(user) = &args.user {
                let (uid, gid) = netvigil::capture::privileges::drop_to(user)?;
                tracing::info!("capture open; now running as {user} (uid {uid}, gid {gid})");
            }
            let breaker = Arc::new(Mutex::new(caps.iter_mut().map(|c| c.breakloop_handle()).collect()));
            watch_signals_breakloop(stop.clone(), breaker.clone());
            tracing::info!(
                "capturing on {} (snaplen {}, buffer {} MiB)",
                lo.interface,
                lo.snaplen,
                lo.buffer_mib
            );
            netvigil::export::systemd::notify(&format!("READY=1\nSTATUS=capturing on {}", lo.interface));
            let source = Source::Live {
                caps,
                opts: lo,
                status: Box::new(|s| {
                    tracing::info!(
                        "{} packets, {} bytes; drops: kernel {} interface {} queue {}",
                        s.packets,
                        s.bytes,
                        s.kernel_drops,
                        s.if_drops,
                        s.queue_drops
                    );
                }),
            };
            let (summary, result) = pipeline::run(source, &cfg, opts, stop);
            if let Ok(mut b) = breaker.lock() {
                b.clear();
            }
            finish(summary, result, cli.quiet, args.common.summary_json.as_deref())
        }
    }
}

/// Config, event sink, metrics and signal handling shared by both modes.
fn prepare(
    common: &Common,
    backpressure: Backpressure,
) -> anyhow::Result<(Config, Options, Arc<AtomicBool>)> {
    let cfg = match &common.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(expr) = &common.bpf {
        // Fail fast with a usage error before any capture is opened.
        live::check_filter(expr, 1)?;
    }
    if let Some(dir) = &common.state_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        tracing::info!("learned baselines load from and save to {}", dir.display());
    }
    if let Some(dir) = &common.evidence_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create evidence directory {}", dir.display()))?;
    }
    let sensor = sensor_name(common.sensor_name.as_deref(), &cfg.events.sensor)?;
    let output = OutputOptions {
        sensor: Some(sensor),
        state_dir: common.state_dir.clone(),
        config: cfg.events.clone(),
    };
    let events = EventWriter::open_targets(&common.events, &output)?;
    let workers = common.workers.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map(|n| n.get().saturating_sub(1)).unwrap_or(1).max(1)
    });
    let metrics_addr = common.metrics_listen.or(if backpressure == Backpressure::DropNewest {
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9717)))
    } else {
        None
    });
    if let Some(addr) = metrics_addr {
        metrics::install(addr).map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("cannot install signal handler")?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while we are already stopping exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .context("cannot install signal handler")?;
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
    }
    Ok((
        cfg,
        Options {
            workers,
            backpressure,
            events,
            metrics: metrics_addr.is_some(),
            state_dir: common.state_dir.clone(),
            reload: reload.clone(),
            config_path: common.config.clone(),
            evidence_dir: common.evidence_dir.clone(),
        },
        stop,
    ))
}

/// The sensor's name: the flag, else the config, else the host name.
fn sensor_name(flag: Option<&str>, config: &str) -> anyhow::Result<String> {
    if let Some(name) = flag {
        if !netvigil::config::valid_sensor_name(name) {
            anyhow::bail!(ConfigError::Invalid {
                key: "--sensor-name",
                value: name.to_string(),
                reason: netvigil::config::SENSOR_RULE,
            });
        }
        return Ok(name.to_string());
    }
    if !config.is_empty() {
        return Ok(config.to_string());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(char::is_ascii_graphic).collect();
    Ok(if host.is_empty() { "netvigil".into() } else { host })
}

/// Wakes a blocked libpcap read when a stop signal arrives.
fn watch_signals_breakloop(stop: Arc<AtomicBool>, breaker: Arc<Mutex<Vec<pcap::BreakLoop>>>) {
    let signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]);
    let Ok(mut signals) = signals else { return };
    let _ = std::thread::Builder::new().name("netvigil-signals".into()).spawn(move || {
        for _ in signals.forever() {
            stop.store(true, Ordering::Relaxed);
            if let Ok(all) = breaker.lock() {
                all.iter().for_each(pcap::BreakLoop::breakloop);
            }
        }
    });
}

/// Keeps the process (and its metrics endpoint) alive after a replay.
fn linger(common: &Common) {
    if common.metrics_listen.is_some() && common.metrics_linger > 0 {
        std::thread::sleep(std::time::Duration::from_secs(common.metrics_linger));
    }
}

fn progress_bar(quiet: bool) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {human_pos} packets ({per_sec}) {elapsed}")
    {
        b.set_style(style);
    }
    b.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(b)
}

fn finish(
    summary: Summary,
    result: Result<(), CaptureError>,
    quiet: bool,
    json: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    // A source that never opened (missing file, bad filter…) gets its one
    // error line, not an empty summary in front of it.
    let never_started = matches!(&result, Err(e) if e.is_usage()) && summary.capture.packets == 0;
    if !quiet && !never_started {
        eprint!("{}", summary.render());
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&summary.to_json()).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write summary to {}", path.display()))?;
    }
    result?;
    if let Some(e) = &summary.events_error {
        if e.contains("broken pipe") {
            eprintln!("netvigil: event output closed by the reader; stopped early");
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::bail!("{e}");
    }
    if let Some(first) = summary.capture.errors.first() {
        eprintln!("netvigil: error: {first}");
        return Ok(ExitCode::from(EXIT_RUNTIME));
    }
    Ok(ExitCode::SUCCESS)
}
