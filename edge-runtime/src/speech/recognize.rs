//! From an utterance to a command: the [`Recognizer`] trait (PocketSphinx now; a Whisper backend
//! would implement it too) and the [`Interpreter`] that decides what was meant — "stop" first, a
//! sentence of the grammar when it fits the audio, else the nearest known instruction by the
//! policy's own sentence encoder, else nothing (the runtime asks again instead of guessing).

use super::SpeechError;
use super::grammar::{Vocabulary, is_stop, normalize};

/// The grammar's best sentence for an utterance and how well it fits.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    pub text: String,
    /// How well the grammar explains the audio against a free alternative, per frame (for
    /// PocketSphinx: the grammar's path score minus the free word loop's, in its scaled
    /// log-base-1.0001 units; above 0: the grammar sentence explains the audio better than any
    /// word sequence does).
    pub fit: f32,
    /// The free-form transcript the recogniser made on the way to the fit, if it made one
    /// (`Some("")`: it heard no words); `None` leaves it to [`Recognizer::free`].
    pub free: Option<String>,
}

/// A speech recogniser over whole utterances (16 kHz mono).
pub trait Recognizer: Send {
    fn describe(&self) -> String;
    /// The best sentence of the vocabulary's grammar; `None` if no sentence fits at all or the
    /// recogniser has no grammar search.
    fn grammar(&mut self, audio: &[i16]) -> Result<Option<Hypothesis>, SpeechError>;
    /// The early stop check's decode of an utterance still open (is it a stop word?): as
    /// [`Recognizer::grammar`] unless the recogniser has a cheaper search for it, since its
    /// decoding time is the stop's latency.
    fn stop_check(&mut self, audio: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
        self.grammar(audio)
    }
    /// Free-form text; `None` when nothing was recognised.
    fn free(&mut self, audio: &[i16]) -> Result<Option<String>, SpeechError>;
}

/// A sentence encoder: the policy's own (all-MiniLM-L6-v2), unit-length embeddings.
pub trait Embedder: Send {
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

impl Embedder for lapa_model::text::SentenceEncoder {
    fn embed(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        lapa_model::text::SentenceEncoder::embed(self, texts).map_err(|e| e.to_string())
    }
}

/// How the interpreter decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// A grammar sentence is taken when its fit is at least this.
    pub fit: f32,
    /// "Stop" is taken at a lower fit: stopping by mistake is cheap, moving by mistake is not.
    pub stop_fit: f32,
    /// "Stop" heard by the early check (the word followed by 200 ms of quiet, before the
    /// detector's hangover closes the utterance) is taken at this fit. The short tail gives the
    /// word less quiet to fit against, so its fit runs lower than at the close; at 10 dB SNR the
    /// early checks that put a stop word on speech that was not a stop fit at −15.7 and lower
    /// (`results/speech/early-check-trace.txt`), while stop words fit at −9.2 and higher.
    pub early_stop_fit: f32,
    /// The early check's bar when the open utterance holds less than
    /// [`super::EARLY_STOP_MIN_SPEECH_MS`] of speech. At 10 dB, five of the six quick stops (150–190
    /// ms over the floor) fit at −4.2 and higher (the sixth at −9.4: refused, at the close too), while
    /// the first words of sentences and short pieces of other speech checked at such pauses fit
    /// at −5.7 and lower (`results/speech/early-check-trace.txt`, run 5's trace); the bar sits
    /// mid-gap.
    pub early_short_stop_fit: f32,
    /// The nearest known instruction to free-form text is taken at this cosine similarity or more.
    pub cosine: f32,
}

impl Default for Thresholds {
    /// Calibrated on espeak-ng voices (`results/speech/`): in-grammar sentences decoded right
    /// fit at +4 to +20, out-of-grammar sentences forced onto an instruction at −10 to −20; the
    /// early stop check's bar sits mid-gap between its stop words and its false stops.
    fn default() -> Self {
        Self { fit: 0.0, stop_fit: -4.0, early_stop_fit: -12.0, early_short_stop_fit: -5.0, cosine: 0.75 }
    }
}

/// The longest utterance (as the detector cuts it: pre-roll, speech, hangover) taken as a stop:
/// "stop" is one short word, and longer out-of-vocabulary sentences sometimes decode as one.
pub const STOP_MAX_MS: u64 = 1400;

fn short_enough_for_stop(audio: &[i16]) -> bool {
    audio.len() as u64 * 1000 <= STOP_MAX_MS * u64::from(super::audio::RATE)
}

