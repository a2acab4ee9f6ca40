//! Prints the golden frames documented in PROTOCOL.md.
use lapa_bridge::protocol::*;
fn show<M: serde::Serialize + core::fmt::Debug>(seq: u16, m: &M) {
    let mut buf = [0u8; MAX_FRAME];
    let b = encode_frame(seq, m, &mut buf).expect("encode");
    println!("seq {seq} {m:?}\n  {}", b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" "));
}
fn main() {
    show(1, &HostMsg::Hello { protocol: 1 });
    show(2, &HostMsg::Heartbeat);
    show(3, &HostMsg::SetTargets { targets: [2048, 1000, 3000, 0, 4095, -12] });
    show(4, &HostMsg::Torque { on: true });
    show(3, &McuMsg::Ack { clamped: 0b10 });
    show(1, &McuMsg::Error(WireError::Crc));
    show(1, &HostMsg::Hello { protocol: 2 });
    show(
        1,
        &McuMsg::HelloAck {
            protocol: 2,
            firmware: FirmwareVersion { major: 0, minor: 2, patch: 0 },
            arm_id: *b"so101-pico\0\0\0\0\0\0",
            boot: BootInfo { count: 3, reason: ResetReason::Watchdog },
        },
    );
    show(5, &McuMsg::Error(WireError::InvalidCalibration { joint: 4, field: CalibrationField::Range }));
}
