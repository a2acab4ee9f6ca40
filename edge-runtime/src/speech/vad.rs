//! Voice-activity detection: energy against an adaptive noise floor, with a start delay, a hangover
//! and a pre-roll, cutting a stream of audio into utterances.
//!
//! Every 10 ms frame's energy (dB re full scale) is compared with a noise floor that follows the
//! quiet frames (down at once, up slowly). Speech starts after `start_ms` of frames `start_db`
//! above the floor and ends after `hangover_ms` of frames less than `stay_db` above it; the
//! `preroll_ms` before the start is kept (word onsets are quiet). Utterances with less than
//! `min_ms` of speech in them (clicks, a knock) are dropped; one longer than `max_ms` is cut there.

use super::audio::RATE;

/// Samples per analysis frame (10 ms).
pub const FRAME: usize = (RATE / 100) as usize;

/// The detector's levels (dB over the noise floor) and times (ms).
///
/// Speech starts `start_db` above the floor held for `start_ms`; it stays while frames are
/// `stay_db` above it and ends after `hangover_ms` below. `min_ms` is the least speech an
/// utterance must hold to be kept: 80 ms by default, under the 100–190 ms that a lone "stop" keeps
/// above the stay level in 10–20 dB of noise (at the former 200 ms, every stop word that the
/// held-out voices of `results/speech/` missed in noise had been dropped here, before any
/// decoding), over the 60–70 ms a 40 ms click smears to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    pub start_db: f32,
    pub stay_db: f32,
    pub start_ms: u32,
    pub hangover_ms: u32,
    pub preroll_ms: u32,
    pub min_ms: u32,
    pub max_ms: u32,
    /// Frames quieter than this (dBFS) are never speech, however quiet the floor.
    pub min_level_db: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self { start_db: 7.0, stay_db: 5.0, start_ms: 60, hangover_ms: 450, preroll_ms: 200, min_ms: 80, max_ms: 10_000, min_level_db: -60.0 }
    }
}

/// One detected utterance: samples `start..end` of the stream (pre-roll and hangover included).
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub start: u64,
    pub end: u64,
    pub samples: Vec<i16>,
}

impl Utterance {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(RATE)
    }
}

/// The streaming detector: push audio in any block size, take utterances as they end.
#[derive(Debug, Clone)]
pub struct Vad {
    cfg: VadConfig,
    /// Samples of the frame being filled.
    partial: Vec<i16>,
    /// Stream position of `history[0]`.
    history_start: u64,
    /// Recent samples (pre-roll) or the utterance so far.
    history: Vec<i16>,
    floor: Option<f32>,
    /// Power of the last three frames (the decisions use their mean: 30 ms).
    recent: [f64; 3],
    /// The next frame starts the smoothing afresh (the stream's start, or after a skip).
    fresh: bool,
    loud_run: u32,
    quiet_run: u32,
    /// Frames of the open utterance above the stay level (its speech, without pre-roll and
    /// hangover).
    speech_frames: u32,
    /// Stream position where the current utterance began.
    active: Option<u64>,
    pos: u64,
}

fn frames(ms: u32) -> u32 {
    (ms / 10).max(1)
}

/// Mean power of a frame re full scale.
fn frame_power(frame: &[i16]) -> f64 {
    (super::audio::rms(frame) / 32768.0).powi(2)
}

/// Power in dB re full scale (-100 for digital silence).
fn db(power: f64) -> f32 {
    (10.0 * power.max(1e-10).log10()) as f32
}

impl Vad {
    pub fn new(cfg: VadConfig) -> Self {
        Self {
            cfg,
            partial: Vec::with_capacity(FRAME),
            history_start: 0,
            history: Vec::new(),
            floor: None,
            recent: [0.0; 3],
            fresh: true,
            loud_run: 0,
            quiet_run: 0,
            speech_frames: 0,
            active: None,
            pos: 0,
        }
    }

    /// The noise floor now, dBFS (after the first frame).
    pub fn floor_db(&self) -> Option<f32> {
        self.floor
    }

    /// Whether an utterance is being collected.
    pub fn in_speech(&self) -> bool {
        self.active.is_some()
    }

    /// How long the open utterance has been quiet, ms (0 when none is open).
    pub fn quiet_ms(&self) -> u32 {
        if self.active.is_some() { self.quiet_run * 10 } else { 0 }
    }

