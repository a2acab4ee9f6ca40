//! `lapa-edge`: the board binary.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lapa_boards::profile::{BoardProfile, SerialSection, load_board};
use lapa_boards::{ArmDescription, JointCalibration, SO101, SO101_LEADER, Unit, arm_by_name};
use lapa_bridge::arm::{Arm, SimArm, joint_calibrations};
use lapa_edge::calibrate as calib;
use lapa_edge::control::ControlSocket;
use lapa_edge::cyclelog::{self, LogFile, LogHeader, LogWriter};
use lapa_edge::hw::{self, BoxedArm};
use lapa_edge::pace::Histogram;
use lapa_edge::record::{Recorder, RunRecorder, SharedCamera};
use lapa_edge::remote::{RemoteOptions, RemotePolicy};
use lapa_edge::runtime::{self, Controls, EStopMode, EndReason, Flow, RunConfig, Summary};
use lapa_edge::safety::{SafetyConfig, SafetyFilter, flag, joint_limits};
use lapa_edge::sim::{SceneArm, SceneCamera, SceneSpec, SimExpertPolicy, SimScene, lock};
use lapa_edge::teleop::{SimOperator, TeleopConfig};
use lapa_model::policy::Policy;
use lapa_sim::{Split, TaskFamily};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "lapa-edge", version, about = "lapa on the board: camera → policy → safety filter → arm at a fixed rate")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the control loop: camera → policy → safety filter → arm at a fixed rate, with chunk
    /// blending, the control socket, the e-stop and the cycle log. `--board PROFILE` drives a
    /// real arm: the profile's servo bus, V4L2 camera, loop rate and GPIO e-stop button, with a
    /// `--bundle` or a `--remote` policy. `--sim` runs the same loop against the simulated SO-101
    /// and its camera (with the scripted expert when no policy is given). On a terminal, typed
    /// lines are control commands (`stop`, `release`, `pause`, `i NEW INSTRUCTION`, `q`).
    Run(Box<RunArgs>),
    /// Read a cycle log back: header, events, chunk arrivals, timing and safety summary, every
    /// cycle with --cycles, a PNG of commanded vs measured joints with --plot.
    Replay(ReplayArgs),
    /// Calibrate an arm as LeRobot does: torque off, centre it by hand (homing offset = raw −
    /// 2047), sweep every joint end to end; the limits go to the servos' EEPROM and to a LeRobot
    /// calibration JSON (in LeRobot's own folder unless --out), so the file works in both. With
    /// --apply FILE, a LeRobot calibration file is written to the arm instead. --sim calibrates
    /// the simulated SO-101 with a scripted hand.
    Calibrate(CalibrateArgs),
    /// Teleoperate and record: the leader arm (torque off, moved by hand) drives the follower
    /// through the safety filter, and each episode is recorded as a LeRobot v3.0 dataset (camera,
    /// state, action, instruction) — the labelled set `lapa` finetunes on. Type n (save, next),
    /// r (re-record) or q (save, stop) and Enter, or send next / rerecord / quit on --socket.
    /// --sim: the simulated leader, moved by the scripted expert, drives the simulated follower.
    Teleop(TeleopArgs),
    /// Check a board: profile, memory, camera, serial port, every servo (which did not answer, at
    /// which baud, what voltage it reports), the calibration file against the servos' EEPROM, the
    /// GPIO e-stop. Says what is wrong in plain words; exits non-zero on a failure.
    Doctor(DoctorArgs),
    /// Check a model bundle as `run` would load it: the signature against the trusted keys, the
    /// format, every field, every part's size and SHA-256, and the policy built from it. Prints
    /// one line (or JSON with --json) and exits non-zero when the bundle would not run.
    /// `lapa flash` runs it on the board before switching to a new bundle.
    Verify(VerifyArgs),
    /// Listen without an arm: cut the audio (--speech-file, or --speech-device until Ctrl-C)
    /// into utterances and print what each was understood as — an instruction (from the grammar,
    /// or the nearest known one to free-form speech), a stop, or nothing. --json prints one JSON
    /// object a line (the speech evaluation reads it); --grammar prints the JSGF grammar made
    /// from the vocabulary and exits.
    Listen(ListenArgs),
}

#[derive(clap::Args, Debug)]
struct ListenArgs {
    #[command(flatten)]
    speech: SpeechArgs,
    /// One JSON object per utterance: start/decided (seconds of audio), decode time, what it
    /// was understood as.
    #[arg(long)]
    json: bool,
    /// Print the grammar (JSGF) and exit.
    #[arg(long)]
    grammar: bool,
    /// Print the vocabulary as JSON (templates with their tasks, slot values) and exit.
    #[arg(long)]
    vocabulary_json: bool,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// The bundle folder.
    #[arg(long)]
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Board profile (built-in name or .toml path): adds its trusted_keys and builds the policy
    /// on its backend.
    #[arg(long)]
    board: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct DoctorArgs {
    #[command(flatten)]
    arm: ArmSelect,
    /// Compare this arm's LeRobot calibration file (<ARM_ID>.json in LeRobot's folder) with the servos.
    #[arg(long)]
    arm_id: Option<String>,
    /// The calibration file to compare, instead of LeRobot's folder.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Check this model bundle: signature, format version, every field, every part's size and
    /// SHA-256.
    #[arg(long)]
    bundle: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Sim: make this servo id silent (a cut cable).
    #[arg(long)]
    sim_silent: Vec<u8>,
    /// Sim: supply voltage of every servo, volts.
    #[arg(long)]
    sim_volts: Option<f32>,
}

#[derive(clap::Args, Debug)]
struct TeleopArgs {
    /// Simulated leader and follower in the tabletop scene; the scripted expert moves the leader
    /// (sim only: it plans from privileged scene state), each episode a new scene.
    #[arg(long, conflicts_with = "board")]
    sim: bool,
    /// Board profile (built-in name or .toml path): the follower's and leader's buses, the camera.
    #[arg(long, required_unless_present = "sim")]
    board: Option<String>,
    /// The leader's serial port, overriding the profile's [leader_serial].
    #[arg(long)]
    leader: Option<String>,
    /// Write the episodes here as a LeRobot v3.0 dataset (the folder must not exist).
    #[arg(long)]
    record: Option<PathBuf>,
    /// The task being demonstrated (sim: each scene's own instruction).
    #[arg(long)]
    instruction: Option<String>,
    /// Episodes to record.
    #[arg(long, default_value_t = 10)]
    episodes: usize,
    /// Longest episode, seconds.
    #[arg(long, default_value_t = 30.0)]
    episode_seconds: f32,
    /// Unrecorded time between episodes to put the scene back, seconds (sim: 0).
    #[arg(long, default_value_t = 10.0)]
    reset_seconds: f32,
    /// Servo loop rate, Hz (default: the board profile's, 30 in sim).
    #[arg(long)]
    rate: Option<u32>,
    /// Frames per second recorded (divides the rate; the sim data and the models use 10).
    #[arg(long, default_value_t = 10)]
    fps: u32,
    #[command(flatten)]
    scene: SceneArgs,
    /// Sim: seconds an episode goes on after its task succeeds.
    #[arg(long, default_value_t = 0.5)]
    settle_seconds: f32,
    /// Sim: do not pace against the wall clock (run as fast as the simulator steps).
    #[arg(long)]
    no_pace: bool,
    /// Listen for commands on this Unix socket.
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// Which arm a command works on.
#[derive(clap::Args, Debug)]
struct ArmSelect {
    /// The simulated SO-101 bus: six simulated STS3215 servos behind the real Feetech driver
    /// (calibrate: swept by a scripted hand).
    #[arg(long, conflicts_with = "board")]
    sim: bool,
    /// Board profile: a built-in name (raspberry_pi_5, jetson_orin_nano, jetson_agx_orin,
    /// x86_64_dev) or a .toml path. Its [serial] section says where the arm is.
    #[arg(long, required_unless_present = "sim")]
    board: Option<String>,
    /// The leader arm instead of the follower (the profile's [leader_serial]; its calibration
    /// file lives under LeRobot's teleoperators/ folder).
    #[arg(long)]
    leader: bool,
}

impl ArmSelect {
    /// The simulated arm's description.
    fn sim_description(&self) -> &'static ArmDescription {
        if self.leader { &SO101_LEADER } else { &SO101 }
    }

