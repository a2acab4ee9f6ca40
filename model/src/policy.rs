//! The policy interface of the runtime: one observation in, one chunk of future actions out.
//!
//! Every policy the board can run implements [`Policy`]: the burn module of the latent VLA, the
//! int8 policy of `lapa-compress`, a remote policy served from a workstation, and the simulator's
//! scripted expert (sim only). The edge runtime's control loop knows nothing else about them. The
//! types here hold no tensors, so the trait costs a consumer nothing but this module.

/// What a policy's actions mean. Read from the model bundle, never hard-coded downstream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// One name per action dimension, in the arm's motor order (LeRobot's `<joint>.pos`
    /// features without the suffix).
    pub names: Vec<String>,
    /// Unit of each dimension (`"deg"`, `"%"`), as the arm description names them.
    pub units: Vec<String>,
    /// Rate of the actions within a chunk (the training data's fps).
    pub fps: f32,
    /// Actions per chunk (1 reproduces LAPA's single-step head).
    pub chunk: usize,
}

impl ActionSpec {
    /// Checks the fields against each other; the first problem is named.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.names.is_empty() {
            return Err(PolicyError::Spec("names: no action dimensions".into()));
        }
        if self.units.len() != self.names.len() {
            return Err(PolicyError::Spec(format!("units: {} entries for {} names", self.units.len(), self.names.len())));
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 1000.0) {
            return Err(PolicyError::Spec(format!("fps: {} is not in (0, 1000]", self.fps)));
        }
        if self.chunk == 0 || self.chunk > 1024 {
            return Err(PolicyError::Spec(format!("chunk: {} is not in 1..=1024", self.chunk)));
        }
        Ok(())
    }
}

/// The largest camera frame side the runtime handles (4K UHD is 3840).
pub const MAX_CAMERA_SIDE: usize = 4096;

/// What the model wants from a camera frame: its input size, and the part of the frame it sees
/// (a centre crop to the input's aspect unless a crop box is given).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    pub width: usize,
    pub height: usize,
    /// `[x, y, w, h]` as fractions of the frame (0..1); `None`: the largest centred box with the
    /// input's aspect ratio.
    #[serde(default)]
    pub crop: Option<[f32; 4]>,
}

impl CameraSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_CAMERA_SIDE).contains(&self.width) || !(1..=MAX_CAMERA_SIDE).contains(&self.height) {
            return Err(format!("camera input {}×{}: each side in 1..={MAX_CAMERA_SIDE}", self.width, self.height));
        }
        if let Some([x, y, w, h]) = self.crop {
            let ok = [x, y, w, h].iter().all(|v| v.is_finite()) && x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 1.0 + 1e-6 && y + h <= 1.0 + 1e-6;
            if !ok {
                return Err(format!("camera crop {:?}: x, y ≥ 0, w, h > 0 and the box inside the frame (fractions 0..1)", [x, y, w, h]));
            }
        }
        Ok(())
    }

    /// The crop box in pixels of a `fw`×`fh` frame: `(x, y, w, h)`, at least one pixel (a frame
    /// with no pixels gives an empty box).
    pub fn crop_box(&self, fw: usize, fh: usize) -> (usize, usize, usize, usize) {
        if fw == 0 || fh == 0 || self.width == 0 || self.height == 0 {
            return (0, 0, 0, 0);
        }
        match self.crop {
            Some([x, y, w, h]) => {
                let px = |v: f32, n: usize| ((v * n as f32).round() as usize).min(n.saturating_sub(1));
                let (x0, y0) = (px(x, fw), px(y, fh));
                let w = ((w * fw as f32).round() as usize).clamp(1, fw - x0);
                let h = ((h * fh as f32).round() as usize).clamp(1, fh - y0);
                (x0, y0, w, h)
            }
            None => {
                // The largest box of the input's aspect ratio, centred.
                let (w, h) = if fw * self.height > fh * self.width { (fh * self.width / self.height, fh) } else { (fw, fw * self.height / self.width) };
                let (w, h) = (w.clamp(1, fw), h.clamp(1, fh));
                ((fw - w) / 2, (fh - h) / 2, w, h)
            }
        }
    }

    /// Crops and resizes a packed RGB frame to the model's input. Each axis is resampled on its
    /// own: downscaling averages the source pixels an output pixel covers, each weighted by the
    /// fraction it covers (a box filter, no aliasing); upscaling interpolates linearly.
    pub fn apply(&self, fw: usize, fh: usize, rgb: &[u8]) -> Result<Vec<u8>, String> {
        self.validate()?;
        if fw == 0 || fh == 0 || fw.checked_mul(fh).and_then(|n| n.checked_mul(3)) != Some(rgb.len()) {
            return Err(format!("{} bytes is not a {fw}×{fh} RGB frame", rgb.len()));
        }
        let (x0, y0, cw, ch) = self.crop_box(fw, fh);
        let (ow, oh) = (self.width, self.height);
        let wx = axis_weights(cw, ow);
        let wy = axis_weights(ch, oh);
        let mut out = vec![0u8; ow * oh * 3];
        for (oy, ys) in wy.iter().enumerate() {
            for (ox, xs) in wx.iter().enumerate() {
                let mut acc = [0f32; 3];
                for &(y, wyv) in ys {
                    let row = (y0 + y) * fw;
                    for &(x, wxv) in xs {
                        let i = (row + x0 + x) * 3;
                        let w = wyv * wxv;
                        for (a, v) in acc.iter_mut().zip(&rgb[i..i + 3]) {
                            *a += w * f32::from(*v);
                        }
                    }
                }
                let o = (oy * ow + ox) * 3;
                for (d, a) in out[o..o + 3].iter_mut().zip(acc) {
                    *d = a.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Ok(out)
    }
}

/// For each of `n_out` output samples along an axis of `n_in` source samples: the source indices
/// and weights (summing to 1) that make it.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            if scale >= 1.0 {
                // Box: the span [o·s, (o+1)·s) of the source, partial pixels weighted by overlap.
                let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
                let mut w = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < n_in {
                    let cover = ((i + 1) as f64).min(b) - (i as f64).max(a);
                    if cover > 1e-9 {
                        w.push((i, (cover / scale) as f32));
                    }
                    i += 1;
                }
                w
            } else {
                // Linear: the output pixel's centre mapped into the source.
                let c = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i = c.floor() as usize;
                let t = (c - i as f64) as f32;
                if i + 1 < n_in && t > 0.0 { vec![(i, 1.0 - t), (i + 1, t)] } else { vec![(i, 1.0)] }
            }
        })
        .collect()
}

