//! Machine learning: streaming Half-Space Trees over per-host behaviour.
//!
//! Each closed interval, every host with traffic becomes a feature vector
//! (log-scaled rates, fan-out, answer ratios). An ensemble of Half-Space
//! Trees (Tan, Ting & Liu, IJCAI 2011) learns where normal vectors fall;
//! a vector landing where little mass was seen scores high. HST is chosen
//! for a sensor: constant memory (the trees are fixed at start), O(trees ×
//! depth) per update, no floating-point training loop, deterministic with a
//! fixed seed, and it adapts by swapping reference and latest mass windows.
//!
//! The threshold is calibrated per deployment: after a training period the
//! line is set above a high quantile of the training scores, with a margin,
//! so there is no magic constant to guess. Vectors over the line do not
//! teach the model. Each event names the features furthest from what the
//! model has seen, in plain words.
//!
//! Two other families, measured against it and kept selectable
//! (`[ml] model`): LODA (random projections with histograms) and a
//! KitNET-style ensemble of tiny online autoencoders.

mod head;

use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::anomaly::{Anomaly, AnomalyKind, Severity};
use super::episode::{EpisodeKey, EpisodePolicy, Episodes};
use super::family::{Context, Facts, Family, HostSignals, Restored, SIG_NEW_DEST, SIG_OUTSIDE};
use super::rules::{RuleEpisode, RuleObs};
use super::{DetectConfig, HostInterval};
use crate::base::Addr;
use crate::base::time::{NANOS_PER_SEC, Timestamp};
use crate::config::{MlConfig, ModelKind};
use crate::track::{HostCounters, ShardConfig};
use head::{Head, HeadState};

/// Number of features per host-interval.
pub const FEATURES: usize = 15;

/// Features in words, for explanations.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "outbound packets/s",
    "inbound packets/s",
    "outbound bytes/s",
    "inbound bytes/s",
    "new outbound flows/s",
    "new inbound flows/s",
    "connection attempts/s",
    "distinct peers contacted",
    "distinct ports contacted",
    "distinct sources",
    "DNS queries/s",
    "share of inbound UDP",
    "share of inbound ICMP",
    "share of connection attempts to it left unanswered",
    "share of its DNS names that look encoded",
];

/// Host-intervals the first reference window needs before it may close in
/// packet time: with 32 vectors each tree's top five levels (32 nodes) hold
/// one on average, so the coarse splits a score rests on have mass to
/// compare; with fewer, almost any vector lands where nothing was seen.
pub const FIRST_WINDOW_MIN: u64 = 32;

/// Hosts kept per interval as unusual for triage: more than an analyst
/// reads in one interval; past it the highest scores are kept.
const MAX_UNUSUAL: usize = 256;

/// The hosts the calibrated model found unusual in the latest interval, for
/// episode priority (`priority::Triage`).
#[derive(Clone, Copy, Debug)]
pub struct UnusualHosts<'a> {
    /// The calibrated line.
    pub line: f64,
    /// (host, score) sorted by host, every score above the line.
    pub hosts: &'a [(Addr, f64)],
}

impl UnusualHosts<'_> {
    /// The score of `a` if the model found it unusual.
    pub fn score(&self, a: &Addr) -> Option<f64> {
        self.hosts.binary_search_by(|(h, _)| h.cmp(a)).ok().and_then(|i| self.hosts.get(i)).map(|&(_, s)| s)
    }
}

/// log1p of the largest count we scale for (10⁸): features land in [0, 1].
const LOG_MAX: f64 = 18.5;
/// How many leading features are log-scaled counts (the rest are shares).
const COUNTS: usize = 11;

/// A count on the features' log scale, in [0, 1].
fn scale(v: u64) -> f64 {
    ((v as f64).ln_1p() / LOG_MAX).min(1.0)
}

/// Counts below this take their scaled value from [`SCALED`]: nearly every
/// count of a host-interval, and eleven `ln_1p` per host and interval were
/// a tenth of the behaviour model's time on the replay benchmark.
const SCALED_BELOW: u64 = 4096;

/// [`scale`] of every count below [`SCALED_BELOW`] (computed by it: the
/// same bits).
static SCALED: std::sync::LazyLock<Vec<f64>> =
    std::sync::LazyLock::new(|| (0..SCALED_BELOW).map(scale).collect());

/// The feature vector of one host in one interval, each in [0, 1].
pub fn features(h: &HostCounters) -> [f64; FEATURES] {
    // The table ends at SCALED_BELOW: larger counts are computed.
    let c = |v: u64| usize::try_from(v).ok().and_then(|i| SCALED.get(i)).copied().unwrap_or_else(|| scale(v));
    let share = |part: u64, all: u64| if all == 0 { 0.0 } else { part as f64 / all as f64 };
    [
        c(h.pkts_out),
        c(h.pkts_in),
        c(h.bytes_out),
        c(h.bytes_in),
        c(h.flows_out),
        c(h.flows_in),
        c(h.syn_out),
        c(h.peers_out.estimate()),
        c(h.ports_out.estimate()),
        c(h.peers_in.estimate()),
        c(h.dns_queries),
        share(h.udp_in, h.pkts_in),
        share(h.icmp_in, h.pkts_in),
        share(h.syn_in.saturating_sub(h.handshakes_in), h.syn_in),
        share(h.dns_encoded, h.dns_queries),
    ]
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One Half-Space Tree: fixed random splits, two mass profiles.
struct Tree {
    /// The inner nodes, each with what a score reads there: one cache line
    /// per level of the walk, where three arrays cost three.
    nodes: Vec<Node>,
    reference: Vec<u32>,
    latest: Vec<u32>,
}

/// An inner node: its split, and its reference mass as a score reads it.
#[derive(Clone, Copy, Debug, Default)]
struct Node {
    split: f64,
    /// `reference[i]` of this node, copied by [`Tree::sync_masses`]
    /// whenever `reference` changes.
    mass: u32,
    dim: u8,
}

impl Tree {
    fn new(depth: u32, rng: &mut Rng) -> Tree {
        // Work space per dimension: a random interval that surely covers
        // [0, 1] (the construction of Tan et al.), then halved at each level.
        let mut lo = [0.0; FEATURES];
        let mut hi = [0.0; FEATURES];
        for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
            let s = rng.unit();
            let half = 2.0 * s.max(1.0 - s);
            *l = s - half;
            *h = s + half;
        }
        let inner = (1usize << depth) - 1;
        let mut t = Tree {
            nodes: vec![Node::default(); inner],
            reference: vec![0; 2 * inner + 1],
            latest: vec![0; 2 * inner + 1],
        };
        t.build(0, lo, hi, rng);
        t
    }

    /// Copies the reference masses into the inner nodes.
    fn sync_masses(&mut self) {
        for (n, &m) in self.nodes.iter_mut().zip(&self.reference) {
            n.mass = m;
        }
    }

    fn build(&mut self, node: usize, lo: [f64; FEATURES], hi: [f64; FEATURES], rng: &mut Rng) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let d = (rng.next() % FEATURES as u64) as usize;
        let mid = (lo[d] + hi[d]) / 2.0;
        n.dim = d as u8;
        n.split = mid;
        let (mut lhi, mut rlo) = (hi, lo);
        lhi[d] = mid;
        rlo[d] = mid;
        self.build(2 * node + 1, lo, lhi, rng);
        self.build(2 * node + 2, rlo, hi, rng);
    }

    /// Mass-weighted score of `x` against the reference profile.
    fn score(&self, x: &[f64; FEATURES]) -> f64 {
        self.score_leaf(x).0
    }

    /// The score and the leaf `x` lands in (its path is the leaf's
    /// ancestors, so learning `x` next needs no second walk of the splits).
    fn score_leaf(&self, x: &[f64; FEATURES]) -> (f64, usize) {
        // The masses are integers (depth ≤ 16: each level's term < 2^48),
        // summed exactly and made a float once.
        let walk = &self.nodes[..];
        let mut node = 0;
        let mut depth = 0;
        let mut mass: u64 = 0;
        while let Some(n) = walk.get(node) {
            mass += u64::from(n.mass) << depth;
            let right = !x.get(usize::from(n.dim)).is_some_and(|&v| v < n.split);
            node = 2 * node + 1 + usize::from(right);
            depth += 1;
        }
        mass += u64::from(self.reference.get(node).copied().unwrap_or(0)) << depth;
        (mass as f64, node)
    }

    /// Learns the vector whose leaf [`Tree::score_leaf`] found: the same
    /// nodes as [`Tree::learn`], climbed from the leaf.
    fn learn_leaf(&mut self, mut node: usize) {
        loop {
            if let Some(m) = self.latest.get_mut(node) {
                *m = m.saturating_add(1);
            }
            if node == 0 {
                return;
            }
            node = (node - 1) / 2;
        }
    }

    fn learn(&mut self, x: &[f64; FEATURES]) {
        let leaf = self.score_leaf(x).1;
        self.learn_leaf(leaf);
    }

    fn swap(&mut self) {
        std::mem::swap(&mut self.reference, &mut self.latest);
        self.latest.iter_mut().for_each(|m| *m = 0);
        self.sync_masses();
    }
}

