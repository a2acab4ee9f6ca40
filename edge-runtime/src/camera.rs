//! Cameras: where the policy's frames come from.
//!
//! The simulator's camera ([`crate::sim::SceneCamera`]) implements [`Camera`] today; the V4L2
//! camera and the video/image-folder source join it with the board profiles.

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
}

/// A frame source the inference thread owns.
pub trait Camera: Send {
    /// What it is, for logs (`"sim 64×64"`, `"/dev/video0 MJPEG 640×480@30"`).
    fn describe(&self) -> String;
    fn capture(&mut self) -> Result<CapturedFrame, CameraError>;
}
