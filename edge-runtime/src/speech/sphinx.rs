//! CMU PocketSphinx, loaded at run time.
//!
//! Which PocketSphinx: Debian's (and Ubuntu's, so JetPack's and Raspberry Pi OS's) packages
//! `libpocketsphinx3` + `pocketsphinx-en-us`, the 5prealpha API. It is packaged for both the
//! workstation and the boards, needs nothing compiled, and its English acoustic model, dictionary
//! and language model install beside it. The library is opened with `dlopen` when speech starts
//! rather than linked, so `lapa-edge` cross-builds for aarch64 with no C library of the target
//! and runs without the packages when speech is not asked for; a missing library or model is a
//! clear error naming the packages. (PocketSphinx 5.x from PyPI's sdist would need its C sources
//! compiled by our build for every target, for the same model.)
//!
//! Two searches over each utterance, both finite-state: the JSGF grammar of the vocabulary, and
//! a free loop over the vocabulary's words and [`COMMON_WORDS`]. The grammar's *fit* is their
//! path-score difference per frame: above 0, the grammar's sentence explains the audio better
//! than any sequence of the loop's words (its transitions are far more constrained, so a sentence
//! that was said wins clearly); below 0, the loop explains it better — something else was said. The loop's text is the free-form transcript the nearest-instruction
//! fallback reads. (Measured here first and dropped: 5prealpha's phone-loop search ran at about
//! 7× real time with the beams the grammar needs, and its n-gram search took 1.8 s for a 3.4 s
//! sentence and turned espeak-ng's voices into mostly wrong words.)
//!
//! Both searches live in two decoders over the same model: one with the costlier settings that
//! decide whole utterances ([`ACCURATE_FLAGS`]), and one for the early stop check, whose decoding
//! time is a stop's latency ([`BASE_FLAGS`] alone).

// The FFI boundary: the only unsafe code of the speech module, each block with its reason.
#![allow(unsafe_code)]

use super::recognize::{Hypothesis, Recognizer};
use super::{SpeechError, grammar::Vocabulary};
use libloading::{Library, Symbol};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

/// Where `pocketsphinx-en-us` installs the English model.
pub use super::DEBIAN_MODEL;

/// The libraries tried, in order.
const LIBS: [&str; 2] = ["libpocketsphinx.so.3", "libpocketsphinx.so"];
const BASE_LIBS: [&str; 2] = ["libsphinxbase.so.3", "libsphinxbase.so"];

/// Everyday words the free loop may use besides the vocabulary's own (those missing from the
/// dictionary are left out).
pub const COMMON_WORDS: &str = "a an the i you he she it we they me my your our this that these those there here what which who \
    when where why how is are was were be been am do does did have has had will would can could should may might must \
    shall not no yes ok okay please thanks thank hello hi hey oh uh um ah so and or but if then than of in on at to \
    from by with for about into over under up down out off again now today tomorrow time day night good bad nice new \
    old big small little one two three four five six seven eight nine ten go get take make put give bring come see \
    look find know think want need like let help tell say call turn open close start play work move show pick drop \
    hold keep leave find car cup door kitchen table water coffee food music light room house home weather phone \
    name man woman people thing things way world life hand head side back";

/// The English model's files.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub hmm: PathBuf,
    pub dict: PathBuf,
}

impl ModelFiles {
    /// The model in `dir` laid out as `pocketsphinx-en-us` installs it (the acoustic model
    /// `en-us/` and the dictionary `cmudict-en-us.dict`).
    pub fn in_dir(dir: &Path) -> Result<Self, SpeechError> {
        let f = Self { hmm: dir.join("en-us"), dict: dir.join("cmudict-en-us.dict") };
        for p in [&f.hmm.join("mdef"), &f.dict] {
            if !p.is_file() {
                return Err(SpeechError::Model(format!(
                    "{} is missing: the English speech model is not installed (Debian/Ubuntu: `apt install pocketsphinx-en-us`), or give --speech-model DIR",
                    p.display()
                )));
            }
        }
        Ok(f)
    }
}

