//! Cameras: where the policy's frames come from.
//!
//! Three sources implement [`Camera`]: the V4L2 device of a board ([`crate::v4l2`], MJPEG or
//! YUYV, format negotiated against what the device offers), recorded frames ([`FileCamera`]: a
//! folder of images or a video file) and the simulator's camera ([`crate::sim::SceneCamera`]).
//! [`CameraSpec::apply`] crops and resizes a frame to the model's input.

/// One captured frame, packed RGB, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// Increasing frame number, logged with the chunk computed from it.
    pub seq: u64,
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Why no frame came.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("camera {device}: {message}")]
    Device { device: String, message: String },
    #[error("camera closed")]
    Closed,
    /// A frame that cannot be decoded or converted.
    #[error("camera frame: {0}")]
    Frame(String),
}

/// A frame source the inference thread owns.
pub trait Camera: Send {
    /// What it is, for logs (`"sim 64×64"`, `"/dev/video0 MJPEG 640×480@30"`).
    fn describe(&self) -> String;
    fn capture(&mut self) -> Result<CapturedFrame, CameraError>;
    /// The newest frame without waiting for a new one (a second reader, like the run recorder,
    /// beside the policy's thread). Sources that make each frame on demand capture one.
    fn latest(&mut self) -> Result<CapturedFrame, CameraError> {
        self.capture()
    }
}

/// The model's camera input (size and crop): a fact of the model bundle, defined with the policy
/// interface.
pub use lapa_model::policy::CameraSpec;

/// YUYV 4:2:2 (V4L2 `YUYV`, two pixels in four bytes Y0 U Y1 V) to packed RGB, BT.601 limited
/// range as UVC webcams send it.
pub fn yuyv_to_rgb(width: usize, height: usize, data: &[u8]) -> Result<Vec<u8>, CameraError> {
    yuyv_to_rgb_strided(width, height, width.saturating_mul(2), data)
}

/// [`yuyv_to_rgb`] for rows `stride` bytes apart (V4L2's `bytesperline`, which drivers may pad).
pub fn yuyv_to_rgb_strided(width: usize, height: usize, stride: usize, data: &[u8]) -> Result<Vec<u8>, CameraError> {
    let row = width.checked_mul(2);
    let need = row.and_then(|r| stride.checked_mul(height.saturating_sub(1)).and_then(|n| n.checked_add(r)));
    let ok = width > 0 && height > 0 && width.is_multiple_of(2) && row.is_some_and(|r| stride >= r) && need.is_some_and(|n| data.len() >= n);
    if !ok {
        return Err(CameraError::Frame(format!(
            "{} bytes is not a {width}×{height} YUYV frame (even width, 2 bytes a pixel, rows {stride} bytes apart)",
            data.len()
        )));
    }
    let row = width * 2;
    let mut out = Vec::with_capacity(width * height * 3);
    for q in (0..height).flat_map(|y| data[y * stride..y * stride + row].chunks_exact(4)) {
        let (u, v) = (f32::from(q[1]) - 128.0, f32::from(q[3]) - 128.0);
        for y in [q[0], q[2]] {
            let c = 1.164 * (f32::from(y) - 16.0);
            for val in [c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u] {
                out.push(val.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Ok(out)
}

/// Decodes one MJPEG frame (a baseline JPEG; UVC cameras often leave out the Huffman tables,
/// which the decoder then takes from the MJPEG standard) to packed RGB.
pub fn decode_mjpeg(data: &[u8]) -> Result<(usize, usize, Vec<u8>), CameraError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    // Larger than any camera lapa negotiates: a corrupt header cannot ask for gigabytes.
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB).set_max_width(MAX_SIDE).set_max_height(MAX_SIDE);
    // A frame without Huffman tables: mark it as MJPEG (an `AVI1` APP0 segment, what UVC cameras
    // that do mark their frames send), which makes the decoder use the standard tables.
    let marked;
    let data = if data.starts_with(&[0xFF, 0xD8]) && !has_huffman_tables(data) {
        marked = [&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00][..], &data[2..]].concat();
        &marked[..]
    } else {
        data
    };
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), opts);
    let rgb = d.decode().map_err(|e| CameraError::Frame(format!("MJPEG frame ({} bytes): {e:?}", data.len())))?;
    let (w, h) = d.dimensions().ok_or_else(|| CameraError::Frame("MJPEG frame without a size".into()))?;
    if rgb.len() != w * h * 3 {
        return Err(CameraError::Frame(format!("MJPEG frame decoded to {} bytes, not {w}×{h} RGB", rgb.len())));
    }
    Ok((w, h, rgb))
}

/// The largest frame side decoded (4K UHD is 3840).
pub const MAX_SIDE: usize = lapa_model::policy::MAX_CAMERA_SIDE;
/// The most decoded frames a [`FileCamera`] holds in memory.
pub const MAX_FILE_BYTES: usize = 1 << 30;

