//! `lapa-edge doctor`: checks what a board needs, and says what is wrong in plain words.
//!
//! LeRobot users' most common failures are "no status packet" bus errors and calibration: the
//! servo check names every servo that did not answer (id, joint, the baud it was asked at, and
//! whether it answers at another baud), reports each servo's model, firmware, supply voltage,
//! temperature and error bits, and compares the calibration file with the servos' EEPROM.

use crate::calibrate::{lerobot_dir, read_lerobot};
use lapa_boards::ArmDescription;
use lapa_bridge::feetech::{Clock, FeetechBus, decode_sign_magnitude, reg, status_bits};
use std::path::Path;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    pub what: String,
    pub detail: String,
}

impl Check {
    fn new(level: Level, what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { level, what: what.into(), detail: detail.into() }
    }
}

/// Prints the report; returns the number of failures.
pub fn print(checks: &[Check]) -> usize {
    for c in checks {
        let tag = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("{tag}  {:<22} {}", c.what, c.detail);
    }
    checks.iter().filter(|c| c.level == Level::Fail).count()
}

fn error_bits(bits: u8) -> String {
    let names = [
        (status_bits::VOLTAGE, "voltage out of range"),
        (status_bits::ANGLE, "goal outside its limits"),
        (status_bits::OVERHEAT, "overheated"),
        (status_bits::OVERCURRENT, "over current"),
        (status_bits::OVERLOAD, "overloaded"),
    ];
    names.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

/// What one servo said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServoReport {
    pub id: u8,
    pub model: u16,
    pub firmware: (u8, u8),
    /// Volts × 10.
    pub voltage_dv: u8,
    pub min_voltage_dv: u8,
    pub max_voltage_dv: u8,
    pub temperature: u8,
    pub errors: u8,
    pub homing_offset: i32,
    pub range: (u16, u16),
}

/// Reads one servo; `None` when it does not answer.
pub fn probe_servo<IO, C>(bus: &mut FeetechBus<IO, C>, desc: &ArmDescription, id: u8) -> Option<ServoReport>
where
    IO: embedded_io::Read + embedded_io::Write + embedded_io::ReadReady,
    IO::Error: core::fmt::Debug,
    C: Clock,
{
    let errors = bus.ping(id).ok()?;
    let byte = |bus: &mut FeetechBus<IO, C>, r: lapa_bridge::feetech::Register| bus.read(id, r.addr, 1).ok().and_then(|(d, _)| d.first().copied()).unwrap_or(0);
    let model = bus.read_u16(id, reg::MODEL_NUMBER).unwrap_or(0);
    let firmware = (byte(bus, reg::FIRMWARE_MAJOR), byte(bus, reg::FIRMWARE_MINOR));
    let voltage_dv = byte(bus, reg::PRESENT_VOLTAGE);
    let min_voltage_dv = byte(bus, reg::MIN_VOLTAGE_LIMIT);
    let max_voltage_dv = byte(bus, reg::MAX_VOLTAGE_LIMIT);
    let temperature = byte(bus, reg::PRESENT_TEMPERATURE);
    let homing_offset = bus.read_u16(id, reg::HOMING_OFFSET).map(|v| decode_sign_magnitude(v, desc.servo.homing_offset_sign_bit)).unwrap_or(0);
    let range = (bus.read_u16(id, reg::MIN_POSITION_LIMIT).unwrap_or(0), bus.read_u16(id, reg::MAX_POSITION_LIMIT).unwrap_or(0));
    Some(ServoReport { id, model, firmware, voltage_dv, min_voltage_dv, max_voltage_dv, temperature, errors, homing_offset, range })
}

