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
//! been quiet for [`EARLY_STOP_QUIET_MS`], it is decoded at once and a stop acted on — at a
//! stricter bar when it holds less than [`EARLY_STOP_MIN_SPEECH_MS`] of speech (a quick word in
//! noise, or the first word of a sentence before a pause).

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

/// Where Debian's `pocketsphinx-en-us` installs the English model.
pub const DEBIAN_MODEL: &str = "/usr/share/pocketsphinx/model/en-us";

/// An open utterance quiet this long, and short enough to be a "stop", is decoded early.
pub const EARLY_STOP_QUIET_MS: u32 = 200;
/// Speech (frames above the detector's stay level) in an open utterance from which its early check
/// takes a stop at [`recognize::Thresholds::early_stop_fit`], ms; with less it takes one only at
/// the stricter [`recognize::Thresholds::early_short_stop_fit`]. An utterance is checked at its
/// first 200 ms pause (and once more at a later one if the first check had less speech than this),
/// and at the lenient bar the first word of a sentence ("lift …") became a stop in 10 dB of noise
/// (`results/speech/` run 5a: 6 of 192 instructions).
pub const EARLY_STOP_MIN_SPEECH_MS: u32 = 200;
/// Longest open utterance checked early for a "stop", ms: the same speech as
/// [`recognize::STOP_MAX_MS`] allows, with [`EARLY_STOP_QUIET_MS`] of quiet instead of the
/// detector's full hangover.
pub fn early_stop_max_ms(vad: &vad::VadConfig) -> u64 {
    recognize::STOP_MAX_MS.saturating_sub(u64::from(vad.hangover_ms)) + u64::from(EARLY_STOP_QUIET_MS)
}
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
    /// An instruction was handed out and, if it is taken, the run resumes.
    resume_if_taken: bool,
    vad_cfg: vad::VadConfig,
    /// The open utterance (by its start) was already checked early for a stop, and whether that
    /// check had [`EARLY_STOP_MIN_SPEECH_MS`] of speech. A check on less (a cough, an "uh", a first
    /// quick word that missed the stricter bar) does not use up the one at the full bar: the
    /// utterance is checked again at its next pause once it holds that much.
    early_checked: Option<(u64, bool)>,
    /// The utterance (by its start) already acted on as a stop: when it ends, it is decided
    /// again for what else it says, but not stopped for twice.
    early_stopped: Option<u64>,
    ended: bool,
    pub events: Vec<Event>,
    /// Decoding time, every decode included (early stop checks too), seconds.
    pub decode_s_total: f64,
    /// Echoes each decision here (the console); `None` keeps quiet (tests).
    echo: bool,
    /// Where each decision is also published (the control socket's `status`, the web console).
    heard: Option<std::sync::Arc<crate::runtime::Controls>>,
    /// Push-to-talk: listened to only while this says the button is held.
    ptt: Option<Box<dyn FnMut() -> bool + Send>>,
}

