//! The per-interval host summaries of one shard: a slab found through an
//! index of slot numbers, so the slab itself becomes the interval's report
//! (no copy at the tick) and flows can cache their hosts' slots.

use std::hash::BuildHasher;
use std::mem::{offset_of, size_of};

use super::{HostCounters, HostRow};
use crate::base::TopK;
use crate::decode::Addr;

/// A slot number meaning "not looked up yet this interval".
pub const UNSET: u32 = u32::MAX;
/// A slot number meaning "refused: the per-interval host cap was reached".
pub const OVER: u32 = u32::MAX - 1;

/// Offsets in a [`HostRow`] of what a packet updates of its sender (the
/// counters, the first and last byte of the top-K), derived from the layout
/// so the hints follow it when it changes.
const SENT_LINES: [usize; 3] = {
    let c = offset_of!(HostRow, 1);
    let k = offset_of!(HostCounters, top_dst);
    [c + offset_of!(HostCounters, pkts_out), c + k, c + k + size_of::<TopK>() - 1]
};

/// [`SENT_LINES`] for the receiver.
const RECEIVED_LINES: [usize; 3] = {
    let c = offset_of!(HostRow, 1);
    let k = offset_of!(HostCounters, top_src);
    [c + offset_of!(HostCounters, pkts_in), c + k, c + k + size_of::<TopK>() - 1]
};

/// Host summaries of the current interval, at most `cap` of them.
pub struct HostSlab {
    index: crate::base::SlabIndex,
    slab: Vec<HostRow>,
    hasher: foldhash::fast::FixedState,
    cap: usize,
}

impl HostSlab {
    /// An empty slab holding at most `cap` hosts per interval.
    pub fn new(cap: usize) -> HostSlab {
        HostSlab {
            index: crate::base::SlabIndex::default(),
            // Room for the cap at once: grown by doubling, the slab was
            // copied into fresh pages at every step of the first busy
            // interval. Room never filled is never touched.
            slab: Vec::with_capacity(cap.min(OVER as usize)),
            hasher: foldhash::fast::FixedState::with_seed(0x686f_7374_7321),
            // Slot numbers must stay below the two markers.
            cap: cap.min(OVER as usize),
        }
    }

    /// The slot of `a`, created if there is room; [`OVER`] if not.
    #[inline]
    pub fn slot(&mut self, a: Addr) -> u32 {
        let h = self.hasher.hash_one(a);
        let slab = &self.slab;
        if let Some(i) = self.index.find(h, |i| slab[i as usize].0 == a) {
            return i;
        }
        if self.slab.len() >= self.cap {
            return OVER;
        }
        let i = self.slab.len() as u32;
        self.slab.push(HostRow(a, HostCounters::default()));
        self.index.insert(h, i);
        i
    }

    /// Hints the cache toward the index bucket where `a`'s lookup starts.
    #[inline]
    pub fn prefetch_bucket(&self, a: Addr) {
        self.index.prefetch(self.hasher.hash_one(a));
    }

    /// Hints the cache toward the row `a` probably has (its bucket should be
    /// cached by now: see [`HostSlab::prefetch_bucket`]), as [`HostSlab::prefetch`].
    #[inline]
    pub fn prefetch_probable(&self, a: Addr, sent: bool) {
        if let Some(i) = self.index.probable(self.hasher.hash_one(a)) {
            self.prefetch(i, sent);
        }
    }

    /// Hints the cache toward the lines of `slot`'s row a packet updates:
    /// the sender's (`sent`) or the receiver's counters and top-K.
    #[inline]
    pub fn prefetch(&self, slot: u32, sent: bool) {
        if let Some(r) = self.slab.get(slot as usize) {
            let p = (r as *const HostRow).cast::<u8>();
            for at in if sent { SENT_LINES } else { RECEIVED_LINES } {
                crate::base::prefetch(p.wrapping_add(at));
            }
        }
    }

    /// The counters in `slot`, if it is a real slot.
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut HostCounters> {
        self.slab.get_mut(slot as usize).map(|HostRow(_, c)| c)
    }

    /// Hands the interval's summaries out, leaving `spare` (emptied) in their place.
    pub fn take(&mut self, mut spare: Vec<HostRow>) -> Vec<HostRow> {
        spare.clear();
        // A spare that is missing or small (the host stage still holds the
        // last one) gets the outgoing slab's room at once: growing it by
        // doubling would copy the whole slab several times an interval.
        // Room not filled is never touched, so it costs no memory.
        spare.reserve(self.slab.capacity());
        self.index.clear();
        std::mem::replace(&mut self.slab, spare)
    }
}
