//! Measures the hypercall round trip: prints `bench: first_ns=<monotonic at entry>`, then
//! makes `calls=N` (default 10000) VERSION hypercalls and prints
//! `bench: hypercalls=N ns=T` with T from TIME_MONOTONIC, and exits 0.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{args, gprintln, guest_main, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    let first = guest.monotonic_ns();
    let Some(calls) = args::number(guest.cmdline(), "calls", 10_000) else {
        gprintln!(guest, "bench: malformed calls=");
        return 2;
    };
    let (Ok(first), Ok(t0)) = (first, guest.monotonic_ns()) else {
        gprintln!(guest, "bench: TIME_MONOTONIC failed");
        return 1;
    };
    gprintln!(guest, "bench: first_ns={first}");
    let mut bad = 0u64;
    for _ in 0..calls {
        if guest.version() != Ok(u64::from(crx_abi::ABI_VERSION)) {
            bad += 1;
        }
    }
    let Ok(t1) = guest.monotonic_ns() else {
        gprintln!(guest, "bench: TIME_MONOTONIC failed");
        return 1;
    };
    gprintln!(guest, "bench: hypercalls={calls} ns={}", t1.saturating_sub(t0));
    if bad != 0 {
        gprintln!(guest, "bench: {bad} VERSION calls returned something else");
        return 1;
    }
    0
}
