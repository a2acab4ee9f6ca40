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
//!
//! The core builds without `std` (the RP2040 firmware uses the servo model and the arm's ids).

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod servo;
pub mod so101;

#[cfg(feature = "std")]
pub mod kinematics;

pub use servo::{STS3215, ServoModel};
pub use so101::{ArmDescription, CalibrationError, ConversionError, JointCalibration, JointSpec, Joints, SO101, Unit};
