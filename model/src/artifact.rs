//! Model artifact folders: `config.json` (the module's config) + `model.bpk` (burnpack weights),
//! both written atomically (temporary file in the same folder, fsync, rename).

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Device;

use crate::{Laq, LaqConfig, ModelError, Vla, VlaConfig};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.bpk";

/// Deserializes `value`, naming the failing field's path in the error
/// (`head.bins: invalid type: string "x", expected usize`).
pub fn json_value<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(path_message)
}

/// [`json_value`] for JSON text (trailing characters are refused, as `serde_json::from_slice` does).
pub fn json_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(&mut de).map_err(path_message)?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

fn path_message(e: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path == "." { inner.to_string() } else { format!("{path}: {inner}") }
}

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
    let bad = |e: String| ModelError::Artifact { path: path.clone(), message: format!("not a policy config: {e}") };
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    // burn's Config derive applies `#[config(default)]`s in `new`, not when deserializing: fields
    // added after the first artifacts were written get the defaults `new` gives them, so those
    // artifacts (the LAPA table's committed pretrained trunks among them) still load.
    if let Some(obj) = value.as_object_mut() {
        let fresh = serde_json::to_value(VlaConfig::tiny(crate::HeadConfig::Latent { tokens: 1, vocabulary: 2 })).map_err(|e| bad(e.to_string()))?;
        for key in ["ff_mult", "state", "frames"] {
            obj.entry(key).or_insert_with(|| fresh[key].clone());
        }
    }
    let config: VlaConfig = json_value(value).map_err(bad)?;
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
    let config: LaqConfig = json_value(value).map_err(|e| ModelError::Artifact { path: path.clone(), message: format!("not a LAQ config: {e}") })?;
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

/// One float parameter of a module, named by its path of field names (variants and `Vec`
/// indices included), e.g. `trunk.layers.0.attn.to_q.weight`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every float parameter of `module`, in visiting order, with its path.
pub fn named_params<M: Module>(module: &M) -> Result<Vec<NamedTensor>, ModelError> {
    struct Collect {
        path: Vec<String>,
        out: Vec<NamedTensor>,
        error: Option<String>,
    }
    impl burn::module::ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<D>>) {
            let t = param.val();
            let shape = t.dims().to_vec();
            match t.into_data().convert::<f32>().try_into_vec::<f32>() {
                Ok(values) => self.out.push(NamedTensor { name: self.path.join("."), shape, values }),
                Err(e) => self.error = Some(format!("{}: {e:?}", self.path.join("."))),
            }
        }
    }
    let mut c = Collect { path: Vec::new(), out: Vec::new(), error: None };
    module.visit(&mut c);
    match c.error {
        Some(e) => Err(ModelError::Config(format!("reading a parameter: {e}"))),
        None => Ok(c.out),
    }
}

/// `module` with every vector parameter (layer-norm gains and offsets, biases, attention's q/k
/// scales) moved by a deterministic pseudo-random amount in `[-scale, scale)`: fresh weights
/// have them at exactly 1 and 0, where a re-implementation that skips or misplaces one would
/// still agree with ours. For comparisons only.
pub fn perturb_vectors<M: Module>(module: M, scale: f32, seed: u64) -> M {
    struct Perturb {
        scale: f32,
        state: u64,
    }
    impl burn::module::ModuleMapper for Perturb {
        fn map_float<const D: usize>(&mut self, param: burn::module::Param<burn::tensor::Tensor<D>>) -> burn::module::Param<burn::tensor::Tensor<D>> {
            if D != 1 {
                return param;
            }
            let (scale, state) = (self.scale, &mut self.state);
            param.map(|t| {
                let dims = t.dims();
                let noise: Vec<f32> = (0..dims.iter().product::<usize>())
                    .map(|_| {
                        // splitmix64
                        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                        let mut z = *state;
                        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                        z ^= z >> 31;
                        ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
                    })
                    .collect();
                let device = t.device();
                t + burn::tensor::Tensor::<D>::from_data(burn::tensor::TensorData::new(noise, dims), &device)
            })
        }
    }
    module.map(&mut Perturb { scale, state: seed })
}

