//! Video through Debian's ffmpeg: streaming raw RGB frames into an encoder process, and decoding
//! a time span of a file back into raw RGB frames.

use crate::error::{DatasetError, Result, io_err};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// Video codecs the writer can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// AV1 through SVT-AV1, what `lerobot-record` writes (GOP 2, CRF as given). Needs frames of at
    /// least 64×64.
    Av1 { crf: u8 },
    /// H.264 through x264 (GOP 2, CRF as given); any even size.
    H264 { crf: u8 },
}

impl VideoCodec {
    /// LeRobot's defaults (AV1, CRF 30) are tuned for 480p; lapa's 64×64 frames keep more detail
    /// at CRF 20 for a few kilobytes more per episode.
    pub fn default_av1() -> Self {
        VideoCodec::Av1 { crf: 20 }
    }

    /// Name stored in `info.json` (`video.codec`).
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Av1 { .. } => "av1",
            VideoCodec::H264 { .. } => "h264",
        }
    }

    /// Checks the frame size is encodable.
    pub fn check_size(self, width: usize, height: usize) -> Result<()> {
        if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(DatasetError::Usage(format!("video frames must have even width and height for yuv420p, got {width}×{height}")));
        }
        if let VideoCodec::Av1 { .. } = self
            && (width < 64 || height < 64)
        {
            return Err(DatasetError::Usage(format!("SVT-AV1 needs frames of at least 64×64, got {width}×{height}; use the h264 codec for smaller frames")));
        }
        Ok(())
    }

    fn args(self) -> Vec<String> {
        let (codec, crf) = match self {
            VideoCodec::Av1 { crf } => ("libsvtav1", crf),
            VideoCodec::H264 { crf } => ("libx264", crf),
        };
        let mut a: Vec<String> = ["-c:v", codec, "-pix_fmt", "yuv420p", "-g", "2", "-crf"].iter().map(|s| s.to_string()).collect();
        a.push(crf.to_string());
        if let VideoCodec::Av1 { .. } = self {
            a.extend(["-preset", "8", "-svtav1-params", "log-level=0"].iter().map(|s| s.to_string()));
        }
        a
    }
}

/// Fails with a clear message when ffmpeg or ffprobe is missing.
pub fn check_ffmpeg() -> Result<()> {
    for tool in ["ffmpeg", "ffprobe"] {
        Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| DatasetError::FfmpegMissing(format!("{tool}: {e}")))?;
    }
    Ok(())
}

/// An ffmpeg process encoding raw RGB frames streamed to it into one mp4 file.
#[derive(Debug)]
pub struct VideoEncoder {
    path: PathBuf,
    log: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    width: usize,
    height: usize,
    frames: usize,
}

impl VideoEncoder {
    pub fn create(path: &Path, width: usize, height: usize, fps: u32, codec: VideoCodec) -> Result<Self> {
        codec.check_size(width, height)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let log = path.with_extension("ffmpeg.log");
        let log_file = std::fs::File::create(&log).map_err(io_err(&log))?;
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{width}x{height}"), "-r", &fps.to_string(), "-i", "-"])
            .args(codec.args())
            .args(["-f", "mp4"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        // Its own process group: a Ctrl-C at the terminal (sent to the whole foreground group)
        // must reach the recorder, which then finishes the video, not kill ffmpeg mid-file. It
        // still ends with its input when the recorder goes away.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().map_err(|e| DatasetError::FfmpegMissing(format!("ffmpeg: {e}")))?;
        let stdin = child.stdin.take();
        Ok(Self { path: path.to_path_buf(), log, child, stdin, width, height, frames: 0 })
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Appends frames (contiguous `n × height × width × 3` RGB bytes).
    pub fn write(&mut self, rgb: &[u8]) -> Result<()> {
        let frame = self.width * self.height * 3;
        if !rgb.len().is_multiple_of(frame) {
            return Err(DatasetError::Usage(format!(
                "{}: frame buffer of {} bytes is not a whole number of {}×{} RGB frames",
                self.path.display(),
                rgb.len(),
                self.width,
                self.height
            )));
        }
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(DatasetError::Video { path: self.path.clone(), message: "encoder already finished".into() });
        };
        if let Err(e) = stdin.write_all(rgb) {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            return Err(DatasetError::Video { path: self.path.clone(), message: format!("ffmpeg stopped accepting frames ({e}): {}", log.trim()) });
        }
        self.frames += rgb.len() / frame;
        Ok(())
    }

    /// Closes the stream and waits for ffmpeg to finish the file.
    pub fn finish(mut self) -> Result<PathBuf> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(io_err(&self.path))?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        if !status.success() {
            return Err(DatasetError::Video { path: self.path.clone(), message: format!("ffmpeg failed ({status}): {}", log.trim()) });
        }
        // ffmpeg closed the file; make it durable before the dataset folder is published.
        std::fs::File::open(&self.path).and_then(|f| f.sync_all()).map_err(io_err(&self.path))?;
        Ok(self.path.clone())
    }
}

/// Basic stream facts from ffprobe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoProbe {
    pub width: usize,
    pub height: usize,
    /// Frames as stored in the container header (may be absent: 0).
    pub frames: usize,
    pub duration_s: f64,
    /// Frame rate from the stream's average (or nominal) rate; 0 when the container has none.
    pub fps: f64,
}

