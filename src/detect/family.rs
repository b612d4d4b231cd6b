//! The shape every detector family has: a per-packet half that runs in the
//! shards and a per-interval half that runs in the host stage.
//!
//! A family is one module that owns both halves. Its shard half is a
//! [`track::Observer`](crate::track::Observer): bounded per-interval tables
//! filled per packet, closed at each tick into a report that the host stage
//! merges across shards. Its host half implements [`Family`]: it takes the
//! merged report (and the merged host summaries) of each closed interval,
//! keeps its windows, baselines and episodes, and emits events. Families are
//! listed once, in `detect/mod.rs` (`families!`); the macro below turns that
//! list into the shard's observer, the merged report and the host stage's
//! set of families, all plain structs: calls stay monomorphic, nothing is
//! boxed per packet.

use super::anomaly::Anomaly;
use super::{DetectConfig, HostInterval};
use crate::base::Addr;
use crate::base::time::Timestamp;
use crate::track::{Observer, ShardConfig};

/// What the host stage hands every family for one closed interval.
pub struct Context<'a> {
    /// The interval's end (packet time).
    pub t: Timestamp,
    /// Every host's traffic in the interval, merged over shards.
    pub hosts: &'a HostInterval,
    /// Detector settings.
    pub cfg: &'a DetectConfig,
    /// What families judged earlier in this interval tell later ones.
    pub facts: Facts,
}

/// Findings one family publishes for the families judged after it in the
/// same interval (registration order).
#[derive(Debug, Default)]
pub struct Facts {
    /// Hosts with a flood or amplification episode open against them
    /// (sorted; published by the statistical family).
    pub flood_targets: Vec<Addr>,
}

impl Facts {
    /// True when `a` is the target of an open flood episode.
    pub fn under_flood(&self, a: &Addr) -> bool {
        self.flood_targets.binary_search(a).is_ok()
    }
}

/// What a family's saved state turned out to be at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Restored {
    /// Loaded; how many hosts' learned state it held (0 for a shared model).
    Loaded(usize),
    /// Readable but unusable here (another shape or version); left in place.
    Ignored(String),
    /// Corrupt or incompatible; the caller sets the file aside.
    Bad(String),
}

/// The host-stage half of a detector family.
pub trait Family: Sized {
    /// The per-packet half that runs in every shard (`()` for none).
    type Shard: Observer;
    /// A family with no history.
    fn new(cfg: &DetectConfig) -> Self;
    /// A fresh shard half for one shard.
    fn shard(cfg: &DetectConfig, shard: &ShardConfig) -> Self::Shard;
    /// Judges one closed interval: the shards' merged observations and the
    /// host summaries in `cx`. New episodes and updates go to `out`. The
    /// report is left empty (its vectors keep their capacity and go back to
    /// a shard).
    fn judge(
        &mut self,
        report: &mut <Self::Shard as Observer>::Report,
        cx: &mut Context<'_>,
        out: &mut Vec<Anomaly>,
    );
    /// Interval boundary after every family judged: rate-limited updates and
    /// cool-down ends, or (when `last`) the end of every open episode.
    fn tick(&mut self, t: Timestamp, last: bool, out: &mut Vec<Anomaly>);
    /// Episodes open now.
    fn open_count(&self) -> usize;
    /// Takes a new configuration (SIGHUP); learned state and open episodes stay.
    fn reconfigure(&mut self, cfg: &DetectConfig);
    /// The file in `--state-dir` this family keeps learned state in, if any.
    fn state_file(&self, _cfg: &DetectConfig) -> Option<&'static str> {
        None
    }
    /// The learned state as bytes to save (with [`state_file`](Self::state_file)).
    fn save_state(&self, _cfg: &DetectConfig) -> Option<Vec<u8>> {
        None
    }
    /// Restores state saved by [`save_state`](Self::save_state).
    fn load_state(&mut self, _text: &str, _cfg: &DetectConfig) -> Restored {
        Restored::Loaded(0)
    }
}

/// `Family::tick` and `Family::open_count` for a family whose episodes
/// live in `self.episodes` (every family but the statistical one).
macro_rules! episodes_tick {
    // Plus `reconfigure` for a family whose only setting to reload is the
    // episode timing.
    (reconfigure) => {
        $crate::detect::family::episodes_tick!();

        fn reconfigure(&mut self, cfg: &$crate::detect::DetectConfig) {
            self.episodes.set_policy(cfg.episodes);
        }
    };
    () => {
        fn tick(
            &mut self,
            t: $crate::base::time::Timestamp,
            last: bool,
            out: &mut Vec<$crate::detect::Anomaly>,
        ) {
            self.episodes.tick_or_close(t, last, out);
        }

        fn open_count(&self) -> usize {
            self.episodes.open_count()
        }
    };
}
pub(crate) use episodes_tick;

