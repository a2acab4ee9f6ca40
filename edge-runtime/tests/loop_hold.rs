//! The control loop against the simulated arm when inference falls behind and when the e-stop
//! turns the torque off: a lagging policy makes the loop hold (counted as starved ticks) and a
//! chunk that arrives late is executed from the current instant, never replayed from its start;
//! a torque-off stop leaves the servos limp and commands nothing until it is released.

use std::time::Duration;

use lapa_boards::SO101;
use lapa_bridge::arm::{Arm, joint_calibrations};
use lapa_edge::cyclelog::LogWriter;
use lapa_edge::runtime::{Controls, EStopMode, Flow, RunConfig, Summary, arm_action_spec, run};
use lapa_edge::safety::{SafetyConfig, SafetyFilter, flag, joint_limits};
use lapa_edge::sim::{SceneArm, SceneCamera, SceneSpec, SimScene};
use lapa_model::policy::{ActionSpec, Policy, PolicyError, PolicyInput};
use lapa_sim::TaskFamily;

const RATE: f32 = 50.0;
const FPS: f32 = 10.0;
/// The lagging ramp's shoulder-pan speed, degrees per second.
const SPEED: f32 = 2.0;

/// Pans the shoulder at a constant speed in time: action `j` of a chunk observed at time `t`
/// is `origin + SPEED·(t + j/fps)`, the other joints stay where they are. Every call after the
/// first takes `delay`, longer than the loop can wait.
struct RampPolicy {
    spec: ActionSpec,
    /// Shoulder-pan speed, degrees per second.
    speed: f32,
    delay: Duration,
    calls: usize,
    origin: Option<f32>,
}

impl Policy for RampPolicy {
    fn action_spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn describe(&self) -> String {
        "ramp".into()
    }

    fn infer(&mut self, input: &PolicyInput<'_>) -> Result<Vec<Vec<f32>>, PolicyError> {
        self.calls += 1;
        if self.calls > 1 {
            std::thread::sleep(self.delay);
        }
        let t = input.time_s as f32;
        let origin = *self.origin.get_or_insert(input.state[0] - self.speed * t);
        Ok((0..self.spec.chunk)
            .map(|j| {
                let mut a = input.state.to_vec();
                a[0] = origin + self.speed * (t + j as f32 / FPS);
                a
            })
            .collect())
    }
}

/// What each cycle showed: tick, commanded and measured shoulder pan, safety flags, torque.
type Seen = Vec<(u64, f32, f32, u16, bool)>;

/// Runs the loop; `act` gets each cycle's ordinal (0, 1, 2, … whatever ticks a loaded machine
/// drops) after it ran, and `seen[n]` is that cycle.
fn go(policy: Box<dyn Policy>, estop: EStopMode, ticks: u64, act: impl Fn(usize, &Controls)) -> (Summary, Seen) {
    let scene = SimScene::new(&SceneSpec { seed: 2, family: Some(TaskFamily::PushToSide), rate_hz: RATE as u32, ..SceneSpec::default() }).expect("scene");
    let mut arm = SceneArm::new(scene.clone());
    arm.connect().expect("arm");
    let limits = joint_limits(&SO101, &joint_calibrations(&arm.read_calibration().expect("cal"))).expect("limits");
    let safety = SafetyFilter::new(SafetyConfig::default(), &SO101, limits, RATE).expect("safety");
    let controls = Controls::new("pan").expect("controls");
    let cfg = RunConfig { rate_hz: RATE, estop, max_ticks: Some(ticks), ..RunConfig::default() };
    let mut seen = Vec::new();
    let c2 = controls.clone();
    let summary = run(&mut arm, Box::new(SceneCamera::new(scene)), policy, safety, &controls, &LogWriter::disabled(), &cfg, |c| {
        seen.push((c.tick, c.filtered.command[0], c.reading.joints[0], c.filtered.flags, c.reading.state.torque));
        act(seen.len() - 1, &c2);
        Flow::Continue
    })
    .expect("runs");
    (summary, seen)
}

#[test]
fn a_lagging_policy_makes_the_loop_hold_and_late_chunks_start_at_the_present() {
    // Chunks of 10 actions at 10 fps cover 50 ticks at 50 Hz; the next is asked for when 25 are
    // left and takes 0.6 s (30 ticks) to come: it arrives with 30 of its ticks past and 20 to
    // run, and the one after it is asked for at once, so the loop holds 10 ticks in every 30.
    let policy = RampPolicy { spec: arm_action_spec(&SO101, FPS, 10), speed: SPEED, delay: Duration::from_millis(600), calls: 0, origin: None };
    let (summary, seen) = go(Box::new(policy), EStopMode::Hold, 220, |_, _| {});
    let st = &summary.stats;
    assert!(st.chunks >= 3, "chunks {}", st.chunks);
    assert!(st.starved >= 30, "the loop held while inference lagged: {} starved ticks", st.starved);
    assert_eq!((st.policy_errors, st.late_chunks), (0, 0));
    let origin = seen[0].2;
    let (mut held, mut moving) = (0, 0);
    for w in seen.windows(2) {
        let (prev, (tick, cmd, _, flags, _)) = (&w[0], &w[1]);
        if flags & flag::HOLD != 0 {
            // Held: the same command as the tick before, nothing replayed.
            assert_eq!(*cmd, prev.1, "tick {tick} held but commanded {cmd} after {}", prev.1);
            held += 1;
        } else {
            // Executing: the action for now (up to one action interval behind, the last action
            // of a chunk is held over its interval), never the 0.9 s old start of a late chunk.
            let now = origin + SPEED * *tick as f32 / RATE;
            let lo = now - SPEED / FPS - 0.05;
            assert!((lo..=now + 0.05).contains(cmd), "tick {tick}: commanded {cmd}, the ramp is at {now} (stale actions replayed?)");
            moving += 1;
        }
    }
    assert!(held >= 30 && moving >= 60, "held {held}, moving {moving}");
}

#[test]
fn a_torque_off_stop_leaves_the_arm_limp_and_commands_nothing_until_released() {
    // A fast ramp that does not lag, so the arm is visibly moving when the stop comes.
    let policy = RampPolicy { spec: arm_action_spec(&SO101, FPS, 10), speed: 20.0, delay: Duration::ZERO, calls: 0, origin: None };
    let (summary, seen) = go(Box::new(policy), EStopMode::TorqueOff, 160, |n, c| match n {
        60 => c.estop(),
        100 => c.release_estop(),
        _ => {}
    });
    let at = |n: usize| seen[n];
    assert!(at(60).4, "torque on before the stop");
    assert!(at(30).2 != at(60).2, "the arm was moving before the stop");
    // The press is read on the next cycle (torque off there) and the release likewise, so the
    // cycles 61..=100 are stopped and the readings of 62..=101 limp.
    for n in 61..=100 {
        assert!(at(n).3 & flag::ESTOP != 0, "cycle {n}: flags {:#x}", at(n).3);
    }
    for n in 62..=101 {
        let s = at(n);
        assert!(!s.4, "cycle {n}: torque is still on");
        assert_eq!(s.2, at(62).2, "cycle {n}: a limp arm moved (was it commanded?)");
    }
    // Released: torque back on, and moving again from where it is.
    assert!(at(103).4, "torque on again after the release");
    assert!(seen[103..].iter().any(|s| s.2 != at(101).2), "the arm never moved again");
    assert_eq!(summary.stats.arm_errors, 0);
}
