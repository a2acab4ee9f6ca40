//! `lapa-edge doctor` on the simulated bus: a silent servo is named with the baud it was asked
//! at, a bad supply voltage is reported, and a calibration file that disagrees with the servos'
//! EEPROM is caught.

use std::process::Command;

fn doctor(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lapa-edge")).arg("doctor").args(args).output().expect("runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn a_healthy_simulated_arm_passes() {
    let (ok, text) = doctor(&["--sim"]);
    assert!(ok, "{text}");
    assert!(text.contains("servo 6 (gripper)") && text.contains("sts3215 firmware 3.10, 7.4 V"), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
}

#[test]
fn a_silent_servo_is_named_with_the_baud() {
    let (ok, text) = doctor(&["--sim", "--sim-silent", "4"]);
    assert!(!ok, "{text}");
    let line = text.lines().find(|l| l.contains("servo 4 (wrist_flex)")).expect("a line for servo 4");
    assert!(line.starts_with("FAIL") && line.contains("no status packet at 1000000 baud"), "{line}");
    assert!(text.lines().filter(|l| l.starts_with("FAIL")).count() == 1, "only servo 4 fails:\n{text}");
    assert!(text.contains("1 check(s) failed"), "{text}");
}

#[test]
fn a_bad_supply_voltage_is_reported() {
    let (ok, text) = doctor(&["--sim", "--sim-volts", "3.5"]);
    assert!(!ok, "{text}");
    assert!(text.contains("supply 3.5 V is outside its limits 4.0–14.0 V"), "{text}");
}

#[test]
fn a_calibration_file_that_disagrees_with_the_servos_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("arm.json");
    std::fs::write(&file, include_str!("data/lerobot_so101_follower.json")).expect("write");
    let (ok, text) = doctor(&["--sim", "--calibration", file.to_str().expect("utf-8")]);
    assert!(!ok, "{text}");
    assert!(text.contains("differs from the servos' EEPROM for shoulder_pan"), "{text}");
    assert!(text.contains("calibrate --apply"), "{text}");
    let (ok, text) = doctor(&["--sim", "--arm-id", "nobody"]);
    assert!(!ok);
    assert!(text.contains("nobody.json does not exist"), "{text}");
    let (ok, text) = doctor(&["--sim", "--sim-silent", "9"]);
    assert!(!ok && text.contains("--sim-silent 9"), "{text}");
}

#[test]
fn doctor_verifies_a_bundle() {
    use lapa_model::bundle::{Manifest, write};
    use lapa_model::policy::{ActionSpec, CameraSpec};
    let dir = tempfile::tempdir().expect("tempdir");
    let m = Manifest {
        format: 1,
        name: "test".into(),
        created_by: "test".into(),
        model: serde_json::json!({ "preset": "tiny" }),
        action: ActionSpec { names: vec!["a".into()], units: vec!["deg".into()], fps: 10.0, chunk: 2 },
        camera: CameraSpec { width: 64, height: 64, crop: None },
        text_encoder: None,
        weights: vec!["model.bpk".into()],
        parts: Default::default(),
        requires: Vec::new(),
    };
    let key = lapa_model::signing::SecretKey::from_seed([9; 32], "doctor test");
    let public = key.write_pair(&dir.path().join("k")).expect("keys");
    let public = public.to_str().expect("utf-8");
    let b = write(&dir.path().join("b"), m.clone(), &[("model.bpk", b"abc")], Some(&key)).expect("bundle");
    let root = b.root.to_str().expect("utf-8");
    let (ok, text) = doctor(&["--sim", "--bundle", root, "--public-key", public]);
    assert!(ok && text.contains("1 parts verified") && text.contains(&format!("signed by key {}", key.public().id())), "{text}");
    let (ok, text) = doctor(&["--sim", "--bundle", root]);
    assert!(!ok && text.contains("does not trust"), "{text}");
    std::fs::write(b.root.join("model.bpk"), b"abd").expect("write");
    let (ok, text) = doctor(&["--sim", "--bundle", root, "--public-key", public]);
    assert!(!ok && text.contains("SHA-256"), "{text}");
    // An unsigned bundle: a failure, or a warning under --allow-unsigned.
    let u = write(&dir.path().join("u"), m, &[("model.bpk", b"abc")], None).expect("bundle");
    let (ok, text) = doctor(&["--sim", "--bundle", u.root.to_str().expect("utf-8"), "--public-key", public]);
    assert!(!ok && text.contains("unsigned bundle"), "{text}");
    let (_, text) = doctor(&["--sim", "--bundle", u.root.to_str().expect("utf-8"), "--allow-unsigned"]);
    assert!(text.contains("signature NOT checked"), "{text}");
}
