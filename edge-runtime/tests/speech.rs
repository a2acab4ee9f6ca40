//! Speech end to end: utterances synthesised with espeak-ng, decoded by PocketSphinx against the
//! grammar of the simulator's vocabulary. `.ci/run` installs espeak-ng, libpocketsphinx3 and
//! pocketsphinx-en-us (and sets LAPA_REQUIRE_SPEECH=1, so CI never skips); elsewhere a missing
//! package skips these tests with a message naming it.
#![cfg(feature = "speech")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lapa_edge::instruction::{Command, Heard, InstructionSource};
use lapa_edge::speech::audio::{RATE, Recording, mix_at_snr, noise, write_wav};
use lapa_edge::speech::grammar::Vocabulary;
use lapa_edge::speech::recognize::{How, Interpreter, Thresholds, Understood};
use lapa_edge::speech::sphinx::{DEBIAN_MODEL, ModelFiles, PocketSphinx};
use lapa_edge::speech::vad::VadConfig;
use lapa_edge::speech::{Event, Speech};

/// espeak-ng's rendering of `text` at 16 kHz, or None (with a message) when espeak-ng is missing.
fn say(text: &str, voice: &str, speed: u32, pitch: u32) -> Option<Vec<i16>> {
    let out = std::process::Command::new("espeak-ng").args(["-v", voice, "-s", &speed.to_string(), "-p", &pitch.to_string(), "--stdout", text]).output();
    let out = match out {
        Ok(o) if o.status.success() => o.stdout,
        _ => {
            assert!(std::env::var_os("LAPA_REQUIRE_SPEECH").is_none(), "espeak-ng is missing and LAPA_REQUIRE_SPEECH is set");
            eprintln!("skipping: espeak-ng is not installed (Debian: apt install espeak-ng)");
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.wav");
    std::fs::write(&p, fix_stdout_wav(out)).unwrap();
    Some(lapa_edge::speech::audio::read_wav(&p).unwrap())
}

/// espeak-ng writes its WAV to a pipe with 0xffffffff sizes; set them from the length.
fn fix_stdout_wav(mut b: Vec<u8>) -> Vec<u8> {
    let n = b.len() as u32;
    b[4..8].copy_from_slice(&(n - 8).to_le_bytes());
    if let Some(i) = b.windows(4).position(|w| w == b"data") {
        b[i + 4..i + 8].copy_from_slice(&(n - i as u32 - 8).to_le_bytes());
    }
    b
}

fn recognizer(v: &Vocabulary) -> Option<PocketSphinx> {
    let model = match ModelFiles::in_dir(std::path::Path::new(DEBIAN_MODEL)) {
        Ok(m) => m,
        Err(e) => {
            assert!(std::env::var_os("LAPA_REQUIRE_SPEECH").is_none(), "{e}");
            eprintln!("skipping: {e}");
            return None;
        }
    };
    Some(PocketSphinx::new(&model, v).unwrap())
}

fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * RATE as usize / 1000]
}

/// The sample after which `speech` is quiet for good (its last sample above 1% of full scale).
fn speech_end(s: &[i16]) -> usize {
    s.iter().rposition(|v| v.unsigned_abs() > 327).map_or(0, |i| i + 1)
}

fn encoder() -> Box<dyn lapa_edge::speech::recognize::Embedder> {
    let device = lapa_model::device("cpu").unwrap();
    let e = lapa_model::text::SentenceEncoder::load(&lapa_model::text::minilm_dir(), &lapa_model::text::TextConfig::minilm(), &device)
        .unwrap_or_else(|e| panic!("{e} — the text encoder's files are fetched by scripts/fetch-minilm.sh (scripts/test.sh runs it)"));
    Box::new(e)
}

