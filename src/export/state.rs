//! Learned state on disk: saved atomically, loaded at start, never fatal.
//!
//! The files and their contents belong to the detector families (see
//! `detect::family`); this module only reads, sets aside and writes them.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Reads `dir/name`; `Ok(None)` when there is no file yet.
pub fn read(dir: &Path, name: &str) -> Result<Option<String>, String> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}; starting without it", path.display())),
    }
}

/// Moves an unusable `dir/name` aside (`name.bad-<n>`) so the sensor starts
/// fresh instead of refusing to run; returns the sentence for the log.
pub fn set_aside(dir: &Path, name: &str, problem: &str) -> String {
    let path = dir.join(name);
    let aside = set_aside_path(&path);
    format!(
        "{} is {problem}; moved it to {} and starting without it",
        path.display(),
        aside.map(|p| p.display().to_string()).unwrap_or_else(|e| format!("nowhere ({e})"))
    )
}

fn set_aside_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for n in 1..1000 {
        let aside = path.with_file_name(format!("{name}.bad-{n}"));
        if !aside.exists() {
            fs::rename(path, &aside)?;
            return Ok(aside);
        }
    }
    Err(io::Error::other("too many set-aside files"))
}

/// Saves `dir/name` atomically: write a temporary file, fsync it, rename it
/// over the old one, fsync the directory. A crash leaves the old or the new
/// file, never half of one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
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
    fn read_write_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path(), "x.json").unwrap().is_none());
        write_atomic(dir.path(), "x.json", b"{}").unwrap();
        assert_eq!(read(dir.path(), "x.json").unwrap().as_deref(), Some("{}"));
        let msg = set_aside(dir.path(), "x.json", "corrupt (oops)");
        assert!(msg.contains("corrupt") && msg.contains("x.json.bad-1"), "{msg}");
        assert!(dir.path().join("x.json.bad-1").exists());
        write_atomic(dir.path(), "x.json", b"{").unwrap();
        assert!(set_aside(dir.path(), "x.json", "corrupt").contains("bad-2"));
        assert!(read(dir.path(), "x.json").unwrap().is_none());
    }
}
