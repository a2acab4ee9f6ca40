//! The reader also opens LeRobot v2.1 datasets (one parquet and one mp4 per episode, jsonl
//! metadata). The fixture is a one-episode v3.0 recording laid out the v2.1 way: with one episode
//! the rows and the video are the same, only the layout and metadata differ.

use lapa_dataset::{Dataset, Version, VideoCodec};
use lapa_sim::Embodiment;
use lapa_tests::record;

#[test]
fn reads_a_v21_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v3 = dir.path().join("v3");
    let (_, demos) = record(&v3, Embodiment::Arm, 1, VideoCodec::H264 { crf: 18 });
    let v21 = dir.path().join("v21");
    std::fs::create_dir_all(v21.join("meta")).expect("mkdir");
    std::fs::create_dir_all(v21.join("data/chunk-000")).expect("mkdir");
    std::fs::create_dir_all(v21.join("videos/chunk-000/observation.images.front")).expect("mkdir");
    std::fs::copy(v3.join("data/chunk-000/file-000.parquet"), v21.join("data/chunk-000/episode_000000.parquet")).expect("copy data");
    std::fs::copy(v3.join("videos/observation.images.front/chunk-000/file-000.mp4"), v21.join("videos/chunk-000/observation.images.front/episode_000000.mp4"))
        .expect("copy video");
    let mut info: serde_json::Value = serde_json::from_slice(&std::fs::read(v3.join("meta/info.json")).expect("info")).expect("json");
    info["codebase_version"] = "v2.1".into();
    info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet".into();
    info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4".into();
    std::fs::write(v21.join("meta/info.json"), serde_json::to_vec(&info).expect("ser")).expect("write");
    let task = &demos[0].instruction;
    std::fs::write(v21.join("meta/tasks.jsonl"), format!("{}\n", serde_json::json!({"task_index": 0, "task": task}))).expect("tasks");
    std::fs::write(v21.join("meta/episodes.jsonl"), format!("{}\n", serde_json::json!({"episode_index": 0, "tasks": [task], "length": demos[0].steps})))
        .expect("episodes");

    let ds = Dataset::open(&v21).expect("open v2.1");
    assert_eq!(ds.version, Version::V21);
    let ep = ds.episode(0, true).expect("episode");
    assert_eq!(&ep.task, task);
    assert_eq!(ep.len(), demos[0].steps);
    assert_eq!(ep.action.as_ref().expect("action").row(3), &demos[0].actions.as_ref().expect("actions")[3][..]);
    assert_eq!(ep.videos["observation.images.front"].count, demos[0].steps);

    // A v2.1 episode list that promises a missing episode file is a clear error.
    std::fs::write(
        v21.join("meta/episodes.jsonl"),
        format!(
            "{}\n{}\n",
            serde_json::json!({"episode_index": 0, "tasks": [task], "length": demos[0].steps}),
            serde_json::json!({"episode_index": 1, "tasks": [task], "length": 5})
        ),
    )
    .expect("episodes");
    let ds = Dataset::open(&v21).expect("open v2.1");
    let err = ds.episode(1, false).expect_err("missing episode file").to_string();
    assert!(err.contains("episode_000001.parquet"), "{err}");
}
