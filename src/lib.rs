//! netvigil: a packet-level network anomaly sensor.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! capture ─▶ decode ─▶ track (N shards) ─▶ detect (host stage) ─▶ export
//! libpcap    PacketMeta  flows, host       families judge,        JSON lines,
//! savefile/  (Copy, no   summaries, the    episodes, ordering     Prometheus
//! device      raw bytes)  families' shard  (watermarked by
//!                         halves           Tick(t))
//! ```
//!
//! Records that cross a boundary are defined once: [`decode::PacketMeta`]
//! (capture → shards), [`track::ShardReport`] (shards → host stage) and
//! [`detect::Anomaly`] (host stage → sinks). Each detector family is one
//! module in [`detect`] owning its per-packet half (a [`track::Observer`])
//! and its per-interval half (a [`detect::family::Family`]). [`base`] holds
//! what every stage shares (addresses, packet time, sketches, kind names);
//! [`config`] owns every configuration type. Packet time
//! ([`base::time::Timestamp`]) drives every window and timeout, so a replay
//! gives byte-identical events at any speed and with any number of workers.

pub mod base;
pub mod capture;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod export;
pub mod pipeline;
pub mod track;
