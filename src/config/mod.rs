//! Configuration: the only reader of the TOML file; validated into typed settings.
//!
//! This room owns every configuration type, the detectors' sections
//! included (`detectors.rs`); the stages only read them and build their own
//! run-time settings from them, so nothing here imports a stage.
//!
//! Unknown keys are rejected (a typo must not silently fall back to a
//! default), and every check names the key at fault.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::kind::AnomalyKind;
use crate::base::{Cidr, LocalNets};

mod behaviour;
mod detectors;

pub use behaviour::{BeaconConfig, ExfilConfig, LateralConfig, NetworksConfig, Profile};

pub use detectors::{
    AllowRule, BruteConfig, HostGroup, MacChurnConfig, MisuseConfig, MlConfig, ModelKind, Override,
    ScanConfig, SlowConfig, SpikeConfig, Tuning, TunnelConfig,
};

/// Configuration errors; each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// The parser's message (with line and key).
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config value {key} = {value}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `flow.max_flows`.
        key: &'static str,
        /// The offending value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Capture and pipeline settings.
    pub capture: CaptureConfig,
    /// Flow tracking settings.
    pub flow: FlowConfig,
    /// Episode timing.
    pub episodes: EpisodeConfig,
    /// Protocol-misuse rules.
    pub misuse: MisuseConfig,
    /// Statistical baselines and spike detectors.
    pub spike: SpikeConfig,
    /// Allowlist entries: traffic of these networks never opens the listed kinds.
    pub allow: Vec<AllowRule>,
    /// Per-network threshold overrides.
    pub hostgroup: Vec<HostGroup>,
    /// Scan detection.
    pub scan: ScanConfig,
    /// DNS and ICMP tunnel detection.
    pub tunnel: TunnelConfig,
    /// The behaviour model (machine learning).
    pub ml: MlConfig,
    /// The site's own networks.
    pub networks: NetworksConfig,
    /// Data leaving the site beyond a host's history.
    pub exfiltration: ExfilConfig,
    /// New internal peers on administrative services.
    pub lateral: LateralConfig,
    /// Regular check-ins (command and control).
    pub beaconing: BeaconConfig,
    /// Password guessing.
    pub bruteforce: BruteConfig,
    /// Connections held open without an answer (Slowloris).
    pub slow_http: SlowConfig,
    /// One MAC opening flows from many source addresses.
    pub one_mac_many_ips: MacChurnConfig,
    /// Event output: sensor name, NATS stream and spool.
    pub events: EventsConfig,
    /// Evidence pcaps (with `--evidence-dir`).
    pub evidence: EvidenceConfig,
}

/// `[evidence]`: the packets kept for each episode's pcap (`--evidence-dir`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// Packet time kept before an episode opens: enough to show how an
    /// attack began (its first probes precede the interval that flags it).
    pub before_seconds: f64,
    /// Memory of the ring of recent packets, in MiB: `before_seconds` of a
    /// 100 Mbit/s link is about 120 MiB; a busier link keeps less time.
    pub ring_mib: f64,
    /// Cap of one episode's file, in MiB.
    pub episode_mib: f64,
    /// Cap of a many-source episode's file (a spoofed or prefix-wide
    /// flood), in MiB: its first packets, a sample (at most `episode_mib`).
    pub sample_mib: f64,
    /// Cap of all files together, in MiB; the oldest finished files go first.
    pub total_mib: f64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            before_seconds: 10.0,
            ring_mib: 64.0,
            episode_mib: 8.0,
            sample_mib: 1.0,
            total_mib: 1024.0,
        }
    }
}

/// `[events]`: how events leave the sensor (targets are `--events`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// This sensor's name in every event; empty: the host name. `--sensor-name` wins.
    pub sensor: String,
    /// NATS: the stream created for the subject when no stream takes it.
    pub nats_stream: String,
    /// NATS: cap of the on-disk spool in MiB. An event is about 1-2 KB, so
    /// the default holds some 150,000: days of a busy sensor's events
    /// while the servers are away. Past it new events are dropped and counted.
    pub spool_mib: f64,
    /// NATS: at shutdown, seconds spent sending what is still spooled
    /// (what is left is sent on the next start).
    pub drain_seconds: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            sensor: String::new(),
            nats_stream: "NETVIGIL".into(),
            spool_mib: 256.0,
            drain_seconds: 5,
        }
    }
}

