//! ed25519 keys and bundle signatures: the workstation signs a bundle's manifest when it exports it
//! (`lapa keys generate`, `lapa export --sign-key`); the board holds the public key and refuses a
//! bundle that is unsigned, tampered with or signed by another key ([`Trust`], read by
//! [`crate::bundle::Bundle::open`]).
//!
//! The signature covers the manifest's exact bytes, and the manifest holds every part's size and
//! SHA-256, so one signature covers the whole bundle. Key files are one line of text, so they can be
//! read, copied over SSH and compared by eye:
//!
//! ```text
//! lapa-ed25519-public-v1 <64 hex digits> <comment>
//! lapa-ed25519-secret-v1 <64 hex digits: the seed> <comment>
//! ```
//!
//! The signature file (`manifest.json.sig`) is JSON: `{"algorithm": "ed25519", "key_id": "…",
//! "signature": "<128 hex digits>"}`. A key's id is the first 8 bytes of the SHA-256 of its 32
//! public bytes, in hex; it names the key in errors and lets a board with several keys pick one.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const PUBLIC_TAG: &str = "lapa-ed25519-public-v1";
const SECRET_TAG: &str = "lapa-ed25519-secret-v1";
/// Largest key or signature file read (they are one short line).
const MAX_FILE: u64 = 4096;

/// Key and signature failures; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn file_err(path: &Path, message: impl Into<String>) -> SigningError {
    SigningError::File { path: path.to_path_buf(), message: message.into() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case or upper-case hex of exactly `N` bytes.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn read_small(path: &Path) -> Result<String, SigningError> {
    let meta = std::fs::metadata(path).map_err(|source| SigningError::Io { path: path.to_path_buf(), source })?;
    if meta.len() > MAX_FILE {
        return Err(file_err(path, format!("{} bytes; a key or signature file is at most {MAX_FILE}", meta.len())));
    }
    std::fs::read_to_string(path).map_err(|source| SigningError::Io { path: path.to_path_buf(), source })
}

/// Splits `<tag> <hex> <comment…>`, checking the tag.
fn parse_line<'a>(text: &'a str, tag: &str, path: &Path) -> Result<(&'a str, &'a str), SigningError> {
    let line = text.trim_end_matches(['\n', '\r']);
    if line.contains('\n') {
        return Err(file_err(path, "more than one line; a key file is one line"));
    }
    let mut it = line.splitn(3, ' ');
    let found = it.next().unwrap_or_default();
    if found != tag {
        let hint = match found {
            PUBLIC_TAG => " (this is a public key; signing needs the secret key)",
            SECRET_TAG => " (this is a secret key; give the board the .pub file, never the secret)",
            _ => "",
        };
        return Err(file_err(path, format!("starts with {found:?}, not {tag:?}{hint}")));
    }
    let key = it.next().ok_or_else(|| file_err(path, "no key after the tag"))?;
    Ok((key, it.next().unwrap_or_default()))
}

/// A public key the board trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    pub comment: String,
}

impl PublicKey {
    /// The key's id: the first 8 bytes of the SHA-256 of its bytes, in hex.
    pub fn id(&self) -> String {
        key_id(&self.key)
    }

    /// The one-line text of a `.pub` file.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {} {}\n", hex(self.key.as_bytes()), self.comment)
    }

    /// Parses a `.pub` file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SigningError> {
        let (k, comment) = parse_line(text, PUBLIC_TAG, path)?;
        let bytes = unhex::<32>(k).ok_or_else(|| file_err(path, "the key is not 64 hex digits"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| file_err(path, "not an ed25519 public key (not a curve point)"))?;
        if key.is_weak() {
            return Err(file_err(path, "a weak (small-order) ed25519 key; generate a real one with `lapa keys generate`"));
        }
        Ok(Self { key, comment: comment.to_string() })
    }

    /// Reads a `.pub` file.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        Self::parse(&read_small(path)?, path)
    }

    /// Checks `sig` over `message` (strict: no malleable or small-order forms).
    fn verifies(&self, message: &[u8], sig: &ed25519_dalek::Signature) -> bool {
        self.key.verify_strict(message, sig).is_ok()
    }
}

fn key_id(key: &VerifyingKey) -> String {
    crate::bundle::sha256_hex(key.as_bytes())[..16].to_string()
}

