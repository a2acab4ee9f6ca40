//! Stage 1 across crates: frame cache, readers, resume, labelling, report, and bad input.

use std::path::{Path, PathBuf};

use lapa_dataset::VideoCodec;
use lapa_model::burn::tensor::{Device, Tensor, TensorData};
use lapa_model::{LaqConfig, patchify};
use lapa_sim::Embodiment;
use lapa_train::laq::cache::{FrameCache, Source, resize_square};
use lapa_train::laq::{self, Augment, LaqTrainConfig};

/// burn's seed is global to the process, and these tests run in parallel threads: a test that
/// trains holds this lock, so another's initialisation cannot draw from its seeded stream (each
/// `lapa` command trains once per process, so the product has one stream per run).
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn training() -> std::sync::MutexGuard<'static, ()> {
    TRAINING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn device() -> Device {
    lapa_model::device("cpu").expect("cpu")
}

fn arm_dataset(dir: &Path, episodes: usize) -> PathBuf {
    let root = dir.join(format!("arm{episodes}"));
    lapa_tests::record(&root, Embodiment::Arm, episodes, VideoCodec::H264 { crf: 18 });
    root
}

fn tiny_cfg(data: PathBuf, steps: u64) -> LaqTrainConfig {
    let mut c = LaqTrainConfig::lapa(vec![data], 0.6);
    c.batch_size = 8;
    c.steps = steps;
    c.lr = 1e-3;
    c.log_every = 2;
    c.checkpoint_every = 100;
    c.seed = 5;
    c.augment = Augment { crop: 0.1, brightness: 0.05, contrast: 0.05 };
    c
}

#[test]
fn frame_cache_round_trips_and_is_keyed_by_content() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = arm_dataset(tmp.path(), 2);
    let cache_dir = tmp.path().join("cache");
    let src = Source::detect(&data, None).expect("detect");
    let c64 = FrameCache::open_or_build(&src, 64, &cache_dir, true).expect("build");
    let ds = lapa_dataset::Dataset::open(&data).expect("open");
    let ep = ds.episode(1, true).expect("episode");
    let frames = ep.videos.values().next().expect("video");
    let clip = &c64.meta.clips[1];
    assert_eq!(clip.len, frames.count);
    for t in [0, clip.len / 2, clip.len - 1] {
        assert_eq!(c64.frame(clip.start + t), frames.frame(t), "frame {t} differs from the decoded episode");
    }
    // A second open maps the same file instead of decoding again.
    let data_file = cache_dir.join(format!("{}.frames", c64.meta.key));
    let before = std::fs::metadata(&data_file).and_then(|m| m.modified()).expect("mtime");
    let again = FrameCache::open_or_build(&src, 64, &cache_dir, true).expect("reopen");
    assert_eq!(again.meta, c64.meta);
    assert_eq!(std::fs::metadata(&data_file).and_then(|m| m.modified()).expect("mtime"), before);
    // Another resolution is another cache, box-filtered from the same frames.
    let c32 = FrameCache::open_or_build(&src, 32, &cache_dir, true).expect("32");
    assert_ne!(c32.meta.key, c64.meta.key);
    assert_eq!(c32.frame(clip.start + 3), resize_square(frames.frame(3), 64, 64, 32).expect("resize").as_slice());
    // Changed content, changed key: the same folder replaced by a valid dataset with one more
    // episode (same file names, other bytes) is decoded again under a new key.
    let edited = arm_dataset(tmp.path(), 3);
    std::fs::remove_dir_all(&data).expect("remove the old dataset");
    std::fs::rename(&edited, &data).expect("move the edited dataset in place");
    let src2 = Source::detect(&data, None).expect("detect");
    let c3 = FrameCache::open_or_build(&src2, 64, &cache_dir, true).expect("cache of the edited dataset");
    assert_ne!(c3.meta.key, c64.meta.key, "the edited dataset got the old cache key");
    assert_eq!(c3.meta.clips.len(), 3, "the cache of the edited dataset holds its three episodes");
}

