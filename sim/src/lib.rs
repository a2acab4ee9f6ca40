//! # lapa-sim
//!
//! A deterministic tabletop simulator in the spirit of Language Table, built for LAPA: the same
//! tasks performed by an SO-101-like arm (which records absolute joint-target actions, as LeRobot
//! SO-101 datasets do) and by a human-style hand (which records only video and instructions, and
//! stands in for the human videos LAPA pretrains on).
//!
//! - [`kinematics`]: SO-101 geometry, joint conventions and limits, FK and IK.
//! - [`world`]: blocks, contact pushing and grasping.
//! - [`render`]: anti-aliased top-down renderer.
//! - [`task`]: six task families, instruction paraphrases, success checks, generalisation splits.
//! - [`expert`]: closed-loop scripted experts and the two embodiments' trackers.
//! - [`env`]: the `Env` API (reset / step / observe / success) and expert episode runner.

pub mod env;
pub mod expert;
pub mod kinematics;
pub mod render;
pub mod rng;
pub mod task;
pub mod world;

pub use env::{Action, Demo, Env, EnvConfig, Observation, run_expert};
pub use render::{Image, Style};
pub use task::{Split, Task, TaskFamily};
pub use world::Embodiment;
