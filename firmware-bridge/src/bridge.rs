//! The bridge state machine: what the MCU runs between the host link and the servos (and what the
//! simulated board runs on the host). Pure logic with an injected millisecond clock, so timing
//! behaviour is testable.
//!
//! Safety lives here, whatever the host sends: targets are clamped to the joint limits, the goal
//! moves at most `max_step` counts per servo tick toward the target (interpolation at the servo
//! loop rate), and if no valid frame arrives for `timeout_ms` the arm holds its current position
//! (or drops torque), latching the WATCHDOG fault until the host clears it.

use crate::protocol::{
    ArmState, Calibration, FirmwareVersion, Frame, FrameError, HostMsg, JOINTS, McuMsg, PROTOCOL_VERSION, Positions, WireError, fault,
};

/// What to do when the host goes silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Keep torque on and hold the position the arm is at (default: the arm does not drop).
    Hold,
    /// Switch torque off.
    TorqueOff,
}

/// Bridge configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BridgeConfig {
    pub min: Positions,
    pub max: Positions,
    /// Largest goal change per servo tick, counts.
    pub max_step: [i16; JOINTS],
    /// Host silence after which the watchdog fires.
    pub timeout_ms: u32,
    pub on_timeout: TimeoutAction,
    pub firmware: FirmwareVersion,
    pub arm_id: [u8; 16],
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            min: [0; JOINTS],
            max: [4095; JOINTS],
            // 20 counts per 2 ms tick ≈ 880°/s: only a safety cap; real motion is slower.
            max_step: [20; JOINTS],
            timeout_ms: 100,
            on_timeout: TimeoutAction::Hold,
            firmware: FirmwareVersion { major: 0, minor: 1, patch: 0 },
            arm_id: *b"so101-sim\0\0\0\0\0\0\0",
        }
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

/// Counters for tests and link statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    pub frames_ok: u32,
    pub frames_bad: u32,
    pub duplicates: u32,
    pub targets_executed: u32,
    pub clamped: u32,
    pub watchdog_trips: u32,
}

/// The state machine.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub cfg: BridgeConfig,
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
    pub stats: BridgeStats,
}

