//! Hostile input and faults: mutated savefiles, hostile timestamps, a full
//! disk, a closed pipe, SIGTERM mid-replay. Never a panic or a hang; a clear
//! exit status; nothing already found is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cap(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(rel)
}

/// Runs the binary with a hard time limit; a hang fails the test. Output is
/// drained by a helper thread so a chatty child never blocks on a full pipe.
fn run_bounded(args: &[&std::ffi::OsStr], limit: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("netvigil {args:?} hung for {limit:?}");
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_savefiles_never_panic_or_hang() {
    let seeds = [
        "scans/evilfingers_XMAS_TREE_SCAN.pcap",
        "benign/chrissanders_http_espn.pcapng",
        "linktypes/zeek_linux_dlt_sll2.pcap",
        "linktypes/tcpdump_LINKTYPE_RAW_ipv4.pcap",
        "misuse/suricata_frag-16.pcap",
        "misuse/elastic_dns-tunnel-iodine.pcap",
        "misuse/chrissanders_arppoison.pcapng",
        "malformed/suricata_decode-too-small.pcap",
        "floods/suricata_rsmurf6.pcap",
        "lab/ipv6_rh0.pcap",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut files = Vec::new();
    for (i, s) in seeds.iter().enumerate() {
        let orig = std::fs::read(cap(s)).unwrap();
        let other = std::fs::read(cap(seeds[(i + 1) % seeds.len()])).unwrap();
        for m in 0..32 {
            let mut b = orig.clone();
            match m % 4 {
                // Flip bytes anywhere after the file header.
                0 => {
                    for _ in 0..1 + rng.below(16) {
                        let at = 24 + rng.below(b.len().saturating_sub(24));
                        if at < b.len() {
                            b[at] ^= 1 << rng.below(8);
                        }
                    }
                }
                // Truncate at a random point.
                1 => b.truncate(rng.below(b.len() + 1)),
                // Splice the tail of another capture in.
                2 => {
                    let cut = rng.below(b.len());
                    let from = rng.below(other.len());
                    b.truncate(cut);
                    b.extend_from_slice(&other[from..]);
                }
                // Randomise bytes in the first record header (lengths, times).
                _ => {
                    for k in 0..8 {
                        let at = 24 + rng.below(16) + k;
                        if at < b.len() {
                            b[at] = rng.next() as u8;
                        }
                    }
                }
            }
            let p = dir.path().join(format!("m{i}-{m}.pcap"));
            std::fs::write(&p, b).unwrap();
            files.push(p);
        }
    }
    assert_eq!(files.len(), 320);
    let mut by_code = std::collections::BTreeMap::new();
    for f in &files {
        let out = run_bounded(&["replay".as_ref(), "-q".as_ref(), f.as_os_str()], Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(matches!(code, Some(0..=2)), "{}: killed or odd exit {code:?}: {err}", f.display());
        assert!(!err.contains("panicked"), "{}: {err}", f.display());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        *by_code.entry(code).or_insert(0) += 1;
    }
    eprintln!("mutation run: {} files, exit codes {by_code:?}", files.len());
}

/// Writes Ethernet TCP SYNs at the given (seconds, micros) timestamps.
fn write_times(path: &Path, times: &[(i64, i64)]) {
    let dead = pcap::Capture::dead_with_precision(pcap::Linktype::ETHERNET, pcap::Precision::Micro).unwrap();
    let mut sf = dead.savefile(path).unwrap();
    for (i, (s, us)) in times.iter().enumerate() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 9, 0, (i % 200) as u8 + 1], [10, 9, 1, 1], 64)
            .tcp(40_000, 80 + (i % 3) as u16, i as u32, 1024)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        let h = pcap::PacketHeader {
            ts: libc::timeval { tv_sec: *s, tv_usec: *us },
            caplen: f.len() as u32,
            len: f.len() as u32,
        };
        sf.write(&pcap::Packet::new(&h, &f));
    }
    sf.flush().unwrap();
}

