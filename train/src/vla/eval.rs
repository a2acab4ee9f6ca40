//! `lapa eval`: closed-loop success in the simulator.
//!
//! Episodes run in lockstep batches so a learned policy answers all of a batch's observations in
//! one forward pass. Every step the agent returns a chunk of future joint targets per episode;
//! the executed target is the temporal ensemble of every chunk that covers the step, weighted
//! `exp(−decay·age)` from the newest (the edge runtime's rule, one function for both; `decay = 0`
//! averages them). An episode succeeds the first step its
//! task's success check holds, and fails at the embodiment's step limit. Evaluation seeds are
//! far from the ones `lapa sim record` uses, so no evaluated scene is a training scene.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lapa_model::policy::{Frame, PolicyInput};
use lapa_model::vla::VlaPolicy;
use lapa_sim::expert::{ArmTracker, Expert};
use lapa_sim::kinematics::{Joints, clamp_joints};
use lapa_sim::rng::Rng;
use lapa_sim::{Action, Embodiment, Env, EnvConfig, Split, TaskFamily};
use serde::Serialize;

/// Base of the evaluation seeds (recording uses `seed · 1_000_003 + attempt`).
pub const EVAL_SEED_BASE: u64 = 0x00E7_A100_0000_0000;

/// Something that acts in the simulator: a learned policy, the scripted expert, a random policy.
pub trait Agent {
    fn name(&self) -> String;

    /// Called when episode number `episode` starts in `env`.
    fn reset(&mut self, episode: usize, env: &Env);

    /// A chunk of absolute joint targets for every running episode (`envs[i]` runs episode
    /// `episodes[i]`).
    fn act(&mut self, episodes: &[usize], envs: &[&Env]) -> Result<Vec<Vec<Joints>>>;

    /// Called when an episode ends (agents drop its state).
    fn finish(&mut self, _episode: usize) {}
}

/// The scripted expert, privileged (it reads the world, not the camera): the harness's upper
/// reference and its self-test.
#[derive(Debug, Default)]
pub struct ExpertAgent {
    state: std::collections::HashMap<usize, (Expert, ArmTracker)>,
}

impl Agent for ExpertAgent {
    fn name(&self) -> String {
        "scripted expert (privileged)".into()
    }

    fn reset(&mut self, episode: usize, env: &Env) {
        self.state.insert(episode, (Expert::new(&env.task().goal, env.world()), ArmTracker::new(env.world())));
    }

    fn finish(&mut self, episode: usize) {
        self.state.remove(&episode);
    }

    fn act(&mut self, episodes: &[usize], envs: &[&Env]) -> Result<Vec<Vec<Joints>>> {
        episodes
            .iter()
            .zip(envs)
            .map(|(e, env)| {
                let (expert, arm) = self.state.get_mut(e).context("expert episode not reset")?;
                let target = expert.command(env.world());
                Ok(vec![arm.action(&target, 1.0 / env.config().fps as f32)])
            })
            .collect()
    }
}

/// Uniformly random joint targets within the arm's limits: the floor a policy must clear.
#[derive(Debug)]
pub struct RandomAgent {
    rng: Rng,
}

impl RandomAgent {
    pub fn new(seed: u64) -> Self {
        Self { rng: Rng::new(seed) }
    }
}

impl Agent for RandomAgent {
    fn name(&self) -> String {
        "random joint targets".into()
    }

    fn reset(&mut self, _episode: usize, _env: &Env) {}

    fn act(&mut self, episodes: &[usize], _envs: &[&Env]) -> Result<Vec<Vec<Joints>>> {
        Ok(episodes
            .iter()
            .map(|_| {
                let mut q = [0.0; 6];
                for (i, v) in q.iter_mut().enumerate() {
                    *v = if i == 5 { self.rng.range(0.0, 100.0) } else { self.rng.range(-180.0, 180.0) };
                }
                vec![clamp_joints(&q)]
            })
            .collect())
    }
}

/// A learned policy: the camera frame, the joint state and the instruction, nothing else.
#[derive(Debug)]
pub struct PolicyAgent {
    pub policy: VlaPolicy,
    pub name: String,
}

