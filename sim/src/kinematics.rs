//! SO-101 arm kinematics: joint conventions, limits, forward kinematics and the IK used by the
//! scripted expert.
//!
//! Geometry follows the SO-101 follower (LeRobot's `so101_new_calib` URDF), rounded to the
//! millimetre: the shoulder-lift axis sits 116.6 mm above the table and 30.4 mm in front of the pan
//! axis, the upper arm is 116.0 mm, the forearm 134.9 mm, and the wrist-flex axis to the fingertip
//! is 100.0 mm (wrist-roll link 61 mm plus the fixed jaw).
//!
//! Joint values are in **degrees** (LeRobot's SO-101 with `use_degrees`) and the gripper in
//! **0..100** (0 = closed, 100 = fully open), in LeRobot's motor order:
//!
//! | index | joint | convention (this simulator) | limits |
//! |---|---|---|---|
//! | 0 | `shoulder_pan` | azimuth of the arm plane from +y (forward), positive toward +x | ±110° |
//! | 1 | `shoulder_lift` | upper arm from vertical, positive leaning forward | ±100° |
//! | 2 | `elbow_flex` | forearm bend relative to a right angle with the upper arm, positive bending down | ±97° |
//! | 3 | `wrist_flex` | hand relative to forearm, positive bending down | ±95° |
//! | 4 | `wrist_roll` | rotation of the jaws about the hand axis | −157°..163° |
//! | 5 | `gripper` | jaw opening | 0..100 |
//!
//! World frame: metres, origin on the table under the pan axis, +x to the right (seen from the
//! camera above), +y away from the robot, +z up.

/// Joint names in LeRobot's SO-101 order.
pub const JOINT_NAMES: [&str; 6] =
    ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"];

/// Lower joint limits (degrees; gripper in 0..100).
pub const JOINT_MIN: [f32; 6] = [-110.0, -100.0, -97.0, -95.0, -157.0, 0.0];
/// Upper joint limits (degrees; gripper in 0..100).
pub const JOINT_MAX: [f32; 6] = [110.0, 100.0, 97.0, 95.0, 163.0, 100.0];

/// Link lengths and offsets, metres.
pub const SHOULDER_HEIGHT: f32 = 0.1166;
pub const SHOULDER_FORWARD: f32 = 0.0304;
pub const UPPER_ARM: f32 = 0.1160;
pub const FOREARM: f32 = 0.1349;
pub const HAND: f32 = 0.1000;

/// Geometric elbow bend at `elbow_flex = 0`: like LeRobot's calibration, zero is the middle of
/// the servo's range, where the forearm stands at a right angle to the upper arm.
pub const ELBOW_ZERO_BEND_DEG: f32 = 90.0;

/// Six joint values: five angles in degrees and the gripper opening in 0..100.
pub type Joints = [f32; 6];

/// Clamps every joint to its limits.
pub fn clamp_joints(q: &Joints) -> Joints {
    let mut out = *q;
    for i in 0..6 {
        out[i] = out[i].clamp(JOINT_MIN[i], JOINT_MAX[i]);
    }
    out
}

/// True when every joint is within its limits (with a small tolerance for rounding).
pub fn within_limits(q: &Joints) -> bool {
    (0..6).all(|i| q[i] >= JOINT_MIN[i] - 1e-3 && q[i] <= JOINT_MAX[i] + 1e-3)
}

/// World positions of the arm's key points, for rendering and contact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmPose {
    /// Top of the base column on the pan axis.
    pub base_top: [f32; 3],
    pub shoulder: [f32; 3],
    pub elbow: [f32; 3],
    pub wrist: [f32; 3],
    /// Fingertip (centre between the jaws).
    pub tip: [f32; 3],
    /// Hand direction from vertical, degrees (180 = pointing straight down).
    pub pitch_deg: f32,
    /// Yaw of the jaw opening direction in the table plane, radians.
    pub jaw_yaw: f32,
    /// Gripper opening 0..100.
    pub gripper: f32,
}

