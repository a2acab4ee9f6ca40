//! Scene state and contact physics: blocks on a table, pushed by an effector or carried in a
//! closed grip. Blocks collide as discs (their footprint's circumradius, so they never overlap
//! visibly) and are kept on the table; there is no rigid-body engine, on purpose: it is simple,
//! stable and deterministic.

use crate::kinematics::{self, Joints};

/// Block colours. Names are what instructions say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

impl Colour {
    pub const ALL: [Colour; 6] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow, Colour::Purple, Colour::Orange];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [214, 45, 40],
            Colour::Green => [46, 160, 66],
            Colour::Blue => [38, 92, 214],
            Colour::Yellow => [236, 198, 30],
            Colour::Purple => [142, 62, 186],
            Colour::Orange => [242, 124, 24],
        }
    }
}

/// Block shapes, as seen from above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Square,
    Circle,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Square, Shape::Circle, Shape::Triangle];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Square => "square",
            Shape::Circle => "circle",
            Shape::Triangle => "triangle",
        }
    }
}

/// Block footprint size (edge of the square, diameter of the circle), metres.
pub const BLOCK_SIZE: f32 = 0.030;
/// Collision radius of every block (covers the footprint of every shape).
pub const BLOCK_RADIUS: f32 = 0.0175;
/// Block height, metres.
pub const BLOCK_HEIGHT: f32 = 0.030;

/// Table area blocks are kept in (x: ±TABLE_HALF_X, y in TABLE_Y), metres.
pub const TABLE_HALF_X: f32 = 0.15;
pub const TABLE_Y: (f32, f32) = (0.03, 0.33);
/// Where tasks place blocks and targets: reachable by the arm and clear of the table edge.
pub const WORK_HALF_X: f32 = 0.115;
pub const WORK_Y: (f32, f32) = (0.10, 0.28);

/// Gripper value below which the grip counts as closed.
pub const GRIP_CLOSED: f32 = 35.0;
/// Gripper value above which a held block is released.
pub const GRIP_RELEASE: f32 = 60.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Block {
    pub colour: Colour,
    pub shape: Shape,
    /// Centre on the table plane, metres.
    pub pos: [f32; 2],
    /// Height of the block's bottom above the table (non-zero only while carried).
    pub z: f32,
    /// Rotation about the vertical axis, radians.
    pub yaw: f32,
}

impl Block {
    /// "red square".
    pub fn description(&self) -> String {
        format!("{} {}", self.colour.name(), self.shape.name())
    }
}

/// Which body acts in the scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Embodiment {
    /// SO-101-like six-joint arm; acts through absolute joint targets.
    Arm,
    /// Human-style hand; records video only, never actions.
    Hand,
}

impl Embodiment {
    pub fn name(self) -> &'static str {
        match self {
            Embodiment::Arm => "arm",
            Embodiment::Hand => "hand",
        }
    }

    /// Radius of the effector's contact disc (fingertips / closed fist), metres.
    pub fn contact_radius(self) -> f32 {
        match self {
            Embodiment::Arm => 0.010,
            Embodiment::Hand => 0.020,
        }
    }

    /// Horizontal distance within which a closing grip catches a block.
    pub fn grasp_radius(self) -> f32 {
        match self {
            Embodiment::Arm => 0.014,
            Embodiment::Hand => 0.020,
        }
    }
}

/// The hand's pose: fingertip centre position, opening (0..100, like the gripper) and yaw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandPose {
    pub pos: [f32; 3],
    pub grip: f32,
    pub yaw: f32,
}

/// Effector of either embodiment: where contact and grasping happen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effector {
    pub pos: [f32; 3],
    pub grip: f32,
}

/// Everything physical in a scene.
#[derive(Debug, Clone)]
pub struct World {
    pub embodiment: Embodiment,
    pub blocks: Vec<Block>,
    /// Arm joint positions (meaningful for [`Embodiment::Arm`]).
    pub joints: Joints,
    /// Hand pose (meaningful for [`Embodiment::Hand`]).
    pub hand: HandPose,
    /// Index of the block currently carried.
    pub grasped: Option<usize>,
    /// Per block: has it ever been lifted in this episode.
    pub ever_grasped: Vec<bool>,
    prev_grip: f32,
}

impl World {
    pub fn new(embodiment: Embodiment, blocks: Vec<Block>) -> Self {
        let n = blocks.len();
        let joints = kinematics::rest_pose();
        let hand = HandPose { pos: [0.06, 0.12, 0.14], grip: 100.0, yaw: 0.0 };
        let prev_grip = match embodiment {
            Embodiment::Arm => joints[5],
            Embodiment::Hand => hand.grip,
        };
        Self { embodiment, blocks, joints, hand, grasped: None, ever_grasped: vec![false; n], prev_grip }
    }

