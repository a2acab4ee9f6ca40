//! The latent action quantizer (LAPA stage 1), after LatentActionPretraining/LAPA `laq/`.
//!
//! ```text
//! x_t, x_{t+H} ─ patches ─ LN→Linear→LN ─ spatial transformer (per frame, PEG) ─ temporal
//!   transformer (causal, across the two frames) ─ d = enc(x_{t+H}) − enc(x_t)  [b, N, dim]
//!   ─ Linear(dim→code_dim) ─ conv3×3/2, ReLU, conv3×3, pool → n_tokens        [b, T, code_dim]
//!   ─ NSVQ (shared codebook) or FSQ (fixed levels) ─ Linear(code_dim→dim)
//!   = action tokens                                                           [b, T, dim]
//! decoder: stop-grad patch embeddings of x_t ─ spatial transformer cross-attending to the
//!   action tokens in every layer ─ LN → Linear → pixels of x_{t+H}; loss = MSE.
//! ```
//! Frames enter as patch vectors (`[batch, patches, patch*patch*3]`, values in [0, 1], patch
//! pixels in (row, column, channel) order) so that batching and augmentation stay on the loader
//! thread; [`patchify`] and [`unpatchify`] convert from and to HWC images.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor};

use crate::ModelError;
use crate::blocks::{Transformer, TransformerConfig};
use crate::fsq::Fsq;
use crate::nsvq::Nsvq;

/// Which quantizer turns the encoder's difference into latent-action tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantizerKind {
    /// NSVQ over a learned codebook of `codebook_size` codes (LAPA's).
    Nsvq,
    /// Finite scalar quantisation with `fsq_levels` (vocabulary = their product); no codebook.
    Fsq,
}

impl std::str::FromStr for QuantizerKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "nsvq" => Ok(Self::Nsvq),
            "fsq" => Ok(Self::Fsq),
            other => Err(ModelError::Config(format!("unknown quantizer {other:?} (expected nsvq or fsq)"))),
        }
    }
}

/// The quantizer module: one of the two kinds. (One exists per model; the size difference of the
/// variants does not matter.)
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Quantizer {
    Nsvq(Nsvq),
    Fsq(Fsq),
}

impl Quantizer {
    /// Training path: (codes [n, code_dim], indices [n]); `noise` is used by NSVQ only.
    pub fn forward_train(&self, z: Tensor<2>, noise: Tensor<2>) -> (Tensor<2>, Tensor<1, Int>) {
        match self {
            Quantizer::Nsvq(q) => q.forward_train(z, noise),
            Quantizer::Fsq(q) => q.forward_train(z),
        }
    }

    /// Inference path: (codes, indices).
    pub fn forward_eval(&self, z: Tensor<2>) -> (Tensor<2>, Tensor<1, Int>) {
        match self {
            Quantizer::Nsvq(q) => q.forward_eval(z),
            Quantizer::Fsq(q) => q.forward_eval(z),
        }
    }

    /// Codes for token indices: [n] → [n, code_dim].
    pub fn lookup(&self, idx: Tensor<1, Int>) -> Tensor<2> {
        match self {
            Quantizer::Nsvq(q) => q.lookup(idx),
            Quantizer::Fsq(q) => q.lookup(idx),
        }
    }

    /// Classes a latent token can take.
    pub fn vocabulary(&self) -> usize {
        match self {
            Quantizer::Nsvq(q) => q.codebook_size,
            Quantizer::Fsq(q) => q.vocabulary(),
        }
    }
}

/// Every size of the LAQ; saved as `config.json` beside the weights.
#[derive(Config, Debug, PartialEq)]
pub struct LaqConfig {
    /// Square input side in pixels.
    pub image_size: usize,
    /// Square patch side in pixels (`image_size` must be a multiple).
    pub patch_size: usize,
    pub dim: usize,
    pub heads: usize,
    pub dim_head: usize,
    pub spatial_depth: usize,
    pub temporal_depth: usize,
    pub decoder_depth: usize,
    #[config(default = 4)]
    pub ff_mult: usize,
    /// Width of a latent code (LAPA: 32).
    #[config(default = 32)]
    pub code_dim: usize,
    /// Codes in the shared codebook (LAPA: 8). NSVQ only.
    #[config(default = 8)]
    pub codebook_size: usize,
    /// Latent tokens per frame pair, a square number: 1, 4 (LAPA's 2×2 pooling), 16 (no pooling
    /// at 8×8 patches).
    #[config(default = 4)]
    pub n_tokens: usize,
    /// `nsvq` (LAPA, the default of every preset) or `fsq`.
    #[config(default = "QuantizerKind::Nsvq")]
    pub quantizer: QuantizerKind,
    /// FSQ levels per dimension (the FSQ paper's sets: [8, 5, 5, 5], [8, 6, 5], [7, 5, 5, 5, 5]).
    #[config(default = "vec![8, 5, 5, 5]")]
    pub fsq_levels: Vec<usize>,
}

