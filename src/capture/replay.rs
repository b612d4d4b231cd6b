//! Savefile replay: pcap and pcapng (told apart by magic number, by libpcap),
//! in packet time, as fast as the disk allows or paced.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcap::{Capture, Offline, Precision};

use super::{CaptureError, Frame, FrameSink};
use crate::base::time::Timestamp;
use crate::decode::LinkType;

/// Replay pacing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as possible.
    Max,
    /// Packet time runs this many times faster than wall time (1.0 = real time).
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Speed, String> {
        match s {
            "max" => Ok(Speed::Max),
            "realtime" => Ok(Speed::Factor(1.0)),
            f => match f.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Ok(Speed::Factor(v)),
                _ => Err(format!("{s:?} is not max, realtime or a positive factor such as 10")),
            },
        }
    }
}

/// An open savefile and the read buffer its stream uses.
pub struct Savefile {
    // Declared first: dropped, and its stream closed, before the buffer is
    // freed. Private, so the handle cannot be moved out of its buffer's life.
    cap: Capture<Offline>,
    _buffer: Option<Box<[u8]>>,
}

impl Savefile {
    /// The libpcap handle.
    pub fn cap(&mut self) -> &mut Capture<Offline> {
        &mut self.cap
    }
}

/// Opens a savefile, with errors that say what is wrong with the path.
pub fn open(path: &Path) -> Result<Savefile, CaptureError> {
    let meta = std::fs::metadata(path).map_err(|_| CaptureError::NotFound(path.to_path_buf()))?;
    if meta.is_dir() {
        return Err(CaptureError::IsDirectory(path.to_path_buf()));
    }
    if let Some(f) = open_buffered(path) {
        return Ok(f);
    }
    // Nanosecond precision: libpcap scales microsecond files up, so one
    // code path serves both. (This path also words every error.)
    let cap = Capture::from_file_with_precision(path, Precision::Nano).map_err(|e| {
        CaptureError::BadFile { path: path.to_path_buf(), message: strip_path(&e.to_string(), path) }
    })?;
    Ok(Savefile { cap, _buffer: None })
}

/// Bytes libpcap reads from a savefile per system call.
///
/// libpcap reads through a stdio stream with the default buffer, one 4 KiB
/// `read` at a time: reading the 860 MB benchmark capture that way took
/// 0.2 to 0.4 s of system time (`dd bs=4k`), against 0.07 s in 1 MiB reads
/// and 0.10 s in 64 KiB ones. (glibc ignores a size given without a buffer,
/// so the buffer is ours.)
const READ_BUFFER: usize = 256 << 10;

#[allow(unsafe_code)]
#[link(name = "pcap")]
unsafe extern "C" {
    /// libpcap's savefile reader over a stdio stream the caller opened.
    fn pcap_fopen_offline_with_tstamp_precision(
        fp: *mut libc::FILE,
        precision: libc::c_uint,
        errbuf: *mut libc::c_char,
    ) -> *mut libc::c_void;
}

/// `PCAP_TSTAMP_PRECISION_NANO`.
const PCAP_NANO: libc::c_uint = 1;

/// Opens `path` through a stream with a [`READ_BUFFER`] buffer; `None` on
/// any failure (the caller retries the plain way, which words the error).
#[allow(unsafe_code)]
fn open_buffered(path: &Path) -> Option<Savefile> {
    let (f, buf) = fopen_buffered(path, c"rb", READ_BUFFER)?;
    // SAFETY: `f` is a fresh stream whose buffer `buf` outlives it (the
    // returned Savefile closes the stream before it frees the buffer).
    // libpcap owns the stream once it returns a handle (pcap_close closes
    // it) and leaves it to us when it fails; the handle goes to the pcap
    // crate, which becomes its owner.
    unsafe {
        let mut err = [0 as libc::c_char; 256];
        let p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_NANO, err.as_mut_ptr());
        match std::ptr::NonNull::new(p) {
            Some(p) => Some(Savefile { cap: Capture::from(p.cast()), _buffer: Some(buf) }),
            None => {
                libc::fclose(f);
                None
            }
        }
    }
}

/// Opens `path` as a stdio stream (`mode` as fopen takes it) whose buffer
/// is `size` bytes of ours: glibc ignores a size given without a buffer.
/// The caller must close the stream before it drops the buffer.
#[allow(unsafe_code)]
pub(crate) fn fopen_buffered(
    path: &Path,
    mode: &std::ffi::CStr,
    size: usize,
) -> Option<(*mut libc::FILE, Box<[u8]>)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; size].into_boxed_slice();
    // SAFETY: `c` and `mode` are NUL-terminated and outlive the calls;
    // setvbuf runs before any I/O on the fresh stream, and its buffer (a
    // heap block that does not move with the Box) goes to the caller, who
    // keeps it past the stream; on failure the stream is closed here.
    unsafe {
        let f = libc::fopen(c.as_ptr(), mode.as_ptr());
        if f.is_null() {
            return None;
        }
        if libc::setvbuf(f, buf.as_mut_ptr().cast(), libc::_IOFBF, size) != 0 {
            libc::fclose(f);
            return None;
        }
        Some((f, buf))
    }
}