    /// Current effector position and grip.
    pub fn effector(&self) -> Effector {
        match self.embodiment {
            Embodiment::Arm => {
                let pose = kinematics::forward(&self.joints);
                Effector { pos: pose.tip, grip: self.joints[5] }
            }
            Embodiment::Hand => Effector { pos: self.hand.pos, grip: self.hand.grip },
        }
    }

    /// Applies contact, grasp and release for the effector's current position. Called after every
    /// physics substep.
    pub fn interact(&mut self) {
        let eff = self.effector();
        let emb = self.embodiment;
        // Grasp on the closing edge of the grip.
        if self.grasped.is_none() && eff.grip < GRIP_CLOSED && self.prev_grip >= GRIP_CLOSED {
            let reach = eff.pos[2] < BLOCK_HEIGHT + 0.012;
            let best = self
                .blocks
                .iter()
                .enumerate()
                .map(|(i, b)| (i, dist2(b.pos, [eff.pos[0], eff.pos[1]])))
                .filter(|&(_, d)| d < emb.grasp_radius())
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let (true, Some((i, _))) = (reach, best) {
                self.grasped = Some(i);
                self.ever_grasped[i] = true;
            }
        }
        if let Some(i) = self.grasped {
            if eff.grip > GRIP_RELEASE {
                self.grasped = None;
                self.blocks[i].z = 0.0;
                self.resolve_blocks(Some(i));
            } else {
                let b = &mut self.blocks[i];
                b.pos = [eff.pos[0], eff.pos[1]];
                b.z = (eff.pos[2] - 0.5 * BLOCK_HEIGHT).max(0.0);
            }
        }
        self.prev_grip = eff.grip;

        // Pushing: the effector's contact disc shoves blocks it is below the top of.
        if eff.pos[2] < BLOCK_HEIGHT + 0.002 {
            let exy = [eff.pos[0], eff.pos[1]];
            let min_d = emb.contact_radius() + BLOCK_RADIUS;
            let mut pushed = None;
            for (i, b) in self.blocks.iter_mut().enumerate() {
                if Some(i) == self.grasped {
                    continue;
                }
                let d = dist2(b.pos, exy);
                // Open jaws come down around a block instead of onto it.
                if eff.grip >= GRIP_CLOSED && d < emb.grasp_radius() {
                    continue;
                }
                if d < min_d {
                    let (nx, ny) = if d > 1e-6 { ((b.pos[0] - exy[0]) / d, (b.pos[1] - exy[1]) / d) } else { (0.0, 1.0) };
                    b.pos = [exy[0] + nx * min_d, exy[1] + ny * min_d];
                    pushed = Some(i);
                }
            }
            if pushed.is_some() {
                self.resolve_blocks(pushed);
            }
        }
    }

    /// Separates overlapping blocks on the table and keeps them on it. `anchor` (if any) is the
    /// block that caused the overlap: it stays put and the others move.
    pub fn resolve_blocks(&mut self, anchor: Option<usize>) {
        let n = self.blocks.len();
        let min_d = 2.0 * BLOCK_RADIUS;
        for _ in 0..8 {
            let mut moved = false;
            for i in 0..n {
                for j in (i + 1)..n {
                    if Some(i) == self.grasped || Some(j) == self.grasped {
                        continue;
                    }
                    let (a, b) = (self.blocks[i].pos, self.blocks[j].pos);
                    let d = dist2(a, b);
                    if d >= min_d - 1e-6 {
                        continue;
                    }
                    let (nx, ny) = if d > 1e-6 { ((b[0] - a[0]) / d, (b[1] - a[1]) / d) } else { (1.0, 0.0) };
                    let overlap = min_d - d;
                    let (wi, wj) = match anchor {
                        Some(k) if k == i => (0.0, 1.0),
                        Some(k) if k == j => (1.0, 0.0),
                        _ => (0.5, 0.5),
                    };
                    self.blocks[i].pos = [a[0] - nx * overlap * wi, a[1] - ny * overlap * wi];
                    self.blocks[j].pos = [b[0] + nx * overlap * wj, b[1] + ny * overlap * wj];
                    moved = true;
                }
            }
            for b in &mut self.blocks {
                b.pos[0] = b.pos[0].clamp(-TABLE_HALF_X + BLOCK_RADIUS, TABLE_HALF_X - BLOCK_RADIUS);
                b.pos[1] = b.pos[1].clamp(TABLE_Y.0 + BLOCK_RADIUS, TABLE_Y.1 - BLOCK_RADIUS);
            }
            if !moved {
                break;
            }
        }
    }

    /// Smallest centre distance between two blocks on the table.
    pub fn min_block_distance(&self) -> f32 {
        let mut best = f32::INFINITY;
        for i in 0..self.blocks.len() {
            for j in (i + 1)..self.blocks.len() {
                if Some(i) == self.grasped || Some(j) == self.grasped {
                    continue;
                }
                best = best.min(dist2(self.blocks[i].pos, self.blocks[j].pos));
            }
        }
        best
    }
}

/// Euclidean distance of two table points.
pub fn dist2(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}
