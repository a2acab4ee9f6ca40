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

    // The bench's output folders must be new: an existing one is named, not written into.
    let d = dir.path().to_str().expect("utf-8");
    for flag in ["--twin", "--onnx-dir"] {
        let out = lapa(&["bench", "compress", "--config", "tiny", "--steps", "1", "--rounds", "1", flag, d]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("already exists"), "{flag}: {err}");
    }
    for bad in [["--steps", "0"], ["--rounds", "0"]] {
        let out = lapa(&["bench", "compress", "--config", "tiny", bad[0], bad[1]]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("must be positive"), "{bad:?}");
    }
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
    // Exactly the frames asked for (the dataset has more).
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
    // The per-layer scan over the same frames: every layer once, worst first, and the keep list.
    let scan = |scheme: &str, max_kl: &str| -> serde_json::Value {
        let o = p(&format!("scan-{scheme}"));
        let out = lapa(&["compress", "scan", "--run", &p("run"), "--calib", &p("ds"), "--frames", "8", "--scheme", scheme, "--max-kl", max_kl, "--out", &o]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(std::fs::read_to_string(format!("{o}/sensitivity.md")).expect("md").contains("| layer | KL (nats) | flipped |"));
        serde_json::from_slice(&std::fs::read(format!("{o}/sensitivity.json")).expect("scan")).expect("json")
    };
    let (st, dy) = (scan("static", "0"), scan("dynamic", "1e9"));
    // Static: half the 8 frames calibrate, the other half are measured; dynamic measures all 8.
    assert_eq!((st["frames"].as_u64(), dy["frames"].as_u64()), (Some(4), Some(8)));
    let kls = |v: &serde_json::Value| -> Vec<(String, f64, f64)> {
        v["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|r| (r["layer"].as_str().expect("name").to_string(), r["kl"].as_f64().expect("kl"), r["flipped"].as_f64().expect("flipped")))
            .collect()
    };
    for rows in [kls(&st), kls(&dy)] {
        let mut names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        names.sort_unstable();
        let mut want: Vec<&str> = layers.keys().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(names, want, "every linear layer exactly once");
        assert!(rows.windows(2).all(|w| w[0].1 >= w[1].1), "worst first: {rows:?}");
        assert!(rows.iter().all(|r| r.1 >= 0.0 && (0.0..=1.0).contains(&r.2)) && rows[0].1 > rows[rows.len() - 1].1, "{rows:?}");
    }
    // The two schemes give different figures (static really used calibrated ranges).
    assert_ne!(kls(&st).iter().map(|r| r.1).collect::<Vec<_>>(), kls(&dy).iter().map(|r| r.1).collect::<Vec<_>>());
    // --max-kl 0 keeps every layer that moved at all; 1e9 keeps none.
    let moved: Vec<String> = kls(&st).into_iter().filter(|r| r.1 > 0.0).map(|r| r.0).collect();
    assert_eq!(st["keep_f32"].as_array().expect("keep").iter().map(|v| v.as_str().expect("s").to_string()).collect::<Vec<_>>(), moved);
    assert!(dy["keep_f32"].as_array().expect("keep").is_empty());
    // Bad scan arguments and a missing dataset are named.
    for (args, want) in [
        (vec!["--scheme", "int4"], "--scheme"),
        (vec!["--max-kl=-1"], "--max-kl"),
        (vec!["--frames", "0"], "--calib-frames 0"),
        (vec!["--frames", "100000"], "--calib-frames 100000"),
    ] {
        let (run, ds) = (p("run"), p("ds"));
        let mut a = vec!["compress", "scan", "--run", run.as_str(), "--calib", ds.as_str()];
        a.extend(args);
        let out = lapa(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{a:?}: {err}");
    }
    let out = lapa(&["compress", "scan", "--run", &p("run"), "--calib", &p("no-such-dataset")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no-such-dataset"), "{}", String::from_utf8_lossy(&out.stderr));
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

#[test]
fn distill_trains_a_student_from_a_teacher_run_and_names_misuse() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
    let out = lapa(&["sim", "record", "--embodiment", "arm", "--episodes", "2", "--out", &p("ds"), "--codec", "h264"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let common = ["--config", "tiny", "--batch", "4", "--quiet", "--cache"];
    let (ds, cache, t) = (p("ds"), p("cache"), p("teacher"));
    let mut teacher = vec!["train", "finetune", "--init", "none", "--data", ds.as_str(), "--episodes", "1", "--chunk", "2", "--bins", "16", "--steps", "2"];
    teacher.extend(common);
    teacher.extend([cache.as_str(), "--out", t.as_str()]);
    let out = lapa(&teacher);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The student takes the teacher's data and episodes from its train.json, and its head.
    let s = p("student");
    let distill = |teacher: &str, out: &str, extra: &[&str]| {
        let mut a = vec!["compress", "distill", "--teacher", teacher, "--student-config", "tiny", "--unlabeled", ds.as_str()];
        a.extend(["--batch", "4", "--quiet", "--cache", cache.as_str(), "--out", out]);
        a.extend(extra);
        lapa(&a)
    };
    let out = distill(&t, &s, &["--steps", "2", "--checkpoint-every", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("student/train.json")).expect("train.json")).expect("json");
    assert_eq!((cfg["stage"].as_str(), cfg["preset"].as_str(), cfg["data"]["episodes"].as_u64()), (Some("distill"), Some("tiny"), Some(1)), "{cfg}");
    assert_eq!(cfg["distill"]["teacher"].as_str(), Some(t.as_str()));
    let head = |run: &str| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(dir.path().join(run).join("model/config.json")).expect("config")).expect("json")["head"]
            .clone()
    };
    assert_eq!(head("student"), head("teacher"));
    // Resumed by its own command, with more steps.
    let out = lapa(&["compress", "distill", "--resume", "--out", &s, "--steps", "4", "--quiet", "--cache", &cache]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metrics = std::fs::read_to_string(dir.path().join("student/metrics.csv")).expect("metrics");
    let steps: Vec<&str> = metrics.lines().skip(1).map(|l| l.split(',').next().expect("step")).collect();
    assert_eq!(steps, ["2", "4"], "{metrics}");
    let out = lapa(&["compress", "distill", "--resume", "--out", &s, "--teacher", &t, "--quiet", "--cache", &cache]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("drop --teacher"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lapa(&["train", "finetune", "--resume", "--out", &s, "--quiet", "--cache", &cache]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("lapa compress distill --resume"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Misuse is named.
    let s2 = p("s2");
    for (teacher, extra, want) in [
        (t.as_str(), vec!["--temperature", "0"], "temperature"),
        (t.as_str(), vec!["--label-weight", "1.5"], "label weight"),
        (ds.as_str(), vec![], "not a policy run"),
    ] {
        let out = distill(teacher, &s2, &extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{extra:?}: {err}");
        assert!(!dir.path().join("s2/model").exists(), "{extra:?} left a model");
    }
}

#[test]
fn eval_takes_a_bundle_as_the_board_loads_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
    // No trusted key from the user's own config folder.
    let run_lapa = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_lapa")).args(args).env("XDG_CONFIG_HOME", dir.path()).output().expect("run lapa");
    let out = run_lapa(&["bench", "policy", "--config", "tiny", "--steps", "1", "--bins", "32", "--save-run", &p("run")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, extra) in [("f32", vec![]), ("int8", vec!["--int8", "dynamic"]), ("int4", vec!["--int4"])] {
        let (run, bundle) = (p("run"), p(name));
        let mut args = vec!["export", "--run", run.as_str(), "--out", bundle.as_str(), "--unsigned"];
        args.extend(extra);
        let out = run_lapa(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let common = ["--split", "unseen-env", "--episodes", "3", "--family", "point_at", "--videos", "0", "--quiet"];
    let eval = |what: &[&str], report: &str| -> std::process::Output {
        let mut a = vec!["eval"];
        a.extend(what);
        a.extend(common);
        a.extend(["--out", report]);
        run_lapa(&a)
    };
    type Episode = (u64, String, String, Vec<f64>);
    let episodes = |report: &str| -> (String, Vec<Episode>) {
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).expect("report")).expect("json");
        let eps = r["episodes"].as_array().expect("episodes").iter().map(|e| {
            let q = e["final_joints"].as_array().expect("final joints").iter().map(|v| v.as_f64().expect("number")).collect();
            (e["seed"].as_u64().expect("seed"), e["family"].to_string(), e["instruction"].to_string(), q)
        });
        (r["agent"].as_str().expect("agent").to_string(), eps.collect())
    };
    let out = eval(&["--run", &p("run")], &p("run.json"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, want) = episodes(&p("run.json"));
    assert_eq!(want.len(), 3);
    for name in ["f32", "int8", "int4"] {
        let report = p(&format!("{name}.json"));
        let out = eval(&["--bundle", &p(name), "--allow-unsigned"], &report);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("without a verified signature"), "{}", String::from_utf8_lossy(&out.stderr));
        let (agent, got) = episodes(&report);
        assert!(agent.contains(&p(name)) && (name == "f32" || agent.contains(&format!("{name} run ("))), "{agent}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, &g.1, &g.2), (w.0, &w.1, &w.2), "{name}: the bundle is evaluated on the run's scenes");
            assert!(g.3.len() == 6 && g.3.iter().all(|v| v.is_finite()), "{g:?}");
        }
        if name == "f32" {
            // The same weights drive the arm to the same places (one episode at a time instead
            // of a batch: the arithmetic may differ in the last bits, not the trajectory).
            for (g, w) in got.iter().zip(&want) {
                let d = g.3.iter().zip(&w.3).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(d < 0.5, "seed {}: the bundle ended at {:?}, the run at {:?}", g.0, g.3, w.3);
            }
        }
    }
    assert!(!dir.path().join("int8/eval").exists(), "nothing is written into a bundle");
    // Unsigned without --allow-unsigned, both of them, and a key without a bundle are refused.
    let out = eval(&["--bundle", &p("int8")], &p("x.json"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unsigned bundle"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = eval(&["--run", &p("run"), "--bundle", &p("f32")], &p("x.json"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = eval(&["--run", &p("run"), "--public-key", &p("nokey.pub")], &p("x.json"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("are for --bundle"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("x.json").exists());
    // --keep-f32 needs a compressed export; --int4 and --int8 are one or the other.
    for (extra, want) in
        [(vec!["--keep-f32", "patch_proj"], "--keep-f32 is for --int8 or --int4"), (vec!["--int4", "--int8", "dynamic"], "cannot be used with")]
    {
        let (run, out) = (p("run"), p("never"));
        let mut args = vec!["export", "--run", run.as_str(), "--out", out.as_str(), "--unsigned"];
        args.extend(extra);
        let o = run_lapa(&args);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(want), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!dir.path().join("never").exists());
    }
}

#[test]
fn distill_dagger_rounds_record_the_students_rollouts_and_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
    let out = lapa(&["sim", "record", "--embodiment", "arm", "--episodes", "2", "--out", &p("ds"), "--codec", "h264"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (ds, cache, t, s) = (p("ds"), p("cache"), p("teacher"), p("student"));
    let common = ["--config", "tiny", "--batch", "4", "--quiet", "--cache", cache.as_str()];
    let mut teacher = vec!["train", "finetune", "--init", "none", "--data", ds.as_str(), "--chunk", "2", "--bins", "16", "--steps", "2", "--out", t.as_str()];
    teacher.extend(common);
    let out = lapa(&teacher);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut distill = vec!["compress", "distill", "--teacher", t.as_str(), "--student-config", "tiny", "--steps", "2", "--out", s.as_str()];
    distill.extend(["--dagger-rounds", "2", "--dagger-episodes", "2", "--dagger-steps", "3", "--batch", "4", "--quiet", "--cache", cache.as_str()]);
    let out = lapa(&distill);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let train_json =
        || -> serde_json::Value { serde_json::from_slice(&std::fs::read(dir.path().join("student/train.json")).expect("train.json")).expect("json") };
    let last_step = || {
        std::fs::read_to_string(dir.path().join("student/metrics.csv"))
            .expect("metrics")
            .lines()
            .last()
            .expect("row")
            .split(',')
            .next()
            .expect("step")
            .to_string()
    };
    let rounds = |cfg: &serde_json::Value| -> Vec<String> {
        cfg["data"]["unlabeled"].as_array().expect("unlabeled").iter().map(|v| v.as_str().expect("path").to_string()).collect()
    };
    let cfg = train_json();
    assert_eq!(cfg["distill"]["dagger"], serde_json::json!({ "rounds": 2, "episodes": 2, "steps_per_round": 3, "rounds_done": 2 }), "{cfg}");
    assert_eq!(rounds(&cfg), [format!("{s}/dagger/round-1"), format!("{s}/dagger/round-2")]);
    assert_eq!((cfg["steps"].as_u64(), last_step()), (Some(8), "8".to_string()), "2 steps, then 3 per round");
    for r in 1..=2 {
        // Each round's rollouts are a dataset of the student's own states (2 episodes, with state
        // and the executed targets), labelled by where they came from.
        let root = dir.path().join(format!("student/dagger/round-{r}"));
        let info = lapa(&["dataset", "info", root.to_str().expect("utf-8")]);
        let text = String::from_utf8_lossy(&info.stdout);
        assert!(info.status.success() && text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["episodes", "2"]), "{text}");
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("meta/lapa_eval.json")).expect("lapa_eval.json")).expect("json");
        assert_eq!(meta["episodes"].as_array().map(Vec::len), Some(2), "{meta}");
        assert_eq!(meta["seed"].as_u64(), Some(1000 + r), "rounds roll out on their own scenes");
    }
    // --resume carries on with the rounds left (here: one more, as if the run had been stopped).
    let mut cfg = train_json();
    cfg["distill"]["dagger"]["rounds"] = 3.into();
    std::fs::write(dir.path().join("student/train.json"), serde_json::to_vec_pretty(&cfg).expect("json")).expect("write");
    let out = lapa(&["compress", "distill", "--resume", "--out", &s, "--quiet", "--cache", &cache]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((rounds(&train_json()).len(), last_step()), (3, "11".to_string()));
    // Misuse is named: DAgger flags or --steps on a resume, a new run over another's rollouts.
    let out = lapa(&["compress", "distill", "--resume", "--out", &s, "--steps", "20", "--quiet", "--cache", &cache]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("drop --steps"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lapa(&distill);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("rollouts of an earlier run"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_step(), "11", "the refused runs changed nothing");
    let out = lapa(&["compress", "distill", "--resume", "--out", &s, "--dagger-rounds", "1", "--quiet", "--cache", &cache]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--dagger-*"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut bad = vec!["compress", "distill", "--teacher", t.as_str(), "--steps", "2", "--out", p("s2").leak() as &str, "--dagger-rounds", "0"];
    bad.extend(["--quiet", "--cache", cache.as_str()]);
    let out = lapa(&bad);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--dagger-rounds 0"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lapa(&["compress", "distill", "--teacher", &t, "--steps", "2", "--out", &p("s3"), "--dagger-steps", "5"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--dagger-rounds"), "{}", String::from_utf8_lossy(&out.stderr));
}
