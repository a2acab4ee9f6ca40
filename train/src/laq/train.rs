//! `lapa train laq`: the LAQ training loop (Adam, constant lr, gradient clipping, LAPA's dead-code
//! schedule), with atomic checkpoints, exact resume, a metrics CSV and PNG curves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lapa_model::Quantizer;
use lapa_model::burn::grad_clipping::GradientClippingConfig;
use lapa_model::burn::module::Module;
use lapa_model::burn::nn::{Linear, LinearConfig};
use lapa_model::burn::optim::{AdamConfig, GradientsParams, OptimizerRecord};
use lapa_model::burn::tensor::{Device, Tensor, TensorData};
use lapa_model::nsvq::{code_counts, perplexity};
use lapa_model::{Laq, LaqConfig, artifact};
use lapa_sim::rng::Rng;
use serde::{Deserialize, Serialize};

use super::cache::{FrameCache, Pair, Source};
use super::loader::{Augment, BatchSpec, LabeledPair, Loader, PairPool};

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
    step: u64,
    /// Code usage since the last dead-code replacement.
    dead_counts: Vec<usize>,
}

pub const TRAIN_FILE: &str = "train.json";
pub const MODEL_DIR: &str = "model";
pub const CKPT_DIR: &str = "checkpoint";
pub const METRICS_FILE: &str = "metrics.csv";
const METRICS_HEADER: &str = "step,loss,perplexity,codes_used,samples_per_s,elapsed_s,replaced_codes";
const HEAD_WEIGHTS: &str = "action_head.bpk";
const HEAD_OPTIM: &str = "action_head_optim.bpk";

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

fn checkpoint(run: &Path, model: &Laq, optim_record: OptimizerRecord, head: Option<(&Linear, OptimizerRecord)>, state: &CkptState) -> Result<()> {
    let new = run.join(format!("{CKPT_DIR}.new"));
    let old = run.join(format!("{CKPT_DIR}.old"));
    let cur = run.join(CKPT_DIR);
    if new.exists() {
        std::fs::remove_dir_all(&new)?;
    }
    std::fs::create_dir_all(&new)?;
    let mbytes = model.clone().into_record().into_bytes().map_err(|e| anyhow::anyhow!("serialising weights: {e:?}"))?;
    lapa_fs::atomic_write(&new.join("model.bpk"), &mbytes)?;
    let obytes = optim_record.into_bytes().map_err(|e| anyhow::anyhow!("serialising optimiser state: {e:?}"))?;
    lapa_fs::atomic_write(&new.join("optim.bpk"), &obytes)?;
    if let Some((h, hrec)) = head {
        let hb = h.clone().into_record().into_bytes().map_err(|e| anyhow::anyhow!("serialising the action head: {e:?}"))?;
        lapa_fs::atomic_write(&new.join(HEAD_WEIGHTS), &hb)?;
        let ob = hrec.into_bytes().map_err(|e| anyhow::anyhow!("serialising the action head's optimiser state: {e:?}"))?;
        lapa_fs::atomic_write(&new.join(HEAD_OPTIM), &ob)?;
    }
    lapa_fs::atomic_write(&new.join("state.json"), &serde_json::to_vec_pretty(state)?)?;
    if cur.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(&cur, &old)?;
    }
    std::fs::rename(&new, &cur)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// The step of a run's last checkpoint, if it has one.
pub fn checkpoint_step(run: &Path) -> Option<u64> {
    let ck = find_checkpoint(run)?;
    let state: CkptState = serde_json::from_slice(&std::fs::read(ck.join("state.json")).ok()?).ok()?;
    Some(state.step)
}

/// The folder of a run's last complete checkpoint, if it has one.
pub fn find_checkpoint(run: &Path) -> Option<PathBuf> {
    [CKPT_DIR, "checkpoint.old"].iter().map(|d| run.join(d)).find(|d| d.join("state.json").is_file())
}

