//! FSQ: finite scalar quantisation (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made
//! Simple"). A latent is projected to `L = levels.len()` dimensions, each bounded with `tanh` to
//! `levels[d]` values and rounded to the nearest one; the rounding passes gradients straight
//! through. There is no codebook to learn, so there are no dead codes; the vocabulary is
//! `∏ levels` and a token's index is its mixed-radix digit string.
//!
//! Bounding: `h ↦ tanh(h + shift) · half_l − offset` with `half_l = (L_d − 1)(1 + ε) / 2`,
//! `offset = 0.5` for even `L_d` (so that the values are the integers `−L_d/2 … L_d/2 − 1`) and
//! `shift = atanh(offset / half_l)` (the paper's reference uses `tan`; `(1 + ε)` as in
//! vector-quantize-pytorch keeps `offset / half_l < 1`, also for `L_d = 2`); the rounded value is
//! divided by `⌊L_d / 2⌋` to lie in [−1, 1] before the projection back to `code_dim`.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Why an FSQ cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsqError {
    #[error("FSQ levels must be non-empty, each ≥ 2, with a product of at most 65536 (got {0:?})")]
    Levels(Vec<usize>),
}

/// Checks a level set and returns its vocabulary (`∏ levels`).
pub fn vocabulary(levels: &[usize]) -> Result<usize, FsqError> {
    if levels.is_empty() || levels.iter().any(|&l| l < 2) {
        return Err(FsqError::Levels(levels.to_vec()));
    }
    // A vocabulary is counted per step and predicted by a classifier: keep it to 2^16.
    levels.iter().try_fold(1usize, |acc, &l| acc.checked_mul(l)).filter(|&v| v <= 1 << 16).ok_or_else(|| FsqError::Levels(levels.to_vec()))
}

#[derive(Module, Debug)]
pub struct Fsq {
    /// code_dim → L.
    pub down: Linear,
    /// L → code_dim.
    pub up: Linear,
    pub levels: Vec<usize>,
    pub code_dim: usize,
}

const EPS: f64 = 1e-3;

impl Fsq {
    pub fn new(levels: &[usize], code_dim: usize, device: &Device) -> Result<Self, FsqError> {
        vocabulary(levels)?;
        let l = levels.len();
        Ok(Self { down: LinearConfig::new(code_dim, l).init(device), up: LinearConfig::new(l, code_dim).init(device), levels: levels.to_vec(), code_dim })
    }

    /// Tokens each latent can take.
    pub fn vocabulary(&self) -> usize {
        self.levels.iter().product()
    }

    fn row(&self, values: Vec<f32>, device: &Device) -> Tensor<2> {
        let l = self.levels.len();
        Tensor::from_data(TensorData::new(values, [1, l]), device)
    }

    /// Per-dimension constants: (half_l, offset, shift, half_width).
    fn constants(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut half_l = Vec::new();
        let mut offset = Vec::new();
        let mut shift = Vec::new();
        let mut half_width = Vec::new();
        for &lv in &self.levels {
            let h = (lv as f64 - 1.0) * (1.0 + EPS) / 2.0;
            let o = if lv % 2 == 0 { 0.5 } else { 0.0 };
            half_l.push(h as f32);
            offset.push(o as f32);
            shift.push((o / h).atanh() as f32);
            half_width.push((lv / 2) as f32);
        }
        (half_l, offset, shift, half_width)
    }

    /// Bounded, rounded values (integers in each level's range), with a straight-through
    /// gradient: [n, code_dim] → [n, L].
    pub fn quantize(&self, z: Tensor<2>) -> Tensor<2> {
        let device = z.device();
        let (half_l, offset, shift, _) = self.constants();
        let h = self.down.forward(z); // [n, L]
        let bounded = (h + self.row(shift, &device)).tanh() * self.row(half_l, &device) - self.row(offset, &device); // [n, L]
        let rounded = bounded.clone().round();
        bounded.clone() + (rounded - bounded).detach()
    }

    /// Mixed-radix index of rounded values: [n, L] → [n].
    pub fn indices(&self, q: Tensor<2>) -> Tensor<1, Int> {
        let device = q.device();
        let n = q.dims()[0];
        let (_, _, _, half_width) = self.constants();
        let digits = (q + self.row(half_width, &device)).round().int(); // [n, L], 0..L_d−1
        let basis: Vec<i64> = self
            .levels
            .iter()
            .scan(1i64, |b, &lv| {
                let here = *b;
                *b = b.saturating_mul(lv as i64);
                Some(here)
            })
            .collect();
        let basis: Tensor<2, Int> = Tensor::from_data(TensorData::new(basis, [1, self.levels.len()]), &device);
        (digits * basis).sum_dim(1).reshape([n])
    }

    /// Rounded values → code vectors: [n, L] → [n, code_dim].
    fn project_up(&self, q: Tensor<2>) -> Tensor<2> {
        let device = q.device();
        let (_, _, _, half_width) = self.constants();
        self.up.forward(q / self.row(half_width, &device))
    }

    /// Training path: (codes [n, code_dim], indices [n]).
    pub fn forward_train(&self, z: Tensor<2>) -> (Tensor<2>, Tensor<1, Int>) {
        let q = self.quantize(z);
        let idx = self.indices(q.clone().detach());
        (self.project_up(q), idx)
    }

    /// Inference path (the same as training: FSQ is deterministic).
    pub fn forward_eval(&self, z: Tensor<2>) -> (Tensor<2>, Tensor<1, Int>) {
        self.forward_train(z)
    }

    /// Codes for indices: [n] → [n, code_dim] (each digit taken modulo its level).
    pub fn lookup(&self, idx: Tensor<1, Int>) -> Tensor<2> {
        let device = idx.device();
        let n = idx.dims()[0];
        let idx = idx.reshape([n, 1]);
        let (_, _, _, half_width) = self.constants();
        let mut basis = 1i64;
        let mut digits = Vec::with_capacity(self.levels.len());
        for &lv in &self.levels {
            digits.push(idx.clone().div_scalar(basis).remainder_scalar(lv as i64)); // [n, 1]
            basis = basis.saturating_mul(lv as i64);
        }
        let q = Tensor::cat(digits, 1).float() - self.row(half_width, &device); // [n, L]
        self.project_up(q)
    }
}