/// True when a JPEG defines Huffman tables (a DHT segment) before its first scan.
fn has_huffman_tables(data: &[u8]) -> bool {
    let mut i = 2;
    while let (Some(&0xFF), Some(&m)) = (data.get(i), data.get(i + 1)) {
        match m {
            0xC4 => return true,
            0xDA | 0xD9 => return false,
            // Fill bytes and markers without a length.
            0xFF => i += 1,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = data.get(i + 2..i + 4).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { return false };
                i += 2 + len;
            }
        }
    }
    false
}

/// Decodes a PNG (8-bit RGB, RGBA or grey) to packed RGB.
pub fn decode_png(data: &[u8]) -> Result<(usize, usize, Vec<u8>), CameraError> {
    let bad = |m: String| CameraError::Frame(format!("PNG: {m}"));
    let mut dec = png::Decoder::new(std::io::Cursor::new(data));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or_else(|| bad("too large".into()))?];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let px = &buf[..info.buffer_size()];
    let rgb = match info.color_type {
        png::ColorType::Rgb => px.to_vec(),
        png::ColorType::Rgba => px.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => px.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => px.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        other => return Err(bad(format!("colour type {other:?}"))),
    };
    if rgb.len() != w * h * 3 {
        return Err(bad(format!("{} bytes for {w}×{h}", rgb.len())));
    }
    Ok((w, h, rgb))
}

/// Frames from a folder of images (PNG or JPEG, in file-name order) or a video file (decoded with
/// ffmpeg): a recorded camera, for replaying a session or checking a model on saved frames.
/// At the end it starts again from the first frame when `looped`, else reports [`CameraError::Closed`].
#[derive(Debug)]
pub struct FileCamera {
    source: String,
    frames: Vec<(usize, usize, Vec<u8>)>,
    next: usize,
    seq: u64,
    looped: bool,
}

impl FileCamera {
    /// Opens a folder of `.png` / `.jpg` / `.jpeg` files or a video file.
    pub fn open(path: &std::path::Path, looped: bool) -> Result<Self, CameraError> {
        let source = path.display().to_string();
        let err = |message: String| CameraError::Device { device: source.clone(), message };
        let mut frames = Vec::new();
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| err(e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().and_then(|x| x.to_str()).is_some_and(|x| ["png", "jpg", "jpeg"].contains(&x.to_ascii_lowercase().as_str())))
                .collect();
            files.sort();
            let mut total = 0usize;
            for f in &files {
                if total > MAX_FILE_BYTES {
                    return Err(err(format!("more than {} MiB of decoded frames; use a shorter folder", MAX_FILE_BYTES >> 20)));
                }
                let bytes = std::fs::read(f).map_err(|e| err(format!("{}: {e}", f.display())))?;
                let frame = if f.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")) {
                    decode_png(&bytes).map_err(|e| err(format!("{}: {e}", f.display())))?
                } else {
                    decode_mjpeg(&bytes).map_err(|e| err(format!("{}: {e}", f.display())))?
                };
                total += frame.2.len();
                frames.push(frame);
            }
            if frames.is_empty() {
                return Err(err("no .png, .jpg or .jpeg files in the folder".into()));
            }
        } else if path.is_file() {
            let probe = lapa_dataset::video::probe(path).map_err(|e| err(e.to_string()))?;
            let bytes = probe.width.saturating_mul(probe.height).saturating_mul(3).saturating_mul(probe.frames.max(1));
            if bytes > MAX_FILE_BYTES {
                return Err(err(format!(
                    "{} frames of {}×{} decode to more than {} MiB; cut the video shorter",
                    probe.frames,
                    probe.width,
                    probe.height,
                    MAX_FILE_BYTES >> 20
                )));
            }
            let (w, h, data) = lapa_dataset::video::decode(path, 0.0, None, probe.fps).map_err(|e| err(e.to_string()))?;
            let n = w * h * 3;
            if n == 0 || data.is_empty() {
                return Err(err("the video has no frames".into()));
            }
            frames.extend(data.chunks_exact(n).map(|c| (w, h, c.to_vec())));
        } else {
            return Err(err("no such folder or video file".into()));
        }
        Ok(Self { source, frames, next: 0, seq: 0, looped })
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl Camera for FileCamera {
    fn describe(&self) -> String {
        let (w, h, _) = &self.frames[0];
        format!("{} ({} frames {w}×{h}{})", self.source, self.frames.len(), if self.looped { ", looped" } else { "" })
    }

    fn capture(&mut self) -> Result<CapturedFrame, CameraError> {
        if self.next >= self.frames.len() {
            if !self.looped {
                return Err(CameraError::Closed);
            }
            self.next = 0;
        }
        let (w, h, rgb) = &self.frames[self.next];
        self.next += 1;
        self.seq += 1;
        Ok(CapturedFrame { seq: self.seq, width: *w, height: *h, rgb: rgb.clone() })
    }
}
