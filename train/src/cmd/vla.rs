//! `lapa train latent | action | finetune` and `lapa eval`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use lapa_model::vla::{ActionTarget, VlaPolicy};
use lapa_sim::{Split, TaskFamily};
use lapa_train::trainer::{MODEL_DIR, TRAIN_FILE};
use lapa_train::vla::eval::{self, Agent, BoxedPolicyAgent, EvalOptions, EvalReport, ExpertAgent, PolicyAgent, RandomAgent};
use lapa_train::vla::{StageKind, VlaSummary, VlaTrainConfig};

use super::laq::RuntimeArgs;

/// Settings every policy stage shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Run folder (train.json, model/, checkpoint/, metrics.csv, curves.png).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint (settings come from its train.json;
    /// --steps may extend it).
    #[arg(long)]
    pub resume: bool,
    /// Policy size: tiny (tests), small (board-sized, 64² frames), base (GPU). A finetune takes
    /// its size from --init.
    #[arg(long, default_value = "small")]
    pub config: String,
    /// Training steps (default 2000; a resumed run keeps its own unless this is given).
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// AdamW learning rate (after a linear warm-up).
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// Random-crop augmentation: keep at least 1 − this of the side (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub crop: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 25)]
    pub log_every: u64,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 1)]
    pub loader_threads: usize,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// Commanded joint positions.
    Absolute,
    /// Commanded positions minus the measured state.
    Delta,
}

