//! Board and arm profiles, TOML files read with `deny_unknown_fields`.
//!
//! - Arm profiles (`profiles/arms/*.toml`, [`ArmFile`]) are compiled into the crate by its build
//!   script ([`crate::so101::ARMS`]); [`parse_arm`] reads the same files at run time with the same
//!   schema, for checks and for `lapa-edge doctor`.
//! - Board profiles (`profiles/boards/*.toml`, [`BoardProfile`]) say how a board runs the arm:
//!   target triple, policy backend and threads, camera, serial port, GPIO pins, control rate, and
//!   which arm (and leader arm) it drives. The ones shipped are embedded ([`BUILTIN_BOARDS`]);
//!   [`load_board`] takes a built-in name or a path.
//!
//! Every error names the file, the line (where the field is in the file) and the field.

pub use crate::arm_schema::{ArmFile, GeometryFile, GripperFile, JointFile};
use crate::so101::{ArmDescription, arm_by_name};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A profile that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
    /// TOML syntax, an unknown or missing field, or a wrong type (the message carries the line).
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// A field with a value outside what it may be.
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid { file: String, line: Option<usize>, message: String },
    #[error("no board profile {name:?}; built-in profiles: {known} (or give the path of a .toml file)")]
    UnknownBoard { name: String, known: String },
}

/// Target triples a board profile may name (the ones CI builds).
pub const TARGETS: [&str; 2] = ["aarch64-unknown-linux-gnu", "x86_64-unknown-linux-gnu"];
/// Policy backends: burn on CPU (`flex`), burn on a GPU (`wgpu`, `cuda`), or a remote server.
pub const BACKENDS: [&str; 4] = ["flex", "wgpu", "cuda", "remote"];
/// Camera pixel formats the V4L2 source negotiates.
pub const CAMERA_FORMATS: [&str; 2] = ["mjpeg", "yuyv"];
/// Baud rates the STS3215 supports (its register 6 values 0..7).
pub const BAUDS: [u32; 8] = [1_000_000, 500_000, 250_000, 128_000, 115_200, 76_800, 57_600, 38_400];
/// How the board reaches the servos: a USB-TTL adapter on the Feetech bus, or a lapa bridge MCU.
pub const LINKS: [&str; 2] = ["feetech", "bridge"];

/// A board profile as written in TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    /// Identifier (the file's name).
    pub name: String,
    /// One line for people.
    pub description: String,
    /// Rust target triple of the board's `lapa-edge`.
    pub target: String,
    /// Arm profile name of the follower (`so101_follower`).
    pub arm: String,
    /// Arm profile name of the leader used for teleoperation, if the board has one.
    #[serde(default)]
    pub leader: Option<String>,
    /// Servo loop rate, Hz (1..=100).
    pub control_hz: u32,
    pub policy: PolicySection,
    pub camera: CameraSection,
    /// The follower's bus.
    pub serial: SerialSection,
    /// The leader's bus.
    #[serde(default)]
    pub leader_serial: Option<SerialSection>,
    #[serde(default)]
    pub gpio: Option<GpioSection>,
    /// Public keys (`.pub` files from `lapa keys generate`, absolute paths on the board) whose
    /// signed bundles this board runs; `lapa-edge run --public-key` adds more.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

/// How the policy runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// One of [`BACKENDS`].
    pub backend: String,
    /// CPU threads for inference (the servo loop keeps its own core).
    pub threads: usize,
    /// `host:port` of a `lapa serve` (backend `remote` only).
    #[serde(default)]
    pub server: Option<String>,
}

/// The camera.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSection {
    /// V4L2 device (`/dev/video0`).
    pub device: String,
    /// One of [`CAMERA_FORMATS`].
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// A serial bus: a device path or a USB VID:PID to look for, and the baud rate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSection {
    /// Device path (`/dev/ttyACM0`); give this or `usb`.
    #[serde(default)]
    pub port: Option<String>,
    /// USB `vid:pid` in hex (`1a86:55d3`, the CH343 on Waveshare and SO-101 bus boards).
    #[serde(default)]
    pub usb: Option<String>,
    pub baud: u32,
    /// One of [`LINKS`].
    pub link: String,
}

/// GPIO pins (BCM numbering on a Pi; the 40-pin header's GPIO line on a Jetson).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioSection {
    /// Normally-closed e-stop button to ground (pressed or cut wire = stop).
    #[serde(default)]
    pub estop: Option<u8>,
    /// Status LED (on while the arm may move).
    #[serde(default)]
    pub status_led: Option<u8>,
}

