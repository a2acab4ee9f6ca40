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

#[test]
fn static_int8_export_calibrates_on_a_dataset() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
    let out = lapa(&["sim", "record", "--embodiment", "arm", "--episodes", "2", "--out", &p("ds"), "--codec", "h264"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lapa(&["bench", "policy", "--config", "tiny", "--steps", "1", "--bins", "32", "--save-run", &p("run")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lapa(&[
        "export",
        "--run",
        &p("run"),
        "--out",
        &p("b"),
        "--unsigned",
        "--int8",
        "static",
        "--calib",
        &p("ds"),
        "--calib-frames",
        "12",
        "--calib-method",
        "99.9",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("on 12 frames"), "{}", String::from_utf8_lossy(&out.stdout));
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("b/quant.json")).expect("quant.json")).expect("json");
    let layers = plan["layers"].as_object().expect("layers");
    assert!(!layers.is_empty() && layers.values().all(|l| l["scheme"] == "int8-static" && l["lo"].as_f64() <= l["hi"].as_f64()), "{plan}");
    // The bundle loads and answers on the int8 engine.
    let trust = lapa_model::signing::Trust { keys: Vec::new(), allow_unsigned: true };
    let bundle = lapa_model::bundle::Bundle::open(&dir.path().join("b"), &trust).expect("open");
    let mut policy = lapa_compress::bundle::load_policy(&bundle).expect("int8 policy");
    let rgb = vec![90u8; 64 * 64 * 3];
    let input = lapa_model::policy::PolicyInput {
        frame: lapa_model::policy::Frame { width: 64, height: 64, rgb: &rgb },
        state: &[0.0; 6],
        instruction: "push the red cube left",
        time_s: 0.0,
    };
    let chunk = lapa_model::Policy::infer(&mut policy, &input).expect("infer");
    assert!(!chunk.is_empty() && chunk.iter().flatten().all(|v| v.is_finite()));
    // The per-layer scan over the same frames: every layer, worst first, and the keep list.
    let out = lapa(&["compress", "scan", "--run", &p("run"), "--calib", &p("ds"), "--frames", "8", "--scheme", "static", "--out", &p("scan")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scan: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("scan/sensitivity.json")).expect("scan")).expect("json");
    let rows = scan["layers"].as_array().expect("layers");
    assert_eq!(rows.len(), layers.len(), "one row per linear layer");
    let kls: Vec<f64> = rows.iter().map(|r| r["kl"].as_f64().expect("kl")).collect();
    assert!(kls.windows(2).all(|w| w[0] >= w[1]) && kls.iter().all(|k| *k >= 0.0) && kls[0] > 0.0, "{kls:?}");
    assert!(std::fs::read_to_string(dir.path().join("scan/sensitivity.md")).expect("md").contains("| layer | KL (nats) | flipped |"));
    // Misuse is named before anything is written.
    for (args, want) in [
        (vec!["--int8", "static"], "needs --calib"),
        (vec!["--int8", "dynamic", "--calib", "x"], "--calib is for --int8 static"),
        (vec!["--int8", "static", "--calib", "x", "--calib-method", "42"], "--calib-method"),
    ] {
        let (run, c, ds) = (p("run"), p("c"), p("ds"));
        let mut a = vec!["export", "--run", run.as_str(), "--out", c.as_str(), "--unsigned"];
        let args: Vec<&str> = args.into_iter().map(|s| if s == "x" { ds.as_str() } else { s }).collect();
        a.extend(args);
        let out = lapa(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{a:?}: {err}");
        assert!(!dir.path().join("c").exists(), "{a:?} left a bundle");
    }
}