#[test]
fn video_folder_and_dataset_readers_give_identical_pairs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = arm_dataset(tmp.path(), 1);
    let ds = lapa_dataset::Dataset::open(&data).expect("open");
    let (video, start) = ds.episodes[0].videos.values().next().expect("video").clone();
    assert_eq!(start, 0.0);
    let folder = tmp.path().join("clips");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::copy(&video, folder.join("clip.mp4")).expect("copy");
    let cache_dir = tmp.path().join("cache");
    let a = FrameCache::open_or_build(&Source::detect(&data, None).expect("ds"), 64, &cache_dir, true).expect("ds cache");
    let b = FrameCache::open_or_build(&Source::detect(&folder, None).expect("folder"), 64, &cache_dir, true).expect("folder cache");
    assert_eq!(b.meta.kind, laq::SourceKind::VideoFolder);
    let (pa, pb) = (a.pairs(0.6).expect("pairs"), b.pairs(0.6).expect("pairs"));
    assert!(!pa.is_empty());
    assert_eq!(pa, pb);
    for p in &pa {
        assert_eq!(a.frame(p.a), b.frame(p.a));
        assert_eq!(a.frame(p.b), b.frame(p.b));
    }
}

fn weights_probe(run: &Path) -> Vec<f32> {
    let dev = device();
    let (cfg, model) = lapa_model::load_laq(&run.join("model"), &dev).expect("load");
    let img: Vec<u8> = (0..cfg.image_size * cfg.image_size * 3).map(|i| (i * 37 % 255) as u8).collect();
    let img2: Vec<u8> = img.iter().map(|v| v.wrapping_add(40)).collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    patchify(&img, cfg.image_size, cfg.patch_size, &mut a);
    patchify(&img2, cfg.image_size, cfg.patch_size, &mut b);
    let shape = [1, cfg.n_patches(), cfg.patch_dim()];
    let z = model.encode_latents(Tensor::from_data(TensorData::new(a.clone(), shape), &dev), Tensor::from_data(TensorData::new(b, shape), &dev));
    let r = model.decode(Tensor::from_data(TensorData::new(a, shape), &dev), Tensor::zeros([1, cfg.n_tokens, cfg.dim], &dev));
    let mut v: Vec<f32> = z.into_data().convert::<f32>().try_into_vec().expect("f32");
    v.extend(r.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32"));
    v
}

#[test]
fn resume_is_equivalent_to_an_uninterrupted_run() {
    let _training = training();
    let tmp = tempfile::tempdir().expect("tmp");
    let data = arm_dataset(tmp.path(), 2);
    let cache = tmp.path().join("cache");
    let dev = device();
    let straight = tmp.path().join("straight");
    let s = laq::train(&tiny_cfg(data.clone(), 12), &LaqConfig::tiny(), &straight, &dev, &cache, false, true).expect("train");
    assert!(s.last_loss.is_finite());
    let split = tmp.path().join("split");
    laq::train(&tiny_cfg(data.clone(), 5), &LaqConfig::tiny(), &split, &dev, &cache, false, true).expect("first half");
    let half = weights_probe(&split);
    let resumed = laq::train(&tiny_cfg(data.clone(), 12), &LaqConfig::tiny(), &split, &dev, &cache, true, true).expect("resume");
    let max_diff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let (a, b) = (weights_probe(&straight), weights_probe(&split));
    let max = max_diff(&a, &b);
    assert!(max < 1e-4, "resumed run differs from the straight one by {max}");
    // The comparison is not vacuous: training moves the weights well beyond the tolerance (so two
    // untrained models would not pass), the resumed steps 5..12 change them (so the match is not
    // just the step-5 checkpoint), and the resumed run began at the checkpoint, not over from
    // step 0 (its first loss is not the straight run's first loss).
    let init = tmp.path().join("init");
    laq::train(&tiny_cfg(data, 0), &LaqConfig::tiny(), &init, &dev, &cache, false, true).expect("zero steps: the initial model");
    let moved = max_diff(&weights_probe(&init), &a);
    assert!(moved > 100.0 * 1e-4, "12 steps moved the weights by only {moved}: the resume comparison is vacuous");
    let resumed_moved = max_diff(&half, &b);
    assert!(resumed_moved > 100.0 * 1e-4, "the resumed steps 5..12 moved the weights by only {resumed_moved}");
    assert_ne!(resumed.first_loss, s.first_loss, "the resumed run's first step repeats step 0: it started over instead of continuing from the checkpoint");
    let csv = std::fs::read_to_string(split.join("metrics.csv")).expect("csv");
    let steps: Vec<&str> = csv.lines().skip(1).filter_map(|l| l.split(',').next()).collect();
    assert_eq!(steps, ["2", "4", "5", "6", "8", "10", "12"], "metrics rows after resume: {csv}");
    assert!(split.join("curves.png").is_file());
}

#[test]
fn tiny_run_labels_and_reports() {
    let _training = training();
    let tmp = tempfile::tempdir().expect("tmp");
    let data = arm_dataset(tmp.path(), 6);
    let cache = tmp.path().join("cache");
    let dev = device();
    let run = tmp.path().join("run");
    laq::train(&tiny_cfg(data.clone(), 20), &LaqConfig::tiny(), &run, &dev, &cache, false, true).expect("train");
    let out = tmp.path().join("labels");
    let meta = laq::label::run(&run, &data, None, 0.6, &out, &cache, &dev, 32, false, true).expect("label");
    let csv = std::fs::read_to_string(out.join("latent_actions.csv")).expect("csv");
    assert_eq!(csv.lines().count(), meta.frames + 1);
    let ds = lapa_dataset::Dataset::open(&data).expect("open");
    assert_eq!(meta.frames, ds.episodes.iter().map(|e| e.length).sum::<usize>());
    assert!(meta.valid < meta.frames && meta.valid > 0);
    let opts = laq::report::ReportOptions {
        run: run.clone(),
        data: data.clone(),
        camera: None,
        spacing_s: 0.6,
        cache_dir: cache,
        out: run.join("report"),
        max_pairs: 10_000,
        probe_steps: 30,
        quiet: true,
    };
    let r = laq::report::run(&opts, &dev).expect("report");
    assert!(
        r.probe_latent.is_some() && r.probe_prequant.is_some() && r.probe_kmeans.is_some() && r.probe_frame_diff.is_some(),
        "arm data has state: probes run"
    );
    assert!(r.probe_latent_2d.is_some() && r.probe_prequant_2d.is_some() && r.probe_frame_diff_2d.is_some(), "the 2-D label's probes run too");
    assert!(r.psnr_copy.is_finite() && r.psnr_recon.is_finite());
    assert_eq!(r.usage.len(), 4);
    for f in ["report.md", "report.json", "counterfactual.png", "reconstructions.png"] {
        assert!(run.join("report").join(f).is_file(), "{f} missing");
    }
    // A corrupt dataset fails the report with an error naming it, instead of a report without probes.
    let tasks = data.join("meta/tasks.parquet");
    let mut bytes = std::fs::read(&tasks).expect("read tasks.parquet");
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&tasks, bytes).expect("corrupt tasks.parquet");
    let err = laq::report::run(&opts, &dev).expect_err("report on a corrupt dataset");
    assert!(format!("{err:#}").contains(&data.display().to_string()), "{err:#}");
}

