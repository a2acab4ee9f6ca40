//! Stages 2 and 3 across crates: latent pretraining, the head swap, finetuning, resume through
//! the shared trainer, the eval harness, the policy wrapper, and bad input.

use std::path::{Path, PathBuf};

use lapa_dataset::VideoCodec;
use lapa_model::LaqConfig;
use lapa_model::burn::tensor::Device;
use lapa_model::policy::{Frame, PolicyInput};
use lapa_model::vla::{HeadConfig, VlaPolicy};
use lapa_sim::{Embodiment, Split};
use lapa_train::trainer::MODEL_DIR;
use lapa_train::vla::eval::{self, EvalOptions, ExpertAgent, PolicyAgent, RandomAgent};
use lapa_train::vla::{StageKind, VlaTrainConfig, train};

/// burn's seed is global to the process (see laq_pipeline.rs): one training at a time.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn training() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn device() -> Device {
    lapa_model::device("cpu").expect("cpu")
}

fn dataset(dir: &Path, emb: Embodiment, episodes: usize) -> PathBuf {
    let root = dir.join(format!("{}{episodes}", emb.name()));
    lapa_tests::record(&root, emb, episodes, VideoCodec::H264 { crf: 18 });
    root
}

/// Latent labels that are a pseudo-random function of (episode, frame): a test fixture, not a
/// LAQ's output, chosen so that fitting them means memorising every frame (a real tiny LAQ's
/// tokens can be nearly constant, which a model would fit without learning anything).
fn synthetic_labels(data: &Path, out: &Path, vocab: usize) -> usize {
    let ds = lapa_dataset::Dataset::open(data).expect("open");
    let laq = LaqConfig::tiny().with_codebook_size(vocab);
    let mut csv = String::from("episode,frame_index,valid,latent_0,latent_1,latent_2,latent_3\n");
    let mut frames = 0;
    for e in &ds.episodes {
        for t in 0..e.length {
            let h = |k: usize| ((e.index * 7919 + t * 104_729 + k * 1_299_709) * 2_654_435_761 % 4_294_967_291) % vocab;
            csv += &format!("{},{t},1,{},{},{},{}\n", e.index, h(0), h(1), h(2), h(3));
            frames += 1;
        }
    }
    std::fs::create_dir_all(out).expect("mkdir");
    std::fs::write(out.join("latent_actions.csv"), csv).expect("csv");
    let meta = serde_json::json!({ "n_tokens": 4, "vocabulary": vocab, "laq_config": laq, "frames": frames });
    std::fs::write(out.join("latent_actions.json"), serde_json::to_vec_pretty(&meta).expect("json")).expect("meta");
    frames
}

fn tiny(stage: StageKind, data: PathBuf, steps: u64) -> VlaTrainConfig {
    let mut c = VlaTrainConfig::new(stage, vec![data]);
    c.preset = "tiny".into();
    c.batch_size = 16;
    c.steps = steps;
    c.optimizer.lr = 2e-3;
    c.optimizer.warmup_steps = 10;
    c.optimizer.weight_decay = 0.0;
    c.log_every = 10;
    c.checkpoint_every = 1000;
    c.seed = 3;
    c.chunk = 2;
    c.bins = 16;
    c
}

/// The trunk's output (no head) of a run's model on a fixed frame and instruction.
fn context_probe(run: &Path) -> Vec<f32> {
    let (model, input) = probe_input(run);
    model.encode_context(input).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32")
}

/// The logits of a run's model on a fixed frame and instruction.
fn logits_probe(run: &Path) -> Vec<f32> {
    let (model, input) = probe_input(run);
    model.forward(input).into_data().convert::<f32>().try_into_vec::<f32>().expect("f32")
}

fn probe_input(run: &Path) -> (lapa_model::Vla, lapa_model::VlaInput) {
    use lapa_model::burn::tensor::{Int, Tensor, TensorData};
    let dev = device();
    let (cfg, model) = lapa_model::load_vla(&run.join(MODEL_DIR), &dev).expect("load");
    let img: Vec<u8> = (0..cfg.image_size * cfg.image_size * 3).map(|i| (i * 37 % 255) as u8).collect();
    let mut p = Vec::new();
    lapa_model::patchify(&img, cfg.image_size, cfg.patch_size, &mut p);
    let (ids, w) = cfg.text.tokenize("put the blue cube next to the red ball").expect("tokens");
    let l = ids.len();
    let input = lapa_model::VlaInput {
        patches: Tensor::from_data(TensorData::new(p, [1, cfg.n_patches(), cfg.patch_dim()]), &dev),
        text: lapa_model::vla::TextInput::Hashed {
            ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [1, l]), &dev),
            weights: Tensor::from_data(TensorData::new(w, [1, l]), &dev),
        },
        state: None,
    };
    (model, input)
}

fn last_metrics(run: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(run.join("metrics.csv")).expect("metrics");
    let last = text.lines().last().expect("a row");
    let v: Vec<f64> = last.split(',').map(|x| x.parse().expect("number")).collect();
    (v[1], v[2])
}

