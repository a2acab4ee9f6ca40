//! Simulated hardware reachable over a pseudo-terminal, so host code goes through the real serial
//! path. `feetech` mode looks like a USB-TTL adapter wired to six STS3215 servos; `bridge` mode is
//! the simulated MCU running the bridge state machine over those servos and speaking lapa's
//! protocol.

use crate::bridge::{Bridge, BridgeConfig};
use crate::feetech::FeetechBus;
use crate::mcu_app::McuApp;
use crate::protocol::{BootInfo, MAX_FRAME, ResetReason};
use crate::simservo::SimBus;
use crate::simwire::{SharedBus, SimWire, StdClock};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Which hardware to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Feetech,
    Bridge,
}

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub mode: Mode,
    /// Also expose the pty under this stable path (a symlink), like a udev rule would.
    pub link: Option<PathBuf>,
    pub bridge: BridgeConfig,
    /// Servo loop rate of the simulated MCU.
    pub tick_hz: u32,
    /// Model the bus: delay replies by the wire time of request and reply at this baud rate.
    pub baud: u32,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self { mode: Mode::Feetech, link: None, bridge: BridgeConfig::default(), tick_hz: 500, baud: 1_000_000 }
    }
}

/// A running simulated board.
#[derive(Debug)]
pub struct SimBoard {
    pub path: PathBuf,
    pub bus: SharedBus,
    /// Bridge mode: every target set the simulated MCU executed, and the watchdog trips, for
    /// fault-injection accounting.
    pub executed: Arc<std::sync::Mutex<Vec<crate::protocol::Positions>>>,
    pub watchdog_trips: Arc<std::sync::atomic::AtomicU32>,
    /// Bridge mode: how the simulated MCU last booted.
    pub boot: Arc<std::sync::Mutex<BootInfo>>,
    resets: mpsc::Sender<ResetReason>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimBoard {
    /// Bridge mode: restarts the simulated MCU as a panic or a hardware-watchdog reset would — the
    /// firmware state is lost, the servos keep their torque and goal, the new boot runs
    /// [`McuApp::start`] (safe state) before it reads the host again. The pty stays open, as a
    /// UART-attached MCU's would. Returns once the new boot is serving.
    pub fn reset_mcu(&self, reason: ResetReason) -> std::io::Result<BootInfo> {
        let before = self.boot.lock().map(|b| b.count).unwrap_or(0);
        self.resets.send(reason).map_err(|_| std::io::Error::other("the simulated board has stopped"))?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(b) = self.boot.lock()
                && b.count != before
            {
                return Ok(*b);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(std::io::Error::other("the simulated MCU did not come back within 5 s"))
    }

    /// Stops serving and closes the pty (clients see the port disappear).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimBoard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens a raw-mode pseudo-terminal: (master, slave, slave path).
pub fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd, PathBuf)> {
    use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
    let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    let mut t = tcgetattr(&pty.slave).map_err(std::io::Error::from)?;
    cfmakeraw(&mut t);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
    let path = nix::unistd::ttyname(&pty.slave).map_err(std::io::Error::from)?;
    Ok((pty.master, pty.slave, path))
}

/// Starts a simulated board on a new pty; returns once it is serving.
pub fn start(opts: SimOptions) -> std::io::Result<SimBoard> {
    let (master, slave, path) = open_pty()?;
    if let Some(link) = &opts.link {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&path, link)?;
    }
    let bus = SharedBus::new(SimBus::new(6));
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = std::fs::File::from(master);
    let mut writer = reader.try_clone()?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let stop_reader = stop.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop_reader.load(Ordering::SeqCst) {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(1)),
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let executed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let watchdog_trips = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let boot = Arc::new(std::sync::Mutex::new(BootInfo { count: 1, reason: ResetReason::PowerOn }));
    let (resets, reset_rx) = mpsc::channel::<ResetReason>();
    let (executed2, trips2, boot2) = (executed.clone(), watchdog_trips.clone(), boot.clone());
    // Refuse a bad configuration here rather than in the serving thread.
    opts.bridge.validate().map_err(|e| std::io::Error::other(format!("bridge configuration: {e}")))?;
    let bus2 = bus.clone();
    let stop2 = stop.clone();
    let link = opts.link.clone();
    let thread = std::thread::spawn(move || {
        // Keep our own slave fd open so clients may close and reopen the port.
        let _slave = slave;
        match opts.mode {
            Mode::Feetech => serve_feetech(&bus2, &rx, &mut writer, &stop2, opts.baud),
            Mode::Bridge => {
                serve_bridge(&bus2, &rx, &mut writer, &stop2, &opts, &Shared { executed: &executed2, trips: &trips2, boot: &boot2, resets: &reset_rx })
            }
        }
        if let Some(l) = link {
            let _ = std::fs::remove_file(l);
        }
    });
    Ok(SimBoard { path, bus, executed, watchdog_trips, boot, resets, stop, thread: Some(thread) })
}

fn wire_time(bytes: usize, baud: u32) -> Duration {
    Duration::from_micros((bytes as u64 * 10 * 1_000_000) / u64::from(baud.max(1)))
}

fn serve_feetech(bus: &SharedBus, rx: &mpsc::Receiver<Vec<u8>>, out: &mut std::fs::File, stop: &AtomicBool, baud: u32) {
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let data = rx.recv_timeout(Duration::from_millis(1)).ok();
        let now = Instant::now();
        bus.lock().advance((now - last).as_secs_f32());
        last = now;
        if let Some(data) = data {
            let mut reply = Vec::new();
            let delay_regs = {
                let mut b = bus.lock();
                b.feed(&data, &mut reply);
                b.servos.first().map(|s| s.regs[7]).unwrap_or(0)
            };
            if !reply.is_empty() {
                // Request and reply both cross a 1 Mbaud wire, plus the servo's return delay.
                std::thread::sleep(wire_time(data.len() + reply.len(), baud) + Duration::from_micros(u64::from(delay_regs) * 2));
                let _ = out.write_all(&reply);
                let _ = out.flush();
            }
        }
    }
}

