//! Calibration and sensitivity: the static scheme's activation ranges, measured on calibration
//! frames (min-max, or a percentile that ignores rare outliers), and the per-layer scan that
//! quantizes one layer at a time and measures how far the action distribution moves.

use std::collections::BTreeMap;

use lapa_model::artifact::NamedTensor;
use lapa_model::text::{SentenceEncoder, TextConfig};
use lapa_model::vla::VlaConfig;

use crate::CompressError;
use crate::engine::{Engine, Text};
use crate::kernel::Scheme;

/// One observation, owned (what a calibration set holds).
#[derive(Debug, Clone)]
pub struct Observation {
    /// [patches, patch_dim] in [0, 1].
    pub patches: Vec<f32>,
    pub text: OwnedText,
    /// The standardised state, for policies with a state token.
    pub state: Option<Vec<f32>>,
}

/// An instruction in the engine's form, owned.
#[derive(Debug, Clone)]
pub enum OwnedText {
    Hashed { ids: Vec<i64>, weights: Vec<f32> },
    Embedded(Vec<f32>),
}

impl OwnedText {
    /// `instruction` as the policy takes it: the frozen encoder's sentence embedding when the
    /// config has one (`encoder`), else the hashed words of `cfg`.
    pub fn encode(cfg: &TextConfig, encoder: Option<&mut SentenceEncoder>, instruction: &str) -> Result<Self, CompressError> {
        Ok(match encoder {
            Some(e) => Self::Embedded(e.embed(&[instruction])?.remove(0)),
            None => {
                let (ids, weights) = cfg.tokenize(instruction)?;
                Self::Hashed { ids, weights }
            }
        })
    }

    pub fn as_text(&self) -> Text<'_> {
        match self {
            Self::Hashed { ids, weights } => Text::Hashed { ids, weights },
            Self::Embedded(e) => Text::Embedded(e),
        }
    }
}

/// How a static range is read off the calibration activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// The smallest and largest value seen.
    MinMax,
    /// The `p`-th and `(100 − p)`-th percentiles of a sample of the values (p in (50, 100]).
    Percentile(f32),
}

/// Values kept per layer for percentiles (a reservoir sample: memory stays bounded on any set).
const RESERVOIR: usize = 1 << 16;