impl SerialSection {
    /// The USB VID:PID, parsed.
    pub fn usb_ids(&self) -> Option<Result<(u16, u16), String>> {
        let s = self.usb.as_deref()?;
        Some(parse_usb(s))
    }
}

fn parse_usb(s: &str) -> Result<(u16, u16), String> {
    let (v, p) = s.split_once(':').ok_or_else(|| format!("{s:?} is not vid:pid"))?;
    let hex = |x: &str| if x.len() == 4 { u16::from_str_radix(x, 16).ok() } else { None };
    match (hex(v), hex(p)) {
        (Some(v), Some(p)) => Ok((v, p)),
        _ => Err(format!("{s:?} is not vid:pid as four hex digits each (1a86:55d3)")),
    }
}

/// A validation failure: the field's path (`camera.format`, `joints[2].min`) and what is wrong.
struct Bad {
    field: String,
    message: String,
}

fn bad(field: &str, message: String) -> Bad {
    Bad { field: field.to_string(), message }
}

impl BoardProfile {
    fn check(&self) -> Result<(), Bad> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(bad("name", format!("{:?} must be lower-case letters, digits and '_'", self.name)));
        }
        if !TARGETS.contains(&self.target.as_str()) {
            return Err(bad("target", format!("{:?} is not one of {}", self.target, TARGETS.join(", "))));
        }
        if arm_by_name(&self.arm).is_none() {
            return Err(bad("arm", format!("{:?} is not an arm profile (known: {})", self.arm, arm_names())));
        }
        if let Some(l) = &self.leader {
            if arm_by_name(l).is_none() {
                return Err(bad("leader", format!("{l:?} is not an arm profile (known: {})", arm_names())));
            }
            if self.leader_serial.is_none() {
                return Err(bad("leader", "a leader arm needs a [leader_serial] section".into()));
            }
        }
        if !(1..=100).contains(&self.control_hz) {
            return Err(bad("control_hz", format!("{} Hz is outside 1..=100", self.control_hz)));
        }
        let p = &self.policy;
        if !BACKENDS.contains(&p.backend.as_str()) {
            return Err(bad("policy.backend", format!("{:?} is not one of {}", p.backend, BACKENDS.join(", "))));
        }
        if !(1..=64).contains(&p.threads) {
            return Err(bad("policy.threads", format!("{} is outside 1..=64", p.threads)));
        }
        match (&p.server, p.backend.as_str()) {
            (None, "remote") => return Err(bad("policy.backend", "\"remote\" needs policy.server = \"host:port\"".into())),
            (Some(s), "remote") if s.rsplit_once(':').is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err()) => {
                return Err(bad("policy.server", format!("{s:?} is not host:port")));
            }
            (Some(_), b) if b != "remote" => return Err(bad("policy.server", format!("a server is only used by backend \"remote\", not {b:?}"))),
            _ => {}
        }
        let c = &self.camera;
        if !c.device.starts_with('/') {
            return Err(bad("camera.device", format!("{:?} is not an absolute device path", c.device)));
        }
        if !CAMERA_FORMATS.contains(&c.format.as_str()) {
            return Err(bad("camera.format", format!("{:?} is not one of {}", c.format, CAMERA_FORMATS.join(", "))));
        }
        for (f, v, hi) in [("camera.width", c.width, 4096), ("camera.height", c.height, 4096), ("camera.fps", c.fps, 240)] {
            if v == 0 || v > hi {
                return Err(bad(f, format!("{v} is outside 1..={hi}")));
            }
        }
        check_serial("serial", &self.serial)?;
        if let Some(s) = &self.leader_serial {
            check_serial("leader_serial", s)?;
            if self.leader.is_none() {
                return Err(bad("leader_serial", "a leader bus without `leader = \"...\"`".into()));
            }
        }
        for (i, k) in self.trusted_keys.iter().enumerate() {
            if !k.starts_with('/') || !k.ends_with(".pub") {
                return Err(bad("trusted_keys", format!("[{i}] {k:?} is not the absolute path of a .pub file")));
            }
        }
        if let Some(g) = &self.gpio {
            for (f, v) in [("gpio.estop", g.estop), ("gpio.status_led", g.status_led)] {
                if let Some(pin) = v
                    && pin > 53
                {
                    return Err(bad(f, format!("pin {pin} is outside 0..=53")));
                }
            }
            if g.estop.is_some() && g.estop == g.status_led {
                return Err(bad("gpio.status_led", "the same pin as the e-stop".into()));
            }
        }
        Ok(())
    }

    /// The follower's description.
    pub fn arm_description(&self) -> &'static ArmDescription {
        arm_by_name(&self.arm).unwrap_or(&crate::so101::SO101)
    }
}

