//! The board ↔ MCU wire protocol: one definition shared by the host and the firmware.
//!
//! A frame is `COBS( postcard(Frame { seq, msg }) ‖ CRC32_LE(postcard bytes) ) ‖ 0x00`. See
//! `PROTOCOL.md` for the byte layout with golden examples. Buffers are sized at compile time from
//! postcard's `MaxSize`.

use crate::cobs::{self, CobsError};
use crate::crc::crc32;
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Protocol version; the handshake refuses a mismatch.
pub const PROTOCOL_VERSION: u16 = 1;
/// Joints of an SO-101-class arm.
pub const JOINTS: usize = 6;

/// Servo positions in raw counts (4096 per turn), signed after homing offset.
pub type Positions = [i16; JOINTS];

/// Firmware version reported in the handshake.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareVersion {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

/// Per-joint calibration as stored in the servos' EEPROM (LeRobot's calibration file fields).
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Calibration {
    pub homing_offset: [i16; JOINTS],
    pub range_min: [u16; JOINTS],
    pub range_max: [u16; JOINTS],
    pub drive_mode: [u8; JOINTS],
}

/// Latched fault flags (bit set).
pub mod fault {
    /// No valid frame from the host within the watchdog timeout.
    pub const WATCHDOG: u16 = 1 << 0;
    /// A servo did not answer on the bus.
    pub const BUS: u16 = 1 << 1;
    /// A servo reported input voltage out of range.
    pub const VOLTAGE: u16 = 1 << 2;
    /// A servo reported overheating.
    pub const OVERHEAT: u16 = 1 << 3;
    /// A servo reported overcurrent or overload.
    pub const OVERLOAD: u16 = 1 << 4;
}

/// Snapshot of the arm.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArmState {
    pub positions: Positions,
    pub loads: [i16; JOINTS],
    pub temperatures: [u8; JOINTS],
    /// Supply voltage in decivolts.
    pub voltage_dv: u8,
    /// Latched [`fault`] flags.
    pub faults: u16,
    pub torque: bool,
    /// True while the watchdog (or a `Hold`) keeps the arm at its last position.
    pub holding: bool,
}

/// Host → MCU.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMsg {
    Hello { protocol: u16 },
    /// Absolute goal positions for all joints.
    SetTargets { targets: Positions },
    ReadState,
    Torque { on: bool },
    /// Stop at the current position.
    Hold,
    Heartbeat,
    ReadCalibration,
    WriteCalibration(Calibration),
    ClearFaults,
}

/// Typed wire errors reported by the MCU.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A frame arrived with a bad CRC.
    Crc,
    /// A frame could not be COBS-decoded.
    Cobs,
    /// A frame's payload was not a valid message.
    Decode,
    /// A frame exceeded the receive buffer.
    Overflow,
    /// The host speaks another protocol version.
    ProtocolMismatch { host: u16, mcu: u16 },
    /// A command came before the handshake.
    NoHandshake,
    /// Motion refused while faults are latched (clear them first).
    Faulted { flags: u16 },
    /// A servo did not answer.
    BusTimeout { id: u8 },
    /// A calibration value does not fit the servo registers (homing offset beyond ±2047).
    InvalidCalibration { joint: u8 },
}

/// MCU → host.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum McuMsg {
    HelloAck { protocol: u16, firmware: FirmwareVersion, arm_id: [u8; 16] },
    /// Command accepted. `clamped` has bit j set when joint j's target was clamped to its limits.
    Ack { clamped: u8 },
    State(ArmState),
    Calibration(Calibration),
    Error(WireError),
}

/// A message with its sequence number. Replies carry the sequence number of the request.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<M> {
    pub seq: u16,
    pub msg: M,
}