    /// The board, the arm's description and its bus.
    fn board(&self) -> Result<(BoardProfile, PathBuf, &'static ArmDescription, SerialSection)> {
        let (board, file) = load_board(self.board.as_deref().unwrap_or_default())?;
        let (name, serial) = if self.leader {
            let name = board.leader.clone().ok_or_else(|| anyhow!("{}: the board has no leader arm (`leader = ...`)", file.display()))?;
            (name, board.leader_serial.clone().ok_or_else(|| anyhow!("{}: no [leader_serial]", file.display()))?)
        } else {
            (board.arm.clone(), board.serial.clone())
        };
        let desc = arm_by_name(&name).ok_or_else(|| anyhow!("{}: no arm profile {name:?}", file.display()))?;
        Ok((board, file, desc, serial))
    }
}

#[derive(clap::Args, Debug)]
struct CalibrateArgs {
    #[command(flatten)]
    arm: ArmSelect,
    /// Name of this arm: the calibration file is <ARM_ID>.json (LeRobot's `--robot.id`).
    #[arg(long)]
    arm_id: String,
    /// Write the calibration JSON here instead of LeRobot's folder
    /// ($HF_LEROBOT_CALIBRATION/robots/so101_follower/<ARM_ID>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write this LeRobot calibration file to the arm's servos (no sweep).
    #[arg(long)]
    apply: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EStop {
    /// Keep commanding the last position.
    Hold,
    /// Turn the servos' torque off.
    TorqueOff,
}

/// Which bundles this board runs (signed ones only, unless told otherwise).
#[derive(clap::Args, Debug, Clone, Default)]
struct TrustArgs {
    /// A public key (`.pub`, from `lapa keys generate` on the workstation) whose signed bundles
    /// this board runs; repeatable, and added to the board profile's `trusted_keys`.
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// A folder of trusted public keys: every `*.pub` file in it (`lapa flash --install-key`
    /// puts keys in the flashed folder's `keys/`).
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// Development only: also run unsigned bundles and bundles signed by a key not installed.
    /// A bundle signed by an installed key must still verify.
    #[arg(long)]
    allow_unsigned: bool,
}

impl TrustArgs {
    /// The trust of these flags plus a profile's keys.
    fn trust(&self, profile_keys: &[String]) -> Result<lapa_model::signing::Trust> {
        let mut files: Vec<PathBuf> = profile_keys.iter().map(PathBuf::from).collect();
        files.extend(self.public_keys.iter().cloned());
        if let Some(dir) = &self.key_dir {
            let entries = std::fs::read_dir(dir).with_context(|| format!("--key-dir {}", dir.display()))?;
            let mut found = Vec::new();
            for e in entries {
                let path = e.with_context(|| format!("--key-dir {}", dir.display()))?.path();
                if path.extension().is_some_and(|x| x == "pub") {
                    found.push(path);
                }
            }
            // In name order, so errors and ids come out the same on every run.
            found.sort();
            files.extend(found);
        }
        Ok(lapa_model::signing::Trust::from_files(&files, self.allow_unsigned)?)
    }
}

/// The policy of an opened bundle: the int8 engine for a compressed bundle, else burn on the
/// board profile's `policy.backend` (flex: the CPU; wgpu or cuda: the board's GPU, in builds with
/// that feature; no profile, as in the sim: the CPU).
fn bundle_policy(path: &Path, bundle: &lapa_model::bundle::Bundle, profile_backend: Option<&str>) -> Result<Box<dyn Policy>> {
    let backend = match profile_backend {
        None | Some("flex") | Some("remote") => "cpu",
        Some(other) => other,
    };
    let device = lapa_model::device(backend).with_context(|| format!("the board profile's policy.backend = {backend:?}"))?;
    // A compressed bundle computes on the CPU's int8 kernels, whatever the backend.
    lapa_compress::bundle::open_policy(bundle, &device).with_context(|| format!("--bundle {}", path.display()))
}

/// Opens a bundle under `trust`, saying on stderr when its signature was not checked.
fn open_bundle(path: &std::path::Path, trust: &lapa_model::signing::Trust) -> Result<lapa_model::bundle::Bundle> {
    let bundle = lapa_model::bundle::Bundle::open(path, trust).with_context(|| format!("--bundle {}", path.display()))?;
    if let lapa_model::signing::Verified::Unchecked { reason } = &bundle.verified {
        eprintln!("warning: --allow-unsigned: running {} without a verified signature ({reason})", path.display());
    }
    Ok(bundle)
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Run against the simulated scene.
    #[arg(long, conflicts_with = "board")]
    sim: bool,
    /// Drive a real arm: a built-in board profile (`raspberry_pi_5`, `jetson_orin_nano`, …) or
    /// the path of one. Its follower bus, camera, control rate and e-stop pin are used.
    #[arg(long, value_name = "PROFILE")]
    board: Option<String>,
    #[command(flatten)]
    scene: SceneArgs,
    /// Control rate, Hz, 1..=100 (the servo loop; the policy's actions are interpolated onto
    /// it). Default: the board profile's `control_hz`; 30 with --sim.
    #[arg(long)]
    rate: Option<u32>,
    /// A model bundle (`lapa export`) to run: its burn policy on the CPU. Without one, the sim
    /// runs its scripted expert (privileged: it reads the scene, not the camera).
    #[arg(long, conflicts_with = "remote")]
    bundle: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// A remote policy server speaking openpi's websocket protocol (`lapa serve` on a GPU
    /// workstation, or an openpi server): `ws://host:8000`. The board keeps the camera, the loop
    /// and the safety filter; only the observation and the actions cross the network.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// The server's API key (`lapa serve --token`), sent as `Authorization: Api-Key …`; when not
    /// given, read from LAPA_SERVE_TOKEN (for a remote policy only).
    #[arg(long)]
    api_key: Option<String>,
    /// A remote reply must arrive within this, ms (default 2000); a late one drops the connection
    /// (the loop holds meanwhile) and the next request reconnects.
    #[arg(long)]
    remote_timeout_ms: Option<u64>,
    /// Actions per chunk of the sim expert policy (and of a remote server whose metadata does not
    /// say: its longer replies are cut to this).
    #[arg(long, default_value_t = 10)]
    chunk: usize,
    /// Rate of the policy's actions, fps (the sim data is recorded at 10).
    #[arg(long, default_value_t = 10.0)]
    policy_fps: f32,
    /// Ask for the next chunk when the newest has less than this fraction left.
    #[arg(long, default_value_t = 0.5)]
    refill: f32,
    /// Temporal-ensembling decay: weights exp(−m·age), newest first (0.85 ≈ 0.3 old + 0.7 new).
    #[arg(long, default_value_t = 0.85)]
    ensemble_decay: f32,
    /// What the e-stop does.
    #[arg(long, value_enum, default_value = "hold")]
    estop: EStop,
    /// The instruction (sim: the scene's own task instruction when absent; the sim expert does
    /// the scene's task only while the instruction names it, and holds still otherwise).
    /// With speech and no --instruction, the run waits, holding, for the first spoken one.
    #[arg(long)]
    instruction: Option<String>,
    #[command(flatten)]
    speech: SpeechArgs,
    /// Serve the web console here (`127.0.0.1:8080`; port 0 picks a free one): the camera, the
    /// instruction with a box to change it, the last command and the safety filter's state,
    /// timing, what speech heard, and a stop button. An address beyond loopback needs --ui-token.
    #[arg(long, value_name = "ADDR:PORT")]
    ui: Option<String>,
    /// The web console's token (16+ letters, digits or -_.~), required when --ui binds beyond
    /// loopback; the page is then opened as http://ADDR/?token=TOKEN. Default: $LAPA_UI_TOKEN.
    #[arg(long, requires = "ui")]
    ui_token: Option<String>,
    /// Write the per-cycle log here (read it with `lapa-edge replay`).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Listen for commands on this Unix socket, one per line: instruction TEXT, pause, resume,
    /// stop, release, quit, status, and watch (then each speech decision as it is made).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Stop after this many seconds of loop time (0: run until stopped, as a service does).
    #[arg(long, default_value_t = 30.0)]
    max_seconds: f32,
    /// Sim: end the run this many seconds after the task first succeeds (0: keep running).
    #[arg(long, default_value_t = 0.5)]
    settle_seconds: f32,
    /// CPU threads for the policy's inference, 1..=64 (the servo loop keeps its own thread).
    /// Default: the board profile's `policy.threads`; with --sim, every core but one (at least 1).
    #[arg(long)]
    threads: Option<usize>,
    /// Print no status line.
    #[arg(long)]
    quiet: bool,
    /// Record the run as a LeRobot v3.0 dataset here (the folder must not exist): the camera,
    /// the measured joints as `observation.state`, the commands sent as `action`, one episode per
    /// instruction; ticks while stopped or paused are left out. On-device corrections become data
    /// for the next `lapa train finetune`.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Frames a second recorded with --record (the sim data and the models use 10).
    #[arg(long, default_value_t = 10, requires = "record")]
    record_fps: u32,
    /// With --record, an instruction that runs longer is split into episodes of this length,
    /// seconds (an episode's frames are held in memory until it is encoded).
    #[arg(long, default_value_t = 60.0, requires = "record")]
    record_max_episode_seconds: f32,
    /// Also write the exit summary (timing, ticks, chunks, safety, the task's outcome in the
    /// sim) as JSON here, for scripts and benchmarks.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// The log `lapa-edge run --log` wrote.
    log: PathBuf,
    /// Print every cycle.
    #[arg(long)]
    cycles: bool,
    /// First and last tick printed / plotted.
    #[arg(long)]
    from: Option<u64>,
    #[arg(long)]
    to: Option<u64>,
    /// Draw commanded, proposed and measured joints against time, with safety events marked.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(a) => run(*a),
        Cmd::Replay(a) => replay(a),
        Cmd::Calibrate(a) => calibrate(a),
        Cmd::Teleop(a) => teleop(a),
        Cmd::Doctor(a) => doctor(a),
        Cmd::Verify(a) => verify(a),
        Cmd::Listen(a) => listen(a),
    }
}

fn listen(a: ListenArgs) -> Result<()> {
    use lapa_edge::instruction::InstructionSource;
    use lapa_edge::speech::recognize::{How, Understood};
    if a.grammar {
        print!("{}", a.speech.vocabulary()?.jsgf());
        return Ok(());
    }
    let vocabulary = a.speech.vocabulary()?;
    if a.vocabulary_json {
        let templates: Vec<_> = vocabulary.templates.iter().map(|t| serde_json::json!({ "task": t.task, "text": t.text })).collect();
        println!("{}", serde_json::json!({ "templates": templates, "slots": vocabulary.slots, "stop": lapa_edge::speech::grammar::STOP_PHRASES }));
        return Ok(());
    }
    if !a.speech.enabled() {
        bail!("give --speech-file WAV or --speech-device DEVICE");
    }
    // A file is read as fast as it decodes (its timing is in the stream, not the wall clock).
    let mut sp = a.speech.open_with(None, false, vocabulary.clone())?;
    let mut shown = 0;
    loop {
        let more = sp.next().is_some();
        for e in &sp.events[shown..] {
            if a.json {
                let (kind, text, how) = match &e.understood {
                    Understood::Stop => ("stop", String::new(), serde_json::Value::Null),
                    Understood::Instruction { text, how: How::Grammar { fit } } => {
                        ("instruction", text.clone(), serde_json::json!({ "grammar": { "fit": fit } }))
                    }
                    Understood::Instruction { text, how: How::Nearest { heard, cosine } } => {
                        ("instruction", text.clone(), serde_json::json!({ "nearest": { "heard": heard, "cosine": cosine } }))
                    }
                    Understood::Unclear { heard, why } => ("unclear", heard.clone(), serde_json::json!({ "why": why })),
                };
                // What the instruction means (task and slot values), for scoring.
                let meaning =
                    (kind == "instruction").then(|| vocabulary.parse(&text)).flatten().map(|p| serde_json::json!({ "task": p.task, "slots": p.slots }));
                println!(
                    "{}",
                    serde_json::json!({ "start_s": e.start_s, "decided_s": e.decided_s, "decode_s": e.decode_s, "kind": kind, "text": text, "how": how, "meaning": meaning })
                );
            } else {
                let what = match &e.understood {
                    Understood::Stop => "STOP".to_string(),
                    Understood::Instruction { text, how: How::Grammar { fit } } => format!("instruction {text:?} (grammar, fit {fit:.1})"),
                    Understood::Instruction { text, how: How::Nearest { heard, cosine } } => {
                        format!("instruction {text:?} (heard {heard:?}, cosine {cosine:.2})")
                    }
                    Understood::Unclear { heard, why } => format!("not understood {heard:?}: {why}"),
                };
                println!("{:7.2}–{:7.2} s  {what}  [{:.0} ms]", e.start_s, e.decided_s, e.decode_s * 1e3);
            }
        }
        shown = sp.events.len();
        if !more {
            if a.json {
                println!("{}", serde_json::json!({ "decode_s_total": sp.decode_s_total }));
            }
            return Ok(());
        }
    }
}

fn verify(a: VerifyArgs) -> Result<()> {
    // The arm the actions must drive: the board's, else the SO-101 the sim runs.
    let (keys, backend, arm) = match &a.board {
        Some(name) => {
            let (board, _) = load_board(name).with_context(|| format!("--board {name}"))?;
            let backend = Some(board.policy.backend.clone());
            let arm = arm_by_name(&board.arm).ok_or_else(|| anyhow!("--board {name}: arm {:?} is not a known arm profile", board.arm))?;
            (board.trusted_keys, backend, arm)
        }
        None => (Vec::new(), None, &SO101),
    };
    let trust = a.trust.trust(&keys)?;
    let bundle = lapa_model::bundle::Bundle::open(&a.bundle, &trust).with_context(|| format!("--bundle {}", a.bundle.display()))?;
    let policy = bundle_policy(&a.bundle, &bundle, backend.as_deref())?;
    // As the control loop checks before it moves anything.
    let spec = policy.action_spec();
    spec.validate().map_err(|e| anyhow!("--bundle {}: action spec: {e}", a.bundle.display()))?;
    if spec.names.iter().map(String::as_str).ne(arm.names().iter().copied()) {
        bail!("--bundle {}: the policy's actions {:?} are not the arm's joints {:?} ({})", a.bundle.display(), spec.names, arm.names(), arm.name);
    }
    let (signed, key) = match &bundle.verified {
        lapa_model::signing::Verified::Signed { key_id } => (true, key_id.clone()),
        lapa_model::signing::Verified::Unchecked { reason } => (false, reason.clone()),
    };
    let bytes: u64 = bundle.manifest.parts.values().map(|p| p.bytes).sum();
    if a.json {
        let v = serde_json::json!({
            "ok": true,
            "bundle": bundle.root,
            "name": bundle.manifest.name,
            "format": bundle.manifest.format,
            "signed": signed,
            "key_id": if signed { Some(&key) } else { None },
            "unchecked_reason": if signed { None } else { Some(&key) },
            "parts": bundle.manifest.parts.len(),
            "bytes": bytes,
            "requires": bundle.manifest.requires,
            "policy": policy.describe(),
        });
        println!("{v}");
    } else {
        let sig = if signed { format!("signed by key {key}") } else { format!("NOT VERIFIED ({key}; --allow-unsigned)") };
        println!(
            "ok: bundle {} ({}), format {}, {} parts, {:.1} MB, {sig}; policy {}",
            bundle.manifest.name,
            a.bundle.display(),
            bundle.manifest.format,
            bundle.manifest.parts.len(),
            bytes as f64 / 1e6,
            policy.describe()
        );
    }
    Ok(())
}

/// The simulated scene a command builds.
#[derive(clap::Args, Debug)]
struct SceneArgs {
    /// Scene seed (sim; teleop: episode k uses seed + k).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Task family (sim): push_to_side, move_next_to, pick_place, separate, line_up, point_at;
    /// drawn from the seed when absent.
    #[arg(long)]
    family: Option<String>,
    /// Generalisation split of the scene (sim): seen, unseen-objects, unseen-instructions,
    /// unseen-environment.
    #[arg(long, default_value = "seen")]
    split: String,
}

impl SceneArgs {
    /// `--family` and `--split`, parsed.
    fn choice(&self) -> Result<(Option<TaskFamily>, Split)> {
        let family = match self.family.as_deref() {
            None => None,
            Some(f) => Some(
                TaskFamily::from_name(f)
                    .ok_or_else(|| anyhow!("--family {f:?}: not a task family; one of {}", TaskFamily::ALL.map(|f| f.name()).join(", ")))?,
            ),
        };
        let split = Split::from_name(&self.split).ok_or_else(|| anyhow!("--split {:?}: one of {}", self.split, Split::ALL.map(|s| s.name()).join(", ")))?;
        Ok((family, split))
    }
}

/// What a real board gives the loop: the follower, its camera, its description, the e-stop
/// button's watcher (when the profile has one).
struct BoardHardware {
    arm: BoxedArm,
    camera: Box<dyn lapa_edge::camera::Camera>,
    desc: &'static ArmDescription,
    rate: u32,
    estop_pin: Option<u8>,
    status_led: Option<u8>,
    /// How the profile says the policy runs (backend, threads, server).
    policy: lapa_boards::profile::PolicySection,
    /// The profile's trusted bundle keys.
    trusted_keys: Vec<String>,
}

/// Opens the hardware a board profile names (the arm is opened, not yet connected).
fn open_board(name: &str, rate: Option<u32>) -> Result<BoardHardware> {
    let (board, file) = load_board(name)?;
    let desc = arm_by_name(&board.arm).ok_or_else(|| anyhow!("{}: no arm profile {:?}", file.display(), board.arm))?;
    let arm = hw::open_arm(&board.serial).map_err(|e| anyhow!("{}: [serial]: {e}", file.display()))?;
    let camera = open_camera(&board.camera).map_err(|e| anyhow!("{}: [camera]: {e}", file.display()))?;
    let estop_pin = board.gpio.as_ref().and_then(|g| g.estop);
    let status_led = board.gpio.as_ref().and_then(|g| g.status_led);
    Ok(BoardHardware {
        arm,
        camera,
        desc,
        rate: rate.unwrap_or(board.control_hz),
        estop_pin,
        status_led,
        policy: board.policy.clone(),
        trusted_keys: board.trusted_keys.clone(),
    })
}

#[cfg(feature = "v4l2")]
fn open_camera(c: &lapa_boards::profile::CameraSection) -> Result<Box<dyn lapa_edge::camera::Camera>> {
    use lapa_edge::v4l2::{PixelFormat, V4l2Camera, Want};
    let format = PixelFormat::from_name(&c.format).ok_or_else(|| anyhow!("format {:?}: not a camera format this build reads", c.format))?;
    Ok(Box::new(V4l2Camera::open(&c.device, &Want { format, width: c.width, height: c.height, fps: c.fps })?))
}

#[cfg(not(feature = "v4l2"))]
fn open_camera(c: &lapa_boards::profile::CameraSection) -> Result<Box<dyn lapa_edge::camera::Camera>> {
    bail!("{}: this lapa-edge was built without the v4l2 feature", c.device)
}

/// Watches the profile's e-stop button; a build without GPIO refuses a profile that has one
/// rather than run with the button ignored.
#[cfg(feature = "gpio")]
fn watch_estop_pin(pin: u8, controls: std::sync::Arc<Controls>) -> Result<lapa_edge::estop::EStopWatch> {
    let p = lapa_edge::estop::pi_pin(pin).map_err(|e| anyhow!("the profile's e-stop: {e}"))?;
    lapa_edge::estop::watch(p, controls, Duration::from_millis(5), format!("GPIO{pin}")).map_err(|e| anyhow!(e))
}

/// Prints what `run --record` wrote; an error when the recording failed or stopped early.
fn report_recording(recorded: Option<Result<lapa_edge::record::RunRecordSummary, lapa_edge::record::RecordError>>, dir: Option<&Path>) -> Result<()> {
    let dir = dir.map_or(String::new(), |p| p.display().to_string());
    match recorded {
        None => Ok(()),
        Some(Err(e)) => bail!("--record {dir}: {e}"),
        Some(Ok(s)) => {
            println!(
                "recorded: {} frames in {} episodes ({} tasks) → {}{}{}",
                s.dataset.frames,
                s.dataset.episodes,
                s.dataset.tasks,
                s.dataset.root.display(),
                if s.skipped_stopped > 0 { format!("; {} frame times left out while stopped or paused", s.skipped_stopped) } else { String::new() },
                if s.late > 0 { format!("; {} frame times missed (camera or disk too slow)", s.late) } else { String::new() }
            );
            match s.failure {
                Some(why) => bail!("--record {dir}: the recording stopped early ({why}); what came before it is saved"),
                None => Ok(()),
            }
        }
    }
}

/// The controls a signal ends (set once, before the handler is installed).
static SIGNAL_CONTROLS: std::sync::OnceLock<std::sync::Arc<Controls>> = std::sync::OnceLock::new();
static SIGNALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// A signal handler cannot be written without `unsafe`: see the SAFETY notes.
#[allow(unsafe_code)]
extern "C" fn on_quit_signal(_: nix::libc::c_int) {
    // Only async-signal-safe work here: atomics and write(2).
    if SIGNALS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
        let m = b"\nstopping now\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer outlives the call.
        unsafe {
            nix::libc::write(2, m.as_ptr().cast(), m.len());
            nix::libc::_exit(130);
        }
    }
    let m = b"\nstopping (again to stop at once)...\n";
    // SAFETY: as above.
    unsafe {
        nix::libc::write(2, m.as_ptr().cast(), m.len());
    }
    if let Some(c) = SIGNAL_CONTROLS.get() {
        c.quit();
    }
}

