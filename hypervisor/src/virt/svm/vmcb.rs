//! The VMCB and the permission maps as data: field offsets, intercept bits, exit codes,
//! and the pure functions the AMD-V backend builds on (segment attribute packing, exit
//! decoding, instruction lengths, the VMRUN consistency checks, the MSR permission map
//! and the ASID pool). Everything here builds on the host and is tested there.
//!
//! No-panic contract: every function takes raw values the CPU or a guest produced
//! (EXITCODE, EXITINFO1/2, RIP, register values) and never panics on any of them.
//!
//! References are to the AMD64 Architecture Programmer's Manual Vol. 2 (APM), chapter 15
//! and appendix B (VMCB layout).
#![deny(unsafe_code)]

use crate::vm::{Access, ExitKind};

/// Bytes in a VMCB (one 4 KiB page, APM 15.5.1).
pub const VMCB_BYTES: usize = 4096;
/// Bytes in the MSR permission map (APM 15.11, two contiguous pages).
pub const MSRPM_BYTES: usize = 8192;
/// Bytes in the I/O permission map (APM 15.10.1, three contiguous pages).
pub const IOPM_BYTES: usize = 12288;

/// Control-area offsets (APM appendix B, table B-1).
pub mod ctl {
    /// Exception intercepts, one bit per vector.
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    /// Intercept vector 3 (INTR, NMI, ..., SHUTDOWN).
    pub const INTERCEPT_MISC1: usize = 0x00c;
    /// Intercept vector 4 (VMRUN, VMMCALL, ..., XSETBV).
    pub const INTERCEPT_MISC2: usize = 0x010;
    /// Physical address of the I/O permission map.
    pub const IOPM_BASE_PA: usize = 0x040;
    /// Physical address of the MSR permission map.
    pub const MSRPM_BASE_PA: usize = 0x048;
    /// TSC offset added to the guest's RDTSC.
    pub const TSC_OFFSET: usize = 0x050;
    /// Guest ASID (32 bits).
    pub const GUEST_ASID: usize = 0x058;
    /// TLB control (8 bits).
    pub const TLB_CONTROL: usize = 0x05c;
    /// The virtual-interrupt word: V_TPR (bits 7:0), V_IRQ (8), V_INTR_PRIO (19:16),
    /// V_IGN_TPR (20), V_INTR_MASKING (24), V_INTR_VECTOR (39:32), ...
    pub const VINTR: usize = 0x060;
    /// Interrupt shadow (bit 0).
    pub const INTERRUPT_SHADOW: usize = 0x068;
    /// EXITCODE.
    pub const EXITCODE: usize = 0x070;
    /// EXITINFO1.
    pub const EXITINFO1: usize = 0x078;
    /// EXITINFO2.
    pub const EXITINFO2: usize = 0x080;
    /// EXITINTINFO: an event whose delivery the exit interrupted.
    pub const EXITINTINFO: usize = 0x088;
    /// NP_ENABLE (bit 0).
    pub const NP_CONTROL: usize = 0x090;
    /// EVENTINJ.
    pub const EVENTINJ: usize = 0x0a8;
    /// N_CR3: the nested page tables' root.
    pub const N_CR3: usize = 0x0b0;
    /// VMCB clean bits (32 bits).
    pub const CLEAN_BITS: usize = 0x0c0;
    /// nRIP: the next sequential RIP (with the NRIP-save feature).
    pub const NRIP: usize = 0x0c8;
}

/// State-save-area offsets (APM appendix B, table B-2; the area starts at 0x400).
pub mod save {
    /// ES; each segment is selector u16, attrib u16, limit u32, base u64.
    pub const ES: usize = 0x400;
    /// CS.
    pub const CS: usize = 0x410;
    /// SS.
    pub const SS: usize = 0x420;
    /// DS.
    pub const DS: usize = 0x430;
    /// FS.
    pub const FS: usize = 0x440;
    /// GS.
    pub const GS: usize = 0x450;
    /// GDTR (limit and base only).
    pub const GDTR: usize = 0x460;
    /// LDTR.
    pub const LDTR: usize = 0x470;
    /// IDTR (limit and base only).
    pub const IDTR: usize = 0x480;
    /// TR.
    pub const TR: usize = 0x490;
    /// CPL (8 bits).
    pub const CPL: usize = 0x4cb;
    /// EFER.
    pub const EFER: usize = 0x4d0;
    /// CR4.
    pub const CR4: usize = 0x548;
    /// CR3.
    pub const CR3: usize = 0x550;
    /// CR0.
    pub const CR0: usize = 0x558;
    /// DR7.
    pub const DR7: usize = 0x560;
    /// DR6.
    pub const DR6: usize = 0x568;
    /// RFLAGS.
    pub const RFLAGS: usize = 0x570;
    /// RIP.
    pub const RIP: usize = 0x578;
    /// RSP.
    pub const RSP: usize = 0x5d8;
    /// RAX.
    pub const RAX: usize = 0x5f8;
    /// STAR.
    pub const STAR: usize = 0x600;
    /// LSTAR.
    pub const LSTAR: usize = 0x608;
    /// CSTAR.
    pub const CSTAR: usize = 0x610;
    /// SFMASK.
    pub const SFMASK: usize = 0x618;
    /// KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: usize = 0x620;
    /// CR2.
    pub const CR2: usize = 0x640;
    /// Guest PAT (used with nested paging).
    pub const G_PAT: usize = 0x668;

