//! `embedded-io` on a host serial port, so [`FeetechBus`](crate::feetech::FeetechBus) drives a
//! USB-TTL adapter exactly as it drives an MCU UART.

use std::io::{Read, Write};
use std::time::Duration;

/// A serial port as an `embedded-io` byte stream.
pub struct SerialIo {
    port: Box<dyn serialport::SerialPort>,
}

impl std::fmt::Debug for SerialIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialIo").field("port", &self.port.name()).finish()
    }
}

impl SerialIo {
    /// Opens `path` at 1 Mbaud, 8N1 (the STS3215 default).
    pub fn open(path: &str) -> Result<Self, serialport::Error> {
        Self::open_at(path, 1_000_000)
    }

    /// Opens `path` at `baud`, 8N1.
    pub fn open_at(path: &str, baud: u32) -> Result<Self, serialport::Error> {
        let port = serialport::new(path, baud).timeout(Duration::from_millis(1)).open()?;
        Ok(Self { port })
    }
}

/// The device path of the first serial port with this USB vendor/product id; otherwise the USB
/// serial ports there are (`"/dev/ttyACM0 2e8a:000a"`), for the error.
pub fn find_usb_port(vid: u16, pid: u16) -> Result<String, Vec<String>> {
    let ports = serialport::available_ports().unwrap_or_default();
    let mut found = Vec::new();
    for p in &ports {
        if let serialport::SerialPortType::UsbPort(u) = &p.port_type {
            if u.vid == vid && u.pid == pid {
                return Ok(p.port_name.clone());
            }
            found.push(format!("{} {:04x}:{:04x}", p.port_name, u.vid, u.pid));
        }
    }
    Err(found)
}

impl embedded_io::ErrorType for SerialIo {
    type Error = std::io::Error;
}

impl embedded_io::Read for SerialIo {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self.port.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(0),
            r => r,
        }
    }
}

impl embedded_io::Write for SerialIo {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.port.write(buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.port.flush()
    }
}

impl embedded_io::ReadReady for SerialIo {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.port.bytes_to_read().map_err(std::io::Error::other)? > 0)
    }
}
