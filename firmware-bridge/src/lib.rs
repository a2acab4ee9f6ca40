//! # lapa-bridge
//!
//! The arm end of lapa: everything between the board and an SO-101-class arm.
//!
//! `no_std` core (builds for `thumbv6m-none-eabi` with `--no-default-features`):
//! - [`protocol`]: board ↔ MCU messages (serde + postcard), COBS framing, CRC32, sequence numbers;
//!   wire format and golden bytes in `PROTOCOL.md`.
//! - [`feetech`]: Feetech STS/SCS servo packets, control table, sign-magnitude encodings, and a
//!   bus driver over `embedded-io` with timeouts and retries.
//! - [`pwm`]: hobby PWM servos over `embedded-hal` 1.0.
//! - [`bridge`]: the MCU-side state machine (limits, max step, heartbeat watchdog, faults).
//!
//! With the default `std` feature: the host serial link, the `Arm` trait with direct-bus, MCU-bridge
//! and simulated implementations, and simulated hardware on a pseudo-terminal (`lapa-bridge sim`).

#![cfg_attr(not(feature = "std"), no_std)]

pub mod bridge;
pub mod feetech;
pub mod mcu_app;
pub mod protocol;
pub mod pwm;

#[cfg(feature = "std")]
pub mod arm;
#[cfg(feature = "std")]
pub mod link;
#[cfg(feature = "std")]
pub mod serial;
#[cfg(feature = "std")]
pub mod simboard;
#[cfg(feature = "std")]
pub mod simservo;
#[cfg(feature = "std")]
pub mod simwire;
#[cfg(feature = "std")]
pub mod uf2;
