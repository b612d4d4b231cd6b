//! Evidence pcaps (`--evidence-dir`): the packets behind every episode, in
//! `DIR/<episode_id>.pcap`, as Suricata's conditional pcap logging does.
//!
//! Only the capture thread holds whole frames, so it keeps them: a ring of
//! the last `before_seconds` of packet time (at most `ring_mib`). The host
//! stage, when it opens an episode, asks for the packets between the
//! episode's actor and target from `before_seconds` before the interval it
//! opened in until the interval it ends in; after each interval it publishes
//! how far it has got (its watermark). The capture thread writes only
//! packets older than that watermark, so what a file holds is decided in
//! packet time, the same for any number of workers and any replay speed.
//!
//! A file holds at most `episode_mib`; a many-source episode's (a flood
//! whose sources are spoofed or spread over a prefix) at most `sample_mib`,
//! its first matching packets: a sample, not everything. All files
//! together stay under `total_mib`; the oldest finished files go first.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};

use crate::base::time::Timestamp;
use crate::base::{Addr, Cidr};
use crate::config::EvidenceConfig;
use crate::decode::{LinkType, PacketMeta};
use crate::detect::Phase;
use crate::detect::anomaly::Anomaly;

/// What the host stage asks of the recorder.
#[derive(Debug)]
pub(super) enum Request {
    /// Record packets matching `filter` from `from` on into `<id>.pcap`;
    /// `sample`: a many-source episode, capped at `sample_mib`.
    Start { id: String, filter: Filter, from: Timestamp, sample: bool },
    /// The episode ended: record nothing at or after `until`.
    Stop { id: String, until: Timestamp },
}

/// Which packets belong to an episode.
#[derive(Clone, Copy, Debug)]
pub(super) enum Filter {
    /// Between two addresses, either way.
    Pair(Addr, Addr),
    /// To or from one address (the other side is many).
    One(Addr),
    /// To or from a prefix (floods spread over a /24 or /64).
    Prefix(Cidr),
}

impl Filter {
    fn matches(&self, src: &Addr, dst: &Addr) -> bool {
        match self {
            Filter::Pair(a, b) => (src == a && dst == b) || (src == b && dst == a),
            Filter::One(a) => src == a || dst == a,
            Filter::Prefix(c) => c.contains(src) || c.contains(dst),
        }
    }

    /// The filter for an episode (its actor and target, or its prefix),
    /// and whether its sources are many: a prefix, or a target with no one
    /// actor (a spoofed or distributed flood). A scanner's probes to many
    /// targets are one actor's, kept like a conversation.
    fn of(a: &Anomaly) -> Option<(Filter, bool)> {
        if let Some(p) = a.evidence.get("prefix").and_then(|v| v.as_str()).and_then(Cidr::parse) {
            return Some((Filter::Prefix(p), true));
        }
        match (a.src, a.dst) {
            (Some(s), Some(d)) => Some((Filter::Pair(s, d), false)),
            (Some(x), None) => Some((Filter::One(x), false)),
            (None, Some(x)) => Some((Filter::One(x), true)),
            (None, None) => None,
        }
    }
}

/// The host stage's watermark, shared with the recorder: packet time up to
/// which every request has been sent (`u64::MAX` once the host is done).
pub(super) type Watermark = Arc<AtomicU64>;

/// The host stage's side: turns episode events into requests.
pub(super) struct EvidenceHost {
    tx: Sender<(Timestamp, Request)>,
    watermark: Watermark,
    before: u64,
}

impl EvidenceHost {
    /// Names the file in the event and asks the recorder for its packets.
    pub(super) fn on_event(&mut self, a: &mut Anomaly, interval_start: Timestamp, interval_end: Timestamp) {
        let Some((filter, sample)) = Filter::of(a) else { return };
        let file = format!("{}.pcap", a.episode_id);
        a.evidence.insert("pcap".into(), serde_json::Value::String(file));
        let req = match a.phase {
            Phase::Start => Request::Start {
                id: a.episode_id.clone(),
                filter,
                from: interval_start.saturating_sub(self.before),
                sample,
            },
            Phase::End => Request::Stop { id: a.episode_id.clone(), until: interval_end },
            Phase::Update => return,
        };
        let _ = self.tx.send((interval_end, req));
    }

    /// Every request up to `t` is sent.
    pub(super) fn advance(&self, t: Timestamp) {
        self.watermark.store(t.as_nanos(), Ordering::Release);
    }
}

