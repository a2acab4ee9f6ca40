//! `lapa train latent | action | finetune`: the policy's stages through the shared trainer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lapa_model::artifact;
use lapa_model::bins::QuantileBins;
use lapa_model::burn::grad_clipping::GradientClippingConfig;
use lapa_model::burn::module::Module;
use lapa_model::burn::optim::{AdamWConfig, ModuleOptimizer};
use lapa_model::burn::tensor::activation::softmax;
use lapa_model::burn::tensor::{Device, Int, Tensor, TensorData};
use lapa_model::policy::ActionSpec;
use lapa_model::vla::{ActionHeadConfig, ActionTarget, HeadConfig, StateInput, TextInput, Vla, VlaConfig, VlaInput};
use serde::{Deserialize, Serialize};

use super::data::{self, Batch, BatchSpec, Pool, TargetKind};
use crate::trainer::{Cadence, Loader, MODEL_DIR, Replicas, Stage};

/// Which stage a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Stage 2: predict the LAQ's latent-action tokens.
    Latent,
    /// The LAPA table's ablation (a departure from LAPA, after LAPO): regress the LAQ's
    /// continuous pre-quantisation latent instead of predicting its tokens.
    #[serde(rename = "latent-continuous")]
    LatentContinuous,
    /// Pretraining on true actions (the paper's ActionVLA upper bound).
    Action,
    /// Stage 3: a new action head on a few labeled episodes, from `init` (or from scratch).
    Finetune,
    /// The VPT baseline's inverse-dynamics model: (x_t, x_{t+1}) → the action between them,
    /// on the few labeled episodes.
    Idm,
    /// Knowledge distillation (`lapa compress distill`): a student of another size learns a
    /// teacher policy's action-bin distributions (and the labels, where a frame has them).
    Distill,
}

/// What a distillation run learns from (stage [`StageKind::Distill`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The teacher: a policy run with an action head (finetuned or action-trained). The student
    /// takes its action head (bins, chunk, targets), image and patch size, text encoder and
    /// state token; only the trunk's size comes from the student's preset.
    pub teacher: PathBuf,
    /// Softmax temperature of both distributions (the KL is scaled by T²).
    pub temperature: f32,
    /// Weight of the labels' cross-entropy on labeled frames; the teacher's KL, on every
    /// frame, gets 1 − this.
    pub label_weight: f32,
    /// SHA-256 of the teacher's weights, recorded when the run starts and checked when it
    /// resumes (a teacher trained further in between would change the targets silently).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_sha256: Option<String>,
    /// DAgger-style rounds after the first `steps` (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dagger: Option<DaggerConfig>,
}

/// On-policy data for a distilled student, DAgger-style: each round rolls the student out in the
/// simulator, records the rollouts (`RUN/dagger/round-K`, a LeRobot dataset) as unlabeled data —
/// the teacher's distributions on the states the student itself reaches are their targets — and
/// trains `steps_per_round` more steps on everything so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaggerConfig {
    pub rounds: u32,
    /// Rollouts per round (task families in turn, the seen split, seeds apart from the
    /// evaluation's).
    pub episodes: usize,
    pub steps_per_round: u64,
    /// Rounds whose rollouts are in the run's unlabeled data (the last one possibly still
    /// training when the run stopped).
    #[serde(default)]
    pub rounds_done: u32,
}

impl DaggerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.rounds == 0 || self.rounds > 100 {
            bail!("--dagger-rounds {}: 1 to 100", self.rounds);
        }
        if self.episodes == 0 || self.episodes > 100_000 {
            bail!("--dagger-episodes {}: 1 to 100,000", self.episodes);
        }
        if self.steps_per_round == 0 || self.steps_per_round > 10_000_000 {
            bail!("--dagger-steps {}: 1 to 10,000,000", self.steps_per_round);
        }
        if self.rounds_done > self.rounds {
            bail!("dagger: {} rounds done of {}", self.rounds_done, self.rounds);
        }
        Ok(())
    }
}

impl DistillConfig {
    pub fn new(teacher: PathBuf) -> Self {
        Self { teacher, temperature: 2.0, label_weight: 0.5, teacher_sha256: None, dagger: None }
    }

