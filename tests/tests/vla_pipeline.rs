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
    assert!(d < 1e-3, "two replicas end {d} away from one device");
    // Not vacuous: half the batch on one device (what each replica sees) trains differently.
    let mut halfbatch = ft.clone();
    halfbatch.batch_size /= 2;
    let hb = tmp.path().join("ft-half-batch");
    train(&halfbatch, &hb, &[device()], &cache, false, true).expect("half batch");
    let l3 = losses(&hb);
    assert!(l1.iter().zip(&l3).any(|(a, b)| (a - b).abs() > 1e-3), "half the batch logged the same losses {l3:?}");

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
    // Asking for more episodes than there are.
    let mut ft = tiny(StageKind::Finetune, arm.clone(), 2);
    ft.data.episodes = Some(5);
    let err = train(&ft, &run, &[device()], &cache, false, true).expect_err("too few episodes");
    assert!(format!("{err:#}").contains("asked for 5 episodes, the dataset has 2"), "{err:#}");
    // Latent pretraining without labels.
    let err = train(&tiny(StageKind::Latent, arm, 2), &run, &[device()], &cache, false, true).expect_err("no labels");
    assert!(format!("{err:#}").contains("one --labels folder per --data"), "{err:#}");
}
