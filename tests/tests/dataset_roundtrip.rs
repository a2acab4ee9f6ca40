//! Simulator → LeRobot v3.0 writer → reader: actions and states exact, frames within codec
//! tolerance, tasks and timestamps preserved.

use lapa_dataset::{Dataset, Version, VideoCodec};
use lapa_sim::Embodiment;
use lapa_tests::record;

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10()
}

fn check_round_trip(codec: VideoCodec, min_psnr: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("arm");
    let (written, demos) = record(&root, Embodiment::Arm, 4, codec);
    assert_eq!(written.episodes, 4);
    let ds = Dataset::open(&root).expect("open");
    assert_eq!(ds.version, Version::V30);
    assert_eq!(ds.episodes.len(), 4);
    assert_eq!(ds.info.total_frames, demos.iter().map(|d| d.steps).sum::<usize>());
    for (k, demo) in demos.iter().enumerate() {
        let ep = ds.episode(k, true).expect("episode");
        assert_eq!(ep.task, demo.instruction);
        assert_eq!(ep.len(), demo.steps);
        for (t, ts) in ep.timestamps.iter().enumerate() {
            assert!((ts - t as f32 / 10.0).abs() < 1e-6);
        }
        let action = ep.action.as_ref().expect("action");
        let state = ep.state.as_ref().expect("state");
        let want_actions = demo.actions.as_ref().expect("demo actions");
        assert_eq!(want_actions.len(), ep.len());
        for (t, want) in want_actions.iter().enumerate() {
            assert_eq!(action.row(t), &want[..], "actions are exact");
            assert_eq!(state.row(t), &demo.states[t][..], "states are exact");
        }
        let frames = &ep.videos["observation.images.front"];
        assert_eq!((frames.width, frames.height, frames.count), (64, 64, demo.steps));
        for t in 0..ep.len() {
            let p = psnr(frames.frame(t), &demo.frames[t].data);
            assert!(p > min_psnr, "episode {k} frame {t}: PSNR {p:.1} dB ≤ {min_psnr} dB");
        }
        // The first frame of each episode really is that episode's (not a neighbour's).
        let other = &demos[(k + 1) % demos.len()].frames[0].data;
        assert!(psnr(frames.frame(0), &demo.frames[0].data) > psnr(frames.frame(0), other) + 3.0);
        // Pairs by spacing in seconds.
        let pairs = ep.frame_pairs(0.6).expect("pairs");
        assert_eq!(pairs[0], (0, 6));
        assert_eq!(pairs.len(), ep.len() - 6);
    }
}

#[test]
fn av1_round_trip() {
    check_round_trip(VideoCodec::default_av1(), 30.0);
}

#[test]
fn h264_round_trip() {
    check_round_trip(VideoCodec::H264 { crf: 18 }, 30.0);
}

#[test]
fn hand_dataset_has_no_actions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("hand");
    record(&root, Embodiment::Hand, 2, VideoCodec::default_av1());
    let ds = Dataset::open(&root).expect("open");
    assert!(!ds.has_feature("action") && !ds.has_feature("observation.state"));
    let ep = ds.episode(1, true).expect("episode");
    assert!(ep.action.is_none() && ep.state.is_none());
    assert_eq!(ep.videos["observation.images.front"].count, ep.len());
    let spacing_err = ep.frame_pairs(1000.0).expect_err("spacing longer than the episode").to_string();
    assert!(spacing_err.contains("not shorter than episode"), "{spacing_err}");
}

#[test]
fn stats_and_metadata_match_lerobot_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("arm");
    record(&root, Embodiment::Arm, 2, VideoCodec::H264 { crf: 18 });
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("meta/stats.json")).expect("stats")).expect("json");
    for key in ["action", "observation.state"] {
        for s in ["min", "max", "mean", "std", "q01", "q99"] {
            assert_eq!(stats[key][s].as_array().map(|a| a.len()), Some(6), "{key}.{s}");
        }
    }
    let img = &stats["observation.images.front"]["mean"];
    assert_eq!(img.as_array().map(|a| a.len()), Some(3));
    let m = img[0][0][0].as_f64().expect("float");
    assert!(m > 0.0 && m < 1.0);
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("meta/info.json")).expect("info")).expect("json");
    assert_eq!(info["codebase_version"], "v3.0");
    assert_eq!(info["features"]["action"]["names"][0], "shoulder_pan.pos");
    assert_eq!(info["features"]["observation.images.front"]["info"]["video.codec"], "h264");
    // No staging folder is left beside the dataset.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").filter_map(|e| e.ok()).filter(|e| e.file_name() != "arm").collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
