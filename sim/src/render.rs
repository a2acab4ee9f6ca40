//! Anti-aliased software renderer: signed-distance shapes rasterised with analytic coverage,
//! painted back to front under a fixed top-down perspective camera. Height shows as scale (closer
//! to the camera is larger) and as a shadow offset on the table, so lifting is visible from above.

use crate::kinematics;
use crate::world::{BLOCK_HEIGHT, BLOCK_SIZE, Block, Embodiment, HandPose, Shape, World};

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Image {
    pub fn new(width: usize, height: usize) -> Self {
        Self { width, height, data: vec![0; width * height * 3] }
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Table surface patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Texture {
    Solid,
    WoodGrain,
    Checker,
    Speckle,
}

/// Everything about a scene's look that is not its objects: the "environment" of the unseen-
/// environment split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    pub table_rgb: [u8; 3],
    pub texture: Texture,
    /// Overall brightness multiplier.
    pub light_gain: f32,
    /// Brightness change across the image, per unit of normalised x and y (−0.5..0.5).
    pub light_gradient: [f32; 2],
    /// Camera displacement from the nominal pose: x, y and height, metres.
    pub camera_offset: [f32; 3],
    /// Hand embodiment only: skin and sleeve colours.
    pub skin_rgb: [u8; 3],
    pub sleeve_rgb: [u8; 3],
}

impl Default for Style {
    fn default() -> Self {
        Self {
            table_rgb: [200, 200, 195],
            texture: Texture::Solid,
            light_gain: 1.0,
            light_gradient: [0.0, 0.0],
            camera_offset: [0.0; 3],
            skin_rgb: [224, 172, 140],
            sleeve_rgb: [60, 90, 140],
        }
    }
}

/// Nominal camera: looking straight down from `CAMERA_HEIGHT` above (0, VIEW_CENTRE_Y); the table
/// plane spans `VIEW_SPAN` metres across the image.
pub const CAMERA_HEIGHT: f32 = 0.90;
pub const VIEW_CENTRE_Y: f32 = 0.18;
pub const VIEW_SPAN: f32 = 0.32;
/// Light direction: shadow displacement on the table per metre of height.
const SHADOW_SHIFT: [f32; 2] = [0.30, -0.22];

#[derive(Debug, Clone, Copy)]
struct Camera {
    cx: f32,
    cy: f32,
    h: f32,
    f: f32,
    w2: f32,
    h2: f32,
}

impl Camera {
    fn new(width: usize, height: usize, off: [f32; 3]) -> Self {
        let s0 = width as f32 / VIEW_SPAN;
        Self { cx: off[0], cy: VIEW_CENTRE_Y + off[1], h: CAMERA_HEIGHT + off[2], f: s0 * CAMERA_HEIGHT, w2: width as f32 * 0.5, h2: height as f32 * 0.5 }
    }

    /// World point → (pixel x, pixel y, pixels per metre at that depth).
    fn project(&self, p: [f32; 3]) -> (f32, f32, f32) {
        let s = self.f / (self.h - p[2]).max(0.05);
        (self.w2 + (p[0] - self.cx) * s, self.h2 - (p[1] - self.cy) * s, s)
    }
}

/// Where the nominal camera (no split offset) sees a world point, in units of the table plane:
/// (x, y) image coordinates divided by the pixels per metre at the table, x to the right, y up
/// the image. Independent of the image size; perspective included (higher points move more).
pub fn nominal_image_point(p: [f32; 3]) -> [f32; 2] {
    let cam = Camera::new(1000, 1000, [0.0; 3]);
    let s0 = 1000.0 / VIEW_SPAN;
    let (x, y, _) = cam.project(p);
    [(x - cam.w2) / s0, (cam.h2 - y) / s0]
}

/// Renders scenes of one size and style; the table background is drawn once and reused.
#[derive(Debug, Clone)]
pub struct Renderer {
    width: usize,
    height: usize,
    style: Style,
    cam: Camera,
    background: Vec<u8>,
    lit: bool,
}

impl Renderer {
    pub fn new(width: usize, height: usize, style: Style) -> Self {
        let cam = Camera::new(width, height, style.camera_offset);
        let mut r = Self { width, height, style, cam, background: Vec::new(), lit: false };
        r.background = r.draw_background();
        r.lit = style.light_gain != 1.0 || style.light_gradient != [0.0, 0.0];
        r
    }

    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    pub fn style(&self) -> &Style {
        &self.style
    }

    fn draw_background(&self) -> Vec<u8> {
        let (w, h) = (self.width, self.height);
        let mut data = vec![0u8; w * h * 3];
        let base = self.style.table_rgb.map(f32::from);
        for py in 0..h {
            for px in 0..w {
                // Table-plane coordinates of the pixel centre.
                let s = self.cam.f / self.cam.h;
                let x = (px as f32 + 0.5 - self.cam.w2) / s + self.cam.cx;
                let y = -(py as f32 + 0.5 - self.cam.h2) / s + self.cam.cy;
                let k = match self.style.texture {
                    Texture::Solid => 1.0,
                    Texture::WoodGrain => 1.0 + 0.07 * (y * 140.0 + 2.5 * (x * 23.0).sin()).sin(),
                    Texture::Checker => {
                        if (((x / 0.04).floor() + (y / 0.04).floor()) as i64).rem_euclid(2) == 0 {
                            1.0
                        } else {
                            0.88
                        }
                    }
                    Texture::Speckle => 1.0 + 0.10 * (hash2(px as u32, py as u32) - 0.5),
                };
                // The table ends at the far edge: a darker floor beyond it.
                let off_table = y > 0.345 || x.abs() > 0.19;
                let i = (py * w + px) * 3;
                for c in 0..3 {
                    let v = if off_table { base[c] * 0.45 } else { base[c] * k };
                    data[i + c] = v.clamp(0.0, 255.0) as u8;
                }
            }
        }
        data
    }

    /// Renders the world into `img` (resized if needed).
    pub fn render_into(&self, world: &World, img: &mut Image) {
        if img.width != self.width || img.height != self.height {
            *img = Image::new(self.width, self.height);
        }
        img.data.copy_from_slice(&self.background);
        let mut cv = Canvas { img, cam: self.cam };

        // Shadows first (on the table plane), then objects back to front.
        for b in &world.blocks {
            cv.block_shadow(b);
        }
        match world.embodiment {
            Embodiment::Arm => cv.arm_shadow(&world.joints),
            Embodiment::Hand => cv.hand_shadow(&world.hand),
        }
        for (i, b) in world.blocks.iter().enumerate() {
            if Some(i) != world.grasped {
                cv.block(b);
            }
        }
        if let Some(i) = world.grasped {
            cv.block(&world.blocks[i]);
        }
        match world.embodiment {
            Embodiment::Arm => cv.arm(&world.joints),
            Embodiment::Hand => cv.hand(&world.hand, &self.style),
        }
        if self.lit {
            self.apply_light(img);
        }
    }

    pub fn render(&self, world: &World) -> Image {
        let mut img = Image::new(self.width, self.height);
        self.render_into(world, &mut img);
        img
    }

    fn apply_light(&self, img: &mut Image) {
        let [gx, gy] = self.style.light_gradient;
        let (w, h) = (self.width as f32, self.height as f32);
        for py in 0..self.height {
            for px in 0..self.width {
                let k = self.style.light_gain * (1.0 + gx * ((px as f32 + 0.5) / w - 0.5) + gy * ((py as f32 + 0.5) / h - 0.5));
                let i = (py * self.width + px) * 3;
                for c in 0..3 {
                    img.data[i + c] = (f32::from(img.data[i + c]) * k).clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
}

fn hash2(x: u32, y: u32) -> f32 {
    let mut h = x.wrapping_mul(0x27d4_eb2d) ^ y.wrapping_mul(0x1656_67b1);
    h ^= h >> 15;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    (h & 0xffff) as f32 / 65535.0
}

/// Drawing surface with the camera; all shape coordinates are in world metres.
struct Canvas<'a> {
    img: &'a mut Image,
    cam: Camera,
}

const SHADOW: [u8; 3] = [0, 0, 0];
const SHADOW_ALPHA: f32 = 0.28;

fn shade(c: [u8; 3], k: f32) -> [u8; 3] {
    c.map(|v| (f32::from(v) * k).clamp(0.0, 255.0) as u8)
}

impl Canvas<'_> {
    /// Fills the pixels where `sdf` (pixel units, negative inside) covers, within the bbox.
    fn fill(&mut self, bbox: [f32; 4], rgb: [u8; 3], alpha: f32, sdf: impl Fn(f32, f32) -> f32) {
        let (w, h) = (self.img.width as i64, self.img.height as i64);
        let x0 = (bbox[0].floor() as i64 - 1).max(0);
        let y0 = (bbox[1].floor() as i64 - 1).max(0);
        let x1 = (bbox[2].ceil() as i64 + 1).min(w);
        let y1 = (bbox[3].ceil() as i64 + 1).min(h);
        let col = rgb.map(f32::from);
        for py in y0..y1 {
            let row = (py * w) as usize;
            for px in x0..x1 {
                let d = sdf(px as f32 + 0.5, py as f32 + 0.5);
                let cov = (0.5 - d).clamp(0.0, 1.0) * alpha;
                if cov <= 0.0 {
                    continue;
                }
                let i = (row + px as usize) * 3;
                let px_data = &mut self.img.data[i..i + 3];
                for c in 0..3 {
                    let v = f32::from(px_data[c]);
                    px_data[c] = (v + (col[c] - v) * cov + 0.5) as u8;
                }
            }
        }
    }

    fn circle(&mut self, p: [f32; 3], r_m: f32, rgb: [u8; 3], alpha: f32) {
        let (cx, cy, s) = self.cam.project(p);
        let r = r_m * s;
        self.fill([cx - r, cy - r, cx + r, cy + r], rgb, alpha, |x, y| ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() - r);
    }

    fn capsule(&mut self, a: [f32; 3], b: [f32; 3], r_m: f32, rgb: [u8; 3], alpha: f32) {
        let (ax, ay, sa) = self.cam.project(a);
        let (bx, by, sb) = self.cam.project(b);
        let (ra, rb) = (r_m * sa, r_m * sb);
        let r = ra.max(rb);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-9);
        let bbox = [ax.min(bx) - r, ay.min(by) - r, ax.max(bx) + r, ay.max(by) + r];
        self.fill(bbox, rgb, alpha, |x, y| {
            let t = (((x - ax) * dx + (y - ay) * dy) / len2).clamp(0.0, 1.0);
            let (qx, qy) = (ax + t * dx - x, ay + t * dy - y);
            (qx * qx + qy * qy).sqrt() - (ra + (rb - ra) * t)
        });
    }

    /// Regular polygon or circle footprint of a block at height `z` (its top face).
    fn footprint(&mut self, shape: Shape, centre: [f32; 3], yaw: f32, size_m: f32, rgb: [u8; 3], alpha: f32) {
        let (cx, cy, s) = self.cam.project(centre);
        let half = 0.5 * size_m * s;
        let r = half * 1.5;
        let bbox = [cx - r, cy - r, cx + r, cy + r];
        // Image y points down: negate yaw so rotation reads counter-clockwise on screen.
        let (sn, cs) = (-yaw).sin_cos();
        match shape {
            Shape::Circle => self.fill(bbox, rgb, alpha, |x, y| ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() - half),
            Shape::Square => self.fill(bbox, rgb, alpha, |x, y| {
                let (lx, ly) = ((x - cx) * cs + (y - cy) * sn, -(x - cx) * sn + (y - cy) * cs);
                let (qx, qy) = (lx.abs() - half * 0.9, ly.abs() - half * 0.9);
                let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
                outside + qx.max(qy).min(0.0) - half * 0.1
            }),
            Shape::Triangle => {
                // Equilateral triangle with circumradius 1.2·half (similar area to the square).
                let rc = half * 1.25;
                let inr = rc * 0.5;
                self.fill(bbox, rgb, alpha, |x, y| {
                    let (lx, ly) = ((x - cx) * cs + (y - cy) * sn, -(x - cx) * sn + (y - cy) * cs);
                    let mut d = f32::MIN;
                    for k in 0..3 {
                        let a = std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::TAU / 3.0;
                        d = d.max(-(lx * a.cos() - ly * a.sin()) - inr);
                    }
                    d
                });
            }
        }
    }

    fn block_shadow(&mut self, b: &Block) {
        let top = b.z + BLOCK_HEIGHT;
        let p = [b.pos[0] + SHADOW_SHIFT[0] * top, b.pos[1] + SHADOW_SHIFT[1] * top, 0.0];
        self.footprint(b.shape, p, b.yaw, BLOCK_SIZE * 1.05, SHADOW, SHADOW_ALPHA);
    }

    fn block(&mut self, b: &Block) {
        let rgb = b.colour.rgb();
        let top = [b.pos[0], b.pos[1], b.z + BLOCK_HEIGHT];
        // Side walls (darker), then the top face with a thin dark rim.
        self.footprint(b.shape, [b.pos[0], b.pos[1], b.z + 0.4 * BLOCK_HEIGHT], b.yaw, BLOCK_SIZE, shade(rgb, 0.62), 1.0);
        self.footprint(b.shape, top, b.yaw, BLOCK_SIZE, shade(rgb, 0.75), 1.0);
        self.footprint(b.shape, top, b.yaw, BLOCK_SIZE * 0.78, rgb, 1.0);
    }

    fn arm_segments(q: &kinematics::Joints) -> ([[f32; 3]; 5], kinematics::ArmPose) {
        let p = kinematics::forward(q);
        ([[0.0, 0.0, 0.0], p.shoulder, p.elbow, p.wrist, p.tip], p)
    }

    fn arm_shadow(&mut self, q: &kinematics::Joints) {
        let (pts, _) = Self::arm_segments(q);
        let sh = |p: [f32; 3]| [p[0] + SHADOW_SHIFT[0] * p[2], p[1] + SHADOW_SHIFT[1] * p[2], 0.0];
        for k in 1..4 {
            self.capsule(sh(pts[k]), sh(pts[k + 1]), 0.013, SHADOW, SHADOW_ALPHA);
        }
    }

    fn arm(&mut self, q: &kinematics::Joints) {
        const LINK: [u8; 3] = [238, 236, 228];
        const LINK_EDGE: [u8; 3] = [96, 96, 100];
        const SERVO: [u8; 3] = [34, 34, 38];
        let (pts, pose) = Self::arm_segments(q);
        // Base column.
        self.circle([0.0, 0.0, pose.base_top[2]], 0.035, SERVO, 1.0);
        self.circle([0.0, 0.0, pose.base_top[2]], 0.026, LINK, 1.0);
        // Links, lowest first, so higher links occlude lower ones from above.
        let radii = [0.0, 0.016, 0.014, 0.012];
        let mut order = [1usize, 2, 3];
        order.sort_by(|&a, &b| (pts[a][2] + pts[a + 1][2]).total_cmp(&(pts[b][2] + pts[b + 1][2])));
        for &k in &order {
            self.capsule(pts[k], pts[k + 1], radii[k], LINK_EDGE, 1.0);
            self.capsule(pts[k], pts[k + 1], radii[k] * 0.7, LINK, 1.0);
            self.circle(pts[k], radii[k] * 0.75, SERVO, 1.0);
            if k == 3 {
                // Jaws: two fingers across the tip, spread by the gripper opening.
                let open = 0.004 + 0.016 * (pose.gripper / 100.0).clamp(0.0, 1.0);
                let (sn, cs) = pose.jaw_yaw.sin_cos();
                let perp = [cs, -sn];
                for side in [-1.0f32, 1.0] {
                    let f = [pose.tip[0] + perp[0] * open * side, pose.tip[1] + perp[1] * open * side, pose.tip[2]];
                    let g = [f[0], f[1], pose.tip[2] + 0.035];
                    self.capsule(f, g, 0.0045, SERVO, 1.0);
                }
            }
        }
    }

    fn hand_points(h: &HandPose) -> ([f32; 3], [f32; 3], [[f32; 3]; 4], [f32; 3]) {
        let (sn, cs) = h.yaw.sin_cos();
        // Forward (fingers) direction and sideways direction in the table plane.
        let fwd = [sn, cs];
        let side = [cs, -sn];
        let palm = [h.pos[0] - fwd[0] * 0.035, h.pos[1] - fwd[1] * 0.035, h.pos[2] + 0.02];
        // The forearm enters from the lower right of the view, unlike the arm's base.
        let elbow = [palm[0] + 0.16, palm[1] - 0.20, palm[2] + 0.18];
        let curl = 0.35 + 0.65 * (h.grip / 100.0).clamp(0.0, 1.0);
        let mut tips = [[0.0; 3]; 4];
        for (k, t) in tips.iter_mut().enumerate() {
            let o = (k as f32 - 1.5) * 0.011 * (0.6 + 0.4 * curl);
            let len = 0.040 * curl * if k == 0 || k == 3 { 0.85 } else { 1.0 };
            *t = [palm[0] + side[0] * o + fwd[0] * len, palm[1] + side[1] * o + fwd[1] * len, h.pos[2]];
        }
        let thumb = [palm[0] - side[0] * 0.025 + fwd[0] * 0.02 * curl, palm[1] - side[1] * 0.025 + fwd[1] * 0.02 * curl, h.pos[2] + 0.01];
        (palm, elbow, tips, thumb)
    }

    fn hand_shadow(&mut self, h: &HandPose) {
        let (palm, elbow, tips, _) = Self::hand_points(h);
        let sh = |p: [f32; 3]| [p[0] + SHADOW_SHIFT[0] * p[2], p[1] + SHADOW_SHIFT[1] * p[2], 0.0];
        self.capsule(sh(palm), sh(elbow), 0.03, SHADOW, SHADOW_ALPHA);
        self.circle(sh(palm), 0.035, SHADOW, SHADOW_ALPHA);
        self.capsule(sh(palm), sh(tips[1]), 0.02, SHADOW, SHADOW_ALPHA);
    }

    fn hand(&mut self, h: &HandPose, style: &Style) {
        let (palm, elbow, tips, thumb) = Self::hand_points(h);
        let skin = style.skin_rgb;
        let edge = shade(skin, 0.7);
        for t in &tips {
            self.capsule(palm, *t, 0.0085, edge, 1.0);
            self.capsule(palm, *t, 0.0065, skin, 1.0);
        }
        self.capsule(palm, thumb, 0.009, edge, 1.0);
        self.capsule(palm, thumb, 0.007, skin, 1.0);
        self.circle(palm, 0.030, edge, 1.0);
        self.circle(palm, 0.027, skin, 1.0);
        let wrist = [palm[0] + (elbow[0] - palm[0]) * 0.25, palm[1] + (elbow[1] - palm[1]) * 0.25, palm[2] + (elbow[2] - palm[2]) * 0.25];
        self.capsule(wrist, elbow, 0.032, style.sleeve_rgb, 1.0);
        self.capsule(palm, wrist, 0.022, skin, 1.0);
    }
}
