//! `lapa quickstart`: the main job end to end on the embedded defaults.

use super::laq::{ReportArgs, RuntimeArgs, TrainLaqArgs, UseRunArgs, train_laq};
use super::sim::{CodecArg, EmbodimentArg, PreviewArgs, RecordArgs, SplitArg, preview, record};
use super::vla::{ActionArgs, CommonArgs, EvalArgs, FinetuneArgs, LatentArgs, TargetArg};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct QuickstartArgs {
    /// Output folder (datasets and PNGs go here; replaced if it exists).
    #[arg(long, default_value = "out/quickstart")]
    pub out: PathBuf,
    /// Episodes per embodiment.
    #[arg(long, default_value_t = 12)]
    pub episodes: usize,
    /// Training steps of the tiny LAQ.
    #[arg(long, default_value_t = 300)]
    pub laq_steps: u64,
    /// Training steps of the tiny policy's latent pretraining, and of its finetuning.
    #[arg(long, default_value_t = 300)]
    pub policy_steps: u64,
    /// Labeled arm episodes the policy finetunes on.
    #[arg(long, default_value_t = 8)]
    pub finetune_episodes: usize,
    /// Closed-loop evaluation episodes in the simulator (seen split).
    #[arg(long, default_value_t = 24)]
    pub eval_episodes: usize,
    /// Compute device for the LAQ (cpu, or wgpu/cuda in builds with those features).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: QuickstartArgs) -> Result<()> {
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out)?;
    }
    std::fs::create_dir_all(&a.out)?;
    println!("[1/8] recording sim datasets (arm with actions, hand video-only) into {}", a.out.display());
    for (emb, name) in [(EmbodimentArg::Arm, "sim-arm"), (EmbodimentArg::Hand, "sim-hand")] {
        let args = RecordArgs {
            embodiment: emb,
            split: SplitArg::Seen,
            episodes: a.episodes,
            out: a.out.join(name),
            seed: 0,
            task: None,
            fps: 10,
            size: 64,
            codec: CodecArg::Av1,
            crf: 20,
            keep_failures: false,
        };
        println!("      {}", record(&args, true)?);
    }
    println!("[2/8] reading the datasets back");
    for name in ["sim-arm", "sim-hand"] {
        print!("{}", super::dataset::info(&a.out.join(name))?);
        let view =
            super::dataset::ViewArgs { dir: a.out.join(name), episode: 0, out: Some(a.out.join(format!("{name}-episode-0.png"))), frames: 10, camera: None };
        super::dataset::view(&view)?;
    }
    println!("[3/8] preview strip of both embodiments");
    let p = PreviewArgs { out: a.out.join("preview.png"), seed: 0, frames: 8, size: 64 };
    preview(&p)?;
    println!("[4/8] latent action quantizer: tiny config on both embodiments' video, then its report on the arm data");
    let run = a.out.join("laq-tiny");
    let cache = a.out.join("frame-cache");
    let train = TrainLaqArgs {
        data: vec![a.out.join("sim-arm"), a.out.join("sim-hand")],
        spacing: "0.6s".into(),
        config: "tiny".into(),
        codebook_size: None,
        tokens: None,
        quantizer: None,
        fsq_levels: None,
        out: run.clone(),
        resume: false,
        steps: Some(a.laq_steps),
        batch: 16,
        // A tiny model and a few hundred steps: a larger step than LAPA's 1e-4 (the default).
        lr: 1e-3,
        grad_clip: 0.5,
        seed: 0,
        no_dead_code: false,
        reseed_from_batch: false,
        dead_code_until: 5000,
        dead_code_threshold: 0.1,
        aug_crop: 0.0,
        aug_color: 0.0,
        supervise_episodes: 0,
        supervise_per_batch: 8,
        supervise_weight: 0.01,
        rt: RuntimeArgs { camera: None, device: a.device.clone(), cache: Some(cache.clone()), quiet: false },
        log_every: 25,
        checkpoint_every: 100,
        loader_threads: 1,
    };
    train_laq(&train)?;
    let report = ReportArgs {
        use_run: UseRunArgs {
            run: run.clone(),
            data: a.out.join("sim-arm"),
            spacing: None,
            rt: RuntimeArgs { camera: None, device: a.device.clone(), cache: Some(cache.clone()), quiet: false },
        },
        out: None,
        max_pairs: 20_000,
        probe_steps: 400,
    };
    let r = super::laq::report(&report)?;
    let acc = r.probe_latent.as_ref().map(|p| format!("{:.1}%", 100.0 * p.accuracy)).unwrap_or_else(|| "n/a".into());
    println!("LAQ (tiny): perplexity {:.2}, probe accuracy {acc} on held-out arm episodes", r.perplexity);

    println!("[5/8] latent actions for every frame of both datasets");
    let device = lapa_model::device(&a.device)?;
    let mut labels = Vec::new();
    for name in ["sim-arm", "sim-hand"] {
        let out = a.out.join(format!("labels-{name}"));
        let m = lapa_train::laq::label::run(&run, &a.out.join(name), None, 0.6, &out, &cache, &device, 64, false, true)?;
        println!("      {name}: {} frames, {} tokens each over {} classes -> {}", m.frames, m.n_tokens, m.vocabulary, out.display());
        labels.push(out);
    }
    let common = |out: PathBuf| CommonArgs {
        out,
        resume: false,
        config: "tiny".into(),
        steps: Some(a.policy_steps),
        batch: 32,
        lr: 1e-3,
        warmup: 30,
        weight_decay: 0.01,
        crop: 0.0,
        seed: 0,
        log_every: 25,
        checkpoint_every: 100,
        loader_threads: 1,
        rt: RuntimeArgs { camera: None, device: a.device.clone(), cache: Some(cache.clone()), quiet: false },
    };
    println!("[6/8] the tiny policy: latent pretraining on both embodiments' video, then finetuning on {} labeled arm episodes", a.finetune_episodes);
    let latent = a.out.join("policy-latent");
    super::vla::latent(&LatentArgs { data: vec![a.out.join("sim-arm"), a.out.join("sim-hand")], labels, continuous: false, common: common(latent.clone()) })?;
    let finetuned = a.out.join("policy-finetuned");
    super::vla::finetune(&FinetuneArgs {
        init: Some(latent.display().to_string()),
        data: Some(a.out.join("sim-arm")),
        episodes: Some(a.finetune_episodes.min(a.episodes)),
        action: ActionArgs { chunk: 4, bins: 64, target: TargetArg::Absolute, state: false },
        common: common(finetuned.clone()),
    })?;
    println!("[7/8] closed-loop evaluation in the simulator (seen split, {} episodes)", a.eval_episodes);
    let ev = super::vla::eval_cmd(&EvalArgs {
        run: Some(finetuned.clone()),
        bundle: None,
        public_keys: Vec::new(),
        allow_unsigned: false,
        record: None,
        baseline: None,
        split: super::vla::SplitArg::Seen,
        episodes: a.eval_episodes,
        family: None,
        seed: 0,
        parallel: 32,
        ensemble_decay: 0.85,
        videos: 4,
        out: None,
        device: a.device.clone(),
        quiet: false,
    })?;
    println!(
        "policy (tiny, {} labeled episodes): success {:.1}% ({}/{}) on the seen split; a tiny model on a dozen episodes is a smoke test of the pipeline, not of the method (results/lapa-table/ is that)",
        a.finetune_episodes.min(a.episodes),
        100.0 * ev.total.rate,
        ev.total.successes,
        ev.total.rollouts
    );
    println!("[8/8] the finetuned policy compressed to int8 and signed, as a bundle for the board");
    // A key for this demo only, inside the output folder (a real workstation keeps one key, made
    // once with `lapa keys generate`).
    let key_path = a.out.join("keys/quickstart");
    let key = lapa_model::signing::SecretKey::generate("lapa quickstart (demo key)")?;
    let public = key.write_pair(&key_path)?;
    let bundle = a.out.join("bundle");
    // Every linear layer int8 (weights per output channel, activations per token at run time),
    // as `lapa export --int8 dynamic` writes it; the board runs it on lapa-compress's kernels.
    let model_dir = finetuned.join(lapa_train::trainer::MODEL_DIR);
    let (cfg, model) = lapa_model::load_vla(&model_dir, &lapa_model::device("cpu")?)?;
    let layers = lapa_compress::bundle::layer_names(&cfg, &lapa_model::artifact::named_params(&model)?)?;
    let plan = lapa_compress::bundle::uniform_plan(&layers, |_| lapa_compress::Scheme::Int8Dynamic, &[], "lapa quickstart (int8 dynamic)".into());
    let b = lapa_compress::bundle::write(&model_dir, &lapa_model::text::minilm_dir(), &bundle, "quickstart-tiny-int8", Some(&key), &plan)?;
    let bytes: u64 = b.manifest.parts.values().map(|p| p.bytes).sum();
    println!(
        "      {} ({:.1} MB, {} linear layers int8, signed by key {}); run it on the simulated board with",
        b.root.display(),
        bytes as f64 / 1e6,
        layers.len(),
        key.public().id()
    );
    println!("      lapa-edge run --sim --bundle {} --public-key {}", b.root.display(), public.display());
    println!("done: {}, {} and {}", p.out.display(), run.display(), finetuned.display());
    Ok(())
}
