//! The behaviour model on the corpus: learn on a benign lead-in, then see
//! whether the attack's actor is flagged, and whether benign hosts are not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{cap, read_pcap, write_pcap};

use std::path::Path;
use std::process::Command;

/// The `[ml]` section of the tests. `ML_MODEL=loda` evaluates the other
/// detector with the same harness (how the README's comparison was made);
/// `ML_DEFAULTS=1` runs it with the default settings, only turned on (how
/// the default-on decision was measured).
fn ml_config(training: u32, window: u32) -> String {
    let model = std::env::var("ML_MODEL").unwrap_or_else(|_| "hst".into());
    if std::env::var_os("ML_DEFAULTS").is_some() {
        return format!("[ml]\nenabled = true\nmodel = \"{model}\"\n");
    }
    format!(
        "[ml]\nenabled = true\nmodel = \"{model}\"\ntraining = {training}\nwindow = {window}\nmin_packets = 5\n"
    )
}

/// Ten minutes of looped benign traffic, then `attack` (if any); returns the
/// behaviour_outlier actors.
fn outliers(dir: &Path, attack: Option<&str>) -> Vec<String> {
    let out = replay_mixed(dir, attack, "1");
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "behaviour_outlier" && e["phase"] == "start")
        .map(|e| e["src_ip"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The events (stdout) of replaying the lead-in plus `attack` with `workers`.
fn replay_mixed(dir: &Path, attack: Option<&str>, workers: &str) -> Vec<u8> {
    let mut frames = Vec::new();
    let mut at = 1_000_000_000_000i64;
    for bg in ["benign/chrissanders_http_espn.pcapng", "benign/nfpuzzle_evidence03.pcap"] {
        let b = read_pcap(&cap(bg));
        let t0 = b[0].0;
        let span = (b.last().unwrap().0 - t0 + 500_000).min(60_000_000);
        for _ in 0..(300_000_000 / span) {
            for (t, d, l) in b.iter().filter(|(t, _, _)| t - t0 < span) {
                frames.push((t - t0 + at, d.clone(), *l));
            }
            at += span;
        }
    }
    if let Some(a) = attack {
        let f = read_pcap(&cap(a));
        let f0 = f[0].0;
        for (t, d, l) in &f {
            frames.push((t - f0 + at + 1_000_000, d.clone(), *l));
        }
    }
    let path = dir.join("mixed.pcap");
    write_pcap(&path, &frames);
    let cfg = dir.join("ml.toml");
    std::fs::write(&cfg, ml_config(512, 256)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["replay", "-q", "--workers", workers, "-c"])
        .arg(&cfg)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn model_scores_are_the_same_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let one = replay_mixed(dir.path(), Some("scans/pcaphunt_ps-tcp_syn.pcap"), "1");
    let three = replay_mixed(dir.path(), Some("scans/pcaphunt_ps-tcp_syn.pcap"), "3");
    assert!(String::from_utf8_lossy(&one).contains("behaviour_outlier"));
    // Priority folds in the model's view of each host: the same for any
    // worker count, and present on the scan's episodes.
    let priorities = |out: &[u8]| -> Vec<(String, serde_json::Value, serde_json::Value)> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["phase"] != "end")
            .map(|e| (e["episode_id"].to_string(), e["priority"].clone(), e["priority_reasons"].clone()))
            .collect()
    };
    let (p1, p3) = (priorities(&one), priorities(&three));
    assert!(p1.iter().all(|(_, p, _)| p.is_u64()), "every start and update has a priority");
    assert!(
        p1.iter().any(|(_, _, r)| r.to_string().contains("behaviour model: host unusual now")),
        "no episode gained the model's view: {p1:?}"
    );
    assert_eq!(p1, p3);
    assert_eq!(String::from_utf8_lossy(&one), String::from_utf8_lossy(&three));
}

