//! netvigil: a packet-level network anomaly sensor.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! capture ─▶ decode ─▶ track (N shards) ─▶ detect (host stage) ─▶ export
//! libpcap    PacketMeta  flows, host       episodes, ordering     JSON lines,
//! savefile/  (Copy, no   summaries, hits   (watermarked by        Prometheus
//! device      raw bytes)                     Tick(t))
//! ```
//!
//! Records that cross a boundary are defined once: [`decode::PacketMeta`]
//! (capture → shards), [`track::ShardReport`] (shards → host stage) and
//! [`detect::Anomaly`] (host stage → sinks). Packet time
//! ([`time::Timestamp`]) drives every window and timeout, so a replay gives
//! byte-identical events at any speed and with any number of workers.

pub mod base;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod export;
pub mod pipeline;
pub mod track;
