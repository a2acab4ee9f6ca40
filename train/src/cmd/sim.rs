//! `lapa sim …`

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lapa_boards::SO101;
use lapa_dataset::png_io::Canvas;
use lapa_dataset::{CameraSpec, DatasetSpec, DatasetWriter, EpisodeInput, VideoCodec};
use lapa_sim::{Demo, Embodiment, Env, EnvConfig, Split, TaskFamily, run_expert};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Record scripted-expert episodes as a LeRobot v3.0 dataset.
    ///
    /// The arm dataset has `observation.state` (joint positions) and `action` (absolute joint
    /// targets, degrees; gripper 0..100) like an SO-101 recorded with `lerobot-record`; the hand
    /// dataset has only video and instructions, like human video. Episodes cycle through the task
    /// families; failed expert attempts are retried with the next seed unless --keep-failures.
    Record(RecordArgs),
    /// Render a preview strip PNG of both embodiments doing the same task.
    Preview(PreviewArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EmbodimentArg {
    Arm,
    Hand,
}

impl From<EmbodimentArg> for Embodiment {
    fn from(e: EmbodimentArg) -> Self {
        match e {
            EmbodimentArg::Arm => Embodiment::Arm,
            EmbodimentArg::Hand => Embodiment::Hand,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    Seen,
    UnseenObjects,
    UnseenInstructions,
    UnseenEnv,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Seen => Split::Seen,
            SplitArg::UnseenObjects => Split::UnseenObjects,
            SplitArg::UnseenInstructions => Split::UnseenInstructions,
            SplitArg::UnseenEnv => Split::UnseenEnvironment,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CodecArg {
    /// AV1 (SVT-AV1), LeRobot's default; frames of at least 64×64.
    Av1,
    /// H.264 (x264); any even frame size.
    H264,
}

#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Which body performs the tasks.
    #[arg(long, value_enum)]
    pub embodiment: EmbodimentArg,
    /// Generalisation split: objects, instructions and environment seen or held out.
    #[arg(long, value_enum, default_value = "seen")]
    pub split: SplitArg,
    /// Number of episodes to record.
    #[arg(long, default_value_t = 50)]
    pub episodes: usize,
    /// Output dataset folder (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Base seed; every episode is a function of (seed, episode number, split, embodiment).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only this task family (push_to_side, move_next_to, pick_place, separate, line_up, point_at).
    #[arg(long)]
    pub task: Option<String>,
    /// Control and video rate (frames per second).
    #[arg(long, default_value_t = 10)]
    pub fps: u32,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Video codec.
    #[arg(long, value_enum, default_value = "av1")]
    pub codec: CodecArg,
    /// Constant rate factor (lower = better quality, larger files).
    #[arg(long, default_value_t = 20)]
    pub crf: u8,
    /// Keep episodes where the scripted expert failed (normally retried with another seed).
    #[arg(long)]
    pub keep_failures: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    /// Output PNG.
    #[arg(long, default_value = "preview.png")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Frames per row.
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Image size in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

pub fn run(cmd: SimCommand) -> Result<()> {
    match cmd {
        SimCommand::Record(a) => {
            let summary = record(&a, true)?;
            println!("{summary}");
            Ok(())
        }
        SimCommand::Preview(a) => {
            preview(&a)?;
            println!("wrote {}", a.out.display());
            Ok(())
        }
    }
}

fn families(task: &Option<String>) -> Result<Vec<TaskFamily>> {
    match task.as_deref() {
        None | Some("all") => Ok(TaskFamily::ALL.to_vec()),
        Some(name) => match TaskFamily::from_name(name) {
            Some(f) => Ok(vec![f]),
            None => {
                let names: Vec<&str> = TaskFamily::ALL.iter().map(|f| f.name()).collect();
                bail!("unknown task family {name:?}; choose one of {}", names.join(", "))
            }
        },
    }
}

/// Records a dataset; returns a one-paragraph summary.
pub fn record(a: &RecordArgs, progress: bool) -> Result<String> {
    let emb: Embodiment = a.embodiment.into();
    let split: Split = a.split.into();
    let fams = families(&a.task)?;
    if a.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    if a.fps == 0 || a.fps > 120 {
        bail!("--fps must be in 1..=120, got {}", a.fps);
    }
    if a.size < 16 || a.size > 1024 || !a.size.is_multiple_of(2) {
        bail!("--size must be an even number in 16..=1024, got {}", a.size);
    }
    let codec = match a.codec {
        CodecArg::Av1 => VideoCodec::Av1 { crf: a.crf },
        CodecArg::H264 => VideoCodec::H264 { crf: a.crf },
    };
    let names: Vec<String> = SO101.names().iter().map(|n| format!("{n}.pos")).collect();
    let spec = DatasetSpec {
        fps: a.fps,
        robot_type: match emb {
            Embodiment::Arm => "so101_follower".into(),
            Embodiment::Hand => "human_hand".into(),
        },
        cameras: vec![CameraSpec { key: lapa_dataset::FRONT_CAMERA.into(), width: a.size, height: a.size }],
        state_names: (emb == Embodiment::Arm).then(|| names.clone()),
        action_names: (emb == Embodiment::Arm).then(|| names.clone()),
        codec,
    };
    let mut writer = DatasetWriter::create(&a.out, spec).with_context(|| format!("creating dataset {}", a.out.display()))?;
    let mut env = Env::new(EnvConfig { width: a.size, height: a.size, fps: a.fps, ..EnvConfig::default() });
    let bar = if progress { ProgressBar::new(a.episodes as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} episodes {msg} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("recording {} {}", emb.name(), split.name()));
    let mut attempts = 0u64;
    let mut successes = 0u64;
    let mut meta = Vec::new();
    let max_attempts = a.episodes as u64 * 4 + 10;
    while writer.episodes() < a.episodes {
        if attempts >= max_attempts {
            bail!("the scripted expert failed too often ({successes}/{attempts} successes); nothing written");
        }
        let k = writer.episodes();
        let family = fams[k % fams.len()];
        let seed = a.seed.wrapping_mul(1_000_003).wrapping_add(attempts);
        attempts += 1;
        let demo = run_expert(&mut env, seed, emb, Some(family), split, true);
        successes += u64::from(demo.success);
        if !demo.success && !a.keep_failures {
            continue;
        }
        add_demo(&mut writer, &demo)?;
        meta.push(json!({
            "episode_index": k, "seed": seed, "family": family.name(), "instruction": demo.instruction,
            "success": demo.success, "frames": demo.steps,
        }));
        bar.set_message(format!("expert success {:.0}%", 100.0 * successes as f64 / attempts as f64));
        bar.inc(1);
    }
    writer.add_meta_file(
        "lapa_sim.json",
        json!({
            "generator": format!("lapa-sim {}", env!("CARGO_PKG_VERSION")),
            "embodiment": emb.name(), "split": split.name(), "fps": a.fps, "size": a.size, "seed": a.seed,
            "attempts": attempts, "expert_successes": successes, "episodes": meta,
        }),
    );
    let written = writer.finish()?;
    bar.finish_and_clear();
    Ok(format!(
        "wrote {}: {} episodes, {} frames, {} tasks ({} {}; expert succeeded in {}/{} attempts)",
        written.root.display(),
        written.episodes,
        written.frames,
        written.tasks,
        emb.name(),
        split.name(),
        successes,
        attempts
    ))
}

fn add_demo(writer: &mut DatasetWriter, demo: &Demo) -> Result<()> {
    let images = demo.image_bytes();
    let rows = demo.state_action_rows();
    writer.add_episode(&EpisodeInput {
        task: &demo.instruction,
        images: &[&images],
        state: rows.as_ref().map(|(s, _)| s.as_slice()),
        action: rows.as_ref().map(|(_, a)| a.as_slice()),
    })?;
    Ok(())
}

/// Picks `n` evenly spaced frame indices out of `len`.
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len).max(1);
    if n == 1 {
        return vec![0];
    }
    (0..n).map(|k| k * (len - 1) / (n - 1)).collect()
}

/// Both embodiments doing the same task from the same seed, one row each.
pub fn preview(a: &PreviewArgs) -> Result<()> {
    let mut env = Env::new(EnvConfig { width: a.size, height: a.size, ..EnvConfig::default() });
    let mut rows: Vec<Vec<u8>> = Vec::new();
    for emb in [Embodiment::Arm, Embodiment::Hand] {
        let demo = run_expert(&mut env, a.seed, emb, Some(TaskFamily::PickPlace), Split::Seen, true);
        for i in spread(demo.frames.len(), a.frames) {
            rows.push(demo.frames[i].data.clone());
        }
        let pad = a.frames.saturating_sub(spread(demo.frames.len(), a.frames).len());
        rows.extend(std::iter::repeat_n(vec![255u8; a.size * a.size * 3], pad));
    }
    let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_slice()).collect();
    save_grid(&a.out, &refs, (a.size, a.size), a.frames, if a.size <= 96 { 2 } else { 1 })
}

pub fn save_grid(out: &Path, frames: &[&[u8]], (w, h): (usize, usize), per_row: usize, scale: usize) -> Result<()> {
    Canvas::grid(frames, w, h, per_row, scale).save(out).with_context(|| format!("writing {}", out.display()))
}
