//! Host code through the real serial path: simulated hardware on a pseudo-terminal.

use lapa_bridge::arm::{Arm, ArmError, BridgeArm, FeetechArm};
use lapa_bridge::feetech::FeetechBus;
use lapa_bridge::link::Link;
use lapa_bridge::protocol::{Calibration, HostMsg, McuMsg, fault};
use lapa_bridge::serial::SerialIo;
use lapa_bridge::simboard::{self, Mode, SimOptions};
use lapa_bridge::wire::StdClock;
use std::time::{Duration, Instant};

fn path(b: &simboard::SimBoard) -> String {
    b.path.to_string_lossy().into_owned()
}

#[test]
fn feetech_mode_through_a_serial_port() {
    let board = simboard::start(SimOptions { mode: Mode::Feetech, ..SimOptions::default() }).expect("sim");
    let mut bus = FeetechBus::new(SerialIo::open(&path(&board)).expect("open pty"), StdClock::default());
    // Functional test, not a timing one: tolerate a loaded CI machine scheduling the simulator late.
    bus.timeout_us = 100_000;
    bus.retries = 3;
    let mut arm = FeetechArm::new(bus);
    let info = arm.connect().expect("connect");
    assert!(info.description.contains("777"), "STS3215 model number: {}", info.description);
    arm.set_torque(true).expect("torque");
    arm.send_targets(&[2100, 1900, 2048, 2300, 2048, 1000]).expect("targets");
    let start = Instant::now();
    let mut st = arm.read_state().expect("state");
    while st.positions != [2100, 1900, 2048, 2300, 2048, 1000] && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
        st = arm.read_state().expect("state");
    }
    assert_eq!(st.positions, [2100, 1900, 2048, 2300, 2048, 1000]);
    assert!(st.torque);
    // Calibration round trip through EEPROM registers, including a negative homing offset.
    let cal = Calibration { homing_offset: [-2047, -5, 0, 5, 100, 2047], range_min: [10; 6], range_max: [4000; 6], drive_mode: [0; 6] };
    arm.write_calibration(&cal).expect("write calibration");
    let back = arm.read_calibration().expect("read calibration");
    assert_eq!((back.homing_offset, back.range_min, back.range_max), (cal.homing_offset, cal.range_min, cal.range_max));
    // An offset beyond the 11-bit register is refused, not wrapped.
    let bad = Calibration { homing_offset: [2048, 0, 0, 0, 0, 0], ..cal };
    assert!(matches!(arm.write_calibration(&bad), Err(ArmError::OffsetOverflow { joint: 0, offset: 2048 })));
    // A dead servo is a clear error naming it.
    board.bus.lock().servo_mut(4).expect("servo 4").silent = true;
    let err = arm.read_state().expect_err("servo 4 is silent").to_string();
    assert!(err.contains("servo 4"), "{err}");
}

#[test]
fn bridge_mode_through_the_link() {
    let board = simboard::start(SimOptions { mode: Mode::Bridge, ..SimOptions::default() }).expect("sim");
    let mut link = Link::open(&path(&board)).expect("open");
    link.timeout = Duration::from_millis(200);
    let mut arm = BridgeArm::new(link);
    let info = arm.connect().expect("handshake");
    assert!(info.description.contains("so101-sim"), "{}", info.description);
    arm.set_torque(true).expect("torque");
    let target = [2148, 1948, 2048, 2248, 2048, 2000];
    let start = Instant::now();
    let mut st = arm.read_state().expect("state");
    while st.positions != target && start.elapsed() < Duration::from_secs(3) {
        arm.send_targets(&target).expect("targets"); // doubles as the heartbeat
        std::thread::sleep(Duration::from_millis(10));
        st = arm.read_state().expect("state");
    }
    assert_eq!(st.positions, target);
    assert_eq!(st.faults, 0);
    // Host goes silent: the watchdog holds the arm.
    std::thread::sleep(Duration::from_millis(250));
    let st = arm.read_state().expect("state");
    assert!(st.holding && st.faults & fault::WATCHDOG != 0, "{st:?}");
    assert!(arm.send_targets(&[2048; 6]).is_err(), "motion refused until faults are cleared");
    assert_eq!(arm.link.request(HostMsg::ClearFaults, "clear").expect("clear"), McuMsg::Ack { clamped: 0 });
    arm.send_targets(&[2048; 6]).expect("moving again");
    let s = arm.link.stats;
    assert!(s.rtt_count > 10 && s.crc_errors == 0, "{s:?}");
}

#[test]
fn link_reconnects_after_the_port_closes_and_reopens() {
    let dir = tempfile_dir();
    let link_path = dir.join("ttyLAPA");
    let board = simboard::start(SimOptions { mode: Mode::Bridge, link: Some(link_path.clone()), ..SimOptions::default() }).expect("sim");
    let mut link = Link::open(&link_path.to_string_lossy()).expect("open");
    link.handshake().expect("hello");
    assert!(matches!(link.request(HostMsg::ReadState, "state").expect("state"), McuMsg::State(_)));
    board.stop();
    // The "USB device" comes back under the same name a moment later.
    let relink = link_path.clone();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        simboard::start(SimOptions { mode: Mode::Bridge, link: Some(relink), ..SimOptions::default() }).expect("restart")
    });
    let reply = link.request(HostMsg::ReadState, "state after reconnect").expect("reconnected");
    assert!(matches!(reply, McuMsg::State(_)), "{reply:?}");
    assert!(link.stats.reconnects >= 1, "{:?}", link.stats);
    drop(restarter.join());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lapa-bridge-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::create_dir_all(&d);
    d
}
