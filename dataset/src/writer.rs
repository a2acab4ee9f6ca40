//! LeRobotDataset v3.0 writer.

use crate::error::{DatasetError, Result, io_err};
use crate::stats::{ImageStats, scalar_stats, vector_stats};
use crate::video::{VideoCodec, VideoEncoder, check_ffmpeg};
use crate::{CODEBASE_VERSION, DATA_PATH, VIDEO_PATH};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use lapa_fs::atomic_write;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A camera stream of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSpec {
    /// Feature key, e.g. `observation.images.front`.
    pub key: String,
    pub width: usize,
    pub height: usize,
}

/// What a dataset holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    pub fps: u32,
    pub robot_type: String,
    pub cameras: Vec<CameraSpec>,
    /// Names of `observation.state` dimensions (`None`: no state feature).
    pub state_names: Option<Vec<String>>,
    /// Names of `action` dimensions (`None`: no action feature, as for human video).
    pub action_names: Option<Vec<String>>,
    pub codec: VideoCodec,
}

/// One episode to append. Image buffers are `frames × height × width × 3` RGB bytes, one per
/// camera in the spec's order; `state`/`action` are `frames × dim` row-major.
#[derive(Debug, Clone, Copy)]
pub struct EpisodeInput<'a> {
    pub task: &'a str,
    pub images: &'a [&'a [u8]],
    pub state: Option<&'a [f32]>,
    pub action: Option<&'a [f32]>,
}

#[derive(Debug, Default)]
struct Rows {
    state: Vec<f32>,
    action: Vec<f32>,
    timestamp: Vec<f32>,
    frame_index: Vec<i64>,
    episode_index: Vec<i64>,
    index: Vec<i64>,
    task_index: Vec<i64>,
}

#[derive(Debug)]
struct EpisodeRow {
    task: String,
    length: usize,
    from_index: usize,
    video_from_frame: usize,
}

/// Summary of a finished dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenDataset {
    pub root: PathBuf,
    pub episodes: usize,
    pub frames: usize,
    pub tasks: usize,
}

/// Writes a dataset into a staging folder beside the target and moves it into place on
/// [`finish`](DatasetWriter::finish), so an interrupted recording never leaves a half dataset
/// where a complete one is expected.
#[derive(Debug)]
pub struct DatasetWriter {
    root: PathBuf,
    staging: PathBuf,
    spec: DatasetSpec,
    encoders: Vec<VideoEncoder>,
    image_stats: Vec<ImageStats>,
    rows: Rows,
    episodes: Vec<EpisodeRow>,
    tasks: Vec<String>,
    task_ids: HashMap<String, usize>,
    extra_meta: Vec<(String, Value)>,
    finished: bool,
}

impl DatasetWriter {
    /// Starts a dataset that will appear at `root`. Fails if `root` already exists.
    pub fn create(root: &Path, spec: DatasetSpec) -> Result<Self> {
        if root.exists() {
            return Err(DatasetError::Usage(format!("{}: already exists; choose another folder or remove it", root.display())));
        }
        if spec.fps == 0 {
            return Err(DatasetError::Usage("fps must be positive".into()));
        }
        for cam in &spec.cameras {
            spec.codec.check_size(cam.width, cam.height)?;
        }
        if !spec.cameras.is_empty() {
            check_ffmpeg()?;
        }
        let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
        let staging = root.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        let mut encoders = Vec::new();
        for cam in &spec.cameras {
            let rel = VIDEO_PATH.replace("{video_key}", &cam.key).replace("{chunk_index:03d}", "000").replace("{file_index:03d}", "000");
            encoders.push(VideoEncoder::create(&staging.join(rel), cam.width, cam.height, spec.fps, spec.codec)?);
        }
        let image_stats = vec![ImageStats::default(); spec.cameras.len()];
        Ok(Self {
            root: root.to_path_buf(),
            staging,
            spec,
            encoders,
            image_stats,
            rows: Rows::default(),
            episodes: Vec::new(),
            tasks: Vec::new(),
            task_ids: HashMap::new(),
            extra_meta: Vec::new(),
            finished: false,
        })
    }

    pub fn episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Adds a JSON file under `meta/` (e.g. simulator provenance); LeRobot ignores unknown files.
    pub fn add_meta_file(&mut self, name: &str, value: Value) {
        self.extra_meta.push((name.to_string(), value));
    }

