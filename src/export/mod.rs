//! Export: what leaves the sensor (JSON-lines events, NATS JetStream, Prometheus metrics).

pub mod community_id;
pub mod events;
pub mod metrics;
pub mod nats;
pub mod spool;
pub mod state;
pub mod systemd;

pub use events::{EventWriter, EventsError};