impl LaqConfig {
    /// Unit tests and the README's quick start: 32×32 frames, seconds on a CPU.
    pub fn tiny() -> Self {
        Self::new(32, 8, 64, 4, 16, 1, 1, 1)
    }

    /// The CPU benchmark on the simulator's 64×64 frames (8×8 patches of 8 px).
    pub fn small() -> Self {
        Self::new(64, 8, 128, 4, 32, 2, 2, 2)
    }

    /// Between `small` and `paper` for GPU runs on the simulator's 64×64 frames: dim 512, 4+4
    /// encoder and 4 decoder layers, 8 heads (about 30× the compute of `small`).
    pub fn base() -> Self {
        Self::new(64, 8, 512, 8, 64, 4, 4, 4)
    }

    /// LAPA's published sizes: 256², patch 32, dim 1024, 8+8 encoder and 8 decoder layers, 16 heads
    /// of 64. About 300M parameters; GPU only.
    pub fn paper() -> Self {
        Self::new(256, 32, 1024, 16, 64, 8, 8, 8)
    }

    pub fn preset(name: &str) -> Result<Self, ModelError> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "base" => Ok(Self::base()),
            "paper" => Ok(Self::paper()),
            other => Err(ModelError::Config(format!("unknown LAQ preset {other:?} (expected tiny, small, base or paper)"))),
        }
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn n_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Values per patch vector (`patch² · 3`).
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * 3
    }

    /// Classes each latent token has: the codebook size (NSVQ) or the product of the levels (FSQ).
    /// Everything downstream reads this, never a constant.
    pub fn vocabulary(&self) -> usize {
        match self.quantizer {
            QuantizerKind::Nsvq => self.codebook_size,
            QuantizerKind::Fsq => self.fsq_levels.iter().product(),
        }
    }

    /// Side of the latent token grid.
    pub fn token_grid(&self) -> usize {
        (self.n_tokens as f64).sqrt().round() as usize
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.patch_size == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!("image_size {} must be a positive multiple of patch_size {}", self.image_size, self.patch_size));
        }
        let s = self.token_grid();
        if self.n_tokens == 0 || s * s != self.n_tokens {
            return bad(format!("n_tokens {} must be a square number (1, 4, 9, …)", self.n_tokens));
        }
        if s > self.grid().div_ceil(2) {
            return bad(format!("n_tokens {} needs a token grid {s}×{s} no larger than half the patch grid {}", self.n_tokens, self.grid()));
        }
        if self.codebook_size < 2 || self.code_dim == 0 || self.dim == 0 || self.heads == 0 || self.dim_head == 0 {
            return bad("codebook_size ≥ 2 and positive code_dim, dim, heads, dim_head are required".into());
        }
        if self.quantizer == QuantizerKind::Fsq {
            crate::fsq::vocabulary(&self.fsq_levels).map_err(|e| ModelError::Config(e.to_string()))?;
        }
        Ok(())
    }

    pub fn init(&self, device: &Device) -> Result<Laq, ModelError> {
        self.validate()?;
        let d = self.dim;
        let spatial = |peg, context| {
            TransformerConfig::new(d, self.spatial_depth, self.heads, self.dim_head).with_ff_mult(self.ff_mult).with_peg(peg).with_context_dim(context)
        };
        let c = self.code_dim;
        let s = self.token_grid();
        Ok(Laq {
            patch_norm_in: LayerNormConfig::new(self.patch_dim()).init(device),
            patch_proj: LinearConfig::new(self.patch_dim(), d).init(device),
            patch_norm_out: LayerNormConfig::new(d).init(device),
            enc_spatial: spatial(true, None).init(device),
            enc_temporal: TransformerConfig::new(d, self.temporal_depth, self.heads, self.dim_head).with_ff_mult(self.ff_mult).with_causal(true).init(device),
            frame_pos: burn::module::Param::from_tensor(Tensor::zeros([2, d], device)),
            to_code: LinearConfig::new(d, c).init(device),
            reduce_1: Conv2dConfig::new([c, c], [3, 3]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device),
            reduce_2: Conv2dConfig::new([c, c], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device),
            pool: AdaptiveAvgPool2dConfig::new([s, s]).init(),
            quantizer: match self.quantizer {
                QuantizerKind::Nsvq => Quantizer::Nsvq(Nsvq::new(self.codebook_size, c, device)),
                QuantizerKind::Fsq => Quantizer::Fsq(Fsq::new(&self.fsq_levels, c, device).map_err(|e| ModelError::Config(e.to_string()))?),
            },
            from_code: LinearConfig::new(c, d).init(device),
            decoder: TransformerConfig::new(d, self.decoder_depth, self.heads, self.dim_head)
                .with_ff_mult(self.ff_mult)
                .with_peg(true)
                .with_context_dim(Some(d))
                .init(device),
            to_pixels: LinearConfig::new(d, self.patch_dim()).init(device),
            grid: self.grid(),
            n_tokens: self.n_tokens,
            code_dim: c,
            dim: d,
        })
    }
}

