//! On-device calibration, LeRobot's procedure and LeRobot's file format.
//!
//! 1. Torque off; the factory calibration (no offset, the full count range) is written so present
//!    positions are raw shaft counts.
//! 2. The user centres the arm by hand; `homing_offset = raw − 2047` is written to every servo, so
//!    the centred pose reads mid-range (LeRobot's `set_half_turn_homings`).
//! 3. The user sweeps every joint through its whole range while the extremes are tracked
//!    (LeRobot's `record_ranges_of_motion`).
//! 4. The offsets and ranges go to the servos' EEPROM (Homing_Offset, Min/Max_Position_Limit) and
//!    to a calibration JSON with LeRobot's fields (`id`, `drive_mode`, `homing_offset`,
//!    `range_min`, `range_max` per motor), written byte for byte as LeRobot writes it, in the folder
//!    LeRobot reads it from — so a file moves both ways between lapa and LeRobot.
//!
//! The user side of steps 2 and 3 is a [`Guide`]: [`TerminalGuide`] prompts a person;
//! [`ScriptedHand`] moves the simulated servos of a [`SimArm`](lapa_bridge::arm::SimArm) the way
//! a person would, so the whole procedure runs in tests against the real Feetech driver.

use lapa_boards::so101::JOINTS;
use lapa_boards::{ArmDescription, JointCalibration};
use lapa_bridge::arm::{Arm, ArmError, validate_calibration};
use lapa_bridge::protocol::Calibration;
use lapa_bridge::simwire::SharedBus;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Calibration failures.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Arm(#[from] ArmError),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{0}")]
    Procedure(String),
    #[error("calibration stopped: {0}")]
    Aborted(String),
}

/// The half turn LeRobot centres on: `(4096 − 1) / 2`.
pub const HALF_TURN: i32 = 2047;
/// A joint swept over fewer counts than this was not moved (LeRobot refuses min == max).
pub const MIN_SWEEP_COUNTS: i32 = 100;

/// The calibration of a servo fresh from the factory, as the wire type.
pub fn factory(desc: &ArmDescription) -> Calibration {
    to_wire(&desc.factory_calibration())
}

/// Per-joint calibrations as the wire type.
pub fn to_wire(c: &[JointCalibration; JOINTS]) -> Calibration {
    Calibration {
        homing_offset: c.map(|j| j.homing_offset),
        range_min: c.map(|j| j.range_min),
        range_max: c.map(|j| j.range_max),
        drive_mode: c.map(|j| j.drive_mode),
    }
}

/// LeRobot's calibration folder: `$HF_LEROBOT_CALIBRATION`, else `$HF_LEROBOT_HOME/calibration`,
/// else `$HF_HOME/lerobot/calibration`, else `~/.cache/huggingface/lerobot/calibration`; then
/// `robots/<arm>` for a follower or `teleoperators/<arm>` for a leader.
pub fn lerobot_dir(arm_name: &str, leader: bool) -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = env("HF_LEROBOT_CALIBRATION")
        .or_else(|| env("HF_LEROBOT_HOME").map(|p| p.join("calibration")))
        .or_else(|| env("HF_HOME").map(|p| p.join("lerobot").join("calibration")))
        .or_else(|| env("HOME").map(|p| p.join(".cache/huggingface/lerobot/calibration")))?;
    Some(base.join(if leader { "teleoperators" } else { "robots" }).join(arm_name))
}

/// Checks an arm id (the calibration file's stem) is a plain name.
pub fn check_arm_id(id: &str) -> Result<(), CalibrateError> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') && !id.starts_with('-');
    if ok { Ok(()) } else { Err(CalibrateError::Procedure(format!("arm id {id:?}: use 1..=64 letters, digits, '_' or '-'"))) }
}

/// The calibration as LeRobot writes it: `json.dump({motor: asdict(MotorCalibration)}, indent=4)`,
/// motors in the arm's order, no trailing newline.
pub fn to_lerobot_json(desc: &ArmDescription, c: &[JointCalibration; JOINTS]) -> String {
    let mut s = String::from("{\n");
    for (k, (spec, j)) in desc.joints.iter().zip(c).enumerate() {
        let comma = if k + 1 < JOINTS { "," } else { "" };
        s.push_str(&format!(
            "    \"{}\": {{\n        \"id\": {},\n        \"drive_mode\": {},\n        \"homing_offset\": {},\n        \"range_min\": {},\n        \"range_max\": {}\n    }}{comma}\n",
            spec.name, spec.id, j.drive_mode, j.homing_offset, j.range_min, j.range_max
        ));
    }
    s.push('}');
    s
}

