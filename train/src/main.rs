//! `lapa`: the workstation CLI.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cmd;

/// lapa — latent action pretraining from video, from simulator to hobby arm.
///
/// Stages available now: simulate and record LeRobot v3.0 datasets of an SO-101-like arm and of a
/// human-style hand, inspect any LeRobot dataset, train the latent action quantizer (LAQ) on any
/// mix of datasets and video folders, label datasets with latent actions and report their
/// quality. Needs ffmpeg on PATH for video.
#[derive(Debug, Parser)]
#[command(name = "lapa", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tabletop simulator: record expert demonstrations, render previews.
    #[command(subcommand)]
    Sim(cmd::sim::SimCommand),
    /// Inspect LeRobot datasets (v3.0 and v2.1).
    #[command(subcommand)]
    Dataset(cmd::dataset::DatasetCommand),
    /// Train a pipeline stage: `laq` (stage 1), `latent` (stage 2), `finetune` (stage 3), `action`
    /// (the true-action upper bound).
    #[command(subcommand)]
    Train(cmd::laq::TrainCommand),
    /// Use a trained latent action quantizer: label datasets, write the latent-quality report.
    #[command(subcommand)]
    Laq(cmd::laq::LaqCommand),
    /// The VPT baseline: pseudo-label video with an inverse-dynamics model (`lapa train idm`).
    #[command(subcommand)]
    Vpt(cmd::vla::VptCommand),
    /// Closed-loop evaluation of a policy run in the simulator: success rate with a 95% interval
    /// per task family, and a few rollouts as MP4.
    Eval(cmd::vla::EvalArgs),
    /// Serve a policy run over openpi's websocket policy protocol (openpi-client's
    /// WebsocketClientPolicy drives it unmodified).
    Serve(cmd::vla::ServeArgs),
    /// Write a policy run as a signed model bundle for the board (`lapa-edge run --bundle`).
    Export(cmd::vla::ExportArgs),
    /// Copy lapa-edge and a signed bundle to a board over SSH; the board checks it, then switches
    /// to it atomically (--rollback goes back, --status shows).
    Flash(Box<cmd::flash::FlashArgs>),
    /// The ed25519 key that signs bundles: generate one, show a key's id.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Experiments that run many stages end to end (resumable).
    #[command(subcommand)]
    Experiment(cmd::vla::ExperimentCommand),
    /// Decide how a policy is compressed: the per-layer int8 sensitivity scan; distil it into a
    /// smaller student.
    #[command(subcommand)]
    Compress(cmd::compress::CompressCommand),
    /// Benchmarks (figures for results/, never checked by tests).
    #[command(subcommand)]
    Bench(cmd::vla::BenchCommand),
    /// Run the main job end to end on the built-in defaults (sim data, tiny config).
    Quickstart(cmd::quickstart::QuickstartArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(c) => cmd::sim::run(c),
        Command::Dataset(c) => cmd::dataset::run(c),
        Command::Train(cmd::laq::TrainCommand::Laq(a)) => cmd::laq::train_laq(&a).map(|_| ()),
        Command::Train(cmd::laq::TrainCommand::Latent(a)) => cmd::vla::latent(&a).map(|_| ()),
        Command::Train(cmd::laq::TrainCommand::Action(a)) => cmd::vla::action(&a).map(|_| ()),
        Command::Train(cmd::laq::TrainCommand::Finetune(a)) => cmd::vla::finetune(&a).map(|_| ()),
        Command::Train(cmd::laq::TrainCommand::Idm(a)) => cmd::vla::idm(&a).map(|_| ()),
        Command::Vpt(c) => cmd::vla::vpt(c),
        Command::Eval(a) => cmd::vla::eval_cmd(&a).map(|_| ()),
        Command::Serve(a) => cmd::vla::serve_cmd(&a),
        Command::Experiment(c) => cmd::vla::experiment(c),
        Command::Export(a) => cmd::vla::export_cmd(&a),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Compress(c) => cmd::compress::run(c),
        Command::Flash(a) => cmd::flash::run(*a),
        Command::Bench(cmd::vla::BenchCommand::Policy(a)) => cmd::vla::bench_policy(&a),
        Command::Bench(cmd::vla::BenchCommand::Compress(a)) => cmd::bench_compress::run(&a),
        Command::Laq(c) => cmd::laq::run_laq(c),
        Command::Quickstart(a) => cmd::quickstart::run(a),
    }
}
