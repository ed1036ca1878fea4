//! x86_64 hardware: everything that touches ports, MSRs, control registers and
//! descriptor tables lives under this module.

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
pub mod rtc;
pub mod smp;
pub mod time;
pub mod vectors;
