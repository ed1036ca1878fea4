//! Prints `counter vm<i> of <n>`, then `lines=N` (default 5) numbered lines, yielding after
//! each, and exits 0. Every numbered line carries the same fixed tail, so a line torn or
//! mixed with another VM's is visible: `vm<i> line <k> of <N> abcdefghijklmnopqrstuvwxyz0123456789`.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{args, gprintln, guest_main, Guest};

guest_main!(run);

/// The fixed tail of every numbered line.
const TAIL: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

fn run(guest: &Guest) -> i32 {
    let Some(lines) = args::number(guest.cmdline(), "lines", 5) else {
        gprintln!(guest, "counter: malformed lines=");
        return 2;
    };
    let i = guest.index();
    gprintln!(guest, "counter vm{i} of {}", guest.count());
    for k in 1..=lines {
        gprintln!(guest, "vm{i} line {k} of {lines} {TAIL}");
        let _ = guest.yield_now();
    }
    0
}
