//! The simulator as the board's arm, camera and (for now) policy, so the whole loop runs here.
//!
//! [`SceneArm`] implements the bridge's [`Arm`] over the tabletop simulator: joint targets in,
//! joint readings out, through the same counts ↔ units conversion and calibrated range as a real
//! SO-101 (readings are quantised to servo counts). Time is the loop's: every `read_state` advances
//! the scene by one control period toward the last target sent, so a run is deterministic in its
//! ticks whatever the machine's load. [`SceneCamera`] renders the same scene.
//!
//! [`SimExpertPolicy`] is **sim only**: the scripted expert that recorded the training data,
//! planning each chunk on a copy of the scene from privileged state (block positions), not from
//! the image. It exercises the loop, the chunk blending and the safety filter end to end until a
//! trained policy bundle exists; it cannot run on a real arm.

use crate::camera::{Camera, CameraError, CapturedFrame};
use lapa_boards::{Joints, SO101};
use lapa_bridge::arm::{Arm, ArmError, ArmInfo, ArmReading, validate_calibration};
use lapa_bridge::protocol::{ArmState, Calibration};
use lapa_model::policy::{ActionSpec, Policy, PolicyError, PolicyInput};
use lapa_sim::expert::{ArmTracker, Expert};
use lapa_sim::{Action, Embodiment, Env, EnvConfig, Split, TaskFamily};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which scene to build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneSpec {
    pub seed: u64,
    /// `None`: drawn from the seed.
    pub family: Option<TaskFamily>,
    pub split: Split,
    /// Control rate: one `read_state` is one period of simulated time.
    pub rate_hz: u32,
    pub width: usize,
    pub height: usize,
}

impl Default for SceneSpec {
    fn default() -> Self {
        Self { seed: 0, family: None, split: Split::Seen, rate_hz: 50, width: 64, height: 64 }
    }
}

/// The simulated tabletop with an SO-101 in it.
#[derive(Debug)]
pub struct SimScene {
    env: Env,
    target: Option<Joints>,
    torque: bool,
    cal: Calibration,
    frames: u64,
    ticks: u64,
}

/// The scene, shared by the arm (loop thread), the camera and the expert (inference thread).
pub type SharedScene = Arc<Mutex<SimScene>>;

/// Locks the scene; a thread that panicked while holding it left a scene that is still
/// consistent (every mutation is a plain assignment), so the poison is ignored.
pub fn lock(scene: &SharedScene) -> MutexGuard<'_, SimScene> {
    scene.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn factory_calibration() -> Calibration {
    let c = SO101.factory_calibration();
    Calibration {
        homing_offset: c.map(|j| j.homing_offset),
        range_min: c.map(|j| j.range_min),
        range_max: c.map(|j| j.range_max),
        drive_mode: c.map(|j| j.drive_mode),
    }
}

impl SimScene {
    /// Builds the scene; fails on a rate the simulator cannot step (0, or above 1 kHz).
    pub fn new(spec: &SceneSpec) -> Result<SharedScene, String> {
        if spec.rate_hz == 0 || spec.rate_hz > 1000 {
            return Err(format!("rate {} Hz: the simulated scene steps at 1..=1000 Hz", spec.rate_hz));
        }
        if !(16..=1024).contains(&spec.width) || !(16..=1024).contains(&spec.height) {
            return Err(format!("camera {}×{}: the simulated camera renders 16..=1024 pixels a side", spec.width, spec.height));
        }
        let cfg = EnvConfig { width: spec.width, height: spec.height, fps: spec.rate_hz, ..EnvConfig::default() };
        let mut env = Env::new(cfg);
        env.reset(spec.seed, Embodiment::Arm, spec.family, spec.split);
        Ok(Arc::new(Mutex::new(Self { env, target: None, torque: true, cal: factory_calibration(), frames: 0, ticks: 0 })))
    }

    /// Puts the scene back for a new episode: a fresh task from `seed` (the arm's calibration
    /// stays, as a real arm's does).
    pub fn reset(&mut self, seed: u64, family: Option<TaskFamily>, split: Split) {
        self.env.reset(seed, Embodiment::Arm, family, split);
        self.target = None;
        self.torque = true;
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// True while the scene's task is achieved.
    pub fn success(&self) -> bool {
        self.env.success()
    }

    pub fn instruction(&self) -> String {
        self.env.instruction().to_string()
    }

    /// Control periods simulated so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The joints as a servo would report them: quantised to counts with the calibration.
    fn reported(&self) -> Result<(Joints, [i16; 6]), ArmError> {
        let cal = lapa_bridge::arm::joint_calibrations(&self.cal);
        let counts = SO101.to_counts(&cal, &self.env.state())?;
        Ok((SO101.to_units(&cal, &counts)?, counts))
    }
}

/// The simulated SO-101 behind the [`Arm`] trait.
#[derive(Debug, Clone)]
pub struct SceneArm {
    scene: SharedScene,
}

impl SceneArm {
    pub fn new(scene: SharedScene) -> Self {
        Self { scene }
    }
}

impl Arm for SceneArm {
    fn connect(&mut self) -> Result<ArmInfo, ArmError> {
        let s = lock(&self.scene);
        Ok(ArmInfo {
            kind: "sim-scene",
            description: format!("simulated SO-101 in the tabletop scene (seed {}, {})", s.env.seed(), s.env.task().family.name()),
            boot: None,
        })
    }

