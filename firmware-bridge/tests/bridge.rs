//! The bridge state machine with a mock clock: watchdog timing, every host message against a
//! hostile host, calibration validation, retransmissions, handshake, fault latching,
//! interpolation; the whole MCU app over simulated servos, its boot into the safe state after a
//! reset, and random and mutated frames into it.

use lapa_bridge::bridge::{Bridge, BridgeConfig, ConfigError, SafeState};
use lapa_bridge::feetech::{Clock, FeetechBus, decode_sign_magnitude};
use lapa_bridge::mcu_app::McuApp;
use lapa_bridge::protocol::*;
use lapa_bridge::simservo::SimBus;
use lapa_bridge::simwire::{SharedBus, SimWire};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const POWER_ON: BootInfo = BootInfo { count: 1, reason: ResetReason::PowerOn };

fn bridge(cfg: BridgeConfig) -> Bridge {
    Bridge::new(cfg, 0, POWER_ON).expect("valid configuration")
}

fn hello(b: &mut Bridge, now: u64) {
    let r = b.on_frame(&Frame { seq: 1, msg: HostMsg::Hello { protocol: PROTOCOL_VERSION } }, now);
    assert!(matches!(r, McuMsg::HelloAck { protocol: PROTOCOL_VERSION, .. }), "{r:?}");
}

fn cfg() -> BridgeConfig {
    BridgeConfig { min: [1000; 6], max: [3000; 6], max_step: [10; 6], timeout_ms: 100, ..BridgeConfig::default() }
}

fn present(p: i16) -> ArmState {
    ArmState { positions: [p; 6], ..ArmState::default() }
}

fn calibration(min: u16, max: u16) -> Calibration {
    Calibration { homing_offset: [0; 6], range_min: [min; 6], range_max: [max; 6], drive_mode: [0; 6] }
}

#[test]
fn configurations_that_would_break_the_invariants_are_refused() {
    assert!(BridgeConfig::default().validate().is_ok());
    let inverted = BridgeConfig { min: [1000, 1000, 3000, 1000, 1000, 1000], max: [3000, 3000, 1000, 3000, 3000, 3000], ..cfg() };
    assert_eq!(Bridge::new(inverted, 0, POWER_ON).err(), Some(ConfigError::Limits { joint: 2 }));
    assert_eq!(BridgeConfig { max: [3000, 3000, 3000, 3000, 5000, 3000], ..cfg() }.validate(), Err(ConfigError::Limits { joint: 4 }));
    assert_eq!(BridgeConfig { max_step: [10, 0, 10, 10, 10, 10], ..cfg() }.validate(), Err(ConfigError::MaxStep { joint: 1 }));
    assert_eq!(BridgeConfig { max_step: [-5; 6], ..cfg() }.validate(), Err(ConfigError::MaxStep { joint: 0 }));
    assert_eq!(BridgeConfig { timeout_ms: 0, ..cfg() }.validate(), Err(ConfigError::Timeout));
}

#[test]
fn commands_need_a_handshake_and_matching_protocol() {
    let mut b = bridge(cfg());
    assert_eq!(b.on_frame(&Frame { seq: 1, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Error(WireError::NoHandshake));
    assert_eq!(
        b.on_frame(&Frame { seq: 2, msg: HostMsg::Hello { protocol: 1 } }, 0),
        McuMsg::Error(WireError::ProtocolMismatch { host: 1, mcu: PROTOCOL_VERSION })
    );
    hello(&mut b, 0);
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Ack { clamped: 0 });
    // The sequence number reserved for replies to damaged frames is refused.
    assert_eq!(b.on_frame(&Frame { seq: SEQ_UNKNOWN, msg: HostMsg::Hold }, 0), McuMsg::Error(WireError::ReservedSequence));
}

#[test]
fn watchdog_holds_within_the_timeout() {
    for timeout in [20u32, 100, 250] {
        let mut b = bridge(BridgeConfig { timeout_ms: timeout, max_step: [2; 6], ..cfg() });
        hello(&mut b, 0);
        b.update_state(present(2000));
        b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
        b.on_frame(&Frame { seq: 3, msg: HostMsg::SetTargets { targets: [2900; 6] } }, 0);
        // The arm moves toward the target at 2 counts per 1 ms tick while the host is silent.
        let mut tripped_at = None;
        for now in 1..=1000u64 {
            let p = b.goal()[0];
            b.update_state(present(p));
            let cmd = b.tick(now);
            if b.faults() & fault::WATCHDOG != 0 && tripped_at.is_none() {
                tripped_at = Some(now);
                assert!(cmd.torque, "hold keeps torque on");
            }
        }
        let t = tripped_at.expect("watchdog fired");
        assert_eq!(t, u64::from(timeout) + 1, "fires on the first tick past the timeout");
        // Held where it was when the watchdog fired, not at the target.
        let held = b.goal()[0];
        assert!(held < 2900 && held >= 2000 + 2 * timeout as i16 - 2, "held at {held}");
        // Motion is refused until faults are cleared.
        assert_eq!(
            b.on_frame(&Frame { seq: 4, msg: HostMsg::SetTargets { targets: [1500; 6] } }, 2000),
            McuMsg::Error(WireError::Faulted { flags: fault::WATCHDOG })
        );
        assert_eq!(b.on_frame(&Frame { seq: 5, msg: HostMsg::ClearFaults }, 2000), McuMsg::Ack { clamped: 0 });
        assert_eq!(b.on_frame(&Frame { seq: 6, msg: HostMsg::SetTargets { targets: [1500; 6] } }, 2000), McuMsg::Ack { clamped: 0 });
    }
}

#[test]
fn heartbeats_keep_the_watchdog_quiet_but_bad_frames_do_not() {
    let mut b = bridge(cfg());
    hello(&mut b, 0);
    b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
    for k in 0..50u64 {
        let now = k * 50;
        b.on_frame(&Frame { seq: 10 + k as u16, msg: HostMsg::Heartbeat }, now);
        b.tick(now + 1);
    }
    assert_eq!(b.faults(), 0);
    // Only corrupted frames from now on: the watchdog fires.
    for now in 2450..2700u64 {
        b.on_bad_frame(FrameError::Crc { expected: 1, found: 2 });
        b.tick(now);
    }
    assert_eq!(b.faults() & fault::WATCHDOG, fault::WATCHDOG);
}

#[test]
fn torque_off_on_timeout_when_configured() {
    let mut b = bridge(BridgeConfig { safe_state: SafeState::TorqueOff, ..cfg() });
    hello(&mut b, 0);
    b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
    let mut off_at = None;
    for now in 1..300u64 {
        let cmd = b.tick(now);
        if !cmd.torque && off_at.is_none() {
            assert!(cmd.torque_changed);
            off_at = Some(now);
        }
    }
    assert_eq!(off_at, Some(101));
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::Torque { on: true } }, 400), McuMsg::Error(WireError::Faulted { flags: fault::WATCHDOG }));
}