/// Reads a LeRobot calibration file's text: every motor of the arm, each with exactly LeRobot's
/// five fields, the servo id the arm's, values the servo can hold. `file` names it in errors.
pub fn parse_lerobot_json(file: &str, text: &str, desc: &ArmDescription) -> Result<[JointCalibration; JOINTS], CalibrateError> {
    let err = |message: String| CalibrateError::File { file: file.to_string(), message };
    let v: Value = serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
    let Value::Object(motors) = v else { return Err(err("expected an object of motors".into())) };
    for name in motors.keys() {
        if !desc.joints.iter().any(|j| j.name == name) {
            return Err(err(format!("{name:?} is not a motor of {} (motors: {})", desc.name, desc.names().join(", "))));
        }
    }
    let mut out = [JointCalibration::default(); JOINTS];
    for (o, spec) in out.iter_mut().zip(&desc.joints) {
        let m = motors.get(spec.name).ok_or_else(|| err(format!("{}: missing", spec.name)))?;
        let Value::Object(f) = m else { return Err(err(format!("{}: expected an object", spec.name))) };
        for key in f.keys() {
            if !["id", "drive_mode", "homing_offset", "range_min", "range_max"].contains(&key.as_str()) {
                return Err(err(format!("{}.{key}: unknown field (LeRobot's are id, drive_mode, homing_offset, range_min, range_max)", spec.name)));
            }
        }
        let int = |key: &str, lo: i64, hi: i64| -> Result<i64, CalibrateError> {
            let v = f.get(key).ok_or_else(|| err(format!("{}.{key}: missing", spec.name)))?;
            let n = v.as_i64().ok_or_else(|| err(format!("{}.{key}: {v} is not an integer", spec.name)))?;
            if (lo..=hi).contains(&n) { Ok(n) } else { Err(err(format!("{}.{key}: {n} is outside {lo}..={hi}", spec.name))) }
        };
        let id = int("id", 0, 253)?;
        if id != i64::from(spec.id) {
            return Err(err(format!("{}.id: {id}, but the arm's {} is servo {}", spec.name, spec.name, spec.id)));
        }
        let max_off = i64::from(desc.servo.max_homing_offset());
        let max_count = i64::from(desc.servo.max_count());
        *o = JointCalibration {
            drive_mode: int("drive_mode", 0, 1)? as u8,
            homing_offset: int("homing_offset", -max_off, max_off)? as i16,
            range_min: int("range_min", 0, max_count)? as u16,
            range_max: int("range_max", 0, max_count)? as u16,
        };
        o.validate(&desc.servo).map_err(|e| err(format!("{}: {e}", spec.name)))?;
    }
    Ok(out)
}

/// Reads a LeRobot calibration file.
pub fn read_lerobot(path: &Path, desc: &ArmDescription) -> Result<[JointCalibration; JOINTS], CalibrateError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CalibrateError::File { file: file.clone(), message: e.to_string() })?;
    parse_lerobot_json(&file, &text, desc)
}

/// Writes a LeRobot calibration file atomically (creating its folder).
pub fn write_lerobot(path: &Path, desc: &ArmDescription, c: &[JointCalibration; JOINTS]) -> Result<(), CalibrateError> {
    let file = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| CalibrateError::File { file: dir.display().to_string(), message: e.to_string() })?;
    }
    lapa_fs::atomic_write(path, to_lerobot_json(desc, c).as_bytes()).map_err(|e| CalibrateError::File { file, message: e.source.to_string() })
}

/// The person (or script) who moves the arm during calibration.
pub trait Guide {
    /// Step 2: returns once the arm stands centred, every joint in the middle of its range.
    fn centre(&mut self, desc: &ArmDescription) -> Result<(), CalibrateError>;
    /// Step 3: called after every reading of the sweep with the present counts and the extremes
    /// so far; returns `true` when the sweep is finished.
    fn sweep(&mut self, desc: &ArmDescription, present: &[i16; JOINTS], min: &[i16; JOINTS], max: &[i16; JOINTS]) -> Result<bool, CalibrateError>;
}

