//! The x86_64 platform's hardware: CPU identification, descriptor tables, interrupts, the
//! APIC, SMP start-up, clocks, the console, power-off, firmware tables (ACPI) and PCI
//! configuration ports. The other hardware modules are memory's (`mm::{kernel, heap,
//! direct}`) and the virtualization backends' (`virt::vmx::{hw, insn, vcpu}`,
//! `virt::svm::hw`); the pure decoders they feed live in `decode` and the backends' pure
//! format modules.

pub mod acpi;
pub mod apic;
pub mod console;
pub mod cpu;
pub mod fpu;
pub mod gdt;
pub mod interrupts;
pub mod pci;
pub mod percpu;
pub mod power;
pub mod random;
pub mod rtc;
pub mod smp;
pub mod time;
pub mod vectors;
