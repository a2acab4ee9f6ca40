//! An int8 bundle: written with its plan, signed, loaded as the compressed policy; a plan that
//! does not fit the model, or a changed one, is refused.

use lapa_compress::Scheme;
use lapa_compress::bundle::{self, INT8, LayerPlan, QUANT_PART, QuantPlan};
use lapa_model::artifact::NamedTensor;
use lapa_model::bins::QuantileBins;
use lapa_model::policy::{ActionSpec, Frame, Policy, PolicyInput};
use lapa_model::signing::{SecretKey, Trust};
use lapa_model::vla::{ActionHeadConfig, ActionTarget, HeadConfig, VlaConfig};

/// A tiny finetuned run saved in `dir`: its config, its parameters as read back from `dir`, and
/// its linear layers' names.
fn tiny_run(dir: &std::path::Path) -> (VlaConfig, Vec<NamedTensor>, Vec<String>) {
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
    let (_, model) = lapa_model::load_vla(dir, &device).expect("load");
    let params = lapa_model::artifact::named_params(&model).expect("params");
    let layers = bundle::layer_names(&cfg, &params).expect("layers");
    (cfg, params, layers)
}

#[test]
fn an_int8_bundle_round_trips_and_refuses_a_bad_plan() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model_dir = tmp.path().join("run/model");
    let (_, _, layers) = tiny_run(&model_dir);
    let device = lapa_model::device("cpu").expect("cpu");
    assert_eq!(layers.len(), 1 + 2 * 6 + 1, "patch projection, 6 per layer, head: {layers:?}");
    let key = SecretKey::from_seed([1; 32], "test");
    let keep = vec!["head.Action.out".to_string()];
    let plan = bundle::uniform_plan(&layers, |_| Scheme::Int8Dynamic, &keep, "test".into());
    let b = bundle::write(&model_dir, tmp.path(), &tmp.path().join("b"), "tiny-int8", Some(&key), &plan).expect("write");
    assert_eq!(b.manifest.requires, vec![INT8.to_string(), bundle::STORED.to_string()]);
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
    assert_eq!(b4.manifest.requires, vec![INT8.to_string(), bundle::INT4.to_string(), bundle::STORED.to_string()], "an older runtime refuses it by name");
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

/// One tensor of a weights part, owned: name, dtype, shape, bytes.
type Stored = (String, safetensors::tensor::Dtype, Vec<usize>, Vec<u8>);
/// An edit of one tensor (by name, dtype, shape, bytes): what replaces it, or nothing.
type Edit<'a> = &'a dyn Fn(&str, safetensors::tensor::Dtype, Vec<usize>, Vec<u8>) -> Option<Stored>;

/// Rewrites part `name` of an unsigned bundle and its manifest entry (a development edit, so the
/// checks below are the loader's own, not the hash's).
fn replace_part(root: &std::path::Path, name: &str, bytes: &[u8]) {
    std::fs::write(root.join(name), bytes).expect("write");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("manifest.json")).expect("m")).expect("json");
    manifest["parts"][name] = serde_json::json!({ "bytes": bytes.len(), "sha256": lapa_model::bundle::sha256_hex(bytes) });
    std::fs::write(root.join("manifest.json"), serde_json::to_vec(&manifest).expect("json")).expect("write");
}

