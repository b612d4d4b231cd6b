//! Base: the vocabulary below every stage of the pipeline.
//!
//! Addresses, packet time, the mergeable sketches shards and detectors
//! count with, and the names of anomaly kinds. Nothing here knows about
//! capture, tracking or detection, so every stage may import it and it
//! imports none of them.

pub mod addr;
pub mod kind;
pub mod sketch;
pub mod slab_index;
pub mod slab_map;
pub mod time;

pub use addr::{Addr, Cidr, LocalNets};
pub use sketch::{Distinct, PortBits, TopK};
pub use slab_index::SlabIndex;
pub use slab_map::SlabMap;

/// Hints the CPU to start loading the cache line holding `p` (a no-op off
/// x86-64). Never faults and changes nothing: the shard issues it a few
/// packets ahead so a table's cache misses overlap instead of queueing.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint; it never faults, whatever the address.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
