//! The record that crosses from the capture thread to the tracker shards.

pub use crate::base::Addr;
use crate::base::time::Timestamp;

/// TCP flag bits, in header order (FIN is bit 0, CWR bit 7, NS bit 8).
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronise sequence numbers.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push function.
    pub const PSH: u16 = 0x008;
    /// Acknowledgment field significant.
    pub const ACK: u16 = 0x010;
    /// Urgent pointer field significant.
    pub const URG: u16 = 0x020;
    /// ECN echo.
    pub const ECE: u16 = 0x040;
    /// Congestion window reduced.
    pub const CWR: u16 = 0x080;
    /// ECN nonce (RFC 3540, historic).
    pub const NS: u16 = 0x100;

    /// Short names of the flags set in `f`, e.g. `"SYN+FIN"`, for messages.
    pub fn describe(f: u16) -> String {
        const NAMES: [(u16, &str); 9] = [
            (SYN, "SYN"),
            (FIN, "FIN"),
            (RST, "RST"),
            (PSH, "PSH"),
            (ACK, "ACK"),
            (URG, "URG"),
            (ECE, "ECE"),
            (CWR, "CWR"),
            (NS, "NS"),
        ];
        let parts: Vec<&str> = NAMES.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
        if parts.is_empty() { "none".to_string() } else { parts.join("+") }
    }
}

/// What the network layer of a frame turned out to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum L3 {
    /// Nothing decodable at layer 3 (unknown EtherType, truncated, unsupported link).
    #[default]
    None,
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// ARP over Ethernet/IPv4.
    Arp,
}

/// IP protocol numbers the pipeline treats specially.
pub mod ip_proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// Fragment bits of `PacketMeta::frag`.
pub mod frag {
    /// More fragments follow.
    pub const MORE: u8 = 0x1;
    /// Don't fragment (IPv4).
    pub const DONT: u8 = 0x2;
    /// The reserved ("evil") bit of IPv4 was set.
    pub const RESERVED: u8 = 0x4;
    /// This packet is a fragment (offset > 0 or more-fragments set).
    pub const IS_FRAGMENT: u8 = 0x8;
}

/// Bits of `PacketMeta::v6ext`: IPv6 extension-header abuse (RFC 8200, RFC 5095).
pub mod v6ext {
    /// A Routing Header of type 0 (deprecated: amplification and source routing).
    pub const RH0: u8 = 0x1;
    /// An extension header type repeated (Destination Options may appear twice).
    pub const REPEATED: u8 = 0x2;
    /// Hop-by-Hop Options not first.
    pub const HBH_NOT_FIRST: u8 = 0x4;
    /// An option type no standard defines, in Hop-by-Hop or Destination Options (covert channels).
    pub const UNKNOWN_OPTION: u8 = 0x8;
    /// More than eight extension headers in one packet.
    pub const TOO_MANY: u8 = 0x10;
}

/// Bits of `PacketMeta::l4`: which transport fields are valid.
pub mod l4 {
    /// Source and destination ports were read.
    pub const PORTS: u8 = 0x1;
    /// TCP flags, window, sequence and acknowledgment numbers were read.
    pub const TCP_FLAGS: u8 = 0x2;
    /// ICMP type and code were read.
    pub const ICMP: u8 = 0x4;
}

