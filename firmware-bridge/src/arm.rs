//! The arm interface the edge runtime uses, with three implementations: the Feetech bus driven
//! directly from the board (USB-TTL adapter, what LeRobot does), a lapa bridge MCU, and a
//! simulated arm (simulated servos behind the real bus driver).

use crate::feetech::{BusError, Clock, FeetechBus, HOMING_OFFSET_SIGN_BIT, decode_sign_magnitude, encode_sign_magnitude, reg};
use crate::link::{HelloInfo, Link, LinkError};
use crate::protocol::{ArmState, Calibration, HostMsg, JOINTS, McuMsg, Positions};
use crate::simservo::SimBus;
use crate::wire::{SharedBus, SimWire, StdClock};
use embedded_io::{Read, ReadReady, Write};
use std::time::Instant;

/// Arm failures.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("servo bus: {0}")]
    Bus(String),
    #[error("homing offset {offset} of joint {joint} does not fit the 11-bit sign-magnitude register (±2047)")]
    OffsetOverflow { joint: usize, offset: i16 },
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
}

/// What every arm backend offers.
pub trait Arm {
    fn connect(&mut self) -> Result<ArmInfo, ArmError>;
    fn read_state(&mut self) -> Result<ArmState, ArmError>;
    /// Absolute goal positions (raw counts after homing offset).
    fn send_targets(&mut self, targets: &Positions) -> Result<(), ArmError>;
    fn set_torque(&mut self, on: bool) -> Result<(), ArmError>;
    fn read_calibration(&mut self) -> Result<Calibration, ArmError>;
    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError>;
}

/// Six servos on a Feetech bus driven directly.
#[derive(Debug)]
pub struct FeetechArm<IO, C> {
    pub bus: FeetechBus<IO, C>,
    pub ids: [u8; JOINTS],
}

impl<IO: Read + Write + ReadReady, C: Clock> FeetechArm<IO, C> {
    pub fn new(bus: FeetechBus<IO, C>) -> Self {
        Self { bus, ids: [1, 2, 3, 4, 5, 6] }
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
        Ok(ArmInfo { kind: "feetech", description: format!("servos {:?}, models {models:?}", self.ids) })
    }

    fn read_state(&mut self) -> Result<ArmState, ArmError> {
        let mut data = [[0u8; 8]; JOINTS];
        let ids = self.ids;
        let errors = self.bus.sync_read::<8>(reg::PRESENT_POSITION.addr, &ids, &mut data)?;
        let mut st = crate::mcu_app::state_from_readings(&data, &errors);
        let (t, _) = self.bus.read(ids[0], reg::TORQUE_ENABLE.addr, 1)?;
        st.torque = t[0] != 0;
        Ok(st)
    }

    fn send_targets(&mut self, targets: &Positions) -> Result<(), ArmError> {
        self.bus.sync_write_goals(&self.ids, targets)?;
        Ok(())
    }

    fn set_torque(&mut self, on: bool) -> Result<(), ArmError> {
        self.bus.sync_write_torque(&self.ids, on)?;
        Ok(())
    }

    fn read_calibration(&mut self) -> Result<Calibration, ArmError> {
        let mut c = Calibration::default();
        let ids = self.ids;
        for (j, &id) in ids.iter().enumerate() {
            c.homing_offset[j] = decode_sign_magnitude(self.bus.read_u16(id, reg::HOMING_OFFSET)?, 11) as i16;
            c.range_min[j] = self.bus.read_u16(id, reg::MIN_POSITION_LIMIT)?;
            c.range_max[j] = self.bus.read_u16(id, reg::MAX_POSITION_LIMIT)?;
        }
        Ok(c)
    }

    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError> {
        // Check every joint first so a bad file leaves the arm's EEPROM untouched.
        if let Some(joint) = (0..JOINTS).find(|&j| encode_sign_magnitude(i32::from(c.homing_offset[j]), HOMING_OFFSET_SIGN_BIT).is_none()) {
            return Err(ArmError::OffsetOverflow { joint, offset: c.homing_offset[joint] });
        }
        let ids = self.ids;
        for (j, &id) in ids.iter().enumerate() {
            self.bus.write_joint_calibration(id, c.homing_offset[j], c.range_min[j], c.range_max[j])?;
        }
        Ok(())
    }
}

/// An arm behind a lapa bridge MCU.
#[derive(Debug)]
pub struct BridgeArm {
    pub link: Link,
    pub hello: Option<HelloInfo>,
}

impl BridgeArm {
    pub fn new(link: Link) -> Self {
        Self { link, hello: None }
    }
}

impl Arm for BridgeArm {
    fn connect(&mut self) -> Result<ArmInfo, ArmError> {
        let h = self.link.handshake()?;
        self.hello = Some(h);
        Ok(ArmInfo {
            kind: "bridge",
            description: format!("{} (firmware {}.{}.{}, protocol v{})", h.arm_id_str(), h.firmware.major, h.firmware.minor, h.firmware.patch, h.protocol),
        })
    }

    fn read_state(&mut self) -> Result<ArmState, ArmError> {
        match self.link.request(HostMsg::ReadState, "read state")? {
            McuMsg::State(s) => Ok(s),
            other => Err(ArmError::Unexpected(other)),
        }
    }

    fn send_targets(&mut self, targets: &Positions) -> Result<(), ArmError> {
        self.link.command(HostMsg::SetTargets { targets: *targets }, "set targets")?;
        Ok(())
    }

    fn set_torque(&mut self, on: bool) -> Result<(), ArmError> {
        self.link.command(HostMsg::Torque { on }, "torque")?;
        Ok(())
    }

    fn read_calibration(&mut self) -> Result<Calibration, ArmError> {
        match self.link.request(HostMsg::ReadCalibration, "read calibration")? {
            McuMsg::Calibration(c) => Ok(c),
            other => Err(ArmError::Unexpected(other)),
        }
    }

    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError> {
        self.link.command(HostMsg::WriteCalibration(*c), "write calibration")?;
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
    fn read_state(&mut self) -> Result<ArmState, ArmError> {
        self.step();
        self.inner.read_state()
    }
    fn send_targets(&mut self, targets: &Positions) -> Result<(), ArmError> {
        self.step();
        self.inner.send_targets(targets)
    }
    fn set_torque(&mut self, on: bool) -> Result<(), ArmError> {
        self.step();
        self.inner.set_torque(on)
    }
    fn read_calibration(&mut self) -> Result<Calibration, ArmError> {
        self.inner.read_calibration()
    }
    fn write_calibration(&mut self, c: &Calibration) -> Result<(), ArmError> {
        self.inner.write_calibration(c)
    }
}
