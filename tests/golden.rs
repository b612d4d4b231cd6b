//! Golden events: every bundled capture replays to exactly the events recorded
//! in `tests/golden/`, for 1 and 3 workers. Refactors must keep these
//! byte-identical; a deliberate change of events re-records them with
//! `NETVIGIL_BLESS=1 cargo test --test golden` and shows up in the diff.
//!
//! `NAME.jsonl` holds the events of one worker; `NAME.w3.jsonl` exists only
//! where three workers give different events, a known limit kept visible:
//! flood `top_sources` are Space-Saving lower bounds, which depend on how
//! the packets were split over shards when several real sources stand out
//! (one capture; spoofed floods list nobody and agree).

// Test helpers panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn captures() -> Vec<PathBuf> {
    common::files_under(&common::cap(""), &["pcap", "pcapng"])
}

fn events(files: &[PathBuf], workers: usize, config: Option<&Path>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netvigil"));
    c.env_remove("NETVIGIL_LOG")
        .arg("replay")
        .arg("-q")
        .args(["--sensor-name", "golden"])
        .arg("--workers")
        .arg(workers.to_string());
    if let Some(cfg) = config {
        c.arg("--config").arg(cfg);
    }
    let out = c.args(files).output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.jsonl"))
}

/// Compares (or, blessing, records) one golden file for 1 and 3 workers.
fn check(name: &str, files: &[PathBuf], config: Option<&Path>) -> Option<String> {
    let one = events(files, 1, config);
    let three = events(files, 3, config);
    let path = golden_path(name);
    let path3 = golden_path(&format!("{name}.w3"));
    if std::env::var_os("NETVIGIL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &one).unwrap();
        if three != one {
            std::fs::write(&path3, &three).unwrap();
        } else if path3.exists() {
            std::fs::remove_file(&path3).unwrap();
        }
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("no golden file {}", path.display()));
    let want3 = std::fs::read_to_string(&path3).unwrap_or_else(|_| want.clone());
    let mut bad = Vec::new();
    for (w, got, want) in [(1, &one, &want), (3, &three, &want3)] {
        if got != want {
            let line = got.lines().zip(want.lines()).position(|(a, b)| a != b);
            bad.push(format!(
                "{name} ({w} workers): {} lines, golden {}; first difference at line {:?}",
                got.lines().count(),
                want.lines().count(),
                line.map(|l| l + 1)
            ));
        }
    }
    (!bad.is_empty()).then(|| bad.join("\n"))
}

#[test]
fn every_bundled_capture_gives_its_golden_events() {
    let root = common::cap("");
    let mut failures = Vec::new();
    for cap in captures() {
        let rel = cap.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        failures.extend(check(&rel, &[cap], None));
    }
    assert!(failures.is_empty(), "events changed:\n{}", failures.join("\n"));
}

#[test]
fn the_behaviour_model_gives_its_golden_events() {
    // The model needs many host-intervals before it judges; a small training
    // set over the benign captures followed by scans exercises its scoring,
    // calibration and episodes end to end.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ml.toml");
    std::fs::write(&cfg, "[ml]\nenabled = true\ntraining = 64\nwindow = 32\nmin_packets = 2\n").unwrap();
    let mut files: Vec<PathBuf> = common::BENIGN.iter().map(|b| common::cap(b)).collect();
    files.extend(["scans/pcaphunt_ps-tcp_syn.pcap", "floods/softvulnsec_icmp_flood.pcap"].map(common::cap));
    if let Some(f) = check("ml_benign_then_attacks", &files, Some(&cfg)) {
        panic!("events changed:\n{f}");
    }
}
