//! Scripted experts. A task becomes a queue of task-space skills (push, pick-and-place, hover)
//! that look at the scene every step (closed loop) and output an effector target. Each embodiment
//! then tracks that target its own way: the arm through IK into absolute joint targets (its
//! actions), the hand with human-like motion statistics (speed, pauses, curved approaches, tremor).

use crate::kinematics::{self, Joints};
use crate::rng::Rng;
use crate::task::{Goal, LINE_MIN_GAP};
use crate::world::{BLOCK_RADIUS, Embodiment, HandPose, WORK_HALF_X, WORK_Y, World, dist2};

/// Where the effector should go next: fingertip position and grip (0 closed .. 100 open).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EeTarget {
    pub pos: [f32; 3],
    pub grip: f32,
}

/// Heights used by the skills, per embodiment.
#[derive(Debug, Clone, Copy)]
struct Heights {
    hover: f32,
    push: f32,
    grasp: f32,
    carry: f32,
    place: f32,
    point: f32,
}

fn heights(e: Embodiment) -> Heights {
    match e {
        Embodiment::Arm => Heights { hover: 0.065, push: 0.012, grasp: 0.012, carry: 0.085, place: 0.035, point: 0.065 },
        Embodiment::Hand => Heights { hover: 0.085, push: 0.014, grasp: 0.014, carry: 0.10, place: 0.04, point: 0.075 },
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PushPhase {
    Approach,
    Descend,
    Push,
    Lift { then_retry: bool },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PickPhase {
    Above,
    Down,
    Close(u32),
    Lift,
    Carry,
    Lower,
    Open(u32),
    Up,
}

#[derive(Debug, Clone, PartialEq)]
enum Skill {
    Push { block: usize, goal: [f32; 2], phase: PushPhase },
    PickPlace { block: usize, goal: [f32; 2], phase: PickPhase },
    Hover { block: usize },
}

/// Closed-loop scripted expert for one task.
#[derive(Debug, Clone)]
pub struct Expert {
    embodiment: Embodiment,
    h: Heights,
    skills: Vec<Skill>,
    /// Last target, held when every skill is done.
    last: Option<EeTarget>,
}

const PUSH_TOL: f32 = 0.012;

fn normalize(v: [f32; 2]) -> [f32; 2] {
    let n = (v[0] * v[0] + v[1] * v[1]).sqrt().max(1e-9);
    [v[0] / n, v[1] / n]
}

fn in_work(p: [f32; 2], margin: f32) -> bool {
    p[0].abs() <= WORK_HALF_X - margin && p[1] >= WORK_Y.0 + margin && p[1] <= WORK_Y.1 - margin
}

impl Expert {
    /// Plans the skills for `goal` in the world as it is now.
    pub fn new(goal: &Goal, world: &World) -> Self {
        let e = world.embodiment;
        let p = |i: usize| world.blocks[i].pos;
        let push = |block, goal| Skill::Push { block, goal, phase: PushPhase::Approach };
        let pick = |block, goal| Skill::PickPlace { block, goal, phase: PickPhase::Above };
        let skills = match *goal {
            Goal::PushToSide { block, side } => {
                let [x, y] = p(block);
                let g = match side {
                    crate::task::Side::Left => [-0.095, y],
                    crate::task::Side::Right => [0.095, y],
                    crate::task::Side::Top => [x, 0.262],
                    crate::task::Side::Bottom => [x, 0.118],
                };
                vec![push(block, g)]
            }
            Goal::MoveNextTo { block, target } => {
                let dir = normalize([p(block)[0] - p(target)[0], p(block)[1] - p(target)[1]]);
                let g = [p(target)[0] + dir[0] * 0.043, p(target)[1] + dir[1] * 0.043];
                vec![push(block, g)]
            }
            Goal::PickPlace { block, corner } => vec![pick(block, corner.point())],
            Goal::Separate { a, b } => {
                // The pair starts touching, so there is no room to push from between them: carry
                // `a` away from `b`, turning the direction until the drop point is on the table.
                let base = (p(a)[1] - p(b)[1]).atan2(p(a)[0] - p(b)[0]);
                let drop = (0..16)
                    .map(|k| base + (k as f32 / 2.0).ceil() * if k % 2 == 0 { 1.0 } else { -1.0 } * 0.3)
                    .map(|ang| [p(b)[0] + 0.14 * ang.cos(), p(b)[1] + 0.14 * ang.sin()])
                    .find(|g| in_work(*g, 0.01))
                    .unwrap_or([if p(b)[0] > 0.0 { -0.09 } else { 0.09 }, if p(b)[1] > 0.19 { 0.12 } else { 0.26 }]);
                vec![pick(a, drop)]
            }
            Goal::LineUp { blocks } => {
                // Keep the block nearest the middle, place the other two beside it on its row.
                let anchor = *blocks.iter().min_by(|&&i, &&j| p(i)[0].abs().total_cmp(&p(j)[0].abs())).unwrap_or(&blocks[0]);
                let others: Vec<usize> = blocks.iter().copied().filter(|&i| i != anchor).collect();
                let [ax, ay] = p(anchor);
                let gap = LINE_MIN_GAP + 0.022;
                let slots: Vec<[f32; 2]> =
                    [-gap, gap, -2.0 * gap, 2.0 * gap].iter().map(|d| [ax + d, ay]).filter(|s| s[0].abs() <= WORK_HALF_X - 0.01).take(2).collect();
                // Assign the closer block to the first slot if that shortens the total travel.
                let (o0, o1) = (others[0], others[1]);
                let direct = dist2(p(o0), slots[0]) + dist2(p(o1), slots[1]);
                let swapped = dist2(p(o0), slots[1]) + dist2(p(o1), slots[0]);
                if direct <= swapped { vec![pick(o0, slots[0]), pick(o1, slots[1])] } else { vec![pick(o0, slots[1]), pick(o1, slots[0])] }
            }
            Goal::PointAt { block } => vec![Skill::Hover { block }],
        };
        Self { embodiment: e, h: heights(e), skills, last: None }
    }

    /// True when every planned skill has finished.
    pub fn finished(&self) -> bool {
        self.skills.is_empty()
    }

    /// The effector target for this step.
    pub fn command(&mut self, world: &World) -> EeTarget {
        let eff = world.effector();
        let exy = [eff.pos[0], eff.pos[1]];
        let h = self.h;
        let contact = self.embodiment.contact_radius() + BLOCK_RADIUS;
        let closed = 0.0;
        let open = 100.0;
        while let Some(skill) = self.skills.first_mut() {
            let target = match skill {
                Skill::Push { block, goal, phase } => {
                    let b = world.blocks[*block].pos;
                    let to_goal = [goal[0] - b[0], goal[1] - b[1]];
                    let remaining = (to_goal[0].powi(2) + to_goal[1].powi(2)).sqrt();
                    let dir = normalize(to_goal);
                    let behind = [b[0] - dir[0] * (contact + 0.015), b[1] - dir[1] * (contact + 0.015)];
                    match *phase {
                        PushPhase::Approach => {
                            if dist2(exy, behind) < 0.006 && (eff.pos[2] - h.hover).abs() < 0.03 {
                                *phase = PushPhase::Descend;
                                continue;
                            }
                            Some(EeTarget { pos: [behind[0], behind[1], h.hover], grip: closed })
                        }
                        PushPhase::Descend => {
                            if eff.pos[2] < h.push + 0.006 {
                                *phase = PushPhase::Push;
                                continue;
                            }
                            Some(EeTarget { pos: [behind[0], behind[1], h.push], grip: closed })
                        }
                        PushPhase::Push => {
                            if remaining < PUSH_TOL {
                                *phase = PushPhase::Lift { then_retry: false };
                                continue;
                            }
                            // Off the push line (the block slid sideways): lift and come again.
                            let rel = normalize([b[0] - exy[0], b[1] - exy[1]]);
                            let cos = rel[0] * dir[0] + rel[1] * dir[1];
                            if cos < 0.80 || dist2(b, exy) > contact + 0.05 {
                                *phase = PushPhase::Lift { then_retry: true };
                                continue;
                            }
                            let adv = remaining.min(0.02);
                            let t = [b[0] - dir[0] * contact + dir[0] * adv, b[1] - dir[1] * contact + dir[1] * adv];
                            Some(EeTarget { pos: [t[0], t[1], h.push], grip: closed })
                        }
                        PushPhase::Lift { then_retry } => {
                            if eff.pos[2] > h.hover - 0.01 {
                                if then_retry && remaining >= PUSH_TOL {
                                    *phase = PushPhase::Approach;
                                    continue;
                                }
                                None
                            } else {
                                Some(EeTarget { pos: [exy[0], exy[1], h.hover], grip: closed })
                            }
                        }
                    }
                }
                Skill::PickPlace { block, goal, phase } => {
                    let b = world.blocks[*block].pos;
                    match *phase {
                        PickPhase::Above => {
                            if dist2(exy, b) < 0.006 && (eff.pos[2] - h.hover).abs() < 0.02 && eff.grip > 90.0 {
                                *phase = PickPhase::Down;
                                continue;
                            }
                            Some(EeTarget { pos: [b[0], b[1], h.hover], grip: open })
                        }
                        PickPhase::Down => {
                            if eff.pos[2] < h.grasp + 0.006 {
                                *phase = PickPhase::Close(0);
                                continue;
                            }
                            if dist2(exy, b) > 0.012 {
                                *phase = PickPhase::Above;
                                continue;
                            }
                            Some(EeTarget { pos: [b[0], b[1], h.grasp], grip: open })
                        }
                        PickPhase::Close(n) => {
                            if world.grasped == Some(*block) {
                                *phase = PickPhase::Lift;
                                continue;
                            }
                            if n > 8 {
                                // Missed: open and try again from above.
                                *phase = PickPhase::Above;
                                continue;
                            }
                            *phase = PickPhase::Close(n + 1);
                            Some(EeTarget { pos: [b[0], b[1], h.grasp], grip: closed })
                        }
                        PickPhase::Lift => {
                            if world.grasped != Some(*block) {
                                *phase = PickPhase::Above;
                                continue;
                            }
                            if eff.pos[2] > h.carry - 0.015 {
                                *phase = PickPhase::Carry;
                                continue;
                            }
                            Some(EeTarget { pos: [exy[0], exy[1], h.carry], grip: closed })
                        }
                        PickPhase::Carry => {
                            if dist2(exy, *goal) < 0.006 {
                                *phase = PickPhase::Lower;
                                continue;
                            }
                            Some(EeTarget { pos: [goal[0], goal[1], h.carry], grip: closed })
                        }
                        PickPhase::Lower => {
                            if eff.pos[2] < h.place + 0.006 {
                                *phase = PickPhase::Open(0);
                                continue;
                            }
                            Some(EeTarget { pos: [goal[0], goal[1], h.place], grip: closed })
                        }
                        PickPhase::Open(n) => {
                            if world.grasped.is_none() || n > 10 {
                                *phase = PickPhase::Up;
                                continue;
                            }
                            *phase = PickPhase::Open(n + 1);
                            Some(EeTarget { pos: [goal[0], goal[1], h.place], grip: open })
                        }
                        PickPhase::Up => {
                            if eff.pos[2] > h.hover - 0.01 {
                                None
                            } else {
                                Some(EeTarget { pos: [exy[0], exy[1], h.hover], grip: open })
                            }
                        }
                    }
                }
                Skill::Hover { block } => {
                    let b = world.blocks[*block].pos;
                    let grip = if self.embodiment == Embodiment::Hand { 20.0 } else { closed };
                    Some(EeTarget { pos: [b[0], b[1], h.point], grip })
                }
            };
            match target {
                Some(t) => {
                    self.last = Some(t);
                    return t;
                }
                None => {
                    self.skills.remove(0);
                }
            }
        }
        self.last.unwrap_or(EeTarget { pos: eff.pos, grip: eff.grip })
    }
}

/// Turns effector targets into the arm's actions: absolute joint targets (degrees, gripper
/// 0..100), moving a Cartesian set-point toward the target at a bounded speed and solving IK.
#[derive(Debug, Clone)]
pub struct ArmTracker {
    setpoint: [f32; 3],
    grip: f32,
    last: Joints,
    /// Fingertip speed, m/s.
    pub speed: f32,
    /// Gripper speed, units/s.
    pub grip_speed: f32,
}

impl ArmTracker {
    pub fn new(world: &World) -> Self {
        let eff = world.effector();
        Self { setpoint: eff.pos, grip: eff.grip, last: world.joints, speed: 0.20, grip_speed: 300.0 }
    }

    /// Joint targets for this control step (`dt` seconds long).
    pub fn action(&mut self, target: &EeTarget, dt: f32) -> Joints {
        let d = [target.pos[0] - self.setpoint[0], target.pos[1] - self.setpoint[1], target.pos[2] - self.setpoint[2]];
        let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        let k = if n > self.speed * dt { self.speed * dt / n } else { 1.0 };
        let next = [self.setpoint[0] + d[0] * k, self.setpoint[1] + d[1] * k, self.setpoint[2] + d[2] * k];
        let dg = (target.grip - self.grip).clamp(-self.grip_speed * dt, self.grip_speed * dt);
        self.grip = (self.grip + dg).clamp(0.0, 100.0);
        if let Ok(q) = kinematics::inverse(next, 0.0, self.grip) {
            self.setpoint = next;
            self.last = q;
        } else {
            // Unreachable set-point: keep the last reachable pose, update only the gripper.
            self.last[5] = self.grip;
        }
        self.last
    }
}

/// Human-style motion: per-episode speed, smooth acceleration, hesitations when a movement
/// starts, curved approach paths and tremor. Produces hand poses, never actions.
#[derive(Debug, Clone)]
pub struct HandMotion {
    pose: HandPose,
    vel: [f32; 3],
    speed: f32,
    accel: f32,
    pause_prob: f32,
    pause_left: u32,
    curve: f32,
    tremor: f32,
    last_target: Option<[f32; 3]>,
    rng: Rng,
}

impl HandMotion {
    pub fn new(world: &World, rng: &mut Rng) -> Self {
        let mut rng = rng.fork(0x4A4D);
        Self {
            pose: world.hand,
            vel: [0.0; 3],
            speed: rng.range(0.10, 0.30),
            accel: rng.range(0.8, 2.0),
            pause_prob: rng.range(0.15, 0.5),
            pause_left: 0,
            curve: rng.range(-0.6, 0.6),
            tremor: rng.range(0.0005, 0.0015),
            last_target: None,
            rng,
        }
    }

    /// The hand pose after this control step.
    pub fn next_pose(&mut self, target: &EeTarget, dt: f32) -> HandPose {
        let jumped = self.last_target.is_none_or(|t| dist2([t[0], t[1]], [target.pos[0], target.pos[1]]) > 0.03);
        if jumped && self.rng.chance(self.pause_prob) {
            self.pause_left = 1 + self.rng.below(4) as u32;
        }
        self.last_target = Some(target.pos);
        let p = self.pose.pos;
        let d = [target.pos[0] - p[0], target.pos[1] - p[1], target.pos[2] - p[2]];
        let dist = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        let mut desired = [0.0f32; 3];
        if self.pause_left > 0 {
            self.pause_left -= 1;
        } else if dist > 1e-4 {
            // Bend the path sideways, more when far away: approaches arc instead of going straight.
            let bend = self.curve * dist.min(0.12);
            let dir = [d[0] / dist - d[1] / dist * bend, d[1] / dist + d[0] / dist * bend, d[2] / dist];
            let n = (dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]).sqrt();
            // Slow down near the target like a reaching hand (speed ∝ remaining distance).
            let v = self.speed.min(dist * 3.0).min(dist / dt);
            desired = [dir[0] / n * v, dir[1] / n * v, dir[2] / n * v];
        }
        for (v, d) in self.vel.iter_mut().zip(desired) {
            let dv = (d - *v).clamp(-self.accel * dt, self.accel * dt);
            *v += dv;
        }
        let mut pos = [p[0] + self.vel[0] * dt, p[1] + self.vel[1] * dt, (p[2] + self.vel[2] * dt).max(0.008)];
        // Do not overshoot the target through the acceleration limit.
        let nd = [target.pos[0] - pos[0], target.pos[1] - pos[1], target.pos[2] - pos[2]];
        if nd[0] * d[0] + nd[1] * d[1] + nd[2] * d[2] < 0.0 {
            pos = target.pos;
            self.vel = [0.0; 3];
        }
        pos[0] += self.rng.normal() * self.tremor;
        pos[1] += self.rng.normal() * self.tremor;
        let dg = (target.grip - self.pose.grip).clamp(-250.0 * dt, 250.0 * dt);
        let speed_xy = (self.vel[0].powi(2) + self.vel[1].powi(2)).sqrt();
        // The hand turns slowly toward its direction of travel.
        let yaw = if speed_xy > 0.03 {
            let want = self.vel[0].atan2(self.vel[1]).clamp(-0.9, 0.9);
            self.pose.yaw + (want - self.pose.yaw) * 0.15
        } else {
            self.pose.yaw
        };
        self.pose = HandPose { pos, grip: (self.pose.grip + dg).clamp(0.0, 100.0), yaw };
        self.pose
    }
}
