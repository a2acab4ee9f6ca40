//! The latent vision-language-action policy (LAPA stages 2 and 3).
//!
//! ```text
//! instruction ─ text encoder ──────────────────────────────► 1 token  ┐
//! frame x_t ─ patches ─ LN → Linear → LN, + learned positions ► N tokens ├ transformer ─ queries ─ head
//! state (optional) ─ standardise ─ Linear ──────────────────► 1 token  │   (pre-norm, full
//! head queries (learned) ───────────────────────────────────► Q tokens ┘    self-attention)
//! ```
//! Heads, read at the query tokens, all giving logits `[batch, targets, classes]`:
//! - latent: one query and one classifier per latent-action token over the LAQ's vocabulary
//!   (predicted in parallel; the sizes come from the LAQ's labels, never a constant);
//! - action: one query per future action of the chunk, each giving per-dimension logits over
//!   quantile bins ([`crate::bins`]); targets are absolute or deltas from the current state.
//!
//! and one regression head, the LAPA table's ablation (a departure from LAPA, after LAPO):
//! - continuous: one query per latent token regressing the LAQ's continuous pre-quantisation
//!   latent of that token, standardised per dimension (`[batch, tokens, dim]`, trained by
//!   [`Vla::mse_loss`]).
//!
//! Finetuning replaces the latent head by a freshly initialised action head
//! ([`Vla::with_head`]); the trunk keeps its weights, as in LAPA.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::bins::QuantileBins;
use crate::blocks::{Transformer, TransformerConfig};
use crate::policy::ActionSpec;
use crate::text::TextConfig;

/// What the action head's targets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionTarget {
    /// The commanded joint positions themselves.
    Absolute,
    /// The commanded positions minus the measured state at the observation.
    Delta,
}

/// Standardisation of the proprioceptive state token (from the training data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateInput {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl StateInput {
    /// `(raw − mean) / std` per value: the state token's input (`raw` in the arm's units).
    pub fn standardise<'a>(&'a self, raw: &'a [f32]) -> impl Iterator<Item = f32> + 'a {
        raw.iter().zip(&self.mean).zip(&self.std).map(|((v, m), sd)| (v - m) / sd)
    }
}

/// The action head: a chunk of `spec.chunk` actions, each dimension over its quantile bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionHeadConfig {
    pub spec: ActionSpec,
    pub target: ActionTarget,
    /// Bins per dimension (LAPA: 256).
    pub bins: usize,
    /// One set of bins per action dimension (in `spec.names` order).
    pub edges: Vec<QuantileBins>,
}

/// Which head the policy carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HeadConfig {
    /// `tokens` latent-action tokens, each over `vocabulary` classes.
    Latent {
        tokens: usize,
        vocabulary: usize,
    },
    Action(ActionHeadConfig),
    /// `tokens` latent tokens, each a `dim`-vector: the LAQ's pre-quantisation latent,
    /// standardised with `mean` and `std` (`tokens · dim` each, token-major; from the
    /// pretraining labels) — the output times `std` plus `mean` is the LAQ's latent.
    Continuous {
        tokens: usize,
        dim: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    },
}

impl HeadConfig {
    /// (targets, classes) of the logits; for the continuous head (tokens, values per token).
    pub fn logits_shape(&self) -> (usize, usize) {
        match self {
            Self::Latent { tokens, vocabulary } => (*tokens, *vocabulary),
            Self::Continuous { tokens, dim, .. } => (*tokens, *dim),
            Self::Action(a) => (a.spec.chunk * a.spec.names.len(), a.bins),
        }
    }

