pub mod bench_compress;
pub mod dataset;
pub mod flash;
pub mod keys;
pub mod laq;
pub mod quickstart;
pub mod sim;
pub mod vla;
