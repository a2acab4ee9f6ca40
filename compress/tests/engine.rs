//! The compressed engine against the burn module it was read from, and the int8 kernels against
//! f32 arithmetic, with the error bounds they must keep.

use burn::tensor::{Int, Tensor, TensorData};
use lapa_compress::calib::{self, Observation, OwnedText, RangeMethod};
use lapa_compress::kernel::{INT4_BLOCK, Kernel, Scheme, int8_kernel, quantize_weights};
use lapa_compress::{Engine, EnginePolicy};
use lapa_model::burn;
use lapa_model::policy::{Frame, Policy, PolicyInput};
use lapa_model::text::TextConfig;
use lapa_model::vla::{ActionTarget, HeadConfig, StateInput, TextInput, Vla, VlaConfig, VlaInput, VlaPolicy};

mod common;
use common::{Rng, device, model};

/// The action head these tests use: absolute targets.
fn head(dims: usize, chunk: usize, bins: usize) -> HeadConfig {
    common::head(dims, chunk, bins, ActionTarget::Absolute)
}

fn naive(x: &[f32], w: &[f32], rows: usize, i: usize, o: usize, bias: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; rows * o];
    for r in 0..rows {
        for c in 0..o {
            out[r * o + c] = bias[c] + (0..i).map(|k| f64::from(x[r * i + k]) * f64::from(w[k * o + c])).sum::<f64>() as f32;
        }
    }
    out
}

/// The provable per-element bound of the int8 product: with `x̂ = x + ε`, |ε| ≤ s_a/2 (no clipping
/// in the dynamic scheme) and `ŵ = w + δ`, |δ| ≤ s_w/2,
/// `|Σ x w − Σ x̂ ŵ| ≤ Σ |x| s_w/2 + Σ |ŵ| s_a/2`; plus f32 rounding slack.
fn int8_bound(x: &[f32], w: &[f32], rows: usize, i: usize, o: usize, qmax: i8) -> Vec<f32> {
    let (qw, sw) = quantize_weights(w, i, o, qmax);
    let mut b = vec![0.0; rows * o];
    for r in 0..rows {
        let row = &x[r * i..(r + 1) * i];
        let (lo, hi) = row.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        let sa = (hi - lo) / 255.0;
        let l1x: f32 = row.iter().map(|v| v.abs()).sum();
        for c in 0..o {
            let l1w: f32 = (0..i).map(|k| f32::from(qw[k * o + c]).abs() * sw[c]).sum();
            b[r * o + c] = l1x * sw[c] / 2.0 + l1w * sa / 2.0 + 1e-4 * (1.0 + l1x);
        }
    }
    b
}

