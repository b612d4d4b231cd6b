//! The site and the behaviour families' sections: `[networks]`,
//! `[exfiltration]`, `[lateral]`, `[beaconing]`.
//!
//! These families judge each host against its own history, so most of their
//! lines are multiples of what that host usually does; the few absolute
//! numbers are minimums below which no analyst would act, each justified
//! where it is defined.

use serde::{Deserialize, Serialize};

use crate::base::LocalNets;

/// `[networks]`: what is inside the site.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworksConfig {
    /// The site's own prefixes: traffic between two of them is east-west,
    /// to anything else it leaves the site.
    pub local: Vec<String>,
}

impl Default for NetworksConfig {
    fn default() -> Self {
        NetworksConfig { local: LocalNets::DEFAULT.iter().map(|s| (*s).to_string()).collect() }
    }
}

impl NetworksConfig {
    /// The prefixes, parsed (validation has already rejected bad ones).
    pub fn local_nets(&self) -> LocalNets {
        LocalNets::parse(&self.local).unwrap_or_default()
    }
}

/// `[exfiltration]`: bytes a local host sends outside, against its own history.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExfilConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Seconds of packet time a host is watched sending outside before it is
    /// judged: its usual volume is learned first.
    pub learning: u64,
    /// Window lengths in seconds: a burst shows at the shortest, a slow
    /// upload at the longer ones.
    pub windows: Vec<u64>,
    /// Bytes to destinations new to the host, in one window, below which
    /// nothing is raised: web forms, TLS handshakes and API calls to a new
    /// site stay in the tens of kilobytes; a megabyte is a file.
    pub min_new_bytes: u64,
    /// Bytes to any outside destination, in one window, below which nothing
    /// is raised (a host's routine targets get a higher bar than new ones).
    pub min_bytes: u64,
    /// Multiple of the host's usual bytes at the same window that bytes to
    /// new destinations must exceed (they must also exceed its peak).
    pub new_ratio: f64,
    /// Multiple of the host's usual bytes that all outside bytes must exceed
    /// (and twice its peak).
    pub ratio: f64,
    /// Seconds a destination (its /24 or /48) stays new after its first use.
    pub new_for: u64,
    /// Outside destination networks remembered per host (least recently used go).
    pub max_destinations: usize,
    /// Local hosts with a history; the least recently seen are forgotten past it.
    pub max_hosts: usize,
    /// Seconds of packet time a destination unused is remembered.
    pub forget_after: u64,
    /// `"hour_of_day"`: also learn the usual volume per hour of day, and
    /// judge each window against its own hour once that hour has three
    /// windows of history (a nightly backup stays usual at night only).
    pub profile: Profile,
    /// Minutes east of UTC of the site's clock, for the hour of day.
    pub utc_offset_minutes: i32,
}

/// How the usual volume is kept.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// One usual for every hour.
    #[default]
    None,
    /// One usual per hour of day, beside the all-day one.
    HourOfDay,
}

impl Default for ExfilConfig {
    fn default() -> Self {
        ExfilConfig {
            enabled: true,
            learning: 120,
            windows: vec![10, 60, 600, 3600],
            min_new_bytes: 1_000_000,
            min_bytes: 5_000_000,
            new_ratio: 4.0,
            ratio: 10.0,
            new_for: 3600,
            max_destinations: 256,
            max_hosts: 65_536,
            forget_after: 30 * 86_400,
            profile: Profile::None,
            utc_offset_minutes: 0,
        }
    }
}

/// `[lateral]`: new internal peers on administrative services.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LateralConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Seconds of packet time from the sensor's first packet during which
    /// sessions are learned, not judged.
    pub learning: u64,
    /// Administrative services (TCP ports): SSH, Telnet, RPC endpoint
    /// mapper, SMB, RDP, WinRM (HTTP and HTTPS), VNC.
    pub services: Vec<u16>,
    /// New (peer, service) pairs within `window` that make an episode for a
    /// host that does use administrative services.
    pub new_peers: u32,
    /// Seconds over which new peers are counted.
    pub window: u64,
    /// (peer, service) pairs remembered per host.
    pub max_pairs: usize,
    /// Hosts with a history; the least recently seen are forgotten past it.
    pub max_hosts: usize,
    /// Seconds of packet time an unused pair is remembered.
    pub forget_after: u64,
}

impl Default for LateralConfig {
    fn default() -> Self {
        LateralConfig {
            enabled: true,
            learning: 120,
            services: vec![22, 23, 135, 445, 3389, 5985, 5986, 5900],
            new_peers: 3,
            window: 600,
            max_pairs: 256,
            max_hosts: 65_536,
            forget_after: 30 * 86_400,
        }
    }
}

/// `[beaconing]`: regular check-ins from one source to one service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BeaconConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Check-ins needed before a pair is judged (RITA's default minimum
    /// connection count is 20 as well); half as many for a tight timer
    /// (regularity 0.9 and above).
    pub min_checkins: u32,
    /// Fewest check-ins for long periods: a check-in every ten minutes for
    /// an hour and more is a pattern well before 20 of them.
    pub min_checkins_long: u32,
    /// Seconds of regular check-ins that count as a pattern whatever their
    /// number (down to `min_checkins_long`).
    pub long_span: u64,
    /// Shortest period judged, in seconds: faster than this is streaming or
    /// polling a UI, not an implant sleeping between check-ins.
    pub min_period: u64,
    /// Silence in seconds that starts a new check-in within one connection
    /// (and merges parallel connections opened together into one).
    pub burst_gap: u64,
    /// Regularity score (0-1) at or above which check-ins are a beacon:
    /// 0.75 takes a sleep with ±50 % uniform jitter (0.83) and leaves
    /// Poisson-like human activity (about 0.45) well below.
    pub score: f64,
    /// Local sources of one destination service at which it is a shared
    /// service (update, telemetry) rather than one implant's server; two
    /// already are when they are half of the local hosts seen.
    pub max_sources: u32,
    /// Destinations one source polls on one port with the same period at
    /// which it is a poller (monitoring, backup agent), not an implant.
    pub poller_peers: u32,
    /// Destination ports never judged: DNS, Kerberos, NTP, DHCP, NetBIOS,
    /// SSDP, mDNS and LLMNR are periodic by design.
    pub skip_ports: Vec<u16>,
    /// (source, destination, port) pairs tracked; the least recently seen go.
    pub max_tracked: usize,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            enabled: true,
            min_checkins: 20,
            min_checkins_long: 8,
            long_span: 3600,
            min_period: 2,
            burst_gap: 2,
            score: 0.75,
            max_sources: 4,
            poller_peers: 3,
            skip_ports: vec![53, 67, 68, 88, 123, 137, 138, 1900, 5353, 5355],
            max_tracked: 65_536,
        }
    }
}
