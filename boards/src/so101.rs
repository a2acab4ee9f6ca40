//! The SO-101 follower arm: six STS3215 servos, in LeRobot's motor order and conventions.
//!
//! Joint values are in **degrees** for the five arm joints and **0..100** for the gripper
//! (0 = closed, 100 = fully open), as LeRobot's SO-101 reports them with `use_degrees`.
//!
//! | index | joint | id | convention | limits |
//! |---|---|---|---|---|
//! | 0 | `shoulder_pan` | 1 | azimuth of the arm plane from +y (forward), positive toward +x | ±110° |
//! | 1 | `shoulder_lift` | 2 | upper arm from vertical, positive leaning forward | ±100° |
//! | 2 | `elbow_flex` | 3 | forearm bend relative to a right angle with the upper arm, positive bending down | ±97° |
//! | 3 | `wrist_flex` | 4 | hand relative to forearm, positive bending down | ±95° |
//! | 4 | `wrist_roll` | 5 | rotation of the jaws about the hand axis | −157°..163° |
//! | 5 | `gripper` | 6 | jaw opening | 0..100 |
//!
//! **Homing convention** (LeRobot's calibration): with torque off the arm is centred by hand and
//! `homing_offset = raw − 2047` is written, so the centred pose reads mid-range; each joint is
//! then swept and the extremes become `range_min` / `range_max` (Min/Max_Position_Limit, in
//! counts after the offset). Degrees are `(count − mid) · 360 / 4095` with `mid` the middle of
//! the calibrated range, so 0° is the middle of each joint's range (LeRobot ignores `drive_mode`
//! here, and so do we); the gripper is `(count − min) / (max − min) · 100`, inverted when
//! `drive_mode` is 1. A calibration with
//! `range_min == range_max` is refused, as LeRobot's `motors_bus.py` refuses it.

use crate::servo::ServoModel;

/// Joints of the SO-101.
pub const JOINTS: usize = 6;

/// Six joint values: five angles in degrees and the gripper opening in 0..100.
pub type Joints = [f32; JOINTS];

/// The unit a joint is reported and commanded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Degrees, zero at the middle of the calibrated range (LeRobot `MotorNormMode.DEGREES`).
    Degrees,
    /// 0..100 over the calibrated range (LeRobot `MotorNormMode.RANGE_0_100`).
    Percent,
}

impl Unit {
    pub const fn symbol(&self) -> &'static str {
        match self {
            Unit::Degrees => "deg",
            Unit::Percent => "%",
        }
    }
}

/// One joint of an arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JointSpec {
    /// LeRobot's motor name (dataset features are `<name>.pos`).
    pub name: &'static str,
    /// Servo id on the bus.
    pub id: u8,
    pub unit: Unit,
    /// Nominal limits in joint units (what the simulator allows and the policy is trained on).
    pub min: f32,
    pub max: f32,
}

/// Link lengths and offsets of the arm, metres (LeRobot's `so101_new_calib` URDF, rounded to the
/// millimetre).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Height of the shoulder-lift axis above the table.
    pub shoulder_height: f32,
    /// Shoulder-lift axis in front of the pan axis.
    pub shoulder_forward: f32,
    pub upper_arm: f32,
    pub forearm: f32,
    /// Wrist-flex axis to the fingertip (wrist-roll link 61 mm plus the fixed jaw).
    pub hand: f32,
    /// Geometric elbow bend at `elbow_flex = 0`: zero is the middle of the servo's range, where
    /// the forearm stands at a right angle to the upper arm.
    pub elbow_zero_bend_deg: f32,
    /// Height of the top of the base column.
    pub base_top: f32,
}

/// An arm: its servos, joints and geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmDescription {
    pub name: &'static str,
    pub servo: ServoModel,
    pub joints: [JointSpec; JOINTS],
    pub geometry: Geometry,
    /// Gripper servo load (0..1000 = 0..100% of stall) above which it may open but not close.
    pub gripper_load_cap: u16,
}

include!(concat!(env!("OUT_DIR"), "/arms.rs"));

/// The SO-101 follower arm (`profiles/arms/so101_follower.toml`).
pub const SO101: ArmDescription = SO101_FOLLOWER;

/// The compiled-in arm profile of that name.
pub fn arm_by_name(name: &str) -> Option<&'static ArmDescription> {
    ARMS.iter().copied().find(|a| a.name == name)
}