#[test]
fn a_compressed_bundle_ships_its_weights_quantized_and_they_compute_what_quantizing_at_load_did() {
    use lapa_compress::{Engine, Text};
    let tmp = tempfile::tempdir().expect("tmp");
    let model_dir = tmp.path().join("run/model");
    let (cfg, params, layers) = tiny_run(&model_dir);
    // Every scheme in one plan: the patch projection f32, the head int4, the static ones with a
    // range, the rest dynamic.
    let mut plan = bundle::uniform_plan(&layers, |_| Scheme::Int8Dynamic, &["patch_proj".to_string()], "mixed".into());
    plan.layers.insert("head.Action.out".into(), LayerPlan::Int4Weights {});
    for l in layers.iter().filter(|l| l.ends_with("to_v")) {
        plan.layers.insert(l.clone(), LayerPlan::Int8Static { lo: -3.0, hi: 2.5 });
    }
    let dev = Trust { keys: Vec::new(), allow_unsigned: true };
    let b = bundle::write(&model_dir, tmp.path(), &tmp.path().join("b"), "mixed", None, &plan).expect("write");
    assert_eq!(b.manifest.weights, vec![bundle::WEIGHTS_PART.to_string()]);
    assert!(!b.root.join("policy.bpk").exists(), "no f32 copy of the weights travels beside them");
    let part = std::fs::read(b.root.join(bundle::WEIGHTS_PART)).expect("part");
    let f32_bytes = 4 * params.iter().map(|p| p.values.len()).sum::<usize>();
    let linear_f32: usize =
        params.iter().filter(|p| p.name.ends_with(".weight") && plan.layers.contains_key(p.name.trim_end_matches(".weight"))).map(|p| 4 * p.values.len()).sum();
    let kept_f32 = 4 * params.iter().find(|p| p.name == "patch_proj.weight").expect("patch_proj").values.len();
    // Quantized layers at a quarter (int8) or an eighth (int4) of their f32 bytes, plus scales
    // and the safetensors header.
    let bound = f32_bytes - (linear_f32 - kept_f32) * 3 / 4 + 8 * 1024;
    assert!(part.len() < bound, "weights part {} B, f32 parameters {f32_bytes} B, bound {bound} B", part.len());

    // The stored integers compute what quantizing the f32 weights at load computes: bit for bit
    // where the int8 kernel takes ±127 weights, within the ±63 requantization's rounding on AVX2.
    let (stored_params, stored) = bundle::read_weights_part(&part).expect("read");
    let scheme = |name: &str| plan.layers.get(name).copied().map_or(Scheme::F32, Scheme::from);
    let from_bundle = Engine::from_stored(&cfg, stored_params, stored, &scheme).expect("engine from the bundle");
    let at_load = Engine::new(&cfg, params.clone(), &scheme).expect("engine from f32");
    let patches: Vec<f32> = (0..cfg.n_patches() * cfg.patch_dim()).map(|k| ((k * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let text = Text::Hashed { ids: &[3, 11, 17], weights: &[1.0, 0.5, 0.5] };
    let a = from_bundle.forward(&patches, text, None, &mut |_, _, _| {}).expect("forward");
    let b_ = at_load.forward(&patches, text, None, &mut |_, _, _| {}).expect("forward");
    if lapa_compress::kernel::int8_kernel().1 {
        let diff = a.iter().zip(&b_).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 0.05, "max |logit difference| {diff} after requantizing to ±63");
    } else {
        assert_eq!(a, b_, "the same integers, the same logits");
    }
    let mut policy = bundle::load_policy(&lapa_model::bundle::Bundle::open(&b.root, &dev).expect("open")).expect("load");
    assert!(policy.describe().starts_with("int8+int4 mixed (12/14 layers int8, 1 int4"), "{}", policy.describe());
    let rgb = vec![90u8; 64 * 64 * 3];
    let chunk = policy.infer(&PolicyInput { frame: Frame { width: 64, height: 64, rgb: &rgb }, state: &[], instruction: "pick", time_s: 0.0 }).expect("infer");
    assert!(chunk.iter().flatten().all(|v| v.is_finite()));

    // A weights part that does not hold what the plan says is refused, naming the part and the
    // layer or tensor: each edit below on a fresh copy of the bundle.
    let st = safetensors::tensor::SafeTensors::deserialize(&part).expect("st");
    let rebuild = |edit: Edit<'_>| {
        let owned: Vec<_> = st.iter().filter_map(|(n, v)| edit(n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
        let views: Vec<_> = owned.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"))).collect();
        safetensors::tensor::serialize(views, None).expect("serialize")
    };
    use safetensors::tensor::Dtype;
    let q8 = "trunk.layers.0.attn.to_q.weight.q8";
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":}".to_vec(), "not a safetensors file"),
        // int8 values as f32: the dtype check names the tensor.
        ("q8 as F32", rebuild(&|n, d, s, b| Some(if n == q8 { (n.into(), Dtype::F32, vec![s[0], s[1] / 4], b) } else { (n.into(), d, s, b) })), "expected I8"),
        // The int8 values transposed ([out, in]; the layer is not square): the same count, the
        // wrong layout.
        (
            "transposed",
            rebuild(&|n, d, s, b| Some(if n == "trunk.layers.0.ff.proj_in.weight.q8" { (n.into(), d, vec![s[1], s[0]], b) } else { (n.into(), d, s, b) })),
            "one per output of",
        ),
        // ... and with as many scales as that layout has columns: the layer's own shape refuses it.
        (
            "transposed, scales to match",
            rebuild(&|n, d, s, b| match n {
                "trunk.layers.0.ff.proj_in.weight.q8" => Some((n.into(), d, vec![s[1], s[0]], b)),
                "trunk.layers.0.ff.proj_in.weight.scales" => {
                    let i = cfg.dim;
                    Some((n.into(), d, vec![i], b[..4 * i].to_vec()))
                }
                _ => Some((n.into(), d, s, b)),
            }),
            "for a layer of [",
        ),
        // A zero scale would divide the layer's outputs by nothing.
        (
            "zero scale",
            rebuild(&|n, d, s, mut b| {
                if n == "trunk.layers.0.attn.to_q.weight.scales" {
                    b[..4].copy_from_slice(&0f32.to_le_bytes());
                }
                Some((n.into(), d, s, b))
            }),
            "not a finite positive number",
        ),
        // −128 is outside the stored ±127.
        (
            "minus 128",
            rebuild(&|n, d, s, mut b| {
                if n == q8 {
                    b[0] = 0x80;
                }
                Some((n.into(), d, s, b))
            }),
            "outside ±127",
        ),
        // The int8 values without their scales.
        (
            "no scales",
            rebuild(&|n, d, s, b| (n != "trunk.layers.0.attn.to_q.weight.scales").then(|| (n.into(), d, s, b))),
            "has no trunk.layers.0.attn.to_q.weight.scales",
        ),
        // The quantized layer stored f32 instead (the plan still says int8).
        (
            "stored f32",
            rebuild(&|n, d, s, b| match n {
                "trunk.layers.0.attn.to_q.weight.scales" => None,
                _ if n == q8 => Some(("trunk.layers.0.attn.to_q.weight".into(), Dtype::F32, s.clone(), vec![0; 4 * s[0] * s[1]])),
                _ => Some((n.into(), d, s, b)),
            }),
            "weights are stored f32",
        ),
        // The int4 head's nibbles cut short.
        (
            "short int4",
            rebuild(&|n, d, s, b| {
                Some(if n == "head.Action.out.weight.q4" { (n.into(), d, vec![s[0] - 1], b[..b.len() - 1].to_vec()) } else { (n.into(), d, s, b) })
            }),
            "int4 weights of",
        ),
    ];
    for (i, (what, bytes, want)) in cases.into_iter().enumerate() {
        let copy = bundle::write(&model_dir, tmp.path(), &tmp.path().join(format!("c{i}")), "c", None, &plan).expect("write");
        replace_part(&copy.root, bundle::WEIGHTS_PART, &bytes);
        let e = bundle::load_policy(&lapa_model::bundle::Bundle::open(&copy.root, &dev).expect("open")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(want) && e.contains(bundle::WEIGHTS_PART), "{what}: {e}");
    }
    // A plan of format 1 (an earlier lapa's bundle, f32 weights quantized at load) asks for a new export.
    let old = bundle::write(&model_dir, tmp.path(), &tmp.path().join("old"), "old", None, &plan).expect("write");
    let mut p1 = plan.clone();
    p1.format = 1;
    replace_part(&old.root, QUANT_PART, &serde_json::to_vec_pretty(&p1).expect("json"));
    let e = bundle::load_policy(&lapa_model::bundle::Bundle::open(&old.root, &dev).expect("open")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("format 1") && e.contains("export the bundle again"), "{e}");
}
