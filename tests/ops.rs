//! Operations, checked by the real tools: a Prometheus server scraping a
//! paced replay, promtool on the exposition and the alert rules, every
//! dashboard and rule expression returning data, systemd-analyze on the
//! unit, SIGHUP reload, and the install step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child on drop (tests must not leave servers behind).
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl").args(["-sf", "-m", "5", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn prom_query(port: u16, q: &str, at: f64) -> Value {
    let out = Command::new("curl")
        .args(["-sf", "-m", "10", "--get", &format!("http://127.0.0.1:{port}/api/v1/query")])
        .arg("--data-urlencode")
        .arg(format!("query={q}"))
        .arg("--data-urlencode")
        .arg(format!("time={at}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "query failed: {q}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every PromQL expression of the dashboard and the alert rules; alert
/// comparisons are stripped so the expression must return the measured value.
fn expressions() -> Vec<String> {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("systemd/grafana/netvigil-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .map(|e| e.replace("$instance", ".*"))
        .collect();
    let rules = std::fs::read_to_string(root().join("systemd/prometheus/netvigil-rules.yml")).unwrap();
    for line in rules.lines() {
        if let Some(e) = line.trim().strip_prefix("expr: ") {
            let base = e
                .rsplit_once(" == ")
                .or_else(|| e.rsplit_once(" > "))
                .map(|(b, _)| b.to_string())
                .unwrap_or_else(|| e.to_string());
            exprs.push(base);
        }
    }
    exprs
}

#[test]
fn prometheus_scrapes_a_paced_replay_and_every_query_returns_data() {
    for tool in ["prometheus", "promtool", "curl"] {
        if !have(tool) {
            skip(
                "prometheus_scrapes_a_paced_replay_and_every_query_returns_data",
                &format!("{tool} not installed"),
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (mport, pport) = (free_port(), free_port());
    let rules = root().join("systemd/prometheus/netvigil-rules.yml");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: netvigil\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let prom = Guard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("prometheus.log")).unwrap()))
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while http_get(&format!("http://127.0.0.1:{pport}/-/ready")).is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "prometheus did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Prometheus hands discovered targets to its scrapers in batches (every
    // 5 s): wait until it has tried the (not yet running) sensor once.
    let t0 = Instant::now();
    loop {
        let t = http_get(&format!("http://127.0.0.1:{pport}/api/v1/targets")).unwrap_or_default();
        if t.contains("\"health\":\"down\"") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "prometheus never tried the target: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // 12,035 ICMP packets over 4.9 s of packet time, replayed at twice real time;
    // the endpoint stays up 5 s afterwards so the last scrape sees the final counts.
    let mut sensor = Guard(
        Command::new(env!("CARGO_BIN_EXE_netvigil"))
            .args(["replay", "-q", "--speed", "2", "--metrics-listen", &format!("127.0.0.1:{mport}")])
            .args(["--metrics-linger", "5"])
            .arg(root().join("captures/floods/softvulnsec_icmp_flood.pcap"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(3500));
    let exposition = http_get(&format!("http://127.0.0.1:{mport}/metrics")).expect("metrics endpoint");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool reports: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Queries are evaluated while the sensor is still up (lingering): once it
    // exits, Prometheus marks its series stale, as it should.
    std::thread::sleep(Duration::from_millis(2000));
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let t0 = Instant::now();
    while sensor.0.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "replay did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = prom_query(pport, "sum(netvigil_packets_total)", at);
    let got = v["data"]["result"][0]["value"][1].as_str().unwrap_or("none").to_string();
    assert_eq!(got, "12035", "Prometheus scraped {v}");
    let mut empty = Vec::new();
    for e in expressions() {
        let r = prom_query(pport, &e, at);
        if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
            empty.push(e);
        }
    }
    assert!(empty.is_empty(), "expressions without data: {empty:#?}");
    drop(prom);
}

#[test]
fn alert_rules_pass_promtool() {
    if !have("promtool") {
        skip("alert_rules_pass_promtool", "promtool not installed");
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join("systemd/prometheus/netvigil-rules.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    if !have("systemd-analyze") {
        skip("systemd_unit_verifies_and_is_hardened", "systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(root().join("systemd/netvigil.service"))
        .unwrap()
        .replace("/usr/local/bin/netvigil", env!("CARGO_BIN_EXE_netvigil"));
    let path = dir.path().join("netvigil.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("").to_string();
    assert!(level.contains(" OK") || level.contains("SAFE"), "{level}");
}

#[test]
fn sighup_reloads_thresholds_and_reopens_events_keeping_state() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("netvigil.toml");
    let events = dir.path().join("events.jsonl");
    let summary = dir.path().join("summary.json");
    std::fs::write(&cfg, "[misuse]\nenabled = false\n").unwrap();
    // 63 invalid-flag probes spread over 45.6 s, replayed at 5x (about 9 s).
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_netvigil"))
            .args(["replay", "-q", "--speed", "5", "-c"])
            .arg(&cfg)
            .arg("--events")
            .arg(&events)
            .arg("--summary-json")
            .arg(&summary)
            .arg(root().join("captures/misuse/esnet_one_way_all_flags.pcap"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    // logrotate moves the file, then HUP: events must follow to a new file.
    std::fs::rename(&events, dir.path().join("events.jsonl.1")).unwrap();
    std::fs::write(&cfg, "[misuse]\nenabled = true\n").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&cfg, "[misuse]\nenabld = true\n").unwrap(); // typo: must be refused
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "replay did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("reload failed") && stderr.contains("enabld"), "{stderr}");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["reloads"]["applied"], 1, "{s}");
    assert_eq!(s["reloads"]["rejected"], 1, "{s}");
    assert_eq!(s["flows"]["created"], 63, "flow state survived the reloads: {s}");
    let ev: Vec<Value> =
        std::fs::read_to_string(&events).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let end = ev
        .iter()
        .find(|e| e["kind"] == "tcp_invalid_flags" && e["phase"] == "end")
        .expect("rules on after reload");
    let n = end["evidence"]["packets"].as_u64().unwrap();
    assert!(n > 0 && n < 41, "only probes after the reload count: {n}");
}

#[test]
fn install_stages_every_file() {
    if !have("cargo") {
        skip("install_stages_every_file", "cargo not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(root().join("scripts/install.sh")).env("DESTDIR", dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [
        "usr/local/bin/netvigil",
        "etc/systemd/system/netvigil.service",
        "etc/netvigil/netvigil.toml",
        "etc/default/netvigil",
        "etc/logrotate.d/netvigil",
        "usr/local/share/netvigil/grafana/netvigil-dashboard.json",
        "usr/local/share/netvigil/prometheus/netvigil-rules.yml",
    ] {
        assert!(Path::new(&dir.path().join(f)).exists(), "{f} not installed");
    }
    let st = Command::new(dir.path().join("usr/local/bin/netvigil"))
        .arg("check-config")
        .arg(dir.path().join("etc/netvigil/netvigil.toml"))
        .output()
        .unwrap();
    assert!(st.status.success());
}