#[test]
fn bad_inputs_give_clear_errors() {
    let _training = training();
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    // Unreadable video in a folder: the error names the file.
    let folder = tmp.path().join("bad");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("broken.mp4"), b"definitely not a video").expect("write");
    let err = FrameCache::open_or_build(&Source::detect(&folder, None).expect("folder of videos"), 32, &cache, true).expect_err("garbage video");
    assert!(format!("{err:#}").contains("broken.mp4"), "{err:#}");
    // A container with no frames.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=32x32:r=10", "-frames:v", "0", "-c:v", "libx264"])
        .arg(empty.join("zero.mp4"))
        .status()
        .expect("ffmpeg");
    assert!(ok.success());
    let err = FrameCache::open_or_build(&Source::detect(&empty, None).expect("folder"), 32, &cache, true).expect_err("zero-length");
    let msg = format!("{err:#}");
    assert!(msg.contains("zero.mp4") && msg.contains("zero-length"), "{msg}");
    // Not a dataset, no videos.
    let nothing = tmp.path().join("nothing");
    std::fs::create_dir_all(&nothing).expect("mkdir");
    let err = Source::detect(&nothing, None).expect_err("empty folder");
    assert!(err.to_string().contains("nothing"), "{err}");
    // Spacing longer than every episode.
    let data = arm_dataset(tmp.path(), 1);
    let c = FrameCache::open_or_build(&Source::detect(&data, None).expect("ds"), 32, &cache, true).expect("cache");
    let err = c.pairs(60.0).expect_err("spacing too long");
    let msg = format!("{err:#}");
    assert!(msg.contains("spacing 60") && msg.contains(&data.display().to_string()), "{msg}");
    // A camera the dataset does not have.
    let err = FrameCache::open_or_build(&Source::detect(&data, Some("observation.images.wrist")).expect("ds"), 32, &cache, true).expect_err("camera");
    assert!(format!("{err:#}").contains("observation.images.wrist"));
    // Bad durations.
    assert!(laq::parse_seconds("0.6s").is_ok_and(|v| (v - 0.6).abs() < 1e-12));
    assert!(laq::parse_seconds("600ms").is_ok_and(|v| (v - 0.6).abs() < 1e-12));
    assert!(laq::parse_seconds("-1").is_err() && laq::parse_seconds("fast").is_err());
}