#[test]
fn kernels_match_f32_arithmetic_within_their_bounds() {
    let (name, saturating) = int8_kernel();
    println!("int8 kernel: {name} (may saturate: {saturating})");
    let mut rng = Rng(0x1234_5678);
    // Odd sizes, one row, the policy's shapes, and zero rows.
    for (rows, i, o) in [(1, 1, 1), (3, 7, 5), (1, 384, 64), (75, 192, 577), (13, 33, 129), (0, 16, 8)] {
        let w = rng.vec(i * o, 0.5);
        let x = rng.vec(rows * i, 2.0);
        let bias = rng.vec(o, 0.1);
        let want = naive(&x, &w, rows, i, o, &bias);
        let f = Kernel::new(Scheme::F32, &w, i, o, Some(bias.clone())).expect("f32 kernel");
        let mut got = vec![0.0; rows * o];
        f.forward(&x, rows, &mut got);
        for (g, w_) in got.iter().zip(&want) {
            assert!((g - w_).abs() <= 1e-4 * (1.0 + w_.abs()), "f32 {rows}×{i}→{o}: {g} vs {w_}");
        }
        let q = Kernel::new(Scheme::Int8Dynamic, &w, i, o, Some(bias.clone())).expect("int8 kernel");
        let qmax = q.weight_qmax().expect("int8");
        assert_eq!(qmax, if saturating { 63 } else { 127 });
        q.forward(&x, rows, &mut got);
        let bound = int8_bound(&x, &w, rows, i, o, qmax);
        for ((g, w_), b) in got.iter().zip(&want).zip(&bound) {
            assert!((g - w_).abs() <= *b, "int8 {rows}×{i}→{o}: {g} vs {w_}, bound {b}");
        }
        // Weight-only int4: |δ| ≤ s_block/2 per weight, activations exact, so
        // |Σ x w − Σ x ŵ| ≤ Σ_k |x_k| s_{block(k)}/2; plus f32 rounding slack.
        let q4 = Kernel::new(Scheme::Int4Weights, &w, i, o, Some(bias.clone())).expect("int4 kernel");
        assert_eq!(q4.scheme(), Scheme::Int4Weights);
        assert!(q4.bytes() < i * o + 8 * o || i * o < 64, "int4 is smaller than int8 ({} bytes)", q4.bytes());
        q4.forward(&x, rows, &mut got);
        for r in 0..rows {
            for c in 0..o {
                let mut bound = 1e-4 * (1.0 + want[r * o + c].abs());
                for blk in 0..i.div_ceil(INT4_BLOCK) {
                    let ks = blk * INT4_BLOCK..((blk + 1) * INT4_BLOCK).min(i);
                    let s = ks.clone().map(|k| w[k * o + c].abs()).fold(0f32, f32::max) / 7.0;
                    bound += ks.map(|k| x[r * i + k].abs()).sum::<f32>() * s / 2.0;
                }
                let (g, w_) = (got[r * o + c], want[r * o + c]);
                assert!((g - w_).abs() <= bound, "int4 {rows}×{i}→{o} [{r}, {c}]: {g} vs {w_}, bound {bound}");
            }
        }
    }
}

#[test]
fn saturation_prone_values_stay_exact() {
    // Every activation at its row's extreme (quantized to 255 or 0) against weights at ±qmax: on
    // AVX2 a pair of 255 × 127 products overflows vpmaddubsw's i16; the 7-bit weights must not.
    let (i, o, rows) = (64, 16, 4);
    let w: Vec<f32> = (0..i * o).map(|k| if (k / o) % 2 == 0 { 1.0 } else { -1.0 } * if k % 3 == 0 { 1.0 } else { 0.999 }).collect();
    let mut x = vec![4.0f32; rows * i];
    x[0] = -0.0001; // a range with its zero point at 0
    let bias = vec![0.0; o];
    let want = naive(&x, &w, rows, i, o, &bias);
    let q = Kernel::new(Scheme::Int8Dynamic, &w, i, o, None).expect("kernel");
    let mut got = vec![0.0; rows * o];
    q.forward(&x, rows, &mut got);
    let bound = int8_bound(&x, &w, rows, i, o, q.weight_qmax().expect("int8"));
    for ((g, w_), b) in got.iter().zip(&want).zip(&bound) {
        assert!((g - w_).abs() <= *b, "{g} vs {w_} (bound {b}): saturated?");
    }
    // All-positive weights with all-255 activations: the sum a saturating kernel would clip.
    let w = vec![1.0f32; i * o];
    let x = vec![1.0f32; rows * i];
    let q = Kernel::new(Scheme::Int8Dynamic, &w, i, o, None).expect("kernel");
    q.forward(&x, rows, &mut got);
    for g in &got {
        assert!((g - i as f32).abs() < 1e-3 * i as f32, "{g} vs {i}");
    }
}

