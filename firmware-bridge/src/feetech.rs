//! Feetech STS/SCS bus servos (STS3215 in SO-100/SO-101 arms).
//!
//! Sans-io core — packet encoding, a streaming status-packet parser, the control table and the
//! sign-magnitude encodings — plus [`FeetechBus`], a driver over any `embedded-io` byte stream
//! (an MCU UART or a host serial port) with timeouts and retries.
//!
//! Instruction packet: `FF FF ID LEN INST P1..Pn CHK` with `LEN = n + 2` and
//! `CHK = ~(ID + LEN + INST + ΣP) & 0xFF`; status packets put the error byte where INST is.
//!
//! Servo replies are input from outside the program like host frames: nothing here indexes,
//! unwraps or does arithmetic that can panic on what a servo (or a noisy bus) sends.

#![deny(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects)]

use embedded_io::{Read, ReadReady, Write};
use lapa_boards::STS3215;
use lapa_wire::{ArmState, JOINTS, fault};

/// Broadcast id (sync write / sync read / broadcast ping).
pub const BROADCAST: u8 = 0xFE;
/// Highest servo id.
pub const MAX_ID: u8 = 0xFC;
/// Largest parameter block the parser accepts.
pub const MAX_PARAMS: usize = 128;
/// Largest packet this driver builds.
pub const MAX_PACKET: usize = 6 + MAX_PARAMS;

/// Instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Instruction {
    Ping = 0x01,
    Read = 0x02,
    Write = 0x03,
    RegWrite = 0x04,
    Action = 0x05,
    SyncRead = 0x82,
    SyncWrite = 0x83,
}

/// A control-table register: address and width in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    pub name: &'static str,
    pub addr: u8,
    pub size: u8,
}

/// STS3215 control table (the registers lapa uses).
pub mod reg {
    use super::Register;
    macro_rules! regs {
        ($($id:ident = $name:literal, $addr:literal, $size:literal;)*) => {
            $(pub const $id: Register = Register { name: $name, addr: $addr, size: $size };)*
            /// Every register, for lookup by name.
            pub const ALL: &[Register] = &[$($id),*];
        };
    }
    regs! {
        FIRMWARE_MAJOR = "Firmware_Major_Version", 0, 1;
        FIRMWARE_MINOR = "Firmware_Minor_Version", 1, 1;
        MODEL_NUMBER = "Model_Number", 3, 2;
        ID = "ID", 5, 1;
        BAUD_RATE = "Baud_Rate", 6, 1;
        RETURN_DELAY = "Return_Delay_Time", 7, 1;
        RESPONSE_STATUS_LEVEL = "Response_Status_Level", 8, 1;
        MIN_POSITION_LIMIT = "Min_Position_Limit", 9, 2;
        MAX_POSITION_LIMIT = "Max_Position_Limit", 11, 2;
        MAX_TEMPERATURE_LIMIT = "Max_Temperature_Limit", 13, 1;
        MAX_VOLTAGE_LIMIT = "Max_Voltage_Limit", 14, 1;
        MIN_VOLTAGE_LIMIT = "Min_Voltage_Limit", 15, 1;
        MAX_TORQUE_LIMIT = "Max_Torque_Limit", 16, 2;
        P_COEFFICIENT = "P_Coefficient", 21, 1;
        D_COEFFICIENT = "D_Coefficient", 22, 1;
        I_COEFFICIENT = "I_Coefficient", 23, 1;
        PROTECTION_CURRENT = "Protection_Current", 28, 2;
        HOMING_OFFSET = "Homing_Offset", 31, 2;
        OPERATING_MODE = "Operating_Mode", 33, 1;
        TORQUE_ENABLE = "Torque_Enable", 40, 1;
        ACCELERATION = "Acceleration", 41, 1;
        GOAL_POSITION = "Goal_Position", 42, 2;
        GOAL_TIME = "Goal_Time", 44, 2;
        GOAL_VELOCITY = "Goal_Velocity", 46, 2;
        LOCK = "Lock", 55, 1;
        PRESENT_POSITION = "Present_Position", 56, 2;
        PRESENT_VELOCITY = "Present_Velocity", 58, 2;
        PRESENT_LOAD = "Present_Load", 60, 2;
        PRESENT_VOLTAGE = "Present_Voltage", 62, 1;
        PRESENT_TEMPERATURE = "Present_Temperature", 63, 1;
        STATUS = "Status", 65, 1;
        MOVING = "Moving", 66, 1;
        PRESENT_CURRENT = "Present_Current", 69, 2;
    }

