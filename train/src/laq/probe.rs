//! Linear-readout-style probes: a small MLP from features (latent tokens or a baseline) to the
//! true action, trained on some episodes and tested on held-out ones.

use anyhow::Result;
use lapa_model::burn;
use lapa_model::burn::module::Module;
use lapa_model::burn::nn::loss::CrossEntropyLossConfig;
use lapa_model::burn::nn::{Linear, LinearConfig};
use lapa_model::burn::optim::{AdamConfig, GradientsParams};
use lapa_model::burn::tensor::activation::relu;
use lapa_model::burn::tensor::{Device, Int, Tensor, TensorData};
use lapa_sim::rng::Rng;

/// Labelled examples: `x` is [n, features] row-major, `reg` is [n, reg_dim].
#[derive(Debug, Clone, Default)]
pub struct ProbeSet {
    pub features: usize,
    pub x: Vec<f32>,
    pub class: Vec<usize>,
    pub reg_dim: usize,
    pub reg: Vec<f32>,
}

impl ProbeSet {
    pub fn len(&self) -> usize {
        self.class.len()
    }

    pub fn is_empty(&self) -> bool {
        self.class.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// Test accuracy of the direction class.
    pub accuracy: f64,
    /// Predicted class of every test example, in order.
    pub predicted: Vec<usize>,
    /// Test accuracy of always answering the most common training class.
    pub majority: f64,
    /// Test R² of the continuous target, pooled over its dimensions on the original scale.
    pub r2: f64,
}

#[derive(Module, Debug)]
struct Mlp {
    l1: Linear,
    l2: Linear,
    cls: Linear,
    reg: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let h = relu(self.l2.forward(relu(self.l1.forward(x))));
        (self.cls.forward(h.clone()), self.reg.forward(h))
    }
}

/// Per-column mean and scale of the training rows. A column that is (nearly) constant in training
/// keeps scale 1: dividing by its tiny spread would turn any test value off that constant (a
/// latent code never seen in training, a joint that barely moved) into a huge input.
fn column_stats(train: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (train.len() / dim.max(1)).max(1) as f32;
    let mut mean = vec![0f32; dim];
    let mut var = vec![0f32; dim];
    for row in train.chunks(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n;
        }
    }
    for row in train.chunks(dim) {
        for j in 0..dim {
            var[j] += (row[j] - mean[j]).powi(2) / n;
        }
    }
    let scale = var.iter().map(|v| if v.sqrt() < 1e-3 { 1.0 } else { v.sqrt() }).collect();
    (mean, scale)
}

fn standardise(rows: &[f32], mean: &[f32], scale: &[f32]) -> Vec<f32> {
    let dim = mean.len().max(1);
    rows.chunks(dim).flat_map(|r| r.iter().enumerate().map(|(j, v)| (v - mean[j]) / scale[j])).collect()
}

/// Trains the probe on `train` and scores it on `test`.
pub fn fit(train: &ProbeSet, test: &ProbeSet, classes: usize, device: &Device, seed: u64, steps: usize) -> Result<ProbeResult> {
    let ad = device.clone().autodiff();
    ad.seed(seed);
    let f = train.features;
    let (xm, xs) = column_stats(&train.x, f);
    let (xtr, xte) = (standardise(&train.x, &xm, &xs), standardise(&test.x, &xm, &xs));
    let (rm, rs) = column_stats(&train.reg, train.reg_dim);
    let rtr = standardise(&train.reg, &rm, &rs);
    let hidden = 128;
    let mut mlp = Mlp {
        l1: LinearConfig::new(f, hidden).init(&ad),
        l2: LinearConfig::new(hidden, hidden).init(&ad),
        cls: LinearConfig::new(hidden, classes).init(&ad),
        reg: LinearConfig::new(hidden, train.reg_dim).init(&ad),
    };
    let mut opt = AdamConfig::new().with_weight_decay(Some(lapa_model::burn::optim::decay::WeightDecayConfig::new(1e-4))).init();
    let ce = CrossEntropyLossConfig::new().init(&ad);
    let n = train.len();
    let bs = 256.min(n);
    let mut rng = Rng::new(seed);
    for _ in 0..steps {
        let idx: Vec<usize> = (0..bs).map(|_| rng.below(n)).collect();
        let xb: Vec<f32> = idx.iter().flat_map(|&i| xtr[i * f..(i + 1) * f].iter().copied()).collect();
        let rb: Vec<f32> = idx.iter().flat_map(|&i| rtr[i * train.reg_dim..(i + 1) * train.reg_dim].iter().copied()).collect();
        let cb: Vec<i64> = idx.iter().map(|&i| train.class[i] as i64).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xb, [bs, f]), &ad);
        let r = Tensor::<2>::from_data(TensorData::new(rb, [bs, train.reg_dim]), &ad);
        let c = Tensor::<1, Int>::from_data(TensorData::new(cb, [bs]), &ad);
        let (logits, pred) = mlp.forward(x);
        let loss = ce.forward(logits, c) + (pred - r).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &mlp);
        mlp = opt.step(1e-3, mlp, grads);
    }
    // Evaluate without autodiff.
    let mlp = mlp.valid();
    let m = test.len();
    let x = Tensor::<2>::from_data(TensorData::new(xte, [m, f]), device);
    let (logits, pred) = mlp.forward(x);
    let guess: Vec<i64> = logits.argmax(1).into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let pred: Vec<f32> = pred.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let correct = guess.iter().zip(&test.class).filter(|(g, c)| **g as usize == **c).count();
    let mut freq = vec![0usize; classes];
    train.class.iter().for_each(|&c| freq[c] += 1);
    let maj = (0..classes).max_by_key(|&k| freq[k]).unwrap_or(0);
    let majority = test.class.iter().filter(|&&c| c == maj).count() as f64 / m.max(1) as f64;
    // Pooled R² on the original scale: 1 − Σ squared error / Σ squared deviation over all
    // dimensions (a per-dimension mean would let a joint that hardly moves dominate).
    let d = test.reg_dim;
    let (mut sse, mut sst) = (0.0f64, 0.0f64);
    for j in 0..d {
        let mean = test.reg.iter().skip(j).step_by(d).map(|&v| f64::from(v)).sum::<f64>() / m.max(1) as f64;
        for i in 0..m {
            let y = f64::from(test.reg[i * d + j]);
            let p = f64::from(pred[i * d + j] * rs[j] + rm[j]);
            sse += (y - p).powi(2);
            sst += (y - mean).powi(2);
        }
    }
    let r2 = if sst > 0.0 { 1.0 - sse / sst } else { 0.0 };
    let predicted = guess.iter().map(|&g| usize::try_from(g).unwrap_or(0)).collect();
    Ok(ProbeResult { accuracy: correct as f64 / m.max(1) as f64, predicted, majority, r2 })
}

