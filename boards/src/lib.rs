//! # lapa-boards
//!
//! One description of the hardware every other crate reads: the servo model, the SO-101 arm
//! (joint names and order, servo ids, units, limits, the homing convention, link lengths and
//! forward kinematics) and the conversion between servo counts and joint units. The simulator, the
//! LAQ report, the bridge (host and firmware) and the edge runtime use this crate; none keeps a
//! copy of these facts.
//!
//! - [`servo`]: Feetech STS3215 — resolution, count range, sign-magnitude bits.
//! - [`so101`]: the SO-101 follower arm, calibration checks and counts ↔ degrees / 0..100.
//! - [`kinematics`] (feature `std`): forward kinematics of the SO-101.
//! - [`profile`] (feature `profiles`): arm and board profiles (TOML). The arm profiles under
//!   `profiles/arms/` are the source of [`SO101`] and [`SO101_LEADER`]: the build script compiles
//!   them in, so the no_std core carries them without a parser.
//!
//! The core builds without `std` (the RP2040 firmware uses the servo model and the arm's ids).

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod servo;
pub mod so101;

#[cfg(feature = "std")]
pub mod kinematics;

#[cfg(feature = "profiles")]
mod arm_schema;
#[cfg(feature = "profiles")]
pub mod profile;

pub use servo::{STS3215, ServoModel};
pub use so101::{ArmDescription, CalibrationError, ConversionError, JointCalibration, JointSpec, Joints, SO101, SO101_LEADER, Unit, arm_by_name};
