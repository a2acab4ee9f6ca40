//! `lapa quickstart`: the main job end to end on the embedded defaults.

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
}

pub fn run(a: QuickstartArgs) -> Result<()> {
    if a.out.exists() {
        std::fs::remove_dir_all(&a.out)?;
    }
    std::fs::create_dir_all(&a.out)?;
    println!("[1/3] recording sim datasets (arm with actions, hand video-only) into {}", a.out.display());
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
    println!("[2/3] reading the datasets back");
    for name in ["sim-arm", "sim-hand"] {
        print!("{}", super::dataset::info(&a.out.join(name))?);
        let view = super::dataset::ViewArgs { dir: a.out.join(name), episode: 0, out: Some(a.out.join(format!("{name}-episode-0.png"))), frames: 10, camera: None };
        super::dataset::view(&view)?;
    }
    println!("[3/3] preview strip of both embodiments");
    let p = PreviewArgs { out: a.out.join("preview.png"), seed: 0, frames: 8, size: 64 };
    preview(&p)?;
    println!("done: {}", p.out.display());
    Ok(())
}
