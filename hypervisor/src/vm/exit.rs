//! The one interface between the virtualization backends and everything above them.
#![forbid(unsafe_code)]

use core::fmt;

/// A vCPU's general registers, RIP and RFLAGS. Backends load them before entry and store
/// them after exit (the ones the hardware keeps in the VMCS/VMCB included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register as the backends load it (64-bit guests need only a few).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u32,
    /// Access rights in the VMX layout (type, S, DPL, P, AVL, L, D/B, G at bits 0-15 of
    /// the descriptor's attribute word: type 0-3, S 4, DPL 5-6, P 7, AVL 12, L 13, D/B 14,
    /// G 15); SVM backends pack it into their 12-bit form.
    pub access: u16,
}

/// The complete initial state of a vCPU (see `crx_abi` for the values chosen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InitialState {
    pub regs: GuestRegs,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub ss: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub tr: Segment,
    pub ldtr: Segment,
    /// GDT base and limit.
    pub gdtr: (u64, u16),
    /// IDT base and limit.
    pub idtr: (u64, u16),
}

/// The nested page-table format a backend walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedFormat {
    /// Intel EPT: R/W/X in bits 0-2, memory type in bits 3-5.
    Ept,
    /// AMD NPT: ordinary long-mode entries, walked as user accesses.
    Npt,
}

/// How a guest touched memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Execute,
}

/// Why a vCPU left the guest, decoded by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// CPUID: leaf in `rax`, sub-leaf in `rcx`.
    Cpuid,
    /// HLT.
    Hlt,
    /// VMCALL / VMMCALL: number and arguments in the registers; `cpl`, the privilege level
    /// it was made at (only the guest kernel, CPL 0, may make hypercalls).
    Hypercall {
        /// The guest's CPL at the exit.
        cpl: u8,
    },
    /// IN/OUT (string forms included, `string` set). The value is in `rax` for OUT.
    Io {
        /// Port.
        port: u16,
        /// Bytes: 1, 2 or 4.
        size: u8,
        /// OUT (true) or IN.
        write: bool,
        /// INS/OUTS or REP forms.
        string: bool,
    },
    /// RDMSR (write = false) or WRMSR; index in `rcx`, value in `edx:eax`.
    Msr {
        /// WRMSR.
        write: bool,
    },
    /// A guest-physical access the nested page tables do not allow.
    NestedPageFault {
        /// The guest-physical address.
        gpa: u64,
        /// What the guest tried.
        access: Access,
    },
    /// XSETBV: register index in `rcx`, value in `edx:eax`. Allowed only to set XCR0 to
    /// the host's value (the policy decides); backends that refuse XSETBV themselves
    /// report [`ExitKind::Forbidden`] instead.
    Xsetbv,
    /// The time slice ran out, a host interrupt arrived, or the guest became able to take
    /// the interrupt it has pending (the backend delivers it at the next entry): nothing
    /// for the policy to do.
    Preempted,
    /// The guest triple-faulted (shutdown).
    TripleFault,
    /// An instruction the guest may not execute (VMX/SVM instructions, INVD, XSETBV with a
    /// bad value, ...), by mnemonic.
    Forbidden(&'static str),
    /// An exception the backend intercepts (only those it asks for).
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, for vectors that push one.
        error_code: Option<u32>,
    },
    /// VM entry failed: the backend's decoded reason.
    EntryFailed(&'static str),
    /// Anything else: the backend's raw exit code and qualification / EXITINFO1.
    Unknown {
        /// Raw exit reason / exit code.
        code: u64,
        /// Exit qualification / EXITINFO1.
        info: u64,
    },
}

impl ExitKind {
    /// Whether the exit is caused by one instruction that [`Action::Advance`],
    /// [`Action::Block`], [`Action::Yield`], [`Action::ArmTimer`] or [`Action::Kick`] skip
    /// (so its length must be 1 to 15).
    pub fn is_instruction(&self) -> bool {
        matches!(
            self,
            ExitKind::Cpuid
                | ExitKind::Hlt
                | ExitKind::Hypercall { .. }
                | ExitKind::Msr { .. }
                | ExitKind::Xsetbv
        )
    }
}

/// Longest x86 instruction in bytes (SDM Vol. 2A 2.3.11).
pub const MAX_INSTR_LEN: u8 = 15;

/// An exit: what happened and the length of the instruction that caused it (0 when not
/// an instruction), so that [`Action::Advance`] can skip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// What happened.
    pub kind: ExitKind,
    /// Length of the exiting instruction in bytes.
    pub instr_len: u8,
    /// Guest nanoseconds spent in the guest during this entry.
    pub guest_ns: u64,
}

