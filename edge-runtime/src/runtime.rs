//! The control loop and the inference thread.
//!
//! The loop runs on the caller's thread at a fixed rate ([`crate::pace`]): read the arm, take in
//! any chunk that arrived, blend the chunks covering this tick ([`crate::chunk`]), pass the result
//! through the [`SafetyFilter`], send it, and ask for the next chunk when the queue runs low. The
//! policy runs on its own thread with the camera, so a slow inference never delays a servo
//! command: the loop holds (and counts the tick as starved) instead of waiting, and never
//! replays an old action. Everything that happens goes to the cycle log.
//!
//! [`Controls`] is what the outside (the control socket, stdin, a key, a GPIO e-stop) may change
//! while it runs: the instruction, pause, e-stop, quit.

use crate::camera::Camera;
use crate::chunk::{Blended, Chunk, ChunkQueue};
use crate::cyclelog::{ChunkRecord, CycleRecord, EventRecord, LogWriter, Record};
use crate::pace::{Histogram, Pacer};
use crate::safety::{Filtered, SafetyFilter, flag};
use lapa_boards::Joints;
use lapa_bridge::arm::{Arm, ArmReading};
use lapa_model::policy::{Frame, Policy, PolicyInput, check_chunk};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What an engaged e-stop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EStopMode {
    /// Keep commanding the last position (the arm stays stiff where it is).
    Hold,
    /// Turn the servos' torque off (the arm goes limp: mind what it holds).
    TorqueOff,
}

/// Loop settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub rate_hz: f32,
    /// Ask for the next chunk when the newest one has less than this fraction of its length
    /// left (LeRobot's async inference: 0.5).
    pub refill: f32,
    /// Temporal-ensembling decay ([`ChunkQueue`]); 0.85 ≈ LeRobot's 0.3·old + 0.7·new.
    pub ensemble_decay: f32,
    pub estop: EStopMode,
    /// Spin before each deadline.
    pub spin: Duration,
    /// Stop after this many ticks (`None`: until told).
    pub max_ticks: Option<u64>,
    /// Consecutive arm errors after which the run stops.
    pub max_arm_errors: u32,
    /// The run fails when one inference takes longer than this.
    pub policy_timeout: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            rate_hz: 30.0,
            refill: 0.5,
            ensemble_decay: 0.85,
            estop: EStopMode::Hold,
            spin: Duration::from_micros(1500),
            max_ticks: None,
            max_arm_errors: 5,
            policy_timeout: Duration::from_secs(10),
        }
    }
}

impl RunConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rate_hz.is_finite() && (1.0..=1000.0).contains(&self.rate_hz)) {
            return Err(format!("rate: {} Hz is not in 1..=1000", self.rate_hz));
        }
        if !(self.refill.is_finite() && (0.0..=1.0).contains(&self.refill)) {
            return Err(format!("refill: {} is not in 0..=1", self.refill));
        }
        if !(self.ensemble_decay.is_finite() && self.ensemble_decay >= 0.0) {
            return Err(format!("ensemble decay: {} is not a number ≥ 0", self.ensemble_decay));
        }
        if self.max_arm_errors == 0 {
            return Err("max arm errors: must be at least 1".into());
        }
        Ok(())
    }
}

/// Longest instruction accepted from outside.
pub const MAX_INSTRUCTION: usize = 512;

/// Checks an instruction from outside the process: non-empty, at most [`MAX_INSTRUCTION`] bytes,
/// no control characters.
pub fn check_instruction(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the instruction is empty".into());
    }
    if t.len() > MAX_INSTRUCTION {
        return Err(format!("the instruction is {} bytes long, more than {MAX_INSTRUCTION}", t.len()));
    }
    if let Some(c) = t.chars().find(|c| c.is_control()) {
        return Err(format!("the instruction holds a control character ({:?})", c));
    }
    Ok(t.to_string())
}