#[test]
fn model_flags_attackers_after_a_benign_lead_in_and_not_benign_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let benign = outliers(dir.path(), None);
    // (capture, actor, target): the attack window counts as found when the
    // model flags either end of it.
    let cases = [
        ("scans/pcaphunt_ps-tcp_syn.pcap", "10.0.0.140", "10.0.0.1"),
        ("scans/evilfingers_TCP_SYN_SCAN.pcap", "192.168.1.10", "192.168.1.25"),
        ("scans/pcaphunt_hs-icmpScan.pcap", "10.0.0.128", "10.0.0.1"),
        ("floods/softvulnsec_icmp_flood.pcap", "10.0.0.2", "10.128.0.2"),
        ("floods/softvulnsec_syn_flood.pcap", "10.0.0.2", "10.128.0.2"),
        ("misuse/elastic_dns-tunnel-iodine.pcap", "10.0.2.30", "10.0.2.20"),
    ];
    let mut found = 0;
    let mut false_actors = 0;
    for (attack, actor, target) in cases {
        let got = outliers(dir.path(), Some(attack));
        let hit = got.iter().any(|a| a == actor || a == target);
        found += usize::from(hit);
        let others: Vec<&String> = got.iter().filter(|a| *a != actor && *a != target).collect();
        false_actors += others.len();
        eprintln!("ml: {attack}: flagged {got:?} (attack found: {hit}); unrelated hosts flagged {others:?}");
    }
    eprintln!(
        "ml: benign-only lead-in flagged {benign:?}; attackers found {found}/{}; other hosts flagged {false_actors}",
        cases.len()
    );
    assert!(benign.is_empty(), "benign traffic flagged: {benign:?}");
    assert!(found * 2 >= cases.len(), "the model found only {found} of {} attacks", cases.len());
    assert_eq!(false_actors, 0, "hosts outside the attacks were flagged");
}

/// The wider evaluation table for the README and the issue (slow: run with
/// `cargo test --release --test ml -- --ignored --nocapture`).
#[test]
#[ignore]
fn ml_corpus_table() {
    let dir = tempfile::tempdir().unwrap();
    for (attack, actor, target) in [
        ("scans/esnet_masscan_tcp_0_1000_20190821.pcap", "172.31.15.102", "198.124.152.15"),
        ("scans/chrissanders_synscan.pcapng", "172.16.0.8", "64.13.134.52"),
        ("scans/evilfingers_FIN_SCAN.pcap", "192.168.1.10", "192.168.1.25"),
        ("scans/evilfingers_UDP_SCAN.pcap", "192.168.1.10", "192.168.1.25"),
        ("scans/pcaphunt_hs-udpScan.pcap", "246.237.45.150", "-"),
        ("scans/ppa_portscan.pcap", "10.100.25.14", "10.100.18.12"),
        ("floods/stopddos_pkt.TCP.synflood.spoofed.pcap", "-", "10.10.10.10"),
        ("floods/stopddos_amp.UDP.snmp.src161.pcapng", "-", "10.10.10.10"),
        ("floods/suricata_denial6-5.pcap", "2001:db8:1::2", "2001:db8:1::1"),
        ("misuse/dmachard_dnscat2.pcap", "192.168.1.17", "192.168.1.210"),
        ("misuse/ndpi_icmp-tunnel.pcap", "192.168.154.131", "192.168.154.132"),
    ] {
        let got = outliers(dir.path(), Some(attack));
        let hit = got.iter().any(|a| a == actor || a == target);
        let others: Vec<&String> = got.iter().filter(|a| *a != actor && *a != target).collect();
        eprintln!("ml-table | {attack} | {} | {others:?} |", if hit { "found" } else { "missed" });
    }
}

/// Frames with every gap clamped to at most a second (two corpus captures
/// have broken clocks that jump by years), starting at zero.
fn continuous(frames: Vec<(i64, Vec<u8>, u32)>) -> Vec<(i64, Vec<u8>, u32)> {
    let mut t = 0i64;
    let mut prev = frames.first().map_or(0, |f| f.0);
    frames
        .into_iter()
        .map(|(ts, d, l)| {
            t += (ts - prev).clamp(0, 1_000_000);
            prev = ts;
            (t, d, l)
        })
        .collect()
}

