//! Host side of the board ↔ MCU link over a serial port: handshake, request/response matched by
//! sequence number, timeouts and retries, automatic reconnect, link statistics.

use crate::protocol::{
    BootInfo, FirmwareVersion, FrameError, FrameReceiver, HostMsg, MAX_FRAME, McuMsg, PROTOCOL_VERSION, SEQ_UNKNOWN, WireError, encode_frame,
};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Link failures.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{path}: cannot open serial port: {source}")]
    Open { path: String, source: serialport::Error },
    #[error("no serial port with USB id {vid:04x}:{pid:04x} (found: {found})")]
    NoSuchUsbDevice { vid: u16, pid: u16, found: String },
    #[error("{path}: no reply to {what} after {attempts} attempts")]
    Timeout { path: String, what: &'static str, attempts: u32 },
    #[error("{path}: I/O error: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: MCU speaks protocol v{mcu}, this host v{host}")]
    ProtocolMismatch { path: String, host: u16, mcu: u16 },
    #[error("{path}: MCU reported {err:?}")]
    Remote { path: String, err: crate::protocol::WireError },
    #[error("{path}: unexpected reply {reply:?} to {what}")]
    Unexpected { path: String, what: &'static str, reply: McuMsg },
    /// The MCU restarted since the last handshake (its boot count changed, or it stopped knowing
    /// the host). The link has handshaken again; the command was **not** repeated.
    #[error("{path}: {} — {what} was not executed", crate::arm::reset_message(*boot))]
    McuRestarted { path: String, what: &'static str, boot: BootInfo },
}

/// What the handshake learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloInfo {
    pub protocol: u16,
    pub firmware: FirmwareVersion,
    pub arm_id: [u8; 16],
    /// How the MCU last booted (abnormal reasons also latch the RESET fault).
    pub boot: BootInfo,
}

impl HelloInfo {
    pub fn arm_id_str(&self) -> String {
        String::from_utf8_lossy(&self.arm_id).trim_end_matches('\0').to_string()
    }
}

/// Link statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkStats {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub crc_errors: u64,
    pub other_frame_errors: u64,
    pub stale_replies: u64,
    pub retries: u64,
    pub timeouts: u64,
    pub reconnects: u64,
    /// MCU restarts the link noticed (boot count changed, or the MCU forgot the handshake).
    pub mcu_restarts: u64,
    pub rtt_count: u64,
    pub rtt_sum_us: u64,
    pub rtt_min_us: u64,
    pub rtt_max_us: u64,
}

impl LinkStats {
    pub fn rtt_mean_us(&self) -> f64 {
        if self.rtt_count == 0 { 0.0 } else { self.rtt_sum_us as f64 / self.rtt_count as f64 }
    }
}

/// A serial link to a lapa bridge MCU (real or simulated).
pub struct Link {
    path: String,
    baud: u32,
    port: Option<Box<dyn serialport::SerialPort>>,
    rx: FrameReceiver,
    seq: u16,
    /// Reply timeout per attempt.
    pub timeout: Duration,
    /// Attempts per request (the same sequence number is resent, so commands are not repeated).
    pub attempts: u32,
    /// How long to keep trying to reopen the port after it disappears.
    pub reconnect_for: Duration,
    pub stats: LinkStats,
    /// Set after a reconnect: the MCU may have restarted, so the next request re-handshakes.
    needs_hello: bool,
    hello: Option<HelloInfo>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("path", &self.path).field("seq", &self.seq).field("stats", &self.stats).finish()
    }
}

fn open_port(path: &str, baud: u32) -> Result<Box<dyn serialport::SerialPort>, LinkError> {
    serialport::new(path, baud).timeout(Duration::from_millis(2)).open().map_err(|source| LinkError::Open { path: path.to_string(), source })
}

impl Link {
    /// Opens the port at `path` (no handshake yet).
    pub fn open(path: &str) -> Result<Self, LinkError> {
        let baud = 1_000_000;
        let port = open_port(path, baud)?;
        Ok(Self {
            path: path.to_string(),
            baud,
            port: Some(port),
            rx: FrameReceiver::new(),
            seq: 0,
            timeout: Duration::from_millis(50),
            attempts: 5,
            reconnect_for: Duration::from_secs(3),
            stats: LinkStats::default(),
            needs_hello: false,
            hello: None,
        })
    }