/// Why a VM was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The guest triple-faulted.
    TripleFault,
    /// An access outside guest memory.
    OutsideMemory {
        /// The guest-physical address.
        gpa: u64,
        /// What the guest tried.
        access: Access,
    },
    /// A write to the read-only layer window of a pod VM.
    LayerWrite {
        /// The guest-physical address.
        gpa: u64,
    },
    /// An I/O port outside the allow list, under the stop policy.
    ForbiddenIo {
        /// Port.
        port: u16,
    },
    /// A forbidden instruction.
    Forbidden(&'static str),
    /// An exception the hypervisor does not forward.
    Exception {
        /// Vector.
        vector: u8,
    },
    /// VM entry failed.
    EntryFailed(&'static str),
    /// An exit nobody handles.
    UnknownExit {
        /// Raw code.
        code: u64,
        /// Qualification.
        info: u64,
    },
    /// The hypervisor ran out of memory for this VM.
    OutOfMemory,
    /// Stopped from outside (deleted, timed out).
    Killed,
    /// The backend could not create a vCPU, with its reason.
    VcpuFailed(&'static str),
    /// An instruction exit came with a length no instruction has (0 or above 15), so
    /// the instruction cannot be skipped; re-entering would repeat it forever.
    BadInstructionLength {
        /// The length the backend reported.
        len: u8,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StopReason::TripleFault => write!(f, "triple fault"),
            StopReason::OutsideMemory { gpa, access } => {
                write!(f, "{access:?} access outside guest memory at gpa {gpa:#x}")
            }
            StopReason::LayerWrite { gpa } => {
                write!(f, "write to the read-only image layers at gpa {gpa:#x}")
            }
            StopReason::ForbiddenIo { port } => write!(f, "I/O port {port:#x} is not allowed"),
            StopReason::Forbidden(what) => write!(f, "forbidden instruction {what}"),
            StopReason::Exception { vector } => write!(f, "unhandled exception vector {vector}"),
            StopReason::EntryFailed(why) => write!(f, "VM entry failed: {why}"),
            StopReason::UnknownExit { code, info } => {
                write!(f, "unexpected exit code {code:#x} (info {info:#x})")
            }
            StopReason::OutOfMemory => write!(f, "out of memory"),
            StopReason::Killed => write!(f, "killed"),
            StopReason::VcpuFailed(why) => write!(f, "cannot create a vCPU: {why}"),
            StopReason::BadInstructionLength { len } => {
                write!(f, "instruction exit with impossible length {len}")
            }
        }
    }
}

/// What the backend does next with a vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Re-enter the guest as it is.
    Resume,
    /// Skip the exiting instruction (`instr_len`) and re-enter.
    Advance,
    /// Inject an exception (e.g. #GP(0) for a refused MSR) and re-enter; RIP unchanged.
    Inject {
        /// Vector.
        vector: u8,
        /// Error code, for vectors that push one.
        error_code: Option<u32>,
    },
    /// Skip the instruction, then give the CPU away until the monotonic time (ns) or, with
    /// `None`, until an event.
    Block {
        /// Wake-up time.
        until_ns: Option<u64>,
    },
    /// Skip the instruction and give the CPU to another runnable vCPU.
    Yield,
    /// Skip the instruction (as `Advance`) and arm the vCPU's one-shot timer
    /// (`crx_abi::nr::TIMER_ARM`): at VM time `deadline_ns` (`u64::MAX`: disarm) interrupt
    /// `vector` is queued for the guest. The timer lives with the vCPU in the CPU loop;
    /// backends only skip the instruction.
    ArmTimer {
        /// VM monotonic nanoseconds.
        deadline_ns: u64,
        /// Interrupt vector, 32 to 255.
        vector: u8,
    },
    /// Skip the instruction (as `Advance`) and kick vCPUs of the same VM
    /// (`crx_abi::nr::VCPU_KICK`): the CPU loop wakes each vCPU k whose bit k is set in
    /// `mask` (or leaves it a wake), has `vector`, if any, fire at its next entry, and
    /// interrupts the CPUs the targets run on. Backends only skip the instruction.
    Kick {
        /// Bit k: the VM's vCPU k.
        mask: u64,
        /// Interrupt vector, 32 to 255, or none (a wake only).
        vector: Option<u8>,
    },
    /// The VM ended with this exit code.
    Exit(i32),
    /// The VM is stopped for this reason.
    Stop(StopReason),
}
