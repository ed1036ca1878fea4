//! Monotonic time from the TSC, calibrated once against the PIT (8254, 1.193182 MHz).

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// PIT input clock.
const PIT_HZ: u64 = 1_193_182;
/// Calibration window (about 10 ms).
const CALIBRATION_TICKS: u16 = 11_932;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measures the TSC rate with PIT channel 2 as a one-shot gate (speaker off).
/// Returns the TSC frequency in Hz.
pub fn calibrate() -> u64 {
    let mut gate = Port::<u8>::new(0x61);
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    let [lo, hi] = CALIBRATION_TICKS.to_le_bytes();
    // SAFETY: ports 0x42/0x43/0x61 are the PIT and the system control port on every PC;
    // only channel 2 (not wired to an interrupt) and the speaker gate are changed.
    let (start, end) = unsafe {
        let g = gate.read();
        gate.write((g & !0x02) | 0x01); // gate on, speaker off
        cmd.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(lo);
        ch2.write(hi);
        // Restart the count by toggling the gate.
        let g = gate.read();
        gate.write(g & !0x01);
        gate.write(g | 0x01);
        let start = rdtsc();
        let mut spins: u64 = 0;
        // OUT2 (bit 5) goes high when the count reaches zero.
        while gate.read() & 0x20 == 0 {
            spins += 1;
            if spins > 100_000_000 {
                break;
            }
        }
        (start, rdtsc())
    };
    let ticks = end.wrapping_sub(start).max(1);
    let hz = ticks * PIT_HZ / u64::from(CALIBRATION_TICKS);
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_ORIGIN.store(start, Ordering::Relaxed);
    hz
}

/// The calibrated TSC frequency (0 before [`calibrate`]).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since calibration (0 before it).
pub fn now_ns() -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    let delta = rdtsc().saturating_sub(TSC_ORIGIN.load(Ordering::Relaxed));
    (u128::from(delta) * 1_000_000_000 / u128::from(hz)) as u64
}

/// Spins for at least `ns` nanoseconds.
pub fn spin_ns(ns: u64) {
    let hz = tsc_hz().max(1_000_000);
    let ticks = (u128::from(ns) * u128::from(hz) / 1_000_000_000) as u64;
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}
