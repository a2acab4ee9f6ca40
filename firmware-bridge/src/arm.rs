//! The arm interface the edge runtime uses, with three implementations: the Feetech bus driven
//! directly from the board (USB-TTL adapter, what LeRobot does), a lapa bridge MCU, and a
//! simulated arm (simulated servos behind the real bus driver).
//!
//! Units are converted at this one boundary: callers command and read **joint units** (degrees for
//! the arm joints, 0..100 for the gripper, [`lapa_boards::so101`]); servo counts stay below it.
//! The conversion uses the calibration read from the arm at [`Arm::connect`] (and the one written
//! by [`Arm::write_calibration`]); an arm whose calibration has an empty range refuses to convert,
//! as LeRobot does.

use crate::feetech::{BusError, Clock, FeetechBus, decode_sign_magnitude, reg, state_from_readings};
use crate::link::{HelloInfo, Link, LinkError};
use crate::protocol::{ArmState, BootInfo, Calibration, HostMsg, JOINTS, McuMsg, ResetReason};
use crate::simservo::SimBus;
use crate::simwire::{SharedBus, SimWire, StdClock};
use embedded_io::{Read, ReadReady, Write};
use lapa_boards::{ArmDescription, CalibrationError, ConversionError, JointCalibration, SO101};
use std::time::Instant;

pub use lapa_boards::Joints;

/// Arm failures.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("servo bus: {0}")]
    Bus(String),
    #[error("calibration of joint {joint} ({name}): {err}; nothing was written")]
    Calibration { joint: usize, name: &'static str, err: CalibrationError },
    #[error(transparent)]
    Units(#[from] ConversionError),
    #[error("the arm is not connected: call connect() first")]
    NotConnected,
    #[error("unexpected reply: {0:?}")]
    Unexpected(McuMsg),
}

impl<E: core::fmt::Debug> From<BusError<E>> for ArmError {
    fn from(e: BusError<E>) -> Self {
        ArmError::Bus(match e {
            BusError::Timeout { id } => format!("no status packet from servo {id} (check power, wiring, baud rate and id)"),
            other => format!("{other:?}"),
        })
    }
}

/// Identity of a connected arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmInfo {
    pub kind: &'static str,
    pub description: String,
    /// How the bridge MCU last booted (bridge arms only).
    pub boot: Option<BootInfo>,
}

impl ArmInfo {
    /// A line for the user when the MCU restarted abnormally, `None` otherwise.
    pub fn reset_warning(&self) -> Option<String> {
        let b = self.boot.filter(BootInfo::abnormal)?;
        Some(reset_message(b))
    }
}

/// What a user should read about an abnormal MCU boot.
pub fn reset_message(b: BootInfo) -> String {
    let why = match b.reason {
        ResetReason::Watchdog => "because its hardware watchdog expired (the firmware stopped running)",
        ResetReason::Panic => "because the firmware panicked",
        ResetReason::PowerOn => "(power-on or reset pin)",
    };
    let after = if b.abnormal() { "; motion is refused until faults are cleared" } else { "" };
    format!("the bridge MCU restarted {why} (boot {}) and put the arm in its safe state{after}", b.count)
}

/// One reading of the arm: joint values in joint units and the raw state (counts, loads,
/// temperatures, faults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmReading {
    pub joints: Joints,
    pub state: ArmState,
}

/// What every arm backend offers.
pub trait Arm {
    fn connect(&mut self) -> Result<ArmInfo, ArmError>;
    /// The arm's joints, units and limits.
    fn description(&self) -> &'static ArmDescription {
        &SO101
    }
    fn read_state(&mut self) -> Result<ArmReading, ArmError>;
    /// Absolute joint targets in joint units (degrees; gripper 0..100), converted to counts with
    /// the arm's calibration and limited to its calibrated range.
    fn send_targets(&mut self, targets: &Joints) -> Result<(), ArmError>;
    fn set_torque(&mut self, on: bool) -> Result<(), ArmError>;
    /// Clears latched faults (a watchdog trip, a reset) so motion is accepted again.
    fn clear_faults(&mut self) -> Result<(), ArmError>;
    fn read_calibration(&mut self) -> Result<Calibration, ArmError>;
    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError>;
}

/// Per-joint view of a wire calibration.
pub fn joint_calibrations(c: &Calibration) -> [JointCalibration; JOINTS] {
    core::array::from_fn(|j| JointCalibration {
        homing_offset: c.homing_offset.get(j).copied().unwrap_or(0),
        range_min: c.range_min.get(j).copied().unwrap_or(0),
        range_max: c.range_max.get(j).copied().unwrap_or(0),
        drive_mode: c.drive_mode.get(j).copied().unwrap_or(0),
    })
}