    /// Looks a register up by its name in the control table.
    pub fn by_name(name: &str) -> Option<Register> {
        ALL.iter().copied().find(|r| r.name == name)
    }
}

/// Status-packet error bits.
pub mod status_bits {
    pub const VOLTAGE: u8 = 1;
    pub const ANGLE: u8 = 2;
    pub const OVERHEAT: u8 = 4;
    pub const OVERCURRENT: u8 = 8;
    pub const OVERLOAD: u8 = 32;
}

/// Encodes `value` in sign-magnitude with the sign at `sign_bit`; `None` if the magnitude does
/// not fit below the sign bit (e.g. a homing offset beyond ±2047) or the sign bit is not below 16.
pub fn encode_sign_magnitude(value: i32, sign_bit: u8) -> Option<u16> {
    let sign = 1u16.checked_shl(u32::from(sign_bit))?;
    let mag = u16::try_from(value.unsigned_abs()).ok().filter(|&m| m < sign)?;
    Some(if value < 0 { mag | sign } else { mag })
}

/// Decodes a sign-magnitude value with the sign at `sign_bit` (bits above it are ignored).
pub fn decode_sign_magnitude(raw: u16, sign_bit: u8) -> i32 {
    let Some(sign) = 1u16.checked_shl(u32::from(sign_bit)) else { return i32::from(raw) };
    let mag = i32::from(raw & sign.wrapping_sub(1));
    if raw & sign != 0 { mag.saturating_neg() } else { mag }
}

/// Checksum of a packet's `ID LEN INST/ERR params…` bytes.
pub fn checksum(bytes: &[u8]) -> u8 {
    !bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// Packet-level errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Checksum mismatch in a status packet.
    Checksum { expected: u8, found: u8 },
    /// LEN field below 2 or above the parser's capacity.
    Length(u8),
    /// Parameters do not fit in the output buffer.
    TooLong,
}

/// Builds an instruction packet into `out`.
pub fn encode_packet<'a>(id: u8, inst: Instruction, params: &[u8], out: &'a mut [u8]) -> Result<&'a [u8], PacketError> {
    let n = params.len();
    let total = n.checked_add(6).filter(|_| n <= 253).ok_or(PacketError::TooLong)?;
    let len = u8::try_from(n.saturating_add(2)).map_err(|_| PacketError::TooLong)?;
    let pkt = out.get_mut(..total).ok_or(PacketError::TooLong)?;
    let (head, rest) = pkt.split_at_mut(5);
    head.copy_from_slice(&[0xFF, 0xFF, id, len, inst as u8]);
    let (body, chk) = rest.split_at_mut(n);
    body.copy_from_slice(params);
    let sum = [id, len, inst as u8].iter().chain(params).fold(0u8, |a, &b| a.wrapping_add(b));
    if let Some(c) = chk.first_mut() {
        *c = !sum;
    }
    Ok(pkt)
}

/// Builds a SYNC WRITE of `len` bytes at `addr` to each `(id, data)`.
pub fn encode_sync_write<'a>(addr: u8, len: u8, items: &[(u8, &[u8])], out: &'a mut [u8]) -> Result<&'a [u8], PacketError> {
    let mut params: heapless::Vec<u8, MAX_PARAMS> = heapless::Vec::new();
    params.extend_from_slice(&[addr, len]).map_err(|_| PacketError::TooLong)?;
    for (id, data) in items {
        if data.len() != usize::from(len) {
            return Err(PacketError::TooLong);
        }
        params.push(*id).map_err(|_| PacketError::TooLong)?;
        params.extend_from_slice(data).map_err(|_| PacketError::TooLong)?;
    }
    encode_packet(BROADCAST, Instruction::SyncWrite, &params, out)
}

