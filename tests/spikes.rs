//! Statistical detection on real flood and benign captures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{cap, read_pcap, write_pcap};

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn replay(files: &[PathBuf], extra: &[&str]) -> (Vec<Value>, Value, i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("s.json");
    let out = Command::new(env!("CARGO_BIN_EXE_netvigil"))
        .arg("replay")
        .args(extra)
        .arg("--summary-json")
        .arg(&summary)
        .args(files)
        .output()
        .unwrap();
    let events =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let s = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    (events, s, out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn secs(ts: &str) -> f64 {
    // RFC 3339 with microseconds, UTC: compare within one day is enough here.
    let t = &ts[11..ts.len() - 1];
    let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    let day: f64 = ts[8..10].parse().unwrap();
    day * 86_400.0 + p[0] * 3600.0 + p[1] * 60.0 + p[2]
}

fn spike_starts(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["phase"] == "start" && e["category"] == "spike").collect()
}

#[test]
fn every_corpus_flood_is_one_episode_on_the_right_target_within_5s() {
    // (capture, kind, target, seconds from first packet to attack start) from the MANIFEST.
    let cases = [
        ("floods/stopddos_pkt.TCP.synflood.spoofed.pcap", "syn_flood", "10.10.10.10", 0.0),
        ("floods/softvulnsec_syn_flood.pcap", "syn_flood", "10.128.0.2", 0.0),
        ("floods/softvulnsec_icmp_flood.pcap", "icmp_flood", "10.128.0.2", 0.0),
        ("floods/softvulnsec_udp_flood.pcap", "udp_flood", "235.127.67.235", 0.0),
        ("floods/stopddos_amp.TCP.reflection.SYNACK.pcap", "amplification", "10.10.10.10", 0.0),
        ("floods/stopddos_amp.UDP.isakmp.pcap", "amplification", "10.10.10.10", 0.0),
        ("floods/stopddos_amp.UDP.snmp.src161.pcapng", "amplification", "10.10.10.10", 0.0),
        ("floods/stopddos_amp.dns.RRSIG.fragmented.pcap", "amplification", "10.10.10.10", 0.0),
        ("floods/suricata_denial6-5.pcap", "icmp_flood", "2001:db8:1::1", 3.07),
        ("floods/suricata_dhcp-request-flood.pcap", "udp_flood", "255.255.255.255", 0.0),
        ("floods/suricata_rsmurf6.pcap", "icmp_flood", "ff02::1", 0.0),
    ];
    for (f, kind, target, attack_at) in cases {
        let (events, summary, code, err) = replay(&[cap(f)], &["--workers", "2"]);
        assert_eq!(code, 0, "{f}: {err}");
        let starts = spike_starts(&events);
        assert_eq!(starts.len(), 1, "{f}: {starts:#?}");
        let e = starts[0];
        assert_eq!(e["kind"], kind, "{f}");
        assert_eq!(e["dst_ip"], target, "{f}");
        let delay = secs(e["timestamp"].as_str().unwrap())
            - secs(summary["first_packet"].as_str().unwrap())
            - attack_at;
        assert!(delay <= 5.0, "{f}: detected {delay:.1} s after the attack began");
        for field in ["observed", "threshold", "score", "unit", "message", "evidence", "severity"] {
            assert!(!e[field].is_null(), "{f}: missing {field}");
        }
        let ends =
            events.iter().filter(|x| x["phase"] == "end" && x["episode_id"] == e["episode_id"]).count();
        assert_eq!(ends, 1, "{f}");
    }
}

/// Lab floods of the shapes a per-second SYN line missed: a half-second
/// burst from one source, connections that complete, and Slowloris.
#[test]
fn bursts_completed_connection_floods_and_slow_http() {
    let one = |f: &str, kind: &str| {
        let (events, _, code, err) = replay(&[cap(f)], &["--workers", "2"]);
        assert_eq!(code, 0, "{f}: {err}");
        let starts: Vec<&Value> = spike_starts(&events);
        assert_eq!(starts.len(), 1, "{f}: {starts:#?}");
        let e = starts[0].clone();
        assert_eq!(
            (e["kind"].as_str(), e["src_ip"].as_str(), e["dst_ip"].as_str()),
            (Some(kind), Some("10.77.0.1"), Some("10.77.0.2")),
            "{f}"
        );
        e
    };
    // 3,000 SYNs in 0.53 s, each answered by a SYN-ACK and reset: never
    // completed, over before three seconds of persistence could count.
    let e = one("lab/syn_burst_short.pcap", "syn_flood");
    assert_eq!(e["evidence"]["syn_in"], 3001, "{e}");
    assert!(e["evidence"]["opened_by"].as_str().unwrap().contains("burst"), "{e}");
    // 250 completed connections a second for 4 s after 30 s of one a second.
    let e = one("lab/conn_flood_completed.pcap", "connection_flood");
    assert!(e["observed"].as_f64().unwrap() >= 249.0, "{e}");
    // 250 connections held open with a request that never ends.
    let e = one("lab/slowloris.pcap", "slow_http");
    assert_eq!(e["evidence"]["pending_connections"], 250, "{e}");
    assert_eq!(e["evidence"]["server_port"], 80, "{e}");
}

/// Spoofed random sources toward random addresses of one /24: no host is
/// over any line, the prefix is.
#[test]
fn carpet_bombing_is_one_episode_for_the_prefix() {
    for (f, kind, prefix) in
        [("lab/carpet_udp.pcap", "udp_flood", "10.77.5.0"), ("lab/carpet_syn.pcap", "syn_flood", "10.77.6.0")]
    {
        let (events, _, code, err) = replay(&[cap(f)], &["--workers", "2"]);
        assert_eq!(code, 0, "{f}: {err}");
        let starts = spike_starts(&events);
        assert_eq!(starts.len(), 1, "{f}: {starts:#?}");
        let e = starts[0];
        assert_eq!((e["kind"].as_str(), e["dst_ip"].as_str()), (Some(kind), Some(prefix)), "{f}");
        assert!(e["evidence"]["hosts_hit"].as_u64().unwrap() >= 200, "{f}: {e}");
        // The forged multicast sources are one misuse episode, not one per pair.
        let invalid =
            events.iter().filter(|x| x["phase"] == "start" && x["kind"] == "invalid_source").count();
        assert_eq!(invalid, 1, "{f}");
    }
}

#[test]
fn benign_captures_raise_no_spike() {
    for f in common::BENIGN {
        let (events, _, _, _) = replay(&[cap(f)], &[]);
        assert!(spike_starts(&events).is_empty(), "{f}: {:#?}", spike_starts(&events));
    }
}

#[test]
fn long_benign_background_then_a_flood_is_one_episode_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let bg = read_pcap(&cap("benign/chrissanders_http_espn.pcapng"));
    let flood = read_pcap(&cap("floods/softvulnsec_syn_flood.pcap"));
    let t0 = bg[0].0;
    let span = bg.last().unwrap().0 - t0 + 500_000;
    let mut frames = Vec::new();
    // Ten minutes of browsing (the capture looped with shifted timestamps).
    let loops = 600_000_000 / span;
    for i in 0..loops {
        for (t, d, l) in &bg {
            frames.push((t - t0 + i * span + 1_000_000_000_000, d.clone(), *l));
        }
    }
    let attack_at = frames.last().unwrap().0 + 2_000_000;
    let f0 = flood[0].0;
    for (t, d, l) in &flood {
        frames.push((t - f0 + attack_at, d.clone(), *l));
    }
    let path = dir.path().join("mixed.pcap");
    write_pcap(&path, &frames);
    let (events, summary, code, err) = replay(&[path], &["--workers", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["packets"].as_u64().unwrap() as usize, frames.len());
    let starts = spike_starts(&events);
    assert_eq!(starts.len(), 1, "{starts:#?}");
    assert_eq!(starts[0]["kind"], "syn_flood");
    assert_eq!(starts[0]["dst_ip"], "10.128.0.2");
    // Both times fall on the same day (1970-01-12): compare seconds of day.
    let at = secs(starts[0]["timestamp"].as_str().unwrap()) % 86_400.0;
    let attack = (attack_at as f64 / 1e6) % 86_400.0;
    let delay = at - attack;
    assert!((0.0..=5.0).contains(&delay), "delay {delay}");
}

#[test]
fn baselines_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let sd = state.to_str().unwrap();
    let (_, s1, c1, e1) = replay(&[cap("benign/zeek_smb3_multichannel.pcap")], &["--state-dir", sd]);
    assert_eq!(c1, 0, "{e1}");
    let hosts = s1["baselines"]["hosts"].as_u64().unwrap();
    assert!(hosts >= 2, "{s1}");
    assert!(state.join("baselines.json").exists());
    let (_, s2, c2, _) = replay(&[cap("benign/zeek_smb3_multichannel.pcap")], &["--state-dir", sd]);
    assert_eq!(c2, 0);
    assert_eq!(s2["baselines"]["restored"].as_u64().unwrap(), hosts);
    // A corrupt file is set aside with a warning, never fatal.
    std::fs::write(state.join("baselines.json"), "{oops").unwrap();
    let (_, s3, c3, e3) = replay(&[cap("benign/zeek_smb3_multichannel.pcap")], &["--state-dir", sd]);
    assert_eq!(c3, 0, "{e3}");
    assert_eq!(s3["baselines"]["restored"], 0);
    assert!(e3.contains("corrupt") && e3.contains("bad-1"), "{e3}");
}