#[test]
fn latent_pretraining_memorises_a_handful_of_frames_then_finetuning_swaps_the_head_and_resumes_exactly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = dataset(tmp.path(), Embodiment::Arm, 2);
    let labels = tmp.path().join("labels");
    let frames = synthetic_labels(&data, &labels, 8);
    let cache = tmp.path().join("cache");
    let _g = training();

    // Stage 2: random tokens over 8 classes start at ln 8 ≈ 2.08 nats; memorising the frames
    // takes them near zero.
    let mut cfg = tiny(StageKind::Latent, data.clone(), 400);
    cfg.data.labels = vec![labels.clone()];
    let latent = tmp.path().join("latent");
    let s = train(&cfg, &latent, &[device()], &cache, false, true).expect("latent pretraining");
    assert_eq!(s.samples, frames);
    assert!(s.first_loss > 1.7, "first loss {}", s.first_loss);
    let (loss, acc) = last_metrics(&latent);
    assert!(loss < 0.3 && acc > 0.9, "did not memorise {frames} frames: loss {loss}, accuracy {acc}");
    let (lcfg, _) = lapa_model::load_vla(&latent.join(MODEL_DIR), &device()).expect("load latent run");
    assert_eq!(lcfg.head, HeadConfig::Latent { tokens: 4, vocabulary: 8 });

    // Stage 3 on one episode: the head becomes a 2-step chunk over 16 bins per joint.
    let mut ft = tiny(StageKind::Finetune, data.clone(), 40);
    ft.init = Some(latent.clone());
    ft.data.episodes = Some(1);
    let straight = tmp.path().join("ft-straight");
    train(&ft, &straight, &[device()], &cache, false, true).expect("finetune");
    let (fcfg, _) = lapa_model::load_vla(&straight.join(MODEL_DIR), &device()).expect("load");
    let HeadConfig::Action(head) = &fcfg.head else { panic!("finetuning kept the latent head") };
    assert_eq!((head.spec.chunk, head.bins, head.spec.names.len()), (2, 16, 6));
    assert_eq!(head.spec.names[0], "shoulder_pan");
    assert_eq!(head.spec.fps, 10.0);
    assert_eq!((fcfg.dim, fcfg.depth), (lcfg.dim, lcfg.depth), "the finetune's trunk is not the pretrained one's shape");

    // The finetune starts from the pretrained trunk's weights, not just its shape: one step at
    // a negligible learning rate leaves the trunk's output the latent run's, while a scratch
    // model's differs.
    let mut still = ft.clone();
    (still.steps, still.optimizer.lr) = (1, 1e-12);
    let ft0 = tmp.path().join("ft-still");
    train(&still, &ft0, &[device()], &cache, false, true).expect("one-step finetune");
    let mut scratch = still.clone();
    scratch.init = None;
    let sc0 = tmp.path().join("scratch-still");
    train(&scratch, &sc0, &[device()], &cache, false, true).expect("one-step scratch");
    let max_diff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (c_latent, c_ft, c_scratch) = (context_probe(&latent), context_probe(&ft0), context_probe(&sc0));
    assert!(max_diff(&c_latent, &c_ft) < 1e-4, "the finetune's trunk is not the pretrained one: {}", max_diff(&c_latent, &c_ft));
    assert!(max_diff(&c_latent, &c_scratch) > 1e-2, "a scratch trunk matches the pretrained one");

    // Resume: 20 steps, stop, 20 more = 40 straight, bit for bit.
    let mut half = ft.clone();
    half.steps = 20;
    half.checkpoint_every = 20;
    let resumed = tmp.path().join("ft-resumed");
    train(&half, &resumed, &[device()], &cache, false, true).expect("first half");
    let half_probe = logits_probe(&resumed);
    train(&ft, &resumed, &[device()], &cache, true, true).expect("resume");
    let m = |run: &Path| {
        std::fs::read_to_string(run.join("metrics.csv"))
            .expect("metrics")
            .lines()
            .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    assert_eq!(m(&straight), m(&resumed), "the resumed run logged other losses");
    let (a, b) = (logits_probe(&straight), logits_probe(&resumed));
    assert!(max_diff(&a, &b) < 1e-4, "resumed run differs from the straight one by {}", max_diff(&a, &b));
    // Not vacuous: the resumed steps 20..40 moved the model well beyond the tolerance.
    assert!(max_diff(&half_probe, &b) > 1e-2, "steps 20..40 moved the logits by only {}", max_diff(&half_probe, &b));
    assert!(straight.join("curves.png").is_file());

    // Data parallelism: two replicas (each half of every batch, on its own thread) train as the
    // one-device run does: the summed gradient of the halves is the batch's gradient.
    let dp = tmp.path().join("ft-two-replicas");
    train(&ft, &dp, &[device(), device()], &cache, false, true).expect("two replicas");
    let losses = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.csv"))
            .expect("metrics")
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).expect("loss").parse().expect("number"))
            .collect()
    };
    let (l1, l2) = (losses(&straight), losses(&dp));
    assert_eq!(l1.len(), l2.len());
    assert!(l1.iter().zip(&l2).all(|(a, b)| (a - b).abs() < 1e-4), "one device {l1:?}, two replicas {l2:?}");
    let d = max_diff(&a, &logits_probe(&dp));
    // Not vacuous: half the batch on one device (what each replica sees) trains differently.
    let mut halfbatch = ft.clone();
    halfbatch.batch_size /= 2;
    let hb = tmp.path().join("ft-half-batch");
    train(&halfbatch, &hb, &[device()], &cache, false, true).expect("half batch");
    let l3 = losses(&hb);
    assert!(l1.iter().zip(&l3).any(|(a, b)| (a - b).abs() > 1e-3), "half the batch logged the same losses {l3:?}");
    // Two replicas sum the gradients in another order than one device, and Adam carries that
    // rounding through every step: the end point is compared with how far a genuinely different
    // run (half the batch) ends, and with the logits' own scale.
    let dh = max_diff(&a, &logits_probe(&hb));
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("two replicas {d}, half batch {dh}, logit scale {scale}");
    assert!(d < 0.02 * dh && d < 1e-3 * scale.max(1.0), "two replicas end {d} away from one device (half the batch: {dh}; logits up to {scale})");

    // The finetuned policy drives the simulator through the eval harness and the policy trait;
    // frames of another size are resized as the camera spec says.
    let (cfg, model) = lapa_model::load_vla(&straight.join(MODEL_DIR), &device()).expect("load");
    let mut policy = VlaPolicy::new(cfg, model, device(), "tiny").expect("policy");
    let rgb = vec![90u8; 128 * 96 * 3];
    let input = PolicyInput { frame: Frame { width: 128, height: 96, rgb: &rgb }, state: &[0.0; 6], instruction: "push the red cube to the left", time_s: 0.0 };
    let chunk = lapa_model::Policy::infer(&mut policy, &input).expect("infer");
    assert_eq!((chunk.len(), chunk[0].len()), (2, 6));
    let long = "push ".repeat(40);
    assert!(lapa_model::Policy::infer(&mut policy, &PolicyInput { instruction: &long, ..input }).is_err_and(|e| e.to_string().contains("at most")));
    let short = PolicyInput { frame: Frame { width: 128, height: 96, rgb: &rgb[..100] }, ..input };
    assert!(lapa_model::Policy::infer(&mut policy, &short).is_err());
    let mut agent = PolicyAgent { policy, name: "tiny".into() };
    let mut opts = EvalOptions::new(Split::Seen, 3);
    opts.parallel = 2;
    let r = eval::evaluate(&mut agent, &opts).expect("eval");
    assert_eq!(r.total.rollouts, 3);
    assert_eq!(r.episodes.len(), 3);
}