#[test]
fn retransmitted_commands_execute_once() {
    let mut b = bridge(cfg());
    hello(&mut b, 0);
    let f = Frame { seq: 7, msg: HostMsg::SetTargets { targets: [1200; 6] } };
    let r1 = b.on_frame(&f, 1);
    let r2 = b.on_frame(&f, 2);
    assert_eq!(r1, r2);
    assert_eq!(b.stats.targets_executed, 1);
    assert_eq!(b.stats.duplicates, 1);
}

#[test]
fn calibration_with_an_overflowing_offset_is_refused() {
    let mut b = bridge(cfg());
    hello(&mut b, 0);
    let bad = Calibration { homing_offset: [0, 0, 2048, 0, 0, 0], ..calibration(0, 4095) };
    assert_eq!(
        b.on_frame(&Frame { seq: 2, msg: HostMsg::WriteCalibration(bad) }, 0),
        McuMsg::Error(WireError::InvalidCalibration { joint: 2, field: CalibrationField::HomingOffset })
    );
    assert!(!b.calibration_dirty, "nothing is queued for the servos");
    let good = Calibration { homing_offset: [-2047, 0, 2047, 0, 0, 0], ..bad };
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::WriteCalibration(good) }, 0), McuMsg::Ack { clamped: 0 });
    assert!(b.calibration_dirty);
}

/// The defect this suite was written for: an inverted or out-of-range calibration used to reach
/// `clamp(min, max)` with `min > max` and panic the MCU with torque on. Every such calibration is
/// refused with the field named, nothing changes, and the arm keeps holding and ticking.
#[test]
fn inverted_and_out_of_range_calibrations_are_refused_and_the_arm_keeps_holding() {
    let mut b = bridge(cfg());
    hello(&mut b, 0);
    b.update_state(present(2000));
    b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
    b.on_frame(&Frame { seq: 3, msg: HostMsg::Hold }, 0);
    let before = (b.limits(), b.calibration(), b.goal(), b.target(), b.torque());
    let mut inverted = calibration(1000, 3000);
    inverted.range_min[4] = 3000;
    inverted.range_max[4] = 1000;
    let mut too_big = calibration(1000, 3000);
    too_big.range_max[1] = 40_000; // above the servo's 4095 (and above i16::MAX)
    let mut too_big_min = calibration(1000, 3000);
    too_big_min.range_min[0] = 32_768;
    let mut empty = calibration(1000, 3000);
    empty.range_min[3] = 2048;
    empty.range_max[3] = 2048;
    let mut drive = calibration(1000, 3000);
    drive.drive_mode[5] = 7;
    let cases = [
        (inverted, 4, CalibrationField::Range),
        (too_big, 1, CalibrationField::RangeMax),
        (too_big_min, 0, CalibrationField::RangeMin),
        (empty, 3, CalibrationField::Range),
        (drive, 5, CalibrationField::DriveMode),
    ];
    for (k, (c, joint, field)) in cases.into_iter().enumerate() {
        let reply = b.on_frame(&Frame { seq: 10 + k as u16, msg: HostMsg::WriteCalibration(c) }, 1);
        assert_eq!(reply, McuMsg::Error(WireError::InvalidCalibration { joint, field }), "case {k}");
        assert_eq!((b.limits(), b.calibration(), b.goal(), b.target(), b.torque()), before, "case {k} changed state");
        assert!(!b.calibration_dirty);
        let cmd = b.tick(2);
        assert!(cmd.torque && b.holding(), "still holding with torque on");
        assert_eq!(cmd.goal, [2000; 6]);
    }
    // A valid calibration is refused too while torque is on: new limits under a moving arm.
    assert_eq!(b.on_frame(&Frame { seq: 30, msg: HostMsg::WriteCalibration(calibration(1500, 2500)) }, 3), McuMsg::Error(WireError::TorqueOn));
    assert_eq!(b.limits(), before.0);
    // With torque off it is taken, and the goal moves inside the new limits.
    b.on_frame(&Frame { seq: 31, msg: HostMsg::Torque { on: false } }, 3);
    b.update_state(present(1200));
    assert_eq!(b.on_frame(&Frame { seq: 32, msg: HostMsg::WriteCalibration(calibration(1500, 2500)) }, 3), McuMsg::Ack { clamped: 0 });
    assert_eq!(b.limits(), ([1500; 6], [2500; 6]));
    assert_eq!(b.goal(), [1500; 6]);
}

