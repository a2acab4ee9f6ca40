//! `lapa-edge run --record`: what the robot saw and did becomes a LeRobot v3.0 dataset, one
//! episode per instruction, without the ticks the arm was stopped.

use std::process::Command;
use std::time::{Duration, Instant};

use lapa_dataset::Dataset;
use lapa_edge::record::{RunRecorder, SharedCamera};
use lapa_edge::runtime::Controls;
use lapa_edge::safety::flag;
use lapa_edge::sim::{SceneCamera, SceneSpec, SimScene};

#[test]
fn a_recorded_run_is_a_dataset_of_what_the_arm_saw_and_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ds");
    let edge = env!("CARGO_BIN_EXE_lapa-edge");
    let out = Command::new(edge)
        .args(["run", "--sim", "--seed", "1", "--max-seconds", "3", "--settle-seconds", "0", "--quiet", "--record"])
        .arg(&root)
        .output()
        .expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("recorded:") && text.contains("1 episodes"), "{text}");
    let task = text.lines().find_map(|l| l.strip_prefix("task: \"")).and_then(|l| l.split('"').next()).expect("the task line").to_string();
    let ds = Dataset::open(&root).expect("the dataset opens");
    assert_eq!(ds.episodes.len(), 1);
    assert_eq!(ds.info.fps, 10.0);
    let ep = ds.episode(0, true).expect("episode");
    assert_eq!(ep.task, task);
    let n = ep.len();
    assert!((15..=32).contains(&n), "3 s at 10 fps: {n} frames");
    let (state, action) = (ep.state.as_ref().expect("state"), ep.action.as_ref().expect("action"));
    assert_eq!((state.cols, action.cols), (6, 6));
    assert_eq!(ep.videos.get("observation.images.front").map(|f| f.count), Some(n));
    // The arm moved, and went where it was commanded (servos: at most 180°/s, 0.1 s a frame).
    let moved: f32 = state.row(n - 1).iter().zip(state.row(0)).map(|(a, b)| (a - b).abs()).sum();
    assert!(moved > 5.0, "the recorded arm did not move");
    let d: f32 = state.row(n - 1).iter().zip(action.row(n - 2)).take(5).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d < 20.0, "follower {:?} vs command {:?}", state.row(n - 1), action.row(n - 2));

    // A second run never overwrites it, and says so before anything moves.
    let again = Command::new(edge).args(["run", "--sim", "--max-seconds", "1", "--quiet", "--record"]).arg(&root).output().expect("runs");
    let text = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && text.contains("already exists"), "{text}");
    assert_eq!(Dataset::open(&root).expect("still opens").episodes.len(), 1);
    let bad = Command::new(edge).args(["run", "--sim", "--record-fps", "0", "--record"]).arg(dir.path().join("x")).output().expect("runs");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--record-fps 0"));
}

/// A recorder at 20 fps into `<tempdir>/ds` over a sim scene's camera, episodes of at most
/// `max_frames`.
fn recorder(seed: u64, instruction: &str, max_frames: usize) -> (tempfile::TempDir, std::sync::Arc<Controls>, RunRecorder) {
    let dir = tempfile::tempdir().expect("tempdir");
    let scene = SimScene::new(&SceneSpec { seed, rate_hz: 50, ..SceneSpec::default() }).expect("scene");
    let controls = Controls::new(instruction).expect("controls");
    let camera = SharedCamera::new(Box::new(SceneCamera::new(scene)));
    let rec = RunRecorder::start(&dir.path().join("ds"), &lapa_boards::SO101, 20, max_frames, camera, controls.clone()).expect("recorder");
    (dir, controls, rec)
}

