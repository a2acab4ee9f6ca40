//! Hobby PWM servos (for arms without bus servos) through `embedded-hal` 1.0 `SetDutyCycle`.

use embedded_hal::pwm::SetDutyCycle;

/// A standard 50 Hz hobby servo: pulse width `min_us..max_us` over `range_deg`.
#[derive(Debug)]
pub struct PwmServo<P> {
    pwm: P,
    /// PWM period in microseconds (20 000 for 50 Hz).
    pub period_us: u32,
    pub min_us: u32,
    pub max_us: u32,
    pub range_deg: f32,
}

impl<P: SetDutyCycle> PwmServo<P> {
    pub fn new(pwm: P) -> Self {
        Self { pwm, period_us: 20_000, min_us: 500, max_us: 2_500, range_deg: 180.0 }
    }

    /// Pulse width for an angle in degrees, `0..=range_deg` (clamped).
    pub fn pulse_us(&self, deg: f32) -> u32 {
        let t = (deg / self.range_deg).clamp(0.0, 1.0);
        self.min_us + ((self.max_us - self.min_us) as f32 * t + 0.5) as u32
    }

    /// Drives the servo to `deg`.
    pub fn set_angle(&mut self, deg: f32) -> Result<(), P::Error> {
        let max = u32::from(self.pwm.max_duty_cycle());
        let duty = (u64::from(self.pulse_us(deg)) * u64::from(max) / u64::from(self.period_us)) as u16;
        self.pwm.set_duty_cycle(duty)
    }

    pub fn release(self) -> P {
        self.pwm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::convert::Infallible;

    /// A PWM channel that records the duty cycle set (stands in for a timer peripheral).
    struct Recorder {
        duty: u16,
    }

    impl embedded_hal::pwm::ErrorType for Recorder {
        type Error = Infallible;
    }

    impl SetDutyCycle for Recorder {
        fn max_duty_cycle(&self) -> u16 {
            20_000
        }
        fn set_duty_cycle(&mut self, duty: u16) -> Result<(), Infallible> {
            self.duty = duty;
            Ok(())
        }
    }

    #[test]
    fn angles_map_to_standard_pulse_widths() {
        let mut s = PwmServo::new(Recorder { duty: 0 });
        for (deg, us) in [(0.0, 500), (90.0, 1500), (180.0, 2500), (-30.0, 500), (200.0, 2500), (45.0, 1000)] {
            assert_eq!(s.pulse_us(deg), us);
            let _ = s.set_angle(deg);
            // With a 20 000-step period, one duty step is one microsecond.
            assert_eq!(u32::from(s.pwm.duty), us);
        }
    }
}
