//! Capture: libpcap savefiles and live devices, and the counters they keep.
//!
//! This is the only stage that touches libpcap and the wall clock (for
//! pacing and live idle ticks). Frames are decoded here, on the capture
//! thread, and only the compact [`PacketMeta`](crate::decode::PacketMeta)
//! leaves it.

pub mod fanout;
pub mod live;
pub mod privileges;
pub mod replay;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::decode::anomaly;

/// Errors opening or reading a capture source.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A savefile path that does not exist.
    #[error("{0}: no such file; give the path of a pcap or pcapng savefile")]
    NotFound(PathBuf),
    /// A directory where a savefile was expected.
    #[error("{0}: is a directory; give the path of a pcap or pcapng savefile")]
    IsDirectory(PathBuf),
    /// A savefile libpcap refused to open (not pcap/pcapng, bad header...).
    #[error("{path}: cannot read as a capture file: {message}")]
    BadFile {
        /// The savefile.
        path: PathBuf,
        /// libpcap's explanation.
        message: String,
    },
    /// The savefile is damaged part-way through; earlier packets were processed.
    #[error("{path}: damaged after {packets} packets: {message}; the packets before it were analysed")]
    Damaged {
        /// The savefile.
        path: PathBuf,
        /// Packets read before the damage.
        packets: u64,
        /// libpcap's explanation.
        message: String,
    },
    /// No such network interface.
    #[error("interface {name}: no such device; available: {available}")]
    UnknownInterface {
        /// The name given.
        name: String,
        /// Names libpcap can open.
        available: String,
    },
    /// The process may not capture.
    #[error(
        "interface {name}: permission denied ({message}); run as root or grant the binary CAP_NET_RAW and CAP_NET_ADMIN (setcap cap_net_raw,cap_net_admin=eip)"
    )]
    Permission {
        /// The interface.
        name: String,
        /// libpcap's explanation.
        message: String,
    },
    /// The BPF filter does not compile.
    #[error("bad --bpf filter {filter:?}: {message}")]
    BadFilter {
        /// The expression.
        filter: String,
        /// libpcap's explanation.
        message: String,
    },
    /// Live capture failed (device vanished, went down...).
    #[error("capture on {name} failed: {message}")]
    Live {
        /// The interface.
        name: String,
        /// libpcap's explanation.
        message: String,
    },
}

impl CaptureError {
    /// True when the user named the wrong thing (exit 2) rather than the
    /// environment failing at run time (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CaptureError::NotFound(_)
                | CaptureError::IsDirectory(_)
                | CaptureError::BadFile { .. }
                | CaptureError::UnknownInterface { .. }
                | CaptureError::BadFilter { .. }
        )
    }
}

/// Counters kept by the capture thread (cumulative).
#[derive(Clone, Debug, Default)]
pub struct CaptureStats {
    /// Frames read from libpcap.
    pub packets: u64,
    /// Wire bytes of those frames.
    pub bytes: u64,
    /// Decode anomalies by reason (index = bit position in [`anomaly::NAMES`]).
    pub decode_anomalies: [u64; anomaly::COUNT],
    /// Frames of link types we cannot decode, by DLT number.
    pub unsupported_links: BTreeMap<i32, u64>,
    /// Packets libpcap received (live).
    pub received: u64,
    /// Packets the kernel dropped (live: buffer full).
    pub kernel_drops: u64,
    /// Packets the interface/driver dropped (live).
    pub if_drops: u64,
    /// Packets dropped because a shard queue was full (live only).
    pub queue_drops: u64,
    /// Packets stamped a little (at most a second) before one already
    /// seen, stamped with the latest time instead: the ordinary
    /// interleaving of a capture fed by several CPUs or queues, not a
    /// decode anomaly. Larger steps back are `timestamp_backwards`.
    pub reordered: u64,
    /// The largest such step back, in nanoseconds.
    pub reordered_max_ns: u64,
    /// Savefiles read completely.
    pub files_ok: usize,
    /// Errors met while reading (damaged files); processing went on.
    pub errors: Vec<String>,
}

impl CaptureStats {
    /// Adds another capture thread's counters (several threads on one interface).
    pub fn merge(&mut self, o: &CaptureStats) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        for (a, b) in self.decode_anomalies.iter_mut().zip(o.decode_anomalies) {
            *a += b;
        }
        for (k, v) in &o.unsupported_links {
            *self.unsupported_links.entry(*k).or_default() += v;
        }
        self.received += o.received;
        self.kernel_drops += o.kernel_drops;
        self.if_drops += o.if_drops;
        self.queue_drops += o.queue_drops;
        self.reordered += o.reordered;
        self.reordered_max_ns = self.reordered_max_ns.max(o.reordered_max_ns);
        self.files_ok += o.files_ok;
        self.errors.extend(o.errors.iter().cloned());
    }

    /// Counts every anomaly bit of one packet.
    pub fn count_anomalies(&mut self, bits: u32) {
        let mut b = bits;
        while b != 0 {
            let i = b.trailing_zeros() as usize;
            if let Some(c) = self.decode_anomalies.get_mut(i) {
                *c += 1;
            }
            b &= b - 1;
        }
    }
}

/// A frame as libpcap hands it over, borrowed from its buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Seconds part of the timestamp.
    pub secs: i64,
    /// Sub-second part in nanoseconds.
    pub nanos: i64,
    /// Length on the wire.
    pub wire_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The frame libpcap returned. With nanosecond precision requested,
    /// libpcap puts nanoseconds in the `tv_usec` field.
    // time_t and suseconds_t are i32 on some targets: the conversion is not useless there.
    #[allow(clippy::useless_conversion)]
    pub fn from_pcap(p: &pcap::Packet<'a>) -> Frame<'a> {
        Frame {
            secs: i64::from(p.header.ts.tv_sec),
            nanos: i64::from(p.header.ts.tv_usec),
            wire_len: p.header.len,
            data: p.data,
        }
    }
}

/// Where captured frames go (the pipeline's dispatcher implements this).
pub trait FrameSink {
    /// Takes one frame of link type `link`.
    fn frame(&mut self, link: crate::decode::LinkType, f: &Frame<'_>);
    /// Sends any partly filled batches now (before a pause or an idle wait).
    fn flush(&mut self);
    /// Live only: packet time follows the wall clock on a silent link, so
    /// intervals still close and episodes still end.
    fn idle(&mut self, now: crate::base::time::Timestamp);
    /// The capture counters, kept by the sink.
    fn stats(&mut self) -> &mut CaptureStats;
}
