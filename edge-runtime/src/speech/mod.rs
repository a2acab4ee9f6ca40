//! Spoken instructions, offline on the board (the PocketSphinx recogniser: feature `speech`).
//!
//! A [`audio::Microphone`] (ALSA on the board, a WAV file in tests and `--speech-file`) feeds the
//! [`vad::Vad`], which cuts the stream into utterances; a [`recognize::Recognizer`]
//! ([`sphinx::PocketSphinx`]) decodes each against the grammar of the instruction
//! [`grammar::Vocabulary`]; the [`recognize::Interpreter`] decides what it meant: "stop" (first,
//! and at a lower bar), a grammar sentence that fits, the nearest known instruction to
//! free-form speech by the policy's sentence encoder, or nothing ("say it again"). [`Speech`] is
//! an [`InstructionSource`]: what it hears goes through the same [`crate::instruction::drive`] as
//! typed and socket commands.
//!
//! "Stop" does not wait for the end of the utterance: once an open utterance of a stop's length has
//! been quiet for [`EARLY_STOP_QUIET_MS`], it is decoded at once and a stop acted on.

pub mod audio;
pub mod grammar;
pub mod recognize;
#[cfg(feature = "speech")]
pub mod sphinx;
pub mod vad;

use crate::instruction::{Command, Heard, InstructionSource};
use recognize::{How, Interpreter, Recognizer, Understood};
use std::collections::VecDeque;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("{path}: {message}")]
    Audio { path: PathBuf, message: String },
    #[error("audio device: {0}")]
    Device(String),
    #[error("speech model: {0}")]
    Model(String),
    #[error("recogniser: {0}")]
    Recognizer(String),
    #[error("vocabulary {path}: {message}")]
    Vocabulary { path: PathBuf, message: String },
}

/// An open utterance quiet this long, and short enough to be a "stop", is decoded early.
pub const EARLY_STOP_QUIET_MS: u32 = 200;
/// Longest open utterance checked early for a "stop", ms: the same speech as
/// [`recognize::STOP_MAX_MS`] allows, with [`EARLY_STOP_QUIET_MS`] of quiet instead of the full
/// hangover.
pub const EARLY_STOP_MAX_MS: u64 = recognize::STOP_MAX_MS - 450 + EARLY_STOP_QUIET_MS as u64;
/// Samples read from the microphone at a time (20 ms).
const BLOCK: usize = 320;

/// One decided utterance, kept for the run's summary and the evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Stream time of the utterance's start and of the moment it was decided (its end, or the
    /// early stop check), seconds of audio.
    pub start_s: f64,
    pub decided_s: f64,
    pub understood: Understood,
    /// Wall-clock time spent decoding it, seconds.
    pub decode_s: f64,
}

/// Speech as an instruction source.
pub struct Speech {
    mic: Box<dyn audio::Microphone>,
    vad: vad::Vad,
    rec: Box<dyn Recognizer>,
    interp: Interpreter,
    pending: VecDeque<Heard>,
    /// Resume the run after the first instruction heard (a run that started waiting for one).
    resume_on_first: bool,
    /// The open utterance (by its start) was already checked early for a stop.
    early_checked: Option<u64>,
    /// ... and was a stop: it is not decided again when it ends.
    early_stopped: bool,
    ended: bool,
    pub events: Vec<Event>,
    /// Echoes each decision here (the console); `None` keeps quiet (tests).
    echo: bool,
    /// Where each decision is also published (the control socket's `status`, the web console).
    heard: Option<std::sync::Arc<crate::runtime::Controls>>,
}

impl std::fmt::Debug for Speech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speech").field("mic", &self.mic.describe()).field("recognizer", &self.rec.describe()).finish_non_exhaustive()
    }
}

fn seconds(samples: u64) -> f64 {
    samples as f64 / f64::from(audio::RATE)
}

impl Speech {
    pub fn new(mic: Box<dyn audio::Microphone>, rec: Box<dyn Recognizer>, interp: Interpreter, vad: vad::VadConfig) -> Self {
        Self {
            mic,
            vad: vad::Vad::new(vad),
            rec,
            interp,
            pending: VecDeque::new(),
            resume_on_first: false,
            early_checked: None,
            early_stopped: false,
            ended: false,
            events: Vec::new(),
            echo: false,
            heard: None,
        }
    }