/// Ctrl-C, SIGTERM and SIGHUP end the run as `quit` does (the loop stops, the recording and the
/// log are saved, the LED goes off); a second one exits at once. A plain signal handler, no
/// thread (qemu-user on some hosts cannot start one, and the single-threaded commands run there).
#[allow(unsafe_code)]
fn quit_on_signal(controls: std::sync::Arc<Controls>) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    if SIGNAL_CONTROLS.set(controls).is_err() {
        return;
    }
    let action = SigAction::new(SigHandler::Handler(on_quit_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches atomics and calls async-signal-safe functions.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            eprintln!("warning: {sig}: {e}; it will end the run without saving");
        }
    }
}

/// The profile's status LED. A sign, not a safety device: when it cannot be driven, the run
/// goes on without it and says so.
#[cfg(feature = "gpio")]
fn start_status_led(pin: u8, controls: std::sync::Arc<Controls>) -> Option<lapa_edge::status_led::StatusLed> {
    let started = lapa_edge::status_led::pi_led(pin).and_then(|p| lapa_edge::status_led::drive(p, controls, Duration::from_millis(20), format!("GPIO{pin}")));
    match started {
        Ok(led) => {
            eprintln!("status LED: GPIO{pin} (on: may move; 1 Hz: paused; 4 Hz: stopped)");
            Some(led)
        }
        Err(e) => {
            eprintln!("status LED: {e}; running without it");
            None
        }
    }
}