/// Builds a SYNC READ of `len` bytes at `addr` from `ids`.
pub fn encode_sync_read<'a>(addr: u8, len: u8, ids: &[u8], out: &'a mut [u8]) -> Result<&'a [u8], PacketError> {
    let mut params: heapless::Vec<u8, MAX_PARAMS> = heapless::Vec::new();
    params.extend_from_slice(&[addr, len]).map_err(|_| PacketError::TooLong)?;
    params.extend_from_slice(ids).map_err(|_| PacketError::TooLong)?;
    encode_packet(BROADCAST, Instruction::SyncRead, &params, out)
}

/// Decodes one sync read of registers 56..63 (position, velocity, load, voltage, temperature) from
/// every servo, with the servos' status error bits mapped to [`fault`] flags.
pub fn state_from_readings(data: &[[u8; 8]; JOINTS], errors: &[u8]) -> ArmState {
    let mut st = ArmState::default();
    let fields = st.positions.iter_mut().zip(st.loads.iter_mut()).zip(st.temperatures.iter_mut());
    for (((pos, load), temp), d) in fields.zip(data) {
        let [p0, p1, _, _, l0, l1, volt, t] = *d;
        let to_i16 = |v: i32| i16::try_from(v).unwrap_or(0);
        *pos = to_i16(decode_sign_magnitude(u16::from_le_bytes([p0, p1]), STS3215.position_sign_bit));
        *load = to_i16(decode_sign_magnitude(u16::from_le_bytes([l0, l1]), STS3215.load_sign_bit));
        st.voltage_dv = st.voltage_dv.max(volt);
        *temp = t;
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

/// A parsed packet (status packets from servos, or instruction packets on the servo side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: u8,
    /// Error bits (status packet) or instruction (instruction packet).
    pub code: u8,
    pub params: heapless::Vec<u8, MAX_PARAMS>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParseState {
    Header0,
    Header1,
    Id,
    Len,
    Code,
    Params,
    Checksum,
}

/// Streaming parser for `FF FF ID LEN CODE P… CHK` packets (both directions share the layout).
/// Garbage before a header is skipped; a bad packet yields an error and parsing resynchronises.
#[derive(Debug, Clone)]
pub struct PacketParser {
    state: ParseState,
    id: u8,
    len: u8,
    code: u8,
    params: heapless::Vec<u8, MAX_PARAMS>,
}

impl Default for PacketParser {
    fn default() -> Self {
        Self { state: ParseState::Header0, id: 0, len: 0, code: 0, params: heapless::Vec::new() }
    }
}

impl PacketParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Feeds one byte; returns a packet (or error) when one completes.
    pub fn push(&mut self, b: u8) -> Option<Result<Packet, PacketError>> {
        match self.state {
            ParseState::Header0 => {
                if b == 0xFF {
                    self.state = ParseState::Header1;
                }
            }
            ParseState::Header1 => self.state = if b == 0xFF { ParseState::Id } else { ParseState::Header0 },
            ParseState::Id => {
                // A third 0xFF is still header (the vendor SDK tolerates it too).
                if b != 0xFF {
                    self.id = b;
                    self.state = ParseState::Len;
                }
            }
            ParseState::Len => {
                if b < 2 || usize::from(b).saturating_sub(2) > MAX_PARAMS {
                    self.reset();
                    return Some(Err(PacketError::Length(b)));
                }
                self.len = b;
                self.state = ParseState::Code;
            }
            ParseState::Code => {
                self.code = b;
                self.params.clear();
                self.state = if self.len == 2 { ParseState::Checksum } else { ParseState::Params };
            }
            ParseState::Params => {
                // Capacity was checked against LEN.
                let _ = self.params.push(b);
                if self.params.len() >= usize::from(self.len).saturating_sub(2) {
                    self.state = ParseState::Checksum;
                }
            }
            ParseState::Checksum => {
                let sum = [self.id, self.len, self.code].iter().chain(self.params.iter()).fold(0u8, |a, &x| a.wrapping_add(x));
                let expected = !sum;
                let packet = Packet { id: self.id, code: self.code, params: self.params.clone() };
                self.reset();
                return Some(if b == expected { Ok(packet) } else { Err(PacketError::Checksum { expected, found: b }) });
            }
        }
        None
    }
}

/// Microsecond clock for timeouts.
pub trait Clock {
    fn now_us(&self) -> u64;
}

/// Errors of a bus transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusError<E> {
    /// The byte stream failed.
    Io(E),
    /// No (valid) status packet from `id` within the timeout, after all retries.
    Timeout { id: u8 },
    /// A status packet from another servo than expected.
    UnexpectedId { expected: u8, found: u8 },
    /// The reply had the wrong number of parameters.
    BadReply { id: u8 },
    /// A packet could not be built.
    Packet(PacketError),
    /// A value does not fit its register (e.g. a homing offset beyond ±2047); nothing was written.
    OutOfRange { id: u8, register: &'static str },
}

/// Transaction statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub transactions: u32,
    pub retries: u32,
    pub timeouts: u32,
    pub checksum_errors: u32,
}