/// Bins of a LODA histogram.
const LODA_BINS: usize = 64;

/// One LODA member: a sparse random projection and two histograms of it.
struct Proj {
    weights: Vec<(usize, f64)>,
    lo: f64,
    width: f64,
    reference: Vec<u32>,
    latest: Vec<u32>,
}

impl Proj {
    fn new(rng: &mut Rng) -> Proj {
        // √d non-zero Gaussian weights (Pevný's choice), Box–Muller from the rng.
        let nonzero = (FEATURES as f64).sqrt().round() as usize;
        let mut dims: Vec<usize> = (0..FEATURES).collect();
        for i in 0..nonzero {
            let j = i + (rng.next() % (FEATURES - i) as u64) as usize;
            dims.swap(i, j);
        }
        let weights: Vec<(usize, f64)> = dims[..nonzero]
            .iter()
            .map(|&d| {
                let (u, v) = (rng.unit().max(1e-12), rng.unit());
                (d, (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos())
            })
            .collect();
        // Features lie in [0, 1], so the projection's range is known up front.
        let lo: f64 = weights.iter().map(|&(_, w)| w.min(0.0)).sum();
        let hi: f64 = weights.iter().map(|&(_, w)| w.max(0.0)).sum();
        Proj {
            weights,
            lo,
            width: ((hi - lo) / LODA_BINS as f64).max(1e-9),
            reference: vec![0; LODA_BINS],
            latest: vec![0; LODA_BINS],
        }
    }

    fn bin(&self, x: &[f64; FEATURES]) -> usize {
        let z: f64 = self.weights.iter().map(|&(d, w)| w * x[d]).sum();
        (((z - self.lo) / self.width) as usize).min(LODA_BINS - 1)
    }

    /// −log of the smoothed probability of `x`'s bin, over −log of the least likely.
    fn surprise(&self, x: &[f64; FEATURES], window: f64) -> f64 {
        let c = f64::from(self.reference[self.bin(x)]);
        let all = window + LODA_BINS as f64;
        (all / (c + 1.0)).ln() / all.ln()
    }

    fn learn(&mut self, x: &[f64; FEATURES]) {
        let b = self.bin(x);
        self.latest[b] = self.latest[b].saturating_add(1);
    }

    fn swap(&mut self) {
        std::mem::swap(&mut self.reference, &mut self.latest);
        self.latest.iter_mut().for_each(|m| *m = 0);
    }
}

/// KitNET's feature groups, fixed by meaning instead of learned from
/// correlations (the 15 features are few and their relations known):
/// outbound volume, inbound volume, fan-out and fan-in, and the shares.
const KIT_GROUPS: [&[usize]; 4] = [&[0, 2, 4, 6], &[1, 3, 5], &[7, 8, 9, 10], &[11, 12, 13, 14]];
/// Hidden units per input of each autoencoder (KitNET's 0.75).
const KIT_HIDDEN: f64 = 0.75;
/// Learning rate of the autoencoders' online gradient steps (KitNET's 0.1).
const KIT_RATE: f64 = 0.1;
/// Most inputs of one autoencoder (the largest group, and the output layer's
/// one per group): its layers fit in arrays on the stack, nothing allocated
/// per host-interval.
const KIT_MAX: usize = 4;

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// One tiny autoencoder with tied weights (KitNET's dA): inputs min-max
/// normalised by what it has learned, so a value past anything seen
/// reconstructs badly.
struct AutoEncoder {
    /// Inputs; `w` holds one row of `inputs` weights per hidden unit.
    inputs: usize,
    w: Vec<f64>,
    hbias: Vec<f64>,
    vbias: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl AutoEncoder {
    fn new(inputs: usize, rng: &mut Rng) -> AutoEncoder {
        let inputs = inputs.clamp(1, KIT_MAX);
        let hidden = ((inputs as f64 * KIT_HIDDEN).ceil() as usize).clamp(1, KIT_MAX);
        // Uniform in ±1/inputs, as KitNET initialises.
        let a = 1.0 / inputs as f64;
        AutoEncoder {
            inputs,
            w: (0..inputs * hidden).map(|_| (rng.unit() * 2.0 - 1.0) * a).collect(),
            hbias: vec![0.0; hidden],
            vbias: vec![0.0; inputs],
            lo: vec![f64::INFINITY; inputs],
            hi: vec![f64::NEG_INFINITY; inputs],
        }
    }

    fn normalise(&self, x: &[f64]) -> [f64; KIT_MAX] {
        let mut z = [0.0; KIT_MAX];
        for (((z, v), lo), hi) in z.iter_mut().zip(x).zip(&self.lo).zip(&self.hi) {
            *z = if hi >= lo { (v - lo) / (hi - lo + 1e-9) } else { 0.0 };
        }
        z
    }

    /// Hidden and reconstructed layers of normalised `z`.
    fn forward(&self, z: &[f64; KIT_MAX]) -> ([f64; KIT_MAX], [f64; KIT_MAX]) {
        let (mut h, mut y) = ([0.0; KIT_MAX], [0.0; KIT_MAX]);
        for (j, (h, row)) in h.iter_mut().zip(self.w.chunks_exact(self.inputs)).enumerate() {
            *h = sigmoid(row.iter().zip(z).map(|(w, v)| w * v).sum::<f64>() + self.hbias[j]);
        }
        for (i, y) in y.iter_mut().enumerate().take(self.inputs) {
            let s: f64 = self.w.chunks_exact(self.inputs).zip(&h).map(|(row, h)| row[i] * h).sum();
            *y = sigmoid(s + self.vbias[i]);
        }
        (h, y)
    }

    fn rmse(&self, z: &[f64; KIT_MAX], y: &[f64; KIT_MAX]) -> f64 {
        let n = self.inputs.max(1);
        (z.iter().zip(y).take(n).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n as f64).sqrt()
    }

    /// Reconstruction error of `x` (not learned).
    fn score(&self, x: &[f64]) -> f64 {
        let z = self.normalise(x);
        let (_, y) = self.forward(&z);
        self.rmse(&z, &y)
    }

    /// One gradient step on `x` (KitNET's dA.train, without corruption);
    /// returns the reconstruction error before the step. The range includes
    /// `x` first, so this error is at most 1: what the output layer learns
    /// is bounded even while the ranges are still narrow.
    fn learn(&mut self, x: &[f64]) -> f64 {
        for ((v, lo), hi) in x.iter().zip(self.lo.iter_mut()).zip(self.hi.iter_mut()) {
            *lo = lo.min(*v);
            *hi = hi.max(*v);
        }
        let z = self.normalise(x);
        let (h, y) = self.forward(&z);
        let mut dv = [0.0; KIT_MAX];
        for ((d, a), b) in dv.iter_mut().zip(&z).zip(&y).take(self.inputs) {
            *d = a - b;
        }
        let mut dh = [0.0; KIT_MAX];
        for ((d, row), h) in dh.iter_mut().zip(self.w.chunks_exact(self.inputs)).zip(&h) {
            *d = row.iter().zip(&dv).map(|(w, d)| w * d).sum::<f64>() * h * (1.0 - h);
        }
        for (j, row) in self.w.chunks_exact_mut(self.inputs).enumerate() {
            for (i, w) in row.iter_mut().enumerate() {
                *w += KIT_RATE * (z[i] * dh[j] + dv[i] * h[j]);
            }
            self.hbias[j] += KIT_RATE * dh[j];
        }
        for (b, d) in self.vbias.iter_mut().zip(&dv) {
            *b += KIT_RATE * d;
        }
        self.rmse(&z, &y)
    }

    /// Every parameter, for saving.
    fn params(&self) -> Vec<f64> {
        [&self.w, &self.hbias, &self.vbias, &self.lo, &self.hi].into_iter().flatten().copied().collect()
    }

    /// Restores `params`; false if they do not fit.
    fn set_params(&mut self, p: &[f64]) -> bool {
        if p.len() != self.params().len() {
            return false;
        }
        let mut it = p.iter().copied();
        for v in [&mut self.w, &mut self.hbias, &mut self.vbias, &mut self.lo, &mut self.hi] {
            v.iter_mut().for_each(|x| *x = it.next().unwrap_or(0.0));
        }
        true
    }
}

/// KitNET: one autoencoder per feature group, and an output autoencoder
/// over their reconstruction errors whose own error is the score.
struct Kitnet {
    ensemble: Vec<AutoEncoder>,
    output: AutoEncoder,
}

impl Kitnet {
    fn new(rng: &mut Rng) -> Kitnet {
        Kitnet {
            ensemble: KIT_GROUPS.iter().map(|g| AutoEncoder::new(g.len(), rng)).collect(),
            output: AutoEncoder::new(KIT_GROUPS.len(), rng),
        }
    }

