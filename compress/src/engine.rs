//! The finetuned policy's forward pass in plain Rust over row-major `f32` buffers, with each linear
//! layer's kernel chosen per layer ([`crate::kernel::Kernel`]: f32, int8 or int4 weights). It
//! computes what `lapa_model::vla::Vla::forward` computes (checked against it in the tests), for one
//! observation: layer norms, softmax, GELU and residuals in f32; only the linear layers change.
//!
//! Weights come from the burn module by name ([`lapa_model::artifact::named_params`]), so this file
//! and `model/src/vla.rs` + `model/src/blocks.rs` must agree on the layer order; the parity test
//! (`tests/engine.rs`) fails if they drift.

use std::collections::BTreeMap;

use lapa_model::artifact::NamedTensor;
use lapa_model::text::TextConfig;
use lapa_model::vla::{HeadConfig, VlaConfig};

use crate::CompressError;
use crate::kernel::{Kernel, LANES, Scheme, StoredWeights};

/// burn's LayerNorm epsilon (the default of `LayerNormConfig`).
pub const LN_EPS: f32 = 1e-5;

/// A layer norm's gain and offset.
#[derive(Debug, Clone)]
pub struct Norm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
}

impl Norm {
    /// Normalises each row of `x` ([rows, dim]) in place.
    pub fn apply(&self, x: &mut [f32]) {
        let d = self.gamma.len();
        for row in x.chunks_exact_mut(d) {
            let mean = lane_sum(row, |v| v) / d as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / d as f32;
            let inv = 1.0 / (var + LN_EPS).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// One linear layer: its name (the burn parameter path) and kernel.
#[derive(Debug)]
pub struct Lin {
    pub name: String,
    pub kernel: Kernel,
}

impl Lin {
    /// `x` [rows, in] → [rows, out].
    fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * self.kernel.out_dim()];
        self.kernel.forward(x, rows, &mut out);
        out
    }
}

#[derive(Debug)]
struct AttnW {
    norm: Norm,
    to_q: Lin,
    to_k: Lin,
    to_v: Lin,
    to_out: Lin,
    q_scale: Vec<f32>,
    k_scale: Vec<f32>,
}

#[derive(Debug)]
struct FfW {
    norm: Norm,
    proj_in: Lin,
    proj_out: Lin,
}

#[derive(Debug)]
struct LayerW {
    attn: AttnW,
    ff: FfW,
}

/// The instruction token's encoder.
#[derive(Debug)]
pub enum TextW {
    /// The hashed-words embedding table, [buckets, dim] (kept f32: it is a lookup).
    Hashed { table: Vec<f32> },
    /// The projection of the frozen sentence embedding.
    Frozen(Box<Lin>),
}

/// The instruction as the engine takes it.
#[derive(Debug, Clone, Copy)]
pub enum Text<'a> {
    /// Hashed ids and their weights (`TextConfig::tokenize`).
    Hashed { ids: &'a [i64], weights: &'a [f32] },
    /// The frozen encoder's sentence embedding.
    Embedded(&'a [f32]),
}

/// The policy's weights laid out for inference, with a kernel per linear layer.
#[derive(Debug)]
pub struct Engine {
    cfg: VlaConfig,
    patch_norm: Norm,
    patch_proj: Lin,
    embed_norm: Norm,
    pos: Vec<f32>,
    kinds: Vec<f32>,
    text: TextW,
    state_proj: Option<Lin>,
    layers: Vec<LayerW>,
    norm_out: Norm,
    queries: Vec<f32>,
    head: Lin,
    /// Action dimensions and bins of the head.
    dims: usize,
    bins: usize,
}

/// Parameters by name, each taken once (the ONNX export walks them as the engine does).
pub(crate) struct Params {
    pub(crate) map: BTreeMap<String, NamedTensor>,
    /// Quantized layers' weights by layer name, as a compressed bundle stores them; `Some` when
    /// the engine is built from a bundle (every quantized layer must then be among them).
    stored: Option<BTreeMap<String, StoredWeights>>,
}

impl Params {
    pub(crate) fn new(params: Vec<NamedTensor>) -> Self {
        Self { map: params.into_iter().map(|t| (t.name.clone(), t)).collect(), stored: None }
    }

    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CompressError> {
        let t = self.map.remove(name).ok_or_else(|| CompressError::Model(format!("the model has no parameter {name:?}")))?;
        if t.shape != shape {
            return Err(CompressError::Model(format!("{name}: shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok(t.values)
    }

    pub(crate) fn norm(&mut self, name: &str, d: usize) -> Result<Norm, CompressError> {
        Ok(Norm { gamma: self.take(&format!("{name}.gamma"), &[d])?, beta: self.take(&format!("{name}.beta"), &[d])? })
    }

    /// A linear layer `[in, out]` (burn's layout) with an optional bias.
    fn lin(&mut self, name: &str, i: usize, o: usize, bias: bool, plan: &dyn Fn(&str) -> Scheme) -> Result<Lin, CompressError> {
        let b = if bias { Some(self.take(&format!("{name}.bias"), &[o])?) } else { None };
        let scheme = plan(name);
        let kernel = match self.stored.as_mut().map(|s| s.remove(name)) {
            Some(Some(w)) => Kernel::from_stored(scheme, w, i, o, b).map_err(|e| CompressError::Model(format!("{name}: {e}")))?,
            Some(None) if scheme.is_quantized() => {
                return Err(CompressError::Model(format!("{name}: the plan says {scheme:?} but the layer's weights are stored f32")));
            }
            _ => Kernel::new(scheme, &self.take(&format!("{name}.weight"), &[i, o])?, i, o, b)?,
        };
        Ok(Lin { name: name.to_string(), kernel })
    }
}

/// `Σ f(x)` over `xs` in [`LANES`] partial sums (serial f32 sums in the norms and softmax were the
/// engine's largest cost outside the GEMMs).
#[inline]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += f(v));
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest of `xs` ignoring NaN (as `f32::max` does), −∞ when empty, in [`LANES`] lanes.
#[inline]
fn lane_max(xs: &[f32]) -> f32 {
    let pick = |m: f32, v: f32| if v > m { v } else { m };
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| pick(m, v));
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a = pick(*a, v));
    }
    acc.into_iter().fold(tail, pick)
}

/// `softmax` of each row of `x` in place.
fn softmax_rows(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let max = lane_max(row);
        row.iter_mut().for_each(|v| *v = (*v - max).exp());
        let inv = 1.0 / lane_sum(row, |v| v);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// burn's `gelu`: the exact form, `x Φ(x)` through erf.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf` for f32 as a rational function of `x` (fitted on [−4, 4]), the approximation XLA and Eigen use for
/// f32 (odd degree-13 numerator over even degree-8 denominator); exactly ±1 beyond ±3.92, where
/// erf rounds to ±1 in f32 (the rational form would give ±0.99999988, and `gelu` of a large
/// negative input −6e-8·x instead of 0).
/// Unlike libm's `erff` (a scalar call with branches, 3% of a step) it is straight-line
/// arithmetic, so the GEGLU loop vectorizes; within 5e-7 of libm over [−6, 6] (4.2e-7 at worst, checked in
/// the tests).
fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [-2.726_142_3e-10, 2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_6e-3, -1.609_603_3e-2];
    const BETA: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];
    // No clamp needed before the polynomials: beyond ±3.92 the select below discards them.
    let x2 = x * x;
    let p = ALPHA.iter().fold(0.0, |acc, &a| acc * x2 + a);
    let q = BETA.iter().fold(0.0, |acc, &b| acc * x2 + b);
    // Selects, not branches: the loop around it still vectorizes. NaN passes through.
    if x >= 3.92 {
        1.0
    } else if x <= -3.92 {
        -1.0
    } else {
        x * p / q
    }
}

impl Engine {
    /// The engine of a finetuned policy: `params` are the burn module's parameters by name
    /// ([`lapa_model::artifact::named_params`]); `plan` gives each linear layer's scheme by name.
    pub fn new(cfg: &VlaConfig, params: Vec<NamedTensor>, plan: &dyn Fn(&str) -> Scheme) -> Result<Self, CompressError> {
        Self::build(cfg, Params::new(params), plan)
    }