    /// The run started paused, waiting for a spoken instruction: resume after the first.
    pub fn resume_on_first_instruction(mut self) -> Self {
        self.resume_on_first = true;
        self
    }

    /// Echo each decision on standard error and publish it to `controls` (socket `status`, web
    /// console) before it is acted on.
    pub fn echo_to(mut self, controls: std::sync::Arc<crate::runtime::Controls>) -> Self {
        self.echo = true;
        self.heard = Some(controls);
        self
    }

    fn publish(&self, text: String) {
        if self.echo {
            eprintln!("{text}");
        }
        if let Some(c) = &self.heard {
            c.set_heard(&text);
        }
    }

    fn decide(&mut self, start: u64, audio: &[i16], decided: u64) {
        let t = std::time::Instant::now();
        let understood = match self.interp.understand(self.rec.as_mut(), audio) {
            Ok(u) => u,
            Err(e) => Understood::Unclear { heard: String::new(), why: e.to_string() },
        };
        self.act(start, decided, understood, t.elapsed().as_secs_f64());
    }

    fn act(&mut self, start: u64, decided: u64, understood: Understood, decode_s: f64) {
        match &understood {
            Understood::Stop => {
                self.publish("speech: heard \"stop\" → e-stop".into());
                // Ahead of anything still queued.
                self.pending.push_front(Heard::Command(Command::Stop));
            }
            Understood::Instruction { text, how } => {
                let via = match how {
                    How::Grammar { fit } => format!("grammar, fit {fit:.2}"),
                    How::Nearest { heard, cosine } => format!("heard {heard:?}, nearest known instruction at cosine {cosine:.2}"),
                };
                self.publish(format!("speech: instruction {text:?} ({via})"));
                self.pending.push_back(Heard::Command(Command::Instruction(text.clone())));
                if std::mem::take(&mut self.resume_on_first) {
                    self.pending.push_back(Heard::Command(Command::Resume));
                }
            }
            Understood::Unclear { heard, why } => {
                self.publish(format!(
                    "speech: did not understand{} — {why}; please say it again",
                    if heard.is_empty() { String::new() } else { format!(" {heard:?}") }
                ));
            }
        }
        self.events.push(Event { start_s: seconds(start), decided_s: seconds(decided), understood, decode_s });
    }

    /// Reads and decides until something is heard or the microphone ends.
    fn listen(&mut self) {
        let mut buf = [0i16; BLOCK];
        while self.pending.is_empty() && !self.ended {
            let n = match self.mic.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    self.publish(format!("speech: {e}; no longer listening"));
                    0
                }
            };
            let done = if n == 0 {
                self.ended = true;
                self.vad.finish().into_iter().collect()
            } else {
                self.vad.push(&buf[..n])
            };
            for u in done {
                if std::mem::take(&mut self.early_stopped) {
                    continue;
                }
                self.decide(u.start, &u.samples, u.end);
            }
            // A stop does not wait for the hangover.
            let cur = self.vad.current();
            let open = self.vad.open_start();
            if open.is_some()
                && self.early_checked != open
                && self.vad.quiet_ms() >= EARLY_STOP_QUIET_MS
                && (cur.len() as u64) * 1000 <= EARLY_STOP_MAX_MS * u64::from(audio::RATE)
            {
                self.early_checked = open;
                let (cur, pos) = (cur.to_vec(), self.vad.position());
                let t = std::time::Instant::now();
                if let Ok(Some(h)) = self.rec.grammar(&cur)
                    && grammar::is_stop(&h.text)
                    && h.fit >= self.interp.thresholds.stop_fit
                {
                    self.early_stopped = true;
                    self.act(pos - cur.len() as u64, pos, Understood::Stop, t.elapsed().as_secs_f64());
                }
            }
        }
    }
}

impl InstructionSource for Speech {
    fn describe(&self) -> String {
        "speech".into()
    }

    fn next(&mut self) -> Option<Heard> {
        self.listen();
        self.pending.pop_front()
    }

    fn reply(&mut self, text: &str) {
        if self.echo && text.starts_with("error") {
            eprintln!("speech: {text}");
        }
    }
}