/// The ablation harness finishes a half-done table without re-running finished rows: row `a`
/// finished, row `b` stopped at a checkpoint below its budget, row `c` never started. FSQ rows
/// label with their own vocabulary.
#[test]
fn ablation_resumes_a_half_finished_table() {
    let _training = training();
    use lapa_train::laq::ablate::{Plan, RowState, report_dir, row_state, run_dir, run_row, write_table};
    let tmp = tempfile::tempdir().expect("tmp");
    let data = arm_dataset(tmp.path(), 5);
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("ablation");
    let dev = device();
    let plan_json = serde_json::json!({
        "data": [data], "probe_data": data, "preset": "tiny", "steps": 6,
        "train": {"batch": 4, "lr": 0.001, "log_every": 2, "checkpoint_every": 3},
        "probe_steps": 10, "max_pairs": 300,
        "rows": [
            {"name": "a"},
            {"name": "b", "quantizer": "fsq", "fsq_levels": [5, 3], "tokens": 1},
            {"name": "c", "codebook_size": 4},
            {"name": "d", "continues": "a", "steps": 9}
        ]
    });
    let plan_path = tmp.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec(&plan_json).expect("json")).expect("write plan");
    let plan = Plan::load(&plan_path).expect("plan");
    let (a, b, c) = (&plan.rows[0], &plan.rows[1], &plan.rows[2]);
    assert_eq!(run_row(&plan, &out, a, &dev, &cache, true).expect("row a"), RowState::Done);
    // Row b: trained to step 3 of 6 (as an interrupted sitting leaves it).
    let (cfg_b, model_b) = plan.configs(b).expect("configs");
    laq::train(&LaqTrainConfig { steps: 3, ..cfg_b }, &model_b, &run_dir(&out, b), &dev, &cache, false, true).expect("train b halfway");
    assert_eq!(row_state(&plan, &out, b), RowState::Partial(3));
    assert_eq!(row_state(&plan, &out, c), RowState::NotStarted);
    let a_report = report_dir(&out, a).join("report.json");
    let a_before = (std::fs::read(&a_report).expect("a report"), std::fs::metadata(&a_report).and_then(|m| m.modified()).expect("mtime"));
    // Finish the table: run_row on every row (a finished one returns at once).
    for row in &plan.rows {
        assert_eq!(run_row(&plan, &out, row, &dev, &cache, true).expect("row"), RowState::Done);
    }
    let a_after = (std::fs::read(&a_report).expect("a report"), std::fs::metadata(&a_report).and_then(|m| m.modified()).expect("mtime"));
    assert_eq!(a_before, a_after, "the finished row was not run again");
    // b resumed from its checkpoint: its metrics keep the halfway run's rows (2, and 3 where it
    // stopped) and continue (4, 6); a run started over would have rewritten them as 2, 4, 6.
    let metrics = std::fs::read_to_string(run_dir(&out, b).join("metrics.csv")).expect("metrics");
    let steps: Vec<u64> = metrics.lines().skip(1).filter_map(|l| l.split(',').next()?.parse().ok()).collect();
    assert_eq!(steps, vec![2, 3, 4, 6], "{metrics}");
    // d continued a's finished run from its step-6 checkpoint instead of starting over: a's
    // metric rows up to 6, then its own.
    let [ma, md] = [a, &plan.rows[3]].map(|r| std::fs::read_to_string(run_dir(&out, r).join("metrics.csv")).expect("metrics"));
    let steps: Vec<u64> = md.lines().skip(1).filter_map(|l| l.split(',').next()?.parse().ok()).collect();
    assert_eq!(steps, vec![2, 4, 6, 8, 9], "{md}");
    assert!(md.starts_with(ma.trim_end()), "d's first rows are not a's:\n{ma}\n{md}");
    let summary = write_table(&plan, &out).expect("table");
    assert_eq!((summary.finished, summary.total), (4, 4));
    assert_eq!(summary.rows[1].vocabulary, lapa_model::artifact::load_laq_config(&run_dir(&out, b).join("model")).expect("b's config").vocabulary());
    assert_eq!(summary.rows[1].vocabulary, 15);
    // The plan changes row c's config under the same name: its folder is stale, not mixed in;
    // a lowered budget makes a row trained past it stale too.
    let mut edited = plan_json.clone();
    edited["rows"][2]["codebook_size"] = serde_json::json!(6);
    edited["rows"][0]["steps"] = serde_json::json!(3);
    std::fs::write(&plan_path, serde_json::to_vec(&edited).expect("json")).expect("write plan");
    let edited = Plan::load(&plan_path).expect("plan");
    assert_eq!(row_state(&edited, &out, &edited.rows[2]), RowState::Stale);
    assert_eq!(row_state(&edited, &out, &edited.rows[0]), RowState::Stale);
    assert!(run_row(&edited, &out, &edited.rows[2], &dev, &cache, true).is_err());
    // Plans that would silently train something else are refused.
    let mut bad = plan_json.clone();
    bad["rows"][0]["fsq_levels"] = serde_json::json!([5, 3]);
    std::fs::write(&plan_path, serde_json::to_vec(&bad).expect("json")).expect("write plan");
    assert!(Plan::load(&plan_path).is_err(), "fsq_levels without the fsq quantizer");
    for (field, value) in [("codebook_size", serde_json::json!(4)), ("steps", serde_json::json!(5)), ("continues", serde_json::json!("zz"))] {
        let mut bad = plan_json.clone();
        bad["rows"][3][field] = value;
        std::fs::write(&plan_path, serde_json::to_vec(&bad).expect("json")).expect("write plan");
        assert!(Plan::load(&plan_path).is_err(), "a row continuing another with a different {field} is refused");
    }
    for f in ["ablation.md", "ablation.png", "summary.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // Labels of the FSQ row carry its vocabulary for the next stage.
    let meta = laq::label::run(&run_dir(&out, b), &data, None, 0.6, &tmp.path().join("labels"), &cache, &dev, 32, false, true).expect("label");
    assert_eq!((meta.vocabulary, meta.n_tokens, meta.quantizer), (15, 1, lapa_model::QuantizerKind::Fsq));
    let csv = std::fs::read_to_string(tmp.path().join("labels/latent_actions.csv")).expect("csv");
    assert!(csv.lines().skip(1).all(|l| l.rsplit(',').next().and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| (0..15).contains(&v))));
}

