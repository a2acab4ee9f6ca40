//! The safety filter: every command passes through it on its way to the arm, whatever produced it.
//!
//! It knows the arm (description and calibration) and nothing of the model. In order:
//! 1. no action (the queue ran dry, paused, e-stop in hold mode) → hold the last command;
//! 2. a non-finite value anywhere → hold the last command, the whole action is refused;
//! 3. joint limits: each joint is clamped to its calibrated range, intersected with the arm
//!    description's nominal limits;
//! 4. max step per tick: each joint moves at most `max_speed / rate` from the last command;
//! 5. workspace box: if the fingertip (forward kinematics of the arm description) would leave the
//!    box, or go further out of it than the last command, the arm joints hold and only the
//!    gripper moves;
//! 6. gripper load cap: while the gripper servo's load is above the cap, it may open but not
//!    close further.
//!
//! What it changed is returned as flags and a per-joint mask, which the cycle log keeps.

use lapa_boards::so101::JOINTS;
use lapa_boards::{ArmDescription, JointCalibration, Joints, SO101, Unit};

/// Flags of what the filter changed in one cycle.
pub mod flag {
    /// No action was available: the last command was held.
    pub const HOLD: u16 = 1 << 0;
    /// The action had a NaN or infinite value and was refused.
    pub const NON_FINITE: u16 = 1 << 1;
    /// At least one joint was clamped to its limits.
    pub const JOINT_LIMIT: u16 = 1 << 2;
    /// At least one joint was slowed to the max step per tick.
    pub const MAX_STEP: u16 = 1 << 3;
    /// The fingertip would have left the workspace box: the arm joints held.
    pub const WORKSPACE: u16 = 1 << 4;
    /// The gripper's load was above the cap: it did not close further.
    pub const GRIPPER_LOAD: u16 = 1 << 5;
    /// The e-stop was engaged.
    pub const ESTOP: u16 = 1 << 6;
    /// The run was paused from the control socket.
    pub const PAUSED: u16 = 1 << 7;

    /// Every flag with its name, in bit order.
    const ALL: [(u16, &str); 8] = [
        (HOLD, "hold"),
        (NON_FINITE, "non-finite"),
        (JOINT_LIMIT, "joint-limit"),
        (MAX_STEP, "max-step"),
        (WORKSPACE, "workspace"),
        (GRIPPER_LOAD, "gripper-load"),
        (ESTOP, "e-stop"),
        (PAUSED, "paused"),
    ];

    /// Names of the set flags, for logs and the replay.
    pub fn names(flags: u16) -> Vec<&'static str> {
        ALL.iter().filter(|(f, _)| flags & f != 0).map(|(_, n)| *n).collect()
    }

    /// How many cycles raised each flag (the run's summary and the replay count the same way).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Tally([u64; 16]);

    impl Tally {
        pub fn add(&mut self, flags: u16) {
            for (b, c) in self.0.iter_mut().enumerate() {
                if flags & (1 << b) != 0 {
                    *c += 1;
                }
            }
        }

        /// The raised flags with their counts, in bit order.
        pub fn counts(&self) -> Vec<(&'static str, u64)> {
            ALL.iter().map(|(f, n)| (*n, self.0[f.trailing_zeros() as usize])).filter(|(_, c)| *c > 0).collect()
        }

        /// `"hold 3, max-step 12"`, or `"nothing changed"`.
        pub fn line(&self) -> String {
            let v: Vec<String> = self.counts().iter().map(|(n, c)| format!("{n} {c}")).collect();
            if v.is_empty() { "nothing changed".into() } else { v.join(", ") }
        }
    }
}

/// Settings of the filter (the board profile's `[safety]`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Largest speed of each arm joint's command, degrees per second.
    pub max_joint_speed: f32,
    /// Largest speed of the gripper's command, 0..100 units per second.
    pub max_gripper_speed: f32,
    /// Fingertip workspace box, metres, in the arm's world frame (origin on the table under the
    /// pan axis, +y forward, +z up).
    pub workspace_min: [f32; 3],
    pub workspace_max: [f32; 3],
    /// Gripper load above which it may not close further (servo load units: 0..1000 is 0..100%
    /// of stall torque on Feetech STS); `None` disables the cap.
    pub gripper_load_cap: Option<u16>,
}

impl Default for SafetyConfig {
    /// For an SO-101 on a table: joints at most 180°/s and the gripper across its range in a
    /// quarter second (what the STS3215 does unloaded, and what the simulator's servos do), the
    /// fingertip 5 mm above the table and within 40 cm of the base, half the stall load.
    fn default() -> Self {
        Self {
            max_joint_speed: 180.0,
            max_gripper_speed: 400.0,
            workspace_min: [-0.40, -0.10, 0.005],
            workspace_max: [0.40, 0.40, 0.45],
            gripper_load_cap: Some(SO101.gripper_load_cap),
        }
    }
}