/// Per-layer activation ranges `[lo, hi]` of every linear layer's input over `set`, run through
/// `engine` (normally the f32 engine).
pub fn activation_ranges(engine: &Engine, set: &[Observation], method: RangeMethod) -> Result<BTreeMap<String, (f32, f32)>, CompressError> {
    if set.is_empty() {
        return Err(CompressError::Input("the calibration set is empty".into()));
    }
    if let RangeMethod::Percentile(p) = method
        && !(p > 50.0 && p <= 100.0)
    {
        return Err(CompressError::Input(format!("percentile {p} must be in (50, 100]")));
    }
    struct Acc {
        lo: f32,
        hi: f32,
        seen: u64,
        sample: Vec<f32>,
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    // A fixed-seed generator: the same set gives the same ranges.
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for o in set {
        engine.forward(&o.patches, o.text.as_text(), o.state.as_deref(), &mut |name, x, _rows| {
            let a = acc.entry(name.to_string()).or_insert(Acc { lo: f32::INFINITY, hi: f32::NEG_INFINITY, seen: 0, sample: Vec::new() });
            for &v in x.iter().filter(|v| v.is_finite()) {
                a.lo = a.lo.min(v);
                a.hi = a.hi.max(v);
                a.seen += 1;
                if a.sample.len() < RESERVOIR {
                    a.sample.push(v);
                } else {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let k = rng % a.seen;
                    if (k as usize) < RESERVOIR {
                        a.sample[k as usize] = v;
                    }
                }
            }
        })?;
    }
    Ok(acc
        .into_iter()
        .map(|(name, mut a)| {
            let range = match method {
                RangeMethod::MinMax => (a.lo, a.hi),
                RangeMethod::Percentile(p) => {
                    a.sample.sort_by(f32::total_cmp);
                    let n = a.sample.len();
                    let at = |q: f32| a.sample[((q / 100.0) * (n - 1) as f32).round() as usize];
                    if n == 0 { (0.0, 0.0) } else { (at(100.0 - p), at(p)) }
                }
            };
            (name, range)
        })
        .collect())
}

/// Mean KL divergence KL(p ‖ q) between the per-target softmax distributions of two logit
/// vectors `[targets, bins]`, in nats.
pub fn mean_kl(p_logits: &[f32], q_logits: &[f32], bins: usize) -> f64 {
    let soft = |row: &[f32]| {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = row.iter().map(|v| f64::from(v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect::<Vec<_>>()
    };
    let rows = p_logits.len() / bins;
    let mut total = 0.0;
    for (pr, qr) in p_logits.chunks_exact(bins).zip(q_logits.chunks_exact(bins)) {
        let (p, q) = (soft(pr), soft(qr));
        total += p.iter().zip(&q).filter(|(pi, _)| **pi > 0.0).map(|(pi, qi)| pi * (pi / qi.max(1e-300)).ln()).sum::<f64>();
    }
    total / rows.max(1) as f64
}

/// One layer's row of the sensitivity table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sensitivity {
    pub layer: String,
    /// Mean KL(f32 ‖ this layer alone in int8) over the held-out observations, nats.
    pub kl: f64,
    /// Fraction of (observation, target) pairs whose chosen bin changed.
    pub flipped: f64,
}

/// Quantizes each linear layer alone with `scheme_of(layer)` and measures the action-distribution
/// divergence from the f32 engine on `held_out`. Sorted worst first.
pub fn sensitivity_scan(
    cfg: &VlaConfig,
    params: &[NamedTensor],
    held_out: &[Observation],
    scheme_of: &dyn Fn(&str) -> Scheme,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<Sensitivity>, CompressError> {
    let f32_engine = Engine::new(cfg, params.to_vec(), &|_| Scheme::F32)?;
    let bins = match &cfg.head {
        lapa_model::vla::HeadConfig::Action(a) => a.bins,
        _ => return Err(CompressError::Model("not an action policy".into())),
    };
    let reference: Vec<Vec<f32>> =
        held_out.iter().map(|o| f32_engine.forward(&o.patches, o.text.as_text(), o.state.as_deref(), &mut |_, _, _| {})).collect::<Result<_, _>>()?;
    let names: Vec<String> = f32_engine.linears().iter().map(|l| l.name.clone()).collect();
    let mut rows = Vec::with_capacity(names.len());
    for (k, name) in names.iter().enumerate() {
        progress(k, names.len(), name);
        let one = Engine::new(cfg, params.to_vec(), &|n| if n == name { scheme_of(n) } else { Scheme::F32 })?;
        let (mut kl, mut flipped, mut targets) = (0.0, 0usize, 0usize);
        for (o, r) in held_out.iter().zip(&reference) {
            let q = one.forward(&o.patches, o.text.as_text(), o.state.as_deref(), &mut |_, _, _| {})?;
            kl += mean_kl(r, &q, bins);
            for (a, b) in r.chunks_exact(bins).zip(q.chunks_exact(bins)) {
                targets += 1;
                flipped += usize::from(argmax(a) != argmax(b));
            }
        }
        rows.push(Sensitivity { layer: name.clone(), kl: kl / held_out.len().max(1) as f64, flipped: flipped as f64 / targets.max(1) as f64 });
    }
    rows.sort_by(|a, b| b.kl.total_cmp(&a.kl));
    Ok(rows)
}

/// The first maximum's index.
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |b, (k, v)| if *v > row[b] { k } else { b })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_and_positive_otherwise() {
        let p = [1.0, 2.0, 3.0, 0.0, 0.0, 0.0];
        assert!(mean_kl(&p, &p, 3).abs() < 1e-12);
        // Shifting logits does not change the distribution.
        let shifted: Vec<f32> = p.iter().map(|v| v + 5.0).collect();
        assert!(mean_kl(&p, &shifted, 3).abs() < 1e-9);
        let q = [3.0, 2.0, 1.0, 0.0, 0.0, 0.0];
        // Row 1: KL of softmax(1,2,3) from its reverse = 2·(p₃ − p₁) = 1.1504; row 2: 0; mean over rows.
        let kl = mean_kl(&p, &q, 3);
        assert!((kl - 0.57521).abs() < 1e-4, "{kl}");
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}
