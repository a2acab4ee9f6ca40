//! Training samples for the policy: one frame of a LeRobot dataset, its episode's instruction,
//! optionally its joint state, and the target: the frame's latent-action tokens (from `lapa laq
//! label`) or the chunk of actions that follows it (from the dataset's `action` column).
//!
//! Sizes come from the data: action and state widths and fps from `info.json`, the latent
//! tokens and vocabulary from the labels' `latent_actions.json`. Nothing here knows the
//! simulator's robot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lapa_dataset::Dataset;
use lapa_model::text::TextConfig;
use lapa_model::vla::ActionTarget;
use lapa_sim::rng::Rng;
use serde::Deserialize;

use crate::laq::cache::{FrameCache, Source};
use crate::laq::label::{CONTINUOUS_CSV, LABELS_CSV, LABELS_META};

/// The parts of a labels folder's `latent_actions.json` the policy needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LabelsMeta {
    pub n_tokens: usize,
    pub vocabulary: usize,
    pub laq_config: lapa_model::LaqConfig,
    pub frames: usize,
    /// Values per token of `latent_continuous.csv`, when the folder has one (`lapa laq label
    /// --continuous`).
    #[serde(default)]
    pub continuous_dim: Option<usize>,
}

/// Per-frame latent tokens of one dataset (`None` where the frame has no future frame).
#[derive(Debug, Clone)]
pub struct Labels {
    pub meta: LabelsMeta,
    /// Keyed by (episode index, frame index).
    pub tokens: BTreeMap<(usize, usize), Vec<i64>>,
    /// The pre-quantisation latents (`n_tokens · continuous_dim` values) of the same frames,
    /// when read with `continuous` (else empty).
    pub latents: BTreeMap<(usize, usize), Vec<f32>>,
}

impl Labels {
    /// The tokens, and with `continuous` the pre-quantisation latents too (which the folder
    /// must then have).
    pub fn read(dir: &Path, continuous: bool) -> Result<Self> {
        let mpath = dir.join(LABELS_META);
        let meta: LabelsMeta =
            serde_json::from_slice(&std::fs::read(&mpath).with_context(|| format!("{}: cannot read (made by `lapa laq label`)", mpath.display()))?)
                .with_context(|| format!("{}: not a latent-labels description", mpath.display()))?;
        meta.laq_config.validate().with_context(|| format!("{}: laq_config", mpath.display()))?;
        if !(1..=256).contains(&meta.n_tokens) || !(2..=1 << 20).contains(&meta.vocabulary) {
            bail!("{}: n_tokens {} must be in 1..=256 and vocabulary {} in 2..=2^20", mpath.display(), meta.n_tokens, meta.vocabulary);
        }
        if meta.laq_config.n_tokens != meta.n_tokens || meta.laq_config.vocabulary() != meta.vocabulary {
            bail!(
                "{}: n_tokens {} and vocabulary {} disagree with its laq_config ({} tokens, vocabulary {})",
                mpath.display(),
                meta.n_tokens,
                meta.vocabulary,
                meta.laq_config.n_tokens,
                meta.laq_config.vocabulary()
            );
        }
        let cpath = dir.join(LABELS_CSV);
        let text = std::fs::read_to_string(&cpath).with_context(|| format!("{}: cannot read", cpath.display()))?;
        let want: Vec<String> =
            ["episode", "frame_index", "valid"].into_iter().map(String::from).chain((0..meta.n_tokens).map(|i| format!("latent_{i}"))).collect();
        let mut tokens = BTreeMap::new();
        for (row, ep, fi, f) in frame_csv_rows(&cpath, &text, &want)? {
            let num = |s: &str, what: &str| s.parse::<usize>().with_context(|| format!("{}: line {row}: {what} {s:?} is not a whole number", cpath.display()));
            let valid = num(f[0], "valid")?;
            if valid > 1 {
                bail!("{}: line {row}: valid must be 0 or 1", cpath.display());
            }
            let mut toks = Vec::with_capacity(meta.n_tokens);
            for (k, s) in f[1..].iter().enumerate() {
                let v = num(s, &format!("latent_{k}"))?;
                if v >= meta.vocabulary {
                    bail!("{}: line {row}: latent_{k} = {v} is outside the vocabulary of {}", cpath.display(), meta.vocabulary);
                }
                toks.push(v as i64);
            }
            if valid == 1 && tokens.insert((ep, fi), toks).is_some() {
                bail!("{}: line {row}: episode {ep} frame {fi} appears twice", cpath.display());
            }
        }
        if text.lines().count() - 1 != meta.frames {
            bail!("{}: {} rows but {} says {} frames", cpath.display(), text.lines().count() - 1, mpath.display(), meta.frames);
        }
        let latents = if continuous { Self::read_continuous(dir, &meta, &tokens)? } else { BTreeMap::new() };
        Ok(Self { meta, tokens, latents })
    }

