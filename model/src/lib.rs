//! lapa's burn Modules, shared by `train`, `compress` and `edge-runtime`.
//!
//! The saved artifact folder (`config.json` + `model.bpk`) is the contract between stages:
//! everything downstream reads sizes from the config, nothing hard-codes a dimension.

pub mod artifact;
pub mod bins;
pub mod blocks;
pub mod bundle;
pub mod fsq;
pub mod laq;
pub mod minilm;
pub mod nsvq;
pub mod openpi;
pub mod policy;
pub mod signing;
pub mod text;
pub mod vla;

pub use artifact::{load_laq, load_vla, save_laq, save_vla};
pub use burn;
pub use laq::{Laq, LaqConfig, LaqStep, Quantizer, QuantizerKind, patchify, patchify_stacked, unpatchify};
pub use policy::{ActionSpec, Policy, PolicyError, PolicyInput};
pub use vla::{HeadConfig, Vla, VlaConfig, VlaInput};

use burn::tensor::Device;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{path}: {message}")]
    Artifact { path: std::path::PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("device {name:?}: {message}")]
    Device { name: String, message: String },
}

impl From<lapa_fs::WriteError> for ModelError {
    fn from(e: lapa_fs::WriteError) -> Self {
        Self::Io { path: e.path, source: e.source }
    }
}

/// The compute devices this build can run on, for `--help` texts.
pub fn available_devices() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("cpu");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    v
}

/// Resolves `cpu` (burn's flex backend), `ndarray`, `wgpu`, `cuda` or `cuda:N` to a burn device. The same
/// model code runs on each; GPU backends exist only in builds with the matching cargo feature.
pub fn device(name: &str) -> Result<Device, ModelError> {
    let missing = |feature: &str| ModelError::Device {
        name: name.to_string(),
        message: format!("this build has no {feature} backend (rebuild with `--features {feature}`); available: {}", available_devices().join(", ")),
    };
    match name {
        "cpu" | "flex" => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[allow(unreachable_code)]
            Err(missing("flex"))
        }
        "ndarray" => {
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            return Ok(Device::ndarray());
            #[allow(unreachable_code)]
            Err(missing("ndarray"))
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
            #[allow(unreachable_code)]
            Err(missing("wgpu"))
        }
        "cuda" => {
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(0));
            #[allow(unreachable_code)]
            Err(missing("cuda"))
        }
        other if other.starts_with("cuda:") => {
            let index: usize = other["cuda:".len()..]
                .parse()
                .map_err(|_| ModelError::Device { name: other.to_string(), message: "expected cuda:N with N the GPU's index".into() })?;
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(index));
            #[allow(unreachable_code)]
            {
                let _ = index;
                Err(missing("cuda"))
            }
        }
        other => Err(ModelError::Device { name: other.to_string(), message: format!("unknown device; available: {}", available_devices().join(", ")) }),
    }
}

/// A comma-separated device list for data-parallel training (`cuda:0,cuda:1`; `cpu,cpu` runs two
/// replicas on the one CPU device), each entry as [`device`] reads it.
pub fn devices(list: &str) -> Result<Vec<Device>, ModelError> {
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(ModelError::Device { name: list.to_string(), message: "an empty entry in the device list".into() });
    }
    if names.len() > 64 {
        return Err(ModelError::Device { name: list.to_string(), message: format!("{} devices; at most 64", names.len()) });
    }
    names.into_iter().map(device).collect()
}
