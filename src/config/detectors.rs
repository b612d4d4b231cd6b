//! The detector families' configuration sections: `[misuse]`, `[spike]`,
//! `[[allow]]`, `[[hostgroup]]`, `[scan]`, `[tunnel]`, `[ml]`.
//!
//! Defaults carry their justification; `detect` reads these and never
//! defines a configuration type of its own.

use serde::{Deserialize, Serialize};

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

/// `[spike]`: learned baselines and the statistical detectors.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeConfig {
    /// Run the statistical detectors at all.
    pub enabled: bool,
    /// Seconds of history before a host is judged against its own baseline;
    /// until then the absolute `ceiling` of each detector applies.
    pub warmup: u64,
    /// Half-lives in seconds of the fast and slow baselines.
    pub half_lives: [u64; 2],
    /// Standard deviations above the mean that count as anomalous.
    pub k: f64,
    /// Multiple of the mean that must also be exceeded.
    pub ratio: f64,
    /// Most hosts with a baseline; the least recently seen are forgotten past it.
    pub max_hosts: usize,
    /// Packets in one interval before a host earns a baseline (spoofed
    /// one-packet sources never do).
    pub admission_packets: u64,
    /// Seconds of packet time between saves of the learned state.
    pub save_interval: u64,
    /// SYN flood: connection attempts that do not complete, per second, toward one host.
    pub syn_flood: Tuning,
    /// UDP flood: UDP packets per second toward one host.
    pub udp_flood: Tuning,
    /// ICMP flood: ICMP packets per second toward one host.
    pub icmp_flood: Tuning,
    /// Amplification: unsolicited reflector-port bytes per second toward one host.
    pub amplification: Tuning,
    /// Volume spike: bytes per second into or out of one host.
    pub volume_spike: Tuning,
    /// Fan-out spike: distinct peers per second one host talks to.
    pub fanout_spike: Tuning,
    /// Connection flood: TCP connections per second toward one host whose
    /// handshake completes (the flood a SYN-flood line never sees).
    pub connection_flood: Tuning,
}

/// Thresholds and persistence of one statistical detector.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// Run this detector.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Absolute minimum: below it nothing is anomalous, whatever the baseline.
    pub floor: f64,
    /// During warm-up (no trusted baseline yet) values above this are anomalous.
    pub ceiling: f64,
    /// Intervals over the line, out of `window`, before an episode opens.
    pub persistence: u32,
    /// Length of the persistence window in intervals (at most 32).
    pub window: u32,
}

fn yes() -> bool {
    true
}

impl Default for SpikeConfig {
    fn default() -> Self {
        // Floors and ceilings are per second toward (or from) one host; each is
        // justified in the README's "Statistical detection" section.
        let t = |floor: f64, ceiling: f64, persistence: u32, window: u32| Tuning {
            enabled: true,
            floor,
            ceiling,
            persistence,
            window,
        };
        SpikeConfig {
            enabled: true,
            warmup: 300,
            half_lives: [60, 3600],
            k: 5.0,
            ratio: 3.0,
            max_hosts: 65_536,
            admission_packets: 10,
            save_interval: 300,
            syn_flood: t(50.0, 100.0, 3, 5),
            udp_flood: t(500.0, 2_000.0, 3, 5),
            icmp_flood: t(200.0, 500.0, 3, 5),
            amplification: t(12_500.0, 125_000.0, 2, 5),
            volume_spike: t(12_500_000.0, 125_000_000.0, 10, 20),
            fanout_spike: t(100.0, 500.0, 3, 5),
            connection_flood: t(100.0, 200.0, 3, 5),
        }
    }
}

/// `[[allow]]`: a network whose traffic never opens the listed kinds.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Address or CIDR (`192.0.2.0/24`, `2001:db8::/32`).
    pub cidr: String,
    /// Kinds suppressed (empty: all kinds).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Why, for the next person reading the config.
    #[serde(default)]
    pub reason: String,
}

