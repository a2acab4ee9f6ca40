//! The control loop against the simulated scene: an e-stop pressed and released between two ticks
//! still holds the arm for a tick and throws away what was planned before it, and a pause does the
//! same.

use lapa_boards::SO101;
use lapa_bridge::arm::{Arm, joint_calibrations};
use lapa_edge::cyclelog::LogWriter;
use lapa_edge::runtime::{Controls, Flow, RunConfig, run};
use lapa_edge::safety::{SafetyConfig, SafetyFilter, flag, joint_limits};
use lapa_edge::sim::{SceneArm, SceneCamera, SceneSpec, SimExpertPolicy, SimScene};
use lapa_sim::TaskFamily;

fn go(act: impl Fn(&Controls), at: u64) -> Vec<(u64, u16, bool)> {
    let scene = SimScene::new(&SceneSpec { seed: 1, family: Some(TaskFamily::PushToSide), rate_hz: 50, ..SceneSpec::default() }).expect("scene");
    let mut arm = SceneArm::new(scene.clone());
    arm.connect().expect("arm");
    let limits = joint_limits(&SO101, &joint_calibrations(&arm.read_calibration().expect("cal"))).expect("limits");
    let safety = SafetyFilter::new(SafetyConfig::default(), &SO101, limits, 50.0).expect("safety");
    let policy = SimExpertPolicy::new(scene.clone(), 10.0, 10).expect("policy");
    // The scene's own task: the expert moves only while the instruction names it.
    let task = lapa_edge::sim::lock(&scene).instruction();
    let controls = Controls::new(&task).expect("controls");
    let cfg = RunConfig { rate_hz: 50.0, max_ticks: Some(at + 40), ..RunConfig::default() };
    let mut seen = Vec::new();
    let c2 = controls.clone();
    let summary = run(&mut arm, Box::new(SceneCamera::new(scene)), Box::new(policy), safety, &controls, &LogWriter::disabled(), &cfg, |c| {
        seen.push((c.tick, c.filtered.flags, c.stats.queue > 0));
        if c.tick == at {
            act(&c2);
        }
        Flow::Continue
    })
    .expect("runs");
    assert!(summary.stats.chunks > 0);
    seen
}

#[test]
fn a_stop_released_within_one_period_still_holds_and_drops_the_plan() {
    let seen = go(
        |c| {
            c.estop();
            c.release_estop();
        },
        60,
    );
    let next = seen.iter().find(|(t, _, _)| *t == 61).expect("tick 61");
    assert!(next.1 & flag::ESTOP != 0, "the press was acted on: flags {:#x}", next.1);
    assert!(!next.2, "the queue was emptied");
    let later = seen.iter().find(|(t, _, _)| *t == 62).expect("tick 62");
    assert!(later.1 & flag::ESTOP == 0, "and released on the next tick");
    // Moving again later, from a new chunk.
    assert!(seen.iter().any(|(t, f, q)| *t > 62 && *q && f & flag::HOLD == 0), "{seen:?}");
}

#[test]
fn a_pause_and_resume_between_ticks_also_drop_the_plan() {
    let seen = go(
        |c| {
            c.set_paused(true);
            c.set_paused(false);
        },
        60,
    );
    let next = seen.iter().find(|(t, _, _)| *t == 61).expect("tick 61");
    assert!(next.1 & flag::PAUSED != 0 && !next.2, "flags {:#x}, queue {}", next.1, next.2);
}