impl Agent for PolicyAgent {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn reset(&mut self, _episode: usize, _env: &Env) {}

    fn act(&mut self, _episodes: &[usize], envs: &[&Env]) -> Result<Vec<Vec<Joints>>> {
        let obs: Vec<_> = envs.iter().map(|e| (e.observe(), e.instruction().to_string())).collect();
        let inputs: Vec<PolicyInput<'_>> = obs
            .iter()
            .map(|(o, instr)| PolicyInput {
                frame: Frame { width: o.image.width, height: o.image.height, rgb: &o.image.data },
                state: &o.state,
                instruction: instr,
                time_s: 0.0,
            })
            .collect();
        let chunks = self.policy.infer_batch(&inputs).map_err(|e| anyhow::anyhow!("{}: {e}", self.name))?;
        chunks
            .into_iter()
            .map(|c| {
                c.into_iter()
                    .map(|a| {
                        let q: Joints =
                            a.as_slice().try_into().map_err(|_| anyhow::anyhow!("the policy gives {} action values; the simulated arm takes 6", a.len()))?;
                        Ok(q)
                    })
                    .collect()
            })
            .collect()
    }
}

/// Any [`lapa_model::Policy`] — an exported bundle as the board loads it (burn f32, or the int8
/// engine) — asked one episode at a time, its chunks checked against its spec as the edge
/// runtime checks them.
pub struct BoxedPolicyAgent {
    pub policy: Box<dyn lapa_model::Policy>,
    pub name: String,
}

impl std::fmt::Debug for BoxedPolicyAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BoxedPolicyAgent({})", self.name)
    }
}

impl Agent for BoxedPolicyAgent {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn reset(&mut self, _episode: usize, _env: &Env) {
        // As the board does at a new episode (today's policies keep no per-episode state).
        self.policy.reset();
    }

    fn act(&mut self, _episodes: &[usize], envs: &[&Env]) -> Result<Vec<Vec<Joints>>> {
        envs.iter()
            .map(|env| {
                let o = env.observe();
                let input = PolicyInput {
                    frame: Frame { width: o.image.width, height: o.image.height, rgb: &o.image.data },
                    state: &o.state,
                    instruction: env.instruction(),
                    time_s: 0.0,
                };
                let chunk = self.policy.infer(&input).map_err(|e| anyhow::anyhow!("{}: {e}", self.name))?;
                lapa_model::policy::check_chunk(self.policy.action_spec(), &chunk).map_err(|e| anyhow::anyhow!("{}: {e}", self.name))?;
                chunk
                    .into_iter()
                    .map(|a| {
                        a.as_slice()
                            .try_into()
                            .map_err(|_| anyhow::anyhow!("{}: the policy gives {} action values; the simulated arm takes 6", self.name, a.len()))
                    })
                    .collect()
            })
            .collect()
    }
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub split: Split,
    pub episodes: usize,
    /// One family only (`None`: families in turn, so each gets `episodes / 6`).
    pub family: Option<TaskFamily>,
    /// Added to [`EVAL_SEED_BASE`] (different evaluations of one run use different offsets).
    pub seed: u64,
    /// Episodes stepped together (one policy batch).
    pub parallel: usize,
    pub ensemble_decay: f32,
    pub fps: u32,
    pub size: usize,
    /// Save the first this many rollouts as MP4 into `video_dir`.
    pub videos: usize,
    pub video_dir: Option<PathBuf>,
    /// Also write every rollout as a LeRobot v3.0 dataset here (camera, joint state, the executed
    /// targets as actions, the instruction), in the order the episodes end: the student's own
    /// states for DAgger, or failures to look at.
    pub record: Option<PathBuf>,
    /// The camera feature key of the recording (default [`lapa_dataset::FRONT_CAMERA`]).
    pub record_camera: Option<String>,
    pub quiet: bool,
}

impl EvalOptions {
    pub fn new(split: Split, episodes: usize) -> Self {
        Self {
            split,
            episodes,
            family: None,
            seed: 0,
            parallel: 32,
            ensemble_decay: 0.85,
            fps: 10,
            size: 64,
            videos: 0,
            video_dir: None,
            record: None,
            record_camera: None,
            quiet: true,
        }
    }
}