/// A Feetech bus on a byte stream.
#[derive(Debug)]
pub struct FeetechBus<IO, C> {
    io: IO,
    clock: C,
    /// Reply timeout per attempt.
    pub timeout_us: u64,
    /// Extra attempts after a timeout or corrupt reply.
    pub retries: u8,
    /// Skip our own transmitted bytes (half-duplex wiring with TX and RX joined).
    pub echo: bool,
    parser: PacketParser,
    pub stats: BusStats,
}

impl<IO: Read + Write + ReadReady, C: Clock> FeetechBus<IO, C> {
    pub fn new(io: IO, clock: C) -> Self {
        Self { io, clock, timeout_us: 10_000, retries: 2, echo: false, parser: PacketParser::new(), stats: BusStats::default() }
    }

    pub fn into_inner(self) -> IO {
        self.io
    }

    fn drain(&mut self) -> Result<(), BusError<IO::Error>> {
        let mut b = [0u8; 32];
        while self.io.read_ready().map_err(BusError::Io)? {
            if self.io.read(&mut b).map_err(BusError::Io)? == 0 {
                break;
            }
        }
        self.parser.reset();
        Ok(())
    }

    fn send(&mut self, packet: &[u8]) -> Result<(), BusError<IO::Error>> {
        self.drain()?;
        self.io.write_all(packet).map_err(BusError::Io)?;
        self.io.flush().map_err(BusError::Io)?;
        if self.echo {
            let mut skip = packet.len();
            let start = self.clock.now_us();
            let mut b = [0u8; 1];
            while skip > 0 && self.clock.now_us().saturating_sub(start) < self.timeout_us {
                if self.io.read_ready().map_err(BusError::Io)? && self.io.read(&mut b).map_err(BusError::Io)? == 1 {
                    skip = skip.saturating_sub(1);
                }
            }
        }
        Ok(())
    }

    /// Waits for one status packet.
    fn receive(&mut self, expect_id: u8) -> Result<Packet, BusError<IO::Error>> {
        let start = self.clock.now_us();
        let mut b = [0u8; 1];
        loop {
            if self.clock.now_us().saturating_sub(start) > self.timeout_us {
                self.stats.timeouts = self.stats.timeouts.wrapping_add(1);
                return Err(BusError::Timeout { id: expect_id });
            }
            if !self.io.read_ready().map_err(BusError::Io)? {
                continue;
            }
            if self.io.read(&mut b).map_err(BusError::Io)? == 0 {
                continue;
            }
            match self.parser.push(b.first().copied().unwrap_or(0)) {
                Some(Ok(p)) if p.id == expect_id => return Ok(p),
                Some(Ok(p)) => return Err(BusError::UnexpectedId { expected: expect_id, found: p.id }),
                Some(Err(_)) => {
                    self.stats.checksum_errors = self.stats.checksum_errors.wrapping_add(1);
                    return Err(BusError::Timeout { id: expect_id });
                }
                None => {}
            }
        }
    }

