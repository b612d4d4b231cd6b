//! Live capture for real: two network namespaces joined by a veth pair,
//! netvigil on one end, traffic from ping and curl against a Python HTTP
//! server on the other. Needs root and iproute2; skipped with a reason
//! otherwise (CI runs as root and installs the tools).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Namespaces and processes of one test, torn down on drop (even on panic).
struct Lab {
    ns: [String; 2],
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Prints past libtest's output capture, so a skip is always visible.
fn say_skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn skip_reason(tools: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root for network namespaces and capture".into());
    }
    for tool in tools {
        if !sh(&["sh", "-c", &format!("command -v {tool}")]) {
            return Some(format!("{tool} not installed (scripts/setup.sh test installs it)"));
        }
    }
    None
}

/// Builds namespaces `a` and `b` joined by veth, addresses 10.213.N.1 and .2.
fn lab(tag: &str, subnet: u8) -> Lab {
    let pid = std::process::id() % 100_000;
    let a = format!("nv{tag}a{pid}");
    let b = format!("nv{tag}b{pid}");
    let lab = Lab { ns: [a.clone(), b.clone()], children: Vec::new() };
    let va = format!("nv{tag}a{pid}");
    let vb = format!("nv{tag}b{pid}");
    let ipa = format!("10.213.{subnet}.1/24");
    let ipb = format!("10.213.{subnet}.2/24");
    for cmd in [
        vec!["ip", "netns", "add", &a],
        vec!["ip", "netns", "add", &b],
        vec!["ip", "link", "add", &va, "type", "veth", "peer", "name", &vb],
        vec!["ip", "link", "set", &va, "netns", &a],
        vec!["ip", "link", "set", &vb, "netns", &b],
        vec!["ip", "-n", &a, "addr", "add", &ipa, "dev", &va],
        vec!["ip", "-n", &b, "addr", "add", &ipb, "dev", &vb],
        vec!["ip", "-n", &a, "link", "set", &va, "up"],
        vec!["ip", "-n", &b, "link", "set", &vb, "up"],
        vec!["ip", "-n", &a, "link", "set", "lo", "up"],
        vec!["ip", "-n", &b, "link", "set", "lo", "up"],
    ] {
        assert!(sh(&cmd), "lab setup failed: {cmd:?}");
    }
    lab
}

fn start_sensor(ns: &str, iface: &str, dir: &std::path::Path) -> Child {
    start_sensor_with(ns, iface, dir, &[])
}

fn start_sensor_with(ns: &str, iface: &str, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_netvigil"), "live", "-v", "--interface", iface])
        .args(extra)
        .args(["--metrics-listen", "127.0.0.1:0", "--workers", "2", "--events"])
        .arg(dir.join("events.jsonl"))
        .arg("--summary-json")
        .arg(dir.join("summary.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log")).unwrap()))
        .spawn()
        .unwrap()
}

fn wait_for_log(dir: &std::path::Path, needle: &str) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "sensor never logged {needle:?}: {}",
        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
    );
}