fn strip_path(msg: &str, path: &Path) -> String {
    let p = path.display().to_string();
    msg.strip_prefix(&format!("libpcap error: {p}: "))
        .or_else(|| msg.strip_prefix("libpcap error: "))
        .unwrap_or(msg)
        .to_string()
}

/// Reads every savefile in order into `sink`.
///
/// All files are opened first, so a bad path fails before any work. A file
/// damaged part-way is reported in the sink's stats and the next file is
/// read; packets before the damage are kept.
pub fn run(
    paths: &[PathBuf],
    speed: Speed,
    bpf: Option<&str>,
    stop: &Arc<AtomicBool>,
    sink: &mut impl FrameSink,
    mut progress: impl FnMut(u64),
) -> Result<(), CaptureError> {
    let mut caps = Vec::with_capacity(paths.len());
    for p in paths {
        let mut f = open(p)?;
        if let Some(expr) = bpf {
            f.cap()
                .filter(expr, true)
                .map_err(|e| CaptureError::BadFilter { filter: expr.to_string(), message: e.to_string() })?;
        }
        caps.push((p, f));
    }
    let mut pacer = Pacer::new(speed);
    let mut done: u64 = 0;
    for (path, mut f) in caps {
        let cap = f.cap();
        let dlt = cap.get_datalink().0;
        let link = LinkType::from_dlt(dlt);
        let mut n: u64 = 0;
        let mut unsupported: u64 = 0;
        loop {
            if n & 1023 == 0 && stop.load(Ordering::Relaxed) {
                break;
            }
            match cap.next_packet() {
                Ok(p) => {
                    n += 1;
                    let f = Frame::from_pcap(&p);
                    if !link.is_supported() {
                        unsupported += 1;
                    }
                    if let Some(wait) = pacer.wait_for(Timestamp::from_parts(f.secs, f.nanos)) {
                        sink.flush();
                        sleep_unless_stopped(wait, stop);
                    }
                    sink.frame(link, &f);
                    if n & 4095 == 0 {
                        progress(done + n);
                    }
                }
                Err(pcap::Error::NoMorePackets) => {
                    sink.stats().files_ok += 1;
                    break;
                }
                Err(e) => {
                    let err = CaptureError::Damaged {
                        path: path.clone(),
                        packets: n,
                        message: strip_path(&e.to_string(), path),
                    };
                    tracing::warn!("{err}");
                    sink.stats().errors.push(err.to_string());
                    break;
                }
            }
        }
        done += n;
        progress(done);
        if unsupported > 0 {
            tracing::warn!(
                "{}: link type {dlt} is not supported; its {unsupported} packets were counted, not analysed",
                path.display()
            );
            *sink.stats().unsupported_links.entry(dlt).or_default() += unsupported;
        }
    }
    Ok(())
}

fn sleep_unless_stopped(mut d: Duration, stop: &AtomicBool) {
    while !d.is_zero() && !stop.load(Ordering::Relaxed) {
        let step = d.min(Duration::from_millis(50));
        std::thread::sleep(step);
        d -= step;
    }
}

/// Maps packet time to wall time for paced replay.
struct Pacer {
    factor: Option<f64>,
    origin: Option<(Timestamp, Instant)>,
}

impl Pacer {
    fn new(speed: Speed) -> Pacer {
        Pacer {
            factor: match speed {
                Speed::Max => None,
                Speed::Factor(f) => Some(f),
            },
            origin: None,
        }
    }

    /// How long to wait before handing over a packet stamped `ts`.
    fn wait_for(&mut self, ts: Timestamp) -> Option<Duration> {
        // A jump of years in packet time is replayed as a pause of at most
        // this: pacing exists to feed live-like consumers, not to sleep.
        const MAX_GAP: Duration = Duration::from_secs(1);
        let factor = self.factor?;
        let now = Instant::now();
        let (t0, w0) = *self.origin.get_or_insert((ts, now));
        let due = w0 + Duration::from_secs_f64(ts.since(t0) as f64 / 1e9 / factor);
        if due > now + MAX_GAP {
            self.origin = Some((ts, now + MAX_GAP));
            return Some(MAX_GAP);
        }
        due.checked_duration_since(now).filter(|d| *d >= Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parses() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("realtime".parse::<Speed>(), Ok(Speed::Factor(1.0)));
        assert_eq!("2.5".parse::<Speed>(), Ok(Speed::Factor(2.5)));
        assert!("0".parse::<Speed>().is_err());
        assert!("fast".parse::<Speed>().is_err());
    }
}