/// Learning on a network's own first part: the first half of each benign
/// capture, looped for about ten minutes of packet time, is the lead-in;
/// then comes its second half, then a port scan. The model must flag the
/// scan (it is armed) and nothing from the second half (it does not cry
/// wolf on the network it learned).
#[test]
fn learning_a_captures_first_half_keeps_its_second_half_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let scan = continuous(read_pcap(&cap("scans/pcaphunt_ps-tcp_syn.pcap")));
    let (scanner, victim) = ("10.0.0.140", "10.0.0.1");
    let mut report = Vec::new();
    for f in common::BENIGN {
        let all = continuous(read_pcap(&cap(f)));
        let (first, second) = all.split_at(all.len() / 2);
        let span = (first.last().unwrap().0 + 1_000_000).max(1_000_000);
        // About ten minutes, at most 500k packets (debug builds run this too).
        let loops = (600_000_000 / span).clamp(1, (500_000 / first.len() as i64).max(1));
        let mut frames = Vec::new();
        let mut at = 1_000_000_000_000i64;
        for _ in 0..loops {
            frames.extend(first.iter().map(|(t, d, l)| (t + at, d.clone(), *l)));
            at += span;
        }
        let s0 = second[0].0;
        frames.extend(second.iter().map(|(t, d, l)| (t - s0 + at, d.clone(), *l)));
        at += second.last().unwrap().0 - s0 + 2_000_000;
        // The scan starts at the next midnight (still January 1970), so an
        // event's date tells which part raised it.
        const DAY: i64 = 86_400_000_000;
        let day = at / DAY + 1;
        let scan_day = format!("1970-01-{:02}", day + 1);
        frames.extend(scan.iter().map(|(t, d, l)| (t + day * DAY, d.clone(), *l)));
        let path = dir.path().join("firsthalf.pcap");
        write_pcap(&path, &frames);
        let cfg = dir.path().join("ml.toml");
        std::fs::write(&cfg, ml_config(256, 128)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
            .args(["replay", "-q", "--workers", "1", "-c"])
            .arg(&cfg)
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let starts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["kind"] == "behaviour_outlier" && e["phase"] == "start")
            .collect();
        let in_scan = |e: &serde_json::Value| e["timestamp"].as_str().unwrap_or("").starts_with(&scan_day);
        let host = |e: &serde_json::Value| e["src_ip"].as_str().unwrap_or("").to_string();
        let found = starts.iter().filter(|e| in_scan(e)).any(|e| host(e) == scanner || host(e) == victim);
        let false_alarms: Vec<String> = starts.iter().filter(|e| !in_scan(e)).map(host).collect();
        for e in starts.iter().filter(|e| !in_scan(e)) {
            eprintln!("ml-first-half | {f} | false alarm: {}", e["message"]);
        }
        eprintln!(
            "ml-first-half | {f} | {loops} loops | scan found: {found} | benign flagged: {false_alarms:?}"
        );
        report.push((f, found, false_alarms.len()));
    }
    for (f, found, false_alarms) in &report {
        assert!(*found, "{f}: the model never flagged the scan after learning");
        assert_eq!(*false_alarms, 0, "{f}: benign hosts of its second half were flagged");
    }
}

/// The harder case, kept visible: a *different* benign network after the
/// lead-in (1kxun's discovery traffic after a lead-in of web and SMB
/// traffic: one host and the /16 broadcast address) is novel to the model
/// and gets flagged. That is the
/// model working as designed (it learns the network it watches; see
/// `learning_a_captures_first_half_keeps_its_second_half_quiet`), but it is
/// why the model is off by default. Run with
/// `cargo test --release --test ml -- --ignored`.
#[test]
#[ignore]
fn benign_captures_after_the_lead_in_raise_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut noisy = Vec::new();
    for f in common::BENIGN {
        let got = outliers(dir.path(), Some(f));
        eprintln!("ml-benign | {f} | {got:?}");
        if !got.is_empty() {
            noisy.push((f, got));
        }
    }
    assert!(noisy.is_empty(), "{noisy:?}");
}

