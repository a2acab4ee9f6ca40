//! The real hardware a board profile names: the servo bus of the follower (or the leader).

use lapa_boards::profile::SerialSection;
use lapa_bridge::arm::{Arm, BridgeArm, FeetechArm};
use lapa_bridge::feetech::FeetechBus;
use lapa_bridge::link::Link;
use lapa_bridge::serial::{SerialIo, find_usb_port};
use lapa_bridge::simwire::StdClock;

/// An arm the loop can own on another thread.
pub type BoxedArm = Box<dyn Arm + Send>;

/// The device path a serial section names (its `port`, or the port with its USB id).
pub fn port_path(s: &SerialSection) -> Result<String, String> {
    match (&s.port, s.usb_ids()) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(Ok((vid, pid)))) => find_usb_port(vid, pid).map_err(|found| {
            format!(
                "no serial port with USB id {vid:04x}:{pid:04x} (USB serial ports here: {})",
                if found.is_empty() { "none".into() } else { found.join(", ") }
            )
        }),
        (None, Some(Err(e))) => Err(e),
        (None, None) => Err("the profile names neither a port nor a USB id".into()),
    }
}

/// Opens (does not connect) the arm on a serial section: a Feetech bus through a USB-TTL adapter
/// (`link = "feetech"`, at the section's baud) or a lapa bridge MCU (`link = "bridge"`).
pub fn open_arm(s: &SerialSection) -> Result<BoxedArm, String> {
    let path = port_path(s)?;
    match s.link.as_str() {
        "bridge" => Ok(Box::new(BridgeArm::new(Link::open(&path).map_err(|e| e.to_string())?))),
        _ => {
            let io = SerialIo::open_at(&path, s.baud).map_err(|e| format!("{path}: {e} (is the bus board plugged in, and are you in the dialout group?)"))?;
            Ok(Box::new(FeetechArm::new(FeetechBus::new(io, StdClock::default()))))
        }
    }
}
