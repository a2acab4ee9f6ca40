//! LAQ unit tests: NSVQ gradient path, dead-code revival, tiny overfit, artifact round trip.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use lapa_model::fsq::Fsq;
use lapa_model::nsvq::{Nsvq, code_counts, perplexity};
use lapa_model::{LaqConfig, QuantizerKind, load_laq, patchify, patchify_stacked, save_laq, unpatchify};

fn device() -> Device {
    lapa_model::device("cpu").expect("cpu device").autodiff()
}

/// A 32×32 frame with a 6×6 square at (x, y) on a grey background.
fn square(x: usize, y: usize, colour: [u8; 3]) -> Vec<u8> {
    let mut img = vec![90u8; 32 * 32 * 3];
    for r in y..(y + 6).min(32) {
        for c in x..(x + 6).min(32) {
            img[(r * 32 + c) * 3..(r * 32 + c) * 3 + 3].copy_from_slice(&colour);
        }
    }
    img
}

#[test]
fn patchify_round_trips() {
    let img: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut p = Vec::new();
    patchify(&img, 32, 8, &mut p);
    assert_eq!(p.len(), 16 * 8 * 8 * 3);
    // The first patch's second row starts at image row 1.
    assert_eq!(p[8 * 3], f32::from(img[32 * 3]) / 255.0);
    assert_eq!(unpatchify(&p, 32, 8), img);
}

#[test]
fn stacked_patches_put_each_frames_patch_side_by_side() {
    let a: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let b: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 13 % 241) as u8).collect();
    let (mut pa, mut pb, mut one, mut two) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    patchify(&a, 32, 8, &mut pa);
    patchify(&b, 32, 8, &mut pb);
    patchify_stacked(&[&a], 32, 8, &mut one);
    patchify_stacked(&[&a, &b], 32, 8, &mut two);
    assert_eq!(one, pa);
    let pd = 8 * 8 * 3;
    assert_eq!(two.len(), 2 * pa.len());
    for k in 0..16 {
        assert_eq!(two[2 * k * pd..(2 * k + 1) * pd], pa[k * pd..(k + 1) * pd], "patch {k} of frame 0");
        assert_eq!(two[(2 * k + 1) * pd..(2 * k + 2) * pd], pb[k * pd..(k + 1) * pd], "patch {k} of frame 1");
    }
}

