//! Transformer building blocks in the style of LAPA's C-ViViT (laq/laq_model/attention.py):
//! pre-norm attention with l2-normalised queries and keys (learned per-dimension scales, fixed
//! temperature), GEGLU feed-forward, and a depthwise-convolution position generator (PEG) that
//! makes the position code a function of the neighbourhood, so any image size works.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Device, Tensor};

/// Temperature applied to the cosine-similarity logits (LAPA: 8).
pub const QK_TEMPERATURE: f32 = 8.0;

#[derive(Config, Debug)]
pub struct AttentionConfig {
    pub dim: usize,
    pub heads: usize,
    pub dim_head: usize,
    /// Width of the context sequence for cross-attention (`None`: self-attention).
    pub context_dim: Option<usize>,
}

/// Multi-head attention with l2-normalised q/k.
#[derive(Module, Debug)]
pub struct Attention {
    norm: LayerNorm,
    norm_context: Option<LayerNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    q_scale: Param<Tensor<1>>,
    k_scale: Param<Tensor<1>>,
    heads: usize,
    dim_head: usize,
}

impl AttentionConfig {
    pub fn init(&self, device: &Device) -> Attention {
        let inner = self.heads * self.dim_head;
        let ctx = self.context_dim.unwrap_or(self.dim);
        Attention {
            norm: LayerNormConfig::new(self.dim).init(device),
            norm_context: self.context_dim.map(|c| LayerNormConfig::new(c).init(device)),
            to_q: LinearConfig::new(self.dim, inner).with_bias(false).init(device),
            to_k: LinearConfig::new(ctx, inner).with_bias(false).init(device),
            to_v: LinearConfig::new(ctx, inner).with_bias(false).init(device),
            to_out: LinearConfig::new(inner, self.dim).with_bias(false).init(device),
            q_scale: Param::from_tensor(Tensor::ones([self.dim_head], device)),
            k_scale: Param::from_tensor(Tensor::ones([self.dim_head], device)),
            heads: self.heads,
            dim_head: self.dim_head,
        }
    }
}

fn l2norm<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let n = x.clone().powi_scalar(2).sum_dim(D - 1).sqrt().clamp_min(1e-6);
    x / n
}

impl Attention {
    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, _] = x.dims();
        // [batch, tokens, heads*dim_head] -> [batch, heads, tokens, dim_head]
        x.reshape([b, n, self.heads, self.dim_head]).swap_dims(1, 2)
    }

    /// `x`: [batch, tokens, dim]; `context`: [batch, ctx_tokens, ctx_dim] for cross-attention.
    /// Returns the residual update, [batch, tokens, dim] (the caller adds it).
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>, causal: bool) -> Tensor<3> {
        let [b, n, _] = x.dims();
        let x = self.norm.forward(x);
        let kv_in = match (context, &self.norm_context) {
            (Some(c), Some(norm)) => norm.forward(c),
            (Some(c), None) => c,
            (None, _) => x.clone(),
        };
        let q = l2norm(self.split_heads(self.to_q.forward(x))); // [b, h, n, dh]
        let k = l2norm(self.split_heads(self.to_k.forward(kv_in.clone()))); // [b, h, m, dh]
        let v = self.split_heads(self.to_v.forward(kv_in)); // [b, h, m, dh]
        let q = q * self.q_scale.val().reshape([1, 1, 1, self.dim_head]);
        let k = k * self.k_scale.val().reshape([1, 1, 1, self.dim_head]);
        let m = k.dims()[2];
        let mut sim = q.matmul(k.swap_dims(2, 3)) * QK_TEMPERATURE; // [b, h, n, m]
        if causal {
            let mask = Tensor::<2, Bool>::tril_mask([n, m], 0, &sim.device()).reshape([1, 1, n, m]);
            sim = sim.mask_fill(mask, -1.0e4);
        }
        let attn = softmax(sim, 3);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([b, n, self.heads * self.dim_head]); // [b, n, h*dh]
        self.to_out.forward(out)
    }
}

#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    pub dim: usize,
    #[config(default = 4)]
    pub mult: usize,
}

/// Pre-norm GEGLU feed-forward: `W2 (a ⊙ gelu(g))` with `[a, g] = W1 x`.
#[derive(Module, Debug)]
pub struct FeedForward {
    norm: LayerNorm,
    proj_in: Linear,
    proj_out: Linear,
    inner: usize,
}

