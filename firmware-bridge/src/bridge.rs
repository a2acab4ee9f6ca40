//! The bridge state machine: what the MCU runs between the host link and the servos (and what the
//! simulated board runs on the host). Pure logic with an injected millisecond clock, so timing
//! behaviour is testable.
//!
//! Safety lives here, whatever the host sends: every field of every message is checked before it
//! changes any state; targets are clamped to the joint limits, the goal moves at most `max_step`
//! counts per servo tick toward the target (interpolation at the servo loop rate), and if no
//! valid frame arrives for `timeout_ms` the arm goes to its safe state (hold the current position,
//! or drop torque), latching the WATCHDOG fault until the host clears it. After a panic or a
//! hardware-watchdog reset the MCU boots into the same safe state with the RESET fault latched.
//!
//! No arithmetic on host-supplied numbers can panic: this module denies `clippy::panic`,
//! `indexing_slicing`, `unwrap_used`, `expect_used` and `arithmetic_side_effects`.

#![deny(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects)]

use crate::protocol::{
    ArmState, BootInfo, Calibration, CalibrationField, FirmwareVersion, Frame, FrameError, HostMsg, JOINTS, McuMsg, PROTOCOL_VERSION, Positions, SEQ_UNKNOWN,
    WireError, fault,
};
use lapa_boards::{CalibrationError, JointCalibration, SO101};

/// What the arm does when the host goes silent, and after an abnormal MCU reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafeState {
    /// Keep torque as it is and hold the position the arm is at (default: the arm does not drop).
    Hold,
    /// Switch torque off.
    TorqueOff,
}

/// Bridge configuration (firmware constants; checked by [`BridgeConfig::validate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BridgeConfig {
    /// Joint limits in counts until a calibration (from the servos at boot, or from the host)
    /// replaces them.
    pub min: Positions,
    pub max: Positions,
    /// Largest goal change per servo tick, counts.
    pub max_step: [i16; JOINTS],
    /// Host silence after which the watchdog fires.
    pub timeout_ms: u32,
    pub safe_state: SafeState,
    pub firmware: FirmwareVersion,
    pub arm_id: [u8; 16],
}

impl Default for BridgeConfig {
    fn default() -> Self {
        let top = i16::try_from(SO101.servo.max_count()).unwrap_or(i16::MAX);
        Self {
            min: [0; JOINTS],
            max: [top; JOINTS],
            // 20 counts per 2 ms tick ≈ 880°/s: only a safety cap; real motion is slower.
            max_step: [20; JOINTS],
            timeout_ms: 100,
            safe_state: SafeState::Hold,
            firmware: FirmwareVersion { major: 0, minor: 2, patch: 0 },
            arm_id: *b"so101-sim\0\0\0\0\0\0\0",
        }
    }
}

/// A configuration the bridge refuses to run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// `min[joint] > max[joint]`, or a limit outside the servo's count range.
    Limits { joint: usize },
    /// `max_step[joint]` is not in `1..=max count`.
    MaxStep { joint: usize },
    /// A zero watchdog timeout would trip on every tick.
    Timeout,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::Limits { joint } => write!(f, "joint {joint}: limits are inverted or outside the servo's count range"),
            ConfigError::MaxStep { joint } => write!(f, "joint {joint}: max_step must be 1..={}", SO101.servo.max_count()),
            ConfigError::Timeout => write!(f, "timeout_ms must be above 0"),
        }
    }
}

impl BridgeConfig {
    /// Checks the invariants the state machine relies on (ordered limits inside the servo's
    /// range, a positive step cap, a positive timeout).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let top = i32::from(SO101.servo.max_count());
        for (joint, ((&lo, &hi), &step)) in self.min.iter().zip(&self.max).zip(&self.max_step).enumerate() {
            if lo < 0 || lo > hi || i32::from(hi) > top {
                return Err(ConfigError::Limits { joint });
            }
            if step < 1 || i32::from(step) > top {
                return Err(ConfigError::MaxStep { joint });
            }
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::Timeout);
        }
        Ok(())
    }
}

