//! Audio in: the [`Microphone`] trait (16 kHz mono, signed 16-bit), a WAV file as a microphone
//! (tests, `--speech-file`), the board's ALSA capture device (feature `alsa`), resampling, and
//! noise mixing at a given SNR for the evaluation.

use super::SpeechError;
use std::path::{Path, PathBuf};

/// The recogniser's sample rate, Hz: every source delivers this.
pub const RATE: u32 = 16_000;

/// Longest WAV file read, seconds (a file is read whole: an hour is 115 MB at 16 kHz).
pub const MAX_WAV_SECONDS: u64 = 3600;

/// A source of 16 kHz mono audio.
pub trait Microphone: Send {
    /// What it is, for logs.
    fn describe(&self) -> String;
    /// Fills `buf` with the next samples; the count read, 0 at the end of a finite source. A live
    /// device blocks until samples are there.
    fn read(&mut self, buf: &mut [i16]) -> Result<usize, SpeechError>;
    /// Whether the push-to-talk button was held while the samples last read were captured, for a
    /// source that samples its button itself ([`Threaded::with_button`]); `None` otherwise.
    fn held(&self) -> Option<bool> {
        None
    }
}

/// Audio held in memory, played out as a microphone: a WAV file (any rate and channel count,
/// converted to 16 kHz mono on load) or samples made in a test. With `realtime`, reads are paced
/// to the wall clock as a real device's are.
#[derive(Debug, Clone)]
pub struct Recording {
    name: String,
    samples: Vec<i16>,
    pos: usize,
    realtime: Option<std::time::Instant>,
}

impl Recording {
    pub fn new(name: impl Into<String>, samples: Vec<i16>) -> Self {
        Self { name: name.into(), samples, pos: 0, realtime: None }
    }

    /// Reads a PCM WAV file (8-, 16-, 24- or 32-bit integer, or 32-bit float; mono or several
    /// channels, averaged; 8 to 192 kHz, resampled to [`RATE`]).
    pub fn open(path: &Path) -> Result<Self, SpeechError> {
        Ok(Self::new(path.display().to_string(), read_wav(path)?))
    }

    /// Paces reads to the wall clock from now on (a live microphone's timing).
    pub fn realtime(mut self) -> Self {
        self.realtime = Some(std::time::Instant::now());
        self
    }

    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
}

impl Microphone for Recording {
    fn describe(&self) -> String {
        format!("recording {} ({:.1} s)", self.name, self.samples.len() as f64 / f64::from(RATE))
    }