/// Forward kinematics.
pub fn forward(q: &Joints) -> ArmPose {
    let pan = q[0].to_radians();
    let (sp, cp) = pan.sin_cos();
    // Points in the arm plane as (rho, z): rho is horizontal distance along the arm azimuth.
    let a1 = q[1].to_radians();
    let a2 = a1 + (q[2] + ELBOW_ZERO_BEND_DEG).to_radians();
    let a3 = a2 + q[3].to_radians();
    let shoulder = (SHOULDER_FORWARD, SHOULDER_HEIGHT);
    let elbow = (shoulder.0 + UPPER_ARM * a1.sin(), shoulder.1 + UPPER_ARM * a1.cos());
    let wrist = (elbow.0 + FOREARM * a2.sin(), elbow.1 + FOREARM * a2.cos());
    let tip = (wrist.0 + HAND * a3.sin(), wrist.1 + HAND * a3.cos());
    let to_world = |(rho, z): (f32, f32)| [rho * sp, rho * cp, z];
    ArmPose {
        base_top: [0.0, 0.0, 0.06],
        shoulder: to_world(shoulder),
        elbow: to_world(elbow),
        wrist: to_world(wrist),
        tip: to_world(tip),
        pitch_deg: a3.to_degrees(),
        jaw_yaw: pan + q[4].to_radians(),
        gripper: q[5],
    }
}

/// Why a target cannot be reached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IkError {
    #[error("target ({x:.3}, {y:.3}, {z:.3}) m is out of the arm's reach")]
    Unreachable { x: f32, y: f32, z: f32 },
    #[error("target ({x:.3}, {y:.3}, {z:.3}) m needs joints outside their limits")]
    JointLimits { x: f32, y: f32, z: f32 },
}

/// Solves the five arm angles that put the fingertip at `tip` with the hand at `pitch_deg` from
/// vertical (180 = straight down), elbow-up branch. `roll` and `gripper` are passed through.
pub fn inverse_with_pitch(tip: [f32; 3], pitch_deg: f32, roll: f32, gripper: f32) -> Result<Joints, IkError> {
    let [x, y, z] = tip;
    let rho = (x * x + y * y).sqrt();
    let pan = if rho < 1e-6 { 0.0 } else { x.atan2(y) };
    let a3 = pitch_deg.to_radians();
    // Wrist position in the arm plane, relative to the shoulder.
    let wr = rho - HAND * a3.sin() - SHOULDER_FORWARD;
    let wz = z - HAND * a3.cos() - SHOULDER_HEIGHT;
    let d2 = wr * wr + wz * wz;
    let c2 = (d2 - UPPER_ARM * UPPER_ARM - FOREARM * FOREARM) / (2.0 * UPPER_ARM * FOREARM);
    if !(-1.0..=1.0).contains(&c2) {
        return Err(IkError::Unreachable { x, y, z });
    }
    let q2 = c2.acos(); // >= 0: elbow up, forearm bending down.
    let q1 = wr.atan2(wz) - (FOREARM * q2.sin()).atan2(UPPER_ARM + FOREARM * q2.cos());
    let q3 = a3 - q1 - q2;
    let wrap = |deg: f32| (deg + 180.0).rem_euclid(360.0) - 180.0;
    let q = [pan.to_degrees(), wrap(q1.to_degrees()), q2.to_degrees() - ELBOW_ZERO_BEND_DEG, wrap(q3.to_degrees()), roll, gripper];
    if within_limits(&q) { Ok(q) } else { Err(IkError::JointLimits { x, y, z }) }
}

/// IK for the scripted expert: prefers the hand pointing straight down and tilts it toward the
/// horizontal (in 2° steps, down to 110°) only when the target is otherwise out of reach.
pub fn inverse(tip: [f32; 3], roll: f32, gripper: f32) -> Result<Joints, IkError> {
    let mut last = IkError::Unreachable { x: tip[0], y: tip[1], z: tip[2] };
    let mut pitch = 180.0f32;
    while pitch >= 110.0 {
        match inverse_with_pitch(tip, pitch, roll, gripper) {
            Ok(q) => return Ok(q),
            Err(e) => last = e,
        }
        pitch -= 2.0;
    }
    Err(last)
}