    /// `latent_continuous.csv`: the same valid frames as the tokens, every value finite.
    fn read_continuous(dir: &Path, meta: &LabelsMeta, tokens: &BTreeMap<(usize, usize), Vec<i64>>) -> Result<BTreeMap<(usize, usize), Vec<f32>>> {
        let mpath = dir.join(LABELS_META);
        let Some(dim) = meta.continuous_dim else {
            bail!("{}: no continuous latents in these labels; label with `lapa laq label --continuous`", mpath.display());
        };
        if dim != meta.laq_config.code_dim {
            bail!("{}: continuous_dim {dim}, but its laq_config has code_dim {}", mpath.display(), meta.laq_config.code_dim);
        }
        let width = meta.n_tokens * dim;
        let cpath = dir.join(CONTINUOUS_CSV);
        let text = std::fs::read_to_string(&cpath).with_context(|| format!("{}: cannot read (made by `lapa laq label --continuous`)", cpath.display()))?;
        let want: Vec<String> = ["episode", "frame_index", "valid"].into_iter().map(String::from).chain((0..width).map(|i| format!("z_{i}"))).collect();
        let mut out = BTreeMap::new();
        let mut rows = 0;
        for (row, ep, fi, f) in frame_csv_rows(&cpath, &text, &want)? {
            rows += 1;
            let valid = match f[0] {
                "0" => false,
                "1" => true,
                other => bail!("{}: line {row}: valid {other:?} must be 0 or 1", cpath.display()),
            };
            if valid != tokens.contains_key(&(ep, fi)) {
                bail!(
                    "{}: line {row}: episode {ep} frame {fi} is valid = {} here but not in {LABELS_CSV}: files of two labellings?",
                    cpath.display(),
                    u8::from(valid)
                );
            }
            if !valid {
                continue;
            }
            let mut z = Vec::with_capacity(width);
            for (k, v) in f[1..].iter().enumerate() {
                match v.parse::<f32>() {
                    Ok(x) if x.is_finite() => z.push(x),
                    _ => bail!("{}: line {row}: z_{k} = {v:?} is not a finite number", cpath.display()),
                }
            }
            if out.insert((ep, fi), z).is_some() {
                bail!("{}: line {row}: episode {ep} frame {fi} appears twice", cpath.display());
            }
        }
        if rows != meta.frames || out.len() != tokens.len() {
            bail!("{}: {rows} rows ({} valid) but {} says {} frames ({} valid)", cpath.display(), out.len(), mpath.display(), meta.frames, tokens.len());
        }
        Ok(out)
    }
}

/// A per-frame CSV row: line number, episode, frame index, the remaining fields.
pub(crate) type FrameRow<'t> = (usize, usize, usize, Vec<&'t str>);

/// The rows of a per-frame CSV under the header `want` (`episode,frame_index,…`): each row's line
/// number, episode, frame index and remaining fields, the header and every field count checked.
pub(crate) fn frame_csv_rows<'t>(cpath: &Path, text: &'t str, want: &[String]) -> Result<Vec<FrameRow<'t>>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if header.split(',').collect::<Vec<_>>() != want {
        bail!("{}: header {header:?}; expected {:?}", cpath.display(), want.join(","));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let row = i + 2;
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != want.len() {
                bail!("{}: line {row}: {} fields, expected {}", cpath.display(), f.len(), want.len());
            }
            let num = |s: &str, what: &str| s.parse::<usize>().with_context(|| format!("{}: line {row}: {what} {s:?} is not a whole number", cpath.display()));
            Ok((row, num(f[0], "episode")?, num(f[1], "frame_index")?, f[2..].to_vec()))
        })
        .collect()
}

/// One episode of a source.
#[derive(Debug, Clone)]
pub struct EpisodeData {
    /// Global index of the episode's first frame in its frame cache.
    pub start: usize,
    pub len: usize,
    pub episode: usize,
    /// Index into [`Pool::instructions`].
    pub instruction: usize,
    /// [len, state_dim] and [len, action_dim], when the dataset has them (`action` is `None`
    /// for an unlabeled source: its frames carry no action target).
    pub state: Option<Vec<f32>>,
    pub action: Option<Vec<f32>>,
}

