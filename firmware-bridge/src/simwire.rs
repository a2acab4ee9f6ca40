//! An in-memory "wire" to a [`SimBus`]: implements `embedded-io` so the real [`FeetechBus`]
//! driver talks to simulated servos exactly as it would to a UART.
//!
//! [`FeetechBus`]: crate::feetech::FeetechBus

use crate::feetech::Clock;
use crate::simservo::SimBus;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Shared handle on a simulated bus.
#[derive(Debug, Clone)]
pub struct SharedBus(pub Arc<Mutex<SimBus>>);

impl SharedBus {
    pub fn new(bus: SimBus) -> Self {
        Self(Arc::new(Mutex::new(bus)))
    }

    pub fn lock(&self) -> MutexGuard<'_, SimBus> {
        match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Byte stream into a simulated bus. Replies become readable immediately.
#[derive(Debug)]
pub struct SimWire {
    bus: SharedBus,
    rx: VecDeque<u8>,
}

impl SimWire {
    pub fn new(bus: SharedBus) -> Self {
        Self { bus, rx: VecDeque::new() }
    }
}

impl embedded_io::ErrorType for SimWire {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for SimWire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let mut out = Vec::new();
        self.bus.lock().feed(buf, &mut out);
        self.rx.extend(out);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl embedded_io::Read for SimWire {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.rx.len());
        for b in buf.iter_mut().take(n) {
            *b = self.rx.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
}

impl embedded_io::ReadReady for SimWire {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.rx.is_empty())
    }
}

/// Wall clock in microseconds since creation.
#[derive(Debug, Clone, Copy)]
pub struct StdClock(Instant);

impl Default for StdClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for StdClock {
    fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}
