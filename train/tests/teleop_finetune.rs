//! The board workflow's hand-off: episodes teleoperated on the simulated leader and follower and
//! recorded by `lapa-edge`'s recorder are what `lapa dataset info` and `lapa train finetune` take,
//! unchanged, and the finetuned policy's action head is the follower's joints.

use lapa_boards::{SO101, SO101_LEADER};
use lapa_bridge::arm::{Arm, SimArm, joint_calibrations};
use lapa_edge::record::Recorder;
use lapa_edge::runtime::Controls;
use lapa_edge::safety::{SafetyConfig, SafetyFilter, joint_limits};
use lapa_edge::sim::{SceneArm, SceneCamera, SceneSpec, SimScene};
use lapa_edge::teleop::{SimOperator, TeleopConfig, teleop};
use lapa_sim::{Split, TaskFamily};
use std::process::Command;

fn lapa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lapa")).args(args).output().expect("run lapa")
}

#[test]
fn a_teleop_recording_is_finetuned_on_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demos = dir.path().join("demos");
    let rate = 30u32;
    let scene = SimScene::new(&SceneSpec { seed: 2, family: Some(TaskFamily::PushToSide), rate_hz: rate, ..SceneSpec::default() }).expect("scene");
    let mut follower = SceneArm::new(scene.clone());
    follower.connect().expect("follower");
    let mut leader = SimArm::new();
    leader.connect().expect("leader");
    let lcal = leader.read_calibration().expect("leader calibration");
    let mut op = SimOperator::new(scene.clone(), leader.bus.clone(), &SO101_LEADER, &lcal, rate as f32, 2, Some(TaskFamily::PushToSide), Split::Seen, 0.3)
        .expect("operator");
    let controls = Controls::new("teleoperation").expect("controls");
    let mut camera = SceneCamera::new(scene.clone());
    let limits = joint_limits(&SO101, &joint_calibrations(&follower.read_calibration().expect("cal"))).expect("limits");
    let mut safety = SafetyFilter::new(SafetyConfig::default(), &SO101, limits, rate as f32).expect("safety");
    let mut rec = Recorder::create(&demos, &SO101, 10, 64, 64).expect("recorder");
    let cfg = TeleopConfig { rate_hz: rate as f32, record_every: 3, episodes: 2, episode_ticks: 30 * 30, reset_ticks: 0, paced: false };
    let sum = teleop(&mut leader, &mut follower, &mut camera, &mut safety, &controls, &mut op, Some(&mut rec), &cfg, |_, _, _| {}).expect("teleop");
    assert_eq!(sum.episodes, 2, "{sum:?}");
    rec.finish().expect("finish");

    let d = demos.to_str().expect("utf-8");
    let out = lapa(&["dataset", "info", d]);
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(info.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["episodes", "2"]), "{info}");
    assert!(info.contains("robot_type: so101_follower") && info.contains("[64, 64, 3]"), "{info}");
    for key in ["action", "observation.state"] {
        let line = info.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("no {key}: {info}"));
        assert!(line.contains("[6] [shoulder_pan.pos,"), "{line}");
    }

    let run = dir.path().join("ft");
    let cache = dir.path().join("cache");
    let (c, r) = (cache.to_str().expect("utf-8"), run.to_str().expect("utf-8"));
    let mut args = vec!["train", "finetune", "--init", "none", "--data", d, "--chunk", "2", "--bins", "8", "--steps", "2"];
    args.extend(["--config", "tiny", "--batch", "4", "--quiet", "--cache", c, "--out", r]);
    let out = lapa(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let model: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("model/config.json")).expect("model config")).expect("json");
    assert_eq!(model["head"]["kind"].as_str(), Some("action"), "{}", model["head"]);
    let names: Vec<&str> = model["head"]["spec"]["names"].as_array().expect("an action head").iter().filter_map(|n| n.as_str()).collect();
    let joints: Vec<&str> = SO101.joints.iter().map(|j| j.name).collect();
    assert_eq!(names, joints, "{}", model["head"]);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).expect("metrics");
    assert!(metrics.lines().count() >= 2, "{metrics}");
}