/// What may change while the loop runs. Shared with the control socket and the CLI.
#[derive(Debug)]
pub struct Controls {
    estop: AtomicBool,
    paused: AtomicBool,
    quit: AtomicBool,
    version: AtomicU64,
    instruction: Mutex<String>,
    /// 0: none, else an [`EpisodeCommand`] waiting for the teleop loop.
    episode: AtomicU8,
    estop_presses: AtomicU64,
    pauses: AtomicU64,
    /// What speech decided, latest last (the control socket's `status` and watchers read it).
    heard: Mutex<HeardLog>,
    /// Signalled on every [`Self::set_heard`].
    heard_cv: Condvar,
}

/// Speech decisions kept for control-socket watchers: the last [`HEARD_KEPT`], numbered.
#[derive(Debug, Default)]
struct HeardLog {
    /// How many were ever published (the number of the latest).
    seq: u64,
    recent: std::collections::VecDeque<(u64, String)>,
}

/// Decisions a slow watcher may fall behind by before it is told some were dropped.
pub const HEARD_KEPT: usize = 64;

/// What [`Controls::heard_since`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardSince {
    /// The decisions after the asked-for number, oldest first, with their numbers.
    pub decisions: Vec<(u64, String)>,
    /// Decisions after it that are no longer kept (the watcher fell more than [`HEARD_KEPT`] behind).
    pub dropped: u64,
}

/// A recording command for teleoperation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeCommand {
    /// Save the current episode and start the next.
    Next,
    /// Throw the current episode away and record it again.
    Rerecord,
}

impl Controls {
    pub fn new(instruction: &str) -> Result<Arc<Self>, String> {
        let instruction = check_instruction(instruction)?;
        Ok(Arc::new(Self {
            estop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            quit: AtomicBool::new(false),
            version: AtomicU64::new(0),
            instruction: Mutex::new(instruction),
            episode: AtomicU8::new(0),
            estop_presses: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            heard: Mutex::new(HeardLog::default()),
            heard_cv: Condvar::new(),
        }))
    }