    /// Offsets inside one segment record.
    pub const SEG_SELECTOR: usize = 0;
    /// Attribute word.
    pub const SEG_ATTRIB: usize = 2;
    /// Limit.
    pub const SEG_LIMIT: usize = 4;
    /// Base.
    pub const SEG_BASE: usize = 8;
}

/// Intercept vector 3 bits (VMCB offset 0x0c, APM table B-1).
pub mod misc1 {
    /// Physical maskable interrupt.
    pub const INTR: u32 = 1 << 0;
    /// Physical NMI.
    pub const NMI: u32 = 1 << 1;
    /// RDPMC.
    pub const RDPMC: u32 = 1 << 15;
    /// CPUID.
    pub const CPUID: u32 = 1 << 18;
    /// INVD.
    pub const INVD: u32 = 1 << 22;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// INVLPGA.
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT through the I/O permission map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR through the MSR permission map.
    pub const MSR_PROT: u32 = 1 << 28;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept vector 4 bits (VMCB offset 0x10, APM table B-1).
pub mod misc2 {
    /// VMRUN (must be set, APM 15.5.1).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL.
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
    /// MONITOR.
    pub const MONITOR: u32 = 1 << 10;
    /// MWAIT, unconditionally.
    pub const MWAIT: u32 = 1 << 11;
    /// MWAIT when the monitor is armed.
    pub const MWAIT_ARMED: u32 = 1 << 12;
    /// XSETBV.
    pub const XSETBV: u32 = 1 << 13;
}

/// The intercepts every vCPU of this hypervisor has in vector 3.
pub const MISC1_INTERCEPTS: u32 = misc1::INTR
    | misc1::NMI
    | misc1::RDPMC
    | misc1::CPUID
    | misc1::INVD
    | misc1::HLT
    | misc1::INVLPGA
    | misc1::IOIO_PROT
    | misc1::MSR_PROT
    | misc1::SHUTDOWN;

/// The intercepts every vCPU of this hypervisor has in vector 4 (RDTSC and RDTSCP are not
/// intercepted: the guest reads the host TSC).
pub const MISC2_INTERCEPTS: u32 = misc2::VMRUN
    | misc2::VMMCALL
    | misc2::VMLOAD
    | misc2::VMSAVE
    | misc2::STGI
    | misc2::CLGI
    | misc2::SKINIT
    | misc2::MONITOR
    | misc2::MWAIT
    | misc2::MWAIT_ARMED
    | misc2::XSETBV;

/// V_INTR_MASKING in the VINTR word: physical interrupts are masked by the host's
/// RFLAGS.IF, not the guest's (APM 15.21.1).
pub const V_INTR_MASKING: u64 = 1 << 24;
/// V_TPR in the VINTR word: the guest's task priority (its CR8).
pub const V_TPR: u64 = 0xff;
/// V_IRQ in the VINTR word: a virtual interrupt is pending; the CPU clears it when the
/// guest takes the interrupt and writes it back on #VMEXIT (APM 15.21.4).
pub const V_IRQ: u64 = 1 << 8;
/// V_INTR_PRIO: the pending virtual interrupt's priority (bits 19:16).
pub const V_INTR_PRIO_SHIFT: u32 = 16;
/// V_IGN_TPR: the pending virtual interrupt ignores V_TPR.
pub const V_IGN_TPR: u64 = 1 << 20;
/// V_INTR_VECTOR: the pending virtual interrupt's vector (bits 39:32).
pub const V_INTR_VECTOR_SHIFT: u32 = 32;

/// The VINTR word that makes external interrupt `vector` pending in the guest, from the
/// current word `vintr` (V_TPR and V_INTR_MASKING kept): V_IRQ with the highest priority,
/// the guest's TPR ignored. The CPU delivers it through the guest's IDT once the guest
/// has RFLAGS.IF = 1 and no interrupt shadow, after any event EVENTINJ injects, as it
/// takes a physical interrupt; host interrupts stay under the host's control (APM 15.21.1,
/// 15.21.4). No intercept is needed: VINTR is not intercepted, so the guest takes it.
pub fn vintr_with_irq(vintr: u64, vector: u8) -> u64 {
    (vintr & (V_TPR | V_INTR_MASKING))
        | V_IRQ
        | (0xf << V_INTR_PRIO_SHIFT)
        | V_IGN_TPR
        | (u64::from(vector) << V_INTR_VECTOR_SHIFT)
}

/// NP_ENABLE (APM 15.25.3).
pub const NP_ENABLE: u64 = 1 << 0;

/// TLB_CONTROL values (APM 15.16.1).
pub mod tlb {
    /// Nothing.
    pub const NONE: u8 = 0;
    /// Flush the entire TLB (all ASIDs).
    pub const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID only (needs the FlushByAsid feature).
    pub const FLUSH_ASID: u8 = 3;
}

/// EXITCODE values (APM appendix C).
pub mod code {
    /// Exceptions: 0x40 + vector.
    pub const EXCP_BASE: u64 = 0x40;
    /// Physical INTR.
    pub const INTR: u64 = 0x60;
    /// Physical NMI.
    pub const NMI: u64 = 0x61;
    /// RDPMC.
    pub const RDPMC: u64 = 0x6f;
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// INVD.
    pub const INVD: u64 = 0x76;
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// INVLPGA.
    pub const INVLPGA: u64 = 0x7a;
    /// IN/OUT.
    pub const IOIO: u64 = 0x7b;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7c;
    /// Shutdown.
    pub const SHUTDOWN: u64 = 0x7f;
    /// VMRUN.
    pub const VMRUN: u64 = 0x80;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x81;
    /// VMLOAD.
    pub const VMLOAD: u64 = 0x82;
    /// VMSAVE.
    pub const VMSAVE: u64 = 0x83;
    /// STGI.
    pub const STGI: u64 = 0x84;
    /// CLGI.
    pub const CLGI: u64 = 0x85;
    /// SKINIT.
    pub const SKINIT: u64 = 0x86;
    /// MONITOR.
    pub const MONITOR: u64 = 0x8a;
    /// MWAIT.
    pub const MWAIT: u64 = 0x8b;
    /// MWAIT with the monitor armed.
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    /// XSETBV.
    pub const XSETBV: u64 = 0x8d;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// VMRUN refused the VMCB (-1).
    pub const INVALID: u64 = u64::MAX;
}

/// EFER bits the backend and the checks use.
pub mod efer {
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// Secure virtual machine enable.
    pub const SVME: u64 = 1 << 12;
    /// Bits a guest EFER may have set (SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE,
    /// MCOMMIT, INTWB, UAIE, AIBRSE); the rest must be zero (APM 3.1.7).
    pub const DEFINED: u64 = 1
        | (1 << 8)
        | (1 << 10)
        | (1 << 11)
        | (1 << 12)
        | (1 << 13)
        | (1 << 14)
        | (1 << 15)
        | (0b1111 << 17)
        | (1 << 21);
}

/// The guest PAT at entry: the power-on default (WB, WT, UC-, UC repeated), the value
/// the exit policy also answers to RDMSR IA32_PAT.
pub const DEFAULT_PAT: u64 = crate::vm::handler::msr::PAT_DEFAULT;

/// Packs a VMX-layout access-rights word (type 0-3, S 4, DPL 5-6, P 7, AVL 12, L 13,
/// D/B 14, G 15) into the VMCB's 12-bit attribute (the same fields at bits 0-7 and 8-11,
/// APM 15.5.1 "segment attributes").
pub fn pack_attrib(vmx_access: u16) -> u16 {
    (vmx_access & 0x00ff) | ((vmx_access >> 4) & 0x0f00)
}

/// The inverse of [`pack_attrib`].
pub fn unpack_attrib(attrib: u16) -> u16 {
    (attrib & 0x00ff) | ((attrib & 0x0f00) << 4)
}

/// The raw facts of one #VMEXIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawExit {
    /// EXITCODE.
    pub code: u64,
    /// EXITINFO1.
    pub info1: u64,
    /// EXITINFO2.
    pub info2: u64,
    /// Guest RIP after the exit (the exiting instruction's address).
    pub rip: u64,
    /// nRIP when the CPU saves it (CPUID 8000_000Ah EDX[3]), else `None`.
    pub nrip: Option<u64>,
    /// The guest's CPL (VMCB state save area, APM 15.5.1).
    pub cpl: u8,
}