/// Sends SIGINT/SIGTERM to the sensor and waits (bounded) for a clean exit.
fn stop(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    assert!(sh(&["kill", &format!("-{signal}"), &child.id().to_string()]));
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "sensor ignored SIG{signal}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `python3 -m http.server` on `ip:8080` in namespace `ns` (torn down with the lab).
fn serve_http(lab: &mut Lab, ns: &str, ip: &str, dir: &std::path::Path) {
    let server = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-m", "http.server", "8080", "--bind", ip])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    lab.children.push(server);
}

/// Fetches `http://ip:8080/` from namespace `ns` `n` times (retrying while the
/// server starts, bounded); returns how many fetches succeeded.
fn fetch(ns: &str, ip: &str, n: usize) -> usize {
    let url = format!("http://{ip}:8080/");
    let mut fetched = 0;
    for _ in 0..(n + 50) {
        if sh(&["ip", "netns", "exec", ns, "curl", "-sf", "-m", "5", "-o", "/dev/null", &url]) {
            fetched += 1;
            if fetched == n {
                break;
            }
        } else {
            std::thread::sleep(Duration::from_millis(100)); // server still starting
        }
    }
    fetched
}

#[test]
fn live_capture_sees_real_traffic_between_namespaces() {
    if let Some(why) = skip_reason(&["ip", "ping", "curl", "python3"]) {
        say_skipped("live_capture_sees_real_traffic_between_namespaces", &why);
        return;
    }
    let mut lab = lab("l", 1);
    let (a, b) = (lab.ns[0].clone(), lab.ns[1].clone());
    let dir = tempfile::tempdir().unwrap();
    serve_http(&mut lab, &b, "10.213.1.2", dir.path());
    let mut sensor = start_sensor(&a, &a, dir.path());
    wait_for_log(dir.path(), "capturing on");

    assert!(sh(&["ip", "netns", "exec", &a, "ping", "-c", "5", "-i", "0.2", "-W", "2", "10.213.1.2"]));
    let fetched = fetch(&a, "10.213.1.2", 3);
    assert_eq!(fetched, 3, "curl could not reach the HTTP server");
    std::thread::sleep(Duration::from_millis(500));

    let st = stop(&mut sensor, "INT");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(st.success(), "exit {st:?}: {log}");
    let summary = summary_of(dir.path());
    let p = &summary["protocols"];
    assert!(p["icmp"].as_u64().unwrap() >= 10, "5 echo requests and 5 replies: {summary}");
    assert!(p["tcp"].as_u64().unwrap() >= 3 * 6, "three HTTP exchanges: {summary}");
    assert!(summary["flows"]["created"].as_u64().unwrap() >= 4, "one ICMP + three TCP flows: {summary}");
    assert_eq!(summary["drops"]["queue_full"], 0);
    assert!(log.contains("netvigil summary"), "{log}");
}

#[test]
fn live_capture_stops_promptly_on_a_silent_link() {
    if let Some(why) = skip_reason(&["ip"]) {
        say_skipped("live_capture_stops_promptly_on_a_silent_link", &why);
        return;
    }
    let lab = lab("s", 2);
    let dir = tempfile::tempdir().unwrap();
    let mut sensor = start_sensor(&lab.ns[0], &lab.ns[0], dir.path());
    wait_for_log(dir.path(), "capturing on");
    std::thread::sleep(Duration::from_millis(300));
    let st = stop(&mut sensor, "TERM");
    assert!(st.success(), "{st:?}");
    assert!(dir.path().join("summary.json").exists(), "summary written on SIGTERM");
}

#[test]
fn live_capture_without_permission_is_one_clear_line() {
    if let Some(why) = skip_reason(&["setpriv"]) {
        say_skipped("live_capture_without_permission_is_one_clear_line", &why);
        return;
    }
    // Drop to nobody: no CAP_NET_RAW, so opening the device must fail cleanly.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .args([
            env!("CARGO_BIN_EXE_netvigil"),
            "live",
            "--interface",
            "lo",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("permission denied") && err.contains("CAP_NET_RAW"), "{err}");
}

/// A bounded nmap scan (`kind`: -sS, -sX…) of ports 1-300 from namespace `ns`.
fn nmap(ns: &str, kind: &str, target: &str) -> bool {
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "nmap",
        kind,
        "-Pn",
        "-n",
        "-p",
        "1-300",
        "--max-rate",
        "2000",
        "--max-retries",
        "1",
        target,
    ])
}