    /// Sends `packet` and waits for a status packet from `id`, retrying on timeout/corruption.
    fn transact(&mut self, packet: &[u8], id: u8) -> Result<Packet, BusError<IO::Error>> {
        self.stats.transactions = self.stats.transactions.wrapping_add(1);
        let mut last = BusError::Timeout { id };
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.stats.retries = self.stats.retries.wrapping_add(1);
            }
            self.send(packet)?;
            match self.receive(id) {
                Ok(p) => return Ok(p),
                Err(e @ (BusError::Timeout { .. } | BusError::UnexpectedId { .. })) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// PING: returns the servo's error bits.
    pub fn ping(&mut self, id: u8) -> Result<u8, BusError<IO::Error>> {
        let mut buf = [0u8; 8];
        let n = encode_packet(id, Instruction::Ping, &[], &mut buf).map_err(BusError::Packet)?.len();
        Ok(self.transact(buf.get(..n).unwrap_or(&[]), id)?.code)
    }

    /// READ `len` bytes at `addr`; returns the data and the servo's error bits.
    pub fn read(&mut self, id: u8, addr: u8, len: u8) -> Result<(heapless::Vec<u8, MAX_PARAMS>, u8), BusError<IO::Error>> {
        let mut buf = [0u8; 8];
        let n = encode_packet(id, Instruction::Read, &[addr, len], &mut buf).map_err(BusError::Packet)?.len();
        let p = self.transact(buf.get(..n).unwrap_or(&[]), id)?;
        if p.params.len() != usize::from(len) {
            return Err(BusError::BadReply { id });
        }
        Ok((p.params, p.code))
    }

    /// WRITE `data` at `addr`; waits for the acknowledgement.
    pub fn write(&mut self, id: u8, addr: u8, data: &[u8]) -> Result<u8, BusError<IO::Error>> {
        let mut params: heapless::Vec<u8, MAX_PARAMS> = heapless::Vec::new();
        params.push(addr).map_err(|_| BusError::Packet(PacketError::TooLong))?;
        params.extend_from_slice(data).map_err(|_| BusError::Packet(PacketError::TooLong))?;
        let mut buf = [0u8; MAX_PACKET];
        let n = encode_packet(id, Instruction::Write, &params, &mut buf).map_err(BusError::Packet)?.len();
        Ok(self.transact(buf.get(..n).unwrap_or(&[]), id)?.code)
    }

    /// SYNC WRITE (no replies).
    pub fn sync_write(&mut self, addr: u8, len: u8, items: &[(u8, &[u8])]) -> Result<(), BusError<IO::Error>> {
        let mut buf = [0u8; MAX_PACKET];
        let n = encode_sync_write(addr, len, items, &mut buf).map_err(BusError::Packet)?.len();
        self.stats.transactions = self.stats.transactions.wrapping_add(1);
        self.send(buf.get(..n).unwrap_or(&[]))
    }

    /// SYNC READ `len` bytes at `addr` from each id into `out[k]`; returns each servo's error bits.
    pub fn sync_read<const L: usize>(&mut self, addr: u8, ids: &[u8], out: &mut [[u8; L]]) -> Result<heapless::Vec<u8, 16>, BusError<IO::Error>> {
        let mut buf = [0u8; MAX_PACKET];
        let len = u8::try_from(L).map_err(|_| BusError::Packet(PacketError::TooLong))?;
        if out.len() < ids.len() {
            return Err(BusError::Packet(PacketError::TooLong));
        }
        let n = encode_sync_read(addr, len, ids, &mut buf).map_err(BusError::Packet)?.len();
        self.stats.transactions = self.stats.transactions.wrapping_add(1);
        let mut last = BusError::Timeout { id: ids.first().copied().unwrap_or(0) };
        'attempts: for attempt in 0..=self.retries {
            if attempt > 0 {
                self.stats.retries = self.stats.retries.wrapping_add(1);
            }
            self.send(buf.get(..n).unwrap_or(&[]))?;
            let mut errors = heapless::Vec::new();
            for (slot, &id) in out.iter_mut().zip(ids) {
                match self.receive(id) {
                    Ok(p) if p.params.len() == L => {
                        slot.copy_from_slice(&p.params);
                        let _ = errors.push(p.code);
                    }
                    Ok(_) => {
                        last = BusError::BadReply { id };
                        continue 'attempts;
                    }
                    // The next servo answered first: this one is missing.
                    Err(BusError::UnexpectedId { expected, .. }) => {
                        self.stats.timeouts = self.stats.timeouts.wrapping_add(1);
                        last = BusError::Timeout { id: expected };
                        continue 'attempts;
                    }
                    Err(e) => {
                        last = e;
                        continue 'attempts;
                    }
                }
            }
            return Ok(errors);
        }
        Err(last)
    }

