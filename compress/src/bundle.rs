//! Compressed policies in the model bundle: a `quant.json` part says each linear layer's scheme
//! (f32, int8 dynamic or static, int4 weight-only), the manifest `requires` [`INT8`] (the
//! compressed engine, whatever the schemes), and the f32 weights stay the bundle's `policy.bpk`. The board
//! quantizes them at load (per-channel int8 is deterministic, so it computes exactly what the
//! workstation measured); the whole plan is covered by the manifest's hashes and signature.

use std::collections::BTreeMap;
use std::path::Path;

use lapa_model::bundle::Bundle;
use lapa_model::signing::SecretKey;
use serde::{Deserialize, Serialize};

use crate::CompressError;
use crate::engine::Engine;
use crate::kernel::Scheme;
use crate::policy::EnginePolicy;

/// The plan's part name.
pub const QUANT_PART: &str = "quant.json";
/// The requirement every compressed bundle names (the compressed engine).
pub const INT8: &str = "int8";
/// Named as well when a layer is int4 weight-only, so a runtime from before that scheme refuses
/// the bundle by name instead of failing on its plan.
pub const INT4: &str = "int4";
/// The plan format this build writes and reads.
pub const PLAN_FORMAT: u32 = 1;

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
    /// Checks the plan against the engine's layers: every layer named once, no other.
    fn check(&self, layers: &[String]) -> Result<(), String> {
        if self.format != PLAN_FORMAT {
            return Err(format!("format {}: this build reads plan format {PLAN_FORMAT}", self.format));
        }
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
    Ok(lapa_model::vla::export::write_bundle_with(model_dir, text_dir, out, name, signer, vec![(QUANT_PART, json)], requires)?)
}

/// The compressed policy of a checked bundle that requires [`INT8`].
pub fn load_policy(bundle: &Bundle) -> Result<EnginePolicy, CompressError> {
    let at = |m: String| CompressError::Model(format!("{}: {m}", bundle.root.join(QUANT_PART).display()));
    let m = &bundle.manifest;
    if m.requires.iter().any(|r| r != INT8 && r != INT4) || !m.requires.iter().any(|r| r == INT8) {
        return Err(CompressError::Model(format!(
            "{}: requires {:?}; the compressed runtime runs [\"{INT8}\"] and [\"{INT8}\", \"{INT4}\"]",
            bundle.root.display(),
            m.requires
        )));
    }
    let path = bundle.part(QUANT_PART).ok_or_else(|| at("missing: an int8 bundle carries its plan".into()))?;
    let bytes = std::fs::read(&path).map_err(|e| at(e.to_string()))?;
    let plan: QuantPlan = lapa_model::artifact::json_slice(&bytes).map_err(at)?;
    // The MiniLM encoder (once per instruction) runs in burn on the CPU.
    let device = lapa_model::device("cpu")?;
    let (cfg, model, encoder) = lapa_model::vla::export::load_parts(bundle, &device)?;
    let params = lapa_model::artifact::named_params(&model)?;
    plan.check(&layer_names(&cfg, &params)?).map_err(at)?;
    let int4_layers = plan.layers.values().any(|p| matches!(p, LayerPlan::Int4Weights {}));
    if int4_layers != m.requires.iter().any(|r| r == INT4) {
        return Err(at(format!("the plan's int4 layers and the manifest's requires {:?} disagree", m.requires)));
    }
    let engine = Engine::new(&cfg, params, &|name| plan.layers.get(name).copied().map_or(Scheme::F32, Scheme::from))?;
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
