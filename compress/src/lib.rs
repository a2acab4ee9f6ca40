//! `lapa-compress`: what makes a finetuned policy fast on a board.
//!
//! - [`kernel`]: linear-layer kernels on `rten-gemm`, f32 and int8 (u8 × i8 → i32 with the scales
//!   in the epilogue; dynamic per-row or calibrated static activation ranges);
//! - [`engine`]: the policy's forward pass in plain Rust with a kernel chosen per layer, checked
//!   against the burn module;
//! - [`policy`]: that engine behind the edge runtime's [`lapa_model::Policy`] trait;
//! - [`calib`]: activation ranges from calibration frames (min-max, percentile) and the per-layer
//!   sensitivity scan that decides which layers stay f32;
//! - [`onnx`]: the policy as an ONNX model (f32, or int8 through `MatMulInteger`) for TensorRT /
//!   ONNX Runtime users and for benchmarking them on our weights.
//!
//! Chosen kernel library: `rten-gemm` 0.27 (MIT OR Apache-2.0, pure Rust, no C): it has a u8 × i8
//! → i32 GEMM with per-row zero points and prepacked weights, and picks AVX-512 VNNI, AVX2, Arm
//! i8mm/dot-product or NEON code at run time, so the same binary is fast on an x86 workstation and
//! a Cortex-A76. On AVX2 its `vpmaddubsw` can saturate; weights are then 7-bit ([`kernel`]).

pub mod bundle;
pub mod calib;
pub mod engine;
pub mod kernel;
pub mod onnx;
pub mod policy;

pub use engine::{Engine, Text};
pub use kernel::{Kernel, Scheme};
pub use policy::EnginePolicy;

/// Compression failures.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The model's weights or config do not fit the engine.
    #[error("model: {0}")]
    Model(String),
    /// An input of the wrong size or kind.
    #[error("input: {0}")]
    Input(String),
    #[error(transparent)]
    Lapa(#[from] lapa_model::ModelError),
}