impl Drop for EvidenceHost {
    fn drop(&mut self) {
        self.watermark.store(u64::MAX, Ordering::Release);
    }
}

/// One packet in the ring.
struct Held {
    ts: Timestamp,
    src: Addr,
    dst: Addr,
    link: LinkType,
    wire_len: u32,
    /// Position in the byte arena (monotonic; `% capacity` is `off`).
    at: u64,
    /// Offset in the arena, kept so no packet pays a 64-bit division.
    off: u64,
    len: u32,
}

/// One open evidence file.
struct Recording {
    id: String,
    filter: Filter,
    /// Packets before this are written (or were before the start).
    written_until: Timestamp,
    until: Option<Timestamp>,
    file: Option<pcap::Savefile>,
    /// The file's stdio buffer; declared after `file`, so it outlives it.
    buffer: Option<Box<[u8]>>,
    link: Option<LinkType>,
    bytes: u64,
    /// The file's cap in bytes (`episode_mib`, or `sample_mib` for many sources).
    cap: u64,
    capped: bool,
}

impl Recording {
    /// A recording of `filter`'s packets from `from` on, with no file yet.
    fn new(id: String, filter: Filter, from: Timestamp, cap: u64) -> Recording {
        Recording {
            id,
            filter,
            written_until: from,
            until: None,
            file: None,
            buffer: None,
            link: None,
            bytes: 0,
            cap,
            capped: false,
        }
    }
}

/// Counters of the recorder, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EvidenceReport {
    /// Evidence files written.
    pub files: u64,
    /// Packets written to them.
    pub packets: u64,
    /// Files removed to stay under the disk cap.
    pub rotated: u64,
    /// Packets that left the ring younger than `before_seconds`: the ring
    /// holds less than that of this traffic, so a pcap may start later.
    pub ring_overruns: u64,
    /// Packets of a link type other than the file's (a replay of mixed files).
    pub link_mismatch: u64,
}

/// Which open recordings may want a packet: each recording filed under a
/// 256-way hash of what its filter names (an address, or a prefix's network
/// and mask). A packet looks up its two addresses, and their networks under
/// each prefix length in use, and is matched against those recordings only:
/// most packets concern none, a flood's packets one or two, instead of every
/// recording open (the benchmark mix opens 32 prefix floods at once).
struct Wanted {
    by_key: Vec<Vec<u32>>,
    /// The prefix masks in use (few: /24 and /64 as the floods make them).
    masks: Vec<u128>,
    /// Recordings filed: none once every open one is capped, and then no
    /// packet needs offering (a flood's sample is soon complete).
    filed: usize,
}

impl Default for Wanted {
    fn default() -> Wanted {
        Wanted { by_key: vec![Vec::new(); 256], masks: Vec::new(), filed: 0 }
    }
}