/// What the bridge-serving thread shares with the [`SimBoard`] handle.
struct Shared<'a> {
    executed: &'a std::sync::Mutex<Vec<crate::protocol::Positions>>,
    trips: &'a std::sync::atomic::AtomicU32,
    boot: &'a std::sync::Mutex<BootInfo>,
    resets: &'a mpsc::Receiver<ResetReason>,
}

type SimApp = McuApp<SimWire, StdClock>;

/// Boots the simulated MCU: new state machine, then the safe state, as the firmware does.
fn boot_app(bus: &SharedBus, cfg: BridgeConfig, now_ms: u64, boot: BootInfo) -> Option<SimApp> {
    let bridge = Bridge::new(cfg, now_ms, boot).ok()?;
    let mut app = McuApp::new(bridge, FeetechBus::new(SimWire::new(bus.clone()), StdClock::default()));
    // A bus error is latched as the BUS fault and reported to the host.
    let _ = app.start();
    Some(app)
}

fn serve_bridge(bus: &SharedBus, rx: &mpsc::Receiver<Vec<u8>>, out: &mut std::fs::File, stop: &AtomicBool, opts: &SimOptions, shared: &Shared<'_>) {
    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut boot = BootInfo { count: 1, reason: ResetReason::PowerOn };
    // The configuration was validated by `start`.
    let Some(mut app) = boot_app(bus, opts.bridge, now_ms(), boot) else { return };
    let tick = Duration::from_micros(1_000_000 / u64::from(opts.tick_hz.max(1)));
    let mut next_tick = Instant::now();
    let mut last = Instant::now();
    let mut frame = [0u8; MAX_FRAME];
    while !stop.load(Ordering::SeqCst) {
        if let Ok(reason) = shared.resets.try_recv() {
            boot = BootInfo { count: boot.count.saturating_add(1), reason };
            let Some(a) = boot_app(bus, opts.bridge, now_ms(), boot) else { return };
            app = a;
            if let Ok(mut b) = shared.boot.lock() {
                *b = boot;
            }
        }
        let wait = next_tick.saturating_duration_since(Instant::now()).min(Duration::from_millis(1));
        if let Ok(data) = rx.recv_timeout(wait) {
            for b in data {
                let before = app.bridge.stats.targets_executed;
                let reply = app.on_host_byte(b, now_ms(), &mut frame);
                if app.bridge.stats.targets_executed != before
                    && let Ok(mut log) = shared.executed.lock()
                {
                    log.push(app.bridge.target());
                }
                if let Some(reply) = reply {
                    let _ = out.write_all(reply);
                    let _ = out.flush();
                }
            }
        }
        if Instant::now() >= next_tick {
            let now = Instant::now();
            bus.lock().advance((now - last).as_secs_f32());
            last = now;
            let _ = app.servo_tick(now_ms());
            shared.trips.store(app.bridge.stats.watchdog_trips, Ordering::SeqCst);
            next_tick += tick;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + tick;
            }
        }
    }
}

/// Waits until `path` exists (for scripts that start the simulator in the background).
pub fn wait_for(path: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