    /// The inputs of group `g` of `x`.
    fn group(g: &[usize], x: &[f64; FEATURES]) -> [f64; KIT_MAX] {
        let mut v = [0.0; KIT_MAX];
        for (v, &d) in v.iter_mut().zip(g) {
            *v = x[d];
        }
        v
    }

    fn errors(&self, x: &[f64; FEATURES]) -> [f64; KIT_MAX] {
        let mut e = [0.0; KIT_MAX];
        for ((e, g), ae) in e.iter_mut().zip(KIT_GROUPS).zip(&self.ensemble) {
            *e = ae.score(&Self::group(g, x)[..g.len()]);
        }
        e
    }

    /// The output layer's error, squashed into [0, 1) like the other scores.
    fn score(&self, x: &[f64; FEATURES]) -> f64 {
        let e = self.output.score(&self.errors(x)[..KIT_GROUPS.len()]);
        e / (1.0 + e)
    }

    fn learn(&mut self, x: &[f64; FEATURES]) {
        // As KitNET trains: the output layer learns the errors of the
        // ensemble's own training step (inputs already inside their ranges).
        let mut e = [0.0; KIT_MAX];
        for ((e, g), ae) in e.iter_mut().zip(KIT_GROUPS).zip(&mut self.ensemble) {
            *e = ae.learn(&Self::group(g, x)[..g.len()]);
        }
        self.output.learn(&e[..KIT_GROUPS.len()]);
    }

    fn members(&self) -> impl Iterator<Item = &AutoEncoder> {
        self.ensemble.iter().chain(std::iter::once(&self.output))
    }

    fn members_mut(&mut self) -> impl Iterator<Item = &mut AutoEncoder> {
        self.ensemble.iter_mut().chain(std::iter::once(&mut self.output))
    }
}

/// The learned model as saved in `--state-dir/model.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModelState {
    /// Schema version.
    pub version: u32,
    /// Trees and depth it was built with (the splits follow from the seed).
    pub shape: (usize, u32),
    /// The detector the masses belong to.
    #[serde(default)]
    pub kind: ModelKind,
    /// Reference and latest masses per tree.
    pub masses: Vec<(Vec<u32>, Vec<u32>)>,
    /// Host-intervals learned.
    pub seen: u64,
    /// Completed mass windows.
    pub windows: u64,
    /// The calibrated line, if training is over.
    pub threshold: Option<f64>,
    /// Scores kept for calibration while training.
    pub calibration: Vec<f64>,
    /// Per-feature running means (explanations).
    pub mean: Vec<f64>,
    /// Per-feature running variances (explanations).
    pub var: Vec<f64>,
    /// Host-intervals in the reference window (absent in files of 0.6:
    /// derived from the masses).
    #[serde(default)]
    pub reference_count: Option<u64>,
    /// Host-intervals in the latest window so far (absent in files of 0.6,
    /// where windows closed every `window`: `seen % window`).
    #[serde(default)]
    pub latest_count: Option<u64>,
    /// Packet time of the first host-interval learned, while learning: the
    /// learning period runs from it.
    #[serde(default)]
    pub learning_since: Option<Timestamp>,
    /// Scores offered to the calibration sample so far (its reservoir's count).
    #[serde(default)]
    pub calibration_seen: u64,
    /// Parameters of each autoencoder (KitNET; empty for the others).
    #[serde(default)]
    pub weights: Vec<Vec<f64>>,
    /// The second head's lines or calibration sample (absent in files from
    /// before it: a calibrated model then takes the floors).
    #[serde(default)]
    pub head: Option<HeadState>,
}

/// Current [`ModelState::version`].
pub const MODEL_VERSION: u32 = 1;

/// The ensemble, its calibration and its episodes.
pub struct BehaviourModel {
    trees: Vec<Tree>,
    projs: Vec<Proj>,
    kitnet: Option<Kitnet>,
    seen: u64,
    windows: u64,
    calibration: Vec<f64>,
    threshold: Option<f64>,
    mean: [f64; FEATURES],
    var: [f64; FEATURES],
    /// Host-intervals in the reference window (scores are normalised by it,
    /// so a first window closed early scores on the same scale) and so far
    /// in the latest one.
    reference_count: u64,
    latest_count: u64,
    /// Hosts over the line in the latest interval, with their scores, by
    /// excess only (a host that only did less is not "unusual" for triage
    /// any more than for events). Cleared every interval.
    unusual: Vec<(Addr, f64)>,
    /// The trees' leaves for the vector scored last (HST only), so learning
    /// it does not walk the splits again; empty when not valid.
    leaves: Vec<usize>,
    /// Each tree's mass so far in [`BehaviourModel::score_remembering`]'s
    /// walk (reused).
    walk_mass: Vec<u64>,
    episodes: Episodes<RuleEpisode>,
    cfg: MlConfig,
    /// Packet time of the first host-interval learned (the learning period
    /// runs from it), and of the last progress line logged.
    learning_since: Option<Timestamp>,
    /// Scores offered to the calibration sample while learning.
    calibration_seen: u64,
    progress_logged: Timestamp,
    /// The second head: each host's behaviour signals against its own
    /// history, with lines calibrated in the same learning period.
    head: Head,
}

impl BehaviourModel {
    /// A fresh model (fixed seed: the same traffic gives the same scores).
    pub fn new(cfg: &MlConfig, policy: EpisodePolicy) -> BehaviourModel {
        let mut rng = Rng(0x4853_5400_0000_0001);
        let depth = cfg.depth.clamp(1, 16);
        BehaviourModel {
            trees: match cfg.model {
                ModelKind::Hst => (0..cfg.trees.max(1)).map(|_| Tree::new(depth, &mut rng)).collect(),
                ModelKind::Loda | ModelKind::Kitnet => Vec::new(),
            },
            projs: match cfg.model {
                ModelKind::Loda => (0..cfg.trees.max(1)).map(|_| Proj::new(&mut rng)).collect(),
                ModelKind::Hst | ModelKind::Kitnet => Vec::new(),
            },
            kitnet: (cfg.model == ModelKind::Kitnet).then(|| Kitnet::new(&mut rng)),
            seen: 0,
            windows: 0,
            reference_count: 0,
            latest_count: 0,
            unusual: Vec::new(),
            leaves: Vec::new(),
            walk_mass: Vec::new(),
            calibration: Vec::new(),
            threshold: None,
            mean: [0.0; FEATURES],
            var: [0.0; FEATURES],
            episodes: Episodes::new(policy),
            cfg: cfg.clone(),
            learning_since: None,
            calibration_seen: 0,
            progress_logged: Timestamp::ZERO,
            head: Head::default(),
        }
    }

    /// Packet time learned so far, in nanoseconds.
    fn learned_for(&self, t: Timestamp) -> u64 {
        self.learning_since.map_or(0, |s| t.since(s))
    }

    /// Calibration is due: `training_seconds` of packet time since learning
    /// began, with at least `min_training` scores. The period is a time on
    /// every network: a busy one fills `training` scores within a second,
    /// and a line drawn from one second is the line of that second (the
    /// 5.4 M-packet benchmark capture, calibrated so, raised 4,803 outlier
    /// episodes); `training` bounds the sample, not the period.
    fn calibration_due(&self, t: Timestamp) -> bool {
        let long = self.learned_for(t) >= self.cfg.training_seconds.saturating_mul(NANOS_PER_SEC);
        long && self.calibration.len() >= self.cfg.min_training.min(self.cfg.training)
    }

    /// Offers a training score to the calibration sample: every score until
    /// it holds `training`, then a uniform sample of all of them (Vitter's
    /// reservoir, with a hash of the count for its coin: the same for any
    /// number of workers, since hosts are scored in address order).
    fn sample_for_calibration(&mut self, s: f64) {
        reservoir(&mut self.calibration, &mut self.calibration_seen, self.cfg.training, s);
    }

