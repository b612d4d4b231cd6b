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
//! Many-source episodes (spoofed floods) keep the first `episode_mib` of
//! matching packets: a sample, not everything. All files together stay under
//! `total_mib`; the oldest finished files are removed first.

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
    /// Record packets matching `filter` from `from` on into `<id>.pcap`.
    Start { id: String, filter: Filter, from: Timestamp },
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

    /// The filter for an episode: its actor and target, or its prefix.
    fn of(a: &Anomaly) -> Option<Filter> {
        if let Some(p) = a.evidence.get("prefix").and_then(|v| v.as_str()).and_then(Cidr::parse) {
            return Some(Filter::Prefix(p));
        }
        match (a.src, a.dst) {
            (Some(s), Some(d)) => Some(Filter::Pair(s, d)),
            (Some(x), None) | (None, Some(x)) => Some(Filter::One(x)),
            (None, None) => None,
        }
    }
}

/// The host stage's watermark, shared with the recorder: packet time up to
/// which every request has been sent (`u64::MAX` once the host is done).
pub(super) type Watermark = Arc<AtomicU64>;

/// The host stage's side: turns episode events into requests.
pub(super) struct EvidenceHost {
    tx: Sender<Request>,
    watermark: Watermark,
    before: u64,
}

impl EvidenceHost {
    /// Names the file in the event and asks the recorder for its packets.
    pub(super) fn on_event(&mut self, a: &mut Anomaly, interval_start: Timestamp, interval_end: Timestamp) {
        let Some(filter) = Filter::of(a) else { return };
        let file = format!("{}.pcap", a.episode_id);
        a.evidence.insert("pcap".into(), serde_json::Value::String(file));
        let req = match a.phase {
            Phase::Start => Request::Start {
                id: a.episode_id.clone(),
                filter,
                from: interval_start.saturating_sub(self.before),
            },
            Phase::End => Request::Stop { id: a.episode_id.clone(), until: interval_end },
            Phase::Update => return,
        };
        let _ = self.tx.send(req);
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
    /// Position in the byte arena (monotonic; `% capacity` is the offset).
    at: u64,
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
    link: Option<LinkType>,
    bytes: u64,
    capped: bool,
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

/// The capture thread's side: the ring and the files.
pub(super) struct Recorder {
    dir: PathBuf,
    arena: Vec<u8>,
    head: u64,
    held: VecDeque<Held>,
    rx: Receiver<Request>,
    watermark: Watermark,
    /// Last watermark seen: packets before it were offered to every recording.
    seen: u64,
    before: u64,
    episode_cap: u64,
    total_cap: u64,
    open: Vec<Recording>,
    done: VecDeque<(PathBuf, u64)>,
    total: u64,
    /// Replay: wait for the host rather than lose a packet it may still need.
    patient: bool,
    /// Oldest packet time the host may still ask for (recomputed per tick).
    keep_from: u64,
    report: EvidenceReport,
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
    let rec = Recorder {
        dir: dir.to_path_buf(),
        arena: vec![0; (cfg.ring_mib * 1_048_576.0) as usize],
        head: 0,
        held: VecDeque::new(),
        rx,
        watermark,
        seen: 0,
        before,
        episode_cap: (cfg.episode_mib * 1_048_576.0) as u64,
        total_cap: (cfg.total_mib * 1_048_576.0) as u64,
        open: Vec::new(),
        done: done.into_iter().map(|(_, p, n)| (p, n)).collect(),
        total,
        patient,
        keep_from: 0,
        report: EvidenceReport::default(),
    };
    Ok((host, rec))
}

impl Recorder {
    /// Keeps one frame (after its packet time was made monotonic). Returns
    /// true when the ring is full of packets the host may still ask for and
    /// the host is behind `sent` (the last tick sent): a patient caller
    /// flushes its batches and calls [`Recorder::wait_for_host`].
    pub(super) fn push(&mut self, link: LinkType, m: &PacketMeta, data: &[u8], sent: Timestamp) -> bool {
        let cap = self.arena.len() as u64;
        let len = data.len() as u64;
        if len == 0 || len > cap {
            return false;
        }
        // Frames never straddle the arena's end: skip to its start instead.
        let mut at = self.head;
        if at % cap + len > cap {
            at += cap - at % cap;
        }
        let full = self.held.front().is_some_and(|f| f.at + cap < at + len);
        if full && self.held.front().is_some_and(|f| f.ts.as_nanos() >= self.keep_from) {
            // About to drop packets a request may want. Waiting helps only
            // while the host is behind what was sent; once it has caught up,
            // write what it asked for so far and let the oldest go (the ring
            // is too small for `before_seconds` of this traffic; counted).
            // Either way this happens at the same point in packet time.
            let w = self.watermark.load(Ordering::Acquire);
            if self.patient && w < sent.as_nanos() {
                return true;
            }
            if w > self.seen {
                self.maintain();
            }
        }
        let keep_from = self.keep_from;
        while let Some(front) = self.held.front() {
            if front.at + cap >= at + len {
                break;
            }
            if front.ts.as_nanos() >= keep_from {
                self.report.ring_overruns += 1;
            }
            self.held.pop_front();
        }
        // Packets no request can reach any more leave early, so the ring
        // holds `before` seconds behind the host, not `ring_mib` of old news.
        while self.held.front().is_some_and(|f| f.ts.as_nanos() < keep_from) {
            self.held.pop_front();
        }
        let off = (at % cap) as usize;
        self.arena[off..off + data.len()].copy_from_slice(data);
        self.head = at + len;
        self.held.push_back(Held {
            ts: m.ts,
            src: m.src,
            dst: m.dst,
            link,
            wire_len: m.wire_len,
            at,
            len: len as u32,
        });
        false
    }

    /// Oldest packet time the host may still ask for.
    fn update_keep_from(&mut self) {
        let mut k = self.seen.saturating_sub(self.before);
        for r in &self.open {
            k = k.min(r.written_until.as_nanos());
        }
        self.keep_from = k;
    }

    /// The ring is full of packets the host may want: wait until it has
    /// caught up with everything sent (`sent_until`, the last tick), write,
    /// and then make room even if that loses packets (counted).
    pub(super) fn wait_for_host(
        &mut self,
        sent_until: Timestamp,
        link: LinkType,
        m: &PacketMeta,
        data: &[u8],
        stop: &std::sync::atomic::AtomicBool,
    ) {
        while self.watermark.load(Ordering::Acquire) < sent_until.as_nanos() && !stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        self.maintain();
        self.push(link, m, data, sent_until);
    }

    /// Takes the host's requests and writes what its watermark allows.
    pub(super) fn maintain(&mut self) {
        let w = self.watermark.load(Ordering::Acquire);
        // Requests sent before the watermark was stored are all visible now.
        while let Ok(req) = self.rx.try_recv() {
            self.take(req);
        }
        self.write_until(Timestamp::from_nanos(w));
        self.seen = self.seen.max(w);
        self.update_keep_from();
    }

    /// At the end of input: waits for the host stage to finish, writes what
    /// is left and closes every file.
    pub(super) fn finish(mut self) -> EvidenceReport {
        while let Ok(req) = self.rx.recv() {
            self.take(req);
            self.write_until(Timestamp::from_nanos(self.watermark.load(Ordering::Acquire)));
        }
        self.write_until(Timestamp::from_nanos(u64::MAX));
        for i in (0..self.open.len()).rev() {
            self.close(i);
        }
        self.report
    }

    fn take(&mut self, req: Request) {
        match req {
            Request::Start { id, filter, from } => self.open.push(Recording {
                id,
                filter,
                written_until: from,
                until: None,
                file: None,
                link: None,
                bytes: 0,
                capped: false,
            }),
            Request::Stop { id, until } => {
                if let Some(r) = self.open.iter_mut().find(|r| r.id == id) {
                    r.until = Some(until);
                }
            }
        }
    }

    /// Writes every held packet before `w` to the recordings it matches.
    fn write_until(&mut self, w: Timestamp) {
        if self.open.is_empty() {
            return;
        }
        let cap = self.arena.len() as u64;
        for i in 0..self.open.len() {
            let r = &mut self.open[i];
            let end = r.until.map_or(w, |u| u.min(w));
            if end <= r.written_until {
                continue;
            }
            let first = self.held.partition_point(|h| h.ts < r.written_until);
            for h in self.held.range(first..) {
                if h.ts >= end {
                    break;
                }
                if r.capped || !r.filter.matches(&h.src, &h.dst) {
                    continue;
                }
                let off = (h.at % cap) as usize;
                let data = &self.arena[off..off + h.len as usize];
                match write_one(&self.dir, r, h, data, self.episode_cap) {
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
            r.written_until = end;
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
fn write_one(dir: &Path, r: &mut Recording, h: &Held, data: &[u8], cap: u64) -> Result<Wrote, pcap::Error> {
    // Each record has a 16-byte header; a new file, a 24-byte file header.
    let size = u64::from(h.len) + 16 + if r.file.is_none() { PCAP_HEADER } else { 0 };
    if r.bytes + size > cap {
        r.capped = true;
        return Ok(Wrote::Capped);
    }
    if r.link.is_some_and(|l| l != h.link) {
        return Ok(Wrote::OtherLink);
    }
    if r.file.is_none() {
        let dead = pcap::Capture::dead_with_precision(pcap::Linktype(h.link.dlt()), pcap::Precision::Nano)?;
        r.file = Some(dead.savefile(dir.join(format!("{}.pcap", r.id)))?);
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
