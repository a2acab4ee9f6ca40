//! `lapa flash`: the CLI over [`lapa_train::flash`].

use anyhow::{Result, bail};
use lapa_train::flash::{self, FlashOptions, SshTarget, SystemdOptions};
use std::path::PathBuf;

/// Copy the board's `lapa-edge` and a model bundle to a board over SSH, have the board check
/// the bundle's signature and hashes with the new binary, and switch the board's `current`
/// release to it atomically (the previous one is kept for --rollback).
///
/// Uses the system's OpenSSH client (your keys, agent and ~/.ssh/config). On the board: a
/// folder (--dir, default ~/lapa) with releases/, keys/, and the links current and previous.
/// Install your workstation's public key once with --install-key ~/.config/lapa/keys/lapa-signing.pub.
/// An interrupted flash leaves the board on its working release.
///
/// Examples:
///   lapa flash --board raspberry_pi_5 --host pi@raspberrypi.local out/bundle --install-key KEY.pub
///   lapa flash --host pi@raspberrypi.local --rollback
///   lapa flash --host pi@raspberrypi.local --status
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct FlashArgs {
    /// The model bundle folder (`lapa export`).
    #[arg(required_unless_present_any = ["rollback", "status"])]
    pub bundle: Option<PathBuf>,
    /// The board's profile: a built-in name (raspberry_pi_5, jetson_orin_nano, jetson_agx_orin,
    /// x86_64_dev) or a .toml path (uploaded with the release). Picks the target the binary must
    /// be built for.
    #[arg(long, required_unless_present_any = ["rollback", "status"])]
    pub board: Option<String>,
    /// The board: user@host, or a Host alias of your ssh config.
    #[arg(long)]
    pub host: String,
    /// The board's lapa-edge (default: target/<the profile's triple>/release/lapa-edge, as
    /// `cargo build --release -p lapa-edge --target <triple>` writes it).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// The folder on the board (relative: under the login's home).
    #[arg(long, default_value = "lapa")]
    pub dir: String,
    /// SSH port.
    #[arg(long)]
    pub port: Option<u16>,
    /// SSH private key (ssh -i).
    #[arg(long, short = 'i')]
    pub identity: Option<PathBuf>,
    /// SSH config file (ssh -F; `none` ignores yours).
    #[arg(long)]
    pub ssh_config: Option<String>,
    /// An ssh -o option (Key=value), repeatable.
    #[arg(long = "ssh-option", short = 'o', value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// Install this public key (`.pub` from `lapa keys generate`) in the board's keys/ before
    /// the check; repeatable. Needed once per workstation key.
    #[arg(long, value_name = "FILE")]
    pub install_key: Vec<PathBuf>,
    /// Development: let the board take an unsigned bundle (or one signed by a key it lacks); the
    /// release's run.sh then runs it so.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Also install a systemd unit that runs the current release at boot (root: a system unit;
    /// otherwise a user unit), then enable and restart it; needs --instruction. Later flashes and
    /// rollbacks restart an enabled unit.
    #[arg(long, requires = "instruction")]
    pub systemd: bool,
    /// Write the unit in this folder on the board instead, and leave enabling it to you.
    #[arg(long, requires = "systemd")]
    pub unit_dir: Option<String>,
    /// The instruction the service starts with (change it later on the control socket).
    #[arg(long, requires = "systemd")]
    pub instruction: Option<String>,
    /// Switch the board back to its previous release (after that release's binary checks its
    /// bundle); a second rollback undoes the first.
    #[arg(long, conflicts_with_all = ["bundle", "board", "binary", "install_key", "systemd", "status", "allow_unsigned"])]
    pub rollback: bool,
    /// Show the board's current and previous releases and installed keys.
    #[arg(long, conflicts_with_all = ["bundle", "board", "binary", "install_key", "systemd"])]
    pub status: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: FlashArgs) -> Result<()> {
    let ssh = SshTarget { host: a.host.clone(), port: a.port, identity: a.identity.clone(), config: a.ssh_config.clone(), options: a.ssh_options.clone() };
    if a.status {
        print!("{}", flash::status(&ssh, &a.dir)?);
        return Ok(());
    }
    if a.rollback {
        let r = flash::rollback(&ssh, &a.dir)?;
        for n in &r.notes {
            println!("  {n}");
        }
        println!("rolled back {}:{}: current -> {} (was {})", a.host, r.root, r.current, r.previous);
        println!("  board check: {}", r.verified);
        return Ok(());
    }
    let (Some(bundle), Some(board)) = (a.bundle.clone(), a.board.clone()) else {
        bail!("a flash needs a BUNDLE and --board");
    };
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => {
            let (profile, _) = lapa_boards::profile::load_board(&board)?;
            flash::default_binary(&profile.target)
        }
    };
    let opts = FlashOptions {
        board,
        bundle,
        binary,
        dir: a.dir.clone(),
        install_keys: a.install_key.clone(),
        allow_unsigned: a.allow_unsigned,
        systemd: a.systemd.then(|| SystemdOptions { unit_dir: a.unit_dir.clone(), instruction: a.instruction.clone().unwrap_or_default() }),
        quiet: a.quiet,
    };
    let r = flash::flash(&ssh, &opts)?;
    for n in &r.notes {
        println!("  {n}");
    }
    println!("  board check: {}", r.verified);
    println!(
        "flashed {}:{}/{} ({:.1} MB sent); current -> {}{}",
        a.host,
        r.root,
        r.release,
        r.bytes as f64 / 1e6,
        r.release,
        r.previous.as_deref().map_or_else(String::new, |p| format!("; previous -> {p} (lapa flash --rollback)"))
    );
    if let Some(u) = &r.unit {
        println!("  unit: {u}");
    }
    Ok(())
}
