//! PNG output (previews, strips) with atomic writes.

use crate::error::{DatasetError, Result};
use lapa_fs::atomic_write;
use std::path::Path;

/// Encodes an 8-bit RGB image as PNG bytes.
pub fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    if rgb.len() != width * height * 3 {
        return Err(DatasetError::Usage(format!("image buffer has {} bytes, expected {width}×{height}×3", rgb.len())));
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| DatasetError::Usage(format!("png: {e}")))?;
        w.write_image_data(rgb).map_err(|e| DatasetError::Usage(format!("png: {e}")))?;
    }
    Ok(out)
}

/// Writes an RGB image to `path` as PNG.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<()> {
    Ok(atomic_write(path, &encode_png(width, height, rgb)?)?)
}

/// An RGB canvas for composing strips and grids.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, fill: [u8; 3]) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&fill);
        }
        Self { width, height, data }
    }

    /// Pastes an RGB image at (x, y), nearest-neighbour scaled by `scale`, clipped to the canvas.
    pub fn paste(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: &[u8], scale: usize) {
        for sy in 0..h * scale {
            let ty = y + sy;
            if ty >= self.height {
                break;
            }
            for sx in 0..w * scale {
                let tx = x + sx;
                if tx >= self.width {
                    break;
                }
                let si = ((sy / scale) * w + sx / scale) * 3;
                let ti = (ty * self.width + tx) * 3;
                self.data[ti..ti + 3].copy_from_slice(&rgb[si..si + 3]);
            }
        }
    }

    /// Lays `frames` (each w×h RGB) out in rows of `per_row`, with a 2-pixel gap.
    pub fn grid(frames: &[&[u8]], w: usize, h: usize, per_row: usize, scale: usize) -> Self {
        let per_row = per_row.max(1);
        let rows = frames.len().div_ceil(per_row).max(1);
        let gap = 2;
        let cols = frames.len().min(per_row).max(1);
        let mut c = Self::new(cols * (w * scale + gap) + gap, rows * (h * scale + gap) + gap, [255, 255, 255]);
        for (k, f) in frames.iter().enumerate() {
            let (r, col) = (k / per_row, k % per_row);
            c.paste(gap + col * (w * scale + gap), gap + r * (h * scale + gap), w, h, f, scale);
        }
        c
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_png(path, self.width, self.height, &self.data)
    }
}
