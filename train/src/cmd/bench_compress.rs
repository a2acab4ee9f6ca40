//! `lapa bench compress`: the compressed policies beside the f32 one, on the same weights, in one
//! process: step latency (interleaved rounds), weight bytes, and how far each variant's action
//! distributions move from f32 on held-out simulator frames.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use lapa_compress::calib::{self, Observation, OwnedText, RangeMethod};
use lapa_compress::{Engine, EnginePolicy, Scheme};
use lapa_model::policy::{Frame, PolicyInput};
use lapa_model::text::TextConfig;
use lapa_model::vla::VlaPolicy;
use std::path::PathBuf;
use std::time::Instant;

/// `lapa bench compress`.
#[derive(Debug, Clone, Args)]
pub struct BenchCompressArgs {
    /// Policy preset (fresh random weights, their gains and offsets moved off 1 and 0).
    #[arg(long, default_value = "small", conflicts_with = "run")]
    pub config: String,
    /// A finetuned run's policy instead.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Timed steps per variant per round (after 5 warm-up steps).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Rounds; the variants take turns within each round (shared machines drift).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// CPU threads (1 = one core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Simulator frames the static ranges are calibrated on (min-max).
    #[arg(long, default_value_t = 32)]
    pub calib_frames: usize,
    /// Held-out simulator frames the divergence from f32 is measured on.
    #[arg(long, default_value_t = 32)]
    pub eval_frames: usize,
    /// Actions per chunk and bins per dimension (presets only).
    #[arg(long, default_value_t = 4)]
    pub chunk: usize,
    #[arg(long, default_value_t = 256)]
    pub bins: usize,
    /// Also write the f32 and int8 ONNX models and the bench input here (for ONNX Runtime in
    /// bench/compress.sh).
    #[arg(long, value_name = "DIR")]
    pub onnx_dir: Option<PathBuf>,
    /// Time only the variants whose name contains one of these (e.g. `int8 dynamic`, for a
    /// profiler); repeatable. Default: all.
    #[arg(long, value_name = "TEXT")]
    pub only: Vec<String>,
    /// Also write these exact weights, the bench frame and burn's logits for the PyTorch twin
    /// (`bench/policy_torch.py --twin DIR`, f32 and `quantize_dynamic` int8). The folder must not
    /// exist; policies with the frozen MiniLM text encoder only.
    #[arg(long, value_name = "DIR")]
    pub twin: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

struct Timed {
    name: String,
    runtime: &'static str,
    weight_bytes: Option<usize>,
    samples: Vec<f64>,
    p50_per_round: Vec<f64>,
    kl: Option<f64>,
    same_bin: Option<f64>,
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Argmax agreement of two logit vectors `[targets, bins]`.
fn same_bin(a: &[f32], b: &[f32], bins: usize) -> f64 {
    let rows = a.len() / bins;
    let same = a.chunks_exact(bins).zip(b.chunks_exact(bins)).filter(|(x, y)| calib::argmax(x) == calib::argmax(y)).count();
    same as f64 / rows.max(1) as f64
}

pub fn run(a: &BenchCompressArgs) -> Result<()> {
    if a.steps == 0 || a.rounds == 0 || a.calib_frames == 0 || a.eval_frames == 0 {
        bail!("--steps, --rounds, --calib-frames and --eval-frames must be positive");
    }
    for (flag, dir) in [("--onnx-dir", &a.onnx_dir), ("--twin", &a.twin)] {
        if let Some(d) = dir
            && d.exists()
        {
            bail!("{flag} {}: already exists (pick a new folder)", d.display());
        }
    }
    rayon::ThreadPoolBuilder::new().num_threads(a.threads.max(1)).build_global().context("sizing the thread pool")?;
    let device = lapa_model::device("cpu")?;
    let (label, cfg, model) = super::vla::bench_model(&a.config, a.run.as_deref(), a.chunk, a.bins, &device)?;
    // Fresh gains sit at 1 and offsets at 0, where quantization is kinder than on trained weights.
    let model = if a.run.is_none() { lapa_model::artifact::perturb_vectors(model, 0.2, 7) } else { model };
    let params = lapa_model::artifact::named_params(&model)?;
    let n_params = lapa_model::burn::module::Module::num_params(&model);
    let side = cfg.image_size;
    let bins = match &cfg.head {
        lapa_model::vla::HeadConfig::Action(h) => h.bins,
        _ => bail!("not an action-bin policy: bench a finetuned run"),
    };
    let load_encoder = || -> Result<Option<lapa_model::text::SentenceEncoder>> {
        Ok(match cfg.text {
            TextConfig::MiniLm { .. } => Some(lapa_model::text::SentenceEncoder::load(&lapa_model::text::minilm_dir(), &cfg.text, &device)?),
            TextConfig::Hashed { .. } => None,
        })
    };

    // Simulator frames: the first set calibrates, the second is held out.
    let mut env = lapa_sim::Env::new(lapa_sim::EnvConfig { width: side, height: side, ..lapa_sim::EnvConfig::default() });
    let mut enc = load_encoder()?;
    let mut frames = Vec::new();
    for seed in 0..(a.calib_frames + a.eval_frames) as u64 {
        let obs = env.reset(10_000 + seed, lapa_sim::Embodiment::Arm, None, lapa_sim::Split::Seen);
        let mut patches = Vec::new();
        lapa_model::laq::patchify(&obs.image.data, side, cfg.patch_size, &mut patches);
        let text = OwnedText::encode(&cfg.text, enc.as_mut(), env.instruction())?;
        let state = cfg.state.as_ref().map(|s| s.standardise(&obs.state).collect());
        frames.push(Observation { patches, text, state });
    }
    let (calib_set, eval_set) = frames.split_at(a.calib_frames);

    // The variants, on the same weights.
    let f32_engine = Engine::new(&cfg, params.clone(), &|_| Scheme::F32)?;
    let ranges = calib::activation_ranges(&f32_engine, calib_set, RangeMethod::MinMax)?;
    let static_plan = |name: &str| ranges.get(name).map_or(Scheme::Int8Dynamic, |&(lo, hi)| Scheme::Int8Static { lo, hi });
    let dyn_engine = Engine::new(&cfg, params.clone(), &|_| Scheme::Int8Dynamic)?;
    let static_engine = Engine::new(&cfg, params.clone(), &static_plan)?;
    let int4_engine = Engine::new(&cfg, params.clone(), &|_| Scheme::Int4Weights)?;
    let logits_of = |e: &Engine| -> Result<Vec<Vec<f32>>> {
        eval_set.iter().map(|o| e.forward(&o.patches, o.text.as_text(), o.state.as_deref(), &mut |_, _, _| {}).map_err(anyhow::Error::from)).collect()
    };
    let reference = logits_of(&f32_engine)?;
    let quality = |l: &[Vec<f32>]| -> (f64, f64) {
        let kl = reference.iter().zip(l).map(|(p, q)| calib::mean_kl(p, q, bins)).sum::<f64>() / l.len() as f64;
        let sb = reference.iter().zip(l).map(|(p, q)| same_bin(p, q, bins)).sum::<f64>() / l.len() as f64;
        (kl, sb)
    };
    let (dyn_q, static_q, int4_q) = (quality(&logits_of(&dyn_engine)?), quality(&logits_of(&static_engine)?), quality(&logits_of(&int4_engine)?));
    let weight_bytes = [f32_engine.weight_bytes(), dyn_engine.weight_bytes(), static_engine.weight_bytes(), int4_engine.weight_bytes()];

    // ONNX on rten, the same graphs bench/compress.sh gives ONNX Runtime.
    let onnx_f32 = lapa_compress::onnx::export(&cfg, params.clone(), &|_| Scheme::F32, 127, "bench f32")?;
    let onnx_int8 = lapa_compress::onnx::export(&cfg, params.clone(), &|_| Scheme::Int8Dynamic, 127, "bench int8 dynamic")?;
    let rten_f32 = rten::Model::load(onnx_f32.clone()).map_err(|e| anyhow!("rten: {e}"))?;
    let rten_int8 = rten::Model::load(onnx_int8.clone()).map_err(|e| anyhow!("rten: {e}"))?;
    let pool_opts = {
        let mut o = rten::RunOptions::default();
        o.thread_pool = Some(std::sync::Arc::new(rten::ThreadPool::with_num_threads(a.threads.max(1))));
        Some(o)
    };

    // The bench frame and its inputs.
    let rgb: Vec<u8> = (0..side * side * 3).map(|i| (i * 31 % 251) as u8).collect();
    let instruction = "put the red cube next to the blue ball";
    let state = [0.0f32; 6];
    let input = PolicyInput { frame: Frame { width: side, height: side, rgb: &rgb }, state: &state, instruction, time_s: 0.0 };
    let text_value = OwnedText::encode(&cfg.text, enc.as_mut(), instruction)?;
    let rten_inputs = |m: &rten::Model| -> Result<Vec<(rten::NodeId, rten::ValueOrView<'static>)>> {
        let id = |n: &str| m.node_id(n).map_err(|e| anyhow!("rten: {e}"));
        let mut v: Vec<(rten::NodeId, rten::ValueOrView<'static>)> = vec![(id("image")?, rten_tensor::Tensor::from_data(&[side, side, 3], rgb.clone()).into())];
        match &text_value {
            OwnedText::Embedded(e) => v.push((id("text_embedding")?, rten_tensor::Tensor::from_data(&[e.len()], e.clone()).into())),
            OwnedText::Hashed { ids, weights } => {
                let ids: Vec<i32> = ids.iter().map(|&i| i32::try_from(i).unwrap_or(0)).collect();
                v.push((id("text_ids")?, rten_tensor::Tensor::from_data(&[ids.len()], ids).into()));
                v.push((id("text_weights")?, rten_tensor::Tensor::from_data(&[weights.len()], weights.clone()).into()));
            }
        }
        if let Some(s) = m.find_node("state") {
            let n = cfg.state_dim().max(6);
            v.push((s, rten_tensor::Tensor::from_data(&[n], vec![0.0f32; n]).into()));
        }
        Ok(v)
    };
    if let Some(dir) = &a.onnx_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--onnx-dir {}", dir.display()))?;
        lapa_fs::atomic_write(&dir.join("policy-f32.onnx"), &onnx_f32)?;
        lapa_fs::atomic_write(&dir.join("policy-int8.onnx"), &onnx_int8)?;
        let text = match &text_value {
            OwnedText::Embedded(e) => serde_json::json!({"text_embedding": e}),
            OwnedText::Hashed { ids, weights } => serde_json::json!({"text_ids": ids, "text_weights": weights}),
        };
        let inp = serde_json::json!({"side": side, "image": rgb, "text": text, "state_len": cfg.state_dim(), "threads": a.threads});
        lapa_fs::atomic_write(&dir.join("input.json"), serde_json::to_string(&inp)?.as_bytes())?;
    }

    if let Some(dir) = &a.twin {
        super::vla::write_twin(dir, &cfg, &model, &rgb, instruction, &device).with_context(|| format!("--twin {}", dir.display()))?;
    }
    let mut burn_policy = VlaPolicy::new(cfg.clone(), model, device.clone(), label.clone())?;
    let mut policies = [
        EnginePolicy::new(f32_engine, load_encoder()?, "engine f32")?,
        EnginePolicy::new(dyn_engine, load_encoder()?, "engine int8 dynamic")?,
        EnginePolicy::new(static_engine, load_encoder()?, "engine int8 static")?,
        EnginePolicy::new(int4_engine, load_encoder()?, "engine int4 weights")?,
    ];
    let names = [
        "lapa f32 (burn flex)",
        "lapa f32 (compress engine)",
        "lapa int8 dynamic",
        "lapa int8 static (min-max, sim frames)",
        "lapa int4 weights (blocks of 32)",
        "rten f32 (ONNX)",
        "rten int8 dynamic (ONNX)",
    ];
    let runtimes = ["burn", "lapa-compress", "lapa-compress", "lapa-compress", "lapa-compress", "rten", "rten"];
    let mut timed: Vec<Timed> = names
        .iter()
        .zip(runtimes)
        .map(|(n, r)| Timed { name: n.to_string(), runtime: r, weight_bytes: None, samples: Vec::new(), p50_per_round: Vec::new(), kl: None, same_bin: None })
        .collect();
    timed[0].weight_bytes = Some(4 * n_params);
    for k in 0..4 {
        timed[k + 1].weight_bytes = Some(weight_bytes[k]);
    }
    timed[1].kl = Some(0.0);
    timed[1].same_bin = Some(1.0);
    (timed[2].kl, timed[2].same_bin) = (Some(dyn_q.0), Some(dyn_q.1));
    (timed[3].kl, timed[3].same_bin) = (Some(static_q.0), Some(static_q.1));
    (timed[4].kl, timed[4].same_bin) = (Some(int4_q.0), Some(int4_q.1));
    let f32_in = rten_inputs(&rten_f32)?;
    let int8_in = rten_inputs(&rten_int8)?;
    let (f32_out, int8_out) = (rten_f32.node_id("actions").map_err(|e| anyhow!("{e}"))?, rten_int8.node_id("actions").map_err(|e| anyhow!("{e}"))?);
    let mut step = |v: usize| -> Result<()> {
        match v {
            0 => lapa_model::Policy::infer(&mut burn_policy, &input).map(|_| ())?,
            1..=4 => lapa_model::Policy::infer(&mut policies[v - 1], &input).map(|_| ())?,
            5 => rten_f32
                .run(f32_in.iter().map(|(i, x)| (*i, x.clone())).collect(), &[f32_out], pool_opts.clone())
                .map(|_| ())
                .map_err(|e| anyhow!("rten: {e}"))?,
            _ => rten_int8
                .run(int8_in.iter().map(|(i, x)| (*i, x.clone())).collect(), &[int8_out], pool_opts.clone())
                .map(|_| ())
                .map_err(|e| anyhow!("rten: {e}"))?,
        }
        Ok(())
    };
    let bar = indicatif::ProgressBar::new((a.rounds * timed.len() * (a.steps + 5)) as u64);
    for _ in 0..a.rounds {
        for (v, t) in timed.iter_mut().enumerate() {
            if !a.only.is_empty() && !a.only.iter().any(|o| t.name.contains(o.as_str())) {
                continue;
            }
            for _ in 0..5 {
                step(v)?;
                bar.inc(1);
            }
            let mut round = Vec::with_capacity(a.steps);
            for _ in 0..a.steps {
                let t0 = Instant::now();
                step(v)?;
                round.push(t0.elapsed().as_secs_f64() * 1e3);
                bar.inc(1);
            }
            round.sort_by(f64::total_cmp);
            t.p50_per_round.push(quantile(&round, 0.5));
            t.samples.extend(round);
        }
    }
    bar.finish_and_clear();
    let base = {
        let mut r = timed[0].p50_per_round.clone();
        r.sort_by(f64::total_cmp);
        quantile(&r, 0.5) // NaN when burn was not timed (--only)
    };
    println!(
        "policy {label}: {n_params} parameters, {:.1} MFLOP per step; {} thread(s), {} rounds × {} steps; int8 kernel {}",
        cfg.flops() as f64 / 1e6,
        a.threads,
        a.rounds,
        a.steps,
        lapa_compress::kernel::int8_kernel().0
    );
    println!("{:<40} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9}", "variant", "p50 ms", "p99 ms", "vs burn", "weights", "KL (nats)", "same bin");
    let mut rows = Vec::new();
    for t in timed.iter_mut().filter(|t| !t.samples.is_empty()) {
        t.samples.sort_by(f64::total_cmp);
        let mut r = t.p50_per_round.clone();
        r.sort_by(f64::total_cmp);
        let p50 = quantile(&r, 0.5);
        let p99 = quantile(&t.samples, 0.99);
        println!(
            "{:<40} {:>9.2} {:>9.2} {:>8.2}x {:>10} {:>10} {:>9}",
            t.name,
            p50,
            p99,
            base / p50,
            t.weight_bytes.map_or("-".into(), |b| format!("{:.2} MB", b as f64 / 1e6)),
            t.kl.map_or("-".into(), |k| format!("{k:.2e}")),
            t.same_bin.map_or("-".into(), |s| format!("{:.1}%", 100.0 * s))
        );
        rows.push(serde_json::json!({
            "variant": t.name, "runtime": t.runtime, "threads": a.threads, "p50_ms": p50, "p99_ms": p99,
            "p50_ms_per_round": t.p50_per_round, "speedup_vs_burn_f32": base / p50, "weight_bytes": t.weight_bytes,
            "kl_vs_f32_nats": t.kl, "same_bin_vs_f32": t.same_bin,
        }));
    }
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "policy": label, "parameters": n_params, "mflop_per_step": cfg.flops() as f64 / 1e6, "threads": a.threads,
            "rounds": a.rounds, "steps": a.steps, "int8_kernel": lapa_compress::kernel::int8_kernel().0,
            "calib_frames": a.calib_frames, "eval_frames": a.eval_frames, "onnx_bytes": {"f32": onnx_f32.len(), "int8": onnx_int8.len()},
            "variants": rows,
        });
        lapa_fs::atomic_write(path, serde_json::to_string_pretty(&v)?.as_bytes()).with_context(|| format!("--json {}", path.display()))?;
    }
    Ok(())
}
