//! Task families, instruction paraphrases, success checks, and the generalisation splits.

use crate::render::{Style, Texture};
use crate::rng::Rng;
use crate::world::{BLOCK_RADIUS, Block, Colour, Effector, Shape, WORK_HALF_X, WORK_Y, World, dist2};

/// The six task families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskFamily {
    PushToSide,
    MoveNextTo,
    PickPlace,
    Separate,
    LineUp,
    PointAt,
}

impl TaskFamily {
    pub const ALL: [TaskFamily; 6] =
        [TaskFamily::PushToSide, TaskFamily::MoveNextTo, TaskFamily::PickPlace, TaskFamily::Separate, TaskFamily::LineUp, TaskFamily::PointAt];

    pub fn name(self) -> &'static str {
        match self {
            TaskFamily::PushToSide => "push_to_side",
            TaskFamily::MoveNextTo => "move_next_to",
            TaskFamily::PickPlace => "pick_place",
            TaskFamily::Separate => "separate",
            TaskFamily::LineUp => "line_up",
            TaskFamily::PointAt => "point_at",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Instruction templates. `{a}`, `{b}`, `{c}` are block descriptions, `{where}` a side or
    /// corner. The last template of each family is held out for the unseen-instructions split.
    pub fn templates(self) -> &'static [&'static str] {
        match self {
            TaskFamily::PushToSide => &[
                "push the {a} to the {where}",
                "slide the {a} to the {where} side of the table",
                "nudge the {a} over to the {where}",
                "move the {a} toward the {where} edge",
            ],
            TaskFamily::MoveNextTo => {
                &["move the {a} next to the {b}", "push the {a} close to the {b}", "put the {a} beside the {b}", "bring the {a} over to the {b}"]
            }
            TaskFamily::PickPlace => &[
                "pick up the {a} and place it in the {where} corner",
                "put the {a} in the {where} corner",
                "lift the {a} and drop it at the {where} corner",
                "carry the {a} to the {where} corner",
            ],
            TaskFamily::Separate => {
                &["separate the {a} from the {b}", "push the {a} away from the {b}", "move the {a} and the {b} apart", "pull the {a} and the {b} apart"]
            }
            TaskFamily::LineUp => &[
                "line up the {a}, the {b} and the {c}",
                "put the {a}, the {b} and the {c} in a row",
                "arrange the {a}, the {b} and the {c} in a horizontal line",
                "make a row of the {a}, the {b} and the {c}",
            ],
            TaskFamily::PointAt => &["point at the {a}", "hover over the {a}", "show me the {a}", "indicate where the {a} is"],
        }
    }
}

/// Generalisation splits. Each unseen split changes exactly one factor from `Seen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Seen,
    /// Held-out colour/shape combinations.
    UnseenObjects,
    /// Held-out instruction paraphrases.
    UnseenInstructions,
    /// Held-out table colours and textures, lighting, and a small camera offset.
    UnseenEnvironment,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Seen, Split::UnseenObjects, Split::UnseenInstructions, Split::UnseenEnvironment];

    pub fn name(self) -> &'static str {
        match self {
            Split::Seen => "seen",
            Split::UnseenObjects => "unseen-objects",
            Split::UnseenInstructions => "unseen-instructions",
            Split::UnseenEnvironment => "unseen-env",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Block kinds this split draws from.
    pub fn object_pool(self) -> Vec<(Colour, Shape)> {
        let held = held_out_objects();
        let all = Colour::ALL.iter().flat_map(|&c| Shape::ALL.iter().map(move |&s| (c, s)));
        match self {
            Split::UnseenObjects => all.filter(|k| held.contains(k)).collect(),
            _ => all.filter(|k| !held.contains(k)).collect(),
        }
    }

    /// Indices into [`TaskFamily::templates`] this split draws from.
    pub fn template_indices(self, family: TaskFamily) -> Vec<usize> {
        let n = family.templates().len();
        match self {
            Split::UnseenInstructions => vec![n - 1],
            _ => (0..n - 1).collect(),
        }
    }

    /// Samples the scene's look.
    pub fn sample_style(self, rng: &mut Rng) -> Style {
        let mut style = Style { skin_rgb: *rng.pick(&SKIN_TONES), sleeve_rgb: *rng.pick(&SLEEVES), ..Style::default() };
        if self == Split::UnseenEnvironment {
            style.table_rgb = *rng.pick(&UNSEEN_TABLES);
            style.texture = *rng.pick(&UNSEEN_TEXTURES);
            let g = rng.range(0.08, 0.2);
            style.light_gain = if rng.chance(0.5) { 1.0 - g } else { 1.0 + g };
            style.light_gradient = [rng.range(-0.25, 0.25), rng.range(-0.25, 0.25)];
            style.camera_offset = [rng.range(-0.008, 0.008), rng.range(-0.008, 0.008), rng.range(-0.03, 0.03)];
        } else {
            style.table_rgb = *rng.pick(&SEEN_TABLES);
        }
        style
    }
}