/// Longest x86 instruction.
const MAX_INSN: u64 = 15;

/// A length from a next-RIP value, if it is a possible instruction length.
fn len_to(next: u64, rip: u64) -> Option<u8> {
    let len = next.wrapping_sub(rip);
    (1..=MAX_INSN).contains(&len).then_some(len as u8)
}

/// The length of the instruction that caused `raw`, 0 when the exit is not an
/// instruction. With nRIP save it is nRIP - RIP; without it (QEMU TCG) the
/// fixed encodings are used (CPUID 0F A2, HLT F4, RDMSR 0F 32, WRMSR 0F 30, INVD 0F 08,
/// RDPMC 0F 33, and the three-byte 0F 01 xx group: VMMCALL, VMRUN, VMLOAD, VMSAVE, STGI,
/// CLGI, SKINIT, INVLPGA, MONITOR, MWAIT, XSETBV); IN/OUT take it from EXITINFO2, which
/// holds the next RIP (APM 15.10.2). Redundant prefixes on these instructions are not
/// counted without nRIP save.
pub fn instr_len(raw: &RawExit) -> u8 {
    let fixed = match raw.code {
        code::IOIO => return len_to(raw.info2, raw.rip).unwrap_or(0),
        code::HLT => 1,
        code::CPUID | code::MSR | code::INVD | code::RDPMC => 2,
        code::VMMCALL
        | code::VMRUN
        | code::VMLOAD
        | code::VMSAVE
        | code::STGI
        | code::CLGI
        | code::SKINIT
        | code::INVLPGA
        | code::MONITOR
        | code::MWAIT
        | code::MWAIT_CONDITIONAL
        | code::XSETBV => 3,
        _ => return 0,
    };
    raw.nrip.and_then(|n| len_to(n, raw.rip)).unwrap_or(fixed)
}