/// Replays packets at `times` (written into `dir`); the run must succeed.
/// Returns its output and its JSON summary.
fn replay_times(dir: &Path, times: &[(i64, i64)]) -> (std::process::Output, serde_json::Value) {
    let p = dir.join("times.pcap");
    write_times(&p, times);
    let summary = dir.join("s.json");
    let out = run_bounded(
        &["replay".as_ref(), "-q".as_ref(), "--summary-json".as_ref(), summary.as_os_str(), p.as_os_str()],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    (out, s)
}

#[test]
fn hostile_timestamps_are_survived_without_storms() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Vec::new();
    t.extend((0..10_000).map(|_| (1_600_000_000, 5))); // ten thousand in one microsecond
    t.extend((0..100).map(|i| (1_600_000_000 - i * 3600, 0))); // going backwards by hours
    t.push((4_000_000_000, 999_999)); // year 2096
    t.extend((0..100).map(|_| (0, 0))); // 1970
    t.extend((0..100).map(|i| (4_294_967_295 - i, 0))); // the end of pcap time
    t.push((1_600_000_000, 1_000_000)); // an invalid microsecond field
    let (out, s) = replay_times(dir.path(), &t);
    assert_eq!(s["packets"].as_u64().unwrap() as usize, t.len());
    assert!(s["decode_anomalies"]["timestamp_backwards"].as_u64().unwrap() > 0);
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(lines <= 20, "time tricks caused an episode storm: {lines} events");
}

/// Regression: a live capture on a veth pair stamped 450 of 9,012 packets
/// up to 67 ms before ones already delivered (receive timestamps are taken
/// when the peer queues the packet, transmit ones when it leaves, on
/// different CPUs). That interleaving is counted as `reordered`, not as a
/// decode anomaly; steps back of more than a second still are.
#[test]
fn small_steps_back_are_reordering_large_ones_are_clock_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut t: Vec<(i64, i64)> = Vec::new();
    for i in 0..200 {
        t.push((1_600_000_000 + i / 100, (i % 100) * 10_000));
        if i % 10 == 0 {
            t.push((1_600_000_000 + i / 100, ((i % 100) * 10_000 - 5_000).max(0))); // 5 ms late
        }
    }
    t.push((1_599_990_000, 0)); // a clock step back of hours
    let (_, s) = replay_times(dir.path(), &t);
    assert_eq!(s["reordered"]["packets"], 18, "{s}"); // 20 late packets, 2 of them only tied
    assert_eq!(s["reordered"]["max_step_us"], 5_000, "{s}");
    assert_eq!(s["decode_anomalies"]["timestamp_backwards"], 1, "{s}");
}

#[test]
fn full_disk_is_a_clear_runtime_error() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let out = run_bounded(
        &[
            "replay".as_ref(),
            "-q".as_ref(),
            "--events".as_ref(),
            "/dev/full".as_ref(),
            cap("scans/evilfingers_XMAS_TREE_SCAN.pcap").as_os_str(),
        ],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unusable_state_directory_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = run_bounded(
        &[
            "replay".as_ref(),
            "-q".as_ref(),
            "--state-dir".as_ref(),
            file.as_os_str(),
            cap("linktypes/tcpdump_LINKTYPE_RAW_ipv4.pcap").as_os_str(),
        ],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("state directory"), "{err}");
}

#[test]
fn sigterm_mid_replay_flushes_events_and_saves_state() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let state = dir.path().join("state");
    // The Xmas scan (0.1 s) first, then a 45 s capture replayed in real time.
    let child = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["replay", "-q", "--speed", "realtime", "--events"])
        .arg(&events)
        .arg("--state-dir")
        .arg(&state)
        .arg(cap("scans/evilfingers_XMAS_TREE_SCAN.pcap"))
        .arg(cap("misuse/esnet_one_way_all_flags.pcap"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "slow to stop");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&events).unwrap();
    let ev: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let starts = ev.iter().filter(|e| e["phase"] == "start").count();
    let ends = ev.iter().filter(|e| e["phase"] == "end").count();
    assert!(starts >= 1 && starts == ends, "every episode ended on SIGTERM: {text}");
    assert!(state.join("baselines.json").exists(), "state saved on SIGTERM");
}

