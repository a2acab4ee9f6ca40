//! `lapa train laq`, `lapa laq label`, `lapa laq report`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lapa_model::LaqConfig;
use lapa_train::laq::{self, ActionSupervision, Augment, DeadCode, LaqTrainConfig, parse_seconds};

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Stage 1: train the latent action quantizer on action-free video.
    ///
    /// Frames are decoded once into a memory-mapped cache at the model's resolution (keyed by the
    /// sources' content), pairs (x_t, x_{t+H}) are sampled by background threads, and the run
    /// folder gets train.json, model/ (config.json + model.bpk), checkpoint/, metrics.csv and
    /// curves.png. Interrupt at any time and continue with --resume.
    Laq(TrainLaqArgs),
    /// Stage 2: latent pretraining. The policy learns to predict the LAQ's latent-action tokens
    /// from a frame and its episode's instruction, on video without action labels (arm or hand).
    Latent(super::vla::LatentArgs),
    /// Pretraining on true actions (the paper's ActionVLA upper bound): the action head on every
    /// labeled episode given.
    Action(super::vla::ActionTrainArgs),
    /// Stage 3: finetuning. The pretrained trunk (--init RUN) gets a new quantile-bin action head
    /// and trains on a few labeled episodes; --init none trains the same model from scratch.
    Finetune(super::vla::FinetuneArgs),
    /// The VPT baseline's inverse-dynamics model: the policy's trunk over a frame and the next
    /// one, predicting the action between them, trained on a few labeled episodes. `lapa vpt
    /// label` then pseudo-labels action-free video with it.
    Idm(super::vla::IdmArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TrainLaqArgs {
    /// A LeRobot dataset (v3.0/v2.1, e.g. from `lapa sim record`) or a folder of videos
    /// (mp4/webm/mkv/mov/avi, one clip per file). Repeat to mix sources.
    #[arg(long = "data", required_unless_present = "resume")]
    pub data: Vec<PathBuf>,
    /// Frame spacing H in seconds, converted per source fps (LAPA: 0.6s robot, 2.4s human video).
    #[arg(long, default_value = "0.6s")]
    pub spacing: String,
    /// Model size: tiny (tests, 32²), small (CPU, 64² sim frames), base (GPU, 64², dim 512), paper (LAPA, 256²).
    #[arg(long, default_value = "small")]
    pub config: String,
    /// Override the preset's codebook size (LAPA: 8), e.g. for capacity ablations.
    #[arg(long)]
    pub codebook_size: Option<usize>,
    /// Override the preset's latent tokens per pair, a square number: 1, 4 (LAPA's 2×2 pooling) or
    /// 16 (no pooling at 8×8 patches).
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Quantizer: nsvq (LAPA's noise-substitution VQ over a learned codebook; every preset's
    /// default) or fsq (finite scalar quantisation: fixed levels, no codebook, no dead codes).
    #[arg(long, value_parser = ["nsvq", "fsq"])]
    pub quantizer: Option<String>,
    /// FSQ levels per dimension, comma-separated (vocabulary = their product), e.g. 8,5,5,5.
    #[arg(long, value_delimiter = ',')]
    pub fsq_levels: Option<Vec<usize>>,
    /// Run folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint (settings come from its train.json;
    /// --steps may extend it).
    #[arg(long)]
    pub resume: bool,
    /// Training steps.
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Adam learning rate (LAPA: 1e-4, constant).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Gradient-norm clip per parameter tensor (LAPA: 0.5); 0 disables.
    #[arg(long, default_value_t = 0.5)]
    pub grad_clip: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Disable LAPA's dead-code replacement schedule.
    #[arg(long)]
    pub no_dead_code: bool,
    /// Re-seed dead codes from the batch's encoder outputs (k-means-style restart) instead of
    /// from used codes plus noise (LAPA).
    #[arg(long)]
    pub reseed_from_batch: bool,
    /// Last step of dead-code replacement (LAPA: 5000; the schedule's last slot is 4500).
    #[arg(long, default_value_t = 5000)]
    pub dead_code_until: u64,
    /// A code used fewer than this × batch-size times since the last replacement is dead
    /// (LAPA: 0.1). Larger values also re-seed rarely used codes, not only unused ones.
    #[arg(long, default_value_t = 0.1)]
    pub dead_code_threshold: f32,
    /// Random-crop augmentation: fraction of the side that may be cut (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub aug_crop: f32,
    /// Colour jitter: brightness offset and contrast factor range (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub aug_color: f32,
    /// A departure from LAPA: train a linear head from the quantized latent to the action (the
    /// joint displacement over the pair) beside the reconstruction, on this many labelled
    /// episodes of the first --data source (never one of the report's held-out fifth). 0 = off.
    #[arg(long, default_value_t = 0)]
    pub supervise_episodes: usize,
    /// With --supervise-episodes: samples of every batch drawn from the labelled episodes.
    #[arg(long, default_value_t = 8)]
    pub supervise_per_batch: usize,
    /// With --supervise-episodes: weight of the head's MSE (standardised targets) beside the
    /// reconstruction MSE.
    #[arg(long, default_value_t = 0.01)]
    pub supervise_weight: f32,
    #[command(flatten)]
    pub rt: RuntimeArgs,
    #[arg(long, default_value_t = 25)]
    pub log_every: u64,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Batch-building threads.
    #[arg(long, default_value_t = 1)]
    pub loader_threads: usize,
}

/// Where frames come from and what computes them: shared by every LAQ command.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Dataset camera (video key); the first one by default.
    #[arg(long)]
    pub camera: Option<String>,
    /// Compute device: cpu (burn flex), ndarray, wgpu, cuda or cuda:N (GPU ones need a build with
    /// that feature). Policy training (`lapa train latent|action|finetune`) also takes a
    /// comma-separated list for data parallelism: `cuda:0,cuda:1`, or `cpu,cpu` (two replicas on
    /// the one CPU device).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Frame-cache folder (default: $LAPA_CACHE or ~/.cache/lapa/frames).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

impl RuntimeArgs {
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(laq::default_cache_dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum LaqCommand {
    /// Write the latent action tokens of every frame of a dataset (for latent pretraining).
    Label(LabelArgs),
    /// Latent-quality report: codebook usage, action probes vs a frame-difference baseline,
    /// counterfactual decodes, reconstruction PSNR vs copying x_t. Writes report.md + PNGs.
    Report(ReportArgs),
    /// Ablation: train every row of a plan (JSON) on the same data and budget, report each, and
    /// write one comparison table (ablation.md, ablation.png, summary.json). Resumable per row:
    /// finished rows are kept, half-trained ones resume from their checkpoint. Rows can run side
    /// by side in separate processes (--jobs), each with --threads-per-row threads.
    Ablate(AblateArgs),
    /// One row of an ablation plan in this process (what `ablate` runs in its child processes).
    #[command(hide = true)]
    AblateRow(AblateRowArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AblateArgs {
    /// Plan file (JSON): data, probe_data, preset, steps, train settings, rows. See
    /// results/laq/ablation/plan.json.
    #[arg(long)]
    pub plan: PathBuf,
    /// Output folder: runs/<row>/ (run + report) and the table.
    #[arg(long)]
    pub out: PathBuf,
    /// Rows trained at the same time (separate processes).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Compute threads of each row's process (RAYON_NUM_THREADS).
    #[arg(long, default_value_t = 1)]
    pub threads_per_row: usize,
    /// Only rewrite the table from the finished rows.
    #[arg(long)]
    pub table_only: bool,
    /// Only these rows (repeatable; default: every row).
    #[arg(long)]
    pub only: Vec<String>,
    /// Report finished rows again (their weights must be here), e.g. after a report change.
    #[arg(long)]
    pub rereport: bool,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AblateRowArgs {
    #[arg(long)]
    pub plan: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub row: String,
    #[arg(long)]
    pub rereport: bool,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

/// Row processes still running; stopped if `ablate` itself fails (or is unwound), so no orphan
/// keeps training and writing into the table's folder.
struct Children(Vec<(String, std::process::Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("row {name}: stopped (lapa laq ablate ended early); it resumes from its last checkpoint on the next run");
        }
    }
}

fn ablate(a: &AblateArgs) -> Result<()> {
    use laq::ablate::{Plan, RowState, row_state, run_dir, write_table};
    let plan = Plan::load(&a.plan)?;
    for name in &a.only {
        if !plan.rows.iter().any(|r| &r.name == name) {
            bail!("--only {name:?}: no such row in {}", a.plan.display());
        }
    }
    if a.jobs == 0 || a.threads_per_row == 0 {
        bail!("--jobs and --threads-per-row must be positive");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    let mut pending: Vec<_> = plan
        .rows
        .iter()
        .filter(|r| a.only.is_empty() || a.only.contains(&r.name))
        .filter(|r| a.rereport || row_state(&plan, &a.out, r) != RowState::Done)
        .filter(|r| row_state(&plan, &a.out, r) != RowState::Stale)
        .cloned()
        .collect();
    for r in &plan.rows {
        println!("{:<24} {:?}", r.name, row_state(&plan, &a.out, r));
    }
    if a.table_only || pending.is_empty() {
        let s = write_table(&plan, &a.out)?;
        println!("table: {} of {} rows finished -> {}", s.finished, s.total, a.out.join("ablation.md").display());
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find the lapa executable to run rows")?;
    let mut running = Children(Vec::new());
    let mut failed = Vec::new();
    loop {
        // A row that continues another waits until that one has finished.
        let waits = |r: &laq::ablate::PlanRow, pending: &[laq::ablate::PlanRow], running: &[(String, std::process::Child)]| {
            r.continues.as_ref().is_some_and(|b| pending.iter().any(|p| &p.name == b) || running.iter().any(|(n, _)| n == b))
        };
        while running.0.len() < a.jobs
            && let Some(i) = (0..pending.len()).find(|&i| !waits(&pending[i], &pending, &running.0))
        {
            let row = pending.remove(i);
            let run = run_dir(&a.out, &row);
            std::fs::create_dir_all(&run)?;
            // Appended: a row resumed in a later sitting keeps the log of the earlier ones.
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run.join("ablate.log"))
                .with_context(|| format!("{}: cannot write ablate.log", run.display()))?;
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["laq", "ablate-row", "--quiet", "--device", &a.rt.device]);
            if a.rereport {
                cmd.arg("--rereport");
            }
            cmd.arg("--plan")
                .arg(&a.plan)
                .arg("--out")
                .arg(&a.out)
                .arg("--row")
                .arg(&row.name)
                .arg("--cache")
                .arg(a.rt.cache_dir())
                .env("RAYON_NUM_THREADS", a.threads_per_row.to_string())
                .stdout(log.try_clone()?)
                .stderr(log);
            println!("row {}: started ({:?}); log {}", row.name, row_state(&plan, &a.out, &row), run.join("ablate.log").display());
            running.0.push((row.name.clone(), cmd.spawn().context("cannot start a row process")?));
        }
        if running.0.is_empty() {
            if let Some(r) = pending.first() {
                bail!("row {}: cannot start (it continues a row that did not finish)", r.name);
            }
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut i = 0;
        while i < running.0.len() {
            match running.0[i].1.try_wait()? {
                Some(status) => {
                    let (name, _) = running.0.remove(i);
                    if status.success() {
                        println!("row {name}: done");
                    } else {
                        println!("row {name}: failed ({status}); see its ablate.log");
                        failed.push(name);
                    }
                    write_table(&plan, &a.out)?;
                }
                None => i += 1,
            }
        }
    }
    let s = write_table(&plan, &a.out)?;
    println!("table: {} of {} rows finished -> {}", s.finished, s.total, a.out.join("ablation.md").display());
    if !failed.is_empty() {
        bail!("rows failed: {}", failed.join(", "));
    }
    Ok(())
}

fn ablate_row(a: &AblateRowArgs) -> Result<()> {
    let plan = laq::ablate::Plan::load(&a.plan)?;
    let row = plan.rows.iter().find(|r| r.name == a.row).with_context(|| format!("no row {:?} in {}", a.row, a.plan.display()))?;
    let device = lapa_model::device(&a.rt.device)?;
    laq::ablate::run_row_with(&plan, &a.out, row, &device, &a.rt.cache_dir(), a.rt.quiet, a.rereport)?;
    println!("row {} done", row.name);
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct LabelArgs {
    #[command(flatten)]
    pub use_run: UseRunArgs,
    /// Output folder for latent_actions.csv and latent_actions.json.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Also write latent_continuous.csv: every frame's pre-quantisation latent (n_tokens ×
    /// code_dim values), the target of `lapa train latent --continuous` (the LAPA table's
    /// continuous-latent ablation).
    #[arg(long)]
    pub continuous: bool,
}

/// What every command that applies a trained LAQ to data needs.
#[derive(Debug, Clone, Args)]
pub struct UseRunArgs {
    /// Trained LAQ run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Dataset or video folder (the report's action probes need observation.state: sim arm data).
    #[arg(long)]
    pub data: PathBuf,
    /// Frame spacing (default: the run's).
    #[arg(long)]
    pub spacing: Option<String>,
    #[command(flatten)]
    pub rt: RuntimeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub use_run: UseRunArgs,
    /// Output folder (default: RUN/report-<data folder name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Score at most this many pairs (evenly subsampled).
    #[arg(long, default_value_t = 20000)]
    pub max_pairs: usize,
    /// Probe training steps.
    #[arg(long, default_value_t = 600)]
    pub probe_steps: usize,
}

pub fn train_laq(a: &TrainLaqArgs) -> Result<laq::TrainSummary> {
    if a.resume && (a.codebook_size.is_some() || a.tokens.is_some() || a.quantizer.is_some() || a.fsq_levels.is_some()) {
        bail!("--codebook-size, --tokens, --quantizer and --fsq-levels cannot change a run being resumed (its model/config.json fixes them)");
    }
    if a.resume && a.supervise_episodes > 0 {
        bail!("--supervise-* cannot change a run being resumed (its train.json fixes the action supervision)");
    }
    let device = lapa_model::device(&a.rt.device)?;
    let cache = a.rt.cache_dir();
    let (cfg, model_cfg) = if a.resume {
        let cfg: LaqTrainConfig = serde_json::from_slice(
            &std::fs::read(a.out.join(laq::train::TRAIN_FILE)).with_context(|| format!("{}: no train.json to resume", a.out.display()))?,
        )
        .with_context(|| format!("{}: bad train.json", a.out.display()))?;
        let model_cfg = lapa_model::artifact::load_laq_config(&a.out.join(laq::train::MODEL_DIR))?;
        let steps = a.steps.unwrap_or(cfg.steps);
        (LaqTrainConfig { steps, ..cfg }, model_cfg)
    } else {
        let mut cfg = LaqTrainConfig::lapa(a.data.clone(), parse_seconds(&a.spacing)?);
        cfg.camera = a.rt.camera.clone();
        cfg.batch_size = a.batch;
        cfg.steps = a.steps.unwrap_or(cfg.steps);
        cfg.lr = a.lr;
        cfg.grad_clip = (a.grad_clip > 0.0).then_some(a.grad_clip);
        cfg.seed = a.seed;
        if !(a.dead_code_threshold >= 0.0 && a.dead_code_threshold.is_finite()) {
            bail!("--dead-code-threshold must be a non-negative number, got {}", a.dead_code_threshold);
        }
        cfg.dead_code = DeadCode {
            enabled: !a.no_dead_code,
            threshold: a.dead_code_threshold,
            last_step: a.dead_code_until,
            from_batch: a.reseed_from_batch,
            ..DeadCode::LAPA
        };
        cfg.augment = Augment { crop: a.aug_crop, brightness: a.aug_color, contrast: a.aug_color };
        cfg.log_every = a.log_every;
        cfg.checkpoint_every = a.checkpoint_every;
        cfg.loader_threads = a.loader_threads;
        if a.supervise_episodes > 0 {
            let sup = ActionSupervision { episodes: a.supervise_episodes, per_batch: a.supervise_per_batch, weight: a.supervise_weight };
            sup.validate(cfg.batch_size).context("--supervise-episodes / --supervise-per-batch / --supervise-weight")?;
            cfg.action_supervision = Some(sup);
        }
        if cfg.batch_size == 0 {
            bail!("--batch must be positive");
        }
        let mut model_cfg = LaqConfig::preset(&a.config)?;
        if let Some(k) = a.codebook_size {
            model_cfg.codebook_size = k;
        }
        if let Some(t) = a.tokens {
            model_cfg.n_tokens = t;
        }
        if let Some(q) = &a.quantizer {
            model_cfg.quantizer = q.parse()?;
        }
        if let Some(levels) = &a.fsq_levels {
            if model_cfg.quantizer != lapa_model::QuantizerKind::Fsq {
                bail!("--fsq-levels needs --quantizer fsq");
            }
            model_cfg.fsq_levels = levels.clone();
        }
        model_cfg.validate()?;
        (cfg, model_cfg)
    };
    let s = laq::train(&cfg, &model_cfg, &a.out, &device, &cache, a.resume, a.rt.quiet)?;
    if !a.rt.quiet {
        println!(
            "trained {} steps: loss {:.5} -> {:.5}, perplexity {:.2}, {} / {} codes used, {:.0} samples/s; model in {}",
            s.steps,
            s.first_loss,
            s.last_loss,
            s.perplexity,
            s.codes_used,
            model_cfg.vocabulary(),
            s.samples_per_s,
            s.model_dir.display()
        );
    }
    Ok(s)
}

fn run_spacing(run: &std::path::Path, given: &Option<String>) -> Result<f64> {
    match given {
        Some(s) => parse_seconds(s),
        None => {
            let cfg: LaqTrainConfig = serde_json::from_slice(
                &std::fs::read(run.join(laq::train::TRAIN_FILE))
                    .with_context(|| format!("{}: not a LAQ run (no train.json); pass --spacing", run.display()))?,
            )?;
            Ok(cfg.spacing_s)
        }
    }
}

pub fn report(a: &ReportArgs) -> Result<laq::report::Report> {
    let u = &a.use_run;
    let device = lapa_model::device(&u.rt.device)?;
    let out = a.out.clone().unwrap_or_else(|| laq::report::default_out(&u.run, &u.data));
    let opts = laq::report::ReportOptions {
        run: u.run.clone(),
        data: u.data.clone(),
        camera: u.rt.camera.clone(),
        spacing_s: run_spacing(&u.run, &u.spacing)?,
        cache_dir: u.rt.cache_dir(),
        out: out.clone(),
        max_pairs: a.max_pairs,
        probe_steps: a.probe_steps,
        quiet: u.rt.quiet,
    };
    let r = laq::report::run(&opts, &device)?;
    if !u.rt.quiet {
        let used: Vec<String> = r.usage.iter().map(|u| format!("{}", u.used)).collect();
        println!("LAQ report: {}", out.join("report.md").display());
        println!("  perplexity {:.2} (codes used per token position: {} of {})", r.perplexity, used.join("/"), r.vocabulary);
        if let (Some(l), Some(d)) = (&r.probe_latent, &r.probe_frame_diff) {
            println!(
                "  probe accuracy (action direction, held-out episodes): latents {:.1}%, frame-diff baseline {:.1}%, majority {:.1}%",
                100.0 * l.accuracy,
                100.0 * d.accuracy,
                100.0 * l.majority
            );
            println!("  probe R² (joint deltas): latents {:.3}, frame-diff {:.3}", l.r2, d.r2);
        }
        if let (Some(z), Some(m)) = (&r.probe_prequant, &r.probe_kmeans) {
            println!(
                "  diagnostics (direction accuracy): encoder output before quantisation {:.1}%, k-means codebook of {} {:.1}%",
                100.0 * z.accuracy,
                r.vocabulary,
                100.0 * m.accuracy
            );
        }
        println!("  PSNR of x_{{t+H}}: LAQ {:.2} dB vs copy-x_t {:.2} dB", r.psnr_recon, r.psnr_copy);
    }
    Ok(r)
}

pub fn run_laq(c: LaqCommand) -> Result<()> {
    match c {
        LaqCommand::Label(a) => {
            let u = &a.use_run;
            let device = lapa_model::device(&u.rt.device)?;
            let m = laq::label::run(
                &u.run,
                &u.data,
                u.rt.camera.as_deref(),
                run_spacing(&u.run, &u.spacing)?,
                &a.out,
                &u.rt.cache_dir(),
                &device,
                a.batch,
                a.continuous,
                u.rt.quiet,
            )?;
            println!("labelled {} frames ({} with a full H-step future) -> {}", m.frames, m.valid, a.out.join(laq::label::LABELS_CSV).display());
            Ok(())
        }
        LaqCommand::Report(a) => report(&a).map(|_| ()),
        LaqCommand::Ablate(a) => ablate(&a),
        LaqCommand::AblateRow(a) => ablate_row(&a),
    }
}
