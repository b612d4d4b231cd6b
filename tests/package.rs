//! The Debian package: built with cargo-deb, then installed, removed and
//! purged with dpkg on this machine. Needs root, dpkg and cargo-deb; skipped
//! with a reason otherwise (CI runs as root; scripts/setup.sh test installs
//! cargo-deb). Refuses to run where netvigil is already installed, because
//! the purge at its end would delete that installation's configuration and
//! learned state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

const UNIT: &str = "/usr/lib/systemd/system/netvigil.service";
const CONFFILE: &str = "/etc/netvigil/netvigil.toml";

/// Everything the package, its maintainer scripts or its service put on a
/// machine: all of it must be absent before the test and after the purge.
const FOOTPRINT: &[&str] = &[
    "/usr/bin/netvigil",
    UNIT,
    "/etc/netvigil",
    "/etc/default/netvigil",
    "/etc/logrotate.d/netvigil",
    "/etc/systemd/system/netvigil.service",
    "/etc/systemd/system/multi-user.target.wants/netvigil.service",
    "/usr/share/netvigil",
    "/usr/share/doc/netvigil",
    "/var/lib/netvigil",
    "/var/lib/private/netvigil",
    "/var/log/netvigil",
    "/var/log/private/netvigil",
    "/var/lib/systemd/deb-systemd-helper-enabled/netvigil.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-masked/netvigil.service",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A link counts even when it dangles (Path::exists would follow it).
fn present(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

/// dpkg's state of the package; None when dpkg knows nothing of it.
fn package_state() -> Option<String> {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "netvigil"]));
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !state.is_empty() && state != "not-installed").then_some(state)
}