    /// Query tokens of the head.
    pub fn queries(&self) -> usize {
        match self {
            Self::Latent { tokens, .. } | Self::Continuous { tokens, .. } => *tokens,
            Self::Action(a) => a.spec.chunk,
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(format!("head: {m}")));
        match self {
            Self::Latent { tokens, vocabulary } => {
                if !(1..=256).contains(tokens) || !(2..=1 << 20).contains(vocabulary) {
                    return bad(format!("latent tokens {tokens} must be in 1..=256 and vocabulary {vocabulary} in 2..=2^20"));
                }
            }
            Self::Continuous { tokens, dim, mean, std } => {
                if !(1..=256).contains(tokens) || !(1..=4096).contains(dim) {
                    return bad(format!("continuous latent: tokens {tokens} must be in 1..=256 and dim {dim} in 1..=4096"));
                }
                if mean.len() != tokens * dim || std.len() != tokens * dim {
                    return bad(format!("continuous latent: {} means and {} standard deviations for {tokens} × {dim} values", mean.len(), std.len()));
                }
                if mean.iter().chain(std).any(|v| !v.is_finite()) || std.iter().any(|&v| v <= 0.0) {
                    return bad("continuous latent: means must be finite and standard deviations positive".into());
                }
            }
            Self::Action(a) => {
                a.spec.validate().map_err(|e| ModelError::Config(format!("head: {e}")))?;
                if !(2..=4096).contains(&a.bins) {
                    return bad(format!("bins {} must be in 2..=4096", a.bins));
                }
                if a.edges.len() != a.spec.names.len() {
                    return bad(format!("{} sets of bin edges for {} action dimensions", a.edges.len(), a.spec.names.len()));
                }
                for (name, e) in a.spec.names.iter().zip(&a.edges) {
                    e.validate().map_err(|m| ModelError::Config(format!("head: bins of {name}: {m}")))?;
                    if e.bins() != a.bins {
                        return bad(format!("bins of {name}: {} bins, the head has {}", e.bins(), a.bins));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Every size of the policy; saved as `config.json` beside the weights.
#[derive(Config, Debug, PartialEq)]
pub struct VlaConfig {
    /// Square input side in pixels.
    pub image_size: usize,
    /// Square patch side (`image_size` must be a multiple).
    pub patch_size: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub dim_head: usize,
    #[config(default = 4)]
    pub ff_mult: usize,
    pub text: TextConfig,
    /// Proprioceptive state token (`None`: the policy sees no state, as video-only pretraining
    /// data has none).
    #[config(default = "None")]
    pub state: Option<StateInput>,
    pub head: HeadConfig,
    /// Frames per observation, stacked patch by patch: 1 for a policy; 2 for the VPT
    /// inverse-dynamics model, which sees x_t and x_{t+1} and predicts the action between them.
    #[config(default = 1)]
    pub frames: usize,
}

/// Multiply-adds of a linear layer over `tokens` tokens, as FLOPs (2 per multiply-add).
fn linear_flops(tokens: usize, i: usize, o: usize) -> u64 {
    2 * (tokens * i * o) as u64
}

impl VlaConfig {
    /// Tests and the README's quick start: seconds per hundred steps on a CPU.
    pub fn tiny(head: HeadConfig) -> Self {
        Self::new(64, 16, 64, 2, 2, 32, TextConfig::Hashed { buckets: 512, max_words: 32 }, head)
    }

    /// The board-sized policy: 64 image tokens, 4 layers of width 192, the frozen
    /// all-MiniLM-L6-v2 sentence encoder.
    pub fn small(head: HeadConfig) -> Self {
        Self::new(64, 8, 192, 4, 4, 48, TextConfig::minilm(), head)
    }

    /// A larger trunk for GPU runs: 6 layers of width 384.
    pub fn base(head: HeadConfig) -> Self {
        Self::new(64, 8, 384, 6, 6, 64, TextConfig::minilm(), head)
    }

    pub fn preset(name: &str, head: HeadConfig) -> Result<Self, ModelError> {
        match name {
            "tiny" => Ok(Self::tiny(head)),
            "small" => Ok(Self::small(head)),
            "base" => Ok(Self::base(head)),
            other => Err(ModelError::Config(format!("unknown policy preset {other:?} (expected tiny, small or base)"))),
        }
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn n_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Values per image token: `frames` RGB patches side by side.
    pub fn patch_dim(&self) -> usize {
        self.frames * self.patch_size * self.patch_size * 3
    }

    pub fn state_dim(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.mean.len())
    }

    /// Tokens the trunk attends over: instruction, image, state, queries.
    pub fn sequence(&self) -> usize {
        1 + self.n_patches() + usize::from(self.state.is_some()) + self.head.queries()
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.patch_size == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!("image_size {} must be a positive multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.image_size > crate::policy::MAX_CAMERA_SIDE {
            return bad(format!("image_size {} is larger than {}", self.image_size, crate::policy::MAX_CAMERA_SIDE));
        }
        if !(1..=8).contains(&self.frames) {
            return bad(format!("frames {} must be in 1..=8", self.frames));
        }
        if self.dim == 0 || self.depth == 0 || self.heads == 0 || self.dim_head == 0 || self.ff_mult == 0 {
            return bad("dim, depth, heads, dim_head and ff_mult must be positive".into());
        }
        // Far above any policy a board runs; they keep every size product (heads × dim_head,
        // ff_mult × dim, …) of a config read from a file inside usize and memory.
        for (name, v, max) in [
            ("dim", self.dim, 16384),
            ("depth", self.depth, 1024),
            ("heads", self.heads, 1024),
            ("dim_head", self.dim_head, 4096),
            ("ff_mult", self.ff_mult, 64),
        ] {
            if v > max {
                return bad(format!("{name} {v} is larger than {max}"));
            }
        }
        self.text.validate()?;
        if let Some(s) = &self.state {
            if s.mean.is_empty() || s.mean.len() != s.std.len() || s.mean.len() > 1024 {
                return bad(format!("state: {} means and {} standard deviations (1..=1024 each, equal)", s.mean.len(), s.std.len()));
            }
            if s.mean.iter().chain(&s.std).any(|v| !v.is_finite()) || s.std.iter().any(|&v| v <= 0.0) {
                return bad("state: means must be finite and standard deviations positive".into());
            }
        }
        self.head.validate()
    }

    /// Floating-point operations of one forward pass for one observation (matrix products;
    /// norms and activations are a few percent more).
    pub fn flops(&self) -> u64 {
        let n = self.sequence();
        let (d, inner) = (self.dim, self.heads * self.dim_head);
        let ff = (self.ff_mult * d * 2).div_ceil(3);
        let per_layer =
            linear_flops(n, d, 3 * inner) + 2 * 2 * (n * n * inner) as u64 + linear_flops(n, inner, d) + linear_flops(n, d, 2 * ff) + linear_flops(n, ff, d);
        // A frozen text encoder runs once per instruction, not per step: only its projection counts.
        let stem = linear_flops(self.n_patches(), self.patch_dim(), d)
            + linear_flops(1, self.state_dim(), d)
            + linear_flops(1, self.text.frozen_dim().unwrap_or(0), d);
        let (t, c) = self.head.logits_shape();
        let head = match &self.head {
            HeadConfig::Latent { .. } | HeadConfig::Continuous { .. } => linear_flops(t, d, c),
            HeadConfig::Action(a) => linear_flops(a.spec.chunk, d, a.spec.names.len() * a.bins),
        };
        stem + self.depth as u64 * per_layer + head
    }

    pub fn init(&self, device: &Device) -> Result<Vla, ModelError> {
        self.validate()?;
        let d = self.dim;
        let text = match self.text {
            TextConfig::Hashed { buckets, .. } => TextEncoder::Hashed(EmbeddingConfig::new(buckets, d).init(device)),
            TextConfig::MiniLm { dim, .. } => TextEncoder::Frozen(LinearConfig::new(dim, d).init(device)),
        };
        Ok(Vla {
            patch_norm: LayerNormConfig::new(self.patch_dim()).init(device),
            patch_proj: LinearConfig::new(self.patch_dim(), d).init(device),
            embed_norm: LayerNormConfig::new(d).init(device),
            pos: Param::from_tensor(Tensor::random([self.n_patches(), d], Distribution::Normal(0.0, 0.02), device)),
            kinds: Param::from_tensor(Tensor::random([3, d], Distribution::Normal(0.0, 0.02), device)),
            text,
            state_proj: self.state.as_ref().map(|s| LinearConfig::new(s.mean.len(), d).init(device)),
            trunk: TransformerConfig::new(d, self.depth, self.heads, self.dim_head).with_ff_mult(self.ff_mult).init(device),
            head: init_head(&self.head, d, device),
            n_patches: self.n_patches(),
            dim: d,
        })
    }
}

fn init_head(cfg: &HeadConfig, dim: usize, device: &Device) -> Head {
    let queries = Param::from_tensor(Tensor::random([cfg.queries(), dim], Distribution::Normal(0.0, 0.02), device));
    match cfg {
        HeadConfig::Latent { tokens, vocabulary } => {
            Head::Latent(LatentHead { queries, out: (0..*tokens).map(|_| LinearConfig::new(dim, *vocabulary).init(device)).collect() })
        }
        HeadConfig::Continuous { tokens, dim: c, .. } => {
            Head::Continuous(LatentHead { queries, out: (0..*tokens).map(|_| LinearConfig::new(dim, *c).init(device)).collect() })
        }
        HeadConfig::Action(a) => {
            Head::Action(ActionHead { queries, out: LinearConfig::new(dim, a.spec.names.len() * a.bins).init(device), dims: a.spec.names.len(), bins: a.bins })
        }
    }
}

/// The instruction's encoder.
#[derive(Module, Debug)]
pub enum TextEncoder {
    /// Mean of the learned embeddings of the hashed words and bigrams.
    Hashed(Embedding),
    /// A learned projection of a frozen encoder's sentence embedding (computed outside the
    /// module, once per instruction).
    Frozen(Linear),
}

#[derive(Module, Debug)]
pub struct LatentHead {
    queries: Param<Tensor<2>>,
    /// One classifier (or, in the continuous head, one regressor) per latent token.
    out: Vec<Linear>,
}

#[derive(Module, Debug)]
pub struct ActionHead {
    queries: Param<Tensor<2>>,
    out: Linear,
    dims: usize,
    bins: usize,
}

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Head {
    Latent(LatentHead),
    Action(ActionHead),
    Continuous(LatentHead),
}

/// The policy module.
#[derive(Module, Debug)]
pub struct Vla {
    patch_norm: LayerNorm,
    patch_proj: Linear,
    embed_norm: LayerNorm,
    /// Learned position of each image patch, [patches, dim].
    pos: Param<Tensor<2>>,
    /// Learned kind embeddings of the instruction, state and query tokens, [3, dim].
    kinds: Param<Tensor<2>>,
    text: TextEncoder,
    state_proj: Option<Linear>,
    trunk: Transformer,
    head: Head,
    n_patches: usize,
    dim: usize,
}

/// The instruction, as the policy's text encoder takes it. (One per forward pass: the size
/// difference of the variants does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum TextInput {
    /// Hashed text: ids [batch, max_ids] and their weights [batch, max_ids].
    Hashed { ids: Tensor<2, Int>, weights: Tensor<2> },
    /// A frozen encoder's sentence embeddings [batch, text_dim].
    Embedded(Tensor<2>),
}

/// One batch of inputs, host side already turned into tensors.
#[derive(Debug, Clone)]
pub struct VlaInput {
    /// [batch, patches, patch_dim], values in [0, 1].
    pub patches: Tensor<3>,
    pub text: TextInput,
    /// [batch, state_dim], already standardised; required when the config has a state token.
    pub state: Option<Tensor<2>>,
}

impl Vla {
    fn kind(&self, k: usize, b: usize) -> Tensor<3> {
        self.kinds.val().slice([k..k + 1, 0..self.dim]).unsqueeze::<3>().repeat_dim(0, b) // [b, 1, dim]
    }

    /// The instruction, image and (optional) state tokens the trunk attends over, in order.
    fn context_tokens(&self, input: VlaInput) -> Vec<Tensor<3>> {
        let [b, n, _] = input.patches.dims();
        debug_assert_eq!(n, self.n_patches);
        let img = self.embed_norm.forward(self.patch_proj.forward(self.patch_norm.forward(input.patches))); // [b, N, dim]
        let img = img + self.pos.val().unsqueeze::<3>(); // [b, N, dim]
        let text = match (&self.text, input.text) {
            (TextEncoder::Hashed(emb), TextInput::Hashed { ids, weights }) => {
                let e = emb.forward(ids); // [b, L, dim]
                (e * weights.unsqueeze_dim::<3>(2)).sum_dim(1) // [b, 1, dim]
            }
            (TextEncoder::Frozen(proj), TextInput::Embedded(e)) => proj.forward(e).unsqueeze_dim::<3>(1), // [b, 1, dim]
            _ => panic!("the text input does not match the policy's text encoder (a caller bug: build inputs from the config)"),
        };
        let mut parts = vec![text + self.kind(0, b), img];
        if let (Some(proj), Some(s)) = (&self.state_proj, input.state) {
            parts.push(proj.forward(s).unsqueeze_dim::<3>(1) + self.kind(1, b)); // [b, 1, dim]
        }
        parts
    }

    /// Logits `[batch, targets, classes]` (see [`HeadConfig::logits_shape`]).
    pub fn forward(&self, input: VlaInput) -> Tensor<3> {
        let b = input.patches.dims()[0];
        let mut parts = self.context_tokens(input);
        let queries = match &self.head {
            Head::Latent(h) | Head::Continuous(h) => h.queries.val(),
            Head::Action(h) => h.queries.val(),
        };
        let q = queries.dims()[0];
        parts.push(queries.unsqueeze::<3>().repeat_dim(0, b) + self.kind(2, b)); // [b, Q, dim]
        let x = self.trunk.forward(Tensor::cat(parts, 1), None, None); // [b, S, dim]
        let s = x.dims()[1];
        let out = x.slice([0..b, s - q..s, 0..self.dim]); // [b, Q, dim]
        match &self.head {
            Head::Latent(h) | Head::Continuous(h) => {
                let per: Vec<Tensor<3>> = h.out.iter().enumerate().map(|(i, lin)| lin.forward(out.clone().slice([0..b, i..i + 1, 0..self.dim]))).collect();
                Tensor::cat(per, 1) // [b, tokens, vocabulary] (continuous: [b, tokens, dim])
            }
            Head::Action(h) => h.out.forward(out).reshape([b, q * h.dims, h.bins]), // [b, chunk·dims, bins]
        }
    }

    /// The trunk's output over the instruction, image and state tokens alone (no head queries):
    /// what the pretrained part of the policy computes, independent of its head. [b, S, dim]
    pub fn encode_context(&self, input: VlaInput) -> Tensor<3> {
        self.trunk.forward(Tensor::cat(self.context_tokens(input), 1), None, None)
    }

    /// Mean cross-entropy of `logits` [b, targets, classes] against `targets` [b, targets],
    /// counting only the entries where `mask` [b, targets] is 1.
    pub fn loss(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
        let logp = log_softmax(logits, 2); // [b, t, c]
        let picked = logp.gather(2, targets.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2); // [b, t]
        let count = mask.clone().sum().clamp_min(1.0);
        -(picked * mask).sum() / count
    }

    /// Knowledge distillation (Hinton et al., 2015): the mean over targets of
    /// KL(teacher ‖ student) between the teacher's class probabilities at `temperature`
    /// [b, t, c] (softmax of its logits / T) and the student's logits [b, t, c] softened alike,
    /// times T² so that its gradients keep the scale of a cross-entropy as T changes. Zero where
    /// the student matches the teacher; every target weighs the same (labeled or not).
    pub fn distill_loss(logits: Tensor<3>, teacher_probs: Tensor<3>, temperature: f32) -> Tensor<1> {
        let [b, t, _] = logits.dims();
        let logq = log_softmax(logits / temperature, 2); // [b, t, c]
        let logp = teacher_probs.clone().clamp_min(1e-12).log(); // [b, t, c]
        let kl = (teacher_probs * (logp - logq)).sum(); // Σ over b, t, c
        kl * (temperature * temperature / (b * t).max(1) as f32)
    }

    /// Mean squared error of the continuous head's output [b, tokens, dim] against the
    /// standardised latents [b, tokens, dim].
    pub fn mse_loss(pred: Tensor<3>, target: Tensor<3>) -> Tensor<1> {
        (pred - target).powi_scalar(2).mean()
    }

    /// The same trunk with a freshly initialised head (LAPA's head swap before finetuning).
    pub fn with_head(mut self, cfg: &HeadConfig, device: &Device) -> Self {
        self.head = init_head(cfg, self.dim, device);
        self
    }

    /// The same model with a state token added (newly initialised) or removed.
    pub fn with_state_token(mut self, state_dim: Option<usize>, device: &Device) -> Self {
        self.state_proj = state_dim.map(|n| LinearConfig::new(n, self.dim).init(device));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn action_head(chunk: usize) -> HeadConfig {
        let spec = ActionSpec { names: vec!["a".into(), "b".into()], units: vec!["deg".into(), "%".into()], fps: 10.0, chunk };
        let edges = vec![QuantileBins::fit(&[0.0, 1.0, 2.0, 3.0], 8).expect("fit"); 2];
        HeadConfig::Action(ActionHeadConfig { spec, target: ActionTarget::Absolute, bins: 8, edges })
    }

    fn input(cfg: &VlaConfig, b: usize, device: &Device) -> VlaInput {
        let n = cfg.n_patches() * cfg.patch_dim();
        let patches = Tensor::<3>::from_data(
            TensorData::new((0..b * n).map(|i| (i % 7) as f32 / 7.0).collect::<Vec<_>>(), [b, cfg.n_patches(), cfg.patch_dim()]),
            device,
        );
        let (ids, w) = cfg.text.tokenize("push the red block").expect("tokenize");
        let l = ids.len();
        let text = TextInput::Hashed {
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids.repeat(b), [b, l]), device),
            weights: Tensor::<2>::from_data(TensorData::new(w.repeat(b), [b, l]), device),
        };
        let state = cfg.state.as_ref().map(|s| Tensor::<2>::zeros([b, s.mean.len()], device));
        VlaInput { patches, text, state }
    }

    #[test]
    fn heads_give_logits_of_their_shape_and_bad_configs_are_refused() {
        let device = crate::device("cpu").expect("cpu device");
        let cfg = VlaConfig::tiny(HeadConfig::Latent { tokens: 4, vocabulary: 10 });
        let m = cfg.init(&device).expect("init");
        assert_eq!(m.forward(input(&cfg, 3, &device)).dims(), [3, 4, 10]);
        let cfg = VlaConfig::tiny(action_head(5)).with_state(Some(StateInput { mean: vec![0.0; 6], std: vec![1.0; 6] }));
        let m = cfg.init(&device).expect("init");
        assert_eq!(m.forward(input(&cfg, 2, &device)).dims(), [2, 10, 8]);
        assert!(cfg.flops() > 0);
        let bad = VlaConfig { patch_size: 7, ..cfg.clone() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("multiple")));
        let bad = VlaConfig { depth: usize::MAX, ..cfg.clone() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("depth 18446744073709551615 is larger than 1024")));
        let bad = VlaConfig { state: Some(StateInput { mean: vec![0.0; 2], std: vec![0.0; 2] }), ..cfg.clone() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("positive")));
        let HeadConfig::Action(mut h) = action_head(2) else { unreachable!() };
        h.edges.pop();
        assert!(HeadConfig::Action(h).validate().is_err_and(|e| e.to_string().contains("1 sets of bin edges for 2")));
    }

    #[test]
    fn the_continuous_head_regresses_tokens_by_dim_and_checks_its_standardisation() {
        let device = crate::device("cpu").expect("cpu device");
        let head = |mean: Vec<f32>, std: Vec<f32>| HeadConfig::Continuous { tokens: 3, dim: 5, mean, std };
        let cfg = VlaConfig::tiny(head(vec![0.0; 15], vec![1.0; 15]));
        let m = cfg.init(&device).expect("init");
        let out = m.forward(input(&cfg, 2, &device));
        assert_eq!(out.dims(), [2, 3, 5]);
        assert_eq!(cfg.head.logits_shape(), (3, 5));
        // The loss is the plain mean squared error: zero at the target, 4 at distance 2.
        let l0: f32 = Vla::mse_loss(out.clone(), out.clone()).into_scalar();
        let l2: f32 = Vla::mse_loss(out.clone() + 2.0, out).into_scalar();
        assert!(l0.abs() < 1e-9 && (l2 - 4.0).abs() < 1e-4, "{l0} {l2}");
        assert!(head(vec![0.0; 14], vec![1.0; 15]).validate().is_err_and(|e| e.to_string().contains("14 means")));
        assert!(head(vec![0.0; 15], vec![0.0; 15]).validate().is_err_and(|e| e.to_string().contains("positive")));
        assert!(head(vec![f32::NAN; 15], vec![1.0; 15]).validate().is_err_and(|e| e.to_string().contains("finite")));
        // Finetuning swaps it for an action head like any other.
        assert!(matches!(m.with_head(&action_head(2), &device).head, Head::Action(_)));
    }

    #[test]
    fn head_swap_keeps_the_trunk_weights() {
        let device = crate::device("cpu").expect("cpu device");
        let cfg = VlaConfig::tiny(HeadConfig::Latent { tokens: 4, vocabulary: 10 });
        let m = cfg.init(&device).expect("init");
        let before = m.trunk.clone().into_record().into_bytes().expect("bytes");
        let stem = m.patch_proj.weight.val().into_data();
        let swapped = m.with_head(&action_head(3), &device);
        assert_eq!(swapped.trunk.clone().into_record().into_bytes().expect("bytes"), before);
        assert_eq!(swapped.patch_proj.weight.val().into_data(), stem);
        assert!(matches!(swapped.head, Head::Action(_)));
    }

    #[test]
    fn masked_cross_entropy_counts_only_masked_entries() {
        let device = crate::device("cpu").expect("cpu device");
        // Two targets; logits favour class 0 strongly for both.
        let logits = Tensor::<3>::from_data(TensorData::new(vec![10.0f32, 0.0, 10.0, 0.0], [1, 2, 2]), &device);
        let t = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1], [1, 2]), &device);
        let only_first = Vla::loss(logits.clone(), t.clone(), Tensor::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &device));
        let both = Vla::loss(logits, t, Tensor::from_data(TensorData::new(vec![1.0f32, 1.0], [1, 2]), &device));
        let a: f32 = only_first.into_scalar();
        let b: f32 = both.into_scalar();
        assert!(a < 1e-3, "{a}");
        assert!((b - 5.0).abs() < 1e-2, "{b}");
    }

    #[test]
    fn distillation_loss_is_the_tempered_kl_from_the_teacher() {
        let device = crate::device("cpu").expect("cpu device");
        let t3 = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [1, 2, 2]), &device);
        // Student logits (0, ln 3) at T = 2 give q = (1/(1+√3), √3/(1+√3)); teacher p = (1/2, 1/2).
        let (p, q0) = (0.5f64, 1.0 / (1.0 + 3f64.sqrt()));
        let kl = p * (p / q0).ln() + p * (p / (1.0 - q0)).ln();
        let logits = t3(vec![0.0, 3f32.ln(), 0.0, 3f32.ln()]);
        let got: f32 = Vla::distill_loss(logits.clone(), t3(vec![0.5; 4]), 2.0).into_scalar();
        // Mean over the two targets (equal), times T² = 4.
        assert!((f64::from(got) - 4.0 * kl).abs() < 1e-5, "{got} vs {}", 4.0 * kl);
        // Zero where the student's tempered distribution is the teacher's.
        let teacher = burn::tensor::activation::softmax(logits.clone() / 2.0, 2);
        let zero: f32 = Vla::distill_loss(logits, teacher, 2.0).into_scalar();
        assert!(zero.abs() < 1e-6, "{zero}");
    }
}