/// Lloyd's k-means on `rows` (row-major, `dim` columns): `k` centroids, initialised with
/// k-means++ from `seed`, `iters` rounds; an emptied cluster keeps its centroid. Returns the
/// centroids, `k × dim` row-major. Used by the report to ask whether a codebook fitted to the
/// encoder outputs after training keeps more of the motion than the learned one.
pub fn kmeans(rows: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> Vec<f32> {
    let n = rows.len().checked_div(dim).unwrap_or(0);
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let row = |i: usize| &rows[i * dim..(i + 1) * dim];
    let dist2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut rng = Rng::new(seed);
    let mut cent: Vec<f32> = row(rng.below(n)).to_vec();
    let mut best: Vec<f32> = (0..n).map(|i| dist2(row(i), &cent[..dim])).collect();
    while cent.len() < k * dim {
        let total: f64 = best.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 {
            let mut u = f64::from(rng.f32()) * total;
            best.iter()
                .position(|&d| {
                    u -= f64::from(d);
                    u <= 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.below(n)
        };
        let c = row(pick).to_vec();
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(dist2(row(i), &c));
        }
        cent.extend(c);
    }
    for _ in 0..iters {
        let mut sum = vec![0f64; k * dim];
        let mut count = vec![0usize; k];
        for i in 0..n {
            let a = nearest(&cent, dim, row(i));
            count[a] += 1;
            for (s, &v) in sum[a * dim..(a + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(v);
            }
        }
        for c in 0..k {
            if count[c] > 0 {
                for j in 0..dim {
                    cent[c * dim + j] = (sum[c * dim + j] / count[c] as f64) as f32;
                }
            }
        }
    }
    cent
}

/// Index of the centroid (rows of `dim` in `cent`) nearest to `x`.
pub fn nearest(cent: &[f32], dim: usize, x: &[f32]) -> usize {
    cent.chunks(dim.max(1))
        .map(|c| c.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>())
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_separated_blobs() {
        let centres = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let mut rng = Rng::new(3);
        let mut rows = Vec::new();
        for i in 0..300 {
            let c = centres[i % 3];
            rows.extend([c[0] + 0.5 * rng.normal(), c[1] + 0.5 * rng.normal()]);
        }
        let cent = kmeans(&rows, 2, 3, 20, 1);
        assert_eq!(cent.len(), 6);
        for c in centres {
            let got = &cent[nearest(&cent, 2, &c) * 2..][..2];
            assert!((got[0] - c[0]).abs() < 0.3 && (got[1] - c[1]).abs() < 0.3, "centre {c:?} found as {got:?}");
        }
        // Every point goes to the centroid of its own blob.
        let labels: Vec<usize> = rows.chunks(2).map(|r| nearest(&cent, 2, r)).collect();
        for i in 0..300 {
            assert_eq!(labels[i], labels[i % 3]);
        }
    }
}