fn run_capture(cmd: &mut Command, path: &Path) -> Result<(Vec<u8>, String, bool)> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| DatasetError::FfmpegMissing(format!("{e}")))?;
    let mut err = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut out = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut out).map_err(io_err(path))?;
    }
    let status = child.wait().map_err(io_err(path))?;
    let stderr = err_thread.join().unwrap_or_default();
    Ok((out, stderr, status.success()))
}

/// Probes the first video stream of a file.
pub fn probe(path: &Path) -> Result<VideoProbe> {
    if !path.exists() {
        return Err(DatasetError::MissingFile { path: path.to_path_buf() });
    }
    let (out, stderr, ok) = run_capture(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=width,height,nb_frames,avg_frame_rate,r_frame_rate:format=duration",
                "-of",
                "json",
            ])
            .arg(path),
        path,
    )?;
    let bad = |m: String| DatasetError::Video { path: path.to_path_buf(), message: m };
    if !ok {
        return Err(bad(format!("ffprobe: {}", last_lines(&stderr))));
    }
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| bad(format!("ffprobe output: {e}")))?;
    let stream = v["streams"].get(0).ok_or_else(|| bad("no video stream".into()))?;
    let num = |x: &serde_json::Value| x.as_u64().or_else(|| x.as_str().and_then(|s| s.parse().ok())).unwrap_or(0) as usize;
    let width = num(&stream["width"]);
    let height = num(&stream["height"]);
    if width == 0 || height == 0 {
        return Err(bad("video stream has no size".into()));
    }
    let duration_s = v["format"]["duration"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let rate = |x: &serde_json::Value| -> f64 {
        let s = x.as_str().unwrap_or("0/0");
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        let (n, d) = (n.parse::<f64>().unwrap_or(0.0), d.parse::<f64>().unwrap_or(0.0));
        if n > 0.0 && d > 0.0 { n / d } else { 0.0 }
    };
    let fps = match rate(&stream["avg_frame_rate"]) {
        f if f > 0.0 => f,
        _ => rate(&stream["r_frame_rate"]),
    };
    Ok(VideoProbe { width, height, frames: num(&stream["nb_frames"]), duration_s, fps })
}

fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() { "no error output".into() } else { tail.join(" | ") }
}

/// Decodes `count` frames starting at `from_s` seconds (or all frames to the end with `None`) into
/// contiguous RGB bytes at the file's own size. Returns `(width, height, bytes)`.
pub fn decode(path: &Path, from_s: f64, count: Option<usize>, fps: f64) -> Result<(usize, usize, Vec<u8>)> {
    let p = probe(path)?;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-v", "error", "-nostdin"]);
    if from_s > 0.0 {
        // Seek a quarter frame early: accurate seeking keeps frames at or after the seek point,
        // so the first frame kept is the one stamped `from_s`.
        cmd.args(["-ss", &format!("{:.6}", (from_s - 0.25 / fps).max(0.0))]);
    }
    cmd.arg("-i").arg(path);
    if let Some(n) = count {
        cmd.args(["-frames:v", &n.to_string()]);
    }
    cmd.args(["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let (out, stderr, ok) = run_capture(&mut cmd, path)?;
    if !ok {
        return Err(DatasetError::Video { path: path.to_path_buf(), message: format!("ffmpeg: {}", last_lines(&stderr)) });
    }
    let frame = p.width * p.height * 3;
    if out.len() % frame != 0 {
        return Err(DatasetError::Video { path: path.to_path_buf(), message: "decoder returned a partial frame".into() });
    }
    if !stderr.trim().is_empty() && out.is_empty() {
        return Err(DatasetError::Video { path: path.to_path_buf(), message: format!("ffmpeg: {}", last_lines(&stderr)) });
    }
    Ok((p.width, p.height, out))
}