#[test]
fn a_refused_hello_changes_nothing_and_stopping_needs_no_handshake() {
    let mut b = bridge(cfg());
    // Before any handshake the arm can still be stopped, but not moved.
    b.update_state(present(2000));
    assert_eq!(b.on_frame(&Frame { seq: 1, msg: HostMsg::Hold }, 0), McuMsg::Ack { clamped: 0 });
    assert_eq!(b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: false } }, 0), McuMsg::Ack { clamped: 0 });
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Error(WireError::NoHandshake));
    hello(&mut b, 0);
    assert_eq!(b.on_frame(&Frame { seq: 4, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Ack { clamped: 0 });
    // An old tool's Hello is refused and leaves the session as it was.
    assert!(matches!(b.on_frame(&Frame { seq: 5, msg: HostMsg::Hello { protocol: 1 } }, 1), McuMsg::Error(WireError::ProtocolMismatch { .. })));
    assert_eq!(b.on_frame(&Frame { seq: 6, msg: HostMsg::Heartbeat }, 1), McuMsg::Ack { clamped: 0 });
    assert_eq!(b.on_frame(&Frame { seq: 7, msg: HostMsg::Torque { on: false } }, 1), McuMsg::Ack { clamped: 0 });
    assert!(!b.tick(2).torque);
}

#[test]
fn refused_frames_do_not_feed_the_watchdog() {
    let mut b = bridge(cfg());
    hello(&mut b, 0);
    b.update_state(present(2000));
    b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
    b.on_frame(&Frame { seq: 3, msg: HostMsg::SetTargets { targets: [2500; 6] } }, 0);
    // A host stuck sending something the MCU refuses is as good as silent.
    let bad = calibration(3000, 1000);
    for k in 0..10u16 {
        let now = u64::from(k) * 30;
        assert!(matches!(b.on_frame(&Frame { seq: 10 + k, msg: HostMsg::WriteCalibration(bad) }, now), McuMsg::Error(_)));
        b.tick(now + 1);
    }
    assert_eq!(b.faults() & fault::WATCHDOG, fault::WATCHDOG);
    assert!(b.holding());
}

#[test]
fn engaging_outside_the_limits_is_refused_and_a_hold_never_snaps_to_a_limit() {
    let mut b = bridge(cfg());
    hello(&mut b, 0);
    // The arm was moved by hand outside the limits of joint 2: engaging would snap it to 1000.
    b.update_state(ArmState { positions: [2000, 2000, 500, 2000, 2000, 2000], ..ArmState::default() });
    assert_eq!(b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Error(WireError::OutsideLimits { joint: 2 }));
    assert!(!b.torque());
    b.update_state(present(2000));
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Ack { clamped: 0 });
    assert_eq!(b.tick(1).goal, [2000; 6]);
    // A reading outside the limits (pushed there, or a reading that is wrong) keeps that joint's
    // goal on a hold instead of driving it to the nearest limit.
    b.update_state(ArmState { positions: [2010, 2010, 32767, 2010, 2010, 2010], ..ArmState::default() });
    b.on_frame(&Frame { seq: 4, msg: HostMsg::Hold }, 2);
    assert_eq!(b.tick(3).goal, [2010, 2010, 2000, 2010, 2010, 2010]);
}