    /// Speech in the open utterance so far, ms (frames above the stay level).
    pub fn speech_ms(&self) -> u32 {
        if self.active.is_some() { self.speech_frames * 10 } else { 0 }
    }

    /// The open utterance so far (empty when none is open).
    pub fn current(&self) -> &[i16] {
        if self.active.is_some() { &self.history } else { &[] }
    }

    /// Where the open utterance starts in the stream.
    pub fn open_start(&self) -> Option<u64> {
        self.active
    }

    /// Stream position, samples.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Feeds samples; the utterances that ended within them.
    pub fn push(&mut self, samples: &[i16]) -> Vec<Utterance> {
        let mut out = Vec::new();
        for &s in samples {
            self.partial.push(s);
            if self.partial.len() == FRAME {
                let frame = std::mem::take(&mut self.partial);
                if let Some(u) = self.frame(&frame) {
                    out.push(u);
                }
                self.partial = frame;
                self.partial.clear();
            }
        }
        out
    }

    /// Advances over `n` samples not listened to (push-to-talk released): nothing open survives.
    pub fn skip(&mut self, n: usize) {
        self.active = None;
        // The energy smoothing starts again with the next frame heard.
        self.recent = [0.0; 3];
        self.fresh = true;
        self.partial.clear();
        self.history.clear();
        self.loud_run = 0;
        self.quiet_run = 0;
        self.pos += n as u64;
        self.history_start = self.pos;
    }

    /// Ends the stream: an utterance still open is closed (if long enough).
    pub fn finish(&mut self) -> Option<Utterance> {
        let rest = std::mem::take(&mut self.partial);
        self.history.extend_from_slice(&rest);
        self.pos += rest.len() as u64;
        self.active.is_some().then(|| self.close()).flatten()
    }

    fn frame(&mut self, frame: &[i16]) -> Option<Utterance> {
        let p = frame_power(frame);
        if std::mem::take(&mut self.fresh) {
            self.recent = [p; 3];
        }
        self.recent = [self.recent[1], self.recent[2], p];
        let db = db(self.recent.iter().sum::<f64>() / 3.0);
        self.history.extend_from_slice(frame);
        self.pos += frame.len() as u64;
        let floor = *self.floor.get_or_insert(db);
        let loud = db > self.cfg.min_level_db && db > floor + self.cfg.start_db;
        let stays = db > self.cfg.min_level_db && db > floor + self.cfg.stay_db;
        // The floor follows quiet frames: down by a fifth of the gap a frame, up by 0.05 dB a
        // frame (5 dB a second), so it settles low in the noise's spread rather than at its
        // quietest moment.
        if !stays || self.active.is_none() && !loud {
            self.floor = Some(if db < floor { floor + (db - floor) * 0.2 } else { floor + (db - floor).min(0.05) });
        }
        match self.active {
            None => {
                self.loud_run = if loud { self.loud_run + 1 } else { 0 };
                if self.loud_run >= frames(self.cfg.start_ms) {
                    // Start at the first loud frame, minus the pre-roll.
                    let first = self.pos - u64::from(self.loud_run) * FRAME as u64;
                    let start = first.saturating_sub(u64::from(self.cfg.preroll_ms) * u64::from(RATE) / 1000).max(self.history_start);
                    self.active = Some(start);
                    self.quiet_run = 0;
                    self.speech_frames = self.loud_run;
                    self.trim_to(start);
                } else {
                    // Keep only the pre-roll (and the loud run so far).
                    let keep = (u64::from(self.cfg.preroll_ms) * u64::from(RATE) / 1000) as usize + (self.loud_run as usize + 1) * FRAME;
                    if self.history.len() > keep + 4 * FRAME {
                        let start = self.pos - keep as u64;
                        self.trim_to(start);
                    }
                }
                None
            }
            Some(start) => {
                self.quiet_run = if stays { 0 } else { self.quiet_run + 1 };
                self.speech_frames += u32::from(stays);
                let long = self.pos - start >= u64::from(self.cfg.max_ms) * u64::from(RATE) / 1000;
                if self.quiet_run >= frames(self.cfg.hangover_ms) || long { self.close() } else { None }
            }
        }
    }

    fn trim_to(&mut self, start: u64) {
        let drop = (start - self.history_start) as usize;
        self.history.drain(..drop.min(self.history.len()));
        self.history_start = start;
    }