/// Largest postcard payload of either direction.
pub const MAX_PAYLOAD: usize = max(Frame::<HostMsg>::POSTCARD_MAX_SIZE, Frame::<McuMsg>::POSTCARD_MAX_SIZE);
/// Largest frame on the wire, delimiter included.
pub const MAX_FRAME: usize = cobs::max_encoded_len(MAX_PAYLOAD + 4) + 1;

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Why a frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More bytes than the largest frame arrived before a delimiter.
    Overflow,
    /// Not valid COBS.
    Cobs,
    /// Shorter than a CRC.
    TooShort,
    /// CRC mismatch.
    Crc { expected: u32, found: u32 },
    /// Valid CRC but not a message of this direction.
    Decode,
    /// The output buffer is too small (encoding).
    Buffer,
}

impl FrameError {
    /// The wire error the MCU reports for a rejected host frame.
    pub fn to_wire(self) -> WireError {
        match self {
            FrameError::Overflow | FrameError::Buffer => WireError::Overflow,
            FrameError::Cobs | FrameError::TooShort => WireError::Cobs,
            FrameError::Crc { .. } => WireError::Crc,
            FrameError::Decode => WireError::Decode,
        }
    }
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Overflow => write!(f, "frame longer than {MAX_FRAME} bytes"),
            FrameError::Cobs => write!(f, "invalid COBS encoding"),
            FrameError::TooShort => write!(f, "frame shorter than its CRC"),
            FrameError::Crc { expected, found } => write!(f, "CRC mismatch: frame says {expected:#010x}, payload has {found:#010x}"),
            FrameError::Decode => write!(f, "payload is not a valid message"),
            FrameError::Buffer => write!(f, "output buffer too small"),
        }
    }
}

/// Encodes a frame into `out` (delimiter included) and returns its bytes.
pub fn encode_frame<'a, M: Serialize>(seq: u16, msg: &M, out: &'a mut [u8]) -> Result<&'a [u8], FrameError> {
    let mut raw = [0u8; MAX_PAYLOAD + 4];
    let n = postcard::to_slice(&Frame { seq, msg }, &mut raw[..MAX_PAYLOAD]).map_err(|_| FrameError::Buffer)?.len();
    let crc = crc32(&raw[..n]);
    raw[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    let m = cobs::encode(&raw[..n + 4], out).map_err(|_| FrameError::Buffer)?;
    if m >= out.len() {
        return Err(FrameError::Buffer);
    }
    out[m] = 0;
    Ok(&out[..m + 1])
}

/// Decodes one frame body (the bytes between delimiters, without the 0x00).
pub fn decode_frame<M: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Frame<M>, FrameError> {
    let mut raw = [0u8; MAX_FRAME];
    let n = cobs::decode(body, &mut raw).map_err(|e| match e {
        CobsError::Overflow => FrameError::Overflow,
        CobsError::Malformed => FrameError::Cobs,
    })?;
    if n < 5 {
        return Err(FrameError::TooShort);
    }
    let (payload, tail) = raw[..n].split_at(n - 4);
    let expected = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let found = crc32(payload);
    if expected != found {
        return Err(FrameError::Crc { expected, found });
    }
    let (frame, rest) = postcard::take_from_bytes::<Frame<M>>(payload).map_err(|_| FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode);
    }
    Ok(frame)
}

/// Streaming receiver: feed bytes as they arrive, get frames (or typed errors) out.
#[derive(Debug)]
pub struct FrameReceiver {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflowed: bool,
}

impl Default for FrameReceiver {
    fn default() -> Self {
        Self { buf: [0; MAX_FRAME], len: 0, overflowed: false }
    }
}

impl FrameReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one byte; returns a result when a delimiter completes a frame. Empty frames (two
    /// delimiters in a row, used to resynchronise) are skipped.
    pub fn push<M: for<'de> Deserialize<'de>>(&mut self, byte: u8) -> Option<Result<Frame<M>, FrameError>> {
        if byte != 0 {
            if self.len < MAX_FRAME {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
            return None;
        }
        let (len, overflowed) = (self.len, self.overflowed);
        self.len = 0;
        self.overflowed = false;
        if overflowed {
            return Some(Err(FrameError::Overflow));
        }
        if len == 0 {
            return None;
        }
        Some(decode_frame(&self.buf[..len]))
    }
}