/// The behaviour captures (`captures/behaviour/README.md`: six minutes of
/// office traffic, then a slow or stealthy attack) with the default
/// configuration, the model's episodes alone: (file, actor, the attack's
/// first packet in seconds from the file's start, its targets).
const BEHAVIOUR_ATTACKS: [(&str, &str, f64, &[&str]); 6] = [
    ("lab_exfil_slow_new_dest.pcap", "10.78.1.10", 359.1, &["198.51.100.77"]),
    ("lab_exfil_burst.pcap", "10.78.1.11", 359.1, &["198.51.100.77"]),
    ("lab_lateral.pcap", "10.78.1.10", 359.1, &["10.78.1.21", "10.78.1.22", "10.78.1.23"]),
    ("lab_lateral.pcap", "10.78.1.11", 453.7, &["10.78.1.20"]),
    ("lab_beacon_http.pcap", "10.78.1.11", 359.5, &["203.0.113.66"]),
    ("lab_beacon_keepalive.pcap", "10.78.1.10", 358.9, &["203.0.113.66"]),
];

/// Seconds since the epoch of an event timestamp ("2026-12-03T06:52:43.000000Z").
fn epoch_seconds(ts: &str) -> f64 {
    let n = |a: usize, b: usize| ts[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let frac: f64 = ts[19..ts.len() - 1].parse::<f64>().unwrap_or(0.0);
    (days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)) as f64 + frac
}

/// (seconds from the file's first packet, host) of every behaviour_outlier
/// start of `file` replayed with the defaults and `workers`, and the events.
fn behaviour_outliers(file: &str, workers: &str) -> (Vec<(f64, String)>, String) {
    let path = cap(&format!("behaviour/{file}"));
    let t0 = read_pcap(&path)[0].0 as f64 / 1e6;
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["replay", "-q", "--workers", workers])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let starts = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "behaviour_outlier" && e["phase"] == "start")
        .map(|e| {
            let secs = epoch_seconds(e["timestamp"].as_str().unwrap());
            eprintln!("ml-behaviour | {file} | {:.1} s | {}", secs - t0, e["message"]);
            (secs - t0, e["src_ip"].as_str().unwrap_or("").to_string())
        })
        .collect();
    (starts, text)
}

/// The model's own-history head finds each behaviour attack (its actor or
/// target flagged after the attack began), the office's benign hosts are
/// never flagged (not in the six-minute lead-in, not after it, not in the
/// eight-minute benign capture), and the events are the same for 1 and 3
/// workers.
#[test]
fn behaviour_attacks_are_found_by_the_model_alone_and_the_office_is_not() {
    let (benign, _) = behaviour_outliers("lab_benign_office.pcap", "1");
    assert!(benign.is_empty(), "benign office flagged: {benign:?}");
    let mut found = 0;
    for file in [
        "lab_exfil_slow_new_dest.pcap",
        "lab_exfil_burst.pcap",
        "lab_lateral.pcap",
        "lab_beacon_http.pcap",
        "lab_beacon_keepalive.pcap",
    ] {
        let (starts, one) = behaviour_outliers(file, "1");
        let attacks: Vec<_> = BEHAVIOUR_ATTACKS.iter().filter(|a| a.0 == file).collect();
        let part_of = |(t, h): &(f64, String)| {
            attacks.iter().any(|(_, actor, at, targets)| {
                *t >= at - 1.0 && (h == actor || targets.contains(&h.as_str()))
            })
        };
        for (_, actor, at, targets) in &attacks {
            let hit =
                starts.iter().any(|(t, h)| *t >= at - 1.0 && (h == actor || targets.contains(&h.as_str())));
            eprintln!("ml-behaviour | {file} | {actor} | {}", if hit { "found" } else { "missed" });
            found += usize::from(hit);
        }
        let others: Vec<_> = starts.iter().filter(|s| !part_of(s)).collect();
        assert!(others.is_empty(), "{file}: hosts outside the attack flagged: {others:?}");
        let (_, three) = behaviour_outliers(file, "3");
        assert_eq!(one, three, "{file}: 1 and 3 workers differ");
    }
    eprintln!("ml-behaviour | found {found} of {}", BEHAVIOUR_ATTACKS.len());
    assert_eq!(found, BEHAVIOUR_ATTACKS.len());
}