/// Every frame the policy can train on.
#[derive(Debug)]
pub struct Pool {
    pub caches: Vec<Arc<FrameCache>>,
    pub episodes: Vec<Vec<EpisodeData>>,
    /// Distinct instructions (each tokenized or embedded once).
    pub instructions: Vec<String>,
    pub text: Vec<TextRepr>,
    pub state_dim: usize,
    pub action_dim: usize,
    pub fps: f64,
    /// Action names, from `info.json`'s `action.names` (or `action_0..`).
    pub action_names: Vec<String>,
    /// Their units: the arm description's when `robot_type` names a known arm, else `"raw"`.
    pub action_units: Vec<String>,
    pub samples: Vec<Sample>,
}

/// An instruction as the policy's text encoder takes it.
#[derive(Debug, Clone)]
pub enum TextRepr {
    /// Hashed ids and weights.
    Hashed(Vec<i64>, Vec<f32>),
    /// A frozen encoder's embedding (filled by [`Pool::embed_instructions`]).
    Embedded(Vec<f32>),
}

/// A training sample: (source, episode, frame within the episode) and its target.
#[derive(Debug, Clone)]
pub struct Sample {
    pub source: usize,
    pub episode: usize,
    pub t: usize,
    /// Latent tokens (latent pretraining); empty for action targets, which are read from the
    /// episode when the batch is built.
    pub tokens: Vec<i64>,
    /// The pre-quantisation latent (continuous-latent pretraining; else empty).
    pub latent: Vec<f32>,
}

/// What the samples' targets are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetKind {
    Latent,
    /// The LAQ's pre-quantisation latents (the continuous-latent ablation).
    Continuous,
    Action {
        chunk: usize,
        target: ActionTarget,
    },
}

pub(crate) fn feature_names(ds: &Dataset, key: &str, dim: usize) -> Vec<String> {
    let names = ds.info.features.get(key).and_then(|f| f.names.as_ref()).and_then(|v| match v {
        serde_json::Value::Array(a) => Some(a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect::<Vec<_>>()),
        serde_json::Value::Object(o) => o.values().next().and_then(|x| x.as_array()).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()),
        _ => None,
    });
    match names {
        Some(n) if n.len() == dim => n.into_iter().map(|s| s.strip_suffix(".pos").map(str::to_string).unwrap_or(s)).collect(),
        _ => (0..dim).map(|i| format!("{key}_{i}")).collect(),
    }
}

/// What [`load`] reads.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec<'a> {
    pub data: &'a [PathBuf],
    /// `labels[i]` labels `data[i]` (latent targets).
    pub labels: &'a [PathBuf],
    /// `action_labels[i]` replaces `data[i]`'s actions with pseudo-actions (`lapa vpt label`);
    /// empty: the datasets' own actions.
    pub action_labels: &'a [PathBuf],
    /// Sources read for their frames and instructions only (action targets; their actions, if
    /// any, are unused and every episode is taken): distillation's unlabeled video, whose
    /// targets come from a teacher.
    pub unlabeled: &'a [PathBuf],
    pub camera: Option<&'a str>,
    /// Frame side the policy takes.
    pub side: usize,
    pub cache_dir: &'a Path,
    pub kind: TargetKind,
    /// Keep the first N episodes of each source.
    pub episodes: Option<usize>,
    /// Fail on a source without `observation.state`.
    pub need_state: bool,
    pub text: &'a TextConfig,
    pub quiet: bool,
}

/// Units of the named joints from the arm description `robot_type` names (LeRobot's
/// `so101_follower` and the like); `"raw"` for robots lapa does not describe.
fn feature_units(ds: &Dataset, names: &[String]) -> Vec<String> {
    let arm = ds.info.robot_type.as_deref().and_then(|t| lapa_boards::arm_by_name(t).or_else(|| lapa_boards::arm_by_name(t.trim_end_matches("_follower"))));
    names
        .iter()
        .map(|n| {
            arm.and_then(|a| a.joints.iter().find(|j| j.name == n.as_str()))
                .map_or("raw".to_string(), |j| if j.unit == lapa_boards::so101::Unit::Percent { "%".to_string() } else { "deg".to_string() })
        })
        .collect()
}