    /// Sets `cfg`'s action settings (chunk, bins, targets, state token) to the teacher's, which
    /// a student must share: the one place they are read from the teacher.
    pub fn take_teacher_head(&self, cfg: &mut VlaTrainConfig) -> Result<()> {
        let tc =
            artifact::load_vla_config(&self.teacher.join(MODEL_DIR)).with_context(|| format!("{}: the teacher is not a policy run", self.teacher.display()))?;
        let h = teacher_head(&tc, &self.teacher)?;
        (cfg.chunk, cfg.bins, cfg.target, cfg.state) = (h.spec.chunk, h.bins, h.target, tc.state.is_some());
        Ok(())
    }
}

/// The teacher's action head, or why `cfg` (read from `dir`) cannot teach.
fn teacher_head<'c>(cfg: &'c VlaConfig, dir: &Path) -> Result<&'c ActionHeadConfig> {
    let HeadConfig::Action(h) = &cfg.head else {
        bail!("{}: the teacher has no action head; distil a finetuned or action-trained policy", dir.display());
    };
    if cfg.frames != 1 {
        bail!("{}: an inverse-dynamics model ({} frames per observation) is not a policy to distil", dir.display(), cfg.frames);
    }
    Ok(h)
}

/// AdamW with linear warm-up, then constant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    pub weight_decay: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    /// Gradient-norm clip per parameter tensor (`None`: off).
    pub grad_clip: Option<f32>,
    pub warmup_steps: u64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self { lr: 3e-4, weight_decay: 0.01, beta_1: 0.9, beta_2: 0.999, grad_clip: Some(1.0), warmup_steps: 100 }
    }
}

/// What the run trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub data: Vec<PathBuf>,
    /// One labels folder per data source (latent pretraining).
    #[serde(default)]
    pub labels: Vec<PathBuf>,
    /// One pseudo-actions folder per data source replacing its actions (`lapa vpt label`; the
    /// VPT row's pretraining).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_labels: Vec<PathBuf>,
    pub camera: Option<String>,
    /// Keep the first N episodes of each source (finetuning's few labeled episodes).
    pub episodes: Option<usize>,
    /// Sources read for their frames and instructions only, every episode (distillation's
    /// unlabeled video: the teacher labels them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlabeled: Vec<PathBuf>,
    /// Random-crop augmentation (0 = off).
    pub crop: f32,
}

/// Everything a policy run needs besides the model config; saved as `train.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlaTrainConfig {
    pub stage: StageKind,
    /// Policy preset the model was built from (`tiny`, `small`, `base`).
    pub preset: String,
    /// Run whose trunk a finetune starts from (`None`: from scratch).
    pub init: Option<PathBuf>,
    pub data: DataConfig,
    pub optimizer: OptimConfig,
    /// Action heads: actions per chunk, bins per dimension, target kind, state token.
    pub chunk: usize,
    pub bins: usize,
    pub target: ActionTarget,
    pub state: bool,
    pub batch_size: usize,
    pub steps: u64,
    pub seed: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub loader_threads: usize,
    /// The teacher and the loss's mix (distillation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
}

