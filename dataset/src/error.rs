use std::path::PathBuf;

/// Everything that can go wrong reading or writing a dataset. Every variant names the file and,
/// where there is one, the field, so a user can find the problem.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: missing (is this a LeRobot dataset folder?)")]
    MissingFile { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: codebase_version is {found:?}; lapa reads \"v3.0\" and \"v2.1\"")]
    UnsupportedVersion { path: PathBuf, found: String },
    #[error("{path}: missing column `{column}`")]
    MissingColumn { path: PathBuf, column: String },
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType { path: PathBuf, column: String, found: String, expected: String },
    #[error("{path}: field `{field}`: {message}")]
    InvalidField { path: PathBuf, field: String, message: String },
    #[error("{path}: parquet: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}: unreadable video: {message}")]
    Video { path: PathBuf, message: String },
    #[error("{path}: episode {episode} needs {expected} frames from {from_timestamp:.3}s but the video has {found}")]
    FrameCountMismatch { path: PathBuf, episode: usize, expected: usize, found: usize, from_timestamp: f64 },
    #[error("episode {episode} does not exist (the dataset has {total})")]
    NoSuchEpisode { episode: usize, total: usize },
    #[error("ffmpeg/ffprobe not found on PATH ({0}); install it (Debian/Ubuntu: apt-get install ffmpeg)")]
    FfmpegMissing(String),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, DatasetError>;

impl From<lapa_fs::WriteError> for DatasetError {
    fn from(e: lapa_fs::WriteError) -> Self {
        io_err(e.path)(e.source)
    }
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DatasetError {
    let path = path.into();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound { DatasetError::MissingFile { path } } else { DatasetError::Io { path, source } }
    }
}
