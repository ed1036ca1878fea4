//! Prints `hello from vm<index> of <count>` and exits with 0.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{gprintln, guest_main, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    gprintln!(guest, "hello from vm{} of {}", guest.index(), guest.count());
    0
}