/// Checks every joint of a calibration before anything is written.
pub fn validate_calibration(desc: &ArmDescription, c: &Calibration) -> Result<(), ArmError> {
    for (joint, (jc, spec)) in joint_calibrations(c).iter().zip(&desc.joints).enumerate() {
        jc.validate(&desc.servo).map_err(|err| ArmError::Calibration { joint, name: spec.name, err })?;
    }
    Ok(())
}

/// Counts ↔ joint units with a calibration read from the arm.
#[derive(Debug, Clone, Copy)]
struct Units {
    desc: &'static ArmDescription,
    cal: Option<[JointCalibration; JOINTS]>,
}

impl Units {
    fn new() -> Self {
        Self { desc: &SO101, cal: None }
    }

    fn set(&mut self, c: &Calibration) {
        self.cal = Some(joint_calibrations(c));
    }

    fn units_of(&self, counts: &[i16; JOINTS]) -> Result<Joints, ArmError> {
        let cal = self.cal.as_ref().ok_or(ArmError::NotConnected)?;
        Ok(self.desc.to_units(cal, counts)?)
    }

    fn counts_of(&self, q: &Joints) -> Result<[i16; JOINTS], ArmError> {
        let cal = self.cal.as_ref().ok_or(ArmError::NotConnected)?;
        Ok(self.desc.to_counts(cal, q)?)
    }
}

/// Six servos on a Feetech bus driven directly.
#[derive(Debug)]
pub struct FeetechArm<IO, C> {
    pub bus: FeetechBus<IO, C>,
    pub ids: [u8; JOINTS],
    units: Units,
}

impl<IO: Read + Write + ReadReady, C: Clock> FeetechArm<IO, C> {
    pub fn new(bus: FeetechBus<IO, C>) -> Self {
        Self { bus, ids: SO101.ids(), units: Units::new() }
    }
}

impl<IO: Read + Write + ReadReady, C: Clock> Arm for FeetechArm<IO, C>
where
    IO::Error: core::fmt::Debug,
{
    fn connect(&mut self) -> Result<ArmInfo, ArmError> {
        let mut models = Vec::new();
        for &id in &self.ids {
            self.bus.ping(id)?;
            models.push(self.bus.read_u16(id, reg::MODEL_NUMBER)?);
        }
        let c = self.read_calibration()?;
        self.units.set(&c);
        Ok(ArmInfo { kind: "feetech", description: format!("servos {:?}, models {models:?}", self.ids), boot: None })
    }

    fn read_state(&mut self) -> Result<ArmReading, ArmError> {
        let mut data = [[0u8; 8]; JOINTS];
        let ids = self.ids;
        let errors = self.bus.sync_read::<8>(reg::PRESENT_POSITION.addr, &ids, &mut data)?;
        let mut state = state_from_readings(&data, &errors);
        let (t, _) = self.bus.read(ids[0], reg::TORQUE_ENABLE.addr, 1)?;
        state.torque = t.first().is_some_and(|&v| v != 0);
        Ok(ArmReading { joints: self.units.units_of(&state.positions)?, state })
    }

    fn send_targets(&mut self, targets: &Joints) -> Result<(), ArmError> {
        let counts = self.units.counts_of(targets)?;
        self.bus.sync_write_goals(&self.ids, &counts)?;
        Ok(())
    }

    fn set_torque(&mut self, on: bool) -> Result<(), ArmError> {
        self.bus.sync_write_torque(&self.ids, on)?;
        Ok(())
    }

    /// A directly driven bus latches nothing: servo error bits clear when their cause does.
    fn clear_faults(&mut self) -> Result<(), ArmError> {
        Ok(())
    }

    fn read_calibration(&mut self) -> Result<Calibration, ArmError> {
        let mut c = Calibration::default();
        let ids = self.ids;
        for (j, &id) in ids.iter().enumerate() {
            let off = decode_sign_magnitude(self.bus.read_u16(id, reg::HOMING_OFFSET)?, SO101.servo.homing_offset_sign_bit);
            c.homing_offset[j] = i16::try_from(off).unwrap_or(i16::MAX);
            c.range_min[j] = self.bus.read_u16(id, reg::MIN_POSITION_LIMIT)?;
            c.range_max[j] = self.bus.read_u16(id, reg::MAX_POSITION_LIMIT)?;
        }
        Ok(c)
    }

    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError> {
        // Check every field of every joint first so a bad file leaves the arm's EEPROM untouched.
        validate_calibration(&SO101, c)?;
        let ids = self.ids;
        for (j, &id) in ids.iter().enumerate() {
            self.bus.write_joint_calibration(id, c.homing_offset[j], c.range_min[j], c.range_max[j])?;
        }
        self.units.set(c);
        Ok(())
    }
}

/// An arm behind a lapa bridge MCU. `drive_mode` is not stored by STS servos: the MCU keeps the
/// one the host wrote until it restarts (then 0, LeRobot's value for every SO-101 joint); after an
/// `McuRestarted` the calibration is read back and a host that uses drive mode 1 writes its
/// calibration again.
#[derive(Debug)]
pub struct BridgeArm {
    pub link: Link,
    pub hello: Option<HelloInfo>,
    units: Units,
}