#[test]
fn a_new_fault_stops_motion_in_progress() {
    for safe in [SafeState::Hold, SafeState::TorqueOff] {
        let mut b = bridge(BridgeConfig { safe_state: safe, ..cfg() });
        hello(&mut b, 0);
        b.update_state(present(2000));
        b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
        b.on_frame(&Frame { seq: 3, msg: HostMsg::SetTargets { targets: [2900; 6] } }, 0);
        for now in 1..=5 {
            b.tick(now);
        }
        let moving = b.goal();
        assert_eq!(moving, [2050; 6]);
        b.update_state(present(2030));
        b.raise(fault::OVERLOAD);
        let cmd = b.tick(6);
        match safe {
            SafeState::Hold => assert_eq!((cmd.torque, cmd.goal), (true, [2030; 6]), "held where the arm is"),
            SafeState::TorqueOff => assert!(!cmd.torque && cmd.torque_changed),
        }
        assert_eq!(b.tick(7).goal, cmd.goal, "no further motion toward the old target");
    }
}

#[test]
fn a_silent_servo_does_not_keep_the_others_driving() {
    for safe in [SafeState::Hold, SafeState::TorqueOff] {
        let bus = SharedBus::new(SimBus::new(6));
        let mut app = app_on(&bus, BridgeConfig { safe_state: safe, ..BridgeConfig::default() }, POWER_ON);
        app.start().expect("boot");
        send(&mut app, 1, HostMsg::Hello { protocol: PROTOCOL_VERSION }, 0);
        send(&mut app, 2, HostMsg::Torque { on: true }, 0);
        app.servo_tick(0).expect("tick");
        send(&mut app, 3, HostMsg::SetTargets { targets: [3000; 6] }, 0);
        for k in 1..=5u64 {
            app.servo_tick(k * 2).expect("tick");
        }
        // Servo 6's replies are lost from now on (it still hears broadcasts).
        bus.lock().servo_mut(6).expect("servo 6").silent = true;
        assert!(app.servo_tick(12).is_err());
        assert_eq!(app.bridge.faults() & fault::BUS, fault::BUS);
        let goal_after_fault = app.bridge.goal();
        for k in 7..=20u64 {
            let _ = app.servo_tick(k * 2);
        }
        assert_eq!(app.bridge.goal(), goal_after_fault, "motion stopped at the fault");
        // The host can still switch torque off, and it reaches every servo.
        assert_eq!(send(&mut app, 4, HostMsg::Torque { on: false }, 40), McuMsg::Ack { clamped: 0 });
        let _ = app.servo_tick(42);
        assert!(bus.lock().servos.iter().all(|s| !s.torque()), "{safe:?}: torque off reached all six");
    }
}

#[test]
fn a_boot_that_cannot_read_every_servo_drops_torque_rather_than_leave_stale_goals() {
    let bus = SharedBus::new(SimBus::new(6));
    {
        let mut b = bus.lock();
        for s in b.servos.iter_mut() {
            s.regs[40] = 1; // torque on, driving toward the dead firmware's goal
        }
        b.servo_mut(2).expect("servo 2").silent = true;
    }
    let mut app = app_on(&bus, BridgeConfig { safe_state: SafeState::Hold, ..BridgeConfig::default() }, BootInfo { count: 2, reason: ResetReason::Panic });
    assert!(app.start().is_err());
    assert!(bus.lock().servos.iter().all(|s| !s.torque()), "a hold cannot be established: torque off");
    assert_eq!(app.bridge.faults(), fault::RESET | fault::BUS);
    assert!(!app.bridge.torque());
    // The calibration the host reads back is the firmware's limits, not an all-zero one.
    assert_eq!((app.bridge.calibration().range_min, app.bridge.calibration().range_max), ([0; 6], [4095; 6]));
}

#[test]
fn engaging_torque_starts_at_the_present_position() {
    let mut b = bridge(cfg());
    hello(&mut b, 0);
    b.update_state(present(1777));
    b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
    let cmd = b.tick(1);
    assert_eq!(cmd.goal, [1777; 6]);
}