#[cfg(not(feature = "gpio"))]
fn start_status_led(pin: u8, _controls: std::sync::Arc<Controls>) -> Option<lapa_edge::status_led::StatusLed> {
    eprintln!("status LED: the profile names GPIO{pin}, but this lapa-edge was built without the gpio feature; no LED");
    None
}

#[cfg(not(feature = "gpio"))]
fn watch_estop_pin(pin: u8, _controls: std::sync::Arc<Controls>) -> Result<lapa_edge::estop::EStopWatch> {
    bail!("the profile's e-stop is GPIO{pin}, but this lapa-edge was built without the gpio feature: it will not run with the button ignored")
}

fn run(a: RunArgs) -> Result<()> {
    if !a.sim && a.board.is_none() {
        bail!("give --board PROFILE (a real arm) or --sim (the simulated scene)");
    }
    // A board run needs a policy: --bundle, --remote, or the profile's remote server.
    let profile_remote = match (&a.board, &a.bundle, &a.remote) {
        (Some(b), None, None) => {
            let (profile, file) = load_board(b)?;
            match (profile.policy.backend.as_str(), &profile.policy.server) {
                ("remote", Some(server)) => Some(format!("ws://{server}")),
                _ => bail!(
                    "--board: give the policy, --bundle DIR (`lapa export`) or --remote URL (`lapa serve`), or set policy.backend = \"remote\" and policy.server in {}; the scripted expert exists only in the sim",
                    file.display()
                ),
            }
        }
        _ => None,
    };
    let remote = a.remote.clone().or(profile_remote);
    if remote.is_none() {
        for (flag, given) in [("--api-key", a.api_key.is_some()), ("--remote-timeout-ms", a.remote_timeout_ms.is_some())] {
            if given {
                bail!("{flag} is for a remote policy (--remote URL, or a profile with policy.backend = \"remote\")");
            }
        }
    }
    let api_key = a.api_key.clone().or_else(|| std::env::var("LAPA_SERVE_TOKEN").ok().filter(|t| !t.is_empty()));
    let remote_timeout_ms = a.remote_timeout_ms.unwrap_or(2000);
    if a.board.is_some() && a.instruction.is_none() {
        bail!("--board: give --instruction (what the arm should do)");
    }
    let (family, split) = a.scene.choice()?;
    if !(a.max_seconds.is_finite() && a.max_seconds >= 0.0) {
        bail!("--max-seconds {}: must be a number >= 0 (0: no limit)", a.max_seconds);
    }
    if !(a.settle_seconds.is_finite() && a.settle_seconds >= 0.0) {
        bail!("--settle-seconds {}: must be a number ≥ 0", a.settle_seconds);
    }
    if let Some(r) = a.rate
        && !(1..=100).contains(&r)
    {
        bail!("--rate {r}: the servo loop runs at 1..=100 Hz");
    }
    if let Some(r) = &a.record
        && r.exists()
    {
        bail!("--record {}: already exists (a recording never overwrites; pick a new folder)", r.display());
    }
    if !(1..=60).contains(&a.record_fps) {
        bail!("--record-fps {}: give 1..=60", a.record_fps);
    }
    if !(a.record_max_episode_seconds.is_finite() && (1.0..=3600.0).contains(&a.record_max_episode_seconds)) {
        bail!("--record-max-episode-seconds {}: give 1..=3600", a.record_max_episode_seconds);
    }
    if let Some(t) = a.threads
        && !(1..=64).contains(&t)
    {
        bail!("--threads {t}: give 1..=64 inference threads");
    }
    // The hardware first: a missing port or camera is reported before a policy loads.
    let board = a.board.as_deref().map(|b| open_board(b, a.rate)).transpose()?;
    let threads = a.threads.unwrap_or_else(|| match &board {
        Some(b) => b.policy.threads,
        None => std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
    });
    // burn's CPU backend computes on rayon's global pool.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("sizing the inference thread pool")?;
    let rate = board.as_ref().map_or(a.rate.unwrap_or(30), |b| b.rate);
    let scene = match board {
        Some(_) => None,
        None => {
            Some(SimScene::new(&SceneSpec { seed: a.scene.seed, family, split, rate_hz: rate, ..SceneSpec::default() }).map_err(|e| anyhow!("--rate: {e}"))?)
        }
    };
    let desc: &'static ArmDescription = board.as_ref().map_or(&SO101, |b| b.desc);
    let mut opened_bundle = None;
    let policy: Box<dyn Policy> = match &a.bundle {
        Some(b) => {
            let trust = a.trust.trust(board.as_ref().map_or(&[][..], |h| &h.trusted_keys))?;
            let bundle = open_bundle(b, &trust)?;
            let p = bundle_policy(b, &bundle, board.as_ref().map(|b| b.policy.backend.as_str()))?;
            opened_bundle = Some(bundle);
            p
        }
        None => match &remote {
            Some(url) => {
                if remote_timeout_ms == 0 {
                    bail!("--remote-timeout-ms must be positive");
                }
                let fallback = runtime::arm_action_spec(desc, a.policy_fps, a.chunk);
                let opts = RemoteOptions {
                    api_key: api_key.clone(),
                    reply_timeout: Duration::from_millis(remote_timeout_ms),
                    fallback_spec: Some(fallback),
                    ..RemoteOptions::default()
                };
                Box::new(RemotePolicy::connect(url, opts).with_context(|| format!("--remote {url}"))?)
            }
            None => match &scene {
                Some(sc) => Box::new(SimExpertPolicy::new(sc.clone(), a.policy_fps, a.chunk).map_err(|e| anyhow!("--policy-fps/--chunk: {e}"))?),
                None => unreachable!("a board run without a policy was refused above"),
            },
        },
    };
    // Speech is set up (model, vocabulary, microphone checked) before anything moves.
    let speech = a.speech.enabled().then(|| a.speech.open(opened_bundle.as_ref())).transpose()?;
    let scene_instruction = scene.as_ref().map(|sc| lock(sc).instruction());
    // With speech and no --instruction the run waits, holding, for the first spoken one.
    let wait_for_speech = speech.is_some() && a.instruction.is_none();
    let instruction = match wait_for_speech {
        true => "(waiting for a spoken instruction)".to_string(),
        false => a.instruction.clone().or_else(|| scene_instruction.clone()).unwrap_or_default(),
    };
    let controls = Controls::new(&instruction).map_err(|e| anyhow!("--instruction: {e}"))?;
    if wait_for_speech {
        controls.set_paused(true);
    }
    quit_on_signal(controls.clone());
    let cfg = RunConfig {
        rate_hz: rate as f32,
        refill: a.refill,
        ensemble_decay: a.ensemble_decay,
        estop: match a.estop {
            EStop::Hold => EStopMode::Hold,
            EStop::TorqueOff => EStopMode::TorqueOff,
        },
        max_ticks: (a.max_seconds > 0.0).then(|| (a.max_seconds * rate as f32).ceil() as u64),
        ..RunConfig::default()
    };
    cfg.validate().map_err(|e| anyhow!("--{e}"))?;

    let status_led = board.as_ref().and_then(|b| b.status_led);
    let (mut arm, camera, estop_pin): (BoxedArm, Box<dyn lapa_edge::camera::Camera>, Option<u8>) = match (board, &scene) {
        (Some(b), _) => (b.arm, b.camera, b.estop_pin),
        (None, Some(sc)) => (Box::new(SceneArm::new(sc.clone())), Box::new(SceneCamera::new(sc.clone())), None),
        (None, None) => unreachable!("a sim run has a scene"),
    };
    // With --record the camera is shared by the policy's thread and the recorder's.
    let (camera, record_camera): (Box<dyn lapa_edge::camera::Camera>, Option<SharedCamera>) = match &a.record {
        Some(_) => {
            let shared = SharedCamera::new(camera);
            (Box::new(shared.clone()), Some(shared))
        }
        None => (camera, None),
    };
    let info = arm.connect().with_context(|| format!("connecting the {}", desc.name))?;
    let cal = joint_calibrations(&arm.read_calibration().context("reading the calibration")?);
    let limits = joint_limits(desc, &cal).context("the arm's calibration")?;
    let safety_cfg = SafetyConfig::default();
    let safety = SafetyFilter::new(safety_cfg, desc, limits, cfg.rate_hz).map_err(|e| anyhow!("safety: {e}"))?;
    // The button is watched for the whole run, from before the first command.
    let _estop_watch = estop_pin.map(|pin| watch_estop_pin(pin, controls.clone())).transpose()?;
    let status_led_handle = status_led.and_then(|pin| start_status_led(pin, controls.clone()));
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        lapa_edge::control::spawn_stdin(controls.clone());
    }

    eprintln!("arm: {}", info.description);
    eprintln!("camera: {}", lapa_edge::camera::Camera::describe(camera.as_ref()));
    let policy_label = policy.describe();
    eprintln!("policy: {policy_label} ({threads} inference threads)");
    if let Some(pin) = estop_pin {
        eprintln!("e-stop: GPIO{pin} (normally closed to ground; open = stop)");
    }
    match &scene_instruction {
        Some(task) => eprintln!(
            "task: {task:?}{}",
            if (a.instruction.is_some() || wait_for_speech) && a.bundle.is_none() && remote.is_none() {
                " (the sim expert does it only while the instruction names it)"
            } else {
                ""
            }
        ),
        None => eprintln!("instruction: {instruction:?}"),
    }
    let spec = policy.action_spec().clone();
    eprintln!("loop: {} Hz, chunks of {} at {} fps, refill below {:.0}%, e-stop {:?}", rate, spec.chunk, spec.fps, a.refill * 100.0, cfg.estop);

    let log_file = match &a.log {
        Some(p) => {
            let header = LogHeader {
                format: cyclelog::FORMAT,
                arm: desc.name.into(),
                joints: desc.names().iter().map(|s| s.to_string()).collect(),
                units: desc.joints.iter().map(|j| j.unit.symbol().to_string()).collect(),
                rate_hz: cfg.rate_hz,
                policy: policy.describe(),
                camera: lapa_edge::camera::Camera::describe(camera.as_ref()),
                instruction: instruction.clone(),
                safety: safety_cfg,
            };
            Some(LogFile::create(p, &header)?)
        }
        None => None,
    };
    let writer = log_file.as_ref().map_or_else(LogWriter::disabled, LogFile::writer);
    let _socket = match &a.socket {
        Some(p) => {
            let s = ControlSocket::bind(p, controls.clone()).map_err(|e| anyhow!("--socket {e}"))?;
            eprintln!("control socket: {} ({})", p.display(), lapa_edge::control::COMMANDS);
            Some(s)
        }
        None => None,
    };

    let recorder = match (&a.record, record_camera) {
        (Some(dir), Some(cam)) => {
            let max_frames = (a.record_max_episode_seconds * a.record_fps as f32).round().max(1.0) as usize;
            let r = RunRecorder::start(dir, desc, a.record_fps, max_frames, cam, controls.clone()).with_context(|| format!("--record {}", dir.display()))?;
            eprintln!("recording: {} at {} fps", dir.display(), a.record_fps);
            Some(r)
        }
        _ => None,
    };
    if let Some(sp) = speech {
        let sp = sp.echo_to(controls.clone());
        let sp = if wait_for_speech { sp.resume_on_first_instruction() } else { sp };
        eprintln!("speech: listening{}", if wait_for_speech { " (the arm holds until an instruction is heard)" } else { "" });
        lapa_edge::instruction::spawn(Box::new(sp), controls.clone()).context("starting the speech thread")?;
    }
    // The web console: its own threads; the loop and the camera publish without waiting.
    let console_state = a.ui.as_ref().map(|_| lapa_edge::console::ConsoleState::new());
    let camera: Box<dyn lapa_edge::camera::Camera> = match &console_state {
        Some(st) => Box::new(lapa_edge::console::ConsoleCamera::new(camera, st.clone())),
        None => camera,
    };
    let _console = match (&a.ui, &console_state) {
        (Some(addr), Some(st)) => {
            let token = a.ui_token.clone().or_else(|| std::env::var("LAPA_UI_TOKEN").ok().filter(|t| !t.is_empty()));
            let c = lapa_edge::console::Console::bind(addr, token.clone(), controls.clone(), st.clone()).map_err(|e| anyhow!("--ui {e}"))?;
            eprintln!("web console: http://{}/{}", c.addr, if token.is_some() { "?token=…" } else { "" });
            Some(c)
        }
        _ => None,
    };
    let settle_ticks = (a.settle_seconds * rate as f32).round() as u64;
    let mut succeeded_at: Option<u64> = None;
    let mut last_status = Instant::now();
    let sim = scene.clone();
    let quiet = a.quiet;
    if controls.quitting() {
        // Ctrl-C while starting up: nothing has moved yet.
        drop(recorder);
        bail!("stopped before the loop started");
    }
    let result = runtime::run(arm.as_mut(), camera, policy, safety, &controls, &writer, &cfg, |c| {
        if quiet {
        } else if last_status.elapsed() > Duration::from_millis(500) {
            last_status = Instant::now();
            eprint!("\r{}   ", c.stats.line());
            let _ = std::io::stderr().flush();
        }
        if let Some(st) = &console_state {
            st.publish_cycle(c);
        }
        if succeeded_at.is_none() && sim.as_ref().is_some_and(|sc| lock(sc).success()) {
            succeeded_at = Some(c.tick);
        }
        if let Some(r) = &recorder {
            r.publish(c.tick, controls.instruction_version(), &c.reading.joints, &c.filtered.command, c.filtered.flags);
            if r.stopped() {
                // Asked to record, and the recording stopped (its reason comes with the summary).
                eprintln!("\nthe recording stopped; ending the run");
                return Flow::Stop;
            }
        }
        match succeeded_at {
            Some(t) if settle_ticks > 0 && c.tick >= t + settle_ticks => Flow::Stop,
            _ => Flow::Continue,
        }
    });
    // The loop has ended: the LED says so, and the recording stops before anything else can fail.
    drop(status_led_handle);
    let recorded = recorder.map(RunRecorder::finish);
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            if let Err(r) = report_recording(recorded, a.record.as_deref()) {
                eprintln!("{r:#}");
            }
            bail!(e);
        }
    };
    drop(writer);
    if !quiet {
        eprintln!();
    }
    print_summary(&summary, cfg.rate_hz);
    let mut task = serde_json::Value::Null;
    if let Some(sc) = &scene {
        let success = lock(sc).success();
        match succeeded_at {
            Some(t) => println!("task: succeeded at {:.2} s (tick {t}){}", t as f32 / cfg.rate_hz, if success { "" } else { ", but was undone by the end" }),
            None => println!("task: not achieved in {:.1} s", summary.stats.ticks as f32 / cfg.rate_hz),
        }
        task = serde_json::json!({ "succeeded_at_s": succeeded_at.map(|t| t as f32 / cfg.rate_hz), "success_at_end": success });
    }
    if let Some(path) = &a.summary_json {
        let st = &summary.stats;
        let v = serde_json::json!({
            "end": format!("{:?}", summary.end), "rate_hz": cfg.rate_hz, "inference_threads": threads, "policy": policy_label,
            "ticks": st.ticks, "dropped_ticks": st.dropped, "starved_ticks": st.starved, "warmup_ticks": st.warmup,
            "period_p50_ms": st.period.quantile_ms(0.5), "period_p99_ms": st.period.quantile_ms(0.99), "period_max_ms": st.period.max_ms(),
            "start_late_p99_ms": st.lateness.quantile_ms(0.99), "work_p99_ms": st.work.quantile_ms(0.99),
            "chunks": st.chunks, "late_chunks": st.late_chunks, "policy_errors": st.policy_errors, "arm_errors": st.arm_errors,
            "inference_p50_ms": st.inference.quantile_ms(0.5), "inference_p99_ms": st.inference.quantile_ms(0.99),
            "safety": st.flags.line(), "log_dropped": summary.log_dropped, "task": task,
        });
        lapa_fs::atomic_write(path, serde_json::to_string_pretty(&v)?.as_bytes()).with_context(|| format!("--summary-json {}", path.display()))?;
    }
    if let Some(f) = log_file {
        let totals = f.finish()?;
        println!(
            "log: {} records → {}{}",
            totals.written,
            a.log.as_deref().map_or(String::new(), |p| p.display().to_string()),
            if totals.dropped > 0 { format!(" ({} dropped: the disk was too slow)", totals.dropped) } else { String::new() }
        );
    }
    report_recording(recorded, a.record.as_deref())?;
    if let EndReason::Failed(why) = &summary.end {
        bail!("the run failed: {why}");
    }
    Ok(())
}

