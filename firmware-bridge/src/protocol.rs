//! The board ↔ MCU codec: the message types of [`lapa_wire`] (re-exported here) in frames.
//!
//! A frame is `COBS( postcard(Frame { seq, msg }) ‖ CRC32_LE(postcard bytes) ) ‖ 0x00`. See
//! `PROTOCOL.md` for the byte layout with golden examples.
//!
//! Encoding is postcard's own flavors stacked — [`CrcModifier`] (CRC-32/ISO-HDLC from the `crc`
//! crate, appended little-endian) over [`Cobs`] over a [`Slice`] — which produce exactly the bytes
//! of the protocol's golden frames. Decoding streams every byte through the same `cobs` crate's
//! [`DecoderState`] into a fixed buffer, checks the CRC over the whole payload **before** anything
//! is deserialised, and then refuses trailing bytes. postcard's `CobsAccumulator` is not used:
//! it deserialises without a CRC, and its `from_bytes_crc32` checks the CRC only over the bytes the
//! message happened to consume, after parsing them, which reports junk-padded frames as CRC errors
//! and gives no typed overflow.

#![deny(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects)]

pub use lapa_wire::*;

use cobs::{DecodeResult, DecoderState};
use postcard::ser_flavors::crc::CrcModifier;
use postcard::ser_flavors::{Cobs, Slice};
use serde::{Deserialize, Serialize};

/// The frame checksum: CRC-32/ISO-HDLC (IEEE 802.3, zlib): reflected polynomial 0xEDB88320, init
/// and final XOR 0xFFFFFFFF.
pub const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Largest decoded frame body: payload and CRC.
const MAX_BODY: usize = MAX_PAYLOAD + CRC_LEN;

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
    let cobs = Cobs::try_new(Slice::new(out)).map_err(|_| FrameError::Buffer)?;
    let bytes = postcard::serialize_with_flavor(&Frame { seq, msg }, CrcModifier::new(cobs, CRC32.digest())).map_err(|_| FrameError::Buffer)?;
    Ok(bytes)
}

/// Decodes one frame body (the bytes between delimiters, without the 0x00).
pub fn decode_frame<M: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Frame<M>, FrameError> {
    let mut rx = FrameReceiver::new();
    if body.contains(&0) {
        return Err(FrameError::Cobs);
    }
    for &b in body {
        // Non-zero bytes never complete a frame.
        let _ = rx.push::<M>(b);
    }
    rx.push::<M>(0).unwrap_or(Err(FrameError::TooShort))
}

/// Checks the CRC of a decoded body, then deserialises the payload in front of it.
fn check_and_decode<M: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<Frame<M>, FrameError> {
    let split = body.len().checked_sub(CRC_LEN).filter(|&n| n > 0).ok_or(FrameError::TooShort)?;
    let (payload, tail) = body.split_at_checked(split).ok_or(FrameError::TooShort)?;
    let tail: [u8; CRC_LEN] = tail.try_into().map_err(|_| FrameError::TooShort)?;
    let expected = u32::from_le_bytes(tail);
    let found = CRC32.checksum(payload);
    if expected != found {
        return Err(FrameError::Crc { expected, found });
    }
    let (frame, rest) = postcard::take_from_bytes::<Frame<M>>(payload).map_err(|_| FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Decode);
    }
    Ok(frame)
}

/// Streaming receiver: feed bytes as they arrive, get frames (or typed errors) out. COBS is
/// decoded on the fly into a buffer the size of the largest frame body; after an error the rest
/// of the frame is discarded up to the next delimiter.
#[derive(Debug)]
pub struct FrameReceiver {
    buf: [u8; MAX_BODY],
    len: usize,
    state: DecoderState,
    /// A non-zero byte arrived since the last delimiter.
    started: bool,
    error: Option<FrameError>,
}

impl Default for FrameReceiver {
    fn default() -> Self {
        Self { buf: [0; MAX_BODY], len: 0, state: DecoderState::Idle, started: false, error: None }
    }
}

impl FrameReceiver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one byte; returns a result when a delimiter completes a frame. Empty frames (two
    /// delimiters in a row, used to resynchronise) are skipped.
    pub fn push<M: for<'de> Deserialize<'de>>(&mut self, byte: u8) -> Option<Result<Frame<M>, FrameError>> {
        let step = self.state.feed(byte);
        if byte == 0 {
            let (len, started, error) = (self.len, self.started, self.error.take());
            self.len = 0;
            self.started = false;
            self.state = DecoderState::Idle;
            if let Some(e) = error {
                return Some(Err(e));
            }
            if !started {
                return None;
            }
            return Some(match (step, self.buf.get(..len)) {
                (Ok(DecodeResult::DataComplete), Some(body)) => check_and_decode(body),
                _ => Err(FrameError::Cobs),
            });
        }
        self.started = true;
        if self.error.is_some() {
            return None;
        }
        match step {
            Ok(DecodeResult::DataContinue(b)) => match self.buf.get_mut(self.len) {
                Some(slot) => {
                    *slot = b;
                    self.len = self.len.saturating_add(1);
                }
                None => self.error = Some(FrameError::Overflow),
            },
            Ok(DecodeResult::NoData) => {}
            // Only a delimiter completes or breaks a COBS block.
            Ok(DecodeResult::DataComplete) | Err(_) => self.error = Some(FrameError::Cobs),
        }
        None
    }
}
