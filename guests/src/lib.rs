//! Test guests: small `no_std` kernels, each a static x86_64 ELF linked at 1 MiB, that run as
//! VMs of the hypervisor and exercise one part of the contract in `crx_abi` (console, exit
//! codes, clocks, scheduling, vCPU state isolation) or misbehave on purpose (hostile guests).
//!
//! Every binary in `src/bin/` is one guest. It starts with [`guest_main!`], which provides
//! the `_start` entry (the hypervisor has already set up 64-bit mode and a stack; RDI holds
//! the guest-physical address of [`crx_abi::BootParams`], RSI the vCPU's index) and calls
//! the guest's `run` function with a [`Guest`] handle; `run`'s return value becomes the
//! VM's exit code. In a VM of several vCPUs only the first runs `run` and the others park,
//! unless the guest says `guest_main!(run, every_vcpu)`.
//!
//! Built for `x86_64-unknown-none` (`cargo xtask vm build-guests`) they are guests; built for
//! the host (plain `cargo build`/`cargo test`) each binary is a stub that says so, and the
//! pure modules ([`args`], [`line`], [`pattern`]) are unit-tested.
//!
//! Guest command lines are space-separated words, `key=value` or bare flags (see [`args`]).
#![cfg_attr(not(test), no_std)]

pub mod args;
pub mod cpu;
pub mod line;
pub mod oob;
pub mod pattern;
pub mod rt;

pub use rt::Guest;

/// Declares a guest binary: `guest_main!(run)` with `fn run(guest: &Guest) -> i32`, run on
/// the first vCPU only; `guest_main!(run, every_vcpu)` runs it on every vCPU.
///
/// On `x86_64-unknown-none` it emits `_start` (a single `call` into the runtime, which reads
/// the boot parameters and ends the VM with `run`'s result) and the panic handler, which
/// prints the panic and exits with code 101. On the host it emits a `main` that refuses to run.
#[macro_export]
macro_rules! guest_main {
    ($run:path) => {
        $crate::guest_main!(@with $run, $crate::rt::Vcpus::First);
    };
    ($run:path, every_vcpu) => {
        $crate::guest_main!(@with $run, $crate::rt::Vcpus::Every);
    };
    (@with $run:path, $which:expr) => {
        #[cfg(target_os = "none")]
        extern "sysv64" fn __guest_start(boot_params_gpa: u64, vcpu: u64) -> ! {
            $crate::rt::start(boot_params_gpa, vcpu, $which, $run)
        }

        // The hypervisor enters here with RSP 16-byte aligned, RDI = the boot parameters'
        // address and RSI = the vCPU's index: the first two arguments of the System V
        // calling convention.
        #[cfg(target_os = "none")]
        core::arch::global_asm!(
            ".section .text._start, \"ax\"",
            ".globl _start",
            "_start:",
            "call {start}",
            "ud2",
            ".previous",
            start = sym __guest_start,
        );

        #[cfg(target_os = "none")]
        #[panic_handler]
        fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
            $crate::rt::panic(info)
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            let _: fn(&$crate::Guest) -> i32 = $run;
            eprintln!("this is a guest kernel for the hypervisor; build it with `cargo xtask vm build-guests`");
            std::process::exit(2);
        }
    };
}

/// Prints one formatted line on the VM's console in a single hypercall (so that lines of
/// VMs running side by side never interleave): `gprintln!(guest, "x = {}", x)`.
/// Text beyond [`line::LINE_MAX`] bytes is cut and ends in `...`.
#[macro_export]
macro_rules! gprintln {
    ($guest:expr, $($arg:tt)*) => {{
        let mut line = $crate::line::Line::new();
        // Writing into a `Line` never fails: overflow is cut and marked.
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!($($arg)*));
        $guest.write(line.finish());
    }};
}