/// Spoken instructions (`run` and `listen`).
#[derive(Debug, Clone, clap::Args)]
struct SpeechArgs {
    /// Take spoken instructions from this WAV file, played as a microphone in real time: each
    /// utterance is recognised against the vocabulary's grammar; "stop" engages the e-stop.
    #[arg(long, value_name = "WAV")]
    speech_file: Option<PathBuf>,
    /// Take spoken instructions from this ALSA capture device (`default`, `plughw:1,0`; list them
    /// with `arecord -L`). Needs a build with the `alsa` feature.
    #[arg(long, value_name = "DEVICE", conflicts_with = "speech_file")]
    speech_device: Option<String>,
    /// The PocketSphinx English model folder (Debian/Ubuntu: `apt install pocketsphinx-en-us`).
    #[arg(long, value_name = "DIR", default_value = lapa_edge::speech::DEBIAN_MODEL)]
    speech_model: PathBuf,
    /// The instructions speech knows, as a TOML vocabulary of templates and slot values
    /// (default: the simulator's task templates and paraphrases).
    #[arg(long, value_name = "FILE")]
    vocabulary: Option<PathBuf>,
    /// Take a grammar sentence when its fit to the audio is at least this: its path score minus
    /// that of a free loop over the same words and everyday English, per frame (sentences said
    /// fit at about +4 to +20, other speech forced onto the grammar at about −10 to −20). Below
    /// it, the free-form words are mapped to the nearest known instruction instead.
    #[arg(long, default_value_t = lapa_edge::speech::recognize::Thresholds::default().fit, allow_negative_numbers = true)]
    speech_fit: f32,
    /// Push-to-talk: listen only while a button on this GPIO line (BCM numbering; the button to
    /// ground, the line pulled up) is held; letting go ends the utterance at once. Raspberry Pi.
    #[arg(long, value_name = "BCM")]
    speech_ptt_gpio: Option<u8>,
    /// The cosine similarity (policy's sentence encoder) at which free-form speech is mapped to
    /// the nearest known instruction; below it the runtime asks again.
    #[arg(long, default_value_t = lapa_edge::speech::recognize::Thresholds::default().cosine)]
    speech_cosine: f32,
}

impl SpeechArgs {
    fn enabled(&self) -> bool {
        self.speech_file.is_some() || self.speech_device.is_some()
    }

    /// The microphone, the recogniser and the interpreter, checked before anything moves.
    /// `bundle`: the policy's bundle, whose sentence encoder maps free-form speech (else the
    /// installed all-MiniLM-L6-v2; without either, only grammar sentences are taken).
    fn vocabulary(&self) -> Result<lapa_edge::speech::grammar::Vocabulary> {
        Ok(match &self.vocabulary {
            Some(p) => lapa_edge::speech::grammar::Vocabulary::load(p)?,
            None => lapa_edge::speech::grammar::Vocabulary::sim(),
        })
    }

    fn open(&self, bundle: Option<&lapa_model::bundle::Bundle>) -> Result<lapa_edge::speech::Speech> {
        self.open_with(bundle, true, self.vocabulary()?)
    }