#[test]
fn an_abnormal_boot_latches_reset_and_reports_it_in_the_handshake() {
    let boot = BootInfo { count: 4, reason: ResetReason::Panic };
    let mut b = Bridge::new(cfg(), 0, boot).expect("valid");
    assert_eq!(b.faults(), fault::RESET);
    match b.on_frame(&Frame { seq: 1, msg: HostMsg::Hello { protocol: PROTOCOL_VERSION } }, 0) {
        McuMsg::HelloAck { boot: got, .. } => assert_eq!(got, boot),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Error(WireError::Faulted { flags: fault::RESET }));
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::ClearFaults }, 0), McuMsg::Ack { clamped: 0 });
    assert_eq!(b.on_frame(&Frame { seq: 4, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Ack { clamped: 0 });
    // A clean power-on latches nothing.
    assert_eq!(bridge(cfg()).faults(), 0);
}

/// Every host message kind with hostile field values: any protocol number, any targets, any
/// calibration (inverted, empty, above the servo's count range, above i16::MAX, bad offsets and
/// drive modes, and valid ones), torque either way.
fn hostile_msg() -> impl Strategy<Value = HostMsg> {
    let count = prop_oneof![0u16..=4095, any::<u16>(), Just(0u16), Just(4095u16), Just(4096u16), Just(32767u16), Just(32768u16), Just(u16::MAX)];
    let offset = prop_oneof![-2047i16..=2047, any::<i16>(), Just(2048i16), Just(-2048i16), Just(i16::MIN)];
    let cal = (
        prop::array::uniform6(offset),
        prop::array::uniform6(count.clone()),
        prop::array::uniform6(count),
        prop::array::uniform6(prop_oneof![0u8..=1, any::<u8>()]),
    )
        .prop_map(|(homing_offset, range_min, range_max, drive_mode)| Calibration { homing_offset, range_min, range_max, drive_mode });
    let valid_cal = (prop::array::uniform6(0u16..2000), prop::array::uniform6(2001u16..=4095)).prop_map(|(range_min, range_max)| Calibration {
        homing_offset: [0; 6],
        range_min,
        range_max,
        drive_mode: [0; 6],
    });
    let targets = prop::array::uniform6(prop_oneof![any::<i16>(), Just(i16::MIN), Just(i16::MAX), 0i16..4096]);
    prop_oneof![
        prop_oneof![Just(PROTOCOL_VERSION), any::<u16>()].prop_map(|protocol| HostMsg::Hello { protocol }),
        targets.prop_map(|targets| HostMsg::SetTargets { targets }),
        Just(HostMsg::ReadState),
        any::<bool>().prop_map(|on| HostMsg::Torque { on }),
        Just(HostMsg::Hold),
        Just(HostMsg::Heartbeat),
        Just(HostMsg::ReadCalibration),
        cal.prop_map(HostMsg::WriteCalibration),
        valid_cal.prop_map(HostMsg::WriteCalibration),
        Just(HostMsg::ClearFaults),
    ]
}

/// What a host event does: a valid frame, a damaged one, or silence.
#[derive(Debug, Clone)]
enum Event {
    Frame(u16, HostMsg),
    Bad(FrameError),
    Silence(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => (prop_oneof![any::<u16>(), Just(SEQ_UNKNOWN), 0u16..4], hostile_msg()).prop_map(|(s, m)| Event::Frame(s, m)),
        1 => prop_oneof![Just(FrameError::Crc { expected: 0, found: 1 }), Just(FrameError::Cobs), Just(FrameError::Overflow), Just(FrameError::Decode)].prop_map(Event::Bad),
        1 => (0u64..400).prop_map(Event::Silence),
    ]
}

#[test]
fn the_hostile_generator_covers_every_message_kind() {
    // The property test below is only as good as its generator: draw until every kind of
    // HostMsg (and both bad calibration shapes) has appeared.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = hostile_msg();
    let mut seen = [false; HostMsg::KINDS.len()];
    let (mut inverted, mut out_of_range) = (false, false);
    for _ in 0..5000 {
        let m = strategy.new_tree(&mut runner).expect("tree").current();
        seen[usize::from(m.kind())] = true;
        if let HostMsg::WriteCalibration(c) = m {
            inverted |= c.range_min.iter().zip(&c.range_max).any(|(lo, hi)| lo > hi);
            out_of_range |= c.range_max.iter().any(|&v| v > 32767);
        }
    }
    assert!(seen.iter().all(|&s| s), "kinds drawn: {seen:?}");
    assert!(inverted && out_of_range);
    assert_eq!(HostMsg::KINDS.iter().map(HostMsg::kind).collect::<Vec<_>>(), (0..9).collect::<Vec<u8>>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever a hostile host sends — every message kind, hostile values, damaged frames, silences
    /// — nothing panics, the goal stays inside the limits in force and moves at most `max_step`
    /// per tick while torque is on (or is pulled back to where the arm is by a hold), refused
    /// messages change nothing, and the watchdog still trips on silence afterwards. The simulated
    /// servo lags the goal at `speed` counts per tick, as a real one does.
    #[test]
    fn invariants_hold_against_a_hostile_host(
        events in prop::collection::vec(event(), 1..80),
        safe in prop_oneof![Just(SafeState::Hold), Just(SafeState::TorqueOff)],
        speed in 1i32..=30,
    ) {
        let c = BridgeConfig { safe_state: safe, ..cfg() };
        let mut b = bridge(c);
        hello(&mut b, 0);
        b.update_state(present(2000));
        b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
        let mut prev = b.tick(0);
        let mut pres = [2000i16; JOINTS];
        let mut now = 1u64;
        for ev in events {
            match ev {
                Event::Frame(seq, msg) => {
                    let before = (b.limits(), b.calibration(), b.target(), b.goal(), b.torque(), b.faults(), b.calibration_dirty);
                    let reply = b.on_frame(&Frame { seq, msg }, now);
                    let mut buf = [0u8; MAX_FRAME];
                    prop_assert!(encode_frame(seq, &reply, &mut buf).is_ok(), "every reply fits a frame");
                    if let McuMsg::Error(e) = reply {
                        let after = (b.limits(), b.calibration(), b.target(), b.goal(), b.torque(), b.faults(), b.calibration_dirty);
                        prop_assert_eq!(before, after, "refused {:?} ({:?}) changed state", msg, e);
                    }
                }
                Event::Bad(e) => {
                    prop_assert!(matches!(b.on_bad_frame(e), McuMsg::Error(_)));
                }
                Event::Silence(ms) => now += ms,
            }
            for _ in 0..5 {
                now += 1;
                let before = pres;
                // What the servo loop does with a pending calibration: write it, then read again.
                if b.calibration_dirty {
                    b.calibration_pushed();
                }
                if prev.torque {
                    for (p, g) in pres.iter_mut().zip(prev.goal) {
                        *p = (i32::from(*p) + (i32::from(g) - i32::from(*p)).clamp(-speed, speed)) as i16;
                    }
                }
                b.update_state(ArmState { positions: pres, ..ArmState::default() });
                let cmd = b.tick(now);
                let (lo, hi) = b.limits();
                for j in 0..JOINTS {
                    prop_assert!(lo[j] <= hi[j], "limits stay ordered");
                    prop_assert!(cmd.goal[j] >= lo[j] && cmd.goal[j] <= hi[j], "goal {} outside limits {}..{}", cmd.goal[j], lo[j], hi[j]);
                    if cmd.torque && prev.torque {
                        let step = (i32::from(cmd.goal[j]) - i32::from(prev.goal[j])).abs();
                        // A hold (Hold frame: the position read before this tick; a fault or the
                        // watchdog: the one read on it) is the one larger change allowed: the goal
                        // becomes exactly where the arm is, which stops it.
                        let held = cmd.goal[j] == before[j] || cmd.goal[j] == pres[j];
                        prop_assert!(step <= i32::from(c.max_step[j]) || held, "step {} -> {} with the arm at {}", prev.goal[j], cmd.goal[j], pres[j]);
                    }
                    if cmd.torque && !prev.torque {
                        prop_assert_eq!(cmd.goal[j], before[j], "torque engages exactly at the present position");
                    }
                }
                prev = cmd;
            }
        }
        // Afterwards the watchdog still trips on silence (with the arm put back inside its limits,
        // where torque can be engaged).
        now += 1;
        if b.calibration_dirty {
            b.calibration_pushed();
        }
        let (lo, hi) = b.limits();
        b.update_state(ArmState { positions: core::array::from_fn(|j| pres[j].clamp(lo[j], hi[j])), ..ArmState::default() });
        hello(&mut b, now);
        prop_assert_eq!(b.on_frame(&Frame { seq: 50_000, msg: HostMsg::ClearFaults }, now), McuMsg::Ack { clamped: 0 });
        prop_assert_eq!(b.on_frame(&Frame { seq: 50_001, msg: HostMsg::Torque { on: true } }, now), McuMsg::Ack { clamped: 0 });
        prop_assert!(b.tick(now + 1).torque);
        let cmd = b.tick(now + u64::from(c.timeout_ms) + 1);
        prop_assert_eq!(b.faults() & fault::WATCHDOG, fault::WATCHDOG);
        prop_assert_eq!(cmd.torque, safe == SafeState::Hold);
    }
}

/// A manual clock for the whole-app test.
#[derive(Clone)]
struct ManualClock(std::rc::Rc<std::cell::Cell<u64>>);

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        // Every read advances time a little, so bus timeouts expire without real waiting.
        let t = self.0.get() + 5;
        self.0.set(t);
        t
    }
}