/// One camera frame, packed RGB, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub width: usize,
    pub height: usize,
    pub rgb: &'a [u8],
}

/// What a policy sees at one instant.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub frame: Frame<'a>,
    /// Measured joint state in joint units (motor order). Policies trained without
    /// proprioception ignore it.
    pub state: &'a [f32],
    pub instruction: &'a str,
    /// Seconds since the run started at which `state` was measured (policies that keep an
    /// internal clock, such as the simulator's expert, use it; learned policies ignore it).
    pub time_s: f64,
}

/// Why a policy produced no actions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("action spec: {0}")]
    Spec(String),
    #[error("input: {0}")]
    Input(String),
    #[error("policy backend: {0}")]
    Backend(String),
    #[error("remote policy: {0}")]
    Remote(String),
}

/// A policy: observation → a chunk of [`ActionSpec::chunk`] absolute actions, the first for the
/// observation's instant and one every `1 / fps` after it.
pub trait Policy: Send {
    fn action_spec(&self) -> &ActionSpec;

    /// Short description for logs (`"burn small (cpu)"`, `"remote ws://…"`).
    fn describe(&self) -> String;

    /// Computes the chunk. Each inner vector has one value per [`ActionSpec::names`].
    fn infer(&mut self, input: &PolicyInput<'_>) -> Result<Vec<Vec<f32>>, PolicyError>;

    /// Clears any per-episode state (a new instruction, a new episode).
    fn reset(&mut self) {}
}

/// Temporal ensembling's weight of the chunk `age` places behind the newest (0 = newest):
/// `exp(−decay·age)`. `decay = 0` averages the chunks that cover an instant; the default 0.85
/// blends about 0.3 old + 0.7 new, as LeRobot's async inference does. The edge runtime's control
/// loop and `lapa eval` both blend with this one rule.
pub fn ensemble_weight(decay: f32, age: usize) -> f64 {
    (-f64::from(decay.max(0.0)) * age as f64).exp()
}

/// Checks a chunk a policy returned against its spec: length, width, finiteness. A remote or
/// buggy policy's output is outside input like any other.
pub fn check_chunk(spec: &ActionSpec, chunk: &[Vec<f32>]) -> Result<(), PolicyError> {
    if chunk.is_empty() || chunk.len() > spec.chunk {
        return Err(PolicyError::Backend(format!("returned {} actions, the spec allows 1..={}", chunk.len(), spec.chunk)));
    }
    for (i, a) in chunk.iter().enumerate() {
        if a.len() != spec.names.len() {
            return Err(PolicyError::Backend(format!("action {i} has {} values, the spec names {}", a.len(), spec.names.len())));
        }
        if let Some((d, v)) = a.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            let name = spec.names.get(d).map_or("?", String::as_str);
            return Err(PolicyError::Backend(format!("action {i}, {name}: {v} is not finite")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ActionSpec {
        ActionSpec { names: vec!["a".into(), "b".into()], units: vec!["deg".into(), "%".into()], fps: 10.0, chunk: 4 }
    }

    #[test]
    fn spec_and_chunks_are_checked_field_by_field() {
        assert_eq!(spec().validate(), Ok(()));
        let bad = ActionSpec { fps: 0.0, ..spec() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("fps")));
        let bad = ActionSpec { units: vec![], ..spec() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("units")));
        let bad = ActionSpec { chunk: 0, ..spec() };
        assert!(bad.validate().is_err_and(|e| e.to_string().contains("chunk")));
        assert_eq!(check_chunk(&spec(), &[vec![1.0, 2.0]]), Ok(()));
        assert!(check_chunk(&spec(), &[]).is_err());
        assert!(check_chunk(&spec(), &vec![vec![0.0, 0.0]; 5]).is_err());
        assert!(check_chunk(&spec(), &[vec![0.0]]).is_err_and(|e| e.to_string().contains("1 values")));
        assert!(check_chunk(&spec(), &[vec![0.0, f32::NAN]]).is_err_and(|e| e.to_string().contains("b: NaN")));
    }
}
