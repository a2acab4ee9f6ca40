//! Simulated STS3215 servos on a simulated half-duplex bus: full 256-byte register file (EEPROM
//! limits, homing offset, ...), position dynamics with a maximum speed, torque enable, and status
//! error bits. Speaks the real packet protocol: feed it instruction bytes, get status bytes back.

use crate::feetech::{Instruction, Packet, PacketParser, checksum, decode_sign_magnitude, encode_sign_magnitude, reg, status_bits};
use lapa_boards::STS3215;

/// One simulated servo.
#[derive(Debug, Clone)]
pub struct SimServo {
    pub regs: [u8; 256],
    /// Shaft position in raw counts (before homing offset), continuous.
    pub actual: f32,
    /// Maximum speed, counts per second.
    pub max_speed: f32,
    /// Simulated supply voltage (decivolts) and temperature (°C).
    pub voltage_dv: u8,
    pub temperature: u8,
    /// While true the servo never answers (a dead or unpowered servo).
    pub silent: bool,
    pending: Option<(u8, heapless::Vec<u8, 64>)>,
}

impl SimServo {
    pub fn new(id: u8) -> Self {
        let mut regs = [0u8; 256];
        regs[reg::FIRMWARE_MAJOR.addr as usize] = 3;
        regs[reg::FIRMWARE_MINOR.addr as usize] = 10;
        regs[3..5].copy_from_slice(&STS3215.model_number.to_le_bytes());
        regs[reg::ID.addr as usize] = id;
        regs[reg::RETURN_DELAY.addr as usize] = 0;
        regs[reg::RESPONSE_STATUS_LEVEL.addr as usize] = 1;
        regs[9..11].copy_from_slice(&0u16.to_le_bytes());
        regs[11..13].copy_from_slice(&STS3215.max_count().to_le_bytes());
        regs[reg::MAX_TEMPERATURE_LIMIT.addr as usize] = 70;
        regs[reg::MAX_VOLTAGE_LIMIT.addr as usize] = 140;
        regs[reg::MIN_VOLTAGE_LIMIT.addr as usize] = 40;
        regs[16..18].copy_from_slice(&1000u16.to_le_bytes());
        regs[reg::P_COEFFICIENT.addr as usize] = 32;
        regs[reg::ACCELERATION.addr as usize] = 254;
        regs[42..44].copy_from_slice(&2048u16.to_le_bytes());
        regs[reg::LOCK.addr as usize] = 1;
        let mut s = Self { regs, actual: 2048.0, max_speed: 3400.0, voltage_dv: 74, temperature: 31, silent: false, pending: None };
        s.refresh();
        s
    }

    pub fn id(&self) -> u8 {
        self.regs[reg::ID.addr as usize]
    }

    fn u16_at(&self, addr: u8) -> u16 {
        u16::from_le_bytes([self.regs[addr as usize], self.regs[addr as usize + 1]])
    }

    pub fn homing_offset(&self) -> i32 {
        decode_sign_magnitude(self.u16_at(reg::HOMING_OFFSET.addr), STS3215.homing_offset_sign_bit)
    }

    pub fn torque(&self) -> bool {
        self.regs[reg::TORQUE_ENABLE.addr as usize] != 0
    }

    /// Goal in shaft counts: Goal_Position is in the offset frame (Present = Actual − Offset).
    fn goal_actual(&self) -> f32 {
        let goal = decode_sign_magnitude(self.u16_at(reg::GOAL_POSITION.addr), STS3215.position_sign_bit);
        let min = i32::from(self.u16_at(reg::MIN_POSITION_LIMIT.addr));
        let max = i32::from(self.u16_at(reg::MAX_POSITION_LIMIT.addr));
        (goal.clamp(min, max.max(min)) + self.homing_offset()) as f32
    }

    /// Status error bits as the servo would report them now.
    pub fn error_bits(&self) -> u8 {
        let mut e = 0;
        let v = self.voltage_dv;
        if v < self.regs[reg::MIN_VOLTAGE_LIMIT.addr as usize] || v > self.regs[reg::MAX_VOLTAGE_LIMIT.addr as usize] {
            e |= status_bits::VOLTAGE;
        }
        if self.temperature > self.regs[reg::MAX_TEMPERATURE_LIMIT.addr as usize] {
            e |= status_bits::OVERHEAT;
        }
        let goal = decode_sign_magnitude(self.u16_at(reg::GOAL_POSITION.addr), STS3215.position_sign_bit);
        let min = i32::from(self.u16_at(reg::MIN_POSITION_LIMIT.addr));
        let max = i32::from(self.u16_at(reg::MAX_POSITION_LIMIT.addr));
        if self.torque() && (goal < min || goal > max) {
            e |= status_bits::ANGLE;
        }
        e
    }

    /// Advances the motor by `dt` seconds.
    pub fn advance(&mut self, dt: f32) {
        if self.torque() {
            let goal = self.goal_actual();
            let step = self.max_speed * dt;
            let d = (goal - self.actual).clamp(-step, step);
            self.actual += d;
        }
        self.refresh();
    }