#[test]
fn static_ranges_clip_outside_and_match_dynamic_inside() {
    let mut rng = Rng(99);
    let (i, o, rows) = (48, 24, 5);
    let w = rng.vec(i * o, 0.3);
    let x = rng.vec(rows * i, 1.0);
    let dynamic = Kernel::new(Scheme::Int8Dynamic, &w, i, o, None).expect("dyn");
    let wide = Kernel::new(Scheme::Int8Static { lo: -1.0, hi: 1.0 }, &w, i, o, None).expect("static");
    let (mut a, mut b) = (vec![0.0; rows * o], vec![0.0; rows * o]);
    dynamic.forward(&x, rows, &mut a);
    wide.forward(&x, rows, &mut b);
    let want = naive(&x, &w, rows, i, o, &vec![0.0; o]);
    let err = |v: &[f32]| v.iter().zip(&want).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    // The static range [-1, 1] covers the data (in [-1, 1)); its step is at most 2/255.
    assert!(err(&b) < 0.05, "{}", err(&b));
    assert!(err(&a) < 0.05, "{}", err(&a));
    // A range far too narrow clips: its error is large — calibration matters.
    let narrow = Kernel::new(Scheme::Int8Static { lo: -0.01, hi: 0.01 }, &w, i, o, None).expect("static");
    narrow.forward(&x, rows, &mut b);
    assert!(err(&b) > 10.0 * err(&a), "narrow {} vs dynamic {}", err(&b), err(&a));
    assert!(Kernel::new(Scheme::Int8Static { lo: 1.0, hi: -1.0 }, &w, i, o, None).is_err());
    assert!(Kernel::new(Scheme::Int8Static { lo: f32::NAN, hi: 1.0 }, &w, i, o, None).is_err());
    assert!(Kernel::new(Scheme::F32, &w, i, o + 1, None).is_err());
    let mut bad = w.clone();
    bad[3] = f32::INFINITY;
    assert!(Kernel::new(Scheme::Int8Dynamic, &bad, i, o, None).is_err());
}

fn observations(cfg: &VlaConfig, n: usize, seed: u64) -> Vec<Observation> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|k| {
            // Smooth images (as camera frames are), not noise.
            let patches: Vec<f32> = (0..cfg.n_patches() * cfg.patch_dim()).map(|j| 0.5 + 0.4 * ((j as f32 * 0.01 + k as f32).sin() * rng.next())).collect();
            let text = match cfg.text {
                TextConfig::Hashed { .. } => {
                    let (ids, weights) =
                        cfg.text.tokenize(["pick up the red cube", "push the blue block left", "point at the green cube"][k % 3]).expect("tokenize");
                    OwnedText::Hashed { ids, weights }
                }
                TextConfig::MiniLm { dim, .. } => {
                    let v = rng.vec(dim, 1.0);
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    OwnedText::Embedded(v.iter().map(|x| x / n).collect())
                }
            };
            Observation { patches, text, state: cfg.state.as_ref().map(|s| rng.vec(s.mean.len(), 1.0)) }
        })
        .collect()
}

/// burn's logits of one observation, flattened `[targets · bins]`.
fn burn_logits(cfg: &VlaConfig, model: &Vla, o: &Observation) -> Vec<f32> {
    let d = device();
    let patches = Tensor::from_data(TensorData::new(o.patches.clone(), [1, cfg.n_patches(), cfg.patch_dim()]), &d);
    let text = match &o.text {
        OwnedText::Hashed { ids, weights } => TextInput::Hashed {
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), &d),
            weights: Tensor::from_data(TensorData::new(weights.clone(), [1, weights.len()]), &d),
        },
        OwnedText::Embedded(e) => TextInput::Embedded(Tensor::from_data(TensorData::new(e.clone(), [1, e.len()]), &d)),
    };
    let state = o.state.as_ref().map(|s| Tensor::from_data(TensorData::new(s.clone(), [1, s.len()]), &d));
    model.forward(VlaInput { patches, text, state }).into_data().convert::<f32>().try_into_vec::<f32>().expect("logits")
}

fn configs() -> Vec<(&'static str, VlaConfig)> {
    let tiny = VlaConfig::tiny(head(6, 3, 16));
    // The small preset's shape (frozen-encoder text, 4 layers of width 192) at fewer bins, with a
    // state token.
    let mut small = VlaConfig::small(head(6, 4, 32));
    small.state = Some(StateInput { mean: vec![0.0; 6], std: vec![1.0; 6] });
    vec![("tiny", tiny), ("small+state", small)]
}