type App = McuApp<SimWire, ManualClock>;

fn app_on(bus: &SharedBus, cfg: BridgeConfig, boot: BootInfo) -> App {
    let clock = ManualClock(std::rc::Rc::new(std::cell::Cell::new(0)));
    McuApp::new(Bridge::new(cfg, 0, boot).expect("valid"), FeetechBus::new(SimWire::new(bus.clone()), clock))
}

fn send(app: &mut App, seq: u16, msg: HostMsg, now: u64) -> McuMsg {
    let mut buf = [0u8; MAX_FRAME];
    let mut out = [0u8; MAX_FRAME];
    let bytes = encode_frame(seq, &msg, &mut buf).expect("enc").to_vec();
    let mut reply = None;
    for b in bytes {
        if let Some(r) = app.on_host_byte(b, now, &mut out) {
            reply = Some(decode_frame::<McuMsg>(&r[..r.len() - 1]).expect("reply").msg);
        }
    }
    reply.expect("a reply")
}

#[test]
fn mcu_app_drives_simulated_servos_over_the_real_driver() {
    let bus = SharedBus::new(SimBus::new(6));
    let mut app = app_on(&bus, BridgeConfig::default(), POWER_ON);
    app.start().expect("boot");
    assert!(matches!(send(&mut app, 1, HostMsg::Hello { protocol: PROTOCOL_VERSION }, 0), McuMsg::HelloAck { .. }));
    app.servo_tick(0).expect("tick");
    assert_eq!(send(&mut app, 2, HostMsg::Torque { on: true }, 0), McuMsg::Ack { clamped: 0 });
    assert_eq!(send(&mut app, 3, HostMsg::SetTargets { targets: [2100, 2000, 2048, 1900, 2048, 5000] }, 0), McuMsg::Ack { clamped: 0b100000 });
    // 1.2 s: the simulated servos move at most 3400 counts/s.
    for k in 1..=600u64 {
        if k % 20 == 0 {
            send(&mut app, 100 + k as u16, HostMsg::Heartbeat, k * 2);
        }
        bus.lock().advance(0.002);
        app.servo_tick(k * 2).expect("tick");
    }
    match send(&mut app, 999, HostMsg::ReadState, 1200) {
        McuMsg::State(s) => {
            assert!(s.torque && s.faults == 0, "{s:?}");
            assert_eq!(&s.positions[..5], &[2100, 2000, 2048, 1900, 2048]);
            assert_eq!(s.positions[5], 4095, "clamped to the limit");
            assert_eq!(s.voltage_dv, 74);
        }
        other => panic!("{other:?}"),
    }
    // A servo stops answering: the bus fault is latched and reported.
    bus.lock().servo_mut(3).expect("servo 3").silent = true;
    assert!(app.servo_tick(1202).is_err());
    match send(&mut app, 1000, HostMsg::ReadState, 1202) {
        McuMsg::State(s) => assert_eq!(s.faults & fault::BUS, fault::BUS),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_mcu_adopts_the_calibration_stored_in_the_servos_at_boot() {
    let bus = SharedBus::new(SimBus::new(6));
    let mut app = app_on(&bus, BridgeConfig::default(), POWER_ON);
    app.start().expect("boot");
    send(&mut app, 1, HostMsg::Hello { protocol: PROTOCOL_VERSION }, 0);
    let cal = Calibration { homing_offset: [10, -10, 0, 0, 0, 0], range_min: [500; 6], range_max: [3500; 6], drive_mode: [0; 6] };
    assert_eq!(send(&mut app, 2, HostMsg::WriteCalibration(cal), 0), McuMsg::Ack { clamped: 0 });
    // One joint per tick goes to EEPROM; torque cannot be engaged until all are written and the
    // positions have been read again in the new homing-offset frame.
    assert_eq!(send(&mut app, 3, HostMsg::Torque { on: true }, 0), McuMsg::Error(WireError::CalibrationPending));
    for k in 1..=6 {
        app.servo_tick(k).expect("tick pushes one joint of the calibration to EEPROM");
    }
    assert!(!app.bridge.calibration_dirty);
    // Next boot: the limits come from the servos, not from the firmware defaults.
    let mut app = app_on(&bus, BridgeConfig::default(), POWER_ON);
    app.start().expect("boot");
    assert_eq!(app.bridge.limits(), ([500; 6], [3500; 6]));
    assert_eq!(app.bridge.calibration().homing_offset, cal.homing_offset);
}

/// Reset → safe state → the handshake reports the reset: what the firmware does after a panic or
/// a hardware-watchdog reset, on the simulated MCU.
#[test]
fn after_a_reset_the_mcu_boots_into_the_safe_state_before_answering() {
    for safe in [SafeState::TorqueOff, SafeState::Hold] {
        let bus = SharedBus::new(SimBus::new(6));
        let cfg = BridgeConfig { safe_state: safe, ..BridgeConfig::default() };
        let mut app = app_on(&bus, cfg, POWER_ON);
        app.start().expect("boot");
        send(&mut app, 1, HostMsg::Hello { protocol: PROTOCOL_VERSION }, 0);
        send(&mut app, 2, HostMsg::Torque { on: true }, 0);
        app.servo_tick(0).expect("tick");
        send(&mut app, 3, HostMsg::SetTargets { targets: [3500; 6] }, 0);
        // Let the goal run ahead toward the target for 100 ms, then the firmware dies.
        for k in 1..=50u64 {
            if k % 10 == 0 {
                send(&mut app, 10 + k as u16, HostMsg::Heartbeat, k * 2);
            }
            app.servo_tick(k * 2).expect("tick");
            bus.lock().advance(0.0005);
        }
        drop(app);
        let goal_reg = |bus: &SharedBus| -> Vec<i32> {
            let b = bus.lock();
            b.servos.iter().map(|s| decode_sign_magnitude(u16::from_le_bytes([s.regs[42], s.regs[43]]), lapa_boards::STS3215.position_sign_bit)).collect()
        };
        let stale_goal = goal_reg(&bus);
        assert!(bus.lock().servos.iter().all(|s| s.torque()), "the servos keep torque across the MCU reset");
        // The new boot.
        let boot = BootInfo { count: 2, reason: ResetReason::Watchdog };
        let mut app = app_on(&bus, cfg, boot);
        app.start().expect("boot into the safe state");
        let servos_torque: Vec<bool> = bus.lock().servos.iter().map(|s| s.torque()).collect();
        let present: Vec<i32> = bus
            .lock()
            .servos
            .iter()
            .map(|s| decode_sign_magnitude(u16::from_le_bytes([s.regs[56], s.regs[57]]), lapa_boards::STS3215.position_sign_bit))
            .collect();
        match safe {
            SafeState::TorqueOff => assert!(servos_torque.iter().all(|&t| !t), "{servos_torque:?}"),
            SafeState::Hold => {
                assert!(servos_torque.iter().all(|&t| t));
                assert_eq!(goal_reg(&bus), present, "goal reset to where the arm is (was heading to {stale_goal:?})");
                assert!(app.bridge.holding());
            }
        }
        assert_ne!(stale_goal, present, "the test reset the MCU mid-motion");
        // The host's handshake reports the reset; motion stays refused until it clears the fault.
        match send(&mut app, 1, HostMsg::Hello { protocol: PROTOCOL_VERSION }, 0) {
            McuMsg::HelloAck { boot: got, .. } => assert_eq!(got, boot),
            other => panic!("{other:?}"),
        }
        assert_eq!(send(&mut app, 2, HostMsg::SetTargets { targets: [2048; 6] }, 0), McuMsg::Error(WireError::Faulted { flags: fault::RESET }));
        match send(&mut app, 3, HostMsg::ReadState, 0) {
            McuMsg::State(s) => assert_eq!((s.torque, s.faults), (safe == SafeState::Hold, fault::RESET)),
            other => panic!("{other:?}"),
        }
    }
}

/// Deterministic xorshift for the frame fuzz (reproducible without proptest's shrinking, which
/// is useless on byte soup).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Random and mutated frames into the whole MCU app (frame receiver, bridge, servo loop, real
/// driver, simulated servos): nothing panics and every goal the servos receive is inside the
/// limits in force. The ≥ 10 M-frame soak of the same loop is `examples/reliability.rs`.
#[test]
fn random_and_mutated_frames_into_the_mcu_app() {
    let bus = SharedBus::new(SimBus::new(6));
    let mut app = app_on(&bus, BridgeConfig { max_step: [40; 6], ..BridgeConfig::default() }, POWER_ON);
    app.start().expect("boot");
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut out = [0u8; MAX_FRAME];
    let mut now = 0u64;
    let strategy = hostile_msg();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut replies, mut valid) = (0u32, 0u32);
    let mut prev_regs: Vec<(bool, i32, i32)> = vec![(false, 0, 0); 6];
    let mut prev_limits = app.bridge.limits();
    for k in 0..20_000u32 {
        let msg = match k % 8 {
            0 => HostMsg::Hello { protocol: PROTOCOL_VERSION },
            1 => HostMsg::ClearFaults,
            2 => HostMsg::Torque { on: true },
            _ => strategy.new_tree(&mut runner).expect("tree").current(),
        };
        let mut buf = [0u8; MAX_FRAME];
        let mut bytes = encode_frame((rng.next() % 0x1_0000) as u16, &msg, &mut buf).expect("enc").to_vec();
        match rng.next() % 8 {
            0..=3 => {}
            4 | 5 => {
                let i = (rng.next() as usize) % bytes.len();
                bytes[i] ^= (rng.next() % 255 + 1) as u8;
            }
            6 => bytes.truncate((rng.next() as usize) % bytes.len()),
            _ => bytes = (0..rng.next() % 100).map(|_| rng.next() as u8).collect(),
        }
        for &b in &bytes {
            if app.on_host_byte(b, now, &mut out).is_some() {
                replies += 1;
            }
        }
        valid += u32::from(bytes.last() == Some(&0));
        now += rng.next() % 5;
        bus.lock().advance(0.002);
        let _ = app.servo_tick(now);
        let (lo, hi) = app.bridge.limits();
        let reg16 = |s: &lapa_bridge::simservo::SimServo, a: usize| {
            decode_sign_magnitude(u16::from_le_bytes([s.regs[a], s.regs[a + 1]]), lapa_boards::STS3215.position_sign_bit)
        };
        let now_regs: Vec<(bool, i32, i32)> = bus.lock().servos.iter().map(|s| (s.torque(), reg16(s, 42), reg16(s, 56))).collect();
        for (j, (&(on, goal, present), &(was_on, prev_goal, prev_present))) in now_regs.iter().zip(&prev_regs).enumerate() {
            if on {
                assert!(goal >= i32::from(lo[j]) && goal <= i32::from(hi[j]), "joint {j}: goal {goal} outside {}..{}", lo[j], hi[j]);
            }
            if on && was_on && (lo, hi) == prev_limits {
                let held = goal == present || goal == prev_present;
                assert!((goal - prev_goal).abs() <= 40 || held, "joint {j}: goal {prev_goal} -> {goal} with the arm at {present}");
            }
        }
        prev_regs = now_regs;
        prev_limits = (lo, hi);
    }
    assert!(replies > 10_000 && valid > 5_000, "the fuzz reached the bridge: {replies} replies");
    let st = app.bridge.stats;
    assert!(st.frames_ok > 6_000 && st.frames_bad > 1_000 && st.targets_executed > 300, "{st:?}");
}