    fn read(&mut self, buf: &mut [i16]) -> Result<usize, SpeechError> {
        let n = buf.len().min(self.samples.len() - self.pos);
        if let Some(t0) = self.realtime {
            let due = t0 + std::time::Duration::from_secs_f64((self.pos + n) as f64 / f64::from(RATE));
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        buf[..n].copy_from_slice(&self.samples[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn wav_err(path: &Path, message: impl Into<String>) -> SpeechError {
    SpeechError::Audio { path: PathBuf::from(path), message: message.into() }
}

/// A WAV file as 16 kHz mono samples; every header field is checked before the data is read.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, SpeechError> {
    let reader = hound::WavReader::open(path).map_err(|e| wav_err(path, format!("not a readable WAV file: {e}")))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.channels > 8 {
        return Err(wav_err(path, format!("{} channels; 1 to 8 are read", spec.channels)));
    }
    if !(8_000..=192_000).contains(&spec.sample_rate) {
        return Err(wav_err(path, format!("sample rate {} Hz; 8 to 192 kHz are read", spec.sample_rate)));
    }
    let frames = u64::from(reader.duration());
    if frames > MAX_WAV_SECONDS * u64::from(spec.sample_rate) {
        return Err(wav_err(path, format!("{:.0} s long; at most {MAX_WAV_SECONDS} s are read", frames as f64 / f64::from(spec.sample_rate))));
    }
    let ch = usize::from(spec.channels);
    // Mixed to mono while reading: a many-channel file never sits in memory whole.
    let mut mono: Vec<f32> = Vec::with_capacity(frames as usize);
    let mut acc = 0.0f32;
    let mut k = 0;
    let mut push = |v: f32| {
        acc += v;
        k += 1;
        if k == ch {
            mono.push(acc / ch as f32);
            acc = 0.0;
            k = 0;
        }
    };
    let bad = |e: hound::Error| wav_err(path, format!("truncated or damaged sample data: {e}"));
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, b @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (b - 1)) as f32;
            for v in reader.into_samples::<i32>() {
                push(v.map_err(bad)? as f32 * scale);
            }
        }
        (hound::SampleFormat::Float, 32) => {
            for v in reader.into_samples::<f32>() {
                push(v.map_err(bad)?);
            }
        }
        (f, b) => return Err(wav_err(path, format!("{b}-bit {f:?} samples; 8/16/24/32-bit integer or 32-bit float PCM are read"))),
    }
    if mono.iter().any(|v| !v.is_finite()) {
        return Err(wav_err(path, "non-finite float samples"));
    }
    Ok(to_i16(&resample(&mono, spec.sample_rate, RATE)))
}

/// Writes 16 kHz mono samples as a 16-bit PCM WAV file (through a temporary file and a rename).
pub fn write_wav(path: &Path, samples: &[i16]) -> Result<(), SpeechError> {
    let spec = hound::WavSpec { channels: 1, sample_rate: RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let tmp = path.with_extension("wav.tmp");
    let write = || -> Result<(), hound::Error> {
        let mut w = hound::WavWriter::create(&tmp, spec)?;
        for &s in samples {
            w.write_sample(s)?;
        }
        w.finalize()
    };
    write().map_err(|e| wav_err(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| wav_err(path, format!("cannot write: {e}")))
}

/// Clamps [-1, 1] floats to 16-bit samples.
pub fn to_i16(x: &[f32]) -> Vec<i16> {
    x.iter().map(|v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// Band-limited resampling (windowed sinc, 16 zero crossings a side, Blackman window; the cut-off
/// at the lower of the two Nyquist rates).
/// Either rate 0: nothing (there is no such signal).
pub fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == 0 || to == 0 {
        return Vec::new();
    }
    if from == to || x.is_empty() {
        return x.to_vec();
    }
    const ZEROS: f64 = 16.0;
    let ratio = f64::from(from) / f64::from(to);
    let cutoff = (1.0 / ratio).min(1.0) * 0.95;
    let half = (ZEROS / cutoff).ceil() as i64;
    let n_out = ((x.len() as f64) / ratio).floor() as usize;
    let mut out = Vec::with_capacity(n_out);
    for n in 0..n_out {
        let t = n as f64 * ratio;
        let c = t.floor() as i64;
        let mut acc = 0.0f64;
        for k in (c - half + 1)..=(c + half) {
            if k < 0 || k as usize >= x.len() {
                continue;
            }
            let d = t - k as f64;
            let arg = d * cutoff;
            let sinc = if arg.abs() < 1e-9 { 1.0 } else { (std::f64::consts::PI * arg).sin() / (std::f64::consts::PI * arg) };
            let w = d / (half as f64);
            let blackman = if w.abs() >= 1.0 { 0.0 } else { 0.42 + 0.5 * (std::f64::consts::PI * w).cos() + 0.08 * (2.0 * std::f64::consts::PI * w).cos() };
            acc += f64::from(x[k as usize]) * sinc * blackman * cutoff;
        }
        out.push(acc as f32);
    }
    out
}

/// Root-mean-square of samples, in 16-bit units.
pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// `speech` with `noise` added at `snr_db` (speech power measured over the samples louder than
/// 1% of full scale, i.e. the speech itself, not the silences), the noise looped or cut to length.
pub fn mix_at_snr(speech: &[i16], noise: &[i16], snr_db: f64) -> Vec<i16> {
    let active: Vec<i16> = speech.iter().copied().filter(|v| v.unsigned_abs() > 327).collect();
    let ps = rms(&active).powi(2);
    let pn = rms(noise).powi(2);
    if noise.is_empty() || pn == 0.0 {
        return speech.to_vec();
    }
    let gain = (ps / pn / 10f64.powf(snr_db / 10.0)).sqrt();
    speech.iter().enumerate().map(|(i, &s)| (f64::from(s) + gain * f64::from(noise[i % noise.len()])).round().clamp(-32768.0, 32767.0) as i16).collect()
}

/// Deterministic noise for tests and the evaluation: white, or "babble-like" pink noise
/// (white through a first-order low-pass), from a seed.
pub fn noise(len: usize, seed: u64, pink: bool) -> Vec<i16> {
    let mut rng = lapa_sim::rng::Rng::new(seed);
    let mut y = 0.0f64;
    (0..len)
        .map(|_| {
            let white = f64::from(rng.range(-1.0, 1.0));
            y = if pink { 0.95 * y + 0.05 * white * 4.0 } else { white };
            (y * 8000.0).round() as i16
        })
        .collect()
}

/// A block of audio from the capture thread, with the button's state when it was captured.
type Block = Result<(Vec<i16>, Option<bool>), SpeechError>;

/// A live microphone read on its own thread into a bounded queue (10 s), so a slow decode never
/// stalls the device (an overrun would lose the audio, a "stop" with it). When the queue is full
/// (ten seconds behind), new audio is dropped until the reader catches up.
pub struct Threaded {
    name: String,
    rx: std::sync::mpsc::Receiver<Block>,
    pending: Vec<i16>,
    held: Option<bool>,
    _worker: crate::worker::Worker,
}

impl std::fmt::Debug for Threaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Threaded({})", self.name)
    }
}

impl Threaded {
    pub fn new(inner: Box<dyn Microphone>) -> Result<Self, SpeechError> {
        Self::start(inner, None)
    }

    /// With a push-to-talk button, read on the capture thread beside each block: the button's
    /// state belongs to the audio captured with it, however far behind the reader is.
    pub fn with_button(inner: Box<dyn Microphone>, held: Box<dyn FnMut() -> bool + Send>) -> Result<Self, SpeechError> {
        Self::start(inner, Some(held))
    }

    fn start(mut inner: Box<dyn Microphone>, mut button: Option<Box<dyn FnMut() -> bool + Send>>) -> Result<Self, SpeechError> {
        let name = inner.describe();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Block>(500);
        let worker = crate::worker::Worker::spawn("microphone", move |stop| {
            let mut buf = vec![0i16; 320];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = inner.read(&mut buf).map(|n| (buf[..n].to_vec(), button.as_mut().map(|held| held())));
                let end = !matches!(&r, Ok((v, _)) if !v.is_empty());
                match tx.try_send(r) {
                    Ok(()) => {}
                    // Full: the reader is ten seconds behind; this block is dropped.
                    Err(std::sync::mpsc::TrySendError::Full(_)) => {}
                    Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                }
                if end {
                    return;
                }
            }
        })
        .map_err(SpeechError::Device)?;
        Ok(Self { name, rx, pending: Vec::new(), held: None, _worker: worker })
    }
}

impl Microphone for Threaded {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn held(&self) -> Option<bool> {
        self.held
    }

