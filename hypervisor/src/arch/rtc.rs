//! The CMOS real-time clock (ports 0x70/0x71): the wall-clock time at boot.

use crate::vm::clock;
use x86_64::instructions::port::Port;

/// Reads the clock (UTC assumed), in ns since the Unix epoch; `None` when the registers
/// hold no valid date.
pub fn read_ns() -> Option<u64> {
    let mut index = Port::<u8>::new(0x70);
    let mut data = Port::<u8>::new(0x71);
    let mut reg = |r: u8| {
        // SAFETY: 0x70/0x71 are the CMOS index and data ports on every PC; reading the
        // clock registers has no side effects (NMI stays enabled: bit 7 clear).
        unsafe {
            index.write(r);
            data.read()
        }
    };
    // Wait while an update is in progress (status A bit 7), a bounded number of times.
    for _ in 0..100_000 {
        if reg(0x0a) & 0x80 == 0 {
            break;
        }
    }
    let (s, mi, h, d, mo, y) = (reg(0), reg(2), reg(4), reg(7), reg(8), reg(9));
    clock::rtc_ns(clock::RtcRegs {
        second: s,
        minute: mi,
        hour: h,
        day: d,
        month: mo,
        year: y,
        status_b: reg(0x0b),
    })
}
