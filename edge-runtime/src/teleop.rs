//! Teleoperation: a leader arm, moved by hand with torque off, drives the follower through the
//! safety filter at a fixed rate, and episodes are recorded as a LeRobot dataset — how a user
//! makes the labelled set LAPA finetunes on.
//!
//! Episodes end when their time is up, when the operator says so (`next` on the control socket
//! or the key `n`), or when the [`Operator`] reports it (the sim's scripted operator: the task
//! succeeded and settled); `rerecord` (`r`) throws the current episode away and starts it again;
//! `quit` (`q`) saves the current episode and stops. Between episodes the leader still drives
//! the follower, unrecorded, for the reset time (LeRobot's `reset_time_s`), while the scene is
//! put back.

use crate::camera::Camera;
use crate::chunk::Chunk;
use crate::pace::{Histogram, Pacer};
use crate::record::Recorder;
use crate::runtime::{Controls, EpisodeCommand, gripper_load};
use crate::safety::{SafetyFilter, flag};
use crate::sim::{SharedScene, SimExpertPolicy, lock};
use lapa_boards::so101::JOINTS;
use lapa_boards::{ArmDescription, JointCalibration, Joints};
use lapa_bridge::arm::{Arm, joint_calibrations};
use lapa_bridge::simwire::SharedBus;
use lapa_model::policy::{Frame, Policy, PolicyInput};
use lapa_sim::{Split, TaskFamily};
use std::time::Duration;

/// Who moves the leader, and what the scene does between episodes.
pub trait Operator {
    /// Starts episode `k`; returns the scene's instruction when the operator knows it (sim),
    /// `None` to keep the one given.
    fn begin_episode(&mut self, k: usize) -> Result<Option<String>, String>;
    /// Called at the start of every tick, before the leader is read.
    fn before_tick(&mut self, tick: u64) -> Result<(), String>;
    /// True when the operator ends the episode (the sim's: task done and settled).
    fn episode_done(&mut self, tick: u64) -> bool;
}

/// A person at the leader arm: nothing to do but move it; episodes end by time or command.
#[derive(Debug, Default)]
pub struct Person;

impl Operator for Person {
    fn begin_episode(&mut self, k: usize) -> Result<Option<String>, String> {
        eprintln!("episode {k}: recording (n: save and next, r: re-record, q: save and stop)");
        Ok(None)
    }
    fn before_tick(&mut self, _tick: u64) -> Result<(), String> {
        Ok(())
    }
    fn episode_done(&mut self, _tick: u64) -> bool {
        false
    }
}

/// Sim only: the scripted expert's hand on the simulated leader. Each episode resets the scene
/// to the next seed; the expert plans chunks from the scene's privileged state (as
/// [`SimExpertPolicy`] does), and its joint targets are turned into shaft positions of the
/// leader's simulated servos through the leader's calibration — so the leader is read back
/// through the real Feetech driver and unit conversion, exactly as a person's arm would be.
#[derive(Debug)]
pub struct SimOperator {
    scene: SharedScene,
    expert: SimExpertPolicy,
    bus: SharedBus,
    leader: &'static ArmDescription,
    cal: [JointCalibration; JOINTS],
    rate_hz: f32,
    chunk: Option<Chunk>,
    first_seed: u64,
    family: Option<TaskFamily>,
    split: Split,
    settle_ticks: u64,
    succeeded_at: Option<u64>,
    /// Episodes whose task was achieved.
    pub successes: usize,
}

impl SimOperator {
    /// `leader` is the simulated leader arm's bus; `cal` its calibration (read from it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scene: SharedScene,
        bus: SharedBus,
        leader: &'static ArmDescription,
        cal: &lapa_bridge::protocol::Calibration,
        rate_hz: f32,
        first_seed: u64,
        family: Option<TaskFamily>,
        split: Split,
        settle_seconds: f32,
    ) -> Result<Self, String> {
        let expert = SimExpertPolicy::new(scene.clone(), 10.0, 10).map_err(|e| e.to_string())?;
        let settle_ticks = (settle_seconds * rate_hz).round() as u64;
        Ok(Self {
            scene,
            expert,
            bus,
            leader,
            cal: joint_calibrations(cal),
            rate_hz,
            chunk: None,
            first_seed,
            family,
            split,
            settle_ticks,
            succeeded_at: None,
            successes: 0,
        })
    }

    fn place_leader(&self, q: &Joints) -> Result<(), String> {
        let counts = self.leader.to_counts(&self.cal, q).map_err(|e| e.to_string())?;
        let mut bus = self.bus.lock();
        for (j, spec) in self.leader.joints.iter().enumerate() {
            if let Some(s) = bus.servo_mut(spec.id) {
                // Present = Actual − Homing_Offset.
                s.actual = f32::from(counts[j]) + f32::from(self.cal[j].homing_offset);
            }
        }
        Ok(())
    }
}