    fn read_state(&mut self) -> Result<ArmReading, ArmError> {
        let mut s = lock(&self.scene);
        if let (true, Some(t)) = (s.torque, s.target) {
            s.env.advance(&Action::JointTargets(t));
        }
        s.ticks += 1;
        let (joints, positions) = s.reported()?;
        let state = ArmState { positions, loads: [0; 6], temperatures: [30; 6], voltage_dv: 120, faults: 0, torque: s.torque, holding: false };
        Ok(ArmReading { joints, state })
    }

    fn send_targets(&mut self, targets: &Joints) -> Result<(), ArmError> {
        let mut s = lock(&self.scene);
        let cal = lapa_bridge::arm::joint_calibrations(&s.cal);
        // As a servo would: to counts within the calibrated range, and back.
        let counts = SO101.to_counts(&cal, targets)?;
        s.target = Some(SO101.to_units(&cal, &counts)?);
        Ok(())
    }

    fn set_torque(&mut self, on: bool) -> Result<(), ArmError> {
        let mut s = lock(&self.scene);
        s.torque = on;
        if !on {
            s.target = None;
        }
        Ok(())
    }

    fn clear_faults(&mut self) -> Result<(), ArmError> {
        Ok(())
    }

    fn read_calibration(&mut self) -> Result<Calibration, ArmError> {
        Ok(lock(&self.scene).cal)
    }

    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError> {
        validate_calibration(&SO101, c)?;
        lock(&self.scene).cal = *c;
        Ok(())
    }
}

/// The scene's top-down camera.
#[derive(Debug, Clone)]
pub struct SceneCamera {
    scene: SharedScene,
}

impl SceneCamera {
    pub fn new(scene: SharedScene) -> Self {
        Self { scene }
    }
}

impl Camera for SceneCamera {
    fn describe(&self) -> String {
        let s = lock(&self.scene);
        let c = s.env.config();
        format!("sim top view {}×{}", c.width, c.height)
    }

    fn capture(&mut self) -> Result<CapturedFrame, CameraError> {
        let mut s = lock(&self.scene);
        s.frames += 1;
        let img = s.env.observe().image;
        Ok(CapturedFrame { seq: s.frames, width: img.width, height: img.height, rgb: img.data })
    }
}

/// The scripted expert as a chunking policy (sim only; see the module docs).
#[derive(Debug)]
pub struct SimExpertPolicy {
    scene: SharedScene,
    spec: ActionSpec,
    /// Expert and tracker state at the start of each action of the last plan.
    plan: Vec<(Expert, ArmTracker)>,
    plan_time: f64,
    /// What instructions mean: the expert does the scene's task only while the instruction names
    /// it (any paraphrase, the same objects and place), and holds the arm still otherwise.
    vocabulary: crate::speech::grammar::Vocabulary,
}

impl SimExpertPolicy {
    /// `fps` and `chunk` as a trained policy would have them (the sim data is 10 fps).
    pub fn new(scene: SharedScene, fps: f32, chunk: usize) -> Result<Self, PolicyError> {
        let spec = crate::runtime::arm_action_spec(&SO101, fps, chunk);
        spec.validate()?;
        Ok(Self { scene, spec, plan: Vec::new(), plan_time: 0.0, vocabulary: crate::speech::grammar::Vocabulary::sim() })
    }

    /// Whether `instruction` asks for the scene's task. (A scene whose own instruction the
    /// vocabulary cannot read — none of the simulator's, a test parses them all — is not gated.)
    pub fn means_the_task(&self, instruction: &str) -> bool {
        let task = lock(&self.scene).instruction();
        match (self.vocabulary.parse(instruction), self.vocabulary.parse(&task)) {
            (Some(said), Some(task)) => said.same_meaning(&task),
            (_, None) => true,
            (None, Some(_)) => false,
        }
    }
}

impl Policy for SimExpertPolicy {
    fn action_spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn describe(&self) -> String {
        format!("sim expert (privileged scene state; sim only), {} actions at {} fps", self.spec.chunk, self.spec.fps)
    }

