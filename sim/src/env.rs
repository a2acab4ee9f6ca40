//! The `Env` API used for recording, closed-loop evaluation and as the simulated arm and camera of
//! the edge runtime: reset with a seed and task, step with an action, observe image + joint state.

use crate::expert::{ArmTracker, Expert, HandMotion};
use crate::kinematics::{self, Joints};
use crate::render::{Image, Renderer};
use crate::rng::Rng;
use crate::task::{Split, Task, TaskFamily, sample_task};
use crate::world::{Embodiment, HandPose, World};

/// Simulation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvConfig {
    /// Rendered image size (pixels).
    pub width: usize,
    pub height: usize,
    /// Control rate (Hz): one `step` lasts `1/fps` seconds.
    pub fps: u32,
    /// Joint speed limit of the simulated servos, degrees per second.
    pub joint_speed: f32,
    /// Gripper speed limit, units per second.
    pub gripper_speed: f32,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self { width: 64, height: 64, fps: 10, joint_speed: 180.0, gripper_speed: 400.0 }
    }
}

/// What an action commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Arm: absolute joint targets (LeRobot SO-101 convention, degrees; gripper 0..100).
    JointTargets(Joints),
    /// Hand: the pose to move to by the end of the step (used by the scripted hand only).
    HandPose(HandPose),
}

/// An observation: camera image and proprioception.
#[derive(Debug, Clone)]
pub struct Observation {
    pub image: Image,
    /// Arm joint positions (degrees, gripper 0..100); for the hand, its effector as
    /// `[x, y, z, grip, yaw, 0]` (not recorded into datasets: human video has no state).
    pub state: Joints,
}

/// The simulated tabletop.
#[derive(Debug, Clone)]
pub struct Env {
    cfg: EnvConfig,
    world: World,
    renderer: Renderer,
    task: Task,
    split: Split,
    seed: u64,
    steps: usize,
}

/// Physics substeps per second (contact is resolved at this rate whatever the control rate).
const SUBSTEP_HZ: f32 = 200.0;

impl Env {
    /// Creates an env and resets it with `seed`, a random family and the seen split, arm embodiment.
    pub fn new(cfg: EnvConfig) -> Self {
        let mut rng = Rng::new(0);
        let (blocks, task) = sample_task(&mut rng, TaskFamily::PushToSide, Split::Seen);
        let world = World::new(Embodiment::Arm, blocks);
        let renderer = Renderer::new(cfg.width, cfg.height, Split::Seen.sample_style(&mut rng));
        let mut env = Self { cfg, world, renderer, task, split: Split::Seen, seed: 0, steps: 0 };
        env.reset(0, Embodiment::Arm, None, Split::Seen);
        env
    }

    pub fn config(&self) -> &EnvConfig {
        &self.cfg
    }

    /// Starts a new episode. `family: None` draws one from the seed. Everything (scene, task,
    /// instruction, look) is a function of `(seed, embodiment, family, split)`.
    pub fn reset(&mut self, seed: u64, embodiment: Embodiment, family: Option<TaskFamily>, split: Split) -> Observation {
        let mut rng = Rng::new(seed);
        let family = family.unwrap_or_else(|| *rng.pick(&TaskFamily::ALL));
        let mut scene_rng = rng.fork(1);
        let (blocks, task) = sample_task(&mut scene_rng, family, split);
        let style = split.sample_style(&mut rng.fork(2));
        self.world = World::new(embodiment, blocks);
        self.renderer = Renderer::new(self.cfg.width, self.cfg.height, style);
        self.task = task;
        self.split = split;
        self.seed = seed;
        self.steps = 0;
        self.observe()
    }

    /// Advances one control period.
    pub fn step(&mut self, action: &Action) -> Observation {
        self.advance(action);
        self.observe()
    }

    /// Advances one control period without rendering (for fast evaluation).
    pub fn advance(&mut self, action: &Action) {
        let dt = 1.0 / self.cfg.fps as f32;
        let n = (SUBSTEP_HZ * dt).ceil().max(1.0) as usize;
        let sub = dt / n as f32;
        match *action {
            Action::JointTargets(target) => {
                let target = kinematics::clamp_joints(&target);
                for _ in 0..n {
                    for (i, (q, t)) in self.world.joints.iter_mut().zip(target).enumerate() {
                        let lim = if i == 5 { self.cfg.gripper_speed } else { self.cfg.joint_speed } * sub;
                        let d = (t - *q).clamp(-lim, lim);
                        *q += d;
                    }
                    self.world.interact();
                }
            }
            Action::HandPose(target) => {
                let start = self.world.hand;
                for k in 1..=n {
                    let t = k as f32 / n as f32;
                    let lerp = |a: f32, b: f32| a + (b - a) * t;
                    self.world.hand = HandPose {
                        pos: [lerp(start.pos[0], target.pos[0]), lerp(start.pos[1], target.pos[1]), lerp(start.pos[2], target.pos[2])],
                        grip: lerp(start.grip, target.grip),
                        yaw: lerp(start.yaw, target.yaw),
                    };
                    self.world.interact();
                }
            }
        }
        self.steps += 1;
    }