impl BridgeArm {
    pub fn new(link: Link) -> Self {
        Self { link, hello: None, units: Units::new() }
    }

    /// Passes a link result through; after an MCU restart the calibration used for unit
    /// conversion is read again from the MCU (which took it from the servos at boot), so host and
    /// MCU never convert with different calibrations.
    fn checked<T>(&mut self, r: Result<T, LinkError>) -> Result<T, ArmError> {
        if let Err(LinkError::McuRestarted { boot, .. }) = &r {
            self.hello = self.hello.map(|h| HelloInfo { boot: *boot, ..h });
            if let Ok(McuMsg::Calibration(c)) = self.link.request(HostMsg::ReadCalibration, "read calibration") {
                self.units.set(&c);
            }
        }
        Ok(r?)
    }
}

impl Arm for BridgeArm {
    fn connect(&mut self) -> Result<ArmInfo, ArmError> {
        let h = self.link.handshake()?;
        self.hello = Some(h);
        let c = self.read_calibration()?;
        self.units.set(&c);
        Ok(ArmInfo {
            kind: "bridge",
            description: format!("{} (firmware {}.{}.{}, protocol v{})", h.arm_id_str(), h.firmware.major, h.firmware.minor, h.firmware.patch, h.protocol),
            boot: Some(h.boot),
        })
    }

    fn read_state(&mut self) -> Result<ArmReading, ArmError> {
        let r = self.link.request(HostMsg::ReadState, "read state");
        match self.checked(r)? {
            McuMsg::State(state) => Ok(ArmReading { joints: self.units.units_of(&state.positions)?, state }),
            other => Err(ArmError::Unexpected(other)),
        }
    }

    fn send_targets(&mut self, targets: &Joints) -> Result<(), ArmError> {
        let targets = self.units.counts_of(targets)?;
        let r = self.link.command(HostMsg::SetTargets { targets }, "set targets");
        self.checked(r)?;
        Ok(())
    }

    fn set_torque(&mut self, on: bool) -> Result<(), ArmError> {
        let r = self.link.command(HostMsg::Torque { on }, "torque");
        self.checked(r)?;
        Ok(())
    }

    fn clear_faults(&mut self) -> Result<(), ArmError> {
        let r = self.link.command(HostMsg::ClearFaults, "clear faults");
        self.checked(r)?;
        Ok(())
    }

    fn read_calibration(&mut self) -> Result<Calibration, ArmError> {
        let r = self.link.request(HostMsg::ReadCalibration, "read calibration");
        match self.checked(r)? {
            McuMsg::Calibration(c) => Ok(c),
            other => Err(ArmError::Unexpected(other)),
        }
    }

    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError> {
        validate_calibration(&SO101, c)?;
        let r = self.link.command(HostMsg::WriteCalibration(*c), "write calibration");
        self.checked(r)?;
        self.units.set(c);
        Ok(())
    }
}

/// A simulated SO-101: six simulated STS3215 servos behind the real Feetech driver. Servo motion
/// advances with wall-clock time between calls.
#[derive(Debug)]
pub struct SimArm {
    pub inner: FeetechArm<SimWire, StdClock>,
    pub bus: SharedBus,
    last: Instant,
}

impl Default for SimArm {
    fn default() -> Self {
        Self::new()
    }
}

impl SimArm {
    pub fn new() -> Self {
        let bus = SharedBus::new(SimBus::new(JOINTS as u8));
        let inner = FeetechArm::new(FeetechBus::new(SimWire::new(bus.clone()), StdClock::default()));
        Self { inner, bus, last: Instant::now() }
    }

    fn step(&mut self) {
        let dt = self.last.elapsed().as_secs_f32();
        self.last = Instant::now();
        self.bus.lock().advance(dt);
    }
}

impl Arm for SimArm {
    fn connect(&mut self) -> Result<ArmInfo, ArmError> {
        self.step();
        let mut info = self.inner.connect()?;
        info.kind = "sim";
        Ok(info)
    }
    fn read_state(&mut self) -> Result<ArmReading, ArmError> {
        self.step();
        self.inner.read_state()
    }
    fn send_targets(&mut self, targets: &Joints) -> Result<(), ArmError> {
        self.step();
        self.inner.send_targets(targets)
    }
    fn set_torque(&mut self, on: bool) -> Result<(), ArmError> {
        self.step();
        self.inner.set_torque(on)
    }
    fn clear_faults(&mut self) -> Result<(), ArmError> {
        self.inner.clear_faults()
    }
    fn read_calibration(&mut self) -> Result<Calibration, ArmError> {
        self.inner.read_calibration()
    }
    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError> {
        self.inner.write_calibration(c)
    }
}