fn dpkg(args: &[&str]) -> Output {
    // stdin is closed: a conffile prompt fails the command instead of hanging the test.
    run(Command::new("dpkg").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn skip_reason() -> Option<String> {
    let uid = run(Command::new("id").arg("-u"));
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("needs root to install the package".into());
    }
    for tool in ["dpkg", "dpkg-deb", "dpkg-query", "systemctl", "systemd-analyze"] {
        if !succeeds(Command::new("sh").args(["-c", &format!("command -v {tool}")])) {
            return Some(format!("{tool} not installed (a Debian/Ubuntu host with systemd)"));
        }
    }
    if !succeeds(Command::new("cargo").args(["deb", "--version"])) {
        return Some("cargo-deb not installed (scripts/setup.sh test installs it)".into());
    }
    None
}

/// Purges the package and removes the service state the test made up, even
/// when an assertion failed half-way. Safe because the test only starts
/// where none of the footprint existed.
struct Purge {
    made_dirs: Vec<PathBuf>,
}

impl Drop for Purge {
    fn drop(&mut self) {
        if package_state().is_some() {
            let out = dpkg(&["-P", "netvigil"]);
            if !out.status.success() {
                let _ = writeln!(
                    std::io::stderr(),
                    "package test cleanup: dpkg -P netvigil failed, purge it by hand:\n{}",
                    text(&out)
                );
            }
        }
        for p in ["/var/lib/netvigil", "/var/log/netvigil"] {
            let _ = std::fs::remove_file(p);
        }
        for p in ["/var/lib/private/netvigil", "/var/log/private/netvigil"] {
            let _ = std::fs::remove_dir_all(p);
        }
        for d in self.made_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// What a started service leaves: systemd keeps a DynamicUser's StateDirectory=
/// and LogsDirectory= under private/ and links them from the usual place.
/// Notes the private/ parents it had to create, for the guard to remove.
fn fake_service_state(made: &mut Vec<PathBuf>) {
    for base in ["/var/lib", "/var/log"] {
        let private = Path::new(base).join("private");
        if !private.exists() {
            std::fs::create_dir(&private).unwrap();
            made.push(private.clone());
        }
        std::fs::create_dir(private.join("netvigil")).unwrap();
        std::os::unix::fs::symlink("private/netvigil", Path::new(base).join("netvigil")).unwrap();
    }
    std::fs::write("/var/lib/private/netvigil/baselines.bin", b"learned").unwrap();
    std::fs::write("/var/log/private/netvigil/events.jsonl", b"{}\n").unwrap();
}

#[test]
fn deb_installs_disabled_keeps_config_on_remove_and_purges_clean() {
    const TEST: &str = "deb_installs_disabled_keeps_config_on_remove_and_purges_clean";
    if let Some(why) = skip_reason() {
        skip(TEST, &why);
        return;
    }
    if let Some(state) = package_state() {
        panic!(
            "netvigil is already known to dpkg here (state {state}); this test installs and \
             purges the package, which would delete that installation's configuration and \
             learned state. Purge it (dpkg -P netvigil) or run the tests on another machine."
        );
    }
    let found: Vec<&str> = FOOTPRINT.iter().copied().filter(|p| present(p)).collect();
    assert!(
        found.is_empty(),
        "netvigil looks installed here (scripts/install.sh?): {found:?} exist; this test \
         installs and purges the package, which would overwrite or delete them. Remove them \
         or run the tests on another machine."
    );

    // The shipped release profile, not a cheaper one: in the full suite
    // tests/ops.rs (run before this file) has built it, so this only packages,
    // 4 s; alone, from cold, the build adds 4-5 minutes on two cores. The
    // -dbgsym package `cargo deb` also makes would add 10-20 s of objcopy and
    // xz; --strip leaves the same stripped binary without it.
    let t0 = Instant::now();
    let out_dir = tempfile::tempdir().unwrap();
    let out = run(Command::new("cargo")
        .args(["deb", "--locked", "--no-dbgsym", "--strip", "--output"])
        .arg(out_dir.path())
        .current_dir(root()));
    assert!(out.status.success(), "cargo deb failed:\n{}", text(&out));
    let arch = String::from_utf8_lossy(&run(Command::new("dpkg").arg("--print-architecture")).stdout)
        .trim()
        .to_string();
    let deb = out_dir.path().join(format!("netvigil_{}-1_{arch}.deb", env!("CARGO_PKG_VERSION")));
    assert!(deb.exists(), "no {} in:\n{}", deb.display(), text(&out));
    let built = t0.elapsed();

    let depends = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
    let depends = String::from_utf8_lossy(&depends.stdout).to_string();
    assert!(
        depends.contains("libpcap0.8"),
        "Depends: {depends} (no dpkg-shlibdeps for $auto? scripts/setup.sh test installs dpkg-dev)"
    );

    let mut guard = Purge { made_dirs: Vec::new() };
    let deb_arg = deb.to_str().unwrap();
    let out = dpkg(&["-i", deb_arg]);
    assert!(out.status.success(), "dpkg -i:\n{}", text(&out));
    assert_eq!(package_state().as_deref(), Some("installed"));
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "netvigil"]));
    let conffiles = String::from_utf8_lossy(&conffiles.stdout).to_string();
    for f in [CONFFILE, "/etc/default/netvigil", "/etc/logrotate.d/netvigil"] {
        assert!(conffiles.contains(f), "{f} is not a conffile: {conffiles}");
    }
    for f in [
        "/usr/share/netvigil/grafana/netvigil-dashboard.json",
        "/usr/share/netvigil/prometheus/netvigil-rules.yml",
        "/usr/share/doc/netvigil/README.md",
        "/usr/share/doc/netvigil/copyright",
    ] {
        assert!(present(f), "{f} not installed");
    }

    let out = run(Command::new("/usr/bin/netvigil").args(["check-config", CONFFILE]));
    assert!(out.status.success(), "check-config {CONFFILE}:\n{}", text(&out));

    // As tests/ops.rs does for the repository's unit; here ExecStart= names the
    // installed /usr/bin/netvigil, so nothing needs rewriting.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/netvigil live"), "not the packaged unit:\n{unit}");
    let out = run(Command::new("systemd-analyze").arg("verify").arg(UNIT));
    assert!(out.status.success(), "systemd-analyze verify {UNIT}:\n{}", text(&out));
    let complaints: Vec<&str> =
        std::str::from_utf8(&out.stderr).unwrap().lines().filter(|l| l.contains("netvigil")).collect();
    assert!(complaints.is_empty(), "systemd-analyze verify {UNIT}:\n{}", complaints.join("\n"));

    // Installing must not start capturing: the unit stays disabled and stopped.
    let enabled = run(Command::new("systemctl").args(["is-enabled", "netvigil.service"]));
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled", "{}", text(&enabled));
    if Path::new("/run/systemd/system").exists() {
        let active = run(Command::new("systemctl").args(["is-active", "netvigil.service"]));
        assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "inactive", "{}", text(&active));
    }
    // With DynamicUser= systemd makes them on first start (see systemd/debian/postinst).
    for d in ["/var/lib/netvigil", "/var/log/netvigil"] {
        assert!(!present(d), "{d} made by the package; systemd should make it");
    }

    // The admin's edits and a service's learned state, which remove must keep.
    let mut edited = std::fs::read_to_string(CONFFILE).unwrap();
    edited.push_str("\n# edited by the package test\n");
    std::fs::write(CONFFILE, &edited).unwrap();
    std::fs::write("/etc/default/netvigil", "NETVIGIL_INTERFACE=nvtest0\n").unwrap();
    fake_service_state(&mut guard.made_dirs);

    let out = dpkg(&["-r", "netvigil"]);
    assert!(out.status.success(), "dpkg -r:\n{}", text(&out));
    assert_eq!(package_state().as_deref(), Some("config-files"));
    assert!(!present("/usr/bin/netvigil") && !present(UNIT), "remove left the program");
    assert_eq!(std::fs::read_to_string(CONFFILE).unwrap(), edited, "remove must keep the edited conffile");
    assert!(present("/etc/default/netvigil"));
    assert!(present("/var/lib/netvigil/baselines.bin"), "remove must keep learned state");
    assert!(present("/var/log/netvigil/events.jsonl"), "remove must keep the events");

    let out = dpkg(&["-P", "netvigil"]);
    assert!(out.status.success(), "dpkg -P:\n{}", text(&out));
    assert_eq!(package_state(), None, "dpkg still knows netvigil after the purge");
    let left: Vec<&str> = FOOTPRINT.iter().copied().filter(|p| present(p)).collect();
    assert!(left.is_empty(), "purge left {left:?}");
    drop(guard);
    eprintln!(
        "package test: built {} in {:.1} s, install/remove/purge in {:.1} s",
        deb.file_name().unwrap().to_string_lossy(),
        built.as_secs_f64(),
        (t0.elapsed() - built).as_secs_f64()
    );
}

/// The package ships its own copy of the unit because its binary lives in
/// /usr/bin, not scripts/install.sh's /usr/local/bin; apart from those paths
/// and the comments the two must stay the same.
#[test]
fn packaged_unit_matches_the_repository_unit() {
    let settings = |path: &str, local_paths: bool| -> Vec<String> {
        let mut unit = std::fs::read_to_string(root().join(path)).unwrap();
        if local_paths {
            unit = unit
                .replace("/usr/local/bin/", "/usr/bin/")
                .replace("/usr/local/share/doc/", "/usr/share/doc/");
        }
        unit.lines().filter(|l| !l.trim_start().starts_with('#')).map(str::to_string).collect()
    };
    let repo = settings("systemd/netvigil.service", true);
    let packaged = settings("systemd/debian/netvigil.service", false);
    assert_eq!(
        packaged, repo,
        "systemd/debian/netvigil.service drifted from systemd/netvigil.service: change both"
    );
}