/// Loads the sources.
pub fn load(spec: &LoadSpec<'_>) -> Result<Pool> {
    let LoadSpec { data, labels, action_labels, unlabeled, camera, side, cache_dir, kind, episodes, need_state, text, quiet } = *spec;
    if data.is_empty() && unlabeled.is_empty() {
        bail!("no --data given");
    }
    let latent = matches!(kind, TargetKind::Latent | TargetKind::Continuous);
    if latent && !unlabeled.is_empty() {
        bail!("unlabeled sources are for action targets (distillation), not latent pretraining");
    }
    if latent && labels.len() != data.len() {
        bail!("latent pretraining needs one --labels folder per --data source ({} --data, {} --labels)", data.len(), labels.len());
    }
    if !action_labels.is_empty() && (action_labels.len() != data.len() || latent) {
        bail!(
            "--action-labels: one pseudo-action folder per --data source ({} --data, {} --action-labels), for action training only",
            data.len(),
            action_labels.len()
        );
    }
    let mut pool = Pool {
        caches: Vec::new(),
        episodes: Vec::new(),
        instructions: Vec::new(),
        text: Vec::new(),
        state_dim: 0,
        action_dim: 0,
        fps: 0.0,
        action_names: Vec::new(),
        action_units: Vec::new(),
        samples: Vec::new(),
    };
    let mut laq_seen: Option<(PathBuf, LabelsMeta)> = None;
    for (si, (path, labeled)) in data.iter().map(|p| (p, true)).chain(unlabeled.iter().map(|p| (p, false))).enumerate() {
        let source = Source::detect(path, camera)?;
        if source.kind != crate::laq::SourceKind::Dataset {
            bail!("{}: the policy trains on LeRobot datasets (a folder of videos has no instructions)", path.display());
        }
        let ds = Dataset::open(path).with_context(|| format!("{}: cannot open the dataset", path.display()))?;
        let cache = FrameCache::open_or_build(&source, side, cache_dir, quiet)?;
        let labels = match kind {
            TargetKind::Latent | TargetKind::Continuous => {
                let l = Labels::read(&labels[si], kind == TargetKind::Continuous)?;
                if l.meta.frames != cache.meta.frames {
                    bail!(
                        "{}: labels for {} frames, but {} has {}: labels from another dataset?",
                        labels[si].display(),
                        l.meta.frames,
                        path.display(),
                        cache.meta.frames
                    );
                }
                if let Some((first, m)) = &laq_seen
                    && (m.laq_config != l.meta.laq_config)
                {
                    bail!(
                        "{} and {}: labels from different LAQs (their laq_config differs); label every source with the same LAQ run",
                        first.display(),
                        labels[si].display()
                    );
                }
                laq_seen.get_or_insert_with(|| (labels[si].clone(), l.meta.clone()));
                Some(l)
            }
            TargetKind::Action { .. } => None,
        };
        if pool.fps == 0.0 {
            pool.fps = ds.info.fps;
        } else if (pool.fps - ds.info.fps).abs() > 1e-6 {
            bail!("{}: {} fps, but the first source has {} fps; mix sources of one rate", path.display(), ds.info.fps, pool.fps);
        }
        let pseudo = match action_labels.get(si).filter(|_| labeled) {
            Some(dir) => {
                let p = super::vpt::PseudoActions::read(dir)?;
                if (p.meta.fps - ds.info.fps).abs() > 1e-6 {
                    bail!(
                        "{}: pseudo-actions at {} fps, but {} has {} fps: labels of another dataset?",
                        dir.display(),
                        p.meta.fps,
                        path.display(),
                        ds.info.fps
                    );
                }
                if ds.info.features.contains_key("action") {
                    let own = feature_names(&ds, "action", ds.info.features.get("action").and_then(|f| f.shape.first().copied()).unwrap_or(0));
                    if own != p.meta.names {
                        bail!("{}: pseudo-actions named {:?}, but {}'s actions are {:?}", dir.display(), p.meta.names, path.display(), own);
                    }
                }
                if p.meta.frames != cache.meta.frames {
                    bail!(
                        "{}: pseudo-actions for {} frames, but {} has {}: labels of another dataset?",
                        dir.display(),
                        p.meta.frames,
                        path.display(),
                        cache.meta.frames
                    );
                }
                Some(p)
            }
            None => None,
        };
        let state_dim = ds.info.features.get("observation.state").and_then(|f| f.shape.first().copied()).unwrap_or(0);
        let action_dim = match &pseudo {
            Some(p) => p.meta.names.len(),
            None if labeled => ds.info.features.get("action").and_then(|f| f.shape.first().copied()).unwrap_or(0),
            None => 0,
        };
        if need_state && state_dim == 0 {
            bail!("{}: no observation.state feature in meta/info.json, but the policy takes a state token (or delta targets)", path.display());
        }
        if let (TargetKind::Action { .. }, true) = (kind, labeled) {
            if action_dim == 0 {
                bail!("{}: no action feature in meta/info.json: action training and finetuning need a labeled dataset", path.display());
            }
            if pool.action_dim == 0 {
                (pool.action_names, pool.action_units) = match &pseudo {
                    Some(p) => (p.meta.names.clone(), p.meta.units.clone()),
                    None => {
                        let names = feature_names(&ds, "action", action_dim);
                        let units = feature_units(&ds, &names);
                        (names, units)
                    }
                };
            } else if pool.action_dim != action_dim {
                bail!("{}: {action_dim} action dimensions, the first source has {}", path.display(), pool.action_dim);
            } else if let Some(p) = &pseudo
                && p.meta.names != pool.action_names
            {
                bail!("{}: pseudo-actions named {:?}, but the first source's actions are {:?}", path.display(), p.meta.names, pool.action_names);
            }
            pool.action_dim = action_dim;
        }
        if let TargetKind::Action { target: ActionTarget::Delta, .. } = kind
            && labeled
            && state_dim < action_dim
        {
            bail!("{}: delta targets subtract the state from the action, but observation.state has {state_dim} values and action {action_dim}", path.display());
        }
        if need_state {
            if pool.state_dim != 0 && pool.state_dim != state_dim {
                bail!("{}: {state_dim} state dimensions, the first source has {}", path.display(), pool.state_dim);
            }
            pool.state_dim = state_dim;
        }
        let mut eps = Vec::new();
        let take = if labeled { episodes.unwrap_or(usize::MAX) } else { usize::MAX };
        for clip in cache.meta.clips.iter().take(take) {
            let Some(ei) = clip.episode else { bail!("{}: clip {} has no episode index", path.display(), clip.name) };
            let pos = ds.episodes.iter().position(|m| m.index == ei).with_context(|| format!("{}: episode {ei} missing from its metadata", path.display()))?;
            let ep = ds.episode(pos, false).with_context(|| format!("{}: cannot read episode {ei}", path.display()))?;
            if ep.len() != clip.len {
                bail!("{}: episode {ei} has {} rows but {} video frames", path.display(), ep.len(), clip.len);
            }
            let instruction = match pool.instructions.iter().position(|s| *s == ep.task) {
                Some(i) => i,
                None => {
                    let repr = match text.frozen_dim() {
                        None => {
                            let (ids, w) = text.tokenize(&ep.task).with_context(|| format!("{}: episode {ei}'s task", path.display()))?;
                            TextRepr::Hashed(ids, w)
                        }
                        Some(_) => TextRepr::Embedded(Vec::new()),
                    };
                    pool.instructions.push(ep.task.clone());
                    pool.text.push(repr);
                    pool.instructions.len() - 1
                }
            };
            let state = if need_state { ep.state.map(|m| m.data) } else { None };
            let action = match (kind, &pseudo) {
                (TargetKind::Action { .. }, _) if !labeled => None,
                (TargetKind::Action { .. }, Some(p)) => Some(p.episode(ei, clip.len)?),
                (TargetKind::Action { .. }, None) => Some(ep.action.with_context(|| format!("{}: episode {ei} has no action rows", path.display()))?.data),
                (TargetKind::Latent | TargetKind::Continuous, _) => None,
            };
            let e = eps.len();
            for t in 0..clip.len {
                let (tokens, latent) = match &labels {
                    Some(l) if kind == TargetKind::Continuous => match l.latents.get(&(ei, t)) {
                        Some(z) => (Vec::new(), z.clone()),
                        None => continue,
                    },
                    Some(l) => match l.tokens.get(&(ei, t)) {
                        Some(tok) => (tok.clone(), Vec::new()),
                        None => continue,
                    },
                    None => (Vec::new(), Vec::new()),
                };
                pool.samples.push(Sample { source: si, episode: e, t, tokens, latent });
            }
            eps.push(EpisodeData { start: clip.start, len: clip.len, episode: ei, instruction, state, action });
        }
        if labeled && episodes.is_some_and(|n| eps.len() < n) {
            bail!("{}: asked for {} episodes, the dataset has {}", path.display(), take, eps.len());
        }
        pool.caches.push(Arc::new(cache));
        pool.episodes.push(eps);
    }
    if pool.samples.is_empty() {
        bail!("no training samples (every frame lacked a valid label)");
    }
    Ok(pool)
}