    /// The engine of a compressed bundle: the f32 `params` plus the quantized layers' `stored`
    /// weights by layer name (each quantized layer of `plan` must be there, and only those).
    pub fn from_stored(
        cfg: &VlaConfig,
        params: Vec<NamedTensor>,
        stored: BTreeMap<String, StoredWeights>,
        plan: &dyn Fn(&str) -> Scheme,
    ) -> Result<Self, CompressError> {
        let mut p = Params::new(params);
        p.stored = Some(stored);
        Self::build(cfg, p, plan)
    }

    fn build(cfg: &VlaConfig, mut p: Params, plan: &dyn Fn(&str) -> Scheme) -> Result<Self, CompressError> {
        cfg.validate().map_err(|e| CompressError::Model(e.to_string()))?;
        let HeadConfig::Action(head) = &cfg.head else {
            return Err(CompressError::Model("a latent-action policy cannot drive an arm; compress a finetuned run".into()));
        };
        if cfg.frames != 1 {
            return Err(CompressError::Model(format!("{} frames per observation: an inverse-dynamics model, not a policy", cfg.frames)));
        }
        let (d, inner, pd) = (cfg.dim, cfg.heads * cfg.dim_head, cfg.patch_dim());
        let ff = (cfg.ff_mult * d * 2).div_ceil(3);
        let patch_norm = p.norm("patch_norm", pd)?;
        let patch_proj = p.lin("patch_proj", pd, d, true, plan)?;
        let embed_norm = p.norm("embed_norm", d)?;
        let pos = p.take("pos", &[cfg.n_patches(), d])?;
        let kinds = p.take("kinds", &[3, d])?;
        let text = match cfg.text {
            TextConfig::Hashed { buckets, .. } => TextW::Hashed { table: p.take("text.Hashed.weight", &[buckets, d])? },
            TextConfig::MiniLm { dim, .. } => TextW::Frozen(Box::new(p.lin("text.Frozen", dim, d, true, plan)?)),
        };
        let state_proj = cfg.state.as_ref().map(|s| p.lin("state_proj", s.mean.len(), d, true, plan)).transpose()?;
        let mut layers = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let a = format!("trunk.layers.{i}.attn");
            let f = format!("trunk.layers.{i}.ff");
            layers.push(LayerW {
                attn: AttnW {
                    norm: p.norm(&format!("{a}.norm"), d)?,
                    to_q: p.lin(&format!("{a}.to_q"), d, inner, false, plan)?,
                    to_k: p.lin(&format!("{a}.to_k"), d, inner, false, plan)?,
                    to_v: p.lin(&format!("{a}.to_v"), d, inner, false, plan)?,
                    to_out: p.lin(&format!("{a}.to_out"), inner, d, false, plan)?,
                    q_scale: p.take(&format!("{a}.q_scale"), &[cfg.dim_head])?,
                    k_scale: p.take(&format!("{a}.k_scale"), &[cfg.dim_head])?,
                },
                ff: FfW {
                    norm: p.norm(&format!("{f}.norm"), d)?,
                    proj_in: p.lin(&format!("{f}.proj_in"), d, 2 * ff, false, plan)?,
                    proj_out: p.lin(&format!("{f}.proj_out"), ff, d, false, plan)?,
                },
            });
        }
        let norm_out = p.norm("trunk.norm_out", d)?;
        let (dims, bins, chunk) = (head.spec.names.len(), head.bins, head.spec.chunk);
        let queries = p.take("head.Action.queries", &[chunk, d])?;
        let head_lin = p.lin("head.Action.out", d, dims * bins, true, plan)?;
        if let Some(extra) = p.map.keys().next() {
            return Err(CompressError::Model(format!("the model has a parameter this engine does not use: {extra:?} (a newer model layout?)")));
        }
        if let Some(extra) = p.stored.as_ref().and_then(|s| s.keys().next()) {
            return Err(CompressError::Model(format!("quantized weights stored for {extra:?}, which is no linear layer of this model")));
        }
        Ok(Self { cfg: cfg.clone(), patch_norm, patch_proj, embed_norm, pos, kinds, text, state_proj, layers, norm_out, queries, head: head_lin, dims, bins })
    }

