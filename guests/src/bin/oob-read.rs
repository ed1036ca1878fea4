//! Reads a guest-physical address beyond its memory (`at=near|far|<address>`, see
//! `guests::oob`). The hypervisor must stop the VM; if the read returns, the guest prints
//! what it read and exits 3.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{gprintln, guest_main, oob, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    let Some(gpa) = oob::prepare(guest, "oob-read") else { return 2 };
    // SAFETY: `prepare` mapped the page in the guest's tables; what lies behind it is the
    // hypervisor's business, which is the point.
    let value = unsafe { core::ptr::read_volatile(gpa as *const u64) };
    gprintln!(guest, "oob-read: read {value:#x} at {gpa:#x}: the VM was not stopped");
    3
}