/// The LAQ model. Built from a [`LaqConfig`]; see the module docs for the data flow.
#[derive(Module, Debug)]
pub struct Laq {
    patch_norm_in: LayerNorm,
    patch_proj: Linear,
    patch_norm_out: LayerNorm,
    enc_spatial: Transformer,
    enc_temporal: Transformer,
    /// Learned embedding of the frame slot (x_t, x_{t+H}) for the temporal transformer.
    frame_pos: burn::module::Param<Tensor<2>>,
    to_code: Linear,
    reduce_1: Conv2d,
    reduce_2: Conv2d,
    pool: AdaptiveAvgPool2d,
    pub quantizer: Quantizer,
    from_code: Linear,
    decoder: Transformer,
    to_pixels: Linear,
    grid: usize,
    n_tokens: usize,
    code_dim: usize,
    dim: usize,
}

/// What a training step needs from the forward pass.
#[derive(Debug)]
pub struct LaqStep {
    /// Scalar pixel MSE on x_{t+H}.
    pub loss: Tensor<1>,
    /// Predicted patches of x_{t+H}: [batch, patches, patch_dim].
    pub recon: Tensor<3>,
    /// Nearest-code index per latent token: [batch, n_tokens].
    pub indices: Tensor<2, Int>,
    /// Pre-quantisation latents, detached: [batch · n_tokens, code_dim] (for dead-code re-seeding).
    pub latents: Tensor<2>,
    /// The quantized latents the decoder read, [batch · n_tokens, code_dim], with their gradient
    /// path to the encoder (for an auxiliary head trained beside the reconstruction).
    pub quantized: Tensor<2>,
}

impl Laq {
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    pub fn code_dim(&self) -> usize {
        self.code_dim
    }

    fn embed(&self, patches: Tensor<3>) -> Tensor<3> {
        // [b, N, patch_dim] -> [b, N, dim]
        self.patch_norm_out.forward(self.patch_proj.forward(self.patch_norm_in.forward(patches)))
    }

    /// Encoder up to the pre-quantisation latents: [b, N, patch_dim] ×2 -> [b*T, code_dim].
    pub fn encode_latents(&self, first: Tensor<3>, second: Tensor<3>) -> Tensor<2> {
        let [b, n, _] = first.dims();
        let g = [self.grid, self.grid];
        let frames = Tensor::cat(vec![self.embed(first), self.embed(second)], 0); // [2b, N, dim]
        let frames = self.enc_spatial.forward(frames, Some(g), None); // [2b, N, dim]
        // [2b, N, d] -> [2, b, N, d] -> [b, N, 2, d] -> [b*N, 2, d]
        let seq = frames.reshape([2, b, n, self.dim]).permute([1, 2, 0, 3]).reshape([b * n, 2, self.dim]);
        let seq = seq + self.frame_pos.val().reshape([1, 2, self.dim]);
        let seq = self.enc_temporal.forward(seq, None, None).reshape([b, n, 2, self.dim]); // [b, N, 2, d]
        let slot = |i: usize| seq.clone().slice([0..b, 0..n, i..i + 1, 0..self.dim]).reshape([b, n, self.dim]);
        let diff = slot(1) - slot(0); // [b, N, dim]
        let code = self.to_code.forward(diff); // [b, N, c]
        let img = code.swap_dims(1, 2).reshape([b, self.code_dim, self.grid, self.grid]); // [b, c, g, g]
        let red = self.reduce_2.forward(relu(self.reduce_1.forward(img))); // [b, c, g/2, g/2]
        let tok = self.pool.forward(red).reshape([b, self.code_dim, self.n_tokens]).swap_dims(1, 2); // [b, T, c]
        tok.reshape([b * self.n_tokens, self.code_dim])
    }