    /// Writes the read-only "present" registers from the simulated state.
    fn refresh(&mut self) {
        let present = self.actual.round() as i32 - self.homing_offset();
        let raw = encode_sign_magnitude(present.clamp(-32767, 32767), STS3215.position_sign_bit).unwrap_or(0);
        self.regs[56..58].copy_from_slice(&raw.to_le_bytes());
        let moving = self.torque() && (self.goal_actual() - self.actual).abs() > 1.0;
        let load: u16 = if moving { 120 } else { 8 };
        self.regs[60..62].copy_from_slice(&load.to_le_bytes());
        self.regs[reg::PRESENT_VOLTAGE.addr as usize] = self.voltage_dv;
        self.regs[reg::PRESENT_TEMPERATURE.addr as usize] = self.temperature;
        self.regs[reg::MOVING.addr as usize] = u8::from(moving);
        self.regs[reg::STATUS.addr as usize] = self.error_bits();
    }

    fn write_regs(&mut self, addr: u8, data: &[u8]) {
        for (k, &b) in data.iter().enumerate() {
            let a = addr as usize + k;
            // Read-only areas (model, firmware, present values) ignore writes.
            let read_only = a < 5 || (56..=70).contains(&a);
            if a < 256 && !read_only {
                self.regs[a] = b;
            }
        }
        self.refresh();
    }
}

fn status(id: u8, err: u8, params: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0xFF, 0xFF, id, (params.len() + 2) as u8, err]);
    out.extend_from_slice(params);
    let chk = checksum(&out[start + 2..]);
    out.push(chk);
}

/// A bus of simulated servos.
#[derive(Debug, Clone)]
pub struct SimBus {
    pub servos: Vec<SimServo>,
    parser: PacketParser,
    /// Instruction packets with a bad checksum (ignored, as real servos do).
    pub bad_packets: u64,
}

impl SimBus {
    /// Servos with ids `1..=n` (SO-101: six).
    pub fn new(n: u8) -> Self {
        Self { servos: (1..=n).map(SimServo::new).collect(), parser: PacketParser::new(), bad_packets: 0 }
    }

    pub fn servo_mut(&mut self, id: u8) -> Option<&mut SimServo> {
        self.servos.iter_mut().find(|s| s.id() == id)
    }

    pub fn advance(&mut self, dt: f32) {
        for s in &mut self.servos {
            s.advance(dt);
        }
    }

    /// Feeds bytes from the host; appends any status packets to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            match self.parser.push(b) {
                Some(Ok(p)) => self.handle(&p, out),
                Some(Err(_)) => self.bad_packets += 1,
                None => {}
            }
        }
    }

    fn handle(&mut self, p: &Packet, out: &mut Vec<u8>) {
        let Some(inst) = [
            Instruction::Ping,
            Instruction::Read,
            Instruction::Write,
            Instruction::RegWrite,
            Instruction::Action,
            Instruction::SyncRead,
            Instruction::SyncWrite,
        ]
        .into_iter()
        .find(|i| *i as u8 == p.code) else {
            return;
        };
        let params = &p.params[..];
        match inst {
            Instruction::SyncWrite => {
                if params.len() < 2 {
                    return;
                }
                let (addr, len) = (params[0], params[1] as usize);
                for item in params[2..].chunks(len + 1) {
                    if item.len() == len + 1
                        && let Some(s) = self.servo_mut(item[0])
                    {
                        s.write_regs(addr, &item[1..]);
                    }
                }
            }
            Instruction::SyncRead => {
                if params.len() < 2 {
                    return;
                }
                let (addr, len) = (params[0] as usize, params[1] as usize);
                for &id in &params[2..] {
                    if let Some(s) = self.servos.iter().find(|s| s.id() == id && !s.silent) {
                        let end = (addr + len).min(256);
                        status(id, s.error_bits(), &s.regs[addr..end], out);
                    }
                }
            }
            Instruction::Action => {
                for s in &mut self.servos {
                    if let Some((addr, data)) = s.pending.take() {
                        s.write_regs(addr, &data);
                    }
                }
            }
            _ => {
                let Some(s) = self.servos.iter_mut().find(|s| s.id() == p.id) else { return };
                if s.silent {
                    return;
                }
                match inst {
                    Instruction::Ping => status(p.id, s.error_bits(), &[], out),
                    Instruction::Read if params.len() == 2 => {
                        let (addr, len) = (params[0] as usize, params[1] as usize);
                        let end = (addr + len).min(256);
                        status(p.id, s.error_bits(), &s.regs[addr..end], out);
                    }
                    Instruction::Write if !params.is_empty() => {
                        s.write_regs(params[0], &params[1..]);
                        status(p.id, s.error_bits(), &[], out);
                    }
                    Instruction::RegWrite if !params.is_empty() => {
                        let mut data = heapless::Vec::new();
                        let _ = data.extend_from_slice(&params[1..params.len().min(65)]);
                        s.pending = Some((params[0], data));
                        status(p.id, s.error_bits(), &[], out);
                    }
                    _ => {}
                }
            }
        }
    }
}
