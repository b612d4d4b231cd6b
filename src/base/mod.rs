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