impl SafetyConfig {
    /// Checks every field; the first bad one is named.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_joint_speed.is_finite() && self.max_joint_speed > 0.0) {
            return Err(format!("max_joint_speed: {} is not a positive number", self.max_joint_speed));
        }
        if !(self.max_gripper_speed.is_finite() && self.max_gripper_speed > 0.0) {
            return Err(format!("max_gripper_speed: {} is not a positive number", self.max_gripper_speed));
        }
        for (axis, (lo, hi)) in ["x", "y", "z"].iter().zip(self.workspace_min.iter().zip(&self.workspace_max)) {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(format!("workspace_min/max: {axis} range {lo}..{hi} is empty or not finite"));
            }
        }
        Ok(())
    }
}

/// Joint limits in joint units: the calibrated range of each servo, intersected with the arm
/// description's nominal limits.
pub fn joint_limits(desc: &ArmDescription, cal: &[JointCalibration; JOINTS]) -> Result<(Joints, Joints), lapa_boards::ConversionError> {
    let mut lo = desc.min();
    let mut hi = desc.max();
    for (j, ((spec, c), (l, h))) in desc.joints.iter().zip(cal).zip(lo.iter_mut().zip(hi.iter_mut())).enumerate() {
        let a = spec.to_units(j, &desc.servo, c, i16::try_from(c.range_min).unwrap_or(i16::MAX))?;
        let b = spec.to_units(j, &desc.servo, c, i16::try_from(c.range_max).unwrap_or(i16::MAX))?;
        let (a, b) = if spec.unit == Unit::Percent { (a.min(b), a.max(b)) } else { (a, b) };
        *l = l.max(a);
        *h = h.min(b);
        if *l > *h {
            // The calibrated range misses the nominal one entirely: allow no motion on that joint
            // beyond the nearest calibrated end.
            *h = *l;
        }
    }
    Ok((lo, hi))
}

/// What the filter did in one cycle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filtered {
    pub command: Joints,
    pub flags: u16,
    /// Joints that were clamped or slowed (bit `j` for joint `j`).
    pub joints: u8,
}

/// The filter and its memory of the last command.
#[derive(Debug, Clone)]
pub struct SafetyFilter {
    cfg: SafetyConfig,
    desc: &'static ArmDescription,
    lo: Joints,
    hi: Joints,
    /// Control period, seconds.
    dt: f32,
    last: Option<Joints>,
}

/// Distance of a point outside the box to the box (0 inside).
fn outside(p: [f32; 3], lo: [f32; 3], hi: [f32; 3]) -> f32 {
    let mut d2 = 0.0;
    for ((v, l), h) in p.iter().zip(lo).zip(hi) {
        let d = if *v < l {
            l - v
        } else if *v > h {
            v - h
        } else {
            0.0
        };
        d2 += d * d;
    }
    d2.sqrt()
}

impl SafetyFilter {
    /// `limits` from [`joint_limits`]; `rate_hz` the control rate.
    pub fn new(cfg: SafetyConfig, desc: &'static ArmDescription, limits: (Joints, Joints), rate_hz: f32) -> Result<Self, String> {
        cfg.validate()?;
        if !(rate_hz.is_finite() && rate_hz > 0.0) {
            return Err(format!("control rate {rate_hz} Hz is not a positive number"));
        }
        Ok(Self { cfg, desc, lo: limits.0, hi: limits.1, dt: 1.0 / rate_hz, last: None })
    }

    pub fn config(&self) -> &SafetyConfig {
        &self.cfg
    }

    /// The last command that went out (`None` before the first).
    pub fn last(&self) -> Option<Joints> {
        self.last
    }

    /// Forgets the last command: the next cycle starts from the measured position (after an
    /// e-stop with torque off, when the arm was moved by hand).
    pub fn rebase(&mut self) {
        self.last = None;
    }