#[test]
fn action_supervision_uses_only_labeled_training_episodes_and_resumes_exactly() {
    let _training = training();
    use lapa_train::laq::ActionSupervision;
    use lapa_train::laq::loader::{BatchSpec, make_batch};
    let tmp = tempfile::tempdir().expect("tmp");
    let data = arm_dataset(tmp.path(), 6);
    let cache = tmp.path().join("cache");
    let dev = device();
    let sup = ActionSupervision { episodes: 2, per_batch: 3, weight: 0.5 };
    let m = LaqConfig::tiny();
    let pool = laq::train::load_pool_with(std::slice::from_ref(&data), None, m.image_size, 0.6, &cache, true, Some(&sup)).expect("pool");
    // Clips 0 and 5 are the report's held-out fifth: the two labelled episodes are clips 1 and 2.
    assert!(!pool.labeled.is_empty());
    let clips: std::collections::BTreeSet<usize> = pool.labeled.iter().map(|l| l.pair.clip).collect();
    assert_eq!(clips.into_iter().collect::<Vec<_>>(), [1, 2], "labelled pairs must come from clips 1 and 2 only");
    let in_labeled = pool.pairs.iter().filter(|(_, p)| p.clip == 1 || p.clip == 2).count();
    assert_eq!(pool.labeled.len(), in_labeled, "every pair of the labelled episodes is labelled");
    // Targets: the six joint displacements over the window, standardised per joint.
    let dim = pool.labeled[0].target.len();
    assert_eq!(dim, 6);
    let mut moving = 0;
    for j in 0..dim {
        let v: Vec<f64> = pool.labeled.iter().map(|l| f64::from(l.target[j])).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        // A joint these episodes never move (the sim's wrist roll, say) stays all zeros.
        let constant = v.iter().all(|&x| x == 0.0);
        assert!(constant || (mean.abs() < 1e-4 && (sd - 1.0).abs() < 1e-3), "joint {j}: mean {mean}, sd {sd}");
        moving += usize::from(!constant);
    }
    assert!(moving >= 3, "only {moving} joints move in the labelled episodes");
    let spec = BatchSpec {
        batch_size: 8,
        side: m.image_size,
        patch: m.patch_size,
        noise_len_per_sample: m.n_tokens * m.code_dim,
        augment: Augment::NONE,
        seed: 3,
        labeled_per_batch: 3,
        action_dim: dim,
    };
    let batch = make_batch(&pool, &spec, 7);
    assert_eq!(batch.labeled, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(batch.action.len(), 8 * dim);
    assert!(batch.action[3 * dim..].iter().all(|&x| x == 0.0), "unlabelled samples carry no target");
    assert!(batch.action[..3 * dim].iter().any(|&x| x != 0.0));

    // Training with the head: exact resume (the head and its optimiser are in the checkpoint), a
    // finite action loss in the metrics, and an encoder that differs from the unsupervised run.
    let cfg = |steps| LaqTrainConfig { action_supervision: Some(sup), ..tiny_cfg(data.clone(), steps) };
    let straight = tmp.path().join("sup-straight");
    laq::train(&cfg(10), &m, &straight, &dev, &cache, false, true).expect("supervised run");
    let split = tmp.path().join("sup-split");
    laq::train(&cfg(4), &m, &split, &dev, &cache, false, true).expect("first part");
    laq::train(&cfg(10), &m, &split, &dev, &cache, true, true).expect("resume");
    let max_diff = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let d = max_diff(&weights_probe(&straight), &weights_probe(&split));
    assert!(d < 1e-4, "supervised resume differs from the straight run by {d}");
    // The head resumed too: the logged losses after the cut match the straight run's.
    let losses = |run: &Path| -> Vec<(u64, f64, f64)> {
        std::fs::read_to_string(run.join("metrics.csv"))
            .expect("metrics")
            .lines()
            .skip(1)
            .filter_map(|l| {
                let v: Vec<&str> = l.split(',').collect();
                Some((v[0].parse().ok()?, v[1].parse().ok()?, v.last()?.parse().ok()?))
            })
            .filter(|r| r.0 > 4)
            .collect()
    };
    let (ls, lr) = (losses(&straight), losses(&split));
    assert_eq!(ls.iter().map(|r| r.0).collect::<Vec<_>>(), [6, 8, 10]);
    for (s, r) in ls.iter().zip(&lr) {
        assert_eq!(s.0, r.0);
        assert!((s.1 - r.1).abs() < 1e-5 && (s.2 - r.2).abs() < 1e-5, "step {}: straight {s:?}, resumed {r:?}", s.0);
    }
    // Same batches (the labelled slots are drawn either way), the head's loss weighted 1e-9: what
    // differs is the head's gradient reaching the encoder.
    let faint = tmp.path().join("faint");
    let faint_cfg = LaqTrainConfig { action_supervision: Some(ActionSupervision { weight: 1e-9, ..sup }), ..tiny_cfg(data.clone(), 10) };
    laq::train(&faint_cfg, &m, &faint, &dev, &cache, false, true).expect("faint run");
    let d = max_diff(&weights_probe(&straight), &weights_probe(&faint));
    assert!(d > 1e-3, "the action head's gradient did not reach the LAQ (weights differ by only {d})");
    let csv = std::fs::read_to_string(straight.join("metrics.csv")).expect("csv");
    assert!(csv.lines().next().is_some_and(|h| h.ends_with(",action_loss")), "{csv}");
    let last: f64 = csv.lines().last().and_then(|l| l.rsplit(',').next()).and_then(|x| x.parse().ok()).expect("action loss");
    assert!(last.is_finite() && last > 0.0);
    // The saved artifact is the plain LAQ: it loads without the head.
    lapa_model::load_laq(&straight.join("model"), &dev).expect("the supervised run's artifact loads as a LAQ");

    // More labelled episodes than lie outside the held-out fifth: a clear error.
    let too_many = ActionSupervision { episodes: 5, ..sup };
    let e = laq::train::load_pool_with(std::slice::from_ref(&data), None, m.image_size, 0.6, &cache, true, Some(&too_many)).expect_err("5 of 4");
    assert!(format!("{e:#}").contains("only 4 lie outside the held-out fifth"), "{e:#}");
}
