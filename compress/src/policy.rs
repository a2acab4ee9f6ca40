//! The compressed engine as a [`lapa_model::Policy`]: frames are cropped and resized as the
//! training frames were, instructions encoded once per distinct string (the frozen MiniLM stays f32
//! in burn: it runs once per instruction, not per step), and logits decoded at the bin midpoints.

use std::collections::HashMap;

use lapa_model::policy::{ActionSpec, CameraSpec, PolicyError, PolicyInput};
use lapa_model::text::SentenceEncoder;
use lapa_model::vla::{ActionHeadConfig, ActionTarget, HeadConfig};

use crate::engine::{Engine, Text};

/// The pool the engine's steps run on: one thread (see [`EnginePolicy`]'s `infer`); `None` if
/// the OS would not start it (the step then runs on the caller's pool).
fn one_thread() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "lapa-engine".into()).build().ok()).as_ref()
}

/// Distinct instructions kept encoded.
const TEXT_CACHE: usize = 4096;

/// An [`Engine`] that drives an arm.
pub struct EnginePolicy {
    engine: Engine,
    head: ActionHeadConfig,
    camera: CameraSpec,
    encoder: Option<SentenceEncoder>,
    /// Hashed ids and weights, or the sentence embedding, per instruction.
    text_cache: HashMap<String, (Vec<i64>, Vec<f32>)>,
    label: String,
}

impl std::fmt::Debug for EnginePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnginePolicy({})", self.label)
    }
}

impl EnginePolicy {
    /// `encoder` is the frozen sentence encoder when the config names one.
    pub fn new(engine: Engine, encoder: Option<SentenceEncoder>, label: impl Into<String>) -> Result<Self, crate::CompressError> {
        let cfg = engine.config();
        let HeadConfig::Action(head) = cfg.head.clone() else { return Err(crate::CompressError::Model("not an action policy".into())) };
        if cfg.text.frozen_dim().is_some() != encoder.is_some() {
            return Err(crate::CompressError::Model("the policy's text config and its text encoder disagree".into()));
        }
        let camera = CameraSpec { width: cfg.image_size, height: cfg.image_size, crop: None };
        Ok(Self { engine, head, camera, encoder, text_cache: HashMap::new(), label: label.into() })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The logits `[chunk · dims, bins]` of one input (the sensitivity scan compares these).
    pub fn logits(&mut self, inp: &PolicyInput<'_>) -> Result<Vec<f32>, PolicyError> {
        let cfg = self.engine.config().clone();
        let (side, patch) = (cfg.image_size, cfg.patch_size);
        let f = inp.frame;
        let img = self.camera.apply(f.width, f.height, f.rgb).map_err(PolicyError::Input)?;
        let mut patches = Vec::with_capacity(side * side * 3);
        lapa_model::laq::patchify(&img, side, patch, &mut patches);
        if !self.text_cache.contains_key(inp.instruction) {
            let t = match &mut self.encoder {
                None => cfg.text.tokenize(inp.instruction).map_err(|e| PolicyError::Input(e.to_string()))?,
                Some(enc) => (Vec::new(), enc.embed(&[inp.instruction]).map_err(|e| PolicyError::Input(e.to_string()))?.remove(0)),
            };
            if self.text_cache.len() >= TEXT_CACHE {
                self.text_cache.clear();
            }
            self.text_cache.insert(inp.instruction.to_string(), t);
        }
        let (ids, vals) = &self.text_cache[inp.instruction];
        let text = if self.encoder.is_some() { Text::Embedded(vals) } else { Text::Hashed { ids, weights: vals } };
        let state: Option<Vec<f32>> = match &cfg.state {
            Some(s) => {
                if inp.state.len() != s.mean.len() {
                    return Err(PolicyError::Input(format!("state has {} values, the policy takes {}", inp.state.len(), s.mean.len())));
                }
                Some(s.standardise(inp.state).collect())
            }
            None => None,
        };
        self.engine.forward(&patches, text, state.as_deref(), &mut |_, _, _| {}).map_err(|e| PolicyError::Input(e.to_string()))
    }
}

impl lapa_model::Policy for EnginePolicy {
    fn action_spec(&self) -> &ActionSpec {
        &self.head.spec
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn infer(&mut self, inp: &PolicyInput<'_>) -> Result<Vec<Vec<f32>>, PolicyError> {
        let dims = self.head.spec.names.len();
        if self.head.target == ActionTarget::Delta && inp.state.len() < dims {
            return Err(PolicyError::Input(format!("state has {} values; delta actions need {dims}", inp.state.len())));
        }
        // One thread: at a policy's size (tens of tokens, width ~200) the GEMMs are too small to
        // split — on small, 2 threads made a step 1.9× slower — and the board's other cores stay
        // free for the servo loop and the camera.
        let logits = match one_thread() {
            Some(pool) => pool.install(|| self.logits(inp))?,
            None => self.logits(inp)?,
        };
        let bins = self.head.bins;
        let chunk = self.head.spec.chunk;
        Ok((0..chunk)
            .map(|j| {
                (0..dims)
                    .map(|i| {
                        let row = &logits[(j * dims + i) * bins..(j * dims + i + 1) * bins];
                        // The first maximum, as burn's argmax takes it.
                        let best = row.iter().enumerate().fold(0, |b, (k, v)| if *v > row[b] { k } else { b });
                        let v = self.head.edges[i].decode(best);
                        if self.head.target == ActionTarget::Delta { v + inp.state[i] } else { v }
                    })
                    .collect()
            })
            .collect())
    }
}
