//! `lapa-bridge`: simulated hardware and link tools for lapa's arm end.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lapa_bridge::arm::{Arm, BridgeArm, FeetechArm};
use lapa_bridge::bridge::SafeState;
use lapa_bridge::feetech::FeetechBus;
use lapa_bridge::link::Link;
use lapa_bridge::serial::SerialIo;
use lapa_bridge::simboard::{self, Mode, SimOptions};
use lapa_bridge::simwire::StdClock;
use std::path::PathBuf;
use std::time::Instant;

/// Simulated SO-101 hardware and serial-link tools.
#[derive(Debug, Parser)]
#[command(name = "lapa-bridge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// A USB-TTL adapter wired to six STS3215 servos (ids 1–6).
    Feetech,
    /// A lapa bridge MCU (protocol v2) driving those servos.
    Bridge,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SafeStateArg {
    /// Keep torque and hold the present position (the arm does not drop).
    Hold,
    /// Switch torque off (the arm goes limp and may fall).
    TorqueOff,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve simulated hardware on a pseudo-terminal until killed; prints the device path.
    Sim {
        /// Serve on a pty (the only transport for now; kept explicit for scripts).
        #[arg(long)]
        pty: bool,
        #[arg(long, value_enum, default_value = "feetech")]
        mode: ModeArg,
        /// Also create a symlink at this path pointing to the pty (stable name across restarts).
        #[arg(long)]
        link: Option<PathBuf>,
        /// Bridge mode: host silence (ms) before the watchdog holds the arm.
        #[arg(long, default_value_t = 100)]
        timeout_ms: u32,
        /// Bridge mode: the safe state, entered when the host goes silent and at every boot of the
        /// MCU (after a panic or hardware-watchdog reset too).
        #[arg(long, value_enum, default_value = "hold")]
        safe_state: SafeStateArg,
    },
    /// Connect to an arm (feetech bus or bridge), print its identity and state.
    Probe {
        /// Serial port path.
        #[arg(long)]
        port: String,
        #[arg(long, value_enum, default_value = "feetech")]
        mode: ModeArg,
    },
    /// Convert the firmware ELF into a UF2 file for drag-and-drop flashing; print flash/RAM use.
    Uf2 {
        /// Firmware ELF (firmware-bridge/mcu/target/thumbv6m-none-eabi/release/lapa-bridge-mcu).
        elf: PathBuf,
        /// Output .uf2 file.
        out: PathBuf,
    },
    /// Measure request/response round trips through a bridge (host → MCU → servos → host).
    Latency {
        #[arg(long)]
        port: String,
        #[arg(long, default_value_t = 1000)]
        n: u32,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Sim { pty, mode, link, timeout_ms, safe_state } => {
            if !pty {
                bail!("only --pty is supported: pass --pty");
            }
            let mut opts = SimOptions {
                mode: match mode {
                    ModeArg::Feetech => Mode::Feetech,
                    ModeArg::Bridge => Mode::Bridge,
                },
                link,
                ..SimOptions::default()
            };
            opts.bridge.timeout_ms = timeout_ms;
            opts.bridge.safe_state = match safe_state {
                SafeStateArg::Hold => SafeState::Hold,
                SafeStateArg::TorqueOff => SafeState::TorqueOff,
            };
            let board = simboard::start(opts).context("starting the simulated board")?;
            println!("{}", board.path.display());
            use std::io::Write;
            std::io::stdout().flush()?;
            loop {
                std::thread::park();
            }
        }
        Cmd::Probe { port, mode } => {
            let mut arm: Box<dyn Arm> = match mode {
                ModeArg::Feetech => Box::new(FeetechArm::new(FeetechBus::new(SerialIo::open(&port)?, StdClock::default()))),
                ModeArg::Bridge => Box::new(BridgeArm::new(Link::open(&port)?)),
            };
            let info = arm.connect()?;
            println!("{}: {}", info.kind, info.description);
            if let Some(b) = info.boot {
                println!("boot {} ({:?})", b.count, b.reason);
            }
            if let Some(w) = info.reset_warning() {
                eprintln!("warning: {w}");
            }
            let r = arm.read_state()?;
            let s = r.state;
            let desc = arm.description();
            for ((j, v), c) in desc.joints.iter().zip(r.joints).zip(s.positions) {
                println!("{:<14} {v:>8.2} {:<3} ({c} counts)", j.name, j.unit.symbol());
            }
            println!(
                "loads {:?}\ntemperatures {:?} °C\nvoltage {:.1} V\nfaults {:#06x} torque {}",
                s.loads,
                s.temperatures,
                f32::from(s.voltage_dv) / 10.0,
                s.faults,
                s.torque
            );
            Ok(())
        }
        Cmd::Uf2 { elf, out } => {
            let bytes = std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
            let uf2 = lapa_bridge::uf2::elf_to_uf2(&bytes).with_context(|| format!("converting {}", elf.display()))?;
            let u = lapa_bridge::uf2::usage(&bytes)?;
            let tmp = out.with_extension("uf2.tmp");
            std::fs::write(&tmp, &uf2).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {} ({} blocks); flash {} bytes ({:.1} KiB of 2048 KiB), static RAM {} bytes ({:.1} KiB of 264 KiB)",
                out.display(),
                uf2.len() / 512,
                u.flash,
                f64::from(u.flash) / 1024.0,
                u.ram,
                f64::from(u.ram) / 1024.0
            );
            Ok(())
        }
        Cmd::Latency { port, n } => {
            let mut link = Link::open(&port)?;
            link.handshake()?;
            let start = Instant::now();
            for _ in 0..n {
                link.request(lapa_bridge::protocol::HostMsg::ReadState, "read state")?;
            }
            let s = link.stats;
            println!(
                "{n} round trips in {:.3} s: mean {:.0} µs, min {} µs, max {} µs; retries {}, crc errors {}",
                start.elapsed().as_secs_f64(),
                s.rtt_mean_us(),
                s.rtt_min_us,
                s.rtt_max_us,
                s.retries,
                s.crc_errors
            );
            Ok(())
        }
    }
}
