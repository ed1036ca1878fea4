//! Writes a guest-physical address beyond its memory (`at=near|far|<address>`, see
//! `guests::oob`). The hypervisor must stop the VM; if the write completes, the guest says
//! so and exits 3.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::{gprintln, guest_main, oob, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    let Some(gpa) = oob::prepare(guest, "oob-write") else { return 2 };
    // SAFETY: `prepare` mapped the page in the guest's tables; what lies behind it is the
    // hypervisor's business, which is the point.
    unsafe { core::ptr::write_volatile(gpa as *mut u64, 0xbad0_bad0_bad0_bad0) };
    gprintln!(guest, "oob-write: wrote at {gpa:#x}: the VM was not stopped");
    3
}
