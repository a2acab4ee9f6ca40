//! Training-resolution frame cache: every source (a LeRobot dataset or a folder of videos) is
//! decoded once into a flat `uint8` file of `side × side × 3` frames, memory-mapped for training.
//! The cache key hashes the source's content (metadata and video bytes), the resolution and the
//! camera, so an edited dataset is re-decoded and an unchanged one never is.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lapa_dataset::{Dataset, video};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

/// Bump when the cache layout or the resize changes.
const CACHE_VERSION: u32 = 2;
const VIDEO_EXTS: [&str; 5] = ["mp4", "webm", "mkv", "mov", "avi"];

/// Where training frames come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// A LeRobot dataset (v3.0 or v2.1): one clip per episode.
    Dataset,
    /// A folder of video files: one clip per file, in name order.
    VideoFolder,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub kind: SourceKind,
    /// Dataset camera (video key); the first one when `None`.
    pub camera: Option<String>,
}

impl Source {
    /// A dataset if `path/meta/info.json` exists, else a folder that must hold videos.
    pub fn detect(path: &Path, camera: Option<&str>) -> Result<Self> {
        if !path.is_dir() {
            bail!("{}: not a folder (expected a LeRobot dataset or a folder of videos)", path.display());
        }
        let kind = if path.join("meta/info.json").is_file() {
            SourceKind::Dataset
        } else if !list_videos(path)?.is_empty() {
            SourceKind::VideoFolder
        } else {
            bail!("{}: neither a LeRobot dataset (no meta/info.json) nor a folder of videos ({})", path.display(), VIDEO_EXTS.join("/"));
        };
        Ok(Self { path: path.to_path_buf(), kind, camera: camera.map(str::to_string) })
    }
}

/// Video files directly inside `dir`, sorted by name.
pub fn list_videos(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| VIDEO_EXTS.contains(&e.to_ascii_lowercase().as_str())))
        .collect();
    v.sort();
    Ok(v)
}

/// One clip (episode or video file) inside the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clip {
    /// Episode index for datasets, file name for folders.
    pub name: String,
    pub episode: Option<usize>,
    pub fps: f64,
    /// First frame's index in the cache.
    pub start: usize,
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheMeta {
    pub version: u32,
    pub key: String,
    pub source: PathBuf,
    pub kind: SourceKind,
    pub side: usize,
    pub clips: Vec<Clip>,
    pub frames: usize,
}

/// A memory-mapped frame cache.
#[derive(Debug)]
pub struct FrameCache {
    pub meta: CacheMeta,
    map: Mmap,
}

/// A frame pair `(t, t + H)` as global cache frame indices, with its clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub clip: usize,
    pub a: usize,
    pub b: usize,
}

impl FrameCache {
    /// Opens the cache for `source` at `side`, decoding it first if needed.
    pub fn open_or_build(source: &Source, side: usize, cache_dir: &Path, quiet: bool) -> Result<Self> {
        let key = source_key(source, side)?;
        let meta_path = cache_dir.join(format!("{key}.json"));
        let data_path = cache_dir.join(format!("{key}.frames"));
        if meta_path.is_file() && data_path.is_file() {
            match Self::open(&meta_path, &data_path) {
                Ok(c) => return Ok(c),
                Err(e) => eprintln!("warning: rebuilding unreadable frame cache {}: {e:#}", meta_path.display()),
            }
        }
        std::fs::create_dir_all(cache_dir).with_context(|| format!("{}: cannot create cache folder", cache_dir.display()))?;
        let meta = build(source, side, &key, &data_path, quiet)?;
        let json = serde_json::to_vec_pretty(&meta)?;
        lapa_fs::atomic_write(&meta_path, &json)?;
        Self::open(&meta_path, &data_path)
    }