/// `[[hostgroup]]`: per-network threshold overrides (a DNS server may
/// legitimately take 20,000 UDP packets/s).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostGroup {
    /// A name for messages.
    pub name: String,
    /// Members (addresses or CIDRs); the first matching group wins.
    pub cidrs: Vec<String>,
    /// Overrides for `syn_flood`.
    pub syn_flood: Option<Override>,
    /// Overrides for `udp_flood`.
    pub udp_flood: Option<Override>,
    /// Overrides for `icmp_flood`.
    pub icmp_flood: Option<Override>,
    /// Overrides for `amplification`.
    pub amplification: Option<Override>,
    /// Overrides for `volume_spike`.
    pub volume_spike: Option<Override>,
    /// Overrides for `fanout_spike`.
    pub fanout_spike: Option<Override>,
    /// Overrides for `connection_flood`.
    #[serde(default)]
    pub connection_flood: Option<Override>,
    /// Kinds this group's members never open (jump hosts: `lateral_movement`;
    /// backup servers: `data_exfiltration`).
    #[serde(default)]
    pub skip: Vec<String>,
}

/// Replacement floor/ceiling for one detector in one host group.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// New floor.
    pub floor: Option<f64>,
    /// New warm-up ceiling.
    pub ceiling: Option<f64>,
}

/// `[scan]`: thresholds of the scan detectors.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// Run the scan detectors.
    pub enabled: bool,
    /// Window in seconds of packet time over which distinct targets are counted.
    pub window: u64,
    /// Distinct ports of one host, mostly failing, that make a port scan.
    pub ports: u64,
    /// Distinct hosts on one port (or pinged), that make a host scan.
    pub hosts: u64,
    /// Distinct hosts ARPed for that make an ARP sweep (routers ARP for many).
    pub arp_hosts: u64,
    /// Distinct ports of one host, probed by several sources, for a distributed scan.
    pub distributed_ports: u64,
    /// Sources needed for a distributed scan.
    pub distributed_sources: u64,
    /// Largest fraction of probes that may succeed for it to still be a scan.
    pub max_success: f64,
    /// Distinct IP protocols one source sends one host that make a protocol
    /// scan: two hosts speak TCP, UDP, ICMP and perhaps IGMP, GRE or ESP;
    /// eight is more than any tunnel setup and a sliver of nmap -sO's 256.
    pub protocols: u64,
    /// Most (source, target) windows remembered.
    pub max_tracked: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        // Zeek's scan policy: 15 ports or 25 hosts within 5 minutes.
        ScanConfig {
            enabled: true,
            window: 300,
            ports: 15,
            hosts: 25,
            arp_hosts: 50,
            distributed_ports: 100,
            distributed_sources: 5,
            max_success: 0.5,
            protocols: 8,
            max_tracked: 131_072,
        }
    }
}

/// `[tunnel]`: DNS and ICMP tunnel rules.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelConfig {
    /// Run the tunnel detectors.
    pub enabled: bool,
    /// Window in seconds of packet time.
    pub window: u64,
    /// Distinct encoded-looking names under one domain from one client.
    pub encoded_names: u32,
    /// Distinct names under one domain from one client with a long average name…
    pub many_names: u64,
    /// … of at least this many characters.
    pub many_names_avg_len: u64,
    /// NULL/TXT/CNAME/MX/ANY queries under one domain from one client.
    pub bulky_queries: u32,
    /// Echo requests between two hosts before payloads are judged.
    pub icmp_echoes: u32,
    /// Distinct echo payload sizes that mean data, not pings.
    pub icmp_sizes: u64,
    /// Parent domains never reported (reputation services that query by hash).
    pub allow_domains: Vec<String>,
    /// Datagrams on UDP 53 between two hosts that are not DNS, and at least
    /// half of their port-53 traffic, that make a raw-mode tunnel (a broken
    /// resolver sends one or two; a tunnel sends a stream).
    pub raw_packets: u32,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            enabled: true,
            window: 300,
            encoded_names: 5,
            many_names: 50,
            many_names_avg_len: 40,
            bulky_queries: 20,
            icmp_echoes: 20,
            icmp_sizes: 8,
            allow_domains: Vec::new(),
            raw_packets: 20,
        }
    }
}

/// Which streaming detector scores the feature vectors.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Half-Space Trees (Tan, Ting & Liu 2011).
    #[default]
    Hst,
    /// LODA: sparse random projections with histograms (Pevný 2016).
    Loda,
    /// KitNET-style ensemble of tiny online autoencoders (Mirsky et al. 2018).
    Kitnet,
}

