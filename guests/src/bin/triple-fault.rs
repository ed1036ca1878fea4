//! Loads an empty IDT and executes `int3`: the breakpoint cannot be delivered, nor the double
//! fault that follows, so the CPU triple-faults and the hypervisor must stop the VM. If the
//! guest carries on, it says so and exits 3.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::cpu::load_empty_idt;
use guests::{gprintln, guest_main, Guest};

guest_main!(run);

fn run(guest: &Guest) -> i32 {
    gprintln!(guest, "triple-fault: loading an empty IDT and raising #BP");
    // SAFETY: ending the VM is the point.
    unsafe {
        load_empty_idt();
        core::arch::asm!("int3", options(nomem, nostack));
    }
    gprintln!(guest, "triple-fault: still running after int3 with an empty IDT");
    3
}
