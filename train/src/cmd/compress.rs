//! `lapa compress`: tools that decide how a policy is compressed.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lapa_compress::Scheme;
use lapa_train::trainer::MODEL_DIR;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum CompressCommand {
    /// Per-layer sensitivity: quantize one linear layer at a time to int8 and measure how far the
    /// action-bin distributions move from f32 (mean KL, share of chosen bins that change) on a
    /// dataset's frames. Writes sensitivity.md / .json, worst layer first, and the `--keep-f32`
    /// list for `lapa export --int8`.
    Scan(ScanArgs),
    /// Distil a policy into a smaller student (knowledge distillation): the student learns the
    /// teacher's action-bin distributions (KL at a temperature, on every frame) plus the labels
    /// (cross-entropy, on labeled frames), on the teacher's finetuning data and on unlabeled
    /// video (--unlabeled, e.g. the latent-pretraining datasets) that the teacher labels. It
    /// trains through the shared trainer (checkpoints, --resume, metrics.csv, curves.png; its
    /// accuracy column is the share of targets where the student picks the teacher's bin).
    Distill(DistillArgs),
}

#[derive(Debug, Clone, Args)]
#[command(mut_arg("config", |a| a
    .long("student-config")
    .default_value("tiny")
    .help("The student's trunk: a policy preset (tiny, small, base). It takes the teacher's image and patch size, text encoder, state token and action head")))]
