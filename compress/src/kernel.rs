//! Linear-layer kernels on `rten-gemm` (pure Rust; picks AVX-512/VNNI, AVX2, Arm dot-product or
//! NEON code at run time): f32 × f32 → f32, and u8 × i8 → i32 with the scales applied in the
//! epilogue — the int8 layers really multiply in int8, they never dequantize weights to f32.
//!
//! Int8 scheme: weights symmetric per output channel (zero point 0); activations asymmetric per row
//! (token) with a zero point, ranges measured on each call (dynamic) or fixed by calibration
//! (static). `out[r][c] = sa[r] · sw[c] · Σₖ (qa[r][k] − za[r]) · qw[k][c] + bias[c]`.
//!
//! AVX2 has no int8 dot product: rten multiplies with `vpmaddubsw`, whose pairwise i16 sums
//! saturate when both u8 × i8 products are large. As ONNX Runtime's `reduce_range` does, weights
//! are then quantized to 7 bits (±63), which keeps every pair sum inside i16
//! (2 · 255 · 64 < 32768); on kernels that cannot saturate (VNNI, Arm) they use the full ±127.

use rten_gemm::{BiasVector, GemmExecutor, GemmInputA, GemmInputB, GemmOptions, PackedBMatrix};
use rten_tensor::NdTensorView;

use crate::CompressError;

/// The process's f32 GEMM executor. rten's executor is `Sync` but not `Send` (its kernel is a
/// boxed `dyn Kernel: Sync`), so one per process is created and shared by reference; its kernel is
/// the CPU's best, chosen once.
fn f32_gemm() -> &'static GemmExecutor<f32> {
    static G: std::sync::OnceLock<&'static GemmExecutor<f32>> = std::sync::OnceLock::new();
    G.get_or_init(|| Box::leak(Box::new(GemmExecutor::<f32>::default())))
}

/// `out` [m, n] = `a` [m, k] × `b` [k, n], row-major, both unpacked (the attention's products,
/// whose operands change every step). Panics on wrong lengths (the engine sizes them).
pub fn matmul_f32(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() == m * k && b.len() == k * n && out.len() == m * n, "matmul sizes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let av = NdTensorView::from_data([m, k], a);
    let bv = NdTensorView::from_data([k, n], b);
    if let Err(e) = f32_gemm().gemm(out, GemmInputA::Unpacked(av), GemmInputB::Unpacked(bv), GemmOptions::default()) {
        unreachable!("f32 gemm: {e:?}");
    }
}

/// The process's u8 × i8 → i32 GEMM executor (see [`f32_gemm`]).
fn int8_gemm() -> &'static GemmExecutor<u8, i8, i32> {
    static G: std::sync::OnceLock<&'static GemmExecutor<u8, i8, i32>> = std::sync::OnceLock::new();
    G.get_or_init(|| Box::leak(Box::new(GemmExecutor::<u8, i8, i32>::default())))
}

/// The name of the int8 kernel rten picked on this CPU, and whether it can saturate (AVX2).
pub fn int8_kernel() -> (String, bool) {
    (int8_gemm().kernel_name().to_string(), int8_gemm().may_saturate())
}

/// How a linear layer computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// f32 weights and activations.
    F32,
    /// int8 weights; each row's activation range measured at run time.
    Int8Dynamic,
    /// int8 weights; one activation range `[lo, hi]` fixed by calibration (values outside clip).
    Int8Static { lo: f32, hi: f32 },
    /// Weight-only int4: each output channel's weights in blocks of [`INT4_BLOCK`] inputs, one
    /// f32 scale per block, values −7..=7 packed two to a byte; activations stay f32 (the layer
    /// unpacks its weights into a scratch f32 matrix for each call and multiplies in f32).
    Int4Weights,
}

/// Inputs per int4 weight block (one scale each).
pub const INT4_BLOCK: usize = 32;

