//! A policy run exported as a bundle drives the simulated arm through `lapa-edge run --bundle`,
//! and the bundle's policy answers exactly as the run's own.

use std::process::Command;

use lapa_model::bins::QuantileBins;
use lapa_model::policy::{ActionSpec, Frame, Policy, PolicyInput};
use lapa_model::signing::{SecretKey, Trust};
use lapa_model::vla::{ActionHeadConfig, ActionTarget, HeadConfig, VlaConfig, VlaPolicy, export};

fn tiny_run(dir: &std::path::Path) -> VlaConfig {
    let names: Vec<String> = lapa_boards::SO101.names().iter().map(|s| s.to_string()).collect();
    let units = vec!["deg".to_string(); 5].into_iter().chain(["%".to_string()]).collect();
    let line: Vec<f32> = (0..200).map(|i| i as f32 - 100.0).collect();
    let edges = vec![QuantileBins::fit(&line, 16).expect("bins"); 6];
    let head = HeadConfig::Action(ActionHeadConfig { spec: ActionSpec { names, units, fps: 10.0, chunk: 3 }, target: ActionTarget::Absolute, bins: 16, edges });
    let cfg = VlaConfig::tiny(head);
    let device = lapa_model::device("cpu").expect("cpu");
    let model = cfg.init(&device).expect("init");
    lapa_model::save_vla(dir, &cfg, &model).expect("save");
    cfg
}