#[test]
fn eval_harness_scores_the_expert_near_perfect_and_random_targets_near_zero() {
    let mut opts = EvalOptions::new(Split::Seen, 24);
    opts.parallel = 8;
    let expert = eval::evaluate(&mut ExpertAgent::default(), &opts).expect("expert");
    assert!(expert.total.rate >= 0.95, "{}", expert.table());
    assert_eq!(expert.per_family.len(), 6);
    assert!(expert.total.ci95[0] < expert.total.rate && expert.total.ci95[1] <= 1.0);
    let mut opts = EvalOptions::new(Split::UnseenObjects, 24);
    opts.parallel = 8;
    let random = eval::evaluate(&mut RandomAgent::new(1), &opts).expect("random");
    assert!(random.total.rate <= 0.1, "{}", random.table());
    // Rollouts of one seed are the same scenes for every agent.
    let again = eval::evaluate(&mut RandomAgent::new(1), &opts).expect("random again");
    assert_eq!(again.total, random.total);
    assert_eq!(again.episodes.iter().map(|e| e.seed).collect::<Vec<_>>(), random.episodes.iter().map(|e| e.seed).collect::<Vec<_>>());
}

#[test]
fn bad_training_input_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let arm = dataset(tmp.path(), Embodiment::Arm, 2);
    let hand = dataset(tmp.path(), Embodiment::Hand, 1);
    let cache = tmp.path().join("cache");
    let run = tmp.path().join("run");
    // A video-only dataset given to finetune.
    let err = train(&tiny(StageKind::Finetune, hand.clone(), 2), &run, &[device()], &cache, false, true).expect_err("hand data has no actions");
    assert!(format!("{err:#}").contains("no action feature"), "{err:#}");
    // Labels made for another dataset (other frame count).
    let labels = tmp.path().join("labels");
    synthetic_labels(&hand, &labels, 8);
    let mut cfg = tiny(StageKind::Latent, arm.clone(), 2);
    cfg.data.labels = vec![labels.clone()];
    let err = train(&cfg, &run, &[device()], &cache, false, true).expect_err("labels of another dataset");
    assert!(format!("{err:#}").contains("labels from another dataset"), "{err:#}");
    // A token outside the vocabulary the labels declare.
    let arm_labels = tmp.path().join("arm-labels");
    synthetic_labels(&arm, &arm_labels, 8);
    let csv = std::fs::read_to_string(arm_labels.join("latent_actions.csv")).expect("csv");
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    lines[1] = "0,0,1,9,0,0,0".into();
    std::fs::write(arm_labels.join("latent_actions.csv"), lines.join("\n") + "\n").expect("write");
    cfg.data.labels = vec![arm_labels];
    let err = train(&cfg, &run, &[device()], &cache, false, true).expect_err("token outside the vocabulary");
    assert!(format!("{err:#}").contains("line 2: latent_0 = 9 is outside the vocabulary of 8"), "{err:#}");
    // Labels whose header disagrees with the LAQ they say made them.
    let relabelled = tmp.path().join("arm-labels-2");
    synthetic_labels(&arm, &relabelled, 8);
    let mpath = relabelled.join("latent_actions.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).expect("meta")).expect("json");
    meta["n_tokens"] = 3.into();
    std::fs::write(&mpath, serde_json::to_vec(&meta).expect("json")).expect("write");
    cfg.data.labels = vec![relabelled.clone()];
    let err = train(&cfg, &run, &[device()], &cache, false, true).expect_err("header against laq_config");
    assert!(format!("{err:#}").contains("n_tokens 3 and vocabulary 8 disagree with its laq_config (4 tokens, vocabulary 8)"), "{err:#}");
    // Two sources labelled by different LAQs (here: codebooks of 8 and 16).
    synthetic_labels(&arm, &relabelled, 8);
    let hand_labels = tmp.path().join("hand-labels-16");
    synthetic_labels(&hand, &hand_labels, 16);
    let mut two = tiny(StageKind::Latent, arm.clone(), 2);
    two.data.data = vec![arm.clone(), hand.clone()];
    two.data.labels = vec![relabelled, hand_labels];
    let err = train(&two, &run, &[device()], &cache, false, true).expect_err("labels from two LAQs");
    assert!(format!("{err:#}").contains("labels from different LAQs"), "{err:#}");
    // Asking for more episodes than there are.
    let mut ft = tiny(StageKind::Finetune, arm.clone(), 2);
    ft.data.episodes = Some(5);
    let err = train(&ft, &run, &[device()], &cache, false, true).expect_err("too few episodes");
    assert!(format!("{err:#}").contains("asked for 5 episodes, the dataset has 2"), "{err:#}");
    // Latent pretraining without labels.
    let err = train(&tiny(StageKind::Latent, arm, 2), &run, &[device()], &cache, false, true).expect_err("no labels");
    assert!(format!("{err:#}").contains("one --labels folder per --data"), "{err:#}");
}