    /// `realtime`: a --speech-file plays at the wall clock's pace (as a microphone would).
    fn open_with(
        &self,
        bundle: Option<&lapa_model::bundle::Bundle>,
        realtime: bool,
        vocabulary: lapa_edge::speech::grammar::Vocabulary,
    ) -> Result<lapa_edge::speech::Speech> {
        use lapa_edge::speech::{audio, recognize, vad};
        if !self.speech_fit.is_finite() {
            bail!("--speech-fit {}: give a number (a per-frame score difference)", self.speech_fit);
        }
        if !(self.speech_cosine.is_finite() && (0.0..=1.0).contains(&self.speech_cosine)) {
            bail!("--speech-cosine {}: give 0..=1", self.speech_cosine);
        }
        let raw: Box<dyn audio::Microphone> = match (&self.speech_file, &self.speech_device) {
            (Some(f), _) => {
                let r = audio::Recording::open(f).with_context(|| "--speech-file")?;
                Box::new(if realtime { r.realtime() } else { r })
            }
            (None, Some(d)) => open_alsa(d)?,
            (None, None) => bail!("no microphone: give --speech-file or --speech-device"),
        };
        // A live source is read on its own thread (a long decode never stalls the device), with
        // the push-to-talk button sampled beside the audio.
        let mic: Box<dyn audio::Microphone> = match (self.speech_ptt_gpio, realtime || self.speech_device.is_some()) {
            (Some(bcm), _) => {
                eprintln!("speech: push-to-talk on GPIO{bcm} (held = low)");
                Box::new(audio::Threaded::with_button(raw, ptt_button(bcm)?)?)
            }
            (None, true) => Box::new(audio::Threaded::new(raw)?),
            (None, false) => raw,
        };
        let rec = open_recognizer(&self.speech_model, &vocabulary)?;
        let embedder = sentence_encoder(bundle);
        let thresholds = recognize::Thresholds { fit: self.speech_fit, cosine: self.speech_cosine, ..recognize::Thresholds::default() };
        eprintln!(
            "speech: {} → {}{}",
            mic.describe(),
            rec.describe(),
            if embedder.is_some() {
                ", free-form speech mapped by the policy's sentence encoder"
            } else {
                " (grammar sentences only: no sentence encoder installed)"
            }
        );
        let interp = recognize::Interpreter::new(vocabulary, thresholds, embedder);
        Ok(lapa_edge::speech::Speech::new(mic, rec, interp, vad::VadConfig::default()))
    }
}

#[cfg(feature = "gpio")]
fn ptt_button(bcm: u8) -> Result<Box<dyn FnMut() -> bool + Send>> {
    let pin = lapa_edge::estop::pi_pin(bcm).map_err(|e| anyhow!("--speech-ptt-gpio: {e}"))?;
    Ok(lapa_edge::speech::held_while_low(pin))
}

#[cfg(not(feature = "gpio"))]
fn ptt_button(bcm: u8) -> Result<Box<dyn FnMut() -> bool + Send>> {
    bail!("--speech-ptt-gpio {bcm}: this lapa-edge was built without GPIO support (the `gpio` feature)")
}

#[cfg(feature = "alsa")]
fn open_alsa(device: &str) -> Result<Box<dyn lapa_edge::speech::audio::Microphone>> {
    Ok(Box::new(lapa_edge::speech::audio::AlsaMic::open(device).context("--speech-device")?))
}

#[cfg(not(feature = "alsa"))]
fn open_alsa(device: &str) -> Result<Box<dyn lapa_edge::speech::audio::Microphone>> {
    bail!("--speech-device {device}: this lapa-edge was built without ALSA (cargo build --features alsa; Debian libasound2-dev)")
}

#[cfg(feature = "speech")]
fn open_recognizer(model: &Path, vocabulary: &lapa_edge::speech::grammar::Vocabulary) -> Result<Box<dyn lapa_edge::speech::recognize::Recognizer>> {
    use lapa_edge::speech::sphinx::{ModelFiles, PocketSphinx};
    let files = ModelFiles::in_dir(model).context("--speech-model")?;
    Ok(Box::new(PocketSphinx::new(&files, vocabulary)?))
}

#[cfg(not(feature = "speech"))]
fn open_recognizer(_: &Path, _: &lapa_edge::speech::grammar::Vocabulary) -> Result<Box<dyn lapa_edge::speech::recognize::Recognizer>> {
    bail!("speech: this lapa-edge was built without a recogniser (the `speech` feature)")
}

/// The policy's sentence encoder for free-form speech: the bundle's all-MiniLM-L6-v2, else the
/// installed one; `None` (with a note) when neither loads.
fn sentence_encoder(bundle: Option<&lapa_model::bundle::Bundle>) -> Option<Box<dyn lapa_edge::speech::recognize::Embedder>> {
    use lapa_model::text::{SentenceEncoder, TextConfig};
    let device = lapa_model::device("cpu").ok()?;
    let from_bundle = bundle.filter(|b| b.manifest.text_encoder.as_ref().is_some_and(|t| t.kind.contains("minilm"))).and_then(|b| {
        let [a, c, d] = lapa_model::vla::export::TEXT_PARTS.map(|p| b.part(p));
        Some([a?, c?, d?])
    });
    let loaded = match from_bundle {
        Some(files) => SentenceEncoder::load_files(&files, &TextConfig::minilm(), &device),
        None => SentenceEncoder::load(&lapa_model::text::minilm_dir(), &TextConfig::minilm(), &device),
    };
    match loaded {
        Ok(e) => Some(Box::new(e)),
        Err(e) => {
            eprintln!("speech: no free-form fallback ({e})");
            None
        }
    }
}

fn calibrate(a: CalibrateArgs) -> Result<()> {
    calib::check_arm_id(&a.arm_id)?;
    let (desc, mut arm, mut guide): (&'static ArmDescription, BoxedArm, Box<dyn calib::Guide>) = if a.arm.sim {
        let desc = a.arm.sim_description();
        let arm = SimArm::new();
        let hand = calib::ScriptedHand::new(arm.bus.clone(), desc);
        (desc, Box::new(arm), Box::new(hand))
    } else {
        let (_, file, desc, serial) = a.arm.board()?;
        let arm = hw::open_arm(&serial).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        (desc, arm, Box::new(calib::TerminalGuide::new()))
    };
    let info = arm.connect().with_context(|| format!("connecting the {}", desc.name))?;
    eprintln!("arm: {} ({})", desc.name, info.description);
    if let Some(file) = &a.apply {
        let cal = calib::read_lerobot(file, desc)?;
        arm.write_calibration(&calib::to_wire(&cal)).context("writing the calibration to the servos")?;
        print_calibration(desc, &cal);
        println!("wrote {} to the servos' EEPROM", file.display());
        return Ok(());
    }
    let out = match &a.out {
        Some(p) => p.clone(),
        None => calib::lerobot_dir(desc.name, a.arm.leader)
            .ok_or_else(|| anyhow!("no HOME or HF_LEROBOT_CALIBRATION to find LeRobot's calibration folder: give --out"))?
            .join(format!("{}.json", a.arm_id)),
    };
    let cal = calib::calibrate(arm.as_mut(), guide.as_mut(), Duration::from_millis(if a.arm.sim { 0 } else { 20 }))?;
    let existed = out.exists();
    calib::write_lerobot(&out, desc, &cal)?;
    print_calibration(desc, &cal);
    println!("calibration: written to the servos and to {}{}", out.display(), if existed { " (replacing the previous file)" } else { "" });
    Ok(())
}

