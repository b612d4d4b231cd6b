//! Direction-independent flow keys.

use crate::decode::{Addr, PacketMeta, ip_proto};

/// A connection's identity, the same for both directions.
///
/// The endpoint that sorts lower is `a`; [`Side`] says which end sent a
/// given packet. ICMP and other port-less protocols key on addresses alone,
/// so one host pair is one "flow" per protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// The lower endpoint's address.
    pub a: Addr,
    /// The higher endpoint's address.
    pub b: Addr,
    /// The lower endpoint's port.
    pub port_a: u16,
    /// The higher endpoint's port.
    pub port_b: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl std::hash::Hash for FlowKey {
    /// Three words (two addresses, ports and protocol packed): the flow
    /// table and the shard choice hash every packet's key.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.a.0));
        state.write_u128(u128::from_ne_bytes(self.b.0));
        state.write_u64(u64::from(self.port_a) << 24 | u64::from(self.port_b) << 8 | u64::from(self.proto));
    }
}

/// Which end of a [`FlowKey`] sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The packet came from `a`.
    A,
    /// The packet came from `b`.
    B,
}

impl Side {
    /// Index 0 for `A`, 1 for `B` (for per-direction counters).
    pub fn idx(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

impl Side {
    /// The opposite side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

impl FlowKey {
    /// The canonical key of `m`'s flow and which side sent `m`.
    pub fn of(m: &PacketMeta) -> (FlowKey, Side) {
        // Fragments key on addresses alone, so a datagram's first fragment
        // (which has ports) and the rest (which do not) meet in one shard.
        let whole = m.frag & crate::decode::frag::IS_FRAGMENT == 0;
        let (sp, dp) = if m.has_ports() && whole { (m.sport, m.dport) } else { (0, 0) };
        let proto = if m.is_ip() { m.proto } else { 0 };
        if (m.src, sp) <= (m.dst, dp) {
            (FlowKey { a: m.src, b: m.dst, port_a: sp, port_b: dp, proto }, Side::A)
        } else {
            (FlowKey { a: m.dst, b: m.src, port_a: dp, port_b: sp, proto }, Side::B)
        }
    }

    /// The (source address, source port) of the given side.
    pub fn endpoint(&self, side: Side) -> (Addr, u16) {
        match side {
            Side::A => (self.a, self.port_a),
            Side::B => (self.b, self.port_b),
        }
    }

    /// True for ICMP/ICMPv6 flows.
    pub fn is_icmp(&self) -> bool {
        self.proto == ip_proto::ICMP || self.proto == ip_proto::ICMPV6
    }
}

/// The flow tables' hash of a key, seeded at random once per process (a
/// crafted set of colliding keys cannot be prepared offline). The capture
/// thread computes it for each packet ([`PacketMeta::flow_hash`]), so the
/// shard, the pipeline's busiest thread, only looks it up.
pub fn flow_hash(k: &FlowKey) -> u64 {
    use std::hash::BuildHasher;
    static HASHER: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(foldhash::fast::RandomState::default);
    HASHER.hash_one(k)
}

/// A fixed-seed hash of a flow key: picks the shard, the same in every run.
pub fn shard_hash(k: &FlowKey) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6e65_7476_6967_696c).hash_one(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_a_key() {
        let mut m = PacketMeta {
            l3: crate::decode::L3::Ipv4,
            proto: ip_proto::TCP,
            l4: crate::decode::l4::PORTS,
            src: Addr::v4([10, 0, 0, 2]),
            dst: Addr::v4([10, 0, 0, 1]),
            sport: 40000,
            dport: 80,
            ..PacketMeta::default()
        };
        let (k1, s1) = FlowKey::of(&m);
        std::mem::swap(&mut m.src, &mut m.dst);
        std::mem::swap(&mut m.sport, &mut m.dport);
        let (k2, s2) = FlowKey::of(&m);
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
        assert_eq!(shard_hash(&k1), shard_hash(&k2));
        assert_eq!(k1.endpoint(s1), (Addr::v4([10, 0, 0, 2]), 40000));
    }
}