#[test]
fn nsvq_passes_gradients_to_the_encoder_and_codebook() {
    let dev = device();
    dev.seed(1);
    let q = Nsvq::new(8, 4, &dev);
    let z = Tensor::<2>::random([6, 4], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let noise = Tensor::<2>::random([6, 4], Distribution::Normal(0.0, 1.0), &dev);
    let (out, idx) = q.forward_train(z.clone(), noise);
    // The output is not the code itself (noise substitution) but lies at the code's distance from z.
    let codes = q.lookup(idx);
    let d_out = (out.clone() - z.clone()).powi_scalar(2).sum_dim(1).sqrt();
    let d_code = (codes - z.clone()).powi_scalar(2).sum_dim(1).sqrt();
    let gap: f32 = (d_out - d_code).abs().max().into_scalar();
    assert!(gap < 1e-4, "‖out − z‖ must equal ‖q − z‖, gap {gap}");

    let grads = out.sum().backward();
    let gz = z.grad(&grads).expect("the encoder output gets a gradient through the noise substitution");
    let gz_norm: f32 = gz.abs().sum().into_scalar();
    assert!(gz_norm > 1e-3, "encoder gradient is zero");
    let gc = q.codebook.val().grad(&grads).expect("the codebook gets a gradient through ‖z − q‖");
    let gc_norm: f32 = gc.abs().sum().into_scalar();
    assert!(gc_norm > 1e-6, "codebook gradient is zero");
}

#[test]
fn dead_code_replacement_revives_a_forced_dead_code() {
    let dev = device();
    dev.seed(2);
    let q = Nsvq::new(4, 2, &dev);
    // Put code 3 far away so nothing near the data picks it.
    let cb = TensorData::new(vec![0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 100.0, 100.0], [4, 2]);
    let q = Nsvq { codebook: burn::module::Param::initialized(q.codebook.id, Tensor::from_data(cb, &dev).require_grad()), ..q };
    let data = Tensor::<2>::from_data(TensorData::new(vec![0.1f32, 0.0, 0.9, 0.1, 0.0, 1.1, 1.0, 0.0, 0.1, 0.9, 0.0, 0.1], [6, 2]), &dev);
    let idx: Vec<i64> = q.nearest(data.clone()).into_data().convert::<i64>().try_into_vec().expect("ints");
    let counts = code_counts(&idx, 4);
    assert_eq!(counts[3], 0, "code 3 starts dead");
    let before = perplexity(&counts);
    let mut n = 0.0f32;
    let (q, replaced) = q
        .replace_dead_codes(
            &counts,
            0.5,
            0.01,
            None,
            |k| 1 % k,
            || {
                n += 0.5;
                n.sin()
            },
        )
        .expect("the codebook reads back as f32");
    assert_eq!(replaced, vec![3]);
    let cb: Vec<f32> = q.codebook.val().into_data().convert::<f32>().try_into_vec().expect("floats");
    assert!(cb[6] < 1.5 && cb[7] < 1.5, "code 3 was re-seeded near a used code: {cb:?}");
    assert!(q.codebook.val().is_require_grad(), "replaced codebook stays trainable");
    // Points near the re-seeded code now share usage with it.
    let data2 = Tensor::<2>::from_data(TensorData::new(vec![cb[6], cb[7]], [1, 2]), &dev);
    let idx2: Vec<i64> = q.nearest(data2).into_data().convert::<i64>().try_into_vec().expect("ints");
    assert_eq!(idx2, vec![3], "the revived code is the nearest to its own position");
    assert!(before > 1.0);
}

#[test]
fn tiny_laq_overfits_sixteen_pairs() {
    let dev = device();
    dev.seed(3);
    let config = LaqConfig::tiny();
    let mut model = config.init(&dev).expect("tiny config is valid");
    // 16 pairs: a square moving by one of four directions from four start points.
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let dirs: [(i32, i32); 4] = [(6, 0), (-6, 0), (0, 6), (0, -6)];
    for (k, &(dx, dy)) in dirs.iter().enumerate() {
        for s in 0..4 {
            let (x, y) = (8 + 4 * s, 10 + 2 * k as i32);
            patchify(&square(x as usize, y as usize, [220, 40, 40]), 32, 8, &mut first);
            patchify(&square((x + dx) as usize, (y + dy) as usize, [220, 40, 40]), 32, 8, &mut second);
        }
    }
    let shape = [16, config.n_patches(), config.patch_dim()];
    let x0 = Tensor::<3>::from_data(TensorData::new(first, shape), &dev);
    let x1 = Tensor::<3>::from_data(TensorData::new(second, shape), &dev);
    let mut opt = AdamConfig::new().with_beta_2(0.99).init();
    let mut losses = Vec::new();
    for _ in 0..250 {
        let noise = Tensor::<2>::random([16 * config.n_tokens, config.code_dim], Distribution::Normal(0.0, 1.0), &dev);
        let step = model.forward_train(x0.clone(), x1.clone(), noise);
        let l: f32 = step.loss.clone().into_scalar();
        losses.push(l);
        let grads = GradientsParams::from_grads(step.loss.backward(), &model);
        model = opt.step(2e-3, model, grads);
    }
    let start = losses[..5].iter().sum::<f32>() / 5.0;
    let end = losses[losses.len() - 5..].iter().sum::<f32>() / 5.0;
    assert!(start / end >= 10.0, "loss fell only {start:.5} -> {end:.5} ({:.1}×)", start / end);
}

#[test]
fn artifact_round_trips_and_rejects_bad_files() {
    let dev = device();
    dev.seed(4);
    let config = LaqConfig::tiny();
    let model = config.init(&dev).expect("valid");
    let dir = tempfile::tempdir().expect("tempdir");
    save_laq(dir.path(), &config, &model).expect("save");
    let (config2, model2) = load_laq(dir.path(), &dev).expect("load");
    assert_eq!(config, config2);
    let mut p = Vec::new();
    patchify(&square(3, 4, [10, 200, 30]), 32, 8, &mut p);
    patchify(&square(9, 4, [10, 200, 30]), 32, 8, &mut p);
    let x = Tensor::<3>::from_data(TensorData::new(p, [2, 16, 192]), &dev);
    let a = x.clone().slice([0..1, 0..16, 0..192]);
    let b = x.slice([1..2, 0..16, 0..192]);
    let (r1, i1) = model.reconstruct(a.clone(), b.clone());
    let (r2, i2) = model2.reconstruct(a, b);
    assert_eq!(i1.into_data(), i2.into_data());
    let diff: f32 = (r1 - r2).abs().max().into_scalar();
    assert!(diff < 1e-6);

    // A truncated weights file names the file.
    let w = dir.path().join("model.bpk");
    let bytes = std::fs::read(&w).expect("read");
    std::fs::write(&w, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = load_laq(dir.path(), &dev).expect_err("truncated weights must fail").to_string();
    assert!(err.contains("model.bpk"), "{err}");
    // A config of another size does not load these weights.
    save_laq(dir.path(), &config, &model).expect("save");
    let other = LaqConfig { dim: 32, ..LaqConfig::tiny() };
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&other).expect("json")).expect("write");
    let err = load_laq(dir.path(), &dev).expect_err("mismatched weights must fail").to_string();
    assert!(err.contains("model.bpk"), "{err}");
    let _ = model.num_params();
}

