//! The arithmetic of calibrating the TSC against the PIT (8254, 1.193182 MHz), fed by
//! `arch::time` with readings of PIT channel 2 counting down (mode 0).
//!
//! Each reading of the count is bracketed by two TSC reads. A CPU taken away inside a
//! bracket (an SMI on a real machine; under an emulator, the host running another thread)
//! makes that bracket wide, and the reading's time is only known to within its width; taken
//! away between two readings, it harms nothing, since both clocks go on alike. So the
//! window runs from the narrowest of the first readings to the first reading, at least
//! [`MIN_WINDOW_TICKS`] later, whose two brackets together leave the result within
//! [`MAX_ERROR_PPM`]. A single gated window polled at its end instead counts any time the CPU
//! was away at the end as part of the window, and a clock calibrated that way runs slow
//! by as much.

/// PIT input clock.
pub const PIT_HZ: u64 = 1_193_182;
/// The shortest window: about 10 ms.
pub const MIN_WINDOW_TICKS: u16 = 11_932;
/// The largest error the brackets may leave in the result, in parts per million.
pub const MAX_ERROR_PPM: u64 = 500;
/// Readings among which the window's start is chosen (the narrowest bracket).
pub const WARMUP_READINGS: u32 = 8;
/// The count is given up on below this (mode 0 wraps to 0xFFFF after 0).
const LOW_COUNT: u16 = 1_000;

/// One reading of the count, between two TSC reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PitReading {
    /// The latched count.
    pub count: u16,
    /// The TSC just before the latch command.
    pub tsc_before: u64,
    /// The TSC just after the count was read.
    pub tsc_after: u64,
}

impl PitReading {
    /// How long the reading took, in TSC ticks.
    pub fn width(&self) -> u64 {
        self.tsc_after.saturating_sub(self.tsc_before)
    }

    fn mid(&self) -> u64 {
        self.tsc_before.saturating_add(self.width() / 2)
    }
}

/// The TSC frequency in Hz over the window from `a` to `b`, or `None` if `b` is not later
/// in both clocks or the brackets leave more than `max_error_ppm` of uncertainty.
pub fn tsc_hz(a: &PitReading, b: &PitReading, max_error_ppm: u64) -> Option<u64> {
    let ticks = u64::from(a.count.checked_sub(b.count).filter(|t| *t > 0)?);
    let tsc = b.mid().checked_sub(a.mid()).filter(|t| *t > 0)?;
    let uncertainty = u128::from(a.width()) + u128::from(b.width());
    // (wa + wb) / 2 <= tsc * ppm / 1e6, kept in integers.
    if uncertainty * 1_000_000 > u128::from(tsc) * 2 * u128::from(max_error_ppm) {
        return None;
    }
    u64::try_from(u128::from(tsc) * u128::from(PIT_HZ) / u128::from(ticks)).ok()
}

/// What [`Calibration::feed`] says after a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Another reading, please.
    More,
    /// The TSC runs at this many Hz.
    Done(u64),
    /// The count ran low (or went the wrong way) before a good window: program the PIT
    /// again and start a new calibration.
    Again,
}

/// One calibration run over one countdown of the PIT.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    start: Option<PitReading>,
    readings: u32,
}

impl Calibration {
    /// A run with no reading yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next reading.
    pub fn feed(&mut self, r: PitReading) -> Step {
        self.readings = self.readings.saturating_add(1);
        if r.count < LOW_COUNT {
            return Step::Again;
        }
        if self.readings <= WARMUP_READINGS {
            if self.start.is_none_or(|s| r.width() <= s.width()) {
                self.start = Some(r);
            }
            return Step::More;
        }
        let Some(start) = self.start else { return Step::Again };
        if r.count > start.count || r.tsc_before < start.tsc_after {
            return Step::Again;
        }
        if start.count - r.count < MIN_WINDOW_TICKS {
            return Step::More;
        }
        match tsc_hz(&start, &r, MAX_ERROR_PPM) {
            Some(hz) => Step::Done(hz),
            None => Step::More,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2 GHz TSC and readings of `width` ticks at PIT tick `t` (the count is 0xFFFF - t).
    fn at(t: u64, width: u64, away_inside: u64) -> PitReading {
        let tsc = 1_000_000_000_000 + t * 2_000_000_000 / PIT_HZ;
        let before = tsc - width / 2 - away_inside;
        PitReading { count: (0xFFFF - t) as u16, tsc_before: before, tsc_after: tsc + width / 2 }
    }

    #[test]
    fn a_window_gives_the_rate() {
        let hz = tsc_hz(&at(100, 2000, 0), &at(100 + 11_932, 2000, 0), MAX_ERROR_PPM).unwrap();
        assert!(hz.abs_diff(2_000_000_000) < 2_000_000_000 / 10_000, "{hz}");
        // Backwards, empty or too uncertain windows give nothing.
        assert_eq!(tsc_hz(&at(20_000, 10, 0), &at(100, 10, 0), MAX_ERROR_PPM), None);
        assert_eq!(tsc_hz(&at(100, 10, 0), &at(100, 10, 0), MAX_ERROR_PPM), None);
        assert_eq!(tsc_hz(&at(100, 10_000_000, 0), &at(12_100, 10, 0), MAX_ERROR_PPM), None);
    }

    /// The host took the CPU away for 2 ms inside two readings of three: the calibration
    /// still finds 2 GHz, where a gated window polled late could be off by a fifth.
    #[test]
    fn time_away_does_not_bend_the_rate() {
        let mut c = Calibration::new();
        let away = 4_000_000; // 2 ms of TSC
        let mut t = 50;
        let mut step = Step::More;
        let mut n = 0;
        while step == Step::More {
            n += 1;
            // Every third reading is clean; the others have the CPU away inside them.
            let inside = if n % 3 == 0 { 0 } else { away };
            step = c.feed(at(t, 3000, inside));
            t += 1 + (inside * PIT_HZ / 2_000_000_000);
            assert!(n < 10_000, "never done");
        }
        let Step::Done(hz) = step else { panic!("{step:?}") };
        assert!(hz.abs_diff(2_000_000_000) <= 2_000_000_000 * MAX_ERROR_PPM / 1_000_000, "{hz}");
    }

    #[test]
    fn a_count_that_runs_low_or_backwards_starts_again() {
        let mut c = Calibration::new();
        for i in 0..WARMUP_READINGS {
            assert_eq!(c.feed(at(10 + u64::from(i), 100, 0)), Step::More);
        }
        assert_eq!(c.feed(at(5, 100, 0)), Step::Again, "the count went up");
        let mut c = Calibration::new();
        assert_eq!(c.feed(at(0xFFFF - 10, 100, 0)), Step::Again, "the count is nearly out");
        // Readings so wide that no window is good enough: the run ends when the count is low.
        let mut c = Calibration::new();
        let mut t = 10;
        let step = loop {
            let s = c.feed(at(t, 200_000_000, 0));
            if s != Step::More {
                break s;
            }
            t += 500;
        };
        assert_eq!(step, Step::Again);
    }
}