impl Pool {
    /// Embeds every distinct instruction once with the frozen sentence encoder `text` names
    /// (read from [`lapa_model::text::minilm_dir`], run on `device` without gradients); nothing
    /// to do for a hashed text encoder, whose ids were made at load.
    pub fn embed_instructions(&mut self, text: &TextConfig, device: &lapa_model::burn::tensor::Device) -> Result<()> {
        if text.frozen_dim().is_none() {
            return Ok(());
        }
        let mut encoder = lapa_model::text::SentenceEncoder::load(&lapa_model::text::minilm_dir(), text, device)?;
        let texts: Vec<&str> = self.instructions.iter().map(String::as_str).collect();
        let embs = encoder.embed(&texts).context("embedding the datasets' instructions")?;
        self.text = embs.into_iter().map(TextRepr::Embedded).collect();
        Ok(())
    }

    fn episode(&self, s: &Sample) -> &EpisodeData {
        &self.episodes[s.source][s.episode]
    }

    /// Whether the sample's episode has actions (false for an unlabeled source's frames).
    pub fn labeled(&self, s: &Sample) -> bool {
        self.episode(s).action.is_some()
    }

    /// The state of a sample's frame.
    pub fn state(&self, s: &Sample) -> Option<&[f32]> {
        let e = self.episode(s);
        e.state.as_ref().map(|v| &v[s.t * self.state_dim..(s.t + 1) * self.state_dim])
    }

