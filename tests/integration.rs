//! End-to-end tests: the real binary over the bundled real captures.

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netvigil"));
    c.env_remove("NETVIGIL_LOG");
    c
}

fn cap(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(rel)
}

struct Run {
    out: Output,
    events: Vec<Value>,
    summary: Value,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    fn kinds(&self, phase: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["phase"] == phase)
            .map(|e| e["kind"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

fn replay(files: &[PathBuf], extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out =
        bin().arg("replay").args(extra).arg("--summary-json").arg(&summary).args(files).output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect();
    let summary = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    Run { out, events, summary }
}

#[test]
fn packet_counts_match_capinfos() {
    // Counts from `capinfos -c` (see captures/README.md).
    let expected = [
        ("benign/chrissanders_http_espn.pcapng", 956),
        ("linktypes/ndpi_dlt_ppp.pcap", 1),
        ("linktypes/tcpdump_LINKTYPE_IPV4.pcap", 1),
        ("linktypes/tcpdump_LINKTYPE_RAW_ipv4.pcap", 1),
        ("linktypes/tcpdump_empty.pcap", 0),
        ("linktypes/tcpdump_empty.pcapng", 0),
        ("linktypes/tcpdump_tcp-handshake-nano.pcap", 3),
        ("linktypes/tcpdump_timestamp_invalid_micro.pcap", 3),
        ("linktypes/tcpdump_unsupported-link-type-160.pcap", 1),
        ("linktypes/zeek_linux_dlt_sll2.pcap", 6),
        ("linktypes/zeek_linuxsll-arp.pcap", 12),
        ("malformed/suricata_decode-too-small.pcap", 8),
        ("malformed/suricata_ip_secopt.pcap", 3),
        ("malformed/tcpdump_ipv4_invalid_hdr_length.pcap", 1),
        ("malformed/tcpdump_tcp_header_heapoverflow.pcap", 1),
        ("malformed/zeek_trunc-hdr.pcap", 1),
        ("misuse/esnet_one_way_all_flags.pcap", 63),
        ("misuse/tcpdump_tcp_eight_lowest_weight_flags_set.pcap", 1),
        ("scans/chrissanders_activeosfingerprinting.pcapng", 48),
        ("scans/esnet_nmap_80_all.pcap", 431),
        ("scans/evilfingers_XMAS_TREE_SCAN.pcap", 2000),
    ];
    for (f, n) in expected {
        let r = replay(&[cap(f)], &["--workers", "2"]);
        assert_eq!(r.code(), 0, "{f}: {}", r.stderr());
        assert_eq!(r.summary["packets"], n, "{f}");
    }
}

#[test]
fn flows_match_tshark_conversations() {
    // tshark -q -z conv,tcp / conv,udp: 25 TCP and 14 UDP conversations.
    let r = replay(&[cap("benign/chrissanders_http_espn.pcapng")], &[]);
    assert_eq!(r.summary["flows"]["created"], 39);
    assert_eq!(r.summary["protocols"]["tcp"], 928);
    assert_eq!(r.summary["protocols"]["udp"], 28);
    assert!(r.events.is_empty(), "benign browsing raised {:?}", r.events);
}

#[test]
fn all_flag_combinations_one_episode_exactly_the_illegal_ones() {
    let r = replay(&[cap("misuse/esnet_one_way_all_flags.pcap")], &[]);
    assert_eq!(r.kinds("start"), ["tcp_invalid_flags"]);
    assert_eq!(r.kinds("end"), ["tcp_invalid_flags"]);
    let end = r.events.iter().find(|e| e["phase"] == "end").unwrap();
    // 63 combinations of SYN/ACK/FIN/RST/URG/PSH (all but "all six"): 22 of the
    // 64 are legal, so 41 of these 63 are not.
    assert_eq!(end["evidence"]["packets"], 41);
    assert_eq!(end["src_ip"], "10.0.0.10");
    assert_eq!(end["dst_ip"], "10.0.0.80");
    assert_eq!(end["category"], "misuse");
    let start = &r.events[0];
    assert_eq!(start["episode_id"], end["episode_id"]);
    assert!(start["community_id"].as_str().unwrap().starts_with("1:"));
    assert!(start["message"].as_str().unwrap().contains("10.0.0.10"));
}

#[test]
fn eight_flags_and_land() {
    let r = replay(&[cap("misuse/tcpdump_tcp_eight_lowest_weight_flags_set.pcap")], &[]);
    assert_eq!(r.kinds("start"), ["tcp_invalid_flags"]);
    assert_eq!(r.events[0]["evidence"]["flag_sets"][0], "all_flags");
    let r = replay(&[cap("malformed/tcpdump_tcp_header_heapoverflow.pcap")], &[]);
    assert!(r.kinds("start").contains(&"land".to_string()), "{:?}", r.events);
    assert_eq!(r.summary["decode_anomalies"]["truncated_l4"], 1);
}

#[test]
fn xmas_scan_is_one_episode_not_a_thousand() {
    let r = replay(&[cap("scans/evilfingers_XMAS_TREE_SCAN.pcap")], &[]);
    // One episode per kind: the misuse (how) and the scan (what).
    let mut starts = r.kinds("start");
    starts.sort();
    assert_eq!(starts, ["port_scan", "tcp_invalid_flags"], "{:?}", r.events);
    assert_eq!(r.events.len(), 4);
    let flags = r.events.iter().find(|e| e["kind"] == "tcp_invalid_flags" && e["phase"] == "end").unwrap();
    assert_eq!(flags["observed"], 1000.0);
    assert_eq!(flags["severity"], "high");
    assert_eq!(flags["evidence"]["flag_sets"][0], "xmas");
    let scan = r.events.iter().find(|e| e["kind"] == "port_scan" && e["phase"] == "end").unwrap();
    assert!(scan["observed"].as_f64().unwrap() >= 900.0, "{scan}");
}

#[test]
fn single_port_nmap_is_quiet() {
    let r = replay(&[cap("scans/esnet_nmap_80_all.pcap")], &[]);
    assert_eq!(r.code(), 0);
    assert!(r.kinds("start").iter().all(|k| k != "port_scan"), "{:?}", r.events);
}

#[test]
fn other_link_types_decode() {
    let r = replay(&[cap("linktypes/zeek_linux_dlt_sll2.pcap")], &[]);
    assert_eq!(r.summary["protocols"]["icmp"], 4, "{}", r.summary); // 2 ICMP echo + 2 ICMPv6
    let r = replay(
        &[cap("linktypes/tcpdump_LINKTYPE_RAW_ipv4.pcap"), cap("linktypes/tcpdump_LINKTYPE_IPV4.pcap")],
        &[],
    );
    assert_eq!(r.summary["protocols"]["udp"], 2);
    let r = replay(&[cap("linktypes/ndpi_dlt_ppp.pcap")], &[]);
    assert_eq!(r.summary["protocols"]["udp"], 1);
    let r = replay(&[cap("linktypes/zeek_linuxsll-arp.pcap")], &[]);
    assert_eq!(r.summary["protocols"]["non_ip"], 12);
    assert_eq!(r.summary["decode_anomalies"], serde_json::json!({}));
    let r = replay(&[cap("linktypes/tcpdump_tcp-handshake-nano.pcap")], &[]);
    assert_eq!(r.summary["flows"]["created"], 1);
}

#[test]
fn unknown_link_type_is_reported_once_not_fatal() {
    let r = replay(&[cap("linktypes/tcpdump_unsupported-link-type-160.pcap")], &[]);
    assert_eq!(r.code(), 0);
    assert_eq!(r.summary["unsupported_link_types"]["160"], 1);
    let err = r.stderr();
    assert_eq!(err.matches("link type 160 is not supported").count(), 1, "{err}");
}

#[test]
fn malformed_packets_are_counted() {
    let r = replay(
        &[
            cap("malformed/tcpdump_ipv4_invalid_hdr_length.pcap"),
            cap("malformed/suricata_decode-too-small.pcap"),
            cap("malformed/zeek_trunc-hdr.pcap"),
            cap("malformed/suricata_ip_secopt.pcap"),
        ],
        &[],
    );
    assert_eq!(r.code(), 0, "{}", r.stderr());
    let d = &r.summary["decode_anomalies"];
    assert_eq!(d["ipv4_bad_ihl"], 1);
    assert_eq!(d["truncated_l4"], 6);
    assert_eq!(d["truncated_link"], 1);
    assert_eq!(d["ipv4_bad_options"], 1);
}

#[test]
fn empty_files_are_fine() {
    let r = replay(&[cap("linktypes/tcpdump_empty.pcap"), cap("linktypes/tcpdump_empty.pcapng")], &[]);
    assert_eq!(r.code(), 0, "{}", r.stderr());
    assert_eq!(r.summary["packets"], 0);
}

#[test]
fn truncated_savefile_keeps_events_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(cap("scans/evilfingers_XMAS_TREE_SCAN.pcap")).unwrap();
    let cut = dir.path().join("cut.pcap");
    // 24-byte header, then 2,000 records of 16 + 57 bytes: stop inside record ~700.
    std::fs::write(&cut, &whole[..24 + 700 * 73 + 30]).unwrap();
    let r = replay(std::slice::from_ref(&cut), &[]);
    assert_eq!(r.code(), 1);
    let err = r.stderr();
    assert!(
        err.lines().any(|l| l.starts_with("netvigil: error:") && l.contains("damaged after 700 packets")),
        "{err}"
    );
    assert_eq!(r.summary["packets"], 700);
    let flags: Vec<&Value> = r.events.iter().filter(|e| e["kind"] == "tcp_invalid_flags").collect();
    assert_eq!(flags.len(), 2, "start and end");
    // tshark -Y "frame.number<=700 && tcp.flags==0x029" counts 351 probes.
    assert_eq!(flags[1]["evidence"]["packets"], 351);
}

#[test]
fn output_is_identical_for_any_worker_count() {
    let files = [
        cap("benign/chrissanders_http_espn.pcapng"),
        cap("misuse/esnet_one_way_all_flags.pcap"),
        cap("scans/chrissanders_activeosfingerprinting.pcapng"),
        cap("scans/evilfingers_XMAS_TREE_SCAN.pcap"),
        cap("malformed/tcpdump_tcp_header_heapoverflow.pcap"),
    ];
    let one = replay(&files, &["--workers", "1"]);
    let three = replay(&files, &["--workers", "3"]);
    assert!(!one.out.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&one.out.stdout), String::from_utf8_lossy(&three.out.stdout));
    assert_eq!(one.summary["flows"]["created"], three.summary["flows"]["created"]);
}

#[test]
fn events_file_and_pacing() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("events.jsonl");
    let out = bin()
        .args(["replay", "-q", "--speed", "1000", "--events"])
        .arg(&ev)
        .arg(cap("misuse/tcpdump_tcp_eight_lowest_weight_flags_set.pcap"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&ev).unwrap().lines().count(), 2);
}