/// Decodes an IOIO EXITINFO1 (APM 15.10.2, figure 15-2): TYPE bit 0 (1 = IN), STR bit 2,
/// REP bit 3, SZ8/SZ16/SZ32 bits 4-6, port bits 16-31.
pub fn decode_io(info1: u64) -> ExitKind {
    let size = if info1 & (1 << 6) != 0 {
        4
    } else if info1 & (1 << 5) != 0 {
        2
    } else {
        1
    };
    ExitKind::Io { port: (info1 >> 16) as u16, size, write: info1 & 1 == 0, string: info1 & 0b1100 != 0 }
}

/// Decodes a nested-page-fault EXITINFO1 (APM 15.25.6: the #PF error-code bits, with
/// RW bit 1 and ID bit 4).
pub fn decode_npf_access(info1: u64) -> Access {
    if info1 & (1 << 4) != 0 {
        Access::Execute
    } else if info1 & (1 << 1) != 0 {
        Access::Write
    } else {
        Access::Read
    }
}

/// Turns a raw exit into the vendor-neutral kind and instruction length. `INVALID` is
/// left to the caller (it decodes the reason from the VMCB with [`check`]); here it maps
/// to a generic entry failure.
pub fn decode(raw: &RawExit) -> (ExitKind, u8) {
    let kind = match raw.code {
        code::CPUID => ExitKind::Cpuid,
        code::HLT => ExitKind::Hlt,
        code::VMMCALL => ExitKind::Hypercall { cpl: raw.cpl },
        code::IOIO => decode_io(raw.info1),
        code::MSR => ExitKind::Msr { write: raw.info1 & 1 != 0 },
        code::NPF => ExitKind::NestedPageFault { gpa: raw.info2, access: decode_npf_access(raw.info1) },
        code::INTR | code::NMI => ExitKind::Preempted,
        code::SHUTDOWN => ExitKind::TripleFault,
        code::VMRUN => ExitKind::Forbidden("vmrun"),
        code::VMLOAD => ExitKind::Forbidden("vmload"),
        code::VMSAVE => ExitKind::Forbidden("vmsave"),
        code::STGI => ExitKind::Forbidden("stgi"),
        code::CLGI => ExitKind::Forbidden("clgi"),
        code::SKINIT => ExitKind::Forbidden("skinit"),
        code::INVLPGA => ExitKind::Forbidden("invlpga"),
        code::MONITOR => ExitKind::Forbidden("monitor"),
        code::MWAIT | code::MWAIT_CONDITIONAL => ExitKind::Forbidden("mwait"),
        code::XSETBV => ExitKind::Forbidden("xsetbv"),
        code::INVD => ExitKind::Forbidden("invd"),
        code::RDPMC => ExitKind::Forbidden("rdpmc"),
        c if (code::EXCP_BASE..code::EXCP_BASE + 32).contains(&c) => {
            let vector = (c - code::EXCP_BASE) as u8;
            let error_code = has_error_code(vector).then_some(raw.info1 as u32);
            ExitKind::Exception { vector, error_code }
        }
        code::INVALID => ExitKind::EntryFailed("the CPU rejected the VMCB"),
        c => ExitKind::Unknown { code: c, info: raw.info1 },
    };
    (kind, instr_len(raw))
}