fn check_serial(section: &str, s: &SerialSection) -> Result<(), Bad> {
    match (&s.port, &s.usb) {
        (Some(_), Some(_)) => return Err(bad(&format!("{section}.usb"), "give `port` or `usb`, not both".into())),
        (None, None) => return Err(bad(&format!("{section}.port"), "missing: give `port = \"/dev/ttyACM0\"` or `usb = \"vid:pid\"`".into())),
        (Some(p), None) if !p.starts_with('/') => return Err(bad(&format!("{section}.port"), format!("{p:?} is not an absolute device path"))),
        (None, Some(u)) => parse_usb(u).map(|_| ()).map_err(|m| bad(&format!("{section}.usb"), m))?,
        _ => {}
    }
    if !BAUDS.contains(&s.baud) {
        return Err(bad(&format!("{section}.baud"), format!("{} is not a Feetech baud rate ({})", s.baud, BAUDS.map(|b| b.to_string()).join(", "))));
    }
    if !LINKS.contains(&s.link.as_str()) {
        return Err(bad(&format!("{section}.link"), format!("{:?} is not one of {}", s.link, LINKS.join(", "))));
    }
    Ok(())
}

fn arm_names() -> String {
    crate::so101::ARMS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

/// The 1-based line where the field at `path` (`camera.format`, `joints[2].min`, `name`) is set,
/// found by walking the file's table headers; `None` when the field is not written there.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let (table, key) = match path.rsplit_once('.') {
        Some((t, k)) => (Some(t), k),
        None => (None, path),
    };
    // `joints[2]` → the third `[[joints]]`.
    let (table, nth) = match table.and_then(|t| t.strip_suffix(']')).and_then(|t| t.split_once('[')) {
        Some((t, n)) => (Some(t), n.parse::<usize>().ok()?),
        None => (table, 0),
    };
    let mut seen = 0usize;
    let mut inside = table.is_none();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[') {
            let array = h.starts_with('[');
            let name = h.trim_start_matches('[').split(']').next().unwrap_or("").trim();
            let matches = Some(name) == table;
            if matches && array {
                inside = seen == nth;
                seen += 1;
            } else {
                inside = matches && !array && nth == 0;
            }
            continue;
        }
        if inside && line.split('=').next().map(str::trim) == Some(key) && line.contains('=') {
            return Some(i + 1);
        }
    }
    // Not written as a key: the error is about a whole table (`[leader_serial]`), or a key missing
    // from one (`serial.port`): point at the table's header.
    let header = |name: &str| {
        text.lines().position(|l| l.trim().trim_start_matches('[').split(']').next().map(str::trim) == Some(name) && l.trim().starts_with('[')).map(|k| k + 1)
    };
    header(path).or_else(|| table.and_then(header))
}

fn invalid(file: &str, text: &str, b: Bad) -> ProfileError {
    ProfileError::Invalid { file: file.to_string(), line: locate(text, &b.field), message: format!("{}: {}", b.field, b.message) }
}

/// Parses and validates an arm profile's text (`file` names it in errors).
pub fn parse_arm(file: &str, text: &str) -> Result<ArmFile, ProfileError> {
    let arm: ArmFile = toml::from_str(text).map_err(|e| ProfileError::Parse { file: file.to_string(), message: e.to_string() })?;
    arm.validate().map_err(|m| {
        let field = m.split(':').next().unwrap_or("").split('/').next().unwrap_or("").to_string();
        ProfileError::Invalid { file: file.to_string(), line: locate(text, &field), message: m }
    })?;
    Ok(arm)
}

/// Parses and validates a board profile's text (`file` names it in errors).
pub fn parse_board(file: &str, text: &str) -> Result<BoardProfile, ProfileError> {
    let b: BoardProfile = toml::from_str(text).map_err(|e| ProfileError::Parse { file: file.to_string(), message: e.to_string() })?;
    b.check().map_err(|e| invalid(file, text, e))?;
    Ok(b)
}

/// The board profiles shipped with lapa, `(name, TOML text)`.
pub const BUILTIN_BOARDS: [(&str, &str); 4] = [
    ("jetson_agx_orin", include_str!("../profiles/boards/jetson_agx_orin.toml")),
    ("jetson_orin_nano", include_str!("../profiles/boards/jetson_orin_nano.toml")),
    ("raspberry_pi_5", include_str!("../profiles/boards/raspberry_pi_5.toml")),
    ("x86_64_dev", include_str!("../profiles/boards/x86_64_dev.toml")),
];