/// Declares the registered families, in judging order: generates the
/// shard's observer (`ShardHalves`), the merged interval report (`Reports`)
/// and the host stage's set (`Families`), each a struct with one field per
/// family.
macro_rules! families {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),+ $(,)?) => {
        /// Every family's shard half, as one shard's [`Observer`](crate::track::Observer).
        pub struct ShardHalves {
            $($(#[$doc])* pub $name: <$ty as $crate::detect::family::Family>::Shard,)+
        }

        impl ShardHalves {
            /// Fresh shard halves for one shard.
            pub fn new(cfg: &$crate::detect::DetectConfig, shard: &$crate::track::ShardConfig) -> ShardHalves {
                ShardHalves {
                    $($name: <$ty as $crate::detect::family::Family>::shard(cfg, shard),)+
                }
            }
        }

        /// One interval's observations of every family.
        #[derive(Default)]
        pub struct Reports {
            $($(#[$doc])* pub $name:
                <<$ty as $crate::detect::family::Family>::Shard as $crate::track::Observer>::Report,)+
        }

        impl $crate::track::Merge for Reports {
            fn absorb(&mut self, other: Reports) {
                $($crate::track::Merge::absorb(&mut self.$name, other.$name);)+
            }
        }

        impl $crate::track::Observer for ShardHalves {
            type Report = Reports;
            #[inline]
            fn packet(&mut self, m: &$crate::decode::PacketMeta) {
                $($crate::track::Observer::packet(&mut self.$name, m);)+
            }
            #[inline]
            fn flow_packet(&mut self, m: &$crate::decode::PacketMeta, f: &$crate::track::FlowView<'_>) {
                $($crate::track::Observer::flow_packet(&mut self.$name, m, f);)+
            }
            #[inline]
            fn flow_end(&mut self, f: &$crate::track::Flow, why: $crate::track::EndReason) {
                $($crate::track::Observer::flow_end(&mut self.$name, f, why);)+
            }
            fn close(&mut self, t: $crate::base::time::Timestamp) -> Reports {
                Reports { $($name: $crate::track::Observer::close(&mut self.$name, t),)+ }
            }
            fn overflow(&self) -> u64 {
                0 $(+ $crate::track::Observer::overflow(&self.$name))+
            }
            fn recycle(&mut self, r: Reports) {
                $($crate::track::Observer::recycle(&mut self.$name, r.$name);)+
            }
        }

        /// The host-stage half of every family.
        pub struct Families {
            $($(#[$doc])* pub $name: $ty,)+
        }

        impl Families {
            /// Every family with no history.
            pub fn new(cfg: &$crate::detect::DetectConfig) -> Families {
                Families { $($name: <$ty as $crate::detect::family::Family>::new(cfg),)+ }
            }

            /// Judges one closed interval, family by family in registration order.
            pub fn judge(
                &mut self,
                r: &mut Reports,
                cx: &mut $crate::detect::family::Context<'_>,
                out: &mut Vec<$crate::detect::Anomaly>,
            ) {
                $($crate::detect::family::Family::judge(&mut self.$name, &mut r.$name, cx, out);)+
            }

            /// Updates and ends at an interval boundary.
            pub fn tick(&mut self, t: $crate::base::time::Timestamp, last: bool, out: &mut Vec<$crate::detect::Anomaly>) {
                $($crate::detect::family::Family::tick(&mut self.$name, t, last, out);)+
            }

            /// Episodes open now, over all families.
            pub fn open_count(&self) -> usize {
                0 $(+ $crate::detect::family::Family::open_count(&self.$name))+
            }

            /// Applies a new configuration to every family.
            pub fn reconfigure(&mut self, cfg: &$crate::detect::DetectConfig) {
                $($crate::detect::family::Family::reconfigure(&mut self.$name, cfg);)+
            }

            /// Calls `f` with each family's state file and its state to save.
            pub fn save_states(&self, cfg: &$crate::detect::DetectConfig, f: &mut dyn FnMut(&'static str, Vec<u8>)) {
                $(
                    if let Some(file) = $crate::detect::family::Family::state_file(&self.$name, cfg) {
                        if let Some(bytes) = $crate::detect::family::Family::save_state(&self.$name, cfg) {
                            f(file, bytes);
                        }
                    }
                )+
            }

            /// Offers each family with a state file the text `read` finds for
            /// it; `report` hears how each went.
            pub fn load_states(
                &mut self,
                cfg: &$crate::detect::DetectConfig,
                read: &mut dyn FnMut(&'static str) -> Option<String>,
                report: &mut dyn FnMut(&'static str, $crate::detect::family::Restored),
            ) {
                $(
                    if let Some(file) = $crate::detect::family::Family::state_file(&self.$name, cfg) {
                        if let Some(text) = read(file) {
                            report(file, $crate::detect::family::Family::load_state(&mut self.$name, &text, cfg));
                        }
                    }
                )+
            }
        }
    };
}

pub(crate) use families;
