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
    #[error("the camera: {0}")]
    Camera(String),
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
            cameras: vec![CameraSpec { key: lapa_dataset::FRONT_CAMERA.into(), width, height }],
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

/// A camera that several threads read in turn (the policy's inference thread and the run
/// recorder): each capture takes the device for one frame.
#[derive(Clone)]
pub struct SharedCamera(std::sync::Arc<std::sync::Mutex<Box<dyn crate::camera::Camera>>>);

impl std::fmt::Debug for SharedCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedCamera").field(&crate::camera::Camera::describe(self)).finish()
    }
}

impl SharedCamera {
    pub fn new(camera: Box<dyn crate::camera::Camera>) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(camera)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn crate::camera::Camera>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::camera::Camera for SharedCamera {
    fn describe(&self) -> String {
        self.lock().describe()
    }

    fn capture(&mut self) -> Result<crate::camera::CapturedFrame, crate::camera::CameraError> {
        self.lock().capture()
    }

    fn latest(&mut self) -> Result<crate::camera::CapturedFrame, crate::camera::CameraError> {
        self.lock().latest()
    }
}

/// What the servo loop measured and commanded on its latest tick, for the run recorder.
#[derive(Debug, Clone, Copy)]
struct Latest {
    tick: u64,
    /// The instruction's version the tick ran under (episodes split on it).
    version: u64,
    state: Joints,
    action: Joints,
    /// Stopped, paused or torque off: not the policy driving the arm, not recorded.
    stopped: bool,
}

/// What a run recording wrote.
#[derive(Debug, Clone)]
pub struct RunRecordSummary {
    pub dataset: WrittenDataset,
    pub frames: usize,
    /// Frames not taken while the arm was stopped or paused.
    pub skipped_stopped: usize,
    /// Frames due while the camera or the disk was too slow (the recorder kept its pace).
    pub late: usize,
    /// Why the recording stopped before the run did (a camera or disk error), if it did.
    pub failure: Option<String>,
}

struct RecordState {
    task: String,
    version: u64,
    max_frames: usize,
    frames: usize,
    skipped_stopped: usize,
    late: usize,
}

/// The recorder thread's loop, paced against absolute deadlines, until `stop`.
fn record_frames(
    rec: &mut Recorder,
    camera: &mut SharedCamera,
    controls: &crate::runtime::Controls,
    latest: &std::sync::Mutex<Option<Latest>>,
    stop: &std::sync::atomic::AtomicBool,
    period: std::time::Duration,
    st: &mut RecordState,
) -> Result<(), RecordError> {
    use crate::camera::Camera;
    let mut last_tick = None;
    let mut next = std::time::Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        next += period;
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period {
            // Frame times went by unrecorded: keep the pace from here, and count them.
            st.late += ((now - next).as_secs_f64() / period.as_secs_f64()) as usize;
            next = now;
        }
        let Some(l) = *latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) else { continue };
        if l.version != st.version {
            // The loop runs a new instruction: the episode so far belongs to the old one.
            rec.end_episode(&st.task)?;
            st.version = l.version;
            st.task = controls.instruction().1;
        }
        if last_tick == Some(l.tick) {
            // The loop has not ticked since the last frame (stalled, or ended): nothing new.
            continue;
        }
        if l.stopped {
            st.skipped_stopped += 1;
            continue;
        }
        let f = camera.latest().map_err(|e| RecordError::Camera(e.to_string()))?;
        rec.push(f.width, f.height, &f.rgb, &l.state, &l.action)?;
        last_tick = Some(l.tick);
        st.frames += 1;
        if rec.frames() >= st.max_frames {
            // A long instruction is split, so an episode's frames stay bounded in memory.
            rec.end_episode(&st.task)?;
        }
    }
    Ok(())
}

/// `lapa-edge run --record`: a thread that records, at its own frame rate, the camera and what
/// the loop last measured and commanded, into a LeRobot v3.0 dataset. Each instruction is one
/// episode (a new instruction from the socket or the terminal starts the next); ticks while the
/// e-stop holds or the run is paused are not recorded. The servo loop only publishes its tick's
/// joints ([`RunRecorder::publish`]); capturing, buffering and writing happen off its thread.
#[derive(Debug)]
pub struct RunRecorder {
    latest: std::sync::Arc<std::sync::Mutex<Option<Latest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<RunRecordSummary, RecordError>>>,
}