/// Decode anomalies: a closed set of reasons, one bit each, counted per reason.
///
/// These are facts about malformed or cut packets, not verdicts; the misuse
/// rules decide which of them are worth an event.
pub mod anomaly {
    /// The frame ended inside the link-layer header.
    pub const TRUNCATED_LINK: u32 = 1 << 0;
    /// The frame ended inside the IP header.
    pub const TRUNCATED_IP: u32 = 1 << 1;
    /// The frame ended inside the TCP/UDP/ICMP header.
    pub const TRUNCATED_L4: u32 = 1 << 2;
    /// IP version nibble does not match the EtherType / link type.
    pub const IP_BAD_VERSION: u32 = 1 << 3;
    /// IPv4 header length (IHL) below 5 words.
    pub const IPV4_BAD_IHL: u32 = 1 << 4;
    /// IPv4 total length smaller than the header, or larger than the wire length.
    pub const IPV4_BAD_TOTAL_LEN: u32 = 1 << 5;
    /// IPv4 options that do not parse (bad length, overrun).
    pub const IPV4_BAD_OPTIONS: u32 = 1 << 6;
    /// IPv4 reserved flag bit set.
    pub const IPV4_RESERVED_FLAG: u32 = 1 << 7;
    /// IPv6 payload length larger than the wire length.
    pub const IPV6_BAD_PAYLOAD_LEN: u32 = 1 << 8;
    /// IPv6 extension header chain that does not parse or is too long.
    pub const IPV6_BAD_EXT: u32 = 1 << 9;
    /// TCP data offset below 5 words or past the segment.
    pub const TCP_BAD_OFFSET: u32 = 1 << 10;
    /// UDP length field inconsistent with the datagram.
    pub const UDP_BAD_LEN: u32 = 1 << 11;
    /// TTL or hop limit of zero on the wire.
    pub const TTL_ZERO: u32 = 1 << 12;
    /// Link type this build cannot decode.
    pub const UNSUPPORTED_LINK: u32 = 1 << 13;
    /// EtherType or SLL protocol that is not IP or ARP.
    pub const NON_IP: u32 = 1 << 14;
    /// Timestamp earlier than a previous packet's (clamped to keep time monotonic).
    pub const TS_BACKWARDS: u32 = 1 << 15;
    /// ARP packet with an unexpected hardware/protocol format.
    pub const ARP_MALFORMED: u32 = 1 << 16;
    /// IPv4 header checksum wrong (reported as a counter only).
    pub const IPV4_BAD_CHECKSUM: u32 = 1 << 17;
    /// IPv4 total length 0 on a frame holding a whole TCP segment: a
    /// segmentation-offload super-frame captured on the sending host, whose
    /// length the NIC fills in later (Wireshark: "presumed TSO"). A counter,
    /// like bad checksums: offload, not misuse.
    pub const IPV4_OFFLOAD_ZERO_LEN: u32 = 1 << 18;

    /// Every reason with its stable snake_case name (metric label and summary).
    pub const NAMES: [(u32, &str); 19] = [
        (TRUNCATED_LINK, "truncated_link"),
        (TRUNCATED_IP, "truncated_ip"),
        (TRUNCATED_L4, "truncated_l4"),
        (IP_BAD_VERSION, "ip_bad_version"),
        (IPV4_BAD_IHL, "ipv4_bad_ihl"),
        (IPV4_BAD_TOTAL_LEN, "ipv4_bad_total_len"),
        (IPV4_BAD_OPTIONS, "ipv4_bad_options"),
        (IPV4_RESERVED_FLAG, "ipv4_reserved_flag"),
        (IPV6_BAD_PAYLOAD_LEN, "ipv6_bad_payload_len"),
        (IPV6_BAD_EXT, "ipv6_bad_ext_header"),
        (TCP_BAD_OFFSET, "tcp_bad_data_offset"),
        (UDP_BAD_LEN, "udp_bad_length"),
        (TTL_ZERO, "ttl_zero"),
        (UNSUPPORTED_LINK, "unsupported_link_type"),
        (NON_IP, "non_ip"),
        (TS_BACKWARDS, "timestamp_backwards"),
        (ARP_MALFORMED, "arp_malformed"),
        (IPV4_BAD_CHECKSUM, "ipv4_bad_checksum"),
        (IPV4_OFFLOAD_ZERO_LEN, "ipv4_offload_zero_len"),
    ];

    /// Number of distinct reasons (size of per-reason counter arrays).
    pub const COUNT: usize = NAMES.len();
}