impl VlaTrainConfig {
    pub fn new(stage: StageKind, data: Vec<PathBuf>) -> Self {
        Self {
            stage,
            preset: "small".into(),
            init: None,
            data: DataConfig { data, labels: Vec::new(), action_labels: Vec::new(), camera: None, episodes: None, unlabeled: Vec::new(), crop: 0.0 },
            optimizer: OptimConfig::default(),
            chunk: 4,
            bins: 256,
            target: ActionTarget::Absolute,
            state: false,
            batch_size: 32,
            steps: 2000,
            seed: 0,
            log_every: 25,
            checkpoint_every: 500,
            loader_threads: 1,
            distill: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.steps == 0 {
            bail!("batch size and steps must be positive");
        }
        if matches!(self.stage, StageKind::Latent | StageKind::LatentContinuous) && self.data.labels.len() != self.data.data.len() {
            bail!("latent pretraining needs one --labels folder per --data source ({} --data, {} --labels)", self.data.data.len(), self.data.labels.len());
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            bail!("learning rate must be positive, got {}", self.optimizer.lr);
        }
        if !(0.0..0.9).contains(&self.data.crop) {
            bail!("crop must be in [0, 0.9), got {}", self.data.crop);
        }
        if self.chunk == 0 || self.chunk > 64 {
            bail!("chunk must be in 1..=64, got {}", self.chunk);
        }
        if self.stage == StageKind::Idm && (self.chunk != 1 || self.target != ActionTarget::Absolute || self.state) {
            bail!("the inverse-dynamics model predicts the one absolute action between its two frames, without a state token (chunk 1, absolute targets)");
        }
        match (&self.distill, self.stage) {
            (None, StageKind::Distill) => bail!("distillation needs a teacher run"),
            (Some(_), s) if s != StageKind::Distill => bail!("a teacher is for distillation (`lapa compress distill`), not {s:?}"),
            (Some(d), _) => {
                if !(d.temperature.is_finite() && (0.05..=100.0).contains(&d.temperature)) {
                    bail!("temperature {} must be in [0.05, 100]", d.temperature);
                }
                if !(0.0..=1.0).contains(&d.label_weight) {
                    bail!("label weight {} must be in [0, 1]", d.label_weight);
                }
                if self.data.data.is_empty() && d.label_weight > 0.0 {
                    bail!("the labels' share of the loss (label weight {}) needs labeled --data", d.label_weight);
                }
            }
            (None, _) => {}
        }
        if !self.data.unlabeled.is_empty() && self.stage != StageKind::Distill {
            bail!("unlabeled sources are for distillation, whose teacher labels them");
        }
        if !self.data.action_labels.is_empty() && (self.stage != StageKind::Action || self.data.action_labels.len() != self.data.data.len()) {
            bail!(
                "pseudo-action labels are for action pretraining (`lapa train action`), one folder per --data source ({} --data, {} --action-labels)",
                self.data.data.len(),
                self.data.action_labels.len()
            );
        }
        Ok(())
    }
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct VlaSummary {
    pub steps: u64,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Target accuracy (argmax = label) over the last log window; for the continuous head,
    /// 1 − the mean squared error of the standardised latent (≈ its R²).
    pub last_accuracy: f64,
    pub samples: usize,
    pub params: usize,
    pub model_dir: PathBuf,
}

/// Distillation's teacher, on the plain (no-gradient) device.
struct Teacher {
    cfg: VlaConfig,
    model: Vla,
    device: Device,
    temperature: f32,
    label_weight: f32,
    sha256: String,
}

struct VlaStage {
    cfg: VlaTrainConfig,
    teacher: Option<Teacher>,
    model_cfg: VlaConfig,
    model: Option<Vla>,
    opt: ModuleOptimizer,
    /// The devices the batch is spread over (the first holds the model).
    replicas: Replicas,
    has_state: bool,
    /// The step last taken (for the logged learning rate).
    cur_step: u64,
    win_loss: f64,
    win_acc: f64,
    win_n: u64,
    first_loss: f32,
    last_loss: f32,
    last_acc: f64,
}

impl VlaStage {
    fn model(&self) -> &Vla {
        self.model.as_ref().expect("the model is only taken inside a step")
    }

    fn lr(&self, step: u64) -> f64 {
        let o = &self.cfg.optimizer;
        if o.warmup_steps == 0 { o.lr } else { o.lr * ((step + 1) as f64 / o.warmup_steps as f64).min(1.0) }
    }
}

/// A batch's targets on the device.
// One value per batch, built and consumed once per step: boxing a variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Targets {
    /// Class indices [b, targets] and their 0/1 mask [b, targets] (latent tokens, action bins).
    Classes(Tensor<2, Int>, Tensor<2>),
    /// Standardised continuous latents [b, tokens, dim].
    Values(Tensor<3>),
}

/// Host batch → model input and targets on `device`.
pub fn to_tensors(b: Batch, cfg: &VlaConfig, device: &Device) -> (VlaInput, Targets) {
    let n = b.size;
    let l = cfg.text.max_ids();
    let (targets, per) = cfg.head.logits_shape();
    let input = VlaInput {
        patches: Tensor::from_data(TensorData::new(b.patches, [n, cfg.n_patches(), cfg.patch_dim()]), device),
        text: match cfg.text.frozen_dim() {
            None => TextInput::Hashed {
                ids: Tensor::from_data(TensorData::new(b.text_ids, [n, l]), device),
                weights: Tensor::from_data(TensorData::new(b.text_weights, [n, l]), device),
            },
            Some(d) => TextInput::Embedded(Tensor::from_data(TensorData::new(b.text_emb, [n, d]), device)),
        },
        state: (cfg.state_dim() > 0).then(|| Tensor::from_data(TensorData::new(b.state, [n, cfg.state_dim()]), device)),
    };
    let t = match cfg.head {
        HeadConfig::Continuous { .. } => Targets::Values(Tensor::from_data(TensorData::new(b.values, [n, targets, per]), device)),
        _ => Targets::Classes(
            Tensor::from_data(TensorData::new(b.targets, [n, targets]), device),
            Tensor::from_data(TensorData::new(b.mask, [n, targets]), device),
        ),
    };
    (input, t)
}

impl Stage for VlaStage {
    type Batch = Batch;