/// A loaded policy with an action head behind the runtime's [`crate::Policy`] trait: frames of
/// any size are cropped and resized as the training frames were ([`crate::policy::CameraSpec`]),
/// instructions are tokenized once per distinct string, and the logits are decoded at the bin
/// midpoints (plus the state for delta targets).
#[derive(Debug)]
pub struct VlaPolicy {
    cfg: VlaConfig,
    head: ActionHeadConfig,
    model: Vla,
    device: Device,
    camera: crate::policy::CameraSpec,
    text_cache: std::collections::HashMap<String, (Vec<i64>, Vec<f32>)>,
    /// The frozen sentence encoder, for policies whose text config names one.
    encoder: Option<crate::text::SentenceEncoder>,
    label: String,
}

/// Distinct instructions kept tokenized (a long session with many typed instructions evicts).
const TEXT_CACHE: usize = 4096;

impl VlaPolicy {
    /// A policy whose frozen text encoder (if its config has one) is read from
    /// [`crate::text::minilm_dir`].
    pub fn new(cfg: VlaConfig, model: Vla, device: Device, label: impl Into<String>) -> Result<Self, ModelError> {
        Self::with_text_dir(cfg, model, device, label, &crate::text::minilm_dir())
    }

    /// A policy whose frozen text encoder is read from the folder `text_dir`.
    pub fn with_text_dir(cfg: VlaConfig, model: Vla, device: Device, label: impl Into<String>, text_dir: &std::path::Path) -> Result<Self, ModelError> {
        let encoder = match cfg.text.frozen_dim() {
            Some(_) => Some(crate::text::SentenceEncoder::load(text_dir, &cfg.text, &device)?),
            None => None,
        };
        Self::with_encoder(cfg, model, device, label, encoder)
    }

