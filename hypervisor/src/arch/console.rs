//! The console: COM1 (16550 UART) and, when an emulator offers it, the 0xE9 debug port.
//!
//! Bochs copies bytes written to port 0xE9 to its terminal at once, while its COM1 file is
//! flushed late; reading 0xE9 returns 0xE9 where the port exists. Every line goes to both.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::SerialPort;
use x86_64::instructions::interrupts;
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const E9: u16 = 0xe9;

struct Console {
    serial: SerialPort,
    e9: bool,
}

impl Console {
    fn put(&mut self, b: u8) {
        self.serial.send(b);
        if self.e9 {
            let mut port = Port::<u8>::new(E9);
            // SAFETY: port 0xE9 was probed and answered as the emulator's debug port.
            unsafe { port.write(b) };
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

/// Initializes COM1 (115200 8N1) and probes the 0xE9 port.
pub fn init() {
    // SAFETY: 0x3F8 is COM1 on every PC; the UART's registers are only touched here and
    // under the console lock.
    let mut serial = unsafe { SerialPort::new(COM1) };
    serial.init();
    let mut probe = Port::<u8>::new(E9);
    // SAFETY: reading an I/O port has no effect on memory; an absent port reads 0xFF.
    let e9 = unsafe { probe.read() } == 0xe9;
    *CONSOLE.lock() = Some(Console { serial, e9 });
}

/// Writes formatted text to the console, with interrupts off while the lock is held.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    interrupts::without_interrupts(|| {
        if let Some(c) = CONSOLE.lock().as_mut() {
            let _ = c.write_fmt(args);
        }
    });
}

/// Writes without taking the lock: for exception and panic reports, when the CPU that
/// holds the lock may be the one that faulted. Output from several CPUs may interleave.
pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
    // SAFETY: 0x3F8 is COM1; concurrent use only interleaves bytes, it cannot break memory.
    let serial = unsafe { SerialPort::new(COM1) };
    let mut probe = Port::<u8>::new(E9);
    // SAFETY: reading an I/O port has no effect on memory.
    let e9 = unsafe { probe.read() } == 0xe9;
    let _ = Console { serial, e9 }.write_fmt(args);
}

/// Prints to the console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::arch::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::arch::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
