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
    /// Behaviour signals of local hosts with a history, each judged against
    /// that host's own history by the behaviour family that keeps it
    /// (exfiltration, lateral movement, beaconing): one entry per host and
    /// finding, in publishing order until [`settle_behaviour`](Self::settle_behaviour).
    /// The behaviour model's second head reads them.
    pub behaviour: Vec<(Addr, HostSignals)>,
}

/// Behaviour signals per host, in this order: bytes sent outside, bytes to
/// outside networks new to the host, new internal administrative peers,
/// regularity of check-ins with a service new to the host.
pub const SIGNALS: usize = 4;

/// Index of the bytes-sent-outside signal in [`HostSignals::signals`].
pub const SIG_OUTSIDE: usize = 0;
/// Index of the bytes-to-new-outside-networks signal.
pub const SIG_NEW_DEST: usize = 1;
/// Index of the new-administrative-peers signal.
pub const SIG_ADMIN: usize = 2;
/// Index of the check-in regularity signal.
pub const SIG_REGULAR: usize = 3;

/// One behaviour signal of one host in one interval: a value measured
/// against the host's own history (0: nothing unusual, or no history yet),
/// with what it was measured from, for the analyst's sentence.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signal {
    /// The value the model judges (a ratio to the host's own usual, or a score).
    pub value: f64,
    /// What the host did now (bytes, peers, seconds of period).
    pub now: f64,
    /// What the host's history holds (its busiest window, its known peers,
    /// the check-ins scored).
    pub usual: f64,
    /// The window it was measured over, in seconds (0: not a window).
    pub seconds: u64,
    /// The peer it concerns (destination, new peer, service), if one.
    pub peer: Option<Addr>,
    /// A count behind it (new outside networks, check-ins), 0 if none.
    pub count: u64,
}

/// One host's behaviour signals in one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostSignals {
    /// The signals, indexed by `SIG_*`.
    pub signals: [Signal; SIGNALS],
}

impl HostSignals {
    /// Signals with only `which` set to `s`.
    pub fn one(which: usize, s: Signal) -> HostSignals {
        let mut h = HostSignals::default();
        if let Some(slot) = h.signals.get_mut(which) {
            *slot = s;
        }
        h
    }

    /// Keeps, per signal, the higher value of the two (the earlier on a tie).
    fn fold(&mut self, o: &HostSignals) {
        for (mine, theirs) in self.signals.iter_mut().zip(&o.signals) {
            if theirs.value > mine.value {
                *mine = *theirs;
            }
        }
    }

    /// The values alone.
    pub fn values(&self) -> [f64; SIGNALS] {
        self.signals.map(|s| s.value)
    }
}

impl Facts {
    /// True when `a` is the target of an open flood episode.
    pub fn under_flood(&self, a: &Addr) -> bool {
        self.flood_targets.binary_search(a).is_ok()
    }

    /// Sorts the behaviour signals by host and folds each host's entries
    /// into one. Families publish in a fixed order from the merged interval
    /// and the sort is stable, so the result is the same for any number of
    /// workers.
    pub fn settle_behaviour(&mut self) {
        self.behaviour.sort_by_key(|(a, _)| *a);
        self.behaviour.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1.fold(&later.1);
            }
            same
        });
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

/// Expands its body only for a family marked `=> concurrent`.
macro_rules! if_concurrent {
    (concurrent, $($body:tt)*) => { $($body)* };
    (, $($body:tt)*) => {};
}
pub(crate) use if_concurrent;

/// Expands its body only for a family judged in order (not marked).
macro_rules! if_in_order {
    (concurrent, $($body:tt)*) => {};
    (, $($body:tt)*) => { $($body)* };
}
pub(crate) use if_in_order;

/// Declares the registered families, in judging order: generates the
/// shard's observer (`ShardHalves`), the merged interval report (`Reports`)
/// and the host stage's set (`Families`), each a struct with one field per
/// family. A family marked `=> concurrent` reads no [`Facts`] and publishes
/// none, so it may be judged on a helper thread while the others judge in
/// order, sharing facts.
macro_rules! families {
    ($($(#[$doc:meta])* $name:ident: $ty:ty $(=> $mode:ident)?),+ $(,)?) => {
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

            /// Judges one closed interval: family by family in registration
            /// order, and the families marked concurrent after them, or (when
            /// `concurrent`) at the same time on a helper thread. Their events
            /// are appended; the caller puts the interval's events in order.
            pub fn judge(
                &mut self,
                r: &mut Reports,
                cx: &mut $crate::detect::family::Context<'_>,
                out: &mut Vec<$crate::detect::Anomaly>,
                concurrent: bool,
            ) {
                let (t, hosts, cfg) = (cx.t, cx.hosts, cx.cfg);
                let mut side_out = Vec::new();
                let side = || {
                    let mut cx = $crate::detect::family::Context {
                        t,
                        hosts,
                        cfg,
                        facts: $crate::detect::family::Facts::default(),
                    };
                    $($crate::detect::family::if_concurrent!($($mode)?,
                        $crate::detect::family::Family::judge(&mut self.$name, &mut r.$name, &mut cx, &mut side_out);
                    );)+
                };
                // Without a spawn the scope costs nothing: the concurrent
                // families are then judged after the others, on this thread.
                std::thread::scope(|s| {
                    let mut side = Some(side);
                    let helper = if concurrent { side.take().map(|f| s.spawn(f)) } else { None };
                    $($crate::detect::family::if_in_order!($($mode)?,
                        $crate::detect::family::Family::judge(&mut self.$name, &mut r.$name, cx, out);
                    );)+
                    if let Some(mut f) = side {
                        f();
                    }
                    if let Some(Err(panic)) = helper.map(|h| h.join()) {
                        std::panic::resume_unwind(panic);
                    }
                });
                out.append(&mut side_out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_signals_fold_per_host_whatever_the_publishing_order() {
        let (a, b) = (Addr::v4([10, 0, 0, 1]), Addr::v4([10, 0, 0, 2]));
        let sig = |v: f64| Signal { value: v, now: v * 10.0, ..Signal::default() };
        let entries = [
            (b, HostSignals::one(SIG_ADMIN, sig(1.0))),
            (a, HostSignals::one(SIG_OUTSIDE, sig(3.0))),
            (b, HostSignals::one(SIG_ADMIN, sig(1.5))),
            (a, HostSignals::one(SIG_REGULAR, sig(0.9))),
        ];
        let mut f = Facts { behaviour: entries.to_vec(), ..Facts::default() };
        let mut g = Facts { behaviour: entries.iter().rev().copied().collect(), ..Facts::default() };
        f.settle_behaviour();
        g.settle_behaviour();
        assert_eq!(f.behaviour, g.behaviour);
        assert_eq!(f.behaviour.len(), 2);
        assert_eq!(f.behaviour[0].1.values(), [3.0, 0.0, 0.0, 0.9]);
        assert_eq!(f.behaviour[1].1.signals[SIG_ADMIN], sig(1.5));
    }
}
