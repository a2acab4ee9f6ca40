//! lapa bridge firmware for the RP2040 (Raspberry Pi Pico).
//!
//! - USB CDC serial to the board, speaking lapa's bridge protocol (`../PROTOCOL.md`).
//! - UART0 at 1 Mbaud to the Feetech bus, half-duplex: GPIO0 (TX) and GPIO1 (RX) joined through a
//!   1 kΩ resistor on TX, as on Waveshare-style bus-servo adapters; our own echo is skipped.
//! - The bridge state machine (limits, max step, 100 ms host watchdog, fault latching) at a 500 Hz
//!   servo loop, the same code the simulated board runs (`lapa_bridge::mcu_app::McuApp`).
//! - The RP2040's hardware watchdog (250 ms), fed by the main loop. A panic records itself in a
//!   watchdog scratch register and resets the chip through the watchdog; after any boot the first
//!   thing the firmware does — before USB comes up and any host byte is read — is put the arm in
//!   its safe state (`McuApp::start`). The handshake reports the boot count and why the chip
//!   restarted (power-on, watchdog, panic), and an abnormal restart latches the RESET fault.
//! - Status LED (GPIO25): on while torque is on, blinking while a fault is latched.

#![no_std]
#![no_main]

use embedded_hal::digital::OutputPin;
use fugit::{ExtU32, RateExtU32};
use hal::pac;
use hal::uart::{DataBits, StopBits, UartConfig, UartDevice, UartPeripheral, ValidUartPinout};
use lapa_bridge::bridge::{Bridge, BridgeConfig};
use lapa_bridge::feetech::{Clock, FeetechBus};
use lapa_bridge::mcu_app::McuApp;
use lapa_wire::{BootInfo, FirmwareVersion, MAX_FRAME, ResetReason};
use rp2040_hal as hal;
use usb_device::prelude::*;
use usbd_serial::SerialPort;

/// Second-stage bootloader for the Pico's W25Q080 flash.
#[unsafe(link_section = ".boot2")]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

const XTAL_FREQ_HZ: u32 = 12_000_000;
const SERVO_TICK_US: u64 = 2_000;
/// Hardware watchdog period. The slowest servo tick stays well below it at the 2 ms bus timeout:
/// two sync reads retried with servos missing and one joint of a calibration push (calibrations go
/// to EEPROM one joint per tick). A hung loop resets the chip within this.
const WATCHDOG_MS: u32 = 250;
/// Scratch registers survive a watchdog reset and are cleared by power-on; scratch 4–7 belong to
/// the boot ROM.
const BOOT_MAGIC: u32 = 0x1A9A_B007;
const PANIC_MAGIC: u32 = 0x1A9A_DEAD;
/// Written to scratch 3 once this firmware has started the watchdog: the boot ROM's own reboots
/// (after a UF2 copy, `picotool reboot`) also set REASON.TIMER, and must not read as a crash
/// (pico-sdk tells them apart the same way).
const ARMED_MAGIC: u32 = 0x1A9A_A4ED;

/// Why and how often the chip booted, from the watchdog's REASON and scratch registers; records
/// this boot for the next one.
fn boot_info(wd: &pac::WATCHDOG) -> BootInfo {
    let why = wd.reason().read();
    let panicked = wd.scratch2().read().bits() == PANIC_MAGIC;
    let armed = wd.scratch3().read().bits() == ARMED_MAGIC;
    let reason = if panicked {
        ResetReason::Panic
    } else if armed && (why.timer().bit_is_set() || why.force().bit_is_set()) {
        ResetReason::Watchdog
    } else {
        ResetReason::PowerOn
    };
    let previous = if wd.scratch0().read().bits() == BOOT_MAGIC { wd.scratch1().read().bits() } else { 0 };
    let count = if reason == ResetReason::PowerOn { 1 } else { previous.saturating_add(1) };
    // SAFETY: plain 32-bit scratch registers with no side effects.
    wd.scratch0().write(|w| unsafe { w.bits(BOOT_MAGIC) });
    wd.scratch1().write(|w| unsafe { w.bits(count) });
    wd.scratch2().write(|w| unsafe { w.bits(0) });
    wd.scratch3().write(|w| unsafe { w.bits(0) });
    BootInfo { count, reason }
}

/// A panic must never leave the MCU silent with the servos torqued: mark it, then reset the chip
/// through the watchdog. The next boot sees the mark, puts the arm in its safe state and reports
/// `ResetReason::Panic` in the handshake.
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the program is ending; nothing else uses these registers after this point.
    let wd = unsafe { &*pac::WATCHDOG::ptr() };
    let psm = unsafe { &*pac::PSM::ptr() };
    wd.scratch2().write(|w| unsafe { w.bits(PANIC_MAGIC) });
    // Reset every power domain but the oscillators (as `Watchdog::start` configures it), in case
    // the panic came before the watchdog was started.
    psm.wdsel().write(|w| unsafe {
        w.bits(0x0001_ffff);
        w.xosc().clear_bit();
        w.rosc().clear_bit();
        w
    });
    wd.ctrl().write(|w| w.trigger().set_bit());
    loop {
        cortex_m::asm::nop();
    }
}

/// Microsecond clock from the RP2040 timer.
#[derive(Clone, Copy)]
struct McuClock(hal::Timer);

impl Clock for McuClock {
    fn now_us(&self) -> u64 {
        self.0.get_counter().ticks()
    }
}

/// `embedded-io` over the HAL's UART (raw FIFO access).
struct BusUart<D: UartDevice, P: ValidUartPinout<D>>(UartPeripheral<hal::uart::Enabled, D, P>);

/// The adapter never fails: UART receive errors drop bytes, which the packet checksum catches.
type UartError = core::convert::Infallible;

