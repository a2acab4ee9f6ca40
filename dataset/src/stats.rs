//! Feature statistics in LeRobot's `meta/stats.json` layout.

use serde_json::{Value, json};

/// Per-dimension statistics of a float vector feature, with LeRobot's quantiles.
pub fn vector_stats(rows: &[f32], dim: usize) -> Value {
    let n = rows.len().checked_div(dim).unwrap_or(0);
    let mut min = vec![f64::INFINITY; dim];
    let mut max = vec![f64::NEG_INFINITY; dim];
    let mut mean = vec![0.0f64; dim];
    let mut m2 = vec![0.0f64; dim];
    let mut q: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for d in 0..dim {
        let mut col: Vec<f64> = (0..n).map(|i| f64::from(rows[i * dim + d])).collect();
        for &v in &col {
            min[d] = min[d].min(v);
            max[d] = max[d].max(v);
            mean[d] += v;
        }
        mean[d] /= n.max(1) as f64;
        for &v in &col {
            m2[d] += (v - mean[d]).powi(2);
        }
        col.sort_by(f64::total_cmp);
        for (k, p) in [0.01, 0.10, 0.50, 0.90, 0.99].iter().enumerate() {
            let v = if col.is_empty() { 0.0 } else { col[((col.len() - 1) as f64 * p).round() as usize] };
            q[k].push(v);
        }
    }
    let std: Vec<f64> = m2.iter().map(|s| (s / n.max(1) as f64).sqrt()).collect();
    json!({
        "min": min, "max": max, "mean": mean, "std": std, "count": [n],
        "q01": q[0], "q10": q[1], "q50": q[2], "q90": q[3], "q99": q[4],
    })
}

/// Statistics of a scalar column, as a one-element vector.
pub fn scalar_stats(values: &[f64]) -> Value {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    vector_stats(&v, 1)
}

/// Running per-channel statistics of RGB frames, normalised to [0, 1] as LeRobot reports them.
#[derive(Debug, Clone, Default)]
pub struct ImageStats {
    sum: [f64; 3],
    sum_sq: [f64; 3],
    min: [u8; 3],
    max: [u8; 3],
    pixels: u64,
    frames: u64,
}

impl ImageStats {
    pub fn add(&mut self, rgb: &[u8], frames: usize) {
        if self.pixels == 0 {
            self.min = [255; 3];
            self.max = [0; 3];
        }
        for px in rgb.chunks_exact(3) {
            for (c, &v) in px.iter().enumerate() {
                self.sum[c] += f64::from(v);
                self.sum_sq[c] += f64::from(v) * f64::from(v);
                self.min[c] = self.min[c].min(v);
                self.max[c] = self.max[c].max(v);
            }
        }
        self.pixels += (rgb.len() / 3) as u64;
        self.frames += frames as u64;
    }

    pub fn to_json(&self) -> Value {
        let n = self.pixels.max(1) as f64;
        let wrap = |f: &dyn Fn(usize) -> f64| -> Value { json!((0..3).map(|c| vec![vec![f(c)]]).collect::<Vec<_>>()) };
        let mean = |c: usize| self.sum[c] / n / 255.0;
        json!({
            "min": wrap(&|c| f64::from(self.min[c]) / 255.0),
            "max": wrap(&|c| f64::from(self.max[c]) / 255.0),
            "mean": wrap(&mean),
            "std": wrap(&|c| ((self.sum_sq[c] / n / 65025.0) - mean(c).powi(2)).max(0.0).sqrt()),
            "count": [self.frames],
        })
    }
}
