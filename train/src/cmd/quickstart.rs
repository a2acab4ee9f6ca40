//! `lapa quickstart`: the main job end to end on the embedded defaults.

use super::laq::{ReportArgs, RuntimeArgs, TrainLaqArgs, UseRunArgs, train_laq};
use super::sim::{CodecArg, EmbodimentArg, PreviewArgs, RecordArgs, SplitArg, preview, record};
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
    /// Compute device for the LAQ (cpu, or wgpu/cuda in builds with those features).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: QuickstartArgs) -> Result<()> {
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out)?;
    }
    std::fs::create_dir_all(&a.out)?;
    println!("[1/4] recording sim datasets (arm with actions, hand video-only) into {}", a.out.display());
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
    println!("[2/4] reading the datasets back");
    for name in ["sim-arm", "sim-hand"] {
        print!("{}", super::dataset::info(&a.out.join(name))?);
        let view =
            super::dataset::ViewArgs { dir: a.out.join(name), episode: 0, out: Some(a.out.join(format!("{name}-episode-0.png"))), frames: 10, camera: None };
        super::dataset::view(&view)?;
    }
    println!("[3/4] preview strip of both embodiments");
    let p = PreviewArgs { out: a.out.join("preview.png"), seed: 0, frames: 8, size: 64 };
    preview(&p)?;
    println!("[4/4] latent action quantizer: tiny config on both embodiments' video, then its report on the arm data");
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
            rt: RuntimeArgs { camera: None, device: a.device.clone(), cache: Some(cache), quiet: false },
        },
        out: None,
        max_pairs: 20_000,
        probe_steps: 400,
    };
    let r = super::laq::report(&report)?;
    let acc = r.probe_latent.as_ref().map(|p| format!("{:.1}%", 100.0 * p.accuracy)).unwrap_or_else(|| "n/a".into());
    println!("LAQ (tiny): perplexity {:.2}, probe accuracy {acc} on held-out arm episodes", r.perplexity);
    println!("done: {} and {}", p.out.display(), run.display());
    Ok(())
}
