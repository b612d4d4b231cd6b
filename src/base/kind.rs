//! The vocabulary of findings: every anomaly kind, its method and its urgency.
//!
//! Below every stage, because the configuration (allowlists name kinds),
//! the detectors and the exporters all speak it.

/// Which method found an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Statistical: a rate far above a learned baseline.
    Spike,
    /// Rule-based: reconnaissance (port/host scans, sweeps).
    Scan,
    /// Rule-based: protocol misuse.
    Misuse,
    /// Behaviour: a host against its own history of destinations, peers and timing.
    Behaviour,
    /// Machine learning: behaviour outlier.
    Ml,
}

impl Category {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Spike => "spike",
            Category::Scan => "scan",
            Category::Misuse => "misuse",
            Category::Behaviour => "behaviour",
            Category::Ml => "ml",
        }
    }
}

/// Every anomaly kind netvigil can report: a closed set with stable names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// TCP segment with a flag combination no conforming stack sends
    /// (SYN+FIN, SYN+RST, NULL, Xmas, FIN/PSH/URG without ACK, all flags).
    TcpInvalidFlags,
    /// Source and destination address and port are the same (LAND attack).
    Land,
    /// Connection attempts toward one host that never complete, far above normal.
    SynFlood,
    /// UDP packets toward one host far above normal, unanswered.
    UdpFlood,
    /// ICMP packets toward one host far above normal.
    IcmpFlood,
    /// Unsolicited responses from amplifier ports (or SYN-ACKs to no SYN) toward one host.
    Amplification,
    /// Bytes into or out of one host far above its own normal.
    VolumeSpike,
    /// One host suddenly talks to far more peers than usual.
    FanoutSpike,
    /// TCP or UDP to or from port 0, which no service uses.
    PortZero,
    /// IP header fields no conforming stack sends (IHL < 5, lengths that
    /// contradict the packet, malformed options, reserved bit, TTL 0…).
    IpHeaderAnomaly,
    /// A source address that cannot send (multicast, broadcast, loopback,
    /// unspecified outside DHCP/neighbour discovery).
    InvalidSource,
    /// Fragment tricks: tiny first fragments, overlaps (teardrop), datagrams
    /// reassembling past 65,535 bytes.
    IpFragmentAbuse,
    /// IPv6 extension-header abuse: routing header type 0, repeated or
    /// misplaced headers, unknown options (covert channels).
    Ipv6ExtHeaderAbuse,
    /// ICMP misuse: redirects, Packet Too Big below the minimum MTU, oversized echoes.
    IcmpMisuse,
    /// Echo traffic whose payloads carry data (sizes vary, large).
    IcmpTunnel,
    /// ARP replies that rebind an address to another MAC, or one MAC claiming many addresses.
    ArpSpoof,
    /// IPv6 router advertisements for a router address from a second MAC, or killing routes.
    RogueRouterAdvert,
    /// DNS queries carrying data: long, high-entropy names under one domain, TXT/NULL volume.
    DnsTunnel,
    /// A well-known port carrying something else (non-DNS on UDP 53).
    ProtocolPortMismatch,
    /// One source probing many ports of one host, mostly failing.
    PortScan,
    /// One source probing one port (or ICMP/ARP) across many hosts.
    HostScan,
    /// Many sources together probing many ports of one host.
    DistributedScan,
    /// A host whose behaviour the learned model has never seen.
    BehaviourOutlier,
    /// A local host sending outside far more than it usually does, or a
    /// file's worth to destinations it never used.
    DataExfiltration,
    /// A host opening administrative sessions to internal peers it never used that way.
    LateralMovement,
    /// Regular check-ins from one host to one service (command and control).
    Beaconing,
    /// One source sending one host packets of many IP protocols (nmap -sO).
    // New kinds go last: a kind's place feeds episode ids and event order.
    ProtocolScan,
    /// One source opening connection after connection to one authentication service.
    BruteForce,
    /// Two different answers to one DNS query from its server (a forged one raced the real one).
    DnsSpoofing,
    /// Connections toward one host whose handshakes complete, far above its normal.
    ConnectionFlood,
    /// One client holding many connections to one server open, unanswered (Slowloris).
    SlowHttp,
    /// One MAC opening flows from far more source addresses than it usually does.
    OneMacManyIps,
}