    /// The chunk of `chunk` actions from the sample's frame on (the episode's last action
    /// repeats past its end), minus the state for delta targets: [chunk · action_dim].
    pub fn action_chunk(&self, s: &Sample, chunk: usize, target: ActionTarget) -> Vec<f32> {
        let e = self.episode(s);
        let a = e.action.as_ref().expect("action targets are loaded with their actions");
        let d = self.action_dim;
        let mut out = Vec::with_capacity(chunk * d);
        for j in 0..chunk {
            let t = (s.t + j).min(e.len - 1);
            out.extend_from_slice(&a[t * d..(t + 1) * d]);
        }
        if target == ActionTarget::Delta {
            let st = self.state(s).expect("delta targets are loaded with the state");
            for (i, v) in out.iter_mut().enumerate() {
                *v -= st[i % d];
            }
        }
        out
    }

    /// Per-dimension (mean, std) of the continuous latent targets over every training sample.
    pub fn latent_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let d = self.samples.first().map_or(0, |s| s.latent.len());
        let n = self.samples.len().max(1) as f64;
        let mean: Vec<f64> = (0..d).map(|j| self.samples.iter().map(|s| f64::from(s.latent[j])).sum::<f64>() / n).collect();
        let std: Vec<f32> =
            (0..d).map(|j| ((self.samples.iter().map(|s| (f64::from(s.latent[j]) - mean[j]).powi(2)).sum::<f64>() / n).sqrt().max(1e-6)) as f32).collect();
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }

    /// Per-dimension (mean, std) of the state over every training frame.
    pub fn state_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let d = self.state_dim;
        let rows: Vec<&[f32]> = self.samples.iter().filter_map(|s| self.state(s)).collect();
        let n = rows.len().max(1) as f64;
        let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / n).collect();
        let std: Vec<f32> = (0..d).map(|j| ((rows.iter().map(|r| (f64::from(r[j]) - mean[j]).powi(2)).sum::<f64>() / n).sqrt().max(1e-3)) as f32).collect();
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }
}

/// One batch, host side.
#[derive(Debug, Clone)]
pub struct Batch {
    pub step: u64,
    pub size: usize,
    /// [size, patches, patch_dim]
    pub patches: Vec<f32>,
    /// [size, max_ids] hashed-text ids and weights (hashed text encoder).
    pub text_ids: Vec<i64>,
    pub text_weights: Vec<f32>,
    /// [size, text_dim] sentence embeddings (frozen text encoder).
    pub text_emb: Vec<f32>,
    /// [size, state_dim] standardised (empty without a state token).
    pub state: Vec<f32>,
    /// [size, targets] class indices and a 0/1 mask (continuous targets: the mask per token).
    pub targets: Vec<i64>,
    pub mask: Vec<f32>,
    /// [size, tokens, dim] standardised continuous latents (continuous targets; else empty).
    pub values: Vec<f32>,
    /// [size, targets, classes] a teacher's tempered class probabilities (distillation, filled
    /// by the training step before the batch is sharded; else empty).
    pub soft: Vec<f32>,
}