impl Scheme {
    /// Activations quantized to int8 (the int8 GEMM).
    pub fn is_int8(&self) -> bool {
        matches!(self, Self::Int8Dynamic | Self::Int8Static { .. })
    }

    /// Weights stored below f32 (int8 or int4).
    pub fn is_quantized(&self) -> bool {
        !matches!(self, Self::F32)
    }
}

/// Activation range of the static scheme: `[min(lo, 0), max(hi, 0)]` so that 0 is exact.
#[derive(Debug, Clone, Copy)]
struct ActRange {
    scale: f32,
    zero: u8,
}

fn act_range(lo: f32, hi: f32) -> ActRange {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = (hi - lo) / 255.0;
    // A denormal scale would make 1/scale infinite (and 0 · inf NaN): such a range is all zero.
    if !(scale.is_finite() && scale > 0.0 && (1.0 / scale).is_finite()) {
        return ActRange { scale: 1.0, zero: 0 };
    }
    ActRange { scale, zero: (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8 }
}

/// `2²³`: adding it to a float in `[0, 2²³)` leaves the value rounded to an integer (ties to even,
/// the FPU's rounding) in the low mantissa bits.
const ROUND_MAGIC: f32 = 8_388_608.0;

/// Quantizes one row with `r` (values outside the range clip; NaN becomes the zero point, i.e.
/// 0.0). Written so that it vectorizes: no libm `round` call per value (which cost more than the
/// int8 GEMM itself) and no saturating float → int cast (scalar `cvttss2si` per value): after
/// clamping to [0, 255] the value is non-negative and small, so `q + 2²³` holds `q` rounded to
/// the nearest level (ties to even) in its low byte.
fn quantize_row(row: &[f32], r: ActRange, out: &mut [u8]) {
    let inv = 1.0 / r.scale;
    let z = f32::from(r.zero);
    for (o, &v) in out.iter_mut().zip(row) {
        let v = if v.is_nan() { 0.0 } else { v };
        let q = (v * inv + z).clamp(0.0, 255.0);
        *o = (q + ROUND_MAGIC).to_bits() as u8;
    }
}

/// Lanes of the row reductions (this range scan, the engine's sums and maxima): sixteen partial
/// results, so that LLVM vectorizes them (one running f32 minimum, maximum or sum is a serial chain
/// it may not reorder).
pub(crate) const LANES: usize = 16;

/// The range `[min(lo, 0), max(hi, 0)]` of a row's finite values. [`LANES`] running minima and
/// maxima, compare-and-select rather than `f32::min` (whose NaN rule keeps LLVM from vectorizing
/// the reduction): the scalar loop this replaces took half of an int8 layer's time outside the GEMM.
fn row_range(row: &[f32]) -> (f32, f32) {
    let finite = |v: f32| if v.abs() < f32::INFINITY { v } else { 0.0 };
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(c) {
            let f = finite(v);
            *l = if f < *l { f } else { *l };
            *h = if f > *h { f } else { *h };
        }
    }
    let (mut l, mut h) = (0f32, 0f32);
    for f in lo.into_iter().chain(hi).chain(tail.iter().map(|&v| finite(v))) {
        l = if f < l { f } else { l };
        h = if f > h { f } else { h };
    }
    (l, h)
}

/// A linear layer's weights in the form its scheme computes with.
pub enum Kernel {
    F32 {
        gemm: &'static GemmExecutor<f32>,
        packed: PackedBMatrix<f32>,
        bias: Vec<f32>,
        i: usize,
        o: usize,
    },
    Int8 {
        gemm: &'static GemmExecutor<u8, i8, i32>,
        packed: PackedBMatrix<i8>,
        col_sums: Vec<i32>,
        scales: Vec<f32>,
        bias: Vec<f32>,
        act: Option<ActRangeParams>,
        i: usize,
        o: usize,
        qmax: i8,
    },
    Int4 {
        gemm: &'static GemmExecutor<f32>,
        /// Column-major nibbles: output channel `j`'s inputs `k` at `j · i + k`, two per byte
        /// (low nibble first), each the value + 8.
        nibbles: Vec<u8>,
        /// `[o, ⌈i / INT4_BLOCK⌉]`: output channel `j`'s block scales.
        scales: Vec<f32>,
        bias: Vec<f32>,
        i: usize,
        o: usize,
    },
}

