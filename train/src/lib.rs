//! lapa's workstation pipeline as a library (the `lapa` binary is a thin CLI over it).

pub mod flash;
pub mod laq;
pub mod serve;
pub mod trainer;
pub mod vla;