/// The words of the pronunciation dictionary at `dict`.
fn dictionary(dict: &Path) -> Result<std::collections::HashSet<String>, SpeechError> {
    let text = std::fs::read_to_string(dict).map_err(|e| SpeechError::Model(format!("{}: {e}", dict.display())))?;
    Ok(text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

/// The free loop's grammar: any sequence of the vocabulary's words and the common words the
/// dictionary knows.
pub fn loop_jsgf(vocabulary: &Vocabulary, known: &std::collections::HashSet<String>) -> String {
    let mut words = vocabulary.words();
    words.extend(COMMON_WORDS.split_whitespace().filter(|w| known.contains(*w)).map(str::to_string));
    let words: Vec<String> = words.into_iter().collect();
    format!("#JSGF V1.0;\ngrammar free;\npublic <free> = <word>+;\n<word> = {};\n", words.join(" | "))
}

type Fn0<R> = unsafe extern "C" fn() -> R;
type CmdLnParse = unsafe extern "C" fn(*mut c_void, *const c_void, i32, *const *const c_char, i32) -> *mut c_void;
type PsInit = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type PsFree = unsafe extern "C" fn(*mut c_void) -> c_int;
type PsSetStr = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
type PsSetSearch = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type PsUtt = unsafe extern "C" fn(*mut c_void) -> c_int;
type PsProcessRaw = unsafe extern "C" fn(*mut c_void, *const i16, usize, c_int, c_int) -> c_int;
type PsGetHyp = unsafe extern "C" fn(*mut c_void, *mut i32) -> *const c_char;

/// The search settings both decoders share. Wider beams than the defaults (1e-48, 7e-29): with
/// those, the grammar search lost sentences of a dozen words before their end. Cepstral mean
/// normalisation over each utterance alone ("batch": utterances are decoded whole): with "live",
/// the previous utterance's voice and room set the start of the next.
const BASE_FLAGS: [&str; 10] = ["-beam", "1e-80", "-wbeam", "1e-60", "-bestpath", "no", "-logbase", "1.0001", "-cmn", "batch"];

/// What the decoder of whole utterances adds: the phone-transition beam widened too (`-pbeam`,
/// default 1e-48; the grammar and the loop are finite-state searches, which read `-beam`,
/// `-wbeam` and `-pbeam` only), the 8 best Gaussians of each mixture scored instead of 4, and the
/// spectrum's frequency axis warped by 1.1 (a vocal-tract length warp; the best of 0.9–1.2
/// tried). On the speech evaluation's clean instructions decoded by the grammar alone
/// (`bench/sphinx_flags.py`, results/speech/sphinx-flags.md) they take sentences decoded right
/// from 85% to 92%, most of it on voices the thresholds were not calibrated on, for about 30% more
/// decoding time (that table's CPU column), which the early stop check does not pay: it keeps
/// [`BASE_FLAGS`], the settings its bars were calibrated with. The price is the model loaded
/// twice (results/speech/README.md, run 8, gives the memory).
const ACCURATE_FLAGS: [&str; 6] = ["-pbeam", "1e-80", "-topn", "8", "-warp_params", "1.1"];

/// The library's entry points a decoder is driven with.
#[derive(Clone, Copy)]
struct Api {
    start_utt: PsUtt,
    end_utt: PsUtt,
    process_raw: PsProcessRaw,
    get_hyp: PsGetHyp,
    set_search: PsSetSearch,
    get_n_frames: PsUtt,
}

/// One decoder and its configuration, with the grammar and free-loop searches.
struct Decoder {
    ps: *mut c_void,
    config: *mut c_void,
    /// `ps_free` and `cmd_ln_free_r`.
    free: (PsFree, PsFree),
    /// The configuration's argument strings: sphinxbase keeps pointers into them, so they live
    /// until the config is freed.
    _args: Vec<CString>,
}

/// PocketSphinx with the vocabulary's grammar and the free word loop, twice: a decoder of whole
/// utterances ([`ACCURATE_FLAGS`]) and a cheaper one for the early stop check.
pub struct PocketSphinx {
    // Field order: the decoders are freed (in Drop) before the libraries unload.
    main: Decoder,
    quick: Decoder,
    api: Api,
    describe: String,
    _base: Library,
    _lib: Library,
}

// SAFETY: both decoders are used from one thread at a time (`&mut self`) and share no C state;
// PocketSphinx keeps no thread-local state, so moving them between threads is sound.
unsafe impl Send for PocketSphinx {}

impl std::fmt::Debug for PocketSphinx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

fn open_any(names: &[&str]) -> Result<Library, SpeechError> {
    let mut last = String::new();
    for n in names {
        // SAFETY: loading a shared library runs its initialisers; PocketSphinx's have no
        // preconditions.
        match unsafe { Library::new(n) } {
            Ok(l) => return Ok(l),
            Err(e) => last = e.to_string(),
        }
    }
    Err(SpeechError::Model(format!(
        "cannot load {} ({last}): PocketSphinx is not installed (Debian/Ubuntu: `apt install libpocketsphinx3 pocketsphinx-en-us`)",
        names[0]
    )))
}

fn sym<T: Copy>(lib: &Library, name: &str) -> Result<T, SpeechError> {
    // SAFETY: each symbol is declared with the signature of PocketSphinx 5prealpha's header
    // (`pocketsphinx.h`, `ps_search.h`, sphinxbase's `cmd_ln.h`).
    let s: Symbol<'_, T> =
        unsafe { lib.get(name.as_bytes()) }.map_err(|e| SpeechError::Model(format!("PocketSphinx lacks {name} ({e}): not the 5prealpha library")))?;
    Ok(*s)
}

fn cstr(s: &str) -> Result<CString, SpeechError> {
    CString::new(s).map_err(|_| SpeechError::Model(format!("{s:?} holds a NUL byte")))
}

impl PocketSphinx {
    /// Loads the library and the model, twice (the two decoders), each with the grammar and
    /// free-loop searches over `vocabulary`.
    /// Every word of the vocabulary must be in the model's dictionary (the error lists any that
    /// are not).
    pub fn new(model: &ModelFiles, vocabulary: &Vocabulary) -> Result<Self, SpeechError> {
        let known = dictionary(&model.dict)?;
        let missing: Vec<String> = vocabulary.words().into_iter().filter(|w| !known.contains(w)).collect();
        if !missing.is_empty() {
            return Err(SpeechError::Model(format!("the speech dictionary {} does not know: {}", model.dict.display(), missing.join(", "))));
        }
        let base = open_any(&BASE_LIBS)?;
        let lib = open_any(&LIBS)?;
        let cmd_ln_parse: CmdLnParse = sym(&base, "cmd_ln_parse_r")?;
        let cmd_ln_free: PsFree = sym(&base, "cmd_ln_free_r")?;
        let ps_args: Fn0<*const c_void> = sym(&lib, "ps_args")?;
        let ps_init: PsInit = sym(&lib, "ps_init")?;
        let ps_free: PsFree = sym(&lib, "ps_free")?;
        let set_jsgf: PsSetStr = sym(&lib, "ps_set_jsgf_string")?;
        let set_search: PsSetSearch = sym(&lib, "ps_set_search")?;
        // Every symbol before anything is allocated: a missing one leaks nothing.
        let (start_utt, end_utt, process_raw, get_hyp, get_n_frames) =
            (sym(&lib, "ps_start_utt")?, sym(&lib, "ps_end_utt")?, sym(&lib, "ps_process_raw")?, sym(&lib, "ps_get_hyp")?, sym(&lib, "ps_get_n_frames")?);
        let api = Api { start_utt, end_utt, process_raw, get_hyp, set_search, get_n_frames };
        let path = |p: &Path| p.to_str().map(str::to_string).ok_or_else(|| SpeechError::Model(format!("{} is not UTF-8", p.display())));
        let (hmm, dict) = (path(&model.hmm)?, path(&model.dict)?);
        let jsgf = cstr(&vocabulary.jsgf())?;
        let free = cstr(&loop_jsgf(vocabulary, &known))?;
        let (g, f) = (cstr("grammar")?, cstr("free")?);
        let decoder = |extra: &[&str]| -> Result<Decoder, SpeechError> {
            let args: Vec<&str> =
                ["-logfn", "/dev/null"].into_iter().chain(BASE_FLAGS).chain(extra.iter().copied()).chain(["-hmm", &hmm, "-dict", &dict]).collect();
            let cargs: Vec<CString> = args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
            let argv: Vec<*const c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
            // SAFETY: argv's strings live as long as the config (kept in `_args`: sphinxbase keeps
            // pointers to the option names); ps_args returns a static table.
            let config = unsafe { cmd_ln_parse(std::ptr::null_mut(), ps_args(), argv.len() as i32, argv.as_ptr(), 1) };
            if config.is_null() {
                return Err(SpeechError::Model("PocketSphinx refused its configuration".into()));
            }
            // SAFETY: config is a valid cmd_ln_t.
            let ps = unsafe { ps_init(config) };
            if ps.is_null() {
                // SAFETY: config came from cmd_ln_parse_r and is freed once.
                unsafe { cmd_ln_free(config) };
                return Err(SpeechError::Model(format!("PocketSphinx could not load the model in {}", model.hmm.display())));
            }
            // From here the decoder frees itself, on error too.
            let d = Decoder { ps, config, free: (ps_free, cmd_ln_free), _args: cargs };
            // SAFETY: ps is valid; the strings outlive each call (PocketSphinx copies them).
            unsafe {
                if set_jsgf(d.ps, g.as_ptr(), jsgf.as_ptr()) != 0 {
                    return Err(SpeechError::Model("PocketSphinx refused the generated JSGF grammar".into()));
                }
                if set_jsgf(d.ps, f.as_ptr(), free.as_ptr()) != 0 {
                    return Err(SpeechError::Model("PocketSphinx refused the free word loop".into()));
                }
            }
            Ok(d)
        };
        let (main, quick) = (decoder(&ACCURATE_FLAGS)?, decoder(&[])?);
        let describe = format!("PocketSphinx 5prealpha (grammar of {} templates; model {})", vocabulary.templates.len(), model.hmm.display());
        Ok(Self { main, quick, api, describe, _base: base, _lib: lib })
    }
}

impl Decoder {
    /// Decodes `audio` with the search `name`: the hypothesis, its path score (PocketSphinx's
    /// scaled log-base-1.0001 units) and the number of frames.
    fn decode(&mut self, api: Api, name: &str, audio: &[i16]) -> Result<(String, f64, i32), SpeechError> {
        let n = cstr(name)?;
        // Digital silence (a WAV padded with zeros) has no spectrum: PocketSphinx's features go
        // to -inf there and the grammar search ends nowhere. A ±1 LSB dither, the same every
        // time, keeps decoding deterministic and costs nothing audible (-90 dBFS).
        let mut seed = 0x9e3779b97f4a7c15u64;
        let audio: Vec<i16> = audio
            .iter()
            .map(|&v| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.saturating_add((seed % 3) as i16 - 1)
            })
            .collect();
        let fail = |what: &str| SpeechError::Recognizer(format!("PocketSphinx: {what} failed"));
        let ps = self.ps;
        // SAFETY: ps is valid; audio is a live slice of `audio.len()` samples.
        unsafe {
            if (api.set_search)(ps, n.as_ptr()) != 0 {
                return Err(fail("selecting the search"));
            }
            if (api.start_utt)(ps) != 0 {
                return Err(fail("starting the utterance"));
            }
            if (api.process_raw)(ps, audio.as_ptr(), audio.len(), 0, 1) < 0 {
                let _ = (api.end_utt)(ps);
                return Err(fail("processing the audio"));
            }
            if (api.end_utt)(ps) != 0 {
                return Err(fail("ending the utterance"));
            }
            let mut score = 0i32;
            let hyp = (api.get_hyp)(ps, &mut score);
            let text = if hyp.is_null() { String::new() } else { CStr::from_ptr(hyp).to_string_lossy().into_owned() };
            Ok((text, f64::from(score), (api.get_n_frames)(ps)))
        }
    }

    /// The grammar's best sentence and its fit against the free loop.
    fn hypothesis(&mut self, api: Api, audio: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
        if audio.len() < MIN_SAMPLES {
            return Ok(None);
        }
        let (text, g, frames) = self.decode(api, "grammar", audio)?;
        if text.trim().is_empty() || frames <= 0 {
            return Ok(None);
        }
        let (free, f, _) = self.decode(api, "free", audio)?;
        Ok(Some(Hypothesis { text: text.trim().to_string(), fit: ((g - f) / f64::from(frames)) as f32, free: Some(free.trim().to_string()) }))
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: both were made together in `PocketSphinx::new` and are freed once, here; the
        // libraries are unloaded after (PocketSphinx's field order).
        unsafe {
            (self.free.0)(self.ps);
            (self.free.1)(self.config);
        }
    }
}

impl Recognizer for PocketSphinx {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn grammar(&mut self, audio: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
        self.main.hypothesis(self.api, audio)
    }

    fn stop_check(&mut self, audio: &[i16]) -> Result<Option<Hypothesis>, SpeechError> {
        self.quick.hypothesis(self.api, audio)
    }

    fn free(&mut self, audio: &[i16]) -> Result<Option<String>, SpeechError> {
        if audio.len() < MIN_SAMPLES {
            return Ok(None);
        }
        let text = self.main.decode(self.api, "free", audio)?.0.trim().to_string();
        Ok((!text.is_empty()).then_some(text))
    }
}

/// Shorter audio is not decoded (100 ms: no word is that short).
const MIN_SAMPLES: usize = (super::audio::RATE / 10) as usize;