    /// The first reference window closes early: half the learning period
    /// has passed and it holds `FIRST_WINDOW_MIN` host-intervals. Half, so
    /// that at a steady rate the other half yields as many scores for the
    /// line as the reference holds vectors, and the whole learning period is
    /// `training_seconds` however small the network.
    fn first_window_due(&self, t: Timestamp) -> bool {
        self.windows == 0
            && self.latest_count >= FIRST_WINDOW_MIN
            && self.learned_for(t) >= self.cfg.training_seconds.saturating_mul(NANOS_PER_SEC) / 2
    }

    /// Says how far learning is, once a minute of packet time: a model that
    /// gives no verdict yet must say why.
    fn log_progress(&mut self, t: Timestamp) {
        if self.threshold.is_some() || t.since(self.progress_logged) < 60 * NANOS_PER_SEC {
            return;
        }
        self.progress_logged = t;
        let secs = self.learned_for(t) / NANOS_PER_SEC;
        if self.windows == 0 {
            // Scores need a first reference window.
            tracing::info!(
                "behaviour model learning: filling its first reference window, {} of {} host-intervals (or {} s of packet time with at least {FIRST_WINDOW_MIN}; a host with at least {} packets in an interval), {secs} s so far; no verdicts until then",
                self.latest_count,
                self.cfg.window,
                self.cfg.training_seconds / 2,
                self.cfg.min_packets,
            );
            return;
        }
        tracing::info!(
            "behaviour model learning: {} host-intervals scored ({} needed; a sample of {} at most sets the line), {secs} of {} s of packet time; no verdicts until then",
            self.calibration_seen,
            self.cfg.min_training,
            self.cfg.training,
            self.cfg.training_seconds,
        );
    }

    /// Anomaly score in (0, 1]; high = unusual. HST: 1 / (1 + mean mass
    /// score per reference vector); LODA: mean normalised surprise of the
    /// projections. Both are relative to the reference window's actual
    /// count, so a window closed early scores on the same scale as a full one.
    pub fn score(&self, x: &[f64; FEATURES]) -> f64 {
        if let Some(k) = &self.kitnet {
            return k.score(x);
        }
        let window = self.reference_count.max(1) as f64;
        if !self.projs.is_empty() {
            return self.projs.iter().map(|p| p.surprise(x, window)).sum::<f64>() / self.projs.len() as f64;
        }
        self.hst_score(self.trees.iter().map(|t| t.score(x)).sum())
    }

    /// The trees' score from the sum of their masses: mean mass per tree
    /// against the reference window's size, mapped into (0, 1].
    fn hst_score(&self, mass: f64) -> f64 {
        let window = self.reference_count.max(1) as f64;
        1.0 / (1.0 + mass / self.trees.len().max(1) as f64 / window)
    }

    /// [`BehaviourModel::score`], keeping the trees' leaves for a
    /// [`BehaviourModel::learn`] of the same vector right after.
    fn score_remembering(&mut self, x: &[f64; FEATURES]) -> f64 {
        if self.trees.is_empty() || !self.projs.is_empty() || self.kitnet.is_some() {
            self.leaves.clear();
            return self.score(x);
        }
        let mut leaves = std::mem::take(&mut self.leaves);
        let mut mass = std::mem::take(&mut self.walk_mass);
        leaves.clear();
        leaves.resize(self.trees.len(), 0);
        mass.clear();
        mass.resize(self.trees.len(), 0);
        // All trees a level at a time. One tree's walk is a chain of
        // dependent loads (each split says where the next node is); side by
        // side, the CPU has the next level of every tree in flight at once.
        // Each tree's mass is the same sum in the same order as
        // `Tree::score_leaf`, so the scores are the same bits.
        let mut depth = 0;
        let mut deeper = true;
        while deeper {
            deeper = false;
            for ((t, node), m) in self.trees.iter().zip(leaves.iter_mut()).zip(mass.iter_mut()) {
                if let Some(n) = t.nodes.get(*node) {
                    *m += u64::from(n.mass) << depth;
                    let right = !x.get(usize::from(n.dim)).is_some_and(|&v| v < n.split);
                    *node = 2 * *node + 1 + usize::from(right);
                    deeper = true;
                }
            }
            depth += 1;
        }
        let mut s = 0.0;
        for ((t, &node), &m) in self.trees.iter().zip(leaves.iter()).zip(mass.iter()) {
            // A leaf's depth from its index (a tree is complete: leaves of
            // depth d are numbered 2^d - 1 ..= 2^(d+1) - 2).
            let leaf_depth = (node + 1).ilog2();
            s += (m + (u64::from(t.reference.get(node).copied().unwrap_or(0)) << leaf_depth)) as f64;
        }
        self.leaves = leaves;
        self.walk_mass = mass;
        self.hst_score(s)
    }

    fn members(&self) -> usize {
        self.trees.len() + self.projs.len() + self.kitnet.as_ref().map_or(0, |k| k.members().count())
    }

    /// The calibrated line, once training is over.
    pub fn threshold(&self) -> Option<f64> {
        self.threshold
    }

    /// The hosts found unusual in the latest interval judged (none before
    /// calibration or when the model is off).
    pub fn unusual_now(&self) -> Option<UnusualHosts<'_>> {
        self.threshold.map(|line| UnusualHosts { line, hosts: &self.unusual })
    }

    /// The learned state, for saving.
    pub fn snapshot(&self) -> ModelState {
        ModelState {
            version: MODEL_VERSION,
            shape: (self.members(), self.cfg.depth),
            kind: self.cfg.model,
            masses: self
                .trees
                .iter()
                .map(|t| (t.reference.clone(), t.latest.clone()))
                .chain(self.projs.iter().map(|p| (p.reference.clone(), p.latest.clone())))
                .collect(),
            seen: self.seen,
            windows: self.windows,
            threshold: self.threshold,
            calibration: self.calibration.clone(),
            mean: self.mean.to_vec(),
            var: self.var.to_vec(),
            reference_count: Some(self.reference_count),
            latest_count: Some(self.latest_count),
            learning_since: self.learning_since,
            calibration_seen: self.calibration_seen,
            weights: self
                .kitnet
                .as_ref()
                .map_or(Vec::new(), |k| k.members().map(AutoEncoder::params).collect()),
            head: Some(self.head.state.clone()),
        }
    }

    /// Restores saved state; false (nothing changed) if it does not fit this model.
    pub fn restore(&mut self, st: ModelState) -> bool {
        let mass_members = self.trees.len() + self.projs.len();
        let fits = st.version == MODEL_VERSION
            && st.kind == self.cfg.model
            && st.shape == (self.members(), self.cfg.depth)
            && st.masses.len() == mass_members
            && st.weights.len() == self.members() - mass_members
            && self
                .kitnet
                .as_ref()
                .is_none_or(|k| k.members().zip(&st.weights).all(|(ae, w)| ae.params().len() == w.len()))
            && st.mean.len() == FEATURES
            && st.var.len() == FEATURES
            && st
                .masses
                .iter()
                .zip(self.masses_mut())
                .all(|(m, (r, l))| m.0.len() == r.len() && m.1.len() == l.len());
        if !fits {
            return false;
        }
        for ((r, l), (sr, sl)) in self.masses_mut().zip(st.masses) {
            *r = sr;
            *l = sl;
        }
        self.trees.iter_mut().for_each(Tree::sync_masses);
        if let Some(k) = &mut self.kitnet {
            for (ae, w) in k.members_mut().zip(&st.weights) {
                ae.set_params(w);
            }
        }
        self.seen = st.seen;
        self.windows = st.windows;
        let window = self.cfg.window.max(1);
        // Before these were saved every window held `window` vectors.
        self.reference_count = st.reference_count.unwrap_or(if st.windows > 0 { window } else { 0 });
        self.latest_count = st.latest_count.unwrap_or(st.seen % window);
        self.learning_since = st.learning_since;
        self.calibration_seen = st.calibration_seen.max(st.calibration.len() as u64);
        self.threshold = st.threshold;
        self.calibration = st.calibration;
        self.mean.copy_from_slice(&st.mean);
        self.var.copy_from_slice(&st.var);
        self.head.state = st.head.unwrap_or_default();
        if self.threshold.is_some() && self.head.state.lines.is_none() {
            // Saved before the second head: it gives verdicts at its floors.
            self.head.state = HeadState { lines: Some(head::FLOORS), ..HeadState::default() };
        }
        true
    }

    /// Every member's (reference, latest) masses, trees then projections.
    fn masses_mut(&mut self) -> impl Iterator<Item = (&mut Vec<u32>, &mut Vec<u32>)> {
        self.trees
            .iter_mut()
            .map(|t| (&mut t.reference, &mut t.latest))
            .chain(self.projs.iter_mut().map(|p| (&mut p.reference, &mut p.latest)))
    }

