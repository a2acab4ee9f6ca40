//! LeRobotDataset reader: v3.0 (many episodes per file) and v2.1 (one file per episode).

use crate::error::{DatasetError, Result, io_err};
use crate::table::Table;
use crate::video;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One feature of `info.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Feature {
    pub dtype: String,
    pub shape: Vec<usize>,
    #[serde(default)]
    pub names: Option<Value>,
}

/// The parts of `meta/info.json` lapa uses (other fields are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Info {
    pub codebase_version: String,
    #[serde(default)]
    pub robot_type: Option<String>,
    pub total_episodes: usize,
    pub total_frames: usize,
    #[serde(default)]
    pub total_tasks: usize,
    pub chunks_size: usize,
    pub fps: f64,
    pub data_path: String,
    #[serde(default)]
    pub video_path: Option<String>,
    pub features: BTreeMap<String, Feature>,
}

/// Format generation of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V30,
    V21,
}

/// Where an episode's rows and frames are.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeMeta {
    pub index: usize,
    pub length: usize,
    pub tasks: Vec<String>,
    pub data_file: PathBuf,
    /// Per video key: file and start time of the episode inside it.
    pub videos: BTreeMap<String, (PathBuf, f64)>,
}

/// A float matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// Decoded RGB frames of one camera: `count × height × width × 3` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    pub width: usize,
    pub height: usize,
    pub count: usize,
    pub data: Vec<u8>,
}

impl Frames {
    pub fn frame(&self, i: usize) -> &[u8] {
        let n = self.width * self.height * 3;
        &self.data[i * n..(i + 1) * n]
    }
}

/// One episode, loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub index: usize,
    pub task: String,
    pub fps: f64,
    pub timestamps: Vec<f32>,
    pub state: Option<Matrix>,
    pub action: Option<Matrix>,
    /// Per video key (empty when loaded without video).
    pub videos: BTreeMap<String, Frames>,
}

impl Episode {
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Frame offset for a spacing given in seconds at this episode's fps.
    pub fn spacing_frames(&self, spacing_s: f64) -> Result<usize> {
        let h = (spacing_s * self.fps).round();
        if h.is_nan() || h < 1.0 {
            return Err(DatasetError::Usage(format!("spacing {spacing_s} s is less than one frame at {} fps (episode {})", self.fps, self.index)));
        }
        let h = h as usize;
        if h >= self.len() {
            return Err(DatasetError::Usage(format!(
                "spacing {spacing_s} s = {h} frames at {} fps is not shorter than episode {} ({} frames)",
                self.fps,
                self.index,
                self.len()
            )));
        }
        Ok(h)
    }

    /// All `(t, t + H)` frame pairs for a spacing in seconds.
    pub fn frame_pairs(&self, spacing_s: f64) -> Result<Vec<(usize, usize)>> {
        let h = self.spacing_frames(spacing_s)?;
        Ok((0..self.len() - h).map(|t| (t, t + h)).collect())
    }
}

/// An opened dataset: metadata in memory, episodes loaded on request.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub info: Info,
    pub version: Version,
    pub tasks: Vec<String>,
    pub episodes: Vec<EpisodeMeta>,
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| DatasetError::Json { path: path.to_path_buf(), source })
}

fn fill(template: &str, pairs: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in pairs {
        s = s.replace(k, v);
    }
    s
}

impl Dataset {
    /// Opens a dataset folder, reading and checking its metadata.
    pub fn open(root: &Path) -> Result<Self> {
        let info_path = root.join("meta/info.json");
        let raw = read_json(&info_path)?;
        let version = match raw.get("codebase_version").and_then(Value::as_str) {
            Some("v3.0") => Version::V30,
            Some("v2.1") => Version::V21,
            Some(other) => return Err(DatasetError::UnsupportedVersion { path: info_path, found: other.to_string() }),
            None => {
                return Err(DatasetError::InvalidField { path: info_path, field: "codebase_version".into(), message: "missing".into() });
            }
        };
        let info: Info = serde_json::from_value(raw).map_err(|source| DatasetError::Json { path: info_path.clone(), source })?;
        if info.fps.is_nan() || info.fps <= 0.0 {
            return Err(DatasetError::InvalidField { path: info_path, field: "fps".into(), message: format!("must be positive, got {}", info.fps) });
        }
        for (key, f) in &info.features {
            if f.dtype == "video" && (f.shape.len() != 3 || f.shape[2] != 3) {
                return Err(DatasetError::InvalidField {
                    path: info_path.clone(),
                    field: format!("features.{key}.shape"),
                    message: format!("expected [height, width, 3], got {:?}", f.shape),
                });
            }
        }
        let has_video = info.features.values().any(|f| f.dtype == "video");
        if has_video && info.video_path.is_none() {
            return Err(DatasetError::InvalidField {
                path: info_path,
                field: "video_path".into(),
                message: "missing but the dataset has video features".into(),
            });
        }
        let mut ds = Self { root: root.to_path_buf(), info, version, tasks: Vec::new(), episodes: Vec::new() };
        match version {
            Version::V30 => ds.load_v30_meta()?,
            Version::V21 => ds.load_v21_meta()?,
        }
        Ok(ds)
    }

    pub fn video_keys(&self) -> Vec<String> {
        self.info.features.iter().filter(|(_, f)| f.dtype == "video").map(|(k, _)| k.clone()).collect()
    }

    pub fn has_feature(&self, key: &str) -> bool {
        self.info.features.contains_key(key)
    }

    fn load_v30_meta(&mut self) -> Result<()> {
        let tasks_path = self.root.join("meta/tasks.parquet");
        let t = Table::read(&tasks_path)?;
        let ids = t.i64s("task_index")?;
        let names = if t.has("task") {
            t.strings("task")?
        } else if t.has("__index_level_0__") {
            t.strings("__index_level_0__")?
        } else {
            return Err(DatasetError::MissingColumn { path: tasks_path, column: "task".into() });
        };
        let mut tasks = vec![String::new(); ids.len()];
        for (&i, name) in ids.iter().zip(names) {
            let slot = usize::try_from(i).ok().filter(|&i| i < tasks.len()).ok_or_else(|| DatasetError::InvalidField {
                path: tasks_path.clone(),
                field: "task_index".into(),
                message: format!("{i} is out of range 0..{}", ids.len()),
            })?;
            tasks[slot] = name;
        }
        self.tasks = tasks;

        let dir = self.root.join("meta/episodes");
        let mut files = Vec::new();
        for chunk in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let chunk = chunk.map_err(io_err(&dir))?.path();
            if chunk.is_dir() {
                for f in std::fs::read_dir(&chunk).map_err(io_err(&chunk))? {
                    let f = f.map_err(io_err(&chunk))?.path();
                    if f.extension().is_some_and(|e| e == "parquet") {
                        files.push(f);
                    }
                }
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(DatasetError::MissingFile { path: dir.join("chunk-000/file-000.parquet") });
        }
        let keys = self.video_keys();
        for f in files {
            let t = Table::read(&f)?;
            let idx = t.i64s("episode_index")?;
            let len = t.i64s("length")?;
            let dc = t.i64s("data/chunk_index")?;
            let df = t.i64s("data/file_index")?;
            let tasks = if t.has("tasks") { t.string_lists("tasks")? } else { vec![Vec::new(); idx.len()] };
            // Per video key: chunk index, file index and start time of each episode.
            type VideoColumns = (String, Vec<i64>, Vec<i64>, Vec<f64>);
            let mut vids: Vec<VideoColumns> = Vec::new();
            for k in &keys {
                vids.push((
                    k.clone(),
                    t.i64s(&format!("videos/{k}/chunk_index"))?,
                    t.i64s(&format!("videos/{k}/file_index"))?,
                    t.f64s(&format!("videos/{k}/from_timestamp"))?,
                ));
            }
            for r in 0..idx.len() {
                let data_rel = fill(&self.info.data_path, &[("{chunk_index:03d}", format!("{:03}", dc[r])), ("{file_index:03d}", format!("{:03}", df[r]))]);
                let mut videos = BTreeMap::new();
                for (k, c, fi, from) in &vids {
                    let vp = self.info.video_path.clone().unwrap_or_default();
                    let rel =
                        fill(&vp, &[("{video_key}", k.clone()), ("{chunk_index:03d}", format!("{:03}", c[r])), ("{file_index:03d}", format!("{:03}", fi[r]))]);
                    videos.insert(k.clone(), (self.root.join(rel), from[r]));
                }
                let length = usize::try_from(len[r]).map_err(|_| DatasetError::InvalidField {
                    path: f.clone(),
                    field: "length".into(),
                    message: format!("negative: {}", len[r]),
                })?;
                self.episodes.push(EpisodeMeta { index: idx[r].max(0) as usize, length, tasks: tasks[r].clone(), data_file: self.root.join(data_rel), videos });
            }
        }
        self.episodes.sort_by_key(|e| e.index);
        Ok(())
    }

    fn load_v21_meta(&mut self) -> Result<()> {
        let read_jsonl = |rel: &str| -> Result<Vec<Value>> {
            let p = self.root.join(rel);
            let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).map_err(|source| DatasetError::Json { path: p.clone(), source }))
                .collect()
        };
        let field_err = |rel: &str, field: &str| DatasetError::InvalidField {
            path: self.root.join(rel),
            field: field.into(),
            message: "missing or not the expected type".into(),
        };
        let mut tasks = Vec::new();
        for v in read_jsonl("meta/tasks.jsonl")? {
            let i = v["task_index"].as_u64().ok_or_else(|| field_err("meta/tasks.jsonl", "task_index"))? as usize;
            let s = v["task"].as_str().ok_or_else(|| field_err("meta/tasks.jsonl", "task"))?;
            if tasks.len() <= i {
                tasks.resize(i + 1, String::new());
            }
            tasks[i] = s.to_string();
        }
        self.tasks = tasks;
        let keys = self.video_keys();
        for v in read_jsonl("meta/episodes.jsonl")? {
            let index = v["episode_index"].as_u64().ok_or_else(|| field_err("meta/episodes.jsonl", "episode_index"))? as usize;
            let length = v["length"].as_u64().ok_or_else(|| field_err("meta/episodes.jsonl", "length"))? as usize;
            let ep_tasks = v["tasks"].as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect()).unwrap_or_default();
            let chunk = format!("{:03}", index / self.info.chunks_size.max(1));
            let data_rel = fill(&self.info.data_path, &[("{episode_chunk:03d}", chunk.clone()), ("{episode_index:06d}", format!("{index:06}"))]);
            let mut videos = BTreeMap::new();
            for k in &keys {
                let vp = self.info.video_path.clone().unwrap_or_default();
                let rel = fill(&vp, &[("{episode_chunk:03d}", chunk.clone()), ("{video_key}", k.clone()), ("{episode_index:06d}", format!("{index:06}"))]);
                videos.insert(k.clone(), (self.root.join(rel), 0.0));
            }
            self.episodes.push(EpisodeMeta { index, length, tasks: ep_tasks, data_file: self.root.join(data_rel), videos });
        }
        self.episodes.sort_by_key(|e| e.index);
        Ok(())
    }

    /// Loads episode `k` (position in the episode list): rows, and decoded video if asked.
    pub fn episode(&self, k: usize, with_video: bool) -> Result<Episode> {
        let meta = self.episodes.get(k).ok_or(DatasetError::NoSuchEpisode { episode: k, total: self.episodes.len() })?;
        let t = Table::read(&meta.data_file)?;
        let path = meta.data_file.clone();
        let ep_idx = t.i64s("episode_index")?;
        let rows: Vec<usize> = (0..ep_idx.len()).filter(|&r| ep_idx[r] == meta.index as i64).collect();
        if rows.len() != meta.length {
            return Err(DatasetError::InvalidField {
                path,
                field: "episode_index".into(),
                message: format!("episode {} has {} rows but its metadata says length {}", meta.index, rows.len(), meta.length),
            });
        }
        let ts = t.f64s("timestamp")?;
        let timestamps: Vec<f32> = rows.iter().map(|&r| ts[r] as f32).collect();
        let task_idx = t.i64s("task_index")?;
        let task = rows
            .first()
            .and_then(|&r| usize::try_from(task_idx[r]).ok())
            .and_then(|i| self.tasks.get(i).cloned())
            .or_else(|| meta.tasks.first().cloned())
            .unwrap_or_default();
        let matrix = |name: &str| -> Result<Option<Matrix>> {
            let Some(feature) = self.info.features.get(name) else { return Ok(None) };
            let (cols, data) = t.f32_rows(name)?;
            let want = feature.shape.first().copied().unwrap_or(0);
            if cols != want {
                return Err(DatasetError::InvalidField {
                    path: t.path.clone(),
                    field: name.into(),
                    message: format!("rows have {cols} values, info.json says {want}"),
                });
            }
            let mut out = Vec::with_capacity(rows.len() * cols);
            for &r in &rows {
                out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
            }
            Ok(Some(Matrix { rows: rows.len(), cols, data: out }))
        };
        let state = matrix("observation.state")?;
        let action = matrix("action")?;
        let mut videos = BTreeMap::new();
        if with_video {
            for (key, (file, from)) in &meta.videos {
                videos.insert(key.clone(), self.decode_frames(key, file, *from, meta)?);
            }
        }
        Ok(Episode { index: meta.index, task, fps: self.info.fps, timestamps, state, action, videos })
    }

    fn decode_frames(&self, key: &str, file: &Path, from: f64, meta: &EpisodeMeta) -> Result<Frames> {
        let (w, h, data) = video::decode(file, from, Some(meta.length), self.info.fps)?;
        let shape = &self.info.features[key].shape;
        if shape[0] != h || shape[1] != w {
            return Err(DatasetError::InvalidField {
                path: file.to_path_buf(),
                field: format!("features.{key}.shape"),
                message: format!("video frames are {w}×{h} but info.json says {}×{}", shape[1], shape[0]),
            });
        }
        let count = data.len() / (w * h * 3);
        if count != meta.length {
            return Err(DatasetError::FrameCountMismatch {
                path: file.to_path_buf(),
                episode: meta.index,
                expected: meta.length,
                found: count,
                from_timestamp: from,
            });
        }
        Ok(Frames { width: w, height: h, count, data })
    }
}