/// Weight-only int4 of `w` [i, o] (row-major): the packed nibbles and block scales of
/// [`Kernel::Int4`].
pub fn quantize_int4(w: &[f32], i: usize, o: usize) -> (Vec<u8>, Vec<f32>) {
    let blocks = i.div_ceil(INT4_BLOCK);
    let mut scales = vec![0f32; o * blocks];
    let mut nibbles = vec![0u8; (i * o).div_ceil(2)];
    for j in 0..o {
        for b in 0..blocks {
            let ks = b * INT4_BLOCK..((b + 1) * INT4_BLOCK).min(i);
            let m = ks.clone().map(|k| w[k * o + j].abs()).fold(0f32, f32::max);
            let s = if m / 7.0 > 0.0 { m / 7.0 } else { 1.0 };
            scales[j * blocks + b] = s;
            for k in ks {
                let q = (w[k * o + j] / s).round().clamp(-7.0, 7.0) as i8;
                let n = (q + 8) as u8;
                let at = j * i + k;
                nibbles[at / 2] |= if at.is_multiple_of(2) { n } else { n << 4 };
            }
        }
    }
    (nibbles, scales)
}

/// The f32 weights [i, o] (row-major) that int4 `nibbles` and `scales` stand for.
pub fn dequantize_int4(nibbles: &[u8], scales: &[f32], i: usize, o: usize, out: &mut [f32]) {
    let blocks = i.div_ceil(INT4_BLOCK);
    for j in 0..o {
        for k in 0..i {
            let at = j * i + k;
            let n = if at.is_multiple_of(2) { nibbles[at / 2] & 0x0f } else { nibbles[at / 2] >> 4 };
            out[k * o + j] = f32::from(n as i8 - 8) * scales[j * blocks + k / INT4_BLOCK];
        }
    }
}

/// The static activation range (public view).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActRangeParams {
    pub lo: f32,
    pub hi: f32,
}

/// The largest int8 weight magnitude a bundle stores (the full ±127; a kernel that can saturate
/// requantizes to ±63 at load).
pub const STORED_QMAX: i8 = 127;

/// A quantized linear layer's weights as a compressed bundle stores them: computed once on the
/// workstation, so a board whose int8 kernel takes ±127 weights (Arm dot product, VNNI)
/// multiplies the very integers that were written (an AVX2 one requantizes them to ±63).
#[derive(Debug, Clone, PartialEq)]
pub enum StoredWeights {
    /// Per-output-channel symmetric int8 at ±[`STORED_QMAX`]: `q` [i, o] row-major (`dims`),
    /// `scales` [o].
    Int8 { q: Vec<i8>, scales: Vec<f32>, dims: [usize; 2] },
    /// [`quantize_int4`]'s packed nibbles and block scales [o, ⌈i / INT4_BLOCK⌉] (`dims`).
    Int4 { nibbles: Vec<u8>, scales: Vec<f32>, dims: [usize; 2] },
}

impl StoredWeights {
    /// `w` [i, o] as `scheme` stores it; `None` for f32.
    pub fn quantize(scheme: Scheme, w: &[f32], i: usize, o: usize) -> Option<Self> {
        match scheme {
            Scheme::F32 => None,
            Scheme::Int8Dynamic | Scheme::Int8Static { .. } => {
                let (q, scales) = quantize_weights(w, i, o, STORED_QMAX);
                Some(Self::Int8 { q, scales, dims: [i, o] })
            }
            Scheme::Int4Weights => {
                let (nibbles, scales) = quantize_int4(w, i, o);
                Some(Self::Int4 { nibbles, scales, dims: [o, i.div_ceil(INT4_BLOCK)] })
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Int8 { .. } => "int8",
            Self::Int4 { .. } => "int4",
        }
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F32 { i, o, .. } => write!(f, "F32 {{ {i} → {o} }}"),
            Self::Int8 { i, o, act, qmax, .. } => write!(f, "Int8 {{ {i} → {o}, weights ±{qmax}, activations {act:?} }}"),
            Self::Int4 { i, o, .. } => write!(f, "Int4 {{ {i} → {o}, weights ±7 in blocks of {INT4_BLOCK} }}"),
        }
    }
}

