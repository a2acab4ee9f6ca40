//! The bridge state machine with a mock clock: watchdog timing, limits against a hostile host,
//! retransmissions, handshake, fault latching, interpolation; and the whole MCU app over simulated
//! servos.

use lapa_bridge::bridge::{Bridge, BridgeConfig, TimeoutAction};
use lapa_bridge::feetech::{Clock, FeetechBus};
use lapa_bridge::mcu_app::McuApp;
use lapa_bridge::protocol::*;
use lapa_bridge::simservo::SimBus;
use lapa_bridge::wire::{SharedBus, SimWire};
use proptest::prelude::*;

fn hello(b: &mut Bridge, now: u64) {
    let r = b.on_frame(&Frame { seq: 1, msg: HostMsg::Hello { protocol: PROTOCOL_VERSION } }, now);
    assert!(matches!(r, McuMsg::HelloAck { protocol: PROTOCOL_VERSION, .. }));
}

fn cfg() -> BridgeConfig {
    BridgeConfig { min: [1000; 6], max: [3000; 6], max_step: [10; 6], timeout_ms: 100, ..BridgeConfig::default() }
}

fn present(p: i16) -> ArmState {
    ArmState { positions: [p; 6], ..ArmState::default() }
}

#[test]
fn commands_need_a_handshake_and_matching_protocol() {
    let mut b = Bridge::new(cfg(), 0);
    assert_eq!(b.on_frame(&Frame { seq: 1, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Error(WireError::NoHandshake));
    assert_eq!(
        b.on_frame(&Frame { seq: 2, msg: HostMsg::Hello { protocol: 99 } }, 0),
        McuMsg::Error(WireError::ProtocolMismatch { host: 99, mcu: PROTOCOL_VERSION })
    );
    hello(&mut b, 0);
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::Torque { on: true } }, 0), McuMsg::Ack { clamped: 0 });
}

#[test]
fn watchdog_holds_within_the_timeout() {
    for timeout in [20u32, 100, 250] {
        let mut b = Bridge::new(BridgeConfig { timeout_ms: timeout, max_step: [2; 6], ..cfg() }, 0);
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
    let mut b = Bridge::new(cfg(), 0);
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
    let mut b = Bridge::new(BridgeConfig { on_timeout: TimeoutAction::TorqueOff, ..cfg() }, 0);
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
    let mut b = Bridge::new(cfg(), 0);
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
    let mut b = Bridge::new(cfg(), 0);
    hello(&mut b, 0);
    let bad = Calibration { homing_offset: [0, 0, 2048, 0, 0, 0], range_min: [0; 6], range_max: [4095; 6], drive_mode: [0; 6] };
    assert_eq!(b.on_frame(&Frame { seq: 2, msg: HostMsg::WriteCalibration(bad) }, 0), McuMsg::Error(WireError::InvalidCalibration { joint: 2 }));
    assert!(!b.calibration_dirty, "nothing is queued for the servos");
    let good = Calibration { homing_offset: [-2047, 0, 2047, 0, 0, 0], ..bad };
    assert_eq!(b.on_frame(&Frame { seq: 3, msg: HostMsg::WriteCalibration(good) }, 0), McuMsg::Ack { clamped: 0 });
    assert!(b.calibration_dirty);
}

#[test]
fn engaging_torque_starts_at_the_present_position() {
    let mut b = Bridge::new(cfg(), 0);
    hello(&mut b, 0);
    b.update_state(present(1777));
    b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
    let cmd = b.tick(1);
    assert_eq!(cmd.goal, [1777; 6]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever a hostile host sends, goals stay inside the limits and move at most `max_step` per
    /// tick.
    #[test]
    fn limits_hold_against_a_hostile_host(cmds in prop::collection::vec((any::<u16>(), prop::array::uniform6(any::<i16>()), 0u8..6), 1..60)) {
        let c = cfg();
        let mut b = Bridge::new(c, 0);
        hello(&mut b, 0);
        b.update_state(present(2000));
        b.on_frame(&Frame { seq: 2, msg: HostMsg::Torque { on: true } }, 0);
        let mut prev = b.tick(0).goal;
        let mut now = 1u64;
        for (seq, targets, kind) in cmds {
            let msg = match kind {
                0..=2 => HostMsg::SetTargets { targets },
                3 => HostMsg::Hold,
                4 => HostMsg::ClearFaults,
                _ => HostMsg::Torque { on: seq % 2 == 0 },
            };
            b.on_frame(&Frame { seq, msg }, now);
            for _ in 0..5 {
                now += 1;
                b.update_state(ArmState { positions: prev, ..ArmState::default() });
                let cmd = b.tick(now);
                for j in 0..JOINTS {
                    prop_assert!(cmd.goal[j] >= c.min[j] && cmd.goal[j] <= c.max[j], "goal {} outside limits", cmd.goal[j]);
                    if cmd.torque {
                        prop_assert!((i32::from(cmd.goal[j]) - i32::from(prev[j])).abs() <= i32::from(c.max_step[j]));
                    }
                }
                prev = cmd.goal;
            }
        }
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

#[test]
fn mcu_app_drives_simulated_servos_over_the_real_driver() {
    let bus = SharedBus::new(SimBus::new(6));
    let clock = ManualClock(std::rc::Rc::new(std::cell::Cell::new(0)));
    let mut app = McuApp::new(Bridge::new(BridgeConfig::default(), 0), FeetechBus::new(SimWire::new(bus.clone()), clock));
    let mut out = [0u8; MAX_FRAME];
    let mut send = |app: &mut McuApp<SimWire, ManualClock>, seq: u16, msg: HostMsg, now: u64| -> McuMsg {
        let mut buf = [0u8; MAX_FRAME];
        let bytes = encode_frame(seq, &msg, &mut buf).expect("enc").to_vec();
        let mut reply = None;
        for b in bytes {
            if let Some(r) = app.on_host_byte(b, now, &mut out) {
                reply = Some(decode_frame::<McuMsg>(&r[..r.len() - 1]).expect("reply").msg);
            }
        }
        reply.expect("a reply")
    };
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
