//! The hypervisor kernel.
//!
//! Two kinds of module, kept apart so that the policy can be tested on the host:
//! * pure modules build for the host too and are tested with `cargo test`: [`cmdline`],
//!   [`decode`] (x86 formats: exceptions, MADT, local APIC registers), [`mm`]'s frame
//!   allocator, page-table builder and address-space plan, [`vm`]'s exit policy, loader,
//!   guest memory, scheduler, consoles, pods and VM set-up, and the formats of both
//!   virtualization backends (`virt::vmx::{vmcs, checks}`, `virt::svm::vmcb`). They
//!   forbid or deny `unsafe` code.
//! * hardware modules build only for `x86_64-unknown-none`: [`arch`] (CPU, interrupts,
//!   APIC, SMP, clocks, console, power), `mm::{kernel, heap, direct}`, the backends'
//!   `hw`/`vcpu` parts, [`acpi`], [`pci`]'s config-space access, and the drivers of the
//!   run: `kmain` (bring-up in order, the self-test table) and `vm::manager` (the per-CPU
//!   loop). Each `unsafe` block there says why it holds.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod decode;
pub mod images;
pub mod mm;
pub mod net;
pub mod pci;
pub mod virt;
pub mod vm;

#[cfg(target_os = "none")]
pub mod agent;
#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod kmain;
#[cfg(target_os = "none")]
pub mod logger;
#[cfg(target_os = "none")]
pub mod node;
#[cfg(target_os = "none")]
pub mod runtime;
#[cfg(target_os = "none")]
pub mod selftest;

#[cfg(target_os = "none")]
pub use kmain::kmain;
