//! Feetech packets byte-for-byte against the official SDK, sign-magnitude edge cases, and the
//! status parser against garbage.

use lapa_bridge::feetech::*;

fn sdk_packets() -> Vec<(String, Vec<u8>)> {
    let text = include_str!("data/feetech_sdk_packets.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("reference JSON");
    v["packets"]
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            (p["call"].as_str().expect("call").to_string(), p["bytes"].as_array().expect("bytes").iter().map(|b| b.as_u64().expect("byte") as u8).collect())
        })
        .collect()
}

#[test]
fn packets_match_the_official_sdk_byte_for_byte() {
    let mut buf = [0u8; MAX_PACKET];
    let ours: Vec<(&str, Vec<u8>)> = vec![
        ("ping(1)", encode_packet(1, Instruction::Ping, &[], &mut buf).expect("enc").to_vec()),
        ("ping(6)", encode_packet(6, Instruction::Ping, &[], &mut buf).expect("enc").to_vec()),
        ("read(1, 56, 2)", encode_packet(1, Instruction::Read, &[56, 2], &mut buf).expect("enc").to_vec()),
        ("read(3, 60, 8)", encode_packet(3, Instruction::Read, &[60, 8], &mut buf).expect("enc").to_vec()),
        ("write1(1, 40, 1)", encode_packet(1, Instruction::Write, &[reg::TORQUE_ENABLE.addr, 1], &mut buf).expect("enc").to_vec()),
        ("write2(2, 42, 2048)", encode_packet(2, Instruction::Write, &[42, 0x00, 0x08], &mut buf).expect("enc").to_vec()),
        ("write2(5, 31, 2047)", encode_packet(5, Instruction::Write, &[31, 0xFF, 0x07], &mut buf).expect("enc").to_vec()),
        ("reg_write2(4, 42, 100)", encode_packet(4, Instruction::RegWrite, &[42, 100, 0], &mut buf).expect("enc").to_vec()),
        ("action(254)", encode_packet(BROADCAST, Instruction::Action, &[], &mut buf).expect("enc").to_vec()),
        ("sync_write(42, 2, ids 1-6)", {
            let pos: [u16; 6] = [2048, 1000, 3000, 0, 4095, 1234];
            let bytes: Vec<[u8; 2]> = pos.iter().map(|p| p.to_le_bytes()).collect();
            let items: Vec<(u8, &[u8])> = (0..6).map(|i| (i as u8 + 1, &bytes[i][..])).collect();
            encode_sync_write(reg::GOAL_POSITION.addr, 2, &items, &mut buf).expect("enc").to_vec()
        }),
        ("sync_read(56, 2, ids 1-6)", encode_sync_read(reg::PRESENT_POSITION.addr, 2, &[1, 2, 3, 4, 5, 6], &mut buf).expect("enc").to_vec()),
    ];
    let reference = sdk_packets();
    assert_eq!(reference.len(), ours.len());
    for ((name, want), (our_name, got)) in reference.iter().zip(&ours) {
        assert_eq!(name, our_name);
        assert_eq!(&got[..], &want[..], "{name}: ours {got:02X?} vs SDK {want:02X?}");
    }
}

#[test]
fn control_table_addresses() {
    assert_eq!(reg::by_name("Goal_Position"), Some(reg::GOAL_POSITION));
    assert_eq!((reg::TORQUE_ENABLE.addr, reg::GOAL_POSITION.addr, reg::PRESENT_POSITION.addr, reg::HOMING_OFFSET.addr), (40, 42, 56, 31));
    assert_eq!((reg::MIN_POSITION_LIMIT.addr, reg::MAX_POSITION_LIMIT.addr), (9, 11));
    assert!(reg::by_name("No_Such_Register").is_none());
}

#[test]
fn sign_magnitude_edge_cases() {
    // Positions: sign in bit 15.
    assert_eq!(encode_sign_magnitude(0, 15), Some(0));
    assert_eq!(decode_sign_magnitude(0x8000, 15), 0, "negative zero decodes to 0");
    assert_eq!(encode_sign_magnitude(-1, 15), Some(0x8001));
    assert_eq!(encode_sign_magnitude(32767, 15), Some(0x7FFF));
    assert_eq!(encode_sign_magnitude(-32767, 15), Some(0xFFFF));
    assert_eq!(encode_sign_magnitude(32768, 15), None);
    assert_eq!(decode_sign_magnitude(0xFFFF, 15), -32767);
    // Homing offset: sign in bit 11, magnitude at most 2047.
    assert_eq!(encode_sign_magnitude(2047, 11), Some(0x07FF));
    assert_eq!(encode_sign_magnitude(-2047, 11), Some(0x0FFF));
    assert_eq!(encode_sign_magnitude(2048, 11), None, "offset overflow is refused, not wrapped");
    assert_eq!(encode_sign_magnitude(-2048, 11), None);
    assert_eq!(decode_sign_magnitude(0x0800, 11), 0);
    assert_eq!(decode_sign_magnitude(0x0FFF, 11), -2047);
    for v in -2047..=2047 {
        let raw = encode_sign_magnitude(v, 11).expect("in range");
        assert!(raw < 0x1000);
        assert_eq!(decode_sign_magnitude(raw, 11), v);
    }
}

#[test]
fn status_parser_resyncs_and_rejects_bad_checksums() {
    let mut p = PacketParser::new();
    // Garbage, then a status packet from servo 1 with Present_Position 2048.
    let mut stream = vec![0x00, 0x13, 0xFF, 0x42];
    let good = [0xFF, 0xFF, 0x01, 0x04, 0x00, 0x00, 0x08];
    stream.extend_from_slice(&good);
    stream.push(checksum(&good[2..]));
    let mut bad = stream[4..].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    stream.extend_from_slice(&bad);
    let out: Vec<_> = stream.iter().filter_map(|&b| p.push(b)).collect();
    assert_eq!(out.len(), 2);
    let pkt = out[0].clone().expect("good packet");
    assert_eq!((pkt.id, pkt.code, &pkt.params[..]), (1, 0, &[0x00, 0x08][..]));
    assert!(matches!(out[1], Err(PacketError::Checksum { .. })));
    // A length byte below 2 is an error, not a panic.
    let out: Vec<_> = [0xFF, 0xFF, 0x01, 0x01].iter().filter_map(|&b| p.push(b)).collect();
    assert_eq!(out, vec![Err(PacketError::Length(1))]);
}