/// Per-output-channel symmetric int8 weights of `w` [i, o] (row-major): the quantized matrix and
/// each column's scale.
pub fn quantize_weights(w: &[f32], i: usize, o: usize, qmax: i8) -> (Vec<i8>, Vec<f32>) {
    let mut scales = vec![0f32; o];
    for row in w.chunks_exact(o) {
        for (s, v) in scales.iter_mut().zip(row) {
            *s = s.max(v.abs());
        }
    }
    let q = f32::from(qmax);
    for s in &mut scales {
        // A column of subnormal weights would round its scale to 0 (and the reader refuses 0).
        *s = if *s > 0.0 && s.is_finite() && *s / q > 0.0 { *s / q } else { 1.0 };
    }
    let mut out = Vec::with_capacity(i * o);
    for row in w.chunks_exact(o) {
        out.extend(row.iter().zip(&scales).map(|(v, s)| (v / s).round().clamp(-q, q) as i8));
    }
    (out, scales)
}

impl Kernel {
    /// The int8 kernel of quantized weights `q` [i, o] at ±`qmax` with per-column `scales`.
    fn int8(scheme: Scheme, q: Vec<i8>, scales: Vec<f32>, qmax: i8, bias: Vec<f32>, i: usize, o: usize) -> Result<Self, CompressError> {
        let gemm = int8_gemm();
        let packed = gemm.prepack_b(NdTensorView::from_data([i, o], q.as_slice()));
        let mut col_sums = vec![0i32; o];
        for row in q.chunks_exact(o) {
            col_sums.iter_mut().zip(row).for_each(|(s, &v)| *s += i32::from(v));
        }
        let act = match scheme {
            Scheme::Int8Static { lo, hi } => {
                if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                    return Err(CompressError::Model(format!("activation range [{lo}, {hi}] is not a finite interval")));
                }
                Some(ActRangeParams { lo, hi })
            }
            _ => None,
        };
        Ok(Self::Int8 { gemm, packed, col_sums, scales, bias, act, i, o, qmax })
    }

    /// The kernel of `scheme` for weights a bundle stored quantized ([`StoredWeights`]), [i, o],
    /// and a bias. Every field is checked (sizes, scales finite and positive, int8 values within
    /// ±[`STORED_QMAX`]); the stored integers are used as they are, except where this CPU's int8
    /// kernel can saturate (AVX2), which requantizes them to ±63 — one more rounding, as
    /// quantizing the f32 weights to ±63 directly would not have had.
    pub fn from_stored(scheme: Scheme, stored: StoredWeights, i: usize, o: usize, bias: Option<Vec<f32>>) -> Result<Self, CompressError> {
        let bad = |m: String| Err(CompressError::Model(m));
        let bias = bias.unwrap_or_else(|| vec![0.0; o]);
        if bias.len() != o || i == 0 || o == 0 {
            return bad(format!("a {i} × {o} linear layer with {} biases", bias.len()));
        }
        // Positive, and finite times the largest stored value (the ±63 requantization and the
        // epilogue multiply by it).
        let scales_ok = |s: &[f32]| s.iter().all(|v| *v > 0.0 && (v * f32::from(STORED_QMAX)).is_finite());
        match (scheme, stored) {
            (Scheme::Int8Dynamic | Scheme::Int8Static { .. }, StoredWeights::Int8 { q, scales, dims }) => {
                if dims != [i, o] || q.len() != i * o || scales.len() != o {
                    return bad(format!("int8 weights {dims:?} with {} scales for a layer of [{i}, {o}] (in, out)", scales.len()));
                }
                if !scales_ok(&scales) {
                    return bad("an int8 weight scale is not a finite positive number".into());
                }
                if q.iter().any(|&v| v < -STORED_QMAX) {
                    return bad(format!("an int8 weight is outside ±{STORED_QMAX}"));
                }
                if int8_gemm().may_saturate() {
                    let mut w = Vec::with_capacity(q.len());
                    for row in q.chunks_exact(o) {
                        w.extend(row.iter().zip(&scales).map(|(&v, s)| f32::from(v) * s));
                    }
                    let (q, scales) = quantize_weights(&w, i, o, 63);
                    Self::int8(scheme, q, scales, 63, bias, i, o)
                } else {
                    Self::int8(scheme, q, scales, STORED_QMAX, bias, i, o)
                }
            }
            (Scheme::Int4Weights, StoredWeights::Int4 { nibbles, scales, dims }) => {
                let blocks = i.div_ceil(INT4_BLOCK);
                if dims != [o, blocks] || nibbles.len() != (i * o).div_ceil(2) || scales.len() != o * blocks {
                    return bad(format!("int4 weights of {} bytes with scales {dims:?} for a layer of [{i}, {o}] (in, out)", nibbles.len()));
                }
                if !scales_ok(&scales) {
                    return bad("an int4 block scale is not a finite positive number".into());
                }
                Ok(Self::Int4 { gemm: f32_gemm(), nibbles, scales, bias, i, o })
            }
            (scheme, stored) => bad(format!("the plan ({}) says {scheme:?} but the weights are stored as {}", crate::bundle::QUANT_PART, stored.kind())),
        }
    }

    /// The kernel of `scheme` for weights `w` [i, o] (burn's layout, row-major) and a bias.
    pub fn new(scheme: Scheme, w: &[f32], i: usize, o: usize, bias: Option<Vec<f32>>) -> Result<Self, CompressError> {
        if w.len() != i * o || i == 0 || o == 0 {
            return Err(CompressError::Model(format!("a {i} × {o} linear layer with {} weights", w.len())));
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(CompressError::Model("a weight is not finite".into()));
        }
        let bias = bias.unwrap_or_else(|| vec![0.0; o]);
        match scheme {
            Scheme::F32 => {
                let gemm = f32_gemm();
                let packed = gemm.prepack_b(NdTensorView::from_data([i, o], w));
                Ok(Self::F32 { gemm, packed, bias, i, o })
            }
            Scheme::Int8Dynamic | Scheme::Int8Static { .. } => {
                let qmax = if int8_gemm().may_saturate() { 63 } else { 127 };
                let (q, scales) = quantize_weights(w, i, o, qmax);
                Self::int8(scheme, q, scales, qmax, bias, i, o)
            }
            Scheme::Int4Weights => {
                let (nibbles, scales) = quantize_int4(w, i, o);
                Ok(Self::Int4 { gemm: f32_gemm(), nibbles, scales, bias, i, o })
            }
        }
    }

    pub fn in_dim(&self) -> usize {
        match self {
            Self::F32 { i, .. } | Self::Int8 { i, .. } | Self::Int4 { i, .. } => *i,
        }
    }

    pub fn out_dim(&self) -> usize {
        match self {
            Self::F32 { o, .. } | Self::Int8 { o, .. } | Self::Int4 { o, .. } => *o,
        }
    }

    /// The scheme it computes with.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::F32 { .. } => Scheme::F32,
            Self::Int8 { act: None, .. } => Scheme::Int8Dynamic,
            Self::Int8 { act: Some(a), .. } => Scheme::Int8Static { lo: a.lo, hi: a.hi },
            Self::Int4 { .. } => Scheme::Int4Weights,
        }
    }

    /// The weights' largest quantized magnitude (63 on AVX2's saturating kernel, else 127).
    pub fn weight_qmax(&self) -> Option<i8> {
        match self {
            Self::F32 { .. } | Self::Int4 { .. } => None,
            Self::Int8 { qmax, .. } => Some(*qmax),
        }
    }

    /// Bytes of the stored weights (bias and scales included).
    pub fn bytes(&self) -> usize {
        match self {
            Self::F32 { i, o, .. } => 4 * (i * o + o),
            Self::Int8 { i, o, .. } => i * o + 8 * o,
            Self::Int4 { nibbles, scales, o, .. } => nibbles.len() + 4 * scales.len() + 4 * o,
        }
    }

    /// `x` [rows, in] → `out` [rows, out]. Panics on wrong lengths (the engine sizes both).
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut [f32]) {
        assert_eq!(x.len(), rows * self.in_dim(), "linear input size");
        assert_eq!(out.len(), rows * self.out_dim(), "linear output size");
        if rows == 0 {
            return;
        }
        match self {
            Self::F32 { gemm, packed, bias, i, .. } => {
                let a = NdTensorView::from_data([rows, *i], x);
                let opts = GemmOptions { bias: Some(BiasVector::Row(bias)), ..Default::default() };
                // Sizes are checked above and the packing is this executor's own: no error is possible.
                if let Err(e) = gemm.gemm(out, GemmInputA::Unpacked(a), GemmInputB::Packed(packed), opts) {
                    unreachable!("f32 gemm: {e:?}");
                }
            }
            Self::Int8 { gemm, packed, col_sums, scales, bias, act, i, o, .. } => {
                let mut qa = vec![0u8; rows * i];
                let mut ranges = Vec::with_capacity(rows);
                for (row, q) in x.chunks_exact(*i).zip(qa.chunks_exact_mut(*i)) {
                    let r = match act {
                        Some(a) => act_range(a.lo, a.hi),
                        None => {
                            let (lo, hi) = row_range(row);
                            act_range(lo, hi)
                        }
                    };
                    quantize_row(row, r, q);
                    ranges.push(r);
                }
                // Σₖ qa·qw in the GEMM; the activation zero point comes out in the epilogue as
                // za · Σₖ qw (the weights' column sums, computed once).
                let mut acc = vec![0i32; rows * o];
                let a = NdTensorView::from_data([rows, *i], qa.as_slice());
                if let Err(e) = gemm.gemm(&mut acc, GemmInputA::Unpacked(a), GemmInputB::Packed(packed), GemmOptions::default()) {
                    unreachable!("int8 gemm: {e:?}");
                }
                for ((orow, arow), r) in out.chunks_exact_mut(*o).zip(acc.chunks_exact(*o)).zip(&ranges) {
                    let z = i32::from(r.zero);
                    for ((((y, &v), s), b), cs) in orow.iter_mut().zip(arow).zip(scales).zip(bias).zip(col_sums) {
                        *y = r.scale * s * (v - z * cs) as f32 + b;
                    }
                }
            }
            Self::Int4 { gemm, nibbles, scales, bias, i, o } => {
                // The weights exist in f32 only for the length of this call.
                let mut w = vec![0f32; i * o];
                dequantize_int4(nibbles, scales, *i, *o, &mut w);
                let a = NdTensorView::from_data([rows, *i], x);
                let b = NdTensorView::from_data([*i, *o], w.as_slice());
                let opts = GemmOptions { bias: Some(BiasVector::Row(bias)), ..Default::default() };
                if let Err(e) = gemm.gemm(out, GemmInputA::Unpacked(a), GemmInputB::Unpacked(b), opts) {
                    unreachable!("f32 gemm: {e:?}");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn activation_ranges_keep_zero_exact() {
        for (lo, hi) in [(-1.0, 3.0), (0.5, 2.0), (-4.0, -1.0), (0.0, 0.0)] {
            let r = act_range(lo, hi);
            let mut q = [0u8];
            quantize_row(&[0.0], r, &mut q);
            assert_eq!(q[0], r.zero, "{lo}..{hi}");
        }
        let r = act_range(-1.0, 1.0);
        let mut q = [0u8; 4];
        quantize_row(&[f32::NAN, 10.0, -10.0, f32::INFINITY], r, &mut q);
        assert_eq!(q, [r.zero, 255, 0, 255]);
    }

    #[test]
    fn vectorized_range_and_rounding_match_the_plain_definitions() {
        // Lengths around the 16-lane chunking; non-finite values anywhere, including the tail.
        for len in [0, 1, 15, 16, 17, 33, 100] {
            let row: Vec<f32> = (0..len)
                .map(|n| match n % 13 {
                    5 => f32::NAN,
                    7 => f32::INFINITY,
                    9 => f32::NEG_INFINITY,
                    _ => ((n * 29 % 47) as f32 - 20.0) * 0.37,
                })
                .collect();
            let finite = row.iter().copied().filter(|v| v.is_finite());
            let want = (finite.clone().fold(0f32, f32::min), finite.fold(0f32, f32::max));
            assert_eq!(row_range(&row), want, "length {len}");
            let r = act_range(want.0, want.1);
            let mut q = vec![0u8; len];
            quantize_row(&row, r, &mut q);
            let inv = 1.0 / r.scale;
            for (v, got) in row.iter().zip(&q) {
                let v = if v.is_nan() { 0.0 } else { *v };
                let plain = (v * inv + f32::from(r.zero)).clamp(0.0, 255.0).round_ties_even();
                assert_eq!(f32::from(*got), plain, "{v}");
            }
        }
        // Exact halves round to even, as the FPU does.
        let r = ActRange { scale: 1.0, zero: 0 };
        let mut q = [0u8; 4];
        quantize_row(&[0.5, 1.5, 2.5, 254.5], r, &mut q);
        assert_eq!(q, [0, 2, 2, 254]);
    }

    #[test]
    fn int4_blocks_round_trip_within_half_a_step() {
        // 70 inputs (two full blocks and a short one) × 3 outputs; column 2 is zero.
        let (i, o) = (70, 3);
        let w: Vec<f32> = (0..i * o).map(|n| if n % o == 2 { 0.0 } else { ((n * 37 % 101) as f32 - 50.0) / 25.0 * (1 + n / 100) as f32 }).collect();
        let (nib, scales) = quantize_int4(&w, i, o);
        assert_eq!((nib.len(), scales.len()), (105, 9));
        let mut back = vec![0f32; i * o];
        dequantize_int4(&nib, &scales, i, o, &mut back);
        for k in 0..i {
            for j in 0..o {
                let s = scales[j * 3 + k / INT4_BLOCK];
                assert!((back[k * o + j] - w[k * o + j]).abs() <= s / 2.0 + 1e-6, "w[{k}][{j}]");
            }
        }
        assert!(back.iter().skip(2).step_by(3).all(|v| *v == 0.0), "a zero column stays zero");
        // The largest magnitude of each block is exact (it sets the scale at ±7).
        let m = (0..INT4_BLOCK).map(|k| w[k * o].abs()).fold(0f32, f32::max);
        assert!((0..INT4_BLOCK).any(|k| back[k * o].abs() == m || (back[k * o].abs() - m).abs() < 1e-5));
    }

    #[test]
    fn weights_use_the_full_range_per_channel() {
        // Column 0 spans ±2, column 1 ±0.5, column 2 is all zero.
        let w = [2.0, 0.5, 0.0, -1.0, -0.5, 0.0];
        let (q, s) = quantize_weights(&w, 2, 3, 127);
        assert_eq!(q, vec![127, 127, 0, -64, -127, 0]);
        assert!((s[0] - 2.0 / 127.0).abs() < 1e-7 && (s[1] - 0.5 / 127.0).abs() < 1e-7 && s[2] == 1.0);
    }
}