/// A push-to-talk button on an input pin (pulled up, the button to ground: held reads low). A pin
/// that cannot be read counts as not held: nothing is heard rather than everything.
pub fn held_while_low<P: embedded_hal::digital::InputPin + Send + 'static>(mut pin: P) -> Box<dyn FnMut() -> bool + Send> {
    Box::new(move || matches!(pin.is_low(), Ok(true)))
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
            vad_cfg: vad,
            resume_if_taken: false,
            decode_s_total: 0.0,
            rec,
            interp,
            pending: VecDeque::new(),
            resume_on_first: false,
            early_checked: None,
            early_stopped: None,
            ended: false,
            events: Vec::new(),
            echo: false,
            heard: None,
            ptt: None,
        }
    }

    /// Push-to-talk: audio is listened to only while `held` says so, and letting go ends the
    /// utterance at once (no hangover to wait for). `held` is asked as each block is read; for
    /// a live device read on its own thread, give the button to [`audio::Threaded::with_button`]
    /// instead, so its state is sampled with the audio.
    pub fn push_to_talk(mut self, held: Box<dyn FnMut() -> bool + Send>) -> Self {
        self.ptt = Some(held);
        self
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

    fn decide(&mut self, start: u64, audio: &[i16], decided: u64, stopped_already: bool) {
        let t = std::time::Instant::now();
        let understood = match self.interp.understand(self.rec.as_mut(), audio) {
            Ok(u) => u,
            Err(e) => Understood::Unclear { heard: String::new(), why: e.to_string() },
        };
        let took = t.elapsed().as_secs_f64();
        self.decode_s_total += took;
        if stopped_already && understood == Understood::Stop {
            return;
        }
        self.act(start, decided, understood, took);
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
                // The run resumes once an instruction is taken (its reply says so).
                self.resume_if_taken = self.resume_on_first;
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
            // The button's state captured with the audio where the source has it; else now.
            let talking = match self.mic.held() {
                Some(h) => h,
                None => self.ptt.as_mut().is_none_or(|held| held()),
            };
            let done: Vec<vad::Utterance> = if n == 0 {
                self.ended = true;
                self.vad.finish().into_iter().collect()
            } else if talking {
                self.vad.push(&buf[..n])
            } else {
                // Released: what was open ends here; the rest is not listened to.
                let closed = self.vad.finish().into_iter().collect();
                self.vad.skip(n);
                closed
            };
            for u in done {
                let stopped = self.early_stopped == Some(u.start);
                self.decide(u.start, &u.samples, u.end, stopped);
            }
            // A stop does not wait for the hangover.
            let cur = self.vad.current();
            let open = self.vad.open_start();
            if open.is_some()
                && match (self.early_checked, open) {
                    (Some((checked, full)), Some(o)) if checked == o => !full && self.vad.speech_ms() >= EARLY_STOP_MIN_SPEECH_MS,
                    _ => true,
                }
                && self.vad.quiet_ms() >= EARLY_STOP_QUIET_MS
                && self.vad.speech_ms() >= self.vad_cfg.min_ms
                && (cur.len() as u64) * 1000 <= early_stop_max_ms(&self.vad_cfg) * u64::from(audio::RATE)
            {
                let full = self.vad.speech_ms() >= EARLY_STOP_MIN_SPEECH_MS;
                self.early_checked = open.map(|o| (o, full));
                let t = &self.interp.thresholds;
                let bar = if full { t.early_stop_fit } else { t.early_short_stop_fit };
                let (cur, pos) = (cur.to_vec(), self.vad.position());
                let t = std::time::Instant::now();
                let h = self.rec.stop_check(&cur);
                let took = t.elapsed().as_secs_f64();
                self.decode_s_total += took;
                if let Ok(Some(h)) = h
                    && grammar::is_stop(&h.text)
                    && h.fit >= bar
                {
                    self.early_stopped = open;
                    self.act(pos - cur.len() as u64, pos, Understood::Stop, took);
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
        if std::mem::take(&mut self.resume_if_taken) && text.starts_with("ok instruction") {
            self.resume_on_first = false;
            self.pending.push_front(Heard::Command(Command::Resume));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use recognize::{Hypothesis, Thresholds};

    /// A stand-in recogniser for the source's own logic (PocketSphinx itself is tested in
    /// `tests/speech.rs`): audio of under 1.2 s is "stop", longer is an instruction.
    struct ByLength;

    impl Recognizer for ByLength {
        fn describe(&self) -> String {
            "by length".into()
        }
        fn grammar(&mut self, audio: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
            let text = if audio.len() < 19_200 { "stop" } else { "point at the red square" };
            Ok(Some(Hypothesis { text: text.into(), fit: 5.0, free: None }))
        }
        fn free(&mut self, _: &[i16]) -> Result<Option<String>, SpeechError> {
            Ok(None)
        }
    }

    fn buzz(ms: usize) -> Vec<i16> {
        (0..ms * 16).map(|i| ((i as f64 * 0.055).sin() * 9000.0) as i16).collect()
    }

    fn quiet(ms: usize) -> Vec<i16> {
        vec![0; ms * 16]
    }

    fn heard(audio: Vec<i16>) -> (Vec<Heard>, Speech) {
        heard_with(audio, Box::new(ByLength), Thresholds::default())
    }

    /// Everything `rec` makes of `audio` under `t`, with the default detector.
    fn heard_with(audio: Vec<i16>, rec: Box<dyn Recognizer>, t: Thresholds) -> (Vec<Heard>, Speech) {
        let interp = Interpreter::new(grammar::Vocabulary::sim(), t, None);
        let mut sp = Speech::new(Box::new(audio::Recording::new("t", audio)), rec, interp, vad::VadConfig::default());
        let h = std::iter::from_fn(|| sp.next()).collect();
        (h, sp)
    }

    #[test]
    fn a_stop_is_taken_early_once_and_what_follows_it_is_still_heard() {
        // "stop", a 300 ms pause (shorter than the hangover), then an instruction: one utterance
        // to the detector. The stop is acted on after 200 ms of the pause; the whole utterance is
        // then decided for what it says, without a second stop.
        let mut a = quiet(500);
        a.extend(buzz(500));
        let stop_end = a.len();
        a.extend(quiet(300));
        a.extend(buzz(1500));
        a.extend(quiet(1000));
        let (h, sp) = heard(a);
        assert_eq!(h, vec![Heard::Command(Command::Stop), Heard::Command(Command::Instruction("point at the red square".into()))], "{:#?}", sp.events);
        let after = sp.events[0].decided_s - stop_end as f64 / 16_000.0;
        assert!((0.2..0.25).contains(&after), "decided {after:.3} s after the word");
        assert!(sp.decode_s_total >= sp.events.iter().map(|e| e.decode_s).sum::<f64>());
    }

    /// Hears "stop" in anything, at the fit this gives for the audio's length in samples.
    struct StopAt(Box<dyn Fn(usize) -> f32 + Send>);

    impl StopAt {
        fn fixed(fit: f32) -> Self {
            Self(Box::new(move |_| fit))
        }
    }

    impl Recognizer for StopAt {
        fn describe(&self) -> String {
            "stop at a given fit".into()
        }
        fn grammar(&mut self, audio: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
            Ok(Some(Hypothesis { text: "stop".into(), fit: (self.0)(audio.len()), free: None }))
        }
        fn free(&mut self, _: &[i16]) -> Result<Option<String>, SpeechError> {
            Ok(None)
        }
    }

    #[test]
    fn the_early_check_takes_a_stop_at_its_own_bar_below_the_final_one() {
        // A stop word fitting at −8: under the final decision's bar (−4), over the early
        // check's (−12). Taken early; with the early bar raised over it, the early check passes
        // it by and the close refuses it (the free loop heard nothing).
        let mut a = quiet(500);
        a.extend(buzz(500));
        let stop_end = a.len();
        a.extend(quiet(1000));
        let run = |t: Thresholds| heard_with(a.clone(), Box::new(StopAt::fixed(-8.0)), t);
        let d = Thresholds::default();
        assert!(d.early_stop_fit < -8.0 && -8.0 < d.stop_fit, "{d:?}");
        let (h, sp) = run(d);
        assert_eq!(h, vec![Heard::Command(Command::Stop)], "{:#?}", sp.events);
        let after = sp.events[0].decided_s - stop_end as f64 / 16_000.0;
        assert!((0.2..0.25).contains(&after), "decided {after:.3} s after the word");
        let (h, sp) = run(Thresholds { early_stop_fit: -6.0, ..Thresholds::default() });
        assert!(h.is_empty(), "{h:?} {:#?}", sp.events);
    }

    /// "Stop" at one fit from the early check's decode and at another from the whole
    /// utterance's: which decode each path uses.
    struct TwoDecoders {
        early: f32,
        close: f32,
    }

    impl Recognizer for TwoDecoders {
        fn describe(&self) -> String {
            "two decoders".into()
        }
        fn grammar(&mut self, _: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
            Ok(Some(Hypothesis { text: "stop".into(), fit: self.close, free: None }))
        }
        fn stop_check(&mut self, _: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
            Ok(Some(Hypothesis { text: "stop".into(), fit: self.early, free: None }))
        }
        fn free(&mut self, _: &[i16]) -> Result<Option<String>, SpeechError> {
            Ok(None)
        }
    }

    #[test]
    fn the_early_check_decodes_with_stop_check_and_the_close_with_grammar() {
        let mut a = quiet(500);
        a.extend(buzz(500));
        let end = a.len() as f64 / 16_000.0;
        a.extend(quiet(1000));
        let t = Thresholds::default();
        assert!(-20.0 < t.early_stop_fit.min(t.stop_fit) && t.early_stop_fit.max(t.stop_fit) < 5.0, "{t:?}");
        // Only the early check's decode hears a stop: taken 200 ms into the pause.
        let (h, sp) = heard_with(a.clone(), Box::new(TwoDecoders { early: 5.0, close: -20.0 }), t);
        assert_eq!(h, vec![Heard::Command(Command::Stop)], "{:#?}", sp.events);
        let after = sp.events[0].decided_s - end;
        assert!((0.2..0.25).contains(&after), "decided {after:.3} s after the word");
        // Only the whole utterance's decode hears it: nothing early; the close takes it after the
        // hangover.
        let (h, sp) = heard_with(a, Box::new(TwoDecoders { early: -20.0, close: 5.0 }), t);
        assert_eq!(h, vec![Heard::Command(Command::Stop)], "{:#?}", sp.events);
        let after = sp.events[0].decided_s - end;
        assert!(after >= 0.4, "decided {after:.3} s after the word");
    }

    #[test]
    fn a_short_stop_is_kept_and_taken_early_only_at_the_stricter_bar() {
        // 150 ms of speech: over the detector's minimum, under EARLY_STOP_MIN_SPEECH_MS.
        let mut a = quiet(500);
        a.extend(buzz(150));
        let end = a.len();
        a.extend(quiet(1000));
        let t = Thresholds::default();
        let run = |fit: f32| heard_with(a.clone(), Box::new(StopAt::fixed(fit)), t);
        // Over the short bar: taken 200 ms into the pause.
        let (h, sp) = run(t.early_short_stop_fit + 0.5);
        assert_eq!(h, vec![Heard::Command(Command::Stop)], "{:#?}", sp.events);
        let after = sp.events[0].decided_s - end as f64 / 16_000.0;
        assert!((0.2..0.25).contains(&after), "decided {after:.3} s after the word");
        // Under it (but over the long bar): not taken early, and the close's bar refuses it too.
        assert!(t.early_stop_fit < t.early_short_stop_fit - 0.5 && t.early_short_stop_fit - 0.5 < t.stop_fit, "{t:?}");
        let (h, sp) = run(t.early_short_stop_fit - 0.5);
        assert!(h.is_empty(), "{h:?} {:#?}", sp.events);
    }

    #[test]
    fn a_short_sound_that_misses_the_early_bar_does_not_use_up_the_early_check() {
        // A 120 ms sound (a cough; its check misses the short bar), 250 ms of quiet (under the
        // hangover: one utterance), then a 300 ms "stop": checked again, taken 200 ms after it.
        let mut a = quiet(500);
        a.extend(buzz(120));
        a.extend(quiet(250));
        a.extend(buzz(300));
        let end = a.len();
        a.extend(quiet(1000));
        // "Stop" at −8 in audio under 0.75 s (the cough with its pre-roll and pause), +5 in longer.
        let rec = StopAt(Box::new(|n| if n < 12_000 { -8.0 } else { 5.0 }));
        let (h, sp) = heard_with(a, Box::new(rec), Thresholds::default());
        assert_eq!(h, vec![Heard::Command(Command::Stop)], "{:#?}", sp.events);
        let after = sp.events[0].decided_s - end as f64 / 16_000.0;
        assert!((0.2..0.25).contains(&after), "decided {after:.3} s after the word");
    }

    #[test]
    fn a_click_is_dropped_and_does_not_swallow_the_next_utterance() {
        // 40 ms, off the detector's 10 ms frames (it touches five of them).
        let mut a = quiet(503);
        a.extend(buzz(40));
        a.extend(quiet(1200));
        a.extend(buzz(1500));
        a.extend(quiet(1000));
        let (h, sp) = heard(a);
        assert_eq!(h, vec![Heard::Command(Command::Instruction("point at the red square".into()))], "{:#?}", sp.events);
    }

    #[test]
    fn push_to_talk_hears_only_while_the_button_is_held_and_letting_go_ends_the_utterance() {
        // Two instructions; the button (a simulated pin, pulled up: held = low) is held only for
        // the second, and let go in the middle of its trailing silence.
        let mut a = quiet(500);
        a.extend(buzz(1500));
        a.extend(quiet(1000));
        let second = a.len();
        a.extend(buzz(1500));
        let release = a.len() + 16 * 100;
        a.extend(quiet(2000));
        let pin = crate::estop::SimPin::default();
        pin.level.store(true, std::sync::atomic::Ordering::SeqCst);
        let level = pin.level.clone();
        let interp = Interpreter::new(grammar::Vocabulary::sim(), Thresholds::default(), None);
        let mic = audio::Recording::new("t", a);
        // The button follows the stream position: held from 300 ms before the second utterance
        // to 100 ms after its speech.
        let pos = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p2 = pos.clone();
        struct Counting(audio::Recording, std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl audio::Microphone for Counting {
            fn describe(&self) -> String {
                "counting".into()
            }
            fn read(&mut self, buf: &mut [i16]) -> Result<usize, SpeechError> {
                let n = self.0.read(buf)?;
                self.1.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                Ok(n)
            }
        }
        let mut held = held_while_low(pin);
        let ptt = Box::new(move || {
            let at = p2.load(std::sync::atomic::Ordering::SeqCst);
            level.store(!(at > second - 16 * 300 && at <= release), std::sync::atomic::Ordering::SeqCst);
            held()
        });
        let mut sp = Speech::new(Box::new(Counting(mic, pos)), Box::new(ByLength), interp, vad::VadConfig::default()).push_to_talk(ptt);
        let h: Vec<Heard> = std::iter::from_fn(|| sp.next()).collect();
        assert_eq!(h.len(), 1, "only the held utterance: {:#?}", sp.events);
        let e = &sp.events[0];
        assert!((e.start_s - (second as f64 / 16_000.0 - 0.2)).abs() < 0.05, "{e:?}");
        // Decided at the release, not after the 450 ms hangover.
        assert!((e.decided_s - release as f64 / 16_000.0).abs() < 0.03, "{e:?}");
    }

    #[test]
    fn a_run_waiting_for_speech_resumes_only_once_an_instruction_is_taken() {
        let controls = crate::runtime::Controls::new("(waiting)").unwrap();
        controls.set_paused(true);
        let mut a = quiet(500);
        a.extend(buzz(1500));
        a.extend(quiet(1000));
        let interp = Interpreter::new(grammar::Vocabulary::sim(), Thresholds::default(), None);
        let mut sp = Speech::new(Box::new(audio::Recording::new("t", a)), Box::new(ByLength), interp, vad::VadConfig::default()).resume_on_first_instruction();
        crate::instruction::drive(&mut sp, &controls);
        assert_eq!(controls.instruction().1, "point at the red square");
        assert!(!controls.paused());
        // An instruction the run refuses (longer than it takes, say) does not resume it.
        let mut sp = Speech::new(
            Box::new(audio::Recording::new("t", Vec::new())),
            Box::new(ByLength),
            Interpreter::new(grammar::Vocabulary::sim(), Thresholds::default(), None),
            vad::VadConfig::default(),
        )
        .resume_on_first_instruction();
        sp.resume_if_taken = true;
        sp.reply("error: the instruction is 600 bytes long");
        assert!(sp.next().is_none(), "no resume after a refused instruction");
    }
}