/// The arm's rest pose: fingertip above the near middle of the table, hand down, gripper closed.
pub fn rest_pose() -> Joints {
    // Solved once here; the constant target is inside the workspace by construction.
    inverse([0.0, 0.14, 0.12], 0.0, 0.0).unwrap_or([0.0, 0.0, 0.0, 90.0, 0.0, 0.0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fk_ik_round_trip_in_joint_space() {
        // Random joint configurations on the IK's branch (elbow bending down) → FK → IK with the
        // same hand pitch → the same joints.
        let mut rng = Rng::new(11);
        let mut checked = 0;
        for _ in 0..5000 {
            let mut q = [0.0f32; 6];
            for i in 0..6 {
                q[i] = rng.range(JOINT_MIN[i], JOINT_MAX[i]);
            }
            if q[2] + ELBOW_ZERO_BEND_DEG <= 1.0 || q[2] + ELBOW_ZERO_BEND_DEG >= 179.0 {
                continue;
            }
            let p = forward(&q);
            // Signed reach along the arm's azimuth: behind or on the pan axis the same tip is
            // (also) reached with the pan turned 180°, which is a different, valid solution.
            let (sp, cp) = q[0].to_radians().sin_cos();
            if p.tip[0] * sp + p.tip[1] * cp < 0.02 {
                continue;
            }
            let back = inverse_with_pitch(p.tip, p.pitch_deg, q[4], q[5]).unwrap_or_else(|e| panic!("{q:?} {p:?}: {e}"));
            for i in 0..6 {
                assert!((back[i] - q[i]).abs() < 0.05, "joint {i}: {q:?} -> {back:?}");
            }
            checked += 1;
        }
        assert!(checked > 1000, "only {checked} configurations checked");
    }

    #[test]
    fn ik_fk_round_trip_in_task_space() {
        // Every point of the task workspace (block heights to hover heights) is solved, and FK of
        // the solution lands on the target.
        let mut rng = Rng::new(12);
        for _ in 0..5000 {
            let t = [rng.range(-0.13, 0.13), rng.range(0.10, 0.30), rng.range(0.01, 0.12)];
            let q = inverse(t, 0.0, 50.0).unwrap_or_else(|e| panic!("{e}"));
            assert!(within_limits(&q));
            let p = forward(&q);
            for k in 0..3 {
                assert!((p.tip[k] - t[k]).abs() < 1e-4, "{t:?} -> {:?}", p.tip);
            }
        }
    }

    #[test]
    fn unreachable_targets_are_errors() {
        assert!(matches!(inverse([0.0, 0.6, 0.0], 0.0, 0.0), Err(IkError::Unreachable { .. })));
        assert!(inverse([0.0, 0.2, 0.5], 0.0, 0.0).is_err());
    }

    #[test]
    fn rest_pose_is_solved_and_points_down() {
        let q = rest_pose();
        let p = forward(&q);
        assert!((p.tip[0]).abs() < 1e-4 && (p.tip[1] - 0.14).abs() < 1e-4 && (p.tip[2] - 0.12).abs() < 1e-4);
        assert!((p.pitch_deg - 180.0).abs() < 1e-3);
    }

    #[test]
    fn zero_pose_is_the_l_shape() {
        // Upper arm vertical, forearm horizontal forward, hand in line with the forearm.
        let p = forward(&[0.0; 6]);
        assert!((p.elbow[2] - (SHOULDER_HEIGHT + UPPER_ARM)).abs() < 1e-5);
        assert!((p.tip[2] - p.elbow[2]).abs() < 1e-5);
        assert!((p.tip[1] - (SHOULDER_FORWARD + FOREARM + HAND)).abs() < 1e-5);
    }
}