/// Runs the procedure on `arm` and returns the calibration it wrote to the servos. `poll` is the
/// sweep's reading period.
pub fn calibrate(arm: &mut dyn Arm, guide: &mut dyn Guide, poll: Duration) -> Result<[JointCalibration; JOINTS], CalibrateError> {
    let desc = arm.description();
    arm.set_torque(false)?;
    // What the servos hold now goes back on them if the procedure does not finish, so an aborted
    // calibration leaves the arm as it was (and as its calibration file says).
    let before = arm.read_calibration()?;
    match procedure(arm, desc, guide, poll) {
        Ok(c) => Ok(c),
        Err(e) => match arm.write_calibration(&before) {
            Ok(()) => Err(e),
            Err(w) => Err(CalibrateError::Procedure(format!("{e}; and restoring the previous calibration failed: {w}"))),
        },
    }
}

fn procedure(arm: &mut dyn Arm, desc: &ArmDescription, guide: &mut dyn Guide, poll: Duration) -> Result<[JointCalibration; JOINTS], CalibrateError> {
    arm.write_calibration(&factory(desc))?;
    guide.centre(desc)?;
    let raw = arm.read_state()?.state.positions;
    let max_off = i32::from(desc.servo.max_homing_offset());
    let mut offsets = [0i16; JOINTS];
    for (j, (o, &r)) in offsets.iter_mut().zip(&raw).enumerate() {
        let off = i32::from(r) - HALF_TURN;
        if off.abs() > max_off {
            return Err(CalibrateError::Procedure(format!(
                "{} reads {r} counts when centred, the end of the servo's turn: an offset of {off} does not fit (±{max_off}); re-seat the horn half a turn round and calibrate again",
                desc.joints[j].name
            )));
        }
        *o = off as i16;
    }
    let full = desc.servo.max_count();
    let homed: [JointCalibration; JOINTS] =
        core::array::from_fn(|j| JointCalibration { homing_offset: offsets[j], range_min: 0, range_max: full, drive_mode: 0 });
    arm.write_calibration(&to_wire(&homed))?;
    let first = arm.read_state()?.state.positions;
    let (mut min, mut max) = (first, first);
    loop {
        let present = arm.read_state()?.state.positions;
        for j in 0..JOINTS {
            min[j] = min[j].min(present[j]);
            max[j] = max[j].max(present[j]);
        }
        if guide.sweep(desc, &present, &min, &max)? {
            break;
        }
        std::thread::sleep(poll);
    }
    let still: Vec<&str> = (0..JOINTS).filter(|&j| i32::from(max[j]) - i32::from(min[j]) < MIN_SWEEP_COUNTS).map(|j| desc.joints[j].name).collect();
    if !still.is_empty() {
        return Err(CalibrateError::Procedure(format!(
            "{} did not move (less than {MIN_SWEEP_COUNTS} counts): sweep every joint end to end; nothing was saved, the servos keep their previous calibration",
            still.join(", ")
        )));
    }
    let cal: [JointCalibration; JOINTS] = core::array::from_fn(|j| JointCalibration {
        homing_offset: offsets[j],
        range_min: min[j].clamp(0, full as i16) as u16,
        range_max: max[j].clamp(0, full as i16) as u16,
        drive_mode: 0,
    });
    let wire = to_wire(&cal);
    validate_calibration(desc, &wire)?;
    arm.write_calibration(&wire)?;
    Ok(cal)
}

/// Prompts a person on the terminal: Enter when centred, Enter when the sweep is done, with a
/// live table of the ranges in between.
#[derive(Debug)]
pub struct TerminalGuide {
    lines: mpsc::Receiver<String>,
    last_draw: Option<Instant>,
}

impl Default for TerminalGuide {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalGuide {
    /// Starts a thread that reads stdin lines (so the sweep can poll for Enter).
    pub fn new() -> Self {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { lines, last_draw: None }
    }

