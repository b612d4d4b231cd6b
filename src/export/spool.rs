//! The on-disk event spool in front of NATS: every event bound for the
//! stream is appended here first and removed only once the stream has
//! acknowledged it. Detection therefore never waits on the network, a server
//! that is away or slow only makes the spool longer, and a crash or restart
//! loses nothing that was synced (the next start sends what is left).
//!
//! Layout: numbered segment files `NNNNNNNNNNNN.spool` of lines
//! `<message id>\t<event JSON>\n`, and a `position` file naming the first
//! record the stream has not acknowledged. The writer (host stage) only
//! appends to the newest segment; the publisher only reads, and deletes a
//! segment once it has read past its end and a newer one exists.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A segment is closed and a new one begun past this size, so acknowledged
/// events leave the disk in steps of at most this much.
pub const SEGMENT_BYTES: u64 = 1 << 20;
const POSITION_FILE: &str = "position";
const SUFFIX: &str = ".spool";

/// Errors opening the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory could not be created or read.
    #[error("cannot use event spool {path}: {source}")]
    Io {
        /// The spool directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

/// Counters shared by the writer and the publisher (and exported as metrics).
#[derive(Debug, Default)]
pub struct SpoolCounters {
    /// Bytes ever appended, including what an earlier run left behind.
    pub appended_bytes: AtomicU64,
    /// Bytes the stream has acknowledged.
    pub acked_bytes: AtomicU64,
    /// Events appended by this run.
    pub spooled: AtomicU64,
    /// Events dropped because the spool was at its cap.
    pub dropped: AtomicU64,
    /// Events the stream acknowledged.
    pub acked: AtomicU64,
    /// Of those, how many the stream already held (a retry after a lost ack).
    pub duplicates: AtomicU64,
}

impl SpoolCounters {
    /// Bytes written but not yet acknowledged.
    pub fn pending_bytes(&self) -> u64 {
        self.appended_bytes.load(Ordering::Acquire).saturating_sub(self.acked_bytes.load(Ordering::Acquire))
    }
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:012}{SUFFIX}"))
}

/// Segment numbers present in `dir`, ascending.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(SUFFIX)?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The first unacknowledged record: (segment, byte offset).
fn read_position(dir: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(dir.join(POSITION_FILE)).unwrap_or_default();
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next()) {
        (Some(Ok(seg)), Some(Ok(off))) => (seg, off),
        _ => (0, 0),
    }
}

/// Appends events; owned by the host stage.
pub struct SpoolWriter {
    dir: PathBuf,
    seg: u64,
    file: BufWriter<File>,
    seg_bytes: u64,
    cap: u64,
    dirty: bool,
    counters: Arc<SpoolCounters>,
}

impl SpoolWriter {
    /// Opens `dir` (created if missing) and begins a fresh segment after any
    /// an earlier run left; their unacknowledged bytes count toward the cap.
    pub fn open(dir: &Path, cap: u64, counters: Arc<SpoolCounters>) -> Result<SpoolWriter, SpoolError> {
        let err = |source| SpoolError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(err)?;
        let existing = segments(dir).map_err(err)?;
        let (pos_seg, pos_off) = read_position(dir);
        let mut leftover = 0u64;
        for &s in &existing {
            if s < pos_seg {
                // Fully acknowledged by an earlier run that stopped before deleting it.
                let _ = std::fs::remove_file(segment_path(dir, s));
                continue;
            }
            let len = std::fs::metadata(segment_path(dir, s)).map(|m| m.len()).unwrap_or(0);
            leftover += if s == pos_seg { len.saturating_sub(pos_off) } else { len };
        }
        let seg = existing.last().map_or(1, |s| s + 1);
        let file = Self::create(dir, seg).map_err(err)?;
        counters.appended_bytes.fetch_add(leftover, Ordering::AcqRel);
        Ok(SpoolWriter { dir: dir.to_path_buf(), seg, file, seg_bytes: 0, cap, dirty: false, counters })
    }

    fn create(dir: &Path, seg: u64) -> io::Result<BufWriter<File>> {
        let f = OpenOptions::new().create(true).append(true).open(segment_path(dir, seg))?;
        Ok(BufWriter::new(f))
    }

