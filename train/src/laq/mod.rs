//! Stage 1: the latent action quantizer: frame cache, loader, training, labelling, report.

pub mod ablate;
pub mod cache;
pub mod label;
pub mod loader;
pub mod plot;
pub mod probe;
pub mod report;
pub mod train;

pub use cache::{FrameCache, Source, SourceKind, parse_seconds};
pub use loader::Augment;
pub use train::{ActionSupervision, DeadCode, LaqTrainConfig, TrainSummary, train};

use std::path::PathBuf;

/// Default frame-cache folder: `$LAPA_CACHE`, else `$XDG_CACHE_HOME/lapa/frames`, else
/// `~/.cache/lapa/frames`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LAPA_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("lapa/frames")
}