/// Teleop's hardware: leader, follower, camera, the scripted operator (sim only), the arm's
/// description and the e-stop pin.
type TeleopRig = (BoxedArm, BoxedArm, Box<dyn lapa_edge::camera::Camera>, Option<SimOperator>, &'static ArmDescription, Option<u8>);

fn teleop(a: TeleopArgs) -> Result<()> {
    if a.no_pace && !a.sim {
        bail!("--no-pace is for --sim only: a real arm runs on the wall clock");
    }
    let board = if a.sim { None } else { Some(load_board(a.board.as_deref().unwrap_or_default())?) };
    let rate = a.rate.unwrap_or(board.as_ref().map_or(30, |(b, _)| b.control_hz));
    if !(1..=100).contains(&rate) {
        bail!("--rate {rate}: 1..=100 Hz");
    }
    if a.fps == 0 || !rate.is_multiple_of(a.fps) {
        bail!("--fps {}: must divide the loop rate ({rate} Hz) so every recorded frame is one tick", a.fps);
    }
    for (flag, v) in [("--episode-seconds", a.episode_seconds), ("--reset-seconds", a.reset_seconds), ("--settle-seconds", a.settle_seconds)] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{flag} {v}: must be a number ≥ 0");
        }
    }
    if a.episodes == 0 || a.episode_seconds <= 0.0 {
        bail!("--episodes and --episode-seconds must be positive");
    }
    let (family, split) = a.scene.choice()?;
    // A real board: the profile's two buses and camera, a person at the leader. The sim: the
    // simulated pair in the scene, the scripted expert moving the leader.
    let (mut leader, mut follower, mut camera, mut sim_operator, desc, estop_pin): TeleopRig = match &board {
        Some((b, file)) => {
            if a.instruction.is_none() {
                bail!("--instruction: say what the demonstrations do (it becomes each episode's task)");
            }
            let at = |what: &str, e: String| anyhow!("{}: {what}: {e}", file.display());
            let desc = arm_by_name(&b.arm).ok_or_else(|| anyhow!("{}: no arm profile {:?}", file.display(), b.arm))?;
            let mut leader_serial = match (&b.leader_serial, &a.leader) {
                (Some(s), _) => s.clone(),
                // --leader on a profile without one: the follower bus's settings, that port.
                (None, Some(_)) => b.serial.clone(),
                (None, None) => bail!("{}: no [leader_serial]; give --leader PORT", file.display()),
            };
            if let Some(port) = &a.leader {
                leader_serial.port = Some(port.clone());
                leader_serial.usb = None;
            }
            let follower = hw::open_arm(&b.serial).map_err(|e| at("[serial]", e))?;
            let leader = hw::open_arm(&leader_serial).map_err(|e| at("the leader's bus", e))?;
            let camera = open_camera(&b.camera).map_err(|e| anyhow!("{}: [camera]: {e}", file.display()))?;
            (leader, follower, camera, None, desc, b.gpio.as_ref().and_then(|g| g.estop))
        }
        None => {
            let scene =
                SimScene::new(&SceneSpec { seed: a.scene.seed, family, split, rate_hz: rate, ..SceneSpec::default() }).map_err(|e| anyhow!("--rate: {e}"))?;
            let mut leader = SimArm::new();
            leader.connect().context("connecting the simulated leader")?;
            let leader_cal = leader.read_calibration()?;
            let operator =
                SimOperator::new(scene.clone(), leader.bus.clone(), &SO101_LEADER, &leader_cal, rate as f32, a.scene.seed, family, split, a.settle_seconds)
                    .map_err(|e| anyhow!(e))?;
            (Box::new(leader), Box::new(SceneArm::new(scene.clone())), Box::new(SceneCamera::new(scene)), Some(operator), &SO101, None)
        }
    };
    if board.is_some() {
        leader.connect().context("connecting the leader")?;
    }
    follower.connect().context("connecting the follower")?;
    let cal = joint_calibrations(&follower.read_calibration()?);
    let limits = joint_limits(desc, &cal).context("the follower's calibration")?;
    let mut safety = SafetyFilter::new(SafetyConfig::default(), desc, limits, rate as f32).map_err(|e| anyhow!("safety: {e}"))?;
    let controls = Controls::new(a.instruction.as_deref().unwrap_or("teleoperation")).map_err(|e| anyhow!("--instruction: {e}"))?;
    quit_on_signal(controls.clone());
    let _estop_watch = estop_pin.map(|pin| watch_estop_pin(pin, controls.clone())).transpose()?;
    let _socket = match &a.socket {
        Some(p) => Some(ControlSocket::bind(p, controls.clone()).map_err(|e| anyhow!("--socket {e}"))?),
        None => None,
    };
    // n / r / q and Enter on a terminal, as the help says (the socket takes the same commands).
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        lapa_edge::control::spawn_stdin(controls.clone());
    }
    let mut recorder = match &a.record {
        Some(dir) => {
            let f = camera.capture()?;
            Some(Recorder::create(dir, desc, a.fps, f.width, f.height).with_context(|| format!("--record {}", dir.display()))?)
        }
        None => None,
    };
    let cfg = TeleopConfig {
        rate_hz: rate as f32,
        record_every: rate / a.fps,
        episodes: a.episodes,
        episode_ticks: (a.episode_seconds * rate as f32).ceil() as u64,
        reset_ticks: (a.reset_seconds * rate as f32).round() as u64,
        paced: !a.no_pace,
    };
    eprintln!(
        "teleop: {} Hz, {} episodes of at most {:.0} s, recording {} fps{}",
        rate,
        a.episodes,
        a.episode_seconds,
        a.fps,
        if a.record.is_some() { "" } else { " (not recording: no --record)" }
    );
    let mut person = lapa_edge::teleop::Person;
    let operator: &mut dyn lapa_edge::teleop::Operator = match &mut sim_operator {
        Some(o) => o,
        None => &mut person,
    };
    let result = lapa_edge::teleop::teleop(
        leader.as_mut(),
        follower.as_mut(),
        camera.as_mut(),
        &mut safety,
        &controls,
        operator,
        recorder.as_mut(),
        &cfg,
        |k, task, frames| {
            eprintln!("episode {k}: {frames} frames, {task:?}");
        },
    );
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            // Keep the episodes already saved: the dataset is finished with them.
            if let Some(r) = recorder.filter(|r| r.episodes() > 0) {
                let n = r.episodes();
                match r.finish() {
                    Ok(w) => eprintln!("saved the {n} finished episode(s) to {}", w.root.display()),
                    Err(f) => eprintln!("could not save the finished episodes: {f}"),
                }
            }
            bail!("teleop stopped: {e}");
        }
    };
    let scripted = sim_operator.as_ref().map_or(String::new(), |o| format!("; the scripted operator achieved {} of {} tasks", o.successes, summary.episodes));
    println!("teleop: {} episodes ({} re-recorded), {} ticks{scripted}; safety: {}", summary.episodes, summary.rerecorded, summary.ticks, summary.flags.line());
    if cfg.paced {
        println!("period: p50 {}, p99 {}; {} ticks dropped", ms(summary.period.quantile_ms(0.5)), ms(summary.period.quantile_ms(0.99)), summary.dropped);
    }
    if let Some(r) = recorder {
        let w = r.finish()?;
        println!("recorded {}: {} episodes, {} frames, {} tasks", w.root.display(), w.episodes, w.frames, w.tasks);
    }
    Ok(())
}

fn doctor(a: DoctorArgs) -> Result<()> {
    use lapa_edge::doctor::{self, Check, Level};
    if let Some(id) = &a.arm_id {
        calib::check_arm_id(id)?;
    }
    let mut checks = Vec::new();
    let (desc, reports, profile_keys) = if a.arm.sim {
        let desc = a.arm.sim_description();
        let arm = SimArm::new();
        {
            let mut bus = arm.bus.lock();
            for &id in &a.sim_silent {
                bus.servo_mut(id).ok_or_else(|| anyhow!("--sim-silent {id}: the simulated bus has servos 1..=6"))?.silent = true;
            }
            if let Some(v) = a.sim_volts {
                if !(v.is_finite() && (0.0..=25.0).contains(&v)) {
                    bail!("--sim-volts {v}: 0..=25 V");
                }
                for s in &mut bus.servos {
                    s.voltage_dv = (v * 10.0).round() as u8;
                    s.advance(0.0);
                }
            }
        }
        checks.push(Check { level: Level::Ok, what: "board".into(), detail: "simulated SO-101 bus (six simulated STS3215s, real Feetech driver)".into() });
        let mut bus = lapa_bridge::feetech::FeetechBus::new(lapa_bridge::simwire::SimWire::new(arm.bus.clone()), lapa_bridge::simwire::StdClock::default());
        let (c, r) = doctor::check_servos(&mut bus, desc, 1_000_000, |_| Vec::new());
        checks.extend(c);
        (desc, r, Vec::new())
    } else {
        let (board, file, desc, serial) = a.arm.board()?;
        let here = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        checks.push(Check {
            level: if board.target == here { Level::Ok } else { Level::Warn },
            what: "board".into(),
            detail: format!(
                "{} ({}){}",
                board.name,
                file.display(),
                if board.target == here { String::new() } else { format!(": the profile is for {}, this is {here}", board.target) }
            ),
        });
        checks.push(doctor::check_memory(300));
        checks.push(check_camera(&board.camera));
        let mut reports = vec![None; desc.joints.len()];
        match hw::port_path(&serial) {
            Err(e) => checks.push(Check { level: Level::Fail, what: "serial".into(), detail: e }),
            Ok(path) if serial.link == "bridge" => {
                checks.push(Check { level: Level::Warn, what: "serial".into(), detail: format!("{path}: a bridge MCU; check it with `lapa-bridge doctor`") })
            }
            Ok(path) => match lapa_bridge::serial::SerialIo::open_at(&path, serial.baud) {
                Err(e) => checks.push(Check { level: Level::Fail, what: "serial".into(), detail: format!("{path}: {e} (plugged in? in the dialout group?)") }),
                Ok(io) => {
                    checks.push(Check { level: Level::Ok, what: "serial".into(), detail: format!("{path} at {} baud", serial.baud) });
                    let mut bus = lapa_bridge::feetech::FeetechBus::new(io, lapa_bridge::simwire::StdClock::default());
                    let other = |silent: &[u8]| -> Vec<(u32, Vec<u8>)> {
                        lapa_boards::profile::BAUDS
                            .iter()
                            .filter(|&&b| b != serial.baud)
                            .filter_map(|&b| {
                                let io = lapa_bridge::serial::SerialIo::open_at(&path, b).ok()?;
                                let mut bus = lapa_bridge::feetech::FeetechBus::new(io, lapa_bridge::simwire::StdClock::default());
                                let ids: Vec<u8> = silent.iter().copied().filter(|&id| bus.ping(id).is_ok()).collect();
                                (!ids.is_empty()).then_some((b, ids))
                            })
                            .collect()
                    };
                    let (c, r) = doctor::check_servos(&mut bus, desc, serial.baud, other);
                    checks.extend(c);
                    reports = r;
                }
            },
        }
        match board.gpio.as_ref().and_then(|g| g.estop) {
            None => checks.push(Check {
                level: Level::Warn,
                what: "e-stop".into(),
                detail: "no GPIO e-stop in the profile: stop with the control socket or the keyboard".into(),
            }),
            Some(pin) => checks.push(check_estop_pin(pin)),
        }
        (desc, reports, board.trusted_keys.clone())
    };
    if let Some(b) = &a.bundle {
        let opened = a.trust.trust(&profile_keys).and_then(|t| Ok(lapa_model::bundle::Bundle::open(b, &t)?));
        checks.push(match opened {
            Ok(b) => {
                let m = &b.manifest;
                let signature = match &b.verified {
                    lapa_model::signing::Verified::Signed { key_id } => format!("signed by key {key_id}"),
                    lapa_model::signing::Verified::Unchecked { reason } => format!("signature NOT checked ({reason}; --allow-unsigned)"),
                };
                Check {
                    level: if matches!(b.verified, lapa_model::signing::Verified::Signed { .. }) { Level::Ok } else { Level::Warn },
                    what: "bundle".into(),
                    detail: format!(
                        "{} ({}): {signature}; {} parts verified; actions {} × {} at {} fps; camera {}×{}",
                        m.name,
                        m.created_by,
                        m.parts.len(),
                        m.action.chunk,
                        m.action.names.len(),
                        m.action.fps,
                        m.camera.width,
                        m.camera.height
                    ),
                }
            }
            Err(e) => Check { level: Level::Fail, what: "bundle".into(), detail: e.to_string() },
        });
    }
    if a.arm_id.is_some() || a.calibration.is_some() {
        checks.push(doctor::check_calibration(desc, a.arm.leader, a.arm_id.as_deref().unwrap_or("arm"), a.calibration.as_deref(), &reports));
    }
    let fails = doctor::print(&checks);
    if fails > 0 {
        bail!("{fails} check(s) failed");
    }
    println!("all checks passed");
    Ok(())
}

#[cfg(feature = "v4l2")]
fn check_camera(c: &lapa_boards::profile::CameraSection) -> lapa_edge::doctor::Check {
    use lapa_edge::doctor::{Check, Level};
    use lapa_edge::v4l2::{PixelFormat, V4l2Camera, Want};
    let format = PixelFormat::from_name(&c.format).unwrap_or(PixelFormat::Mjpeg);
    let want = Want { format, width: c.width, height: c.height, fps: c.fps };
    match V4l2Camera::open(&c.device, &want) {
        Err(e) => Check { level: Level::Fail, what: "camera".into(), detail: e.to_string() },
        Ok(mut cam) => match lapa_edge::camera::Camera::capture(&mut cam) {
            Ok(f) => Check {
                level: Level::Ok,
                what: "camera".into(),
                detail: format!("{} (a {}×{} frame arrived)", lapa_edge::camera::Camera::describe(&cam), f.width, f.height),
            },
            Err(e) => Check { level: Level::Fail, what: "camera".into(), detail: format!("{}: {e}", lapa_edge::camera::Camera::describe(&cam)) },
        },
    }
}