    /// Opens the first serial port with this USB vendor/product id.
    pub fn open_usb(vid: u16, pid: u16) -> Result<Self, LinkError> {
        match crate::serial::find_usb_port(vid, pid) {
            Ok(path) => Self::open(&path),
            Err(found) => Err(LinkError::NoSuchUsbDevice { vid, pid, found: if found.is_empty() { "none".into() } else { found.join(", ") } }),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn reconnect(&mut self) -> Result<(), LinkError> {
        self.port = None;
        let start = Instant::now();
        loop {
            match open_port(&self.path, self.baud) {
                Ok(p) => {
                    self.port = Some(p);
                    self.rx = FrameReceiver::new();
                    self.stats.reconnects += 1;
                    self.needs_hello = self.hello.is_some();
                    return Ok(());
                }
                Err(e) if start.elapsed() >= self.reconnect_for => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn io_err(&self, source: std::io::Error) -> LinkError {
        LinkError::Io { path: self.path.clone(), source }
    }

    /// Sends `msg` and waits for the reply with the same sequence number (a lost reply is retried
    /// with the same number, so the MCU executes the command at most once). After a reconnect the
    /// next request first handshakes again; if the MCU restarted meanwhile,
    /// [`LinkError::McuRestarted`] is returned instead of sending it, so no command runs on an arm
    /// that went through its safe state unnoticed. A reply received after a reconnect within this
    /// request is the MCU's answer to this very frame and is returned as is, never repeated.
    pub fn request(&mut self, msg: HostMsg, what: &'static str) -> Result<McuMsg, LinkError> {
        self.rehandshake_if_needed(what)?;
        let reply = self.request_once(msg, what)?;
        if reply == McuMsg::Error(WireError::NoHandshake) && self.hello.is_some() {
            // The MCU forgot us without the port going away: it restarted.
            self.stats.mcu_restarts += 1;
            let h = self.handshake()?;
            return Err(LinkError::McuRestarted { path: self.path.clone(), what, boot: h.boot });
        }
        Ok(reply)
    }

    fn rehandshake_if_needed(&mut self, what: &'static str) -> Result<(), LinkError> {
        if !self.needs_hello {
            return Ok(());
        }
        self.needs_hello = false;
        let before = self.hello.map(|h| h.boot);
        // An MCU that kept running still knows the handshake; one that restarted (even by a
        // power cycle, which resets its boot count) answers NoHandshake.
        let forgot = self.request_once(HostMsg::ReadState, what)? == McuMsg::Error(WireError::NoHandshake);
        let h = self.handshake()?;
        if forgot || before.is_some_and(|b| b != h.boot) {
            self.stats.mcu_restarts += 1;
            return Err(LinkError::McuRestarted { path: self.path.clone(), what, boot: h.boot });
        }
        Ok(())
    }

    fn request_once(&mut self, msg: HostMsg, what: &'static str) -> Result<McuMsg, LinkError> {
        // Sequence numbers run 0..SEQ_UNKNOWN; SEQ_UNKNOWN is reserved for replies to damaged frames.
        self.seq = self.seq.wrapping_add(1) % SEQ_UNKNOWN;
        let seq = self.seq;
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode_frame(seq, &msg, &mut buf).map_err(|e| self.io_err(std::io::Error::other(e.to_string())))?.to_vec();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                self.stats.retries += 1;
            }
            if self.port.is_none() {
                self.reconnect()?;
            }
            let sent_at = Instant::now();
            let wrote = match self.port.as_mut() {
                Some(p) => p.write_all(&frame).and_then(|_| p.flush()),
                None => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
            };
            if wrote.is_err() {
                self.reconnect()?;
                continue;
            }
            self.stats.frames_sent += 1;
            match self.wait_reply(seq, sent_at) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => self.stats.timeouts += 1,
                Err(_) => self.reconnect()?,
            }
        }
        Err(LinkError::Timeout { path: self.path.clone(), what, attempts: self.attempts })
    }

    fn wait_reply(&mut self, seq: u16, sent_at: Instant) -> std::io::Result<Option<McuMsg>> {
        let mut byte = [0u8; 64];
        while sent_at.elapsed() < self.timeout {
            let Some(port) = self.port.as_mut() else { return Err(std::io::ErrorKind::NotConnected.into()) };
            let n = match port.read(&mut byte) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                continue;
            }
            for &b in &byte[..n] {
                match self.rx.push::<McuMsg>(b) {
                    Some(Ok(f)) if f.seq == seq => {
                        self.stats.frames_received += 1;
                        let rtt = sent_at.elapsed().as_micros() as u64;
                        let s = &mut self.stats;
                        s.rtt_min_us = if s.rtt_count == 0 { rtt } else { s.rtt_min_us.min(rtt) };
                        s.rtt_max_us = s.rtt_max_us.max(rtt);
                        s.rtt_sum_us += rtt;
                        s.rtt_count += 1;
                        return Ok(Some(f.msg));
                    }
                    Some(Ok(_)) => {
                        self.stats.frames_received += 1;
                        self.stats.stale_replies += 1;
                    }
                    Some(Err(FrameError::Crc { .. })) => self.stats.crc_errors += 1,
                    Some(Err(_)) => self.stats.other_frame_errors += 1,
                    None => {}
                }
            }
        }
        Ok(None)
    }

    fn remote(&self, err: crate::protocol::WireError) -> LinkError {
        LinkError::Remote { path: self.path.clone(), err }
    }

    /// Protocol handshake.
    pub fn handshake(&mut self) -> Result<HelloInfo, LinkError> {
        match self.request_once(HostMsg::Hello { protocol: PROTOCOL_VERSION }, "hello")? {
            McuMsg::HelloAck { protocol, firmware, arm_id, boot } => {
                let h = HelloInfo { protocol, firmware, arm_id, boot };
                self.hello = Some(h);
                self.needs_hello = false;
                Ok(h)
            }
            McuMsg::Error(crate::protocol::WireError::ProtocolMismatch { host, mcu }) => {
                Err(LinkError::ProtocolMismatch { path: self.path.clone(), host, mcu })
            }
            reply => Err(LinkError::Unexpected { path: self.path.clone(), what: "hello", reply }),
        }
    }

    /// Sends a command expecting an `Ack`; returns its clamped-joint mask.
    pub fn command(&mut self, msg: HostMsg, what: &'static str) -> Result<u8, LinkError> {
        match self.request(msg, what)? {
            McuMsg::Ack { clamped } => Ok(clamped),
            McuMsg::Error(e) => Err(self.remote(e)),
            reply => Err(LinkError::Unexpected { path: self.path.clone(), what, reply }),
        }
    }
}
