//! Compressed policies in the model bundle: a `quant.json` part says each linear layer's scheme
//! (f32, int8 dynamic or static, int4 weight-only), the manifest `requires` [`INT8`] (the
//! compressed engine, whatever the schemes) and [`STORED`], and the weights part [`WEIGHTS_PART`] (safetensors)
//! holds every quantized layer as it computes — int8 values at ±127 with per-channel scales, or
//! packed int4 nibbles with block scales — and the rest (norms, embeddings, f32 layers, biases) in
//! f32. The board multiplies the stored integers as they are (an AVX2 machine, whose kernel can
//! saturate, requantizes them to ±63 at load); the plan and weights are covered by the manifest's
//! hashes and signature.

use std::collections::BTreeMap;
use std::path::Path;

use lapa_model::bundle::Bundle;
use lapa_model::signing::SecretKey;
use serde::{Deserialize, Serialize};

use crate::CompressError;
use crate::engine::Engine;
use crate::kernel::{Scheme, StoredWeights};
use crate::policy::EnginePolicy;

/// The plan's part name.
pub const QUANT_PART: &str = "quant.json";
/// The requirement every compressed bundle names (the compressed engine).
pub const INT8: &str = lapa_model::bundle::REQUIRES_INT8;
/// Named as well when a layer is int4 weight-only, so a runtime from before that scheme refuses
/// the bundle by name instead of failing on its plan.
pub const INT4: &str = lapa_model::bundle::REQUIRES_INT4;
/// Named by every bundle whose weights part stores quantized layers (plan format 2 on), so a
/// runtime from before refuses it by name instead of looking for the f32 `policy.bpk`.
pub const STORED: &str = lapa_model::bundle::REQUIRES_QUANTIZED_WEIGHTS;
/// The plan format this build writes and reads. Format 1 (up to 2026-12-07) shipped f32 weights
/// in `policy.bpk` and quantized them at load; format 2 ships them quantized in [`WEIGHTS_PART`].
pub const PLAN_FORMAT: u32 = 2;
/// The compressed bundle's weights part.
pub const WEIGHTS_PART: &str = "policy.safetensors";
/// Suffixes of a quantized layer's tensors in [`WEIGHTS_PART`]: int8 values [i, o], int4 nibbles
/// (flat), and their scales ([o] for int8, [o, blocks] for int4).
const Q8: &str = ".weight.q8";
const Q4: &str = ".weight.q4";
const SCALES: &str = ".weight.scales";

/// One layer's scheme as written in `quant.json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LayerPlan {
    // Empty struct variants, not unit ones: serde enforces `deny_unknown_fields` on those only.
    F32 {},
    Int8Dynamic {},
    Int8Static { lo: f32, hi: f32 },
    Int4Weights {},
}

impl From<LayerPlan> for Scheme {
    fn from(p: LayerPlan) -> Self {
        match p {
            LayerPlan::F32 {} => Scheme::F32,
            LayerPlan::Int8Dynamic {} => Scheme::Int8Dynamic,
            LayerPlan::Int8Static { lo, hi } => Scheme::Int8Static { lo, hi },
            LayerPlan::Int4Weights {} => Scheme::Int4Weights,
        }
    }
}

impl From<Scheme> for LayerPlan {
    fn from(s: Scheme) -> Self {
        match s {
            Scheme::F32 => LayerPlan::F32 {},
            Scheme::Int8Dynamic => LayerPlan::Int8Dynamic {},
            Scheme::Int8Static { lo, hi } => LayerPlan::Int8Static { lo, hi },
            Scheme::Int4Weights => LayerPlan::Int4Weights {},
        }
    }
}

/// `quant.json`: every linear layer by its parameter path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantPlan {
    pub format: u32,
    /// How the plan was made (scheme, calibration set, layers kept f32 and why), for people.
    pub made_by: String,
    pub layers: BTreeMap<String, LayerPlan>,
}

impl QuantPlan {
    fn check_format(&self) -> Result<(), String> {
        match self.format {
            PLAN_FORMAT => Ok(()),
            1 => Err(format!("format 1: written by an earlier lapa, which shipped f32 weights; export the bundle again (plan format {PLAN_FORMAT})")),
            f => Err(format!("format {f}: this build reads plan format {PLAN_FORMAT}")),
        }
    }

