//! Evidence check: every bundled capture is replayed and the numbers its
//! events state are recomputed from the packets with an independent reader
//! (libpcap + etherparse here, not netvigil's decoder): exact where the
//! event says exact, within the stated error where it says estimate, at
//! least the value where it says lower bound.
//!
//! Checked so far: packet times of rule evidence (`first_seen`, `last_seen`,
//! `first_probe`, `last_probe` are times of real packets, in order); port
//! and host scans' distinct counts; flood and spike `top_sources`
//! (guaranteed lower bounds), `distinct_sources`, `first_seen`/`last_seen`
//! (real packets toward the target, not before the `onset`),
//! `active_seconds`, and `intervals_over` never above `intervals_observed`;
//! ICMP and DNS tunnel and ARP spoofing episode totals; the packet counts of `tcp_invalid_flags`,
//! `land` and `port_zero` episodes; exfiltration bytes and destination
//! times, lateral-movement session times, beacon check-in counts and times.
//! Each new detector family adds its fields here.

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use etherparse::{LaxNetSlice, LaxSlicedPacket};
use serde_json::Value;

/// One packet as the test reads it.
#[derive(Clone, Debug)]
struct Pkt {
    /// Nanoseconds since the epoch.
    ns: u64,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    /// (sport, dport, TCP flags; 0xffff for UDP, 0xfffe for a TCP header cut
    /// before its flags) when TCP/UDP.
    ports: Option<(u16, u16, u16)>,
    /// ICMP echo request (v4 type 8, v6 type 128).
    echo: bool,
    /// The question name of a DNS query to UDP port 53, lower-cased.
    query: Option<String>,
    /// A DNS response from UDP port 53: (query ID, first record's data if it is an A record).
    answer: Option<(u16, Option<std::net::Ipv4Addr>)>,
    /// A Kerberos AS-REQ to port 88 (DER tag 0x6a first in the UDP payload,
    /// or after TCP's 4-byte record mark).
    as_req: bool,
    /// The Ethernet source MAC.
    mac: Option<[u8; 6]>,
    /// An Ethernet ARP packet: (operation, sender MAC, sender IP, target IP).
    arp: Option<(u16, [u8; 6], IpAddr, IpAddr)>,
    /// TCP or UDP payload bytes from the IPv4 header lengths (the capture may
    /// hold headers only).
    payload: u64,
}

fn read(path: &Path) -> Vec<Pkt> {
    let mut c = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).unwrap();
    let dlt = c.get_datalink().0;
    let mut out = Vec::new();
    // Packet time as the sensor defines it: a step back of more than a
    // second (a clock step, two captures concatenated) shifts the rest of
    // the input forward, so the times events state are these.
    let (mut skew, mut watermark) = (0u64, 0u64);
    while let Ok(p) = c.next_packet() {
        let ts = (p.header.ts.tv_sec as u64) * 1_000_000_000 + p.header.ts.tv_usec as u64 + skew;
        let ns = if ts < watermark {
            if watermark - ts > 1_000_000_000 {
                skew += watermark - ts;
            }
            watermark
        } else {
            watermark = ts;
            ts
        };
        // Lax slicing reads what a truncated or malformed packet still has;
        // the transport header is read here, by hand, from the first
        // fragment too (the sensor judges first fragments' headers).
        let sliced = match dlt {
            1 => LaxSlicedPacket::from_ethernet(p.data).ok(),
            101 | 12 | 14 | 228 | 229 => LaxSlicedPacket::from_ip(p.data).ok(),
            // Linux cooked v1: 16 bytes, protocol in the last two.
            113 if p.data.len() > 16 => {
                let proto = u16::from_be_bytes([p.data[14], p.data[15]]);
                Some(LaxSlicedPacket::from_ether_type(etherparse::EtherType(proto), &p.data[16..]))
            }
            _ => None,
        };
        let mut k = Pkt {
            ns,
            src: None,
            dst: None,
            ports: None,
            echo: false,
            query: None,
            answer: None,
            mac: None,
            as_req: false,
            arp: None,
            payload: 0,
        };
        if dlt == 1 {
            k.mac = p.data.get(6..12).map(|m| [m[0], m[1], m[2], m[3], m[4], m[5]]);
            k.arp = ethernet_arp(p.data);
        }
        let ip = sliced.as_ref().and_then(|s| s.net.as_ref());
        let (proto, payload, first_fragment) = match ip {
            Some(LaxNetSlice::Ipv4(v4)) => {
                let h = v4.header();
                k.src = Some(IpAddr::V4(h.source_addr()));
                k.dst = Some(IpAddr::V4(h.destination_addr()));
                let l4 = u64::from(h.total_len()).saturating_sub(u64::from(h.ihl()) * 4);
                let pl = v4.payload().payload;
                k.payload = match h.protocol().0 {
                    6 if pl.len() >= 13 => l4.saturating_sub(u64::from(pl[12] >> 4) * 4),
                    17 => l4.saturating_sub(8),
                    _ => 0,
                };
                (h.protocol().0, v4.payload().payload, h.fragments_offset().value() == 0)
            }
            Some(LaxNetSlice::Ipv6(v6)) => {
                let h = v6.header();
                k.src = Some(IpAddr::V6(h.source_addr()));
                k.dst = Some(IpAddr::V6(h.destination_addr()));
                let pl = v6.payload();
                (pl.ip_number.0, pl.payload, !pl.fragmented)
            }
            _ => (0, &[][..], false),
        };
        let port = |i: usize| u16::from_be_bytes([payload[i], payload[i + 1]]);
        match proto {
            6 if first_fragment && payload.len() >= 14 => {
                k.ports = Some((port(0), port(2), u16::from(payload[13])));
                let hl = usize::from(payload[12] >> 4) * 4;
                k.as_req = port(2) == 88 && payload.get(hl + 4) == Some(&0x6a);
            }
            17 if first_fragment && payload.len() >= 4 => {
                k.ports = Some((port(0), port(2), 0xffff));
                if port(2) == 53 {
                    k.query = payload.get(8..).and_then(dns_query_name);
                }
                k.as_req = port(2) == 88 && payload.get(8) == Some(&0x6a);
                if port(0) == 53 {
                    k.answer = payload.get(8..).and_then(dns_first_answer);
                }
            }
            1 => k.echo = payload.first() == Some(&8),
            58 => k.echo = payload.first() == Some(&128),
            _ => {}
        }
        out.push(k);
    }
    out
}