impl FeedForwardConfig {
    pub fn init(&self, device: &Device) -> FeedForward {
        // GEGLU keeps the parameter count of a plain `mult`× MLP with 2/3 of the width.
        let inner = (self.mult * self.dim * 2).div_ceil(3);
        FeedForward {
            norm: LayerNormConfig::new(self.dim).init(device),
            proj_in: LinearConfig::new(self.dim, inner * 2).with_bias(false).init(device),
            proj_out: LinearConfig::new(inner, self.dim).with_bias(false).init(device),
            inner,
        }
    }
}

impl FeedForward {
    /// [batch, tokens, dim] -> residual update [batch, tokens, dim].
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.proj_in.forward(self.norm.forward(x)); // [b, n, 2*inner]
        let [b, n, _] = h.dims();
        let a = h.clone().slice([0..b, 0..n, 0..self.inner]);
        let g = h.slice([0..b, 0..n, self.inner..2 * self.inner]);
        self.proj_out.forward(a * gelu(g))
    }
}

/// Position-encoding generator: a depthwise 3×3 convolution over the patch grid, added back.
#[derive(Module, Debug)]
pub struct Peg {
    conv: Conv2d,
}

impl Peg {
    pub fn new(dim: usize, device: &Device) -> Self {
        Self { conv: Conv2dConfig::new([dim, dim], [3, 3]).with_groups(dim).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device) }
    }

    /// `x`: [batch, grid_h*grid_w, dim] -> same shape, with position information mixed in.
    pub fn forward(&self, x: Tensor<3>, grid: [usize; 2]) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let img = x.clone().swap_dims(1, 2).reshape([b, d, grid[0], grid[1]]); // [b, d, gh, gw]
        let pos = self.conv.forward(img).reshape([b, d, n]).swap_dims(1, 2); // [b, n, d]
        x + pos
    }
}

#[derive(Config, Debug)]
pub struct TransformerConfig {
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub dim_head: usize,
    #[config(default = 4)]
    pub ff_mult: usize,
    /// Cross-attend to a context of this width in every layer.
    pub context_dim: Option<usize>,
    /// Causal self-attention (the temporal transformer).
    #[config(default = false)]
    pub causal: bool,
    /// Add a PEG before the first layer (spatial transformers).
    #[config(default = false)]
    pub peg: bool,
}

#[derive(Module, Debug)]
pub struct Layer {
    attn: Attention,
    cross: Option<Attention>,
    ff: FeedForward,
}

/// A stack of pre-norm layers with a final LayerNorm.
#[derive(Module, Debug)]
pub struct Transformer {
    peg: Option<Peg>,
    layers: Vec<Layer>,
    norm_out: LayerNorm,
    causal: bool,
}

impl TransformerConfig {
    pub fn init(&self, device: &Device) -> Transformer {
        let layers = (0..self.depth)
            .map(|_| Layer {
                attn: AttentionConfig::new(self.dim, self.heads, self.dim_head).init(device),
                cross: self.context_dim.map(|c| AttentionConfig::new(self.dim, self.heads, self.dim_head).with_context_dim(Some(c)).init(device)),
                ff: FeedForwardConfig::new(self.dim).with_mult(self.ff_mult).init(device),
            })
            .collect();
        Transformer { peg: self.peg.then(|| Peg::new(self.dim, device)), layers, norm_out: LayerNormConfig::new(self.dim).init(device), causal: self.causal }
    }
}

impl Transformer {
    /// `x`: [batch, tokens, dim]; `grid` is the patch grid when a PEG is used; `context`:
    /// [batch, ctx_tokens, ctx_dim] for cross-attention. Returns [batch, tokens, dim].
    pub fn forward(&self, mut x: Tensor<3>, grid: Option<[usize; 2]>, context: Option<Tensor<3>>) -> Tensor<3> {
        if let (Some(peg), Some(grid)) = (&self.peg, grid) {
            x = peg.forward(x, grid);
        }
        for layer in &self.layers {
            x = x.clone() + layer.attn.forward(x, None, self.causal);
            if let (Some(cross), Some(c)) = (&layer.cross, &context) {
                x = x.clone() + cross.forward(x, Some(c.clone()), false);
            }
            x = x.clone() + layer.ff.forward(x);
        }
        self.norm_out.forward(x)
    }
}