    /// A policy with its (already loaded) frozen text encoder, if its config names one.
    pub fn with_encoder(
        cfg: VlaConfig,
        model: Vla,
        device: Device,
        label: impl Into<String>,
        encoder: Option<crate::text::SentenceEncoder>,
    ) -> Result<Self, ModelError> {
        cfg.validate()?;
        if cfg.text.frozen_dim().is_some() != encoder.is_some() {
            return Err(ModelError::Config("the policy's text config and its text encoder disagree".into()));
        }
        let HeadConfig::Action(head) = cfg.head.clone() else {
            return Err(ModelError::Config("this policy predicts latent actions; finetune it (`lapa train finetune`) before it can drive an arm".into()));
        };
        if cfg.frames != 1 {
            return Err(ModelError::Config(format!(
                "this model takes {} frames per observation: it is an inverse-dynamics model (`lapa train idm`), which labels video, not a policy that drives an arm",
                cfg.frames
            )));
        }
        let camera = crate::policy::CameraSpec { width: cfg.image_size, height: cfg.image_size, crop: None };
        Ok(Self { cfg, head, model, device, camera, text_cache: Default::default(), encoder, label: label.into() })
    }

    pub fn config(&self) -> &VlaConfig {
        &self.cfg
    }

    fn text(&mut self, s: &str) -> Result<(Vec<i64>, Vec<f32>), crate::PolicyError> {
        if let Some(t) = self.text_cache.get(s) {
            return Ok(t.clone());
        }
        let t = self.cfg.text.tokenize(s).map_err(|e| crate::PolicyError::Input(e.to_string()))?;
        if self.text_cache.len() >= TEXT_CACHE {
            self.text_cache.clear();
        }
        self.text_cache.insert(s.to_string(), t.clone());
        Ok(t)
    }