#[cfg(not(feature = "v4l2"))]
fn check_camera(c: &lapa_boards::profile::CameraSection) -> lapa_edge::doctor::Check {
    lapa_edge::doctor::Check {
        level: lapa_edge::doctor::Level::Warn,
        what: "camera".into(),
        detail: format!("{}: this lapa-edge was built without the v4l2 feature", c.device),
    }
}

#[cfg(feature = "gpio")]
fn check_estop_pin(pin: u8) -> lapa_edge::doctor::Check {
    use lapa_edge::doctor::{Check, Level};
    match lapa_edge::estop::pi_pin(pin) {
        Err(e) => Check { level: Level::Fail, what: "e-stop".into(), detail: e },
        Ok(p) if p.is_high() => Check {
            level: Level::Fail,
            what: "e-stop".into(),
            detail: format!("GPIO{pin}: open — pressed, or the button is not wired (normally closed, to ground)"),
        },
        Ok(_) => Check { level: Level::Ok, what: "e-stop".into(), detail: format!("GPIO{pin}: closed (not pressed)") },
    }
}

#[cfg(not(feature = "gpio"))]
fn check_estop_pin(pin: u8) -> lapa_edge::doctor::Check {
    lapa_edge::doctor::Check {
        level: lapa_edge::doctor::Level::Warn,
        what: "e-stop".into(),
        detail: format!("GPIO{pin}: this lapa-edge was built without the gpio feature"),
    }
}

fn print_calibration(desc: &ArmDescription, cal: &[JointCalibration; 6]) {
    println!("{:<14} {:>3} {:>8} {:>6} {:>6}  range", "motor", "id", "offset", "min", "max");
    for (spec, c) in desc.joints.iter().zip(cal) {
        let span = f32::from(c.range_max.saturating_sub(c.range_min));
        let range = match spec.unit {
            Unit::Degrees => format!("{:.0}°", span * 360.0 / f32::from(desc.servo.max_count())),
            Unit::Percent => "0..100".to_string(),
        };
        println!("{:<14} {:>3} {:>8} {:>6} {:>6}  {range}", spec.name, spec.id, c.homing_offset, c.range_min, c.range_max);
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.2} ms"))
}

fn print_summary(s: &Summary, rate: f32) {
    let st = &s.stats;
    println!("end: {:?} after {} ticks ({:.1} s at {rate} Hz)", s.end, st.ticks, st.ticks as f32 / rate);
    println!(
        "period: p50 {}, p99 {}, max {} (nominal {:.2} ms); start late p99 {}; work p99 {}",
        ms(st.period.quantile_ms(0.5)),
        ms(st.period.quantile_ms(0.99)),
        ms(st.period.max_ms()),
        1000.0 / rate,
        ms(st.lateness.quantile_ms(0.99)),
        ms(st.work.quantile_ms(0.99))
    );
    println!("ticks: {} dropped, {} starved (held: no action due), {} waiting for the first chunk", st.dropped, st.starved, st.warmup);
    println!(
        "inference: {} chunks ({} too late or stale), {} errors; latency p50 {}, p99 {}",
        st.chunks,
        st.late_chunks,
        st.policy_errors,
        ms(st.inference.quantile_ms(0.5)),
        ms(st.inference.quantile_ms(0.99))
    );
    println!("safety: {}", st.flags.line());
    if st.arm_errors > 0 {
        println!("arm errors: {}", st.arm_errors);
    }
    if s.log_dropped > 0 {
        println!("log: {} records dropped", s.log_dropped);
    }
}

fn replay(a: ReplayArgs) -> Result<()> {
    let log = cyclelog::read(&a.log)?;
    let h = &log.header;
    println!("{}: {} at {} Hz; policy {}; camera {}", a.log.display(), h.arm, h.rate_hz, h.policy, h.camera);
    println!("instruction {:?}", h.instruction);
    let in_range = |t: u64| a.from.is_none_or(|f| t >= f) && a.to.is_none_or(|e| t <= e);
    let cycles: Vec<_> = log.cycles().filter(|c| in_range(c.tick)).collect();
    for e in log.events().filter(|e| in_range(e.tick)) {
        println!("tick {:>6}  event: {}", e.tick, e.text);
    }
    let chunks: Vec<_> = log.chunks().filter(|c| in_range(c.arrived_tick)).collect();
    if let (Some(first), Some(last)) = (cycles.first(), cycles.last()) {
        // The same histograms and flag tally as the run's own summary.
        let mut periods = Histogram::loop_timing();
        let mut late = Histogram::loop_timing();
        let mut lat = Histogram::latency();
        let mut flags = flag::Tally::default();
        for w in cycles.windows(2) {
            periods.record(Duration::from_micros(w[1].deadline_us.saturating_sub(w[0].deadline_us)));
        }
        for c in &cycles {
            late.record(Duration::from_micros(u64::from(c.late_us)));
            flags.add(c.flags);
        }
        for c in &chunks {
            lat.record(Duration::from_micros(u64::from(c.latency_us)));
        }
        println!("cycles: {} (ticks {}–{}), dropped {}", cycles.len(), first.tick, last.tick, cycles.iter().map(|c| u64::from(c.dropped)).sum::<u64>());
        println!(
            "deadline spacing p99 {} (drops show as multiples); start late p50 {}, p99 {}",
            ms(periods.quantile_ms(0.99)),
            ms(late.quantile_ms(0.5)),
            ms(late.quantile_ms(0.99))
        );
        println!(
            "chunks: {} arrived, {} refused; latency p50 {}, p99 {}",
            chunks.len(),
            chunks.iter().filter(|c| !c.accepted).count(),
            ms(lat.quantile_ms(0.5)),
            ms(lat.quantile_ms(0.99))
        );
        println!("safety: {}", flags.line());
    } else {
        println!("no cycles in range");
    }
    if let Some(t) = &log.truncated {
        println!("note: the log is cut short ({t}); everything before it is shown");
    }
    if a.cycles {
        println!("{:>6} {:>9} {:>7} {:>5} {:>3}  {:<44} {:<44} flags", "tick", "t (ms)", "late µs", "chunk", "q", "command", "measured");
        for c in &cycles {
            let fmt = |j: &[f32; 6]| j.iter().map(|v| format!("{v:7.2}")).collect::<Vec<_>>().join("");
            println!(
                "{:>6} {:>9.1} {:>7} {:>5} {:>3}  {:<44} {:<44} {}{}",
                c.tick,
                c.deadline_us as f64 / 1000.0,
                c.late_us,
                c.chunk,
                c.queue,
                fmt(&c.command),
                fmt(&c.measured),
                flag::names(c.flags).join(","),
                if c.sent { "" } else { " (not sent)" }
            );
        }
    }
    if let Some(png) = &a.plot {
        plot(&log.header, &cycles, png)?;
        println!("plot → {}", png.display());
    }
    Ok(())
}

fn register_font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../../train/assets/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes);
    });
}

fn plot(h: &LogHeader, cycles: &[&cyclelog::CycleRecord], png: &Path) -> Result<()> {
    use plotters::prelude::*;
    register_font();
    if cycles.is_empty() {
        bail!("{}: no cycles to plot", png.display());
    }
    let e = |x: &dyn std::fmt::Display| anyhow!("{}: plotting: {x}", png.display());
    let root = BitMapBackend::new(png, (1200, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    // `cyclelog::read` checked the header names one joint per record value.
    let panels = root.split_evenly((h.joints.len().clamp(1, 6), 1));
    let t = |c: &cyclelog::CycleRecord| c.deadline_us as f64 / 1e6;
    let (t0, t1) = (t(cycles[0]), t(cycles[cycles.len() - 1]).max(t(cycles[0]) + 1e-3));
    for (j, area) in panels.iter().enumerate() {
        // Non-finite values (a proposal the safety filter refused) do not set the axis.
        let vals = cycles.iter().flat_map(|c| [c.command[j], c.measured[j]].into_iter().chain(c.proposal.map(|p| p[j]))).filter(|v| v.is_finite());
        let (lo, hi) = vals.fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (-1.0, 1.0) };
        let pad = ((hi - lo) * 0.1).max(0.5);
        let (lo, hi) = (f64::from(lo - pad), f64::from(hi + pad));
        let name = h.joints.get(j).map_or("?", String::as_str);
        let unit = h.units.get(j).map_or("", String::as_str);
        let mut c = ChartBuilder::on(area)
            .margin(6)
            .x_label_area_size(if j + 1 == h.joints.len() { 30 } else { 14 })
            .y_label_area_size(56)
            .caption(format!("{name} ({unit})"), ("sans-serif", 14))
            .build_cartesian_2d(t0..t1, lo..hi)
            .map_err(|x| e(&x))?;
        c.configure_mesh().label_style(("sans-serif", 11)).x_desc(if j + 1 == h.joints.len() { "s" } else { "" }).draw().map_err(|x| e(&x))?;
        c.draw_series(
            cycles
                .iter()
                .filter_map(|r| r.proposal.filter(|p| p[j].is_finite()).map(|p| Circle::new((t(r), f64::from(p[j])), 1, RGBColor(170, 170, 255).filled()))),
        )
        .map_err(|x| e(&x))?;
        c.draw_series(LineSeries::new(cycles.iter().map(|r| (t(r), f64::from(r.measured[j]))), &BLACK)).map_err(|x| e(&x))?;
        c.draw_series(LineSeries::new(cycles.iter().map(|r| (t(r), f64::from(r.command[j]))), &BLUE)).map_err(|x| e(&x))?;
        c.draw_series(
            cycles
                .iter()
                .filter(|r| r.joints & (1 << j) != 0 || r.flags & (flag::NON_FINITE | flag::WORKSPACE | flag::ESTOP) != 0)
                .map(|r| Circle::new((t(r), hi - (hi - lo) * 0.04), 2, RED.filled())),
        )
        .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
