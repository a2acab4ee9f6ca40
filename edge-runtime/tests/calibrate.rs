//! Calibration on the simulated board (six simulated STS3215s behind the real Feetech driver,
//! turned by a scripted hand) and LeRobot calibration files read and written.

use lapa_boards::so101::JOINTS;
use lapa_boards::{SO101, Unit};
use lapa_bridge::arm::{Arm, SimArm, joint_calibrations};
use lapa_bridge::feetech::{decode_sign_magnitude, reg};
use lapa_edge::calibrate::{self as calib, CalibrateError, HALF_TURN, ScriptedHand};
use std::process::Command;
use std::time::Duration;

const FIXTURE: &str = include_str!("data/lerobot_so101_follower.json");

fn edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lapa-edge"))
}

fn u16_reg(arm: &SimArm, id: u8, addr: u8) -> u16 {
    let mut bus = arm.bus.lock();
    let s = bus.servo_mut(id).expect("servo");
    u16::from_le_bytes([s.regs[addr as usize], s.regs[addr as usize + 1]])
}

#[test]
fn the_scripted_sweep_calibrates_the_simulated_arm_as_lerobot_would() {
    let mut arm = SimArm::new();
    arm.connect().expect("connects");
    let mut hand = ScriptedHand::new(arm.bus.clone(), &SO101);
    let (assembly, reach) = (hand.assembly, hand.reach);
    let cal = calib::calibrate(&mut arm, &mut hand, Duration::ZERO).expect("calibrates");
    for j in 0..JOINTS {
        // offset = raw − 2047 at the centred pose; the sweep's ends in the offset frame.
        assert_eq!(i32::from(cal[j].homing_offset), assembly[j], "joint {j}");
        assert_eq!(i32::from(cal[j].range_min), HALF_TURN - reach[j].0, "joint {j}");
        assert_eq!(i32::from(cal[j].range_max), HALF_TURN + reach[j].1, "joint {j}");
        assert_eq!(cal[j].drive_mode, 0);
        // In the servos' EEPROM, through the register file.
        let id = SO101.joints[j].id;
        let off = decode_sign_magnitude(u16_reg(&arm, id, reg::HOMING_OFFSET.addr), SO101.servo.homing_offset_sign_bit);
        assert_eq!(off, assembly[j]);
        assert_eq!(u16_reg(&arm, id, reg::MIN_POSITION_LIMIT.addr), cal[j].range_min);
        assert_eq!(u16_reg(&arm, id, reg::MAX_POSITION_LIMIT.addr), cal[j].range_max);
    }
    assert_eq!(joint_calibrations(&arm.read_calibration().expect("reads")), cal);
    // The arm, centred again by hand, reads the middle of every joint's range: degrees near 0
    // (0° is the middle of the calibrated range) and the gripper at its centre's share.
    hand.centre(&SO101).expect("the hand centres the arm");
    let q = arm.read_state().expect("reads").joints;
    for (j, spec) in SO101.joints.iter().enumerate() {
        let span = f32::from(cal[j].range_max - cal[j].range_min);
        let mid_off = (f32::from(cal[j].range_min) + span / 2.0 - HALF_TURN as f32) * 360.0 / 4095.0;
        match spec.unit {
            Unit::Degrees => assert!((q[j] + mid_off).abs() < 0.2, "{}: {} vs {}", spec.name, q[j], -mid_off),
            Unit::Percent => {
                let want = (HALF_TURN as f32 - f32::from(cal[j].range_min)) / span * 100.0;
                assert!((q[j] - want).abs() < 0.2, "gripper {} vs {want}", q[j]);
            }
        }
    }
}

use lapa_edge::calibrate::Guide;

#[test]
fn a_joint_that_was_not_swept_is_named_and_nothing_is_saved() {
    let mut arm = SimArm::new();
    arm.connect().expect("connects");
    let mut hand = ScriptedHand::new(arm.bus.clone(), &SO101);
    hand.reach[3] = (10, 10);
    // The arm holds a calibration from before (LeRobot's file, applied).
    let previous = calib::parse_lerobot_json("fixture", FIXTURE, &SO101).expect("fixture");
    arm.write_calibration(&calib::to_wire(&previous)).expect("applies");
    let e = calib::calibrate(&mut arm, &mut hand, Duration::ZERO).expect_err("wrist not swept").to_string();
    assert!(e.contains("wrist_flex did not move"), "{e}");
    // The servos hold that calibration again, offsets and limits.
    assert_eq!(joint_calibrations(&arm.read_calibration().expect("reads")), previous);
}