#[test]
fn the_f32_engine_computes_what_burn_computes() {
    for (label, cfg) in configs() {
        let m = model(&cfg, 7);
        let params = lapa_model::artifact::named_params(&m).expect("params");
        let engine = Engine::new(&cfg, params.clone(), &|_| Scheme::F32).expect("engine");
        for o in observations(&cfg, 3, 5) {
            let want = burn_logits(&cfg, &m, &o);
            let got = engine.forward(&o.patches, o.text.as_text(), o.state.as_deref(), &mut |_, _, _| {}).expect("forward");
            assert_eq!(got.len(), want.len());
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 2e-4, "{label}: max |logit difference| {diff}");
        }
        // A parameter missing or extra is refused by name.
        let mut fewer = params.clone();
        fewer.retain(|p| p.name != "trunk.norm_out.gamma");
        assert!(Engine::new(&cfg, fewer, &|_| Scheme::F32).err().map(|e| e.to_string()).unwrap_or_default().contains("trunk.norm_out.gamma"));
        let mut more = params;
        more.push(lapa_model::artifact::NamedTensor { name: "extra.weight".into(), shape: vec![1], values: vec![0.0] });
        assert!(Engine::new(&cfg, more, &|_| Scheme::F32).err().map(|e| e.to_string()).unwrap_or_default().contains("extra.weight"));
    }
}

#[test]
fn quantized_engines_stay_close_to_f32() {
    for (label, cfg) in configs() {
        let m = model(&cfg, 11);
        let params = lapa_model::artifact::named_params(&m).expect("params");
        let f = Engine::new(&cfg, params.clone(), &|_| Scheme::F32).expect("f32");
        let calib_set = observations(&cfg, 8, 21);
        let held_out = observations(&cfg, 6, 77);
        let ranges = calib::activation_ranges(&f, &calib_set, RangeMethod::MinMax).expect("ranges");
        assert_eq!(ranges.len(), f.linears().len(), "{label}: one range per linear layer");
        let pct = calib::activation_ranges(&f, &calib_set, RangeMethod::Percentile(99.9)).expect("ranges");
        for (name, (lo, hi)) in &ranges {
            let (plo, phi) = pct[name];
            assert!(lo <= &plo && &phi <= hi && plo <= phi, "{label} {name}: percentile [{plo}, {phi}] inside min-max [{lo}, {hi}]");
        }
        let bins = match &cfg.head {
            HeadConfig::Action(a) => a.bins,
            _ => unreachable!(),
        };
        let dynamic = Engine::new(&cfg, params.clone(), &|_| Scheme::Int8Dynamic).expect("dyn");
        let stat = Engine::new(&cfg, params.clone(), &|n| {
            let (lo, hi) = ranges[n];
            Scheme::Int8Static { lo, hi }
        })
        .expect("static");
        let linear_bytes = |e: &Engine| e.linears().iter().map(|l| l.kernel.bytes()).sum::<usize>();
        assert!(linear_bytes(&dynamic) * 3 < linear_bytes(&f), "{label}: int8 linears {} B vs f32 {} B", linear_bytes(&dynamic), linear_bytes(&f));
        assert!(dynamic.weight_bytes() < f.weight_bytes());
        let int4 = Engine::new(&cfg, params.clone(), &|_| Scheme::Int4Weights).expect("int4");
        assert!(linear_bytes(&int4) * 5 < linear_bytes(&f), "{label}: int4 linears {} B vs f32 {} B", linear_bytes(&int4), linear_bytes(&f));
        assert!(linear_bytes(&int4) < linear_bytes(&dynamic));
        for (scheme, e, max_kl, min_agree) in [("dynamic", &dynamic, 2e-3, 0.9), ("static", &stat, 2e-3, 0.9), ("int4 weights", &int4, 2e-2, 0.75)] {
            let (mut kl, mut same, mut n) = (0.0, 0, 0);
            for o in &held_out {
                let r = f.forward(&o.patches, o.text.as_text(), o.state.as_deref(), &mut |_, _, _| {}).expect("f32");
                let q = e.forward(&o.patches, o.text.as_text(), o.state.as_deref(), &mut |_, _, _| {}).expect("int8");
                kl += calib::mean_kl(&r, &q, bins);
                for (a, b) in r.chunks_exact(bins).zip(q.chunks_exact(bins)) {
                    n += 1;
                    same += usize::from(calib::argmax(a) == calib::argmax(b));
                }
            }
            let kl = kl / held_out.len() as f64;
            let agree = same as f64 / n as f64;
            println!("{label} {scheme}: mean KL {kl:.2e} nats, {:.1}% same bins", 100.0 * agree);
            assert!(kl < max_kl, "{label} {scheme}: mean KL {kl}");
            assert!(agree >= min_agree, "{label} {scheme}: {agree} of the bins agree");
        }
    }
}