/// Whether exception `vector` pushes an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC,
/// #CP, #VC, #SX).
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// EVENTINJ for a hardware exception (APM 15.20: vector bits 0-7, TYPE 3 at bits 8-10,
/// EV bit 11, V bit 31, error code bits 32-63). `None` for vectors an exception cannot
/// have (NMI's 2, and 32 and up).
pub fn event_inj_exception(vector: u8, error_code: Option<u32>) -> Option<u64> {
    if vector == 2 || vector >= 32 {
        return None;
    }
    let mut v = u64::from(vector) | (3 << 8) | (1 << 31);
    if let Some(ec) = error_code {
        v |= (1 << 11) | (u64::from(ec) << 32);
    }
    Some(v)
}

/// The fields the VMRUN consistency checks look at (APM 15.5.1, "Canonicalization and
/// Consistency Checks").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckedState {
    /// Guest EFER.
    pub efer: u64,
    /// Guest CR0.
    pub cr0: u64,
    /// Guest CR3.
    pub cr3: u64,
    /// Guest CR4.
    pub cr4: u64,
    /// Guest DR6.
    pub dr6: u64,
    /// Guest DR7.
    pub dr7: u64,
    /// Guest CS attribute (VMCB form).
    pub cs_attrib: u16,
    /// Intercept vector 4.
    pub misc2: u32,
    /// Guest ASID.
    pub asid: u32,
    /// EVENTINJ.
    pub event_inj: u64,
    /// NP_ENABLE word.
    pub np_control: u64,
    /// N_CR3.
    pub n_cr3: u64,
    /// MSRPM physical address.
    pub msrpm_pa: u64,
    /// IOPM physical address.
    pub iopm_pa: u64,
    /// The CPU's physical address width (CPUID 8000_0008h EAX[7:0]).
    pub phys_bits: u8,
}

const CR0_PE: u64 = 1;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
/// CR4 bits that are reserved on AMD64 (13 VMXE and 14 SMXE are Intel's; 15, 19 and 24
/// and up are reserved; APM 3.1.3).
const CR4_RESERVED: u64 = (1 << 13) | (1 << 14) | (1 << 15) | (1 << 19) | !((1 << 24) - 1);
const ATTR_L: u16 = 1 << 9;
const ATTR_DB: u16 = 1 << 10;

/// Runs the VMRUN consistency checks the APM lists, in its order, and names the first
/// that fails. Used to explain a VMEXIT_INVALID.
pub fn check(s: &CheckedState) -> Result<(), &'static str> {
    let phys_limit = if (1..64).contains(&s.phys_bits) { 1u64 << s.phys_bits } else { 1 << 52 };
    let beyond = |pa: u64, len: u64| pa.checked_add(len).is_none_or(|end| end > phys_limit);
    let lme_pg = s.efer & efer::LME != 0 && s.cr0 & CR0_PG != 0;
    if s.efer & efer::SVME == 0 {
        return Err("guest EFER.SVME is clear");
    }
    if s.cr0 & CR0_CD == 0 && s.cr0 & CR0_NW != 0 {
        return Err("guest CR0.NW set with CR0.CD clear");
    }
    if s.cr0 >> 32 != 0 {
        return Err("guest CR0 bits 63:32 are not zero");
    }
    if s.cr3 >> 52 != 0 || (s.phys_bits > 0 && s.phys_bits < 52 && beyond(s.cr3 & !0xfff, 0)) {
        return Err("guest CR3 has must-be-zero bits set");
    }
    if s.cr4 & CR4_RESERVED != 0 {
        return Err("guest CR4 has reserved bits set");
    }
    if s.dr6 >> 32 != 0 {
        return Err("guest DR6 bits 63:32 are not zero");
    }
    if s.dr7 >> 32 != 0 {
        return Err("guest DR7 bits 63:32 are not zero");
    }
    if s.efer & !efer::DEFINED != 0 {
        return Err("guest EFER has reserved bits set");
    }
    if lme_pg && s.cr4 & CR4_PAE == 0 {
        return Err("EFER.LME and CR0.PG set with CR4.PAE clear");
    }
    if lme_pg && s.cr0 & CR0_PE == 0 {
        return Err("EFER.LME and CR0.PG set with CR0.PE clear");
    }
    if lme_pg && s.cr4 & CR4_PAE != 0 && s.cs_attrib & ATTR_L != 0 && s.cs_attrib & ATTR_DB != 0 {
        return Err("long mode with both CS.L and CS.D set");
    }
    if s.misc2 & misc2::VMRUN == 0 {
        return Err("the VMRUN intercept is clear");
    }
    if beyond(s.msrpm_pa, MSRPM_BYTES as u64) {
        return Err("the MSR permission map lies beyond physical memory");
    }
    if beyond(s.iopm_pa, IOPM_BYTES as u64) {
        return Err("the I/O permission map lies beyond physical memory");
    }
    if s.event_inj & (1 << 31) != 0 {
        let ty = (s.event_inj >> 8) & 7;
        let vector = s.event_inj & 0xff;
        if matches!(ty, 1 | 5 | 6 | 7) || (ty == 3 && (vector == 2 || vector >= 32)) {
            return Err("illegal event injection");
        }
    }
    if s.asid == 0 {
        return Err("guest ASID is zero");
    }
    if s.np_control & NP_ENABLE != 0 && beyond(s.n_cr3 & !0xfff, 0x1000) {
        return Err("N_CR3 lies beyond physical memory");
    }
    Ok(())
}

