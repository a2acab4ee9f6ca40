//! The MCU application: host frames in, bridge state machine, Feetech bus out. The RP2040
//! firmware and the simulated board both run exactly this.
//!
//! Boot order (both): [`McuApp::new`] with the [`BootInfo`] the chip reports, then
//! [`McuApp::start`] — read the servos' calibration and positions and put the arm in its safe state
//! — and only then answer the host.

#![deny(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects)]

use crate::bridge::{Bridge, SafeState};
use crate::feetech::{BusError, Clock, FeetechBus, decode_sign_magnitude, reg, state_from_readings};
use crate::protocol::{Calibration, FrameReceiver, HostMsg, JOINTS, McuMsg, SEQ_UNKNOWN, encode_frame, fault};
use embedded_io::{Read, ReadReady, Write};
use lapa_boards::SO101;

/// Bridge + servo bus + frame receiver.
#[derive(Debug)]
pub struct McuApp<IO, C> {
    pub bridge: Bridge,
    pub bus: FeetechBus<IO, C>,
    /// Servo ids in joint order (the SO-101's).
    pub ids: [u8; JOINTS],
    rx: FrameReceiver,
}

const _: () = assert!(lapa_boards::so101::JOINTS == JOINTS, "the wire protocol carries every joint of the arm");

impl<IO: Read + Write + ReadReady, C: Clock> McuApp<IO, C> {
    pub fn new(bridge: Bridge, bus: FeetechBus<IO, C>) -> Self {
        Self { bridge, bus, ids: SO101.ids(), rx: FrameReceiver::new() }
    }

    /// The first thing after boot, before any host byte is read: adopt the calibration stored in
    /// the servos (limits and offsets), read where the arm is, and put it in the safe state — torque
    /// off, or held where it stands with torque as the servos have it. The servos keep their last
    /// goal and torque across an MCU reset, so without this a panic or watchdog reset would leave
    /// the arm driving toward a stale goal. If the servos cannot all be read, a hold cannot be
    /// established: torque is switched off whatever the configured safe state (a broadcast sync
    /// write needs no reply) and the BUS fault is latched.
    pub fn start(&mut self) -> Result<(), BusError<IO::Error>> {
        let result = self.start_inner();
        if result.is_err() {
            let ids = self.ids;
            let _ = self.bus.sync_write_torque(&ids, false);
            let present = self.bridge.goal();
            self.bridge.boot_safe_state(present, false);
            self.bridge.raise(fault::BUS);
        }
        result
    }

    fn start_inner(&mut self) -> Result<(), BusError<IO::Error>> {
        let ids = self.ids;
        if let Ok(c) = self.read_servo_calibration() {
            // Servos with out-of-range EEPROM values keep the configured limits.
            let _ = self.bridge.load_calibration(c);
        }
        let mut data = [[0u8; 8]; JOINTS];
        let errors = self.bus.sync_read::<8>(reg::PRESENT_POSITION.addr, &ids, &mut data)?;
        let st = state_from_readings(&data, &errors);
        self.bridge.update_state(st);
        match self.bridge.cfg.safe_state {
            SafeState::TorqueOff => {
                self.bus.sync_write_torque(&ids, false)?;
                self.bridge.boot_safe_state(st.positions, false);
            }
            SafeState::Hold => {
                let mut torque_on = false;
                for &id in &ids {
                    let (t, _) = self.bus.read(id, reg::TORQUE_ENABLE.addr, 1)?;
                    torque_on |= t.first().is_some_and(|&v| v != 0);
                }
                self.bridge.boot_safe_state(st.positions, torque_on);
                // Stop wherever the arm is heading: the goal becomes the present position.
                let goal = self.bridge.goal();
                self.bus.sync_write_goals(&ids, &goal)?;
            }
        }
        Ok(())
    }

