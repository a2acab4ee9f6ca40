//! Per-dimension quantile bins for the action head (LAPA / RT-2 / OpenVLA discretise each action
//! dimension into 256 bins). The edges are quantiles of the finetuning data, so every bin holds
//! about as many samples; a value is coded as the bin whose midpoint is nearest, and decoded at
//! that midpoint. Where many samples share one value (a gripper at rest), several edges coincide
//! and the zero-width bin between them decodes that value exactly.

use serde::{Deserialize, Serialize};

/// The bins of one action dimension: `bins + 1` non-decreasing edges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantileBins {
    pub edges: Vec<f32>,
}

impl QuantileBins {
    /// Edges at the `i / bins` quantiles of `values` (linear interpolation between order
    /// statistics). Non-finite values are an error, as is an empty sample.
    pub fn fit(values: &[f32], bins: usize) -> Result<Self, String> {
        if bins == 0 {
            return Err("bins: must be at least 1".into());
        }
        if values.is_empty() {
            return Err("no values to fit the bins to".into());
        }
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(format!("value {v} is not finite"));
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f32::total_cmp);
        let n = sorted.len();
        let edges = (0..=bins)
            .map(|i| {
                let pos = i as f64 / bins as f64 * (n - 1) as f64;
                let lo = pos.floor() as usize;
                let hi = (lo + 1).min(n - 1);
                let t = pos - lo as f64;
                (f64::from(sorted[lo]) * (1.0 - t) + f64::from(sorted[hi]) * t) as f32
            })
            .collect();
        Ok(Self { edges })
    }

    pub fn bins(&self) -> usize {
        self.edges.len().saturating_sub(1)
    }

    /// Checks the edges read from a file: at least two, finite, non-decreasing.
    pub fn validate(&self) -> Result<(), String> {
        if self.edges.len() < 2 {
            return Err(format!("{} edges: at least 2 are needed", self.edges.len()));
        }
        if let Some(v) = self.edges.iter().find(|v| !v.is_finite()) {
            return Err(format!("edge {v} is not finite"));
        }
        if let Some(w) = self.edges.windows(2).find(|w| w[1] < w[0]) {
            return Err(format!("edges decrease ({} then {})", w[0], w[1]));
        }
        Ok(())
    }

    /// The midpoint of bin `i` (clamped to the last bin).
    pub fn decode(&self, i: usize) -> f32 {
        let i = i.min(self.bins().saturating_sub(1));
        0.5 * (self.edges[i] + self.edges[i + 1])
    }

    /// The bin whose midpoint is nearest to `v` (the first of equal ones); values outside the
    /// edges go to the end bins. NaN goes to bin 0.
    pub fn encode(&self, v: f32) -> usize {
        let n = self.bins();
        if n <= 1 || v.is_nan() {
            return 0;
        }
        // Midpoints are non-decreasing: the first midpoint ≥ v, or the one before it.
        let first_ge = partition_point(n, |i| self.decode(i) < v);
        if first_ge == 0 {
            return 0;
        }
        if first_ge == n {
            return self.first_with_mid(n - 1);
        }
        let (below, above) = (self.decode(first_ge - 1), self.decode(first_ge));
        if v - below <= above - v { self.first_with_mid(first_ge - 1) } else { first_ge }
    }

    /// The first bin with the same midpoint as bin `i`.
    fn first_with_mid(&self, mut i: usize) -> usize {
        let m = self.decode(i);
        while i > 0 && self.decode(i - 1) == m {
            i -= 1;
        }
        i
    }
}

/// The first index in `0..n` where `pred` is false (pred true on a prefix).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_within_half_a_bin_and_exact_on_repeated_values() {
        // A continuous dimension: every value decodes within its bin's half width.
        let values: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 * 0.1 - 50.0).collect();
        let b = QuantileBins::fit(&values, 16).expect("fit");
        assert_eq!(b.bins(), 16);
        assert_eq!(b.validate(), Ok(()));
        for &v in &values {
            let i = b.encode(v);
            let half = 0.5 * (b.edges[i + 1] - b.edges[i]);
            assert!((b.decode(i) - v).abs() <= half + 1e-4, "{v} -> bin {i} -> {}", b.decode(i));
        }
        // Equal-count bins: each holds about 1000/16 values.
        let mut counts = [0usize; 16];
        values.iter().for_each(|&v| counts[b.encode(v)] += 1);
        assert!(counts.iter().all(|&c| (50..=75).contains(&c)), "{counts:?}");
        // A gripper at rest 70% of the time: the rest value decodes exactly.
        let mut g: Vec<f32> = vec![0.0; 700];
        g.extend((0..300).map(|i| i as f32 / 3.0));
        let b = QuantileBins::fit(&g, 256).expect("fit");
        assert_eq!(b.decode(b.encode(0.0)), 0.0);
        assert!((b.decode(b.encode(99.0)) - 99.0).abs() < 0.5);
        // Outside the edges: the end bins.
        assert_eq!(b.encode(-1e9), 0);
        assert_eq!(b.encode(1e9), b.encode(g.iter().copied().fold(f32::MIN, f32::max)));
        assert_eq!(b.encode(f32::NAN), 0);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(QuantileBins::fit(&[], 4).is_err());
        assert!(QuantileBins::fit(&[1.0], 0).is_err());
        assert!(QuantileBins::fit(&[1.0, f32::INFINITY], 4).is_err());
        assert!(QuantileBins { edges: vec![1.0] }.validate().is_err());
        assert!(QuantileBins { edges: vec![1.0, 0.0] }.validate().is_err_and(|e| e.contains("decrease")));
        assert!(QuantileBins { edges: vec![0.0, f32::NAN] }.validate().is_err());
        // One constant value: every bin has zero width and decodes it.
        let b = QuantileBins::fit(&[3.0; 10], 8).expect("fit");
        assert_eq!(b.decode(b.encode(3.0)), 3.0);
        assert_eq!(b.decode(b.encode(100.0)), 3.0);
    }
}