    pub fn config(&self) -> &VlaConfig {
        &self.cfg
    }

    /// Every linear layer, in forward order.
    pub fn linears(&self) -> Vec<&Lin> {
        let mut v = vec![&self.patch_proj];
        if let TextW::Frozen(l) = &self.text {
            v.push(l);
        }
        v.extend(&self.state_proj);
        for l in &self.layers {
            v.extend([&l.attn.to_q, &l.attn.to_k, &l.attn.to_v, &l.attn.to_out, &l.ff.proj_in, &l.ff.proj_out]);
        }
        v.push(&self.head);
        v
    }

    /// Every linear layer, mutably, in forward order (calibration sets their activation ranges).
    pub fn linears_mut(&mut self) -> Vec<&mut Lin> {
        let mut v = vec![&mut self.patch_proj];
        if let TextW::Frozen(l) = &mut self.text {
            v.push(l);
        }
        v.extend(self.state_proj.as_mut());
        for l in &mut self.layers {
            v.extend([&mut l.attn.to_q, &mut l.attn.to_k, &mut l.attn.to_v, &mut l.attn.to_out, &mut l.ff.proj_in, &mut l.ff.proj_out]);
        }
        v.push(&mut self.head);
        v
    }

    /// Bytes of the weights as stored by their kernels (the int8 and int4 packings included).
    pub fn weight_bytes(&self) -> usize {
        let vecs = self.pos.len() + self.kinds.len() + self.queries.len() + if let TextW::Hashed { table } = &self.text { table.len() } else { 0 };
        4 * vecs + self.linears().iter().map(|l| l.kernel.bytes()).sum::<usize>()
    }

