//! The capture thread's side: decode each frame, keep packet time monotonic,
//! shard by flow key, batch, and close intervals with ticks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::Backpressure;
use crate::base::time::Timestamp;
use crate::capture::{CaptureStats, Frame, FrameSink};
use crate::decode::{self, LinkType, PacketMeta, anomaly};
use crate::export::metrics;
use crate::track::{FlowKey, ShardMsg, key::flow_hash, key::shard_hash};

/// The capture thread's side of the pipeline: decode, shard, batch, tick.
pub struct Dispatcher {
    pub(super) shards: Vec<Sender<ShardMsg>>,
    pub(super) batches: Vec<Vec<PacketMeta>>,
    pub(super) recycle: Receiver<Vec<PacketMeta>>,
    pub(super) batch_size: usize,
    pub(super) interval: u64,
    pub(super) next_tick: Option<Timestamp>,
    pub(super) watermark: Option<Timestamp>,
    pub(super) first: Option<Timestamp>,
    pub(super) backpressure: Backpressure,
    pub(super) stats: CaptureStats,
    pub(super) publish: bool,
    pub(super) dead: bool,
    pub(super) skew: u64,
    pub(super) stop: Arc<AtomicBool>,
    /// With several capture threads: this thread's number and the tick
    /// coordinator, which closes an interval once every thread has passed it.
    pub(super) coord: Option<(usize, Sender<CoordMsg>)>,
    /// Evidence pcaps: the ring of recent frames (`--evidence-dir`).
    pub(super) evidence: Option<super::evidence::Recorder>,
    /// The frame being dispatched, decoded in place (then copied once).
    pub(super) meta: PacketMeta,
}

/// What a capture thread tells the tick coordinator (several capture threads).
pub(super) enum CoordMsg {
    /// This thread's packet time passed `t` (its batches before it are sent).
    Boundary { from: usize, t: Timestamp, stats: CaptureStats },
    /// This thread's input ended at `t` (everything is sent).
    Finish { from: usize, t: Option<Timestamp>, stats: CaptureStats },
}

/// Backward time jumps larger than this rebase the input instead of clamping.
const REBASE_NS: u64 = crate::base::time::NANOS_PER_SEC;

impl Dispatcher {
    fn get_batch(&self) -> Vec<PacketMeta> {
        self.recycle.try_recv().unwrap_or_else(|_| Vec::with_capacity(self.batch_size))
    }

    fn send_batch(&mut self, i: usize) {
        if self.batches[i].is_empty() {
            return;
        }
        let fresh = self.get_batch();
        let batch = std::mem::replace(&mut self.batches[i], fresh);
        match self.backpressure {
            Backpressure::Block => {
                if self.shards[i].send(ShardMsg::Batch(batch)).is_err() {
                    self.dead = true;
                }
            }
            Backpressure::DropNewest => match self.shards[i].try_send(ShardMsg::Batch(batch)) {
                Ok(()) => {}
                Err(TrySendError::Full(ShardMsg::Batch(mut b))) => {
                    self.stats.queue_drops += b.len() as u64;
                    b.clear();
                    self.batches[i] = b;
                }
                Err(_) => self.dead = true,
            },
        }
    }

    fn broadcast(&mut self, msg: impl Fn() -> ShardMsg) {
        for s in &self.shards {
            // Ticks always block: they are rare and the watermark needs them.
            if s.send(msg()).is_err() {
                self.dead = true;
            }
        }
    }

    /// Moves packet time to `t`, closing intervals it crosses.
    fn advance(&mut self, t: Timestamp) {
        match self.next_tick {
            None => self.next_tick = Some(t.floor_to(self.interval).saturating_add(self.interval)),
            Some(nt) if t >= nt => {
                for i in 0..self.batches.len() {
                    self.send_batch(i);
                }
                // One tick however far time jumped: a gap of years is one
                // long quiet interval, not millions of empty ones.
                let boundary = t.floor_to(self.interval);
                match &self.coord {
                    None => {
                        let sent = Instant::now();
                        self.broadcast(|| ShardMsg::Tick(boundary, sent));
                    }
                    Some((from, tx)) => {
                        let msg = CoordMsg::Boundary { from: *from, t: boundary, stats: self.stats.clone() };
                        if tx.send(msg).is_err() {
                            self.dead = true;
                        }
                    }
                }
                self.next_tick = Some(boundary.saturating_add(self.interval));
                if let Some(r) = self.evidence.as_mut() {
                    r.tick(boundary, &self.stop);
                }
                if self.publish {
                    metrics::publish_capture(&self.stats);
                }
            }
            Some(_) => {}
        }
    }

