//! `lapa train laq`: the LAQ training loop (Adam, constant lr, gradient clipping, LAPA's dead-code
//! schedule), with atomic checkpoints, exact resume, a metrics CSV and PNG curves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lapa_model::Quantizer;
use lapa_model::burn::grad_clipping::GradientClippingConfig;
use lapa_model::burn::module::Module;
use lapa_model::burn::nn::{Linear, LinearConfig};
use lapa_model::burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use lapa_model::burn::tensor::{Device, Tensor, TensorData};
use lapa_model::nsvq::{code_counts, perplexity};
use lapa_model::{Laq, LaqConfig, artifact};
use lapa_sim::rng::Rng;
use serde::{Deserialize, Serialize};

use super::cache::{FrameCache, Pair, Source};
use super::loader::{Augment, BatchSpec, LabeledPair, PairPool};
use crate::trainer::{Cadence, Loader};

/// LAPA's dead-code schedule: replace at steps 10–90 (every 10), 100–900 (every 100) and
/// 500–4500 (every 500); then every 1000 steps, never after `last_step` (LAPA: 5000).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeadCode {
    pub enabled: bool,
    /// A code used fewer than `threshold × batch_size` times since the last replacement is dead.
    pub threshold: f32,
    /// Std of the noise added to the copied code.
    pub noise: f32,
    pub last_step: u64,
    /// Re-seed dead codes from the batch's encoder outputs instead of from used codes (LAPA).
    #[serde(default)]
    pub from_batch: bool,
}

impl DeadCode {
    pub const LAPA: Self = Self { enabled: true, threshold: 0.1, noise: 0.01, last_step: 5000, from_batch: false };

    pub fn due(&self, step: u64) -> bool {
        self.enabled
            && step <= self.last_step
            && ((10..100).contains(&step) && step.is_multiple_of(10)
                || (100..1000).contains(&step) && step.is_multiple_of(100)
                || (500..5000).contains(&step) && step.is_multiple_of(500)
                || step > 5000 && step.is_multiple_of(1000))
    }
}

/// A departure from LAPA (lever (a) of the second LAQ pass, after LAOM and CLAM): a linear head
/// from the quantized latent to the action, trained beside the reconstruction on a few labelled
/// episodes only. The action of a pair is the joint displacement over its window (t → t+H, from
/// `observation.state`), standardised per joint over the labelled pairs. The head is a training
/// aid: the saved LAQ artifact is the same module without it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSupervision {
    /// Labelled episodes: the first this many clips of `data[0]` outside the report's held-out
    /// fifth (clip index not a multiple of 5), so no held-out episode's action is ever seen.
    pub episodes: usize,
    /// Samples of every batch drawn from the labelled episodes (the rest as without supervision).
    pub per_batch: usize,
    /// Weight of the head's MSE (standardised targets) beside the reconstruction MSE.
    pub weight: f32,
}

impl ActionSupervision {
    pub fn validate(&self, batch_size: usize) -> Result<()> {
        if self.episodes == 0 || self.per_batch == 0 || self.per_batch > batch_size {
            bail!("action supervision: episodes must be positive and per_batch in 1..={batch_size} (the batch size)");
        }
        // 0 is allowed: the control with the same batches and a head that never reaches the LAQ.
        if !(self.weight >= 0.0 && self.weight.is_finite()) {
            bail!("action supervision: weight must be a non-negative number, got {}", self.weight);
        }
        Ok(())
    }
}

/// Everything a run needs besides the model config; saved as `train.json` in the run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaqTrainConfig {
    pub data: Vec<PathBuf>,
    pub camera: Option<String>,
    /// Frame spacing H in seconds (converted per source fps).
    pub spacing_s: f64,
    pub batch_size: usize,
    pub steps: u64,
    pub lr: f64,
    pub beta_1: f32,
    pub beta_2: f32,
    /// Gradient clipping by norm (per parameter tensor, as burn's optimiser applies it).
    pub grad_clip: Option<f32>,
    pub seed: u64,
    pub dead_code: DeadCode,
    pub augment: Augment,
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub loader_threads: usize,
    /// Off (None) in LAPA; see [`ActionSupervision`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_supervision: Option<ActionSupervision>,
}