impl Wanted {
    fn bucket(v: u128, mask: u128) -> usize {
        let x = (v & mask) ^ mask.rotate_left(17);
        (((x as u64) ^ ((x >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
    }

    fn rebuild(&mut self, open: &[Recording]) {
        self.by_key.iter_mut().for_each(Vec::clear);
        self.masks.clear();
        self.filed = 0;
        for (i, r) in open.iter().enumerate().filter(|(_, r)| !r.capped) {
            self.filed += 1;
            let i = i as u32;
            let mut file = |v: u128, m: u128| {
                let b = &mut self.by_key[Wanted::bucket(v, m)];
                if b.last() != Some(&i) {
                    b.push(i);
                }
            };
            let bits = |a: &Addr| u128::from_be_bytes(a.0);
            match &r.filter {
                Filter::Pair(a, b) => {
                    file(bits(a), u128::MAX);
                    file(bits(b), u128::MAX);
                }
                Filter::One(a) => file(bits(a), u128::MAX),
                Filter::Prefix(c) => {
                    file(c.net_bits(), c.mask_bits());
                    if !self.masks.contains(&c.mask_bits()) {
                        self.masks.push(c.mask_bits());
                    }
                }
            }
        }
    }

    /// The recordings that may want a packet from `src` to `dst`, each once,
    /// in `out` (cleared first).
    fn candidates(&self, src: &Addr, dst: &Addr, out: &mut Vec<u32>) {
        out.clear();
        let (s, d) = (u128::from_be_bytes(src.0), u128::from_be_bytes(dst.0));
        for m in std::iter::once(u128::MAX).chain(self.masks.iter().copied()) {
            let (bs, bd) = (Wanted::bucket(s, m), Wanted::bucket(d, m));
            out.extend_from_slice(&self.by_key[bs]);
            if bd != bs {
                out.extend_from_slice(&self.by_key[bd]);
            }
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

/// The open files and what they have written.
struct Files {
    dir: PathBuf,
    open: Vec<Recording>,
    wanted: Wanted,
    /// The candidates of the packet being offered (reused).
    scratch: Vec<u32>,
    done: VecDeque<(PathBuf, u64)>,
    total: u64,
    episode_cap: u64,
    sample_cap: u64,
    total_cap: u64,
    report: EvidenceReport,
}

impl Files {
    /// Writes one held packet to every open recording it belongs to, if it
    /// lies before `bound` and after what the recording has written.
    fn offer(&mut self, h: &Held, data: &[u8], bound: Timestamp) {
        if h.ts >= bound {
            return;
        }
        let mut cands = std::mem::take(&mut self.scratch);
        self.wanted.candidates(&h.src, &h.dst, &mut cands);
        for &i in &cands {
            let Some(r) = self.open.get_mut(i as usize) else { continue };
            let end = r.until.map_or(bound, |u| u.min(bound));
            if r.capped || h.ts < r.written_until || h.ts >= end || !r.filter.matches(&h.src, &h.dst) {
                continue;
            }
            match write_one(&self.dir, r, h, data) {
                Ok(Wrote::Packet(bytes)) => {
                    self.report.packets += 1;
                    self.total += bytes;
                }
                Ok(Wrote::Capped) => {}
                Ok(Wrote::OtherLink) => self.report.link_mismatch += 1,
                Err(e) => {
                    tracing::warn!("evidence {}: {e}; this episode's pcap stops here", r.id);
                    r.capped = true;
                }
            }
        }
        self.scratch = cands;
    }

    fn take(&mut self, req: Request) {
        match req {
            Request::Start { id, filter, from, sample } => {
                let cap = if sample { self.sample_cap.min(self.episode_cap) } else { self.episode_cap };
                self.open.push(Recording::new(id, filter, from, cap));
            }
            Request::Stop { id, until } => {
                if let Some(r) = self.open.iter_mut().find(|r| r.id == id) {
                    r.until = Some(until);
                }
            }
        }
    }

    /// Every packet before `w` has been offered: moves each recording on,
    /// closes the finished ones and keeps the disk cap.
    fn settle(&mut self, w: Timestamp) {
        for r in &mut self.open {
            let end = r.until.map_or(w, |u| u.min(w));
            r.written_until = r.written_until.max(end);
        }
        let mut i = 0;
        while i < self.open.len() {
            let r = &self.open[i];
            if r.until.is_some_and(|u| r.written_until >= u) {
                self.close(i);
            } else {
                i += 1;
            }
        }
        self.wanted.rebuild(&self.open);
        self.rotate();
    }

    fn close(&mut self, i: usize) {
        let mut r = self.open.swap_remove(i);
        if let Some(mut f) = r.file.take() {
            let _ = f.flush();
            self.report.files += 1;
            self.done.push_back((self.dir.join(format!("{}.pcap", r.id)), r.bytes));
        }
    }

    /// Removes the oldest finished files while over the disk cap.
    fn rotate(&mut self) {
        while self.total > self.total_cap {
            let Some((path, n)) = self.done.pop_front() else { break };
            let _ = std::fs::remove_file(&path);
            self.total = self.total.saturating_sub(n);
            self.report.rotated += 1;
        }
    }
}

/// The capture thread's side: the ring and the files.
///
/// Everything it does happens at points fixed in packet time, so a replay
/// writes the same files whatever the speed or the number of workers:
/// packets leave the ring by its capacity alone, and the host's requests
/// about an interval take effect when the next interval closes (the capture
/// thread sends tick `T` and applies what the host decided about the
/// interval that ended at the tick before). The host so has one interval of
/// packet time to judge the last one while capture and tracking go on; a
/// replay waits at a tick only when the host is further behind than that.
/// A packet leaving the ring is first written to the open recordings it
/// belongs to, if its interval has closed (a recording's end falls on an
/// interval boundary, so that is as far as a pending end can reach).
pub(super) struct Recorder {
    /// The ring's bytes: reserved whole, filled as packets first arrive (a
    /// zeroed ring cost a 64 MiB memset and its page faults at start, even
    /// for a replay of a few kB), then overwritten in place.
    arena: Vec<u8>,
    /// The ring's size in bytes (`ring_mib`).
    ring: u64,
    head: u64,
    /// `head % ring`, kept as the ring advances.
    head_off: u64,
    held: VecDeque<Held>,
    rx: Receiver<(Timestamp, Request)>,
    watermark: Watermark,
    /// Requests received and not yet due, with the end of the interval they
    /// were decided in.
    queued: VecDeque<(Timestamp, Request)>,
    /// Requests decided up to here are applied and packets before it offered.
    seen: Timestamp,
    /// The last tick sent: packets before it belong to closed intervals.
    sent: Timestamp,
    before: u64,
    files: Files,
    /// Replay: wait for the host at a tick rather than apply its requests late.
    patient: bool,
    /// Oldest packet time the host may still ask for (recomputed per tick).
    keep_from: Timestamp,
}

/// Builds both sides. `patient`: a replay, where the capture thread may wait.
pub(super) fn pair(
    dir: &Path,
    cfg: &EvidenceConfig,
    patient: bool,
) -> std::io::Result<(EvidenceHost, Recorder)> {
    std::fs::create_dir_all(dir)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let watermark: Watermark = Arc::new(AtomicU64::new(0));
    let before = (cfg.before_seconds * 1e9) as u64;
    // Files an earlier run left count toward the cap, oldest first.
    let mut done: Vec<(std::time::SystemTime, PathBuf, u64)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "pcap"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, e.path(), m.len()))
        })
        .collect();
    done.sort();
    let total = done.iter().map(|d| d.2).sum();
    let host = EvidenceHost { tx, watermark: watermark.clone(), before };
    // `ring_mib` may ask for more than the machine can give: reserving it
    // says so instead of an abort on a failed allocation. Its pages are
    // touched only as packets arrive.
    let ring = (cfg.ring_mib * 1_048_576.0) as usize;
    let mut arena = Vec::<u8>::new();
    arena.try_reserve_exact(ring).map_err(|e| {
        std::io::Error::other(format!(
            "cannot allocate the {} MiB packet ring (evidence.ring_mib): {e}",
            cfg.ring_mib
        ))
    })?;
    let rec = Recorder {
        arena,
        ring: ring as u64,
        head: 0,
        head_off: 0,
        held: VecDeque::new(),
        rx,
        watermark,
        queued: VecDeque::new(),
        seen: Timestamp::ZERO,
        sent: Timestamp::ZERO,
        before,
        files: Files {
            dir: dir.to_path_buf(),
            open: Vec::new(),
            wanted: Wanted::default(),
            scratch: Vec::new(),
            done: done.into_iter().map(|(_, p, n)| (p, n)).collect(),
            total,
            episode_cap: (cfg.episode_mib * 1_048_576.0) as u64,
            sample_cap: (cfg.sample_mib * 1_048_576.0) as u64,
            total_cap: (cfg.total_mib * 1_048_576.0) as u64,
            report: EvidenceReport::default(),
        },
        patient,
        keep_from: Timestamp::ZERO,
    };
    Ok((host, rec))
}

impl Recorder {
    /// Keeps one frame (after its packet time was made monotonic), making
    /// room by the ring's capacity: what leaves is written first where it
    /// belongs, and counted when the host might still have asked for it.
    pub(super) fn push(&mut self, link: LinkType, m: &PacketMeta, data: &[u8]) {
        let cap = self.ring;
        let len = data.len() as u64;
        if len == 0 || len > cap {
            return;
        }
        // Frames never straddle the arena's end: skip to its start instead.
        let (mut at, mut off) = (self.head, self.head_off);
        if off + len > cap {
            at += cap - off;
            off = 0;
        }
        while let Some(front) = self.held.front() {
            if front.at + cap >= at + len {
                break;
            }
            if front.ts >= self.keep_from {
                self.files.report.ring_overruns += 1;
                if self.files.wanted.filed > 0 {
                    let o = front.off as usize;
                    let data = &self.arena[o..o + front.len as usize];
                    self.files.offer(front, data, self.sent);
                }
            }
            self.held.pop_front();
        }
        // Packets no request can reach any more leave early, so the ring
        // holds `before` seconds behind the host, not `ring_mib` of old news.
        while self.held.front().is_some_and(|f| f.ts < self.keep_from) {
            self.held.pop_front();
        }
        let o = off as usize;
        // Writes run on from the last one's end or restart at 0, so they
        // reach at most just past what was filled: copied in place up to
        // there, appended beyond (within the reservation: no reallocation).
        let have = self.arena.len().saturating_sub(o).min(data.len());
        let (over, beyond) = data.split_at(have);
        self.arena[o..o + have].copy_from_slice(over);
        self.arena.extend_from_slice(beyond);
        self.head = at + len;
        self.head_off = off + len;
        self.held.push_back(Held {
            ts: m.ts,
            src: m.src,
            dst: m.dst,
            link,
            wire_len: m.wire_len,
            at,
            off,
            len: len as u32,
        });
    }

    /// The capture thread sent tick `t`: applies the host's requests about
    /// the interval that ended at the tick before (a replay waits for them)
    /// and writes the packets before that tick.
    pub(super) fn tick(&mut self, t: Timestamp, stop: &std::sync::atomic::AtomicBool) {
        let due = self.sent;
        self.sent = t;
        if self.patient {
            while self.watermark.load(Ordering::Acquire) < due.as_nanos() && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        self.apply(due);
    }

    /// Applies every request decided up to `due` and offers every held
    /// packet before it.
    fn apply(&mut self, due: Timestamp) {
        self.queued.extend(self.rx.try_iter());
        let mut started = false;
        while self.queued.front().is_some_and(|(at, _)| *at <= due) {
            if let Some((_, req)) = self.queued.pop_front() {
                started |= matches!(req, Request::Start { .. });
                self.files.take(req);
            }
        }
        // A new recording needs filing before packets are offered; closes
        // refile in `settle`.
        if started {
            self.files.wanted.rebuild(&self.files.open);
        }
        self.write_until(due);
        self.seen = self.seen.max(due);
        let mut k = Timestamp::from_nanos(self.seen.as_nanos().saturating_sub(self.before));
        for r in &self.files.open {
            k = k.min(r.written_until);
        }
        self.keep_from = k;
    }

    /// At the end of input: waits for the host stage to finish, writes what
    /// is left and closes every file.
    pub(super) fn finish(mut self) -> EvidenceReport {
        while let Ok(req) = self.rx.recv() {
            self.queued.push_back(req);
        }
        self.apply(Timestamp::from_nanos(u64::MAX));
        let files = &mut self.files;
        for i in (0..files.open.len()).rev() {
            files.close(i);
        }
        std::mem::take(&mut files.report)
    }

    /// Offers every held packet before `w` to the open recordings, in one
    /// pass from the oldest packet any of them still needs.
    fn write_until(&mut self, w: Timestamp) {
        if self.files.open.is_empty() {
            return;
        }
        if self.files.wanted.filed == 0 {
            self.files.settle(w);
            return;
        }
        let from = self.files.open.iter().map(|r| r.written_until).min().unwrap_or(w);
        let first = self.held.partition_point(|h| h.ts < from);
        for h in self.held.range(first..) {
            if h.ts >= w {
                break;
            }
            let o = h.off as usize;
            self.files.offer(h, &self.arena[o..o + h.len as usize], w);
        }
        self.files.settle(w);
    }
}

/// Bytes of a pcap file's own header.
const PCAP_HEADER: u64 = 24;

/// What became of one matching packet.
enum Wrote {
    /// Written; the file grew by this many bytes.
    Packet(u64),
    /// The episode's cap is reached: it keeps the sample it has.
    Capped,
    /// A pcap file has one link type; a replay of mixed files can differ.
    OtherLink,
}

/// Appends one packet to the episode's file (created on its first packet).
fn write_one(dir: &Path, r: &mut Recording, h: &Held, data: &[u8]) -> Result<Wrote, pcap::Error> {
    // Each record has a 16-byte header; a new file, a 24-byte file header.
    let size = u64::from(h.len) + 16 + if r.file.is_none() { PCAP_HEADER } else { 0 };
    if r.bytes + size > r.cap {
        r.capped = true;
        return Ok(Wrote::Capped);
    }
    if r.link.is_some_and(|l| l != h.link) {
        return Ok(Wrote::OtherLink);
    }
    if r.file.is_none() {
        let dead = pcap::Capture::dead_with_precision(pcap::Linktype(h.link.dlt()), pcap::Precision::Nano)?;
        let path = dir.join(format!("{}.pcap", r.id));
        let (file, buffer) = match open_dump(&dead, &path) {
            Some((f, b)) => (f, Some(b)),
            // The plain way words the error.
            None => (dead.savefile(&path)?, None),
        };
        r.file = Some(file);
        r.buffer = buffer;
        r.link = Some(h.link);
    }
    let ns = h.ts.as_nanos();
    let header = pcap::PacketHeader {
        ts: libc::timeval {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_usec: (ns % 1_000_000_000) as libc::suseconds_t,
        },
        caplen: h.len,
        len: h.wire_len.max(h.len),
    };
    if let Some(f) = r.file.as_mut() {
        f.write(&pcap::Packet::new(&header, data));
    }
    r.bytes += size;
    Ok(Wrote::Packet(size))
}

/// Bytes each evidence file's stream buffers before a `write`: libpcap's
/// stdio default (4 KiB) made the benchmark mix's 257 MB of flood samples
/// 65,600 system calls; 64 KiB makes them about 4,100, and a thousand open
/// files still hold only 64 MiB of buffers.
const WRITE_BUFFER: usize = 64 << 10;

#[allow(unsafe_code)]
#[link(name = "pcap")]
unsafe extern "C" {
    /// libpcap's savefile writer over a stdio stream the caller opened.
    fn pcap_dump_fopen(p: *mut libc::c_void, fp: *mut libc::FILE) -> *mut libc::c_void;
}

/// Opens `path` for writing through a stream with a [`WRITE_BUFFER`]
/// buffer; `None` on any failure (the caller retries the plain way).
#[allow(unsafe_code)]
fn open_dump(dead: &pcap::Capture<pcap::Dead>, path: &Path) -> Option<(pcap::Savefile, Box<[u8]>)> {
    let (f, buf) = crate::capture::replay::fopen_buffered(path, c"wb", WRITE_BUFFER)?;
    // SAFETY: `f` is a fresh stream whose buffer `buf` outlives it (the
    // Recording drops its Savefile, which closes the stream, before the
    // buffer). libpcap owns the stream once it returns a dumper
    // (pcap_dump_close closes it) and leaves it to us when it fails; the
    // dumper goes to the pcap crate, which becomes its owner. It does not
    // refer to `dead` after the call.
    unsafe {
        match std::ptr::NonNull::new(pcap_dump_fopen(dead.as_ptr().cast(), f)) {
            Some(d) => Some((pcap::Savefile::from(d.cast()), buf)),
            None => {
                libc::fclose(f);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(a: Addr) -> Recording {
        Recording::new(String::new(), Filter::One(a), Timestamp::ZERO, 0)
    }

    #[test]
    fn every_recording_that_may_want_a_packet_is_a_candidate_once() {
        let addrs: Vec<Addr> = (0..64u8).map(|i| Addr::v4([10, 0, i / 8, i])).collect();
        let mut open: Vec<Recording> = addrs.iter().map(|a| one(*a)).collect();
        // A pair of two wanted addresses: a candidate once, not once per end.
        open[1].filter = Filter::Pair(addrs[1], addrs[2]);
        let prefix = |s: &str| Filter::Prefix(Cidr::parse(s).unwrap());
        open[3].filter = prefix("10.0.0.0/24");
        open[4].filter = prefix("2001:db8::/64");
        let mut w = Wanted::default();
        w.rebuild(&open);
        let got = |w: &Wanted, s: &Addr, d: &Addr| {
            let mut v = Vec::new();
            w.candidates(s, d, &mut v);
            v
        };
        let other = Addr::v4([192, 0, 2, 1]);
        for (i, r) in open.iter().enumerate() {
            for (s, d) in [(addrs[i], other), (other, addrs[i])] {
                let c = got(&w, &s, &d);
                // No recording that wants it is missed (others may come along).
                assert!(!r.filter.matches(&s, &d) || c.contains(&(i as u32)), "{i} {c:?}");
            }
        }
        let both = got(&w, &addrs[1], &addrs[2]);
        assert_eq!(both.iter().filter(|&&i| i == 1).count(), 1, "{both:?}");
        let v6: Addr = "2001:db8::7".parse::<std::net::IpAddr>().unwrap().into();
        assert!(got(&w, &v6, &other).contains(&4));
        // With nothing open, nothing.
        w.rebuild(&[]);
        assert!(got(&w, &addrs[0], &other).is_empty());
    }
}