impl Batch {
    /// Cuts the batch into consecutive shards of `sizes` samples (one per data-parallel replica).
    pub fn split(self, sizes: &[usize]) -> Vec<Batch> {
        assert_eq!(sizes.iter().sum::<usize>(), self.size, "shard sizes must add up to the batch");
        fn cut<T: Clone>(v: &[T], n: usize, sizes: &[usize]) -> Vec<Vec<T>> {
            let per = v.len().checked_div(n).unwrap_or(0);
            let mut at = 0;
            sizes
                .iter()
                .map(|&k| {
                    let part = v[at * per..(at + k) * per].to_vec();
                    at += k;
                    part
                })
                .collect()
        }
        let n = self.size;
        let mut patches = cut(&self.patches, n, sizes).into_iter();
        let mut ids = cut(&self.text_ids, n, sizes).into_iter();
        let mut weights = cut(&self.text_weights, n, sizes).into_iter();
        let mut emb = cut(&self.text_emb, n, sizes).into_iter();
        let mut state = cut(&self.state, n, sizes).into_iter();
        let mut targets = cut(&self.targets, n, sizes).into_iter();
        let mut mask = cut(&self.mask, n, sizes).into_iter();
        let mut values = cut(&self.values, n, sizes).into_iter();
        let mut soft = cut(&self.soft, n, sizes).into_iter();
        let mut next = || -> Option<Batch> {
            Some(Batch {
                step: self.step,
                size: 0,
                patches: patches.next()?,
                text_ids: ids.next()?,
                text_weights: weights.next()?,
                text_emb: emb.next()?,
                state: state.next()?,
                targets: targets.next()?,
                mask: mask.next()?,
                values: values.next()?,
                soft: soft.next()?,
            })
        };
        sizes.iter().map(|&k| Batch { size: k, ..next().expect("one part per size") }).collect()
    }
}

/// How batches are made.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub batch_size: usize,
    pub side: usize,
    pub patch: usize,
    pub seed: u64,
    pub kind: TargetKind,
    /// Per-dimension bins (action targets).
    pub bins: Vec<lapa_model::bins::QuantileBins>,
    /// Per-value (mean, std) standardising continuous latent targets, and the latent tokens
    /// per sample.
    pub latent_norm: Option<(Vec<f32>, Vec<f32>, usize)>,
    /// State standardisation when the policy takes a state token.
    pub state_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Random crop keeping at least `1 − crop` of the side, resized back (0 = off).
    pub crop: f32,
    /// Frames per sample, t, t+1, … (the last frame of an episode repeats): 1 for a policy,
    /// 2 for the inverse-dynamics model.
    pub frames: usize,
}

impl BatchSpec {
    /// How batches for `model` are made: its image, patch and frame sizes, its head's bins or
    /// latent standardisation, its state standardisation — everything read from the model's
    /// config, nothing from the caller but the batch's size, seed and augmentation.
    pub fn for_model(model: &lapa_model::vla::VlaConfig, kind: TargetKind, batch_size: usize, seed: u64, crop: f32) -> Self {
        use lapa_model::vla::HeadConfig;
        Self {
            batch_size,
            side: model.image_size,
            patch: model.patch_size,
            seed,
            kind,
            bins: match &model.head {
                HeadConfig::Action(a) => a.edges.clone(),
                HeadConfig::Latent { .. } | HeadConfig::Continuous { .. } => Vec::new(),
            },
            latent_norm: match &model.head {
                HeadConfig::Continuous { tokens, mean, std, .. } => Some((mean.clone(), std.clone(), *tokens)),
                _ => None,
            },
            state_norm: model.state.as_ref().map(|s| (s.mean.clone(), s.std.clone())),
            crop,
            frames: model.frames,
        }
    }
}

/// Batch `step`: a pure function of `(spec.seed, step)`.
pub fn make_batch(pool: &Pool, spec: &BatchSpec, step: u64) -> Batch {
    let mut rng = Rng::new(spec.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x71A);
    let mut b = Batch::empty(step);
    for _ in 0..spec.batch_size {
        let s = &pool.samples[rng.below(pool.samples.len())];
        push_sample(pool, spec, s, &mut rng, &mut b);
    }
    b
}

/// The batch of exactly `samples` (indices into [`Pool::samples`], in order): for measuring a
/// model on a pool's frames rather than training on random draws (a crop, if `spec` has one,
/// is drawn from a fixed seed).
pub fn batch_of(pool: &Pool, spec: &BatchSpec, samples: &[usize]) -> Batch {
    let mut rng = Rng::new(spec.seed ^ 0xE7A1);
    let mut b = Batch::empty(0);
    for &i in samples {
        push_sample(pool, spec, &pool.samples[i], &mut rng, &mut b);
    }
    b
}

impl Batch {
    fn empty(step: u64) -> Self {
        Self {
            step,
            size: 0,
            patches: Vec::new(),
            text_ids: Vec::new(),
            text_weights: Vec::new(),
            text_emb: Vec::new(),
            state: Vec::new(),
            targets: Vec::new(),
            mask: Vec::new(),
            values: Vec::new(),
            soft: Vec::new(),
        }
    }
}

