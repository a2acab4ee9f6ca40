//! The `lapa` binary end to end: record, inspect, view, and a clear error on a bad folder.

use std::process::Command;

fn lapa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lapa")).args(args).output().expect("run lapa")
}

#[test]
fn record_info_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ds = dir.path().join("hand");
    let ds = ds.to_str().expect("utf-8 path");
    let out = lapa(&["sim", "record", "--embodiment", "hand", "--split", "unseen-env", "--episodes", "2", "--out", ds, "--codec", "h264", "--size", "48"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 episodes"));

    let out = lapa(&["dataset", "info", ds]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("LeRobotDataset v3.0") && text.contains("episodes  2") && text.contains("[48, 48, 3]"), "{text}");

    let png = dir.path().join("strip.png");
    let out = lapa(&["dataset", "view", ds, "--episode", "1", "--out", png.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).expect("png written");
    assert_eq!(&bytes[1..4], b"PNG");

    // Recording over an existing dataset is refused; nothing is lost.
    let out = lapa(&["sim", "record", "--embodiment", "arm", "--episodes", "1", "--out", ds, "--codec", "h264"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(lapa(&["dataset", "info", ds]).status.success());
}

#[test]
fn bad_folder_and_bad_arguments_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = lapa(&["dataset", "info", dir.path().to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("meta/info.json") && err.contains("missing"), "{err}");

    let out = lapa(&["sim", "record", "--embodiment", "arm", "--episodes", "1", "--task", "juggle", "--out", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task family"));

    let out = lapa(&["sim", "record", "--embodiment", "arm", "--episodes", "1", "--size", "32", "--out", dir.path().join("small").to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("h264"), "AV1 below 64×64 suggests h264");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(leftovers.is_empty(), "a failed record leaves nothing behind: {leftovers:?}");
}