/// What an utterance meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Understood {
    Stop,
    Instruction {
        text: String,
        how: How,
    },
    /// Nothing to act on; `heard` is what the recogniser made of it, `why` the reason.
    Unclear {
        heard: String,
        why: String,
    },
}

/// Where an instruction came from.
#[derive(Debug, Clone, PartialEq)]
pub enum How {
    /// A sentence of the grammar that fits the audio.
    Grammar { fit: f32 },
    /// Free-form text mapped to the nearest known instruction.
    Nearest { heard: String, cosine: f32 },
}

/// Decides what an utterance meant.
pub struct Interpreter {
    pub vocabulary: Vocabulary,
    pub thresholds: Thresholds,
    embedder: Option<Box<dyn Embedder>>,
}

impl std::fmt::Debug for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpreter").field("thresholds", &self.thresholds).field("nearest", &self.embedder.is_some()).finish_non_exhaustive()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

impl Interpreter {
    /// Without an embedder there is no free-form fallback: only grammar sentences are taken.
    pub fn new(vocabulary: Vocabulary, thresholds: Thresholds, embedder: Option<Box<dyn Embedder>>) -> Self {
        Self { vocabulary, thresholds, embedder }
    }

    /// The known instruction nearest to free-form `heard`: the templates filled with the slot
    /// values heard (the words name the objects; the encoder judges which template the sentence
    /// means), the best by cosine similarity, if it reaches the threshold.
    pub fn nearest(&mut self, heard: &str) -> Result<Understood, SpeechError> {
        let unclear = |why: String| Ok(Understood::Unclear { heard: heard.to_string(), why });
        let norm = normalize(heard);
        if norm.is_empty() {
            return unclear("nothing recognised".into());
        }
        let Some(embedder) = self.embedder.as_mut() else {
            return unclear("not a sentence of the grammar (no sentence encoder for free-form speech)".into());
        };
        let slots = self.vocabulary.slot_values_in(&norm);
        let candidates = self.vocabulary.fill(&slots);
        if candidates.is_empty() {
            return unclear(if slots.is_empty() { "it names no object or place I know".into() } else { "no instruction takes what it names".into() });
        }
        let mut texts: Vec<&str> = vec![&norm];
        texts.extend(candidates.iter().map(String::as_str));
        let e = embedder.embed(&texts).map_err(SpeechError::Recognizer)?;
        let (best, sim) =
            e[1..].iter().zip(&candidates).map(|(v, c)| (c, cosine(&e[0], v))).fold((&candidates[0], f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
        if sim >= self.thresholds.cosine {
            Ok(Understood::Instruction { text: best.clone(), how: How::Nearest { heard: norm, cosine: sim } })
        } else {
            unclear(format!("nearest known instruction {best:?} is only {sim:.2} similar (threshold {:.2})", self.thresholds.cosine))
        }
    }

    /// What `audio` meant, asking `rec` for the grammar sentence first and for free-form text
    /// only when that does not fit.
    pub fn understand(&mut self, rec: &mut dyn Recognizer, audio: &[i16]) -> Result<Understood, SpeechError> {
        let g = rec.grammar(audio)?;
        if let Some(h) = &g {
            if is_stop(&h.text) && h.fit >= self.thresholds.stop_fit && short_enough_for_stop(audio) {
                return Ok(Understood::Stop);
            }
            if !is_stop(&h.text) && h.fit >= self.thresholds.fit {
                return Ok(Understood::Instruction { text: normalize(&h.text), how: How::Grammar { fit: h.fit } });
            }
        }
        let rejected =
            g.as_ref().map(|h| format!("; the grammar's best, {:?}, fits at {:.1} (threshold {:.1})", h.text, h.fit, self.thresholds.fit)).unwrap_or_default();
        let free = match g.as_ref().and_then(|h| h.free.clone()) {
            Some(text) => (!text.is_empty()).then_some(text),
            None => rec.free(audio)?,
        };
        match free {
            Some(text) if is_stop(&text) && short_enough_for_stop(audio) => Ok(Understood::Stop),
            Some(text) => Ok(match self.nearest(&text)? {
                Understood::Unclear { heard, why } => Understood::Unclear { heard, why: format!("{why}{rejected}") },
                u => u,
            }),
            None => {
                Ok(Understood::Unclear { heard: g.map(|h| format!("{} (fit {:.2})", h.text, h.fit)).unwrap_or_default(), why: "nothing recognised".into() })
            }
        }
    }
}