#[test]
fn configs_validate() {
    for name in ["tiny", "small", "base", "paper"] {
        LaqConfig::preset(name).expect("preset").validate().expect("valid preset");
    }
    assert!(LaqConfig { n_tokens: 3, ..LaqConfig::tiny() }.validate().is_err());
    assert!(LaqConfig { image_size: 30, ..LaqConfig::tiny() }.validate().is_err());
    assert!(LaqConfig::preset("huge").is_err());
    assert!(LaqConfig { quantizer: QuantizerKind::Fsq, fsq_levels: vec![8, 1], ..LaqConfig::tiny() }.validate().is_err());
    assert!(LaqConfig { n_tokens: 16, ..LaqConfig::small() }.validate().is_ok(), "16 tokens: no pooling at 8×8 patches");
    assert!(LaqConfig { n_tokens: 1, ..LaqConfig::small() }.validate().is_ok());
}

#[test]
fn fsq_rounds_to_its_levels_and_passes_gradients_straight_through() {
    let dev = device();
    dev.seed(5);
    let levels = [8usize, 5, 5, 5];
    let q = Fsq::new(&levels, 16, &dev).expect("valid levels");
    assert_eq!(q.vocabulary(), 1000);
    // Large inputs saturate the tanh: every level of every dimension is reachable.
    let z = Tensor::<2>::random([512, 16], Distribution::Normal(0.0, 4.0), &dev).require_grad();
    let rounded = q.quantize(z.clone());
    let vals: Vec<f32> = rounded.clone().into_data().convert::<f32>().try_into_vec::<f32>().expect("f32");
    for row in vals.chunks(4) {
        for (&v, &l) in row.iter().zip(&levels) {
            assert_eq!(v, v.round(), "FSQ outputs integers, got {v}");
            let (lo, hi) = (-((l / 2) as f32), ((l - 1) as f32) - (l / 2) as f32);
            assert!(v >= lo && v <= hi, "{v} outside {lo}..={hi} for {l} levels");
        }
    }
    for (d, &l) in levels.iter().enumerate() {
        let distinct: std::collections::BTreeSet<i32> = vals.chunks(4).map(|r| r[d] as i32).collect();
        assert_eq!(distinct.len(), l, "dimension {d} uses all {l} levels");
    }
    let (codes, idx) = q.forward_train(z.clone());
    let idx: Vec<i64> = idx.into_data().convert::<i64>().try_into_vec::<i64>().expect("i64");
    assert!(idx.iter().all(|&i| (0..1000).contains(&i)));
    // Indices decode back to the same codes.
    let again = q.lookup(Tensor::from_data(TensorData::new(idx.clone(), [idx.len()]), &dev));
    let gap: f32 = (again - codes.clone().detach()).abs().max().into_scalar();
    assert!(gap < 1e-5, "lookup(index) != code, gap {gap}");
    // Straight-through: the encoder output gets a non-zero gradient through the rounding.
    let grads = codes.sum().backward();
    let gz: f32 = z.grad(&grads).expect("gradient reaches the encoder output").abs().sum().into_scalar();
    assert!(gz > 1e-3, "encoder gradient {gz}");
    assert!(Fsq::new(&[8, 1], 4, &dev).is_err() && Fsq::new(&[], 4, &dev).is_err() && Fsq::new(&[1000, 1000], 4, &dev).is_err());
    // Two levels (the even-offset edge case) and three: finite, in range, every level reached.
    let q2 = Fsq::new(&[2, 3], 4, &dev).expect("levels 2, 3");
    let z2 = Tensor::<2>::random([256, 4], Distribution::Normal(0.0, 4.0), &dev);
    let v2: Vec<f32> = q2.quantize(z2).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32");
    let (d0, d1): (std::collections::BTreeSet<i32>, std::collections::BTreeSet<i32>) =
        (v2.chunks(2).map(|r| r[0] as i32).collect(), v2.chunks(2).map(|r| r[1] as i32).collect());
    assert!(v2.iter().all(|v| v.is_finite()));
    assert_eq!((d0.into_iter().collect::<Vec<_>>(), d1.into_iter().collect::<Vec<_>>()), (vec![-1, 0], vec![-1, 0, 1]));
}