/// Regression (cargo-fuzz, savefile target): the same IPv6 extension-header
/// over-read, reached through a whole savefile.
#[test]
fn fuzz_regression_savefile_ipv6_extension_overread() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/savefile-ipv6-ext-overread.pcap");
    let out = run_bounded(&["replay".as_ref(), "-q".as_ref(), f.as_os_str()], Duration::from_secs(20));
    assert!(matches!(out.status.code(), Some(0..=2)), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A spoofed random-source flood against every table at once (flows, hosts,
/// probes, ARP bindings, DNS names, fragments) with small caps: memory stays
/// bounded, evictions are counted, and the flood is still detected.
#[test]
fn spoofed_floods_against_every_table_stay_bounded_and_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.pcap");
    let dead = pcap::Capture::dead_with_precision(pcap::Linktype::ETHERNET, pcap::Precision::Micro).unwrap();
    let mut sf = dead.savefile(&path).unwrap();
    let mut rng = Rng(0x0f10_0d5e_ed00_0001);
    let n = 120_000u64;
    for i in 0..n {
        let src = (rng.next() as u32 | 0x0100_0000).to_be_bytes();
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
        let mut f = Vec::new();
        match i % 4 {
            0 | 1 => b
                .ipv4(src, [192, 0, 2, 80], 64)
                .tcp(rng.next() as u16, 80, 1, 1024)
                .syn()
                .write(&mut f, &[])
                .unwrap(),
            2 => {
                // DNS query for a random name.
                let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 12];
                q.extend(format!("{:012x}", rng.next() & 0xffff_ffff_ffff).bytes());
                q.extend_from_slice(&[
                    7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1,
                ]);
                b.ipv4(src, [192, 0, 2, 53], 64).udp(40_000, 53).write(&mut f, &q).unwrap()
            }
            _ => {
                // A random ARP reply, or a random-id UDP fragment.
                if rng.next() % 2 == 0 {
                    f.extend_from_slice(&[0xff; 6]);
                    f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
                    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
                    f.extend_from_slice(&rng.next().to_be_bytes()[..6]);
                    f.extend_from_slice(&src);
                    f.extend_from_slice(&[0; 6]);
                    f.extend_from_slice(&[192, 0, 2, 1]);
                } else {
                    let mut ip =
                        etherparse::Ipv4Header::new(16, 64, etherparse::IpNumber::UDP, src, [192, 0, 2, 80])
                            .unwrap();
                    ip.identification = rng.next() as u16;
                    ip.more_fragments = true;
                    f.extend_from_slice(&[4; 6]);
                    f.extend_from_slice(&[2; 6]);
                    f.extend_from_slice(&[0x08, 0x00]);
                    ip.header_checksum = ip.calc_header_checksum();
                    f.extend_from_slice(&ip.to_bytes());
                    f.extend_from_slice(&[0; 16]);
                }
            }
        }
        let us = 1_700_000_000_000_000i64 + (i as i64) * 50; // 20,000 packets per second
        let h = pcap::PacketHeader {
            ts: libc::timeval { tv_sec: us / 1_000_000, tv_usec: us % 1_000_000 },
            caplen: f.len() as u32,
            len: f.len() as u32,
        };
        sf.write(&pcap::Packet::new(&h, &f));
    }
    sf.flush().unwrap();
    let cfg = dir.path().join("small.toml");
    std::fs::write(&cfg, "[flow]\nmax_flows = 2000\nmax_hosts_per_interval = 2000\n\n[spike]\nmax_hosts = 2000\n\n[scan]\nmax_tracked = 2000\n").unwrap();
    let summary = dir.path().join("s.json");
    let out = run_bounded(
        &[
            "replay".as_ref(),
            "-q".as_ref(),
            "-c".as_ref(),
            cfg.as_os_str(),
            "--summary-json".as_ref(),
            summary.as_os_str(),
            path.as_os_str(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["packets"].as_u64().unwrap(), n);
    assert!(s["flows"]["evicted"].as_u64().unwrap() > 10_000, "{s}");
    let rss = s["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss < 200_000_000, "peak RSS {rss} with small caps");
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"kind\":\"syn_flood\"") && l.contains("\"dst_ip\":\"192.0.2.80\"")),
        "the SYN flood must still be found"
    );
    let starts = events.lines().filter(|l| l.contains("\"phase\":\"start\"")).count();
    let mut kinds = std::collections::BTreeMap::new();
    for l in events.lines().filter(|l| l.contains("\"phase\":\"start\"")) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        *kinds.entry(v["kind"].as_str().unwrap_or("").to_string()).or_insert(0) += 1;
    }
    eprintln!("episodes by kind: {kinds:?}");
    assert!(starts < 100, "{starts} episodes: the flood must not become an alert storm");
}