impl RunRecorder {
    /// Starts recording to `root` (which must not exist) at `fps` frames a second. One frame is
    /// captured first to learn the camera's size.
    pub fn start(
        root: &Path,
        desc: &ArmDescription,
        fps: u32,
        max_episode_frames: usize,
        mut camera: SharedCamera,
        controls: std::sync::Arc<crate::runtime::Controls>,
    ) -> Result<Self, RecordError> {
        use crate::camera::Camera;
        if !(1..=60).contains(&fps) {
            return Err(RecordError::Usage(format!("record fps {fps}: give 1..=60")));
        }
        if max_episode_frames == 0 {
            return Err(RecordError::Usage("the longest episode must hold at least one frame".into()));
        }
        let first = camera.latest().map_err(|e| RecordError::Camera(e.to_string()))?;
        // An episode's frames wait in memory until it is encoded: at most 256 MiB of them.
        let max_episode_frames = max_episode_frames.min(((256usize << 20) / (first.width * first.height * 3).max(1)).max(1));
        let mut rec = Recorder::create(root, desc, fps, first.width, first.height)?;
        let latest = std::sync::Arc::new(std::sync::Mutex::new(None::<Latest>));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l2, s2) = (latest.clone(), stop.clone());
        let period = std::time::Duration::from_secs_f64(1.0 / f64::from(fps));
        let thread = std::thread::Builder::new()
            .name("lapa-record".into())
            .spawn(move || {
                let (version, task) = controls.instruction();
                let mut st = RecordState { task, version, max_frames: max_episode_frames, frames: 0, skipped_stopped: 0, late: 0 };
                let mut failures: Vec<String> =
                    record_frames(&mut rec, &mut camera, &controls, &l2, &s2, period, &mut st).err().map(|e| e.to_string()).into_iter().collect();
                // The last episode; if it cannot be saved, the ones before it still are.
                if let Err(e) = rec.end_episode(&st.task) {
                    failures.push(format!("the last episode: {e}"));
                    rec.discard();
                }
                let failure = (!failures.is_empty()).then(|| failures.join("; "));
                match rec.finish() {
                    Ok(dataset) => Ok(RunRecordSummary { dataset, frames: st.frames, skipped_stopped: st.skipped_stopped, late: st.late, failure }),
                    Err(e) => Err(RecordError::Usage(match failure {
                        Some(f) => format!("{f}; and nothing was saved: {e}"),
                        None => e.to_string(),
                    })),
                }
            })
            .map_err(|e| RecordError::Usage(format!("starting the recorder thread: {e}")))?;
        Ok(Self { latest, stop, thread: Some(thread) })
    }

    /// The loop's tick: its number, the instruction version it ran under, the measured joints,
    /// the command sent, and whether the arm was stopped or paused (safety flags `ESTOP` or
    /// `PAUSED`).
    pub fn publish(&self, tick: u64, version: u64, state: &Joints, action: &Joints, flags: u16) {
        let stopped = flags & (crate::safety::flag::ESTOP | crate::safety::flag::PAUSED) != 0;
        *self.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Latest { tick, version, state: *state, action: *action, stopped });
    }

    /// True once the recorder has stopped on its own (a camera or disk error; [`Self::finish`]
    /// says which, and saves what came before).
    pub fn stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(std::thread::JoinHandle::is_finished)
    }

    /// Ends the last episode and moves the dataset into place.
    pub fn finish(mut self) -> Result<RunRecordSummary, RecordError> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(RecordError::Usage("the recorder thread panicked".into())),
            None => Err(RecordError::Usage("the recording was already finished".into())),
        }
    }
}

impl Drop for RunRecorder {
    fn drop(&mut self) {
        // Dropped without finish (an error elsewhere): stop the thread and let it save what it
        // recorded (the dataset is published whole or not at all).
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
