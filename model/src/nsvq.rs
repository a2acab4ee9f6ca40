//! NSVQ: vector quantisation by noise substitution (Vali & Bäckström 2022), as LAPA's LAQ uses it.
//!
//! Training output for an input `z` with nearest code `q` is `z + ‖z − q‖ · v / ‖v‖` with
//! `v ~ N(0, I)`: the quantisation error is simulated by noise of the same magnitude, so gradients
//! reach the encoder (through `z`) and the codebook (through `‖z − q‖`) without a straight-through
//! estimator or a commitment loss. Inference uses the nearest code itself.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

/// Why a codebook edit could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NsvqError {
    #[error("NSVQ codebook: cannot read its values as f32: {0}")]
    CodebookData(String),
    #[error("NSVQ codebook: {got} values, expected {codebook_size} codes × {code_dim}")]
    CodebookShape { got: usize, codebook_size: usize, code_dim: usize },
}

#[derive(Module, Debug)]
pub struct Nsvq {
    /// [codebook_size, code_dim], N(0, 1) at init.
    pub codebook: Param<Tensor<2>>,
    pub codebook_size: usize,
    pub code_dim: usize,
}

impl Nsvq {
    pub fn new(codebook_size: usize, code_dim: usize, device: &Device) -> Self {
        Self { codebook: Param::from_tensor(Tensor::random([codebook_size, code_dim], Distribution::Normal(0.0, 1.0), device)), codebook_size, code_dim }
    }

    /// Index of the nearest code (Euclidean) for each row of `z`: [n, code_dim] -> [n].
    pub fn nearest(&self, z: Tensor<2>) -> Tensor<1, Int> {
        let c = self.codebook.val();
        let z2 = z.clone().powi_scalar(2).sum_dim(1); // [n, 1]
        let c2 = c.clone().powi_scalar(2).sum_dim(1).transpose(); // [1, K]
        let dist = z2 - z.matmul(c.transpose()) * 2.0 + c2; // [n, K]
        let n = dist.dims()[0];
        dist.argmin(1).reshape([n])
    }

    /// Codes for indices: [n] -> [n, code_dim].
    pub fn lookup(&self, idx: Tensor<1, Int>) -> Tensor<2> {
        self.codebook.val().select(0, idx)
    }

    /// Training path. `z`: [n, code_dim]; `noise`: [n, code_dim] standard normal.
    /// Returns (noise-substituted output [n, code_dim], nearest indices [n]).
    pub fn forward_train(&self, z: Tensor<2>, noise: Tensor<2>) -> (Tensor<2>, Tensor<1, Int>) {
        let idx = self.nearest(z.clone().detach());
        let q = self.lookup(idx.clone());
        let err = (z.clone() - q).powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt(); // [n, 1]
        let vnorm = noise.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12); // [n, 1]
        (z + err * noise / vnorm, idx)
    }

    /// Inference path: the nearest codes and their indices.
    pub fn forward_eval(&self, z: Tensor<2>) -> (Tensor<2>, Tensor<1, Int>) {
        let idx = self.nearest(z);
        (self.lookup(idx.clone()), idx)
    }

    /// Dead-code replacement: every code whose `counts` entry is below `min_count` is overwritten
    /// by a used code (LAPA; `candidates = None`) or by one of `candidates` (rows of `code_dim`
    /// values, e.g. the batch's encoder outputs), picked by `pick(n)` as an index below `n`, plus
    /// `noise_scale · N(0, 1)` (`normal()` draws). Keeps the parameter id, so optimiser state
    /// stays attached. Returns the module and the replaced code indices; an error if the
    /// codebook's values cannot be read back.
    pub fn replace_dead_codes(
        self,
        counts: &[usize],
        min_count: f32,
        noise_scale: f32,
        candidates: Option<&[f32]>,
        mut pick: impl FnMut(usize) -> usize,
        mut normal: impl FnMut() -> f32,
    ) -> Result<(Self, Vec<usize>), NsvqError> {
        let used: Vec<usize> = (0..self.codebook_size).filter(|&k| counts.get(k).copied().unwrap_or(0) as f32 >= min_count).collect();
        let dead: Vec<usize> = (0..self.codebook_size).filter(|k| !used.contains(k)).collect();
        if dead.is_empty() || used.is_empty() {
            return Ok((self, Vec::new()));
        }
        let value = self.codebook.val();
        let device = value.device();
        let require_grad = value.is_require_grad();
        let mut data: Vec<f32> = value.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| NsvqError::CodebookData(format!("{e:?}")))?;
        let d = self.code_dim;
        if data.len() != self.codebook_size * d {
            return Err(NsvqError::CodebookShape { got: data.len(), codebook_size: self.codebook_size, code_dim: d });
        }
        for &k in &dead {
            let src: Vec<f32> = match candidates {
                Some(c) if c.len() >= d => {
                    let r = pick(c.len() / d) % (c.len() / d);
                    c[r * d..(r + 1) * d].to_vec()
                }
                _ => {
                    let u = used[pick(used.len()) % used.len()];
                    data[u * d..(u + 1) * d].to_vec()
                }
            };
            for j in 0..d {
                data[k * d + j] = src[j] + noise_scale * normal();
            }
        }
        let id = self.codebook.id;
        let fresh = Tensor::<2>::from_data(TensorData::new(data, [self.codebook_size, d]), &device).set_require_grad(require_grad);
        Ok((Self { codebook: Param::initialized(id, fresh), ..self }, dead))
    }
}

/// Per-code usage counts of a flat index list.
pub fn code_counts(indices: &[i64], codebook_size: usize) -> Vec<usize> {
    let mut counts = vec![0usize; codebook_size];
    for &i in indices {
        if let Some(c) = usize::try_from(i).ok().and_then(|i| counts.get_mut(i)) {
            *c += 1;
        }
    }
    counts
}

/// Perplexity `exp(H)` of a usage histogram (1 = one code, `K` = uniform over `K`).
pub fn perplexity(counts: &[usize]) -> f64 {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum();
    h.exp()
}