    fn open(meta_path: &Path, data_path: &Path) -> Result<Self> {
        let meta: CacheMeta = serde_json::from_slice(&std::fs::read(meta_path)?).with_context(|| format!("{}: bad cache index", meta_path.display()))?;
        if meta.version != CACHE_VERSION {
            bail!("cache version {} (expected {CACHE_VERSION})", meta.version);
        }
        let file = File::open(data_path).with_context(|| format!("{}: cannot open", data_path.display()))?;
        let expected = (meta.frames * meta.side * meta.side * 3) as u64;
        let got = file.metadata()?.len();
        if got != expected {
            bail!("{}: {got} bytes, index says {expected}", data_path.display());
        }
        // SAFETY: the file is lapa's own cache, written once under a content-hash name and renamed
        // into place; it is only read afterwards. Truncation by another process while mapped is the
        // one hazard of any mmap, and the length was checked above.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("{}: cannot map", data_path.display()))?;
        Ok(Self { meta, map })
    }

    pub fn side(&self) -> usize {
        self.meta.side
    }

    /// HWC bytes of global frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.meta.side * self.meta.side * 3;
        &self.map[i * n..(i + 1) * n]
    }

    /// All `(t, t+H)` pairs with `H = round(spacing_s · fps)` per clip. Clips not longer than `H`
    /// are skipped with a warning; if none is long enough the error names the source.
    pub fn pairs(&self, spacing_s: f64) -> Result<Vec<Pair>> {
        let mut pairs = Vec::new();
        let mut short = Vec::new();
        for (ci, c) in self.meta.clips.iter().enumerate() {
            let h = spacing_frames(spacing_s, c.fps).with_context(|| format!("{}: clip {}", self.meta.source.display(), c.name))?;
            if h >= c.len {
                short.push(format!("{} ({} frames)", c.name, c.len));
                continue;
            }
            pairs.extend((0..c.len - h).map(|t| Pair { clip: ci, a: c.start + t, b: c.start + t + h }));
        }
        if pairs.is_empty() {
            bail!(
                "{}: spacing {spacing_s} s is not shorter than any clip (at {} fps that is {} frames; clips: {})",
                self.meta.source.display(),
                self.meta.clips.first().map(|c| c.fps).unwrap_or(0.0),
                self.meta.clips.first().map(|c| spacing_frames(spacing_s, c.fps).unwrap_or(0)).unwrap_or(0),
                short.join(", ")
            );
        }
        if !short.is_empty() {
            eprintln!("warning: {}: {} clip(s) shorter than the spacing {spacing_s} s skipped", self.meta.source.display(), short.len());
        }
        Ok(pairs)
    }
}

/// Frame offset `H` for a spacing in seconds at `fps` (at least one frame).
pub fn spacing_frames(spacing_s: f64, fps: f64) -> Result<usize> {
    let h = (spacing_s * fps).round();
    if h.is_nan() || h < 1.0 {
        bail!("spacing {spacing_s} s is less than one frame at {fps} fps");
    }
    Ok(h as usize)
}

/// Parses `0.6`, `0.6s` or `600ms`.
pub fn parse_seconds(s: &str) -> Result<f64> {
    let t = s.trim();
    let v =
        if let Some(ms) = t.strip_suffix("ms") { ms.trim().parse::<f64>().map(|v| v / 1000.0) } else { t.strip_suffix('s').unwrap_or(t).trim().parse::<f64>() }
            .map_err(|_| anyhow!("{s:?} is not a duration (examples: 0.6s, 600ms, 2.4)"))?;
    if v.is_nan() || v <= 0.0 || !v.is_finite() {
        bail!("duration {s:?} must be positive");
    }
    Ok(v)
}

fn hash_file(h: &mut blake3::Hasher, path: &Path) -> Result<()> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(())
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            files_under(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Content hash of a source at a resolution.
fn source_key(source: &Source, side: usize) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(format!("lapa-frame-cache v{CACHE_VERSION} side={side} camera={:?}\n", source.camera).as_bytes());
    let mut files = Vec::new();
    match source.kind {
        SourceKind::Dataset => {
            files_under(&source.path.join("meta"), &mut files)?;
            if source.path.join("videos").is_dir() {
                files_under(&source.path.join("videos"), &mut files)?;
            }
        }
        SourceKind::VideoFolder => files = list_videos(&source.path)?,
    }
    files.sort();
    for f in &files {
        let rel = f.strip_prefix(&source.path).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        hash_file(&mut h, f)?;
    }
    Ok(h.finalize().to_hex()[..24].to_string())
}

