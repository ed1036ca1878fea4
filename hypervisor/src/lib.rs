//! The hypervisor kernel.
//!
//! Pure logic (command line, frame allocator, page-table builder, self-test bookkeeping)
//! builds for the host too and is tested with `cargo test`; everything that touches the
//! hardware is under [`arch`] and builds only for `x86_64-unknown-none`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod decode;
pub mod mm;
pub mod pci;
pub mod virt;
pub mod vm;

#[cfg(target_os = "none")]
pub mod acpi;
#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod kmain;
#[cfg(target_os = "none")]
pub mod logger;
#[cfg(target_os = "none")]
pub mod selftest;

#[cfg(target_os = "none")]
pub use kmain::kmain;