    /// Flushes every batch and ends the input at the shards (or tells the coordinator).
    pub(super) fn finish(&mut self) {
        for i in 0..self.batches.len() {
            self.send_batch(i);
        }
        if let Some((from, tx)) = &self.coord {
            let msg = CoordMsg::Finish { from: *from, t: self.watermark, stats: self.stats.clone() };
            if tx.send(msg).is_err() {
                self.dead = true;
            }
            return;
        }
        let end = self.watermark.unwrap_or(Timestamp::ZERO);
        self.broadcast(|| ShardMsg::Finish(end));
        if self.publish {
            metrics::publish_capture(&self.stats);
        }
    }
}

impl FrameSink for Dispatcher {
    fn frame(&mut self, link: LinkType, f: &Frame<'_>) {
        if self.dead && !self.stop.swap(true, Ordering::Relaxed) {
            tracing::error!("a tracker thread stopped unexpectedly; ending capture");
        }
        self.stats.packets += 1;
        self.stats.bytes += u64::from(f.wire_len);
        let ts = Timestamp::from_parts(f.secs, f.nanos).saturating_add(self.skew);
        // Packet time never runs backwards inside the pipeline. A packet a
        // little late (reordering across NIC queues: microseconds to
        // milliseconds) is stamped with the latest time seen. A jump back of
        // more than REBASE_NS (two captures concatenated, a clock step) shifts
        // the rest of the input forward instead, so its packets keep their
        // spacing rather than all piling into one interval and faking a spike.
        let mut backwards = 0;
        let ts = match self.watermark {
            Some(w) if ts < w => {
                let back = w.since(ts);
                if back > REBASE_NS {
                    self.skew = self.skew.saturating_add(back);
                    backwards = anomaly::TS_BACKWARDS;
                } else {
                    self.stats.reordered += 1;
                    self.stats.reordered_max_ns = self.stats.reordered_max_ns.max(back);
                }
                w
            }
            _ => {
                self.watermark = Some(ts);
                ts
            }
        };
        self.first.get_or_insert(ts);
        self.advance(ts);
        let m = &mut self.meta;
        decode::decode_into(m, link, ts, f.wire_len, f.data);
        m.anomalies |= backwards;
        self.stats.count_anomalies(m.anomalies);
        let key = FlowKey::of(m).0;
        m.flow_hash = flow_hash(&key);
        let i =
            if self.shards.len() == 1 { 0 } else { (shard_hash(&key) % self.shards.len() as u64) as usize };
        if let Some(r) = self.evidence.as_mut() {
            r.push(link, m, f.data);
        }
        // The stateless rules run here, where cycles are spare, not on the shard.
        m.prejudged = crate::detect::misuse::prejudge(m);
        // From the record straight into the batch (a push copies it twice).
        self.batches[i].extend_from_slice(std::slice::from_ref(m));
        if self.batches[i].len() >= self.batch_size {
            self.send_batch(i);
        }
    }

    fn flush(&mut self) {
        for i in 0..self.batches.len() {
            self.send_batch(i);
        }
    }

    fn idle(&mut self, now: Timestamp) {
        if self.coord.is_some() && self.watermark.is_none() {
            // A fanout member that has seen no packet yet still moves its
            // clock, or the coordinator would wait for it forever.
            self.advance(now);
        } else if self.watermark.is_some_and(|w| now > w) {
            self.watermark = Some(now);
            self.advance(now);
        }
    }

    fn stats(&mut self) -> &mut CaptureStats {
        &mut self.stats
    }
}
