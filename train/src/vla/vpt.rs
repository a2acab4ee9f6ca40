//! The VPT baseline (Baker et al. 2022, as LAPA's Table 1 runs it): an inverse-dynamics model
//! (IDM, `lapa train idm`) trained on the N labeled episodes sees a frame and the next one and
//! predicts the action between them; `lapa vpt label` then labels the pretraining video with its
//! pseudo-actions, on which the policy pretrains (`lapa train action --action-labels`) before the
//! same finetune as every other row.
//!
//! A labels folder holds `pseudo_actions.csv` (episode, frame_index, one column per action
//! dimension) and `pseudo_actions.json` (what made it, written last: its presence means the
//! folder is complete).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lapa_dataset::Dataset;
use lapa_model::burn::tensor::{Device, Tensor, TensorData};
use lapa_model::vla::{ActionTarget, HeadConfig, TextInput, VlaInput};
use serde::{Deserialize, Serialize};

use crate::laq::cache::{FrameCache, Source};
use crate::trainer::{MODEL_DIR, TRAIN_FILE};

pub const PSEUDO_CSV: &str = "pseudo_actions.csv";
pub const PSEUDO_META: &str = "pseudo_actions.json";

/// How well the IDM's labels match the dataset's own actions, where it has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdmCheck {
    /// Episodes (the dataset's first ones) the IDM trained on; None when its `train.json` does
    /// not say so for this dataset (then every frame counts as held out).
    pub train_episodes: Option<usize>,
    /// Mean absolute error per action dimension on those episodes' frames and on the others'
    /// (None where there are no such frames).
    pub mae_train: Option<Vec<f64>>,
    pub mae_heldout: Option<Vec<f64>>,
    pub heldout_frames: usize,
}

/// `pseudo_actions.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudoMeta {
    /// The IDM run that labelled.
    pub idm: PathBuf,
    /// The dataset labelled.
    pub data: PathBuf,
    /// Rows of the CSV: every frame of the dataset.
    pub frames: usize,
    pub names: Vec<String>,
    pub units: Vec<String>,
    pub fps: f64,
    pub check: Option<IdmCheck>,
}

/// A labels folder read back.
#[derive(Debug, Clone)]
pub struct PseudoActions {
    pub meta: PseudoMeta,
    /// Keyed by (episode index, frame index): one action.
    rows: BTreeMap<(usize, usize), Vec<f32>>,
}

impl PseudoActions {
    pub fn read(dir: &Path) -> Result<Self> {
        let mpath = dir.join(PSEUDO_META);
        let meta: PseudoMeta = serde_json::from_slice(
            &std::fs::read(&mpath)
                .with_context(|| format!("{}: cannot read (made by `lapa vpt label`; a folder without it is incomplete)", mpath.display()))?,
        )
        .with_context(|| format!("{}: not a pseudo-actions description", mpath.display()))?;
        let d = meta.names.len();
        if d == 0 || d > 1024 || meta.units.len() != d {
            bail!("{}: {} action names and {} units (1..=1024 each, equal)", mpath.display(), d, meta.units.len());
        }
        csv_columns(&meta.names).with_context(|| mpath.display().to_string())?;
        if !(meta.fps.is_finite() && meta.fps > 0.0) {
            bail!("{}: fps {} must be positive", mpath.display(), meta.fps);
        }
        let cpath = dir.join(PSEUDO_CSV);
        let text = std::fs::read_to_string(&cpath).with_context(|| format!("{}: cannot read", cpath.display()))?;
        let want: Vec<String> = ["episode", "frame_index"].into_iter().map(String::from).chain(meta.names.iter().cloned()).collect();
        let mut rows = BTreeMap::new();
        for (row, ep, fi, f) in super::data::frame_csv_rows(&cpath, &text, &want)? {
            let mut a = Vec::with_capacity(d);
            for (k, s) in f.iter().enumerate() {
                let v: f32 = s.parse().with_context(|| format!("{}: line {row}: {} {s:?} is not a number", cpath.display(), meta.names[k]))?;
                if !v.is_finite() {
                    bail!("{}: line {row}: {} is {v}", cpath.display(), meta.names[k]);
                }
                a.push(v);
            }
            if rows.insert((ep, fi), a).is_some() {
                bail!("{}: line {row}: episode {ep} frame {fi} appears twice", cpath.display());
            }
        }
        if rows.len() != meta.frames {
            bail!("{}: {} rows but {} says {} frames", cpath.display(), rows.len(), mpath.display(), meta.frames);
        }
        Ok(Self { meta, rows })
    }

    /// Episode `ep`'s `len` actions, row-major [len · dims].
    pub fn episode(&self, ep: usize, len: usize) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(len * self.meta.names.len());
        for t in 0..len {
            let a = self.rows.get(&(ep, t)).with_context(|| format!("pseudo-actions of {}: no row for episode {ep} frame {t}", self.meta.data.display()))?;
            out.extend_from_slice(a);
        }
        Ok(out)
    }
}