    /// Filters one proposed command. `measured` is the arm's position this cycle, `gripper_load`
    /// the gripper servo's load (magnitude); `extra` flags (e-stop, paused) are recorded as given.
    pub fn filter(&mut self, proposal: Option<&Joints>, measured: &Joints, gripper_load: Option<u16>, extra: u16) -> Filtered {
        let base = self.last.unwrap_or_else(|| {
            // First command: start from where the arm is, inside its limits.
            std::array::from_fn(|j| measured[j].clamp(self.lo[j], self.hi[j]))
        });
        let mut flags = extra;
        let mut joints = 0u8;
        let Some(p) = proposal else {
            self.last = Some(base);
            return Filtered { command: base, flags: flags | flag::HOLD, joints };
        };
        if p.iter().any(|v| !v.is_finite()) {
            self.last = Some(base);
            return Filtered { command: base, flags: flags | flag::NON_FINITE | flag::HOLD, joints };
        }
        let mut q = *p;
        for j in 0..JOINTS {
            let c = q[j].clamp(self.lo[j], self.hi[j]);
            if c != q[j] {
                flags |= flag::JOINT_LIMIT;
                joints |= 1 << j;
                q[j] = c;
            }
            let speed = if j == JOINTS - 1 { self.cfg.max_gripper_speed } else { self.cfg.max_joint_speed };
            let step = speed * self.dt;
            let d = q[j] - base[j];
            if d.abs() > step {
                flags |= flag::MAX_STEP;
                joints |= 1 << j;
                q[j] = base[j] + step.copysign(d);
            }
        }
        let (lo, hi) = (self.cfg.workspace_min, self.cfg.workspace_max);
        let now_out = outside(self.desc.forward(&q).tip, lo, hi);
        if now_out > 0.0 && now_out >= outside(self.desc.forward(&base).tip, lo, hi) - 1e-6 {
            flags |= flag::WORKSPACE;
            for j in 0..JOINTS - 1 {
                if q[j] != base[j] {
                    joints |= 1 << j;
                }
                q[j] = base[j];
            }
        }
        let g = JOINTS - 1;
        if let (Some(cap), Some(load)) = (self.cfg.gripper_load_cap, gripper_load) {
            // 0 is closed: closing further means a smaller command than where the jaws are.
            if load > cap && q[g] < measured[g] {
                flags |= flag::GRIPPER_LOAD;
                joints |= 1 << g;
                q[g] = measured[g];
            }
        }
        self.last = Some(q);
        Filtered { command: q, flags, joints }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use lapa_boards::SO101;

    /// A pose well inside the box: arm forward, fingertip above the table.
    const POSE: Joints = [0.0, 0.0, 0.0, 0.0, 0.0, 50.0];

    fn filter(cfg: SafetyConfig) -> SafetyFilter {
        let limits = joint_limits(&SO101, &SO101.factory_calibration()).unwrap();
        SafetyFilter::new(cfg, &SO101, limits, 50.0).unwrap()
    }

    fn wide() -> SafetyConfig {
        SafetyConfig { max_joint_speed: 1e6, max_gripper_speed: 1e6, workspace_min: [-9.0; 3], workspace_max: [9.0; 3], gripper_load_cap: None }
    }

    #[test]
    fn missing_and_non_finite_actions_hold_the_last_command() {
        let mut f = filter(wide());
        let out = f.filter(None, &POSE, None, 0);
        assert_eq!((out.command, out.flags), (POSE, flag::HOLD));
        let moved = [10.0, 0.0, 0.0, 0.0, 0.0, 50.0];
        assert_eq!(f.filter(Some(&moved), &POSE, None, 0).command, moved);
        let mut bad = moved;
        bad[3] = f32::NAN;
        let out = f.filter(Some(&bad), &POSE, None, 0);
        assert_eq!(out.command, moved, "a NaN in one joint refuses the whole action");
        assert_eq!(out.flags, flag::NON_FINITE | flag::HOLD);
        let out = f.filter(Some(&[f32::INFINITY; 6]), &POSE, None, flag::ESTOP);
        assert_eq!((out.command, out.flags), (moved, flag::NON_FINITE | flag::HOLD | flag::ESTOP));
    }

    #[test]
    fn joints_are_clamped_to_the_calibrated_range_within_the_nominal_limits() {
        // Calibrated pan range 1548..2548 is ±44°, inside the nominal ±110°.
        let mut cal = SO101.factory_calibration();
        cal[0].range_min = 1548;
        cal[0].range_max = 2548;
        let (lo, hi) = joint_limits(&SO101, &cal).unwrap();
        assert!((hi[0] - 500.0 * 360.0 / 4095.0).abs() < 1e-3 && (lo[0] + hi[0]).abs() < 1e-3, "{lo:?} {hi:?}");
        assert_eq!((lo[1], hi[1]), (-100.0, 100.0), "the factory range is wider than the nominal limits");
        let mut f = SafetyFilter::new(wide(), &SO101, (lo, hi), 50.0).unwrap();
        let out = f.filter(Some(&[90.0, 0.0, 0.0, 0.0, 0.0, 150.0]), &POSE, None, 0);
        assert_eq!(out.command, [hi[0], 0.0, 0.0, 0.0, 0.0, 100.0]);
        assert_eq!((out.flags, out.joints), (flag::JOINT_LIMIT, 0b10_0001));
        // An empty calibrated range is refused, as everywhere else.
        cal[2].range_max = cal[2].range_min;
        assert!(joint_limits(&SO101, &cal).is_err());
    }

    #[test]
    fn each_joint_moves_at_most_its_max_step_per_tick() {
        let cfg = SafetyConfig { max_joint_speed: 100.0, max_gripper_speed: 50.0, ..wide() };
        let mut f = filter(cfg);
        // 50 Hz: 2° per tick for joints, 1 unit for the gripper.
        let out = f.filter(Some(&[30.0, -0.5, 0.0, 0.0, 0.0, 0.0]), &POSE, None, 0);
        assert_eq!(out.command, [2.0, -0.5, 0.0, 0.0, 0.0, 49.0]);
        assert_eq!((out.flags, out.joints), (flag::MAX_STEP, 0b10_0001));
        let out = f.filter(Some(&[30.0, -0.5, 0.0, 0.0, 0.0, 0.0]), &POSE, None, 0);
        assert_eq!(out.command[0], 4.0, "steps accumulate from the last command, not from the measurement");
    }

    #[test]
    fn the_fingertip_stays_in_the_workspace_box_and_may_return_to_it() {
        let mut f = filter(SafetyConfig { max_joint_speed: 1e6, max_gripper_speed: 1e6, gripper_load_cap: None, ..SafetyConfig::default() });
        let start = f.filter(Some(&POSE), &POSE, None, 0);
        assert_eq!(start.flags, 0, "the start pose is inside: tip {:?}", SO101.forward(&POSE).tip);
        // Leaning the arm far down drives the fingertip into the table.
        let dive = [0.0, 90.0, 0.0, 90.0, 0.0, 20.0];
        assert!(SO101.forward(&dive).tip[2] < 0.0);
        let out = f.filter(Some(&dive), &POSE, None, 0);
        assert_eq!(out.flags, flag::WORKSPACE);
        assert_eq!(out.command, [0.0, 0.0, 0.0, 0.0, 0.0, 20.0], "the arm holds, the gripper still moves");
        assert_eq!(out.joints, 0b1010, "lift and wrist were held");
        // From outside the box, a command that moves back toward it passes.
        let mut g = filter(SafetyConfig { max_joint_speed: 1e6, max_gripper_speed: 1e6, gripper_load_cap: None, ..SafetyConfig::default() });
        g.filter(None, &dive, None, 0);
        let back = [0.0, 60.0, 0.0, 90.0, 0.0, 20.0];
        let b = g.filter(Some(&back), &dive, None, 0);
        assert!(SO101.forward(&back).tip[2] > SO101.forward(&dive).tip[2]);
        assert_eq!((b.command, b.flags & flag::WORKSPACE), (back, 0));
    }

    #[test]
    fn a_loaded_gripper_may_open_but_not_squeeze() {
        let mut f = filter(SafetyConfig { gripper_load_cap: Some(SO101.gripper_load_cap), ..wide() });
        let grasp = [0.0, 0.0, 0.0, 0.0, 0.0, 30.0];
        f.filter(Some(&grasp), &grasp, Some(100), 0);
        // Jaws stopped at 30 on a block, load high, the policy asks to close to 0.
        let out = f.filter(Some(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), &grasp, Some(700), 0);
        assert_eq!((out.command[5], out.flags, out.joints), (30.0, flag::GRIPPER_LOAD, 0b10_0000));
        let out = f.filter(Some(&[0.0, 0.0, 0.0, 0.0, 0.0, 60.0]), &grasp, Some(700), 0);
        assert_eq!((out.command[5], out.flags), (60.0, 0), "opening is always allowed");
        let out = f.filter(Some(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), &grasp, Some(300), 0);
        assert_eq!(out.command[5], 0.0, "below the cap it closes");
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let mut c = SafetyConfig::default();
        c.workspace_min[2] = 1.0;
        assert!(c.validate().is_err_and(|e| e.contains("z range")));
        let c = SafetyConfig { max_joint_speed: f32::NAN, ..SafetyConfig::default() };
        assert!(c.validate().is_err_and(|e| e.contains("max_joint_speed")));
        let limits = joint_limits(&SO101, &SO101.factory_calibration()).unwrap();
        assert!(SafetyFilter::new(SafetyConfig::default(), &SO101, limits, 0.0).is_err());
        assert_eq!(flag::names(flag::HOLD | flag::WORKSPACE), ["hold", "workspace"]);
        let mut t = flag::Tally::default();
        assert_eq!(t.line(), "nothing changed");
        t.add(flag::HOLD | flag::PAUSED);
        t.add(flag::PAUSED);
        assert_eq!(t.counts(), [("hold", 1), ("paused", 2)]);
        assert_eq!(t.line(), "hold 1, paused 2");
    }
}
