//! Export: what leaves the sensor (JSON-lines events, Prometheus metrics).

pub mod community_id;
pub mod events;
pub mod metrics;
pub mod state;
pub mod systemd;

pub use events::{EventWriter, EventsError};