/// Writes `tensors` as a safetensors file (little-endian F32, names as given), atomically: the
/// format PyTorch, NumPy and most runtimes read, for comparing our weights outside burn.
pub fn write_safetensors(path: &Path, tensors: &[NamedTensor]) -> Result<(), ModelError> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.values.len() {
            return Err(ModelError::Config(format!("{}: shape {:?} does not hold {} values", t.name, t.shape, t.values.len())));
        }
        let end = offset + 4 * t.values.len();
        header.insert(t.name.clone(), serde_json::json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut head = serde_json::to_vec(&header).map_err(|e| ModelError::Config(e.to_string()))?;
    // The data starts 8-aligned (the format allows padding the header with spaces).
    while (head.len() + 8) % 8 != 0 {
        head.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + head.len() + offset);
    bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&head);
    for t in tensors {
        for v in &t.values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(lapa_fs::atomic_write(path, &bytes)?)
}

/// Loads a LAQ artifact folder onto `device`.
pub fn load_laq(dir: &Path, device: &Device) -> Result<(LaqConfig, Laq), ModelError> {
    let config = load_laq_config(dir)?;
    let model = load_weights(&dir.join(WEIGHTS_FILE), config.init(device)?)?;
    Ok((config, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_cover_the_module_and_round_trip_through_safetensors() -> Result<(), ModelError> {
        let device = crate::device("cpu")?;
        let cfg = VlaConfig::tiny(crate::HeadConfig::Latent { tokens: 4, vocabulary: 10 });
        let model = cfg.init(&device)?;
        let params = named_params(&model)?;
        let names: std::collections::BTreeSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), params.len(), "every path is unique");
        assert_eq!(params.iter().map(|p| p.values.len()).sum::<usize>(), model.num_params());
        let q = params.iter().find(|p| p.name == "trunk.layers.0.attn.to_q.weight").ok_or(ModelError::Config("no to_q".into()))?;
        assert_eq!(q.shape, vec![cfg.dim, cfg.heads * cfg.dim_head], "burn's Linear keeps [in, out]");
        let tmp = tempfile::tempdir().map_err(|source| ModelError::Io { path: "tmp".into(), source })?;
        let path = tmp.path().join("w.safetensors");
        write_safetensors(&path, &params)?;
        let st = crate::minilm::SafeTensors::read(&path)?;
        let back = st.tensor(&path, &q.name, [cfg.dim, cfg.heads * cfg.dim_head], &device)?;
        assert_eq!(back.into_data().try_into_vec::<f32>().map_err(|e| ModelError::Config(format!("{e:?}")))?, q.values);
        // Perturbing moves the vectors (gains off 1, offsets off 0) and leaves the matrices.
        let moved = named_params(&perturb_vectors(model.clone(), 0.2, 1))?;
        for (a, b) in params.iter().zip(&moved) {
            let changed = a.values != b.values;
            assert_eq!(changed, a.shape.len() == 1, "{}", a.name);
            assert!(a.values.iter().zip(&b.values).all(|(x, y)| (x - y).abs() <= 0.2), "{}", a.name);
        }
        // Config errors name the field.
        let mut v = serde_json::to_value(&cfg).map_err(|e| ModelError::Config(e.to_string()))?;
        v["heads"] = "four".into();
        assert!(json_value::<VlaConfig>(v).is_err_and(|e| e.starts_with("heads: invalid type: string \"four\"")));
        assert!(json_slice::<VlaConfig>(b"{} x").is_err());
        let bad = NamedTensor { name: "x".into(), shape: vec![2, 2], values: vec![0.0; 3] };
        assert!(write_safetensors(&path, &[bad]).is_err_and(|e| e.to_string().contains("does not hold 3")));
        Ok(())
    }

    #[test]
    fn configs_written_before_later_fields_still_load() {
        // A committed pretrained trunk of the LAPA table, written before `frames` existed.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/lapa-table/runs/pretrain-lapa-arm/model");
        let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).expect("committed config");
        assert!(!text.contains("\"frames\""), "the fixture no longer lacks the field");
        let cfg = load_vla_config(&dir).expect("an old config loads");
        assert_eq!((cfg.frames, cfg.dim), (1, 192));
        // Other damage is still named, field by field.
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join(CONFIG_FILE), text.replace("\"dim\": 192", "\"dim\": \"wide\"")).expect("write");
        assert!(load_vla_config(tmp.path()).is_err_and(|e| e.to_string().contains("dim: invalid type")));
        std::fs::write(tmp.path().join(CONFIG_FILE), format!("{text} x")).expect("write");
        assert!(load_vla_config(tmp.path()).is_err_and(|e| e.to_string().contains("not a policy config")));
    }
}