/// Centre-crops to a square and resizes to `side × side`: the camera spec's own resampling
/// ([`lapa_model::policy::CameraSpec::apply`], a box filter down, linear up), so the frames a
/// policy trains on and the frames the runtime and the server feed it are made by one function.
pub fn resize_square(src: &[u8], w: usize, h: usize, side: usize) -> Result<Vec<u8>> {
    lapa_model::policy::CameraSpec { width: side, height: side, crop: None }.apply(w, h, src).map_err(|e| anyhow!("resizing a {w}×{h} frame to {side}²: {e}"))
}

fn bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} clips {elapsed_precise} ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

fn build(source: &Source, side: usize, key: &str, data_path: &Path, quiet: bool) -> Result<CacheMeta> {
    let tmp = data_path.with_extension(format!("frames.tmp-{}", std::process::id()));
    let mut out = BufWriter::new(File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?);
    let mut clips = Vec::new();
    let mut frames = 0usize;
    let mut push = |name: String, episode: Option<usize>, fps: f64, w: usize, h: usize, data: &[u8], out: &mut BufWriter<File>| -> Result<()> {
        let n = w * h * 3;
        let len = data.len() / n.max(1);
        for i in 0..len {
            out.write_all(&resize_square(&data[i * n..(i + 1) * n], w, h, side)?)?;
        }
        clips.push(Clip { name, episode, fps, start: frames, len });
        frames += len;
        Ok(())
    };
    let result: Result<()> = (|| {
        match source.kind {
            SourceKind::Dataset => {
                let ds = Dataset::open(&source.path)?;
                let keys = ds.video_keys();
                let cam = match &source.camera {
                    Some(c) if keys.contains(c) => c.clone(),
                    Some(c) => bail!("{}: no camera {c:?} (video keys: {})", source.path.display(), keys.join(", ")),
                    None => keys.first().cloned().ok_or_else(|| anyhow!("{}: dataset has no video features", source.path.display()))?,
                };
                let pb = bar(ds.episodes.len(), &format!("decoding {}", source.path.display()), quiet);
                for k in 0..ds.episodes.len() {
                    let ep = ds.episode(k, true)?;
                    let f = ep.videos.get(&cam).ok_or_else(|| anyhow!("{}: episode {k} has no {cam} video", source.path.display()))?;
                    push(format!("episode {}", ep.index), Some(ep.index), ep.fps, f.width, f.height, &f.data, &mut out)?;
                    pb.inc(1);
                }
                pb.finish_and_clear();
            }
            SourceKind::VideoFolder => {
                let files = list_videos(&source.path)?;
                let pb = bar(files.len(), &format!("decoding {}", source.path.display()), quiet);
                for f in files {
                    let p = video::probe(&f).with_context(|| format!("{}: unreadable video or zero-length clip", f.display()))?;
                    if p.fps.is_nan() || p.fps <= 0.0 {
                        bail!("{}: the video stream has no frame rate", f.display());
                    }
                    let (w, h, data) = video::decode(&f, 0.0, None, p.fps)?;
                    if data.is_empty() {
                        bail!("{}: zero-length clip (no frames decoded)", f.display());
                    }
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    push(name, None, p.fps, w, h, &data, &mut out)?;
                    pb.inc(1);
                }
                pb.finish_and_clear();
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        drop(out);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    out.into_inner().map_err(|e| anyhow!("{}: {}", tmp.display(), e.error()))?.sync_all()?;
    std::fs::rename(&tmp, data_path)?;
    Ok(CacheMeta { version: CACHE_VERSION, key: key.to_string(), source: source.path.clone(), kind: source.kind.clone(), side, clips, frames })
}
