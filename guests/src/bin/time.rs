//! Checks the clocks: wall time after 2020-01-01, and a 100 ms SLEEP_UNTIL that advances the
//! monotonic clock by at least 100 ms. Prints `time ok` and exits 0, or says why and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{gprintln, guest_main, Guest};

guest_main!(run);

/// 2020-01-01T00:00:00Z in nanoseconds since the Unix epoch.
const Y2020_NS: u64 = 1_577_836_800 * 1_000_000_000;
const SLEEP_NS: u64 = 100_000_000;

fn run(guest: &Guest) -> i32 {
    let (m0, wall) = match (guest.monotonic_ns(), guest.wall_ns()) {
        (Ok(m), Ok(w)) => (m, w),
        (m, w) => {
            gprintln!(guest, "time: clock hypercalls failed: monotonic {m:?}, wall {w:?}");
            return 1;
        }
    };
    if wall < Y2020_NS {
        gprintln!(guest, "time: wall clock {wall} ns is before 2020-01-01");
        return 1;
    }
    if let Err(e) = guest.sleep_until(m0 + SLEEP_NS) {
        gprintln!(guest, "time: SLEEP_UNTIL failed: {e:?}");
        return 1;
    }
    let m1 = match guest.monotonic_ns() {
        Ok(m) => m,
        Err(e) => {
            gprintln!(guest, "time: TIME_MONOTONIC failed: {e:?}");
            return 1;
        }
    };
    let slept = m1.wrapping_sub(m0);
    if m1 < m0 || slept < SLEEP_NS {
        gprintln!(guest, "time: monotonic went from {m0} to {m1} ns over a 100 ms sleep");
        return 1;
    }
    gprintln!(guest, "time ok: slept {slept} ns, wall {} s", wall / 1_000_000_000);
    0
}
