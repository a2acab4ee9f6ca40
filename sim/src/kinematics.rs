//! Inverse kinematics of the SO-101 for the scripted expert. The arm itself — joint names, order,
//! units, limits, link lengths and forward kinematics — is described once in `lapa-boards`
//! ([`lapa_boards::SO101`]); the simulator is one of its users.
//!
//! World frame: metres, origin on the table under the pan axis, +x to the right (seen from the
//! camera above), +y away from the robot, +z up.

pub use lapa_boards::Joints;
use lapa_boards::SO101;
pub use lapa_boards::kinematics::ArmPose;

/// Forward kinematics of the simulated arm (the SO-101's, from `lapa-boards`).
pub fn forward(q: &Joints) -> ArmPose {
    SO101.forward(q)
}

/// Clamps every joint to the SO-101's limits.
pub fn clamp_joints(q: &Joints) -> Joints {
    SO101.clamp(q)
}

/// True when every joint is within its limits (with a small tolerance for rounding).
pub fn within_limits(q: &Joints) -> bool {
    SO101.within_limits(q, 1e-3)
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
    let g = &SO101.geometry;
    let (hand, upper_arm, forearm) = (g.hand, g.upper_arm, g.forearm);
    let [x, y, z] = tip;
    let rho = (x * x + y * y).sqrt();
    let pan = if rho < 1e-6 { 0.0 } else { x.atan2(y) };
    let a3 = pitch_deg.to_radians();
    // Wrist position in the arm plane, relative to the shoulder.
    let wr = rho - hand * a3.sin() - g.shoulder_forward;
    let wz = z - hand * a3.cos() - g.shoulder_height;
    let d2 = wr * wr + wz * wz;
    let c2 = (d2 - upper_arm * upper_arm - forearm * forearm) / (2.0 * upper_arm * forearm);
    if !(-1.0..=1.0).contains(&c2) {
        return Err(IkError::Unreachable { x, y, z });
    }
    let q2 = c2.acos(); // >= 0: elbow up, forearm bending down.
    let q1 = wr.atan2(wz) - (forearm * q2.sin()).atan2(upper_arm + forearm * q2.cos());
    let q3 = a3 - q1 - q2;
    let wrap = |deg: f32| (deg + 180.0).rem_euclid(360.0) - 180.0;
    let q = [pan.to_degrees(), wrap(q1.to_degrees()), q2.to_degrees() - g.elbow_zero_bend_deg, wrap(q3.to_degrees()), roll, gripper];
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
            for (v, j) in q.iter_mut().zip(&SO101.joints) {
                *v = rng.range(j.min, j.max);
            }
            let bend = q[2] + SO101.geometry.elbow_zero_bend_deg;
            if bend <= 1.0 || bend >= 179.0 {
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
}