/// A signing key (kept on the workstation, never shipped).
pub struct SecretKey {
    key: SigningKey,
    pub comment: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey {{ id: {}, comment: {:?} }}", key_id(&self.key.verifying_key()), self.comment)
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(comment: &str) -> Result<Self, SigningError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| file_err(Path::new("<random source>"), e.to_string()))?;
        Ok(Self::from_seed(seed, comment))
    }

    /// The key of a 32-byte seed (tests use fixed seeds).
    pub fn from_seed(seed: [u8; 32], comment: &str) -> Self {
        Self { key: SigningKey::from_bytes(&seed), comment: comment.replace(['\n', '\r'], " ") }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { key: self.key.verifying_key(), comment: self.comment.clone() }
    }

    /// Reads a secret key file.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        let text = read_small(path)?;
        let (k, comment) = parse_line(&text, SECRET_TAG, path)?;
        let seed = unhex::<32>(k).ok_or_else(|| file_err(path, "the key is not 64 hex digits"))?;
        Ok(Self::from_seed(seed, comment))
    }

    /// Writes the secret key at `path` (readable by its owner only; an existing file is never
    /// overwritten) and the public key beside it at `path` + `.pub`. Returns the public key's path.
    pub fn write_pair(&self, path: &Path) -> Result<PathBuf, SigningError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        fn io(p: &Path) -> impl Fn(std::io::Error) -> SigningError + '_ {
            move |source| SigningError::Io { path: p.to_path_buf(), source }
        }
        let mut pub_name = path.as_os_str().to_owned();
        pub_name.push(".pub");
        let pub_path = PathBuf::from(pub_name);
        for p in [path, pub_path.as_path()] {
            if p.exists() {
                return Err(file_err(p, "already exists; a key is never overwritten (remove it yourself, or choose another path)"));
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let text = format!("{SECRET_TAG} {} {}\n", hex(self.key.as_bytes()), self.comment);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io(path))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io(path))?;
        lapa_fs::atomic_write(&pub_path, self.public().to_text().as_bytes()).map_err(|e| SigningError::Io { path: e.path, source: e.source })?;
        Ok(pub_path)
    }

    /// The signature file's bytes for `message` (a manifest's exact bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let file = SignatureFile { algorithm: "ed25519".into(), key_id: key_id(&self.key.verifying_key()), signature: hex(&self.key.sign(message).to_bytes()) };
        let mut v = serde_json::to_vec_pretty(&file).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    algorithm: String,
    key_id: String,
    signature: String,
}

/// Which bundles a reader accepts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Public keys whose signatures are accepted.
    pub keys: Vec<PublicKey>,
    /// Development only: run unsigned bundles, and signed ones whose key is not installed.
    pub allow_unsigned: bool,
}

/// What the signature check found for an accepted bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Signed by the installed key with this id.
    Signed { key_id: String },
    /// Not checked (`allow_unsigned`): unsigned, or signed by a key that is not installed.
    Unchecked { reason: String },
}

impl Trust {
    /// Trusts the keys in these `.pub` files.
    pub fn from_files(paths: &[PathBuf], allow_unsigned: bool) -> Result<Self, SigningError> {
        let keys = paths.iter().map(|p| PublicKey::read(p)).collect::<Result<_, _>>()?;
        Ok(Self { keys, allow_unsigned })
    }

