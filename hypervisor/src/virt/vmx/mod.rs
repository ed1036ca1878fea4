//! The Intel VT-x backend: VMXON per CPU, one VMCS per vCPU, EPT for guest memory.
//!
//! Detection (SDM Vol. 3C 24.6-24.8, appendix A) reads the capability MSRs once and fixes
//! every control word by the allowed-0/allowed-1 settings; a control this design needs
//! that the CPU cannot set is reported by name. Decoding of everything the hardware
//! reports lives in the host-tested [`vmcs`].
//!
//! A failed VM entry (exit reason 33, or VM-instruction error 7 or 8) is explained by
//! reading the checked fields back and running the host-tested model of the entry checks
//! ([`checks`]); the exit reports the first rule it finds broken.
//!
//! What a vCPU costs and switches (see `vcpu`):
//! * one VMCS and one MSR bitmap (4 KiB each); I/O is intercepted with "unconditional I/O
//!   exiting", so no I/O bitmaps;
//! * FS/GS base and EFER/PAT are VMCS fields; KERNEL_GS_BASE, STAR, LSTAR, CSTAR and
//!   SFMASK are passed through to the guest and switched by hand around every entry, with
//!   host interrupts off;
//! * the slice ends by the VMX-preemption timer when the CPU has one, and a host interrupt
//!   (external-interrupt exiting, not acknowledged on exit) ends it too: the host takes
//!   the interrupt through its own IDT as soon as `run` re-enables interrupts.
//!
//! Layout: [`vmcs`] (pure, host-tested) holds the formats: MSR numbers, VMCS field
//! encodings, control bits and their allowed settings, exit decoding, instruction errors;
//! [`checks`] (pure, host-tested) models the VM-entry checks. `hw` (detection, VMXON,
//! the backend), `insn` (the VMX instructions), `vcpu` (one VMCS per vCPU and the entry
//! path) and `selftest` touch the hardware and build only for the kernel target.

pub mod checks;
pub mod vmcs;

#[cfg(target_os = "none")]
mod hw;
#[cfg(target_os = "none")]
pub mod insn;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
pub mod vcpu;

#[cfg(target_os = "none")]
pub use hw::{caps, cpu_enabled, detect, VmxBackend, BACKEND};
#[cfg(target_os = "none")]
pub use selftest::SELFTESTS;