/// Checks every servo of the arm on a bus opened at `baud`. `other_bauds` reopens the bus at
/// another rate and says which ids answer there (a real port; the simulated bus has one rate).
pub fn check_servos<IO, C>(
    bus: &mut FeetechBus<IO, C>,
    desc: &ArmDescription,
    baud: u32,
    mut other_bauds: impl FnMut(&[u8]) -> Vec<(u32, Vec<u8>)>,
) -> (Vec<Check>, Vec<Option<ServoReport>>)
where
    IO: embedded_io::Read + embedded_io::Write + embedded_io::ReadReady,
    IO::Error: core::fmt::Debug,
    C: Clock,
{
    let mut checks = Vec::new();
    let reports: Vec<Option<ServoReport>> = desc.joints.iter().map(|j| probe_servo(bus, desc, j.id)).collect();
    let silent: Vec<u8> = desc.joints.iter().zip(&reports).filter(|(_, r)| r.is_none()).map(|(j, _)| j.id).collect();
    let elsewhere = if silent.is_empty() { Vec::new() } else { other_bauds(&silent) };
    for (j, r) in desc.joints.iter().zip(&reports) {
        let what = format!("servo {} ({})", j.id, j.name);
        match r {
            None => {
                let at: Vec<String> = elsewhere.iter().filter(|(_, ids)| ids.contains(&j.id)).map(|(b, _)| b.to_string()).collect();
                let detail = if at.is_empty() {
                    format!(
                        "no status packet at {baud} baud, nor at any other rate: check its 3-pin cable and the bus power, and that its id is {} (set ids one servo at a time, as LeRobot's lerobot-setup-motors does)",
                        j.id
                    )
                } else {
                    format!(
                        "no status packet at {baud} baud, but it answers at {} baud: set the profile's baud or the servo's Baud_Rate to match",
                        at.join(", ")
                    )
                };
                checks.push(Check::new(Level::Fail, what, detail));
            }
            Some(r) => {
                let volts = f32::from(r.voltage_dv) / 10.0;
                let mut level = Level::Ok;
                let mut notes = Vec::new();
                if r.model != desc.servo.model_number {
                    level = Level::Fail;
                    notes.push(format!("model {} is not an {} ({})", r.model, desc.servo.name, desc.servo.model_number));
                }
                if r.voltage_dv < r.min_voltage_dv || r.voltage_dv > r.max_voltage_dv {
                    level = Level::Fail;
                    notes.push(format!(
                        "supply {volts:.1} V is outside its limits {:.1}–{:.1} V (a 12 V servo on a 5 V supply, or the reverse?)",
                        f32::from(r.min_voltage_dv) / 10.0,
                        f32::from(r.max_voltage_dv) / 10.0
                    ));
                }
                if r.errors != 0 {
                    level = Level::Fail;
                    notes.push(format!("reports {}", error_bits(r.errors)));
                }
                let detail = format!(
                    "{} firmware {}.{}, {volts:.1} V, {} °C, offset {}, limits {}..{}{}",
                    if r.model == desc.servo.model_number { desc.servo.name.to_string() } else { format!("model {}", r.model) },
                    r.firmware.0,
                    r.firmware.1,
                    r.temperature,
                    r.homing_offset,
                    r.range.0,
                    r.range.1,
                    if notes.is_empty() { String::new() } else { format!(": {}", notes.join("; ")) }
                );
                checks.push(Check::new(level, what, detail));
            }
        }
    }
    let answered: Vec<&ServoReport> = reports.iter().flatten().collect();
    if answered.len() > 1 {
        let v: Vec<u8> = answered.iter().map(|r| r.voltage_dv).collect();
        let (lo, hi) = (v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0));
        if hi.saturating_sub(lo) > 10 {
            checks.push(Check::new(
                Level::Warn,
                "bus power",
                format!("supply voltages differ by {:.1} V across the servos: a loose power daisy-chain?", f32::from(hi - lo) / 10.0),
            ));
        }
    }
    (checks, reports)
}

/// Compares a LeRobot calibration file for `arm_id` with what the servos hold.
pub fn check_calibration(desc: &ArmDescription, leader: bool, arm_id: &str, file: Option<&Path>, reports: &[Option<ServoReport>]) -> Check {
    let path = match file {
        Some(p) => p.to_path_buf(),
        None => match lerobot_dir(desc.name, leader) {
            Some(d) => d.join(format!("{arm_id}.json")),
            None => return Check::new(Level::Fail, "calibration", "no HOME to find LeRobot's calibration folder"),
        },
    };
    if !path.exists() {
        return Check::new(
            Level::Fail,
            "calibration",
            format!("{} does not exist: run `lapa-edge calibrate --arm-id {arm_id}`{}", path.display(), if leader { " --leader" } else { "" }),
        );
    }
    let cal = match read_lerobot(&path, desc) {
        Ok(c) => c,
        Err(e) => return Check::new(Level::Fail, "calibration", e.to_string()),
    };
    let mut differ = Vec::new();
    for ((j, c), r) in desc.joints.iter().zip(&cal).zip(reports) {
        if let Some(r) = r
            && (r.homing_offset != i32::from(c.homing_offset) || r.range != (c.range_min, c.range_max))
        {
            differ.push(format!(
                "{} (servo {}..{} offset {}, file {}..{} offset {})",
                j.name, r.range.0, r.range.1, r.homing_offset, c.range_min, c.range_max, c.homing_offset
            ));
        }
    }
    if differ.is_empty() {
        Check::new(Level::Ok, "calibration", format!("{} matches the servos", path.display()))
    } else {
        Check::new(
            Level::Fail,
            "calibration",
            format!(
                "{} differs from the servos' EEPROM for {}: write it with `lapa-edge calibrate --apply {}` or calibrate again",
                path.display(),
                differ.join(", "),
                path.display()
            ),
        )
    }
}

/// Memory available for the policy (Linux `/proc/meminfo`).
pub fn check_memory(need_mib: u64) -> Check {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let avail = text.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    match avail {
        None => Check::new(Level::Warn, "memory", "cannot read MemAvailable from /proc/meminfo"),
        Some(kib) if kib / 1024 < need_mib => Check::new(Level::Fail, "memory", format!("{} MiB available, the run needs about {need_mib} MiB", kib / 1024)),
        Some(kib) => Check::new(Level::Ok, "memory", format!("{} MiB available", kib / 1024)),
    }
}
