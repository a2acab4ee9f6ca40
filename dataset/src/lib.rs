//! # lapa-dataset
//!
//! Reads and writes [LeRobotDataset](https://github.com/huggingface/lerobot) folders, the format
//! SO-101 owners already record with `lerobot-record`:
//!
//! - [`DatasetWriter`] writes v3.0 (`meta/info.json`, `meta/stats.json`, `meta/tasks.parquet`,
//!   `meta/episodes/chunk-000/file-000.parquet`, `data/chunk-000/file-000.parquet`,
//!   `videos/<key>/chunk-000/file-000.mp4`), streaming frames into ffmpeg.
//! - [`Dataset`] opens v3.0 and v2.1 datasets, decodes video with ffmpeg, and exposes episodes as
//!   frames + state + action + task with timestamps ([`Episode::frame_pairs`] picks frame pairs by
//!   a spacing in seconds).
//!
//! Every failure is a [`DatasetError`] naming the file and field.

pub mod error;
pub mod png_io;
pub mod reader;
pub mod stats;
pub mod table;
pub mod video;
pub mod writer;

pub use error::{DatasetError, Result};
pub use reader::{Dataset, Episode, EpisodeMeta, Frames, Info, Matrix, Version};
pub use video::VideoCodec;
pub use writer::{CameraSpec, DatasetSpec, DatasetWriter, EpisodeInput, WrittenDataset};

/// The format generation the writer produces.
pub const CODEBASE_VERSION: &str = "v3.0";
/// v3.0 path templates (as in `info.json`).
pub const DATA_PATH: &str = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet";
pub const VIDEO_PATH: &str = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4";
/// The camera key lapa writes its one camera under (the simulator's recordings, the DAgger
/// rollouts, the board's teleoperated recordings), LeRobot's name for an SO-101's front camera.
pub const FRONT_CAMERA: &str = "observation.images.front";
