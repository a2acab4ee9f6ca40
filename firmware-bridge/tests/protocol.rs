//! Golden frames (the examples in PROTOCOL.md), round trips of every message, and typed rejection
//! of bad frames.

use lapa_bridge::protocol::*;
use proptest::prelude::*;

fn enc<M: serde::Serialize>(seq: u16, m: &M) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    encode_frame(seq, m, &mut buf).expect("encode").to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" ")
}

const HELLO_ACK: &str = "02 01 02 02 02 02 0B 73 6F 31 30 31 2D 70 69 63 6F 01 01 01 01 01 07 03 01 0A 7D 5C EB 00";
const INVALID_CALIBRATION: &str = "0A 05 04 08 04 03 3C 2A D6 72 00";

/// The byte examples documented in PROTOCOL.md.
#[test]
fn golden_frames() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (enc(1, &HostMsg::Hello { protocol: 1 }), "02 01 06 01 B3 83 84 89 00"),
        (enc(1, &HostMsg::Hello { protocol: 2 }), "02 01 06 02 09 D2 8D 10 00"),
        (enc(2, &HostMsg::Heartbeat), "07 02 05 F2 84 85 03 00"),
        (enc(3, &HostMsg::SetTargets { targets: [2048, 1000, 3000, 0, 4095, -12] }), "09 03 01 80 20 D0 0F F0 2E 08 FE 3F 17 55 3F 50 56 00"),
        (enc(4, &HostMsg::Torque { on: true }), "08 04 03 01 9B 12 62 A4 00"),
        (enc(3, &McuMsg::Ack { clamped: 0b10 }), "08 03 01 02 26 37 12 0A 00"),
        (enc(1, &McuMsg::Error(WireError::Crc)), "03 01 04 05 21 76 EF 9A 00"),
        (
            enc(
                1,
                &McuMsg::HelloAck {
                    protocol: 2,
                    firmware: FirmwareVersion { major: 0, minor: 2, patch: 0 },
                    arm_id: *b"so101-pico\0\0\0\0\0\0",
                    boot: BootInfo { count: 3, reason: ResetReason::Watchdog },
                },
            ),
            HELLO_ACK,
        ),
        (enc(5, &McuMsg::Error(WireError::InvalidCalibration { joint: 4, field: CalibrationField::Range })), INVALID_CALIBRATION),
    ];
    for (got, want) in &cases {
        assert_eq!(&hex(got), want);
    }
}

#[test]
fn buffers_are_sized_from_max_size() {
    const { assert!(MAX_FRAME < 128, "frames fit a small MCU buffer") };
    let worst =
        HostMsg::WriteCalibration(Calibration { homing_offset: [i16::MIN; 6], range_min: [u16::MAX; 6], range_max: [u16::MAX; 6], drive_mode: [255; 6] });
    assert!(enc(u16::MAX, &worst).len() <= MAX_FRAME);
    let state = McuMsg::State(ArmState {
        positions: [i16::MIN; 6],
        loads: [i16::MIN; 6],
        temperatures: [255; 6],
        voltage_dv: 255,
        faults: u16::MAX,
        torque: true,
        holding: true,
    });
    assert!(enc(u16::MAX, &state).len() <= MAX_FRAME);
}

fn host_msg() -> impl Strategy<Value = HostMsg> {
    let pos = prop::array::uniform6(any::<i16>());
    let cal =
        (prop::array::uniform6(any::<i16>()), prop::array::uniform6(any::<u16>()), prop::array::uniform6(any::<u16>()), prop::array::uniform6(any::<u8>()))
            .prop_map(|(homing_offset, range_min, range_max, drive_mode)| Calibration { homing_offset, range_min, range_max, drive_mode });
    prop_oneof![
        any::<u16>().prop_map(|protocol| HostMsg::Hello { protocol }),
        pos.prop_map(|targets| HostMsg::SetTargets { targets }),
        Just(HostMsg::ReadState),
        any::<bool>().prop_map(|on| HostMsg::Torque { on }),
        Just(HostMsg::Hold),
        Just(HostMsg::Heartbeat),
        Just(HostMsg::ReadCalibration),
        cal.prop_map(HostMsg::WriteCalibration),
        Just(HostMsg::ClearFaults),
    ]
}