    fn close(&mut self) -> Option<Utterance> {
        let start = self.active.take()?;
        self.loud_run = 0;
        self.quiet_run = 0;
        let samples = std::mem::take(&mut self.history);
        self.history_start = self.pos;
        let end = start + samples.len() as u64;
        (self.speech_frames * 10 >= self.cfg.min_ms).then_some(Utterance { start, end, samples })
    }
}

/// Every utterance in a whole recording.
pub fn segment(samples: &[i16], cfg: VadConfig) -> Vec<Utterance> {
    let mut vad = Vad::new(cfg);
    let mut out = vad.push(samples);
    out.extend(vad.finish());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::speech::audio::{mix_at_snr, noise};

    /// A "word": a vowel-like buzz (harmonics of 140 Hz, 0.3 of full scale).
    fn word(ms: usize) -> Vec<i16> {
        (0..ms * 16)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                let v: f64 = (1..8).map(|h| (2.0 * std::f64::consts::PI * 140.0 * h as f64 * t).sin() / h as f64).sum();
                (v * 0.3 * 32768.0 / 2.0) as i16
            })
            .collect()
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 16]
    }

    #[test]
    fn synthetic_speech_with_gaps_is_cut_into_its_utterances_in_any_block_size() {
        // Two utterances of two "words" (a 150 ms gap inside, shorter than the hangover), a click
        // of 40 ms (dropped), a lone short word (kept), a second of silence between.
        let mut s = silence(800);
        let u1 = s.len();
        s.extend(word(400));
        s.extend(silence(150));
        s.extend(word(300));
        let u1_end = s.len();
        s.extend(silence(1000));
        s.extend(word(40));
        s.extend(silence(1000));
        // A short word alone (a quick "stop": 120 ms of voicing), kept in noise too.
        let u_short = s.len();
        s.extend(word(120));
        let u_short_end = s.len();
        s.extend(silence(1000));
        let u2 = s.len();
        s.extend(word(600));
        let u2_end = s.len();
        s.extend(silence(900));
        let n = noise(s.len(), 3, true);
        for (name, audio) in [("clean", s.clone()), ("20 dB", mix_at_snr(&s, &n, 20.0)), ("10 dB", mix_at_snr(&s, &n, 10.0))] {
            for block in [1usize, 160, 1000, 7919] {
                let mut vad = Vad::new(VadConfig::default());
                let mut got = Vec::new();
                for c in audio.chunks(block) {
                    got.extend(vad.push(c));
                }
                got.extend(vad.finish());
                assert_eq!(got.len(), 3, "{name}, blocks of {block}: {:?}", got.iter().map(|u| (u.start, u.end)).collect::<Vec<_>>());
                for (u, (a, b)) in got.iter().zip([(u1, u1_end), (u_short, u_short_end), (u2, u2_end)]) {
                    // Starts within the pre-roll before the onset; ends within the hangover after.
                    assert!(u.start as usize <= a && a - (u.start as usize) <= 16 * 260, "{name}: start {} vs onset {a}", u.start);
                    assert!(u.end as usize >= b && (u.end as usize) - b <= 16 * 520, "{name}: end {} vs offset {b}", u.end);
                    assert_eq!(u.samples[..], audio[u.start as usize..u.end as usize], "{name}: the utterance is the stream's own samples");
                }
            }
        }
        // An utterance still open at the end of the stream is closed; silence gives nothing.
        let mut open = silence(300);
        open.extend(word(500));
        assert_eq!(segment(&open, VadConfig::default()).len(), 1);
        assert!(segment(&silence(3000), VadConfig::default()).is_empty());
        assert!(segment(&noise(48_000, 1, false), VadConfig::default()).is_empty(), "steady noise is not speech");
    }

    #[test]
    fn an_endless_utterance_is_cut_at_the_maximum() {
        let mut s = silence(200);
        s.extend(word(2500));
        let cfg = VadConfig { max_ms: 1000, ..VadConfig::default() };
        let got = segment(&s, cfg);
        assert!(got.len() >= 2, "{}", got.len());
        assert!(got.iter().all(|u| u.seconds() <= 1.05), "{:?}", got.iter().map(Utterance::seconds).collect::<Vec<_>>());
    }
}