    /// Logits `[chunk · dims, bins]` for one observation: `patches` [patches, patch_dim] in
    /// [0, 1] (`lapa_model::laq::patchify`), the instruction, and the standardised state when the
    /// config has a state token. `observe` sees each linear layer's input (calibration).
    pub fn forward(
        &self,
        patches: &[f32],
        text: Text<'_>,
        state: Option<&[f32]>,
        observe: &mut dyn FnMut(&str, &[f32], usize),
    ) -> Result<Vec<f32>, CompressError> {
        let cfg = &self.cfg;
        let (d, np, pd) = (cfg.dim, cfg.n_patches(), cfg.patch_dim());
        let bad = |m: String| Err(CompressError::Input(m));
        if patches.len() != np * pd {
            return bad(format!("{} patch values, the policy takes {np} × {pd}", patches.len()));
        }
        let mut run = |lin: &Lin, x: &[f32], rows: usize| {
            observe(&lin.name, x, rows);
            lin.forward(x, rows)
        };
        // The image tokens.
        let mut x = patches.to_vec();
        self.patch_norm.apply(&mut x);
        let mut img = run(&self.patch_proj, &x, np); // [np, d]
        self.embed_norm.apply(&mut img);
        img.iter_mut().zip(&self.pos).for_each(|(v, p)| *v += p);
        // The instruction token.
        let mut text_tok = match (&self.text, text) {
            (TextW::Hashed { table }, Text::Hashed { ids, weights }) => {
                let buckets = table.len() / d;
                if ids.len() != weights.len() {
                    return bad(format!("{} text ids but {} weights", ids.len(), weights.len()));
                }
                let mut t = vec![0.0; d];
                for (&id, &w) in ids.iter().zip(weights) {
                    let row = usize::try_from(id)
                        .ok()
                        .filter(|&r| r < buckets)
                        .ok_or_else(|| CompressError::Input(format!("text id {id} is outside 0..{buckets}")))?;
                    t.iter_mut().zip(&table[row * d..(row + 1) * d]).for_each(|(a, e)| *a += w * e);
                }
                t
            }
            (TextW::Frozen(lin), Text::Embedded(e)) => {
                if e.len() != lin.kernel.in_dim() {
                    return bad(format!("a {}-value sentence embedding, the policy takes {}", e.len(), lin.kernel.in_dim()));
                }
                run(lin, e, 1)
            }
            _ => return bad("the instruction's form does not match the policy's text encoder".into()),
        };
        text_tok.iter_mut().zip(&self.kinds[..d]).for_each(|(v, k)| *v += k);
        let mut seq = text_tok;
        seq.extend_from_slice(&img);
        match (&self.state_proj, state) {
            (Some(lin), Some(s)) if s.len() == lin.kernel.in_dim() => {
                let mut t = run(lin, s, 1);
                t.iter_mut().zip(&self.kinds[d..2 * d]).for_each(|(v, k)| *v += k);
                seq.extend_from_slice(&t);
            }
            (Some(lin), s) => return bad(format!("the policy takes a {}-value state, got {:?} values", lin.kernel.in_dim(), s.map(<[f32]>::len))),
            (None, _) => {}
        }
        let q = self.queries.len() / d;
        for row in self.queries.chunks_exact(d) {
            seq.extend(row.iter().zip(&self.kinds[2 * d..3 * d]).map(|(a, k)| a + k));
        }
        let n = seq.len() / d; // [n, d]
        let (h, dh) = (cfg.heads, cfg.dim_head);
        let inner = h * dh;
        for layer in &self.layers {
            // Attention.
            let a = &layer.attn;
            let mut xn = seq.clone();
            a.norm.apply(&mut xn);
            let mut qm = run(&a.to_q, &xn, n); // [n, h·dh]
            let mut km = run(&a.to_k, &xn, n);
            let vm = run(&a.to_v, &xn, n);
            for (m, scale) in [(&mut qm, &a.q_scale), (&mut km, &a.k_scale)] {
                for head_row in m.chunks_exact_mut(dh) {
                    let norm = lane_sum(head_row, |v| v * v).sqrt().max(1e-6);
                    head_row.iter_mut().zip(scale.iter()).for_each(|(v, s)| *v = *v / norm * s);
                }
            }
            // Per head, both products on the GEMM: sim = q kᵀ [n, n], out = softmax(sim) v.
            let mut att = vec![0.0; inner * n]; // [n, h·dh]
            let mut sim = vec![0.0; n * n];
            let (mut qh, mut kt, mut vh, mut oh) = (vec![0.0; n * dh], vec![0.0; dh * n], vec![0.0; n * dh], vec![0.0; n * dh]);
            for hh in 0..h {
                for i in 0..n {
                    let src = i * inner + hh * dh..i * inner + (hh + 1) * dh;
                    qh[i * dh..(i + 1) * dh].copy_from_slice(&qm[src.clone()]);
                    vh[i * dh..(i + 1) * dh].copy_from_slice(&vm[src.clone()]);
                    for (e, &v) in km[src].iter().enumerate() {
                        kt[e * n + i] = v; // [dh, n]
                    }
                }
                crate::kernel::matmul_f32(&qh, &kt, &mut sim, n, dh, n);
                sim.iter_mut().for_each(|v| *v *= lapa_model::blocks::QK_TEMPERATURE);
                softmax_rows(&mut sim, n);
                crate::kernel::matmul_f32(&sim, &vh, &mut oh, n, n, dh);
                for i in 0..n {
                    att[i * inner + hh * dh..i * inner + (hh + 1) * dh].copy_from_slice(&oh[i * dh..(i + 1) * dh]);
                }
            }
            let upd = run(&a.to_out, &att, n);
            seq.iter_mut().zip(&upd).for_each(|(s, u)| *s += u);
            // GEGLU feed-forward.
            let f = &layer.ff;
            let mut xn = seq.clone();
            f.norm.apply(&mut xn);
            let hid = run(&f.proj_in, &xn, n); // [n, 2·ff]
            let ffw = hid.len() / n / 2;
            let mut gated = Vec::with_capacity(n * ffw);
            for row in hid.chunks_exact(2 * ffw) {
                gated.extend(row[..ffw].iter().zip(&row[ffw..]).map(|(a, g)| a * gelu(*g)));
            }
            let upd = run(&f.proj_out, &gated, n);
            seq.iter_mut().zip(&upd).for_each(|(s, u)| *s += u);
        }
        self.norm_out.apply(&mut seq);
        let out = &seq[(n - q) * d..]; // [q, d]
        let logits = run(&self.head, out, q); // [q, dims·bins] = [q·dims, bins]
        debug_assert_eq!(logits.len(), q * self.dims * self.bins);
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_reductions_match_the_plain_ones() {
        for len in [0, 1, 15, 16, 17, 40, 129] {
            let xs: Vec<f32> = (0..len).map(|n| ((n * 31 % 53) as f32 - 26.0) * 0.13).collect();
            let plain = xs.iter().map(|v| v * v).sum::<f32>();
            assert!((lane_sum(&xs, |v| v * v) - plain).abs() <= 1e-5 * plain.max(1.0), "length {len}");
            assert_eq!(lane_max(&xs), xs.iter().copied().fold(f32::NEG_INFINITY, f32::max), "length {len}");
            let mut with_nan = xs.clone();
            if len > 3 {
                with_nan[3] = f32::NAN;
                assert_eq!(lane_max(&with_nan), with_nan.iter().copied().fold(f32::NEG_INFINITY, f32::max), "NaN, length {len}");
            }
        }
    }

    #[test]
    fn rational_erf_stays_within_5e7_of_libm() {
        let mut worst = (0f32, 0f32);
        for n in -60_000..=60_000 {
            let x = n as f32 * 1e-4; // [−6, 6] by 1e-4
            let err = (erf(x) - libm::erff(x)).abs();
            if err > worst.1 {
                worst = (x, err);
            }
        }
        assert!(worst.1 <= 5e-7, "erf({}) is {:e} off libm's", worst.0, worst.1);
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan());
        assert_eq!((erf(3.92), erf(-4.0), erf(f32::INFINITY), erf(f32::NEG_INFINITY)), (1.0, -1.0, 1.0, -1.0));
        assert_eq!(gelu(-100.0), 0.0);
    }
}
