pub mod dataset;
pub mod laq;
pub mod quickstart;
pub mod sim;
pub mod vla;
