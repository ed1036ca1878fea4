//! Fills xmm0-15 with a pattern unique to this VM, then for `rounds=N` rounds (default 100)
//! computes a while, yields or sleeps 1 ms, and checks the registers every round. Prints
//! `fpu ok` and exits 0, or names the first register that changed and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::cpu::{load_xmm, store_xmm};
use guests::pattern::{first_mismatch, xmm_pattern};
use guests::{args, gprintln, guest_main, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    let Some(rounds) = args::number(guest.cmdline(), "rounds", 100) else {
        gprintln!(guest, "fpu: malformed rounds=");
        return 2;
    };
    let expected = xmm_pattern(guest.index());
    // SAFETY: the guests are built for x86_64-unknown-none (soft-float): no code but ours
    // uses XMM registers.
    unsafe { load_xmm(&expected) };
    for round in 0..rounds {
        // Long enough that a timer tick may preempt us in the middle.
        let mut x: u64 = round;
        for _ in 0..20_000 {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let _ = if round % 2 == 0 { guest.yield_now() } else { guest.sleep_ns(1_000_000) };
        let mut actual = [[0u8; 16]; 16];
        store_xmm(&mut actual);
        if let Some(reg) = first_mismatch(&expected, &actual) {
            gprintln!(guest, "fpu: xmm{reg} changed in round {round} of vm{}", guest.index());
            return 1;
        }
    }
    gprintln!(guest, "fpu ok: vm{} kept xmm0-15 over {rounds} rounds", guest.index());
    0
}
