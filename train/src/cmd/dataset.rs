//! `lapa dataset …`

use super::sim::{save_grid, spread};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lapa_dataset::Dataset;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Print episodes, frames, fps, features and tasks of a LeRobot dataset.
    Info {
        /// Dataset folder (contains meta/info.json).
        dir: PathBuf,
    },
    /// Write a PNG strip of one episode's frames.
    View(ViewArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ViewArgs {
    /// Dataset folder.
    pub dir: PathBuf,
    /// Episode number (0-based position in the dataset).
    #[arg(long, default_value_t = 0)]
    pub episode: usize,
    /// Output PNG (default: episode-K.png in the current folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How many evenly spaced frames to show.
    #[arg(long, default_value_t = 12)]
    pub frames: usize,
    /// Camera key (default: the first video feature).
    #[arg(long)]
    pub camera: Option<String>,
}

pub fn run(cmd: DatasetCommand) -> Result<()> {
    match cmd {
        DatasetCommand::Info { dir } => {
            print!("{}", info(&dir)?);
            Ok(())
        }
        DatasetCommand::View(a) => {
            let out = view(&a)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

/// Human-readable summary of a dataset.
pub fn info(dir: &std::path::Path) -> Result<String> {
    use std::fmt::Write;
    let ds = Dataset::open(dir).with_context(|| format!("opening dataset {}", dir.display()))?;
    let mut s = String::new();
    let i = &ds.info;
    let _ = writeln!(s, "dataset   {}", dir.display());
    let _ = writeln!(s, "format    LeRobotDataset {} (robot_type: {})", i.codebase_version, i.robot_type.as_deref().unwrap_or("-"));
    let _ = writeln!(s, "episodes  {}", ds.episodes.len());
    let _ = writeln!(s, "frames    {} ({:.1} s at {} fps)", i.total_frames, i.total_frames as f64 / i.fps, i.fps);
    let lens: Vec<usize> = ds.episodes.iter().map(|e| e.length).collect();
    if let (Some(min), Some(max)) = (lens.iter().min(), lens.iter().max()) {
        let _ = writeln!(s, "length    {min}..{max} frames per episode");
    }
    let _ = writeln!(s, "features");
    for (k, f) in &i.features {
        let names = match &f.names {
            Some(serde_json::Value::Array(a)) if f.dtype != "video" => {
                format!(" [{}]", a.iter().map(|v| v.as_str().unwrap_or("?")).collect::<Vec<_>>().join(", "))
            }
            _ => String::new(),
        };
        let _ = writeln!(s, "  {k:28} {:8} {:?}{names}", f.dtype, f.shape);
    }
    let _ = writeln!(s, "tasks     {}", ds.tasks.len());
    for (k, t) in ds.tasks.iter().enumerate().take(20) {
        let _ = writeln!(s, "  {k:4}  {t}");
    }
    if ds.tasks.len() > 20 {
        let _ = writeln!(s, "  … and {} more", ds.tasks.len() - 20);
    }
    Ok(s)
}

pub fn view(a: &ViewArgs) -> Result<PathBuf> {
    let ds = Dataset::open(&a.dir).with_context(|| format!("opening dataset {}", a.dir.display()))?;
    let ep = ds.episode(a.episode, true).with_context(|| format!("loading episode {} of {}", a.episode, a.dir.display()))?;
    let key = match &a.camera {
        Some(k) => k.clone(),
        None => ep.videos.keys().next().cloned().context("the dataset has no video feature to view")?,
    };
    let frames = ep.videos.get(&key).with_context(|| format!("no camera {key:?}; the dataset has {:?}", ds.video_keys()))?;
    let idx = spread(frames.count, a.frames);
    let imgs: Vec<&[u8]> = idx.iter().map(|&i| frames.frame(i)).collect();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(format!("episode-{}.png", a.episode)));
    let scale = if frames.width <= 96 { 2 } else { 1 };
    save_grid(&out, &imgs, (frames.width, frames.height), a.frames.max(1), scale)?;
    println!("episode {}: {:?} ({} frames)", a.episode, ep.task, ep.len());
    Ok(out)
}