fn mcu_msg() -> impl Strategy<Value = McuMsg> {
    let state = (
        prop::array::uniform6(any::<i16>()),
        prop::array::uniform6(any::<i16>()),
        prop::array::uniform6(any::<u8>()),
        any::<u8>(),
        any::<u16>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(positions, loads, temperatures, voltage_dv, faults, torque, holding)| ArmState {
            positions,
            loads,
            temperatures,
            voltage_dv,
            faults,
            torque,
            holding,
        });
    let err = prop_oneof![
        Just(WireError::Crc),
        Just(WireError::Cobs),
        Just(WireError::Decode),
        Just(WireError::Overflow),
        (any::<u16>(), any::<u16>()).prop_map(|(host, mcu)| WireError::ProtocolMismatch { host, mcu }),
        Just(WireError::NoHandshake),
        any::<u16>().prop_map(|flags| WireError::Faulted { flags }),
        any::<u8>().prop_map(|id| WireError::BusTimeout { id }),
        (any::<u8>(), 0u8..5).prop_map(|(joint, f)| WireError::InvalidCalibration {
            joint,
            field: [
                CalibrationField::HomingOffset,
                CalibrationField::RangeMin,
                CalibrationField::RangeMax,
                CalibrationField::Range,
                CalibrationField::DriveMode
            ][usize::from(f)]
        }),
        Just(WireError::ReservedSequence),
        Just(WireError::TorqueOn),
    ];
    prop_oneof![
        (any::<u16>(), any::<[u8; 3]>(), any::<[u8; 16]>(), any::<u32>(), 0u8..3).prop_map(|(protocol, f, arm_id, count, r)| McuMsg::HelloAck {
            protocol,
            firmware: FirmwareVersion { major: f[0], minor: f[1], patch: f[2] },
            arm_id,
            boot: BootInfo { count, reason: [ResetReason::PowerOn, ResetReason::Watchdog, ResetReason::Panic][usize::from(r)] },
        }),
        any::<u8>().prop_map(|clamped| McuMsg::Ack { clamped }),
        state.prop_map(McuMsg::State),
        err.prop_map(McuMsg::Error),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn host_messages_round_trip(seq in any::<u16>(), msg in host_msg()) {
        let bytes = enc(seq, &msg);
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1);
        let mut rx = FrameReceiver::new();
        let mut out = None;
        for &b in &bytes { if let Some(r) = rx.push::<HostMsg>(b) { out = Some(r); } }
        prop_assert_eq!(out, Some(Ok(Frame { seq, msg })));
    }

    #[test]
    fn mcu_messages_round_trip(seq in any::<u16>(), msg in mcu_msg()) {
        let bytes = enc(seq, &msg);
        let decoded = decode_frame::<McuMsg>(&bytes[..bytes.len() - 1]);
        prop_assert_eq!(decoded, Ok(Frame { seq, msg }));
    }

    #[test]
    fn any_single_byte_corruption_is_rejected(seq in any::<u16>(), msg in host_msg(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut bytes = enc(seq, &msg);
        let n = bytes.len() - 1; // keep the delimiter
        let i = pos.index(n);
        bytes[i] ^= flip;
        // A corrupted body either fails to decode or (if the flip made a zero) splits the frame;
        // it never yields a valid frame different from the original.
        let mut rx = FrameReceiver::new();
        for &b in &bytes {
            if let Some(Ok(f)) = rx.push::<HostMsg>(b) {
                prop_assert_eq!(f, Frame { seq, msg });
            }
        }
    }

    /// The CRC is the standard one (check value of CRC-32/ISO-HDLC), as the hand-written table
    /// it replaced computed it.
    #[test]
    fn crc_is_crc32_iso_hdlc(data in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        // Bitwise reference implementation.
        let mut c = 0xFFFF_FFFFu32;
        for &b in &data {
            c ^= u32::from(b);
            for _ in 0..8 { c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 }; }
        }
        prop_assert_eq!(CRC32.checksum(&data), !c);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut rx = FrameReceiver::new();
        for &b in &bytes { let _ = rx.push::<HostMsg>(b); }
        let mut p = lapa_bridge::feetech::PacketParser::new();
        for &b in &bytes { let _ = p.push(b); }
    }
}

#[test]
fn bad_frames_get_typed_errors() {
    let good = enc(9, &HostMsg::ReadState);
    // CRC: change a payload byte and re-encode COBS consistently.
    let mut raw = [0u8; 64];
    let n = cobs::decode(&good[..good.len() - 1], &mut raw).expect("cobs");
    raw[1] ^= 0x01;
    let mut re = [0u8; 64];
    let m = cobs::encode(&raw[..n], &mut re);
    assert!(matches!(decode_frame::<HostMsg>(&re[..m]), Err(FrameError::Crc { .. })));
    // COBS: a code byte pointing past the end.
    assert_eq!(decode_frame::<HostMsg>(&[0x09, 0x01, 0x02]), Err(FrameError::Cobs));
    // Too short for a CRC.
    assert_eq!(decode_frame::<HostMsg>(&[0x03, 0x01, 0x02]), Err(FrameError::TooShort));
    // Valid CRC over bytes that are not a message (unknown variant 0x7F).
    let payload = [0x01, 0x7F];
    let crc = CRC32.checksum(&payload).to_le_bytes();
    let body = [payload[0], payload[1], crc[0], crc[1], crc[2], crc[3]];
    let m = cobs::encode(&body, &mut re);
    assert_eq!(decode_frame::<HostMsg>(&re[..m]), Err(FrameError::Decode));
    // Valid CRC over a whole message followed by junk: refused, not truncated.
    let mut payload = [0u8; 16];
    let n = postcard::to_slice(&Frame { seq: 9u16, msg: HostMsg::ReadState }, &mut payload).expect("ser").len();
    let junk = [&payload[..n], &[0x42, 0x43][..]].concat();
    let body = [&junk[..], &CRC32.checksum(&junk).to_le_bytes()[..]].concat();
    let m = cobs::encode(&body, &mut re);
    assert_eq!(decode_frame::<HostMsg>(&re[..m]), Err(FrameError::Decode));
    // A zero inside a body is a framing error, not a shorter frame.
    assert_eq!(decode_frame::<HostMsg>(&[0x02, 0x01, 0x00, 0x01]), Err(FrameError::Cobs));
    // Overflow: a run without delimiters longer than any frame.
    let mut rx = FrameReceiver::new();
    let mut last = None;
    for _ in 0..MAX_FRAME + 10 {
        assert!(rx.push::<HostMsg>(0x11).is_none());
    }
    if let Some(r) = rx.push::<HostMsg>(0) {
        last = Some(r);
    }
    assert_eq!(last, Some(Err(FrameError::Overflow)));
    // And the receiver recovers for the next frame.
    let mut ok = None;
    for &b in &good {
        if let Some(r) = rx.push::<HostMsg>(b) {
            ok = Some(r);
        }
    }
    assert_eq!(ok, Some(Ok(Frame { seq: 9, msg: HostMsg::ReadState })));
}
