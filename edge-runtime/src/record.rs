//! Recording what the robot saw and did as a LeRobot v3.0 dataset: one camera, the follower's
//! measured joints as `observation.state`, the command that went to it as `action` (both named
//! `<joint>.pos`, as LeRobot's SO-101 records them), and the instruction as the episode's task.
//! Episodes are buffered and handed to [`lapa_dataset::DatasetWriter`], which writes into a
//! staging folder and moves the dataset into place on [`Recorder::finish`]: an interrupted
//! recording never leaves half a dataset where a whole one is expected.

use lapa_boards::{ArmDescription, Joints};
use lapa_dataset::{CameraSpec, DatasetSpec, DatasetWriter, EpisodeInput, VideoCodec, WrittenDataset};
use std::path::Path;

/// Recording failures.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Dataset(#[from] lapa_dataset::DatasetError),
    #[error("frame {got_w}×{got_h}, but the recording is {want_w}×{want_h}")]
    FrameSize { got_w: usize, got_h: usize, want_w: usize, want_h: usize },
    #[error("{0}")]
    Usage(String),
}

/// Buffers episodes and writes them to a dataset.
#[derive(Debug)]
pub struct Recorder {
    writer: DatasetWriter,
    width: usize,
    height: usize,
    images: Vec<u8>,
    state: Vec<f32>,
    action: Vec<f32>,
    frames: usize,
}

impl Recorder {
    /// Starts a dataset at `root` (which must not exist) recording `fps` frames a second of a
    /// `width`×`height` camera and the arm's joints.
    pub fn create(root: &Path, desc: &ArmDescription, fps: u32, width: usize, height: usize) -> Result<Self, RecordError> {
        let names: Vec<String> = desc.names().iter().map(|n| format!("{n}.pos")).collect();
        let spec = DatasetSpec {
            fps,
            robot_type: desc.name.to_string(),
            cameras: vec![CameraSpec { key: "observation.images.front".into(), width, height }],
            state_names: Some(names.clone()),
            action_names: Some(names),
            codec: VideoCodec::H264 { crf: 18 },
        };
        let mut writer = DatasetWriter::create(root, spec)?;
        writer.add_meta_file("lapa_edge.json", serde_json::json!({ "recorder": format!("lapa-edge {}", env!("CARGO_PKG_VERSION")), "arm": desc.name }));
        Ok(Self { writer, width, height, images: Vec::new(), state: Vec::new(), action: Vec::new(), frames: 0 })
    }

    /// Frames in the episode being recorded.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Episodes saved so far.
    pub fn episodes(&self) -> usize {
        self.writer.episodes()
    }

    /// Adds one frame of the current episode.
    pub fn push(&mut self, width: usize, height: usize, rgb: &[u8], state: &Joints, action: &Joints) -> Result<(), RecordError> {
        if (width, height) != (self.width, self.height) || rgb.len() != width * height * 3 {
            return Err(RecordError::FrameSize { got_w: width, got_h: height, want_w: self.width, want_h: self.height });
        }
        if !state.iter().chain(action).all(|v| v.is_finite()) {
            return Err(RecordError::Usage("a non-finite joint value; the frame was not recorded".into()));
        }
        self.images.extend_from_slice(rgb);
        self.state.extend_from_slice(state);
        self.action.extend_from_slice(action);
        self.frames += 1;
        Ok(())
    }

    /// Throws the current episode away (re-record).
    pub fn discard(&mut self) {
        self.images.clear();
        self.state.clear();
        self.action.clear();
        self.frames = 0;
    }

    /// Saves the current episode under `task`; returns its frame count (an empty episode is
    /// skipped and returns 0).
    pub fn end_episode(&mut self, task: &str) -> Result<usize, RecordError> {
        let n = self.frames;
        if n == 0 {
            return Ok(0);
        }
        self.writer.add_episode(&EpisodeInput { task, images: &[&self.images], state: Some(&self.state), action: Some(&self.action) })?;
        self.discard();
        Ok(n)
    }

    /// Moves the dataset into place (the current, unsaved episode is dropped: end it first).
    pub fn finish(self) -> Result<WrittenDataset, RecordError> {
        if self.writer.episodes() == 0 {
            return Err(RecordError::Usage("no episode was saved; nothing written".into()));
        }
        Ok(self.writer.finish()?)
    }
}