impl ArmDescription {
    /// Joint names in motor order.
    pub fn names(&self) -> [&'static str; JOINTS] {
        self.joints.map(|j| j.name)
    }

    /// Servo ids in motor order.
    pub fn ids(&self) -> [u8; JOINTS] {
        self.joints.map(|j| j.id)
    }

    /// Lower joint limits in joint units.
    pub fn min(&self) -> Joints {
        self.joints.map(|j| j.min)
    }

    /// Upper joint limits in joint units.
    pub fn max(&self) -> Joints {
        self.joints.map(|j| j.max)
    }

    /// Clamps every joint to its nominal limits (a NaN becomes the lower limit).
    pub fn clamp(&self, q: &Joints) -> Joints {
        let mut out = *q;
        for (v, j) in out.iter_mut().zip(&self.joints) {
            *v = if v.is_nan() { j.min } else { v.max(j.min).min(j.max) };
        }
        out
    }

    /// True when every joint is within its nominal limits (with `tol` for rounding).
    pub fn within_limits(&self, q: &Joints, tol: f32) -> bool {
        q.iter().zip(&self.joints).all(|(v, j)| *v >= j.min - tol && *v <= j.max + tol)
    }

    /// The joint a servo id belongs to.
    pub fn joint_of_id(&self, id: u8) -> Option<usize> {
        self.joints.iter().position(|j| j.id == id)
    }
}

/// One joint's calibration, as in LeRobot's calibration file (`{id, drive_mode, homing_offset,
/// range_min, range_max}`) and the servo's EEPROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JointCalibration {
    pub homing_offset: i16,
    pub range_min: u16,
    pub range_max: u16,
    pub drive_mode: u8,
}

/// Why a calibration does not fit the servo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CalibrationError {
    #[error("homing offset {0} does not fit the servo's sign-magnitude register (±{1})")]
    HomingOffset(i16, i16),
    #[error("range_min {0} is above the servo's largest count {1}")]
    RangeMin(u16, u16),
    #[error("range_max {0} is above the servo's largest count {1}")]
    RangeMax(u16, u16),
    #[error("range_min {0} is not below range_max {1} (an empty or inverted range: calibrate the joint again)")]
    Range(u16, u16),
    #[error("drive_mode {0} is neither 0 nor 1")]
    DriveMode(u8),
}

impl JointCalibration {
    /// Checks every field against what `servo` can hold; the first failing field is reported.
    pub fn validate(&self, servo: &ServoModel) -> Result<(), CalibrationError> {
        let max_off = servo.max_homing_offset();
        if self.homing_offset < max_off.saturating_neg() || self.homing_offset > max_off {
            return Err(CalibrationError::HomingOffset(self.homing_offset, max_off));
        }
        if self.range_min > servo.max_count() {
            return Err(CalibrationError::RangeMin(self.range_min, servo.max_count()));
        }
        if self.range_max > servo.max_count() {
            return Err(CalibrationError::RangeMax(self.range_max, servo.max_count()));
        }
        if self.range_min >= self.range_max {
            return Err(CalibrationError::Range(self.range_min, self.range_max));
        }
        if self.drive_mode > 1 {
            return Err(CalibrationError::DriveMode(self.drive_mode));
        }
        Ok(())
    }
}