    /// Appends one event; `Ok(false)` when the spool is at its cap and the
    /// event was dropped (counted).
    pub fn append(&mut self, id: &str, json: &str) -> io::Result<bool> {
        let len = (id.len() + json.len() + 2) as u64;
        if self.counters.pending_bytes() + len > self.cap {
            self.counters.dropped.fetch_add(1, Ordering::AcqRel);
            return Ok(false);
        }
        if self.seg_bytes > 0 && self.seg_bytes + len > SEGMENT_BYTES {
            self.sync()?;
            self.seg += 1;
            self.file = Self::create(&self.dir, self.seg)?;
            self.seg_bytes = 0;
        }
        self.file.write_all(id.as_bytes())?;
        self.file.write_all(b"\t")?;
        self.file.write_all(json.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.seg_bytes += len;
        self.dirty = true;
        self.counters.spooled.fetch_add(1, Ordering::AcqRel);
        // Counted only once the line is whole in the file: the publisher reads
        // to the last newline and never acknowledges more than this.
        self.file.flush()?;
        self.counters.appended_bytes.fetch_add(len, Ordering::AcqRel);
        Ok(true)
    }

    /// Makes what was appended durable; called once per batch of events, so
    /// a busy interval costs one fsync, not one per event.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.flush()?;
            self.file.get_ref().sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// One spooled event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The message id (the stream's duplicate window drops repeats of it).
    pub id: String,
    /// The event's JSON line.
    pub json: String,
    /// Bytes it takes in the spool.
    pub len: u64,
}

/// Reads events in order; owned by the publisher.
pub struct SpoolReader {
    dir: PathBuf,
    seg: u64,
    offset: u64,
    reader: Option<BufReader<File>>,
    pending: Option<Record>,
    line: String,
    /// Lines that were not records (a torn write from a crash): skipped.
    pub skipped: u64,
}

impl SpoolReader {
    /// Opens at the first unacknowledged record.
    pub fn open(dir: &Path) -> SpoolReader {
        let (seg, offset) = read_position(dir);
        SpoolReader {
            dir: dir.to_path_buf(),
            seg,
            offset,
            reader: None,
            pending: None,
            line: String::new(),
            skipped: 0,
        }
    }

    /// The next record, without consuming it (`None`: nothing more yet).
    pub fn peek(&mut self) -> io::Result<Option<&Record>> {
        if self.pending.is_none() {
            self.pending = self.read_next()?;
        }
        Ok(self.pending.as_ref())
    }

    /// Marks the peeked record as acknowledged.
    pub fn consume(&mut self) {
        if let Some(r) = self.pending.take() {
            self.offset += r.len;
        }
    }

    /// Records where the stream stands, so a restart resumes there. Not
    /// synced: after a crash the stream's duplicate window drops the few
    /// events sent again.
    pub fn save_position(&self) -> io::Result<()> {
        let tmp = self.dir.join(format!("{POSITION_FILE}.tmp"));
        std::fs::write(&tmp, format!("{} {}\n", self.seg, self.offset))?;
        std::fs::rename(tmp, self.dir.join(POSITION_FILE))
    }

    fn read_next(&mut self) -> io::Result<Option<Record>> {
        loop {
            if self.reader.is_none() && !self.open_current()? {
                return Ok(None);
            }
            if let Some(rec) = self.read_line()? {
                return Ok(Some(rec));
            }
            // At the end of this segment: move on only once the writer has,
            // and after one more read, because it may have appended to this
            // segment between our read and its opening the next.
            let Some(next) = segments(&self.dir)?.into_iter().find(|&s| s > self.seg) else {
                return Ok(None);
            };
            if let Some(rec) = self.read_line()? {
                return Ok(Some(rec));
            }
            if self.partial_tail()? {
                tracing::warn!(
                    "event spool {}: segment {} ends in a torn line (a crash mid-write); skipped",
                    self.dir.display(),
                    self.seg
                );
                self.skipped += 1;
            }
            let _ = std::fs::remove_file(segment_path(&self.dir, self.seg));
            self.seg = next;
            self.offset = 0;
            self.reader = None;
        }
    }