/// MSRs the guest reads and writes without exits: they live in the VMCB and are switched
/// by VMLOAD/VMSAVE (FS/GS/KERNEL_GS base, STAR, LSTAR, CSTAR, SFMASK) or VMRUN (EFER).
pub const PASSTHROUGH_MSRS: [u32; 8] = [
    0xc000_0080, // EFER
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
];

/// Where `msr`'s two bits sit in the MSR permission map: the byte and the bit of its read
/// intercept (the write intercept is the next bit). The map covers 0-1FFFh at byte 0,
/// C000_0000h-C000_1FFFh at 800h and C001_0000h-C001_1FFFh at 1000h, two bits per MSR
/// (APM 15.11, table 15-5); other MSRs always exit.
pub fn msrpm_position(msr: u32) -> Option<(usize, u8)> {
    let (base, first) = match msr {
        0..=0x1fff => (0x000, 0),
        0xc000_0000..=0xc000_1fff => (0x800, 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, 0xc001_0000),
        _ => return None,
    };
    let bit = (msr - first) as usize * 2;
    Some((base + bit / 8, (bit % 8) as u8))
}

/// Fills an MSR permission map: every MSR intercepted except [`PASSTHROUGH_MSRS`].
pub fn fill_msrpm(map: &mut [u8]) {
    map.fill(0xff);
    for msr in PASSTHROUGH_MSRS {
        if let Some((byte, bit)) = msrpm_position(msr) {
            if let Some(b) = map.get_mut(byte) {
                *b &= !(0b11 << bit);
            }
        }
    }
}

/// Most ASIDs one CPU's pool hands out.
pub const MAX_ASIDS: u32 = 1024;

/// The ASIDs of one CPU: 1 up to the CPU's count - 1 (ASID 0 is the host's, APM 15.16).
#[derive(Debug, Clone)]
pub struct AsidPool {
    used: [u64; (MAX_ASIDS / 64) as usize],
}

impl Default for AsidPool {
    fn default() -> Self {
        Self::new()
    }
}

impl AsidPool {
    /// An empty pool.
    pub const fn new() -> Self {
        AsidPool { used: [0; (MAX_ASIDS / 64) as usize] }
    }

    /// Takes the lowest free ASID below `count` (the CPU's CPUID 8000_000Ah EBX).
    pub fn alloc(&mut self, count: u32) -> Option<u32> {
        let limit = count.min(MAX_ASIDS);
        for asid in 1..limit {
            let (w, b) = ((asid / 64) as usize, asid % 64);
            let word = self.used.get_mut(w)?;
            if *word & (1 << b) == 0 {
                *word |= 1 << b;
                return Some(asid);
            }
        }
        None
    }

    /// Returns `asid`; false if it was not taken.
    pub fn free(&mut self, asid: u32) -> bool {
        let (w, b) = ((asid / 64) as usize, asid % 64);
        match self.used.get_mut(w) {
            Some(word) if asid != 0 && *word & (1 << b) != 0 => {
                *word &= !(1 << b);
                true
            }
            _ => false,
        }
    }