    fn infer(&mut self, input: &PolicyInput<'_>) -> Result<Vec<Vec<f32>>, PolicyError> {
        if !self.means_the_task(input.instruction) {
            // Not the scene's task: hold where the arm is (the expert knows no other).
            self.plan.clear();
            return Ok(vec![input.state.to_vec(); self.spec.chunk]);
        }
        let mut env = lock(&self.scene).env.clone();
        // Continue the last plan's expert from where the arm has got to since it was made.
        let (mut expert, mut tracker) = match self.plan.is_empty() {
            true => (Expert::new(&env.task().goal, env.world()), ArmTracker::new(env.world())),
            false => {
                let done = ((input.time_s - self.plan_time) * f64::from(self.spec.fps)).round().max(0.0) as usize;
                let i = done.min(self.plan.len() - 1);
                self.plan.swap_remove(i)
            }
        };
        // The expert steps at the policy's fps, as it did when it recorded the data (its phases
        // count steps); the scene copy advances at the loop's rate, each action held for its
        // interval.
        let sub = (env.config().fps as f32 / self.spec.fps).round().max(1.0) as usize;
        let dt = 1.0 / self.spec.fps;
        self.plan.clear();
        let mut actions = Vec::with_capacity(self.spec.chunk);
        for _ in 0..self.spec.chunk {
            self.plan.push((expert.clone(), tracker.clone()));
            let target = expert.command(env.world());
            let q = tracker.action(&target, dt);
            actions.push(q.to_vec());
            for _ in 0..sub {
                env.advance(&Action::JointTargets(q));
            }
        }
        self.plan_time = input.time_s;
        Ok(actions)
    }

    fn reset(&mut self) {
        self.plan.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_scene_arm_converts_like_a_servo_and_steps_one_period_per_read() {
        let scene = SimScene::new(&SceneSpec { seed: 3, ..SceneSpec::default() }).unwrap();
        let mut arm = SceneArm::new(scene.clone());
        arm.connect().unwrap();
        let r0 = arm.read_state().unwrap();
        let mut target = r0.joints;
        target[0] += 30.0;
        arm.send_targets(&target).unwrap();
        // 180°/s at 50 Hz: 3.6° a period.
        let r1 = arm.read_state().unwrap();
        assert!((r1.joints[0] - r0.joints[0] - 3.6).abs() < 0.15, "{} → {}", r0.joints[0], r1.joints[0]);
        assert_eq!(lock(&scene).ticks(), 2);
        // Readings are whole servo counts.
        let step = 360.0 / 4095.0;
        let k = (r1.joints[0] + 2047.5 * step) / step;
        assert!((k - k.round()).abs() < 1e-3, "{k}");
        // Torque off: nothing moves.
        arm.set_torque(false).unwrap();
        let before = arm.read_state().unwrap().joints;
        assert_eq!(arm.read_state().unwrap().joints, before);
        assert!(arm.send_targets(&[f32::NAN; 6]).is_err());
        let mut cal = arm.read_calibration().unwrap();
        cal.range_max[2] = cal.range_min[2];
        assert!(arm.write_calibration(&cal).is_err());
    }

    #[test]
    fn the_expert_plans_chunks_at_its_fps_from_the_scene() {
        let scene = SimScene::new(&SceneSpec::default()).unwrap();
        let mut p = SimExpertPolicy::new(scene.clone(), 10.0, 8).unwrap();
        let mut cam = SceneCamera::new(scene.clone());
        let f = cam.capture().unwrap();
        assert_eq!((f.seq, f.width, f.height, f.rgb.len()), (1, 64, 64, 64 * 64 * 3));
        let state = lock(&scene).env().state();
        let input =
            PolicyInput { frame: lapa_model::policy::Frame { width: f.width, height: f.height, rgb: &f.rgb }, state: &state, instruction: "", time_s: 0.0 };
        // An instruction that is not the scene's task: the expert holds still.
        let held = p.infer(&input).unwrap();
        assert!(held.iter().all(|a| a[..] == state[..]), "{held:?}");
        let task = lock(&scene).instruction();
        let input = PolicyInput { instruction: &task, ..input };
        let chunk = p.infer(&input).unwrap();
        lapa_model::policy::check_chunk(p.action_spec(), &chunk).unwrap();
        assert_eq!(chunk.len(), 8);
        let moved: f32 = chunk[7].iter().zip(&chunk[0]).map(|(a, b)| (a - b).abs()).sum();
        assert!(moved > 1.0, "the expert moves toward its task: {chunk:?}");
        assert!(SimExpertPolicy::new(scene, 0.0, 8).is_err());
    }
}
