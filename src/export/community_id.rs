//! Community ID v1 flow hashing (corelight/community-id-spec), so events
//! join with Zeek's conn.log and Suricata's EVE on the same flow.

use base64::Engine;

use crate::decode::{Addr, ip_proto};
use crate::detect::anomaly::FlowTuple;

/// The Community ID v1 string (`"1:…"`) of a flow, seed 0.
///
/// For ICMP the tuple's ports hold type and code, mapped as the spec says so
/// that a request and its reply share an id.
pub fn community_id(t: &FlowTuple) -> String {
    community_id_seeded(t, 0)
}

/// The Community ID v1 string with an explicit seed.
pub fn community_id_seeded(t: &FlowTuple, seed: u16) -> String {
    let (mut sa, mut da, mut sp, mut dp) = (t.src, t.dst, t.sport, t.dport);
    let mut one_way = false;
    match t.proto {
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let (s, d, ow) = icmp_ports(t.proto, t.sport as u8, t.dport as u8);
            sp = s;
            dp = d;
            one_way = ow;
        }
        ip_proto::TCP | ip_proto::UDP | 132 => {}
        _ => {
            sp = 0;
            dp = 0;
        }
    }
    let ordered = (sa.wire_bytes(), sp) < (da.wire_bytes(), dp);
    // One-way ICMP messages keep their direction; everything else is
    // ordered so both directions hash alike.
    if !one_way && !ordered {
        std::mem::swap(&mut sa, &mut da);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut h = sha1_smol::Sha1::new();
    h.update(&seed.to_be_bytes());
    h.update(sa.wire_bytes());
    h.update(da.wire_bytes());
    h.update(&[t.proto, 0]);
    if has_ports(t.proto) {
        h.update(&sp.to_be_bytes());
        h.update(&dp.to_be_bytes());
    }
    format!("1:{}", base64::engine::general_purpose::STANDARD.encode(h.digest().bytes()))
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, ip_proto::TCP | ip_proto::UDP | 132 | ip_proto::ICMP | ip_proto::ICMPV6)
}

/// Maps ICMP type/code to the spec's port equivalents and one-way flag.
fn icmp_ports(proto: u8, typ: u8, code: u8) -> (u16, u16, bool) {
    let peer = if proto == ip_proto::ICMP {
        match typ {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            10 => Some(9),
            9 => Some(10),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        }
    } else {
        match typ {
            128 => Some(129),
            129 => Some(128),
            133 => Some(134),
            134 => Some(133),
            135 => Some(136),
            136 => Some(135),
            130 => Some(131),
            131 => Some(130),
            _ => None,
        }
    };
    match peer {
        Some(p) => (u16::from(typ), p, false),
        None => (u16::from(typ), u16::from(code), true),
    }
}

/// Address helper for tests and callers holding `std` addresses.
pub fn tuple(src: std::net::IpAddr, dst: std::net::IpAddr, sport: u16, dport: u16, proto: u8) -> FlowTuple {
    FlowTuple { src: Addr::from(src), dst: Addr::from(dst), sport, dport, proto }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from the spec's reference implementation test suite.
    #[test]
    fn spec_vectors() {
        let t = tuple("128.232.110.120".parse().unwrap(), "66.35.250.204".parse().unwrap(), 34855, 80, 6);
        assert_eq!(community_id(&t), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        // Direction does not matter.
        let r = tuple("66.35.250.204".parse().unwrap(), "128.232.110.120".parse().unwrap(), 80, 34855, 6);
        assert_eq!(community_id(&r), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        let seeded = community_id_seeded(&t, 1);
        assert_eq!(seeded, "1:3V71V58M3Ksw/yuFALMcW0LAHvc=");
        let udp = tuple("192.168.1.52".parse().unwrap(), "8.8.8.8".parse().unwrap(), 54585, 53, 17);
        assert_eq!(community_id(&udp), "1:d/FP5EW3wiY1vCndhwleRRKHowQ=");
        let icmp = tuple("192.168.0.89".parse().unwrap(), "192.168.0.1".parse().unwrap(), 8, 0, 1);
        assert_eq!(community_id(&icmp), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
    }
}
