//! The model bundle: what the workstation hands the board (the exporter writes it with [`write`],
//! `lapa-edge` reads it with [`Bundle::open`]). A folder holding `manifest.json` and the parts it names:
//!
//! ```json
//! { "format": 1, "name": "...", "created_by": "lapa 0.1.0",
//!   "model": { ...the model's whole config... },
//!   "action": { "names": [...], "units": [...], "fps": 10, "chunk": 10 },
//!   "camera": { "width": 64, "height": 64, "crop": null },
//!   "text_encoder": { "kind": "minilm-l6-v2", "parts": ["tokenizer.json", "text.safetensors"] },
//!   "weights": ["model.bpk"],
//!   "parts": { "model.bpk": { "bytes": 123, "sha256": "..." }, ... },
//!   "requires": [] }
//! ```
//!
//! The board trusts nothing that is not in the manifest: [`Bundle::open`] checks the format
//! version, every field, that every part named is listed, present, of its size and of its SHA-256,
//! and that no part name leaves the folder. [`write`] builds the folder beside the target and
//! renames it into place, so a bundle is whole or absent. A bundle is signed by a detached ed25519
//! signature over the manifest's exact bytes ([`SIGNATURE`], [`crate::signing`]), written inside
//! the staged folder so it is published with the rest; [`Bundle::open`] checks it first, against
//! the reader's [`Trust`], before it reads a field.
//! `requires` names features a reader must have (an int8 policy's parts), so a later bundle is
//! refused by name by an older reader instead of misread.

use crate::policy::{ActionSpec, CameraSpec};
use crate::signing::{SecretKey, Trust, Verified};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The bundle format this build writes; it reads `MIN_FORMAT..=FORMAT`.
pub const FORMAT: u32 = 1;
/// The oldest bundle format this build reads.
pub const MIN_FORMAT: u32 = 1;
/// A detached ed25519 signature of the manifest's exact bytes ([`crate::signing`]).
pub const SIGNATURE: &str = "manifest.json.sig";
/// Features a reader must have to run a bundle: `int8`, a compressed policy (its `quant.json`
/// says each linear layer's scheme; `lapa_compress::bundle` loads it); `int4`, one with int4
/// weight-only layers among them; `quantized-weights`, one whose weights part stores its quantized
/// layers as they compute (`lapa_compress::bundle::STORED`).
pub const KNOWN_REQUIREMENTS: [&str; 3] = [REQUIRES_INT8, REQUIRES_INT4, REQUIRES_QUANTIZED_WEIGHTS];
/// The requirement of a compressed policy (see [`KNOWN_REQUIREMENTS`]).
pub const REQUIRES_INT8: &str = "int8";
/// The requirement of a policy with int4 weight-only layers.
pub const REQUIRES_INT4: &str = "int4";
/// The requirement of a weights part that stores quantized layers as they compute.
pub const REQUIRES_QUANTIZED_WEIGHTS: &str = "quantized-weights";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Largest manifest read (the model config is small; a huge file is not a manifest).
const MAX_MANIFEST: u64 = 4 << 20;

/// Bundle failures; each names the bundle and the part or field.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{bundle}: manifest: {message}")]
    Manifest { bundle: PathBuf, message: String },
    #[error("{bundle}: bundle format {found}, but this build reads formats {MIN_FORMAT}..={FORMAT}{}", if *found > FORMAT { " (the bundle is newer: update lapa-edge)" } else { " (re-export it with this lapa)" })]
    Version { bundle: PathBuf, found: u32 },
    #[error("{bundle}: part {part:?}: {message}")]
    Part { bundle: PathBuf, part: String, message: String },
    #[error("{bundle}: refused: {message}")]
    Signature { bundle: PathBuf, message: String },
}

/// The text encoder a bundle carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoderSpec {
    /// Which encoder (`minilm-l6-v2`, `tiny`).
    pub kind: String,
    /// Its files among the parts (tokenizer, weights).
    pub parts: Vec<String>,
}

/// Size and hash of one part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartInfo {
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub created_by: String,
    /// The model's whole config (the type that reads it checks it).
    pub model: serde_json::Value,
    pub action: ActionSpec,
    pub camera: CameraSpec,
    #[serde(default)]
    pub text_encoder: Option<TextEncoderSpec>,
    /// The weight files among the parts.
    pub weights: Vec<String>,
    pub parts: BTreeMap<String, PartInfo>,
    /// Features the reader must support (an int8 policy's parts, say); a reader that lacks one
    /// refuses the bundle by name instead of misreading it.
    #[serde(default)]
    pub requires: Vec<String>,
}

