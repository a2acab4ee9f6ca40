//! The status LED (a board profile's `gpio.status_led`): steady on while the arm may move, a slow
//! blink (1 Hz) while paused, a fast blink (4 Hz) while the e-stop holds, off once the run ends.
//! Someone standing by the arm sees whether it may move without looking at a screen.
//!
//! The pin is embedded-hal's [`OutputPin`]: [`drive`] is the one consumer, generic over it; the
//! Raspberry Pi's pin (rppal, feature `gpio`) and [`SimLed`] are the two implementations.

use crate::runtime::Controls;
use embedded_hal::digital::{ErrorType, OutputPin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The arm may move: on.
    Live,
    /// Paused: 1 Hz.
    Paused,
    /// E-stop: 4 Hz.
    Stopped,
    /// The run is ending: off.
    Off,
}

impl Shown {
    pub fn of(controls: &Controls) -> Self {
        if controls.quitting() {
            Shown::Off
        } else if controls.estopped() {
            Shown::Stopped
        } else if controls.paused() {
            Shown::Paused
        } else {
            Shown::Live
        }
    }

    /// The LED's level `t` into the pattern.
    pub fn level(self, t: Duration) -> bool {
        let phase = |hz: u128| (t.as_millis() * hz * 2 / 1000).is_multiple_of(2);
        match self {
            Shown::Live => true,
            Shown::Paused => phase(1),
            Shown::Stopped => phase(4),
            Shown::Off => false,
        }
    }
}

/// A simulated LED: its level, and how many times it was switched.
#[derive(Debug, Clone, Default)]
pub struct SimLed {
    pub level: Arc<AtomicBool>,
    pub switches: Arc<AtomicU64>,
}

/// A simulated LED never fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimLedError {}

impl embedded_hal::digital::Error for SimLedError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        match *self {}
    }
}

impl ErrorType for SimLed {
    type Error = SimLedError;
}

impl OutputPin for SimLed {
    fn set_low(&mut self) -> Result<(), SimLedError> {
        if self.level.swap(false, Ordering::SeqCst) {
            self.switches.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), SimLedError> {
        if !self.level.swap(true, Ordering::SeqCst) {
            self.switches.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A running status LED; dropping it switches the LED off and stops the thread.
pub type StatusLed = crate::worker::Worker;

/// Shows the controls' state on `pin`, updated every `period` (a few tens of ms). A failed write
/// is reported once and retried: the LED is a sign, never a safety device (the e-stop is).
pub fn drive<P: OutputPin + Send + 'static>(mut pin: P, controls: Arc<Controls>, period: Duration, name: String) -> Result<StatusLed, String> {
    crate::worker::Worker::spawn("status-led", move |s| {
        let (mut shown, mut since, mut reported) = (None, Instant::now(), false);
        loop {
            let ending = s.load(Ordering::SeqCst);
            let now = if ending { Shown::Off } else { Shown::of(&controls) };
            if shown != Some(now) {
                (shown, since) = (Some(now), Instant::now());
            }
            let r = if now.level(since.elapsed()) { pin.set_high() } else { pin.set_low() };
            match r {
                Err(e) if !reported => {
                    eprintln!("status LED {name}: {e:?} (carrying on without it)");
                    reported = true;
                }
                _ => {}
            }
            if ending {
                return;
            }
            std::thread::sleep(period);
        }
    })
}

/// The Raspberry Pi's GPIO line `bcm` (BCM numbering) as the status LED output, starting off.
#[cfg(feature = "gpio")]
pub fn pi_led(bcm: u8) -> Result<rppal::gpio::OutputPin, String> {
    let gpio = rppal::gpio::Gpio::new().map_err(|e| format!("GPIO: {e} (the status LED needs a Raspberry Pi's /dev/gpiomem)"))?;
    Ok(gpio.get(bcm).map_err(|e| format!("GPIO{bcm}: {e}"))?.into_output_low())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_patterns_blink_at_their_rates() {
        let ms = Duration::from_millis;
        assert!(Shown::Live.level(ms(0)) && Shown::Live.level(ms(777)));
        assert!(!Shown::Off.level(ms(0)));
        assert_eq!([0, 499, 500, 999, 1000].map(|t| Shown::Paused.level(ms(t))), [true, true, false, false, true]);
        assert_eq!([0, 124, 125, 250, 375].map(|t| Shown::Stopped.level(ms(t))), [true, true, false, true, false]);
    }

    /// Levels seen over `span`, sampled every 5 ms.
    fn watch(led: &SimLed, span: Duration) -> (bool, bool) {
        let (mut on, mut off, t) = (false, false, Instant::now());
        while t.elapsed() < span {
            if led.level.load(Ordering::SeqCst) {
                on = true
            } else {
                off = true
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (on, off)
    }

    fn wait_until(f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() && t.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_led_follows_the_controls_and_goes_off_at_the_end() {
        let controls = Controls::new("push").unwrap();
        let led = SimLed::default();
        let handle = drive(led.clone(), controls.clone(), Duration::from_millis(10), "sim".into()).unwrap();
        wait_until(|| led.level.load(Ordering::SeqCst));
        assert_eq!(watch(&led, Duration::from_millis(300)), (true, false), "steady on while the arm may move");
        controls.estop();
        assert_eq!(watch(&led, Duration::from_millis(400)), (true, true), "blinking while stopped");
        controls.release_estop();
        // Released once the LED has stayed on longer than a 4 Hz blink's on-phase (125 ms).
        let t = Instant::now();
        let mut on_since = Instant::now();
        while on_since.elapsed() < Duration::from_millis(200) && t.elapsed() < Duration::from_secs(3) {
            if !led.level.load(Ordering::SeqCst) {
                on_since = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(watch(&led, Duration::from_millis(300)), (true, false), "on again once released");
        controls.set_paused(true);
        let before = led.switches.load(Ordering::SeqCst);
        watch(&led, Duration::from_millis(1100));
        let blinks = led.switches.load(Ordering::SeqCst) - before;
        assert!((1..=4).contains(&blinks), "1 Hz while paused: {blinks} switches in 1.1 s");
        drop(handle);
        assert!(!led.level.load(Ordering::SeqCst), "off when the run ends");
    }
}