/// Every kind, for name lookups and documentation.
pub const ALL_KINDS: [AnomalyKind; 32] = [
    AnomalyKind::TcpInvalidFlags,
    AnomalyKind::Land,
    AnomalyKind::SynFlood,
    AnomalyKind::UdpFlood,
    AnomalyKind::IcmpFlood,
    AnomalyKind::Amplification,
    AnomalyKind::VolumeSpike,
    AnomalyKind::FanoutSpike,
    AnomalyKind::PortZero,
    AnomalyKind::IpHeaderAnomaly,
    AnomalyKind::InvalidSource,
    AnomalyKind::IpFragmentAbuse,
    AnomalyKind::Ipv6ExtHeaderAbuse,
    AnomalyKind::IcmpMisuse,
    AnomalyKind::IcmpTunnel,
    AnomalyKind::ArpSpoof,
    AnomalyKind::RogueRouterAdvert,
    AnomalyKind::DnsTunnel,
    AnomalyKind::ProtocolPortMismatch,
    AnomalyKind::PortScan,
    AnomalyKind::HostScan,
    AnomalyKind::DistributedScan,
    AnomalyKind::BehaviourOutlier,
    AnomalyKind::DataExfiltration,
    AnomalyKind::LateralMovement,
    AnomalyKind::Beaconing,
    AnomalyKind::ProtocolScan,
    AnomalyKind::BruteForce,
    AnomalyKind::DnsSpoofing,
    AnomalyKind::ConnectionFlood,
    AnomalyKind::SlowHttp,
    AnomalyKind::OneMacManyIps,
];

impl AnomalyKind {
    /// Stable snake_case name (JSON `kind`, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::TcpInvalidFlags => "tcp_invalid_flags",
            AnomalyKind::Land => "land",
            AnomalyKind::SynFlood => "syn_flood",
            AnomalyKind::UdpFlood => "udp_flood",
            AnomalyKind::IcmpFlood => "icmp_flood",
            AnomalyKind::Amplification => "amplification",
            AnomalyKind::VolumeSpike => "volume_spike",
            AnomalyKind::FanoutSpike => "fanout_spike",
            AnomalyKind::PortZero => "port_zero",
            AnomalyKind::IpHeaderAnomaly => "ip_header_anomaly",
            AnomalyKind::InvalidSource => "invalid_source",
            AnomalyKind::IpFragmentAbuse => "ip_fragment_abuse",
            AnomalyKind::Ipv6ExtHeaderAbuse => "ipv6_ext_header_abuse",
            AnomalyKind::IcmpMisuse => "icmp_misuse",
            AnomalyKind::IcmpTunnel => "icmp_tunnel",
            AnomalyKind::ArpSpoof => "arp_spoof",
            AnomalyKind::RogueRouterAdvert => "rogue_router_advert",
            AnomalyKind::DnsTunnel => "dns_tunnel",
            AnomalyKind::ProtocolPortMismatch => "protocol_port_mismatch",
            AnomalyKind::PortScan => "port_scan",
            AnomalyKind::HostScan => "host_scan",
            AnomalyKind::DistributedScan => "distributed_scan",
            AnomalyKind::ProtocolScan => "protocol_scan",
            AnomalyKind::BruteForce => "brute_force",
            AnomalyKind::DnsSpoofing => "dns_spoofing",
            AnomalyKind::ConnectionFlood => "connection_flood",
            AnomalyKind::SlowHttp => "slow_http",
            AnomalyKind::OneMacManyIps => "one_mac_many_ips",
            AnomalyKind::BehaviourOutlier => "behaviour_outlier",
            AnomalyKind::DataExfiltration => "data_exfiltration",
            AnomalyKind::LateralMovement => "lateral_movement",
            AnomalyKind::Beaconing => "beaconing",
        }
    }

    /// The kind with this stable name.
    pub fn from_name(name: &str) -> Option<AnomalyKind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == name)
    }

    /// The method that reports this kind.
    pub fn category(self) -> Category {
        match self {
            AnomalyKind::SynFlood
            | AnomalyKind::UdpFlood
            | AnomalyKind::IcmpFlood
            | AnomalyKind::Amplification
            | AnomalyKind::VolumeSpike
            | AnomalyKind::FanoutSpike
            | AnomalyKind::ConnectionFlood
            | AnomalyKind::SlowHttp => Category::Spike,
            AnomalyKind::PortScan
            | AnomalyKind::HostScan
            | AnomalyKind::DistributedScan
            | AnomalyKind::ProtocolScan => Category::Scan,
            AnomalyKind::BehaviourOutlier => Category::Ml,
            AnomalyKind::DataExfiltration | AnomalyKind::LateralMovement | AnomalyKind::Beaconing => {
                Category::Behaviour
            }
            _ => Category::Misuse,
        }
    }
}

/// How urgent an anomaly is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Likely hostile or broken.
    Medium,
    /// Hostile, act soon.
    High,
    /// Service-affecting now.
    Critical,
}

impl Severity {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}
