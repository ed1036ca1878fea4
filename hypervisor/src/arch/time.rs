//! Monotonic time from the TSC, calibrated once against the PIT (8254, 1.193182 MHz).

use crate::decode::pit::{self, Calibration, PitReading, Step};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_ORIGIN: AtomicU64 = AtomicU64::new(0);

/// Calibration runs (PIT countdowns of about 55 ms) tried before the last resort.
const CALIBRATION_RUNS: u32 = 4;
/// Readings in one run at most (a run ends well before: the countdown lasts about 55 ms).
const READINGS_PER_RUN: u32 = 1_000_000;

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Starts PIT channel 2 counting down from 0xFFFF (mode 0, speaker off).
fn start_countdown() {
    let mut gate = Port::<u8>::new(0x61);
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x42/0x43/0x61 are the PIT and the system control port on every PC;
    // only channel 2 (not wired to an interrupt) and the speaker gate are changed.
    unsafe {
        let g = gate.read();
        gate.write(g & !0x03); // gate off, speaker off
        cmd.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(0xFF);
        ch2.write(0xFF);
        gate.write((g & !0x02) | 0x01); // gate on: the count starts
    }
}

/// Channel 2's count, latched, between two TSC reads.
fn read_count() -> PitReading {
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    let tsc_before = rdtsc();
    // SAFETY: the counter-latch command for channel 2 and two reads of its count only
    // read the timer.
    let (lo, hi) = unsafe {
        cmd.write(0b1000_0000);
        (ch2.read(), ch2.read())
    };
    PitReading { count: u16::from_le_bytes([lo, hi]), tsc_before, tsc_after: rdtsc() }
}

/// Measures the TSC rate against PIT channel 2 from bracketed readings of its count
/// (`decode::pit` says why), and returns it in Hz. After [`CALIBRATION_RUNS`] runs that
/// found no good window, it takes the best of one last run, bracket widths and all.
pub fn calibrate() -> u64 {
    let origin = rdtsc();
    let mut hz = 0;
    'runs: for _ in 0..CALIBRATION_RUNS {
        start_countdown();
        let mut run = Calibration::new();
        for _ in 0..READINGS_PER_RUN {
            match run.feed(read_count()) {
                Step::More => {}
                Step::Done(found) => {
                    hz = found;
                    break 'runs;
                }
                Step::Again => break,
            }
        }
    }
    if hz == 0 {
        hz = last_resort();
    }
    TSC_HZ.store(hz, Ordering::Relaxed);
    TSC_ORIGIN.store(origin, Ordering::Relaxed);
    hz
}

/// One countdown measured from its first reading to one about 10 ms later, however wide
/// the brackets; 1 GHz if the PIT does not count at all.
fn last_resort() -> u64 {
    start_countdown();
    let first = read_count();
    for _ in 0..READINGS_PER_RUN {
        let r = read_count();
        if first.count.saturating_sub(r.count) >= pit::MIN_WINDOW_TICKS {
            return pit::tsc_hz(&first, &r, u64::MAX / 4_000_000).unwrap_or(1_000_000_000);
        }
    }
    1_000_000_000
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