    pub fn observe(&self) -> Observation {
        Observation { image: self.renderer.render(&self.world), state: self.state() }
    }

    pub fn render_into(&self, img: &mut Image) {
        self.renderer.render_into(&self.world, img);
    }

    /// Proprioception (see [`Observation::state`]).
    pub fn state(&self) -> Joints {
        match self.world.embodiment {
            Embodiment::Arm => self.world.joints,
            Embodiment::Hand => {
                let h = self.world.hand;
                [h.pos[0], h.pos[1], h.pos[2], h.grip, h.yaw, 0.0]
            }
        }
    }

    pub fn success(&self) -> bool {
        self.task.goal.achieved(&self.world, &self.world.effector())
    }

    pub fn instruction(&self) -> &str {
        &self.task.instruction
    }

    pub fn task(&self) -> &Task {
        &self.task
    }

    pub fn split(&self) -> Split {
        self.split
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn embodiment(&self) -> Embodiment {
        self.world.embodiment
    }
}

/// One recorded demonstration. Frame `t` is observed before action `t` (LeRobot convention).
#[derive(Debug, Clone)]
pub struct Demo {
    pub embodiment: Embodiment,
    pub family: TaskFamily,
    pub split: Split,
    pub seed: u64,
    pub instruction: String,
    pub frames: Vec<Image>,
    pub states: Vec<Joints>,
    /// Arm only; the hand records no actions.
    pub actions: Option<Vec<Joints>>,
    pub success: bool,
    pub steps: usize,
}

impl Demo {
    /// All frames as one contiguous `frames × height × width × 3` RGB buffer.
    pub fn image_bytes(&self) -> Vec<u8> {
        self.frames.iter().flat_map(|f| f.data.iter().copied()).collect()
    }

    /// `(state, action)` as row-major `steps × 6` buffers; `None` for the hand, which records
    /// neither.
    pub fn state_action_rows(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        let actions = self.actions.as_ref()?;
        Some((self.states.iter().flatten().copied().collect(), actions.iter().flatten().copied().collect()))
    }
}

/// Default episode length limits (control steps) per embodiment at 10 fps; scaled with fps.
pub fn max_steps(embodiment: Embodiment, fps: u32) -> usize {
    let seconds = match embodiment {
        Embodiment::Arm => 20.0,
        Embodiment::Hand => 32.0,
    };
    (seconds * fps as f32) as usize
}

/// Steps recorded after the task first succeeds, so episodes end at rest.
pub const SETTLE_STEPS: usize = 3;

/// Runs the scripted expert for one episode. With `render = false` no images are produced (fast
/// success-rate evaluation).
pub fn run_expert(env: &mut Env, seed: u64, embodiment: Embodiment, family: Option<TaskFamily>, split: Split, render: bool) -> Demo {
    env.reset(seed, embodiment, family, split);
    let mut rng = Rng::new(seed ^ 0x005E_EDE4_BE27);
    let dt = 1.0 / env.config().fps as f32;
    let mut expert = Expert::new(&env.task().goal, env.world());
    let mut arm = ArmTracker::new(env.world());
    let mut hand = HandMotion::new(env.world(), &mut rng);
    let limit = max_steps(embodiment, env.config().fps);
    let mut frames = Vec::new();
    let mut states = Vec::new();
    let mut actions = Vec::new();
    let mut settle: Option<usize> = None;
    for _ in 0..limit {
        if render {
            frames.push(env.observe().image);
        }
        states.push(env.state());
        let target = expert.command(env.world());
        let action = match embodiment {
            Embodiment::Arm => {
                let q = arm.action(&target, dt);
                actions.push(q);
                Action::JointTargets(q)
            }
            Embodiment::Hand => Action::HandPose(hand.next_pose(&target, dt)),
        };
        env.advance(&action);
        if settle.is_none() && env.success() {
            settle = Some(0);
        }
        if let Some(s) = settle.as_mut() {
            *s += 1;
            if *s > SETTLE_STEPS {
                break;
            }
        }
    }
    let success = env.success();
    Demo {
        embodiment,
        family: env.task().family,
        split,
        seed,
        instruction: env.instruction().to_string(),
        steps: states.len(),
        frames,
        states,
        actions: (embodiment == Embodiment::Arm).then_some(actions),
        success,
    }
}