#[test]
fn the_scan_finds_the_layer_that_quantizes_badly() {
    let cfg = VlaConfig::tiny(head(6, 3, 16));
    let m = model(&cfg, 3);
    let mut params = lapa_model::artifact::named_params(&m).expect("params");
    // One outlier per output channel of layer 0's feed-forward output (which adds straight to the
    // residual stream), 300× the layer's largest other weight: per-channel scales of 300/127 of
    // that weight then flatten every other weight to zero, on the 8-bit kernels (±127) and the
    // 7-bit AVX2 ones (±63) alike. The outliers also amplify the error of the layer before
    // (proj_in, whose output they multiply), which grows 4× on 7 bits: at 640× they led proj_in
    // by only 2.0× there (4.4× on 8 bits); at 300× by 6.4× (13.7×), checked with qmax forced to 63.
    let target = "trunk.layers.0.ff.proj_out";
    let p = params.iter_mut().find(|p| p.name == format!("{target}.weight")).expect("proj_out");
    let (i, o) = (p.shape[0], p.shape[1]);
    let outlier = 300.0 * p.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for c in 0..o {
        p.values[(c * 7) % i * o + c] = outlier;
    }
    let held_out = observations(&cfg, 4, 8);
    let mut seen = 0;
    let rows = calib::sensitivity_scan(&cfg, &params, &held_out, &|_| Scheme::Int8Dynamic, |_, _, _| seen += 1).expect("scan");
    let f = Engine::new(&cfg, params.clone(), &|_| Scheme::F32).expect("f32");
    assert_eq!(rows.len(), f.linears().len());
    assert_eq!(seen, rows.len());
    assert!(rows.windows(2).all(|w| w[0].kl >= w[1].kl), "sorted worst first");
    assert!(rows.iter().all(|r| r.kl >= 0.0 && (0.0..=1.0).contains(&r.flipped)));
    assert_eq!(rows[0].layer, target, "{rows:#?}");
    assert!(rows[0].kl > 3.0 * rows[1].kl, "{rows:#?}");
}

#[test]
fn the_engine_policy_drives_like_the_burn_policy() {
    let cfg = VlaConfig::tiny(head(6, 3, 16));
    let m = model(&cfg, 5);
    let params = lapa_model::artifact::named_params(&m).expect("params");
    let engine = Engine::new(&cfg, params, &|_| Scheme::F32).expect("engine");
    let mut ours = EnginePolicy::new(engine, None, "f32 engine").expect("policy");
    let mut burn_policy = VlaPolicy::new(cfg.clone(), m, device(), "burn").expect("policy");
    // A camera frame of another size: both crop and resize it the same way.
    let rgb: Vec<u8> = (0..80 * 60 * 3).map(|i| ((i * 7) % 251) as u8).collect();
    for instruction in ["pick up the red cube", "push the blue block left"] {
        let input = PolicyInput { frame: Frame { width: 80, height: 60, rgb: &rgb }, state: &[0.0; 6], instruction, time_s: 0.0 };
        assert_eq!(ours.infer(&input).expect("engine"), burn_policy.infer(&input).expect("burn"), "{instruction}");
    }
    assert_eq!(ours.action_spec(), burn_policy.action_spec());
    let bad = PolicyInput { frame: Frame { width: 80, height: 60, rgb: &rgb[..10] }, state: &[0.0; 6], instruction: "x", time_s: 0.0 };
    assert!(ours.infer(&bad).is_err());
}