    fn read(&mut self, buf: &mut [i16]) -> Result<usize, SpeechError> {
        if self.pending.is_empty() {
            match self.rx.recv() {
                Ok(r) => (self.pending, self.held) = r?,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// The board's microphone through ALSA (16 kHz mono S16, the device's own conversion; `default`
/// or a name such as `plughw:1,0` from `arecord -L`).
#[cfg(feature = "alsa")]
pub struct AlsaMic {
    name: String,
    pcm: alsa::PCM,
}

#[cfg(feature = "alsa")]
impl AlsaMic {
    pub fn open(device: &str) -> Result<Self, SpeechError> {
        use alsa::pcm::{Access, Format, HwParams};
        let err = |e: alsa::Error| SpeechError::Device(format!("ALSA capture device {device:?}: {e} (list them with `arecord -L`)"));
        let pcm = alsa::PCM::new(device, alsa::Direction::Capture, false).map_err(err)?;
        {
            let hw = HwParams::any(&pcm).map_err(err)?;
            hw.set_channels(1).map_err(err)?;
            hw.set_rate(RATE, alsa::ValueOr::Nearest).map_err(err)?;
            hw.set_format(Format::s16()).map_err(err)?;
            hw.set_access(Access::RWInterleaved).map_err(err)?;
            pcm.hw_params(&hw).map_err(err)?;
            let rate = hw.get_rate().map_err(err)?;
            if rate != RATE {
                return Err(SpeechError::Device(format!("ALSA capture device {device:?} runs at {rate} Hz, not {RATE}: use a plughw: device")));
            }
        }
        pcm.start().map_err(err)?;
        Ok(Self { name: device.into(), pcm })
    }
}

#[cfg(feature = "alsa")]
impl std::fmt::Debug for AlsaMic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlsaMic({})", self.name)
    }
}

#[cfg(feature = "alsa")]
impl Microphone for AlsaMic {
    fn describe(&self) -> String {
        format!("ALSA {}", self.name)
    }

    fn read(&mut self, buf: &mut [i16]) -> Result<usize, SpeechError> {
        let io = self.pcm.io_i16().map_err(|e| SpeechError::Device(format!("ALSA {}: {e}", self.name)))?;
        match io.readi(buf) {
            Ok(n) => Ok(n),
            // An overrun (the reader fell behind): recover and go on; the lost audio is lost.
            Err(e) => {
                self.pcm.try_recover(e, true).map_err(|e| SpeechError::Device(format!("ALSA {}: {e}", self.name)))?;
                io.readi(buf).map_err(|e| SpeechError::Device(format!("ALSA {}: {e}", self.name)))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, secs: f64) -> Vec<f32> {
        (0..(f64::from(rate) * secs) as usize).map(|i| (0.5 * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin()) as f32).collect()
    }

    #[test]
    fn resampling_keeps_speech_band_tones_and_removes_what_the_new_rate_cannot_hold() {
        // 1 kHz at 22.05 kHz (espeak-ng's rate) → 16 kHz: same amplitude, same frequency.
        let y = resample(&tone(1000.0, 22_050, 1.0), 22_050, 16_000);
        assert_eq!(y.len(), 16_000);
        let mid = &y[2000..14_000];
        let amp = (mid.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / mid.len() as f64 * 2.0).sqrt();
        assert!((amp - 0.5).abs() < 0.01, "amplitude {amp}");
        let crossings = mid.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((crossings as f64 - 1000.0 * 12_000.0 / 16_000.0).abs() <= 2.0, "{crossings}");
        // 10 kHz is above the new Nyquist rate (8 kHz): it must not fold back as a 6 kHz alias.
        let y = resample(&tone(10_000.0, 44_100, 0.5), 44_100, 16_000);
        let rms = (y[1000..7000].iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 6000.0).sqrt();
        assert!(rms < 0.01, "alias rms {rms}");
    }

    #[test]
    fn wav_files_are_read_at_any_rate_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stereo.wav");
        let spec = hound::WavSpec { channels: 2, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for i in 0..8000 {
            let v = (10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8000.0).sin()) as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let s = read_wav(&p).unwrap();
        assert!((s.len() as i64 - 16_000).abs() <= 1, "{}", s.len());
        assert!((rms(&s[1000..15_000]) - 10_000.0 / 2f64.sqrt()).abs() < 150.0, "{}", rms(&s));
        // Round trip at the native rate is exact.
        let q = dir.path().join("out.wav");
        write_wav(&q, &s).unwrap();
        assert_eq!(read_wav(&q).unwrap(), s);
        // Not a WAV, truncated: errors that name the file.
        std::fs::write(dir.path().join("bad.wav"), b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
        let e = read_wav(&dir.path().join("bad.wav")).unwrap_err().to_string();
        assert!(e.contains("bad.wav") && e.contains("not a readable WAV"), "{e}");
        let bytes = std::fs::read(&q).unwrap();
        std::fs::write(dir.path().join("cut.wav"), &bytes[..bytes.len() / 2 + 1]).unwrap();
        let e = read_wav(&dir.path().join("cut.wav")).unwrap_err().to_string();
        assert!(e.contains("cut.wav"), "{e}");
    }

    #[test]
    fn a_threaded_source_keeps_each_blocks_button_state_with_it() {
        // The button is sampled on the capture thread, block by block: held for the first five
        // blocks. The reader, however late, sees the state that went with each block.
        let samples: Vec<i16> = (0..3200).map(|i| i as i16).collect();
        let mut calls = 0;
        let button = Box::new(move || {
            calls += 1;
            calls <= 5
        });
        let mut mic = Threaded::with_button(Box::new(Recording::new("t", samples.clone())), button).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut got = Vec::new();
        let mut held = Vec::new();
        let mut buf = [0i16; 320];
        loop {
            let n = mic.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            held.push(mic.held().unwrap());
        }
        assert_eq!(got, samples, "every sample, in order");
        assert_eq!(held, [vec![true; 5], vec![false; 5]].concat());
    }

    #[test]
    fn noise_is_mixed_at_the_asked_snr() {
        let speech: Vec<i16> = to_i16(&tone(300.0, RATE, 1.0));
        let n = noise(RATE as usize, 7, false);
        for snr in [20.0, 10.0] {
            let mixed = mix_at_snr(&speech, &n, snr);
            let resid: Vec<i16> = mixed.iter().zip(&speech).map(|(m, s)| m - s).collect();
            let got = 20.0 * (rms(&speech) / rms(&resid)).log10();
            assert!((got - snr).abs() < 0.2, "asked {snr} dB, got {got}");
        }
    }
}