    /// Decides on a bundle's manifest bytes and its signature file's bytes (`None`: no file).
    /// `sig_path` names the signature file in errors. The error says what to do.
    pub fn check(&self, manifest: &[u8], signature: Option<&[u8]>, sig_path: &Path) -> Result<Verified, String> {
        let installed = || {
            if self.keys.is_empty() {
                "no public key is installed".to_string()
            } else {
                format!("installed keys: {}", self.keys.iter().map(PublicKey::id).collect::<Vec<_>>().join(", "))
            }
        };
        let Some(bytes) = signature else {
            return if self.allow_unsigned {
                Ok(Verified::Unchecked { reason: "the bundle is unsigned".into() })
            } else {
                Err(format!(
                    "unsigned bundle ({} is missing); export it with `lapa export --sign-key KEY`, or pass --allow-unsigned (development only)",
                    sig_path.display()
                ))
            };
        };
        let file: SignatureFile = serde_json::from_slice(bytes).map_err(|e| format!("{}: not a signature file: {e}", sig_path.display()))?;
        if file.algorithm != "ed25519" {
            return Err(format!("{}: algorithm {:?}; this build verifies \"ed25519\" only", sig_path.display(), file.algorithm));
        }
        let sig_bytes = unhex::<64>(&file.signature).ok_or_else(|| format!("{}: signature: not 128 hex digits", sig_path.display()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig_bytes);
        // The key id only picks the key; the signature decides. A bundle whose id was edited to
        // an installed key's still has to verify with that key.
        match self.keys.iter().find(|k| k.id() == file.key_id) {
            Some(k) if k.verifies(manifest, &sig) => Ok(Verified::Signed { key_id: k.id() }),
            Some(k) => Err(format!(
                "{}: the signature does not verify with key {} ({}): the manifest was changed after signing, or the signature is damaged",
                sig_path.display(),
                k.id(),
                k.comment
            )),
            None if self.allow_unsigned => Ok(Verified::Unchecked { reason: format!("signed by key {}, which is not installed", file.key_id) }),
            None => Err(format!(
                "{}: signed by key {}, which this board does not trust ({}); install its .pub file (--public-key) or re-sign the bundle",
                sig_path.display(),
                file.key_id,
                installed()
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 section 7.1, TEST 1: the empty message.
        let seed = unhex::<32>("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
        let k = SecretKey::from_seed(seed, "rfc");
        assert_eq!(hex(k.public().key.as_bytes()), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let file: SignatureFile = serde_json::from_slice(&k.sign(b"")).unwrap();
        assert_eq!(
            file.signature,
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn key_files_round_trip_and_refuse_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::from_seed([7; 32], "bench key");
        let path = dir.path().join("keys/lapa");
        let pub_path = k.write_pair(&path).unwrap();
        assert_eq!(pub_path, dir.path().join("keys/lapa.pub"));
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let back = SecretKey::read(&path).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(back.comment, "bench key");
        let p = PublicKey::read(&pub_path).unwrap();
        assert_eq!(p, k.public());
        assert_eq!(p.id().len(), 16);
        // Never overwritten.
        let e = SecretKey::from_seed([8; 32], "other").write_pair(&path).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(SecretKey::read(&path).unwrap().public(), k.public());
        // The wrong kind of file, in either direction.
        let e = PublicKey::read(&path).unwrap_err().to_string();
        assert!(e.contains("this is a secret key"), "{e}");
        let e = SecretKey::read(&pub_path).unwrap_err().to_string();
        assert!(e.contains("this is a public key"), "{e}");
        for (text, want) in [
            ("", "starts with \"\""),
            ("lapa-ed25519-public-v1\n", "no key after the tag"),
            ("lapa-ed25519-public-v1 abcd x\n", "not 64 hex digits"),
            (&format!("lapa-ed25519-public-v1 {} x\n", "zz".repeat(32)), "not 64 hex digits"),
            // The identity point: small order.
            (&format!("lapa-ed25519-public-v1 01{} x\n", "00".repeat(31)), "weak"),
            ("lapa-ed25519-public-v1 00 x\nsecond line\n", "more than one line"),
        ] {
            let e = PublicKey::parse(text, Path::new("k.pub")).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("k.pub"), "{text:?}: {e}");
        }
        std::fs::write(dir.path().join("big.pub"), vec![b'a'; 5000]).unwrap();
        assert!(PublicKey::read(&dir.path().join("big.pub")).unwrap_err().to_string().contains("at most 4096"));
    }

    #[test]
    fn trust_accepts_only_what_it_should() {
        let ours = SecretKey::from_seed([1; 32], "ours");
        let theirs = SecretKey::from_seed([2; 32], "theirs");
        let msg = b"{\"format\": 1}";
        let sig = ours.sign(msg);
        let at = Path::new("b/manifest.json.sig");
        let strict = Trust { keys: vec![ours.public()], allow_unsigned: false };
        assert_eq!(strict.check(msg, Some(&sig), at).unwrap(), Verified::Signed { key_id: ours.public().id() });
        // One changed byte of the manifest.
        let e = strict.check(b"{\"format\": 2}", Some(&sig), at).unwrap_err();
        assert!(e.contains("does not verify with key") && e.contains("b/manifest.json.sig"), "{e}");
        // Another key's signature, with its own id and with ours written in.
        let e = strict.check(msg, Some(&theirs.sign(msg)), at).unwrap_err();
        assert!(e.contains("which this board does not trust") && e.contains(&ours.public().id()), "{e}");
        let mut forged: serde_json::Value = serde_json::from_slice(&theirs.sign(msg)).unwrap();
        forged["key_id"] = ours.public().id().into();
        let e = strict.check(msg, Some(&serde_json::to_vec(&forged).unwrap()), at).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // A flipped signature bit; garbage; another algorithm; unknown fields.
        let mut flipped: serde_json::Value = serde_json::from_slice(&sig).unwrap();
        let s = flipped["signature"].as_str().unwrap().to_string();
        flipped["signature"] = format!("{}{}", if s.starts_with('0') { "1" } else { "0" }, &s[1..]).into();
        assert!(strict.check(msg, Some(&serde_json::to_vec(&flipped).unwrap()), at).unwrap_err().contains("does not verify"));
        assert!(strict.check(msg, Some(b"sig"), at).unwrap_err().contains("not a signature file"));
        let mut rsa: serde_json::Value = serde_json::from_slice(&sig).unwrap();
        rsa["algorithm"] = "rsa".into();
        assert!(strict.check(msg, Some(&serde_json::to_vec(&rsa).unwrap()), at).unwrap_err().contains("verifies \"ed25519\" only"));
        let mut short: serde_json::Value = serde_json::from_slice(&sig).unwrap();
        short["signature"] = "abcd".into();
        assert!(strict.check(msg, Some(&serde_json::to_vec(&short).unwrap()), at).unwrap_err().contains("not 128 hex digits"));
        // Unsigned: refused, unless allowed.
        assert!(strict.check(msg, None, at).unwrap_err().contains("unsigned bundle"));
        let dev = Trust { keys: vec![], allow_unsigned: true };
        assert!(matches!(dev.check(msg, None, at).unwrap(), Verified::Unchecked { .. }));
        assert!(matches!(dev.check(msg, Some(&theirs.sign(msg)), at).unwrap(), Verified::Unchecked { .. }));
        // Allowing unsigned bundles never lets a bad signature of an installed key through.
        let lax = Trust { keys: vec![ours.public()], allow_unsigned: true };
        assert!(lax.check(b"changed", Some(&sig), at).unwrap_err().contains("does not verify"));
        let none = Trust::default();
        assert!(none.check(msg, Some(&sig), at).unwrap_err().contains("no public key is installed"));
    }
}