/// `[capture]`: how packets are read and batched.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Bytes captured per packet on live interfaces: every header plus a
    /// maximal DNS query name; the payload beyond is never read.
    pub snaplen: u32,
    /// Kernel capture buffer in MiB (live): absorbs bursts while we are busy.
    pub buffer_mib: u32,
    /// Put the interface in promiscuous mode (live); a span port needs it.
    pub promiscuous: bool,
    /// Packets per batch sent to a shard.
    pub batch_size: usize,
    /// Batches queued per shard before backpressure (replay) or drops (live).
    pub queue_batches: usize,
    /// Interval length in milliseconds: the tick that closes host summaries.
    pub interval_ms: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            snaplen: 1024,
            buffer_mib: 64,
            promiscuous: true,
            batch_size: 1024,
            queue_batches: 64,
            interval_ms: 1000,
        }
    }
}

/// `[flow]`: the flow tables.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Most flows tracked in all (split evenly over workers); past it the most idle is evicted.
    pub max_flows: usize,
    /// Idle timeout for TCP before the handshake completes (s).
    pub tcp_embryonic_timeout: u64,
    /// Idle timeout for open TCP connections (s).
    pub tcp_established_timeout: u64,
    /// Idle timeout after FIN/RST (s).
    pub tcp_closed_timeout: u64,
    /// Idle timeout for UDP (s).
    pub udp_timeout: u64,
    /// Idle timeout for ICMP (s).
    pub icmp_timeout: u64,
    /// Idle timeout for other protocols (s).
    pub other_timeout: u64,
    /// Longest a flow record stays open before it is split (s).
    pub active_timeout: u64,
    /// Most distinct hosts summarised per interval in all (split evenly over
    /// workers, like `max_flows`, so memory does not grow with the worker count).
    pub max_hosts_per_interval: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        // Timeouts follow Zeek's defaults (tcp_inactivity_timeout 5 min,
        // udp/icmp 1 min, tcp_close_delay a few seconds); the active timeout is
        // the usual NetFlow 30 minutes.
        FlowConfig {
            max_flows: 1 << 20,
            tcp_embryonic_timeout: 30,
            tcp_established_timeout: 300,
            tcp_closed_timeout: 10,
            udp_timeout: 60,
            icmp_timeout: 60,
            other_timeout: 60,
            active_timeout: 1800,
            max_hosts_per_interval: 1 << 17,
        }
    }
}

/// `[episodes]`: how anomaly episodes are paced.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EpisodeConfig {
    /// Quiet seconds after the last offending traffic before an episode ends.
    pub cooldown: u64,
    /// Minimum seconds between updates of one episode.
    pub update_interval: u64,
    /// Most episodes open at once per detector.
    pub max_open: usize,
}

impl Default for EpisodeConfig {
    fn default() -> Self {
        EpisodeConfig { cooldown: 60, update_interval: 60, max_open: 10_000 }
    }
}

/// `Ok` when `ok`, else an error naming `key` and its bad `value`.
/// What a sensor name may hold: it is part of every NATS message id.
pub const SENSOR_RULE: &str = "must be printable ASCII without spaces";

/// Reads a number of seconds written as an integer (`300`) or as a
/// duration with a unit (`"300s"`, `"10m"`, `"1h"`, `"1d"`), for settings
/// a person thinks of as a time (`ml.training_seconds = "10m"`).
pub fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Secs {
        Number(u64),
        Text(String),
    }
    match Secs::deserialize(d)? {
        Secs::Number(n) => Ok(n),
        Secs::Text(t) => parse_seconds(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{t:?} is not a duration: give seconds (300) or a number with s, m, h or d (\"10m\")"
            ))
        }),
    }
}