    /// One chunk per input, computed in one batch.
    pub fn infer_batch(&mut self, inputs: &[crate::PolicyInput<'_>]) -> Result<Vec<Vec<Vec<f32>>>, crate::PolicyError> {
        use crate::PolicyError::Input;
        use burn::tensor::TensorData;
        let n = inputs.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (side, patch) = (self.cfg.image_size, self.cfg.patch_size);
        let sd = self.cfg.state_dim();
        let dims = self.head.spec.names.len();
        let mut patches = Vec::with_capacity(n * side * side * 3);
        let (mut ids, mut weights, mut state) = (Vec::new(), Vec::new(), Vec::new());
        for inp in inputs {
            let f = inp.frame;
            let img = self.camera.apply(f.width, f.height, f.rgb).map_err(Input)?;
            crate::laq::patchify(&img, side, patch, &mut patches);
            if self.encoder.is_none() {
                let (i, w) = self.text(inp.instruction)?;
                ids.extend(i);
                weights.extend(w);
            }
            if let Some(s) = &self.cfg.state {
                if inp.state.len() != sd {
                    return Err(Input(format!("state has {} values, the policy takes {sd}", inp.state.len())));
                }
                state.extend(s.standardise(inp.state));
            }
            if self.head.target == ActionTarget::Delta && inp.state.len() < dims {
                return Err(Input(format!("state has {} values; delta actions need {dims}", inp.state.len())));
            }
        }
        let l = self.cfg.text.max_ids();
        let d = &self.device;
        let input = VlaInput {
            patches: Tensor::from_data(TensorData::new(patches, [n, self.cfg.n_patches(), self.cfg.patch_dim()]), d),
            text: match &mut self.encoder {
                None => TextInput::Hashed {
                    ids: Tensor::from_data(TensorData::new(ids, [n, l]), d),
                    weights: Tensor::from_data(TensorData::new(weights, [n, l]), d),
                },
                Some(enc) => {
                    let texts: Vec<&str> = inputs.iter().map(|i| i.instruction).collect();
                    let embs = enc.embed(&texts).map_err(|e| Input(e.to_string()))?;
                    let dim = enc.dim();
                    TextInput::Embedded(Tensor::from_data(TensorData::new(embs.concat(), [n, dim]), d))
                }
            },
            state: (sd > 0).then(|| Tensor::from_data(TensorData::new(state, [n, sd]), d)),
        };
        let best: Vec<i64> = self
            .model
            .forward(input)
            .argmax(2)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| crate::PolicyError::Backend(format!("{e:?}")))?; // [n, chunk·dims]
        let k = self.head.spec.chunk;
        let mut out = Vec::with_capacity(n);
        for (b, inp) in inputs.iter().enumerate() {
            let chunk: Vec<Vec<f32>> = (0..k)
                .map(|j| {
                    (0..dims)
                        .map(|i| {
                            let v = self.head.edges[i].decode(best[(b * k + j) * dims + i].max(0) as usize);
                            if self.head.target == ActionTarget::Delta { v + inp.state[i] } else { v }
                        })
                        .collect()
                })
                .collect();
            out.push(chunk);
        }
        Ok(out)
    }
}