    fn learn(&mut self, x: &[f64; FEATURES], t: Timestamp) {
        if self.leaves.len() == self.trees.len() {
            for (t, &leaf) in self.trees.iter_mut().zip(&self.leaves) {
                t.learn_leaf(leaf);
            }
        } else {
            for t in &mut self.trees {
                t.learn(x);
            }
        }
        self.leaves.clear();
        for p in &mut self.projs {
            p.learn(x);
        }
        if let Some(k) = &mut self.kitnet {
            k.learn(x);
        }
        self.seen += 1;
        self.latest_count += 1;
        if self.threshold.is_none() {
            self.learning_since.get_or_insert(t);
        }
        // Running per-feature moments, for explanations only.
        let a = 1.0 / (self.seen.min(10_000) as f64);
        for ((xd, mean), var) in x.iter().zip(self.mean.iter_mut()).zip(self.var.iter_mut()) {
            let diff = xd - *mean;
            *mean += a * diff;
            *var = (1.0 - a) * (*var + a * diff * diff);
        }
        if self.latest_count >= self.cfg.window.max(1) || self.first_window_due(t) {
            for t in &mut self.trees {
                t.swap();
            }
            for p in &mut self.projs {
                p.swap();
            }
            self.windows += 1;
            self.reference_count = self.latest_count;
            self.latest_count = 0;
        }
    }

    /// Scores and learns one merged interval; outliers open episodes.
    pub fn on_interval(
        &mut self,
        iv: &HostInterval,
        facts: &Facts,
        t: Timestamp,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        let mut hosts: Vec<(&Addr, &HostCounters)> =
            // A multicast group or broadcast address is not a host that behaves:
            // its "traffic" is whatever discovery protocols the LAN runs.
            iv.hosts
                .iter()
                .filter(|(a, h)| h.pkts_in + h.pkts_out >= self.cfg.min_packets && crate::track::is_unicast(a))
                .collect();
        hosts.sort_by_key(|(a, _)| **a);
        self.unusual.clear();
        let teaches = Teachers::new(hosts.len(), self.cfg.window, t);
        for (a, h) in hosts {
            let x = features(h);
            let teaches = teaches.includes(a);
            // Scores mean something once one reference window exists.
            // (Leaves are only ever those of this `x`: a learn without a
            // score walks the splits.)
            self.leaves.clear();
            let score = (self.windows > 0).then(|| self.score_remembering(&x));
            match (score, self.threshold) {
                (Some(s), None) => {
                    self.sample_for_calibration(s);
                    if self.calibration_due(t) {
                        let n = self.calibration.len();
                        let line = calibrate(&mut self.calibration, self.cfg.quantile);
                        self.threshold = Some(line);
                        self.calibration = Vec::new();
                        self.calibration_seen = 0;
                        tracing::info!("behaviour model calibrated on {n} host-intervals: line {line:.4e}");
                        let m = self.head.state.calibration.len();
                        let lines = self.head.calibrate(self.cfg.quantile, line_above);
                        tracing::info!(
                            "behaviour model's own-history head calibrated on {m} host-intervals: lines {lines:.3?} (bytes outside, to new networks, new admin peers, check-in regularity)"
                        );
                    }
                    if teaches {
                        self.learn(&x, t);
                    }
                }
                (Some(s), Some(line)) if s > line => {
                    let dev = self.deviations(&x);
                    // Unusual only by doing *less* than usual (a host gone quiet
                    // in one direction, a transfer that ended): not what an
                    // attack looks like, and the commonest way benign hosts
                    // stray. Such a vector is normal variety: it teaches the model.
                    if !excess(&dev) || self.usual_for_itself(a, &dev, facts) {
                        if teaches {
                            self.learn(&x, t);
                        }
                        continue;
                    }
                    // Hosts come in address order, so the list is sorted.
                    self.unusual.push((*a, s));
                    if !allowed(a, AnomalyKind::BehaviourOutlier) {
                        let obs = self.observation(*a, &x, &dev, s, line, t);
                        let key = EpisodeKey {
                            kind: AnomalyKind::BehaviourOutlier,
                            src: *a,
                            dst: Addr::UNSPECIFIED,
                        };
                        self.episodes.observe(key, t, &obs, out);
                    }
                    // An excess outlier never teaches the model.
                }
                _ if teaches => self.learn(&x, t),
                _ => {}
            }
        }
        if self.unusual.len() > MAX_UNUSUAL {
            // The highest scores, ties by address: the same for any worker count.
            self.unusual.sort_by(|p, q| q.1.total_cmp(&p.1).then(p.0.cmp(&q.0)));
            self.unusual.truncate(MAX_UNUSUAL);
            self.unusual.sort_by_key(|&(a, _)| a);
        }
        self.judge_signals(&facts.behaviour, t, allowed, out);
        self.log_progress(t);
    }

    /// True when the first head's outlier is only volume the host sends
    /// (its three strongest deviations are packet and byte rates, the
    /// strongest outbound) and the host's own history covers it: the
    /// second head measured its bytes outside against its busiest windows
    /// and found them under its line, nothing went to a network new to it,
    /// and it is not a flood's target. A routine backup is rare for the
    /// network's reference window and usual for the host that makes it
    /// (the lab office's backup host was flagged so after each upload).
    /// Such a vector is the host's normal variety: it teaches the model.
    fn usual_for_itself(&self, a: &Addr, dev: &[(f64, usize)], facts: &Facts) -> bool {
        // Feature indices of the packet and byte rates, outbound first.
        const OUT_VOLUME: [usize; 2] = [0, 2];
        const VOLUME: [usize; 4] = [0, 1, 2, 3];
        let volume = dev.iter().take(3).all(|(_, d)| VOLUME.contains(d));
        let outbound = dev.first().is_some_and(|(_, d)| OUT_VOLUME.contains(d));
        if !volume || !outbound || facts.under_flood(a) {
            return false;
        }
        let Some(lines) = self.head.state.lines else { return false };
        let Ok(i) = facts.behaviour.binary_search_by(|(h, _)| h.cmp(a)) else { return false };
        let Some((_, s)) = facts.behaviour.get(i) else { return false };
        let out = &s.signals[SIG_OUTSIDE];
        out.seconds > 0 && out.value <= lines[SIG_OUTSIDE] && s.signals[SIG_NEW_DEST].value == 0.0
    }

    /// The second head on one interval's behaviour signals (sorted by
    /// host): sampled while the first head learns, judged against their
    /// lines once it has calibrated.
    fn judge_signals(
        &mut self,
        signals: &[(Addr, HostSignals)],
        t: Timestamp,
        allowed: &dyn Fn(&Addr, AnomalyKind) -> bool,
        out: &mut Vec<Anomaly>,
    ) {
        for (a, s) in signals.iter().filter(|(a, _)| crate::track::is_unicast(a)) {
            let Some(lines) = self.head.state.lines else {
                if self.threshold.is_none() {
                    self.head.sample(s.values(), self.cfg.training);
                }
                continue;
            };
            let Some((score, over)) = self.head.judge(s) else { continue };
            // A host the first head flagged this interval has its episode's
            // observation already.
            let first_head = self.unusual.binary_search_by(|(h, _)| h.cmp(a)).is_ok();
            if over.is_empty() || first_head || allowed(a, AnomalyKind::BehaviourOutlier) {
                continue;
            }
            let reasons: Vec<String> = over.iter().map(|&i| head::words(i, &s.signals[i])).collect();
            let obs = RuleObs {
                observed: significant(score, 4),
                threshold: 1.0,
                unit: "times its behaviour line",
                dst: over.first().and_then(|&i| s.signals[i].peer),
                evidence: head::evidence(s, &lines, &over),
                message: format!("{a} behaves unlike its own history: {}", reasons.join("; ")),
                ..outlier_obs(*a, t)
            };
            let key = EpisodeKey { kind: AnomalyKind::BehaviourOutlier, src: *a, dst: Addr::UNSPECIFIED };
            self.episodes.observe(key, t, &obs, out);
        }
    }

    /// The features furthest from what was learned, in standard deviations, furthest first.
    fn deviations(&self, x: &[f64; FEATURES]) -> Vec<(f64, usize)> {
        let mut dev: Vec<(f64, usize)> =
            (0..FEATURES).map(|d| ((x[d] - self.mean[d]) / self.var[d].sqrt().max(0.02), d)).collect();
        dev.sort_by(|p, q| q.0.abs().total_cmp(&p.0.abs()).then(p.1.cmp(&q.1)));
        dev
    }

