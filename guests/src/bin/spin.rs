//! Prints `spinning`, then busy-loops forever without a hypercall: only preemption takes
//! its CPU away. `timer=MODE` makes it a hostile user of its own timer interrupt
//! (`TIMER_ARM`) first; none of them may keep the CPU from the other VMs:
//!
//! | mode | what it does |
//! |---|---|
//! | `off` (default) | nothing with the timer |
//! | `cli` | arms the timer in the past, then spins with interrupts off (`cli; jmp $`): its interrupt stays pending for ever |
//! | `once` | takes one interrupt (IF = 1), never arms again and spins with IF = 1; prints `timer fired once`, or `timer fired twice` and exits 1 if a second one comes |
//! | `storm` | re-arms in the past from its handler at every interrupt, so its own code never runs again; the handler prints `timer storm` at the 1000th and goes on |
//!
//! With a mode it first checks that vectors below 32 and above 255 are refused (`Invalid`)
//! and prints `timer: bad vectors refused`, or exits 2.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::Ordering;
use crx_abi::{Error, TIMER_VECTOR_DEFAULT};
use guests::cpu::{install_trap_idt, REARM, REARM_INSN, TICKS};
use guests::{gprintln, guest_main, Guest};

guest_main!(run);

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = core::hint::black_box(n.wrapping_add(1));
    }
}

fn run(guest: &Guest) -> i32 {
    let mode = guest.arg("timer").unwrap_or("off");
    if mode != "off" {
        let bad = [0u64, 6, 31, 256, u64::MAX];
        if bad.iter().any(|&v| guest.timer_arm(0, v) != Err(Error::Invalid)) {
            gprintln!(guest, "timer: a bad vector was accepted");
            return 2;
        }
        gprintln!(guest, "timer: bad vectors refused");
    }
    let vector = u64::from(TIMER_VECTOR_DEFAULT);
    match mode {
        "cli" => {
            let _ = guest.timer_arm(0, vector);
            gprintln!(guest, "spinning");
            // SAFETY: interrupts off, then a jump to itself: the guest stops here for ever.
            unsafe { core::arch::asm!("cli", "2:", "jmp 2b", options(noreturn, nomem, nostack)) }
        }
        "once" | "storm" => {
            REARM.store(mode == "storm", Ordering::SeqCst);
            REARM_INSN.store(guest.insn() as u8, Ordering::SeqCst);
            // SAFETY: at CPL 0 in the initial state, once, before interrupts are enabled.
            unsafe { install_trap_idt() };
            let now = guest.monotonic_ns().unwrap_or(0);
            let _ = guest.timer_arm(now + 1_000_000, vector);
            gprintln!(guest, "spinning");
            // SAFETY: the IDT just loaded has the timer's gate; the rest of this guest is
            // interruptible code (no red zone on this target).
            unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
            let mut reported = false;
            loop {
                let ticks = TICKS.load(Ordering::SeqCst);
                if mode == "once" && ticks > 1 {
                    gprintln!(guest, "timer fired twice");
                    return 1;
                }
                if !reported && mode == "once" && ticks == 1 {
                    reported = true;
                    gprintln!(guest, "timer fired once");
                }
                core::hint::spin_loop();
            }
        }
        _ => {
            gprintln!(guest, "spinning");
            spin()
        }
    }
}