/// The arm profiles shipped with lapa, `(name, TOML text)` (the same files the build compiled in).
pub const BUILTIN_ARMS: [(&str, &str); 2] =
    [("so101_follower", include_str!("../profiles/arms/so101_follower.toml")), ("so101_leader", include_str!("../profiles/arms/so101_leader.toml"))];

/// Loads a board profile: a built-in name (`raspberry_pi_5`) or the path of a TOML file. A file's
/// `name` must match its file name, so a log or recording that names a board names one file.
pub fn load_board(name_or_path: &str) -> Result<(BoardProfile, PathBuf), ProfileError> {
    if let Some((name, text)) = BUILTIN_BOARDS.iter().find(|(n, _)| *n == name_or_path) {
        let file = format!("<built-in>/boards/{name}.toml");
        return Ok((parse_board(&file, text)?, PathBuf::from(file)));
    }
    let path = Path::new(name_or_path);
    if !path.exists() && !name_or_path.ends_with(".toml") {
        let known = BUILTIN_BOARDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
        return Err(ProfileError::UnknownBoard { name: name_or_path.to_string(), known });
    }
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io { file: file.clone(), source })?;
    let b = parse_board(&file, &text)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if stem != b.name {
        return Err(ProfileError::Invalid { file, line: locate(&text, "name"), message: format!("name: {:?} differs from the file's name {stem:?}", b.name) });
    }
    Ok((b, path.to_path_buf()))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::expect_used, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::so101::{ARMS, Unit};

    fn files(dir: &str) -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles").join(dir);
        let mut out: Vec<_> = std::fs::read_dir(&dir)
            .expect("profiles dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).expect("read")))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_profile_parses_and_every_file_is_built_in() {
        let boards = files("boards");
        assert_eq!(boards.len(), BUILTIN_BOARDS.len(), "a board profile file is missing from BUILTIN_BOARDS");
        for (file, text) in &boards {
            let b = parse_board(file, text).unwrap_or_else(|e| panic!("{e}"));
            assert!(file.ends_with(&format!("{}.toml", b.name)), "{file}: name {}", b.name);
            assert!(BUILTIN_BOARDS.iter().any(|(n, t)| *n == b.name && t == text), "{file} is not the built-in text");
            let (loaded, _) = load_board(&b.name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(loaded, b);
            let (from_path, _) = load_board(file).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(from_path, b);
        }
        let arms = files("arms");
        assert_eq!(arms.len(), ARMS.len());
        assert_eq!(arms.len(), BUILTIN_ARMS.len());
        for (file, text) in &arms {
            parse_arm(file, text).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The compiled-in descriptions are the files' content, field for field.
    #[test]
    fn compiled_arms_match_their_files() {
        for (name, text) in BUILTIN_ARMS {
            let f = parse_arm(name, text).expect("parses");
            let d = arm_by_name(name).expect("compiled in");
            assert_eq!(d.name, f.name);
            assert_eq!(d.servo.name, f.servo);
            for (j, fj) in d.joints.iter().zip(&f.joints) {
                assert_eq!((j.name, j.id, j.min, j.max), (fj.name.as_str(), fj.id, fj.min, fj.max));
                assert_eq!(j.unit, if fj.unit == "percent" { Unit::Percent } else { Unit::Degrees });
            }
            assert_eq!(d.geometry.upper_arm, f.geometry.upper_arm);
            assert_eq!(d.geometry.hand, f.geometry.hand);
            assert_eq!(d.gripper_load_cap, f.gripper.load_cap);
        }
        assert_eq!(crate::SO101.name, "so101_follower");
    }

    fn pi() -> &'static str {
        BUILTIN_BOARDS[2].1
    }

    #[test]
    fn an_unknown_field_names_file_line_and_field() {
        let text = pi().replace("fps = 30\n", "fps = 30\nexposure = 3\n");
        let e = parse_board("pi.toml", &text).expect_err("unknown field").to_string();
        let line = text.lines().position(|l| l.starts_with("exposure")).expect("line") + 1;
        assert!(e.starts_with("pi.toml: "), "{e}");
        assert!(e.contains(&format!("line {line}")), "{e}");
        assert!(e.contains("exposure"), "{e}");
    }

    #[test]
    fn a_bad_value_names_file_line_and_field() {
        let cases = [
            ("format = \"mjpeg\"", "format = \"h264\"", "camera.format"),
            ("control_hz = 30", "control_hz = 0", "control_hz"),
            ("baud = 1000000\nlink = \"feetech\"\n\n[leader_serial]", "baud = 9600\nlink = \"feetech\"\n\n[leader_serial]", "serial.baud"),
            ("threads = 3", "threads = 0", "policy.threads"),
            ("estop = 17", "estop = 99", "gpio.estop"),
            ("arm = \"so101_follower\"", "arm = \"so100\"", "arm"),
            ("control_hz = 30", "trusted_keys = [\"/etc/lapa/a.pub\", \"keys/b.pub\"]\ncontrol_hz = 30", "trusted_keys"),
        ];
        for (from, to, field) in cases {
            assert!(pi().contains(from), "{from}");
            let text = pi().replacen(from, to, 1);
            let e = parse_board("pi.toml", &text).expect_err(field);
            let ProfileError::Invalid { file, line, message } = &e else { panic!("{field}: {e}") };
            assert_eq!(file, "pi.toml");
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
            let want = text.lines().position(|l| l.trim_start().starts_with(to.lines().next().unwrap_or(to))).map(|k| k + 1);
            assert_eq!(*line, want, "{field}: {e}");
            assert!(e.to_string().starts_with(&format!("pi.toml:{}: {field}", want.unwrap_or(0))), "{e}");
        }
    }

    #[test]
    fn a_missing_field_and_a_wrong_type_are_named() {
        let e = parse_board("pi.toml", &pi().replace("control_hz = 30\n", "")).expect_err("missing").to_string();
        assert!(e.contains("control_hz"), "{e}");
        let e = parse_board("pi.toml", &pi().replace("control_hz = 30", "control_hz = \"fast\"")).expect_err("type").to_string();
        assert!(e.contains("control_hz") || e.contains("line 9"), "{e}");
    }

    #[test]
    fn arm_profile_errors_name_the_joint() {
        let text = BUILTIN_ARMS[0].1;
        let bad = text.replacen("id = 3", "id = 2", 1);
        let e = parse_arm("arm.toml", &bad).expect_err("duplicate id");
        let ProfileError::Invalid { line, message, .. } = &e else { panic!("{e}") };
        assert!(message.starts_with("joints[2].id: 2 is already joints[1]'s"), "{message}");
        let want = bad.lines().enumerate().filter(|(_, l)| *l == "id = 2").nth(1).map(|(k, _)| k + 1);
        assert_eq!(*line, want);
        let e = parse_arm("arm.toml", &text.replacen("max = 97.0", "max = -120.0", 1)).expect_err("empty range").to_string();
        assert!(e.contains("joints[2].min/max"), "{e}");
        let e = parse_arm("arm.toml", &text.replace("servo = \"sts3215\"", "servo = \"xl330\"")).expect_err("servo").to_string();
        assert!(e.contains("servo: \"xl330\""), "{e}");
    }

    #[test]
    fn serial_is_a_port_or_a_usb_id() {
        let nano = BUILTIN_BOARDS[1].1;
        let (b, _) = (parse_board("nano", nano).expect("parses"), ());
        assert_eq!(b.serial.usb_ids(), Some(Ok((0x1a86, 0x55d3))));
        let e = parse_board("nano", &nano.replace("usb = \"1a86:55d3\"", "usb = \"1a86:55d3\"\nport = \"/dev/ttyUSB0\"")).expect_err("both").to_string();
        assert!(e.contains("serial.usb: give `port` or `usb`, not both"), "{e}");
        let e = parse_board("nano", &nano.replace("usb = \"1a86:55d3\"", "usb = \"1a86-55d3\"")).expect_err("bad usb").to_string();
        assert!(e.contains("serial.usb"), "{e}");
        let text = nano.replace("usb = \"1a86:55d3\"\n", "");
        let e = parse_board("nano", &text).expect_err("neither").to_string();
        assert!(e.contains("serial.port: missing"), "{e}");
        let header = text.lines().position(|l| l == "[serial]").expect("header") + 1;
        assert!(e.starts_with(&format!("nano:{header}: ")), "the [serial] line: {e}");
    }

    #[test]
    fn load_board_names_the_built_in_profiles_when_it_finds_none() {
        let e = load_board("raspberry_pi_4").expect_err("unknown").to_string();
        assert!(e.contains("raspberry_pi_5") && e.contains("jetson_orin_nano"), "{e}");
        let dir = std::env::temp_dir().join(format!("lapa-profile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("my_pi.toml");
        std::fs::write(&p, pi()).expect("write");
        let e = load_board(p.to_str().expect("utf-8")).expect_err("name differs").to_string();
        assert!(e.contains("differs from the file's name \"my_pi\""), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
