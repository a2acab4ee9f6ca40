//! Background batch loader. Batch `k` is a pure function of `(seed, k)`: which pairs, which
//! augmentation and which NSVQ noise. That makes runs reproducible and `--resume` equivalent to
//! an uninterrupted run, and lets worker threads build batches ahead of the training step.

use std::sync::Arc;

use lapa_model::patchify;
use lapa_sim::rng::Rng;
use serde::{Deserialize, Serialize};

use super::cache::{FrameCache, Pair};

/// Augmentations, applied identically to both frames of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Random crop keeping at least `1 − crop` of the side, resized back (0 = off).
    pub crop: f32,
    /// Brightness jitter: add a uniform offset in ±`brightness` (0 = off).
    pub brightness: f32,
    /// Contrast jitter: scale around mid-grey by 1 ± `contrast` (0 = off).
    pub contrast: f32,
}

impl Augment {
    pub const NONE: Self = Self { crop: 0.0, brightness: 0.0, contrast: 0.0 };
}

/// Frames and pairs to sample from.
#[derive(Debug)]
pub struct PairPool {
    pub caches: Vec<Arc<FrameCache>>,
    /// (cache index, pair).
    pub pairs: Vec<(usize, Pair)>,
    /// Pairs of the labelled episodes with their action targets (empty without action
    /// supervision).
    pub labeled: Vec<LabeledPair>,
}

/// A pair of a labelled episode and its action target: the joint displacement over the pair's
/// window, standardised per joint over the labelled pairs.
#[derive(Debug, Clone)]
pub struct LabeledPair {
    pub cache: usize,
    pub pair: Pair,
    pub target: Vec<f32>,
}

impl PairPool {
    pub fn frame(&self, cache: usize, i: usize) -> &[u8] {
        self.caches[cache].frame(i)
    }
}

/// One training batch, host side.
#[derive(Debug, Clone)]
pub struct Batch {
    pub step: u64,
    pub size: usize,
    /// [size, patches, patch_dim] of x_t, then of x_{t+H}.
    pub first: Vec<f32>,
    pub second: Vec<f32>,
    /// [size · n_tokens, code_dim] standard normal for NSVQ.
    pub noise: Vec<f32>,
    /// [size, action_dim] action targets, zero where `labeled` is 0 (empty without supervision).
    pub action: Vec<f32>,
    /// [size] 1 for a sample drawn from the labelled episodes, else 0.
    pub labeled: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchSpec {
    pub batch_size: usize,
    pub side: usize,
    pub patch: usize,
    pub noise_len_per_sample: usize,
    pub augment: Augment,
    pub seed: u64,
    /// The first `labeled_per_batch` samples of every batch come from the labelled pairs (0 =
    /// no action supervision: batches are exactly what they were without it).
    pub labeled_per_batch: usize,
    pub action_dim: usize,
}

fn augment_frame(img: &[u8], side: usize, crop: (usize, usize, usize), bc: (f32, f32)) -> Vec<u8> {
    let (cx, cy, cs) = crop;
    let (b, c) = bc;
    let mut out = vec![0u8; side * side * 3];
    for y in 0..side {
        let sy = cy + (y * cs) / side;
        for x in 0..side {
            let sx = cx + (x * cs) / side;
            for ch in 0..3 {
                let v = f32::from(img[(sy * side + sx) * 3 + ch]) / 255.0;
                let v = (v - 0.5) * c + 0.5 + b;
                out[(y * side + x) * 3 + ch] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
    }
    out
}

/// Builds batch `step` (deterministic in `(spec.seed, step)`).
pub fn make_batch(pool: &PairPool, spec: &BatchSpec, step: u64) -> Batch {
    let mut rng = Rng::new(spec.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x1A0);
    let n = spec.batch_size;
    let per = (spec.side / spec.patch).pow(2) * spec.patch * spec.patch * 3;
    let mut first = Vec::with_capacity(n * per);
    let mut second = Vec::with_capacity(n * per);
    let a = spec.augment;
    let supervised = spec.labeled_per_batch > 0 && !pool.labeled.is_empty();
    let (mut action, mut labeled) = (Vec::new(), Vec::new());
    for slot in 0..n {
        let (ci, p) = if supervised && slot < spec.labeled_per_batch {
            let l = &pool.labeled[rng.below(pool.labeled.len())];
            action.extend_from_slice(&l.target);
            labeled.push(1.0);
            (l.cache, l.pair)
        } else {
            if supervised {
                action.extend(std::iter::repeat_n(0.0, spec.action_dim));
                labeled.push(0.0);
            }
            pool.pairs[rng.below(pool.pairs.len())]
        };
        let (fa, fb) = (pool.frame(ci, p.a), pool.frame(ci, p.b));
        if a == Augment::NONE {
            patchify(fa, spec.side, spec.patch, &mut first);
            patchify(fb, spec.side, spec.patch, &mut second);
        } else {
            let cs = spec.side - ((spec.side as f32 * a.crop * rng.f32()) as usize).min(spec.side - 1);
            let crop = (rng.below(spec.side - cs + 1), rng.below(spec.side - cs + 1), cs);
            let bc = (rng.range(-a.brightness, a.brightness.max(f32::MIN_POSITIVE)), 1.0 + rng.range(-a.contrast, a.contrast.max(f32::MIN_POSITIVE)));
            patchify(&augment_frame(fa, spec.side, crop, bc), spec.side, spec.patch, &mut first);
            patchify(&augment_frame(fb, spec.side, crop, bc), spec.side, spec.patch, &mut second);
        }
    }
    let noise = (0..n * spec.noise_len_per_sample).map(|_| rng.normal()).collect();
    Batch { step, size: n, first, second, noise, action, labeled }
}