/// The action head's settings.
#[derive(Debug, Clone, Args)]
pub struct ActionArgs {
    /// Future actions per prediction (1 = LAPA's single step; more, with temporal ensembling
    /// at run time, avoids gripper chatter).
    #[arg(long, default_value_t = 4)]
    pub chunk: usize,
    /// Quantile bins per action dimension (LAPA: 256).
    #[arg(long, default_value_t = 256)]
    pub bins: usize,
    #[arg(long, value_enum, default_value_t = TargetArg::Absolute)]
    pub target: TargetArg,
    /// Give the policy the joint state as one more token.
    #[arg(long)]
    pub state: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LatentArgs {
    /// LeRobot datasets whose video the policy learns from (their actions, if any, are unused).
    #[arg(long = "data", required_unless_present = "resume")]
    pub data: Vec<PathBuf>,
    /// Latent labels of each --data source, in the same order (`lapa laq label --out`).
    #[arg(long = "labels", required_unless_present = "resume")]
    pub labels: Vec<PathBuf>,
    /// Regress the LAQ's continuous pre-quantisation latent (mean squared error on its
    /// standardised values) instead of predicting its tokens: the LAPA table's ablation, what
    /// LAPO feeds its policy (a departure from LAPA). The labels need `lapa laq label
    /// --continuous`.
    #[arg(long)]
    pub continuous: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ActionTrainArgs {
    /// Labeled LeRobot datasets (with an `action` feature).
    #[arg(long = "data", required_unless_present = "resume")]
    pub data: Vec<PathBuf>,
    /// Pseudo-actions of each --data source, in the same order (`lapa vpt label --out`), used
    /// instead of the datasets' own actions: the VPT baseline's pretraining. The sources then
    /// need no action feature.
    #[arg(long = "action-labels")]
    pub action_labels: Vec<PathBuf>,
    #[command(flatten)]
    pub action: ActionArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `lapa train idm`.
#[derive(Debug, Clone, Args)]
pub struct IdmArgs {
    /// The labeled dataset.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Use only its first N episodes (the VPT row trains its IDM on the finetuning set).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Quantile bins per action dimension.
    #[arg(long, default_value_t = 256)]
    pub bins: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    /// The run whose trunk to start from (its head is replaced), or `none` to train from scratch.
    #[arg(long, required_unless_present = "resume")]
    pub init: Option<String>,
    /// The labeled dataset.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Use only its first N episodes (LAPA finetunes on a small labeled set).
    #[arg(long)]
    pub episodes: Option<usize>,
    #[command(flatten)]
    pub action: ActionArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub(crate) fn config(stage: StageKind, data: Vec<PathBuf>, c: &CommonArgs, a: Option<&ActionArgs>) -> VlaTrainConfig {
    let mut cfg = VlaTrainConfig::new(stage, data);
    cfg.preset = c.config.clone();
    cfg.data.camera = c.rt.camera.clone();
    cfg.data.crop = c.crop;
    cfg.optimizer.lr = c.lr;
    cfg.optimizer.warmup_steps = c.warmup;
    cfg.optimizer.weight_decay = c.weight_decay;
    cfg.batch_size = c.batch;
    cfg.steps = c.steps.unwrap_or(2000);
    cfg.seed = c.seed;
    cfg.log_every = c.log_every;
    cfg.checkpoint_every = c.checkpoint_every;
    cfg.loader_threads = c.loader_threads;
    if let Some(a) = a {
        cfg.chunk = a.chunk;
        cfg.bins = a.bins;
        cfg.target = match a.target {
            TargetArg::Absolute => ActionTarget::Absolute,
            TargetArg::Delta => ActionTarget::Delta,
        };
        cfg.state = a.state;
    }
    cfg
}

/// A policy run's `train.json` (errors name the file, and the field that is wrong).
pub(crate) fn read_train_config(run: &Path) -> Result<VlaTrainConfig> {
    let path = run.join(TRAIN_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    lapa_model::artifact::json_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: not a policy run's train.json: {e}", path.display()))
}

pub(crate) fn run_stage(cfg: VlaTrainConfig, c: &CommonArgs) -> Result<VlaSummary> {
    let devices = lapa_model::devices(&c.rt.device)?;
    let cfg = if c.resume {
        let saved = read_train_config(&c.out).with_context(|| format!("{}: no run to resume", c.out.display()))?;
        if saved.stage != cfg.stage {
            let how = match saved.stage {
                StageKind::LatentContinuous => "lapa train latent --continuous".to_string(),
                StageKind::Distill => "lapa compress distill".to_string(),
                s => format!("lapa train {}", format!("{s:?}").to_lowercase()),
            };
            bail!("{}: a {:?} run; resume it with `{how} --resume`", c.out.display(), saved.stage);
        }
        VlaTrainConfig { steps: c.steps.unwrap_or(saved.steps), ..saved }
    } else {
        cfg
    };
    let s = lapa_train::vla::train(&cfg, &c.out, &devices, &c.rt.cache_dir(), c.resume, c.rt.quiet)?;
    if !c.rt.quiet {
        println!(
            "trained {} steps on {} samples: loss {:.4} -> {:.4}, accuracy {:.1}%; {} parameters; model in {}",
            s.steps,
            s.samples,
            s.first_loss,
            s.last_loss,
            100.0 * s.last_accuracy,
            s.params,
            s.model_dir.display()
        );
    }
    Ok(s)
}

pub fn latent(a: &LatentArgs) -> Result<VlaSummary> {
    let stage = if a.continuous { StageKind::LatentContinuous } else { StageKind::Latent };
    let mut cfg = config(stage, a.data.clone(), &a.common, None);
    cfg.data.labels = a.labels.clone();
    run_stage(cfg, &a.common)
}

pub fn action(a: &ActionTrainArgs) -> Result<VlaSummary> {
    let mut cfg = config(StageKind::Action, a.data.clone(), &a.common, Some(&a.action));
    cfg.data.action_labels = a.action_labels.clone();
    run_stage(cfg, &a.common)
}

pub fn idm(a: &IdmArgs) -> Result<VlaSummary> {
    let mut cfg = config(StageKind::Idm, a.data.iter().cloned().collect(), &a.common, None);
    (cfg.chunk, cfg.bins, cfg.data.episodes) = (1, a.bins, a.episodes);
    run_stage(cfg, &a.common)
}

#[derive(Debug, clap::Subcommand)]
pub enum VptCommand {
    /// Label every frame of a dataset with an inverse-dynamics model's action between it and the
    /// next frame (`pseudo_actions.csv` + `pseudo_actions.json`), for `lapa train action
    /// --action-labels`. Where the dataset has its own actions, their mean absolute error is
    /// printed and kept, on the IDM's training episodes and on the others apart.
    Label(VptLabelArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VptLabelArgs {
    /// The inverse-dynamics run (`lapa train idm --out`).
    #[arg(long)]
    pub idm: PathBuf,
    /// The LeRobot dataset whose video to label.
    #[arg(long)]
    pub data: PathBuf,
    /// Labels folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Frames per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

pub fn vpt(c: VptCommand) -> Result<()> {
    let VptCommand::Label(a) = c;
    let device = lapa_model::device(&a.rt.device)?;
    let o = lapa_train::vla::vpt::LabelOptions {
        idm: a.idm.clone(),
        data: a.data.clone(),
        out: a.out.clone(),
        camera: a.rt.camera.clone(),
        cache_dir: a.rt.cache_dir(),
        batch: a.batch,
        quiet: a.rt.quiet,
    };
    let meta = lapa_train::vla::vpt::label(&o, &device)?;
    if !a.rt.quiet {
        println!("labelled {} frames of {} with {} actions: {}", meta.frames, a.data.display(), meta.names.len(), a.out.display());
        if let Some(c) = &meta.check {
            let f = |v: &[f64]| v.iter().zip(&meta.names).map(|(x, n)| format!("{n} {x:.2}")).collect::<Vec<_>>().join(", ");
            let g = |v: &Option<Vec<f64>>| v.as_ref().map_or_else(|| "no frames".to_string(), |v| f(v));
            match c.train_episodes {
                Some(n) => println!("mean absolute error vs the dataset's actions: IDM's {n} training episodes: {}", g(&c.mae_train)),
                None => println!(
                    "mean absolute error vs the dataset's actions (the IDM's training episodes are not known for this dataset; all count as held out):"
                ),
            }
            println!("  on the other {} frames: {}", c.heldout_frames, g(&c.mae_heldout));
        }
    }
    Ok(())
}

pub fn finetune(a: &FinetuneArgs) -> Result<VlaSummary> {
    let mut cfg = config(StageKind::Finetune, a.data.iter().cloned().collect(), &a.common, Some(&a.action));
    cfg.init = match a.init.as_deref() {
        None | Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
    };
    cfg.data.episodes = a.episodes;
    run_stage(cfg, &a.common)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Seen,
    UnseenObjects,
    UnseenInstructions,
    UnseenEnv,
}

impl SplitArg {
    pub fn split(self) -> Split {
        match self {
            SplitArg::Seen => Split::Seen,
            SplitArg::UnseenObjects => Split::UnseenObjects,
            SplitArg::UnseenInstructions => Split::UnseenInstructions,
            SplitArg::UnseenEnv => Split::UnseenEnvironment,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BaselineArg {
    /// The scripted expert, reading the simulator's state (the harness's upper reference).
    Expert,
    /// Uniformly random joint targets (its floor).
    Random,
}

/// Closed-loop evaluation in the simulator.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A finetuned (or action-trained) policy run.
    #[arg(long, required_unless_present_any = ["baseline", "bundle"], conflicts_with_all = ["baseline", "bundle"])]
    pub run: Option<PathBuf>,
    /// An exported bundle (`lapa export`), loaded as the board loads it: the int8 engine for a
    /// compressed bundle, burn for an f32 one; its hashes and signature are checked first. Its
    /// episodes are stepped one at a time (as on the board), so --parallel only groups the scenes.
    /// Nothing is written into the bundle: give --out for a report.
    #[arg(long, conflicts_with = "baseline")]
    pub bundle: Option<PathBuf>,
    /// A trusted public key for --bundle's signature (`lapa keys generate`; repeatable; default
    /// ~/.config/lapa/keys/lapa-signing.pub when it exists).
    #[arg(long = "public-key", value_name = "FILE")]
    pub public_keys: Vec<PathBuf>,
    /// Also evaluate an unsigned --bundle, or one signed by a key not given.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Evaluate a reference agent instead of a run.
    #[arg(long, value_enum)]
    pub baseline: Option<BaselineArg>,
    #[arg(long, value_enum, default_value_t = SplitArg::Seen)]
    pub split: SplitArg,
    #[arg(long, default_value_t = 100)]
    pub episodes: usize,
    /// One task family only (push_to_side, point_at, …); all six in turn by default.
    #[arg(long)]
    pub family: Option<String>,
    /// Offset of the evaluation seeds (every offset gives new scenes, never training ones).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Episodes stepped together (one policy batch).
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Temporal-ensembling decay m: chunk weights exp(−m·age), newest first (0 averages; the
    /// edge runtime's rule and default).
    #[arg(long, default_value_t = 0.85)]
    pub ensemble_decay: f32,
    /// Save the first N rollouts as MP4 (4× scaled) beside the report.
    #[arg(long, default_value_t = 4)]
    pub videos: usize,
    /// Report JSON (default: RUN/eval/SPLIT.json; for a baseline or a --bundle, nothing is
    /// written, and no videos, unless this is given).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write every rollout as a LeRobot v3.0 dataset in this new folder (camera, joint
    /// state, the executed targets as actions, the instruction).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub quiet: bool,
}

/// The policy of `run` as an evaluation agent, with `opts`' frame rate and image size set to the
/// policy's (`lapa eval --run` and the DAgger rounds' rollouts).
pub(crate) fn run_agent(run: &Path, device: lapa_model::burn::tensor::Device, name: String, opts: &mut eval::EvalOptions) -> Result<PolicyAgent> {
    let (cfg, model) = lapa_model::load_vla(&run.join(MODEL_DIR), &device)?;
    let policy = VlaPolicy::new(cfg, model, device, name.clone()).with_context(|| format!("{}", run.display()))?;
    let spec = lapa_model::Policy::action_spec(&policy).clone();
    if spec.names.len() != 6 {
        bail!("{}: the policy drives {} action dimensions; the simulated arm has 6", run.display(), spec.names.len());
    }
    opts.fps = spec.fps.round().max(1.0) as u32;
    opts.size = policy.config().image_size;
    Ok(PolicyAgent { policy, name })
}

pub fn eval_cmd(a: &EvalArgs) -> Result<EvalReport> {
    // (Not clap's `requires`: it waives a requirement that conflicts with a given argument.)
    if a.bundle.is_none() && (!a.public_keys.is_empty() || a.allow_unsigned) {
        bail!("--public-key and --allow-unsigned are for --bundle (a run or a baseline has no signature)");
    }
    let family = match &a.family {
        None => None,
        Some(f) => Some(
            TaskFamily::from_name(f)
                .with_context(|| format!("--family {f:?}: expected one of {}", TaskFamily::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")))?,
        ),
    };
    let out = a.out.clone().or_else(|| a.run.as_ref().map(|r| r.join("eval").join(format!("{}.json", a.split.split().name()))));
    let mut opts = EvalOptions::new(a.split.split(), a.episodes);
    opts.family = family;
    opts.seed = a.seed;
    opts.parallel = a.parallel;
    opts.ensemble_decay = a.ensemble_decay;
    opts.quiet = a.quiet;
    opts.videos = a.videos;
    opts.record = a.record.clone();
    opts.video_dir = out.as_ref().and_then(|o| o.parent().map(|p| p.join(format!("{}-videos", a.split.split().name()))));
    let mut agent: Box<dyn Agent> = match (&a.run, a.baseline) {
        (_, Some(BaselineArg::Expert)) => Box::new(ExpertAgent::default()),
        (_, Some(BaselineArg::Random)) => Box::new(RandomAgent::new(a.seed)),
        (Some(run), None) => Box::new(run_agent(run, lapa_model::device(&a.device)?, run.display().to_string(), &mut opts)?),
        (None, None) => match &a.bundle {
            Some(path) => {
                let mut keys = a.public_keys.clone();
                if keys.is_empty()
                    && let Some(default) = crate::cmd::keys::default_key_path()
                        .map(|p| {
                            let mut s = p.into_os_string();
                            s.push(".pub");
                            PathBuf::from(s)
                        })
                        .filter(|p| p.exists())
                {
                    keys.push(default);
                }
                let trust = lapa_model::signing::Trust::from_files(&keys, a.allow_unsigned).context("--public-key")?;
                let bundle = lapa_model::bundle::Bundle::open(path, &trust).with_context(|| format!("--bundle {}", path.display()))?;
                if let lapa_model::signing::Verified::Unchecked { reason } = &bundle.verified {
                    eprintln!("warning: --allow-unsigned: evaluating {} without a verified signature ({reason})", path.display());
                }
                let device = lapa_model::device(&a.device)?;
                let policy = lapa_compress::bundle::open_policy(&bundle, &device).with_context(|| format!("--bundle {}", path.display()))?;
                let spec = policy.action_spec().clone();
                if spec.names.len() != 6 {
                    bail!("{}: the policy drives {} action dimensions; the simulated arm has 6", path.display(), spec.names.len());
                }
                let (fps, cam) = (spec.fps, &bundle.manifest.camera);
                if !(1.0..=1000.0).contains(&fps) || fps.fract() != 0.0 {
                    bail!("{}: the policy runs at {fps} fps; the simulator steps at a whole number of frames per second (1–1000)", path.display());
                }
                if cam.width != cam.height || cam.crop.is_some() {
                    bail!("{}: camera {}×{} (crop {:?}); the simulator renders square, uncropped frames", path.display(), cam.width, cam.height, cam.crop);
                }
                opts.fps = fps as u32;
                opts.size = cam.width;
                let name = format!("{} ({})", path.display(), policy.describe());
                Box::new(BoxedPolicyAgent { policy, name })
            }
            None => bail!("give --run RUN, --bundle DIR or --baseline expert|random"),
        },
    };
    let report = eval::evaluate(agent.as_mut(), &opts)?;
    if !a.quiet {
        print!("{}", report.table());
        if !report.videos.is_empty() {
            println!("rollout videos: {}", report.videos[0].parent().map(|p| p.display().to_string()).unwrap_or_default());
        }
    }
    if let Some(o) = &out
        && (a.run.is_some() || a.bundle.is_some())
    {
        lapa_fs::atomic_write(o, &serde_json::to_vec_pretty(&report)?)?;
        if !a.quiet {
            println!("report: {}", o.display());
        }
    }
    Ok(report)
}

/// `lapa serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A finetuned (or action-trained) policy run.
    #[arg(long)]
    pub run: PathBuf,
    /// HOST:PORT. Loopback unless --token is given.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Shared secret clients must send (openpi-client: `WebsocketClientPolicy(api_key=...)`),
    /// required to listen beyond loopback; at least 16 characters. Prefer the environment
    /// variable, which other users of the machine cannot read from the process list.
    #[arg(long, env = "LAPA_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Observation key of the camera image (uint8 [H, W, 3] or [3, H, W], any size: it is
    /// cropped and resized as the training frames were).
    #[arg(long, default_value = "observation/image")]
    pub image_key: String,
    /// Observation key of the joint state (needed by policies with a state token or delta actions).
    #[arg(long, default_value = "observation/state")]
    pub state_key: String,
    /// Observation key of the instruction.
    #[arg(long, default_value = "prompt")]
    pub prompt_key: String,
    /// Largest request accepted, in MiB.
    #[arg(long, default_value_t = 16)]
    pub max_message_mib: usize,
    /// Compute device.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub quiet: bool,
}

pub fn serve_cmd(a: &ServeArgs) -> Result<()> {
    use lapa_train::serve::{self, ObservationKeys, ServeOptions, Served};
    if !(1..=1024).contains(&a.max_message_mib) {
        bail!("--max-message-mib must be in 1..=1024");
    }
    let keys = ObservationKeys { image: a.image_key.clone(), state: a.state_key.clone(), prompt: a.prompt_key.clone() };
    let opts = ServeOptions { keys: keys.clone(), token: a.token.clone(), max_message: a.max_message_mib << 20, max_connections: 16, quiet: a.quiet };
    let listener = serve::bind(&a.listen, &opts)?;
    let device = lapa_model::device(&a.device)?;
    let (cfg, model) = lapa_model::load_vla(&a.run.join(MODEL_DIR), &device)?;
    let policy = VlaPolicy::new(cfg, model, device, a.run.display().to_string()).with_context(|| format!("{}", a.run.display()))?;
    let served = std::sync::Arc::new(Served::new(policy, &a.run.display().to_string(), &keys));
    // The port line is parsed by tests and scripts: keep its shape.
    println!("serving {} on ws://{} (openpi websocket protocol; GET /healthz)", a.run.display(), listener.local_addr()?);
    use std::io::Write as _;
    std::io::stdout().flush()?;
    serve::run(listener, served, opts)
}

#[derive(Debug, clap::Subcommand)]
pub enum ExperimentCommand {
    /// The paper's Language Table comparison in the simulator: scratch, LAPA on arm video, LAPA
    /// on hand video only, and true-action pretraining (ActionVLA), each finetuned on the same N
    /// labeled arm episodes and evaluated closed loop on the four splits, plus a few-label curve.
    /// Resumable per cell: run it again to continue; the table is rewritten after every cell.
    LapaTable(LapaTableArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LapaTableArgs {
    /// A plan.json to run (its settings override the flags below).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Policy preset of every row.
    #[arg(long, default_value = "small")]
    pub config: String,
    #[arg(long, default_value = "data/sim-arm")]
    pub arm: PathBuf,
    #[arg(long, default_value = "data/sim-hand")]
    pub hand: PathBuf,
    #[arg(long, default_value = "results/laq/labels/sim-arm")]
    pub arm_labels: PathBuf,
    #[arg(long, default_value = "results/laq/labels/sim-hand")]
    pub hand_labels: PathBuf,
    /// Labeled arm episodes every row finetunes on.
    #[arg(long, default_value_t = 40)]
    pub n: usize,
    /// Rollouts per (row, split).
    #[arg(long, default_value_t = 100)]
    pub rollouts: usize,
    #[arg(long)]
    pub pretrain_steps: Option<u64>,
    #[arg(long)]
    pub finetune_steps: Option<u64>,
    #[arg(long, default_value = "results/lapa-table")]
    pub out: PathBuf,
    /// Cells run at once (child processes).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Threads per cell.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub quiet: bool,
}

pub fn experiment(c: ExperimentCommand) -> Result<()> {
    use lapa_train::vla::experiment::{Plan, run};
    let ExperimentCommand::LapaTable(a) = c;
    let plan = match &a.plan {
        Some(p) => serde_json::from_slice(&std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?)
            .with_context(|| format!("{}: not a lapa-table plan", p.display()))?,
        None => {
            let mut p = Plan::default_for(a.arm.clone(), a.hand.clone(), a.arm_labels.clone(), a.hand_labels.clone());
            p.config = a.config.clone();
            p.n = a.n;
            p.rollouts = a.rollouts;
            p.pretrain_steps = a.pretrain_steps.unwrap_or(p.pretrain_steps);
            p.finetune_steps = a.finetune_steps.unwrap_or(p.finetune_steps);
            p
        }
    };
    if !(1..=16).contains(&a.jobs) || !(1..=64).contains(&a.threads) {
        bail!("--jobs must be in 1..=16 and --threads in 1..=64");
    }
    run(&plan, &a.out, a.jobs, a.threads, a.quiet)?;
    if !a.quiet {
        println!("table: {}", a.out.join("table.md").display());
    }
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Latency of one policy step on the CPU (a fresh policy of the preset's size, or a run's).
    Policy(BenchPolicyArgs),
    /// The compressed policies beside the f32 one on the same weights: step latency (burn f32,
    /// our engine f32 / int8 dynamic / int8 static, ONNX on rten), weight bytes, divergence from
    /// f32 on held-out simulator frames (results/compress/, bench/compress.sh).
    Compress(super::bench_compress::BenchCompressArgs),
}

/// `lapa bench policy`.
#[derive(Debug, Clone, Args)]
pub struct BenchPolicyArgs {
    /// Policy preset (fresh random weights: the latency does not depend on them).
    #[arg(long, default_value = "small", conflicts_with = "run")]
    pub config: String,
    /// Time this run's policy instead (a finetuned or action-trained run folder).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Timed policy steps (after 5 warm-up steps).
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// CPU threads (1 = one core, the board budget's unit).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Actions per chunk and bins per dimension of the action head (presets only).
    #[arg(long, default_value_t = 4)]
    pub chunk: usize,
    #[arg(long, default_value_t = 256)]
    pub bins: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also save the timed policy as a run folder (DIR/model/: config and weights), which
    /// `lapa export --run DIR` bundles for `lapa-edge` (the folder must not exist).
    #[arg(long, value_name = "DIR")]
    pub save_run: Option<PathBuf>,
    /// Also write what a re-implementation needs to run these exact weights (the PyTorch twin,
    /// `bench/policy_torch.py`): DIR/weights.safetensors (every parameter by its path),
    /// DIR/reference.safetensors (the bench frame, the instruction's embedding, the logits) and
    /// DIR/twin.json (the config and the bins' midpoints). The folder must not exist.
    #[arg(long, value_name = "DIR")]
    pub twin: Option<PathBuf>,
    /// Write the figures as JSON here too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One policy step (camera frame → decoded action chunk) of a freshly initialised policy of
/// `--config` or of `--run`'s, timed; the instruction's embedding is computed once and then
/// cached, as at run time (the first step's time, with it, is printed apart).
pub fn bench_policy(a: &BenchPolicyArgs) -> Result<()> {
    for (flag, dir) in [("--save-run", &a.save_run), ("--twin", &a.twin)] {
        if let Some(d) = dir
            && d.exists()
        {
            bail!("{flag} {}: already exists (pick a new folder)", d.display());
        }
    }
    rayon::ThreadPoolBuilder::new().num_threads(a.threads.max(1)).build_global().context("sizing the thread pool")?;
    let device = lapa_model::device(&a.device)?;
    let (label, cfg, model) = bench_model(&a.config, a.run.as_deref(), a.chunk, a.bins, &device)?;
    // Fresh weights have every gain at 1 and every offset at 0, where a twin that skipped one
    // would still agree: the twin's check runs on moved ones (a run's own weights are kept).
    let model = if a.twin.is_some() && a.run.is_none() { lapa_model::artifact::perturb_vectors(model, 0.2, 7) } else { model };
    let params = lapa_model::burn::module::Module::num_params(&model);
    let side = cfg.image_size;
    let rgb: Vec<u8> = (0..side * side * 3).map(|i| (i * 31 % 251) as u8).collect();
    let instruction = "put the red cube next to the blue ball";
    bench_policy_rest(a, label, cfg, model, params, rgb, instruction, device)
}

/// The policy a benchmark times: `run`'s, or a fresh one of preset `config` with an SO-101
/// action head of `chunk` actions and `bins` bins.
pub fn bench_model(
    config: &str,
    run: Option<&std::path::Path>,
    chunk: usize,
    bins: usize,
    device: &lapa_model::burn::tensor::Device,
) -> Result<(String, lapa_model::VlaConfig, lapa_model::Vla)> {
    use lapa_model::bins::QuantileBins;
    use lapa_model::policy::ActionSpec;
    use lapa_model::vla::{ActionHeadConfig, HeadConfig, VlaConfig};
    Ok(match run {
        Some(run) => {
            let (cfg, model) = lapa_model::load_vla(&run.join(MODEL_DIR), device).with_context(|| format!("--run {}", run.display()))?;
            (run.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned()), cfg, model)
        }
        None => {
            let names: Vec<String> = lapa_boards::SO101.names().iter().map(|s| s.to_string()).collect();
            let units = lapa_boards::SO101
                .joints
                .iter()
                .map(|j| if j.unit == lapa_boards::so101::Unit::Percent { "%".to_string() } else { "deg".to_string() })
                .collect();
            let spec = ActionSpec { names: names.clone(), units, fps: 10.0, chunk };
            let line: Vec<f32> = (0..1000).map(|i| i as f32 * 0.1 - 50.0).collect();
            let edges = vec![QuantileBins::fit(&line, bins).map_err(anyhow::Error::msg)?; names.len()];
            let head = HeadConfig::Action(ActionHeadConfig { spec, target: ActionTarget::Absolute, bins, edges });
            let cfg = VlaConfig::preset(config, head)?;
            let model = cfg.init(device)?;
            (config.to_string(), cfg, model)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn bench_policy_rest(
    a: &BenchPolicyArgs,
    label: String,
    cfg: lapa_model::VlaConfig,
    model: lapa_model::Vla,
    params: usize,
    rgb: Vec<u8>,
    instruction: &str,
    device: lapa_model::burn::tensor::Device,
) -> Result<()> {
    use lapa_model::policy::{Frame, PolicyInput};
    let side = cfg.image_size;
    if let Some(dir) = &a.save_run {
        lapa_model::save_vla(&dir.join(MODEL_DIR), &cfg, &model).with_context(|| format!("--save-run {}", dir.display()))?;
        println!("saved the policy as a run: {} (`lapa export --run {} --out BUNDLE`)", dir.display(), dir.display());
    }
    if let Some(dir) = &a.twin {
        write_twin(dir, &cfg, &model, &rgb, instruction, &device).with_context(|| format!("--twin {}", dir.display()))?;
        println!("wrote the twin's weights and reference: {}", dir.display());
    }
    let mut policy = VlaPolicy::new(cfg.clone(), model, device, label.clone())?;
    let state = [0.0f32; 6];
    let input = PolicyInput { frame: Frame { width: side, height: side, rgb: &rgb }, state: &state, instruction, time_s: 0.0 };
    let t0 = std::time::Instant::now();
    lapa_model::Policy::infer(&mut policy, &input)?;
    let first = t0.elapsed().as_secs_f64() * 1e3;
    for _ in 0..5 {
        lapa_model::Policy::infer(&mut policy, &input)?;
    }
    let mut ms = Vec::with_capacity(a.steps);
    for _ in 0..a.steps.max(1) {
        let t = std::time::Instant::now();
        lapa_model::Policy::infer(&mut policy, &input)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    let mflop = cfg.flops() as f64 / 1e6;
    println!(
        "policy {label}: {params} parameters (text encoder: {:?}), {mflop:.1} MFLOP per step; {} threads, {} steps: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; first step (embedding the instruction) {first:.1} ms",
        cfg.text,
        a.threads,
        ms.len(),
        q(0.5),
        q(0.99),
        ms[ms.len() - 1]
    );
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "framework": "burn", "policy": label, "parameters": params, "mflop_per_step": mflop, "threads": a.threads,
            "steps": ms.len(), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": ms[ms.len() - 1], "first_step_ms": first,
        });
        lapa_fs::atomic_write(path, serde_json::to_string_pretty(&v)?.as_bytes()).with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}

/// The files `bench/policy_torch.py` runs the same policy from (see `--twin`).
pub(crate) fn write_twin(
    dir: &std::path::Path,
    cfg: &lapa_model::VlaConfig,
    model: &lapa_model::Vla,
    rgb: &[u8],
    instruction: &str,
    device: &lapa_model::burn::tensor::Device,
) -> Result<()> {
    use lapa_model::artifact::{NamedTensor, named_params, write_safetensors};
    use lapa_model::burn::tensor::{Tensor, TensorData};
    use lapa_model::vla::{HeadConfig, TextInput, VlaInput};
    let HeadConfig::Action(head) = &cfg.head else { bail!("the twin covers action policies (finetuned or action-trained runs)") };
    if cfg.state.is_some() || cfg.frames != 1 {
        bail!("the twin covers single-frame policies without a state token");
    }
    let Some(text_dim) = cfg.text.frozen_dim() else { bail!("the twin covers policies with the frozen MiniLM text encoder (presets small and base)") };
    let mut enc = lapa_model::text::SentenceEncoder::load(&lapa_model::text::minilm_dir(), &cfg.text, device)?;
    let emb = enc.embed(&[instruction])?.remove(0);
    let mut patches = Vec::new();
    lapa_model::patchify(rgb, cfg.image_size, cfg.patch_size, &mut patches);
    let input = VlaInput {
        patches: Tensor::from_data(TensorData::new(patches, [1, cfg.n_patches(), cfg.patch_dim()]), device),
        text: TextInput::Embedded(Tensor::from_data(TensorData::new(emb.clone(), [1, text_dim]), device)),
        state: None,
    };
    let logits = model.forward(input); // [1, chunk·dims, bins]
    let shape = logits.dims().to_vec();
    let logits = logits.into_data().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    std::fs::create_dir_all(dir)?;
    write_safetensors(&dir.join("weights.safetensors"), &named_params(model)?)?;
    let side = cfg.image_size;
    write_safetensors(
        &dir.join("reference.safetensors"),
        &[
            NamedTensor { name: "frame".into(), shape: vec![side, side, 3], values: rgb.iter().map(|&v| f32::from(v)).collect() },
            NamedTensor { name: "text_embedding".into(), shape: vec![1, text_dim], values: emb },
            NamedTensor { name: "logits".into(), shape, values: logits },
        ],
    )?;
    let midpoints: Vec<Vec<f32>> = head.edges.iter().map(|e| (0..head.bins).map(|k| e.decode(k)).collect()).collect();
    let twin = serde_json::json!({
        "image_size": cfg.image_size, "patch_size": cfg.patch_size, "dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads,
        "dim_head": cfg.dim_head, "ff_mult": cfg.ff_mult, "qk_temperature": lapa_model::blocks::QK_TEMPERATURE, "layer_norm_eps": 1e-5, "text_dim": text_dim, "chunk": head.spec.chunk, "dims": head.spec.names.len(), "bins": head.bins,
        "instruction": instruction, "midpoints": midpoints,
    });
    lapa_fs::atomic_write(&dir.join("twin.json"), serde_json::to_string_pretty(&twin)?.as_bytes())?;
    Ok(())
}

/// `lapa export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// A finetuned (or action-trained) policy run.
    #[arg(long)]
    pub run: PathBuf,
    /// The bundle folder to write (must not exist).
    #[arg(long, required_unless_present = "onnx")]
    pub out: Option<PathBuf>,
    /// Also (or, without --out, only) write the policy as an ONNX model (opset 17) to this file:
    /// f32, or int8 through MatMulInteger with --int8. Inputs: `image` uint8 [S, S, 3], the
    /// instruction (`text_ids` + `text_weights`, or `text_embedding`), `state` where the policy
    /// uses it; outputs `logits` [chunk, dims, bins] and decoded `actions` [chunk, dims]. The f32
    /// model is for ONNX Runtime or TensorRT; the int8 one (MatMulInteger, a uint8 Cast) for ONNX
    /// Runtime — TensorRT takes int8 as Q/DQ, which this does not write. The bundle stays what
    /// lapa-edge runs.
    #[arg(long, value_name = "FILE")]
    pub onnx: Option<PathBuf>,
    /// The bundle's name (default: the run folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// The secret key that signs the bundle (`lapa keys generate`; default
    /// ~/.config/lapa/keys/lapa-signing). The board refuses unsigned bundles unless it runs with
    /// --allow-unsigned.
    #[arg(long, conflicts_with = "unsigned")]
    pub sign_key: Option<PathBuf>,
    /// Write the bundle unsigned (development: the board must run it with --allow-unsigned).
    #[arg(long)]
    pub unsigned: bool,
    /// Compress the policy: `dynamic` int8 (weights per output channel, activations per token
    /// at run time) for every linear layer but those in --keep-f32. The board runs it on its int8
    /// kernels (lapa-compress).
    #[arg(long, value_enum)]
    pub int8: Option<Int8Arg>,
    /// Compress the policy to weight-only int4 instead: each output channel's weights in blocks
    /// of 32 inputs with one scale each, activations f32 (the smallest weights in memory; each
    /// layer unpacks its weights for the duration of its matmul). The bundle stores the packed int4
    /// values and their scales, as an int8 bundle stores its int8 values. In ONNX (--onnx) the int4 values are
    /// written as f32 (opset 17 has no 4-bit type).
    #[arg(long, conflicts_with_all = ["int8", "calib"])]
    pub int4: bool,
    /// Linear layers (parameter paths, e.g. `head.Action.out`) that stay f32 in an --int8 or
    /// --int4 bundle.
    #[arg(long, value_delimiter = ',')]
    pub keep_f32: Vec<String>,
    /// The calibration set of `--int8 static`: a LeRobot dataset (the finetuning data, or frames
    /// recorded on the board with `lapa-edge run --record`); its camera frames, task strings and
    /// states are run through the f32 policy and each linear layer's input range is kept.
    #[arg(long, value_name = "DIR")]
    pub calib: Option<PathBuf>,
    /// Frames taken from --calib, spread evenly over its episodes.
    #[arg(long, default_value_t = 256)]
    pub calib_frames: usize,
    /// How a static range is read off the calibration activations: `minmax`, or a percentile
    /// such as `99.9` (the 0.1% and 99.9% points: outliers clip).
    #[arg(long, default_value = "minmax")]
    pub calib_method: String,
    /// The camera of --calib (default: its first video key).
    #[arg(long)]
    pub calib_camera: Option<String>,
}

/// `--calib-method`: `minmax` or a percentile in (50, 100].
pub(crate) fn calib_method(s: &str) -> Result<lapa_compress::calib::RangeMethod> {
    if s == "minmax" {
        return Ok(lapa_compress::calib::RangeMethod::MinMax);
    }
    match s.parse::<f32>() {
        Ok(p) if p > 50.0 && p <= 100.0 => Ok(lapa_compress::calib::RangeMethod::Percentile(p)),
        _ => bail!("--calib-method {s:?}: `minmax` or a percentile in (50, 100], e.g. 99.9"),
    }
}

/// Up to `n` observations from a LeRobot dataset, spread evenly over its frames, in the policy's
/// input form (frames cropped and resized as the bundle's camera spec does, instructions
/// embedded or hashed, states standardised).
pub(crate) fn calibration_set(
    cfg: &lapa_model::VlaConfig,
    dir: &Path,
    n: usize,
    camera: Option<&str>,
    device: &lapa_model::burn::tensor::Device,
) -> Result<Vec<lapa_compress::calib::Observation>> {
    use lapa_compress::calib::{Observation, OwnedText};
    // Each observation holds the patches as f32 (48 KB at 64×64): a bound keeps memory sane.
    const MAX_FRAMES: usize = 4096;
    if n == 0 || n > MAX_FRAMES {
        bail!("--calib-frames {n}: 1..={MAX_FRAMES}");
    }
    let ds = lapa_dataset::Dataset::open(dir)?;
    let key = match camera {
        Some(k) if ds.video_keys().iter().any(|v| v == k) => k.to_string(),
        Some(k) => bail!("--calib-camera {k:?}: the dataset's cameras are {:?}", ds.video_keys()),
        None => ds.video_keys().first().cloned().context("the dataset has no camera (video) feature")?,
    };
    let total: usize = ds.episodes.iter().map(|e| e.length).sum();
    if total == 0 {
        bail!("the dataset has no frames");
    }
    // Frames floor(j · total / n) for j < min(n, total): exactly that many, spread evenly.
    let want = n.min(total);
    let targets: Vec<usize> = (0..want).map(|j| j * total / want).collect();
    let spec = lapa_model::policy::CameraSpec { width: cfg.image_size, height: cfg.image_size, crop: None };
    let mut enc = match cfg.text {
        lapa_model::text::TextConfig::MiniLm { .. } => Some(lapa_model::text::SentenceEncoder::load(&lapa_model::text::minilm_dir(), &cfg.text, device)?),
        lapa_model::text::TextConfig::Hashed { .. } => None,
    };
    let mut texts: std::collections::HashMap<String, OwnedText> = std::collections::HashMap::new();
    let mut set = Vec::new();
    let mut seen = 0usize;
    let mut next = 0usize; // index into targets
    for k in 0..ds.episodes.len() {
        let len = ds.episodes[k].length;
        // Episodes without a chosen frame are not decoded.
        if next >= targets.len() || targets[next] >= seen + len {
            seen += len;
            continue;
        }
        let ep = ds.episode(k, true)?;
        let frames = ep.videos.get(&key).with_context(|| format!("episode {k}: no {key} video"))?;
        if !texts.contains_key(&ep.task) {
            texts.insert(ep.task.clone(), OwnedText::encode(&cfg.text, enc.as_mut(), &ep.task)?);
        }
        while next < targets.len() && targets[next] < seen + len {
            let t = targets[next] - seen;
            next += 1;
            if t >= frames.count.min(ep.len()) {
                bail!("episode {k}: frame {t} of {} is missing from its {key} video ({} frames)", len, frames.count);
            }
            let img = spec.apply(frames.width, frames.height, frames.frame(t)).map_err(anyhow::Error::msg)?;
            let mut patches = Vec::new();
            lapa_model::laq::patchify(&img, cfg.image_size, cfg.patch_size, &mut patches);
            let state = match (&cfg.state, &ep.state) {
                (Some(s), Some(m)) if m.cols == s.mean.len() => Some(s.standardise(m.row(t)).collect()),
                (Some(s), Some(m)) => bail!("episode {k}: observation.state has {} values, the policy takes {}", m.cols, s.mean.len()),
                (Some(_), None) => bail!("episode {k}: the policy takes a state and the dataset has no observation.state"),
                (None, _) => None,
            };
            set.push(Observation { patches, text: texts[&ep.task].clone(), state });
        }
        seen += len;
    }
    if set.is_empty() {
        bail!("no frames were read");
    }
    Ok(set)
}

/// The run's policy for compression: its config, parameters by name and linear layers, with
/// --keep-f32 checked against those layers (the int8 bundles and the ONNX export share it).
fn compressible(
    a: &ExportArgs,
    device: &lapa_model::burn::tensor::Device,
) -> Result<(lapa_model::VlaConfig, Vec<lapa_model::artifact::NamedTensor>, Vec<String>)> {
    let (cfg, model) = lapa_model::load_vla(&a.run.join(MODEL_DIR), device)?;
    let params = lapa_model::artifact::named_params(&model)?;
    let layers = lapa_compress::bundle::layer_names(&cfg, &params)?;
    if let Some(bad) = a.keep_f32.iter().find(|k| !layers.contains(k)) {
        bail!("--keep-f32 {bad:?}: the model has no such linear layer (its layers: {})", layers.join(", "));
    }
    Ok((cfg, params, layers))
}

/// `lapa export --onnx FILE`: the run's policy as ONNX (int8 with --int8), written atomically.
fn export_onnx(a: &ExportArgs, path: &Path) -> Result<()> {
    let (cfg, params, layers) = compressible(a, &lapa_model::device("cpu")?)?;
    let int8 = a.int8.is_some();
    let quantized = if int8 {
        lapa_compress::Scheme::Int8Dynamic
    } else if a.int4 {
        lapa_compress::Scheme::Int4Weights
    } else {
        lapa_compress::Scheme::F32
    };
    let scheme = |name: &str| if !a.keep_f32.iter().any(|k| k == name) { quantized } else { lapa_compress::Scheme::F32 };
    let doc = format!(
        "lapa policy from {} ({})",
        a.run.display(),
        if int8 {
            "int8 dynamic, MatMulInteger"
        } else if a.int4 {
            "int4 weight values as f32"
        } else {
            "f32"
        }
    );
    let bytes = lapa_compress::onnx::export(&cfg, params, &scheme, 127, &doc).with_context(|| format!("--onnx {}", path.display()))?;
    lapa_fs::atomic_write(path, &bytes).with_context(|| format!("--onnx {}", path.display()))?;
    println!(
        "onnx policy ({:.1} MB, opset {}, {}): {}",
        bytes.len() as f64 / 1e6,
        lapa_compress::onnx::OPSET,
        if quantized.is_quantized() {
            format!("{}/{} linear layers {}", layers.iter().filter(|l| scheme(l).is_quantized()).count(), layers.len(), if int8 { "int8" } else { "int4" })
        } else {
            "f32".into()
        },
        path.display()
    );
    Ok(())
}

/// `lapa export --int8`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Int8Arg {
    /// Activation ranges measured per token on every step.
    Dynamic,
    /// One activation range per layer, calibrated on --calib's frames (cheaper per step).
    Static,
}

/// Writes a run's policy as a model bundle for `lapa-edge run --bundle`: the config, the action
/// and camera specs, the weights and (for MiniLM policies) the text encoder's files, each with
/// its SHA-256; staged and renamed into place.
pub fn export_cmd(a: &ExportArgs) -> Result<()> {
    if !a.keep_f32.is_empty() && a.int8.is_none() && !a.int4 {
        bail!("--keep-f32 is for --int8 or --int4 (an f32 export keeps every layer f32)");
    }
    match (a.int8, &a.calib) {
        (Some(Int8Arg::Static), None) => bail!("--int8 static needs --calib DATASET (the frames its ranges are calibrated on)"),
        (Some(Int8Arg::Dynamic) | None, Some(_)) => bail!("--calib is for --int8 static"),
        (Some(Int8Arg::Static), Some(_)) if a.onnx.is_some() => {
            bail!("--onnx with --int8 static is not written yet: export the ONNX model with --int8 dynamic (or f32)")
        }
        _ => {}
    }
    // The bundle first: its key and folder checks come before anything is written.
    if let Some(out) = &a.out {
        export_bundle(a, out)?;
    }
    if let Some(path) = &a.onnx {
        export_onnx(a, path)?;
    }
    Ok(())
}

fn export_bundle(a: &ExportArgs, out: &Path) -> Result<()> {
    let name = a.name.clone().unwrap_or_else(|| a.run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "policy".into()));
    // The key is read before anything is written: a missing key never leaves a bundle behind.
    let signer = if a.unsigned {
        None
    } else {
        let path = match &a.sign_key {
            Some(p) => p.clone(),
            None => super::keys::default_key_path().context("no --sign-key given and neither XDG_CONFIG_HOME nor HOME is set")?,
        };
        if a.sign_key.is_none() && !path.exists() {
            bail!(
                "no signing key at {} (the default --sign-key): create one with `lapa keys generate`, pass --sign-key KEY, or --unsigned for development",
                path.display()
            );
        }
        Some(lapa_model::signing::SecretKey::read(&path).with_context(|| format!("--sign-key {}", path.display()))?)
    };
    let model_dir = a.run.join(MODEL_DIR);
    let text_dir = lapa_model::text::minilm_dir();
    let b = match a.int8 {
        None if a.int4 => {
            let (_, _, layers) = compressible(a, &lapa_model::device("cpu")?)?;
            let made_by = format!("lapa export --int4{}", if a.keep_f32.is_empty() { String::new() } else { format!(" --keep-f32 {}", a.keep_f32.join(",")) });
            let plan = lapa_compress::bundle::uniform_plan(&layers, |_| lapa_compress::Scheme::Int4Weights, &a.keep_f32, made_by);
            lapa_compress::bundle::write(&model_dir, &text_dir, out, &name, signer.as_ref(), &plan)?
        }
        None => lapa_model::vla::export::write_bundle(&model_dir, &text_dir, out, &name, signer.as_ref())?,
        Some(Int8Arg::Static) => {
            let calib_dir = a.calib.as_deref().context("--int8 static needs --calib DATASET")?;
            let device = lapa_model::device("cpu")?;
            let (cfg, params, layers) = compressible(a, &device)?;
            let method = calib_method(&a.calib_method)?;
            let set = calibration_set(&cfg, calib_dir, a.calib_frames, a.calib_camera.as_deref(), &device)
                .with_context(|| format!("--calib {}", calib_dir.display()))?;
            let engine = lapa_compress::Engine::new(&cfg, params, &|_| lapa_compress::Scheme::F32)?;
            let ranges = lapa_compress::calib::activation_ranges(&engine, &set, method)?;
            let made_by = format!(
                "lapa export --int8 static --calib {} ({} frames, {}){}",
                calib_dir.display(),
                set.len(),
                a.calib_method,
                if a.keep_f32.is_empty() { String::new() } else { format!(" --keep-f32 {}", a.keep_f32.join(",")) }
            );
            let plan = lapa_compress::bundle::uniform_plan(
                &layers,
                |l| ranges.get(l).map_or(lapa_compress::Scheme::Int8Dynamic, |&(lo, hi)| lapa_compress::Scheme::Int8Static { lo, hi }),
                &a.keep_f32,
                made_by,
            );
            println!("calibrated {} layers on {} frames of {}", ranges.len(), set.len(), calib_dir.display());
            lapa_compress::bundle::write(&model_dir, &text_dir, out, &name, signer.as_ref(), &plan)?
        }
        Some(Int8Arg::Dynamic) => {
            let (_, _, layers) = compressible(a, &lapa_model::device("cpu")?)?;
            let made_by =
                format!("lapa export --int8 dynamic{}", if a.keep_f32.is_empty() { String::new() } else { format!(" --keep-f32 {}", a.keep_f32.join(",")) });
            let plan = lapa_compress::bundle::uniform_plan(&layers, |_| lapa_compress::Scheme::Int8Dynamic, &a.keep_f32, made_by);
            lapa_compress::bundle::write(&model_dir, &text_dir, out, &name, signer.as_ref(), &plan)?
        }
    };
    let bytes: u64 = b.manifest.parts.values().map(|p| p.bytes).sum();
    let signed = match &b.verified {
        lapa_model::signing::Verified::Signed { key_id } => format!("signed by key {key_id}"),
        lapa_model::signing::Verified::Unchecked { .. } => "UNSIGNED: run it with --allow-unsigned".into(),
    };
    println!("bundle {} ({} parts, {:.1} MB, {signed}): {}", b.manifest.name, b.manifest.parts.len(), bytes as f64 / 1e6, b.root.display());
    Ok(())
}