impl crate::Policy for VlaPolicy {
    fn action_spec(&self) -> &ActionSpec {
        &self.head.spec
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn infer(&mut self, input: &crate::PolicyInput<'_>) -> Result<Vec<Vec<f32>>, crate::PolicyError> {
        Ok(self.infer_batch(std::slice::from_ref(input))?.remove(0))
    }
}

/// A policy run as a model bundle ([`crate::bundle`]): the config in the manifest, the weights,
/// and for a frozen text encoder its three files. The board reads nothing else.
pub mod export {
    use std::path::Path;

    use burn::tensor::Device;

    use super::{HeadConfig, VlaConfig, VlaPolicy};
    use crate::ModelError;
    use crate::bundle::{Bundle, Manifest, TextEncoderSpec};
    use crate::signing::SecretKey;
    use crate::text::{MINILM_FILES, TextConfig};

    /// The weights' part name.
    pub const WEIGHTS_PART: &str = "policy.bpk";
    /// The text encoder's part names, in [`MINILM_FILES`] order.
    pub const TEXT_PARTS: [&str; 3] = ["text_model.safetensors", "text_tokenizer.json", "text_config.json"];

    fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
        move |source| ModelError::Io { path: path.to_path_buf(), source }
    }

    /// Writes the policy artifact `model_dir` (config.json + model.bpk) as a bundle at `out`,
    /// signed by `signer` when given; `text_dir` holds the frozen text encoder's files when the
    /// config names one.
    pub fn write_bundle(model_dir: &Path, text_dir: &Path, out: &Path, name: &str, signer: Option<&SecretKey>) -> Result<Bundle, ModelError> {
        write_bundle_with(model_dir, text_dir, out, name, signer, None, Vec::new(), Vec::new())
    }

