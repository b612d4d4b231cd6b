//! Command-line flags (clap derive). Semantics are checked in `config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::capture::replay::Speed;
use crate::export::events::EventTarget;

/// netvigil: a packet-level network anomaly sensor.
///
/// Learns what normal traffic looks like and reports traffic spikes,
/// protocol misuse and scans as JSON-lines anomaly episodes.
#[derive(Debug, Parser)]
#[command(name = "netvigil", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr (no summary, no progress).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read pcap/pcapng savefiles in packet time.
    Replay(ReplayArgs),
    /// Capture from a span port or tap.
    Live(LiveArgs),
    /// Learn baselines and behaviour from past captures into --state-dir,
    /// raising no events, so a new sensor starts warm.
    Learn(LearnArgs),
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
}

/// Options shared by `replay` and `live`.
#[derive(Debug, Args)]
pub struct Common {
    /// TOML configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where anomaly events go: "-" (stdout) or a file, as JSON lines, and/or
    /// nats://HOST:PORT[,HOST:PORT...]/SUBJECT (JetStream, spooled under --state-dir).
    /// Give it twice for a file and NATS.
    #[arg(long, value_name = "TARGET", default_value = "-")]
    pub events: Vec<EventTarget>,
    /// This sensor's name in every event (default: [events] sensor, else the host name).
    #[arg(long, value_name = "NAME")]
    pub sensor_name: Option<String>,
    /// Tracker threads (default: available cores - 1, at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Serve Prometheus metrics on this address (replay: off unless given).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Capture filter in libpcap syntax.
    #[arg(long, value_name = "EXPR")]
    pub bpf: Option<String>,
    /// Write each episode's packets to DIR/<episode_id>.pcap (see [evidence]).
    #[arg(long, value_name = "DIR")]
    pub evidence_dir: Option<PathBuf>,
    /// Directory for learned state across runs.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// After the run, keep serving metrics this many seconds (so a scraper sees the final values).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub metrics_linger: u64,
    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

/// `netvigil replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Pacing: max, realtime, or a speed-up factor such as 10.
    #[arg(long, default_value = "max", value_name = "SPEED")]
    pub speed: Speed,
    /// Savefiles (pcap or pcapng, told apart by content), read in order.
    #[arg(required = true, value_name = "PCAP")]
    pub pcaps: Vec<PathBuf>,
}

/// `netvigil learn`.
#[derive(Debug, Args)]
pub struct LearnArgs {
    /// TOML configuration file (the same the sensor will run with).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory the learned state is written to (and extended, if it holds some).
    #[arg(long, value_name = "DIR", required = true)]
    pub state_dir: PathBuf,
    /// Tracker threads (default: available cores - 1, at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Capture filter in libpcap syntax.
    #[arg(long, value_name = "EXPR")]
    pub bpf: Option<String>,
    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Savefiles of the network's ordinary traffic, read in order.
    #[arg(required = true, value_name = "PCAP")]
    pub pcaps: Vec<PathBuf>,
}

/// `netvigil live`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Interface to capture on.
    #[arg(short, long, value_name = "IFACE")]
    pub interface: String,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    pub no_promisc: bool,
    /// After opening the capture, drop root and run as this user (needs root to start).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Capture threads: more than one joins them in one AF_PACKET fanout
    /// group (Linux), each reading its share of the flows.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub capture_threads: u16,
}
