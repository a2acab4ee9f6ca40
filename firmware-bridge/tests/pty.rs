//! Host code through the real serial path: simulated hardware on a pseudo-terminal.

use lapa_boards::{CalibrationError, Joints, SO101};
use lapa_bridge::arm::{Arm, ArmError, BridgeArm, FeetechArm};
use lapa_bridge::bridge::SafeState;
use lapa_bridge::feetech::FeetechBus;
use lapa_bridge::link::{Link, LinkError};
use lapa_bridge::protocol::{BootInfo, Calibration, HostMsg, McuMsg, ResetReason, WireError, fault};
use lapa_bridge::serial::SerialIo;
use lapa_bridge::simboard::{self, Mode, SimOptions};
use lapa_bridge::simwire::StdClock;
use std::time::{Duration, Instant};

/// Counts the simulated servos (factory calibration: no offset, full range) reach for `q`.
fn factory_counts(q: &Joints) -> [i16; 6] {
    SO101.to_counts(&SO101.factory_calibration(), q).expect("factory calibration converts")
}

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
    // Joint units at the boundary: degrees and the gripper's 0..100.
    let q = [5.0, -10.0, 0.0, 20.0, 0.0, 25.0];
    let want = factory_counts(&q);
    arm.send_targets(&q).expect("targets");
    let start = Instant::now();
    let mut r = arm.read_state().expect("state");
    while r.state.positions != want && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
        r = arm.read_state().expect("state");
    }
    assert_eq!(r.state.positions, want);
    for (got, q) in r.joints.iter().zip(q) {
        assert!((got - q).abs() < 0.1, "{:?} vs {q:?}", r.joints);
    }
    assert!(r.state.torque);
    // Calibration round trip through EEPROM registers, including a negative homing offset.
    let cal = Calibration { homing_offset: [-2047, -5, 0, 5, 100, 2047], range_min: [10; 6], range_max: [4000; 6], drive_mode: [0; 6] };
    arm.write_calibration(&cal).expect("write calibration");
    let back = arm.read_calibration().expect("read calibration");
    assert_eq!((back.homing_offset, back.range_min, back.range_max), (cal.homing_offset, cal.range_min, cal.range_max));
    // An offset beyond the 11-bit register is refused, not wrapped; so is an inverted range.
    let bad = Calibration { homing_offset: [2048, 0, 0, 0, 0, 0], ..cal };
    assert!(matches!(arm.write_calibration(&bad), Err(ArmError::Calibration { joint: 0, err: CalibrationError::HomingOffset(2048, 2047), .. })));
    let inverted = Calibration { range_min: [10, 10, 3000, 10, 10, 10], range_max: [4000, 4000, 1000, 4000, 4000, 4000], ..cal };
    assert!(matches!(arm.write_calibration(&inverted), Err(ArmError::Calibration { joint: 2, name: "elbow_flex", err: CalibrationError::Range(3000, 1000) })));
    let back = arm.read_calibration().expect("read calibration");
    assert_eq!(back.range_min, cal.range_min, "nothing of the refused calibrations was written");
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
    assert_eq!(info.boot, Some(BootInfo { count: 1, reason: ResetReason::PowerOn }));
    assert_eq!(info.reset_warning(), None);
    arm.set_torque(true).expect("torque");
    let q = [8.8, -8.8, 0.0, 17.6, 0.0, 48.8];
    let target = factory_counts(&q);
    let start = Instant::now();
    let mut st = arm.read_state().expect("state").state;
    while st.positions != target && start.elapsed() < Duration::from_secs(3) {
        arm.send_targets(&q).expect("targets"); // doubles as the heartbeat
        std::thread::sleep(Duration::from_millis(10));
        st = arm.read_state().expect("state").state;
    }
    assert_eq!(st.positions, target);
    assert_eq!(st.faults, 0);
    // Host goes silent: the watchdog holds the arm.
    std::thread::sleep(Duration::from_millis(250));
    let st = arm.read_state().expect("state").state;
    assert!(st.holding && st.faults & fault::WATCHDOG != 0, "{st:?}");
    assert!(arm.send_targets(&[0.0; 6]).is_err(), "motion refused until faults are cleared");
    // A holder of `dyn Arm` recovers without reaching for the link.
    let dyn_arm: &mut dyn Arm = &mut arm;
    dyn_arm.clear_faults().expect("clear");
    dyn_arm.send_targets(&[0.0; 6]).expect("moving again");
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
    // The board that came back is a new MCU: the link reconnects, notices the restart (the MCU no
    // longer knows the handshake), handshakes again and reports it instead of executing.
    match link.request(HostMsg::ReadState, "state after reconnect") {
        Err(LinkError::McuRestarted { boot, .. }) => assert_eq!(boot, BootInfo { count: 1, reason: ResetReason::PowerOn }),
        other => panic!("expected McuRestarted, got {other:?}"),
    }
    assert!(link.stats.reconnects >= 1 && link.stats.mcu_restarts == 1, "{:?}", link.stats);
    let reply = link.request(HostMsg::ReadState, "state after reconnect").expect("reconnected");
    assert!(matches!(reply, McuMsg::State(_)), "{reply:?}");
    drop(restarter.join());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mcu_reset_puts_the_arm_in_its_safe_state_and_the_host_sees_it() {
    let mut opts = SimOptions { mode: Mode::Bridge, ..SimOptions::default() };
    opts.bridge.safe_state = SafeState::TorqueOff;
    // Not a watchdog test: a loaded CI machine may leave > 100 ms between two requests.
    opts.bridge.timeout_ms = 2_000;
    let board = simboard::start(opts).expect("sim");
    let mut link = Link::open(&path(&board)).expect("open");
    link.timeout = Duration::from_millis(200);
    let mut arm = BridgeArm::new(link);
    arm.connect().expect("handshake");
    arm.set_torque(true).expect("torque");
    // Send the arm toward a far target and reset the MCU mid-motion (a panic or the hardware
    // watchdog firing): the servos keep torque and their goal across the MCU reset.
    arm.send_targets(&[60.0, 0.0, 0.0, 0.0, 0.0, 0.0]).expect("targets");
    std::thread::sleep(Duration::from_millis(30));
    assert!(board.bus.lock().servos.iter().all(|s| s.torque()), "torque on before the reset");
    let boot = board.reset_mcu(ResetReason::Watchdog).expect("reset");
    assert_eq!(boot, BootInfo { count: 2, reason: ResetReason::Watchdog });
    // Before it answered anything, the new boot switched torque off (the configured safe state).
    assert!(board.bus.lock().servos.iter().all(|s| !s.torque()), "torque off after the reset");
    // The host's next command is not executed: it learns of the restart, with the reason.
    let err = arm.send_targets(&[0.0; 6]).expect_err("the MCU restarted");
    match &err {
        ArmError::Link(LinkError::McuRestarted { boot, .. }) => assert_eq!(*boot, BootInfo { count: 2, reason: ResetReason::Watchdog }),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("watchdog"), "{err}");
    assert_eq!(arm.link.stats.mcu_restarts, 1);
    // The link has handshaken again; the RESET fault is latched and blocks motion until cleared.
    let st = arm.read_state().expect("state").state;
    assert!(!st.torque && st.faults & fault::RESET != 0, "{st:?}");
    assert!(matches!(arm.set_torque(true), Err(ArmError::Link(LinkError::Remote { err: WireError::Faulted { .. }, .. }))));
    let info = arm.connect().expect("handshake again");
    assert!(info.reset_warning().is_some_and(|w| w.contains("watchdog") && w.contains("boot 2")), "{info:?}");
    arm.clear_faults().expect("clear");
    arm.set_torque(true).expect("torque after clearing");
    arm.send_targets(&[0.0; 6]).expect("moving again");
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lapa-bridge-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = std::fs::create_dir_all(&d);
    d
}
