//! Writes a large synthetic capture for the end-to-end benchmark, the same
//! bytes every time for the same arguments (a fixed-seed xorshift).
//!
//! `cargo run --release --example gencap -- OUT.pcap [PACKETS] [PPS] [mix|synflood]`
//!
//! `synflood` writes bare SYNs from random (spoofed) sources and ports to one
//! target, the worst case for every table in the sensor.
//!
//! The mix follows what a flow sensor sees on a busy link (the reference
//! capture of the performance issue: 5.4 M small packets, 1.3 M flows):
//! short TCP conversations (handshake, a request, a response, close; some
//! only a SYN or SYN/SYN-ACK), DNS-like UDP exchanges, ICMP echoes, and an
//! MTU-sized burst in one flow of two hundred — between 65,536 clients and
//! 4,096 servers, in packet time at `PPS`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use etherparse::PacketBuilder;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn write(sf: &mut pcap::Savefile, frame: &[u8], ts: u64) {
    let header = pcap::PacketHeader {
        ts: libc::timeval {
            tv_sec: (ts / 1_000_000_000) as libc::time_t,
            tv_usec: (ts % 1_000_000_000) as libc::suseconds_t,
        },
        caplen: frame.len() as u32,
        len: frame.len() as u32,
    };
    sf.write(&pcap::Packet::new(&header, frame));
}

/// A DNS query (or its response header) for one of a few thousand names.
fn dns_message(rng: &mut Rng, response: bool) -> Vec<u8> {
    let id = rng.next() as u16;
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(if response {
        &[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]
    } else {
        &[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
    });
    let host = format!("host{}", rng.below(5000));
    for label in [host.as_str(), "example", "com"] {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).map(String::as_str).unwrap_or("bench.pcap");
    let total: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5_400_000);
    let pps: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let dead = pcap::Capture::dead_with_precision(pcap::Linktype::ETHERNET, pcap::Precision::Nano).unwrap();
    let mut sf = dead.savefile(out).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written: u64 = 0;
    let mut buf = Vec::with_capacity(2048);
    let start_ns: u64 = 1_700_000_000 * 1_000_000_000;
    let payload = vec![0x5au8; 1400];
    if args.get(4).map(String::as_str) == Some("synflood") {
        while written < total {
            let src = (rng.next() as u32).to_be_bytes();
            buf.clear();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4(src, [192, 0, 2, 80], 64)
                .tcp(1024 + rng.below(60_000) as u16, 80, rng.next() as u32, 64_240)
                .syn()
                .write(&mut buf, &[])
                .unwrap();
            write(&mut sf, &buf, start_ns + written * 1_000_000_000 / pps);
            written += 1;
        }
        sf.flush().unwrap();
        eprintln!("wrote {written} packets to {out}");
        return;
    }
    while written < total {
        let client = rng.below(65_536) as u32;
        let server = rng.below(4_096) as u32;
        let c = [10, 1 + (client >> 16) as u8, (client >> 8) as u8, client as u8];
        let s = [172, 16, (server >> 8) as u8, server as u8];
        let sport = 1024 + rng.below(60_000) as u16;
        let kind = rng.below(1000) / 10;
        // (from client?, builder closure index, payload length)
        let mut pkts: Vec<(bool, u8, usize)> = Vec::new();
        if kind < 60 {
            // Short TCP exchange; most flows are a lone SYN or SYN/SYN-ACK
            // pair (scans, retries, the long tail), which keeps the mean near
            // 4 packets per flow like the reference capture.
            let steps = match rng.below(10) {
                0 => 1,
                1..=2 => 2,
                _ => 6,
            };
            let script = [
                (true, 0u8, 0usize),
                (false, 1, 0),
                (true, 2, 0),
                (true, 3, 120),
                (false, 3, 400),
                (true, 4, 0),
            ];
            pkts.extend(script.iter().take(steps));
        } else if kind < 90 {
            pkts.push((true, 5, 40));
            if rng.below(2) == 0 {
                pkts.push((false, 5, 120));
            }
        } else if kind < 99 || rng.below(2) == 0 {
            pkts.push((true, 6, 56));
        } else {
            for _ in 0..10 {
                pkts.push((false, 3, 1400));
            }
        }
        for (from_client, what, len) in pkts {
            if written >= total {
                break;
            }
            let service = if what == 5 { 53 } else { 443 };
            let (src, dst, sp, dp) =
                if from_client { (c, s, sport, service) } else { (s, c, service, sport) };
            let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
            buf.clear();
            let seq = rng.next() as u32;
            let dns = dns_message(&mut rng, !from_client);
            let body = if what == 5 { &dns[..] } else { &payload[..len] };
            let r = match what {
                0 => eth.tcp(sp, dp, seq, 64_240).syn().write(&mut buf, body),
                1 => eth.tcp(sp, dp, seq, 64_240).syn().ack(1).write(&mut buf, body),
                2 => eth.tcp(sp, dp, seq, 64_240).ack(1).write(&mut buf, body),
                3 => eth.tcp(sp, dp, seq, 64_240).ack(1).psh().write(&mut buf, body),
                4 => eth.tcp(sp, dp, seq, 64_240).fin().ack(1).write(&mut buf, body),
                5 => eth.udp(sp, dp).write(&mut buf, body),
                _ => eth.icmpv4_echo_request(1, seq as u16).write(&mut buf, body),
            };
            r.unwrap();
            write(&mut sf, &buf, start_ns + written * 1_000_000_000 / pps);
            written += 1;
        }
    }
    sf.flush().unwrap();
    eprintln!("wrote {written} packets to {out}");
}