/// Everything a speech source hears from `audio`, and its decisions.
fn listen(audio: Vec<i16>, rec: PocketSphinx, embedder: Option<Box<dyn lapa_edge::speech::recognize::Embedder>>) -> (Vec<Heard>, Vec<Event>) {
    let interp = Interpreter::new(Vocabulary::sim(), Thresholds::default(), embedder);
    let mut sp = Speech::new(Box::new(Recording::new("test", audio)), Box::new(rec), interp, VadConfig::default());
    let mut heard = Vec::new();
    while let Some(h) = sp.next() {
        heard.push(h);
    }
    (heard, sp.events.clone())
}

#[test]
fn synthesised_commands_are_recognised_end_to_end_and_nonsense_is_not() {
    let v = Vocabulary::sim();
    let Some(rec) = recognizer(&v) else { return };
    let said = ["put the blue circle in the top left corner", "push the red square to the left", "show me the yellow triangle"];
    let mut audio = silence(500);
    for s in said {
        let Some(a) = say(s, "en-us", 160, 50) else { return };
        audio.extend(a);
        audio.extend(silence(900));
    }
    // Not instructions: an everyday sentence, and steady noise.
    audio.extend(say("the weather is nice today", "en-us", 160, 50).unwrap());
    audio.extend(silence(900));
    audio.extend(noise(RATE as usize, 4, true).iter().map(|v| v / 8));
    audio.extend(silence(900));
    let (heard, events) = listen(audio, rec, None);
    let instructions: Vec<&str> = heard
        .iter()
        .filter_map(|h| match h {
            Heard::Command(Command::Instruction(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(instructions, said, "events: {events:#?}");
    assert_eq!(heard.len(), said.len(), "nothing else was taken: {heard:?}");
    assert!(events.iter().any(|e| matches!(&e.understood, Understood::Unclear { .. })), "the weather sentence was heard and refused: {events:#?}");
    for e in &events {
        if let Understood::Instruction { how: How::Grammar { fit }, .. } = &e.understood {
            assert!(*fit >= Thresholds::default().fit);
        }
    }
}

#[test]
fn stop_is_acted_on_before_the_utterance_ends() {
    let v = Vocabulary::sim();
    if recognizer(&v).is_none() {
        return;
    }
    let Some(stop) = say("stop", "en-us", 160, 50) else { return };
    for snr in [None, Some(20.0)] {
        let mut audio = silence(600);
        audio.extend(say("point at the green square", "en-us", 160, 50).unwrap());
        audio.extend(silence(150));
        let start = audio.len();
        audio.extend(stop.iter());
        let end = start + speech_end(&stop);
        audio.extend(silence(1500));
        let audio = match snr {
            Some(x) => mix_at_snr(&audio, &noise(audio.len(), 8, true), x),
            None => audio,
        };
        let rec = recognizer(&v).unwrap();
        let (heard, events) = listen(audio, rec, None);
        let stops: Vec<&Event> = events.iter().filter(|e| e.understood == Understood::Stop).collect();
        assert_eq!(stops.len(), 1, "{snr:?}: one stop, acted on once: {events:#?}");
        let stop_event = stops[0];
        // Decided from the audio within 300 ms of the word's end (the early check after 200 ms of
        // quiet), not after the 450 ms hangover.
        let after = stop_event.decided_s - end as f64 / f64::from(RATE);
        assert!(after < 0.3 && after > 0.0, "{snr:?}: stop decided {after:.3} s after the word ended");
        assert_eq!(heard, vec![Heard::Command(Command::Instruction("point at the green square".into())), Heard::Command(Command::Stop)], "{snr:?}");
    }
}

#[test]
fn free_form_speech_maps_to_the_nearest_known_instruction_or_is_refused() {
    let mut interp = Interpreter::new(Vocabulary::sim(), Thresholds::default(), Some(encoder()));
    match interp.nearest("could you put the blue circle into the top left corner please").unwrap() {
        Understood::Instruction { text, how: How::Nearest { cosine, .. } } => {
            assert_eq!(text, "put the blue circle in the top left corner");
            assert!(cosine >= Thresholds::default().cosine, "{cosine}");
        }
        other => panic!("{other:?}"),
    }
    // Names an object, asks for something no template means: refused, with the nearest named.
    match interp.nearest("paint the blue circle with stripes").unwrap() {
        Understood::Unclear { why, .. } => assert!(why.contains("similar") && why.contains("threshold"), "{why}"),
        other => panic!("painting is not a task: {other:?}"),
    }
    // Names nothing the vocabulary knows: refused without guessing.
    match interp.nearest("make me a sandwich").unwrap() {
        Understood::Unclear { why, .. } => assert!(why.contains("names no object"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Without an encoder there is no free-form fallback.
    let mut bare = Interpreter::new(Vocabulary::sim(), Thresholds::default(), None);
    assert!(matches!(bare.nearest("could you put the blue circle into the top left corner").unwrap(), Understood::Unclear { .. }));
}

#[test]
fn a_sim_episode_is_driven_from_speech_to_success() {
    let v = Vocabulary::sim();
    if recognizer(&v).is_none() {
        return;
    }
    let scene = lapa_edge::sim::SimScene::new(&lapa_edge::sim::SceneSpec { seed: 0, ..Default::default() }).unwrap();
    let task = lapa_edge::sim::lock(&scene).instruction();
    // A paraphrase of the scene's task where there is one (the expert follows the meaning).
    let Some(mut utterance) = say(&task, "en-us", 160, 50) else { return };
    let mut audio = silence(400);
    audio.append(&mut utterance);
    audio.extend(silence(800));
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("utterance.wav");
    let (ok, stdout, stderr) = run_sim_hearing(&wav, &audio, "40");
    assert!(ok, "{stderr}");
    assert!(stderr.contains(&format!("speech: instruction {:?}", lapa_edge::speech::grammar::normalize(&task))), "{stderr}");
    assert!(stdout.contains("task: succeeded"), "{stdout}\n{stderr}");

    // Another task said: the arm holds, the task is not done.
    let other = if task.contains("red") { "point at the blue square" } else { "point at the red square" };
    let mut audio = silence(400);
    audio.extend(say(other, "en-us", 160, 50).unwrap());
    audio.extend(silence(800));
    let (_, stdout, stderr) = run_sim_hearing(&wav, &audio, "6");
    assert!(stderr.contains(&format!("speech: instruction {other:?}")), "{stderr}");
    assert!(stdout.contains("task: not achieved"), "{stdout}\n{stderr}");
}

/// `lapa-edge run --sim` (seed 0) hearing `audio` from a WAV file: (success, stdout, stderr).
fn run_sim_hearing(wav: &std::path::Path, audio: &[i16], max_seconds: &str) -> (bool, String, String) {
    write_wav(wav, audio).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lapa-edge"))
        .args(["run", "--sim", "--seed", "0", "--quiet", "--max-seconds", max_seconds, "--speech-file"])
        .arg(wav)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_speech_options_and_files_are_refused_by_name_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("u.wav");
    write_wav(&wav, &silence(500)).unwrap();
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, b"RIFF....WAVEnot audio").unwrap();
    let vocab = dir.path().join("v.toml");
    std::fs::write(&vocab, "templates = [{ task = \"a\", text = \"go {nowhere}\" }]\n").unwrap();
    let w = wav.to_str().unwrap();
    for (args, want) in [
        (vec!["--speech-file", w, "--speech-cosine", "2"], "--speech-cosine"),
        (vec!["--speech-file", w, "--speech-fit", "NaN"], "--speech-fit"),
        (vec!["--speech-file", dir.path().join("missing.wav").to_str().unwrap()], "missing.wav"),
        (vec!["--speech-file", junk.to_str().unwrap()], "not a readable WAV"),
        (vec!["--speech-file", w, "--vocabulary", vocab.to_str().unwrap()], "names slot {nowhere}"),
        (vec!["--speech-file", w, "--speech-model", dir.path().to_str().unwrap()], "pocketsphinx-en-us"),
    ] {
        let out =
            std::process::Command::new(env!("CARGO_BIN_EXE_lapa-edge")).args(["run", "--sim", "--quiet", "--max-seconds", "1"]).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
