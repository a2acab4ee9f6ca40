//! The e-stop button: a normally-closed switch from a GPIO line to ground, the line pulled up.
//! Closed (not pressed) reads low; pressed — or a cut wire, or an unplugged button — reads high, so
//! the failure of the button's wiring stops the arm instead of silently disabling the stop.
//!
//! The pin is embedded-hal's [`InputPin`]: [`watch`] is the one consumer, generic over it; the
//! Raspberry Pi's pin (rppal, feature `gpio`) and [`SimPin`] are the two implementations.

use crate::runtime::Controls;
use embedded_hal::digital::{ErrorType, InputPin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A simulated pin: high while `level` is true.
#[derive(Debug, Clone, Default)]
pub struct SimPin {
    pub level: Arc<AtomicBool>,
    /// While true, reads fail (a pin whose driver went away).
    pub broken: Arc<AtomicBool>,
}

/// A simulated read failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimPinError;

impl embedded_hal::digital::Error for SimPinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl ErrorType for SimPin {
    type Error = SimPinError;
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool, SimPinError> {
        if self.broken.load(Ordering::SeqCst) { Err(SimPinError) } else { Ok(self.level.load(Ordering::SeqCst)) }
    }
    fn is_low(&mut self) -> Result<bool, SimPinError> {
        self.is_high().map(|h| !h)
    }
}

/// A running e-stop watcher; dropping it stops the thread.
pub type EStopWatch = crate::worker::Worker;

/// Polls the pin every `period`; a high reading or a failed read engages the e-stop (which the
/// loop then holds or turns torque off for). Releasing is never automatic: it takes `release` on
/// the control socket after the button is up again.
pub fn watch<P: InputPin + Send + 'static>(mut pin: P, controls: Arc<Controls>, period: Duration, name: String) -> Result<EStopWatch, String> {
    crate::worker::Worker::spawn("e-stop", move |s| {
        let mut reported = false;
        while !s.load(Ordering::SeqCst) {
            let pressed = pin.is_high();
            if !matches!(pressed, Ok(false)) {
                if !controls.estopped() && !reported {
                    eprintln!("e-stop: {}", if pressed.is_ok() { format!("{name} pressed (or its wire is cut)") } else { format!("{name} cannot be read") });
                }
                reported = true;
                controls.estop();
            } else {
                reported = false;
            }
            std::thread::sleep(period);
        }
    })
}

/// The Raspberry Pi's GPIO line `bcm` (BCM numbering) as the e-stop input, pulled up.
#[cfg(feature = "gpio")]
pub fn pi_pin(bcm: u8) -> Result<rppal::gpio::InputPin, String> {
    let gpio = rppal::gpio::Gpio::new().map_err(|e| format!("GPIO: {e} (the e-stop pin needs a Raspberry Pi's /dev/gpiomem)"))?;
    Ok(gpio.get(bcm).map_err(|e| format!("GPIO{bcm}: {e}"))?.into_input_pullup())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wait_for(f: impl Fn() -> bool) -> bool {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn a_pressed_button_or_a_broken_pin_stops_and_release_is_manual() {
        let controls = Controls::new("x").unwrap();
        let pin = SimPin::default();
        let (level, broken) = (pin.level.clone(), pin.broken.clone());
        let _w = watch(pin, controls.clone(), Duration::from_millis(1), "sim pin".into()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!controls.estopped(), "closed button: no stop");
        level.store(true, Ordering::SeqCst);
        assert!(wait_for(|| controls.estopped()), "pressed: stop");
        level.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert!(controls.estopped(), "letting go does not release");
        controls.release_estop();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!controls.estopped());
        broken.store(true, Ordering::SeqCst);
        assert!(wait_for(|| controls.estopped()), "an unreadable pin stops the arm");
    }
}
