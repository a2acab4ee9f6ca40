//! `lapa laq report`: evidence that the latents encode controllable motion, not appearance.
//! Codebook usage, probes from latents vs raw frame differences to the true action on held-out
//! episodes, counterfactual decodes, and reconstruction PSNR against the copy-x_t baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lapa_boards::SO101;
use lapa_dataset::png_io::Canvas;
use lapa_dataset::{Dataset, Matrix};
use lapa_model::burn::tensor::{Device, Int, Tensor, TensorData};
use lapa_model::nsvq::{code_counts, perplexity};
use lapa_model::{Laq, LaqConfig, QuantizerKind, patchify, unpatchify};
use serde::Serialize;

use super::cache::{Clip, FrameCache, Pair, Source, SourceKind, resize_square};
use super::probe::{self, ProbeResult, ProbeSet};

/// Direction classes of the end-effector displacement over the pair.
pub const DIRECTIONS: [&str; 7] = ["still", "+x", "-x", "+y", "-y", "up", "down"];
/// Displacements shorter than this (metres) count as "still".
pub const STILL_M: f32 = 0.01;

/// The 2-D label, which a single top view determines: the tip's displacement in the image (the
/// nominal camera's, scaled to metres at the table plane), still or one of 8 directions of 45°.
pub const DIRECTIONS_2D: [&str; 9] = ["still", "right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right"];

/// Class of an image-plane displacement (see [`DIRECTIONS_2D`]).
pub fn direction_class_2d(d: [f32; 2]) -> usize {
    let n = (d[0] * d[0] + d[1] * d[1]).sqrt();
    if n < STILL_M {
        return 0;
    }
    let sector = (d[1].atan2(d[0]) / std::f32::consts::FRAC_PI_4).round().rem_euclid(8.0) as usize;
    1 + sector % 8
}

/// Whether an image-plane displacement is far from every 2-D class boundary: its length not
/// within 30% of the still threshold and, when moving, its angle within 15° of a sector centre.
pub fn unambiguous_2d(d: [f32; 2]) -> bool {
    let n = (d[0] * d[0] + d[1] * d[1]).sqrt();
    if n < 0.7 * STILL_M {
        return true;
    }
    if n < 1.3 * STILL_M {
        return false;
    }
    let a = d[1].atan2(d[0]) / std::f32::consts::FRAC_PI_4;
    (a - a.round()).abs() * 45.0 <= 15.0
}

/// Whether a tip displacement is far from every class boundary: its length is not within 30% of
/// the "still" threshold and, when moving, the second-largest axis is under 2/3 of the largest.
/// The probe tables also report accuracy on these unambiguous pairs, to tell label noise at the
/// boundaries apart from latents that miss the motion.
pub fn unambiguous(d: [f32; 3]) -> bool {
    let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    if n < 0.7 * STILL_M {
        return true;
    }
    if n < 1.3 * STILL_M {
        return false;
    }
    let mut a = d.map(f32::abs);
    a.sort_by(f32::total_cmp);
    a[1] < (2.0 / 3.0) * a[2]
}

/// Dominant-axis direction of a tip displacement.
pub fn direction_class(d: [f32; 3]) -> usize {
    let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    if n < STILL_M {
        return 0;
    }
    let (ax, _) = d.iter().enumerate().fold((0, 0f32), |(bi, bv), (i, v)| if v.abs() > bv { (i, v.abs()) } else { (bi, bv) });
    1 + 2 * ax + usize::from(d[ax] < 0.0)
}

/// Encodes pairs in batches without gradients: (indices [n × T], optional recon patches).
pub fn encode_pairs(
    model: &Laq,
    cfg: &LaqConfig,
    cache: &FrameCache,
    pairs: &[Pair],
    device: &Device,
    batch: usize,
    recon: bool,
) -> Result<(Vec<i64>, Vec<f32>)> {
    let (idx, rec, _) = encode_pairs_full(model, cfg, cache, pairs, device, batch, recon, false)?;
    Ok((idx, rec))
}

