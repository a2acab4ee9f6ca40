//! Model artifact folders: `config.json` (the module's config) + `model.bpk` (burnpack weights),
//! both written atomically (temporary file in the same folder, fsync, rename).

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;

use crate::{Laq, LaqConfig, ModelError, Vla, VlaConfig};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.bpk";

/// Saves the LAQ's config and weights into `dir`.
pub fn save_laq(dir: &Path, config: &LaqConfig, model: &Laq) -> Result<(), ModelError> {
    save_module(dir, config, model)
}

/// Saves the policy's config and weights into `dir`.
pub fn save_vla(dir: &Path, config: &VlaConfig, model: &Vla) -> Result<(), ModelError> {
    save_module(dir, config, model)
}

/// Reads a policy's `dir/config.json` and checks it.
pub fn load_vla_config(dir: &Path) -> Result<VlaConfig, ModelError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
    let config: VlaConfig =
        serde_json::from_slice(&bytes).map_err(|e| ModelError::Artifact { path: path.clone(), message: format!("not a policy config: {e}") })?;
    config.validate().map_err(|e| ModelError::Artifact { path, message: e.to_string() })?;
    Ok(config)
}

/// Loads a policy artifact folder onto `device`.
pub fn load_vla(dir: &Path, device: &Device) -> Result<(VlaConfig, Vla), ModelError> {
    let config = load_vla_config(dir)?;
    let model = load_weights(&dir.join(WEIGHTS_FILE), config.init(device)?)?;
    Ok((config, model))
}

fn save_module<C: serde::Serialize, M: Module>(dir: &Path, config: &C, model: &M) -> Result<(), ModelError> {
    let json = serde_json::to_vec_pretty(config).map_err(|e| ModelError::Artifact { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
    lapa_fs::atomic_write(&dir.join(CONFIG_FILE), &json)?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = model.clone().into_record().into_bytes().map_err(|e| ModelError::Artifact { path: path.clone(), message: format!("{e:?}") })?;
    Ok(lapa_fs::atomic_write(&path, &bytes)?)
}

/// Reads `dir/config.json`.
pub fn load_laq_config(dir: &Path) -> Result<LaqConfig, ModelError> {
    let path = dir.join(CONFIG_FILE);
    let bytes = std::fs::read(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| ModelError::Artifact { path: path.clone(), message: format!("not JSON: {e}") })?;
    // Artifacts written before the quantizer became a config field are NSVQ.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("quantizer").or_insert_with(|| serde_json::json!("nsvq"));
        obj.entry("fsq_levels").or_insert_with(|| serde_json::json!([8, 5, 5, 5]));
    }
    let config: LaqConfig =
        serde_json::from_value(value).map_err(|e| ModelError::Artifact { path: path.clone(), message: format!("not a LAQ config: {e}") })?;
    config.validate().map_err(|e| ModelError::Artifact { path, message: e.to_string() })?;
    Ok(config)
}

/// Loads a module's weights from a burnpack file into an initialised module of the same shape.
pub fn load_weights<M: Module>(path: &Path, module: M) -> Result<M, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
    let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| ModelError::Artifact { path: path.to_path_buf(), message: format!("unreadable weights (truncated or not a burnpack file): {e:?}") })?;
    module.try_load_record(record).map_err(|e| ModelError::Artifact { path: path.to_path_buf(), message: format!("weights do not match the config: {e:?}") })
}

/// Loads a LAQ artifact folder onto `device`.
pub fn load_laq(dir: &Path, device: &Device) -> Result<(LaqConfig, Laq), ModelError> {
    let config = load_laq_config(dir)?;
    let model = load_weights(&dir.join(WEIGHTS_FILE), config.init(device)?)?;
    Ok((config, model))
}
