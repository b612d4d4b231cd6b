//! Evidence pcaps (`--evidence-dir`): every start event of the bundled scan
//! and flood captures names a pcap that libpcap and capinfos read, holding
//! only packets between the episode's actor and target (or its prefix),
//! some from before the start; the same bytes for 1 and 3 workers; and the
//! whole directory under its cap during a spoofed flood.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn run(pcap: &Path, dir: &Path, workers: usize, config: &str) -> Vec<Value> {
    let cfg = dir.with_extension("toml");
    std::fs::write(&cfg, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["replay", "-q", "--workers", &workers.to_string(), "--evidence-dir"])
        .arg(dir)
        .arg("--config")
        .arg(&cfg)
        .arg(pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Source and destination of an Ethernet/IPv4/IPv6 frame (VLAN tags skipped).
fn addrs(f: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let mut off = 12;
    let mut et = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    while et == 0x8100 || et == 0x88a8 {
        off += 4;
        et = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
    }
    let ip = f.get(off + 2..)?;
    match et {
        0x0800 => {
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        0x86dd => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        0x0806 => {
            let s: [u8; 4] = ip.get(14..18)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(24..28)?.try_into().ok()?;
            Some((IpAddr::from(s), IpAddr::from(d)))
        }
        _ => None,
    }
}

fn in_prefix(a: IpAddr, prefix: &str) -> bool {
    let (net, len) = prefix.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    match (a, net.parse::<IpAddr>().unwrap()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

fn ts_us(s: &str) -> i64 {
    // "2010-07-10T21:43:30.662237Z": compare within the day is not enough, so
    // let the shell's date do the calendar.
    let out = Command::new("date").args(["-u", "-d", s, "+%s%6N"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

fn captures() -> Vec<PathBuf> {
    let mut v = common::files_under(&common::cap("scans"), &["pcap", "pcapng"]);
    v.extend(common::files_under(&common::cap("floods"), &["pcap", "pcapng"]));
    for lab in ["nmap_syn_scan", "syn_burst_short", "carpet_syn", "conn_flood_completed"] {
        v.push(common::cap(&format!("lab/{lab}.pcap")));
    }
    v
}

#[test]
fn every_start_names_a_pcap_of_its_own_packets() {
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut with_before = 0;
    for cap in captures() {
        let name = cap.file_name().unwrap().to_string_lossy().to_string();
        let tmp = tempfile::tempdir().unwrap();
        let (d1, d3) = (tmp.path().join("w1"), tmp.path().join("w3"));
        let events = run(&cap, &d1, 1, "");
        run(&cap, &d3, 3, "");
        for e in events.iter().filter(|e| e["phase"] == "start") {
            let (src, dst) = (e["src_ip"].as_str(), e["dst_ip"].as_str());
            if src.is_none() && dst.is_none() {
                continue;
            }
            let Some(file) = e["evidence"]["pcap"].as_str() else {
                problems.push(format!("{name}: {} start names no pcap", e["kind"]));
                continue;
            };
            let path = d1.join(file);
            let capinfos = Command::new("capinfos").arg("-c").arg(&path).output().unwrap();
            if !capinfos.status.success() {
                problems.push(format!("{name}: capinfos cannot read {file}"));
                continue;
            }
            let one = std::fs::read(&path).unwrap();
            if std::fs::read(d3.join(file)).ok().as_ref() != Some(&one) {
                problems.push(format!("{name}: {file} differs between 1 and 3 workers"));
            }
            let frames = common::read_pcap(&path);
            let prefix = e["evidence"]["prefix"].as_str();
            let (s, d) =
                (src.map(|s| s.parse::<IpAddr>().unwrap()), dst.map(|d| d.parse::<IpAddr>().unwrap()));
            let belongs = |a: IpAddr, b: IpAddr| match (prefix, s, d) {
                (Some(p), _, _) => in_prefix(a, p) || in_prefix(b, p),
                (None, Some(s), Some(d)) => (a == s && b == d) || (a == d && b == s),
                (None, Some(x), None) | (None, None, Some(x)) => a == x || b == x,
                _ => true,
            };
            let strangers =
                frames.iter().filter(|f| addrs(&f.1).is_some_and(|(a, b)| !belongs(a, b))).count();
            if strangers > 0 || frames.is_empty() {
                problems.push(format!(
                    "{name}: {file} holds {} packets, {strangers} of other hosts",
                    frames.len()
                ));
            }
            let start = ts_us(e["timestamp"].as_str().unwrap());
            if frames.first().is_some_and(|f| f.0 < start) {
                with_before += 1;
            }
            checked += 1;
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(checked >= 20, "only {checked} start events checked");
    // Floods open after a few intervals over the line: their pcaps begin before.
    assert!(
        with_before * 2 >= checked,
        "{with_before} of {checked} pcaps hold packets from before the start"
    );
}

#[test]
fn a_spoofed_flood_stays_under_the_disk_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ev");
    let cap = common::cap("floods/stopddos_pkt.TCP.synflood.spoofed.pcap");
    let events = run(&cap, &dir, 1, "[evidence]\nepisode_mib = 0.2\ntotal_mib = 0.5\n");
    assert!(events.iter().any(|e| e["kind"] == "syn_flood"), "the flood is found");
    let total: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(total > 0 && total <= 512 * 1024, "{total} bytes of evidence");
}

#[test]
fn a_ring_too_small_for_the_traffic_still_gives_the_same_files_for_any_worker_count() {
    // 0.1 MiB holds a fraction of a second of this flood: the oldest packets
    // go while the host stage judges the interval before, and its requests
    // take effect at the next tick; the files must not depend on how far
    // ahead the capture was.
    let cap = common::cap("floods/softvulnsec_syn_flood.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = "[evidence]\nring_mib = 0.1\n";
    let (d1, d3) = (tmp.path().join("w1"), tmp.path().join("w3"));
    let events = run(&cap, &d1, 1, cfg);
    run(&cap, &d3, 3, cfg);
    let names = |d: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let one = names(&d1);
    assert!(!one.is_empty() && events.iter().any(|e| e["evidence"]["pcap"].is_string()));
    assert!(one == names(&d3), "evidence files differ between 1 and 3 workers");
}

#[test]
fn a_many_source_flood_keeps_a_sample_of_sample_mib() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ev");
    let cap = common::cap("floods/stopddos_pkt.TCP.synflood.spoofed.pcap");
    let events = run(&cap, &dir, 1, "[evidence]\nepisode_mib = 2\nsample_mib = 0.1\n");
    let mut samples = 0;
    for e in events.iter().filter(|e| e["phase"] == "start") {
        let many = e["src_ip"].is_null() || e["evidence"]["prefix"].is_string();
        let Some(file) = e["evidence"]["pcap"].as_str() else { continue };
        let Ok(meta) = std::fs::metadata(dir.join(file)) else { continue };
        if many {
            // Filled to the sample's cap, not to the episode's.
            assert!(meta.len() <= 104_858 && meta.len() > 80_000, "{file}: {} bytes", meta.len());
            samples += 1;
        }
    }
    assert!(samples >= 1, "no many-source flood in {events:#?}");
}
