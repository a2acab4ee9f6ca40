//! Teleoperated recording on the simulated leader and follower: the scripted expert moves the
//! leader's simulated servos, the leader is read through the real Feetech driver, the follower
//! follows through the safety filter, and the episodes become a LeRobot v3.0 dataset that lapa's
//! dataset reader (what `lapa dataset info` and `lapa train` use) opens.

use lapa_boards::{SO101, SO101_LEADER};
use lapa_bridge::arm::{Arm, SimArm, joint_calibrations};
use lapa_dataset::Dataset;
use lapa_edge::record::Recorder;
use lapa_edge::runtime::{Controls, EpisodeCommand};
use lapa_edge::safety::{SafetyConfig, SafetyFilter, joint_limits};
use lapa_edge::sim::{SceneArm, SceneCamera, SceneSpec, SimScene, lock};
use lapa_edge::teleop::{Operator, SimOperator, TeleopConfig, teleop};
use lapa_sim::{Split, TaskFamily};
use std::process::Command;
use std::sync::Arc;

/// The sim operator, and a person who asks for a re-record at tick 5 of the first episode.
struct Impatient {
    inner: SimOperator,
    controls: Arc<Controls>,
    episode: usize,
    asked: bool,
}

impl Operator for Impatient {
    fn begin_episode(&mut self, k: usize) -> Result<Option<String>, String> {
        self.episode = k;
        self.inner.begin_episode(k)
    }
    fn before_tick(&mut self, tick: u64) -> Result<(), String> {
        if self.episode == 0 && tick == 5 && !self.asked {
            self.asked = true;
            self.controls.request_episode(EpisodeCommand::Rerecord);
        }
        self.inner.before_tick(tick)
    }
    fn episode_done(&mut self, tick: u64) -> bool {
        self.inner.episode_done(tick)
    }
}

#[test]
fn teleop_records_a_dataset_the_reader_opens_and_a_rerecord_is_thrown_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("demos");
    let rate = 30u32;
    let scene = SimScene::new(&SceneSpec { seed: 1, family: Some(TaskFamily::PushToSide), rate_hz: rate, ..SceneSpec::default() }).expect("scene");
    let mut follower = SceneArm::new(scene.clone());
    follower.connect().expect("follower");
    let mut leader = SimArm::new();
    leader.connect().expect("leader");
    let lcal = leader.read_calibration().expect("leader calibration");
    let inner = SimOperator::new(scene.clone(), leader.bus.clone(), &SO101_LEADER, &lcal, rate as f32, 1, Some(TaskFamily::PushToSide), Split::Seen, 0.3)
        .expect("operator");
    let controls = Controls::new("teleoperation").expect("controls");
    let mut op = Impatient { inner, controls: controls.clone(), episode: 0, asked: false };
    let mut camera = SceneCamera::new(scene.clone());
    let limits = joint_limits(&SO101, &joint_calibrations(&follower.read_calibration().expect("cal"))).expect("limits");
    let mut safety = SafetyFilter::new(SafetyConfig::default(), &SO101, limits, rate as f32).expect("safety");
    let mut rec = Recorder::create(&root, &SO101, 10, 64, 64).expect("recorder");
    let cfg = TeleopConfig { rate_hz: rate as f32, record_every: 3, episodes: 2, episode_ticks: 30 * 30, reset_ticks: 0, paced: false };
    let mut tasks = Vec::new();
    let sum = teleop(&mut leader, &mut follower, &mut camera, &mut safety, &controls, &mut op, Some(&mut rec), &cfg, |_, t, n| tasks.push((t.to_string(), n)))
        .expect("teleop");
    assert_eq!((sum.episodes, sum.rerecorded), (2, 1), "{sum:?}");
    assert_eq!(op.inner.successes, 2, "both push tasks done through leader → safety → follower");
    assert!(lock(&scene).success(), "the last scene ends solved");
    let w = rec.finish().expect("finish");
    assert_eq!(w.episodes, 2);
    let ds = Dataset::open(&root).expect("the dataset opens");
    assert_eq!(ds.episodes.len(), 2);
    assert_eq!(ds.info.fps, 10.0);
    for (k, (task, frames)) in tasks.iter().enumerate() {
        let ep = ds.episode(k, true).expect("episode");
        assert_eq!(&ep.task, task);
        assert_eq!(ep.len(), *frames);
        let state = ep.state.as_ref().expect("state");
        let action = ep.action.as_ref().expect("action");
        assert_eq!((state.cols, action.cols), (6, 6));
        // The follower went where the commands sent it: the last state is near the command
        // before it (the servos move at most 180°/s, a frame is 0.1 s).
        let n = ep.len();
        let d: f32 = state.row(n - 1).iter().zip(action.row(n - 2)).take(5).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d < 10.0, "episode {k}: follower {:?} vs command {:?}", state.row(n - 1), action.row(n - 2));
        // And the arm moved during the episode.
        let moved: f32 = state.row(n - 1).iter().zip(state.row(0)).map(|(a, b)| (a - b).abs()).sum();
        assert!(moved > 5.0, "episode {k} did not move");
        assert_eq!(ep.videos.get("observation.images.front").map(|f| f.count), Some(n));
    }
}

#[test]
fn the_teleop_command_records_and_refuses_bad_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ds");
    let edge = env!("CARGO_BIN_EXE_lapa-edge");
    let out = Command::new(edge).args(["teleop", "--sim", "--no-pace", "--episodes", "2", "--seed", "4", "--record"]).arg(&root).output().expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("recorded") && text.contains("2 episodes"), "{text}");
    assert_eq!(Dataset::open(&root).expect("opens").episodes.len(), 2);
    // The folder exists now: a second recording into it is refused and the first is intact.
    let again = Command::new(edge).args(["teleop", "--sim", "--no-pace", "--episodes", "1", "--record"]).arg(&root).output().expect("runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(Dataset::open(&root).expect("still opens").episodes.len(), 2);
    for (args, want) in [
        (vec!["--fps", "7"], "--fps 7"),
        (vec!["--rate", "0"], "--rate 0"),
        (vec!["--episode-seconds", "NaN"], "--episode-seconds"),
        (vec!["--family", "juggle"], "--family"),
    ] {
        let out = Command::new(edge).args(["teleop", "--sim", "--no-pace"]).args(&args).output().expect("runs");
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(want), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // A real board: the instruction is asked for, then a missing bus is named with its profile
    // (before anything is recorded).
    let out = Command::new(edge).args(["teleop", "--board", "raspberry_pi_5", "--record"]).arg(dir.path().join("x")).output().expect("runs");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--instruction"), "{}", String::from_utf8_lossy(&out.stderr));
    let profile = dir.path().join("x86_64_dev.toml");
    let text = include_str!("../../boards/profiles/boards/x86_64_dev.toml").replacen("/dev/ttyACM1", "/dev/lapa-no-such-leader", 1);
    std::fs::write(&profile, text.replacen("/dev/ttyACM0", "/dev/lapa-no-such-follower", 1)).expect("profile");
    let out = Command::new(edge)
        .args(["teleop", "--board", profile.to_str().expect("utf-8"), "--instruction", "put the red block left", "--record"])
        .arg(dir.path().join("y"))
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("x86_64_dev.toml") && err.contains("/dev/lapa-no-such-follower"), "{err}");
    assert!(!dir.path().join("y").exists(), "a failed start left a recording folder");
}