/// The VPT baseline end to end: an inverse-dynamics model on two labeled episodes learns the
/// action between a frame and the next, labels video (its own episodes, a held-out one, and a
/// hand dataset without actions), and action pretraining trains on those pseudo-actions.
#[test]
fn vpt_idm_pseudo_labels_video_that_action_pretraining_trains_on() {
    use lapa_train::vla::vpt::{self, LabelOptions, PSEUDO_CSV, PSEUDO_META, PseudoActions, PseudoMeta};
    let tmp = tempfile::tempdir().expect("tmp");
    let arm = dataset(tmp.path(), Embodiment::Arm, 3);
    let hand = dataset(tmp.path(), Embodiment::Hand, 1);
    let cache = tmp.path().join("cache");
    let _g = training();

    // The IDM predicts one absolute action: anything else is refused before training.
    let mut bad = tiny(StageKind::Idm, arm.clone(), 2);
    bad.chunk = 2;
    let err = train(&bad, &tmp.path().join("bad"), &[device()], &cache, false, true).expect_err("chunk 2");
    assert!(format!("{err:#}").contains("chunk 1"), "{err:#}");

    let mut cfg = tiny(StageKind::Idm, arm.clone(), 300);
    cfg.chunk = 1;
    cfg.data.episodes = Some(2);
    let idm = tmp.path().join("idm");
    let s = train(&cfg, &idm, &[device()], &cache, false, true).expect("idm");
    assert!(s.last_loss < 0.5 * s.first_loss, "the IDM did not fit its two episodes: loss {} -> {}", s.first_loss, s.last_loss);
    let (icfg, _) = lapa_model::load_vla(&idm.join(MODEL_DIR), &device()).expect("load idm");
    assert_eq!(icfg.frames, 2);
    assert_eq!(icfg.patch_dim(), 2 * icfg.patch_size * icfg.patch_size * 3);

    // The IDM's batches pair each frame with the next one of its episode (the last with itself)
    // and leave the single-frame batch unchanged: the first half of every stacked patch is it.
    {
        use lapa_train::vla::data::{BatchSpec, LoadSpec, TargetKind, load, make_batch};
        let kind = TargetKind::Action { chunk: 1, target: lapa_model::vla::ActionTarget::Absolute };
        let data = [arm.clone()];
        let pool = load(&LoadSpec {
            data: &data,
            labels: &[],
            action_labels: &[],
            unlabeled: &[],
            camera: None,
            side: icfg.image_size,
            cache_dir: &cache,
            kind,
            episodes: None,
            need_state: false,
            text: &icfg.text,
            quiet: true,
        })
        .expect("pool");
        let line: Vec<f32> = (0..200).map(|i| i as f32 - 100.0).collect();
        let bins = vec![lapa_model::bins::QuantileBins::fit(&line, 8).expect("bins"); 6];
        let spec = |frames: usize, crop: f32| BatchSpec {
            batch_size: 24,
            side: icfg.image_size,
            patch: icfg.patch_size,
            seed: 11,
            kind,
            bins: bins.clone(),
            latent_norm: None,
            state_norm: None,
            crop,
            frames,
        };
        let half = icfg.patch_size * icfg.patch_size * 3;
        let split = |p: &[f32]| -> (Vec<f32>, Vec<f32>) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for c in p.chunks(2 * half) {
                a.extend_from_slice(&c[..half]);
                b.extend_from_slice(&c[half..]);
            }
            (a, b)
        };
        let patches = |f: &[u8]| {
            let mut v = Vec::new();
            lapa_model::patchify(f, icfg.image_size, icfg.patch_size, &mut v);
            v
        };
        for crop in [0.0, 0.3] {
            let (one, two) = (make_batch(&pool, &spec(1, crop), 5), make_batch(&pool, &spec(2, crop), 5));
            assert_eq!(two.patches.len(), 2 * one.patches.len());
            let (first, second) = split(&two.patches);
            assert_eq!(first, one.patches, "crop {crop}: frame t of the pair is not the single-frame batch");
            if crop == 0.0 {
                let per = one.patches.len() / one.size;
                for k in 0..one.size {
                    let (x, y) = (&first[k * per..(k + 1) * per], &second[k * per..(k + 1) * per]);
                    let found = pool.episodes[0].iter().any(|e| {
                        (0..e.len).any(|t| {
                            let nt = (t + 1).min(e.len - 1);
                            patches(pool.caches[0].frame(e.start + t)) == x && patches(pool.caches[0].frame(e.start + nt)) == y
                        })
                    });
                    assert!(found, "sample {k}: the second frame is not the next one of its episode");
                }
            }
        }
    }

    // Labelling the arm data: every frame, checked against the true actions.
    let labels = tmp.path().join("vpt-arm");
    let opts = |data: &Path, out: &Path| LabelOptions {
        idm: idm.clone(),
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        camera: None,
        cache_dir: cache.clone(),
        batch: 7,
        quiet: true,
    };
    let meta = vpt::label(&opts(&arm, &labels), &device()).expect("label arm");
    let ds = lapa_dataset::Dataset::open(&arm).expect("open");
    let frames: usize = ds.episodes.iter().map(|e| e.length).sum();
    assert_eq!(meta.frames, frames);
    let check = meta.check.clone().expect("the arm data has actions");
    assert_eq!(check.train_episodes, Some(2));
    assert_eq!(check.heldout_frames, ds.episodes[2].length);
    // On its training episodes the IDM beats predicting each joint's mean action.
    let mut truth = Vec::new();
    for k in 0..2 {
        truth.extend(ds.episode(k, false).expect("episode").action.expect("actions").data);
    }
    let d = meta.names.len();
    let rows = truth.len() / d;
    let mean_mae: f64 = (0..d)
        .map(|j| {
            let m = (0..rows).map(|r| f64::from(truth[r * d + j])).sum::<f64>() / rows as f64;
            (0..rows).map(|r| (f64::from(truth[r * d + j]) - m).abs()).sum::<f64>() / rows as f64
        })
        .sum::<f64>()
        / d as f64;
    let idm_mae = check.mae_train.as_ref().expect("training frames").iter().sum::<f64>() / d as f64;
    assert!(idm_mae < 0.5 * mean_mae, "IDM error {idm_mae:.3} vs the mean predictor's {mean_mae:.3}");
    let read = PseudoActions::read(&labels).expect("read back");
    // JSON keeps the figures to the last digit or so (serde_json's float parsing is not exact).
    let close = |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-9 * x.abs().max(1.0));
    let rc = read.meta.check.clone().expect("the check is kept");
    let (rt, ct) = (rc.mae_train.as_deref().unwrap_or_default(), check.mae_train.as_deref().unwrap_or_default());
    let (rh, ch) = (rc.mae_heldout.as_deref().unwrap_or_default(), check.mae_heldout.as_deref().unwrap_or_default());
    assert!(!ch.is_empty() && close(rt, ct) && close(rh, ch), "{rc:?} vs {check:?}");
    assert_eq!(PseudoMeta { check: None, ..read.meta.clone() }, PseudoMeta { check: None, ..meta.clone() });
    assert_eq!(read.episode(ds.episodes[0].index, ds.episodes[0].length).expect("episode 0").len(), ds.episodes[0].length * d);

    // Video without actions: the hand data gets labels too, and action pretraining takes them
    // where it refuses the bare dataset.
    let hand_labels = tmp.path().join("vpt-hand");
    let hmeta = vpt::label(&opts(&hand, &hand_labels), &device()).expect("label hand");
    assert!(hmeta.check.is_none());
    let run = tmp.path().join("pre-vpt");
    let err = train(&tiny(StageKind::Action, hand.clone(), 5), &run, &[device()], &cache, false, true).expect_err("bare hand data");
    assert!(format!("{err:#}").contains("no action feature"), "{err:#}");
    let mut pre = tiny(StageKind::Action, hand.clone(), 20);
    pre.data.action_labels = vec![hand_labels.clone()];
    let s = train(&pre, &run, &[device()], &cache, false, true).expect("pretraining on pseudo-actions");
    assert!(s.last_loss.is_finite() && s.last_loss < s.first_loss, "loss {} -> {}", s.first_loss, s.last_loss);
    let (pcfg, _) = lapa_model::load_vla(&run.join(MODEL_DIR), &device()).expect("load");
    assert_eq!(pcfg.frames, 1);
    let HeadConfig::Action(head) = &pcfg.head else { panic!("not an action head") };
    assert_eq!(head.spec.names, meta.names);

    // Labels of another dataset, a damaged row and a missing description are named.
    pre.data.action_labels = vec![labels.clone()];
    let err = train(&pre, &run.with_extension("x"), &[device()], &cache, false, true).expect_err("arm labels for hand data");
    assert!(format!("{err:#}").contains("labels of another dataset"), "{err:#}");
    // Labels at another rate, or naming other joints, than the dataset they label.
    let meta_path = labels.join(PSEUDO_META);
    let original = std::fs::read(&meta_path).expect("meta");
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&original).expect("json");
        f(&mut v);
        std::fs::write(&meta_path, serde_json::to_vec(&v).expect("json")).expect("write");
    };
    let mut on_arm = tiny(StageKind::Action, arm.clone(), 2);
    on_arm.data.action_labels = vec![labels.clone()];
    let arm_run = tmp.path().join("pre-arm");
    edit(&|v| v["fps"] = 15.0.into());
    let err = train(&on_arm, &arm_run, &[device()], &cache, false, true).expect_err("labels at 15 fps for 10 fps data");
    assert!(format!("{err:#}").contains("pseudo-actions at 15 fps"), "{err:#}");
    // The CSV header and the description agree (the reader checks that), but not with the data.
    let csv_path = labels.join(PSEUDO_CSV);
    let csv_original = std::fs::read_to_string(&csv_path).expect("csv");
    let (header, rows) = csv_original.split_once('\n').expect("header line");
    assert!(header.contains("shoulder_pan"), "{header}");
    std::fs::write(&csv_path, format!("{}\n{rows}", header.replacen("shoulder_pan", "shoulder_yaw", 1))).expect("write");
    edit(&|v| v["names"][0] = "shoulder_yaw".into());
    let err = train(&on_arm, &arm_run, &[device()], &cache, false, true).expect_err("labels naming another joint");
    assert!(format!("{err:#}").contains("pseudo-actions named [\"shoulder_yaw\""), "{err:#}");
    std::fs::write(&meta_path, &original).expect("restore");
    std::fs::write(&csv_path, &csv_original).expect("restore");
    let csv = std::fs::read_to_string(hand_labels.join(PSEUDO_CSV)).expect("csv");
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    lines[2] = format!("0,1,NaN{}", ",0".repeat(d - 1));
    std::fs::write(hand_labels.join(PSEUDO_CSV), lines.join("\n") + "\n").expect("write");
    let err = PseudoActions::read(&hand_labels).expect_err("NaN");
    assert!(format!("{err:#}").contains("line 3"), "{err:#}");
    // A short row, a row twice, a row missing.
    let damaged = |edit: &dyn Fn(&mut Vec<String>), want: &str| {
        let mut l: Vec<String> = csv.lines().map(String::from).collect();
        edit(&mut l);
        std::fs::write(hand_labels.join(PSEUDO_CSV), l.join("\n") + "\n").expect("write");
        let err = PseudoActions::read(&hand_labels).expect_err(want);
        assert!(format!("{err:#}").contains(want), "{want}: {err:#}");
    };
    damaged(&|l| l[4] = l[4].rsplit_once(',').expect("fields").0.to_string(), "line 5");
    damaged(&|l| l[4] = l[3].clone(), "appears twice");
    damaged(&|l| drop(l.remove(4)), "rows but");
    std::fs::write(hand_labels.join(PSEUDO_CSV), &csv).expect("restore");
    assert!(PseudoActions::read(&hand_labels).is_ok());
    std::fs::remove_file(hand_labels.join(PSEUDO_META)).expect("rm");
    let err = PseudoActions::read(&hand_labels).expect_err("no description");
    assert!(format!("{err:#}").contains("incomplete"), "{err:#}");

    // The IDM is not a policy: it neither drives the arm nor initialises a finetune.
    let (c, m) = lapa_model::load_vla(&idm.join(MODEL_DIR), &device()).expect("load");
    let Err(err) = VlaPolicy::new(c, m, device(), "idm") else { panic!("the IDM was taken as a policy") };
    assert!(err.to_string().contains("inverse-dynamics"), "{err}");
    let mut ft = tiny(StageKind::Finetune, arm.clone(), 2);
    ft.init = Some(idm.clone());
    let err = train(&ft, &tmp.path().join("ft"), &[device()], &cache, false, true).expect_err("finetune from the IDM");
    assert!(format!("{err:#}").contains("inverse-dynamics"), "{err:#}");
}