    /// Appends one episode.
    pub fn add_episode(&mut self, ep: &EpisodeInput<'_>) -> Result<()> {
        let spec = &self.spec;
        if ep.images.len() != spec.cameras.len() {
            return Err(DatasetError::Usage(format!("episode has {} camera streams, the dataset has {}", ep.images.len(), spec.cameras.len())));
        }
        let mut length = None;
        for (cam, img) in spec.cameras.iter().zip(ep.images) {
            let per = cam.width * cam.height * 3;
            if img.len() % per != 0 {
                return Err(DatasetError::Usage(format!("{}: image buffer is not a whole number of {}×{} frames", cam.key, cam.width, cam.height)));
            }
            let n = img.len() / per;
            if *length.get_or_insert(n) != n {
                return Err(DatasetError::Usage(format!("{}: {} frames, other streams have {}", cam.key, n, length.unwrap_or(0))));
            }
        }
        let check_vec = |name: &str, names: &Option<Vec<String>>, data: Option<&[f32]>, length: &mut Option<usize>| -> Result<()> {
            match (names, data) {
                (Some(names), Some(d)) => {
                    let dim = names.len();
                    if dim == 0 || d.len() % dim != 0 {
                        return Err(DatasetError::Usage(format!("{name}: {} values is not a whole number of {dim}-vectors", d.len())));
                    }
                    let n = d.len() / dim;
                    if *length.get_or_insert(n) != n {
                        return Err(DatasetError::Usage(format!("{name}: {n} rows but the episode has {} frames", length.unwrap_or(0))));
                    }
                    Ok(())
                }
                (None, None) => Ok(()),
                (Some(_), None) => Err(DatasetError::Usage(format!("{name}: the dataset has this feature but the episode does not"))),
                (None, Some(_)) => Err(DatasetError::Usage(format!("{name}: the episode has this feature but the dataset does not"))),
            }
        };
        check_vec("observation.state", &spec.state_names, ep.state, &mut length)?;
        check_vec("action", &spec.action_names, ep.action, &mut length)?;
        let length = length.unwrap_or(0);
        if length == 0 {
            return Err(DatasetError::Usage("an episode needs at least one frame".into()));
        }

        let video_from_frame = self.encoders.first().map(|e| e.frames()).unwrap_or(0);
        for (k, img) in ep.images.iter().enumerate() {
            self.encoders[k].write(img)?;
            self.image_stats[k].add(img, length);
        }
        let task_index = match self.task_ids.get(ep.task) {
            Some(&i) => i,
            None => {
                self.tasks.push(ep.task.to_string());
                self.task_ids.insert(ep.task.to_string(), self.tasks.len() - 1);
                self.tasks.len() - 1
            }
        };
        let ep_index = self.episodes.len();
        let from_index = self.rows.index.len();
        for t in 0..length {
            self.rows.timestamp.push(t as f32 / self.spec.fps as f32);
            self.rows.frame_index.push(t as i64);
            self.rows.episode_index.push(ep_index as i64);
            self.rows.index.push((from_index + t) as i64);
            self.rows.task_index.push(task_index as i64);
        }
        if let Some(s) = ep.state {
            self.rows.state.extend_from_slice(s);
        }
        if let Some(a) = ep.action {
            self.rows.action.extend_from_slice(a);
        }
        self.episodes.push(EpisodeRow { task: ep.task.to_string(), length, from_index, video_from_frame });
        Ok(())
    }

    fn features(&self) -> Map<String, Value> {
        let mut f = Map::new();
        for cam in &self.spec.cameras {
            f.insert(
                cam.key.clone(),
                json!({
                    "dtype": "video",
                    "shape": [cam.height, cam.width, 3],
                    "names": ["height", "width", "channels"],
                    "info": {
                        "video.height": cam.height, "video.width": cam.width, "video.codec": self.spec.codec.name(),
                        "video.pix_fmt": "yuv420p", "video.is_depth_map": false, "video.fps": self.spec.fps,
                        "video.channels": 3, "has_audio": false
                    }
                }),
            );
        }
        if let Some(n) = &self.spec.state_names {
            f.insert("observation.state".into(), json!({"dtype": "float32", "shape": [n.len()], "names": n}));
        }
        if let Some(n) = &self.spec.action_names {
            f.insert("action".into(), json!({"dtype": "float32", "shape": [n.len()], "names": n}));
        }
        f.insert("timestamp".into(), json!({"dtype": "float32", "shape": [1], "names": null}));
        for k in ["frame_index", "episode_index", "index", "task_index"] {
            f.insert(k.into(), json!({"dtype": "int64", "shape": [1], "names": null}));
        }
        f
    }