/// What the servo loop should do this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServoCommand {
    /// Goal positions to write (sync write).
    pub goal: Positions,
    pub torque: bool,
    /// Torque changed since the last tick (write Torque_Enable).
    pub torque_changed: bool,
}

/// Counters for tests and link statistics (wrapping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    pub frames_ok: u32,
    pub frames_bad: u32,
    pub duplicates: u32,
    pub targets_executed: u32,
    pub clamped: u32,
    pub refused: u32,
    pub watchdog_trips: u32,
}

/// `v` limited to `lo..=hi`; never panics (with `lo > hi` the result is `hi`, though the
/// validated configuration and calibrations never produce that).
fn clamp(v: i16, lo: i16, hi: i16) -> i16 {
    if v > hi {
        hi
    } else if v < lo {
        lo
    } else {
        v
    }
}

/// Checks a calibration from the host (or read from the servos) joint by joint.
pub fn validate_calibration(c: &Calibration) -> Result<(), WireError> {
    let joints = c.homing_offset.iter().zip(&c.range_min).zip(&c.range_max).zip(&c.drive_mode);
    for (joint, (((&homing_offset, &range_min), &range_max), &drive_mode)) in joints.enumerate() {
        let jc = JointCalibration { homing_offset, range_min, range_max, drive_mode };
        if let Err(e) = jc.validate(&SO101.servo) {
            let field = match e {
                CalibrationError::HomingOffset(..) => CalibrationField::HomingOffset,
                CalibrationError::RangeMin(..) => CalibrationField::RangeMin,
                CalibrationError::RangeMax(..) => CalibrationField::RangeMax,
                CalibrationError::Range(..) => CalibrationField::Range,
                CalibrationError::DriveMode(..) => CalibrationField::DriveMode,
            };
            return Err(WireError::InvalidCalibration { joint: u8::try_from(joint).unwrap_or(u8::MAX), field });
        }
    }
    Ok(())
}

/// Joint limits (counts) of a validated calibration.
fn limits_of(c: &Calibration) -> (Positions, Positions) {
    let to_i16 = |v: u16| i16::try_from(v).unwrap_or(i16::MAX);
    (c.range_min.map(to_i16), c.range_max.map(to_i16))
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub cfg: BridgeConfig,
    boot: BootInfo,
    connected: bool,
    last_seq: Option<u16>,
    last_reply: Option<McuMsg>,
    target: Positions,
    goal: Positions,
    torque: bool,
    torque_reported: bool,
    holding: bool,
    last_rx_ms: u64,
    faults: u16,
    present: Positions,
    state: ArmState,
    calibration: Calibration,
    /// Set when the host wrote a calibration the servo loop must push to EEPROM.
    pub calibration_dirty: bool,
    /// The last position reading predates a calibration push.
    present_stale: bool,
    /// Next joint of the pending calibration the servo loop writes to EEPROM.
    pub(crate) push_joint: usize,
    pub stats: BridgeStats,
}