/// `[ml]`: the behaviour model.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MlConfig {
    /// Run the model (on: it ranks every episode; its own outliers are `low`).
    pub enabled: bool,
    /// The detector: `hst` (default), `loda` or `kitnet`.
    pub model: ModelKind,
    /// Members of the ensemble: trees (HST) or projections (LODA); KitNET's
    /// are fixed (an autoencoder per feature group and the output layer).
    pub trees: usize,
    /// Depth of each tree (nodes = 2^(depth+1) - 1).
    pub depth: u32,
    /// Host-intervals per mass window (reference and latest swap after this
    /// many); the first window also closes after half of `training_seconds`
    /// once it holds 32, so a small network gets scores in packet time.
    pub window: u64,
    /// Training scores kept to set the line: every one up to this many, then
    /// a uniform sample of the whole learning period (bounds memory on a
    /// large network, not the period). A duration here (`"10m"`) is
    /// refused with a pointer to `training_seconds`.
    #[serde(deserialize_with = "super::sample_size")]
    pub training: usize,
    /// The learning period: seconds of packet time from the first
    /// host-interval learned until the model calibrates (once it has scored
    /// `min_training`); the spike baselines' warm-up is the same 300 s.
    /// Seconds, or a duration such as `"10m"`.
    #[serde(deserialize_with = "super::seconds")]
    pub training_seconds: u64,
    /// Host-intervals needed to calibrate after `training_seconds`: 128 is
    /// what a network averaging one scored host-interval a second yields in
    /// the learning period's second half (the first builds the reference
    /// window). The 0.999 quantile of fewer than 1,000 scores is their
    /// maximum either way; the line adds a margin to it.
    pub min_training: usize,
    /// Quantile of training scores the threshold sits above.
    pub quantile: f64,
    /// Packets a host needs in an interval to be scored.
    pub min_packets: u64,
}

impl Default for MlConfig {
    fn default() -> Self {
        MlConfig {
            enabled: true,
            model: ModelKind::Hst,
            trees: 25,
            depth: 10,
            window: 512,
            training: 4096,
            training_seconds: 300,
            min_training: 128,
            quantile: 0.999,
            min_packets: 10,
        }
    }
}

/// `[bruteforce]`: password guessing against authentication services.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BruteConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Authentication services (TCP ports): FTP, SSH, Telnet, SMTP
    /// submission, POP3, IMAP, LDAP, SMB, MS SQL, MySQL, RDP, PostgreSQL, VNC;
    /// and Kerberos (88), where each AS-REQ over UDP or TCP is an attempt.
    pub services: Vec<u16>,
    /// Connection attempts from one source to one service of one host within
    /// `window` that make an episode: a person logs in once and stays; a
    /// guessing tool opens a connection every second or two.
    pub attempts: u32,
    /// Window in seconds of packet time.
    pub window: u64,
}

impl Default for BruteConfig {
    fn default() -> Self {
        BruteConfig {
            enabled: true,
            services: vec![
                21, 22, 23, 88, 110, 143, 389, 445, 465, 587, 636, 993, 995, 1433, 3306, 3389, 5432, 5900,
            ],
            attempts: 20,
            window: 60,
        }
    }
}

/// `[slow_http]`: one client holding many connections to one server open
/// without the server answering (Slowloris, slow headers, slow POST).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SlowConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Pending connections (handshake done, nothing answered, not closed)
    /// from one client to one server port that make an episode: a browser
    /// keeps at most 6 per server (HTTP/1.1) and its requests are answered
    /// in milliseconds; Slowloris holds 150 by default.
    pub connections: u32,
    /// Seconds of packet time the count must stay at or above `connections`:
    /// a burst of connections answered at once is not a hold.
    pub hold: u64,
    /// Multiple of the server's usual peak of pending connections per client
    /// that must also be exceeded (a proxy in front of it legitimately
    /// holds many).
    pub ratio: f64,
}

impl Default for SlowConfig {
    fn default() -> Self {
        SlowConfig { enabled: true, connections: 50, hold: 10, ratio: 4.0 }
    }
}

/// `[one_mac_many_ips]`: one MAC opening flows from many source addresses.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MacChurnConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Distinct source addresses of the flows one MAC opens within `window`
    /// that make an episode: a host has one address per family (a few more
    /// with IPv6 privacy addresses); a spoofer rotates through hundreds.
    pub sources: u32,
    /// Tumbling window in seconds of packet time.
    pub window: u64,
    /// Multiple of the MAC's usual peak per window that must also be
    /// exceeded (routers open flows for the remote hosts that reach in).
    pub ratio: f64,
}

impl Default for MacChurnConfig {
    fn default() -> Self {
        MacChurnConfig { enabled: true, sources: 64, window: 10, ratio: 8.0 }
    }
}