/// A bundle that passed every check.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub root: PathBuf,
    pub manifest: Manifest,
    /// What the signature check found.
    pub verified: Verified,
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of a file, read in blocks (a file of gigabytes costs no more memory).
pub fn sha256_file(path: &std::path::Path) -> Result<String, crate::ModelError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|source| crate::ModelError::Io { path: path.to_path_buf(), source })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| crate::ModelError::Io { path: path.to_path_buf(), source })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A part name stays inside the bundle: one plain file name.
fn check_part_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != MANIFEST
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok { Ok(()) } else { Err("a part is one file name of letters, digits, '.', '_' or '-' (no folders, not hidden, not the manifest)".into()) }
}

impl Manifest {
    /// Checks every field but the parts' contents.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("name: empty or longer than 200 bytes".into());
        }
        self.action.validate().map_err(|e| format!("action: {e}"))?;
        self.camera.validate().map_err(|e| format!("camera: {e}"))?;
        if !self.model.is_object() {
            return Err("model: the model's config must be an object".into());
        }
        if self.weights.is_empty() {
            return Err("weights: no weight file named".into());
        }
        for (name, info) in &self.parts {
            check_part_name(name).map_err(|e| format!("parts.{name:?}: {e}"))?;
            if info.sha256.len() != 64 || !info.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("parts.{name:?}.sha256: not 64 lower-case hex digits"));
            }
        }
        let named = self.weights.iter().map(|w| ("weights", w)).chain(self.text_encoder.iter().flat_map(|t| t.parts.iter().map(|p| ("text_encoder.parts", p))));
        for (field, part) in named {
            if !self.parts.contains_key(part) {
                return Err(format!("{field}: {part:?} is not among the parts"));
            }
        }
        if let Some(t) = &self.text_encoder
            && t.kind.trim().is_empty()
        {
            return Err("text_encoder.kind: empty".into());
        }
        Ok(())
    }
}

impl Bundle {
    /// Opens and checks a bundle folder: the signature against `trust` first, then the manifest,
    /// then every part.
    pub fn open(root: &Path, trust: &Trust) -> Result<Self, BundleError> {
        let mpath = root.join(MANIFEST);
        let manifest_err = |message: String| BundleError::Manifest { bundle: root.to_path_buf(), message };
        let meta = std::fs::metadata(&mpath).map_err(|e| BundleError::Io { path: mpath.clone(), message: format!("{e} (is this a bundle folder?)") })?;
        if meta.len() > MAX_MANIFEST {
            return Err(manifest_err(format!("{} bytes; a manifest is at most {MAX_MANIFEST}", meta.len())));
        }
        let bytes = std::fs::read(&mpath).map_err(|e| BundleError::Io { path: mpath.clone(), message: e.to_string() })?;
        let sig_path = root.join(SIGNATURE);
        let signature = match std::fs::symlink_metadata(&sig_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(BundleError::Io { path: sig_path, message: e.to_string() }),
            Ok(m) if !m.is_file() || m.len() > 4096 => {
                return Err(BundleError::Signature { bundle: root.to_path_buf(), message: format!("{SIGNATURE}: not a small regular file") });
            }
            Ok(_) => Some(std::fs::read(&sig_path).map_err(|e| BundleError::Io { path: sig_path.clone(), message: e.to_string() })?),
        };
        let verified =
            trust.check(&bytes, signature.as_deref(), &sig_path).map_err(|message| BundleError::Signature { bundle: root.to_path_buf(), message })?;
        let text = String::from_utf8(bytes).map_err(|e| manifest_err(format!("not UTF-8: {e}")))?;
        // The version first, so a newer bundle says so rather than failing on a field it added.
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| manifest_err(format!("not JSON: {e}")))?;
        let found = raw.get("format").and_then(serde_json::Value::as_u64).ok_or_else(|| manifest_err("format: missing or not a number".into()))?;
        if !(u64::from(MIN_FORMAT)..=u64::from(FORMAT)).contains(&found) {
            return Err(BundleError::Version { bundle: root.to_path_buf(), found: u32::try_from(found).unwrap_or(u32::MAX) });
        }
        // Errors name the field's path (`action.fps: invalid type …`).
        let manifest: Manifest = crate::artifact::json_value(raw).map_err(manifest_err)?;
        manifest.validate().map_err(manifest_err)?;
        if let Some(r) = manifest.requires.iter().find(|r| !KNOWN_REQUIREMENTS.contains(&r.as_str())) {
            return Err(manifest_err(format!("requires: {r:?}, which this build does not support (update lapa-edge)")));
        }
        for (name, info) in &manifest.parts {
            let part_err = |message: String| BundleError::Part { bundle: root.to_path_buf(), part: name.clone(), message };
            let path = root.join(name);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| part_err(format!("missing: {e}")))?;
            if !meta.is_file() {
                return Err(part_err("not a regular file (a link or a folder)".into()));
            }
            let mut file = std::fs::File::open(&path).map_err(|e| part_err(e.to_string()))?;
            // The file opened is the one checked (not a link swapped in between).
            let opened = file.metadata().map_err(|e| part_err(e.to_string()))?;
            {
                use std::os::unix::fs::MetadataExt;
                if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
                    return Err(part_err("changed while it was being checked".into()));
                }
            }
            if opened.len() != info.bytes {
                return Err(part_err(format!("{} bytes, the manifest says {}", opened.len(), info.bytes)));
            }
            // Hashed in blocks: a part of gigabytes costs no more memory than a small one.
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).map_err(|e| part_err(e.to_string()))?;
            let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if got != info.sha256 {
                return Err(part_err(format!("SHA-256 {got} does not match the manifest's {} (the file changed or is damaged)", info.sha256)));
            }
        }
        Ok(Self { root: root.to_path_buf(), manifest, verified })
    }

    /// The path of a part (checked at open).
    pub fn part(&self, name: &str) -> Option<PathBuf> {
        self.manifest.parts.contains_key(name).then(|| self.root.join(name))
    }
}