#[test]
fn a_horn_at_the_end_of_its_turn_is_refused() {
    let mut arm = SimArm::new();
    arm.connect().expect("connects");
    let mut hand = ScriptedHand::new(arm.bus.clone(), &SO101);
    hand.assembly[0] = 4095 - HALF_TURN; // centred pose reads 4095: offset 2048 does not fit ±2047
    let e = calib::calibrate(&mut arm, &mut hand, Duration::ZERO).expect_err("offset out of range").to_string();
    assert!(e.contains("shoulder_pan reads 4095") && e.contains("re-seat the horn"), "{e}");
    // Nothing changed on the servos: still the factory calibration.
    let c = joint_calibrations(&arm.read_calibration().expect("reads"));
    assert!(c.iter().all(|j| j.homing_offset == 0 && j.range_min == 0 && j.range_max == 4095), "{c:?}");
}

#[test]
fn lerobot_files_round_trip_byte_for_byte() {
    let cal = calib::parse_lerobot_json("fixture", FIXTURE, &SO101).expect("LeRobot's file reads");
    assert_eq!(cal[0].homing_offset, -1470);
    assert_eq!((cal[5].range_min, cal[5].range_max), (2030, 3497));
    assert_eq!(calib::to_lerobot_json(&SO101, &cal), FIXTURE, "written exactly as LeRobot's json.dump(indent=4)");
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("robots/so101_follower/my_arm.json");
    calib::write_lerobot(&p, &SO101, &cal).expect("writes");
    assert_eq!(calib::read_lerobot(&p, &SO101).expect("reads"), cal);
    // Written to the simulated arm's EEPROM and read back.
    let mut arm = SimArm::new();
    arm.connect().expect("connects");
    arm.write_calibration(&calib::to_wire(&cal)).expect("applies");
    assert_eq!(joint_calibrations(&arm.read_calibration().expect("reads")), cal);
}

fn without(motor: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).expect("json");
    v.as_object_mut().expect("object").remove(motor);
    v.to_string()
}

#[test]
fn a_bad_calibration_file_names_the_motor_and_field() {
    let cases: [(&str, String); 9] = [
        ("not JSON", "{".to_string()),
        ("expected an object of motors", "[1, 2]".to_string()),
        ("elbow_flex: missing", without("elbow_flex")),
        ("\"elbow\" is not a motor", FIXTURE.replacen("\"elbow_flex\"", "\"elbow\"", 1)),
        ("shoulder_pan.id: 7, but the arm's shoulder_pan is servo 1", FIXTURE.replacen("\"id\": 1,", "\"id\": 7,", 1)),
        ("shoulder_pan.homing_offset: -3000 is outside -2047..=2047", FIXTURE.replacen("-1470", "-3000", 1)),
        ("shoulder_pan.range_min: \"758\" is not an integer", FIXTURE.replacen("758", "\"758\"", 1)),
        ("shoulder_pan: range_min", FIXTURE.replacen("758", "3292", 1)),
        ("shoulder_pan.offset: unknown field", FIXTURE.replacen("\"drive_mode\": 0,", "\"drive_mode\": 0, \"offset\": 3,", 1)),
    ];
    for (want, text) in cases {
        let e = calib::parse_lerobot_json("cal.json", &text, &SO101).expect_err(want);
        assert!(matches!(e, CalibrateError::File { .. }), "{e}");
        let e = e.to_string();
        assert!(e.starts_with("cal.json: "), "{e}");
        assert!(e.contains(want), "want {want:?} in {e}");
    }
    let e = calib::read_lerobot(std::path::Path::new("/nonexistent/cal.json"), &SO101).expect_err("missing file").to_string();
    assert!(e.starts_with("/nonexistent/cal.json: "), "{e}");
}

#[test]
fn the_calibrate_command_writes_a_lerobot_file_and_applies_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // LeRobot's folder layout under HF_LEROBOT_CALIBRATION.
    let out = edge().args(["calibrate", "--sim", "--arm-id", "bench_arm"]).env("HF_LEROBOT_CALIBRATION", dir.path()).output().expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let file = dir.path().join("robots/so101_follower/bench_arm.json");
    assert!(text.contains(&file.display().to_string()), "{text}");
    let cal = calib::read_lerobot(&file, &SO101).expect("a LeRobot file");
    assert_eq!(cal[0].range_min, 2047 - 1250);
    let out = edge().args(["calibrate", "--sim", "--leader", "--arm-id", "l1"]).env("HF_LEROBOT_CALIBRATION", dir.path()).output().expect("runs");
    assert!(out.status.success());
    assert!(dir.path().join("teleoperators/so101_leader/l1.json").exists());
    let fixture = dir.path().join("fixture.json");
    std::fs::write(&fixture, FIXTURE).expect("write");
    let out = edge().args(["calibrate", "--sim", "--arm-id", "x", "--apply"]).arg(&fixture).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("-1470") && text.contains("EEPROM"), "{text}");
    for bad in ["../etc", "", "a b", "-x"] {
        let out = edge().args(["calibrate", "--sim", &format!("--arm-id={bad}"), "--out"]).arg(dir.path().join("z.json")).output().expect("runs");
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("arm id"), "{bad:?}");
    }
    let out = edge().args(["calibrate", "--board", "raspberry_pi_4", "--arm-id", "x"]).output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("raspberry_pi_5"), "unknown board lists the known ones");
}