    /// [`write_bundle`] with the weights in another form than burn's record (`weights`: a
    /// compressed policy's quantized part, which then replaces [`WEIGHTS_PART`]), more parts (its
    /// `quant.json`) and the features a reader must have to run it (`requires`).
    #[allow(clippy::too_many_arguments)]
    pub fn write_bundle_with(
        model_dir: &Path,
        text_dir: &Path,
        out: &Path,
        name: &str,
        signer: Option<&SecretKey>,
        weights: Option<(&str, Vec<u8>)>,
        extra: Vec<(&str, Vec<u8>)>,
        requires: Vec<String>,
    ) -> Result<Bundle, ModelError> {
        let cfg = crate::artifact::load_vla_config(model_dir)?;
        let HeadConfig::Action(head) = &cfg.head else {
            return Err(ModelError::Config(format!("{}: a latent-action policy cannot drive an arm; export a finetuned run", model_dir.display())));
        };
        let wpath = model_dir.join(crate::artifact::WEIGHTS_FILE);
        // The weights must load into the config before they are shipped (in whatever form).
        crate::artifact::load_weights(&wpath, cfg.init(&crate::device("cpu").or_else(|_| crate::device("ndarray"))?)?)?;
        let weights = match weights {
            Some(w) => w,
            None => (WEIGHTS_PART, std::fs::read(&wpath).map_err(io(&wpath))?),
        };
        let weights_part = weights.0.to_string();
        let mut parts: Vec<(&str, Vec<u8>)> = vec![weights];
        parts.extend(extra);
        let text_encoder = match cfg.text {
            TextConfig::Hashed { .. } => None,
            TextConfig::MiniLm { .. } => {
                for ((file, _), part) in MINILM_FILES.iter().zip(TEXT_PARTS) {
                    let p = text_dir.join(file);
                    parts.push((part, std::fs::read(&p).map_err(io(&p))?));
                }
                Some(TextEncoderSpec { kind: "all-minilm-l6-v2".into(), parts: TEXT_PARTS.map(String::from).to_vec() })
            }
        };
        let manifest = Manifest {
            format: crate::bundle::FORMAT,
            name: name.to_string(),
            created_by: format!("lapa {}", env!("CARGO_PKG_VERSION")),
            model: serde_json::to_value(&cfg).map_err(|e| ModelError::Config(e.to_string()))?,
            action: head.spec.clone(),
            camera: crate::policy::CameraSpec { width: cfg.image_size, height: cfg.image_size, crop: None },
            text_encoder,
            weights: vec![weights_part],
            parts: Default::default(),
            requires,
        };
        let refs: Vec<(&str, &[u8])> = parts.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        crate::bundle::write(out, manifest, &refs, signer).map_err(|e| ModelError::Artifact { path: out.to_path_buf(), message: e.to_string() })
    }

