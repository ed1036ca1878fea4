//! Prints `forever`, then halts with interrupts off, for ever: it never exits, so only the
//! runner's `--timeout` (or the hypervisor stopping it) ends it.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{cpu, gprintln, guest_main, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    gprintln!(guest, "forever");
    cpu::halt_forever()
}
