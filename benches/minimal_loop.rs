//! The least work any flow sensor must do, as a baseline for the replay
//! benchmark: read with libpcap, parse with etherparse, update a hash table
//! keyed by 5-tuple. `cargo run --release --example minimal_loop -- FILE [buffered]`
//!
//! Plain, it opens the file as libpcap does by default (4 KiB reads);
//! `buffered` opens it the way netvigil does (256 KiB reads), so the
//! benchmark can show both baselines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Instant;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Canonical (lower address, higher address, ports, protocol).
type FiveTuple = ([u8; 16], [u8; 16], u16, u16, u8);

fn main() {
    let path = std::env::args().nth(1).expect("usage: minimal_loop FILE [buffered]");
    let buffered = std::env::args().nth(2).as_deref() == Some("buffered");
    let t0 = Instant::now();
    let (mut plain, mut file);
    let cap = if buffered {
        file = netvigil::capture::replay::open(std::path::Path::new(&path)).unwrap();
        file.cap()
    } else {
        plain = pcap::Capture::from_file(&path).unwrap();
        &mut plain
    };
    let mut flows: HashMap<FiveTuple, (u64, u64)> = HashMap::new();
    let mut n: u64 = 0;
    while let Ok(p) = cap.next_packet() {
        n += 1;
        let Ok(s) = SlicedPacket::from_ethernet(p.data) else { continue };
        let (mut a, mut b, proto) = match &s.net {
            Some(NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                let mut a = [0u8; 16];
                let mut b = [0u8; 16];
                a[..4].copy_from_slice(&h.source());
                b[..4].copy_from_slice(&h.destination());
                (a, b, h.protocol().0)
            }
            Some(NetSlice::Ipv6(v6)) => {
                (v6.header().source(), v6.header().destination(), v6.payload().ip_number.0)
            }
            _ => continue,
        };
        let (mut pa, mut pb) = match &s.transport {
            Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
            Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
            _ => (0, 0),
        };
        if (a, pa) > (b, pb) {
            std::mem::swap(&mut a, &mut b);
            std::mem::swap(&mut pa, &mut pb);
        }
        let e = flows.entry((a, b, pa, pb, proto)).or_default();
        e.0 += 1;
        e.1 += u64::from(p.header.len);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("{n} packets, {} flows, {secs:.3} s, {:.0} packets/s", flows.len(), n as f64 / secs);
}