impl LaqTrainConfig {
    /// LAPA's optimiser settings (Adam, lr 1e-4, betas 0.9/0.99, clip 0.5) with small-run defaults.
    pub fn lapa(data: Vec<PathBuf>, spacing_s: f64) -> Self {
        Self {
            data,
            camera: None,
            spacing_s,
            batch_size: 32,
            steps: 2000,
            lr: 1e-4,
            beta_1: 0.9,
            beta_2: 0.99,
            grad_clip: Some(0.5),
            seed: 0,
            dead_code: DeadCode::LAPA,
            augment: Augment::NONE,
            log_every: 25,
            checkpoint_every: 500,
            loader_threads: 1,
            action_supervision: None,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub first_loss: f32,
    pub last_loss: f32,
    pub perplexity: f64,
    pub codes_used: usize,
    pub samples_per_s: f64,
    pub model_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct CkptState {
    /// Code usage since the last dead-code replacement.
    dead_counts: Vec<usize>,
}

pub use crate::trainer::{CKPT_DIR, METRICS_FILE, MODEL_DIR, TRAIN_FILE, checkpoint_step, find_checkpoint};
const METRICS_HEADER: &str = "step,loss,perplexity,codes_used,samples_per_s,elapsed_s,replaced_codes";
// Checkpoint parts of the action head (`.bpk` is added).
const HEAD_WEIGHTS: &str = "action_head";
const HEAD_OPTIM: &str = "action_head_optim";

/// Opens (decoding if needed) every source's frame cache and collects the training pairs.
pub fn load_pool(data: &[PathBuf], camera: Option<&str>, side: usize, spacing_s: f64, cache_dir: &Path, quiet: bool) -> Result<PairPool> {
    load_pool_with(data, camera, side, spacing_s, cache_dir, quiet, None)
}

/// [`load_pool`], with the labelled pairs of `supervision`'s episodes when it is set.
pub fn load_pool_with(
    data: &[PathBuf],
    camera: Option<&str>,
    side: usize,
    spacing_s: f64,
    cache_dir: &Path,
    quiet: bool,
    supervision: Option<&ActionSupervision>,
) -> Result<PairPool> {
    if data.is_empty() {
        bail!("no --data given");
    }
    let mut caches = Vec::new();
    let mut pairs = Vec::new();
    for (i, path) in data.iter().enumerate() {
        let source = Source::detect(path, camera)?;
        let cache = FrameCache::open_or_build(&source, side, cache_dir, quiet)?;
        pairs.extend(cache.pairs(spacing_s)?.into_iter().map(|p| (i, p)));
        caches.push(Arc::new(cache));
    }
    let labeled = match supervision {
        None => Vec::new(),
        Some(sup) => labeled_pairs(&data[0], camera, &caches[0], &pairs, sup)?,
    };
    Ok(PairPool { caches, pairs, labeled })
}

/// The pairs of the labelled episodes of source 0, with standardised joint-displacement targets.
fn labeled_pairs(path: &Path, camera: Option<&str>, cache: &FrameCache, pairs: &[(usize, Pair)], sup: &ActionSupervision) -> Result<Vec<LabeledPair>> {
    let source = Source::detect(path, camera)?;
    let clips = &cache.meta.clips;
    let Some(states) = super::report::probe_states(&source, clips)? else {
        bail!("{}: action supervision needs data[0] to be a LeRobot dataset with observation.state in every episode", path.display());
    };
    // The first N clips outside the report's held-out fifth, by clip index. A clip too short to
    // hold a pair counts as one of the N and contributes no pairs: the rule depends only on the
    // dataset's episode order, so a run's labelled set is fixed by its train.json.
    let chosen: Vec<usize> = (0..clips.len()).filter(|&c| !super::report::is_held_out(c)).take(sup.episodes).collect();
    if chosen.len() < sup.episodes {
        bail!("{}: action supervision asks for {} labelled episodes; only {} lie outside the held-out fifth", path.display(), sup.episodes, chosen.len());
    }
    let mut out = Vec::new();
    for &(ci, p) in pairs.iter().filter(|(ci, p)| *ci == 0 && chosen.contains(&p.clip)) {
        let s = &states[&p.clip];
        let start = clips[p.clip].start;
        let (ra, rb) = (s.row(p.a - start), s.row(p.b - start));
        out.push(LabeledPair { cache: ci, pair: p, target: rb.iter().zip(ra).map(|(b, a)| b - a).collect() });
    }
    if out.is_empty() {
        bail!("{}: the labelled episodes hold no training pairs", path.display());
    }
    let dim = out[0].target.len();
    let n = out.len() as f64;
    for j in 0..dim {
        let mean = out.iter().map(|l| f64::from(l.target[j])).sum::<f64>() / n;
        let sd = (out.iter().map(|l| (f64::from(l.target[j]) - mean).powi(2)).sum::<f64>() / n).sqrt().max(1e-6);
        for l in &mut out {
            l.target[j] = ((f64::from(l.target[j]) - mean) / sd) as f32;
        }
    }
    Ok(out)
}

/// The LAQ as a [`crate::trainer::Stage`]: reconstruction (and, with action supervision, the
/// head's MSE), LAPA's dead-code replacement, code-usage metrics.
struct LaqStage {
    cfg: LaqTrainConfig,
    model_cfg: LaqConfig,
    model: Option<Laq>,
    opt: ModuleOptimizer,
    head: Option<Linear>,
    head_opt: ModuleOptimizer,
    device: Device,
    vocab: usize,
    action_dim: usize,
    dead_counts: Vec<usize>,
    win: LaqWindow,
    first_loss: f32,
    last_loss: f32,
    last_ppl: f64,
    last_used: usize,
    last_sps: f64,
}

#[derive(Default)]
struct LaqWindow {
    loss: f64,
    n: u64,
    counts: Vec<usize>,
    replaced: usize,
    action: f64,
}

impl LaqStage {
    fn model(&self) -> &Laq {
        self.model.as_ref().expect("the model is only taken inside a step")
    }
}

impl crate::trainer::Stage for LaqStage {
    type Batch = super::loader::Batch;

    fn header(&self) -> String {
        format!("{METRICS_HEADER}{}", if self.cfg.action_supervision.is_some() { ",action_loss" } else { "" })
    }

    fn step(&mut self, step: u64, batch: Self::Batch) -> Result<()> {
        let (cfg, mc) = (&self.cfg, &self.model_cfg);
        let (b, t, c) = (cfg.batch_size, mc.n_tokens, mc.code_dim);
        let shape = [b, mc.n_patches(), mc.patch_dim()];
        let ad = &self.device;
        debug_assert_eq!(batch.step, step);
        let x0 = Tensor::<3>::from_data(TensorData::new(batch.first, shape), ad);
        let x1 = Tensor::<3>::from_data(TensorData::new(batch.second, shape), ad);
        let noise = Tensor::<2>::from_data(TensorData::new(batch.noise, [b * t, c]), ad);
        let mut model = self.model.take().expect("model present between steps");
        let out = model.forward_train(x0, x1, noise);
        let loss: f32 = out.loss.clone().into_scalar();
        if !loss.is_finite() {
            bail!("loss became {loss} at step {step}; lower --lr or check the data");
        }
        let idx: Vec<i64> = out.indices.into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let latents = out.latents;
        let mut total = out.loss;
        if let (Some(h), Some(s)) = (&self.head, &cfg.action_supervision) {
            let a = self.action_dim;
            let labeled = batch.labeled.iter().filter(|&&m| m > 0.0).count().max(1);
            let mask: Vec<f32> = batch.labeled.iter().flat_map(|&m| std::iter::repeat_n(m, a)).collect();
            let pred = h.forward(out.quantized.reshape([b, t * c])); // [b, action_dim]
            let target = Tensor::<2>::from_data(TensorData::new(batch.action, [b, a]), ad);
            let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, a]), ad);
            let action_loss = ((pred - target).powi_scalar(2) * mask).sum().div_scalar((labeled * a) as f32); // [1]
            let al: f32 = action_loss.clone().into_scalar();
            if !al.is_finite() {
                bail!("the action head's loss became {al} at step {step}");
            }
            self.win.action += f64::from(al);
            total = total + action_loss.mul_scalar(s.weight);
        }
        let mut grads = total.backward();
        let model_grads = GradientsParams::from_module(&mut grads, &model);
        model = self.opt.step(cfg.lr, model, model_grads);
        if let Some(h) = self.head.take() {
            let hg = GradientsParams::from_module(&mut grads, &h);
            self.head = Some(self.head_opt.step(cfg.lr, h, hg));
        }
        let counts = code_counts(&idx, self.vocab);
        for (k, &n) in counts.iter().enumerate() {
            self.win.counts[k] += n;
            self.dead_counts[k] += n;
        }
        if self.first_loss.is_nan() {
            self.first_loss = loss;
        }
        self.last_loss = loss;
        self.win.loss += f64::from(loss);
        self.win.n += 1;
        let done = step + 1;
        // Dead-code replacement is NSVQ's; FSQ has no codebook.
        if cfg.dead_code.due(done)
            && let Quantizer::Nsvq(nsvq) = &model.quantizer
        {
            let mut rng = Rng::new(cfg.seed ^ done.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0xDEAD);
            let mut rng2 = rng.fork(1);
            let cand: Option<Vec<f32>> = if cfg.dead_code.from_batch {
                Some(latents.clone().into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?)
            } else {
                None
            };
            let (q, dead) = nsvq
                .clone()
                .replace_dead_codes(
                    &self.dead_counts,
                    cfg.dead_code.threshold * b as f32,
                    cfg.dead_code.noise,
                    cand.as_deref(),
                    |n| rng.below(n),
                    || rng2.normal(),
                )
                .with_context(|| format!("step {done}: dead-code replacement"))?;
            model.quantizer = Quantizer::Nsvq(q);
            self.win.replaced += dead.len();
            self.dead_counts.iter_mut().for_each(|x| *x = 0);
        }
        self.model = Some(model);
        Ok(())
    }

