//! Forward kinematics of the SO-101 (the simulator renders with it, the LAQ report measures the
//! fingertip's motion with it).
//!
//! World frame: metres, origin on the table under the pan axis, +x to the right (seen from the
//! camera above), +y away from the robot, +z up. Joint conventions: [`crate::so101`].

use crate::so101::{ArmDescription, Joints};

/// World positions of the arm's key points.
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

impl ArmDescription {
    /// Forward kinematics: joint values (degrees, gripper 0..100) → key points.
    pub fn forward(&self, q: &Joints) -> ArmPose {
        let g = &self.geometry;
        let [pan, lift, elbow, wrist, roll, gripper] = *q;
        let pan = pan.to_radians();
        let (sp, cp) = pan.sin_cos();
        // Points in the arm plane as (rho, z): rho is horizontal distance along the arm azimuth.
        let a1 = lift.to_radians();
        let a2 = a1 + (elbow + g.elbow_zero_bend_deg).to_radians();
        let a3 = a2 + wrist.to_radians();
        let shoulder = (g.shoulder_forward, g.shoulder_height);
        let elbow_p = (shoulder.0 + g.upper_arm * a1.sin(), shoulder.1 + g.upper_arm * a1.cos());
        let wrist_p = (elbow_p.0 + g.forearm * a2.sin(), elbow_p.1 + g.forearm * a2.cos());
        let tip = (wrist_p.0 + g.hand * a3.sin(), wrist_p.1 + g.hand * a3.cos());
        let to_world = |(rho, z): (f32, f32)| [rho * sp, rho * cp, z];
        ArmPose {
            base_top: [0.0, 0.0, g.base_top],
            shoulder: to_world(shoulder),
            elbow: to_world(elbow_p),
            wrist: to_world(wrist_p),
            tip: to_world(tip),
            pitch_deg: a3.to_degrees(),
            jaw_yaw: pan + roll.to_radians(),
            gripper,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::SO101;

    #[test]
    fn zero_pose_is_the_l_shape() {
        // Upper arm vertical, forearm horizontal forward, hand in line with the forearm.
        let g = SO101.geometry;
        let p = SO101.forward(&[0.0; 6]);
        assert!((p.elbow[2] - (g.shoulder_height + g.upper_arm)).abs() < 1e-5);
        assert!((p.tip[2] - p.elbow[2]).abs() < 1e-5);
        assert!((p.tip[1] - (g.shoulder_forward + g.forearm + g.hand)).abs() < 1e-5);
        assert!(p.tip[0].abs() < 1e-6);
    }

    #[test]
    fn pan_turns_the_arm_plane_toward_plus_x() {
        let p = SO101.forward(&[90.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(p.tip[0] > 0.2 && p.tip[1].abs() < 1e-5, "{:?}", p.tip);
    }
}