impl Operator for SimOperator {
    fn begin_episode(&mut self, k: usize) -> Result<Option<String>, String> {
        let seed = self.first_seed.wrapping_add(k as u64);
        let q = {
            let mut s = lock(&self.scene);
            s.reset(seed, self.family, self.split);
            s.env().state()
        };
        self.expert.reset();
        self.chunk = None;
        self.succeeded_at = None;
        // The hand starts by holding the leader where the follower stands.
        self.place_leader(&q)?;
        Ok(Some(lock(&self.scene).instruction()))
    }

    fn before_tick(&mut self, tick: u64) -> Result<(), String> {
        let due = self.chunk.as_ref().is_none_or(|c| c.end_tick() <= (tick + 1) as f64);
        if due {
            let (state, task) = {
                let scene = lock(&self.scene);
                (scene.env().state(), scene.instruction())
            };
            // The operator stands in for a person who knows the scene's task.
            let input = PolicyInput {
                frame: Frame { width: 0, height: 0, rgb: &[] },
                state: &state,
                instruction: &task,
                time_s: tick as f64 / f64::from(self.rate_hz),
            };
            let actions = self.expert.infer(&input).map_err(|e| e.to_string())?;
            let actions: Vec<Joints> = actions.iter().filter_map(|a| <Joints>::try_from(a.as_slice()).ok()).collect();
            let ticks_per_action = f64::from(self.rate_hz) / f64::from(self.expert.action_spec().fps);
            self.chunk = Some(Chunk { id: 0, start_tick: tick, ticks_per_action, actions });
        }
        if let Some(q) = self.chunk.as_ref().and_then(|c| c.at(tick)) {
            self.place_leader(&q)?;
        }
        Ok(())
    }

    fn episode_done(&mut self, tick: u64) -> bool {
        if self.succeeded_at.is_none() && lock(&self.scene).success() {
            self.succeeded_at = Some(tick);
            self.successes += 1;
        }
        self.succeeded_at.is_some_and(|t| tick >= t + self.settle_ticks)
    }
}

/// How a teleoperation session runs.
#[derive(Debug, Clone, PartialEq)]
pub struct TeleopConfig {
    pub rate_hz: f32,
    /// Record one frame every this many ticks (rate / dataset fps).
    pub record_every: u32,
    pub episodes: usize,
    /// Longest episode, ticks.
    pub episode_ticks: u64,
    /// Unrecorded ticks between episodes, for putting the scene back.
    pub reset_ticks: u64,
    /// Pace against the wall clock (a real arm); unpaced runs as fast as the sim steps.
    pub paced: bool,
}

impl TeleopConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rate_hz.is_finite() && (1.0..=100.0).contains(&self.rate_hz)) {
            return Err(format!("rate {}: 1..=100 Hz", self.rate_hz));
        }
        if self.record_every == 0 {
            return Err("record_every: at least 1".into());
        }
        if self.episodes == 0 || self.episode_ticks == 0 {
            return Err("episodes and episode length must be positive".into());
        }
        Ok(())
    }
}

/// What a session did.
#[derive(Debug, Clone)]
pub struct TeleopSummary {
    pub episodes: usize,
    pub frames: usize,
    /// Episodes thrown away by `rerecord`.
    pub rerecorded: usize,
    pub ticks: u64,
    pub period: Histogram,
    pub dropped: u64,
    pub flags: flag::Tally,
    pub quit: bool,
}

