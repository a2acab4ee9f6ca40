//! The schema of an arm profile (`profiles/arms/*.toml`), shared by the build script (which turns
//! every arm profile into a `const` [`crate::ArmDescription`], so the firmware and the host read
//! the same facts without parsing anything at run time) and by [`crate::profile`] (which parses
//! the same files at run time to check them and to show them). One schema, one validation.

use serde::Deserialize;

/// An arm profile as written in TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmFile {
    /// Identifier, LeRobot's robot or teleoperator type (`so101_follower`, `so101_leader`).
    pub name: String,
    /// Servo model of every joint (`sts3215`).
    pub servo: String,
    /// Joints in motor order.
    pub joints: Vec<JointFile>,
    pub geometry: GeometryFile,
    pub gripper: GripperFile,
}

/// One joint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointFile {
    /// LeRobot's motor name.
    pub name: String,
    /// Servo id on the bus, 1..=253.
    pub id: u8,
    /// `degrees` (zero at mid-range) or `percent` (0..100 over the calibrated range).
    pub unit: String,
    /// Nominal limits in joint units.
    pub min: f32,
    pub max: f32,
}

/// Link lengths (metres) and offsets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeometryFile {
    pub shoulder_height: f32,
    pub shoulder_forward: f32,
    pub upper_arm: f32,
    pub forearm: f32,
    pub hand: f32,
    pub elbow_zero_bend_deg: f32,
    pub base_top: f32,
}

/// The gripper's limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GripperFile {
    /// Servo load (0..1000 = 0..100% of stall) above which the gripper may open but not close.
    pub load_cap: u16,
}

/// Servo models the crate describes (see `servo.rs`).
pub const SERVO_MODELS: [&str; 1] = ["sts3215"];
/// Joint units.
pub const UNITS: [&str; 2] = ["degrees", "percent"];
/// Joints of every arm the crate describes (`so101::JOINTS`).
pub const ARM_JOINTS: usize = 6;

impl ArmFile {
    /// Checks every field; the error names the field (`joints[2].min`).
    pub fn validate(&self) -> Result<(), String> {
        // The build script makes a Rust constant of it: a letter first.
        if !self.name.starts_with(|c: char| c.is_ascii_lowercase()) || !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(format!("name: {:?} must be lower-case letters, digits and '_', starting with a letter", self.name));
        }
        if !SERVO_MODELS.contains(&self.servo.as_str()) {
            return Err(format!("servo: {:?} is not a known servo model (known: {})", self.servo, SERVO_MODELS.join(", ")));
        }
        if self.joints.len() != ARM_JOINTS {
            return Err(format!("joints: {} given, the arm has {ARM_JOINTS}", self.joints.len()));
        }
        for (k, j) in self.joints.iter().enumerate() {
            if j.name.is_empty() || !j.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(format!("joints[{k}].name: {:?} must be lower-case letters, digits and '_'", j.name));
            }
            if !(1..=253).contains(&j.id) {
                return Err(format!("joints[{k}].id: {} is outside 1..=253 (254 is broadcast)", j.id));
            }
            if !UNITS.contains(&j.unit.as_str()) {
                return Err(format!("joints[{k}].unit: {:?} is not one of {}", j.unit, UNITS.join(", ")));
            }
            if !(j.min.is_finite() && j.max.is_finite() && j.min < j.max) {
                return Err(format!("joints[{k}].min/max: {}..{} is not a finite, non-empty range", j.min, j.max));
            }
            let bound = if j.unit == "percent" { 0.0..=100.0 } else { -180.0..=180.0 };
            if !bound.contains(&j.min) || !bound.contains(&j.max) {
                return Err(format!("joints[{k}].min/max: {}..{} leaves {:?} for a {} joint", j.min, j.max, bound, j.unit));
            }
            if let Some(other) = self.joints.iter().take(k).position(|o| o.id == j.id) {
                return Err(format!("joints[{k}].id: {} is already joints[{other}]'s", j.id));
            }
            if let Some(other) = self.joints.iter().take(k).position(|o| o.name == j.name) {
                return Err(format!("joints[{k}].name: {:?} is already joints[{other}]'s", j.name));
            }
        }
        let g = &self.geometry;
        for (field, v) in [
            ("shoulder_height", g.shoulder_height),
            ("shoulder_forward", g.shoulder_forward),
            ("upper_arm", g.upper_arm),
            ("forearm", g.forearm),
            ("hand", g.hand),
            ("base_top", g.base_top),
        ] {
            if !(v.is_finite() && (0.0..=2.0).contains(&v)) {
                return Err(format!("geometry.{field}: {v} m is not a length in 0..=2 m"));
            }
        }
        if !(g.elbow_zero_bend_deg.is_finite() && (0.0..=180.0).contains(&g.elbow_zero_bend_deg)) {
            return Err(format!("geometry.elbow_zero_bend_deg: {} is not in 0..=180", g.elbow_zero_bend_deg));
        }
        if self.gripper.load_cap == 0 || self.gripper.load_cap > 1000 {
            return Err(format!("gripper.load_cap: {} is not in 1..=1000 (tenths of a percent of stall load)", self.gripper.load_cap));
        }
        Ok(())
    }
}