pub struct DistillArgs {
    /// The teacher: a finetuned (or action-trained) policy run.
    #[arg(long, required_unless_present = "resume")]
    pub teacher: Option<PathBuf>,
    /// Labeled LeRobot datasets (default: the teacher's own training data, from its train.json).
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Use only the first N episodes of each --data source (default: the teacher's, when --data
    /// is its own).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// LeRobot datasets read for their frames and instructions only (every episode; actions
    /// unused): the teacher's distributions are their only targets.
    #[arg(long)]
    pub unlabeled: Vec<PathBuf>,
    /// Softmax temperature of teacher and student (the KL is scaled by T²).
    #[arg(long, default_value_t = 2.0)]
    pub temperature: f32,
    /// Weight of the labels' cross-entropy; the teacher's KL gets 1 − this.
    #[arg(long, default_value_t = 0.5)]
    pub label_weight: f32,
    /// DAgger-style rounds after the first --steps: each rolls the student out in the simulator
    /// (--dagger-episodes rollouts, recorded under OUT/dagger/round-K), adds the rollouts as
    /// unlabeled data the teacher labels, and trains --dagger-steps more steps. --resume carries
    /// on with the rounds left.
    #[arg(long)]
    pub dagger_rounds: Option<u32>,
    /// Student rollouts per DAgger round [default: 60].
    #[arg(long, requires = "dagger_rounds")]
    pub dagger_episodes: Option<usize>,
    /// Training steps added per DAgger round [default: 500].
    #[arg(long, requires = "dagger_rounds")]
    pub dagger_steps: Option<u64>,
    #[command(flatten)]
    pub common: super::vla::CommonArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// A finetuned (or action-trained) policy run.
    #[arg(long)]
    pub run: PathBuf,
    /// A LeRobot dataset whose frames the scan runs on (for `static`: the first half calibrates,
    /// the second is measured).
    #[arg(long)]
    pub calib: PathBuf,
    /// Frames taken from --calib, spread evenly.
    #[arg(long, default_value_t = 64)]
    pub frames: usize,
    /// The int8 scheme each layer is tried with: `dynamic` or `static`.
    #[arg(long, default_value = "dynamic")]
    pub scheme: String,
    /// For `static`: `minmax` or a percentile such as 99.9.
    #[arg(long, default_value = "minmax")]
    pub calib_method: String,
    /// The camera of --calib (default: its first video key).
    #[arg(long)]
    pub calib_camera: Option<String>,
    /// Layers whose KL exceeds this (nats) go on the suggested --keep-f32 list.
    #[arg(long, default_value_t = 1e-3)]
    pub max_kl: f64,
    /// Where the table goes (default: RUN/compress/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(c: CompressCommand) -> Result<()> {
    match c {
        CompressCommand::Scan(a) => scan(&a),
        CompressCommand::Distill(a) => distill(&a).map(|_| ()),
    }
}

/// `lapa compress distill`: the student's run config from the teacher's, then the shared trainer.
pub fn distill(a: &DistillArgs) -> Result<lapa_train::vla::VlaSummary> {
    use lapa_train::trainer::TRAIN_FILE;
    use lapa_train::vla::StageKind;
    use lapa_train::vla::train::DistillConfig;
    let mut cfg = super::vla::config(StageKind::Distill, a.data.clone(), &a.common, None);
    if a.common.resume {
        if a.teacher.is_some() || !a.data.is_empty() || !a.unlabeled.is_empty() || a.episodes.is_some() || a.dagger_rounds.is_some() {
            bail!(
                "--resume continues with the teacher, data and DAgger rounds of {}'s train.json; drop --teacher, --data, --unlabeled, --episodes and --dagger-*",
                a.common.out.display()
            );
        }
        let saved = super::vla::read_train_config(&a.common.out).with_context(|| format!("{}: no run to resume", a.common.out.display()))?;
        if a.common.steps.is_some() && saved.distill.as_ref().is_some_and(|d| d.dagger.is_some()) {
            bail!("--steps with --resume: a DAgger run's steps are its first --steps plus --dagger-steps per round (its train.json); drop --steps");
        }
        let s = super::vla::run_stage(cfg, &a.common)?;
        return dagger_rounds(&a.common).map(|d| d.unwrap_or(s));
    }
    let Some(teacher) = &a.teacher else { bail!("--teacher is required (unless --resume)") };
    let d = DistillConfig { temperature: a.temperature, label_weight: a.label_weight, ..DistillConfig::new(teacher.clone()) };
    d.take_teacher_head(&mut cfg).with_context(|| format!("--teacher {}", teacher.display()))?;
    if a.data.is_empty() {
        let t = super::vla::read_train_config(teacher).context("--teacher: its data is the default for --data; give --data")?;
        if !t.data.action_labels.is_empty() {
            bail!(
                "--teacher: {} trained on pseudo-actions (--action-labels), not its datasets' own; give the labeled --data",
                teacher.join(TRAIN_FILE).display()
            );
        }
        cfg.data.data = t.data.data;
        cfg.data.camera = cfg.data.camera.or(t.data.camera);
        cfg.data.episodes = a.episodes.or(t.data.episodes);
    } else {
        cfg.data.episodes = a.episodes;
    }
    cfg.data.unlabeled = a.unlabeled.clone();
    let dagger = a.dagger_rounds.map(|rounds| lapa_train::vla::train::DaggerConfig {
        rounds,
        episodes: a.dagger_episodes.unwrap_or(60),
        steps_per_round: a.dagger_steps.unwrap_or(500),
        rounds_done: 0,
    });
    if let Some(g) = &dagger {
        g.validate()?;
        // A new run would take an earlier run's rollouts there for its own.
        let old = a.common.out.join("dagger");
        if old.exists() {
            bail!("{}: rollouts of an earlier run; remove the folder or choose another --out", old.display());
        }
    }
    cfg.distill = Some(DistillConfig { dagger, ..d });
    let s = super::vla::run_stage(cfg, &a.common)?;
    dagger_rounds(&a.common).map(|d| d.unwrap_or(s))
}

/// The DAgger rounds of the distillation run in `c.out` that are still to do (its train.json
/// says how many and how many are done). Each: roll the student out, record, add the recording,
/// train on. `None` when none were left.
fn dagger_rounds(c: &super::vla::CommonArgs) -> Result<Option<lapa_train::vla::VlaSummary>> {
    use lapa_train::vla::eval::{self, EvalOptions};
    let mut last = None;
    loop {
        let mut cfg = super::vla::read_train_config(&c.out)?;
        let Some(g) = cfg.distill.as_ref().and_then(|d| d.dagger.clone()) else { return Ok(last) };
        g.validate().with_context(|| format!("{}", c.out.join(lapa_train::trainer::TRAIN_FILE).display()))?;
        if g.rounds_done >= g.rounds {
            return Ok(last);
        }
        let round = g.rounds_done + 1;
        let dir = c.out.join("dagger").join(format!("round-{round}"));
        // A recording is staged and renamed into place, so a folder there is a whole one (this
        // run's: a new run refuses an existing dagger/ folder).
        if !dir.exists() {
            let devices = lapa_model::devices(&c.rt.device)?;
            let device = devices.first().context("no device")?.clone();
            let mut opts = EvalOptions::new(lapa_sim::Split::Seen, g.episodes);
            let mut agent = super::vla::run_agent(&c.out, device, format!("student {}", c.out.display()), &mut opts)?;
            opts.seed = 1_000 + u64::from(round);
            opts.record = Some(dir.clone());
            // Under the camera key the run reads from every source.
            opts.record_camera = cfg.data.camera.clone();
            opts.quiet = c.rt.quiet;
            let r = eval::evaluate(&mut agent, &opts)?;
            if !c.rt.quiet {
                println!("DAgger round {round}/{}: {} student rollouts recorded in {} (success {})", g.rounds, g.episodes, dir.display(), r.total);
            }
        }
        cfg.data.unlabeled.push(dir);
        cfg.steps = cfg.steps.checked_add(g.steps_per_round).context("dagger: the step count overflows")?;
        if let Some(d) = cfg.distill.as_mut().and_then(|d| d.dagger.as_mut()) {
            d.rounds_done = round;
        }
        let devices = lapa_model::devices(&c.rt.device)?;
        last = Some(lapa_train::vla::train(&cfg, &c.out, &devices, &c.rt.cache_dir(), true, c.rt.quiet)?);
    }
}

fn scan(a: &ScanArgs) -> Result<()> {
    if !(a.max_kl.is_finite() && a.max_kl >= 0.0) {
        bail!("--max-kl {}: a number >= 0", a.max_kl);
    }
    let static_scheme = match a.scheme.as_str() {
        "dynamic" => false,
        "static" => true,
        other => bail!("--scheme {other:?}: `dynamic` or `static`"),
    };
    let method = super::vla::calib_method(&a.calib_method)?;
    let device = lapa_model::device("cpu")?;
    let (cfg, model) = lapa_model::load_vla(&a.run.join(MODEL_DIR), &device).with_context(|| format!("--run {}", a.run.display()))?;
    let params = lapa_model::artifact::named_params(&model)?;
    let set =
        super::vla::calibration_set(&cfg, &a.calib, a.frames, a.calib_camera.as_deref(), &device).with_context(|| format!("--calib {}", a.calib.display()))?;
    let (calib_set, held_out) = if static_scheme {
        if set.len() < 2 {
            bail!("--scheme static needs at least 2 frames (half calibrate, half are measured)");
        }
        set.split_at(set.len() / 2)
    } else {
        (&set[..0], &set[..])
    };
    let ranges = if static_scheme {
        let engine = lapa_compress::Engine::new(&cfg, params.clone(), &|_| Scheme::F32)?;
        lapa_compress::calib::activation_ranges(&engine, calib_set, method)?
    } else {
        Default::default()
    };
    let scheme_of = |name: &str| match ranges.get(name) {
        Some(&(lo, hi)) => Scheme::Int8Static { lo, hi },
        None => Scheme::Int8Dynamic,
    };
    let bar = indicatif::ProgressBar::new(0);
    let rows = lapa_compress::calib::sensitivity_scan(&cfg, &params, held_out, &scheme_of, |k, n, _| {
        bar.set_length(n as u64);
        bar.set_position(k as u64);
    })?;
    bar.finish_and_clear();
    let keep: Vec<&str> = rows.iter().filter(|r| r.kl > a.max_kl).map(|r| r.layer.as_str()).collect();
    let out = a.out.clone().unwrap_or_else(|| a.run.join("compress"));
    std::fs::create_dir_all(&out).with_context(|| format!("{}", out.display()))?;
    let mut md = format!(
        "# Sensitivity scan: each linear layer alone in int8 ({})\n\nRun `{}`; {} held-out frames of `{}`{}. Worst first. KL is the mean over frames and targets of KL(f32 ‖ int8), nats; `flipped` the share of targets whose chosen bin changed.\n\n| layer | KL (nats) | flipped |\n|---|---|---|\n",
        a.scheme,
        a.run.display(),
        held_out.len(),
        a.calib.display(),
        if static_scheme { format!(", ranges from {} other frames ({})", calib_set.len(), a.calib_method) } else { String::new() }
    );
    for r in &rows {
        md.push_str(&format!("| `{}` | {:.2e} | {:.1}% |\n", r.layer, r.kl, 100.0 * r.flipped));
    }
    md.push_str(&format!(
        "\nAbove --max-kl {:.0e}: {}\n",
        a.max_kl,
        if keep.is_empty() { "none — every layer can be int8".to_string() } else { format!("`--keep-f32 {}`", keep.join(",")) }
    ));
    lapa_fs::atomic_write(&out.join("sensitivity.md"), md.as_bytes())?;
    let json =
        serde_json::json!({"run": a.run, "calib": a.calib, "scheme": a.scheme, "frames": held_out.len(), "max_kl": a.max_kl, "keep_f32": keep, "layers": rows});
    lapa_fs::atomic_write(&out.join("sensitivity.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    print!("{md}");
    println!("wrote {}", out.join("sensitivity.md").display());
    Ok(())
}