/// The continuous-latent ablation end to end: `lapa laq label --continuous` writes the LAQ's
/// pre-quantisation latents beside the same tokens (quantizing the written latents gives the
/// written tokens), the policy memorises them by regression, a finetune swaps the regression
/// head for an action head, and damaged latent files are named.
#[test]
fn continuous_latent_pretraining_regresses_the_laqs_prequantised_latents_then_finetunes() {
    use lapa_model::burn::tensor::{Tensor, TensorData};
    use lapa_train::laq::label::{self, CONTINUOUS_CSV, LABELS_CSV};
    let tmp = tempfile::tempdir().expect("tmp");
    let data = dataset(tmp.path(), Embodiment::Arm, 2);
    let cache = tmp.path().join("cache");
    let dev = device();
    let _g = training();
    // A LAQ run holding the tiny config's initial weights: what is tested here is the labelling
    // and the regression, not the LAQ's training (laq_pipeline.rs).
    let laq_run = tmp.path().join("laq");
    let laq_cfg = LaqConfig::tiny();
    dev.seed(11);
    lapa_model::artifact::save_laq(&laq_run.join(MODEL_DIR), &laq_cfg, &laq_cfg.init(&dev).expect("init LAQ")).expect("save LAQ");
    let tokens_only = tmp.path().join("tokens-only");
    label::run(&laq_run, &data, None, 0.6, &tokens_only, &cache, &dev, 16, false, true).expect("label");
    assert!(!tokens_only.join(CONTINUOUS_CSV).exists());
    let labels = tmp.path().join("labels");
    let meta = label::run(&laq_run, &data, None, 0.6, &labels, &cache, &dev, 16, true, true).expect("label --continuous");
    assert_eq!(meta.continuous_dim, Some(laq_cfg.code_dim));
    let csv = |dir: &Path, f: &str| std::fs::read_to_string(dir.join(f)).expect("csv");
    assert_eq!(csv(&labels, LABELS_CSV), csv(&tokens_only, LABELS_CSV), "writing the latents changed the tokens");
    // The written latents are the quantizer's input: quantizing them again gives the tokens.
    let (_, laq) = lapa_model::load_laq(&laq_run.join(MODEL_DIR), &dev).expect("load LAQ");
    let (t, c) = (laq_cfg.n_tokens, laq_cfg.code_dim);
    let ztext = csv(&labels, CONTINUOUS_CSV);
    let ttext = csv(&labels, LABELS_CSV);
    let rows: Vec<(Vec<f32>, Vec<i64>)> = ztext
        .lines()
        .skip(1)
        .zip(ttext.lines().skip(1))
        .map(|(z, k)| (z.split(',').skip(3).map(|v| v.parse().expect("z")).collect(), k.split(',').skip(3).map(|v| v.parse().expect("token")).collect()))
        .collect();
    assert_eq!(rows.len(), meta.frames);
    assert!(rows.iter().all(|(z, k)| z.len() == t * c && k.len() == t));
    let z: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
    let (_, idx) = laq.quantizer.forward_eval(Tensor::from_data(TensorData::new(z, [rows.len() * t, c]), &dev));
    let requantized = idx.into_data().convert::<i64>().try_into_vec::<i64>().expect("i64");
    assert_eq!(requantized, rows.iter().flat_map(|r| r.1.clone()).collect::<Vec<_>>());
    let distinct = rows.iter().map(|r| format!("{:?}", r.0)).collect::<std::collections::BTreeSet<_>>().len();
    assert!(distinct > meta.frames / 4, "only {distinct} distinct latents over {} frames: nothing to regress", meta.frames);

    // Pretraining: standardised targets start near MSE 1 and are memorised.
    let mut cfg = tiny(StageKind::LatentContinuous, data.clone(), 300);
    cfg.data.labels = vec![labels.clone()];
    let run = tmp.path().join("continuous");
    let s = train(&cfg, &run, &[device()], &cache, false, true).expect("continuous pretraining");
    assert_eq!(s.samples, meta.valid);
    let (loss, r2) = last_metrics(&run);
    assert!(s.first_loss > 0.5 && loss < 0.25 * f64::from(s.first_loss) && r2 > 0.7, "first loss {}, last {loss}, 1 − MSE {r2}", s.first_loss);
    let (pcfg, _) = lapa_model::load_vla(&run.join(MODEL_DIR), &device()).expect("load");
    let HeadConfig::Continuous { tokens, dim, mean, std } = &pcfg.head else { panic!("not a continuous head: {:?}", pcfg.head) };
    assert_eq!((*tokens, *dim, mean.len(), std.len()), (t, c, t * c, t * c));

    // Finetuning swaps the regression head for the action head.
    let mut ft = tiny(StageKind::Finetune, data.clone(), 10);
    ft.init = Some(run.clone());
    ft.data.episodes = Some(1);
    let ftrun = tmp.path().join("ft");
    train(&ft, &ftrun, &[device()], &cache, false, true).expect("finetune from the continuous run");
    let (fcfg, _) = lapa_model::load_vla(&ftrun.join(MODEL_DIR), &device()).expect("load");
    assert!(matches!(fcfg.head, HeadConfig::Action(_)));

    // Bad input: labels without latents, a value that is not a number, files of two labellings.
    let bad_run = tmp.path().join("bad");
    let mut no_latents = cfg.clone();
    no_latents.data.labels = vec![tokens_only];
    let err = train(&no_latents, &bad_run, &[device()], &cache, false, true).expect_err("labels without latents");
    assert!(format!("{err:#}").contains("--continuous"), "{err:#}");
    let mut lines: Vec<String> = ztext.lines().map(String::from).collect();
    let valid_row = lines.iter().position(|l| l.split(',').nth(2) == Some("1")).expect("a valid row");
    let orig = lines[valid_row].clone();
    let mut f: Vec<&str> = orig.split(',').collect();
    f[4] = "NaN";
    lines[valid_row] = f.join(",");
    std::fs::write(labels.join(CONTINUOUS_CSV), lines.join("\n") + "\n").expect("write");
    let err = train(&cfg, &bad_run, &[device()], &cache, false, true).expect_err("NaN latent");
    assert!(format!("{err:#}").contains(&format!("line {}: z_1 = \"NaN\" is not a finite number", valid_row + 1)), "{err:#}");
    let mut f: Vec<&str> = orig.split(',').collect();
    f[2] = "0";
    lines[valid_row] = f.join(",");
    std::fs::write(labels.join(CONTINUOUS_CSV), lines.join("\n") + "\n").expect("write");
    let err = train(&cfg, &bad_run, &[device()], &cache, false, true).expect_err("valid flags disagree");
    assert!(format!("{err:#}").contains("files of two labellings"), "{err:#}");
}

