//! AMD-V (SVM) with nested paging (AMD APM Vol. 2, chapter 15).
//!
//! * [`vmcb`] (pure, host-tested): VMCB offsets and bits, exit decoding, instruction
//!   lengths, the VMRUN consistency checks, the MSR permission map, the ASID pool.
//! * `hw` (hardware): detection, per-CPU enabling, the vCPU (VMCB, permission maps,
//!   ASID) and the VMLOAD/VMRUN/VMSAVE entry path.
//! * `selftest` (hardware): the `svm` self-test, a hand-made guest run without the core.
//!
//! What the backend switches, and what the layers above must know:
//! * Entry: CLGI, host RFLAGS.IF = 1, VMSAVE of the host's FS/GS/TR/LDTR state, syscall
//!   MSRs and KERNEL_GS_BASE to a per-CPU host page, VMLOAD of the guest's, VMRUN,
//!   VMSAVE of the guest's, VMLOAD of the host's, STGI. The kernel's per-CPU GS base is
//!   thus back before any host interrupt can run. RFLAGS.IF is restored to the caller's
//!   value afterwards.
//! * Host interrupts: INTR is intercepted with V_INTR_MASKING, so a host interrupt during
//!   the guest (the 100 Hz APIC timer at least every 10 ms) ends the entry as
//!   [`crate::vm::ExitKind::Preempted`]; the host IDT takes it right after STGI. NMIs are
//!   intercepted the same way. `slice_ns` is therefore honoured at the tick's
//!   granularity: an entry never lasts much longer than one tick.
//! * Guest interrupts ([`crate::virt::Vcpu::queue_interrupt`], the guest's timer): V_IRQ
//!   with the vector in the VMCB (APM 15.21.4); the CPU delivers it when the guest's IF
//!   and interrupt shadow allow, after any event EVENTINJ re-delivers. Checked under QEMU
//!   TCG 7.2, which implements V_IRQ, V_INTR_PRIO and V_IGN_TPR.
//! * MSRs without exits: EFER (in the VMCB; the guest sees SVME set, which VMRUN
//!   requires), FS/GS/KERNEL_GS base, STAR, LSTAR, CSTAR, SFMASK. Every other RDMSR/WRMSR
//!   exits. RDTSC/RDTSCP are not intercepted (TSC offset 0).
//! * Instruction lengths: nRIP - RIP when the CPU saves nRIP, else the fixed encodings
//!   (see [`vmcb::instr_len`]); IN/OUT use EXITINFO2.
//! * XSETBV that sets XCR0 to the host's value is skipped inside the backend (the guest
//!   runs with the host's XCR0 either way); any other value exits as
//!   `Forbidden("xsetbv")`.

pub mod vmcb;

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod hw;
#[cfg(target_os = "none")]
mod selftest;

#[cfg(target_os = "none")]
pub use hw::{probe, SvmBackend, BACKEND};
#[cfg(target_os = "none")]
pub use selftest::SELFTESTS;