    fn write_data(&self) -> Result<()> {
        let mut fields = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        for (name, names, data) in [("observation.state", &self.spec.state_names, &self.rows.state), ("action", &self.spec.action_names, &self.rows.action)] {
            if let Some(names) = names {
                let dim = names.len() as i32;
                fields.push(Field::new(name, DataType::FixedSizeList(item.clone(), dim), true));
                let values = Arc::new(Float32Array::from(data.clone()));
                let arr = FixedSizeListArray::try_new(item.clone(), dim, values, None).map_err(|e| DatasetError::Usage(format!("{name}: {e}")))?;
                cols.push(Arc::new(arr));
            }
        }
        fields.push(Field::new("timestamp", DataType::Float32, true));
        cols.push(Arc::new(Float32Array::from(self.rows.timestamp.clone())));
        for (name, v) in [
            ("frame_index", &self.rows.frame_index),
            ("episode_index", &self.rows.episode_index),
            ("index", &self.rows.index),
            ("task_index", &self.rows.task_index),
        ] {
            fields.push(Field::new(name, DataType::Int64, true));
            cols.push(Arc::new(Int64Array::from(v.clone())));
        }
        let rel = DATA_PATH.replace("{chunk_index:03d}", "000").replace("{file_index:03d}", "000");
        write_parquet(&self.staging.join(rel), Schema::new(fields), cols)
    }