/// Reads `ml.training`, a count. Written as a duration (`"10m"`, how the
/// learning period was first specified) it names the key that takes one,
/// rather than serde's "invalid type: string".
pub fn sample_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(usize),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(t) => Err(serde::de::Error::custom(format!(
            "{t:?}: ml.training is how many scores calibration keeps (a number, e.g. 4096); the learning period is ml.training_seconds = {t:?}"
        ))),
    }
}

/// `"10m"` → 600; `None` for anything that is not a whole number with an
/// optional unit s, m, h or d.
pub fn parse_seconds(t: &str) -> Option<u64> {
    let t = t.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A sensor name (`--sensor-name`, `[events] sensor`) follows [`SENSOR_RULE`].
pub fn valid_sensor_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic())
}

fn check(ok: bool, key: &'static str, value: impl ToString, reason: &'static str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::Invalid { key, value: value.to_string(), reason }) }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every range; returns the first violation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.capture;
        check(c.snaplen >= 64, "capture.snaplen", c.snaplen, "must be at least 64 bytes (headers)")?;
        check(
            c.buffer_mib >= 1 && c.buffer_mib <= 4096,
            "capture.buffer_mib",
            c.buffer_mib,
            "must be 1..=4096",
        )?;
        check((1..=65_536).contains(&c.batch_size), "capture.batch_size", c.batch_size, "must be 1..=65536")?;
        check(
            (1..=65_536).contains(&c.queue_batches),
            "capture.queue_batches",
            c.queue_batches,
            "must be 1..=65536",
        )?;
        check(
            (10..=3_600_000).contains(&c.interval_ms),
            "capture.interval_ms",
            c.interval_ms,
            "must be 10..=3600000",
        )?;
        let f = &self.flow;
        check(f.max_flows >= 1, "flow.max_flows", f.max_flows, "must be at least 1")?;
        for (key, v) in [
            ("flow.tcp_embryonic_timeout", f.tcp_embryonic_timeout),
            ("flow.tcp_established_timeout", f.tcp_established_timeout),
            ("flow.tcp_closed_timeout", f.tcp_closed_timeout),
            ("flow.udp_timeout", f.udp_timeout),
            ("flow.icmp_timeout", f.icmp_timeout),
            ("flow.other_timeout", f.other_timeout),
            ("flow.active_timeout", f.active_timeout),
        ] {
            check((1..=86_400).contains(&v), key, v, "must be 1..=86400 seconds")?;
        }
        check(
            f.max_hosts_per_interval >= 1,
            "flow.max_hosts_per_interval",
            f.max_hosts_per_interval,
            "must be at least 1",
        )?;
        let e = &self.episodes;
        check(
            (1..=86_400).contains(&e.cooldown),
            "episodes.cooldown",
            e.cooldown,
            "must be 1..=86400 seconds",
        )?;
        check(
            e.update_interval <= 86_400,
            "episodes.update_interval",
            e.update_interval,
            "must be 0..=86400 seconds",
        )?;
        check(e.max_open >= 1, "episodes.max_open", e.max_open, "must be at least 1")?;
        let ev = &self.events;
        check(
            (0.001..=1_048_576.0).contains(&ev.spool_mib),
            "events.spool_mib",
            ev.spool_mib,
            "must be 0.001..=1048576",
        )?;
        check(ev.drain_seconds <= 3600, "events.drain_seconds", ev.drain_seconds, "must be 0..=3600")?;
        let evd = &self.evidence;
        check(
            (0.0..=3600.0).contains(&evd.before_seconds),
            "evidence.before_seconds",
            evd.before_seconds,
            "must be 0..=3600",
        )?;
        for (key, v) in [
            ("evidence.ring_mib", evd.ring_mib),
            ("evidence.episode_mib", evd.episode_mib),
            ("evidence.sample_mib", evd.sample_mib),
            ("evidence.total_mib", evd.total_mib),
        ] {
            check((0.1..=1_048_576.0).contains(&v), key, v, "must be 0.1..=1048576")?;
        }
        let stream_ok = !ev.nats_stream.is_empty()
            && ev.nats_stream.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        check(stream_ok, "events.nats_stream", &ev.nats_stream, "must be letters, digits, _ or -")?;
        check(
            ev.sensor.is_empty() || valid_sensor_name(&ev.sensor),
            "events.sensor",
            &ev.sensor,
            SENSOR_RULE,
        )?;
        self.validate_detectors()
    }

    fn validate_detectors(&self) -> Result<(), ConfigError> {
        let sp = &self.spike;
        check((0..=604_800).contains(&sp.warmup), "spike.warmup", sp.warmup, "must be 0..=604800 seconds")?;
        check(
            sp.half_lives[0] >= 1 && sp.half_lives[0] <= sp.half_lives[1] && sp.half_lives[1] <= 604_800,
            "spike.half_lives",
            format!("{:?}", sp.half_lives),
            "must be [fast, slow] seconds with 1 <= fast <= slow <= 604800",
        )?;
        check(sp.k.is_finite() && sp.k >= 0.0, "spike.k", sp.k, "must be a non-negative number")?;
        check(sp.ratio.is_finite() && sp.ratio >= 1.0, "spike.ratio", sp.ratio, "must be at least 1")?;
        check(sp.max_hosts >= 1, "spike.max_hosts", sp.max_hosts, "must be at least 1")?;
        check(sp.save_interval >= 1, "spike.save_interval", sp.save_interval, "must be at least 1 second")?;
        for (key, t) in [
            ("spike.syn_flood", &sp.syn_flood),
            ("spike.udp_flood", &sp.udp_flood),
            ("spike.icmp_flood", &sp.icmp_flood),
            ("spike.amplification", &sp.amplification),
            ("spike.volume_spike", &sp.volume_spike),
            ("spike.fanout_spike", &sp.fanout_spike),
            ("spike.connection_flood", &sp.connection_flood),
        ] {
            check(
                t.floor.is_finite() && t.floor >= 0.0,
                key,
                t.floor,
                "floor must be a non-negative number",
            )?;
            check(
                t.ceiling.is_finite() && t.ceiling >= t.floor,
                key,
                t.ceiling,
                "ceiling must be at least the floor",
            )?;
            check(
                (1..=32).contains(&t.window) && (1..=t.window).contains(&t.persistence),
                key,
                format!("persistence {} of window {}", t.persistence, t.window),
                "need 1 <= persistence <= window <= 32",
            )?;
        }
        for a in &self.allow {
            check(Cidr::parse(&a.cidr).is_some(), "allow.cidr", &a.cidr, "must be an address or CIDR")?;
            for k in &a.kinds {
                check(AnomalyKind::from_name(k).is_some(), "allow.kinds", k, "unknown anomaly kind")?;
            }
        }
        let sc = &self.scan;
        check((1..=86_400).contains(&sc.window), "scan.window", sc.window, "must be 1..=86400 seconds")?;
        check(sc.ports >= 2, "scan.ports", sc.ports, "must be at least 2")?;
        check(sc.hosts >= 2, "scan.hosts", sc.hosts, "must be at least 2")?;
        check(sc.arp_hosts >= 2, "scan.arp_hosts", sc.arp_hosts, "must be at least 2")?;
        check(sc.protocols >= 2, "scan.protocols", sc.protocols, "must be at least 2")?;
        let mc = &self.one_mac_many_ips;
        check(mc.sources >= 2, "one_mac_many_ips.sources", mc.sources, "must be at least 2")?;
        check(
            (1..=3_600).contains(&mc.window),
            "one_mac_many_ips.window",
            mc.window,
            "must be 1..=3600 seconds",
        )?;
        check(
            mc.ratio.is_finite() && mc.ratio >= 1.0,
            "one_mac_many_ips.ratio",
            mc.ratio,
            "must be at least 1",
        )?;
        let sh = &self.slow_http;
        check(sh.connections >= 2, "slow_http.connections", sh.connections, "must be at least 2")?;
        check((1..=3_600).contains(&sh.hold), "slow_http.hold", sh.hold, "must be 1..=3600 seconds")?;
        check(sh.ratio.is_finite() && sh.ratio >= 1.0, "slow_http.ratio", sh.ratio, "must be at least 1")?;
        let bf = &self.bruteforce;
        check(bf.attempts >= 2, "bruteforce.attempts", bf.attempts, "must be at least 2")?;
        check(
            (1..=86_400).contains(&bf.window),
            "bruteforce.window",
            bf.window,
            "must be 1..=86400 seconds",
        )?;
        check(
            (0.0..=1.0).contains(&sc.max_success),
            "scan.max_success",
            sc.max_success,
            "must be a fraction 0..=1",
        )?;
        check(sc.max_tracked >= 1, "scan.max_tracked", sc.max_tracked, "must be at least 1")?;
        let tu = &self.tunnel;
        check((1..=86_400).contains(&tu.window), "tunnel.window", tu.window, "must be 1..=86400 seconds")?;
        check(tu.encoded_names >= 1, "tunnel.encoded_names", tu.encoded_names, "must be at least 1")?;
        check(tu.icmp_echoes >= 1, "tunnel.icmp_echoes", tu.icmp_echoes, "must be at least 1")?;
        let ml = &self.ml;
        check((1..=256).contains(&ml.trees), "ml.trees", ml.trees, "must be 1..=256")?;
        check((1..=16).contains(&ml.depth), "ml.depth", ml.depth, "must be 1..=16")?;
        check(ml.window >= 16, "ml.window", ml.window, "must be at least 16")?;
        check(ml.training >= 16, "ml.training", ml.training, "must be at least 16")?;
        check(ml.min_training >= 16, "ml.min_training", ml.min_training, "must be at least 16")?;
        check((0.5..1.0).contains(&ml.quantile), "ml.quantile", ml.quantile, "must be in [0.5, 1)")?;
        for g in &self.hostgroup {
            check(!g.cidrs.is_empty(), "hostgroup.cidrs", &g.name, "a host group needs at least one member")?;
            for c in &g.cidrs {
                check(Cidr::parse(c).is_some(), "hostgroup.cidrs", c, "must be an address or CIDR")?;
            }
            for k in &g.skip {
                check(AnomalyKind::from_name(k).is_some(), "hostgroup.skip", k, "unknown anomaly kind")?;
            }
        }
        self.validate_behaviour()
    }

    fn validate_behaviour(&self) -> Result<(), ConfigError> {
        let n = &self.networks.local;
        check(
            LocalNets::parse(n).is_some(),
            "networks.local",
            format!("{n:?}"),
            "each must be an address or CIDR, at most 32 of them",
        )?;
        let x = &self.exfiltration;
        check(x.learning <= 30 * 86_400, "exfiltration.learning", x.learning, "must be 0..=2592000 seconds")?;
        check(
            !x.windows.is_empty()
                && x.windows.len() <= 8
                && x.windows.iter().all(|w| (1..=86_400).contains(w)),
            "exfiltration.windows",
            format!("{:?}", x.windows),
            "must be 1 to 8 window lengths of 1..=86400 seconds",
        )?;
        check(
            x.new_ratio.is_finite() && x.new_ratio >= 1.0,
            "exfiltration.new_ratio",
            x.new_ratio,
            "must be at least 1",
        )?;
        check(x.ratio.is_finite() && x.ratio >= 1.0, "exfiltration.ratio", x.ratio, "must be at least 1")?;
        check(
            x.max_destinations >= 1,
            "exfiltration.max_destinations",
            x.max_destinations,
            "must be at least 1",
        )?;
        check(x.max_hosts >= 1, "exfiltration.max_hosts", x.max_hosts, "must be at least 1")?;
        check(x.forget_after >= 1, "exfiltration.forget_after", x.forget_after, "must be at least 1 second")?;
        check(
            (-14 * 60..=14 * 60).contains(&x.utc_offset_minutes),
            "exfiltration.utc_offset_minutes",
            x.utc_offset_minutes,
            "must be -840..=840",
        )?;
        let l = &self.lateral;
        check(l.learning <= 30 * 86_400, "lateral.learning", l.learning, "must be 0..=2592000 seconds")?;
        check(
            !l.services.is_empty(),
            "lateral.services",
            format!("{:?}", l.services),
            "must list at least one port",
        )?;
        check(l.new_peers >= 1, "lateral.new_peers", l.new_peers, "must be at least 1")?;
        check((1..=86_400).contains(&l.window), "lateral.window", l.window, "must be 1..=86400 seconds")?;
        check(l.max_pairs >= 1, "lateral.max_pairs", l.max_pairs, "must be at least 1")?;
        check(l.max_hosts >= 1, "lateral.max_hosts", l.max_hosts, "must be at least 1")?;
        check(l.forget_after >= 1, "lateral.forget_after", l.forget_after, "must be at least 1 second")?;
        let b = &self.beaconing;
        check(b.min_checkins >= 4, "beaconing.min_checkins", b.min_checkins, "must be at least 4")?;
        check(
            (4..=b.min_checkins).contains(&b.min_checkins_long),
            "beaconing.min_checkins_long",
            b.min_checkins_long,
            "must be 4..=min_checkins",
        )?;
        check(
            (1..=86_400).contains(&b.burst_gap),
            "beaconing.burst_gap",
            b.burst_gap,
            "must be 1..=86400 seconds",
        )?;
        check(
            b.min_period >= b.burst_gap,
            "beaconing.min_period",
            b.min_period,
            "must be at least burst_gap",
        )?;
        check((0.0..=1.0).contains(&b.score), "beaconing.score", b.score, "must be 0..=1")?;
        check(b.max_sources >= 1, "beaconing.max_sources", b.max_sources, "must be at least 1")?;
        check(b.poller_peers >= 2, "beaconing.poller_peers", b.poller_peers, "must be at least 2")?;
        check(b.max_tracked >= 1, "beaconing.max_tracked", b.max_tracked, "must be at least 1")?;
        Ok(())
    }

    /// The effective configuration as TOML (for `check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Interval length in nanoseconds.
    pub fn interval_ns(&self) -> u64 {
        self.capture.interval_ms * 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = Config::default();
        c.validate().unwrap();
        let back = Config::parse(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn allowlists_and_groups_validate() {
        let ok = "[[allow]]\ncidr = \"192.0.2.0/24\"\nkinds = [\"volume_spike\"]\n\n[[hostgroup]]\nname = \"dns\"\ncidrs = [\"192.0.2.53\"]\nudp_flood = { floor = 20000.0 }\n";
        Config::parse(ok, Path::new("a.toml")).unwrap();
        let bad = "[[allow]]\ncidr = \"192.0.2.0/24\"\nkinds = [\"volume_spik\"]\n";
        let e = Config::parse(bad, Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("allow.kinds") && e.contains("volume_spik"), "{e}");
        let bad = "[spike.udp_flood]\nfloor = 10.0\nceiling = 5.0\npersistence = 3\nwindow = 5\n";
        let e = Config::parse(bad, Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("spike.udp_flood"), "{e}");
    }

    #[test]
    fn unknown_key_and_bad_range_name_the_key() {
        let e = Config::parse("[flow]\nmax_flow = 3\n", Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("max_flow") && e.contains("a.toml"), "{e}");
        let e = Config::parse("[capture]\ninterval_ms = 0\n", Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("capture.interval_ms"), "{e}");
    }

    #[test]
    fn the_learning_period_reads_as_seconds_or_a_duration() {
        for (text, want) in
            [("300", 300), ("\"300s\"", 300), ("\"10m\"", 600), ("\"1h\"", 3_600), ("\"2d\"", 172_800)]
        {
            let c =
                Config::parse(&format!("[ml]\ntraining_seconds = {text}\n"), Path::new("a.toml")).unwrap();
            assert_eq!(c.ml.training_seconds, want, "{text}");
        }
        let e = Config::parse("[ml]\ntraining_seconds = \"10 minutes\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a duration") && e.contains("a.toml"), "{e}");
        assert_eq!(parse_seconds("99999999999999999999d"), None);
        // A duration given to the sample size points at the key for it.
        let e = Config::parse("[ml]\ntraining = \"10m\"\n", Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("training_seconds = \"10m\"") && e.contains("a.toml"), "{e}");
        assert_eq!(Config::parse("[ml]\ntraining = 512\n", Path::new("a.toml")).unwrap().ml.training, 512);
    }
}
