//! Learned state on disk: saved atomically, loaded at start, never fatal.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::detect::spike::{STATE_VERSION, SpikeState};

/// File name of the baselines inside `--state-dir`.
pub const BASELINES_FILE: &str = "baselines.json";

/// Path of the baselines file in `dir`.
pub fn baselines_path(dir: &Path) -> PathBuf {
    dir.join(BASELINES_FILE)
}

/// Loads saved baselines.
///
/// `Ok(None)` when there is no file yet. A file that does not parse, or was
/// written by another schema version or interval length, is renamed aside
/// (`baselines.json.bad-<n>`) and reported as `Err` for a warning: the
/// sensor then starts fresh rather than refusing to run.
pub fn load(dir: &Path, interval_ns: u64) -> Result<Option<SpikeState>, String> {
    let path = baselines_path(dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!("cannot read {}: {e}; starting without learned baselines", path.display()));
        }
    };
    let problem = match serde_json::from_str::<SpikeState>(&text) {
        Ok(st) if st.version == STATE_VERSION && st.interval_ns == interval_ns => {
            return Ok(Some(st));
        }
        Ok(st) if st.version != STATE_VERSION => {
            format!("schema version {} (this build reads {STATE_VERSION})", st.version)
        }
        Ok(st) => format!(
            "learned at a {} ms interval (now {} ms)",
            st.interval_ns / 1_000_000,
            interval_ns / 1_000_000
        ),
        Err(e) => format!("corrupt ({e})"),
    };
    let aside = set_aside(&path);
    Err(format!(
        "{} is {problem}; moved it to {} and starting without learned baselines",
        path.display(),
        aside.map(|p| p.display().to_string()).unwrap_or_else(|e| format!("nowhere ({e})"))
    ))
}

fn set_aside(path: &Path) -> io::Result<PathBuf> {
    for n in 1..1000 {
        let aside = path.with_extension(format!("json.bad-{n}"));
        if !aside.exists() {
            fs::rename(path, &aside)?;
            return Ok(aside);
        }
    }
    Err(io::Error::other("too many set-aside files"))
}

/// File name of the behaviour model inside `--state-dir`.
pub const MODEL_FILE: &str = "model.json";

/// Loads the saved behaviour model; `Ok(None)` when absent, `Err` (file set
/// aside) when it does not parse.
pub fn load_model(dir: &Path) -> Result<Option<crate::detect::ml::ModelState>, String> {
    let path = dir.join(MODEL_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}; the model starts fresh", path.display())),
    };
    match serde_json::from_str(&text) {
        Ok(st) => Ok(Some(st)),
        Err(e) => {
            let aside = set_aside(&path).map(|p| p.display().to_string()).unwrap_or_else(|e| e.to_string());
            Err(format!(
                "{} is corrupt ({e}); moved it to {aside} and the model starts fresh",
                path.display()
            ))
        }
    }
}

/// Saves the behaviour model atomically.
pub fn save_model(dir: &Path, st: &crate::detect::ml::ModelState) -> io::Result<()> {
    write_atomic(dir, MODEL_FILE, &serde_json::to_vec(st).map_err(io::Error::other)?)
}

/// Saves baselines atomically: write a temporary file, fsync it, rename it
/// over the old one, fsync the directory. A crash leaves the old or the new
/// file, never half of one.
pub fn save(dir: &Path, st: &SpikeState) -> io::Result<()> {
    write_atomic(dir, BASELINES_FILE, &serde_json::to_vec(st).map_err(io::Error::other)?)
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), 1_000_000_000).unwrap().is_none());
        let st = SpikeState { version: STATE_VERSION, interval_ns: 1_000_000_000, hosts: Vec::new() };
        save(dir.path(), &st).unwrap();
        assert!(load(dir.path(), 1_000_000_000).unwrap().is_some());
        let e = load(dir.path(), 500_000_000).unwrap_err();
        assert!(e.contains("interval"), "{e}");
        assert!(dir.path().join("baselines.json.bad-1").exists());
        fs::write(baselines_path(dir.path()), b"{not json").unwrap();
        let e = load(dir.path(), 1_000_000_000).unwrap_err();
        assert!(e.contains("corrupt") && e.contains("bad-2"), "{e}");
        assert!(load(dir.path(), 1_000_000_000).unwrap().is_none());
    }
}