    /// What every policy built on a checked bundle needs: its config (checked against the
    /// manifest's action and camera specs), the weights on `device`, and the frozen text encoder
    /// when the config names one.
    pub fn load_parts(bundle: &Bundle, device: &Device) -> Result<(VlaConfig, super::Vla, Option<crate::text::SentenceEncoder>), ModelError> {
        let cfg = load_config(bundle)?;
        let at = |message: String| ModelError::Artifact { path: bundle.root.join(crate::bundle::MANIFEST), message };
        let wpath = bundle.part(WEIGHTS_PART).ok_or_else(|| at(format!("no part {WEIGHTS_PART}")))?;
        let model = crate::artifact::load_weights(&wpath, cfg.init(device)?)?;
        let encoder = load_text_encoder(bundle, &cfg, device)?;
        Ok((cfg, model, encoder))
    }

    /// A checked bundle's policy config, checked against the manifest's action and camera specs.
    pub fn load_config(bundle: &Bundle) -> Result<VlaConfig, ModelError> {
        let m = &bundle.manifest;
        let at = |message: String| ModelError::Artifact { path: bundle.root.join(crate::bundle::MANIFEST), message };
        let cfg: VlaConfig = crate::artifact::json_value(m.model.clone()).map_err(|e| at(format!("model: not a policy config: {e}")))?;
        cfg.validate().map_err(|e| at(format!("model: {e}")))?;
        let HeadConfig::Action(head) = &cfg.head else { return Err(at("model: a latent-action policy cannot drive an arm".into())) };
        if head.spec != m.action {
            return Err(at(format!("action: {:?} differs from the model's own {:?}", m.action, head.spec)));
        }
        if (m.camera.width, m.camera.height) != (cfg.image_size, cfg.image_size) {
            return Err(at(format!("camera: {}×{} but the model takes {}×{}", m.camera.width, m.camera.height, cfg.image_size, cfg.image_size)));
        }
        Ok(cfg)
    }

    /// The frozen text encoder of a checked bundle, on `device`, when `cfg` names one.
    pub fn load_text_encoder(bundle: &Bundle, cfg: &VlaConfig, device: &Device) -> Result<Option<crate::text::SentenceEncoder>, ModelError> {
        let at = |message: String| ModelError::Artifact { path: bundle.root.join(crate::bundle::MANIFEST), message };
        Ok(match cfg.text {
            TextConfig::Hashed { .. } => None,
            TextConfig::MiniLm { .. } => {
                let files = TEXT_PARTS.map(|p| bundle.part(p)).map(|p| p.ok_or_else(|| at("text_encoder: the MiniLM parts are missing".into())));
                let [a, b, c] = files;
                let files = [a?, b?, c?];
                Some(crate::text::SentenceEncoder::load_files(&files, &cfg.text, device)?)
            }
        })
    }

    /// The burn policy of a checked bundle, on `device`. A bundle that requires a compressed
    /// runtime (`int8`) is refused: `lapa_compress` loads those.
    pub fn load_policy(bundle: &Bundle, device: &Device) -> Result<VlaPolicy, ModelError> {
        if let Some(r) = bundle.manifest.requires.first() {
            return Err(ModelError::Artifact {
                path: bundle.root.join(crate::bundle::MANIFEST),
                message: format!("requires {r:?}: not a plain burn policy (load it with the compressed runtime)"),
            });
        }
        let (cfg, model, encoder) = load_parts(bundle, device)?;
        let label = format!("burn {} ({})", bundle.manifest.name, bundle.root.display());
        VlaPolicy::with_encoder(cfg, model, device.clone(), label, encoder)
    }
}
