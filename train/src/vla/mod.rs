//! Stages 2 and 3: the latent vision-language-action policy — its training data, training
//! (latent pretraining, true-action pretraining, finetuning) and closed-loop evaluation.

pub mod data;
pub mod eval;
pub mod experiment;
pub mod plot;
pub mod train;
pub mod vpt;

pub use train::{StageKind, VlaSummary, VlaTrainConfig, train};
