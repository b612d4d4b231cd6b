//! Behaviour families on lab captures made with real tools (see
//! `captures/behaviour/README.md`): each attack is found with the right
//! actor and target after a benign lead-in, and no benign capture raises
//! any of the three kinds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{cap, files_under};

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const KINDS: [&str; 3] = ["data_exfiltration", "lateral_movement", "beaconing"];

fn starts(path: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil")).args(["replay", "-q"]).arg(path).output().unwrap();
    // A damaged bundled file (a truncated last record) is a runtime error
    // after its events, not a usage error.
    assert!(out.status.code() != Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["phase"] == "start" && KINDS.contains(&e["kind"].as_str().unwrap_or("")))
        .collect()
}

/// The (kind, actor, target, severity) of every behaviour episode in `file`.
fn found(file: &str) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = starts(&cap(file))
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("kind"), s("src_ip"), s("dst_ip"), s("severity"))
        })
        .collect();
    v.sort();
    v
}

fn one(kind: &str, src: &str, dst: &str, severity: &str) -> (String, String, String, String) {
    (kind.into(), src.into(), dst.into(), severity.into())
}

#[test]
fn a_slow_upload_to_a_new_destination_is_exfiltration() {
    assert_eq!(
        found("behaviour/lab_exfil_slow_new_dest.pcap"),
        vec![one("data_exfiltration", "10.78.1.10", "198.51.100.77", "medium")]
    );
}

#[test]
fn a_short_burst_far_above_the_hosts_usual_is_exfiltration() {
    let f = found("behaviour/lab_exfil_burst.pcap");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].0.as_str(), f[0].1.as_str(), f[0].2.as_str()),
        ("data_exfiltration", "10.78.1.11", "198.51.100.77")
    );
}

#[test]
fn new_admin_peers_are_lateral_movement() {
    assert_eq!(
        found("behaviour/lab_lateral.pcap"),
        vec![
            one("lateral_movement", "10.78.1.10", "10.78.1.23", "high"),
            one("lateral_movement", "10.78.1.11", "10.78.1.20", "low"),
        ]
    );
}

#[test]
fn jittered_checkins_are_beacons_whether_new_connections_or_one_kept_alive() {
    for (file, src, port) in [
        ("behaviour/lab_beacon_http.pcap", "10.78.1.10", 8080),
        ("behaviour/lab_beacon_keepalive.pcap", "10.78.1.10", 443),
    ] {
        let s = starts(&cap(file));
        assert_eq!(s.len(), 1, "{file}: {s:#?}");
        let e = &s[0];
        assert_eq!(e["kind"], "beaconing");
        assert_eq!(e["dst_ip"], "203.0.113.66");
        assert_eq!(e["evidence"]["dst_port"], port, "{file}");
        let period = e["evidence"]["period_seconds"].as_f64().unwrap();
        assert!((8.0..=17.0).contains(&period), "{file}: period {period}");
        if file.ends_with("keepalive.pcap") {
            assert_eq!(e["src_ip"], src);
        } else {
            assert_eq!(e["src_ip"], "10.78.1.11");
        }
    }
}

#[test]
fn benign_traffic_raises_no_behaviour_episode() {
    let mut files = files_under(&cap("benign"), &["pcap", "pcapng"]);
    files.push(cap("behaviour/lab_benign_office.pcap"));
    for f in files {
        let s = starts(&f);
        assert!(s.is_empty(), "{}: {s:#?}", f.display());
    }
}

#[test]
fn learn_starts_a_sensor_warm() {
    // The lateral capture cut to 30 s before the attack: on its own, the
    // attacker is too new to judge (its own learning period).
    let frames = common::read_pcap(&cap("behaviour/lab_lateral.pcap"));
    let t0 = frames[0].0;
    let cut: Vec<_> = frames.into_iter().filter(|f| f.0 - t0 >= 329_000_000).collect();
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late.pcap");
    common::write_pcap(&late, &cut);
    let cold: Vec<_> = starts(&late).into_iter().filter(|e| e["src_ip"] == "10.78.1.10").collect();
    assert!(cold.is_empty(), "{cold:#?}");
    // Learned from the office's ordinary traffic first, the same attack is found.
    let state = dir.path().join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["learn", "-q", "--state-dir"])
        .arg(&state)
        .arg(cap("behaviour/lab_benign_office.pcap"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "learn raises no events");
    for f in ["baselines.json", "exfiltration.json", "lateral.json"] {
        assert!(state.join(f).exists(), "{f}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["replay", "-q", "--state-dir"])
        .arg(&state)
        .arg(&late)
        .output()
        .unwrap();
    let warm: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["phase"] == "start" && e["kind"] == "lateral_movement" && e["src_ip"] == "10.78.1.10")
        .collect();
    assert_eq!(warm.len(), 1, "{warm:#?}");
    assert_eq!(warm[0]["severity"], "high");
    assert!(warm[0]["evidence"]["usual_peers"].as_u64().unwrap() >= 1, "{:#}", warm[0]);
}

/// Behaviour starts of `file` under the configuration `toml`.
fn starts_with_config(file: &str, toml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .args(["replay", "-q", "-c"])
        .arg(&cfg)
        .arg(cap(file))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["phase"] == "start" && KINDS.contains(&e["kind"].as_str().unwrap_or("")))
        .collect()
}

#[test]
fn jump_hosts_and_allowlisted_destinations_are_tuned_out() {
    let jump =
        "[[hostgroup]]\nname = \"jump hosts\"\ncidrs = [\"10.78.1.10\"]\nskip = [\"lateral_movement\"]\n";
    let s = starts_with_config("behaviour/lab_lateral.pcap", jump);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["src_ip"], "10.78.1.11");
    let backup = "[[allow]]\ncidr = \"198.51.100.0/24\"\nkinds = [\"data_exfiltration\"]\nreason = \"offsite backup\"\n";
    let s = starts_with_config("behaviour/lab_exfil_burst.pcap", backup);
    assert!(s.is_empty(), "{s:#?}");
    let bad = "[[hostgroup]]\nname = \"x\"\ncidrs = [\"10.0.0.1\"]\nskip = [\"lateral\"]\n";
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil")).arg("check-config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hostgroup.skip"));
}
