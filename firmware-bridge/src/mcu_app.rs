//! The MCU application: host frames in, bridge state machine, Feetech bus out. The RP2040
//! firmware and the simulated board both run exactly this.

use crate::bridge::Bridge;
use crate::feetech::{BusError, Clock, FeetechBus, reg, status_bits};
use crate::protocol::{ArmState, FrameReceiver, HostMsg, JOINTS, McuMsg, encode_frame, fault};
use embedded_io::{Read, ReadReady, Write};

/// Sequence number used for replies to frames too damaged to read a sequence number from.
pub const SEQ_UNKNOWN: u16 = 0xFFFF;

/// Decodes one sync read of registers 56..63 (position, velocity, load, voltage, temperature) from
/// every servo, with the servos' status error bits mapped to [`fault`] flags.
pub fn state_from_readings(data: &[[u8; 8]; JOINTS], errors: &[u8]) -> ArmState {
    let mut st = ArmState::default();
    for (j, d) in data.iter().enumerate() {
        st.positions[j] = crate::feetech::decode_sign_magnitude(u16::from_le_bytes([d[0], d[1]]), 15) as i16;
        st.loads[j] = crate::feetech::decode_sign_magnitude(u16::from_le_bytes([d[4], d[5]]), 10) as i16;
        st.voltage_dv = st.voltage_dv.max(d[6]);
        st.temperatures[j] = d[7];
    }
    for &e in errors {
        if e & status_bits::VOLTAGE != 0 {
            st.faults |= fault::VOLTAGE;
        }
        if e & status_bits::OVERHEAT != 0 {
            st.faults |= fault::OVERHEAT;
        }
        if e & (status_bits::OVERCURRENT | status_bits::OVERLOAD) != 0 {
            st.faults |= fault::OVERLOAD;
        }
    }
    st
}

/// Bridge + servo bus + frame receiver.
#[derive(Debug)]
pub struct McuApp<IO, C> {
    pub bridge: Bridge,
    pub bus: FeetechBus<IO, C>,
    pub ids: [u8; JOINTS],
    rx: FrameReceiver,
    pushed_calibration: bool,
}

impl<IO: Read + Write + ReadReady, C: Clock> McuApp<IO, C> {
    pub fn new(bridge: Bridge, bus: FeetechBus<IO, C>) -> Self {
        Self { bridge, bus, ids: [1, 2, 3, 4, 5, 6], rx: FrameReceiver::new(), pushed_calibration: false }
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

    /// One servo-loop tick: read the servos, run the watchdog and interpolation, write goals.
    pub fn servo_tick(&mut self, now_ms: u64) -> Result<(), BusError<IO::Error>> {
        // Present position (56..57), velocity (58..59), load (60..61), voltage (62), temperature (63).
        let mut data = [[0u8; 8]; JOINTS];
        let ids = self.ids;
        match self.bus.sync_read::<8>(reg::PRESENT_POSITION.addr, &ids, &mut data) {
            Ok(errors) => {
                let st = state_from_readings(&data, &errors);
                if st.faults != 0 {
                    self.bridge.raise(st.faults);
                }
                self.bridge.update_state(st);
            }
            Err(e) => {
                self.bridge.raise(fault::BUS);
                return Err(e);
            }
        }
        if self.bridge.calibration_dirty && !self.pushed_calibration {
            self.push_calibration()?;
        }
        let cmd = self.bridge.tick(now_ms);
        if cmd.torque_changed {
            self.bus.sync_write_torque(&ids, cmd.torque)?;
        }
        if cmd.torque {
            self.bus.sync_write_goals(&ids, &cmd.goal)?;
        }
        Ok(())
    }

    /// Writes a calibration received from the host into the servos' EEPROM.
    fn push_calibration(&mut self) -> Result<(), BusError<IO::Error>> {
        let c = self.bridge.calibration();
        for j in 0..JOINTS {
            self.bus.write_joint_calibration(self.ids[j], c.homing_offset[j], c.range_min[j], c.range_max[j])?;
        }
        self.bridge.calibration_dirty = false;
        Ok(())
    }
}