impl Bridge {
    /// A bridge that has just booted. After an abnormal boot (panic, watchdog) the RESET fault is
    /// latched, so no motion runs until the host has seen it and cleared it.
    pub fn new(cfg: BridgeConfig, now_ms: u64, boot: BootInfo) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let centre: Positions = core::array::from_fn(|j| {
            let (lo, hi) = (cfg.min.get(j).copied().unwrap_or(0), cfg.max.get(j).copied().unwrap_or(0));
            clamp(lo.saturating_add(hi.saturating_sub(lo) / 2), lo, hi)
        });
        Ok(Self {
            cfg,
            boot,
            connected: false,
            last_seq: None,
            last_reply: None,
            target: centre,
            goal: centre,
            torque: false,
            torque_reported: false,
            holding: true,
            last_rx_ms: now_ms,
            faults: if boot.abnormal() { fault::RESET } else { 0 },
            present: centre,
            state: ArmState::default(),
            // Until the servos' own calibration is read (or the host writes one), report the limits
            // the firmware enforces, not an all-zero calibration.
            calibration: Calibration {
                homing_offset: [0; JOINTS],
                range_min: cfg.min.map(|v| u16::try_from(v).unwrap_or(0)),
                range_max: cfg.max.map(|v| u16::try_from(v).unwrap_or(0)),
                drive_mode: [0; JOINTS],
            },
            calibration_dirty: false,
            present_stale: false,
            push_joint: 0,
            stats: BridgeStats::default(),
        })
    }

    pub fn boot(&self) -> BootInfo {
        self.boot
    }

    pub fn faults(&self) -> u16 {
        self.faults
    }

    pub fn target(&self) -> Positions {
        self.target
    }

    pub fn goal(&self) -> Positions {
        self.goal
    }

    pub fn torque(&self) -> bool {
        self.torque
    }

    pub fn holding(&self) -> bool {
        self.holding
    }

    pub fn calibration(&self) -> Calibration {
        self.calibration
    }

    /// Current joint limits in counts.
    pub fn limits(&self) -> (Positions, Positions) {
        (self.cfg.min, self.cfg.max)
    }

    /// Latches a fault detected by the servo loop (bus timeout, servo error bits). A new fault
    /// stops motion in progress: the arm goes to its safe state, as on a watchdog trip.
    pub fn raise(&mut self, flags: u16) {
        let new = flags & !self.faults;
        self.faults |= flags;
        if new != 0 {
            self.enter_safe_state();
        }
    }

    fn enter_safe_state(&mut self) {
        match self.cfg.safe_state {
            SafeState::Hold => self.hold(),
            SafeState::TorqueOff => {
                self.torque = false;
                self.holding = true;
            }
        }
    }

    /// The servo loop wrote the pending calibration to the servos' EEPROM. Positions read before
    /// that were in the old homing-offset frame: engaging torque waits for the next reading.
    pub fn calibration_pushed(&mut self) {
        self.calibration_dirty = false;
        self.present_stale = true;
        self.push_joint = 0;
    }

    /// Adopts the calibration stored in the servos (read at boot). Refused, leaving the
    /// configured limits, if any field is out of range.
    pub fn load_calibration(&mut self, c: Calibration) -> Result<(), WireError> {
        validate_calibration(&c)?;
        self.apply_calibration(c);
        Ok(())
    }

    fn apply_calibration(&mut self, c: Calibration) {
        self.calibration = c;
        let (min, max) = limits_of(&c);
        self.cfg.min = min;
        self.cfg.max = max;
        // Keep the invariant "goal and target inside the limits" (torque is off when this runs).
        for j in 0..JOINTS {
            if let (Some(t), Some(g), Some(p), Some(&lo), Some(&hi)) =
                (self.target.get_mut(j), self.goal.get_mut(j), self.present.get(j), min.get(j), max.get(j))
            {
                *t = clamp(*p, lo, hi);
                *g = *t;
            }
        }
    }

    /// Puts the state machine in the safe state the servo loop established at boot: the arm held
    /// at `present` (torque as the servos report it) or with torque off.
    pub fn boot_safe_state(&mut self, present: Positions, torque_on: bool) {
        self.present = present;
        self.torque = torque_on;
        self.torque_reported = torque_on;
        self.hold();
    }

    /// Records a rejected frame; the reply tells the host what was wrong. Bad frames do not feed
    /// the watchdog.
    pub fn on_bad_frame(&mut self, err: FrameError) -> McuMsg {
        self.stats.frames_bad = self.stats.frames_bad.wrapping_add(1);
        McuMsg::Error(err.to_wire())
    }

    /// Handles one valid frame and returns the reply (sent with the same sequence number).
    pub fn on_frame(&mut self, frame: &Frame<HostMsg>, now_ms: u64) -> McuMsg {
        self.stats.frames_ok = self.stats.frames_ok.wrapping_add(1);
        if frame.seq == SEQ_UNKNOWN {
            return self.refuse(WireError::ReservedSequence);
        }
        // Only frames the MCU accepts feed the watchdog: a host stuck sending refused commands is
        // as good as silent.
        let reply = self.answer(frame);
        if !matches!(reply, McuMsg::Error(_)) {
            self.last_rx_ms = now_ms;
        }
        reply
    }

    fn answer(&mut self, frame: &Frame<HostMsg>) -> McuMsg {
        // A retransmitted command (same sequence number) is answered again but not re-executed.
        if self.last_seq == Some(frame.seq)
            && !matches!(frame.msg, HostMsg::Hello { .. })
            && let Some(r) = self.last_reply
        {
            self.stats.duplicates = self.stats.duplicates.wrapping_add(1);
            return r;
        }
        let reply = self.execute(&frame.msg);
        self.last_seq = Some(frame.seq);
        self.last_reply = Some(reply);
        reply
    }

    fn refuse(&mut self, e: WireError) -> McuMsg {
        self.stats.refused = self.stats.refused.wrapping_add(1);
        McuMsg::Error(e)
    }

    fn execute(&mut self, msg: &HostMsg) -> McuMsg {
        if let HostMsg::Hello { protocol } = *msg {
            if protocol != PROTOCOL_VERSION {
                // Refused, and like every refusal it changes nothing (the session stays as it was).
                return self.refuse(WireError::ProtocolMismatch { host: protocol, mcu: PROTOCOL_VERSION });
            }
            self.connected = true;
            return McuMsg::HelloAck { protocol: PROTOCOL_VERSION, firmware: self.cfg.firmware, arm_id: self.cfg.arm_id, boot: self.boot };
        }
        // Stopping is always allowed, handshake or not: any host that can reach the MCU can hold the
        // arm or drop its torque.
        match *msg {
            HostMsg::Hold => {
                self.hold();
                return McuMsg::Ack { clamped: 0 };
            }
            HostMsg::Torque { on: false } => {
                self.torque = false;
                return McuMsg::Ack { clamped: 0 };
            }
            _ => {}
        }
        if !self.connected {
            return self.refuse(WireError::NoHandshake);
        }
        match *msg {
            HostMsg::Hello { .. } => McuMsg::Ack { clamped: 0 },
            HostMsg::SetTargets { targets } => {
                if self.faults != 0 {
                    return self.refuse(WireError::Faulted { flags: self.faults });
                }
                let mut clamped = 0u8;
                let mut next = self.target;
                for (j, ((n, &t), (&lo, &hi))) in next.iter_mut().zip(&targets).zip(self.cfg.min.iter().zip(&self.cfg.max)).enumerate() {
                    *n = clamp(t, lo, hi);
                    if *n != t {
                        clamped |= 1u8.checked_shl(u32::try_from(j).unwrap_or(u32::MAX)).unwrap_or(0);
                    }
                }
                self.target = next;
                if clamped != 0 {
                    self.stats.clamped = self.stats.clamped.wrapping_add(1);
                }
                self.holding = false;
                self.stats.targets_executed = self.stats.targets_executed.wrapping_add(1);
                McuMsg::Ack { clamped }
            }
            HostMsg::ReadState => McuMsg::State(self.snapshot()),
            HostMsg::Torque { on } => {
                if on && self.faults != 0 {
                    return self.refuse(WireError::Faulted { flags: self.faults });
                }
                if on && !self.torque {
                    // The goal would be computed from a position in the old homing-offset frame.
                    if self.calibration_dirty || self.present_stale {
                        return self.refuse(WireError::CalibrationPending);
                    }
                    // Engage exactly where the arm is, never at a stale target or a clamped one: an
                    // arm outside its limits (moved by hand) is refused rather than snapped back.
                    if let Some(joint) = self.outside_limits() {
                        return self.refuse(WireError::OutsideLimits { joint });
                    }
                    self.hold();
                    self.holding = false;
                }
                self.torque = on;
                McuMsg::Ack { clamped: 0 }
            }
            HostMsg::Hold => McuMsg::Ack { clamped: 0 },
            HostMsg::Heartbeat => McuMsg::Ack { clamped: 0 },
            HostMsg::ReadCalibration => McuMsg::Calibration(self.calibration),
            HostMsg::WriteCalibration(c) => {
                // Refuse what the servos cannot store, before anything changes or reaches EEPROM.
                if let Err(e) = validate_calibration(&c) {
                    return self.refuse(e);
                }
                // New limits under a moving arm could move the goal by more than max_step: like
                // LeRobot, calibrate with torque off.
                if self.torque {
                    return self.refuse(WireError::TorqueOn);
                }
                self.apply_calibration(c);
                self.calibration_dirty = true;
                self.push_joint = 0;
                McuMsg::Ack { clamped: 0 }
            }
            HostMsg::ClearFaults => {
                self.faults = 0;
                McuMsg::Ack { clamped: 0 }
            }
        }
    }

    /// The first joint whose present position is outside its limits.
    fn outside_limits(&self) -> Option<u8> {
        let joints = self.present.iter().zip(self.cfg.min.iter().zip(&self.cfg.max));
        joints.enumerate().find(|(_, (p, (lo, hi)))| *p < *lo || *p > *hi).map(|(j, _)| u8::try_from(j).unwrap_or(u8::MAX))
    }

    /// Stop: the goal becomes where the arm is. A joint reading outside its limits (pushed there,
    /// or a reading that is wrong) keeps its last goal, which is inside them, instead of being
    /// driven to the nearest limit.
    fn hold(&mut self) {
        let joints = self.goal.iter_mut().zip(&self.present).zip(self.cfg.min.iter().zip(&self.cfg.max));
        for ((g, &p), (&lo, &hi)) in joints {
            if p >= lo && p <= hi {
                *g = p;
            } else {
                *g = clamp(*g, lo, hi);
            }
        }
        self.target = self.goal;
        self.holding = true;
    }

    fn snapshot(&self) -> ArmState {
        ArmState { faults: self.faults, torque: self.torque, holding: self.holding, ..self.state }
    }

    /// Feeds the latest servo readings (positions, loads, temperatures, voltage).
    pub fn update_state(&mut self, state: ArmState) {
        self.present = state.positions;
        self.present_stale = false;
        self.state = state;
    }

    /// One servo-loop tick: watchdog, then interpolation of the goal toward the target.
    pub fn tick(&mut self, now_ms: u64) -> ServoCommand {
        // Before any handshake nothing can move the arm (the boot put it in its safe state), so the
        // watchdog watches a session, not the time it takes USB to enumerate.
        let silent = now_ms.saturating_sub(self.last_rx_ms) > u64::from(self.cfg.timeout_ms);
        if self.torque && self.connected && silent && self.faults & fault::WATCHDOG == 0 {
            self.faults |= fault::WATCHDOG;
            self.stats.watchdog_trips = self.stats.watchdog_trips.wrapping_add(1);
            self.enter_safe_state();
        }
        if self.torque && !self.holding {
            let limits = self.cfg.min.iter().zip(&self.cfg.max);
            for (((g, &t), &s), (&lo, &hi)) in self.goal.iter_mut().zip(&self.target).zip(&self.cfg.max_step).zip(limits) {
                let d = i32::from(t).saturating_sub(i32::from(*g));
                let s = i32::from(s.max(0));
                let step = if d > s {
                    s
                } else if d < s.saturating_neg() {
                    s.saturating_neg()
                } else {
                    d
                };
                let next = i32::from(*g).saturating_add(step);
                *g = clamp(i16::try_from(next).unwrap_or(if next > 0 { i16::MAX } else { i16::MIN }), lo, hi);
            }
        }
        let changed = self.torque != self.torque_reported;
        self.torque_reported = self.torque;
        ServoCommand { goal: self.goal, torque: self.torque, torque_changed: changed }
    }
}