    fn observation(
        &self,
        host: Addr,
        x: &[f64; FEATURES],
        dev: &[(f64, usize)],
        score: f64,
        line: f64,
        t: Timestamp,
    ) -> RuleObs {
        let words: Vec<String> = dev
            .iter()
            .take(3)
            .map(|&(z, d)| {
                if d < COUNTS {
                    let now = (x[d] * LOG_MAX).exp_m1();
                    let usual = (self.mean[d] * LOG_MAX).exp_m1().max(1.0);
                    if now >= usual {
                        format!("{} {:.0}x usual ({:.0} vs {:.0})", FEATURE_NAMES[d], now / usual, now, usual)
                    } else {
                        format!(
                            "{} {:.0}% of usual ({:.0} vs {:.0})",
                            FEATURE_NAMES[d],
                            now / usual * 100.0,
                            now,
                            usual
                        )
                    }
                } else {
                    format!("{} {:.0}% ({:+.1} sd)", FEATURE_NAMES[d], x[d] * 100.0, z)
                }
            })
            .collect();
        let mut ev = Map::new();
        ev.insert("top_features".into(), json!(words));
        ev.insert(
            "model".into(),
            json!({"kind": self.cfg.model, "members": self.members(), "samples": self.seen}),
        );
        RuleObs {
            // Four significant digits: scores and lines sit near 0.002, where
            // three decimals printed both as the same number.
            observed: significant(score, 4),
            threshold: significant(line, 4),
            unit: "anomaly score",
            evidence: ev,
            message: format!("{host} behaves unlike anything learned: {}", words.join(", ")),
            ..outlier_obs(host, t)
        }
    }
}

/// What both heads' outliers share: a one-interval observation of `host`,
/// severity low (the model ranks, through priority, and points; the rule
/// and statistical families alert: the README says why it is not quiet
/// enough to alert on its own). Each head fills in its numbers and words.
fn outlier_obs(host: Addr, t: Timestamp) -> RuleObs {
    RuleObs {
        ts: t,
        span: crate::base::time::Span::default(),
        window: t,
        totals: Vec::new(),
        observed_total: None,
        observed: 0.0,
        threshold: 0.0,
        unit: "",
        severity: Severity::Low,
        src: Some(host),
        dst: None,
        evidence: Map::new(),
        message: String::new(),
    }
}

/// File of the behaviour model inside `--state-dir`.
pub const MODEL_FILE: &str = "model.json";

impl Family for BehaviourModel {
    type Shard = ();

    fn new(cfg: &DetectConfig) -> BehaviourModel {
        BehaviourModel::new(&cfg.ml, cfg.episodes)
    }

    fn shard(_: &DetectConfig, _: &ShardConfig) {}

    fn judge(&mut self, _: &mut (), cx: &mut Context<'_>, out: &mut Vec<Anomaly>) {
        let cfg = cx.cfg;
        if cfg.ml.enabled {
            cx.facts.settle_behaviour();
            self.on_interval(cx.hosts, &cx.facts, cx.t, &|a, k| cfg.allowed(a, k), out);
        } else {
            // Turned off by a reload: no stale view for triage.
            self.unusual.clear();
        }
    }

    crate::detect::family::episodes_tick!();

    /// Episode timing follows the new configuration; the model's shape and
    /// calibration need a restart (they are what was learned).
    fn reconfigure(&mut self, cfg: &DetectConfig) {
        self.episodes.set_policy(cfg.episodes);
    }

    fn state_file(&self, cfg: &DetectConfig) -> Option<&'static str> {
        cfg.ml.enabled.then_some(MODEL_FILE)
    }

    fn save_state(&self, _: &DetectConfig) -> Option<Vec<u8>> {
        serde_json::to_vec(&self.snapshot()).ok()
    }

    fn load_state(&mut self, text: &str, _: &DetectConfig) -> Restored {
        match serde_json::from_str::<ModelState>(text) {
            Ok(st) => match self.restore(st) {
                true => Restored::Loaded(0),
                false => {
                    Restored::Ignored("the saved behaviour model has another shape; it starts fresh".into())
                }
            },
            Err(e) => Restored::Bad(format!("corrupt ({e})")),
        }
    }
}

/// True when one of the three strongest deviations (from
/// `BehaviourModel::deviations`) is an excess — more traffic, fan-out or
/// failure than usual — not only a shortfall.
fn excess(dev: &[(f64, usize)]) -> bool {
    dev.iter().take(3).any(|&(z, _)| z > 0.0)
}

/// `x` rounded to `digits` significant digits.
fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// Offers `x` to a uniform sample of at most `cap` of everything offered
/// (`seen` counts the offers): Vitter's reservoir, its coin a hash of the
/// count, so the sample is the same for any number of workers when the
/// offers come in the same order.
fn reservoir<T>(sample: &mut Vec<T>, seen: &mut u64, cap: usize, x: T) {
    *seen += 1;
    if sample.len() < cap.max(1) {
        sample.push(x);
        return;
    }
    let j = splitmix(*seen) % *seen;
    if let Some(slot) = sample.get_mut(j as usize) {
        *slot = x;
    }
}

/// Which of an interval's host-intervals teach the model.
///
/// A mass window holds `window` host-intervals, so of an interval with more
/// than two windows' worth of hosts, all but the last two windows' were
/// learned only to be overwritten; and taken in address order those last
/// two were the highest addresses, not the network. Past that, a uniform
/// sample of about two windows teaches, chosen by a hash of the host and
/// the interval (the same for any number of workers, a different sample
/// each interval). Every host is still scored. (On the replay benchmark,
/// ~70,000 hosts an interval: learning them all was a third of the model's
/// time and 140 window swaps an interval.)
struct Teachers {
    /// Hosts judged this interval.
    n: u64,
    /// About how many of them teach.
    want: u64,
    /// The interval, mixed into the choice.
    salt: u64,
}

impl Teachers {
    fn new(n: usize, window: u64, t: Timestamp) -> Teachers {
        Teachers { n: n as u64, want: window.max(1).saturating_mul(2), salt: splitmix(t.as_nanos()) }
    }