impl Bridge {
    pub fn new(cfg: BridgeConfig, now_ms: u64) -> Self {
        Self {
            cfg,
            connected: false,
            last_seq: None,
            last_reply: None,
            target: [2048; JOINTS],
            goal: [2048; JOINTS],
            torque: false,
            torque_reported: false,
            holding: true,
            last_rx_ms: now_ms,
            faults: 0,
            present: [2048; JOINTS],
            state: ArmState::default(),
            calibration: Calibration::default(),
            calibration_dirty: false,
            stats: BridgeStats::default(),
        }
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

    pub fn calibration(&self) -> Calibration {
        self.calibration
    }

    /// Latches a fault detected by the servo loop (bus timeout, servo error bits).
    pub fn raise(&mut self, flags: u16) {
        self.faults |= flags;
    }

    /// Records a rejected frame; the reply tells the host what was wrong. Bad frames do not feed
    /// the watchdog.
    pub fn on_bad_frame(&mut self, err: FrameError) -> McuMsg {
        self.stats.frames_bad += 1;
        McuMsg::Error(err.to_wire())
    }

    /// Handles one valid frame and returns the reply (sent with the same sequence number).
    pub fn on_frame(&mut self, frame: &Frame<HostMsg>, now_ms: u64) -> McuMsg {
        self.stats.frames_ok += 1;
        self.last_rx_ms = now_ms;
        // A retransmitted command (same sequence number) is answered again but not re-executed.
        if self.last_seq == Some(frame.seq) && !matches!(frame.msg, HostMsg::Hello { .. })
            && let Some(r) = self.last_reply {
                self.stats.duplicates += 1;
                return r;
            }
        let reply = self.execute(&frame.msg);
        self.last_seq = Some(frame.seq);
        self.last_reply = Some(reply);
        reply
    }

    fn execute(&mut self, msg: &HostMsg) -> McuMsg {
        if let HostMsg::Hello { protocol } = *msg {
            if protocol != PROTOCOL_VERSION {
                self.connected = false;
                return McuMsg::Error(WireError::ProtocolMismatch { host: protocol, mcu: PROTOCOL_VERSION });
            }
            self.connected = true;
            return McuMsg::HelloAck { protocol: PROTOCOL_VERSION, firmware: self.cfg.firmware, arm_id: self.cfg.arm_id };
        }
        if !self.connected {
            return McuMsg::Error(WireError::NoHandshake);
        }
        match *msg {
            HostMsg::Hello { .. } => McuMsg::Ack { clamped: 0 },
            HostMsg::SetTargets { targets } => {
                if self.faults != 0 {
                    return McuMsg::Error(WireError::Faulted { flags: self.faults });
                }
                let mut clamped = 0u8;
                for j in 0..JOINTS {
                    let t = targets[j].clamp(self.cfg.min[j], self.cfg.max[j]);
                    if t != targets[j] {
                        clamped |= 1 << j;
                    }
                    self.target[j] = t;
                }
                if clamped != 0 {
                    self.stats.clamped += 1;
                }
                self.holding = false;
                self.stats.targets_executed += 1;
                McuMsg::Ack { clamped }
            }
            HostMsg::ReadState => McuMsg::State(self.snapshot()),
            HostMsg::Torque { on } => {
                if on && self.faults != 0 {
                    return McuMsg::Error(WireError::Faulted { flags: self.faults });
                }
                if on && !self.torque {
                    // Engage where the arm is, never jump to a stale target.
                    self.target = self.present;
                    self.goal = self.present;
                }
                self.torque = on;
                McuMsg::Ack { clamped: 0 }
            }
            HostMsg::Hold => {
                self.hold();
                McuMsg::Ack { clamped: 0 }
            }
            HostMsg::Heartbeat => McuMsg::Ack { clamped: 0 },
            HostMsg::ReadCalibration => McuMsg::Calibration(self.calibration),
            HostMsg::WriteCalibration(c) => {
                // Refuse what the servos cannot store, before anything is written to EEPROM.
                if let Some(j) = (0..JOINTS).find(|&j| crate::feetech::encode_sign_magnitude(i32::from(c.homing_offset[j]), 11).is_none()) {
                    return McuMsg::Error(WireError::InvalidCalibration { joint: j as u8 });
                }
                self.calibration = c;
                self.calibration_dirty = true;
                for j in 0..JOINTS {
                    self.cfg.min[j] = i16::try_from(c.range_min[j]).unwrap_or(i16::MAX);
                    self.cfg.max[j] = i16::try_from(c.range_max[j]).unwrap_or(i16::MAX);
                }
                McuMsg::Ack { clamped: 0 }
            }
            HostMsg::ClearFaults => {
                self.faults = 0;
                McuMsg::Ack { clamped: 0 }
            }
        }
    }

    fn hold(&mut self) {
        self.target = self.present;
        self.goal = self.present;
        self.holding = true;
    }

    fn snapshot(&self) -> ArmState {
        ArmState { faults: self.faults, torque: self.torque, holding: self.holding, ..self.state }
    }

    /// Feeds the latest servo readings (positions, loads, temperatures, voltage).
    pub fn update_state(&mut self, state: ArmState) {
        self.present = state.positions;
        self.state = state;
    }

    /// One servo-loop tick: watchdog, then interpolation of the goal toward the target.
    pub fn tick(&mut self, now_ms: u64) -> ServoCommand {
        if self.torque && now_ms.saturating_sub(self.last_rx_ms) > u64::from(self.cfg.timeout_ms) && self.faults & fault::WATCHDOG == 0 {
            self.faults |= fault::WATCHDOG;
            self.stats.watchdog_trips += 1;
            match self.cfg.on_timeout {
                TimeoutAction::Hold => self.hold(),
                TimeoutAction::TorqueOff => {
                    self.torque = false;
                    self.holding = true;
                }
            }
        }
        if self.torque && !self.holding {
            for j in 0..JOINTS {
                let d = i32::from(self.target[j]) - i32::from(self.goal[j]);
                let s = i32::from(self.cfg.max_step[j]);
                let step = d.clamp(-s, s);
                let next = (i32::from(self.goal[j]) + step).clamp(i32::from(self.cfg.min[j]), i32::from(self.cfg.max[j]));
                self.goal[j] = next as i16;
            }
        }
        let changed = self.torque != self.torque_reported;
        self.torque_reported = self.torque;
        ServoCommand { goal: self.goal, torque: self.torque, torque_changed: changed }
    }
}