    fn log(&mut self, window_steps: u64, window: std::time::Duration, elapsed: std::time::Duration) -> (String, String) {
        let b = self.cfg.batch_size;
        let w = std::mem::take(&mut self.win);
        let n = w.n.max(1);
        debug_assert_eq!(w.n, window_steps);
        let sps = (w.n as usize * b) as f64 / window.as_secs_f64().max(1e-9);
        self.last_ppl = perplexity(&w.counts);
        self.last_used = w.counts.iter().filter(|&&x| x > 0).count();
        self.last_sps = sps;
        let mean = w.loss / n as f64;
        let action_col = if self.cfg.action_supervision.is_some() { format!(",{:.6}", w.action / n as f64) } else { String::new() };
        self.win.counts = vec![0; self.vocab];
        let row = format!("{mean:.6},{:.4},{},{sps:.2},{:.2},{}{action_col}", self.last_ppl, self.last_used, elapsed.as_secs_f64(), w.replaced);
        (row, format!("loss {mean:.5} ppl {:.2} codes {}/{} {sps:.0} samples/s", self.last_ppl, self.last_used, self.vocab))
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<serde_json::Value> {
        crate::trainer::save_state(dir, "model", "optim", self.model(), &self.opt)?;
        if let Some(h) = &self.head {
            crate::trainer::save_state(dir, HEAD_WEIGHTS, HEAD_OPTIM, h, &self.head_opt)?;
        }
        Ok(serde_json::to_value(CkptState { dead_counts: self.dead_counts.clone() })?)
    }

    fn load_checkpoint(&mut self, ck: &Path, state: &serde_json::Value) -> Result<()> {
        let state: CkptState = serde_json::from_value(state.clone()).with_context(|| format!("{}: bad state.json", ck.display()))?;
        if state.dead_counts.len() != self.vocab {
            bail!("{}: code counts do not match the vocabulary of {}", ck.display(), self.vocab);
        }
        self.dead_counts = state.dead_counts;
        let model = self.model.take().expect("model present");
        self.model = Some(crate::trainer::load_state(ck, "model", "optim", model, &mut self.opt)?);
        if let Some(h) = self.head.take() {
            self.head = Some(crate::trainer::load_state(ck, HEAD_WEIGHTS, HEAD_OPTIM, h, &mut self.head_opt)?);
        }
        Ok(())
    }

    fn save_artifact(&self, dir: &Path) -> Result<()> {
        Ok(artifact::save_laq(dir, &self.model_cfg, self.model())?)
    }

    fn plot(&self, metrics: &Path, png: &Path) -> Result<()> {
        super::plot::curves(metrics, png)
    }
}

/// Trains (or resumes) a LAQ run in `run`.
pub fn train(cfg: &LaqTrainConfig, model_cfg: &LaqConfig, run: &Path, device: &Device, cache_dir: &Path, resume: bool, quiet: bool) -> Result<TrainSummary> {
    model_cfg.validate()?;
    if let Some(sup) = &cfg.action_supervision {
        sup.validate(cfg.batch_size)?;
    }
    std::fs::create_dir_all(run).with_context(|| format!("{}: cannot create run folder", run.display()))?;
    let sup = cfg.action_supervision;
    let pool = Arc::new(load_pool_with(&cfg.data, cfg.camera.as_deref(), model_cfg.image_size, cfg.spacing_s, cache_dir, quiet, sup.as_ref())?);
    let action_dim = pool.labeled.first().map_or(0, |l| l.target.len());
    // Seeded right before the initialisations it drives, with the action head (lever (a):
    // [T·c] quantized latent → [action_dim]) drawn right after the LAQ: burn's seed is global,
    // so anything between would let other work in the process change the head's start.
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let model = model_cfg.init(&ad)?;
    let head: Option<Linear> = sup.map(|_| LinearConfig::new(model_cfg.n_tokens * model_cfg.code_dim, action_dim).init(&ad));
    // One optimiser config for the LAQ and (with action supervision) its head.
    let adam = || AdamConfig::new().with_beta_1(cfg.beta_1).with_beta_2(cfg.beta_2).with_grad_clipping(cfg.grad_clip.map(GradientClippingConfig::Norm));
    let vocab = model_cfg.vocabulary();
    let mut stage = LaqStage {
        cfg: cfg.clone(),
        model_cfg: model_cfg.clone(),
        model: Some(model),
        opt: adam().init(),
        head,
        head_opt: adam().init(),
        device: ad,
        vocab,
        action_dim,
        dead_counts: vec![0; vocab],
        win: LaqWindow { counts: vec![0; vocab], ..LaqWindow::default() },
        first_loss: f32::NAN,
        last_loss: f32::NAN,
        last_ppl: 0.0,
        last_used: 0,
        last_sps: 0.0,
    };
    let start = crate::trainer::begin(&mut stage, run, resume, cfg, quiet)?;
    if let Some(s) = &sup
        && !quiet
    {
        println!(
            "action supervision (a departure from LAPA): {} labelled episodes ({} with pairs), {} pairs, {} of {} samples per batch, weight {}",
            s.episodes,
            pool.labeled.iter().map(|l| l.pair.clip).collect::<std::collections::BTreeSet<_>>().len(),
            pool.labeled.len(),
            s.per_batch,
            cfg.batch_size,
            s.weight
        );
    }
    if !quiet {
        println!(
            "{} training pairs from {} source(s); {} parameters; batch {}; steps {start}..{}",
            pool.pairs.len(),
            pool.caches.len(),
            stage.model().num_params(),
            cfg.batch_size,
            cfg.steps
        );
    }
    let (t, c) = (model_cfg.n_tokens, model_cfg.code_dim);
    let spec = BatchSpec {
        batch_size: cfg.batch_size,
        side: model_cfg.image_size,
        patch: model_cfg.patch_size,
        noise_len_per_sample: t * c,
        augment: cfg.augment,
        seed: cfg.seed,
        labeled_per_batch: sup.map_or(0, |s| s.per_batch),
        action_dim,
    };
    let make = Arc::new(move |step: u64| super::loader::make_batch(&pool, &spec, step));
    let mut loader = Loader::start(make, start, cfg.steps, cfg.loader_threads, 4);
    let cadence = Cadence { steps: cfg.steps, log_every: cfg.log_every, checkpoint_every: cfg.checkpoint_every };
    crate::trainer::fit(&mut stage, run, cadence, start, &mut loader, quiet)?;
    Ok(TrainSummary {
        steps: cfg.steps,
        first_loss: stage.first_loss,
        last_loss: stage.last_loss,
        perplexity: stage.last_ppl,
        codes_used: stage.last_used,
        samples_per_s: stage.last_sps,
        model_dir: run.join(MODEL_DIR),
    })
}
