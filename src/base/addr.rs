//! Addresses: one 16-byte type for IPv4 and IPv6, and network prefixes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address in 16 bytes (IPv4 as `::ffff:a.b.c.d`).
///
/// One fixed-size type keeps `PacketMeta` and flow keys `Copy`, hashable and
/// free of enum padding; `Display` prints IPv4 in dotted form.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Addr(pub [u8; 16]);

/// Byte order (what a derived `Ord` on the array gives), compared as one
/// big-endian 128-bit word instead of a `memcmp` call: the host stage sorts
/// hundreds of thousands of address keys per interval.
impl Ord for Addr {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        u128::from_be_bytes(self.0).cmp(&u128::from_be_bytes(other.0))
    }
}

impl PartialOrd for Addr {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for Addr {
    /// One 128-bit word: a single mixing round instead of sixteen bytes.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.0));
    }
}

impl Addr {
    /// The all-zero address (`::`), also "no address".
    pub const UNSPECIFIED: Addr = Addr([0; 16]);

    /// An IPv4 address from its four bytes.
    pub fn v4(b: [u8; 4]) -> Addr {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12..].copy_from_slice(&b);
        Addr(a)
    }

    /// An IPv6 address from its sixteen bytes.
    pub fn v6(b: [u8; 16]) -> Addr {
        Addr(b)
    }

    /// True for an IPv4 address stored in mapped form.
    pub fn is_v4(&self) -> bool {
        self.0[..10] == [0; 10] && self.0[10] == 0xff && self.0[11] == 0xff
    }

    /// The standard library's view of this address.
    pub fn ip(&self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::new(self.0[12], self.0[13], self.0[14], self.0[15]))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }

    /// The bytes as they appear on the wire (4 for IPv4, 16 for IPv6).
    pub fn wire_bytes(&self) -> &[u8] {
        if self.is_v4() { &self.0[12..] } else { &self.0 }
    }
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr::v4(v4.octets()),
            IpAddr::V6(v6) => Addr::v6(v6.octets()),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip().fmt(f)
    }
}

/// A parsed network prefix, in the 128-bit space where IPv4 is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: u128,
    mask: u128,
}

impl Cidr {
    /// Parses `addr` or `addr/len`; `None` if malformed.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let ip: std::net::IpAddr = a.trim().parse().ok()?;
        let (bits, offset) = if ip.is_ipv4() { (32u8, 96u8) } else { (128, 0) };
        let len = len.unwrap_or(bits);
        if len > bits {
            return None;
        }
        let total = u32::from(offset + len);
        let mask = if total == 0 { 0 } else { u128::MAX << (128 - total) };
        let net = u128::from_be_bytes(Addr::from(ip).0) & mask;
        Some(Cidr { net, mask })
    }

    /// True when `a` is inside this prefix.
    pub fn contains(&self, a: &Addr) -> bool {
        u128::from_be_bytes(a.0) & self.mask == self.net
    }

    /// The network, as a big-endian 128-bit word (IPv4 mapped).
    pub fn net_bits(&self) -> u128 {
        self.net
    }

    /// The mask, as a big-endian 128-bit word.
    pub fn mask_bits(&self) -> u128 {
        self.mask
    }
}

/// The networks `[networks] local` names: what is inside the site.
///
/// A fixed array, not a `Vec`, so shard settings stay `Copy` and a lookup
/// touches one cache-resident block: a site is a handful of prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalNets {
    nets: [Cidr; LocalNets::MAX],
    len: usize,
}

impl LocalNets {
    /// Most prefixes a site may list (summarise beyond that).
    pub const MAX: usize = 32;

    /// The default inside: RFC 1918, RFC 6598 shared space, link-local
    /// (IPv4 and IPv6) and unique-local IPv6 — the space no public host uses.
    pub const DEFAULT: [&'static str; 7] = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fe80::/10",
        "fc00::/7",
    ];

    /// The prefixes in `list`; `None` if one is malformed or there are too many.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Option<LocalNets> {
        if list.len() > Self::MAX {
            return None;
        }
        let mut nets = [Cidr { net: u128::MAX, mask: u128::MAX }; Self::MAX];
        for (slot, s) in nets.iter_mut().zip(list) {
            *slot = Cidr::parse(s.as_ref())?;
        }
        Some(LocalNets { nets, len: list.len() })
    }

    /// True when `a` is inside the site.
    #[inline]
    pub fn contains(&self, a: &Addr) -> bool {
        let x = u128::from_be_bytes(a.0);
        self.nets[..self.len].iter().any(|c| x & c.mask == c.net)
    }
}

impl Default for LocalNets {
    fn default() -> Self {
        LocalNets::parse(&Self::DEFAULT)
            .unwrap_or(LocalNets { nets: [Cidr { net: 0, mask: 0 }; Self::MAX], len: 0 })
    }
}

/// The network an outside destination belongs to for novelty: its /24
/// (IPv4) or /48 (IPv6), the usual size of one provider's allocation.
pub fn prefix_of(a: &Addr) -> Addr {
    let mut p = *a;
    if a.is_v4() {
        p.0[15] = 0;
    } else {
        p.0[6..].fill(0);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_the_byte_order() {
        let samples = [
            Addr::UNSPECIFIED,
            Addr::v4([10, 0, 0, 1]),
            Addr::v4([10, 0, 1, 0]),
            Addr::v4([192, 0, 2, 1]),
            Addr::v6([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Addr::v6([0xff; 16]),
            Addr::v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        ];
        for a in &samples {
            for b in &samples {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(&Addr::v4([10, 1, 200, 3])));
        assert!(!c.contains(&Addr::v4([10, 2, 0, 1])));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&Addr::v4([8, 8, 8, 8])));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(&Addr::v6([0x20; 16])));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(&Addr::from("2001:db8:1::1".parse::<std::net::IpAddr>().unwrap())));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(&Addr::v4([192, 0, 2, 7])));
    }

    #[test]
    fn local_networks() {
        let l = LocalNets::default();
        for inside in
            ["10.1.2.3", "172.31.0.1", "192.168.1.1", "100.64.0.1", "169.254.3.3", "fe80::1", "fd00::5"]
        {
            assert!(l.contains(&Addr::from(inside.parse::<std::net::IpAddr>().unwrap())), "{inside}");
        }
        for outside in ["8.8.8.8", "172.32.0.1", "203.0.113.5", "2001:db8::1", "100.128.0.1"] {
            assert!(!l.contains(&Addr::from(outside.parse::<std::net::IpAddr>().unwrap())), "{outside}");
        }
        assert!(LocalNets::parse(&["10.0.0.0/8", "bad"]).is_none());
        assert!(LocalNets::parse(&vec!["10.0.0.0/8"; 33]).is_none());
        let none = LocalNets::parse::<&str>(&[]).unwrap();
        assert!(!none.contains(&Addr::v4([10, 0, 0, 1])));
        assert_eq!(prefix_of(&Addr::v4([203, 0, 113, 77])), Addr::v4([203, 0, 113, 0]));
    }
}