#[test]
fn each_instruction_is_an_episode_and_stopped_ticks_are_left_out() {
    let (dir, controls, rec) = recorder(5, "push the red cube", 1000);
    let root = dir.path().join("ds");
    // The loop's side, at 50 Hz for 1.5 s: moving, then stopped, then a new instruction.
    let t0 = Instant::now();
    let mut tick = 0u32;
    while t0.elapsed() < Duration::from_millis(1500) {
        let s = t0.elapsed().as_secs_f32();
        let mut joints = [0.0f32; 6];
        joints[0] = s * 10.0;
        let flags = if (0.4..0.8).contains(&s) { flag::ESTOP } else { 0 };
        if s >= 1.1 && controls.instruction().0 == 0 {
            controls.set_instruction("stack the blue block").expect("instruction");
        }
        rec.publish(u64::from(tick), controls.instruction_version(), &joints, &joints, flags);
        tick += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tick > 30 && !rec.stopped());
    let s = rec.finish().expect("finish");
    assert!(s.failure.is_none(), "{:?}", s.failure);
    assert!(s.skipped_stopped >= 2, "0.4 s stopped at 20 fps: {} left out", s.skipped_stopped);
    let ds = Dataset::open(&root).expect("opens");
    assert_eq!(ds.episodes.len(), 2, "one episode per instruction");
    let (a, b) = (ds.episode(0, false).expect("first"), ds.episode(1, false).expect("second"));
    assert_eq!((a.task.as_str(), b.task.as_str()), ("push the red cube", "stack the blue block"));
    assert_eq!(a.len() + b.len(), s.frames);
    // No frame from the stopped stretch: the recorded pan angles skip 4..8 (0.4..0.8 s × 10).
    let pans: Vec<f32> = (0..a.len()).map(|i| a.state.as_ref().expect("state").row(i)[0]).collect();
    assert!(pans.iter().all(|p| !(4.3..7.8).contains(p)), "{pans:?}");
    assert!(pans.iter().any(|p| *p >= 7.8), "recording resumed after the stop: {pans:?}");
}

#[test]
fn a_long_instruction_is_split_into_bounded_episodes_and_a_stalled_loop_adds_nothing() {
    let (dir, controls, rec) = recorder(6, "line up the blocks", 5);
    let root = dir.path().join("ds");
    let t0 = Instant::now();
    let mut tick = 0u64;
    while t0.elapsed() < Duration::from_millis(900) {
        let joints = [tick as f32 * 0.1, 0.0, 0.0, 0.0, 0.0, 0.0];
        rec.publish(tick, controls.instruction_version(), &joints, &joints, 0);
        tick += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // The loop stalls (no new tick) for 0.5 s: no frame is made of its old tick.
    std::thread::sleep(Duration::from_millis(500));
    let s = rec.finish().expect("finish");
    assert!(s.failure.is_none(), "{:?}", s.failure);
    let ds = Dataset::open(&root).expect("opens");
    let lens: Vec<usize> = (0..ds.episodes.len()).map(|k| ds.episode(k, false).expect("episode").len()).collect();
    assert!(lens.len() >= 2 && lens.iter().all(|&n| n <= 5), "episodes of at most 5 frames: {lens:?}");
    assert_eq!(lens.iter().sum::<usize>(), s.frames);
    // 0.9 s at 20 fps while the loop ticked; another 0.5 s (10 frame times) while it stalled.
    assert!(s.frames <= 21, "{} frames: the stalled loop's old tick was recorded again", s.frames);
    assert!(ds.episodes.iter().all(|e| e.tasks.iter().all(|t| t == "line up the blocks")));
}

#[test]
fn ctrl_c_ends_a_recorded_run_cleanly_and_keeps_the_recording() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ds");
    // Its own process group, signalled as a whole, as a terminal's Ctrl-C is (ffmpeg included).
    let mut child = Command::new(env!("CARGO_BIN_EXE_lapa-edge"))
        .args(["run", "--sim", "--seed", "2", "--max-seconds", "60", "--settle-seconds", "0", "--quiet", "--record"])
        .arg(&root)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    // Wait until it says it records, then let it record a second.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("recording:") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the run started recording");
    std::thread::sleep(Duration::from_secs(1));
    let killed = Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status().expect("kill");
    assert!(killed.success());
    let t = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "the run did not end after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), reader.join().expect("stderr"));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("stopping") && text.contains("recorded:"), "{text}");
    let ds = Dataset::open(&root).expect("the recording was saved");
    assert_eq!(ds.episodes.len(), 1);
    assert!(ds.episodes[0].length >= 3, "{} frames", ds.episodes[0].length);
}