    fn header(&self) -> String {
        "step,loss,accuracy,lr,samples_per_s,elapsed_s".into()
    }

    fn step(&mut self, step: u64, mut batch: Batch) -> Result<()> {
        debug_assert_eq!(batch.step, step);
        if let Some(t) = &self.teacher {
            // The teacher's tempered distributions over the whole batch, before it is sharded.
            let (input, _) = to_tensors(batch.clone(), &t.cfg, &t.device);
            let probs = softmax(t.model.forward(input) / t.temperature, 2); // [b, targets, bins]
            batch.soft = probs.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("teacher output: {e:?}"))?;
        }
        // Each replica's share of the loss: its masked targets over the batch's (distillation's
        // KL: its samples over the batch's).
        let total = batch.mask.iter().sum::<f32>().max(1.0);
        let (n_total, per_sample) = (batch.size as f32, self.model_cfg.head.logits_shape().0);
        let sizes = self.replicas.shard_sizes(batch.size);
        let shards = batch.split(&sizes);
        let model = self.model.take().expect("model present between steps");
        let cfg = &self.model_cfg;
        let mix = self.teacher.as_ref().map(|t| (t.temperature, t.label_weight));
        let r = self.replicas.gradients(&model, shards, |m, mut b, device| {
            let weight = b.mask.iter().sum::<f32>();
            let share = weight / total;
            let n = b.size;
            let soft = std::mem::take(&mut b.soft);
            let (input, targets) = to_tensors(b, cfg, device);
            let out = m.forward(input); // [b, targets, classes] (continuous: [b, tokens, dim])
            // Each arm: the shard's share of the batch's loss, and its correct targets.
            let (loss, correct) = match (targets, mix) {
                (Targets::Classes(targets, mask), Some((temperature, label_weight))) => {
                    // Accuracy: the share of targets where the student picks the teacher's bin.
                    let (t, c) = cfg.head.logits_shape();
                    let p = Tensor::<3>::from_data(TensorData::new(soft, [n, t, c]), device);
                    let correct: f32 = out.clone().argmax(2).equal(p.clone().argmax(2)).float().sum().into_scalar();
                    let ce = Vla::loss(out.clone(), targets, mask).mul_scalar(label_weight * share);
                    let kl = Vla::distill_loss(out, p, temperature).mul_scalar((1.0 - label_weight) * n as f32 / n_total);
                    (ce + kl, correct)
                }
                (Targets::Classes(targets, mask), None) => {
                    let correct: f32 = (out.clone().argmax(2).squeeze_dim::<2>(2).equal(targets.clone()).float() * mask.clone()).sum().into_scalar();
                    (Vla::loss(out, targets, mask).mul_scalar(share), correct)
                }
                (Targets::Values(values), _) => {
                    let loss = Vla::mse_loss(out, values);
                    // Standardised targets: 1 − MSE is about the R² (every token weighs 1).
                    let r2 = 1.0 - loss.clone().into_scalar::<f32>();
                    (loss.mul_scalar(share), r2 * weight)
                }
            };
            let lv: f32 = loss.clone().into_scalar();
            Ok((loss, (lv, correct)))
        });
        let (g, parts) = match r {
            Ok(r) => r,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let lv: f32 = parts.iter().map(|p| p.0).sum();
        let acc = parts.iter().map(|p| p.1).sum::<f32>() / if self.teacher.is_some() { n_total * per_sample as f32 } else { total };
        if !lv.is_finite() {
            self.model = Some(model);
            bail!("loss became {lv} at step {step}; lower --lr or check the data");
        }
        self.model = Some(self.opt.step(self.lr(step), model, g));
        self.cur_step = step;
        if self.first_loss.is_nan() {
            self.first_loss = lv;
        }
        self.last_loss = lv;
        self.win_loss += f64::from(lv);
        self.win_acc += f64::from(acc);
        self.win_n += 1;
        Ok(())
    }