    /// True when host `a` teaches this interval.
    fn includes(&self, a: &Addr) -> bool {
        if self.n <= self.want {
            return true;
        }
        let v = u128::from_be_bytes(a.0);
        let h = splitmix((v as u64) ^ splitmix((v >> 64) as u64 ^ self.salt));
        h % self.n < self.want
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from a counter.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The line above `quantile` of the training scores, with a margin of half
/// the distance from the median to that quantile (at most 1: scores are).
fn calibrate(scores: &mut [f64], quantile: f64) -> f64 {
    line_above(scores, quantile).min(1.0)
}

/// The line above `quantile` of `scores` with the margin, unbounded (the
/// second head's signals are ratios, not scores in (0, 1]).
fn line_above(scores: &mut [f64], quantile: f64) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    scores.sort_by(f64::total_cmp);
    let at = |q: f64| scores[((scores.len() - 1) as f64 * q).round() as usize];
    let (median, high) = (at(0.5), at(quantile.clamp(0.5, 1.0)));
    high + (high - median) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_network_teaches_whole_a_large_one_a_sample_of_two_windows() {
        let t = Timestamp::from_secs(60);
        let addr = |i: u32| Addr::v4(i.to_be_bytes());
        let small = Teachers::new(1000, 512, t);
        assert!((0..1000).all(|i| small.includes(&addr(i))));
        let large = Teachers::new(70_000, 512, t);
        let taught = (0..70_000).filter(|&i| large.includes(&addr(i))).count();
        assert!((900..1150).contains(&taught), "{taught}");
        // Spread over the address space, not its tail.
        assert!((0..35_000).filter(|&i| large.includes(&addr(i))).count() > 400);
        // Another interval, another sample; the same interval, the same one.
        let next = Teachers::new(70_000, 512, Timestamp::from_secs(61));
        assert!((0..70_000).any(|i| large.includes(&addr(i)) != next.includes(&addr(i))));
        assert!(
            (0..70_000).all(|i| large.includes(&addr(i)) == Teachers::new(70_000, 512, t).includes(&addr(i)))
        );
    }

    #[test]
    fn scores_keep_four_significant_digits() {
        assert_eq!(significant(0.0021734, 4), 0.002173);
        assert_eq!(significant(0.0017449, 4), 0.001745);
        assert_eq!(significant(0.5, 4), 0.5);
        assert_eq!(significant(0.0, 4), 0.0);
    }

    fn normal(i: u64) -> HostCounters {
        let j = i * 7919 % 97;
        let mut h = HostCounters {
            pkts_out: 80 + j,
            pkts_in: 90 + j,
            bytes_out: 9_000 + j * 50,
            bytes_in: 60_000 + j * 300,
            flows_out: 3 + j % 4,
            syn_out: 3 + j % 4,
            udp_in: 5,
            ..HostCounters::default()
        };
        for p in 0..(2 + j % 3) {
            h.peers_out.insert_addr(&Addr::v4([1, 1, 1, p as u8]));
            h.ports_out.insert_port(443 + p as u16);
        }
        h
    }

    /// A model fed 3,000 intervals of normal hosts, and what it raised.
    fn trained(cfg: &MlConfig) -> (BehaviourModel, Vec<Anomaly>) {
        let mut m = BehaviourModel::new(cfg, EpisodePolicy::default());
        let never = |_: &Addr, _: AnomalyKind| false;
        let mut out = Vec::new();
        for i in 0..3000u64 {
            let mut iv = HostInterval::default();
            iv.hosts.insert(Addr::v4([10, 0, (i % 7) as u8, 1]), normal(i));
            m.on_interval(&iv, &Facts::default(), Timestamp::from_secs(i), &never, &mut out);
        }
        (m, out)
    }

    #[test]
    fn the_trees_walked_side_by_side_score_what_each_walk_alone_scores() {
        let (mut m, _) = trained(&MlConfig { enabled: true, window: 16, ..MlConfig::default() });
        assert!(m.windows > 0 && !m.trees.is_empty());
        for x in [features(&normal(3)), features(&scanner()), [0.0; FEATURES], [1.0; FEATURES]] {
            let alone: Vec<(f64, usize)> = m.trees.iter().map(|t| t.score_leaf(&x)).collect();
            let side_by_side = m.score_remembering(&x);
            assert_eq!(side_by_side.to_bits(), m.hst_score(alone.iter().map(|a| a.0).sum()).to_bits());
            assert_eq!(m.leaves, alone.iter().map(|a| a.1).collect::<Vec<_>>());
        }
    }

    /// A host that suddenly contacts hundreds of peers on hundreds of ports.
    fn scanner() -> HostCounters {
        let mut scan = normal(1);
        scan.pkts_out = 5000;
        scan.syn_out = 4900;
        scan.flows_out = 4900;
        for p in 0..600u16 {
            scan.peers_out.insert_addr(&Addr::v4([9, 9, (p >> 8) as u8, p as u8]));
            scan.ports_out.insert_port(p);
        }
        scan
    }

    /// One host a second: `training` (4,096) would take over an hour; after
    /// `training_seconds` with `min_training` scores the model calibrates.
    #[test]
    fn a_small_network_calibrates_after_the_learning_period() {
        let cfg = MlConfig {
            enabled: true,
            window: 16,
            training_seconds: 300,
            min_training: 256,
            ..MlConfig::default()
        };
        let mut m = BehaviourModel::new(&cfg, EpisodePolicy::default());
        let never = |_: &Addr, _: AnomalyKind| false;
        let mut out = Vec::new();
        let mut calibrated_at = None;
        for i in 0..400u64 {
            let mut iv = HostInterval::default();
            iv.hosts.insert(Addr::v4([10, 0, 0, 1]), normal(i));
            m.on_interval(&iv, &Facts::default(), Timestamp::from_secs(i), &never, &mut out);
            if calibrated_at.is_none() && m.threshold().is_some() {
                calibrated_at = Some(i);
            }
        }
        // Scores start after the first 16-interval window; the learning
        // period runs from the first interval learned, so it calibrates at 300 s.
        assert_eq!(calibrated_at, Some(300), "calibrated at {calibrated_at:?}");
    }

    /// An office: ten hosts, each busy enough to be scored in one second of
    /// ten (one host-interval a second, like the lab office of
    /// captures/behaviour), default configuration. The first reference
    /// window (512) would take over eight minutes to fill; it closes at half
    /// the learning period instead, and the model calibrates when the
    /// learning period ends, then flags a scanner.
    #[test]
    fn an_office_gets_verdicts_from_the_time_bounded_learning_period() {
        let cfg = MlConfig { enabled: true, ..MlConfig::default() };
        let mut m = BehaviourModel::new(&cfg, EpisodePolicy::default());
        let never = |_: &Addr, _: AnomalyKind| false;
        let mut out = Vec::new();
        let (mut scored_at, mut calibrated_at) = (None, None);
        for i in 0..330u64 {
            let mut iv = HostInterval::default();
            for k in (0..10u64).filter(|k| i % 10 == *k) {
                iv.hosts.insert(Addr::v4([10, 0, 0, 1 + k as u8]), normal(i * 10 + k));
            }
            m.on_interval(&iv, &Facts::default(), Timestamp::from_secs(1_000 + i), &never, &mut out);
            if scored_at.is_none() && m.windows > 0 {
                scored_at = Some(i);
            }
            if calibrated_at.is_none() && m.threshold().is_some() {
                calibrated_at = Some(i);
            }
        }
        assert!(out.is_empty(), "the office's own hosts were flagged: {out:#?}");
        // Half of training_seconds (150 s), 151 host-intervals: scores from then on.
        assert_eq!(scored_at, Some(150), "scored from {scored_at:?}");
        assert_eq!(m.reference_count, 151);
        let due = cfg.training_seconds;
        assert!(
            calibrated_at.is_some_and(|c| (due..due + 5).contains(&c)),
            "calibrated at {calibrated_at:?}"
        );
        let mut iv = HostInterval::default();
        iv.hosts.insert(Addr::v4([10, 0, 0, 66]), scanner());
        m.on_interval(&iv, &Facts::default(), Timestamp::from_secs(1_400), &never, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].kind, AnomalyKind::BehaviourOutlier);
        // Saved and restored mid-way, the partial window keeps its count;
        // a file from before the count was saved assumes full windows.
        let mut st = m.snapshot();
        let mut again = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(again.restore(m.snapshot()));
        assert_eq!(again.score(&features(&scanner())), m.score(&features(&scanner())));
        (st.reference_count, st.latest_count, st.learning_since) = (None, None, None);
        let mut old = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(old.restore(st));
        assert_eq!((old.reference_count, old.latest_count), (cfg.window, m.seen % cfg.window));
    }

    #[test]
    fn learns_normal_calibrates_and_flags_a_scanner() {
        let cfg = MlConfig { enabled: true, window: 256, training: 1024, ..MlConfig::default() };
        let never = |_: &Addr, _: AnomalyKind| false;
        let (mut m, mut out) = trained(&cfg);
        assert!(out.is_empty(), "normal traffic flagged: {out:#?}");
        let line = m.threshold().expect("calibrated after training");
        assert!(line > 0.0 && line <= 1.0);
        let scan = scanner();
        // A host that only went quiet (nothing received) is not an attack.
        let quiet = HostCounters { pkts_in: 0, bytes_in: 0, udp_in: 0, ..normal(2) };
        let mut iv = HostInterval::default();
        iv.hosts.insert(Addr::v4([10, 0, 0, 98]), quiet);
        m.on_interval(&iv, &Facts::default(), Timestamp::from_secs(3000), &never, &mut out);
        assert!(out.is_empty(), "a shortfall alone was flagged: {out:#?}");
        let x = features(&scan);
        assert!(m.score(&x) > line, "score {} line {line}", m.score(&x));
        let mut iv = HostInterval::default();
        iv.hosts.insert(Addr::v4([10, 0, 0, 99]), scan);
        m.on_interval(&iv, &Facts::default(), Timestamp::from_secs(3001), &never, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, AnomalyKind::BehaviourOutlier);
        let msg = &out[0].message;
        assert!(msg.contains("usual"), "{msg}");
        // Deterministic: a second model on the same data gives the same score.
        let (m2, _) = trained(&cfg);
        assert_eq!(m2.score(&x), m.score(&x));
        // Saved and restored, the model scores exactly as before.
        let text = serde_json::to_string(&m.snapshot()).unwrap();
        let mut m3 = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(m3.restore(serde_json::from_str(&text).unwrap()));
        assert_eq!(m3.score(&x), m.score(&x));
        assert_eq!(m3.threshold(), m.threshold());
        let other = MlConfig { depth: 6, ..cfg.clone() };
        let mut m4 = BehaviourModel::new(&other, EpisodePolicy::default());
        assert!(!m4.restore(serde_json::from_str(&text).unwrap()), "a model of another shape is refused");
    }