/// [`encode_pairs`], optionally also returning the continuous pre-quantisation latents
/// ([n × T × code_dim], the encoder output before the nearest-code lookup).
#[allow(clippy::too_many_arguments)]
pub fn encode_pairs_full(
    model: &Laq,
    cfg: &LaqConfig,
    cache: &FrameCache,
    pairs: &[Pair],
    device: &Device,
    batch: usize,
    recon: bool,
    latents: bool,
) -> Result<(Vec<i64>, Vec<f32>, Vec<f32>)> {
    let (np, pd) = (cfg.n_patches(), cfg.patch_dim());
    let mut idx_all = Vec::with_capacity(pairs.len() * cfg.n_tokens);
    let mut rec_all = Vec::new();
    let mut z_all = Vec::new();
    for chunk in pairs.chunks(batch.max(1)) {
        let (mut a, mut b) = (Vec::with_capacity(chunk.len() * np * pd), Vec::with_capacity(chunk.len() * np * pd));
        for p in chunk {
            patchify(cache.frame(p.a), cfg.image_size, cfg.patch_size, &mut a);
            patchify(cache.frame(p.b), cfg.image_size, cfg.patch_size, &mut b);
        }
        let n = chunk.len();
        let x0 = Tensor::<3>::from_data(TensorData::new(a, [n, np, pd]), device);
        let x1 = Tensor::<3>::from_data(TensorData::new(b, [n, np, pd]), device);
        let z = model.encode_latents(x0.clone(), x1); // [n*T, code_dim]
        let (_, idx) = model.quantizer.forward_eval(z.clone());
        let idx = idx.reshape([n, cfg.n_tokens]);
        if latents {
            z_all.extend(z.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
        }
        if recon {
            let r = model.decode_indices(x0, idx.clone());
            rec_all.extend(r.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
        }
        idx_all.extend(idx.into_data().convert::<i64>().try_into_vec::<i64>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
    }
    Ok((idx_all, rec_all, z_all))
}

/// Probe features of one pair's tokens: per token, one-hot over the codebook (NSVQ), or one-hot
/// per FSQ digit (Σ levels values: the quantised value of each FSQ dimension).
fn token_features(cfg: &LaqConfig, codes: &[i64]) -> Vec<f32> {
    match cfg.quantizer {
        QuantizerKind::Nsvq => one_hot(codes.iter().map(|&c| usize::try_from(c).unwrap_or(0)), cfg.codebook_size),
        QuantizerKind::Fsq => {
            let mut out = Vec::with_capacity(codes.len() * cfg.fsq_levels.iter().sum::<usize>());
            for &c in codes {
                let mut rest = usize::try_from(c).unwrap_or(0);
                for &l in &cfg.fsq_levels {
                    out.extend(one_hot(std::iter::once(rest % l), l));
                    rest /= l;
                }
            }
            out
        }
    }
}

/// Length of [`token_features`] for one pair.
fn token_feature_len(cfg: &LaqConfig) -> usize {
    cfg.n_tokens
        * match cfg.quantizer {
            QuantizerKind::Nsvq => cfg.codebook_size,
            QuantizerKind::Fsq => cfg.fsq_levels.iter().sum(),
        }
}

/// One-hot rows of `k` values for each code in turn: a pair's T tokens become T·k features.
fn one_hot(codes: impl Iterator<Item = usize>, k: usize) -> Vec<f32> {
    codes
        .flat_map(|c| {
            let mut v = vec![0f32; k];
            if let Some(x) = v.get_mut(c) {
                *x = 1.0;
            }
            v
        })
        .collect()
}

fn psnr(mse: f64) -> f64 {
    10.0 * (1.0 / mse.max(1e-12)).log10()
}

#[derive(Debug, Clone, Serialize)]
pub struct CodeUsage {
    pub position: usize,
    pub used: usize,
    pub perplexity: f64,
    pub counts: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeNumbers {
    pub accuracy: f64,
    pub majority: f64,
    pub r2: f64,
    /// Accuracy on the held-out pairs whose direction is far from a class boundary.
    pub accuracy_unambiguous: f64,
    /// Held-out confusion counts, `confusion[true][predicted]`, classes as in `DIRECTIONS`.
    pub confusion: Vec<Vec<usize>>,
}

impl ProbeNumbers {
    fn new(p: &ProbeResult, truth: &[usize], clear: &[bool]) -> Self {
        Self::with_classes(p, truth, clear, DIRECTIONS.len())
    }

    fn with_classes(p: &ProbeResult, truth: &[usize], clear: &[bool], k: usize) -> Self {
        let mut confusion = vec![vec![0usize; k]; k];
        let (mut ok, mut n) = (0usize, 0usize);
        for ((&t, &g), &c) in truth.iter().zip(&p.predicted).zip(clear) {
            if t < k && g < k {
                confusion[t][g] += 1;
            }
            if c {
                n += 1;
                ok += usize::from(t == g);
            }
        }
        Self { accuracy: p.accuracy, majority: p.majority, r2: p.r2, accuracy_unambiguous: ok as f64 / n.max(1) as f64, confusion }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: PathBuf,
    pub data: PathBuf,
    pub spacing_s: f64,
    pub pairs: usize,
    pub test_pairs: usize,
    pub quantizer: QuantizerKind,
    /// Classes per latent token (NSVQ codebook size or the product of the FSQ levels).
    pub vocabulary: usize,
    pub n_tokens: usize,
    pub usage: Vec<CodeUsage>,
    /// Perplexity over all positions pooled.
    pub perplexity: f64,
    pub distinct_actions: usize,
    pub probe_latent: Option<ProbeNumbers>,
    /// The same probe on the continuous encoder output before quantisation (a diagnostic: does
    /// the encoder carry the motion that the discrete tokens lose?).
    pub probe_prequant: Option<ProbeNumbers>,
    /// The 2-D label ([`DIRECTIONS_2D`]: image-plane tip displacement) from the latent tokens, the
    /// encoder output before quantisation and the frame differences.
    pub probe_latent_2d: Option<ProbeNumbers>,
    pub probe_prequant_2d: Option<ProbeNumbers>,
    pub probe_frame_diff_2d: Option<ProbeNumbers>,
    /// The same probe on one-hot codes of a codebook of the same size re-fitted after training
    /// by k-means on the training episodes' encoder outputs (a diagnostic: is the learned
    /// codebook's partition or the number of codes what loses the motion?).
    pub probe_kmeans: Option<ProbeNumbers>,
    pub probe_frame_diff: Option<ProbeNumbers>,
    pub class_histogram: Vec<usize>,
    /// Held-out pairs far from a class boundary (see [`unambiguous`]).
    pub test_unambiguous: usize,
    pub psnr_recon: f64,
    pub psnr_copy: f64,
}

#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub run: PathBuf,
    pub data: PathBuf,
    pub camera: Option<String>,
    pub spacing_s: f64,
    pub cache_dir: PathBuf,
    pub out: PathBuf,
    pub max_pairs: usize,
    pub probe_steps: usize,
    pub quiet: bool,
}

/// Features for the frame-difference baseline: (x_{t+H} − x_t) box-filtered to 16×16×3.
fn frame_diff(cache: &FrameCache, p: &Pair) -> Result<Vec<f32>> {
    let s = cache.side();
    let a = resize_square(cache.frame(p.a), s, s, 16)?;
    let b = resize_square(cache.frame(p.b), s, s, 16)?;
    Ok(a.iter().zip(&b).map(|(x, y)| (f32::from(*y) - f32::from(*x)) / 255.0).collect())
}

/// The report's held-out episodes: every fifth clip of the probe data (clip index a multiple of
/// 5). Action supervision labels only clips outside this set.
pub fn is_held_out(clip: usize) -> bool {
    clip.is_multiple_of(5)
}

/// The true joint states of every clip, for the probes: `None` when the source is a folder of
/// videos or some episode has no (6-joint) `observation.state`. A dataset that cannot be read is
/// an error naming it, not a report without probes.
pub(crate) fn probe_states(source: &Source, clips: &[Clip]) -> Result<Option<BTreeMap<usize, Matrix>>> {
    if source.kind != SourceKind::Dataset {
        return Ok(None);
    }
    let path = &source.path;
    let ds = Dataset::open(path).with_context(|| format!("{}: cannot read the dataset for the probes", path.display()))?;
    let mut states = BTreeMap::new();
    for (ci, c) in clips.iter().enumerate() {
        if let Some(e) = c.episode {
            let pos = ds.episodes.iter().position(|m| m.index == e).with_context(|| format!("{}: episode {e} missing", path.display()))?;
            let ep = ds.episode(pos, false).with_context(|| format!("{}: cannot read episode {e} for the probes", path.display()))?;
            if let Some(s) = ep.state {
                states.insert(ci, s);
            }
        }
    }
    Ok((states.len() == clips.len() && states.values().all(|s| s.cols >= 6)).then_some(states))
}

pub fn run(opts: &ReportOptions, device: &Device) -> Result<Report> {
    let (cfg, model) = lapa_model::load_laq(&opts.run.join(super::train::MODEL_DIR), device)?;
    let source = Source::detect(&opts.data, opts.camera.as_deref())?;
    let cache = FrameCache::open_or_build(&source, cfg.image_size, &opts.cache_dir, opts.quiet)?;
    let mut pairs = cache.pairs(opts.spacing_s)?;
    if pairs.len() > opts.max_pairs {
        // Even subsample, deterministic.
        let step = pairs.len() as f64 / opts.max_pairs as f64;
        pairs = (0..opts.max_pairs).map(|i| pairs[(i as f64 * step) as usize]).collect();
    }
    std::fs::create_dir_all(&opts.out)?;
    let clips = &cache.meta.clips;
    // Held-out episodes: every fifth clip.
    let is_test = |p: &Pair| is_held_out(p.clip);
    let (idx, rec, z) = encode_pairs_full(&model, &cfg, &cache, &pairs, device, 64, true, true)?;
    let zd = cfg.n_tokens * cfg.code_dim;
    let t = cfg.n_tokens;
    let k = cfg.vocabulary();

    // Codebook usage per token position.
    let usage: Vec<CodeUsage> = (0..t)
        .map(|pos| {
            let col: Vec<i64> = idx.iter().skip(pos).step_by(t).copied().collect();
            let counts = code_counts(&col, k);
            CodeUsage { position: pos, used: counts.iter().filter(|&&c| c > 0).count(), perplexity: perplexity(&counts), counts }
        })
        .collect();
    let pooled = perplexity(&code_counts(&idx, k));
    let mut tuples: BTreeMap<Vec<i64>, usize> = BTreeMap::new();
    for row in idx.chunks(t) {
        *tuples.entry(row.to_vec()).or_default() += 1;
    }

    // Reconstruction PSNR on held-out pairs, and the copy-x_t baseline.
    let pd = cfg.n_patches() * cfg.patch_dim();
    let (mut se_rec, mut se_copy, mut n_px) = (0f64, 0f64, 0f64);
    let mut target = Vec::with_capacity(pd);
    let mut first = Vec::with_capacity(pd);
    for (i, p) in pairs.iter().enumerate().filter(|(_, p)| is_test(p)) {
        target.clear();
        first.clear();
        patchify(cache.frame(p.b), cfg.image_size, cfg.patch_size, &mut target);
        patchify(cache.frame(p.a), cfg.image_size, cfg.patch_size, &mut first);
        for j in 0..pd {
            se_rec += f64::from((rec[i * pd + j].clamp(0.0, 1.0) - target[j]).powi(2));
            se_copy += f64::from((first[j] - target[j]).powi(2));
        }
        n_px += pd as f64;
    }
    let test_pairs = pairs.iter().filter(|p| is_test(p)).count();
    let (psnr_recon, psnr_copy) = (psnr(se_rec / n_px.max(1.0)), psnr(se_copy / n_px.max(1.0)));

    // Probes need the true state (labelled datasets only).
    let mut probe_latent = None;
    let mut probe_pre = None;
    let mut probe_km = None;
    let mut probe_diff = None;
    let (mut probe_latent_2d, mut probe_prequant_2d, mut probe_frame_diff_2d) = (None, None, None);
    let mut class_histogram = vec![0usize; DIRECTIONS.len()];
    let mut test_clear: Vec<bool> = Vec::new();
    // The 2-D label of every pair, split as the sets are (training rows, then held-out rows).
    let (mut class_2d_tr, mut class_2d_te, mut test_clear_2d) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(states) = probe_states(&source, clips)? {
        let (mut lat_tr, mut lat_te, mut dif_tr, mut dif_te) = (ProbeSet::default(), ProbeSet::default(), ProbeSet::default(), ProbeSet::default());
        let (mut pre_tr, mut pre_te) = (ProbeSet::default(), ProbeSet::default());
        for set in [&mut lat_tr, &mut lat_te] {
            set.features = token_feature_len(&cfg);
            set.reg_dim = 6;
        }
        for set in [&mut pre_tr, &mut pre_te] {
            set.features = zd;
            set.reg_dim = 6;
        }
        for set in [&mut dif_tr, &mut dif_te] {
            set.features = 16 * 16 * 3;
            set.reg_dim = 6;
        }
        for (i, p) in pairs.iter().enumerate() {
            let s = &states[&p.clip];
            let (ta, tb) = (p.a - clips[p.clip].start, p.b - clips[p.clip].start);
            let q = |r: usize| -> [f32; 6] {
                let row = s.row(r);
                [row[0], row[1], row[2], row[3], row[4], row[5]]
            };
            let (qa, qb) = (q(ta), q(tb));
            let (pa, pb) = (SO101.forward(&qa).tip, SO101.forward(&qb).tip);
            let disp = [pb[0] - pa[0], pb[1] - pa[1], pb[2] - pa[2]];
            let class = direction_class(disp);
            class_histogram[class] += 1;
            let (ia, ib) = (lapa_sim::render::nominal_image_point(pa), lapa_sim::render::nominal_image_point(pb));
            let disp_2d = [ib[0] - ia[0], ib[1] - ia[1]];
            if is_test(p) {
                test_clear.push(unambiguous(disp));
                test_clear_2d.push(unambiguous_2d(disp_2d));
                class_2d_te.push(direction_class_2d(disp_2d));
            } else {
                class_2d_tr.push(direction_class_2d(disp_2d));
            }
            let reg: Vec<f32> = (0..6).map(|j| qb[j] - qa[j]).collect();
            let onehot = token_features(&cfg, &idx[i * t..(i + 1) * t]);
            let (lat, pre, dif) = if is_test(p) { (&mut lat_te, &mut pre_te, &mut dif_te) } else { (&mut lat_tr, &mut pre_tr, &mut dif_tr) };
            for (set, x) in [(lat, onehot), (pre, z[i * zd..(i + 1) * zd].to_vec()), (dif, frame_diff(&cache, p)?)] {
                set.x.extend(x);
                set.class.push(class);
                set.reg.extend(&reg);
            }
        }
        if !lat_tr.is_empty() && !lat_te.is_empty() {
            let lat = probe::fit(&lat_tr, &lat_te, DIRECTIONS.len(), device, 7, opts.probe_steps)?;
            probe_latent = Some(ProbeNumbers::new(&lat, &lat_te.class, &test_clear));
            let pre = probe::fit(&pre_tr, &pre_te, DIRECTIONS.len(), device, 7, opts.probe_steps)?;
            probe_pre = Some(ProbeNumbers::new(&pre, &pre_te.class, &test_clear));
            // k-means codebook of the same size on the training pairs' token latents (the
            // rows of pre_tr, code_dim values per token). NSVQ only: FSQ has no codebook to
            // re-fit.
            if cfg.quantizer == QuantizerKind::Nsvq {
                let c = cfg.code_dim;
                let cent = probe::kmeans(&pre_tr.x, c, k, 30, 11);
                // Same pairs, labels and targets; features are the k-means codes, one-hot.
                let recoded =
                    |src: &ProbeSet| ProbeSet { features: t * k, x: one_hot(src.x.chunks(c).map(|tok| probe::nearest(&cent, c, tok)), k), ..src.clone() };
                let (km_tr, km_te) = (recoded(&pre_tr), recoded(&pre_te));
                let km = probe::fit(&km_tr, &km_te, DIRECTIONS.len(), device, 7, opts.probe_steps)?;
                probe_km = Some(ProbeNumbers::new(&km, &km_te.class, &test_clear));
            }
            let dif = probe::fit(&dif_tr, &dif_te, DIRECTIONS.len(), device, 7, opts.probe_steps)?;
            probe_diff = Some(ProbeNumbers::new(&dif, &dif_te.class, &test_clear));
            // The same three probes on the 2-D label the view determines.
            let k2 = DIRECTIONS_2D.len();
            let relabel = |src: &ProbeSet, class: &[usize]| ProbeSet { class: class.to_vec(), ..src.clone() };
            let fit_2d = |tr: &ProbeSet, te: &ProbeSet| -> Result<ProbeNumbers> {
                let (tr, te) = (relabel(tr, &class_2d_tr), relabel(te, &class_2d_te));
                let r = probe::fit(&tr, &te, k2, device, 7, opts.probe_steps)?;
                Ok(ProbeNumbers::with_classes(&r, &te.class, &test_clear_2d, k2))
            };
            probe_latent_2d = Some(fit_2d(&lat_tr, &lat_te)?);
            probe_prequant_2d = Some(fit_2d(&pre_tr, &pre_te)?);
            probe_frame_diff_2d = Some(fit_2d(&dif_tr, &dif_te)?);
        }
    }

    // Counterfactuals: the most common latent actions applied to held-out scenes.
    let mut common: Vec<(Vec<i64>, usize)> = tuples.iter().map(|(k, v)| (k.clone(), *v)).collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let codes: Vec<Vec<i64>> = common.iter().take(6).map(|(k, _)| k.clone()).collect();
    let mut scenes: Vec<&Pair> = Vec::new();
    for p in pairs.iter().filter(|p| is_test(p)) {
        if scenes.iter().all(|s| s.clip != p.clip) {
            scenes.push(p);
        }
        if scenes.len() == 6 {
            break;
        }
    }
    let side = cfg.image_size;
    if !codes.is_empty() && !scenes.is_empty() {
        let mut tiles: Vec<Vec<u8>> = Vec::new();
        let blank = vec![255u8; side * side * 3];
        // Header row: two blanks, then the scenes (x_t).
        tiles.push(blank.clone());
        tiles.push(blank.clone());
        tiles.extend(scenes.iter().map(|s| cache.frame(s.a).to_vec()));
        for code in &codes {
            // An example pair that produced this code.
            let ex = pairs.iter().enumerate().find(|(i, _)| idx[i * t..(i + 1) * t] == code[..]).map(|(_, p)| *p);
            match ex {
                Some(p) => {
                    tiles.push(cache.frame(p.a).to_vec());
                    tiles.push(cache.frame(p.b).to_vec());
                }
                None => {
                    tiles.push(blank.clone());
                    tiles.push(blank.clone());
                }
            }
            let mut a = Vec::new();
            for s in &scenes {
                patchify(cache.frame(s.a), side, cfg.patch_size, &mut a);
            }
            let n = scenes.len();
            let x0 = Tensor::<3>::from_data(TensorData::new(a, [n, cfg.n_patches(), cfg.patch_dim()]), device);
            let ind: Vec<i64> = (0..n).flat_map(|_| code.iter().copied()).collect();
            let ind = Tensor::<2, Int>::from_data(TensorData::new(ind, [n, t]), device);
            let out: Vec<f32> = model.decode_indices(x0, ind).into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for j in 0..n {
                tiles.push(unpatchify(&out[j * pd..(j + 1) * pd], side, cfg.patch_size));
            }
        }
        let refs: Vec<&[u8]> = tiles.iter().map(|v| v.as_slice()).collect();
        Canvas::grid(&refs, side, side, 2 + scenes.len(), (128 / side).max(1)).save(&opts.out.join("counterfactual.png"))?;
    }
    // Reconstruction examples: x_t, x_{t+H}, decoded x_{t+H}, for 8 held-out pairs.
    let ex: Vec<usize> = pairs.iter().enumerate().filter(|(_, p)| is_test(p)).map(|(i, _)| i).step_by((test_pairs / 8).max(1)).take(8).collect();
    if !ex.is_empty() {
        let mut tiles: Vec<Vec<u8>> = Vec::new();
        for row in 0..3 {
            for &i in &ex {
                tiles.push(match row {
                    0 => cache.frame(pairs[i].a).to_vec(),
                    1 => cache.frame(pairs[i].b).to_vec(),
                    _ => unpatchify(&rec[i * pd..(i + 1) * pd], side, cfg.patch_size),
                });
            }
        }
        let refs: Vec<&[u8]> = tiles.iter().map(|v| v.as_slice()).collect();
        Canvas::grid(&refs, side, side, ex.len(), (128 / side).max(1)).save(&opts.out.join("reconstructions.png"))?;
    }

    let report = Report {
        run: opts.run.clone(),
        data: opts.data.clone(),
        spacing_s: opts.spacing_s,
        pairs: pairs.len(),
        test_pairs,
        quantizer: cfg.quantizer,
        vocabulary: k,
        n_tokens: t,
        usage,
        perplexity: pooled,
        distinct_actions: tuples.len(),
        probe_latent,
        probe_prequant: probe_pre,
        probe_kmeans: probe_km,
        probe_frame_diff: probe_diff,
        probe_latent_2d,
        probe_prequant_2d,
        probe_frame_diff_2d,
        class_histogram,
        test_unambiguous: test_clear.iter().filter(|&&c| c).count(),
        psnr_recon,
        psnr_copy,
    };
    lapa_fs::atomic_write(&opts.out.join("report.json"), &serde_json::to_vec_pretty(&report)?)?;
    lapa_fs::atomic_write(&opts.out.join("report.md"), markdown(&report, &cfg).as_bytes())?;
    Ok(report)
}

fn markdown(r: &Report, cfg: &LaqConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# LAQ latent-quality report\n");
    let _ = writeln!(s, "- run: `{}`; data: `{}`; spacing H = {} s", r.run.display(), r.data.display(), r.spacing_s);
    let _ = writeln!(
        s,
        "- model: {}² frames, patch {}, dim {}, {}+{} encoder / {} decoder layers; {} tokens × {} ({} latent actions possible)",
        cfg.image_size,
        cfg.patch_size,
        cfg.dim,
        cfg.spatial_depth,
        cfg.temporal_depth,
        cfg.decoder_depth,
        r.n_tokens,
        match cfg.quantizer {
            QuantizerKind::Nsvq => format!("NSVQ codebook {}", cfg.codebook_size),
            QuantizerKind::Fsq => format!("FSQ levels {:?} = {}", cfg.fsq_levels, r.vocabulary),
        },
        (r.vocabulary as f64).powi(i32::try_from(r.n_tokens).unwrap_or(i32::MAX))
    );
    let _ = writeln!(s, "- pairs scored: {} ({} held out: every fifth episode)\n", r.pairs, r.test_pairs);
    // Headline: what the next stage can learn from the tokens, beside what the encoder and the
    // pixels carry.
    if let (Some(l), Some(z), Some(d)) = (&r.probe_latent, &r.probe_prequant, &r.probe_frame_diff) {
        let acc2 = |p: &Option<ProbeNumbers>| p.as_ref().map_or("—".to_string(), |p| format!("{:.1}%", 100.0 * p.accuracy));
        let _ = writeln!(
            s,
            "## Headline (held-out episodes)\n\n| features | joint-delta R² (pooled) | 7-way 3-D direction | 9-way image-plane direction |\n|---|---|---|---|"
        );
        for (name, p, p2) in [
            ("latent tokens", l, &r.probe_latent_2d),
            ("encoder before quantisation", z, &r.probe_prequant_2d),
            ("frame differences", d, &r.probe_frame_diff_2d),
        ] {
            let _ = writeln!(s, "| {name} | {:.3} | {:.1}% | {} |", p.r2, 100.0 * p.accuracy, acc2(p2));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Codebook usage\n\n| token position | codes used | perplexity | counts |\n|---|---|---|---|");
    for u in &r.usage {
        // Large FSQ vocabularies: the counts are in report.json.
        let counts = if r.vocabulary <= 64 { format!("{:?}", u.counts) } else { "(report.json)".into() };
        let _ = writeln!(
            s,
            "| {} | {} / {} ({:.0}%) | {:.2} | {counts} |",
            u.position,
            u.used,
            r.vocabulary,
            100.0 * u.used as f64 / r.vocabulary as f64,
            u.perplexity
        );
    }
    let _ = writeln!(s, "\nPooled perplexity {:.2}; {} distinct latent actions (token tuples) in use.\n", r.perplexity, r.distinct_actions);
    let _ = writeln!(s, "## Probe: latent tokens → true action (held-out episodes)\n");
    match (&r.probe_latent, &r.probe_frame_diff) {
        (Some(l), Some(d)) => {
            let _ = writeln!(
                s,
                "Target: direction of the gripper-tip displacement over the pair (dominant axis, {} classes: {}; \"still\" below {} cm), and for R² the six joint deltas. Same MLP (2×128, ReLU), same steps, same split.\n",
                DIRECTIONS.len(),
                DIRECTIONS.join(", "),
                STILL_M * 100.0
            );
            let _ = writeln!(
                s,
                "| features | direction accuracy | on the {} unambiguous held-out pairs | majority-class accuracy | joint-delta R² |\n|---|---|---|---|---|",
                r.test_unambiguous
            );
            let row = |s: &mut String, name: String, p: &ProbeNumbers| {
                let _ =
                    writeln!(s, "| {name} | {:.1}% | {:.1}% | {:.1}% | {:.3} |", 100.0 * p.accuracy, 100.0 * p.accuracy_unambiguous, 100.0 * p.majority, p.r2);
            };
            row(&mut s, format!("latent tokens (one-hot, {} values)", token_feature_len(cfg)), l);
            if let Some(m) = &r.probe_kmeans {
                row(&mut s, format!("diagnostic: {} codes re-fitted by k-means on the training pairs' encoder outputs (one-hot)", r.vocabulary), m);
            }
            if let Some(z) = &r.probe_prequant {
                row(&mut s, format!("diagnostic: encoder output before quantisation ({} × {} floats)", r.n_tokens, cfg.code_dim), z);
            }
            row(&mut s, "raw frame difference (16×16×3)".to_string(), d);
            let _ = writeln!(
                s,
                "\nUnambiguous: displacement length not within 30% of the still threshold and, when moving, second axis under 2/3 of the dominant one. The target is the accuracy on all held-out pairs; the unambiguous column separates label noise at class boundaries from missed motion. The diagnostic rows are not latent actions the policy sees: the encoder output before quantisation shows what the encoder carries, and the k-means codebook (same number of codes, fitted after training, shared by the token positions) shows how much a better partition of the same outputs would keep."
            );
            let _ = writeln!(
                s,
                "\nClass histogram (all scored pairs): {}",
                DIRECTIONS.iter().zip(&r.class_histogram).map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ")
            );
            if let (Some(l2), Some(d2)) = (&r.probe_latent_2d, &r.probe_frame_diff_2d) {
                let _ = writeln!(
                    s,
                    "\n### The 2-D label\n\nThe tip's displacement in the image of the nominal top camera (metres at the table plane), still below {} cm or one of 8 directions of 45° ({}): what one top view determines, unlike up/down in the 3-D label.\n\n| features | direction accuracy | on unambiguous held-out pairs (angle within 15° of a sector centre) |\n|---|---|---|",
                    STILL_M * 100.0,
                    DIRECTIONS_2D.join(", ")
                );
                let mut rows = vec![("latent tokens", l2)];
                if let Some(z2) = &r.probe_prequant_2d {
                    rows.push(("encoder before quantisation", z2));
                }
                rows.push(("frame differences", d2));
                for (name, p) in rows {
                    let _ = writeln!(s, "| {name} | {:.1}% | {:.1}% |", 100.0 * p.accuracy, 100.0 * p.accuracy_unambiguous);
                }
            }
            let _ = writeln!(s, "\nHeld-out confusion of the latent probe (rows: true class, columns: predicted):\n");
            let _ = writeln!(s, "| | {} |\n|---|{}", DIRECTIONS.join(" | "), "---|".repeat(DIRECTIONS.len()));
            for (name, row) in DIRECTIONS.iter().zip(&l.confusion) {
                let _ = writeln!(s, "| **{name}** | {} |", row.iter().map(usize::to_string).collect::<Vec<_>>().join(" | "));
            }
        }
        _ => {
            let _ = writeln!(s, "Not run: the data has no `observation.state` (probes need a labelled dataset).");
        }
    }
    let _ = writeln!(s, "\n## Reconstruction (held-out pairs)\n\n| | PSNR (dB) |\n|---|---|");
    let _ = writeln!(s, "| LAQ decode of x_{{t+H}} from x_t + latent action | {:.2} |", r.psnr_recon);
    let _ = writeln!(s, "| copy x_t (no-motion baseline) | {:.2} |", r.psnr_copy);
    let _ = writeln!(s, "\n![reconstructions](reconstructions.png)\n\nRows: x_t, x_{{t+H}}, decoded x_{{t+H}}.\n");
    let _ = writeln!(
        s,
        "## Counterfactual decodes\n\n![counterfactual](counterfactual.png)\n\nTop row: held-out scenes x_t. Each further row is one of the most common latent actions: the first two tiles are a pair that produced it, then that same latent action decoded on each scene. Consistent motion across a row means the code carries an action, not a scene."
    );
    s
}

/// The default output folder of a report: `RUN/report-<data folder name>`.
pub fn default_out(run: &Path, data: &Path) -> PathBuf {
    let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    run.join(format!("report-{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_2d_label_on_hand_made_displacements() {
        let m = 0.02; // 2 cm: moving
        assert_eq!(DIRECTIONS_2D[direction_class_2d([0.002, -0.001])], "still");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([m, 0.0])], "right");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([m, m])], "up-right");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([0.0, m])], "up");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([-m, m])], "up-left");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([-m, 0.0])], "left");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([-m, -m])], "down-left");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([0.0, -m])], "down");
        assert_eq!(DIRECTIONS_2D[direction_class_2d([m, -m])], "down-right");
        // 20° above the x axis is still "right"; 25° is ambiguous (10° from the boundary).
        let at = |deg: f32| [m * deg.to_radians().cos(), m * deg.to_radians().sin()];
        assert_eq!(DIRECTIONS_2D[direction_class_2d(at(20.0))], "right");
        assert!(unambiguous_2d(at(10.0)) && !unambiguous_2d(at(25.0)));
        assert!(!unambiguous_2d([0.01, 0.0]), "on the still threshold");
        // From the top camera, a pure lift of the tip straight up barely moves it in the image
        // (perspective only) and reads as still; moving it away from the robot (+y) reads as up.
        let lift = [lapa_sim::render::nominal_image_point([0.0, 0.18, 0.05]), lapa_sim::render::nominal_image_point([0.0, 0.18, 0.08])];
        assert_eq!(direction_class_2d([lift[1][0] - lift[0][0], lift[1][1] - lift[0][1]]), 0);
        let away = [lapa_sim::render::nominal_image_point([0.0, 0.15, 0.05]), lapa_sim::render::nominal_image_point([0.0, 0.20, 0.05])];
        assert_eq!(DIRECTIONS_2D[direction_class_2d([away[1][0] - away[0][0], away[1][1] - away[0][1]])], "up");
    }

    #[test]
    fn direction_classes_and_boundaries() {
        assert_eq!(DIRECTIONS[direction_class([0.001, 0.0, 0.0])], "still");
        assert_eq!(DIRECTIONS[direction_class([0.05, 0.01, 0.0])], "+x");
        assert_eq!(DIRECTIONS[direction_class([0.0, 0.0, -0.03])], "down");
        // Clear: tiny motion, one dominant axis.
        assert!(unambiguous([0.002, 0.0, 0.0]));
        assert!(unambiguous([0.05, 0.02, 0.0]));
        // Ambiguous: near the still threshold, or two axes of similar size.
        assert!(!unambiguous([0.0105, 0.0, 0.0]));
        assert!(!unambiguous([0.05, -0.045, 0.0]));
    }

    #[test]
    fn a_corrupt_dataset_is_an_error_not_a_report_without_probes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("corrupt");
        std::fs::create_dir_all(data.join("meta")).expect("mkdir");
        std::fs::write(data.join("meta/info.json"), b"{ \"codebase_version\": \"v3.0\", truncated").expect("write info.json");
        let clips = [Clip { name: "episode 0".into(), episode: Some(0), fps: 10.0, start: 0, len: 20 }];
        let source = Source { path: data.clone(), kind: SourceKind::Dataset, camera: None };
        let err = probe_states(&source, &clips).expect_err("a corrupt dataset must fail the report");
        let msg = format!("{err:#}");
        assert!(msg.contains(&data.display().to_string()) && msg.contains("info.json"), "{msg}");
        // A folder of videos has no state: no probes, no error.
        let folder = Source { path: tmp.path().to_path_buf(), kind: SourceKind::VideoFolder, camera: None };
        assert!(probe_states(&folder, &clips).expect("video folder").is_none());
    }
}