    /// Decoder: stop-gradient embeddings of x_t cross-attending to action tokens [b, T, dim].
    /// Returns predicted patches of x_{t+H}: [b, N, patch_dim].
    pub fn decode(&self, first: Tensor<3>, action_tokens: Tensor<3>) -> Tensor<3> {
        let ctx = self.embed(first).detach(); // [b, N, dim]
        let h = self.decoder.forward(ctx, Some([self.grid, self.grid]), Some(action_tokens));
        self.to_pixels.forward(h)
    }

    fn tokens_from_codes(&self, codes: Tensor<2>, b: usize) -> Tensor<3> {
        // [b*T, c] -> [b, T, dim]
        self.from_code.forward(codes.reshape([b, self.n_tokens, self.code_dim]))
    }

    /// Training forward: `noise` is [b*T, code_dim] standard normal (drawn by the caller so that
    /// runs are reproducible and resumable).
    pub fn forward_train(&self, first: Tensor<3>, second: Tensor<3>, noise: Tensor<2>) -> LaqStep {
        let b = first.dims()[0];
        let z = self.encode_latents(first.clone(), second.clone());
        let latents = z.clone().detach();
        let (zq, idx) = self.quantizer.forward_train(z, noise);
        let recon = self.decode(first, self.tokens_from_codes(zq.clone(), b));
        let loss = (recon.clone() - second).powi_scalar(2).mean();
        LaqStep { loss, recon, indices: idx.reshape([b, self.n_tokens]), latents, quantized: zq }
    }

    /// Latent action of each pair (nearest codes): [b, n_tokens] indices.
    pub fn encode_indices(&self, first: Tensor<3>, second: Tensor<3>) -> Tensor<2, Int> {
        let b = first.dims()[0];
        let (_, idx) = self.quantizer.forward_eval(self.encode_latents(first, second));
        idx.reshape([b, self.n_tokens])
    }

    /// Decodes x_{t+H} from x_t and given latent action indices [b, n_tokens].
    pub fn decode_indices(&self, first: Tensor<3>, indices: Tensor<2, Int>) -> Tensor<3> {
        let b = first.dims()[0];
        let codes = self.quantizer.lookup(indices.reshape([b * self.n_tokens]));
        self.decode(first, self.tokens_from_codes(codes, b))
    }

    /// Inference reconstruction with the nearest codes: (patches [b, N, patch_dim], indices).
    pub fn reconstruct(&self, first: Tensor<3>, second: Tensor<3>) -> (Tensor<3>, Tensor<2, Int>) {
        let idx = self.encode_indices(first.clone(), second);
        (self.decode_indices(first, idx.clone()), idx)
    }
}

/// HWC u8 image (`side × side × 3`) into patch vectors in [0, 1]: `side²/p² × p²·3` floats,
/// appended to `out`.
pub fn patchify(img: &[u8], side: usize, patch: usize, out: &mut Vec<f32>) {
    let g = side / patch;
    for gy in 0..g {
        for gx in 0..g {
            for py in 0..patch {
                let row = (gy * patch + py) * side + gx * patch;
                for &v in &img[row * 3..(row + patch) * 3] {
                    out.push(f32::from(v) / 255.0);
                }
            }
        }
    }
}

/// Like [`patchify`] for several frames of one side, stacked patch by patch: patch k of the
/// output is patch k of every frame in turn, `[patches, frames · patch² · 3]`.
pub fn patchify_stacked(frames: &[&[u8]], side: usize, patch: usize, out: &mut Vec<f32>) {
    let g = side / patch;
    for gy in 0..g {
        for gx in 0..g {
            for img in frames {
                for py in 0..patch {
                    let row = (gy * patch + py) * side + gx * patch;
                    for &v in &img[row * 3..(row + patch) * 3] {
                        out.push(f32::from(v) / 255.0);
                    }
                }
            }
        }
    }
}

/// Patch vectors (one image) back to HWC u8, clamping to [0, 1].
pub fn unpatchify(patches: &[f32], side: usize, patch: usize) -> Vec<u8> {
    let g = side / patch;
    let mut img = vec![0u8; side * side * 3];
    let pd = patch * patch * 3;
    for gy in 0..g {
        for gx in 0..g {
            let src = &patches[(gy * g + gx) * pd..(gy * g + gx + 1) * pd];
            for py in 0..patch {
                let row = (gy * patch + py) * side + gx * patch;
                for (k, v) in src[py * patch * 3..(py + 1) * patch * 3].iter().enumerate() {
                    img[row * 3 + k] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    img
}