/// Successes out of rollouts, with a 95% Wilson interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rate {
    pub successes: usize,
    pub rollouts: usize,
    pub rate: f64,
    pub ci95: [f64; 2],
}

impl Rate {
    pub fn new(successes: usize, rollouts: usize) -> Self {
        let (k, n) = (successes as f64, rollouts as f64);
        if rollouts == 0 {
            return Self { successes, rollouts, rate: 0.0, ci95: [0.0, 1.0] };
        }
        let z = 1.959_963_984_540_054_f64;
        let p = k / n;
        let den = 1.0 + z * z / n;
        let centre = (p + z * z / (2.0 * n)) / den;
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / den;
        Self { successes, rollouts, rate: p, ci95: [(centre - half).max(0.0), (centre + half).min(1.0)] }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:5.1}% [{:4.1}, {:5.1}] ({}/{})", 100.0 * self.rate, 100.0 * self.ci95[0], 100.0 * self.ci95[1], self.successes, self.rollouts)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodeResult {
    pub seed: u64,
    pub family: String,
    pub instruction: String,
    pub success: bool,
    pub steps: usize,
    /// Where the arm ended (degrees, gripper 0..100): two agents on the same scenes can be
    /// compared by more than success.
    pub final_joints: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub agent: String,
    pub split: String,
    pub total: Rate,
    pub per_family: Vec<(String, Rate)>,
    pub episodes: Vec<EpisodeResult>,
    pub videos: Vec<PathBuf>,
    pub seconds: f64,
}

impl EvalReport {
    pub fn table(&self) -> String {
        let mut s = format!("{} on {}: {}\n", self.agent, self.split, self.total);
        for (f, r) in &self.per_family {
            s += &format!("  {f:<16} {r}\n");
        }
        s
    }
}

struct Slot {
    env: Env,
    episode: usize,
    /// (step the chunk was planned at, chunk).
    chunks: Vec<(usize, Vec<Joints>)>,
    frames: Option<Vec<u8>>,
    /// With [`EvalOptions::record`]: the frames, states and executed targets so far.
    rec: Option<(Vec<u8>, Vec<f32>, Vec<f32>)>,
}

/// The executed target at `step`: every chunk that covers it, blended by
/// [`lapa_model::policy::ensemble_weight`] (newest first), as the edge runtime blends.
fn blend(chunks: &[(usize, Vec<Joints>)], step: usize, decay: f32) -> Option<Joints> {
    let mut acc = [0f64; 6];
    let mut total = 0f64;
    for (k, (start, c)) in chunks.iter().rev().enumerate() {
        if let Some(a) = step.checked_sub(*start).and_then(|i| c.get(i)) {
            let w = lapa_model::policy::ensemble_weight(decay, k);
            for (x, v) in acc.iter_mut().zip(a) {
                *x += w * f64::from(*v);
            }
            total += w;
        }
    }
    (total > 0.0).then(|| acc.map(|v| (v / total) as f32))
}