/// Action names that can head the CSV's columns (non-empty, no comma or line break).
fn csv_columns(names: &[String]) -> Result<()> {
    match names.iter().find(|n| n.is_empty() || n.contains([',', '\n', '\r'])) {
        Some(n) => bail!("action name {n:?} cannot be a CSV column"),
        None => Ok(()),
    }
}

/// What [`label`] reads.
#[derive(Debug, Clone)]
pub struct LabelOptions {
    pub idm: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub camera: Option<String>,
    pub cache_dir: PathBuf,
    pub batch: usize,
    pub quiet: bool,
}

/// Labels every frame of `data` with the IDM's action for (x_t, x_{t+1}) (the last frame of an
/// episode pairs with itself) and writes the labels folder.
pub fn label(o: &LabelOptions, device: &Device) -> Result<PseudoMeta> {
    if !(1..=4096).contains(&o.batch) {
        bail!("--batch must be in 1..=4096, got {}", o.batch);
    }
    let (cfg, model) = lapa_model::load_vla(&o.idm.join(MODEL_DIR), device).with_context(|| format!("{}: --idm is not a model run", o.idm.display()))?;
    if cfg.frames != 2 {
        bail!("{}: a model of {} frame(s) per observation; --idm takes an inverse-dynamics run (`lapa train idm`)", o.idm.display(), cfg.frames);
    }
    let HeadConfig::Action(head) = &cfg.head else { bail!("{}: not an action model", o.idm.display()) };
    if head.target != ActionTarget::Absolute {
        bail!("{}: the IDM predicts delta actions; pseudo-labels are absolute", o.idm.display());
    }
    if cfg.state.is_some() {
        bail!("{}: the IDM takes a state token; pseudo-labelling video has no state", o.idm.display());
    }
    let dims = head.spec.names.len();
    csv_columns(&head.spec.names).with_context(|| o.idm.display().to_string())?;
    let trained_cfg: Option<super::VlaTrainConfig> = std::fs::read(o.idm.join(TRAIN_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    // The camera the IDM was trained on, unless another is asked for explicitly.
    let idm_camera = trained_cfg.as_ref().and_then(|c| c.data.camera.clone());
    let camera = match (&o.camera, &idm_camera) {
        (Some(c), Some(t)) if c != t => bail!("--camera {c}: the IDM {} was trained on camera {t}", o.idm.display()),
        (Some(c), _) => Some(c.clone()),
        (None, t) => t.clone(),
    };
    let source = Source::detect(&o.data, camera.as_deref())?;
    if source.kind != crate::laq::SourceKind::Dataset {
        bail!("{}: the IDM labels LeRobot datasets (it needs each episode's instruction)", o.data.display());
    }
    let ds = Dataset::open(&o.data).with_context(|| format!("{}: cannot open the dataset", o.data.display()))?;
    if (ds.info.fps - f64::from(head.spec.fps)).abs() > 1e-6 {
        bail!(
            "{}: {} fps, but the IDM {} was trained at {} fps: its action is the step between frames at that rate",
            o.data.display(),
            ds.info.fps,
            o.idm.display(),
            head.spec.fps
        );
    }
    let cache = FrameCache::open_or_build(&source, cfg.image_size, &o.cache_dir, o.quiet)?;
    // The IDM's own training episodes, to keep its check honest.
    // Only a one-source IDM on this very dataset has known training episodes here.
    let trained: Option<(PathBuf, Option<usize>)> = trained_cfg.as_ref().filter(|c| c.data.data.len() == 1).map(|c| (c.data.data[0].clone(), c.data.episodes));
    let same_data = trained.as_ref().is_some_and(|(d, _)| std::fs::canonicalize(d).ok().is_some_and(|d| std::fs::canonicalize(&o.data).ok() == Some(d)));
    let train_episodes: Option<usize> = if same_data { trained.map(|t| t.1.unwrap_or(usize::MAX)) } else { None };

    // The check compares column by column only where the dataset's actions are the IDM's.
    let same_names = super::data::feature_names(&ds, "action", dims) == head.spec.names;
    // Episodes: instruction and true actions (if any).
    struct Ep {
        index: usize,
        start: usize,
        len: usize,
        task: String,
        action: Option<Vec<f32>>,
    }
    let mut eps = Vec::new();
    for clip in &cache.meta.clips {
        let Some(ei) = clip.episode else { bail!("{}: clip {} has no episode index", o.data.display(), clip.name) };
        let pos = ds.episodes.iter().position(|m| m.index == ei).with_context(|| format!("{}: episode {ei} missing from its metadata", o.data.display()))?;
        let ep = ds.episode(pos, false).with_context(|| format!("{}: cannot read episode {ei}", o.data.display()))?;
        let action = ep.action.filter(|a| a.cols == dims && a.rows == clip.len && same_names).map(|a| a.data);
        eps.push(Ep { index: ei, start: clip.start, len: clip.len, task: ep.task, action });
    }
    let mut tasks: Vec<String> = eps.iter().map(|e| e.task.clone()).collect();
    tasks.sort();
    tasks.dedup();
    let text: Vec<(Vec<i64>, Vec<f32>, Vec<f32>)> = match cfg.text.frozen_dim() {
        Some(_) => {
            let mut enc = lapa_model::text::SentenceEncoder::load(&lapa_model::text::minilm_dir(), &cfg.text, device)?;
            let refs: Vec<&str> = tasks.iter().map(String::as_str).collect();
            enc.embed(&refs)?.into_iter().map(|e| (Vec::new(), Vec::new(), e)).collect()
        }
        None => tasks.iter().map(|t| cfg.text.tokenize(t).map(|(i, w)| (i, w, Vec::new()))).collect::<Result<_, _>>()?,
    };
    let frames: Vec<(usize, usize)> = eps.iter().enumerate().flat_map(|(e, ep)| (0..ep.len).map(move |t| (e, t))).collect();
    let pb = if o.quiet { ProgressBar::hidden() } else { ProgressBar::new(frames.len() as u64) };
    pb.set_style(
        ProgressStyle::with_template("pseudo-labelling [{bar:30}] {pos}/{len} frames {per_sec} ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut actions: Vec<f32> = Vec::with_capacity(frames.len() * dims);
    let l = cfg.text.max_ids();
    for part in frames.chunks(o.batch) {
        let n = part.len();
        let (mut patches, mut ids, mut weights, mut emb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &(e, t) in part {
            let ep = &eps[e];
            let pair = [cache.frame(ep.start + t), cache.frame(ep.start + (t + 1).min(ep.len - 1))];
            lapa_model::patchify_stacked(&pair, cfg.image_size, cfg.patch_size, &mut patches);
            let k = tasks.binary_search(&ep.task).expect("every task is listed");
            ids.extend_from_slice(&text[k].0);
            weights.extend_from_slice(&text[k].1);
            emb.extend_from_slice(&text[k].2);
        }
        let input = VlaInput {
            patches: Tensor::from_data(TensorData::new(patches, [n, cfg.n_patches(), cfg.patch_dim()]), device),
            text: match cfg.text.frozen_dim() {
                None => TextInput::Hashed {
                    ids: Tensor::from_data(TensorData::new(ids, [n, l]), device),
                    weights: Tensor::from_data(TensorData::new(weights, [n, l]), device),
                },
                Some(d) => TextInput::Embedded(Tensor::from_data(TensorData::new(emb, [n, d]), device)),
            },
            state: None,
        };
        let best: Vec<i64> = model.forward(input).argmax(2).into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?; // [n, chunk·dims]
        let per = head.spec.chunk * dims;
        for b in 0..n {
            // The first action of the chunk: the one between x_t and x_{t+1}.
            actions.extend((0..dims).map(|i| head.edges[i].decode(best[b * per + i].max(0) as usize)));
        }
        pb.inc(n as u64);
    }
    pb.finish_and_clear();

    // The check against the dataset's own actions.
    let check = eps.iter().all(|e| e.action.is_some()).then(|| {
        let (mut tr, mut ho) = ((vec![0.0f64; dims], 0usize), (vec![0.0f64; dims], 0usize));
        for (row, &(e, t)) in frames.iter().enumerate() {
            let truth = &eps[e].action.as_ref().expect("checked")[t * dims..(t + 1) * dims];
            let acc = if train_episodes.is_some_and(|n| e < n) { &mut tr } else { &mut ho };
            for i in 0..dims {
                acc.0[i] += f64::from((actions[row * dims + i] - truth[i]).abs());
            }
            acc.1 += 1;
        }
        let mean = |a: (Vec<f64>, usize)| (a.1 > 0).then(|| a.0.into_iter().map(|s| s / a.1 as f64).collect::<Vec<_>>());
        let heldout_frames = ho.1;
        IdmCheck { train_episodes: train_episodes.map(|n| n.min(eps.len())), mae_train: mean(tr), mae_heldout: mean(ho), heldout_frames }
    });

    let mut csv = String::new();
    let _ = writeln!(csv, "episode,frame_index,{}", head.spec.names.join(","));
    for (row, &(e, t)) in frames.iter().enumerate() {
        let _ = write!(csv, "{},{t}", eps[e].index);
        for v in &actions[row * dims..(row + 1) * dims] {
            let _ = write!(csv, ",{v}");
        }
        csv.push('\n');
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("{}: cannot create", o.out.display()))?;
    // The description goes last: a folder without it is incomplete.
    let _ = std::fs::remove_file(o.out.join(PSEUDO_META));
    lapa_fs::atomic_write(&o.out.join(PSEUDO_CSV), csv.as_bytes())?;
    let meta = PseudoMeta {
        idm: o.idm.clone(),
        data: o.data.clone(),
        frames: frames.len(),
        names: head.spec.names.clone(),
        units: head.spec.units.clone(),
        fps: f64::from(head.spec.fps),
        check,
    };
    lapa_fs::atomic_write(&o.out.join(PSEUDO_META), &serde_json::to_vec_pretty(&meta)?)?;
    Ok(meta)
}