/// Keeps the CSV rows up to `step` (a resumed run rewrites what came after its checkpoint).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> =
        text.lines().filter(|l| l.starts_with("step") || l.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s <= step)).collect();
    lapa_fs::atomic_write(path, (kept.join("\n") + "\n").as_bytes())?;
    Ok(())
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
    let mut model = model_cfg.init(&ad)?;
    let mut head: Option<Linear> = sup.map(|_| LinearConfig::new(model_cfg.n_tokens * model_cfg.code_dim, action_dim).init(&ad));
    // One optimiser config for the LAQ and (with action supervision) its head.
    let adam = || AdamConfig::new().with_beta_1(cfg.beta_1).with_beta_2(cfg.beta_2).with_grad_clipping(cfg.grad_clip.map(GradientClippingConfig::Norm));
    let mut opt = adam().init();
    let mut start = 0u64;
    let mut resumed_from: Option<PathBuf> = None;
    let vocab = model_cfg.vocabulary();
    let mut dead_counts = vec![0usize; vocab];
    if resume {
        let ck = find_checkpoint(run).with_context(|| format!("{}: --resume but no checkpoint in the run folder", run.display()))?;
        let state: CkptState = serde_json::from_slice(&std::fs::read(ck.join("state.json"))?).with_context(|| format!("{}: bad state.json", ck.display()))?;
        model = artifact::load_weights(&ck.join("model.bpk"), model)?;
        let orec = OptimizerRecord::load(ck.join("optim.bpk"))
            .map_err(|e| anyhow::anyhow!("{}: unreadable optimiser state: {e:?}", ck.join("optim.bpk").display()))?;
        opt = opt.load_record(orec);
        start = state.step;
        resumed_from = Some(ck.clone());
        dead_counts = state.dead_counts;
        if dead_counts.len() != vocab {
            bail!("{}: code counts do not match the vocabulary of {vocab}", ck.display());
        }
        truncate_metrics(&run.join(METRICS_FILE), start)?;
        if !quiet {
            println!("resuming {} at step {start}", run.display());
        }
    } else {
        for stale in [CKPT_DIR, "checkpoint.old", METRICS_FILE] {
            let p = run.join(stale);
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else if p.is_file() {
                std::fs::remove_file(&p)?;
            }
        }
    }
    lapa_fs::atomic_write(&run.join(TRAIN_FILE), &serde_json::to_vec_pretty(cfg)?)?;
    artifact::save_laq(&run.join(MODEL_DIR), model_cfg, &model)?;

    let mut head_opt = adam().init();
    if let Some(ck) = &resumed_from
        && let Some(h) = head.take()
    {
        head = Some(artifact::load_weights(&ck.join(HEAD_WEIGHTS), h)?);
        let rec = OptimizerRecord::load(ck.join(HEAD_OPTIM))
            .map_err(|e| anyhow::anyhow!("{}: unreadable action-head optimiser state: {e:?}", ck.join(HEAD_OPTIM).display()))?;
        head_opt = head_opt.load_record(rec);
    }
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
            model.num_params(),
            cfg.batch_size,
            cfg.steps
        );
    }
    let (b, t, c) = (cfg.batch_size, model_cfg.n_tokens, model_cfg.code_dim);
    let spec = BatchSpec {
        batch_size: b,
        side: model_cfg.image_size,
        patch: model_cfg.patch_size,
        noise_len_per_sample: t * c,
        augment: cfg.augment,
        seed: cfg.seed,
        labeled_per_batch: sup.map_or(0, |s| s.per_batch),
        action_dim,
    };
    let mut loader = Loader::start(pool, spec, start, cfg.steps, cfg.loader_threads, 4);
    let shape = [b, model_cfg.n_patches(), model_cfg.patch_dim()];

    let metrics_path = run.join(METRICS_FILE);
    let new_file = !metrics_path.is_file();
    let mut metrics = std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path)?;
    if new_file {
        writeln!(metrics, "{METRICS_HEADER}{}", if sup.is_some() { ",action_loss" } else { "" })?;
    }
    let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::new(cfg.steps) };
    pb.set_style(ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg} ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    pb.set_position(start);

    let t0 = Instant::now();
    let mut win_loss = 0.0f64;
    let mut win_n = 0u64;
    let mut win_counts = vec![0usize; vocab];
    let mut win_t = Instant::now();
    let mut win_replaced = 0usize;
    let mut win_action = 0.0f64;
    let (mut first_loss, mut last_loss) = (f32::NAN, f32::NAN);
    let (mut last_ppl, mut last_used, mut last_sps) = (0.0, 0, 0.0);
    for step in start..cfg.steps {
        let Some(batch) = loader.next_batch() else { bail!("the data loader stopped early at step {step}") };
        debug_assert_eq!(batch.step, step);
        let x0 = Tensor::<3>::from_data(TensorData::new(batch.first, shape), &ad);
        let x1 = Tensor::<3>::from_data(TensorData::new(batch.second, shape), &ad);
        let noise = Tensor::<2>::from_data(TensorData::new(batch.noise, [b * t, c]), &ad);
        let out = model.forward_train(x0, x1, noise);
        let loss: f32 = out.loss.clone().into_scalar();
        if !loss.is_finite() {
            bail!("loss became {loss} at step {step}; lower --lr or check the data");
        }
        let idx: Vec<i64> = out.indices.into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let latents = out.latents;
        let mut total = out.loss;
        if let (Some(h), Some(s)) = (&head, &sup) {
            let a = action_dim;
            let labeled = batch.labeled.iter().filter(|&&m| m > 0.0).count().max(1);
            let mask: Vec<f32> = batch.labeled.iter().flat_map(|&m| std::iter::repeat_n(m, a)).collect();
            let pred = h.forward(out.quantized.reshape([b, t * c])); // [b, action_dim]
            let target = Tensor::<2>::from_data(TensorData::new(batch.action, [b, a]), &ad);
            let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, a]), &ad);
            let action_loss = ((pred - target).powi_scalar(2) * mask).sum().div_scalar((labeled * a) as f32); // [1]
            let al: f32 = action_loss.clone().into_scalar();
            if !al.is_finite() {
                bail!("the action head's loss became {al} at step {step}");
            }
            win_action += f64::from(al);
            total = total + action_loss.mul_scalar(s.weight);
        }
        let mut grads = total.backward();
        let model_grads = GradientsParams::from_module(&mut grads, &model);
        model = opt.step(cfg.lr, model, model_grads);
        if let Some(h) = head.take() {
            let hg = GradientsParams::from_module(&mut grads, &h);
            head = Some(head_opt.step(cfg.lr, h, hg));
        }
        let counts = code_counts(&idx, vocab);
        for k in 0..counts.len() {
            win_counts[k] += counts[k];
            dead_counts[k] += counts[k];
        }
        if first_loss.is_nan() {
            first_loss = loss;
        }
        last_loss = loss;
        win_loss += f64::from(loss);
        win_n += 1;
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
                .replace_dead_codes(&dead_counts, cfg.dead_code.threshold * b as f32, cfg.dead_code.noise, cand.as_deref(), |n| rng.below(n), || rng2.normal())
                .with_context(|| format!("step {done}: dead-code replacement"))?;
            model.quantizer = Quantizer::Nsvq(q);
            win_replaced += dead.len();
            dead_counts.iter_mut().for_each(|x| *x = 0);
        }
        if done % cfg.log_every.max(1) == 0 || done == cfg.steps {
            let sps = (win_n as usize * b) as f64 / win_t.elapsed().as_secs_f64().max(1e-9);
            last_ppl = perplexity(&win_counts);
            last_used = win_counts.iter().filter(|&&x| x > 0).count();
            last_sps = sps;
            let mean = win_loss / win_n.max(1) as f64;
            let action_col = if sup.is_some() { format!(",{:.6}", win_action / win_n.max(1) as f64) } else { String::new() };
            writeln!(metrics, "{done},{mean:.6},{last_ppl:.4},{last_used},{sps:.2},{:.2},{win_replaced}{action_col}", t0.elapsed().as_secs_f64())?;
            metrics.flush()?;
            pb.set_message(format!("loss {mean:.5} ppl {last_ppl:.2} codes {last_used}/{vocab} {sps:.0} samples/s"));
            win_loss = 0.0;
            win_n = 0;
            win_counts.iter_mut().for_each(|x| *x = 0);
            win_replaced = 0;
            win_action = 0.0;
            win_t = Instant::now();
        }
        if done % cfg.checkpoint_every.max(1) == 0 || done == cfg.steps {
            checkpoint(
                run,
                &model,
                opt.to_record(),
                head.as_ref().map(|h| (h, head_opt.to_record())),
                &CkptState { step: done, dead_counts: dead_counts.clone() },
            )?;
            artifact::save_laq(&run.join(MODEL_DIR), model_cfg, &model)?;
            super::plot::curves(&metrics_path, &run.join("curves.png"))
                .with_context(|| format!("{}: step {done}: cannot write the training curves", run.display()))?;
        }
        pb.inc(1);
    }
    pb.finish();
    super::plot::curves(&metrics_path, &run.join("curves.png")).with_context(|| format!("{}: cannot write the training curves", run.display()))?;
    Ok(TrainSummary {
        steps: cfg.steps,
        first_loss,
        last_loss,
        perplexity: last_ppl,
        codes_used: last_used,
        samples_per_s: last_sps,
        model_dir: run.join(MODEL_DIR),
    })
}
