//! An int8 bundle: written with its plan, signed, loaded as the compressed policy; a plan that
//! does not fit the model, or a changed one, is refused.

use lapa_compress::Scheme;
use lapa_compress::bundle::{self, INT8, LayerPlan, QUANT_PART, QuantPlan};
use lapa_model::bins::QuantileBins;
use lapa_model::policy::{ActionSpec, Frame, Policy, PolicyInput};
use lapa_model::signing::{SecretKey, Trust};
use lapa_model::vla::{ActionHeadConfig, ActionTarget, HeadConfig, VlaConfig};

fn tiny_run(dir: &std::path::Path) -> VlaConfig {
    let names: Vec<String> = (0..6).map(|i| format!("j{i}")).collect();
    let line: Vec<f32> = (0..200).map(|i| i as f32 - 100.0).collect();
    let head = HeadConfig::Action(ActionHeadConfig {
        spec: ActionSpec { names, units: vec!["deg".into(); 6], fps: 10.0, chunk: 3 },
        target: ActionTarget::Absolute,
        bins: 16,
        edges: vec![QuantileBins::fit(&line, 16).expect("bins"); 6],
    });
    let cfg = VlaConfig::tiny(head);
    let device = lapa_model::device("cpu").expect("cpu");
    lapa_model::save_vla(dir, &cfg, &cfg.init(&device).expect("init")).expect("save");
    cfg
}

#[test]
fn an_int8_bundle_round_trips_and_refuses_a_bad_plan() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model_dir = tmp.path().join("run/model");
    let cfg = tiny_run(&model_dir);
    let device = lapa_model::device("cpu").expect("cpu");
    let (_, model) = lapa_model::load_vla(&model_dir, &device).expect("load");
    let layers = bundle::layer_names(&cfg, &lapa_model::artifact::named_params(&model).expect("params")).expect("layers");
    assert_eq!(layers.len(), 1 + 2 * 6 + 1, "patch projection, 6 per layer, head: {layers:?}");
    let key = SecretKey::from_seed([1; 32], "test");
    let keep = vec!["head.Action.out".to_string()];
    let plan = bundle::uniform_plan(&layers, |_| Scheme::Int8Dynamic, &keep, "test".into());
    let b = bundle::write(&model_dir, tmp.path(), &tmp.path().join("b"), "tiny-int8", Some(&key), &plan).expect("write");
    assert_eq!(b.manifest.requires, vec![INT8.to_string()]);
    let trust = Trust { keys: vec![key.public()], allow_unsigned: false };
    let opened = lapa_model::bundle::Bundle::open(&b.root, &trust).expect("open");
    let mut policy = bundle::load_policy(&opened).expect("load");
    assert!(policy.describe().starts_with("int8 tiny-int8 (13/14 layers int8"), "{}", policy.describe());
    let rgb = vec![128u8; 64 * 64 * 3];
    let chunk = policy.infer(&PolicyInput { frame: Frame { width: 64, height: 64, rgb: &rgb }, state: &[], instruction: "pick", time_s: 0.0 }).expect("infer");
    assert_eq!((chunk.len(), chunk[0].len()), (3, 6));
    // The plain burn loader refuses it rather than run it as f32.
    let e = lapa_model::vla::export::load_policy(&opened, &device).expect_err("int8").to_string();
    assert!(e.contains("requires \"int8\""), "{e}");
    // Weight-only int4 in the same bundle format: its plan says so and it loads on the engine.
    let plan4 = bundle::uniform_plan(&layers, |_| Scheme::Int4Weights, &[], "test int4".into());
    let b4 = bundle::write(&model_dir, tmp.path(), &tmp.path().join("b4"), "tiny-int4", Some(&key), &plan4).expect("write int4");
    assert_eq!(b4.manifest.requires, vec![INT8.to_string(), bundle::INT4.to_string()], "an older runtime refuses it by name");
    let text = std::fs::read_to_string(b4.root.join(QUANT_PART)).expect("plan");
    assert!(text.contains("\"scheme\": \"int4-weights\""), "{text}");
    let mut p4 = bundle::load_policy(&lapa_model::bundle::Bundle::open(&b4.root, &trust).expect("open")).expect("load int4");
    assert!(p4.describe().starts_with("int4 tiny-int4 (14/14 layers int4 weight-only"), "{}", p4.describe());
    let c4 = p4.infer(&PolicyInput { frame: Frame { width: 64, height: 64, rgb: &rgb }, state: &[], instruction: "pick", time_s: 0.0 }).expect("infer int4");
    assert_eq!((c4.len(), c4[0].len()), (3, 6));
    assert!(c4.iter().flatten().all(|v| v.is_finite()));
    // A plan that leaves out a layer, names one the model lacks, or has a bad range.
    let mut missing = plan.clone();
    missing.layers.remove("patch_proj");
    let mut extra = plan.clone();
    extra.layers.insert("trunk.layers.9.ff.proj_in".into(), LayerPlan::F32 {});
    let mut bad_range = plan.clone();
    bad_range.layers.insert("patch_proj".into(), LayerPlan::Int8Static { lo: 2.0, hi: 1.0 });
    for (p, want) in [(missing, "no scheme for \"patch_proj\""), (extra, "trunk.layers.9.ff.proj_in"), (bad_range, "not a finite interval")] {
        let out = tmp.path().join("bad");
        let e = bundle::write(&model_dir, tmp.path(), &out, "bad", Some(&key), &p).expect_err(want).to_string();
        assert!(e.contains(want), "{e}");
        assert!(!out.exists(), "nothing is written for a bad plan");
    }
    // The plan changed on the board: its hash (and so the signature) no longer match.
    let qp = b.root.join(QUANT_PART);
    let mut changed: QuantPlan = serde_json::from_slice(&std::fs::read(&qp).expect("read")).expect("plan");
    changed.layers.insert("head.Action.out".into(), LayerPlan::Int8Dynamic {});
    std::fs::write(&qp, serde_json::to_vec_pretty(&changed).expect("json")).expect("write");
    let e = lapa_model::bundle::Bundle::open(&b.root, &trust).expect_err("changed").to_string();
    assert!(e.contains(QUANT_PART), "{e}");
    // Unknown fields in a plan are refused by path (a plan written by hand, in development).
    let dev = Trust { keys: Vec::new(), allow_unsigned: true };
    let unsigned = bundle::write(&model_dir, tmp.path(), &tmp.path().join("u"), "u", None, &plan).expect("write");
    let text = String::from_utf8(std::fs::read(unsigned.root.join(QUANT_PART)).expect("read")).expect("utf-8");
    let edited = text.replacen("\"scheme\": \"int8-dynamic\"", "\"scheme\": \"int8-dynamic\", \"bits\": 4", 1);
    assert_ne!(edited, text);
    std::fs::write(unsigned.root.join(QUANT_PART), &edited).expect("write");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(unsigned.root.join("manifest.json")).expect("m")).expect("json");
    manifest["parts"][QUANT_PART] = serde_json::json!({ "bytes": edited.len(), "sha256": lapa_model::bundle::sha256_hex(edited.as_bytes()) });
    std::fs::write(unsigned.root.join("manifest.json"), serde_json::to_vec(&manifest).expect("json")).expect("write");
    let reopened = lapa_model::bundle::Bundle::open(&unsigned.root, &dev).expect("open");
    let e = bundle::load_policy(&reopened).expect_err("unknown field").to_string();
    assert!(e.contains("unknown field `bits`") && e.contains(QUANT_PART), "{e}");
}