    /// The calibration stored in the servos' EEPROM (drive mode is not stored there: 0).
    fn read_servo_calibration(&mut self) -> Result<Calibration, BusError<IO::Error>> {
        let mut c = Calibration::default();
        let ids = self.ids;
        for (j, &id) in ids.iter().enumerate() {
            let off = decode_sign_magnitude(self.bus.read_u16(id, reg::HOMING_OFFSET)?, SO101.servo.homing_offset_sign_bit);
            let (min, max) = (self.bus.read_u16(id, reg::MIN_POSITION_LIMIT)?, self.bus.read_u16(id, reg::MAX_POSITION_LIMIT)?);
            if let (Some(o), Some(lo), Some(hi)) = (c.homing_offset.get_mut(j), c.range_min.get_mut(j), c.range_max.get_mut(j)) {
                *o = i16::try_from(off).unwrap_or(i16::MAX);
                *lo = min;
                *hi = max;
            }
        }
        Ok(c)
    }

    /// Feeds one byte from the host. When it completes a frame, the reply frame is encoded into
    /// `out` and returned.
    pub fn on_host_byte<'a>(&mut self, byte: u8, now_ms: u64, out: &'a mut [u8]) -> Option<&'a [u8]> {
        let (seq, reply) = match self.rx.push::<HostMsg>(byte)? {
            Ok(frame) => (frame.seq, self.bridge.on_frame(&frame, now_ms)),
            Err(e) => (SEQ_UNKNOWN, self.bridge.on_bad_frame(e)),
        };
        encode_frame::<McuMsg>(seq, &reply, out).ok()
    }

    /// One servo-loop tick: read the servos, push one joint of a pending calibration, run the
    /// watchdog and interpolation, write torque and goals. A failed read or push latches the BUS
    /// fault (which puts the arm in its safe state) but never skips the rest of the tick: torque
    /// changes and goals go out as broadcast sync writes, which need no servo to answer. Returns
    /// the first bus error.
    pub fn servo_tick(&mut self, now_ms: u64) -> Result<(), BusError<IO::Error>> {
        let ids = self.ids;
        let mut first_err = self.read_state().err();
        if first_err.is_none() && self.bridge.calibration_dirty {
            match self.push_next_joint() {
                Ok(true) => {
                    // Positions change frame with the new homing offsets: read them again.
                    self.bridge.calibration_pushed();
                    first_err = self.read_state().err();
                }
                Ok(false) => {}
                Err(e) => first_err = Some(e),
            }
        }
        if first_err.is_some() {
            self.bridge.raise(fault::BUS);
        }
        let cmd = self.bridge.tick(now_ms);
        if cmd.torque_changed
            && let Err(e) = self.bus.sync_write_torque(&ids, cmd.torque)
        {
            first_err = first_err.or(Some(e));
        }
        if cmd.torque
            && let Err(e) = self.bus.sync_write_goals(&ids, &cmd.goal)
        {
            first_err = first_err.or(Some(e));
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sync read of present position (56..57), velocity, load (60..61), voltage (62) and
    /// temperature (63) into the bridge; servo error bits become faults.
    fn read_state(&mut self) -> Result<(), BusError<IO::Error>> {
        let mut data = [[0u8; 8]; JOINTS];
        let ids = self.ids;
        let errors = self.bus.sync_read::<8>(reg::PRESENT_POSITION.addr, &ids, &mut data)?;
        let st = state_from_readings(&data, &errors);
        self.bridge.update_state(st);
        if st.faults != 0 {
            self.bridge.raise(st.faults);
        }
        Ok(())
    }

    /// Writes the next joint of the pending calibration to its servo's EEPROM (one joint per servo
    /// tick, so no tick runs long enough to starve the hardware watchdog); true when the last joint
    /// is done. A failure, or a new calibration from the host, restarts from the first joint.
    fn push_next_joint(&mut self) -> Result<bool, BusError<IO::Error>> {
        let c = self.bridge.calibration();
        let j = self.bridge.push_joint;
        let (Some(&id), Some(&off), Some(&lo), Some(&hi)) = (self.ids.get(j), c.homing_offset.get(j), c.range_min.get(j), c.range_max.get(j)) else {
            self.bridge.push_joint = 0;
            return Ok(true);
        };
        if let Err(e) = self.bus.write_joint_calibration(id, off, lo, hi) {
            self.bridge.push_joint = 0;
            return Err(e);
        }
        self.bridge.push_joint = j.saturating_add(1);
        Ok(self.bridge.push_joint >= JOINTS)
    }
}
