//! The board's USB camera through V4L2 (the `v4l` crate): format negotiation against what the
//! device offers, MJPEG or YUYV capture on a thread of its own, decode to RGB.
//!
//! [`negotiate`] is pure (the offer list in, the choice and what differed from the request out),
//! so it is tested on recorded enumerations; [`V4l2Camera`] (feature `v4l2`) asks the device for
//! its formats, sizes and frame intervals, applies the choice, reads back what the driver set, and
//! keeps only the newest frame, so the policy never sees a frame that waited in a queue.

use std::fmt;

/// The pixel formats lapa decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Motion JPEG (V4L2 `MJPG`): every UVC webcam's high-resolution, high-rate format.
    Mjpeg,
    /// YUYV 4:2:2 (V4L2 `YUYV`): uncompressed, limited by USB bandwidth at larger sizes.
    Yuyv,
}

impl PixelFormat {
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
        }
    }

    pub fn from_fourcc(f: &[u8; 4]) -> Option<Self> {
        match f {
            b"MJPG" | b"JPEG" => Some(PixelFormat::Mjpeg),
            b"YUYV" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }

    /// A board profile's `camera.format` (`mjpeg`, `yuyv`).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "mjpeg" => Some(PixelFormat::Mjpeg),
            "yuyv" => Some(PixelFormat::Yuyv),
            _ => None,
        }
    }

    fn other(self) -> Self {
        match self {
            PixelFormat::Mjpeg => PixelFormat::Yuyv,
            PixelFormat::Yuyv => PixelFormat::Mjpeg,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::Mjpeg => "MJPEG",
            PixelFormat::Yuyv => "YUYV",
        })
    }
}

/// One size a device offers in one format, with the frame rates it offers there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Offer {
    /// V4L2 fourcc as text (`MJPG`, `YUYV`, `H264`, ...).
    pub fourcc: String,
    pub width: u32,
    pub height: u32,
    /// Frame rates offered at this size (empty: the device did not say).
    pub fps: Vec<u32>,
}

/// What the board profile asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// What will be asked of the device, and each way it differs from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Bytes per row the driver uses (0 until the device says).
    pub stride: u32,
    pub notes: Vec<String>,
}

fn fourcc_of(s: &str) -> Option<[u8; 4]> {
    <[u8; 4]>::try_from(s.as_bytes()).ok()
}

/// The best size and rate in one format: the requested size, else the smallest that covers it
/// (the crop and resize take it down), else the largest; the requested rate, else the fastest
/// below it, else the slowest above.
fn best_in(offers: &[&Offer], want: &Want) -> Option<(u32, u32, u32)> {
    let exact = offers.iter().find(|o| (o.width, o.height) == (want.width, want.height));
    let covering = offers.iter().filter(|o| o.width >= want.width && o.height >= want.height).min_by_key(|o| u64::from(o.width) * u64::from(o.height));
    let largest = offers.iter().max_by_key(|o| u64::from(o.width) * u64::from(o.height));
    let o = exact.or(covering).or(largest)?;
    // The same size may be listed more than once; take all its rates.
    let mut rates: Vec<u32> = offers.iter().filter(|x| (x.width, x.height) == (o.width, o.height)).flat_map(|x| x.fps.iter().copied()).collect();
    rates.sort_unstable();
    rates.dedup();
    let fps = if rates.is_empty() || rates.contains(&want.fps) {
        want.fps
    } else {
        rates.iter().copied().filter(|&r| r < want.fps).max().or_else(|| rates.first().copied()).unwrap_or(want.fps)
    };
    Some((o.width, o.height, fps))
}

/// One dimension of a V4L2 stepwise (or, with step 1, continuous) frame-size range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u32,
    pub max: u32,
    pub step: u32,
}

impl Range {
    /// `v` moved into the range and up onto its steps (the range's end when no step above fits).
    fn fit(&self, v: u32) -> u32 {
        let hi = self.max.max(self.min);
        let v = v.clamp(self.min, hi);
        if self.step <= 1 {
            return v;
        }
        let k = (v - self.min).div_ceil(self.step);
        self.min.saturating_add(k.saturating_mul(self.step)).min(hi)
    }
}

