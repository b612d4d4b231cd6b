//! Live capture from a network interface through libpcap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcap::{Active, Capture, Precision};

use super::{CaptureError, Frame, FrameSink};
use crate::base::time::Timestamp;
use crate::decode::LinkType;

/// Live capture settings.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Interface name.
    pub interface: String,
    /// Bytes captured per packet.
    pub snaplen: u32,
    /// Kernel buffer in MiB.
    pub buffer_mib: u32,
    /// Promiscuous mode.
    pub promiscuous: bool,
    /// Optional BPF filter.
    pub bpf: Option<String>,
}

/// How long a read waits on a silent link before we look at the stop flag
/// and the clock again: bounds shutdown latency and idle-tick lag.
const READ_TIMEOUT_MS: i32 = 100;

/// Opens and activates the device, with errors that say what to do.
pub fn open(o: &LiveOptions) -> Result<Capture<Active>, CaptureError> {
    let devices = pcap::Device::list().unwrap_or_default();
    if !devices.iter().any(|d| d.name == o.interface) {
        let mut names: Vec<String> = devices.into_iter().map(|d| d.name).collect();
        names.sort();
        return Err(CaptureError::UnknownInterface {
            name: o.interface.clone(),
            available: if names.is_empty() {
                "none visible (are you root?)".into()
            } else {
                names.join(", ")
            },
        });
    }
    let inactive = Capture::from_device(o.interface.as_str()).map_err(|e| live_err(o, e))?;
    let mut cap = inactive
        .snaplen(i32::try_from(o.snaplen).unwrap_or(i32::MAX))
        .buffer_size(i32::try_from(u64::from(o.buffer_mib) << 20).unwrap_or(i32::MAX))
        .promisc(o.promiscuous)
        .timeout(READ_TIMEOUT_MS)
        .precision(Precision::Nano)
        .open()
        .map_err(|e| live_err(o, e))?;
    if let Some(f) = &o.bpf {
        cap.filter(f, true)
            .map_err(|e| CaptureError::BadFilter { filter: f.clone(), message: e.to_string() })?;
    }
    Ok(cap)
}

/// Checks a BPF expression against a link type without opening anything.
pub fn check_filter(expr: &str, dlt: i32) -> Result<(), CaptureError> {
    let dead = Capture::dead(pcap::Linktype(dlt))
        .map_err(|e| CaptureError::BadFilter { filter: expr.into(), message: e.to_string() })?;
    dead.compile(expr, true)
        .map(|_| ())
        .map_err(|e| CaptureError::BadFilter { filter: expr.into(), message: e.to_string() })
}

fn live_err(o: &LiveOptions, e: pcap::Error) -> CaptureError {
    let message = e.to_string().trim_start_matches("libpcap error: ").to_string();
    let lower = message.to_lowercase();
    if lower.contains("permission") || lower.contains("not permitted") {
        CaptureError::Permission { name: o.interface.clone(), message }
    } else if lower.contains("no such device") {
        CaptureError::UnknownInterface { name: o.interface.clone(), available: "see `ip link`".into() }
    } else {
        CaptureError::Live { name: o.interface.clone(), message }
    }
}

/// Watches the interface's operational state, so a dead span port is said
/// out loud (libpcap often just goes quiet when a link drops).
#[derive(Default)]
struct LinkState {
    down: bool,
}

impl LinkState {
    fn check(&mut self, iface: &str) {
        let Ok(state) = std::fs::read_to_string(format!("/sys/class/net/{iface}/operstate")) else { return };
        let down = state.trim() == "down";
        if down && !self.down {
            tracing::warn!("interface {iface} is down: no traffic can be seen until it comes back");
        } else if !down && self.down {
            tracing::warn!("interface {iface} is up again");
        }
        self.down = down;
    }
}

/// Wall-clock time as a packet timestamp (for idle ticks on a silent link).
pub fn wall_now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp::from_parts(i64::try_from(d.as_secs()).unwrap_or(i64::MAX), i64::from(d.subsec_nanos()))
}

/// Captures until `stop` is set, the device fails, or libpcap's loop is broken.
///
/// `status` is called about once a second of wall time with libpcap's own
/// counters already folded into the sink's stats.
pub fn run(
    mut cap: Capture<Active>,
    o: &LiveOptions,
    stop: &Arc<AtomicBool>,
    sink: &mut impl FrameSink,
    mut status: impl FnMut(&super::CaptureStats),
) -> Result<(), CaptureError> {
    let link = LinkType::from_dlt(cap.get_datalink().0);
    if !link.is_supported() {
        tracing::warn!(
            "{}: link type {} is not supported; packets are counted, not analysed",
            o.interface,
            cap.get_datalink().0
        );
    }
    let mut last_status = Instant::now();
    let mut link_state = LinkState::default();
    let mut last_stat = pcap::Stat { received: 0, dropped: 0, if_dropped: 0 };
    let mut n: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut idle = false;
        match cap.next_packet() {
            Ok(p) => {
                n += 1;
                let f = Frame::from_pcap(&p);
                sink.frame(link, &f);
                if !link.is_supported() {
                    *sink.stats().unsupported_links.entry(cap.get_datalink().0).or_default() += 1;
                }
            }
            Err(pcap::Error::TimeoutExpired) => idle = true,
            // pcap_breakloop from the signal thread.
            Err(pcap::Error::NoMorePackets) => return Ok(()),
            Err(e) => {
                return Err(CaptureError::Live { name: o.interface.clone(), message: e.to_string() });
            }
        }
        if idle {
            sink.flush();
            sink.idle(wall_now());
        }
        if (idle || n & 1023 == 0) && last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            if let Ok(s) = cap.stats() {
                // libpcap's counters are 32-bit and wrap on a busy link:
                // accumulate deltas into 64-bit totals.
                let st = sink.stats();
                st.received += u64::from(s.received.wrapping_sub(last_stat.received));
                st.kernel_drops += u64::from(s.dropped.wrapping_sub(last_stat.dropped));
                st.if_drops += u64::from(s.if_dropped.wrapping_sub(last_stat.if_dropped));
                last_stat = s;
            }
            sink.idle(wall_now());
            status(sink.stats());
            link_state.check(&o.interface);
        }
    }
}
