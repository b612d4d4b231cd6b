//! Link-type dispatch: from a libpcap DLT to where the network layer starts.
//!
//! etherparse handles Ethernet (with VLAN/QinQ) itself; the cooked, raw, null
//! and PPP encapsulations are a few fixed bytes each and are parsed here.

/// The link types netvigil decodes, by libpcap DLT/LINKTYPE number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// DLT_EN10MB (1).
    Ethernet,
    /// DLT_LINUX_SLL (113): `tcpdump -i any` before libpcap 1.10.
    LinuxSll,
    /// DLT_LINUX_SLL2 (276): `tcpdump -i any` with libpcap 1.10+.
    LinuxSll2,
    /// Raw IP with the version nibble deciding v4/v6 (DLT 12, 14, 101).
    RawIp,
    /// DLT_IPV4 (228).
    Ipv4,
    /// DLT_IPV6 (229).
    Ipv6,
    /// DLT_NULL (0): BSD loopback, 4-byte address family in host byte order.
    Null,
    /// DLT_LOOP (108): OpenBSD loopback, address family in network byte order.
    Loop,
    /// DLT_PPP (9) and DLT_PPP_SERIAL (50): PPP protocol field, optional HDLC framing.
    Ppp,
    /// Anything else, by number: counted and reported once, never decoded.
    Unsupported(i32),
}

impl LinkType {
    /// Maps a libpcap data-link type number to the decoder for it.
    pub fn from_dlt(dlt: i32) -> LinkType {
        match dlt {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            12 | 14 | 101 => LinkType::RawIp,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            9 | 50 => LinkType::Ppp,
            other => LinkType::Unsupported(other),
        }
    }

    /// The DLT number to write frames of this link type under.
    pub fn dlt(self) -> i32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::RawIp => 101,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::Null => 0,
            LinkType::Loop => 108,
            LinkType::Ppp => 9,
            LinkType::Unsupported(n) => n,
        }
    }

    /// True when frames of this link type can be decoded.
    pub fn is_supported(self) -> bool {
        !matches!(self, LinkType::Unsupported(_))
    }
}

/// What sits after a non-Ethernet link header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    /// An EtherType-tagged payload (cooked captures).
    EtherType(u16),
    /// An IP packet whose version nibble decides.
    Ip,
    /// A protocol this decoder does not follow (e.g. PPP LCP, SLL netlink).
    Other,
}

/// A parsed non-Ethernet link header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkHeader {
    /// What follows the header.
    pub inner: Inner,
    /// Header length in bytes.
    pub len: usize,
    /// Source MAC when the header carries a 6-byte link address.
    pub src_mac: Option<[u8; 6]>,
}

/// ARPHRD types whose SLL "protocol" field is not an EtherType.
const ARPHRD_NETLINK: u16 = 824;

