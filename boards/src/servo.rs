//! Servo models: what a count means and what the registers can hold.

/// A bus servo model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServoModel {
    pub name: &'static str,
    /// Value of the Model_Number register (address 3).
    pub model_number: u16,
    /// Position counts per turn.
    pub resolution: u16,
    /// Sign bit of the sign-magnitude Goal/Present_Position registers.
    pub position_sign_bit: u8,
    /// Sign bit of the sign-magnitude Homing_Offset register.
    pub homing_offset_sign_bit: u8,
    /// Sign bit of the sign-magnitude Present_Load register.
    pub load_sign_bit: u8,
}

impl ServoModel {
    /// Largest position count (`resolution − 1`); LeRobot's `max_res`.
    pub const fn max_count(&self) -> u16 {
        self.resolution.saturating_sub(1)
    }

    /// Largest homing-offset magnitude the register holds below its sign bit.
    pub const fn max_homing_offset(&self) -> i16 {
        // The sign bit is below 15 for every model; a larger one saturates instead of overflowing.
        match 1i16.checked_shl(self.homing_offset_sign_bit as u32) {
            Some(v) if v > 0 => v.saturating_sub(1),
            _ => i16::MAX,
        }
    }
}

/// Feetech STS3215 (SO-100 / SO-101 arms): 4096 counts per turn, positions sign-magnitude in bit 15,
/// homing offset sign-magnitude in bit 11 (±2047). Present = Actual − Homing_Offset.
pub const STS3215: ServoModel =
    ServoModel { name: "sts3215", model_number: 777, resolution: 4096, position_sign_bit: 15, homing_offset_sign_bit: 11, load_sign_bit: 10 };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts3215_ranges() {
        assert_eq!(STS3215.max_count(), 4095);
        assert_eq!(STS3215.max_homing_offset(), 2047);
        let odd = ServoModel { homing_offset_sign_bit: 15, ..STS3215 };
        assert_eq!(odd.max_homing_offset(), i16::MAX);
        let silly = ServoModel { homing_offset_sign_bit: 200, ..STS3215 };
        assert_eq!(silly.max_homing_offset(), i16::MAX);
    }
}