    /// Replaces the instruction (validated); the loop drops the queued chunks and asks again.
    pub fn set_instruction(&self, text: &str) -> Result<(), String> {
        let t = check_instruction(text)?;
        *self.instruction.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = t;
        self.version.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The instruction's version alone (no allocation: the loop's per-tick read).
    pub fn instruction_version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    pub fn instruction(&self) -> (u64, String) {
        let g = self.instruction.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.version.load(Ordering::SeqCst), g.clone())
    }

    /// Publishes what speech decided (the control socket's `status` shows the latest; watchers
    /// are sent each one).
    pub fn set_heard(&self, text: &str) {
        let mut g = self.heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.seq += 1;
        let seq = g.seq;
        g.recent.push_back((seq, text.to_string()));
        while g.recent.len() > HEARD_KEPT {
            g.recent.pop_front();
        }
        drop(g);
        self.heard_cv.notify_all();
    }

    /// The number of the latest decision (0: none yet).
    pub fn heard_seq(&self) -> u64 {
        self.heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).seq
    }

    /// The decisions numbered above `after`, waiting up to `wait` for one when there are none.
    pub fn heard_since(&self, after: u64, wait: Duration) -> HeardSince {
        let g = self.heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (g, _) = self.heard_cv.wait_timeout_while(g, wait, |g| g.seq <= after).unwrap_or_else(std::sync::PoisonError::into_inner);
        let decisions: Vec<(u64, String)> = g.recent.iter().filter(|(n, _)| *n > after).cloned().collect();
        let first = decisions.first().map_or(g.seq + 1, |d| d.0);
        HeardSince { dropped: first.saturating_sub(after + 1), decisions }
    }

    /// What speech last decided; empty when nothing was.
    pub fn heard(&self) -> String {
        self.heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recent.back().map(|(_, t)| t.clone()).unwrap_or_default()
    }

    pub fn estop(&self) {
        self.estop.store(true, Ordering::SeqCst);
        self.estop_presses.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times the e-stop was engaged (the loop acts on a press it did not see held).
    pub fn estop_presses(&self) -> u64 {
        self.estop_presses.load(Ordering::SeqCst)
    }

    /// How many times a pause was asked for.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::SeqCst)
    }

    pub fn release_estop(&self) {
        self.estop.store(false, Ordering::SeqCst);
    }

    pub fn estopped(&self) -> bool {
        self.estop.load(Ordering::SeqCst)
    }

    pub fn set_paused(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
        if on {
            self.pauses.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn quit(&self) {
        self.quit.store(true, Ordering::SeqCst);
    }

    pub fn quitting(&self) -> bool {
        self.quit.load(Ordering::SeqCst)
    }

    /// Asks the teleop loop to end or redo the episode (the latest request wins).
    pub fn request_episode(&self, cmd: EpisodeCommand) {
        self.episode.store(
            match cmd {
                EpisodeCommand::Next => 1,
                EpisodeCommand::Rerecord => 2,
            },
            Ordering::SeqCst,
        );
    }

    /// Takes the pending episode command, if any.
    pub fn take_episode_command(&self) -> Option<EpisodeCommand> {
        match self.episode.swap(0, Ordering::SeqCst) {
            1 => Some(EpisodeCommand::Next),
            2 => Some(EpisodeCommand::Rerecord),
            _ => None,
        }
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The per-cycle callback said the run is done (a sim task succeeded, an episode ended).
    Done,
    MaxTicks,
    Quit,
    /// The arm kept failing, or the inference thread died.
    Failed(String),
}

/// Timing and counts of a run (what the status line shows and the summary prints).
#[derive(Debug, Clone)]
pub struct Stats {
    pub ticks: u64,
    /// Deadlines skipped because a tick overran by more than a period.
    pub dropped: u64,
    /// Ticks after the first chunk with nothing to execute (inference fell behind): held.
    pub starved: u64,
    /// Ticks before the first chunk arrived (held).
    pub warmup: u64,
    pub chunks: u64,
    /// Chunks that arrived after their last action was due, or for an old instruction.
    pub late_chunks: u64,
    pub policy_errors: u64,
    pub arm_errors: u64,
    /// Ticks each safety flag was raised.
    pub flags: flag::Tally,
    /// Start-to-start period of consecutive ticks.
    pub period: Histogram,
    /// Tick start after its deadline.
    pub lateness: Histogram,
    /// Read, filter and send.
    pub work: Histogram,
    /// Observation to chunk.
    pub inference: Histogram,
    pub queue: usize,
}

impl Stats {
    fn new() -> Self {
        Self {
            ticks: 0,
            dropped: 0,
            starved: 0,
            warmup: 0,
            chunks: 0,
            late_chunks: 0,
            policy_errors: 0,
            arm_errors: 0,
            flags: flag::Tally::default(),
            period: Histogram::loop_timing(),
            lateness: Histogram::loop_timing(),
            work: Histogram::loop_timing(),
            inference: Histogram::latency(),
            queue: 0,
        }
    }

    /// One status line.
    pub fn line(&self) -> String {
        let q = |h: &Histogram, p: f64| h.quantile_ms(p).map_or("—".to_string(), |v| format!("{v:.2}"));
        format!(
            "tick {} | period p50 {} p99 {} ms | inference p50 {} ms | queue {} | dropped {} | starved {} | chunks {}",
            self.ticks,
            q(&self.period, 0.5),
            q(&self.period, 0.99),
            q(&self.inference, 0.5),
            self.queue,
            self.dropped,
            self.starved,
            self.chunks
        )
    }
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub end: EndReason,
    pub stats: Stats,
    /// Log records the disk could not take in time.
    pub log_dropped: u64,
}

/// What the per-cycle callback sees.
#[derive(Debug)]
pub struct Cycle<'a> {
    pub tick: u64,
    pub reading: &'a ArmReading,
    pub filtered: &'a Filtered,
    pub stats: &'a Stats,
}

/// The callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

struct Request {
    tick: u64,
    state: Joints,
    time_s: f64,
    version: u64,
    instruction: String,
}

struct Reply {
    id: u32,
    tick: u64,
    version: u64,
    frame: u64,
    latency: Duration,
    result: Result<Vec<Joints>, String>,
}

fn inference_thread(mut camera: Box<dyn Camera>, mut policy: Box<dyn Policy>, rx: Receiver<Request>, tx: Sender<Reply>) {
    let mut id = 0u32;
    let mut version = None;
    while let Ok(req) = rx.recv() {
        let t0 = Instant::now();
        if version.is_some_and(|v| v != req.version) {
            policy.reset();
        }
        version = Some(req.version);
        id = id.wrapping_add(1).max(1);
        let (frame, result) = match camera.capture() {
            Err(e) => (0, Err(format!("camera: {e}"))),
            Ok(f) => {
                let input = PolicyInput {
                    frame: Frame { width: f.width, height: f.height, rgb: &f.rgb },
                    state: &req.state,
                    instruction: &req.instruction,
                    time_s: req.time_s,
                };
                let r = policy.infer(&input).and_then(|c| check_chunk(policy.action_spec(), &c).map(|()| c));
                let r = r.map_err(|e| e.to_string()).and_then(|c| {
                    c.into_iter()
                        .map(|a| <Joints>::try_from(a.as_slice()).map_err(|_| format!("an action has {} values, the arm has 6 joints", a.len())))
                        .collect()
                });
                (f.seq, r)
            }
        };
        let reply = Reply { id, tick: req.tick, version: req.version, frame, latency: t0.elapsed(), result };
        if tx.send(reply).is_err() {
            break;
        }
    }
}

/// The action spec of a policy that commands `arm`'s joints (names and units from the arm's one
/// description) in chunks of `chunk` at `fps`.
pub fn arm_action_spec(arm: &lapa_boards::ArmDescription, fps: f32, chunk: usize) -> lapa_model::policy::ActionSpec {
    lapa_model::policy::ActionSpec {
        names: arm.names().iter().map(|s| s.to_string()).collect(),
        units: arm.joints.iter().map(|j| j.unit.symbol().to_string()).collect(),
        fps,
        chunk,
    }
}

/// The gripper servo's load magnitude (the last joint's), what the safety filter's cap reads.
pub fn gripper_load(r: &ArmReading) -> Option<u16> {
    r.state.loads.last().map(|l| l.unsigned_abs())
}

/// Runs the loop until the callback says stop, `max_ticks`, a quit, or a failure. The arm must be
/// connected; the policy's action spec must name the arm's joints in order.
#[allow(clippy::too_many_arguments)] // each is a separate part the caller owns; a struct would only rename them
pub fn run(
    arm: &mut dyn Arm,
    camera: Box<dyn Camera>,
    policy: Box<dyn Policy>,
    mut safety: SafetyFilter,
    controls: &Controls,
    log: &LogWriter,
    cfg: &RunConfig,
    mut on_cycle: impl FnMut(&Cycle<'_>) -> Flow,
) -> Result<Summary, String> {
    cfg.validate()?;
    let spec = policy.action_spec().clone();
    spec.validate().map_err(|e| e.to_string())?;
    let names = arm.description().names();
    if spec.names.len() != names.len() || spec.names.iter().zip(names).any(|(a, b)| a != b) {
        return Err(format!("the policy's actions {:?} are not the arm's joints {:?}", spec.names, names));
    }
    let ticks_per_action = f64::from(cfg.rate_hz) / f64::from(spec.fps);
    let refill_ticks = f64::from(cfg.refill) * spec.chunk as f64 * ticks_per_action;
    let (req_tx, req_rx) = channel::<Request>();
    let (rep_tx, rep_rx) = channel::<Reply>();
    let worker = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || inference_thread(camera, policy, req_rx, rep_tx))
        .map_err(|e| format!("cannot start the inference thread: {e}"))?;

    let mut queue = ChunkQueue::new(cfg.ensemble_decay, 8);
    let mut stats = Stats::new();
    let mut pacer = Pacer::new(Duration::from_secs_f64(1.0 / f64::from(cfg.rate_hz)), cfg.spin);
    let (mut version, mut instruction) = controls.instruction();
    // Bumped by every instruction change, e-stop and pause: a chunk asked for before one of them
    // is refused when it arrives, so nothing planned before a stop runs after it.
    let mut epoch = 0u64;
    let mut paused_latched = false;
    let (mut seen_estop, mut seen_pauses) = (controls.estop_presses(), controls.pauses());
    let mut inflight = false;
    let mut inflight_since = Instant::now();
    let mut got_chunk = false;
    let mut estop_latched = false;
    let mut arm_errors = 0u32;
    let mut send_errors = 0u32;
    let mut last_start: Option<Instant> = None;
    let event = |tick: u64, text: String| log.log(Record::Event(EventRecord { tick, text }));
    event(0, format!("start: instruction {instruction:?}"));

    let end = 'run: loop {
        let t = pacer.wait();
        let tick = t.index;
        stats.ticks += 1;
        stats.dropped += t.dropped;
        if let Some(prev) = last_start {
            stats.period.record(t.started - prev);
        }
        last_start = Some(t.started);
        stats.lateness.record(t.lateness());

        let reading = match arm.read_state() {
            Ok(r) => {
                arm_errors = 0;
                r
            }
            Err(e) => {
                arm_errors += 1;
                stats.arm_errors += 1;
                event(tick, format!("arm read failed ({arm_errors} in a row): {e}"));
                if arm_errors >= cfg.max_arm_errors {
                    break EndReason::Failed(format!("the arm failed {arm_errors} times in a row; last: {e}"));
                }
                continue;
            }
        };

        // Chunks that arrived.
        loop {
            match rep_rx.try_recv() {
                Ok(rep) => {
                    inflight = false;
                    match rep.result {
                        Ok(actions) => {
                            stats.inference.record(rep.latency);
                            stats.chunks += 1;
                            let chunk = Chunk { id: rep.id, start_tick: rep.tick, ticks_per_action, actions };
                            let accepted = rep.version == epoch && queue.push(chunk.clone(), tick);
                            if accepted {
                                got_chunk = true;
                            } else {
                                stats.late_chunks += 1;
                            }
                            log.log(Record::Chunk(ChunkRecord {
                                id: rep.id,
                                obs_tick: rep.tick,
                                frame: rep.frame,
                                arrived_tick: tick,
                                latency_us: u32::try_from(rep.latency.as_micros()).unwrap_or(u32::MAX),
                                accepted,
                                actions: chunk.actions,
                            }));
                        }
                        Err(e) => {
                            stats.policy_errors += 1;
                            event(tick, format!("policy: {e}"));
                        }
                    }
                }
                Err(TryRecvError::Empty) => break,
                // The worker dropped its end: it returned or panicked.
                Err(TryRecvError::Disconnected) => break 'run EndReason::Failed("the inference thread stopped".into()),
            }
        }

        if inflight && inflight_since.elapsed() > cfg.policy_timeout {
            break 'run EndReason::Failed(format!("the policy has not answered for {:.1} s (a camera or model that hangs)", cfg.policy_timeout.as_secs_f32()));
        }
        let (v, text) = controls.instruction();
        if v != version {
            version = v;
            epoch += 1;
            instruction = text;
            queue.clear();
            event(tick, format!("instruction {instruction:?}"));
        }
        // Counted presses, so a stop (or pause) released again within one period still holds
        // the arm for a tick and throws away everything planned before it.
        let presses = controls.estop_presses();
        let pressed = presses != seen_estop;
        seen_estop = presses;
        if (pressed || controls.estopped()) && !estop_latched {
            estop_latched = true;
            queue.clear();
            epoch += 1;
            event(tick, format!("e-stop engaged ({:?})", cfg.estop));
            if cfg.estop == EStopMode::TorqueOff
                && let Err(e) = arm.set_torque(false)
            {
                event(tick, format!("torque off failed: {e}"));
            }
        } else if pressed {
            queue.clear();
            epoch += 1;
        } else if estop_latched && !controls.estopped() {
            estop_latched = false;
            event(tick, "e-stop released".into());
            if cfg.estop == EStopMode::TorqueOff {
                // The arm may have been moved by hand: start again from where it is.
                safety.rebase();
                if let Err(e) = arm.set_torque(true) {
                    event(tick, format!("torque on failed: {e}"));
                }
            }
        }
        let estop = estop_latched;
        let pauses = controls.pauses();
        let paused_now = pauses != seen_pauses || controls.paused();
        if pauses != seen_pauses {
            seen_pauses = pauses;
            queue.clear();
            epoch += 1;
        }
        if paused_now != paused_latched {
            paused_latched = paused_now;
            event(tick, if paused_now { "paused".into() } else { "resumed".into() });
        }
        let paused = paused_latched;
        let mut extra = 0;
        if estop {
            extra |= flag::ESTOP;
        }
        if paused {
            extra |= flag::PAUSED;
        }
        let blended: Option<Blended> = if estop || paused { None } else { queue.action_at(tick) };
        if blended.is_none() && !estop && !paused {
            if got_chunk {
                stats.starved += 1;
            } else {
                stats.warmup += 1;
            }
        }
        let filtered = safety.filter(blended.as_ref().map(|b| &b.action), &reading.joints, gripper_load(&reading), extra);
        let torque_off = estop && cfg.estop == EStopMode::TorqueOff;
        let mut sent = false;
        if !torque_off {
            match arm.send_targets(&filtered.command) {
                Ok(()) => {
                    sent = true;
                    send_errors = 0;
                }
                Err(e) => {
                    stats.arm_errors += 1;
                    send_errors += 1;
                    event(tick, format!("arm send failed ({send_errors} in a row): {e}"));
                    if send_errors >= cfg.max_arm_errors {
                        break 'run EndReason::Failed(format!("commands to the arm failed {send_errors} times in a row; last: {e}"));
                    }
                }
            }
        }
        if !inflight && !estop && !paused && queue.remaining(tick) < refill_ticks.max(1.0) {
            let req = Request { tick, state: reading.joints, time_s: tick as f64 / f64::from(cfg.rate_hz), version: epoch, instruction: instruction.clone() };
            inflight = req_tx.send(req).is_ok();
            inflight_since = Instant::now();
        }
        stats.flags.add(filtered.flags);
        stats.queue = queue.len();
        let work = t.started.elapsed();
        stats.work.record(work);
        log.log(Record::Cycle(CycleRecord {
            tick,
            deadline_us: u64::try_from(t.deadline.duration_since(pacer.start()).as_micros()).unwrap_or(u64::MAX),
            late_us: u32::try_from(t.lateness().as_micros()).unwrap_or(u32::MAX),
            work_us: u32::try_from(work.as_micros()).unwrap_or(u32::MAX),
            dropped: u32::try_from(t.dropped).unwrap_or(u32::MAX),
            measured: reading.joints,
            proposal: blended.map(|b| b.action),
            command: filtered.command,
            sent,
            flags: filtered.flags,
            joints: filtered.joints,
            chunk: blended.map_or(0, |b| b.chunk),
            sources: blended.map_or(0, |b| b.sources),
            queue: u8::try_from(queue.len()).unwrap_or(u8::MAX),
        }));
        if on_cycle(&Cycle { tick, reading: &reading, filtered: &filtered, stats: &stats }) == Flow::Stop {
            break EndReason::Done;
        }
        if controls.quitting() {
            break EndReason::Quit;
        }
        if cfg.max_ticks.is_some_and(|m| stats.ticks >= m) {
            break EndReason::MaxTicks;
        }
    };
    event(stats.ticks, format!("end: {end:?}"));
    drop(req_tx);
    // The worker finishes the inference it is in (if any) and sees the closed channel.
    let _ = worker.join();
    Ok(Summary { end, stats, log_dropped: log.dropped() })
}
