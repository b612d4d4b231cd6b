//! The tick coordinator of several live capture threads (AF_PACKET fanout).

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::dispatch::CoordMsg;
use crate::base::time::Timestamp;
use crate::capture::CaptureStats;
use crate::export::metrics;
use crate::track::ShardMsg;

/// The tick coordinator of several capture threads: an interval closes at
/// the shards once every running capture thread has passed its boundary, and
/// the input ends when all of them have ended. Each thread's batches reach
/// the shards before its message reaches here, so a tick never overtakes
/// the packets it closes. (A thread ahead of the others may land a few
/// packets of the next interval in the one closing: live capture is not
/// replayed, so this costs nothing but a sliver of attribution.)
pub(super) fn run(
    rx: Receiver<CoordMsg>,
    shards: Vec<Sender<ShardMsg>>,
    n: usize,
    publish: bool,
    mut status: Box<dyn FnMut(&CaptureStats) + Send>,
) {
    let mut marks: Vec<Option<Timestamp>> = vec![None; n];
    let mut done = vec![false; n];
    let mut stats = vec![CaptureStats::default(); n];
    let mut last: Option<Timestamp> = None;
    let mut end: Option<Timestamp> = None;
    let mut last_status = Instant::now();
    let broadcast = |msg: &dyn Fn() -> ShardMsg| {
        for s in &shards {
            let _ = s.send(msg());
        }
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            CoordMsg::Boundary { from, t, stats: st } => {
                if let Some(m) = marks.get_mut(from) {
                    *m = (*m).max(Some(t));
                    stats[from] = st;
                }
            }
            CoordMsg::Finish { from, t, stats: st } => {
                if let Some(d) = done.get_mut(from) {
                    *d = true;
                    stats[from] = st;
                    end = end.max(t);
                }
            }
        }
        let running: Vec<Option<Timestamp>> = (0..n).filter(|&i| !done[i]).map(|i| marks[i]).collect();
        if !running.is_empty() && running.iter().all(Option::is_some) {
            let low = running.iter().flatten().min().copied();
            if low > last {
                if let Some(t) = low {
                    let sent = Instant::now();
                    broadcast(&|| ShardMsg::Tick(t, sent));
                }
                last = low;
            }
        }
        let mut total = CaptureStats::default();
        stats.iter().for_each(|s| total.merge(s));
        if publish {
            metrics::publish_capture(&total);
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            status(&total);
        }
        if done.iter().all(|d| *d) {
            let t = end.max(last).unwrap_or(Timestamp::ZERO);
            broadcast(&|| ShardMsg::Finish(t));
            return;
        }
    }
}