    /// A host uploading far more than the network's hosts usually send
    /// (a backup): the first head flags it unless its own history, measured
    /// by the second head, covers that volume.
    #[test]
    fn volume_usual_for_the_host_itself_is_not_an_outlier() {
        use crate::detect::family::{HostSignals, SIG_OUTSIDE, Signal};
        let cfg = MlConfig { enabled: true, window: 256, training: 1024, ..MlConfig::default() };
        let never = |_: &Addr, _: AnomalyKind| false;
        let (mut m, mut out) = trained(&cfg);
        let backup = HostCounters {
            pkts_out: 1_400,
            bytes_out: 2_000_000,
            pkts_in: 700,
            bytes_in: 40_000,
            ..normal(3)
        };
        let host = Addr::v4([10, 0, 0, 10]);
        let within = Signal { value: 0.8, now: 2e6, usual: 1.9e6, seconds: 10, peer: None, count: 0 };
        let mut facts =
            Facts { behaviour: vec![(host, HostSignals::one(SIG_OUTSIDE, within))], ..Facts::default() };
        let mut iv = HostInterval::default();
        iv.hosts.insert(host, backup);
        m.on_interval(&iv, &facts, Timestamp::from_secs(3000), &never, &mut out);
        assert!(out.is_empty(), "a volume its own history covers was flagged: {out:#?}");
        // Twenty times its busiest window: no longer its own usual.
        facts.behaviour[0].1.signals[SIG_OUTSIDE].value = 20.0;
        let mut iv = HostInterval::default();
        iv.hosts.insert(host, HostCounters { bytes_out: 40_000_000, pkts_out: 28_000, ..backup });
        m.on_interval(&iv, &facts, Timestamp::from_secs(3001), &never, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(out[0].message.contains("unlike anything learned"), "{}", out[0].message);
    }

    /// The second head's lines are calibrated with the first head's line,
    /// judge the next intervals, and are saved; a file from before the
    /// head restores with its floors.
    #[test]
    fn the_own_history_head_calibrates_with_the_model_and_is_saved() {
        use crate::detect::family::{HostSignals, SIG_ADMIN, SIG_OUTSIDE, Signal};
        let cfg = MlConfig {
            enabled: true,
            window: 16,
            training_seconds: 300,
            min_training: 64,
            ..MlConfig::default()
        };
        let mut m = BehaviourModel::new(&cfg, EpisodePolicy::default());
        let never = |_: &Addr, _: AnomalyKind| false;
        let mut out = Vec::new();
        let host = Addr::v4([10, 0, 0, 1]);
        for i in 0..400u64 {
            let mut iv = HostInterval::default();
            iv.hosts.insert(host, normal(i));
            // Benign uploads reach 3x the host's busiest window once in a while.
            let v = if i % 50 == 7 { 3.0 } else { 0.5 };
            let sig = Signal { value: v, now: v * 1e6, usual: 1e6, seconds: 10, peer: None, count: 0 };
            let facts =
                Facts { behaviour: vec![(host, HostSignals::one(SIG_OUTSIDE, sig))], ..Facts::default() };
            m.on_interval(&iv, &facts, Timestamp::from_secs(i), &never, &mut out);
        }
        assert!(out.is_empty(), "{out:#?}");
        let lines = m.head.state.lines.expect("calibrated with the first head");
        assert!(m.threshold().is_some());
        assert!(lines[SIG_OUTSIDE] > 3.0, "{lines:?}");
        assert_eq!(lines[SIG_ADMIN], head::FLOORS[SIG_ADMIN]);
        // Three new admin peers for a host that knew one: flagged, in words.
        let admin = Signal {
            value: 1.5,
            now: 3.0,
            usual: 1.0,
            seconds: 600,
            peer: Some(Addr::v4([10, 0, 0, 23])),
            count: 5985,
        };
        let facts = Facts { behaviour: vec![(host, HostSignals::one(SIG_ADMIN, admin))], ..Facts::default() };
        let mut iv = HostInterval::default();
        iv.hosts.insert(host, normal(1));
        m.on_interval(&iv, &facts, Timestamp::from_secs(401), &never, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(out[0].message.contains("3 new administrative peers within 600 s"), "{}", out[0].message);
        assert_eq!(out[0].dst, Some(Addr::v4([10, 0, 0, 23])));
        // Saved and restored: the same lines.
        let text = serde_json::to_string(&m.snapshot()).unwrap();
        let mut again = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(again.restore(serde_json::from_str(&text).unwrap()));
        assert_eq!(again.head.state.lines, Some(lines));
        // A file from before the head: a calibrated model judges at the floors.
        let mut st = m.snapshot();
        st.head = None;
        let mut old = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(old.restore(st));
        assert_eq!(old.head.state.lines, Some(head::FLOORS));
    }

    /// A model of `model` trained on normal hosts: it flagged none of them,
    /// calibrated, and scores a scanner over its line.
    fn learns_and_flags_a_scanner(model: ModelKind) -> (MlConfig, BehaviourModel) {
        let cfg = MlConfig { enabled: true, model, window: 256, training: 1024, ..MlConfig::default() };
        let (m, out) = trained(&cfg);
        assert!(out.is_empty(), "normal traffic flagged: {out:#?}");
        let line = m.threshold().expect("calibrated after training");
        let x = features(&scanner());
        assert!(m.score(&x) > line, "score {} line {line}", m.score(&x));
        (cfg, m)
    }

    #[test]
    fn kitnet_learns_flags_a_scanner_and_restores_exactly() {
        let (cfg, m) = learns_and_flags_a_scanner(ModelKind::Kitnet);
        let x = features(&scanner());
        let (m2, _) = trained(&cfg);
        assert_eq!(m2.score(&x), m.score(&x), "deterministic");
        let text = serde_json::to_string(&m.snapshot()).unwrap();
        let mut again = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(again.restore(serde_json::from_str(&text).unwrap()));
        assert_eq!(again.score(&x), m.score(&x));
        let trees =
            BehaviourModel::new(&MlConfig { model: ModelKind::Hst, ..cfg.clone() }, EpisodePolicy::default());
        let mut kit = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(!kit.restore(trees.snapshot()), "a tree model's masses are not autoencoders");
    }

    /// Scoring and learning cost per host-interval of each family (how the
    /// README's cost column was measured): `cargo test --release --lib
    /// cost_per_host_interval -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost_per_host_interval() {
        let xs: Vec<[f64; FEATURES]> = (0..4096).map(|i| features(&normal(i))).collect();
        for model in [ModelKind::Hst, ModelKind::Loda, ModelKind::Kitnet] {
            let cfg = MlConfig { enabled: true, model, ..MlConfig::default() };
            let mut m = BehaviourModel::new(&cfg, EpisodePolicy::default());
            let mut best = f64::MAX;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                let mut sum = 0.0;
                for x in &xs {
                    sum += m.score(x);
                    m.learn(x, Timestamp::ZERO);
                }
                best = best.min(start.elapsed().as_nanos() as f64 / xs.len() as f64);
                assert!(sum.is_finite());
            }
            eprintln!("ml-cost | {model:?} | {best:.0} ns per host-interval (score + learn)");
        }
        // The second head: one interval of 4,096 hosts' signals, settled and judged.
        use crate::detect::family::{HostSignals, SIGNALS, Signal};
        let cfg = MlConfig { enabled: true, ..MlConfig::default() };
        let mut m = BehaviourModel::new(&cfg, EpisodePolicy::default());
        m.head.state.lines = Some(head::FLOORS);
        let mut facts = Facts::default();
        let mut best = f64::MAX;
        let never = |_: &Addr, _: AnomalyKind| false;
        for _ in 0..5 {
            facts.behaviour.clear();
            for i in 0..4096u32 {
                let mut h = HostSignals::default();
                h.signals[(i as usize) % SIGNALS] =
                    Signal { value: f64::from(i % 7) / 10.0, ..Signal::default() };
                facts.behaviour.push((Addr::v4(i.to_be_bytes()), h));
            }
            let mut out = Vec::new();
            let start = std::time::Instant::now();
            facts.settle_behaviour();
            m.judge_signals(&facts.behaviour, Timestamp::ZERO, &never, &mut out);
            best = best.min(start.elapsed().as_nanos() as f64 / 4096.0);
        }
        eprintln!(
            "ml-cost | own-history head | {best:.0} ns per host-interval with signals (settle + judge)"
        );
    }

    #[test]
    fn loda_learns_flags_a_scanner_and_refuses_a_tree_model() {
        let (cfg, m) = learns_and_flags_a_scanner(ModelKind::Loda);
        let text = serde_json::to_string(&m.snapshot()).unwrap();
        let mut again = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(again.restore(serde_json::from_str(&text).unwrap()));
        let x = features(&scanner());
        assert_eq!(again.score(&x), m.score(&x));
        let trees =
            BehaviourModel::new(&MlConfig { model: ModelKind::Hst, ..cfg.clone() }, EpisodePolicy::default());
        let mut loda = BehaviourModel::new(&cfg, EpisodePolicy::default());
        assert!(!loda.restore(trees.snapshot()), "a tree model's masses do not fit projections");
    }
}