fn run_err(args: &[&str]) -> (i32, String) {
    let out = bin().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn user_errors_are_one_clear_line() {
    let readme = cap("README.md");
    let dir = cap("");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["replay".into(), "/nonexistent/x.pcap".into()], 2, "no such file"),
        (vec!["replay".into(), dir.display().to_string()], 2, "is a directory"),
        (vec!["replay".into(), readme.display().to_string()], 2, "cannot read as a capture file"),
        (
            vec!["replay".into(), "--bpf".into(), "tcp and and".into(), readme.display().to_string()],
            2,
            "bad --bpf filter",
        ),
        (
            vec![
                "live".into(),
                "--interface".into(),
                "nv-no-such0".into(),
                "--metrics-listen".into(),
                "127.0.0.1:0".into(),
            ],
            2,
            "nv-no-such0",
        ),
    ];
    for (args, code, needle) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (c, err) = run_err(&a);
        assert_eq!(c, code, "{a:?}: {err}");
        assert!(err.contains(needle), "{a:?}: {err}");
        assert_eq!(err.lines().count(), 1, "exactly one line: {a:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    }
    let (c, err) = run_err(&["replay", "--no-such-flag", "x.pcap"]);
    assert_eq!(c, 2);
    assert!(err.contains("--no-such-flag"));
    let (c, _) = run_err(&["replay"]);
    assert_eq!(c, 2);
}

#[test]
fn config_is_checked_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[flow]\nmax_flows = 5000\n").unwrap();
    let out = bin().arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_flows = 5000"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[flow]\nmax_flowz = 5000\n").unwrap();
    let (c, err) = run_err(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(c, 2);
    assert!(err.contains("max_flowz") && err.contains("bad.toml"), "{err}");
    let (c, err) = run_err(&["replay", "-c", bad.to_str().unwrap(), "x.pcap"]);
    assert_eq!(c, 2, "{err}");
}

#[test]
fn closed_stdout_exits_cleanly() {
    let mut child = bin()
        .args(["replay", "-q"])
        .arg(cap("misuse/esnet_one_way_all_flags.pcap"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn shipped_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/netvigil.toml");
    let out = bin().arg("check-config").arg(&example).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