#[test]
fn distillation_teaches_a_student_what_its_labels_alone_cannot() {
    use lapa_train::vla::train::{DistillConfig, offline_score};
    let tmp = tempfile::tempdir().expect("tmp");
    let data = dataset(tmp.path(), Embodiment::Arm, 6);
    let cache = tmp.path().join("cache");
    let _g = training();

    // The teacher: the tiny policy trained on all six episodes' actions.
    let teacher = tmp.path().join("teacher");
    train(&tiny(StageKind::Finetune, data.clone(), 300), &teacher, &[device()], &cache, false, true).expect("teacher");
    let score = |run: &Path| offline_score(&run.join(MODEL_DIR), &data, None, &cache, &device()).expect("score");
    let t = score(&teacher);

    // Two students of the same size, bins, batches and steps, with the labels of episode 0
    // only: one learns from those labels alone (label weight 1: the teacher lends its head, its
    // KL weighs nothing; every sample of every batch is labeled), the other also from the
    // teacher's distributions on the frames of all six episodes. Both are scored on the six.
    let student = |label_weight: f32, unlabeled: Vec<PathBuf>, name: &str| {
        let mut c = tiny(StageKind::Distill, data.clone(), 300);
        c.data.episodes = Some(1);
        c.data.unlabeled = unlabeled;
        c.distill = Some(DistillConfig { label_weight, ..DistillConfig::new(teacher.clone()) });
        let run = tmp.path().join(name);
        let s = train(&c, &run, &[device()], &cache, false, true).expect(name);
        (run, s)
    };
    let (labels_only, _) = student(1.0, Vec::new(), "labels-only");
    let (distilled, s) = student(0.5, vec![data.clone()], "distilled");
    let (l, d) = (score(&labels_only), score(&distilled));
    eprintln!("teacher {t:?}\nlabels only {l:?}\ndistilled {d:?}");
    // Every frame of the six episodes is a sample (labeled episode 0 twice: labeled and not).
    let frames = l.targets / (2 * 6);
    assert!(s.samples > frames && s.samples < 2 * frames, "{} samples from {frames} frames", s.samples);
    let (cfg, _) = lapa_model::load_vla(&distilled.join(MODEL_DIR), &device()).expect("student");
    let (tcfg, _) = lapa_model::load_vla(&teacher.join(MODEL_DIR), &device()).expect("teacher");
    assert_eq!(cfg.head, tcfg.head, "a student keeps its teacher's head (bins, chunk, targets)");
    assert!(t.bin_accuracy > 0.5, "the teacher did not learn its episodes: {t:?}");
    assert!(d.bin_accuracy > l.bin_accuracy + 0.15, "distilled {d:?} vs labels only {l:?}");
    assert!(d.mae < 0.75 * l.mae, "distilled {d:?} vs labels only {l:?}");
    // Its metrics' accuracy column is the agreement with the teacher's bins.
    let (_, agree) = last_metrics(&distilled);
    assert!(agree > 0.5, "the student agrees with its teacher on {agree} of the bins");

    // Misuse is named: a teacher without an action head, and a student asking for other bins.
    let mut bad = tiny(StageKind::Distill, data.clone(), 1);
    bad.distill = Some(DistillConfig::new(tmp.path().join("nowhere")));
    let e = train(&bad, &tmp.path().join("bad1"), &[device()], &cache, false, true).expect_err("no teacher");
    assert!(format!("{e:#}").contains("nowhere"), "{e:#}");
    bad.distill = Some(DistillConfig::new(teacher.clone()));
    bad.bins = 32;
    let e = train(&bad, &tmp.path().join("bad2"), &[device()], &cache, false, true).expect_err("other bins");
    assert!(format!("{e:#}").contains("a student takes its teacher's"), "{e:#}");
    bad.bins = 16;
    bad.distill = Some(DistillConfig { temperature: 0.0, ..DistillConfig::new(teacher.clone()) });
    let e = train(&bad, &tmp.path().join("bad3"), &[device()], &cache, false, true).expect_err("temperature 0");
    assert!(format!("{e:#}").contains("temperature"), "{e:#}");
    // The run records its teacher's weights; a changed teacher is refused on resume.
    let saved: VlaTrainConfig = serde_json::from_slice(&std::fs::read(distilled.join("train.json")).expect("train.json")).expect("json");
    let sha = saved.distill.as_ref().and_then(|d| d.teacher_sha256.clone()).expect("teacher hash recorded");
    assert_eq!(sha.len(), 64);
    let mut changed = saved.clone();
    changed.distill = Some(DistillConfig { teacher_sha256: Some("0".repeat(64)), ..saved.distill.clone().expect("distill") });
    changed.steps = 310;
    let e = train(&changed, &distilled, &[device()], &cache, true, true).expect_err("changed teacher");
    assert!(format!("{e:#}").contains("changed since this run started"), "{e:#}");
}