#[test]
fn fsq_laq_trains_and_round_trips_with_its_vocabulary() {
    let dev = device();
    dev.seed(6);
    let config = LaqConfig { quantizer: QuantizerKind::Fsq, fsq_levels: vec![7, 5, 5], n_tokens: 1, ..LaqConfig::tiny() };
    config.validate().expect("valid");
    assert_eq!(config.vocabulary(), 175);
    let mut model = config.init(&dev).expect("init");
    assert_eq!(model.quantizer.vocabulary(), 175);
    let mut p = Vec::new();
    patchify(&square(3, 4, [10, 200, 30]), 32, 8, &mut p);
    patchify(&square(12, 4, [10, 200, 30]), 32, 8, &mut p);
    let x = Tensor::<3>::from_data(TensorData::new(p, [2, 16, 192]), &dev);
    let (a, b) = (x.clone().slice([0..1, 0..16, 0..192]), x.slice([1..2, 0..16, 0..192]));
    // One optimiser step moves the encoder (the gradient crossed the quantizer).
    let before = model.encode_latents(a.clone(), b.clone()).into_data();
    let mut opt = AdamConfig::new().init();
    let out = model.forward_train(a.clone(), b.clone(), Tensor::zeros([1, config.code_dim], &dev));
    let grads = GradientsParams::from_grads(out.loss.backward(), &model);
    model = opt.step(1e-2, model, grads);
    let after = model.encode_latents(a.clone(), b.clone()).into_data();
    assert_ne!(before, after, "one step changed the encoder");
    let dir = tempfile::tempdir().expect("tempdir");
    save_laq(dir.path(), &config, &model).expect("save");
    let (config2, model2) = load_laq(dir.path(), &dev).expect("load");
    assert_eq!(config2.quantizer, QuantizerKind::Fsq);
    assert_eq!(config2.vocabulary(), 175);
    let (r1, i1) = model.reconstruct(a.clone(), b.clone());
    let (r2, i2) = model2.reconstruct(a, b);
    assert_eq!(i1.into_data(), i2.into_data());
    let diff: f32 = (r1 - r2).abs().max().into_scalar();
    assert!(diff < 1e-6);
}

#[test]
fn configs_written_before_the_quantizer_field_load_as_nsvq() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut old = serde_json::to_value(LaqConfig::tiny()).expect("json");
    let obj = old.as_object_mut().expect("object");
    obj.remove("quantizer");
    obj.remove("fsq_levels");
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&old).expect("json")).expect("write");
    let cfg = lapa_model::artifact::load_laq_config(dir.path()).expect("old config loads");
    assert_eq!(cfg.quantizer, QuantizerKind::Nsvq);
    assert_eq!(cfg.vocabulary(), cfg.codebook_size);
}