    /// Checks the plan against the engine's layers: every layer named once, no other.
    fn check(&self, layers: &[String]) -> Result<(), String> {
        self.check_format()?;
        for l in layers {
            if !self.layers.contains_key(l) {
                return Err(format!("layers: no scheme for {l:?}"));
            }
        }
        if let Some(extra) = self.layers.keys().find(|k| !layers.contains(k)) {
            return Err(format!("layers.{extra:?}: the model has no such linear layer"));
        }
        for (name, p) in &self.layers {
            if let LayerPlan::Int8Static { lo, hi } = p
                && !(lo.is_finite() && hi.is_finite() && lo <= hi)
            {
                return Err(format!("layers.{name:?}: activation range [{lo}, {hi}] is not a finite interval"));
            }
        }
        Ok(())
    }
}

/// The linear layers' names of a config, in forward order (what a plan must cover).
pub fn layer_names(cfg: &lapa_model::VlaConfig, params: &[lapa_model::artifact::NamedTensor]) -> Result<Vec<String>, CompressError> {
    Ok(Engine::new(cfg, params.to_vec(), &|_| Scheme::F32)?.linears().iter().map(|l| l.name.clone()).collect())
}

/// Writes the policy artifact `model_dir` as a compressed bundle at `out` with `plan`, signed by
/// `signer` when given (staged and renamed into place, as every bundle).
pub fn write(model_dir: &Path, text_dir: &Path, out: &Path, name: &str, signer: Option<&SecretKey>, plan: &QuantPlan) -> Result<Bundle, CompressError> {
    let device = lapa_model::device("cpu")?;
    let (cfg, model) = lapa_model::load_vla(model_dir, &device)?;
    let params = lapa_model::artifact::named_params(&model)?;
    plan.check(&layer_names(&cfg, &params)?).map_err(|e| CompressError::Model(format!("{QUANT_PART}: {e}")))?;
    let json = serde_json::to_vec_pretty(plan).map_err(|e| CompressError::Model(e.to_string()))?;
    let mut requires = vec![INT8.to_string()];
    if plan.layers.values().any(|p| matches!(p, LayerPlan::Int4Weights {})) {
        requires.push(INT4.to_string());
    }
    requires.push(STORED.to_string());
    let weights = weights_part(params, plan)?;
    Ok(lapa_model::vla::export::write_bundle_with(model_dir, text_dir, out, name, signer, Some((WEIGHTS_PART, weights)), vec![(QUANT_PART, json)], requires)?)
}

