//! # lapa-wire
//!
//! The interface between the board (host) and the lapa bridge MCU: every message type, the size
//! bounds that fix the buffers at compile time (postcard's `MaxSize`), and the sequence constants.
//! Both ends compile this one crate — the host link in `lapa-bridge` and the RP2040 firmware — the
//! way postcard-rpc's `workbook-icd` is shared by its host and firmware. It depends on serde and
//! postcard only and is `no_std`.
//!
//! The framing (COBS, CRC32) lives with the codec in `lapa_bridge::protocol`; the byte layout, with
//! golden frames, is in `firmware-bridge/PROTOCOL.md`.
//!
//! Changing any type here changes the wire format: bump [`PROTOCOL_VERSION`] and the golden frames.

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects)]

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Protocol version; the handshake refuses a mismatch. v2: the handshake reports why and how often
/// the MCU booted; calibration errors name the field.
pub const PROTOCOL_VERSION: u16 = 2;
/// Joints carried by every message (an SO-101-class arm: five joints and a gripper).
pub const JOINTS: usize = 6;
/// Sequence number of replies to frames too damaged to read one from. Hosts never send it.
pub const SEQ_UNKNOWN: u16 = 0xFFFF;

/// Servo positions in raw counts, signed after the homing offset.
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
    /// The MCU restarted after a panic or a hardware-watchdog reset; the arm was put in its safe
    /// state at boot.
    pub const RESET: u16 = 1 << 5;
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

/// Why the MCU last started.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetReason {
    /// Power-on, the RUN pin, or anything the chip does not tell apart from them.
    #[default]
    PowerOn,
    /// The hardware watchdog expired: the main loop stopped running.
    Watchdog,
    /// The firmware panicked; the panic handler reset the chip.
    Panic,
}

/// How and how often the MCU booted, reported in the handshake.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootInfo {
    /// Boots since power-on (1 for the first; kept across watchdog and panic resets).
    pub count: u32,
    pub reason: ResetReason,
}

impl BootInfo {
    /// True when the last start was not a clean power-on.
    pub fn abnormal(&self) -> bool {
        self.reason != ResetReason::PowerOn
    }
}

/// Host → MCU.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMsg {
    Hello {
        protocol: u16,
    },
    /// Absolute goal positions for all joints (raw counts after homing offset).
    SetTargets {
        targets: Positions,
    },
    ReadState,
    Torque {
        on: bool,
    },
    /// Stop at the current position.
    Hold,
    Heartbeat,
    ReadCalibration,
    WriteCalibration(Calibration),
    ClearFaults,
}

impl HostMsg {
    /// Every message kind, with neutral field values (for exhaustive tests and tools).
    pub const KINDS: [HostMsg; 9] = [
        HostMsg::Hello { protocol: PROTOCOL_VERSION },
        HostMsg::SetTargets { targets: [0; JOINTS] },
        HostMsg::ReadState,
        HostMsg::Torque { on: false },
        HostMsg::Hold,
        HostMsg::Heartbeat,
        HostMsg::ReadCalibration,
        HostMsg::WriteCalibration(Calibration { homing_offset: [0; JOINTS], range_min: [0; JOINTS], range_max: [0; JOINTS], drive_mode: [0; JOINTS] }),
        HostMsg::ClearFaults,
    ];

    /// Variant index on the wire (postcard's enum tag).
    pub fn kind(&self) -> u8 {
        match self {
            HostMsg::Hello { .. } => 0,
            HostMsg::SetTargets { .. } => 1,
            HostMsg::ReadState => 2,
            HostMsg::Torque { .. } => 3,
            HostMsg::Hold => 4,
            HostMsg::Heartbeat => 5,
            HostMsg::ReadCalibration => 6,
            HostMsg::WriteCalibration(_) => 7,
            HostMsg::ClearFaults => 8,
        }
    }
}

/// A field of [`Calibration`], named in [`WireError::InvalidCalibration`].
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationField {
    /// Beyond what the servo's sign-magnitude homing-offset register holds (±2047 on an STS3215).
    HomingOffset,
    /// Above the servo's largest position count.
    RangeMin,
    /// Above the servo's largest position count.
    RangeMax,
    /// `range_min` is not below `range_max` (an empty or inverted range).
    Range,
    /// Neither 0 nor 1.
    DriveMode,
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
    /// A calibration field does not fit the servos; nothing was changed or written.
    InvalidCalibration { joint: u8, field: CalibrationField },
    /// The host used the reserved sequence number [`SEQ_UNKNOWN`].
    ReservedSequence,
    /// A calibration write while torque is on (new limits under a moving arm); nothing changed.
    TorqueOn,
    /// Torque on refused: a calibration is still being written to the servos, or the positions
    /// have not been read since (they would be in the old homing-offset frame). Retry shortly.
    CalibrationPending,
    /// Torque on refused: this joint is outside its limits; move it inside by hand first.
    OutsideLimits { joint: u8 },
}

/// MCU → host.
#[derive(Serialize, Deserialize, MaxSize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum McuMsg {
    HelloAck {
        protocol: u16,
        firmware: FirmwareVersion,
        arm_id: [u8; 16],
        boot: BootInfo,
    },
    /// Command accepted. `clamped` has bit j set when joint j's target was clamped to its limits.
    Ack {
        clamped: u8,
    },
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

/// Bytes of the CRC32 that follows the postcard payload.
pub const CRC_LEN: usize = 4;
/// Largest postcard payload of either direction.
pub const MAX_PAYLOAD: usize = max(Frame::<HostMsg>::POSTCARD_MAX_SIZE, Frame::<McuMsg>::POSTCARD_MAX_SIZE);
/// Largest frame on the wire: COBS of payload and CRC (one code byte per 254 data bytes, plus one),
/// then the 0x00 delimiter.
pub const MAX_FRAME: usize = cobs_max_len(MAX_PAYLOAD + CRC_LEN) + 1;

/// Worst-case COBS-encoded length of `n` bytes, without the delimiter.
pub const fn cobs_max_len(n: usize) -> usize {
    n.saturating_add(n / 254).saturating_add(1)
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

const _: () = assert!(MAX_FRAME < 128, "frames fit a small MCU buffer and one USB full-speed packet pair");
const _: () = assert!(JOINTS <= 8, "Ack::clamped is a u8 bit set over the joints");