    /// ASIDs in use.
    pub fn in_use(&self) -> u32 {
        self.used.iter().map(|w| w.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_interrupt_keeps_tpr_and_masking() {
        let w = vintr_with_irq(V_INTR_MASKING | 0x05, 0x20);
        assert_eq!(w, V_INTR_MASKING | 0x05 | V_IRQ | (0xf << 16) | V_IGN_TPR | (0x20 << 32));
        // A second one replaces the first's vector; stale bits of the word are dropped.
        let again = vintr_with_irq(w | (1 << 9), 0xff);
        assert_eq!(again >> 32, 0xff);
        assert_eq!(again & (1 << 9), 0);
        assert_ne!(again & V_IRQ, 0);
    }

    #[test]
    fn attributes_pack_and_unpack() {
        // 64-bit code: type B, S, P, L, G.
        assert_eq!(pack_attrib(0xa09b), 0x0a9b);
        // Flat data: type 3, S, P, D/B, G.
        assert_eq!(pack_attrib(0xc093), 0x0c93);
        // Busy 64-bit TSS with DPL 3 and AVL.
        assert_eq!(pack_attrib(0x10eb), 0x01eb);
        assert_eq!(pack_attrib(0), 0);
        for a in [0xa09bu16, 0xc093, 0x008b, 0x10eb, 0xf0ff] {
            assert_eq!(unpack_attrib(pack_attrib(a)), a & 0xf0ff);
        }
    }

    fn raw(code: u64, info1: u64, info2: u64) -> RawExit {
        RawExit { code, info1, info2, rip: 0x1000, nrip: None, cpl: 0 }
    }

    #[test]
    fn lengths_without_nrip_use_encodings() {
        assert_eq!(decode(&raw(code::CPUID, 0, 0)), (ExitKind::Cpuid, 2));
        assert_eq!(decode(&raw(code::HLT, 0, 0)), (ExitKind::Hlt, 1));
        assert_eq!(decode(&raw(code::VMMCALL, 0, 0)), (ExitKind::Hypercall { cpl: 0 }, 3));
        let user = RawExit { cpl: 3, ..raw(code::VMMCALL, 0, 0) };
        assert_eq!(decode(&user), (ExitKind::Hypercall { cpl: 3 }, 3));
        assert_eq!(decode(&raw(code::MSR, 1, 0)), (ExitKind::Msr { write: true }, 2));
        assert_eq!(decode(&raw(code::MSR, 0, 0)), (ExitKind::Msr { write: false }, 2));
        assert_eq!(decode(&raw(code::XSETBV, 0, 0)), (ExitKind::Forbidden("xsetbv"), 3));
        assert_eq!(decode(&raw(code::INVD, 0, 0)), (ExitKind::Forbidden("invd"), 2));
        assert_eq!(decode(&raw(code::INTR, 0, 0)), (ExitKind::Preempted, 0));
        assert_eq!(decode(&raw(code::SHUTDOWN, 0, 0)), (ExitKind::TripleFault, 0));
    }

    #[test]
    fn nrip_wins_when_plausible() {
        let mut r = raw(code::CPUID, 0, 0);
        r.nrip = Some(0x1003);
        assert_eq!(instr_len(&r), 3, "a prefixed CPUID");
        r.nrip = Some(0x1000);
        assert_eq!(instr_len(&r), 2, "nRIP equal to RIP is not a length");
        r.nrip = Some(0x2000);
        assert_eq!(instr_len(&r), 2, "nRIP too far away is not a length");
        let mut n = raw(code::NPF, 6, 0x5000);
        n.nrip = Some(0x1004);
        assert_eq!(instr_len(&n), 0, "a nested page fault is not an instruction");
    }

    #[test]
    fn io_exits_decode_port_size_direction_and_length() {
        // OUT 0x99, AL: port in 31:16, SZ8, A64, TYPE = 0; next RIP 2 bytes on.
        let (k, len) = decode(&raw(code::IOIO, (0x99 << 16) | (1 << 4) | (1 << 9), 0x1002));
        assert_eq!(k, ExitKind::Io { port: 0x99, size: 1, write: true, string: false });
        assert_eq!(len, 2);
        // REP INSD from DX = 0x3f8.
        let (k, len) = decode(&raw(code::IOIO, (0x3f8 << 16) | (1 << 6) | (1 << 3) | (1 << 2) | 1, 0x1003));
        assert_eq!(k, ExitKind::Io { port: 0x3f8, size: 4, write: false, string: true });
        assert_eq!(len, 3);
        // IN AX, DX.
        assert_eq!(
            decode_io((0x60 << 16) | (1 << 5) | 1),
            ExitKind::Io { port: 0x60, size: 2, write: false, string: false }
        );
        // A garbage next RIP gives 0, not a wild length.
        assert_eq!(decode(&raw(code::IOIO, 0, 0x0fff)).1, 0);
    }

    #[test]
    fn nested_faults_and_exceptions() {
        let (k, len) = decode(&raw(code::NPF, (1 << 32) | 0b0110, 0x18_0000));
        assert_eq!(k, ExitKind::NestedPageFault { gpa: 0x18_0000, access: Access::Write });
        assert_eq!(len, 0);
        assert_eq!(decode_npf_access((1 << 32) | 0b1_0100), Access::Execute);
        assert_eq!(decode_npf_access(1 << 32), Access::Read);
        assert_eq!(
            decode(&raw(code::EXCP_BASE + 14, 2, 0)).0,
            ExitKind::Exception { vector: 14, error_code: Some(2) }
        );
        assert_eq!(
            decode(&raw(code::EXCP_BASE + 6, 0, 0)).0,
            ExitKind::Exception { vector: 6, error_code: None }
        );
        assert_eq!(decode(&raw(0x9999, 5, 0)).0, ExitKind::Unknown { code: 0x9999, info: 5 });
        assert!(matches!(decode(&raw(code::INVALID, 0, 0)).0, ExitKind::EntryFailed(_)));
        assert_eq!(decode(&raw(code::VMRUN, 0, 0)), (ExitKind::Forbidden("vmrun"), 3));
    }

    #[test]
    fn event_injection_encoding() {
        assert_eq!(event_inj_exception(13, Some(0)), Some(0x8000_0b0d));
        assert_eq!(event_inj_exception(6, None), Some(0x8000_0306));
        assert_eq!(event_inj_exception(14, Some(0x1234)), Some(0x0000_1234_8000_0b0e));
        assert_eq!(event_inj_exception(2, None), None);
        assert_eq!(event_inj_exception(32, None), None);
    }

    fn good() -> CheckedState {
        CheckedState {
            efer: 0xd00 | efer::SVME,
            cr0: 0x8001_0033,
            cr3: 0x1000,
            cr4: 0x620,
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            cs_attrib: pack_attrib(0xa09b),
            misc2: MISC2_INTERCEPTS,
            asid: 1,
            event_inj: 0,
            np_control: NP_ENABLE,
            n_cr3: 0x20_0000,
            msrpm_pa: 0x30_0000,
            iopm_pa: 0x40_0000,
            phys_bits: 40,
        }
    }

    #[test]
    fn consistency_checks_name_the_problem() {
        assert_eq!(check(&good()), Ok(()));
        type Breaker = fn(&mut CheckedState);
        let cases: [(Breaker, &str); 12] = [
            (|s| s.efer &= !efer::SVME, "SVME"),
            (|s| s.cr0 |= 1 << 29, "NW"),
            (|s| s.cr0 |= 1 << 40, "CR0 bits"),
            (|s| s.cr4 |= 1 << 13, "CR4"),
            (|s| s.dr7 |= 1 << 33, "DR7"),
            (|s| s.efer |= 1 << 30, "EFER has reserved"),
            (|s| s.cr4 &= !(1 << 5), "PAE"),
            (|s| s.cs_attrib |= 1 << 10, "CS.L and CS.D"),
            (|s| s.misc2 = 0, "VMRUN"),
            (|s| s.asid = 0, "ASID"),
            (|s| s.event_inj = (1 << 31) | (3 << 8) | 2, "event"),
            (|s| s.msrpm_pa = (1 << 40) - 0x1000, "MSR permission map"),
        ];
        for (break_it, word) in cases {
            let mut s = good();
            break_it(&mut s);
            match check(&s) {
                Err(why) => assert!(why.contains(word), "{why:?} should mention {word:?}"),
                Ok(()) => panic!("a state with a broken {word} passed"),
            }
        }
    }

    #[test]
    fn msr_permission_map_passes_only_the_listed_msrs() {
        let mut map = vec![0u8; MSRPM_BYTES];
        fill_msrpm(&mut map);
        let intercepted = |msr: u32| {
            let (byte, bit) = msrpm_position(msr).unwrap();
            (map[byte] >> bit) & 0b11
        };
        for msr in PASSTHROUGH_MSRS {
            assert_eq!(intercepted(msr), 0, "{msr:#x} passes through");
        }
        for msr in [0x10, 0x1b, 0x277, 0xc000_0103, 0xc001_0114, 0xc000_007f, 0x1fff] {
            assert_eq!(intercepted(msr), 0b11, "{msr:#x} exits on read and write");
        }
        assert_eq!(msrpm_position(0xc000_0080), Some((0x800 + 0x20, 0)));
        assert_eq!(msrpm_position(0xc000_0101), Some((0x800 + 0x40, 2)));
        assert_eq!(msrpm_position(0x2000), None);
        assert_eq!(msrpm_position(0xc001_2000), None);
        assert_eq!(map.iter().filter(|&&b| b != 0xff).count(), 3, "three bytes hold the cleared pairs");
    }

    #[test]
    fn asid_pool_hands_out_and_recycles() {
        let mut p = AsidPool::new();
        let got: Vec<u32> = (0..15).map_while(|_| p.alloc(16)).collect();
        assert_eq!(got, (1..16).collect::<Vec<_>>());
        assert_eq!(p.alloc(16), None, "16 ASIDs leave 15 for guests");
        assert!(p.free(7));
        assert!(!p.free(7), "double free is refused");
        assert!(!p.free(0), "ASID 0 is the host's");
        assert!(!p.free(5000));
        assert_eq!(p.alloc(16), Some(7));
        assert_eq!(p.in_use(), 15);
        let mut big = AsidPool::new();
        assert_eq!((0..2000).map_while(|_| big.alloc(u32::MAX)).count(), MAX_ASIDS as usize - 1);
        assert_eq!(AsidPool::new().alloc(1), None);
    }
}