#[test]
fn exported_bundle_runs_in_the_sim_and_matches_the_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model_dir = tmp.path().join("run/model");
    tiny_run(&model_dir);
    let bundle_dir = tmp.path().join("bundle");
    let key = SecretKey::from_seed([5; 32], "test workstation");
    let pub_path = key.write_pair(&tmp.path().join("keys/lapa")).expect("keys");
    let bundle = export::write_bundle(&model_dir, tmp.path(), &bundle_dir, "tiny-test", Some(&key)).expect("export");
    assert!(bundle.manifest.text_encoder.is_none(), "a hashed-text policy ships no text encoder");
    assert!(export::write_bundle(&model_dir, tmp.path(), &bundle_dir, "again", Some(&key)).is_err(), "an existing bundle is never overwritten");

    // Same answers from the bundle as from the run folder.
    let device = lapa_model::device("cpu").expect("cpu");
    let ours = Trust::from_files(std::slice::from_ref(&pub_path), false).expect("trust");
    let opened = lapa_model::bundle::Bundle::open(&bundle_dir, &ours).expect("open");
    let mut from_bundle = export::load_policy(&opened, &device).expect("load");
    let (cfg, model) = lapa_model::load_vla(&model_dir, &device).expect("load run");
    let mut from_run = VlaPolicy::new(cfg, model, device.clone(), "run").expect("policy");
    let rgb: Vec<u8> = (0..80 * 60 * 3).map(|i| (i * 13 % 256) as u8).collect();
    let input = PolicyInput { frame: Frame { width: 80, height: 60, rgb: &rgb }, state: &[0.0; 6], instruction: "point at the green cube", time_s: 0.0 };
    assert_eq!(from_bundle.infer(&input).expect("bundle"), from_run.infer(&input).expect("run"));

    // A manifest whose action spec is not the model's is refused.
    let mpath = bundle_dir.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).expect("manifest");
    let tampered_dir = tmp.path().join("tampered");
    std::fs::create_dir_all(&tampered_dir).expect("mkdir");
    for e in std::fs::read_dir(&bundle_dir).expect("ls") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, tampered_dir.join(p.file_name().expect("name"))).expect("copy");
    }
    // The manifest's own action spec (after the model config, which keeps chunk 3).
    let at = text.rfind("\"chunk\": 3").expect("the action spec's chunk");
    let tampered = format!("{}\"chunk\": 5{}", &text[..at], &text[at + "\"chunk\": 3".len()..]);
    std::fs::write(tampered_dir.join("manifest.json"), tampered).expect("write");
    // The edit breaks the signature: refused as tampered by a board with the key, however lax.
    let lax = Trust { keys: ours.keys.clone(), allow_unsigned: true };
    let e = lapa_model::bundle::Bundle::open(&tampered_dir, &lax).expect_err("tampered").to_string();
    assert!(e.contains("does not verify"), "{e}");
    // Without the key (development), the model check still catches it.
    let dev = Trust { keys: Vec::new(), allow_unsigned: true };
    let t = lapa_model::bundle::Bundle::open(&tampered_dir, &dev).expect("the manifest itself is well formed");
    assert!(export::load_policy(&t, &device).is_err_and(|e| e.to_string().contains("differs from the model's own")));

    // The board binary runs it against the simulator, with the workstation's public key.
    let run = |bundle: &std::path::Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lapa-edge"))
            .args(["run", "--sim", "--bundle", bundle.to_str().expect("utf-8"), "--max-seconds", "1.5", "--rate", "30", "--quiet"])
            .args(extra)
            .output()
            .expect("run lapa-edge");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let key_arg = pub_path.to_str().expect("utf-8");
    let (ok, err) = run(&bundle_dir, &["--public-key", key_arg]);
    assert!(ok, "{err}");
    assert!(err.contains("policy: burn tiny-test"), "{err}");
    assert!(err.contains("chunks of 3 at 10 fps"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // No key installed: refused before anything moves, saying what to do.
    let (ok, err) = run(&bundle_dir, &[]);
    assert!(!ok && err.contains("which this board does not trust") && err.contains("--public-key"), "{err}");
    // Another workstation's key.
    let other = SecretKey::from_seed([6; 32], "other").write_pair(&tmp.path().join("keys/other")).expect("keys");
    let (ok, err) = run(&bundle_dir, &["--public-key", other.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("does not trust"), "{err}");
    // Tampered: refused even in development mode, since the key is installed.
    let (ok, err) = run(&tampered_dir, &["--public-key", key_arg, "--allow-unsigned"]);
    assert!(!ok && err.contains("does not verify"), "{err}");
    // An unsigned export: refused, and run with a warning under --allow-unsigned.
    let unsigned = tmp.path().join("unsigned");
    export::write_bundle(&model_dir, tmp.path(), &unsigned, "tiny-unsigned", None).expect("export");
    let (ok, err) = run(&unsigned, &["--public-key", key_arg]);
    assert!(!ok && err.contains("unsigned bundle") && err.contains("--allow-unsigned"), "{err}");
    let (ok, err) = run(&unsigned, &["--allow-unsigned"]);
    assert!(ok && err.contains("warning: --allow-unsigned"), "{err}");
    // A bad key file is named.
    std::fs::write(tmp.path().join("bad.pub"), "ssh-ed25519 AAAA me@host\n").expect("write");
    let (ok, err) = run(&bundle_dir, &["--public-key", tmp.path().join("bad.pub").to_str().expect("utf-8")]);
    assert!(!ok && err.contains("bad.pub") && err.contains("not \"lapa-ed25519-public-v1\""), "{err}");

    // The same run as an int8 bundle: signed, verified, and run by the compressed runtime.
    let int8_dir = tmp.path().join("int8");
    let (cfg, model) = lapa_model::load_vla(&model_dir, &device).expect("load");
    let layers = lapa_compress::bundle::layer_names(&cfg, &lapa_model::artifact::named_params(&model).expect("params")).expect("layers");
    let plan = lapa_compress::bundle::uniform_plan(&layers, |_| lapa_compress::Scheme::Int8Dynamic, &[], "test".into());
    lapa_compress::bundle::write(&model_dir, tmp.path(), &int8_dir, "tiny-int8", Some(&key), &plan).expect("int8 export");
    let (ok, err) = run(&int8_dir, &["--public-key", key_arg]);
    assert!(ok, "{err}");
    assert!(err.contains("policy: int8 tiny-int8 (14/14 layers int8"), "{err}");
}
