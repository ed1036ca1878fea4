//! The hardware virtualization backends: Intel VT-x (`vmx`) and AMD-V (`svm`) behind one
//! interface. A backend turns its raw exits into [`crate::vm::Exit`] and applies the
//! [`crate::vm::Action`] the exit policy returns; everything above this module is written
//! once for both.
//!
//! Contract for callers:
//! 1. [`Backend::enable_cpu`] runs once on every CPU that will run vCPUs, before any
//!    vCPU runs there.
//! 2. A vCPU is created, run and dropped on one and the same CPU (VT-x keeps a VMCS active
//!    per CPU; moving it needs VMCLEAR on the old CPU, which this interface does not do).
//! 3. The caller owns the guest's memory and nested page tables (built in the backend's
//!    [`NestedFormat`]) and keeps them alive as long as the vCPU.
//! 4. FPU/SSE/AVX state is the caller's to save and restore around [`Vcpu::run`]; the
//!    backend only switches what the hardware switches (and the MSRs it documents).

pub mod svm;
#[cfg(target_os = "none")]
pub mod testguest;
pub mod vmx;

use crate::vm::{Action, Exit, GuestRegs, InitialState, NestedFormat};
use alloc::boxed::Box;
use core::fmt;

/// Why virtualization could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtError {
    /// The CPU has neither VMX nor SVM.
    Unsupported,
    /// The firmware disabled it (IA32_FEATURE_CONTROL locked without VMXON, VM_CR.SVMDIS).
    DisabledByFirmware,
    /// A required feature is missing (EPT, NPT, unrestricted guest, ...), by name.
    MissingFeature(&'static str),
    /// A required control cannot be set (allowed-0/allowed-1 settings), by name.
    ControlUnavailable(&'static str),
    /// VMXON / VMPTRLD / VMCLEAR / VMWRITE failed, with the decoded VM-instruction error.
    Instruction(&'static str),
    /// No memory for a VMCS, VMCB, bitmap or save area.
    OutOfMemory,
    /// No free ASID / VPID.
    NoTag,
}

impl fmt::Display for VirtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtError::Unsupported => write!(f, "the CPU has no hardware virtualization"),
            VirtError::DisabledByFirmware => write!(f, "virtualization is disabled by the firmware"),
            VirtError::MissingFeature(x) => write!(f, "required feature missing: {x}"),
            VirtError::ControlUnavailable(x) => write!(f, "required control unavailable: {x}"),
            VirtError::Instruction(x) => write!(f, "virtualization instruction failed: {x}"),
            VirtError::OutOfMemory => write!(f, "out of memory for virtualization structures"),
            VirtError::NoTag => write!(f, "no free ASID/VPID"),
        }
    }
}

/// A hardware virtualization backend (one static instance per vendor).
pub trait Backend: Sync {
    /// "vmx" or "svm".
    fn name(&self) -> &'static str;
    /// The nested page-table format this backend walks.
    fn nested_format(&self) -> NestedFormat;
    /// The instruction guests use for hypercalls.
    fn hypercall_insn(&self) -> crx_abi::HypercallInsn;
    /// Turns virtualization on for the calling CPU (VMXON; EFER.SVME and the host save
    /// area). Idempotent.
    fn enable_cpu(&self) -> Result<(), VirtError>;
    /// Creates a vCPU whose guest-physical memory is translated by the nested tables at
    /// host-physical `nested_root`, starting in `init`.
    fn create_vcpu(&self, nested_root: u64, init: &InitialState) -> Result<Box<dyn Vcpu>, VirtError>;
}

/// One virtual CPU. Dropping it releases every frame it holds.
pub trait Vcpu: Send {
    /// The general registers, RIP and RFLAGS as of the last exit (writable before `run`).
    fn regs(&mut self) -> &mut GuestRegs;
    /// Enters the guest and runs it until the next exit, or until about `slice_ns` of
    /// guest time has passed (then the exit is [`crate::vm::ExitKind::Preempted`]). A host
    /// interrupt that comes while the guest runs, or that is already pending at the entry
    /// (the caller may enter with host interrupts off, so that one sent just before the
    /// entry is not taken and lost before it), ends the entry as `Preempted` too; host
    /// interrupts are as the caller had them when `run` returns (VT-x: external-interrupt
    /// exiting, the interrupt not acknowledged; AMD-V: the INTR intercept).
    fn run(&mut self, slice_ns: u64) -> Exit;
    /// Applies the policy's decision about `exit` before the next `run`: skips the
    /// instruction for `Advance`, `Block`, `Yield`, `ArmTimer` (whose timer the caller
    /// keeps) and `Kick` (which the caller carries out); queues an exception for `Inject`. `Exit` and `Stop` need nothing from the
    /// backend.
    fn apply(&mut self, exit: &Exit, action: &Action);
    /// Queues external interrupt `vector` (32 to 255) for the guest: a later `run`
    /// delivers it through the guest's IDT at an entry where the guest can take it
    /// (RFLAGS.IF = 1, no STI or MOV SS shadow) and no other event is being delivered,
    /// and asks the hardware for an exit as soon as the guest can, if it cannot at entry.
    /// Until delivered it stays queued across entries, whatever the guest does; one is
    /// pending at most (a second call before delivery replaces the vector). It never
    /// blocks host interrupts or changes how long an entry may last.
    fn queue_interrupt(&mut self, vector: u8);
    /// Host bytes this vCPU holds beyond guest RAM (VMCS/VMCB, bitmaps, save areas).
    fn overhead_bytes(&self) -> usize;
}

/// The backend for this machine's CPU, if it has one that works: VT-x when CPUID reports
/// VMX, AMD-V when it reports SVM (each backend then checks its required features).
#[cfg(target_os = "none")]
pub fn detect() -> Result<&'static dyn Backend, VirtError> {
    use crate::arch::cpu::{self, Virt};
    match cpu::virt() {
        Virt::Vmx => vmx::detect(),
        Virt::Svm => svm::probe(),
        Virt::None => Err(VirtError::Unsupported),
    }
}