/// Appends one sample's input and target to `b`.
fn push_sample(pool: &Pool, spec: &BatchSpec, s: &Sample, rng: &mut Rng, b: &mut Batch) {
    b.size += 1;
    let e = pool.episode(s);
    let frames: Vec<&[u8]> = (0..spec.frames.max(1)).map(|k| pool.caches[s.source].frame(e.start + (s.t + k).min(e.len - 1))).collect();
    if spec.crop > 0.0 {
        // One crop for every frame of the sample.
        let side = spec.side;
        let cs = side - ((side as f32 * spec.crop * rng.f32()) as usize).min(side - 1);
        let (cx, cy) = (rng.below(side - cs + 1), rng.below(side - cs + 1));
        let crop = |frame: &[u8]| {
            let mut img = vec![0u8; side * side * 3];
            for y in 0..side {
                let sy = cy + y * cs / side;
                for x in 0..side {
                    let sx = cx + x * cs / side;
                    img[(y * side + x) * 3..(y * side + x) * 3 + 3].copy_from_slice(&frame[(sy * side + sx) * 3..(sy * side + sx) * 3 + 3]);
                }
            }
            img
        };
        let imgs: Vec<Vec<u8>> = frames.iter().map(|f| crop(f)).collect();
        let refs: Vec<&[u8]> = imgs.iter().map(Vec::as_slice).collect();
        lapa_model::patchify_stacked(&refs, spec.side, spec.patch, &mut b.patches);
    } else {
        lapa_model::patchify_stacked(&frames, spec.side, spec.patch, &mut b.patches);
    }
    match &pool.text[e.instruction] {
        TextRepr::Hashed(ids, w) => {
            b.text_ids.extend_from_slice(ids);
            b.text_weights.extend_from_slice(w);
        }
        TextRepr::Embedded(v) => b.text_emb.extend_from_slice(v),
    }
    if let Some((mean, std)) = &spec.state_norm {
        let st = pool.state(s).expect("a state token is loaded with the state");
        b.state.extend(st.iter().zip(mean).zip(std).map(|((v, m), sd)| (v - m) / sd));
    }
    match spec.kind {
        TargetKind::Latent => {
            b.targets.extend_from_slice(&s.tokens);
            b.mask.extend(std::iter::repeat_n(1.0, s.tokens.len()));
        }
        TargetKind::Continuous => {
            let (mean, std, tokens) = spec.latent_norm.as_ref().expect("continuous targets are batched with their standardisation");
            b.values.extend(s.latent.iter().zip(mean).zip(std).map(|((v, m), sd)| (v - m) / sd));
            b.mask.extend(std::iter::repeat_n(1.0, *tokens));
        }
        TargetKind::Action { chunk, target } if pool.labeled(s) => {
            let a = pool.action_chunk(s, chunk, target);
            let d = pool.action_dim;
            b.targets.extend(a.iter().enumerate().map(|(i, &v)| spec.bins[i % d].encode(v) as i64));
            b.mask.extend(std::iter::repeat_n(1.0, a.len()));
        }
        TargetKind::Action { chunk, .. } => {
            // An unlabeled frame: targets masked out (a teacher supplies its distribution).
            let n = chunk * spec.bins.len();
            b.targets.extend(std::iter::repeat_n(0, n));
            b.mask.extend(std::iter::repeat_n(0.0, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_splits_into_consecutive_shards_field_by_field() {
        let n = 5;
        let b = Batch {
            step: 7,
            size: n,
            patches: (0..n * 6).map(|i| i as f32).collect(),
            text_ids: (0..n as i64 * 2).collect(),
            text_weights: vec![1.0; n * 2],
            text_emb: Vec::new(),
            state: (0..n * 3).map(|i| -(i as f32)).collect(),
            targets: (0..n as i64 * 4).collect(),
            mask: (0..n * 4).map(|i| (i % 2) as f32).collect(),
            values: (0..n * 8).map(|i| i as f32 * 0.5).collect(),
            soft: (0..n * 4 * 3).map(|i| i as f32).collect(),
        };
        let whole = b.clone();
        let parts = b.split(&[3, 2]);
        assert_eq!(parts.iter().map(|p| p.size).collect::<Vec<_>>(), [3, 2]);
        assert!(parts.iter().all(|p| p.step == 7 && p.text_emb.is_empty()));
        assert_eq!(parts[1].patches, whole.patches[18..]);
        assert_eq!(parts[0].state, whole.state[..9]);
        assert_eq!(parts[1].targets, whole.targets[12..]);
        let joined: Vec<f32> = parts.iter().flat_map(|p| p.mask.clone()).collect();
        assert_eq!(joined, whole.mask);
        assert_eq!(parts[0].values, whole.values[..24]);
        assert_eq!(parts[1].values, whole.values[24..]);
        assert_eq!(parts[1].soft, whole.soft[36..]);
    }
}