/// Why a value could not be converted.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ConversionError {
    #[error("joint {joint} ({name}): invalid calibration: {err}")]
    Calibration { joint: usize, name: &'static str, err: CalibrationError },
    #[error("joint {joint} ({name}): value {value} is not a finite number")]
    NonFinite { joint: usize, name: &'static str, value: f32 },
}

fn round_to_i32(x: f32) -> i32 {
    // `as` saturates and maps NaN to 0; callers pass finite values.
    if x >= 0.0 { (x + 0.5) as i32 } else { (x - 0.5) as i32 }
}

impl JointSpec {
    fn calibration_err(&self, joint: usize, err: CalibrationError) -> ConversionError {
        ConversionError::Calibration { joint, name: self.name, err }
    }

    /// Servo count (after homing offset) → joint units, as LeRobot's `_normalize`. The gripper's
    /// 0..100 is bounded to the calibrated range; degrees are not.
    pub fn to_units(&self, joint: usize, servo: &ServoModel, cal: &JointCalibration, count: i16) -> Result<f32, ConversionError> {
        cal.validate(servo).map_err(|e| self.calibration_err(joint, e))?;
        let (min, max) = (f32::from(cal.range_min), f32::from(cal.range_max));
        let v = f32::from(count);
        Ok(match self.unit {
            Unit::Degrees => {
                let mid = (min + max) / 2.0;
                // LeRobot's DEGREES mode ignores drive_mode (only the 0..100 / ±100 modes use it).
                (v - mid) * 360.0 / f32::from(servo.max_count())
            }
            Unit::Percent => {
                let norm = (v.max(min).min(max) - min) / (max - min) * 100.0;
                if cal.drive_mode == 1 { 100.0 - norm } else { norm }
            }
        })
    }

    /// Joint units → servo count (after homing offset), as LeRobot's `_unnormalize` but rounded
    /// to the nearest count, and clamped to the calibrated range (the servo refuses anything
    /// outside it anyway).
    pub fn to_count(&self, joint: usize, servo: &ServoModel, cal: &JointCalibration, value: f32) -> Result<i16, ConversionError> {
        cal.validate(servo).map_err(|e| self.calibration_err(joint, e))?;
        if !value.is_finite() {
            return Err(ConversionError::NonFinite { joint, name: self.name, value });
        }
        let (min, max) = (f32::from(cal.range_min), f32::from(cal.range_max));
        let count = match self.unit {
            Unit::Degrees => value * f32::from(servo.max_count()) / 360.0 + (min + max) / 2.0,
            Unit::Percent => {
                let v = if cal.drive_mode == 1 { 100.0 - value } else { value };
                v.clamp(0.0, 100.0) / 100.0 * (max - min) + min
            }
        };
        let c = round_to_i32(count).clamp(i32::from(cal.range_min), i32::from(cal.range_max));
        // The range is validated to lie within 0..=max_count, which fits i16.
        Ok(i16::try_from(c).unwrap_or(i16::MAX))
    }
}

impl ArmDescription {
    /// Counts of every joint → joint units.
    pub fn to_units(&self, cal: &[JointCalibration; JOINTS], counts: &[i16; JOINTS]) -> Result<Joints, ConversionError> {
        let mut out = [0.0; JOINTS];
        for (j, ((o, spec), (c, n))) in out.iter_mut().zip(&self.joints).zip(cal.iter().zip(counts)).enumerate() {
            *o = spec.to_units(j, &self.servo, c, *n)?;
        }
        Ok(out)
    }

    /// Joint units of every joint → counts.
    pub fn to_counts(&self, cal: &[JointCalibration; JOINTS], q: &Joints) -> Result<[i16; JOINTS], ConversionError> {
        let mut out = [0i16; JOINTS];
        for (j, ((o, spec), (c, v))) in out.iter_mut().zip(&self.joints).zip(cal.iter().zip(q)).enumerate() {
            *o = spec.to_count(j, &self.servo, c, *v)?;
        }
        Ok(out)
    }

    /// The calibration of a servo fresh from the factory: no offset, the full count range.
    pub fn factory_calibration(&self) -> [JointCalibration; JOINTS] {
        [JointCalibration { homing_offset: 0, range_min: 0, range_max: self.servo.max_count(), drive_mode: 0 }; JOINTS]
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::STS3215;

    fn cal(min: u16, max: u16) -> JointCalibration {
        JointCalibration { homing_offset: 0, range_min: min, range_max: max, drive_mode: 0 }
    }

    #[test]
    fn description_matches_lerobot_order_and_ids() {
        assert_eq!(SO101.names(), ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]);
        assert_eq!(SO101.ids(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(SO101.joint_of_id(4), Some(3));
        assert_eq!(SO101.joint_of_id(9), None);
        for j in &SO101.joints {
            assert!(j.min < j.max, "{}", j.name);
        }
    }

    #[test]
    fn degrees_follow_lerobot_normalisation() {
        let spec = SO101.joints[0];
        let c = cal(1000, 3000);
        // mid 2000; (val − mid) · 360 / 4095.
        assert_eq!(spec.to_units(0, &STS3215, &c, 2000), Ok(0.0));
        let d = spec.to_units(0, &STS3215, &c, 3000).expect("valid");
        assert!((d - 1000.0 * 360.0 / 4095.0).abs() < 1e-4, "{d}");
        // Round trip to the nearest count.
        for count in [1000i16, 1234, 2000, 2999, 3000] {
            let v = spec.to_units(0, &STS3215, &c, count).expect("valid");
            assert_eq!(spec.to_count(0, &STS3215, &c, v), Ok(count));
        }
        // Outside the calibrated range: clamped to it on the way to the servo.
        assert_eq!(spec.to_count(0, &STS3215, &c, 170.0), Ok(3000));
        // As in LeRobot, drive_mode does not invert degrees (only the 0..100 gripper).
        let inverted = JointCalibration { drive_mode: 1, ..c };
        assert_eq!(spec.to_count(0, &STS3215, &inverted, 10.0), spec.to_count(0, &STS3215, &c, 10.0));
    }

    #[test]
    fn gripper_is_bounded_percent() {
        let spec = SO101.joints[5];
        let c = cal(2000, 3000);
        assert_eq!(spec.to_units(5, &STS3215, &c, 2500), Ok(50.0));
        assert_eq!(spec.to_units(5, &STS3215, &c, 100), Ok(0.0));
        assert_eq!(spec.to_units(5, &STS3215, &c, 4000), Ok(100.0));
        assert_eq!(spec.to_count(5, &STS3215, &c, 25.0), Ok(2250));
        assert_eq!(spec.to_count(5, &STS3215, &c, 250.0), Ok(3000));
        let inverted = JointCalibration { drive_mode: 1, ..c };
        assert_eq!(spec.to_units(5, &STS3215, &inverted, 2250), Ok(75.0));
    }

    #[test]
    fn bad_calibrations_and_values_are_refused_not_converted() {
        let spec = SO101.joints[1];
        let equal = cal(2048, 2048);
        assert_eq!(
            spec.to_units(1, &STS3215, &equal, 2048),
            Err(ConversionError::Calibration { joint: 1, name: "shoulder_lift", err: CalibrationError::Range(2048, 2048) })
        );
        assert!(matches!(
            spec.to_count(1, &STS3215, &cal(3000, 1000), 0.0),
            Err(ConversionError::Calibration { err: CalibrationError::Range(3000, 1000), .. })
        ));
        assert!(matches!(
            spec.to_count(1, &STS3215, &cal(0, 5000), 0.0),
            Err(ConversionError::Calibration { err: CalibrationError::RangeMax(5000, 4095), .. })
        ));
        assert!(matches!(spec.to_count(1, &STS3215, &cal(0, 4095), f32::NAN), Err(ConversionError::NonFinite { joint: 1, .. })));
        assert!(matches!(spec.to_count(1, &STS3215, &cal(0, 4095), f32::INFINITY), Err(ConversionError::NonFinite { .. })));
        let off = JointCalibration { homing_offset: -2048, ..cal(0, 4095) };
        assert_eq!(off.validate(&STS3215), Err(CalibrationError::HomingOffset(-2048, 2047)));
        let dm = JointCalibration { drive_mode: 2, ..cal(0, 4095) };
        assert_eq!(dm.validate(&STS3215), Err(CalibrationError::DriveMode(2)));
        assert_eq!(JointCalibration { homing_offset: 2047, ..cal(0, 4095) }.validate(&STS3215), Ok(()));
    }

    #[test]
    fn arm_level_conversion_names_the_joint() {
        let mut c = SO101.factory_calibration();
        c[4].range_max = 0;
        let err = SO101.to_counts(&c, &[0.0; JOINTS]).expect_err("joint 4 is empty");
        assert!(err.to_string().contains("wrist_roll"), "{err}");
        let ok = SO101.to_counts(&SO101.factory_calibration(), &[0.0, 0.0, 0.0, 0.0, 0.0, 100.0]).expect("factory calibration is valid");
        assert_eq!(ok, [2048, 2048, 2048, 2048, 2048, 4095]);
    }

    #[test]
    fn clamp_handles_nan() {
        let q = SO101.clamp(&[f32::NAN, 500.0, -500.0, 0.0, 0.0, 50.0]);
        assert_eq!(q, [-110.0, 100.0, -97.0, 0.0, 0.0, 50.0]);
        assert!(SO101.within_limits(&q, 1e-3));
    }
}