    fn wait_enter(&mut self) -> Result<String, CalibrateError> {
        self.lines.recv().map_err(|_| CalibrateError::Aborted("standard input closed".into()))
    }
}

impl Guide for TerminalGuide {
    fn centre(&mut self, desc: &ArmDescription) -> Result<(), CalibrateError> {
        eprintln!("Torque is off. Move the {} by hand to the middle of its range (every joint centred, gripper half open), then press Enter.", desc.name);
        let l = self.wait_enter()?;
        if l.trim() == "q" { Err(CalibrateError::Aborted("quit at the centring step".into())) } else { Ok(()) }
    }

    fn sweep(&mut self, desc: &ArmDescription, present: &[i16; JOINTS], min: &[i16; JOINTS], max: &[i16; JOINTS]) -> Result<bool, CalibrateError> {
        if self.last_draw.is_none() {
            eprintln!("Now move every joint slowly through its whole range, end to end. Press Enter when done.");
        }
        if self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
            self.last_draw = Some(Instant::now());
            let row: Vec<String> = (0..JOINTS).map(|j| format!("{} {}|{}|{}", desc.joints[j].name, min[j], present[j], max[j])).collect();
            eprint!("\r{}\x1b[K", row.join("  "));
        }
        match self.lines.try_recv() {
            Ok(l) if l.trim() == "q" => Err(CalibrateError::Aborted("quit during the sweep".into())),
            Ok(_) => {
                eprintln!();
                Ok(true)
            }
            Err(mpsc::TryRecvError::Empty) => Ok(false),
            Err(mpsc::TryRecvError::Disconnected) => Err(CalibrateError::Aborted("standard input closed".into())),
        }
    }
}

/// A scripted person for the simulated arm: it turns the simulated servos' shafts with torque off
/// (as a hand turns a real arm), first to a centred pose that sits `assembly` counts away from
/// 2047 on each servo (a real arm's horns are never at 2047), then sweeps each joint in turn from
/// `centre − reach[j]` to `centre + reach[j]` in `steps` readings.
#[derive(Debug)]
pub struct ScriptedHand {
    bus: SharedBus,
    ids: [u8; JOINTS],
    pub assembly: [i32; JOINTS],
    pub reach: [(i32, i32); JOINTS],
    pub steps: usize,
    tick: usize,
}

impl ScriptedHand {
    pub fn new(bus: SharedBus, desc: &ArmDescription) -> Self {
        Self {
            bus,
            ids: desc.ids(),
            assembly: [-547, 310, 112, -905, 20, 1210],
            reach: [(1250, 1300), (1150, 1120), (1100, 1100), (1080, 1060), (1780, 1860), (20, 800)],
            steps: 12,
            tick: 0,
        }
    }

    /// The shaft position of joint `j` when centred.
    pub fn centre_raw(&self, j: usize) -> i32 {
        HALF_TURN + self.assembly[j]
    }

    fn set(&self, j: usize, raw: i32) {
        let mut bus = self.bus.lock();
        if let Some(s) = bus.servo_mut(self.ids[j]) {
            s.actual = raw as f32;
        }
    }
}

impl Guide for ScriptedHand {
    fn centre(&mut self, _desc: &ArmDescription) -> Result<(), CalibrateError> {
        for j in 0..JOINTS {
            self.set(j, self.centre_raw(j));
        }
        Ok(())
    }

    fn sweep(&mut self, _desc: &ArmDescription, _present: &[i16; JOINTS], _min: &[i16; JOINTS], _max: &[i16; JOINTS]) -> Result<bool, CalibrateError> {
        let per_joint = 2 * self.steps + 1;
        let j = self.tick / per_joint;
        if j >= JOINTS {
            return Ok(true);
        }
        let k = (self.tick % per_joint) as i32;
        let (lo, hi) = self.reach[j];
        let c = self.centre_raw(j);
        let s = self.steps as i32;
        // Out to the low end, then through the centre to the high end; the previous joint goes
        // home as this one starts. Each position is seen by the reading after this call.
        let raw = if k <= s { c - lo * k / s } else { c - lo + (lo + hi) * (k - s) / s };
        if k == 0 && j > 0 {
            self.set(j - 1, self.centre_raw(j - 1));
        }
        self.set(j, raw);
        self.tick += 1;
        Ok(false)
    }
}