    fn log(&mut self, window_steps: u64, window: std::time::Duration, elapsed: std::time::Duration) -> (String, String) {
        let n = self.win_n.max(1) as f64;
        let (loss, acc) = (self.win_loss / n, self.win_acc / n);
        self.last_acc = acc;
        let sps = (window_steps as usize * self.cfg.batch_size) as f64 / window.as_secs_f64().max(1e-9);
        let lr = self.lr(self.cur_step);
        (self.win_loss, self.win_acc, self.win_n) = (0.0, 0.0, 0);
        (format!("{loss:.6},{acc:.4},{lr:.3e},{sps:.2},{:.2}", elapsed.as_secs_f64()), format!("loss {loss:.4} acc {:.1}% {sps:.0} samples/s", 100.0 * acc))
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<serde_json::Value> {
        crate::trainer::save_state(dir, "model", "optim", self.model(), &self.opt)?;
        Ok(serde_json::json!({ "has_state": self.has_state }))
    }

    fn load_checkpoint(&mut self, ck: &Path, _state: &serde_json::Value) -> Result<()> {
        let model = self.model.take().expect("model present");
        self.model = Some(crate::trainer::load_state(ck, "model", "optim", model, &mut self.opt)?);
        Ok(())
    }

    fn save_artifact(&self, dir: &Path) -> Result<()> {
        Ok(artifact::save_vla(dir, &self.model_cfg, self.model())?)
    }

    fn plot(&self, metrics: &Path, png: &Path) -> Result<()> {
        super::plot::curves(metrics, png)
    }
}

/// The action head for the pool's actions: per-dimension quantile bins over every target of
/// every training sample.
fn action_head(pool: &Pool, cfg: &VlaTrainConfig) -> Result<HeadConfig> {
    let d = pool.action_dim;
    let mut per_dim: Vec<Vec<f32>> = vec![Vec::new(); d];
    for s in &pool.samples {
        for (i, v) in pool.action_chunk(s, cfg.chunk, cfg.target).into_iter().enumerate() {
            per_dim[i % d].push(v);
        }
    }
    let edges = per_dim
        .iter()
        .zip(&pool.action_names)
        .map(|(v, name)| QuantileBins::fit(v, cfg.bins).map_err(|e| anyhow::anyhow!("action {name}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let spec = ActionSpec { names: pool.action_names.clone(), units: pool.action_units.clone(), fps: pool.fps as f32, chunk: cfg.chunk };
    Ok(HeadConfig::Action(ActionHeadConfig { spec, target: cfg.target, bins: cfg.bins, edges }))
}

/// Loads a distillation teacher and checks that the run's action settings are its own (and, on
/// a run that recorded them, its weights).
fn load_teacher(d: &DistillConfig, cfg: &VlaTrainConfig, device: &Device) -> Result<Teacher> {
    let weights = d.teacher.join(MODEL_DIR).join(artifact::WEIGHTS_FILE);
    let sha = lapa_model::bundle::sha256_file(&weights).with_context(|| format!("{}: the teacher is not a policy run", d.teacher.display()))?;
    if let Some(want) = &d.teacher_sha256
        && *want != sha
    {
        bail!("{}: the teacher's weights changed since this run started (sha256 {sha}, the run recorded {want})", weights.display());
    }
    let dir = d.teacher.join(MODEL_DIR);
    let (tc, model) = artifact::load_vla(&dir, device).with_context(|| format!("{}: the teacher is not a policy run", d.teacher.display()))?;
    let h = teacher_head(&tc, &d.teacher)?;
    if (h.spec.chunk, h.bins, h.target, tc.state.is_some()) != (cfg.chunk, cfg.bins, cfg.target, cfg.state) {
        bail!(
            "{}: the teacher predicts chunks of {} over {} bins ({:?} targets, state token {}); the run asks for {} over {} ({:?}, {}): a student takes its teacher's",
            d.teacher.display(),
            h.spec.chunk,
            h.bins,
            h.target,
            tc.state.is_some(),
            cfg.chunk,
            cfg.bins,
            cfg.target,
            cfg.state
        );
    }
    Ok(Teacher { cfg: tc, model, device: device.clone(), temperature: d.temperature, label_weight: d.label_weight, sha256: sha })
}

/// Trains (or resumes) a policy run in `run`.
///
/// `devices`: one or more (data parallelism, see [`Replicas`]); the first holds the model.
pub fn train(cfg: &VlaTrainConfig, run: &Path, devices: &[Device], cache_dir: &Path, resume: bool, quiet: bool) -> Result<VlaSummary> {
    cfg.validate()?;
    let device = devices.first().context("no device given")?;
    if devices.len() > cfg.batch_size {
        bail!("{} devices for a batch of {}: each device needs at least one sample", devices.len(), cfg.batch_size);
    }
    let replicas = Replicas::new(devices.iter().map(|d| d.clone().autodiff()).collect())?;
    // The model's image size and text encoder come from the preset, or from the run it
    // finetunes (whose trunk it keeps).
    // Seeded before the first initialisation it drives (burn's seed is global).
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let init = match (&cfg.init, cfg.stage) {
        (Some(dir), StageKind::Finetune) => {
            Some(artifact::load_vla(&dir.join(MODEL_DIR), &ad).with_context(|| format!("{}: --init is not a policy run", dir.display()))?)
        }
        (Some(_), _) => bail!("--init is for finetuning"),
        (None, _) => None,
    };
    if let (Some((c, _)), Some(dir)) = (&init, &cfg.init)
        && c.frames != 1
    {
        bail!("{}: an inverse-dynamics model ({} frames per observation) labels video; it is not a policy trunk to finetune", dir.display(), c.frames);
    }
    let teacher = match &cfg.distill {
        Some(d) => Some(load_teacher(d, cfg, device)?),
        None => None,
    };
    let base = match (&init, &teacher) {
        (Some((c, _)), _) => c.clone(),
        // The student: the preset's trunk on the teacher's inputs and head.
        (None, Some(t)) => {
            let p = VlaConfig::preset(&cfg.preset, t.cfg.head.clone())?;
            VlaConfig { image_size: t.cfg.image_size, patch_size: t.cfg.patch_size, text: t.cfg.text.clone(), state: t.cfg.state.clone(), frames: 1, ..p }
        }
        (None, None) => {
            let p = VlaConfig::preset(&cfg.preset, HeadConfig::Latent { tokens: 1, vocabulary: 2 })?;
            // The IDM: the same trunk over stacked (x_t, x_{t+1}) patches.
            if cfg.stage == StageKind::Idm { VlaConfig { frames: 2, ..p } } else { p }
        }
    };
    let kind = match cfg.stage {
        StageKind::Latent => TargetKind::Latent,
        StageKind::LatentContinuous => TargetKind::Continuous,
        _ => TargetKind::Action { chunk: cfg.chunk, target: cfg.target },
    };
    let need_state = cfg.state || cfg.target == ActionTarget::Delta && matches!(kind, TargetKind::Action { .. });
    let d = &cfg.data;
    let mut pool = data::load(&data::LoadSpec {
        data: &d.data,
        labels: &d.labels,
        action_labels: &d.action_labels,
        unlabeled: &d.unlabeled,
        camera: d.camera.as_deref(),
        side: base.image_size,
        cache_dir,
        kind,
        episodes: d.episodes,
        need_state,
        text: &base.text,
        quiet,
    })?;
    if let Some(t) = &teacher
        && t.cfg.state.is_some()
        && pool.state_dim != t.cfg.state_dim()
    {
        bail!("the data has {} state values, the teacher's state token takes {}", pool.state_dim, t.cfg.state_dim());
    }
    pool.embed_instructions(&base.text, device)?;
    let head = match kind {
        TargetKind::Latent => {
            let l = data::Labels::read(&d.labels[0], false)?;
            HeadConfig::Latent { tokens: l.meta.n_tokens, vocabulary: l.meta.vocabulary }
        }
        TargetKind::Continuous => {
            let l = data::Labels::read(&d.labels[0], false)?;
            let dim = l
                .meta
                .continuous_dim
                .with_context(|| format!("{}: labels without continuous latents (`lapa laq label --continuous`)", d.labels[0].display()))?;
            let (mean, std) = pool.latent_stats();
            HeadConfig::Continuous { tokens: l.meta.n_tokens, dim, mean, std }
        }
        // A student keeps its teacher's bins (and state standardisation): the KL compares
        // distributions over the same bins.
        TargetKind::Action { .. } if teacher.is_some() => base.head.clone(),
        TargetKind::Action { .. } => action_head(&pool, cfg)?,
    };
    if let Some(HeadConfig::Action(h)) = teacher.as_ref().map(|t| &t.cfg.head)
        && pool.action_dim != 0
        && pool.action_names != h.spec.names
    {
        bail!("the labeled --data's actions are {:?}, the teacher's {:?}", pool.action_names, h.spec.names);
    }
    let state = match &teacher {
        Some(t) => t.cfg.state.clone(),
        None => cfg.state.then(|| {
            let (mean, std) = pool.state_stats();
            StateInput { mean, std }
        }),
    };
    let model_cfg = VlaConfig { head: head.clone(), state: state.clone(), ..base };
    model_cfg.validate()?;
    let model = match init {
        // LAPA's finetuning: the pretrained trunk, a new action head (and state token).
        Some((_, m)) => m.with_head(&head, &ad).with_state_token(state.as_ref().map(|s| s.mean.len()), &ad),
        None => model_cfg.init(&ad)?,
    };
    let o = &cfg.optimizer;
    let adamw = AdamWConfig::new()
        .with_beta_1(o.beta_1)
        .with_beta_2(o.beta_2)
        .with_weight_decay(o.weight_decay)
        .with_grad_clipping(o.grad_clip.map(GradientClippingConfig::Norm));
    let params = model.num_params();
    // What train.json records: the settings, and the teacher's weights it started from.
    let mut saved = cfg.clone();
    if let (Some(d), Some(t)) = (&mut saved.distill, &teacher) {
        d.teacher_sha256 = Some(t.sha256.clone());
    }
    let mut stage = VlaStage {
        cfg: cfg.clone(),
        // At label weight 1 the KL weighs nothing: the teacher only lent its head.
        teacher: teacher.filter(|t| t.label_weight < 1.0),
        model_cfg: model_cfg.clone(),
        model: Some(model),
        opt: adamw.init(),
        replicas,
        has_state: state.is_some(),
        cur_step: 0,
        win_loss: 0.0,
        win_acc: 0.0,
        win_n: 0,
        first_loss: f32::NAN,
        last_loss: f32::NAN,
        last_acc: 0.0,
    };
    let start = crate::trainer::begin(&mut stage, run, resume, &saved, quiet)?;
    if !quiet {
        let (t, c) = head.logits_shape();
        println!(
            "{:?}: {} samples from {} source(s), {} instructions; {params} parameters, {:.1} MFLOP per step; {t} targets × {c} classes; batch {}; steps {start}..{}",
            cfg.stage,
            pool.samples.len(),
            pool.caches.len(),
            pool.instructions.len(),
            model_cfg.flops() as f64 / 1e6,
            cfg.batch_size,
            cfg.steps
        );
    }
    let spec = BatchSpec::for_model(&model_cfg, kind, cfg.batch_size, cfg.seed, cfg.data.crop);
    let samples = pool.samples.len();
    let pool = Arc::new(pool);
    let make = Arc::new(move |step: u64| data::make_batch(&pool, &spec, step));
    let mut loader = Loader::start(make, start, cfg.steps, cfg.loader_threads, 4);
    let cadence = Cadence { steps: cfg.steps, log_every: cfg.log_every, checkpoint_every: cfg.checkpoint_every };
    crate::trainer::fit(&mut stage, run, cadence, start, &mut loader, quiet)?;
    Ok(VlaSummary {
        steps: cfg.steps,
        first_loss: stage.first_loss,
        last_loss: stage.last_loss,
        last_accuracy: stage.last_acc,
        samples,
        params,
        model_dir: run.join(MODEL_DIR),
    })
}

/// How a policy does on a labeled dataset's frames, offline: see [`offline_score`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OfflineScore {
    /// The share of action targets whose true bin the policy ranks first.
    pub bin_accuracy: f64,
    /// Mean absolute error of the decoded actions (bin midpoints) against the true ones, over
    /// every target, in the actions' units (deltas for delta targets).
    pub mae: f64,
    pub targets: usize,
}

/// The policy in `model_dir` on every frame of the first `episodes` episodes of a labeled
/// dataset: an offline measure (distillation's test compares students with it).
pub fn offline_score(model_dir: &Path, dataset: &Path, episodes: Option<usize>, cache_dir: &Path, device: &Device) -> Result<OfflineScore> {
    let (cfg, model) = artifact::load_vla(model_dir, device).with_context(|| format!("{}: not a policy", model_dir.display()))?;
    let HeadConfig::Action(h) = &cfg.head else {
        bail!("{}: the policy has no action head", model_dir.display());
    };
    let kind = TargetKind::Action { chunk: h.spec.chunk, target: h.target };
    let mut pool = data::load(&data::LoadSpec {
        data: &[dataset.to_path_buf()],
        labels: &[],
        action_labels: &[],
        unlabeled: &[],
        camera: None,
        side: cfg.image_size,
        cache_dir,
        kind,
        episodes,
        need_state: cfg.state.is_some() || h.target == ActionTarget::Delta,
        text: &cfg.text,
        quiet: true,
    })?;
    if pool.action_names != h.spec.names {
        bail!("{}: actions {:?}, the policy's {:?}", dataset.display(), pool.action_names, h.spec.names);
    }
    if pool.state_dim != cfg.state_dim() && cfg.state.is_some() {
        bail!("{}: {} state values, the policy's state token takes {}", dataset.display(), pool.state_dim, cfg.state_dim());
    }
    pool.embed_instructions(&cfg.text, device)?;
    let spec = BatchSpec::for_model(&cfg, kind, 0, 0, 0.0);
    let d = h.spec.names.len();
    let (mut hits, mut abs, mut n) = (0usize, 0.0f64, 0usize);
    let all: Vec<usize> = (0..pool.samples.len()).collect();
    for part in all.chunks(64) {
        let batch = data::batch_of(&pool, &spec, part);
        let truth = batch.targets.clone();
        let (input, _) = to_tensors(batch, &cfg, device);
        let picked = model.forward(input).argmax(2).into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?; // [b · targets]
        let values = part.iter().flat_map(|&i| pool.action_chunk(&pool.samples[i], h.spec.chunk, h.target));
        for (j, ((&p, &t), v)) in picked.iter().zip(&truth).zip(values).enumerate() {
            hits += usize::from(p == t);
            abs += f64::from((h.edges[j % d].decode(p as usize) - v).abs());
            n += 1;
        }
    }
    let per = n.max(1) as f64;
    Ok(OfflineScore { bin_accuracy: hits as f64 / per, mae: abs / per, targets: n })
}