/// One tick of following: the leader's joints, through the safety filter (held while the e-stop
/// is engaged), to the follower. Returns the follower's reading, what was sent and the extra flags.
fn follow(
    leader: &mut dyn Arm,
    follower: &mut dyn Arm,
    safety: &mut SafetyFilter,
    controls: &Controls,
) -> Result<(lapa_bridge::arm::ArmReading, crate::safety::Filtered, u16), String> {
    let lead = leader.read_state().map_err(|e| format!("leader: {e}"))?;
    let reading = follower.read_state().map_err(|e| format!("follower: {e}"))?;
    let extra = if controls.estopped() { flag::ESTOP } else { 0 };
    let proposal = (extra == 0).then_some(lead.joints);
    let filtered = safety.filter(proposal.as_ref(), &reading.joints, gripper_load(&reading), extra);
    follower.send_targets(&filtered.command).map_err(|e| format!("follower: {e}"))?;
    Ok((reading, filtered, extra))
}

/// Runs a session: `cfg.episodes` episodes (fewer on quit), each recorded into `rec` when given.
#[allow(clippy::too_many_arguments)] // the parts of a session, each owned by the caller
pub fn teleop(
    leader: &mut dyn Arm,
    follower: &mut dyn Arm,
    camera: &mut dyn Camera,
    safety: &mut SafetyFilter,
    controls: &Controls,
    operator: &mut dyn Operator,
    mut rec: Option<&mut Recorder>,
    cfg: &TeleopConfig,
    mut on_episode: impl FnMut(usize, &str, usize),
) -> Result<TeleopSummary, String> {
    cfg.validate()?;
    leader.set_torque(false).map_err(|e| format!("leader torque off: {e}"))?;
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.rate_hz));
    let mut pacer = Pacer::new(period, Duration::from_micros(1500));
    let mut sum = TeleopSummary {
        episodes: 0,
        frames: 0,
        rerecorded: 0,
        ticks: 0,
        period: Histogram::loop_timing(),
        dropped: 0,
        flags: flag::Tally::default(),
        quit: false,
    };
    let mut last_deadline = None;
    let mut k = 0usize;
    while k < cfg.episodes && !sum.quit {
        let instruction = match operator.begin_episode(k)? {
            Some(text) => {
                controls.set_instruction(&text)?;
                text
            }
            None => controls.instruction().1,
        };
        safety.rebase();
        if let Some(r) = rec.as_deref_mut() {
            r.discard();
        }
        // A `next` or `rerecord` sent before the episode began is not for this episode.
        let _ = controls.take_episode_command();
        let mut rerecord = false;
        let mut tick = 0u64;
        while tick < cfg.episode_ticks {
            if cfg.paced {
                let t = pacer.wait();
                if let Some(prev) = last_deadline {
                    sum.period.record(t.deadline.duration_since(prev));
                }
                last_deadline = Some(t.deadline);
                sum.dropped += t.dropped;
            }
            operator.before_tick(tick)?;
            let (reading, filtered, extra) = follow(leader, follower, safety, controls)?;
            sum.flags.add(filtered.flags);
            // While stopped the follower holds; held frames are not demonstrations.
            if let Some(r) = rec.as_deref_mut()
                && extra == 0
                && tick.is_multiple_of(u64::from(cfg.record_every))
            {
                let f = camera.capture().map_err(|e| e.to_string())?;
                r.push(f.width, f.height, &f.rgb, &reading.joints, &filtered.command).map_err(|e| e.to_string())?;
            }
            tick += 1;
            sum.ticks += 1;
            if controls.quitting() {
                sum.quit = true;
                break;
            }
            match controls.take_episode_command() {
                Some(EpisodeCommand::Next) => break,
                Some(EpisodeCommand::Rerecord) => {
                    rerecord = true;
                    break;
                }
                None => {}
            }
            if operator.episode_done(tick) {
                break;
            }
        }
        if rerecord {
            sum.rerecorded += 1;
            if let Some(r) = rec.as_deref_mut() {
                r.discard();
            }
        } else {
            let frames = match rec.as_deref_mut() {
                Some(r) => r.end_episode(&instruction).map_err(|e| e.to_string())?,
                None => 0,
            };
            sum.frames += frames;
            sum.episodes += 1;
            on_episode(k, &instruction, frames);
            k += 1;
        }
        // Reset time (also before a re-record): the leader keeps driving the follower, the
        // e-stop still holds it, nothing is recorded.
        let resets = if sum.quit || k >= cfg.episodes { 0 } else { cfg.reset_ticks };
        for _ in 0..resets {
            if cfg.paced {
                let _ = pacer.wait();
            }
            follow(leader, follower, safety, controls)?;
            if controls.quitting() {
                sum.quit = true;
                break;
            }
        }
    }
    Ok(sum)
}
