//! `lapa laq label`: latent action tokens for every frame of a dataset, for latent pretraining.
//! Frame t gets the tokens of the pair (t, t+H); the last H frames of an episode, which have no
//! future frame, are paired with the episode's last frame and marked `valid = 0`.
//!
//! With `continuous`, `latent_continuous.csv` also holds every frame's pre-quantisation latent
//! (the encoder's output before the quantizer, `n_tokens × code_dim` values, token-major): the
//! target of the LAPA table's continuous-latent ablation. `latent_actions.json` is written last,
//! so a folder is complete only when it exists.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use lapa_model::burn::tensor::Device;
use serde::Serialize;

use super::cache::{FrameCache, Pair, Source, spacing_frames};
use super::report::encode_pairs_full;

pub const LABELS_CSV: &str = "latent_actions.csv";
pub const LABELS_META: &str = "latent_actions.json";
pub const CONTINUOUS_CSV: &str = "latent_continuous.csv";

#[derive(Debug, Clone, Serialize)]
pub struct LabelMeta {
    pub run: PathBuf,
    pub data: PathBuf,
    pub spacing_s: f64,
    /// Latent tokens per frame (columns `latent_0..`).
    pub n_tokens: usize,
    /// Classes each token has (NSVQ codebook size, or the product of the FSQ levels): what the
    /// latent head of the next stage predicts over. Read this, never a constant.
    pub vocabulary: usize,
    pub quantizer: lapa_model::QuantizerKind,
    /// The whole LAQ config of the run, as in its `model/config.json`.
    pub laq_config: lapa_model::LaqConfig,
    pub frames: usize,
    pub valid: usize,
    pub columns: Vec<String>,
    /// Values per token in `latent_continuous.csv` (the LAQ's `code_dim`; columns
    /// `z_0..z_{n_tokens·code_dim − 1}` after `episode,frame_index,valid`), when it was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuous_dim: Option<usize>,
}

#[allow(clippy::too_many_arguments, reason = "one argument per CLI flag of `lapa laq label`; the CLI struct lives in the binary")]
pub fn run(
    run: &Path,
    data: &Path,
    camera: Option<&str>,
    spacing_s: f64,
    out: &Path,
    cache_dir: &Path,
    device: &Device,
    batch: usize,
    continuous: bool,
    quiet: bool,
) -> Result<LabelMeta> {
    let (cfg, model) = lapa_model::load_laq(&run.join(super::train::MODEL_DIR), device)?;
    let source = Source::detect(data, camera)?;
    let cache = FrameCache::open_or_build(&source, cfg.image_size, cache_dir, quiet)?;
    let mut pairs = Vec::with_capacity(cache.meta.frames);
    let mut rows = Vec::with_capacity(cache.meta.frames);
    for (ci, c) in cache.meta.clips.iter().enumerate() {
        let h = spacing_frames(spacing_s, c.fps)?;
        for t in 0..c.len {
            let b = (t + h).min(c.len - 1);
            pairs.push(Pair { clip: ci, a: c.start + t, b: c.start + b });
            rows.push((c.episode.map(|e| e.to_string()).unwrap_or_else(|| c.name.clone()), t, t + h < c.len));
        }
    }
    let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::new(pairs.len() as u64) };
    pb.set_style(ProgressStyle::with_template("labelling [{bar:30}] {pos}/{len} frames {per_sec} ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut idx = Vec::with_capacity(pairs.len() * cfg.n_tokens);
    let mut z = Vec::new();
    for chunk in pairs.chunks(1024) {
        let (i, _, zc) = encode_pairs_full(&model, &cfg, &cache, chunk, device, batch, false, continuous)?;
        idx.extend(i);
        z.extend(zc);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let t = cfg.n_tokens;
    let (columns, csv) = frame_csv(&rows, "latent", &idx, t);
    std::fs::create_dir_all(out)?;
    // The meta of an earlier labelling goes first: until the new one is written the folder is
    // incomplete, never a mix of two runs' files.
    match std::fs::remove_file(out.join(LABELS_META)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    lapa_fs::atomic_write(&out.join(LABELS_CSV), csv.as_bytes())?;
    let width = t * cfg.code_dim;
    if continuous {
        if z.len() != rows.len() * width || z.iter().any(|v| !v.is_finite()) {
            anyhow::bail!("the LAQ gave {} latent values for {} frames of {width} (or a value that is not finite)", z.len(), rows.len());
        }
        let (_, text) = frame_csv(&rows, "z", &z, width);
        lapa_fs::atomic_write(&out.join(CONTINUOUS_CSV), text.as_bytes())?;
    } else {
        match std::fs::remove_file(out.join(CONTINUOUS_CSV)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let meta = LabelMeta {
        run: run.to_path_buf(),
        data: data.to_path_buf(),
        spacing_s,
        n_tokens: t,
        vocabulary: cfg.vocabulary(),
        quantizer: cfg.quantizer,
        laq_config: cfg.clone(),
        frames: rows.len(),
        valid: rows.iter().filter(|r| r.2).count(),
        columns,
        continuous_dim: continuous.then_some(cfg.code_dim),
    };
    lapa_fs::atomic_write(&out.join(LABELS_META), &serde_json::to_vec_pretty(&meta)?)?;
    Ok(meta)
}

/// One CSV row per frame: `episode,frame_index,valid`, then `width` values named `{prefix}_{i}`
/// (`values` holds them frame after frame). Returns the columns and the text.
fn frame_csv<V: std::fmt::Display>(rows: &[(String, usize, bool)], prefix: &str, values: &[V], width: usize) -> (Vec<String>, String) {
    let mut columns = vec!["episode".to_string(), "frame_index".into(), "valid".into()];
    columns.extend((0..width).map(|i| format!("{prefix}_{i}")));
    let mut text = columns.join(",") + "\n";
    for ((ep, f, valid), vals) in rows.iter().zip(values.chunks(width.max(1))) {
        let _ = write!(text, "{ep},{f},{}", u8::from(*valid));
        for v in vals {
            let _ = write!(text, ",{v}");
        }
        text.push('\n');
    }
    (columns, text)
}