    /// Opens the segment at the position (or the oldest one after it).
    fn open_current(&mut self) -> io::Result<bool> {
        let Some(seg) = segments(&self.dir)?.into_iter().find(|&s| s >= self.seg) else {
            return Ok(false);
        };
        if seg != self.seg {
            self.seg = seg;
            self.offset = 0;
        }
        let mut f = File::open(segment_path(&self.dir, seg))?;
        f.seek(SeekFrom::Start(self.offset))?;
        self.reader = Some(BufReader::new(f));
        Ok(true)
    }

    /// One whole line at the current offset, skipping lines that are not
    /// records; `None` at the end of what is whole.
    fn read_line(&mut self) -> io::Result<Option<Record>> {
        let Some(reader) = self.reader.as_mut() else { return Ok(None) };
        loop {
            self.line.clear();
            let n = reader.read_line(&mut self.line)?;
            if n == 0 || !self.line.ends_with('\n') {
                // Not whole yet: come back to the same offset next time.
                reader.seek(SeekFrom::Start(self.offset))?;
                return Ok(None);
            }
            let body = &self.line[..self.line.len() - 1];
            match body.split_once('\t') {
                Some((id, json)) if !id.is_empty() => {
                    return Ok(Some(Record { id: id.to_string(), json: json.to_string(), len: n as u64 }));
                }
                _ => {
                    self.skipped += 1;
                    self.offset += n as u64;
                }
            }
        }
    }

    fn partial_tail(&self) -> io::Result<bool> {
        let len = std::fs::metadata(segment_path(&self.dir, self.seg))?.len();
        Ok(len > self.offset)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn drain(r: &mut SpoolReader) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(rec) = r.peek().unwrap() {
            out.push(rec.id.clone());
            r.consume();
        }
        out
    }

    #[test]
    fn reads_in_order_across_segments_and_resumes_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(SpoolCounters::default());
        let mut w = SpoolWriter::open(dir.path(), u64::MAX, c.clone()).unwrap();
        let big = "x".repeat(300_000);
        for i in 0..10 {
            assert!(w.append(&format!("e{i}"), &big).unwrap());
        }
        w.sync().unwrap();
        assert!(segments(dir.path()).unwrap().len() >= 3);
        let mut r = SpoolReader::open(dir.path());
        let mut got = Vec::new();
        for _ in 0..4 {
            let rec = r.peek().unwrap().unwrap().clone();
            got.push(rec.id);
            c.acked_bytes.fetch_add(rec.len, Ordering::AcqRel);
            r.consume();
        }
        r.save_position().unwrap();
        drop((w, r));
        // A restart: the writer counts what is left, the reader resumes.
        let c2 = Arc::new(SpoolCounters::default());
        let mut w2 = SpoolWriter::open(dir.path(), u64::MAX, c2.clone()).unwrap();
        assert_eq!(c2.pending_bytes(), 6 * (300_000 + 4));
        w2.append("e10", "{}").unwrap();
        let mut r2 = SpoolReader::open(dir.path());
        got.extend(drain(&mut r2));
        let want: Vec<String> = (0..11).map(|i| format!("e{i}")).collect();
        assert_eq!(got, want);
        // Only the writer's current segment remains.
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn drops_at_the_cap_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(SpoolCounters::default());
        let mut w = SpoolWriter::open(dir.path(), 100, c.clone()).unwrap();
        let mut kept = 0;
        for i in 0..10 {
            kept += usize::from(w.append(&format!("e{i}"), &"y".repeat(20)).unwrap());
        }
        assert_eq!(kept, 4); // 24 bytes each: four fit in 100
        assert_eq!(c.dropped.load(Ordering::Acquire), 6);
        assert_eq!(drain(&mut SpoolReader::open(dir.path())).len(), 4);
    }

    #[test]
    fn a_torn_line_is_skipped_once_a_newer_segment_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 1), "a\t{}\nb\t{\"tor").unwrap();
        let c = Arc::new(SpoolCounters::default());
        let mut w = SpoolWriter::open(dir.path(), u64::MAX, c).unwrap();
        w.append("c", "{}").unwrap();
        let mut r = SpoolReader::open(dir.path());
        assert_eq!(drain(&mut r), vec!["a", "c"]);
        assert_eq!(r.skipped, 1);
    }
}
