//! Learned baselines: exponentially weighted mean and variance in packet time.

use serde::{Deserialize, Serialize};

/// Exponentially weighted mean and variance (West 1979 / Finch 2009 form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    /// Weighted mean.
    pub mean: f64,
    /// Weighted variance.
    pub var: f64,
}

impl Ewma {
    /// Folds in one sample with weight `alpha`.
    pub fn update(&mut self, x: f64, alpha: f64) {
        let d = x - self.mean;
        let inc = alpha * d;
        self.mean += inc;
        self.var = ((1.0 - alpha) * (self.var + d * inc)).max(0.0);
    }

    /// Folds in `k` zero samples at once (intervals in which the host was silent).
    ///
    /// Closed form of `k` calls to `update(0.0, alpha)`: with r = (1-α)^k,
    /// mean' = r·mean and var' = r·(var + mean²·(1-r)). O(1) for any gap.
    pub fn decay_zeros(&mut self, k: u64, alpha: f64) {
        if k == 0 {
            return;
        }
        let r = (1.0 - alpha).powf(k.min(1 << 40) as f64);
        self.var = (r * (self.var + self.mean * self.mean * (1.0 - r))).max(0.0);
        self.mean *= r;
    }

    /// Standard deviation.
    pub fn stddev(&self) -> f64 {
        self.var.sqrt()
    }
}

/// The EWMA weight for a half-life of `h` samples: after `h` samples an old
/// value's weight has halved.
pub fn alpha_for_half_life(h: f64) -> f64 {
    if h <= 0.0 { 1.0 } else { 1.0 - 0.5f64.powf(1.0 / h) }
}

/// One metric's baseline at two time scales.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricBaseline {
    /// Short memory: follows the recent normal (minutes).
    pub fast: Ewma,
    /// Long memory: the stable normal (an hour).
    pub slow: Ewma,
    /// Samples learned.
    pub samples: u64,
}

/// How a threshold is derived from a baseline.
#[derive(Clone, Copy, Debug)]
pub struct ThresholdRule {
    /// Standard deviations above the mean.
    pub k: f64,
    /// Multiple of the mean that must also be exceeded.
    pub ratio: f64,
    /// Absolute minimum (quiet hosts never alert below it).
    pub floor: f64,
}

impl MetricBaseline {
    /// Learns one interval's value.
    pub fn learn(&mut self, x: f64, alphas: (f64, f64)) {
        if self.samples == 0 {
            // Start from the first observation rather than from zero, so the
            // first minutes are not dominated by a ramp from nothing.
            self.fast = Ewma { mean: x, var: 0.0 };
            self.slow = Ewma { mean: x, var: 0.0 };
        } else {
            self.fast.update(x, alphas.0);
            self.slow.update(x, alphas.1);
        }
        self.samples += 1;
    }

    /// Accounts `k` silent intervals.
    pub fn idle(&mut self, k: u64, alphas: (f64, f64)) {
        if self.samples > 0 {
            self.fast.decay_zeros(k, alphas.0);
            self.slow.decay_zeros(k, alphas.1);
            self.samples += k;
        }
    }

    /// The line above which a value is anomalous.
    ///
    /// The largest of: the floor; mean + k·σ at either time scale (so a host
    /// that was busy an hour ago or a minute ago is judged by its busier
    /// self); and `ratio` × the larger mean (so a near-constant series with
    /// σ ≈ 0 does not alert on a 10% wobble).
    pub fn threshold(&self, r: &ThresholdRule) -> f64 {
        let z = |e: &Ewma| e.mean + r.k * e.stddev();
        let mean = self.fast.mean.max(self.slow.mean);
        r.floor.max(z(&self.fast)).max(z(&self.slow)).max(r.ratio * mean)
    }

    /// The mean and deviation reported in events (the long scale).
    pub fn reported(&self) -> (f64, f64) {
        (self.slow.mean, self.slow.stddev())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_series_has_zero_variance() {
        let mut e = Ewma { mean: 10.0, var: 0.0 };
        for _ in 0..100 {
            e.update(10.0, 0.1);
        }
        assert_eq!((e.mean, e.var), (10.0, 0.0));
    }

    #[test]
    fn alternating_series_converges_to_known_moments() {
        // 0,2,0,2…: mean 1, variance 1 (population), for small alpha.
        let mut e = Ewma::default();
        for i in 0..20_000 {
            e.update(if i % 2 == 0 { 0.0 } else { 2.0 }, 0.001);
        }
        assert!((e.mean - 1.0).abs() < 0.01, "{}", e.mean);
        assert!((e.var - 1.0).abs() < 0.01, "{}", e.var);
    }

    #[test]
    fn decay_matches_repeated_zero_updates() {
        let mut a = Ewma { mean: 50.0, var: 30.0 };
        let mut b = a;
        for _ in 0..37 {
            a.update(0.0, 0.05);
        }
        b.decay_zeros(37, 0.05);
        assert!((a.mean - b.mean).abs() < 1e-9);
        assert!((a.var - b.var).abs() < 1e-9);
        b.decay_zeros(u64::MAX, 0.05);
        assert!(b.mean.abs() < 1e-9 && b.var.is_finite());
    }

    #[test]
    fn half_life() {
        let a = alpha_for_half_life(60.0);
        assert!(((1.0 - a).powi(60) - 0.5).abs() < 1e-12);
        assert_eq!(alpha_for_half_life(0.0), 1.0);
    }

    #[test]
    fn threshold_takes_floor_sigma_and_ratio() {
        let rule = ThresholdRule { k: 5.0, ratio: 3.0, floor: 50.0 };
        let mut b = MetricBaseline::default();
        assert_eq!(b.threshold(&rule), 50.0, "empty: the floor");
        for _ in 0..100 {
            b.learn(100.0, (0.1, 0.01));
        }
        assert!((b.threshold(&rule) - 300.0).abs() < 1e-6, "σ≈0: ratio×mean");
        for i in 0..1000 {
            b.learn(if i % 2 == 0 { 0.0 } else { 200.0 }, (0.1, 0.01));
        }
        let t = b.threshold(&rule);
        assert!(t > 450.0 && t < 700.0, "noisy: mean + kσ, {t}");
    }
}