impl<D: UartDevice, P: ValidUartPinout<D>> embedded_io::ErrorType for BusUart<D, P> {
    type Error = UartError;
}

impl<D: UartDevice, P: ValidUartPinout<D>> embedded_io::Read for BusUart<D, P> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, UartError> {
        match self.0.read_raw(buf) {
            Ok(n) => Ok(n),
            Err(nb::Error::WouldBlock) => Ok(0),
            // Framing/parity/overrun: drop the bytes; the packet checksum catches the damage.
            Err(nb::Error::Other(_)) => Ok(0),
        }
    }
}

impl<D: UartDevice, P: ValidUartPinout<D>> embedded_io::ReadReady for BusUart<D, P> {
    fn read_ready(&mut self) -> Result<bool, UartError> {
        Ok(self.0.uart_is_readable())
    }
}

impl<D: UartDevice, P: ValidUartPinout<D>> embedded_io::Write for BusUart<D, P> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, UartError> {
        self.0.write_full_blocking(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), UartError> {
        while self.0.uart_is_busy() {}
        Ok(())
    }
}

#[hal::entry]
fn main() -> ! {
    let Some(mut pac) = pac::Peripherals::take() else { panic!("peripherals taken twice") };
    let boot = boot_info(&pac.WATCHDOG);
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(XTAL_FREQ_HZ, pac.XOSC, pac.CLOCKS, pac.PLL_SYS, pac.PLL_USB, &mut pac.RESETS, &mut watchdog) else {
        panic!("clock initialisation failed")
    };
    watchdog.pause_on_debug(true);
    watchdog.start(WATCHDOG_MS.millis());
    watchdog.write_scratch(hal::watchdog::ScratchRegister::Scratch3, ARMED_MAGIC);
    let timer = hal::Timer::new(pac.TIMER, &mut pac.RESETS, &clocks);
    let sio = hal::Sio::new(pac.SIO);
    let pins = hal::gpio::Pins::new(pac.IO_BANK0, pac.PADS_BANK0, sio.gpio_bank0, &mut pac.RESETS);
    let mut led = pins.gpio25.into_push_pull_output();

    let uart_pins = (pins.gpio0.into_function::<hal::gpio::FunctionUart>(), pins.gpio1.into_function::<hal::gpio::FunctionUart>());
    let Ok(uart) = UartPeripheral::new(pac.UART0, uart_pins, &mut pac.RESETS)
        .enable(UartConfig::new(1_000_000.Hz(), DataBits::Eight, None, StopBits::One), hal::Clock::freq(&clocks.peripheral_clock))
    else {
        panic!("peripheral initialisation failed")
    };

    let clock = McuClock(timer);
    let mut bus = FeetechBus::new(BusUart(uart), clock);
    bus.echo = true;
    bus.timeout_us = 2_000;
    bus.retries = 1;
    let cfg = BridgeConfig { firmware: FirmwareVersion { major: 0, minor: 2, patch: 0 }, arm_id: *b"so101-pico\0\0\0\0\0\0", ..BridgeConfig::default() };
    // The default configuration is valid (tested); should it ever not be, reset through the panic
    // path rather than run without limits. Init failures below do the same.
    let Ok(bridge) = Bridge::new(cfg, clock.now_us() / 1000, boot) else { panic!("invalid bridge configuration") };
    let mut app = McuApp::new(bridge, bus);
    // Safe state first, before the host can say anything: the servos may still be torqued and
    // driving toward the goal of the firmware that just died. Bus errors are latched as faults.
    watchdog.feed();
    let _ = app.start();
    watchdog.feed();

    let usb_bus =
        usb_device::class_prelude::UsbBusAllocator::new(hal::usb::UsbBus::new(pac.USBCTRL_REGS, pac.USBCTRL_DPRAM, clocks.usb_clock, true, &mut pac.RESETS));
    let mut serial = SerialPort::new(&usb_bus);
    let Ok(builder) = UsbDeviceBuilder::new(&usb_bus, UsbVidPid(0x16c0, 0x27dd))
        .strings(&[StringDescriptors::default().manufacturer("lapa").product("lapa bridge").serial_number("so101")])
    else {
        panic!("peripheral initialisation failed")
    };
    let mut usb_dev = builder.device_class(usbd_serial::USB_CLASS_CDC).build();

    let mut rx = [0u8; 64];
    let mut out = [0u8; MAX_FRAME];
    let mut next_tick = clock.now_us();
    loop {
        watchdog.feed();
        let now_us = clock.now_us();
        let now_ms = now_us / 1000;
        if usb_dev.poll(&mut [&mut serial])
            && let Ok(n) = serial.read(&mut rx)
        {
            for &b in rx.get(..n).unwrap_or(&[]) {
                if let Some(reply) = app.on_host_byte(b, now_ms, &mut out) {
                    let mut sent = 0;
                    let mut tries = 0;
                    while sent < reply.len() && tries < 1000 {
                        match serial.write(reply.get(sent..).unwrap_or(&[])) {
                            Ok(k) => sent += k,
                            Err(_) => {
                                usb_dev.poll(&mut [&mut serial]);
                                tries += 1;
                            }
                        }
                    }
                }
            }
        }
        if now_us >= next_tick {
            next_tick = now_us + SERVO_TICK_US;
            // Bus errors are latched as faults inside the app and reported to the host.
            let _ = app.servo_tick(now_ms);
            let faulted = app.bridge.faults() != 0;
            let on = if faulted { (now_ms / 250).is_multiple_of(2) } else { app.bridge.torque() };
            let _ = if on { led.set_high() } else { led.set_low() };
        }
    }
}