    /// SYNC WRITE of Goal_Position to every servo (sign-magnitude; −32768 saturates to −32767).
    pub fn sync_write_goals<const N: usize>(&mut self, ids: &[u8; N], goals: &[i16; N]) -> Result<(), BusError<IO::Error>> {
        let bytes: [[u8; 2]; N] = goals.map(|g| encode_sign_magnitude(i32::from(g).max(-32767), STS3215.position_sign_bit).unwrap_or(0).to_le_bytes());
        let mut items: heapless::Vec<(u8, &[u8]), 32> = heapless::Vec::new();
        for (&id, b) in ids.iter().zip(&bytes) {
            items.push((id, &b[..])).map_err(|_| BusError::Packet(PacketError::TooLong))?;
        }
        self.sync_write(reg::GOAL_POSITION.addr, 2, &items)
    }

    /// SYNC WRITE of Torque_Enable to every servo.
    pub fn sync_write_torque(&mut self, ids: &[u8], on: bool) -> Result<(), BusError<IO::Error>> {
        let v = [u8::from(on)];
        let mut items: heapless::Vec<(u8, &[u8]), 32> = heapless::Vec::new();
        for &id in ids {
            items.push((id, &v[..])).map_err(|_| BusError::Packet(PacketError::TooLong))?;
        }
        self.sync_write(reg::TORQUE_ENABLE.addr, 1, &items)
    }

    /// Writes one servo's calibration to EEPROM (unlock, homing offset, limits, lock). An offset
    /// that does not fit the 11-bit sign-magnitude register is refused before anything is written.
    pub fn write_joint_calibration(&mut self, id: u8, homing_offset: i16, range_min: u16, range_max: u16) -> Result<(), BusError<IO::Error>> {
        let off = encode_sign_magnitude(i32::from(homing_offset), STS3215.homing_offset_sign_bit)
            .ok_or(BusError::OutOfRange { id, register: reg::HOMING_OFFSET.name })?;
        self.write(id, reg::LOCK.addr, &[0])?;
        self.write_u16(id, reg::HOMING_OFFSET, off)?;
        self.write_u16(id, reg::MIN_POSITION_LIMIT, range_min)?;
        self.write_u16(id, reg::MAX_POSITION_LIMIT, range_max)?;
        self.write(id, reg::LOCK.addr, &[1])?;
        Ok(())
    }

    /// Reads a 2-byte register as u16 (little-endian).
    pub fn read_u16(&mut self, id: u8, r: Register) -> Result<u16, BusError<IO::Error>> {
        let (d, _) = self.read(id, r.addr, 2)?;
        match *d {
            [lo, hi] => Ok(u16::from_le_bytes([lo, hi])),
            _ => Err(BusError::BadReply { id }),
        }
    }

    /// Writes a 2-byte register (little-endian).
    pub fn write_u16(&mut self, id: u8, r: Register, v: u16) -> Result<u8, BusError<IO::Error>> {
        self.write(id, r.addr, &v.to_le_bytes())
    }
}
