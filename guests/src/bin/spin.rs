//! Prints `spinning`, then busy-loops forever without a hypercall: only preemption takes
//! its CPU away.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{gprintln, guest_main, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    gprintln!(guest, "spinning");
    let mut n: u64 = 0;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}