/// The run's `--summary-json`.
fn summary_of(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn events_of(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn live_nmap_scans_are_one_port_scan_episode_and_curl_is_quiet() {
    if let Some(why) = skip_reason(&["ip", "nmap", "curl", "python3"]) {
        say_skipped("live_nmap_scans_are_one_port_scan_episode_and_curl_is_quiet", &why);
        return;
    }
    let mut lab = lab("n", 3);
    let (a, b) = (lab.ns[0].clone(), lab.ns[1].clone());
    let dir = tempfile::tempdir().unwrap();
    serve_http(&mut lab, &b, "10.213.3.2", dir.path());

    // Ordinary traffic first, watched by its own sensor: no episode at all.
    let quiet = tempfile::tempdir().unwrap();
    let mut sensor = start_sensor(&b, &b, quiet.path());
    wait_for_log(quiet.path(), "capturing on");
    let fetched = fetch(&a, "10.213.3.2", 30);
    assert_eq!(fetched, 30);
    assert!(stop(&mut sensor, "INT").success());
    let ev = events_of(quiet.path());
    assert!(ev.is_empty(), "30 HTTP fetches raised {ev:#?}");

    // Then two nmap scans against the target while the sensor watches it.
    let mut sensor = start_sensor(&b, &b, dir.path());
    wait_for_log(dir.path(), "capturing on");
    for scan in ["-sS", "-sX"] {
        assert!(nmap(&a, scan, "10.213.3.2"));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(stop(&mut sensor, "INT").success());
    let ev = events_of(dir.path());
    let scans: Vec<&serde_json::Value> =
        ev.iter().filter(|e| e["kind"] == "port_scan" && e["phase"] == "start").collect();
    assert_eq!(scans.len(), 1, "one episode for both scans: {ev:#?}");
    assert_eq!(scans[0]["src_ip"], "10.213.3.1");
    assert_eq!(scans[0]["dst_ip"], "10.213.3.2");
    let end = ev.iter().find(|e| e["kind"] == "port_scan" && e["phase"] == "end").unwrap();
    assert!(end["observed"].as_f64().unwrap() >= 250.0, "{end}");
    assert!(ev.iter().any(|e| e["kind"] == "tcp_invalid_flags"), "the Xmas probes are invalid flags too");
}

#[test]
fn interface_going_down_ends_capture_with_a_clear_error_and_a_summary() {
    if let Some(why) = skip_reason(&["ip", "ping"]) {
        say_skipped("interface_going_down_ends_capture_with_a_clear_error_and_a_summary", &why);
        return;
    }
    let lab = lab("d", 4);
    let (a, b) = (lab.ns[0].clone(), lab.ns[1].clone());
    let dir = tempfile::tempdir().unwrap();
    let mut sensor = start_sensor(&b, &b, dir.path());
    wait_for_log(dir.path(), "capturing on");
    assert!(sh(&["ip", "netns", "exec", &a, "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.213.4.2"]));
    assert!(sh(&["ip", "-n", &b, "link", "set", &b, "down"]));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = sensor.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(5) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    match status {
        // libpcap reports the link going down: a runtime failure, summary kept.
        Some(st) => {
            assert_eq!(st.code(), Some(1), "{log}");
            assert!(log.contains("went down") || log.contains("capture on"), "{log}");
            assert!(log.contains("netvigil summary"), "{log}");
        }
        // Some kernels just go quiet (libpcap's poll never wakes): the
        // sensor must still stop cleanly on request, summary written.
        None => assert!(stop(&mut sensor, "TERM").success(), "{log}"),
    }
    assert!(dir.path().join("summary.json").exists());
}

#[test]
fn live_capture_drops_root_after_opening_the_device() {
    if let Some(why) = skip_reason(&["ip", "ping"]) {
        say_skipped("live_capture_drops_root_after_opening_the_device", &why);
        return;
    }
    let lab = lab("u", 5);
    let (a, b) = (lab.ns[0].clone(), lab.ns[1].clone());
    let dir = tempfile::tempdir().unwrap();
    // The summary is written by the unprivileged process: give it a writable place.
    let out = tempfile::tempdir().unwrap();
    assert!(sh(&["chmod", "777", out.path().to_str().unwrap()]));
    let mut sensor = Command::new("ip")
        .args(["netns", "exec", &b, env!("CARGO_BIN_EXE_netvigil"), "live", "-v", "--interface", &b])
        .args(["--user", "nobody", "--metrics-listen", "127.0.0.1:0", "--summary-json"])
        .arg(out.path().join("summary.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("stderr.log")).unwrap()))
        .spawn()
        .unwrap();
    wait_for_log(dir.path(), "now running as nobody");
    let status = std::fs::read_to_string(format!("/proc/{}/status", sensor.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == "65534"), "{uid_line}");
    assert!(sh(&["ip", "netns", "exec", &a, "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.213.5.2"]));
    std::thread::sleep(Duration::from_millis(300));
    assert!(stop(&mut sensor, "INT").success());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap()).unwrap();
    assert!(s["protocols"]["icmp"].as_u64().unwrap() >= 6, "still capturing after the drop: {s}");
    let (c, err) = {
        let o = Command::new(env!("CARGO_BIN_EXE_netvigil"))
            .args([
                "live",
                "--interface",
                "lo",
                "--user",
                "no-such-user-nv",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    assert_eq!(c, Some(2), "{err}");
    assert!(err.contains("no such user"), "{err}");
}

#[test]
fn fanout_capture_threads_share_the_traffic_and_still_see_one_scan() {
    if let Some(why) = skip_reason(&["ip", "nmap", "curl", "python3"]) {
        say_skipped("fanout_capture_threads_share_the_traffic_and_still_see_one_scan", &why);
        return;
    }
    let mut lab = lab("f", 6);
    let (a, b) = (lab.ns[0].clone(), lab.ns[1].clone());
    let dir = tempfile::tempdir().unwrap();
    serve_http(&mut lab, &b, "10.213.6.2", dir.path());
    let mut sensor = start_sensor_with(&b, &b, dir.path(), &["--capture-threads", "3"]);
    wait_for_log(dir.path(), "capturing on");
    assert_eq!(fetch(&a, "10.213.6.2", 20), 20);
    assert!(nmap(&a, "-sS", "10.213.6.2"));
    std::thread::sleep(Duration::from_millis(300));
    let st = stop(&mut sensor, "INT");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(st.success(), "exit {st:?}: {log}");
    assert!(log.contains("3 capture threads in AF_PACKET fanout group"), "{log}");
    let summary = summary_of(dir.path());
    // Each packet reaches one member: 20 HTTP exchanges (≥ 6 packets each)
    // and ~600 scan packets, counted once, not three times.
    let tcp = summary["protocols"]["tcp"].as_u64().unwrap();
    assert!((20 * 6..1500).contains(&tcp), "{summary}");
    assert_eq!(summary["drops"]["queue_full"], 0);
    let ev = events_of(dir.path());
    let scans: Vec<&serde_json::Value> =
        ev.iter().filter(|e| e["kind"] == "port_scan" && e["phase"] == "start").collect();
    assert_eq!(scans.len(), 1, "{ev:#?}");
    assert_eq!(scans[0]["src_ip"], "10.213.6.1");
    assert!(ev.iter().all(|e| e["kind"] == "port_scan"), "the HTTP fetches raised something: {ev:#?}");
}