/// The weights part of `params` under `plan`: quantized layers as their scheme stores them, every
/// other tensor f32 (safetensors, little-endian, tensors sorted by name).
fn weights_part(params: Vec<lapa_model::artifact::NamedTensor>, plan: &QuantPlan) -> Result<Vec<u8>, CompressError> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for t in params {
        let layer = t.name.strip_suffix(".weight").filter(|l| plan.layers.contains_key(*l));
        let stored = match (layer, t.shape.as_slice()) {
            (Some(l), &[i, o]) => StoredWeights::quantize(Scheme::from(plan.layers[l]), &t.values, i, o).map(|w| (l, w)),
            _ => None,
        };
        match stored {
            Some((l, StoredWeights::Int8 { q, scales, dims })) => {
                owned.push((format!("{l}{Q8}"), Dtype::I8, dims.to_vec(), q.iter().map(|v| v.to_le_bytes()[0]).collect()));
                owned.push((format!("{l}{SCALES}"), Dtype::F32, vec![dims[1]], f32_bytes(&scales)));
            }
            Some((l, StoredWeights::Int4 { nibbles, scales, dims })) => {
                owned.push((format!("{l}{Q4}"), Dtype::U8, vec![nibbles.len()], nibbles));
                owned.push((format!("{l}{SCALES}"), Dtype::F32, dims.to_vec(), f32_bytes(&scales)));
            }
            None => owned.push((t.name, Dtype::F32, t.shape, f32_bytes(&t.values))),
        }
    }
    let views = owned
        .iter()
        .map(|(n, d, shape, bytes)| TensorView::new(*d, shape.clone(), bytes).map(|v| (n.as_str(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CompressError::Model(format!("{WEIGHTS_PART}: {e}")))?;
    let meta = std::collections::HashMap::from([("format".to_string(), format!("lapa quantized policy, plan format {PLAN_FORMAT}"))]);
    safetensors::tensor::serialize(views, Some(meta)).map_err(|e| CompressError::Model(format!("{WEIGHTS_PART}: {e}")))
}

/// Reads a weights part: the f32 tensors, and the quantized layers' stored weights by layer name.
/// Every tensor is checked for its dtype and size; names that fit no scheme are refused.
pub fn read_weights_part(bytes: &[u8]) -> Result<(Vec<lapa_model::artifact::NamedTensor>, BTreeMap<String, StoredWeights>), String> {
    use safetensors::tensor::{Dtype, SafeTensors};
    let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut params = Vec::new();
    let mut q8: BTreeMap<String, (Vec<i8>, [usize; 2])> = BTreeMap::new();
    let mut q4: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut scales: BTreeMap<String, (Vec<f32>, Vec<usize>)> = BTreeMap::new();
    let f32s = |name: &str, v: &safetensors::tensor::TensorView| -> Result<Vec<f32>, String> {
        if v.dtype() != Dtype::F32 {
            return Err(format!("{name}: dtype {:?}, expected F32", v.dtype()));
        }
        Ok(v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    for (name, v) in st.iter() {
        if let Some(l) = name.strip_suffix(Q8) {
            let (Dtype::I8, &[i, o]) = (v.dtype(), v.shape()) else {
                return Err(format!("{name}: {:?} {:?}, expected I8 [in, out]", v.dtype(), v.shape()));
            };
            q8.insert(l.to_string(), (v.data().iter().map(|&b| i8::from_le_bytes([b])).collect(), [i, o]));
        } else if let Some(l) = name.strip_suffix(Q4) {
            if v.dtype() != Dtype::U8 || v.shape().len() != 1 {
                return Err(format!("{name}: {:?} {:?}, expected U8 [bytes]", v.dtype(), v.shape()));
            }
            q4.insert(l.to_string(), v.data().to_vec());
        } else if let Some(l) = name.strip_suffix(SCALES) {
            scales.insert(l.to_string(), (f32s(name, &v)?, v.shape().to_vec()));
        } else {
            let values = f32s(name, &v)?;
            if values.iter().any(|x| !x.is_finite()) {
                return Err(format!("{name}: a value is not finite"));
            }
            params.push(lapa_model::artifact::NamedTensor { name: name.to_string(), shape: v.shape().to_vec(), values });
        }
    }
    let mut stored = BTreeMap::new();
    for (l, (q, dims)) in q8 {
        let (s, shape) = scales.remove(&l).ok_or_else(|| format!("{l}{Q8} has no {l}{SCALES}"))?;
        if shape != [dims[1]] {
            return Err(format!("{l}{SCALES}: shape {shape:?}, expected [{}] (one per output of {l}{Q8} {dims:?})", dims[1]));
        }
        stored.insert(l, StoredWeights::Int8 { q, scales: s, dims });
    }
    for (l, nibbles) in q4 {
        if stored.contains_key(&l) {
            return Err(format!("{l}: stored both as int8 and as int4"));
        }
        let (s, shape) = scales.remove(&l).ok_or_else(|| format!("{l}{Q4} has no {l}{SCALES}"))?;
        let &[o, blocks] = shape.as_slice() else {
            return Err(format!("{l}{SCALES}: shape {shape:?}, expected [out, blocks]"));
        };
        stored.insert(l, StoredWeights::Int4 { nibbles, scales: s, dims: [o, blocks] });
    }
    if let Some(l) = scales.keys().next() {
        return Err(format!("{l}{SCALES}: scales of no quantized weights"));
    }
    Ok((params, stored))
}

/// The compressed policy of a checked bundle that requires [`INT8`].
pub fn load_policy(bundle: &Bundle) -> Result<EnginePolicy, CompressError> {
    let at = |m: String| CompressError::Model(format!("{}: {m}", bundle.root.join(QUANT_PART).display()));
    let m = &bundle.manifest;
    if m.requires.iter().any(|r| r != INT8 && r != INT4 && r != STORED) || ![INT8, STORED].iter().all(|n| m.requires.iter().any(|r| r == n)) {
        return Err(CompressError::Model(format!(
            "{}: requires {:?}; the compressed runtime runs [\"{INT8}\", \"{STORED}\"] with or without \"{INT4}\" (an earlier lapa's \"{INT8}\" bundle: export it again)",
            bundle.root.display(),
            m.requires
        )));
    }
    let path = bundle.part(QUANT_PART).ok_or_else(|| at("missing: an int8 bundle carries its plan".into()))?;
    let bytes = std::fs::read(&path).map_err(|e| at(e.to_string()))?;
    let plan: QuantPlan = lapa_model::artifact::json_slice(&bytes).map_err(at)?;
    plan.check_format().map_err(at)?;
    let int4_layers = plan.layers.values().any(|p| matches!(p, LayerPlan::Int4Weights {}));
    if int4_layers != m.requires.iter().any(|r| r == INT4) {
        return Err(at(format!("the plan's int4 layers and the manifest's requires {:?} disagree", m.requires)));
    }
    let wat = |m: String| CompressError::Model(format!("{}: {m}", bundle.root.join(WEIGHTS_PART).display()));
    if m.weights != [WEIGHTS_PART] {
        return Err(wat(format!("the manifest's weights are {:?}; a compressed bundle's are [{WEIGHTS_PART:?}]", m.weights)));
    }
    let wpath = bundle.part(WEIGHTS_PART).ok_or_else(|| wat("missing".into()))?;
    let (params, stored) = read_weights_part(&std::fs::read(&wpath).map_err(|e| wat(e.to_string()))?).map_err(wat)?;
    let cfg = lapa_model::vla::export::load_config(bundle)?;
    let engine =
        Engine::from_stored(&cfg, params, stored, &|name| plan.layers.get(name).copied().map_or(Scheme::F32, Scheme::from)).map_err(|e| wat(e.to_string()))?;
    plan.check(&engine.linears().iter().map(|l| l.name.clone()).collect::<Vec<_>>()).map_err(at)?;
    // The MiniLM encoder (once per instruction) runs in burn on the CPU.
    let device = lapa_model::device("cpu")?;
    let encoder = lapa_model::vla::export::load_text_encoder(bundle, &cfg, &device)?;
    let int8 = plan.layers.values().filter(|p| matches!(p, LayerPlan::Int8Dynamic {} | LayerPlan::Int8Static { .. })).count();
    let int4 = plan.layers.values().filter(|p| matches!(p, LayerPlan::Int4Weights {})).count();
    let (n, path) = (plan.layers.len(), bundle.root.display());
    let label = match (int8, int4) {
        (_, 0) => format!("int8 {} ({int8}/{n} layers int8, {}, one thread; {path})", m.name, crate::kernel::int8_kernel().0),
        (0, _) => format!("int4 {} ({int4}/{n} layers int4 weight-only, one thread; {path})", m.name),
        _ => format!("int8+int4 {} ({int8}/{n} layers int8, {int4} int4 weight-only, {}, one thread; {path})", m.name, crate::kernel::int8_kernel().0),
    };
    EnginePolicy::new(engine, encoder, label)
}

/// The policy of any checked bundle: the int8 engine when the bundle requires [`INT8`] (it
/// computes on the CPU's int8 kernels whatever `device` is), else the burn model on `device`.
/// The edge runtime and `lapa eval --bundle` both load bundles through this.
pub fn open_policy(bundle: &Bundle, device: &lapa_model::burn::tensor::Device) -> Result<Box<dyn lapa_model::Policy>, CompressError> {
    Ok(if bundle.manifest.requires.iter().any(|r| r == INT8) {
        Box::new(load_policy(bundle)?)
    } else {
        Box::new(lapa_model::vla::export::load_policy(bundle, device)?)
    })
}

/// A plan with every linear layer under `scheme` except `keep_f32`.
pub fn uniform_plan(layers: &[String], scheme: impl Fn(&str) -> Scheme, keep_f32: &[String], made_by: String) -> QuantPlan {
    let layers = layers.iter().map(|l| (l.clone(), if keep_f32.contains(l) { LayerPlan::F32 {} } else { scheme(l).into() })).collect();
    QuantPlan { format: PLAN_FORMAT, made_by, layers }
}
