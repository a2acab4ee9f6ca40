pub mod dataset;
pub mod quickstart;
pub mod sim;
