//! Configuration: the only reader of the TOML file; validated into typed settings.
//!
//! Unknown keys are rejected (a typo must not silently fall back to a
//! default), and every check names the key at fault.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::DetectConfig;
use crate::detect::episode::EpisodePolicy;
use crate::time::NANOS_PER_SEC;
use crate::track::{ShardConfig, TableLimits};

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
            batch_size: 256,
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
    /// Most distinct hosts summarised per interval and worker.
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
        EpisodeConfig {
            cooldown: 60,
            update_interval: 60,
            max_open: 10_000,
        }
    }
}

/// `[misuse]`: rule-based protocol misuse.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MisuseConfig {
    /// Raise misuse events at all.
    pub enabled: bool,
}

impl Default for MisuseConfig {
    fn default() -> Self {
        MisuseConfig { enabled: true }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
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
        fn check(
            ok: bool,
            key: &'static str,
            value: impl ToString,
            reason: &'static str,
        ) -> Result<(), ConfigError> {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    reason,
                })
            }
        }
        let c = &self.capture;
        check(
            c.snaplen >= 64,
            "capture.snaplen",
            c.snaplen,
            "must be at least 64 bytes (headers)",
        )?;
        check(
            c.buffer_mib >= 1 && c.buffer_mib <= 4096,
            "capture.buffer_mib",
            c.buffer_mib,
            "must be 1..=4096",
        )?;
        check(
            (1..=65_536).contains(&c.batch_size),
            "capture.batch_size",
            c.batch_size,
            "must be 1..=65536",
        )?;
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
        check(
            f.max_flows >= 1,
            "flow.max_flows",
            f.max_flows,
            "must be at least 1",
        )?;
        for (key, v) in [
            ("flow.tcp_embryonic_timeout", f.tcp_embryonic_timeout),
            ("flow.tcp_established_timeout", f.tcp_established_timeout),
            ("flow.tcp_closed_timeout", f.tcp_closed_timeout),
            ("flow.udp_timeout", f.udp_timeout),
            ("flow.icmp_timeout", f.icmp_timeout),
            ("flow.other_timeout", f.other_timeout),
            ("flow.active_timeout", f.active_timeout),
        ] {
            check(
                (1..=86_400).contains(&v),
                key,
                v,
                "must be 1..=86400 seconds",
            )?;
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
        check(
            e.max_open >= 1,
            "episodes.max_open",
            e.max_open,
            "must be at least 1",
        )?;
        Ok(())
    }

    /// The effective configuration as TOML (for `check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Per-shard tracking settings for `workers` shards.
    pub fn shard_config(&self, workers: usize) -> ShardConfig {
        let f = &self.flow;
        let s = NANOS_PER_SEC;
        ShardConfig {
            limits: TableLimits {
                max_flows: (f.max_flows / workers.max(1)).max(1),
                idle: [
                    f.tcp_embryonic_timeout * s,
                    f.tcp_established_timeout * s,
                    f.tcp_closed_timeout * s,
                    f.udp_timeout * s,
                    f.icmp_timeout * s,
                    f.other_timeout * s,
                ],
                active: f.active_timeout * s,
            },
            max_hosts: f.max_hosts_per_interval,
            max_hits: 4096,
        }
    }

    /// Host-stage detector settings.
    pub fn detect_config(&self) -> DetectConfig {
        let e = &self.episodes;
        DetectConfig {
            misuse_episodes: EpisodePolicy {
                cooldown: e.cooldown * NANOS_PER_SEC,
                update_every: e.update_interval * NANOS_PER_SEC,
                max_open: e.max_open,
            },
            misuse_enabled: self.misuse.enabled,
        }
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
    fn unknown_key_and_bad_range_name_the_key() {
        let e = Config::parse("[flow]\nmax_flow = 3\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_flow") && e.contains("a.toml"), "{e}");
        let e = Config::parse("[capture]\ninterval_ms = 0\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("capture.interval_ms"), "{e}");
    }
}