/// One colour/shape combination per colour is held out for the unseen-objects split.
pub fn held_out_objects() -> [(Colour, Shape); 6] {
    [
        (Colour::Red, Shape::Triangle),
        (Colour::Green, Shape::Circle),
        (Colour::Blue, Shape::Square),
        (Colour::Yellow, Shape::Triangle),
        (Colour::Purple, Shape::Circle),
        (Colour::Orange, Shape::Square),
    ]
}

pub const SEEN_TABLES: [[u8; 3]; 3] = [[200, 200, 195], [214, 200, 178], [188, 198, 210]];
pub const UNSEEN_TABLES: [[u8; 3]; 4] = [[150, 186, 150], [176, 136, 98], [232, 232, 236], [120, 120, 132]];
pub const UNSEEN_TEXTURES: [Texture; 3] = [Texture::WoodGrain, Texture::Checker, Texture::Speckle];
const SKIN_TONES: [[u8; 3]; 4] = [[236, 188, 160], [214, 160, 122], [170, 118, 84], [110, 74, 52]];
const SLEEVES: [[u8; 3]; 4] = [[60, 90, 140], [150, 40, 50], [70, 70, 70], [90, 130, 80]];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
    Top,
    Bottom,
}

impl Side {
    pub const ALL: [Side; 4] = [Side::Left, Side::Right, Side::Top, Side::Bottom];
    pub fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Top => "top",
            Side::Bottom => "bottom",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

impl Corner {
    pub const ALL: [Corner; 4] = [Corner::TopLeft, Corner::TopRight, Corner::BottomLeft, Corner::BottomRight];
    pub fn name(self) -> &'static str {
        match self {
            Corner::TopLeft => "top left",
            Corner::TopRight => "top right",
            Corner::BottomLeft => "bottom left",
            Corner::BottomRight => "bottom right",
        }
    }
    /// Target point of the corner on the table.
    pub fn point(self) -> [f32; 2] {
        match self {
            Corner::TopLeft => [-0.085, 0.25],
            Corner::TopRight => [0.085, 0.25],
            Corner::BottomLeft => [-0.085, 0.13],
            Corner::BottomRight => [0.085, 0.13],
        }
    }
}

/// Success thresholds, metres.
pub const SIDE_LEFT_X: f32 = -0.075;
pub const SIDE_RIGHT_X: f32 = 0.075;
pub const SIDE_TOP_Y: f32 = 0.245;
pub const SIDE_BOTTOM_Y: f32 = 0.135;
pub const NEXT_TO_DIST: f32 = 0.055;
pub const CORNER_DIST: f32 = 0.04;
pub const SEPARATE_DIST: f32 = 0.11;
pub const LINE_Y_TOL: f32 = 0.015;
pub const LINE_MIN_GAP: f32 = 0.035;
pub const POINT_XY: f32 = 0.02;
pub const POINT_Z: (f32, f32) = (0.03, 0.11);