/// Parses a Linux cooked v1/v2, null, loop or PPP header; `None` if truncated.
///
/// Ethernet and raw IP never come here: they have no header of their own to
/// strip (Ethernet is sliced by etherparse).
pub fn parse_header(link: LinkType, data: &[u8]) -> Option<LinkHeader> {
    match link {
        LinkType::LinuxSll => {
            // pkttype(2) arphrd(2) addrlen(2) addr(8) protocol(2)
            let h = data.get(..16)?;
            let arphrd = u16::from_be_bytes([h[2], h[3]]);
            let addr_len = u16::from_be_bytes([h[4], h[5]]);
            let proto = u16::from_be_bytes([h[14], h[15]]);
            Some(LinkHeader {
                inner: sll_inner(arphrd, proto),
                len: 16,
                src_mac: mac_if(addr_len == 6, &h[6..12]),
            })
        }
        LinkType::LinuxSll2 => {
            // protocol(2) reserved(2) ifindex(4) arphrd(2) pkttype(1) addrlen(1) addr(8)
            let h = data.get(..20)?;
            let proto = u16::from_be_bytes([h[0], h[1]]);
            let arphrd = u16::from_be_bytes([h[8], h[9]]);
            Some(LinkHeader {
                inner: sll_inner(arphrd, proto),
                len: 20,
                src_mac: mac_if(h[11] == 6, &h[12..18]),
            })
        }
        LinkType::Null | LinkType::Loop => {
            let h = data.get(..4)?;
            let raw = [h[0], h[1], h[2], h[3]];
            let af = if link == LinkType::Loop {
                u32::from_be_bytes(raw)
            } else {
                // Host byte order of the *capturing* machine: accept either.
                let le = u32::from_le_bytes(raw);
                if le <= 0xffff { le } else { u32::from_be_bytes(raw) }
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10, 24, 28 or 30 by OS.
            let inner = if matches!(af, 2 | 10 | 24 | 28 | 30) { Inner::Ip } else { Inner::Other };
            Some(LinkHeader { inner, len: 4, src_mac: None })
        }
        LinkType::Ppp => {
            // Optional HDLC address/control (0xff 0x03), then a 1- or 2-byte protocol.
            let mut off = 0;
            if data.get(..2)? == [0xff, 0x03] {
                off = 2;
            }
            let first = *data.get(off)?;
            let (proto, plen) = if first & 1 == 1 {
                (u16::from(first), 1) // compressed protocol field (RFC 1661 §6.5)
            } else {
                (u16::from_be_bytes([first, *data.get(off + 1)?]), 2)
            };
            let inner = match proto {
                0x0021 | 0x0057 => Inner::Ip,
                _ => Inner::Other,
            };
            Some(LinkHeader { inner, len: off + plen, src_mac: None })
        }
        LinkType::Ethernet | LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 | LinkType::Unsupported(_) => {
            None
        }
    }
}

fn sll_inner(arphrd: u16, proto: u16) -> Inner {
    // Below 0x0600 the SLL protocol field is a Linux packet type (802.3, 802.2,
    // CAN...), not an EtherType; netlink captures put a netlink family there.
    if arphrd == ARPHRD_NETLINK || proto < 0x0600 { Inner::Other } else { Inner::EtherType(proto) }
}

fn mac_if(cond: bool, b: &[u8]) -> Option<[u8; 6]> {
    if !cond {
        return None;
    }
    let mut m = [0u8; 6];
    m.copy_from_slice(b.get(..6)?);
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlt_table() {
        assert_eq!(LinkType::from_dlt(1), LinkType::Ethernet);
        assert_eq!(LinkType::from_dlt(276), LinkType::LinuxSll2);
        assert_eq!(LinkType::from_dlt(101), LinkType::RawIp);
        assert_eq!(LinkType::from_dlt(160), LinkType::Unsupported(160));
        assert!(!LinkType::from_dlt(127).is_supported());
    }

    #[test]
    fn sll2_header() {
        let mut h = [0u8; 20];
        h[0..2].copy_from_slice(&0x0800u16.to_be_bytes());
        h[8..10].copy_from_slice(&1u16.to_be_bytes());
        h[11] = 6;
        h[12..18].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let p = parse_header(LinkType::LinuxSll2, &h).unwrap();
        assert_eq!(p.inner, Inner::EtherType(0x0800));
        assert_eq!(p.len, 20);
        assert_eq!(p.src_mac, Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(parse_header(LinkType::LinuxSll2, &h[..19]), None);
    }

    #[test]
    fn null_either_byte_order_and_ppp() {
        let le = parse_header(LinkType::Null, &[2, 0, 0, 0]).unwrap();
        let be = parse_header(LinkType::Null, &[0, 0, 0, 2]).unwrap();
        assert_eq!((le.inner, be.inner), (Inner::Ip, Inner::Ip));
        assert_eq!(parse_header(LinkType::Null, &[9, 0, 0, 0]).unwrap().inner, Inner::Other);
        let ppp = parse_header(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x21]).unwrap();
        assert_eq!((ppp.inner, ppp.len), (Inner::Ip, 4));
        let lcp = parse_header(LinkType::Ppp, &[0xc0, 0x21]).unwrap();
        assert_eq!(lcp.inner, Inner::Other);
        assert_eq!(parse_header(LinkType::Ppp, &[0xff]), None);
    }
}