/// Query ID and first answer record (as an IPv4 address when it is an A
/// record) of a DNS response; the sensor's own parser is not used.
fn dns_first_answer(m: &[u8]) -> Option<(u16, Option<std::net::Ipv4Addr>)> {
    if m.len() < 12 || m[2] & 0x80 == 0 {
        return None;
    }
    let id = u16::from_be_bytes([m[0], m[1]]);
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let l = *m.get(i)?;
            if l >= 0xc0 {
                return Some(i + 2);
            }
            i += 1 + l as usize;
            if l == 0 {
                return Some(i);
            }
        }
    };
    let i = skip_name(12)? + 4;
    if u16::from_be_bytes([m[6], m[7]]) == 0 {
        return Some((id, None));
    }
    let i = skip_name(i)?;
    let rr = m.get(i..i + 14)?;
    let a = (rr[0..2] == [0, 1] && rr[8..10] == [0, 4])
        .then(|| std::net::Ipv4Addr::new(rr[10], rr[11], rr[12], rr[13]));
    Some((id, a))
}

fn events(cap: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .env_remove("NETVIGIL_LOG")
        .args(["replay", "-q", "--workers", "1"])
        .arg(cap)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Parses the RFC 3339 times events print (microsecond precision).
fn ns_of(s: &str) -> u64 {
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    let frac_ns: u64 = format!("{frac:0<9}")[..9].parse().unwrap();
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000_000) + frac_ns
}

fn ip(v: &Value) -> Option<IpAddr> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// The count `ev[key]` states, checked against the `truth` recomputed from packets.
fn check_count(ctx: &str, ev: &Value, key: &str, truth: u64) -> Option<String> {
    let stated = ev[key].as_u64()?;
    let est = &ev["estimated"][key];
    let ok = if est.is_null() {
        stated == truth
    } else if est["lower_bound"] == true {
        truth >= stated
    } else {
        let err = est["relative_error"].as_f64().unwrap_or(0.0);
        // A 95 % bound: allow one rounding step besides.
        (stated as f64 - truth as f64).abs() <= err * truth as f64 + 1.0
    };
    (!ok).then(|| format!("{ctx}: {key} says {stated} ({est}), the packets say {truth}"))
}