/// The sizes a stepwise range offers for negotiation: its smallest, the request fitted into it
/// on its steps, and its largest (as [`Offer`]s they go through the same choice as listed sizes).
pub fn stepwise_sizes(width: Range, height: Range, want: (u32, u32)) -> Vec<(u32, u32)> {
    let mut v = vec![(width.min, height.min), (width.fit(want.0), height.fit(want.1)), (width.max.max(width.min), height.max.max(height.min))];
    v.dedup();
    v
}

/// Frames a second of a frame interval given as the fraction `numerator/denominator` seconds
/// (`None` for a zero or absurd interval).
pub fn interval_fps((num, den): (u32, u32)) -> Option<u32> {
    if num == 0 || den == 0 {
        return None;
    }
    let fps = (f64::from(den) / f64::from(num)).round();
    (1.0..=1000.0).contains(&fps).then_some(fps as u32)
}

/// The rates a stepwise interval range (shortest and longest interval, as fractions of a
/// second) offers: its fastest and slowest, and the requested rate when it lies between.
pub fn stepwise_rates(shortest: (u32, u32), longest: (u32, u32), want: u32) -> Vec<u32> {
    let (Some(fast), Some(slow)) = (interval_fps(shortest), interval_fps(longest)) else { return Vec::new() };
    let (slow, fast) = (slow.min(fast), slow.max(fast));
    let mut v = vec![slow, fast];
    if (slow..=fast).contains(&want) {
        v.push(want);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Chooses a format, size and rate from what the device offers.
pub fn negotiate(offers: &[Offer], want: &Want) -> Result<Choice, String> {
    let of = |f: PixelFormat| -> Vec<&Offer> { offers.iter().filter(|o| fourcc_of(&o.fourcc).and_then(|c| PixelFormat::from_fourcc(&c)) == Some(f)).collect() };
    let (mine, other) = (of(want.format), of(want.format.other()));
    let pick = best_in(&mine, want).map(|c| (want.format, c));
    let alt = best_in(&other, want).map(|c| (want.format.other(), c));
    let (format, (width, height, fps)) = match (pick, alt) {
        (None, None) => {
            let mut seen: Vec<&str> = offers.iter().map(|o| o.fourcc.as_str()).collect();
            seen.dedup();
            return Err(format!("the camera offers neither MJPEG nor YUYV (it offers: {})", if seen.is_empty() { "nothing".into() } else { seen.join(", ") }));
        }
        (Some(p), None) => p,
        (None, Some(a)) => a,
        // The requested format cannot reach the rate at the chosen size but the other can at a
        // size as good: take the other (YUYV at 1280×720 is often 10 fps where MJPEG does 30).
        (Some(p), Some(a)) => {
            let (pw, ph, pf) = p.1;
            let (aw, ah, af) = a.1;
            if pf < want.fps && af > pf && (aw, ah) == (pw, ph) { a } else { p }
        }
    };
    let mut notes = Vec::new();
    if format != want.format {
        notes.push(format!(
            "{} instead of {} ({})",
            format,
            want.format,
            if mine.is_empty() {
                format!("no {} offered", want.format)
            } else {
                format!("{} gives only {} fps there", want.format, best_in(&mine, want).map_or(0, |c| c.2))
            }
        ));
    }
    if (width, height) != (want.width, want.height) {
        notes.push(format!("{width}×{height} instead of {}×{} (not offered)", want.width, want.height));
    }
    if fps != want.fps {
        notes.push(format!("{fps} fps instead of {} (not offered at {width}×{height})", want.fps));
    }
    Ok(Choice { format, width, height, fps, stride: 0, notes })
}

#[cfg(feature = "v4l2")]
pub use device::V4l2Camera;

#[cfg(feature = "v4l2")]
mod device {
    use super::{Choice, Offer, PixelFormat, Want, negotiate};
    use crate::camera::{Camera, CameraError, CapturedFrame, decode_mjpeg, yuyv_to_rgb_strided};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;
    use v4l::buffer::Type;
    use v4l::frameinterval::FrameIntervalEnum;
    use v4l::framesize::FrameSizeEnum;
    use v4l::io::traits::CaptureStream;
    use v4l::prelude::MmapStream;
    use v4l::video::Capture;
    use v4l::{Device, FourCC};

    type Slot = Arc<(Mutex<Option<Result<CapturedFrame, String>>>, Condvar)>;

    /// A V4L2 camera; frames are captured and decoded on a thread, the newest one kept.
    pub struct V4l2Camera {
        device: String,
        choice: Choice,
        slot: Slot,
        last_seq: u64,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl std::fmt::Debug for V4l2Camera {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("V4l2Camera").field("device", &self.device).field("choice", &self.choice).finish()
        }
    }

    fn err(device: &str, what: &str, e: impl std::fmt::Display) -> CameraError {
        CameraError::Device { device: device.to_string(), message: format!("{what}: {e}") }
    }

    /// Everything the device offers for capture, in the [`Offer`] form.
    pub fn enumerate(dev: &Device, want: &Want) -> std::io::Result<Vec<Offer>> {
        let mut offers = Vec::new();
        for d in dev.enum_formats()? {
            let fourcc = String::from_utf8_lossy(&d.fourcc.repr).into_owned();
            for fs in dev.enum_framesizes(d.fourcc).unwrap_or_default() {
                let sizes: Vec<(u32, u32)> = match fs.size {
                    FrameSizeEnum::Discrete(s) => vec![(s.width, s.height)],
                    FrameSizeEnum::Stepwise(s) => super::stepwise_sizes(
                        super::Range { min: s.min_width, max: s.max_width, step: s.step_width },
                        super::Range { min: s.min_height, max: s.max_height, step: s.step_height },
                        (want.width, want.height),
                    ),
                };
                for (w, h) in sizes {
                    let mut fps: Vec<u32> = dev
                        .enum_frameintervals(d.fourcc, w, h)
                        .unwrap_or_default()
                        .into_iter()
                        .flat_map(|i| match i.interval {
                            FrameIntervalEnum::Discrete(f) => super::interval_fps((f.numerator, f.denominator)).into_iter().collect::<Vec<_>>(),
                            FrameIntervalEnum::Stepwise(r) => {
                                super::stepwise_rates((r.min.numerator, r.min.denominator), (r.max.numerator, r.max.denominator), want.fps)
                            }
                        })
                        .collect();
                    fps.sort_unstable();
                    fps.dedup();
                    offers.push(Offer { fourcc: fourcc.clone(), width: w, height: h, fps });
                }
            }
        }
        Ok(offers)
    }

    impl V4l2Camera {
        /// Opens `device`, negotiates `want` and starts capturing.
        pub fn open(device: &str, want: &Want) -> Result<Self, CameraError> {
            let dev = Device::with_path(device).map_err(|e| err(device, "open", format!("{e} (is the camera plugged in, and are you in the video group?)")))?;
            let offers = enumerate(&dev, want).map_err(|e| err(device, "listing formats", e))?;
            let mut choice = negotiate(&offers, want).map_err(|e| err(device, "format", e))?;
            let mut fmt = dev.format().map_err(|e| err(device, "reading the format", e))?;
            fmt.width = choice.width;
            fmt.height = choice.height;
            fmt.fourcc = FourCC::new(&choice.format.fourcc());
            let set = dev.set_format(&fmt).map_err(|e| err(device, "setting the format", e))?;
            let got = PixelFormat::from_fourcc(&set.fourcc.repr).ok_or_else(|| err(device, "format", format!("the driver chose {} instead", set.fourcc)))?;
            if (got, set.width, set.height) != (choice.format, choice.width, choice.height) {
                choice.notes.push(format!("the driver set {got} {}×{}", set.width, set.height));
                (choice.format, choice.width, choice.height) = (got, set.width, set.height);
            }
            choice.stride = set.stride;
            if let Ok(p) = dev.set_params(&v4l::video::capture::Parameters::with_fps(choice.fps))
                && p.interval.numerator > 0
            {
                let fps = (f64::from(p.interval.denominator) / f64::from(p.interval.numerator)).round() as u32;
                if fps != choice.fps {
                    choice.notes.push(format!("the driver set {fps} fps"));
                    choice.fps = fps;
                }
            }
            let slot: Slot = Arc::new((Mutex::new(None), Condvar::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (s2, stop2, name, c) = (slot.clone(), stop.clone(), device.to_string(), choice.clone());
            let thread = std::thread::Builder::new()
                .name("camera".into())
                .spawn(move || capture_loop(dev, c, s2, stop2, name))
                .map_err(|e| err(device, "starting the capture thread", e))?;
            Ok(Self { device: device.to_string(), choice, slot, last_seq: 0, stop, thread: Some(thread) })
        }

        pub fn choice(&self) -> &Choice {
            &self.choice
        }
    }

    fn capture_loop(dev: Device, choice: Choice, slot: Slot, stop: Arc<AtomicBool>, name: String) {
        let put = |v: Result<CapturedFrame, String>| {
            let (m, cv) = &*slot;
            *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
            cv.notify_all();
        };
        let mut stream = match MmapStream::with_buffers(&dev, Type::VideoCapture, 4) {
            Ok(s) => s,
            Err(e) => return put(Err(format!("{name}: starting the stream: {e}"))),
        };
        stream.set_timeout(Duration::from_secs(2));
        let (w, h) = (choice.width as usize, choice.height as usize);
        let stride = if choice.stride >= choice.width * 2 { choice.stride as usize } else { w * 2 };
        let mut seq = 0u64;
        let mut last_error: Option<String> = None;
        while !stop.load(Ordering::SeqCst) {
            let (buf, meta) = match stream.next() {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let why = last_error.as_deref().map_or(String::new(), |l| format!("; the last frame could not be decoded: {l}"));
                    put(Err(format!("{name}: no frame for 2 s{why}")));
                    continue;
                }
                Err(e) => return put(Err(format!("{name}: capture: {e}"))),
            };
            let used = (meta.bytesused as usize).min(buf.len());
            let data = buf.get(..used).unwrap_or(buf);
            let frame = match choice.format {
                PixelFormat::Mjpeg => decode_mjpeg(data),
                PixelFormat::Yuyv => yuyv_to_rgb_strided(w, h, stride, data).map(|rgb| (w, h, rgb)),
            };
            seq += 1;
            match frame {
                Ok((width, height, rgb)) => {
                    last_error = None;
                    put(Ok(CapturedFrame { seq, width, height, rgb }));
                }
                // A corrupt frame (a USB hiccup) is skipped, not fatal; its error is kept for the
                // message if no good frame follows.
                Err(e) => last_error = Some(e.to_string()),
            }
        }
    }

    impl Camera for V4l2Camera {
        fn describe(&self) -> String {
            let c = &self.choice;
            let notes = if c.notes.is_empty() { String::new() } else { format!(" ({})", c.notes.join("; ")) };
            format!("{} {} {}×{}@{}{notes}", self.device, c.format, c.width, c.height, c.fps)
        }

        fn capture(&mut self) -> Result<CapturedFrame, CameraError> {
            let (m, cv) = &*self.slot;
            let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            loop {
                match g.as_ref() {
                    Some(Ok(f)) if f.seq > self.last_seq => {
                        self.last_seq = f.seq;
                        return Ok(f.clone());
                    }
                    Some(Err(e)) => return Err(CameraError::Device { device: self.device.clone(), message: e.clone() }),
                    _ => {}
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(CameraError::Device { device: self.device.clone(), message: "no frame for 2 s".into() });
                }
                g = cv.wait_timeout(g, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
        }

        /// The newest decoded frame at once, seen before or not (the recorder's read: it must
        /// not wait for, or take, the frame the policy's next capture is waiting for).
        fn latest(&mut self) -> Result<CapturedFrame, CameraError> {
            let (m, _) = &*self.slot;
            let g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match g.as_ref() {
                Some(Ok(f)) => Ok(f.clone()),
                Some(Err(e)) => Err(CameraError::Device { device: self.device.clone(), message: e.clone() }),
                None => {
                    drop(g);
                    self.capture()
                }
            }
        }
    }

    impl Drop for V4l2Camera {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}