/// Everything the pipeline needs to know about one frame, decoded once.
///
/// `Copy` and free of pointers: raw bytes never leave the capture thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Capture timestamp (made monotonic by the capture thread).
    pub ts: Timestamp,
    /// Length on the wire.
    pub wire_len: u32,
    /// Bytes actually captured.
    pub cap_len: u32,
    /// Link-layer source MAC (zero when the link has none).
    pub src_mac: [u8; 6],
    /// Link-layer destination MAC (zero when the link has none).
    pub dst_mac: [u8; 6],
    /// Up to two 802.1Q/802.1ad VLAN ids, outer first.
    pub vlan: [u16; 2],
    /// How many VLAN tags were present (0..=2; deeper stacks count as 2).
    pub vlan_count: u8,
    /// Layer-3 kind.
    pub l3: L3,
    /// IP protocol (after IPv6 extension headers); 0 for non-IP.
    pub proto: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Fragment bits, see [`frag`].
    pub frag: u8,
    /// Which layer-4 fields were read, see [`l4`].
    pub l4: u8,
    /// ICMP type (ICMPv4 or ICMPv6), when `proto` is ICMP.
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// Fragment offset in bytes.
    pub frag_offset: u32,
    /// IP identification (16 bits for IPv4, 32 for an IPv6 fragment header).
    pub ip_id: u32,
    /// Source address (IP source, or ARP sender protocol address).
    pub src: Addr,
    /// Destination address (IP destination, or ARP target protocol address).
    pub dst: Addr,
    /// TCP/UDP source port (0 otherwise).
    pub sport: u16,
    /// TCP/UDP destination port (0 otherwise).
    pub dport: u16,
    /// TCP flags, see [`tcp_flags`].
    pub tcp_flags: u16,
    /// TCP receive window.
    pub tcp_window: u16,
    /// TCP sequence number.
    pub tcp_seq: u32,
    /// TCP acknowledgment number (meaningful when ACK is set).
    pub tcp_ack: u32,
    /// Application payload length (wire view: what the headers claim, capped by the wire length).
    pub payload_len: u32,
    /// ARP operation (1 request, 2 reply), 0 for non-ARP.
    pub arp_op: u16,
    /// ARP sender hardware address.
    pub arp_sha: [u8; 6],
    /// ARP target hardware address.
    pub arp_tha: [u8; 6],
    /// Decode anomaly bits, see [`anomaly`].
    pub anomalies: u32,
    /// First payload bytes (up to 8) for cheap protocol checks later (DNS header, etc.).
    pub payload_head: [u8; 8],
    /// Bytes 4..8 of the ICMP header (echo id/seq, PTB MTU, RA lifetime…).
    pub icmp_rest: u32,
    /// IPv6 extension-header findings, see [`v6ext`].
    pub v6ext: u8,
    /// DNS question summary (UDP port 53 only).
    pub dns: super::dns::DnsInfo,
    /// Parent domain of the DNS question (last two labels, lowercase, dotted,
    /// truncated to 24 bytes, zero-padded): what an analyst needs to read.
    pub dns_parent: [u8; 24],
    /// Whether a stateless per-packet misuse rule fires, as the capture
    /// thread found it (left [`Prejudged::Unknown`] elsewhere: the shard
    /// then runs the rules itself).
    pub prejudged: Prejudged,
    /// The flow table's hash of this packet's flow key
    /// (`track::key::flow_hash`), made by the capture thread; 0 when not
    /// made (the shard then hashes the key itself).
    pub flow_hash: u64,
}

/// The capture thread's verdict on a packet's stateless misuse rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prejudged {
    /// Not judged yet.
    #[default]
    Unknown,
    /// No rule fires: the shard skips them.
    Clean,
    /// A rule fires: the shard runs them and records what they find.
    Fires,
}

impl PacketMeta {
    /// True when the frame carried IPv4 or IPv6.
    pub fn is_ip(&self) -> bool {
        matches!(self.l3, L3::Ipv4 | L3::Ipv6)
    }

    /// True when this is a TCP segment whose header was read.
    pub fn is_tcp(&self) -> bool {
        self.is_ip() && self.proto == ip_proto::TCP
    }

    /// True when TCP/UDP ports were read.
    pub fn has_ports(&self) -> bool {
        self.l4 & l4::PORTS != 0
    }

    /// True when TCP flags (and sequence numbers) were read.
    pub fn has_tcp_flags(&self) -> bool {
        self.l4 & l4::TCP_FLAGS != 0
    }

    /// True when an ICMP type and code were read.
    pub fn has_icmp(&self) -> bool {
        self.l4 & l4::ICMP != 0
    }
}