fn captures() -> Vec<PathBuf> {
    // Every capture but the link-type samples, which raise no events.
    ["behaviour", "benign", "floods", "lab", "malformed", "misuse", "scans"]
        .iter()
        .flat_map(|d| common::files_under(&common::cap(d), &["pcap", "pcapng"]))
        .collect()
}

/// The packet times an episode's evidence spans (`first_seen`..`last_seen`).
fn episode_span(ev: &Value) -> (u64, u64) {
    (ns_of(ev["first_seen"].as_str().unwrap()), ns_of(ev["last_seen"].as_str().unwrap()))
}

#[test]
fn every_number_agrees_with_the_packets() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for cap in captures() {
        let evs = events(&cap);
        if evs.is_empty() {
            continue;
        }
        let pkts = read(&cap);
        let times: HashSet<u64> = pkts.iter().map(|p| p.ns / 1000 * 1000).collect();
        let name = cap.file_name().unwrap().to_string_lossy().into_owned();
        for e in &evs {
            let ctx = format!("{name} {} {}", e["kind"].as_str().unwrap(), e["phase"].as_str().unwrap());
            let ev = &e["evidence"];
            let (src, dst) = (ip(&e["src_ip"]), ip(&e["dst_ip"]));
            // Rule evidence carries packet times: they must be real packets, in order.
            let category = e["category"].as_str().unwrap();
            if category == "scan" || category == "misuse" {
                for key in ["first_seen", "last_seen", "first_probe", "last_probe"] {
                    if let Some(t) = ev[key].as_str() {
                        checked += 1;
                        if !times.contains(&ns_of(t)) {
                            failures.push(format!("{ctx}: {key} {t} is no packet's time"));
                        }
                    }
                }
                if let (Some(a), Some(b)) = (ev["first_seen"].as_str(), ev["last_seen"].as_str()) {
                    if ns_of(a) > ns_of(b) {
                        failures.push(format!("{ctx}: first_seen {a} after last_seen {b}"));
                    }
                }
            }
            let span =
                || (ns_of(ev["first_probe"].as_str().unwrap()), ns_of(ev["last_probe"].as_str().unwrap()));
            match e["kind"].as_str().unwrap() {
                "port_scan" => {
                    let (a, b) = span();
                    // Probes open flows without ACK (SYN, NULL/FIN/Xmas) or are UDP.
                    let mut ports: BTreeSet<u16> = pkts
                        .iter()
                        .filter(|p| p.src == src && p.dst == dst && (a..=b + 999).contains(&p.ns))
                        .filter_map(|p| p.ports)
                        .filter(|&(_, _, f)| f == 0xffff || f & 0x14 == 0)
                        .map(|(_, d, _)| d)
                        .collect();
                    // ACK and FIN+ACK probes count once the target resets them
                    // (their time is the reset's).
                    let acked: BTreeSet<u16> = pkts
                        .iter()
                        .filter(|p| p.src == src && p.dst == dst)
                        .filter_map(|p| p.ports)
                        .filter(|&(_, _, f)| f != 0xffff && (f & 0x3f == 0x10 || f & 0x3f == 0x11))
                        .map(|(_, d, _)| d)
                        .collect();
                    ports.extend(
                        pkts.iter()
                            .filter(|p| p.src == dst && p.dst == src && (a..=b + 999).contains(&p.ns))
                            .filter_map(|p| p.ports)
                            .filter(|&(s, _, f)| f != 0xffff && f & 0x04 != 0 && acked.contains(&s))
                            .map(|(s, _, _)| s),
                    );
                    checked += 1;
                    failures.extend(check_count(&ctx, ev, "distinct_ports", ports.len() as u64));
                    let probes = ev["probes"].as_u64().unwrap();
                    if ev["distinct_ports"].as_u64().unwrap() > probes {
                        failures.push(format!("{ctx}: more distinct ports than probes"));
                    }
                }
                "icmp_tunnel" => {
                    // The episode's totals cover its whole first..last span.
                    let (a, b) = episode_span(ev);
                    let echoes = pkts
                        .iter()
                        .filter(|p| p.src == src && p.dst == dst && p.echo && (a..=b + 999).contains(&p.ns))
                        .count() as u64;
                    checked += 1;
                    let total = ev["episode_totals"]["echo_requests"].as_u64().unwrap();
                    if total != echoes {
                        failures.push(format!(
                            "{ctx}: episode_totals.echo_requests {total}, the packets say {echoes}"
                        ));
                    }
                }
                // Per-packet rules: the episode's packet count over its span.
                kind @ ("tcp_invalid_flags" | "land" | "port_zero") if src.is_some() => {
                    let (a, b) = episode_span(ev);
                    let hit = |p: &Pkt| match (kind, p.ports) {
                        ("tcp_invalid_flags", Some((_, _, f))) if f < 0x100 => invalid_flags(f),
                        ("land", Some((s, d, _))) => p.src == p.dst && s == d,
                        ("port_zero", Some((s, d, f))) => {
                            d == 0 || (s == 0 && (f == 0xffff || f & 0x04 == 0))
                        }
                        _ => false,
                    };
                    let n = pkts
                        .iter()
                        .filter(|p| p.src == src && p.dst == dst && (a..=b + 999).contains(&p.ns) && hit(p))
                        .count() as u64;
                    // A header cut before its ports (a fuzzing capture) is beyond
                    // this reader: skip what it cannot see rather than guess.
                    let readable = pkts.iter().any(|p| {
                        p.src == src && p.dst == dst && (a..=b + 999).contains(&p.ns) && p.ports.is_some()
                    });
                    if !readable {
                        continue;
                    }
                    checked += 1;
                    let said = ev["packets"].as_u64().unwrap();
                    if said != n {
                        failures.push(format!("{ctx}: packets {said}, the packets say {n}"));
                    }
                }
                "dns_tunnel" if ev.get("share_not_dns").is_some() => {
                    // A raw-mode tunnel: datagrams on UDP 53 between the pair.
                    // Where none of them is DNS, every one counts.
                    let (a, b) = episode_span(ev);
                    if ev["share_not_dns"] == 1.0 {
                        let on53 = |p: &&Pkt| {
                            p.ports.is_some_and(|(s, d, f)| f == 0xffff && (s == 53 || d == 53))
                                && ((p.src == src && p.dst == dst) || (p.src == dst && p.dst == src))
                        };
                        let n = pkts.iter().filter(on53).filter(|p| (a..=b + 999).contains(&p.ns)).count();
                        checked += 1;
                        failures.extend(check_count(&ctx, &ev["episode_totals"], "packets", n as u64));
                    }
                }
                "dns_tunnel" => {
                    // Queries from the client to the server under the domain (or
                    // under any, for names sent straight to the server), over the episode.
                    let (a, b) = episode_span(ev);
                    let domain = ev["domain"].as_str().map(str::to_lowercase);
                    let queries = pkts
                        .iter()
                        .filter(|p| p.src == src && p.dst == dst && (a..=b + 999).contains(&p.ns))
                        .filter(|p| {
                            p.query.as_ref().is_some_and(|q| match &domain {
                                Some(d) => q == d || q.ends_with(&format!(".{d}")),
                                None => true,
                            })
                        })
                        .count() as u64;
                    checked += 1;
                    let total = ev["episode_totals"]["queries"].as_u64().unwrap();
                    if total != queries {
                        failures.push(format!(
                            "{ctx}: episode_totals.queries {total}, the packets say {queries}"
                        ));
                    }
                }
                "arp_spoof" => {
                    // Replies (or announcements) from the claiming MAC binding the
                    // claimed address, told to the victim, over the episode.
                    let (a, b) = episode_span(ev);
                    let mac = ev["claiming_mac"].as_str().unwrap().to_string();
                    let replies = pkts
                        .iter()
                        .filter(|p| (a..=b + 999).contains(&p.ns))
                        .filter_map(|p| p.arp)
                        .filter(|&(op, m, sip, tip)| {
                            let m = m.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":");
                            m == mac
                                && Some(sip) == src
                                && (op == 2 && Some(tip) == dst || op == 1 && sip == tip)
                        })
                        .count() as u64;
                    checked += 1;
                    let total = ev["episode_totals"]["spoofed_replies"].as_u64().unwrap();
                    if total != replies {
                        failures.push(format!(
                            "{ctx}: episode_totals.spoofed_replies {total}, the packets say {replies}"
                        ));
                    }
                }
                "data_exfiltration" => {
                    // The episode's bytes: payload the actor sent its listed
                    // destinations within the episode's packet times.
                    let (a, b) = episode_span(ev);
                    let dests: Vec<Option<IpAddr>> =
                        ev["destinations"].as_array().unwrap().iter().map(|d| ip(&d["address"])).collect();
                    let sent: u64 = pkts
                        .iter()
                        .filter(|p| p.src == src && dests.contains(&p.dst) && (a..=b + 999).contains(&p.ns))
                        .map(|p| p.payload)
                        .sum();
                    checked += 1;
                    failures.extend(check_count(
                        &ctx,
                        &ev["episode_totals"],
                        "bytes_to_episode_destinations",
                        sent,
                    ));
                    for d in ev["destinations"].as_array().unwrap() {
                        let t = ns_of(d["first_packet"].as_str().unwrap());
                        checked += 1;
                        if !pkts
                            .iter()
                            .any(|p| p.ns / 1000 * 1000 == t && p.src == src && p.dst == ip(&d["address"]))
                        {
                            failures
                                .push(format!("{ctx}: first_packet {t} is no packet to {}", d["address"]));
                        }
                    }
                }
                "dns_spoofing" => {
                    // Both answers stated are real packets from the server to
                    // the client's port with the query ID and address stated.
                    let (id, port) = (ev["query_id"].as_u64().unwrap() as u16, ev["client_port"].as_u64());
                    for which in ["first_answer", "second_answer"] {
                        let a = &ev[which];
                        let t = ns_of(a["time"].as_str().unwrap());
                        let addr = a["first_ipv4"].as_str().and_then(|s| s.parse().ok());
                        checked += 1;
                        let real = pkts.iter().any(|p| {
                            p.ns / 1000 * 1000 == t
                                && p.src == src
                                && p.dst == dst
                                && p.ports.map(|q| u64::from(q.1)) == port
                                && p.answer == Some((id, addr))
                        });
                        if !real {
                            failures.push(format!("{ctx}: {which} at {t} is no such answer"));
                        }
                    }
                    // Conflicts over the episode: an answer whose (port, ID) was
                    // answered differently less than 2 s before.
                    let (a, b) = episode_span(ev);
                    let mut seen: std::collections::HashMap<(u16, u16), (u64, Option<std::net::Ipv4Addr>)> =
                        Default::default();
                    let mut n = 0;
                    for p in pkts.iter().filter(|p| p.src == src && p.dst == dst && p.ns <= b + 999) {
                        let (Some((_, d, _)), Some((qid, addr))) = (p.ports, p.answer) else { continue };
                        match seen.get(&(d, qid)) {
                            Some(&(t0, a0)) if p.ns - t0 <= 2_000_000_000 => {
                                if a0 != addr && p.ns >= a {
                                    n += 1;
                                }
                            }
                            _ => {
                                seen.insert((d, qid), (p.ns, addr));
                            }
                        }
                    }
                    checked += 1;
                    failures.extend(check_count(&ctx, &ev["episode_totals"], "conflicting_answers", n));
                }
                "one_mac_many_ips" => {
                    // Distinct source addresses the MAC sent from over the
                    // episode's span (the sensor counts those of the flows it
                    // opened; a flow it kept from before adds at most one).
                    let mac: Vec<u8> = ev["mac"]
                        .as_str()
                        .unwrap()
                        .split(':')
                        .map(|h| u8::from_str_radix(h, 16).unwrap())
                        .collect();
                    let (a, b) = episode_span(ev);
                    let srcs: BTreeSet<IpAddr> = pkts
                        .iter()
                        .filter(|p| p.mac.is_some_and(|m| m[..] == mac[..]) && (a..=b + 999).contains(&p.ns))
                        .filter_map(|p| p.src)
                        .collect();
                    let stated = ev["distinct_sources"].as_u64().unwrap();
                    let err = ev["estimated"]["distinct_sources"]["relative_error"].as_f64().unwrap_or(0.0);
                    checked += 1;
                    let truth = srcs.len() as f64;
                    let saturated = ev["estimated"]["distinct_sources"]["lower_bound"] == true;
                    if (saturated && truth < stated as f64)
                        || (!saturated && (stated as f64 - truth).abs() > err * truth + 2.0)
                    {
                        failures.push(format!("{ctx}: distinct_sources {stated}, the packets say {truth}"));
                    }
                }
                "brute_force" => {
                    // Attempts: bare SYNs to the service over the episode, but
                    // not a SYN repeating one of the same ports within 30 s
                    // (a retransmission while the handshake is pending).
                    let (a, b) = episode_span(ev);
                    let port = ev["service"].as_u64().unwrap() as u16;
                    let mut last_syn: std::collections::HashMap<u16, u64> = Default::default();
                    let mut n = 0;
                    if port == 88 {
                        // Kerberos: every AS-REQ is an attempt.
                        n = pkts
                            .iter()
                            .filter(|p| {
                                p.src == src && p.dst == dst && p.as_req && (a..=b + 999).contains(&p.ns)
                            })
                            .count();
                    }
                    for p in pkts.iter().filter(|p| p.src == src && p.dst == dst && p.ns <= b + 999) {
                        let Some((sp, d, f)) = p.ports else { continue };
                        if port == 88 || d != port || f == 0xffff || f & 0x16 != 0x02 {
                            continue;
                        }
                        let again = last_syn.insert(sp, p.ns).is_some_and(|t| p.ns - t < 30_000_000_000);
                        if !again && p.ns >= a {
                            n += 1;
                        }
                    }
                    checked += 1;
                    failures.extend(check_count(&ctx, &ev["episode_totals"], "attempts", n as u64));
                }
                "lateral_movement" => {
                    for n in ev["new_sessions"].as_array().unwrap() {
                        let (peer, port) = (ip(&n["peer"]), n["service"].as_u64().unwrap() as u16);
                        let t = ns_of(n["first_session"].as_str().unwrap());
                        checked += 1;
                        let real = pkts.iter().any(|p| {
                            p.ns / 1000 * 1000 == t
                                && ((p.src == src && p.dst == peer && p.ports.is_some_and(|q| q.1 == port))
                                    || (p.src == peer
                                        && p.dst == src
                                        && p.ports.is_some_and(|q| q.0 == port)))
                        });
                        if !real {
                            failures
                                .push(format!("{ctx}: first_session {t} is no packet of {peer:?}:{port}"));
                        }
                    }
                }
                "beaconing" => {
                    // Check-ins recounted: a bare SYN, or payload after 2 s of
                    // silence in its connection; closer than 2 s merge.
                    let port = ev["dst_port"].as_u64().unwrap() as u16;
                    let last = ns_of(ev["last_checkin"].as_str().unwrap());
                    let gap = 2_000_000_000u64;
                    let mut conn_last: std::collections::HashMap<u16, u64> = Default::default();
                    let mut checkins: Vec<u64> = Vec::new();
                    for p in &pkts {
                        let (fwd, sport) = match p.ports {
                            Some((s, d, _)) if p.src == src && p.dst == dst && d == port => (true, s),
                            Some((s, d, _)) if p.src == dst && p.dst == src && s == port => (false, d),
                            _ => continue,
                        };
                        let before = conn_last.insert(sport, p.ns);
                        let flags = p.ports.map_or(0, |q| q.2);
                        let syn = flags != 0xffff && flags & 0x12 == 0x02;
                        let burst = p.payload > 0 && before.is_none_or(|b| p.ns - b >= gap);
                        if fwd && p.ns / 1000 * 1000 <= last && (syn || burst) {
                            if checkins.last().is_none_or(|&c| p.ns - c >= gap) {
                                checkins.push(p.ns);
                            } else if let Some(c) = checkins.last_mut() {
                                *c = p.ns;
                            }
                        }
                    }
                    checked += 1;
                    failures.extend(check_count(&ctx, ev, "checkins", checkins.len() as u64));
                    for key in ["first_checkin", "last_checkin"] {
                        let t = ns_of(ev[key].as_str().unwrap());
                        checked += 1;
                        if !pkts.iter().any(|p| p.ns / 1000 * 1000 == t && p.src == src && p.dst == dst) {
                            failures.push(format!("{ctx}: {key} is no packet of the pair"));
                        }
                    }
                }
                "host_scan" if ev["method"] == "ICMP echo" => {
                    let (a, b) = span();
                    let hosts: BTreeSet<IpAddr> = pkts
                        .iter()
                        .filter(|p| p.src == src && p.echo && (a..=b + 999).contains(&p.ns))
                        .filter_map(|p| p.dst)
                        .collect();
                    checked += 1;
                    failures.extend(check_count(&ctx, ev, "distinct_hosts", hosts.len() as u64));
                }
                _ => {}
            }
            // Flood evidence describes the interval that ends at the event's time.
            if e["kind"] == "slow_http" && e["phase"] == "start" {
                // Pending when counted: handshake completed, nothing pushed
                // by the server, neither side closed.
                let t = ns_of(ev["counted_at"].as_str().unwrap());
                let port = ev["server_port"].as_u64().unwrap() as u16;
                let n = connections(&pkts, dst, port)
                    .iter()
                    .filter(|c| c.client == src && c.established.is_some_and(|x| x < t))
                    .filter(|c| c.answered_or_closed.is_none_or(|x| x >= t))
                    .count() as u64;
                checked += 1;
                failures.extend(check_count(&ctx, ev, "pending_connections", n));
            }
            if e["kind"] == "connection_flood" && e["phase"] == "start" {
                let end = ns_of(e["timestamp"].as_str().unwrap());
                const S: u64 = 1_000_000_000;
                let (from, to) = if end % S == 0 { (end - S, end - 1) } else { (end / S * S, end) };
                let mut n = 0;
                for port in pkts
                    .iter()
                    .filter(|p| p.dst == dst)
                    .filter_map(|p| p.ports)
                    .map(|q| q.1)
                    .collect::<BTreeSet<_>>()
                {
                    n += connections(&pkts, dst, port)
                        .iter()
                        .filter(|c| c.established.is_some_and(|x| (from..=to).contains(&x)))
                        .count() as u64;
                }
                checked += 1;
                failures.extend(check_count(&ctx, ev, "handshakes_completed", n));
            }
            if category == "spike" && e["phase"] == "start" && e["kind"] != "slow_http" {
                // An interval is [t - 1 s, t) at a boundary; the last one,
                // closed at the end of input, runs from its boundary to the
                // last packet inclusive.
                let end = ns_of(e["timestamp"].as_str().unwrap());
                const S: u64 = 1_000_000_000;
                let (from, to) = if end % S == 0 { (end - S, end - 1) } else { (end / S * S, end) };
                // A prefix or link episode (no single victim) is about every
                // destination in it.
                let prefix = ev["prefix"].as_str();
                let toward = |p: &Pkt| match (prefix, p.dst, dst) {
                    (Some("the link"), Some(_), _) => true,
                    (Some(_), Some(IpAddr::V4(a)), Some(IpAddr::V4(n))) => a.octets()[..3] == n.octets()[..3],
                    (Some(_), Some(IpAddr::V6(a)), Some(IpAddr::V6(n))) => a.octets()[..8] == n.octets()[..8],
                    (Some(_), _, _) => false,
                    (None, d, _) => d == dst,
                };
                let iv = |p: &&Pkt| (from..=to).contains(&p.ns) && toward(p);
                if let Some(top) = ev["top_sources"].as_array() {
                    for s in top {
                        let who = ip(&s["ip"]);
                        let sent = pkts.iter().filter(iv).filter(|p| p.src == who).count() as u64;
                        let claim = s["packets"].as_u64().unwrap();
                        checked += 1;
                        if sent < claim {
                            failures
                                .push(format!("{ctx}: {who:?} said to send at least {claim}, sent {sent}"));
                        }
                    }
                }
                // Packet times: real packets toward the target, after the onset.
                for key in ["first_seen", "last_seen"] {
                    let t = ev[key].as_str().unwrap();
                    checked += 1;
                    if !pkts.iter().any(|p| p.ns / 1000 * 1000 == ns_of(t) && toward(p)) {
                        failures.push(format!("{ctx}: {key} {t} is no packet toward the target"));
                    }
                }
                if ns_of(ev["onset"].as_str().unwrap()) > ns_of(ev["first_seen"].as_str().unwrap()) {
                    failures.push(format!("{ctx}: onset after first_seen"));
                }
                if ev["intervals_over"].as_u64() > ev["intervals_observed"].as_u64() {
                    failures.push(format!("{ctx}: more intervals over the line than observed"));
                }
                if let Some(active) = ev["active_seconds"].as_f64() {
                    let inside: Vec<u64> = pkts.iter().filter(iv).map(|p| p.ns).collect();
                    let span = (inside.iter().max().unwrap() - inside.iter().min().unwrap()) as f64 / 1e9;
                    checked += 1;
                    if (span - active).abs() > 0.002 {
                        failures.push(format!("{ctx}: active_seconds {active}, the packets span {span:.3}"));
                    }
                }
                if ev.get("distinct_sources").is_some() {
                    let sources: HashSet<IpAddr> = pkts.iter().filter(iv).filter_map(|p| p.src).collect();
                    checked += 1;
                    failures.extend(check_count(&ctx, ev, "distinct_sources", sources.len() as u64));
                }
            }
        }
    }
    eprintln!("{checked} fields checked against the packets");
    assert!(checked > 50, "the check ran on too little: {checked} fields");
    assert!(
        failures.is_empty(),
        "{} of {checked} fields disagree with the packets:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One TCP connection to a server port, as the packets tell it.
struct Conn {
    client: Option<IpAddr>,
    /// When the client's ACK completed the handshake.
    established: Option<u64>,
    /// When the server first pushed data, or either side sent FIN or RST
    /// after the handshake.
    answered_or_closed: Option<u64>,
}

/// Every connection to `server`:`port` (by client address and port), in
/// the order their SYNs were seen; a new SYN on used ports starts a new one.
fn connections(pkts: &[Pkt], server: Option<IpAddr>, port: u16) -> Vec<Conn> {
    // Per (client, client port): index of its latest connection, and stage
    // (1 SYN seen, 2 SYN-ACK seen, 3 established).
    let mut open: std::collections::HashMap<(Option<IpAddr>, u16), (usize, u8)> = Default::default();
    let mut out: Vec<Conn> = Vec::new();
    for p in pkts {
        let Some((sp, dp, f)) = p.ports else { continue };
        if f >= 0x100 {
            continue;
        }
        let (syn, ack, fin, rst, psh) = (f & 2 != 0, f & 0x10 != 0, f & 1 != 0, f & 4 != 0, f & 8 != 0);
        if p.dst == server && dp == port {
            let k = (p.src, sp);
            if syn && !ack {
                let again = open.get(&k).is_some_and(|&(_, st)| st < 3);
                if !again {
                    out.push(Conn { client: p.src, established: None, answered_or_closed: None });
                    open.insert(k, (out.len() - 1, 1));
                }
                continue;
            }
            if let Some((i, st)) = open.get_mut(&k) {
                if *st == 2 && ack && !rst && !fin {
                    *st = 3;
                    out[*i].established = Some(p.ns);
                } else if *st == 3 && (fin || rst) && out[*i].answered_or_closed.is_none() {
                    out[*i].answered_or_closed = Some(p.ns);
                }
            }
        } else if p.src == server && sp == port {
            let k = (p.dst, dp);
            if let Some((i, st)) = open.get_mut(&k) {
                if *st == 1 && syn && ack {
                    *st = 2;
                } else if *st == 3 && (psh || fin || rst) && out[*i].answered_or_closed.is_none() {
                    out[*i].answered_or_closed = Some(p.ns);
                }
            }
        }
    }
    out
}

/// An Ethernet/IPv4 ARP packet's operation, sender MAC and IP, and target IP.
fn ethernet_arp(f: &[u8]) -> Option<(u16, [u8; 6], IpAddr, IpAddr)> {
    let a = match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0806 => f.get(14..42)?,
        0x8100 if u16::from_be_bytes([*f.get(16)?, *f.get(17)?]) == 0x0806 => f.get(18..46)?,
        _ => return None,
    };
    let ip = |i: usize| IpAddr::from([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&a[8..14]);
    Some((u16::from_be_bytes([a[6], a[7]]), mac, ip(14), ip(24)))
}

/// The first question's name of a DNS query message (QR = 0), if it parses.
fn dns_query_name(msg: &[u8]) -> Option<String> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) == 0 {
        return None;
    }
    let (mut i, mut labels) = (12, Vec::new());
    loop {
        let n = usize::from(*msg.get(i)?);
        if n == 0 {
            break;
        }
        if n >= 64 {
            return None; // compression pointers do not occur in a question
        }
        labels.push(String::from_utf8_lossy(msg.get(i + 1..i + 1 + n)?).to_lowercase());
        i += 1 + n;
    }
    Some(labels.join("."))
}

/// RFC 9293, written out independently of the sensor's classifier: after
/// the first SYN every segment carries ACK; SYN never travels with FIN or
/// RST; bare SYN and bare RST are the only legal flag sets without ACK.
fn invalid_flags(flags: u16) -> bool {
    let f = flags & 0x3f;
    let (fin, syn, rst, psh, ack, urg) =
        (f & 1 != 0, f & 2 != 0, f & 4 != 0, f & 8 != 0, f & 16 != 0, f & 32 != 0);
    f == 0 || f == 0x3f || (syn && fin) || (syn && rst) || (!ack && (fin || psh || urg))
}

#[test]
fn times_parse_back_to_the_nanosecond() {
    assert_eq!(ns_of("1970-01-01T00:00:01.000001Z"), 1_000_001_000);
    assert_eq!(ns_of("2019-08-21T15:06:40.123456Z"), 1_566_400_000_123_456_000);
}