/// A task instance: what to do to which blocks (indices into the world's blocks).
#[derive(Debug, Clone, PartialEq)]
pub enum Goal {
    PushToSide { block: usize, side: Side },
    MoveNextTo { block: usize, target: usize },
    PickPlace { block: usize, corner: Corner },
    Separate { a: usize, b: usize },
    LineUp { blocks: [usize; 3] },
    PointAt { block: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub family: TaskFamily,
    pub goal: Goal,
    pub instruction: String,
    /// Which template of the family the instruction came from.
    pub template: usize,
}

impl Goal {
    pub fn family(&self) -> TaskFamily {
        match self {
            Goal::PushToSide { .. } => TaskFamily::PushToSide,
            Goal::MoveNextTo { .. } => TaskFamily::MoveNextTo,
            Goal::PickPlace { .. } => TaskFamily::PickPlace,
            Goal::Separate { .. } => TaskFamily::Separate,
            Goal::LineUp { .. } => TaskFamily::LineUp,
            Goal::PointAt { .. } => TaskFamily::PointAt,
        }
    }

    /// Is the goal achieved in this world state?
    pub fn achieved(&self, world: &World, eff: &Effector) -> bool {
        let on_table = |i: usize| world.grasped != Some(i);
        let p = |i: usize| world.blocks[i].pos;
        match *self {
            Goal::PushToSide { block, side } => {
                let [x, y] = p(block);
                on_table(block)
                    && match side {
                        Side::Left => x < SIDE_LEFT_X,
                        Side::Right => x > SIDE_RIGHT_X,
                        Side::Top => y > SIDE_TOP_Y,
                        Side::Bottom => y < SIDE_BOTTOM_Y,
                    }
            }
            Goal::MoveNextTo { block, target } => on_table(block) && dist2(p(block), p(target)) < NEXT_TO_DIST,
            Goal::PickPlace { block, corner } => on_table(block) && world.ever_grasped[block] && dist2(p(block), corner.point()) < CORNER_DIST,
            Goal::Separate { a, b } => on_table(a) && on_table(b) && dist2(p(a), p(b)) > SEPARATE_DIST,
            Goal::LineUp { blocks } => {
                if !blocks.iter().all(|&i| on_table(i)) {
                    return false;
                }
                let ys = blocks.map(|i| p(i)[1]);
                let mean = ys.iter().sum::<f32>() / 3.0;
                let aligned = ys.iter().all(|y| (y - mean).abs() < LINE_Y_TOL);
                let xs = blocks.map(|i| p(i)[0]);
                let spaced = (0..3).all(|i| ((i + 1)..3).all(|j| (xs[i] - xs[j]).abs() >= LINE_MIN_GAP));
                aligned && spaced
            }
            Goal::PointAt { block } => {
                dist2(p(block), [eff.pos[0], eff.pos[1]]) < POINT_XY && eff.pos[2] > POINT_Z.0 && eff.pos[2] < POINT_Z.1 && world.grasped.is_none()
            }
        }
    }
}

/// Inner area where the blocks a task acts on start, leaving room around them for the effector.
const INNER_HALF_X: f32 = 0.08;
const INNER_Y: (f32, f32) = (0.13, 0.25);

fn sample_point(rng: &mut Rng, inner: bool) -> [f32; 2] {
    if inner {
        [rng.range(-INNER_HALF_X, INNER_HALF_X), rng.range(INNER_Y.0, INNER_Y.1)]
    } else {
        [rng.range(-WORK_HALF_X, WORK_HALF_X), rng.range(WORK_Y.0, WORK_Y.1)]
    }
}

/// Samples a scene (blocks) and a task for `family` under `split`.
pub fn sample_task(rng: &mut Rng, family: TaskFamily, split: Split) -> (Vec<Block>, Task) {
    // Four blocks of distinct colours from the split's pool.
    let mut pool = split.object_pool();
    rng.shuffle(&mut pool);
    let mut kinds: Vec<(Colour, Shape)> = Vec::new();
    for k in pool {
        if kinds.len() < 4 && !kinds.iter().any(|(c, _)| *c == k.0) {
            kinds.push(k);
        }
    }
    // Which block indices the task uses (the first ones) and how many.
    let involved = match family {
        TaskFamily::MoveNextTo | TaskFamily::Separate => 2,
        TaskFamily::LineUp => 3,
        _ => 1,
    };
    let side = *rng.pick(&Side::ALL);
    let corner = *rng.pick(&Corner::ALL);
    let template_ids = split.template_indices(family);
    let template = *rng.pick(&template_ids);

    for _attempt in 0..1000 {
        let mut pos: Vec<[f32; 2]> = Vec::new();
        let mut ok = true;
        for i in 0..kinds.len() {
            let mut placed = false;
            for _ in 0..200 {
                let cand = if family == TaskFamily::Separate && i == 1 {
                    let ang = rng.range(0.0, std::f32::consts::TAU);
                    let d = rng.range(2.0 * BLOCK_RADIUS + 0.002, 0.045);
                    [pos[0][0] + d * ang.cos(), pos[0][1] + d * ang.sin()]
                } else {
                    sample_point(rng, i < involved)
                };
                let inside = cand[0].abs() <= WORK_HALF_X && cand[1] >= WORK_Y.0 && cand[1] <= WORK_Y.1;
                let min_d: f32 = if family == TaskFamily::Separate && i == 1 { 0.0 } else { 0.06 };
                if inside && pos.iter().all(|q| dist2(*q, cand) >= min_d.max(2.0 * BLOCK_RADIUS)) {
                    pos.push(cand);
                    placed = true;
                    break;
                }
            }
            if !placed {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        let blocks: Vec<Block> =
            kinds.iter().zip(&pos).map(|(&(colour, shape), &p)| Block { colour, shape, pos: p, z: 0.0, yaw: rng.range(0.0, std::f32::consts::TAU) }).collect();
        let goal = match family {
            TaskFamily::PushToSide => Goal::PushToSide { block: 0, side },
            TaskFamily::MoveNextTo => Goal::MoveNextTo { block: 0, target: 1 },
            TaskFamily::PickPlace => Goal::PickPlace { block: 0, corner },
            TaskFamily::Separate => Goal::Separate { a: 0, b: 1 },
            TaskFamily::LineUp => Goal::LineUp { blocks: [0, 1, 2] },
            TaskFamily::PointAt => Goal::PointAt { block: 0 },
        };
        // Reject scenes where the task is (nearly) done already.
        let p = |i: usize| blocks[i].pos;
        let trivial = match goal {
            Goal::PushToSide { side, .. } => match side {
                Side::Left => p(0)[0] < SIDE_LEFT_X + 0.04,
                Side::Right => p(0)[0] > SIDE_RIGHT_X - 0.04,
                Side::Top => p(0)[1] > SIDE_TOP_Y - 0.04,
                Side::Bottom => p(0)[1] < SIDE_BOTTOM_Y + 0.04,
            },
            Goal::MoveNextTo { .. } => dist2(p(0), p(1)) < 0.10,
            Goal::PickPlace { corner, .. } => dist2(p(0), corner.point()) < 0.08,
            Goal::LineUp { .. } => {
                let ys = [p(0)[1], p(1)[1], p(2)[1]];
                let spread = ys.iter().cloned().fold(f32::MIN, f32::max) - ys.iter().cloned().fold(f32::MAX, f32::min);
                spread < 3.0 * LINE_Y_TOL
            }
            Goal::Separate { .. } | Goal::PointAt { .. } => false,
        };
        if trivial {
            continue;
        }
        let desc = |i: usize| blocks[i].description();
        let where_ = match goal {
            Goal::PushToSide { side, .. } => side.name(),
            Goal::PickPlace { corner, .. } => corner.name(),
            _ => "",
        };
        let mut instruction = family.templates()[template].replace("{a}", &desc(0)).replace("{where}", where_);
        if involved >= 2 {
            instruction = instruction.replace("{b}", &desc(1));
        }
        if involved >= 3 {
            instruction = instruction.replace("{c}", &desc(2));
        }
        return (blocks, Task { family, goal, instruction, template });
    }
    unreachable!("scene sampling always succeeds within 1000 attempts for 4 blocks in the workspace")
}