    fn write_tasks(&self) -> Result<()> {
        // LeRobot reads tasks with pandas and looks instructions up by the frame's index
        // (`tasks.iloc[i].name`), so the task string must be the pandas index: say so in the
        // pandas metadata, exactly as `DataFrame.to_parquet` does.
        let pandas = json!({
            "index_columns": ["task"],
            "column_indexes": [{"name": null, "field_name": null, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
            "columns": [
                {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": null},
                {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": null}
            ],
            "creator": {"library": "lapa", "version": env!("CARGO_PKG_VERSION")},
            "pandas_version": "2.2.3"
        });
        let schema = Schema::new(vec![Field::new("task_index", DataType::Int64, true), Field::new("task", DataType::Utf8, true)])
            .with_metadata(HashMap::from([("pandas".to_string(), pandas.to_string())]));
        let cols: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from((0..self.tasks.len() as i64).collect::<Vec<_>>())), Arc::new(StringArray::from(self.tasks.clone()))];
        write_parquet(&self.staging.join("meta/tasks.parquet"), schema, cols)
    }

    fn write_episodes(&self) -> Result<()> {
        let n = self.episodes.len();
        let fps = f64::from(self.spec.fps);
        let mut fields = vec![Field::new("episode_index", DataType::Int64, true)];
        let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>()))];
        let mut tasks = ListBuilder::new(StringBuilder::new());
        for e in &self.episodes {
            tasks.values().append_value(&e.task);
            tasks.append(true);
        }
        let tasks = tasks.finish();
        fields.push(Field::new("tasks", tasks.data_type().clone(), true));
        cols.push(Arc::new(tasks));
        let ints = |f: &dyn Fn(&EpisodeRow) -> i64| -> ArrayRef { Arc::new(Int64Array::from(self.episodes.iter().map(f).collect::<Vec<_>>())) };
        let mut push_int = |name: String, arr: ArrayRef| {
            fields.push(Field::new(name, DataType::Int64, true));
            cols.push(arr);
        };
        push_int("length".into(), ints(&|e| e.length as i64));
        push_int("data/chunk_index".into(), ints(&|_| 0));
        push_int("data/file_index".into(), ints(&|_| 0));
        push_int("dataset_from_index".into(), ints(&|e| e.from_index as i64));
        push_int("dataset_to_index".into(), ints(&|e| (e.from_index + e.length) as i64));
        for cam in &self.spec.cameras {
            push_int(format!("videos/{}/chunk_index", cam.key), ints(&|_| 0));
            push_int(format!("videos/{}/file_index", cam.key), ints(&|_| 0));
        }
        push_int("meta/episodes/chunk_index".into(), ints(&|_| 0));
        push_int("meta/episodes/file_index".into(), ints(&|_| 0));
        for cam in &self.spec.cameras {
            let from: Vec<f64> = self.episodes.iter().map(|e| e.video_from_frame as f64 / fps).collect();
            let to: Vec<f64> = self.episodes.iter().map(|e| (e.video_from_frame + e.length) as f64 / fps).collect();
            fields.push(Field::new(format!("videos/{}/from_timestamp", cam.key), DataType::Float64, true));
            cols.push(Arc::new(Float64Array::from(from)));
            fields.push(Field::new(format!("videos/{}/to_timestamp", cam.key), DataType::Float64, true));
            cols.push(Arc::new(Float64Array::from(to)));
        }
        write_parquet(&self.staging.join("meta/episodes/chunk-000/file-000.parquet"), Schema::new(fields), cols)
    }

    fn stats(&self) -> Value {
        let mut s = Map::new();
        for (cam, st) in self.spec.cameras.iter().zip(&self.image_stats) {
            s.insert(cam.key.clone(), st.to_json());
        }
        if let Some(n) = &self.spec.state_names {
            s.insert("observation.state".into(), vector_stats(&self.rows.state, n.len()));
        }
        if let Some(n) = &self.spec.action_names {
            s.insert("action".into(), vector_stats(&self.rows.action, n.len()));
        }
        s.insert("timestamp".into(), scalar_stats(&self.rows.timestamp.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()));
        for (k, v) in [
            ("frame_index", &self.rows.frame_index),
            ("episode_index", &self.rows.episode_index),
            ("index", &self.rows.index),
            ("task_index", &self.rows.task_index),
        ] {
            s.insert(k.into(), scalar_stats(&v.iter().map(|&x| x as f64).collect::<Vec<_>>()));
        }
        Value::Object(s)
    }

    /// Finishes the videos, writes parquet and metadata, and moves the dataset into place.
    pub fn finish(mut self) -> Result<WrittenDataset> {
        if self.episodes.is_empty() {
            return Err(DatasetError::Usage("no episodes were recorded; nothing written".into()));
        }
        for enc in std::mem::take(&mut self.encoders) {
            enc.finish()?;
        }
        self.write_data()?;
        self.write_tasks()?;
        self.write_episodes()?;
        let total_frames = self.rows.index.len();
        let info = json!({
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.spec.robot_type,
            "total_episodes": self.episodes.len(),
            "total_frames": total_frames,
            "total_tasks": self.tasks.len(),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.spec.fps,
            "splits": {"train": format!("0:{}", self.episodes.len())},
            "data_path": DATA_PATH,
            "video_path": if self.spec.cameras.is_empty() { Value::Null } else { Value::String(VIDEO_PATH.into()) },
            "features": Value::Object(self.features()),
        });
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
        atomic_write(&self.staging.join("meta/info.json"), &pretty(&info))?;
        atomic_write(&self.staging.join("meta/stats.json"), &pretty(&self.stats()))?;
        for (name, v) in &self.extra_meta {
            atomic_write(&self.staging.join("meta").join(name), &pretty(v))?;
        }
        if self.root.exists() {
            return Err(DatasetError::Usage(format!("{}: appeared while recording; not overwriting it", self.root.display())));
        }
        // Every folder's entries inside the staging folder reach the disk before it is published.
        sync_tree(&self.staging);
        std::fs::rename(&self.staging, &self.root).map_err(io_err(&self.root))?;
        // The rename reaches the disk too (videos, tables and metadata inside were fsynced as written).
        lapa_fs::sync_dir(self.root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")));
        self.finished = true;
        Ok(WrittenDataset { root: self.root.clone(), episodes: self.episodes.len(), frames: total_frames, tasks: self.tasks.len() })
    }
}

/// fsyncs `dir` and every folder below it (best effort, as `lapa_fs::sync_dir`).
fn sync_tree(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                sync_tree(&e.path());
            }
        }
    }
    lapa_fs::sync_dir(dir);
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        // An abandoned writer (error or panic mid-recording) leaves no staging folder behind.
        if !self.finished && self.staging.exists() {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

fn write_parquet(path: &Path, schema: Schema, cols: Vec<ArrayRef>) -> Result<()> {
    let perr = |e: &dyn std::fmt::Display| DatasetError::Parquet { path: path.to_path_buf(), message: e.to_string() };
    let schema = Arc::new(schema);
    let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| perr(&e))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| perr(&e))?;
    w.write(&batch).map_err(|e| perr(&e))?;
    w.close().map_err(|e| perr(&e))?;
    Ok(atomic_write(path, &buf)?)
}