/// Runs `opts.episodes` rollouts of `agent`.
pub fn evaluate(agent: &mut dyn Agent, opts: &EvalOptions) -> Result<EvalReport> {
    if opts.episodes == 0 {
        bail!("--episodes must be positive");
    }
    if !(0.0..=20.0).contains(&opts.ensemble_decay) {
        bail!("--ensemble-decay must be in [0, 20], got {}", opts.ensemble_decay);
    }
    if opts.episodes > 1_000_000 {
        bail!("--episodes {} is more than 1,000,000", opts.episodes);
    }
    let t0 = std::time::Instant::now();
    let cfg = EnvConfig { width: opts.size, height: opts.size, fps: opts.fps, ..EnvConfig::default() };
    let limit = lapa_sim::env::max_steps(Embodiment::Arm, opts.fps);
    let pb = if opts.quiet { ProgressBar::hidden() } else { ProgressBar::new(opts.episodes as u64) };
    pb.set_style(
        ProgressStyle::with_template("eval {msg} [{bar:30}] {pos}/{len} episodes ({elapsed}, eta {eta})").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: Vec<Option<EpisodeResult>> = vec![None; opts.episodes];
    let mut videos = Vec::new();
    let parallel = opts.parallel.clamp(1, 1024);
    let mut next = 0usize;
    let mut slots: Vec<Slot> = Vec::new();
    let mut successes = 0usize;
    let mut writer = match &opts.record {
        Some(root) => {
            let names: Vec<String> = lapa_boards::SO101.names().iter().map(|n| format!("{n}.pos")).collect();
            let spec = lapa_dataset::DatasetSpec {
                fps: opts.fps,
                robot_type: "so101_follower".into(),
                cameras: vec![lapa_dataset::CameraSpec {
                    key: opts.record_camera.clone().unwrap_or_else(|| lapa_dataset::FRONT_CAMERA.into()),
                    width: opts.size,
                    height: opts.size,
                }],
                state_names: Some(names.clone()),
                action_names: Some(names),
                codec: lapa_dataset::VideoCodec::H264 { crf: 18 },
            };
            Some(lapa_dataset::DatasetWriter::create(root, spec).with_context(|| format!("--record {}", root.display()))?)
        }
        None => None,
    };
    let mut recorded = Vec::new();
    loop {
        // Fill free slots with the next episodes.
        while slots.len() < parallel && next < opts.episodes {
            let family = opts.family.unwrap_or(TaskFamily::ALL[next % TaskFamily::ALL.len()]);
            let mut env = Env::new(cfg);
            env.reset(EVAL_SEED_BASE.wrapping_add(opts.seed.wrapping_mul(1_000_003)).wrapping_add(next as u64), Embodiment::Arm, Some(family), opts.split);
            let frames = (next < opts.videos && opts.video_dir.is_some()).then(Vec::new);
            agent.reset(next, &env);
            let rec = writer.is_some().then(|| (Vec::new(), Vec::new(), Vec::new()));
            slots.push(Slot { env, episode: next, chunks: Vec::new(), frames, rec });
            next += 1;
        }
        if slots.is_empty() {
            break;
        }
        let ids: Vec<usize> = slots.iter().map(|s| s.episode).collect();
        let envs: Vec<&Env> = slots.iter().map(|s| &s.env).collect();
        let planned = agent.act(&ids, &envs)?;
        if planned.len() != slots.len() {
            bail!("{} answered {} of {} observations", agent.name(), planned.len(), slots.len());
        }
        let mut finished = Vec::new();
        for (i, (s, chunk)) in slots.iter_mut().zip(planned).enumerate() {
            if chunk.is_empty() {
                bail!("{} returned an empty chunk", agent.name());
            }
            let step = s.env.steps();
            s.chunks.push((step, chunk));
            s.chunks.retain(|(start, c)| start + c.len() > step);
            let q = blend(&s.chunks, step, opts.ensemble_decay).context("no chunk covers the step")?;
            if s.frames.is_some() || s.rec.is_some() {
                let o = s.env.observe();
                if let Some(f) = &mut s.frames {
                    f.extend_from_slice(&o.image.data);
                }
                if let Some((img, state, action)) = &mut s.rec {
                    img.extend_from_slice(&o.image.data);
                    state.extend_from_slice(&o.state);
                    action.extend_from_slice(&q);
                }
            }
            s.env.advance(&Action::JointTargets(q));
            let success = s.env.success();
            if success || s.env.steps() >= limit {
                successes += usize::from(success);
                results[s.episode] = Some(EpisodeResult {
                    seed: s.env.seed(),
                    family: s.env.task().family.name().to_string(),
                    instruction: s.env.instruction().to_string(),
                    success,
                    steps: s.env.steps(),
                    final_joints: s.env.state().to_vec(),
                });
                finished.push(i);
            }
        }
        for &i in finished.iter().rev() {
            let s = slots.swap_remove(i);
            agent.finish(s.episode);
            if let (Some(w), Some((img, state, action))) = (&mut writer, &s.rec) {
                let r = results[s.episode].as_ref().expect("just finished");
                w.add_episode(&lapa_dataset::EpisodeInput { task: &r.instruction, images: &[img], state: Some(state), action: Some(action) })?;
                recorded.push(serde_json::json!({
                    "episode_index": recorded.len(), "eval_episode": s.episode, "seed": r.seed, "family": r.family, "success": r.success,
                }));
            }
            if let (Some(mut frames), Some(dir)) = (s.frames, &opts.video_dir) {
                frames.extend_from_slice(&s.env.observe().image.data);
                let r = results[s.episode].as_ref().expect("just finished");
                let path = dir.join(format!("{:03}-{}-{}.mp4", s.episode, r.family, if r.success { "success" } else { "failure" }));
                write_video(&path, &frames, opts.size, opts.fps)?;
                videos.push(path);
            }
            pb.inc(1);
            pb.set_message(format!("{} {:.0}%", opts.split.name(), 100.0 * successes as f64 / pb.position() as f64));
        }
    }
    pb.finish_and_clear();
    if let Some(mut w) = writer {
        w.add_meta_file("lapa_eval.json", serde_json::json!({ "agent": agent.name(), "split": opts.split.name(), "seed": opts.seed, "episodes": recorded }));
        w.finish()?;
    }
    let episodes: Vec<EpisodeResult> = results.into_iter().map(|r| r.expect("every episode ran")).collect();
    let total = Rate::new(episodes.iter().filter(|e| e.success).count(), episodes.len());
    let per_family = TaskFamily::ALL
        .iter()
        .filter_map(|f| {
            let of: Vec<&EpisodeResult> = episodes.iter().filter(|e| e.family == f.name()).collect();
            (!of.is_empty()).then(|| (f.name().to_string(), Rate::new(of.iter().filter(|e| e.success).count(), of.len())))
        })
        .collect();
    Ok(EvalReport { agent: agent.name(), split: opts.split.name().into(), total, per_family, episodes, videos, seconds: t0.elapsed().as_secs_f64() })
}

/// A rollout as H.264 MP4, scaled 4× (nearest neighbour) so a person can see it.
fn write_video(path: &Path, frames: &[u8], size: usize, fps: u32) -> Result<()> {
    let scale = 4;
    let big = size * scale;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut enc = lapa_dataset::video::VideoEncoder::create(path, big, big, fps, lapa_dataset::VideoCodec::H264 { crf: 18 })
        .with_context(|| format!("{}: cannot start the video encoder", path.display()))?;
    for f in frames.chunks_exact(size * size * 3) {
        let mut img = vec![0u8; big * big * 3];
        for y in 0..big {
            for x in 0..big {
                let s = ((y / scale) * size + x / scale) * 3;
                img[(y * big + x) * 3..(y * big + x) * 3 + 3].copy_from_slice(&f[s..s + 3]);
            }
        }
        enc.write(&img)?;
    }
    enc.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blending_weights_the_newest_chunk_most_and_skips_chunks_that_ended() {
        let a = |v: f32| [v; 6];
        // Planned at steps 0 (covers 0..3), 1 (1..4) and 2 (2..5).
        let chunks = vec![(0, vec![a(0.0); 3]), (1, vec![a(10.0); 3]), (2, vec![a(20.0); 3])];
        let w = |k| lapa_model::policy::ensemble_weight(0.85, k);
        let want = ((20.0 * w(0) + 10.0 * w(1)) / (w(0) + w(1) + w(2))) as f32;
        assert!((blend(&chunks, 2, 0.85).expect("covered")[0] - want).abs() < 1e-5);
        // Step 3: the first chunk has ended; the other two blend by age.
        let want3 = ((20.0 * w(0) + 10.0 * w(1)) / (w(0) + w(1))) as f32;
        assert!((blend(&chunks, 3, 0.85).expect("covered")[0] - want3).abs() < 1e-5);
        // Decay 0 averages; nothing covers step 5.
        assert!((blend(&chunks, 2, 0.0).expect("covered")[0] - 10.0).abs() < 1e-5);
        assert_eq!(blend(&chunks, 5, 0.85), None);
    }
}
