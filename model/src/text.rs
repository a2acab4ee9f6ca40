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
}

impl TextConfig {
    pub fn hashed() -> Self {
        Self::Hashed { buckets: 1024, max_words: 32 }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        match *self {
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
        }
    }

    /// The ids of `text`, padded with 0 to [`Self::max_ids`], and a weight per id (1/count for
    /// real ids, 0 for padding) so that a weighted sum is the mean embedding. An instruction
    /// with no words or more than `max_words` words is an error naming both.
    pub fn tokenize(&self, text: &str) -> Result<(Vec<i64>, Vec<f32>), ModelError> {
        match *self {
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