/// Writes a bundle at `root` (which must not exist): the manifest's `parts` are filled from
/// `parts` (name, bytes) and, with a `signer`, the manifest is signed; the folder is staged beside
/// `root` and renamed into place.
pub fn write(root: &Path, mut manifest: Manifest, parts: &[(&str, &[u8])], signer: Option<&SecretKey>) -> Result<Bundle, BundleError> {
    let io = |path: &Path, e: std::io::Error| BundleError::Io { path: path.to_path_buf(), message: e.to_string() };
    if root.exists() {
        return Err(BundleError::Io { path: root.to_path_buf(), message: "already exists; choose another folder or remove it".into() });
    }
    manifest.format = FORMAT;
    manifest.parts = BTreeMap::new();
    for (name, bytes) in parts {
        check_part_name(name).map_err(|message| BundleError::Part { bundle: root.to_path_buf(), part: name.to_string(), message })?;
        if manifest.parts.insert(name.to_string(), PartInfo { bytes: bytes.len() as u64, sha256: sha256_hex(bytes) }).is_some() {
            return Err(BundleError::Part { bundle: root.to_path_buf(), part: name.to_string(), message: "given twice".into() });
        }
    }
    manifest.validate().map_err(|message| BundleError::Manifest { bundle: root.to_path_buf(), message })?;
    let name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
    let staging = root.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
    let result = (|| {
        // Every part, the manifest and the folder itself reach the disk before the rename
        // publishes them: a crash leaves the old state or the whole bundle.
        let synced = |path: &Path, bytes: &[u8]| lapa_fs::write_synced(path, bytes).map_err(|e| io(path, e.source));
        for (name, bytes) in parts {
            synced(&staging.join(name), bytes)?;
        }
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Manifest { bundle: root.to_path_buf(), message: e.to_string() })?;
        synced(&staging.join(MANIFEST), &json)?;
        if let Some(key) = signer {
            synced(&staging.join(SIGNATURE), &key.sign(&json))?;
        }
        lapa_fs::sync_dir(&staging);
        std::fs::rename(&staging, root).map_err(|e| io(root, e))?;
        lapa_fs::sync_dir(root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")));
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // Read back as the board will: with the signer's key, or as an unsigned bundle.
    let trust = match signer {
        Some(k) => Trust { keys: vec![k.public()], allow_unsigned: false },
        None => Trust { keys: Vec::new(), allow_unsigned: true },
    };
    Bundle::open(root, &trust)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            name: "tiny random".into(),
            created_by: "test".into(),
            model: serde_json::json!({ "preset": "tiny", "dim": 32 }),
            action: ActionSpec { names: vec!["shoulder_pan".into(), "gripper".into()], units: vec!["deg".into(), "%".into()], fps: 10.0, chunk: 4 },
            camera: CameraSpec { width: 64, height: 64, crop: None },
            text_encoder: Some(TextEncoderSpec { kind: "tiny".into(), parts: vec!["vocab.json".into()] }),
            weights: vec!["model.bpk".into()],
            parts: BTreeMap::new(),
            requires: Vec::new(),
        }
    }

    /// Development trust: unsigned bundles open.
    fn dev() -> Trust {
        Trust { keys: Vec::new(), allow_unsigned: true }
    }

    fn make(dir: &Path) -> Bundle {
        write(&dir.join("b"), manifest(), &[("model.bpk", b"weights bytes"), ("vocab.json", b"{\"a\": 1}")], None).expect("writes")
    }

    fn edit(root: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let p = root.join(MANIFEST);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn a_bundle_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let b = make(dir.path());
        let again = Bundle::open(&b.root, &dev()).unwrap();
        // What was given comes back, with the parts listed.
        let mut want = manifest();
        want.parts = again.manifest.parts.clone();
        assert_eq!(again.manifest, want);
        assert_eq!(again.manifest.parts.len(), 2);
        // sha256(b"weights bytes"), computed independently (Python's hashlib).
        assert_eq!(again.manifest.parts["model.bpk"].sha256, "09448063cc786651132795b34e752a3d1e60b603722ca7ed97d4f386bcb47639");
        assert_eq!(again.manifest.parts["model.bpk"].bytes, 13);
        assert_eq!(std::fs::read(again.part("vocab.json").unwrap()).unwrap(), b"{\"a\": 1}");
        assert!(again.part("nope").is_none());
        // Nothing left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b")]);
        assert!(write(&b.root, manifest(), &[("model.bpk", b"x")], None).unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn every_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = make(dir.path()).root;
        let expect = |want: &str| {
            let e = Bundle::open(&root, &dev()).expect_err(want).to_string();
            assert!(e.contains(want), "want {want:?} in {e}");
            assert!(e.contains(&*root.to_string_lossy()), "{e}");
        };
        // A changed part: same size, other bytes.
        std::fs::write(root.join("model.bpk"), b"weights bytez").unwrap();
        expect("\"model.bpk\": SHA-256");
        std::fs::write(root.join("model.bpk"), b"weights").unwrap();
        expect("7 bytes, the manifest says 13");
        std::fs::remove_file(root.join("model.bpk")).unwrap();
        expect("\"model.bpk\": missing");
        std::fs::write(root.join("model.bpk"), b"weights bytes").unwrap();
        Bundle::open(&root, &dev()).unwrap();
        // Versions, fields, names.
        let original = std::fs::read(root.join(MANIFEST)).unwrap();
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|v| v["format"] = 2.into()), "bundle format 2, but this build reads formats 1..=1 (the bundle is newer"),
            (Box::new(|v| v["format"] = 0.into()), "re-export it"),
            (Box::new(|v| v["format"] = "one".into()), "format: missing or not a number"),
            (Box::new(|v| v["extra"] = 1.into()), "unknown field `extra`"),
            (Box::new(|v| v["action"]["chunk"] = 0.into()), "action: "),
            (Box::new(|v| v["camera"]["width"] = 0.into()), "camera: "),
            (Box::new(|v| v["weights"] = serde_json::json!(["other.bpk"])), "weights: \"other.bpk\" is not among the parts"),
            (Box::new(|v| v["text_encoder"]["parts"] = serde_json::json!(["gone.json"])), "text_encoder.parts: \"gone.json\""),
            (Box::new(|v| v["parts"]["../../etc/passwd"] = serde_json::json!({"bytes": 1, "sha256": "0".repeat(64)})), "parts.\"../../etc/passwd\""),
            (Box::new(|v| v["parts"]["model.bpk"]["sha256"] = "XYZ".into()), "not 64 lower-case hex digits"),
            (Box::new(|v| v["requires"] = serde_json::json!(["int4-gemm"])), "requires: \"int4-gemm\""),
            (Box::new(|v| v["model"] = 3.into()), "model: the model's config must be an object"),
            (Box::new(|v| v["action"]["fps"] = "ten".into()), "action.fps: invalid type: string \"ten\""),
            (Box::new(|v| v["parts"]["model.bpk"]["bytes"] = (-1).into()), "parts.model.bpk.bytes: invalid value: integer `-1`"),
        ];
        for (f, want) in cases {
            std::fs::write(root.join(MANIFEST), &original).unwrap();
            edit(&root, f);
            expect(want);
        }
        std::fs::write(root.join(MANIFEST), &original).unwrap();
        // Unsigned: refused without --allow-unsigned.
        let e = Bundle::open(&root, &Trust::default()).unwrap_err().to_string();
        assert!(e.contains("refused: unsigned bundle"), "{e}");
        std::fs::write(root.join(SIGNATURE), b"sig").unwrap();
        expect("not a signature file");
        std::fs::remove_file(root.join(SIGNATURE)).unwrap();
        // A part swapped for a link to a file outside.
        let outside = root.parent().unwrap().join("outside.bin");
        std::fs::write(&outside, b"weights bytes").unwrap();
        std::fs::remove_file(root.join("model.bpk")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("model.bpk")).unwrap();
        expect("not a regular file");
        std::fs::remove_file(root.join("model.bpk")).unwrap();
        std::fs::write(root.join("model.bpk"), b"weights bytes").unwrap();
        Bundle::open(&root, &dev()).unwrap();
        std::fs::write(root.join(MANIFEST), b"{ not json").unwrap();
        expect("not JSON");
        std::fs::remove_file(root.join(MANIFEST)).unwrap();
        expect("is this a bundle folder?");
    }

    #[test]
    fn signed_bundles_open_only_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed([3; 32], "workstation");
        let other = SecretKey::from_seed([4; 32], "someone else");
        let parts: [(&str, &[u8]); 2] = [("model.bpk", b"weights bytes"), ("vocab.json", b"{}")];
        let b = write(&dir.path().join("signed"), manifest(), &parts, Some(&key)).unwrap();
        assert_eq!(b.verified, Verified::Signed { key_id: key.public().id() });
        let ours = Trust { keys: vec![other.public(), key.public()], allow_unsigned: false };
        assert_eq!(Bundle::open(&b.root, &ours).unwrap().verified, Verified::Signed { key_id: key.public().id() });
        let theirs = Trust { keys: vec![other.public()], allow_unsigned: false };
        let e = Bundle::open(&b.root, &theirs).unwrap_err().to_string();
        assert!(e.contains("refused") && e.contains("does not trust") && e.contains("signed"), "{e}");
        // A tampered manifest (a part's hash replaced to match swapped weights) is refused by
        // the signature before anything else is read, even when unsigned bundles are allowed.
        let original = std::fs::read(b.root.join(MANIFEST)).unwrap();
        std::fs::write(b.root.join("model.bpk"), b"evil weights!").unwrap();
        edit(&b.root, |v| v["parts"]["model.bpk"]["sha256"] = sha256_hex(b"evil weights!").into());
        let lax = Trust { keys: vec![key.public()], allow_unsigned: true };
        let e = Bundle::open(&b.root, &lax).unwrap_err().to_string();
        assert!(e.contains("does not verify with key"), "{e}");
        // The manifest back: the signature holds, the swapped part is caught by its hash.
        std::fs::write(b.root.join(MANIFEST), &original).unwrap();
        let e = Bundle::open(&b.root, &ours).unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");
        std::fs::write(b.root.join("model.bpk"), b"weights bytes").unwrap();
        Bundle::open(&b.root, &ours).unwrap();
        // The signature removed: now an unsigned bundle, refused by a board that wants one.
        std::fs::remove_file(b.root.join(SIGNATURE)).unwrap();
        assert!(Bundle::open(&b.root, &ours).unwrap_err().to_string().contains("unsigned bundle"));
        // A link in the signature's place is not followed.
        std::fs::write(dir.path().join("sig"), key.sign(&original)).unwrap();
        std::os::unix::fs::symlink(dir.path().join("sig"), b.root.join(SIGNATURE)).unwrap();
        assert!(Bundle::open(&b.root, &ours).unwrap_err().to_string().contains("not a small regular file"));
    }

    #[test]
    fn bad_part_names_are_refused_when_writing() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/b", ".hidden", "manifest.json", ""] {
            let e = write(&dir.path().join("b"), manifest(), &[("model.bpk", b"w"), ("vocab.json", b"v"), (bad, b"x")], None).unwrap_err().to_string();
            assert!(e.contains("a part is one file name"), "{bad:?}: {e}");
            assert!(!dir.path().join("b").exists());
        }
        let e = write(&dir.path().join("b"), manifest(), &[("model.bpk", b"w")], None).unwrap_err().to_string();
        assert!(e.contains("text_encoder.parts: \"vocab.json\" is not among the parts"), "{e}");
    }
}
