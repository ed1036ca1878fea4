//! Intel VT-x formats and decoding (Intel SDM Vol. 3C chapters 24-28 and appendices A-C;
//! section numbers follow the 2023+ editions, where VMCS layout is chapter 25, VM entries
//! 27, VM exits 28 and the VMX instruction reference 31; older editions number them one
//! lower). The hardware backend (`crate::virt::vmx`) reads registers and VMCS fields and
//! hands the raw values to this module, which decides what they mean.
//!
//! No-panic contract: every function accepts any value (capability MSRs, exit reasons,
//! qualifications a guest influences) and answers with a value or a typed error.
#![forbid(unsafe_code)]

use crate::vm::{Access, ExitKind, Segment};

/// What this CPU model lets the backend use, with every control word already adjusted.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// VMCS revision identifier.
    pub revision: u32,
    /// Pin-based controls.
    pub pin: u32,
    /// Primary processor-based controls.
    pub proc1: u32,
    /// Secondary processor-based controls.
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls.
    pub entry: u32,
    /// CR0 bits fixed to 1 / allowed to be 1 in VMX operation.
    pub cr0_fixed: (u64, u64),
    /// CR4 bits fixed to 1 / allowed to be 1 in VMX operation.
    pub cr4_fixed: (u64, u64),
    /// INVEPT type to flush one EPTP's translations.
    pub invept_kind: u64,
    /// INVVPID type to flush one VPID's translations, when VPIDs are used.
    pub invvpid_kind: Option<u64>,
    /// The preemption timer's rate shift (IA32_VMX_MISC bits 4:0), when it is used.
    pub timer_shift: Option<u8>,
    /// Interrupt-window exiting may be set (it is set only while a guest interrupt waits
    /// for the guest to be interruptible; [`Caps::proc1`] never has it).
    pub interrupt_window: bool,
}

/// Model-specific registers the backend reads or switches (SDM Vol. 4 Table 2-2).
pub mod msr {
    /// IA32_FEATURE_CONTROL: bit 0 lock, bit 2 VMXON outside SMX.
    pub const FEATURE_CONTROL: u32 = 0x3a;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_VMX_BASIC (SDM A.1).
    pub const VMX_BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS.
    pub const VMX_PINBASED: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS.
    pub const VMX_PROCBASED: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS.
    pub const VMX_EXIT: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS.
    pub const VMX_ENTRY: u32 = 0x484;
    /// IA32_VMX_MISC (SDM A.6).
    pub const VMX_MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0 (SDM A.7).
    pub const VMX_CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1.
    pub const VMX_CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0 (SDM A.8).
    pub const VMX_CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1.
    pub const VMX_CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_PROCBASED_CTLS2 (SDM A.3.3).
    pub const VMX_PROCBASED2: u32 = 0x48b;
    /// IA32_VMX_EPT_VPID_CAP (SDM A.10).
    pub const VMX_EPT_VPID_CAP: u32 = 0x48c;
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    pub const VMX_TRUE_PINBASED: u32 = 0x48d;
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    pub const VMX_TRUE_PROCBASED: u32 = 0x48e;
    /// IA32_VMX_TRUE_EXIT_CTLS.
    pub const VMX_TRUE_EXIT: u32 = 0x48f;
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    pub const VMX_TRUE_ENTRY: u32 = 0x490;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR.
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK (SFMASK).
    pub const SFMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// IA32_FEATURE_CONTROL bit 0: the MSR is locked until reset.
pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL bit 2: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMXON_OUTSIDE_SMX: u64 = 1 << 2;

/// What to do with IA32_FEATURE_CONTROL before VMXON (SDM Vol. 3C 24.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureControl {
    /// Locked with VMXON outside SMX allowed: nothing to do.
    Ready,
    /// Unlocked: write this value (lock + VMXON outside SMX, other bits kept).
    Write(u64),
    /// Locked without VMXON outside SMX: the firmware turned VMX off.
    Disabled,
}

/// Decides about IA32_FEATURE_CONTROL's current `value`.
pub fn feature_control(value: u64) -> FeatureControl {
    let want = FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMXON_OUTSIDE_SMX;
    if value & FEATURE_CONTROL_LOCK == 0 {
        FeatureControl::Write(value | want)
    } else if value & FEATURE_CONTROL_VMXON_OUTSIDE_SMX == 0 {
        FeatureControl::Disabled
    } else {
        FeatureControl::Ready
    }
}

/// IA32_VMX_BASIC, decoded (SDM A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basic {
    /// VMCS revision identifier (bits 30:0).
    pub revision: u32,
    /// Bytes the VMXON region and a VMCS need (bits 44:32).
    pub region_bytes: u32,
    /// Physical addresses of VMX structures are limited to 32 bits (bit 48).
    pub addr_32bit: bool,
    /// Memory type for VMX structures (bits 53:50; 6 = write-back).
    pub memory_type: u8,
    /// The TRUE control MSRs exist (bit 55).
    pub true_controls: bool,
}

impl Basic {
    /// Decodes the MSR value.
    pub fn decode(v: u64) -> Self {
        Basic {
            revision: (v & 0x7fff_ffff) as u32,
            region_bytes: ((v >> 32) & 0x1fff) as u32,
            addr_32bit: v & (1 << 48) != 0,
            memory_type: ((v >> 50) & 0xf) as u8,
            true_controls: v & (1 << 55) != 0,
        }
    }
}

/// Memory type write-back (SDM Vol. 3A 12.3, and EPT / VMX_BASIC encodings).
pub const MEMORY_TYPE_WB: u8 = 6;

/// Adjusts the controls `required | wanted` to a capability MSR `cap` (low half:
/// allowed-0 settings, a 1 bit must be 1; high half: allowed-1 settings, a 0 bit must
/// be 0; SDM A.3.1). Bits of `wanted` the CPU cannot set are dropped. Returns the bits
/// of `required` that cannot be set as the error.
pub fn adjust_controls(cap: u64, required: u32, wanted: u32) -> Result<u32, u32> {
    let must_be_one = cap as u32;
    let may_be_one = (cap >> 32) as u32;
    let missing = required & !may_be_one;
    if missing != 0 {
        return Err(missing);
    }
    Ok(required | (wanted & may_be_one) | must_be_one)
}

/// Applies the fixed-bit MSRs of CR0 or CR4 (SDM A.7, A.8): bits set in `fixed0` must be
/// 1, bits clear in `fixed1` must be 0.
pub fn apply_fixed(value: u64, fixed0: u64, fixed1: u64) -> u64 {
    (value | fixed0) & fixed1
}

/// The bits of CR0 or CR4 a VMX guest cannot choose (forced one or forced zero), which
/// the guest/host mask gives to the host so the guest reads its own value from the read
/// shadow (SDM 25.6.6).
pub fn owned_cr_bits(fixed0: u64, fixed1: u64) -> u64 {
    fixed0 | !fixed1
}

/// Pin-based VM-execution controls (SDM 25.6.1, Table 25-5).
pub mod pin {
    /// External-interrupt exiting.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMI exiting.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Activate the VMX-preemption timer.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based VM-execution controls (SDM 25.6.2, Table 25-6).
pub mod proc1 {
    /// Interrupt-window exiting: a VM exit at the first instruction boundary where the
    /// guest has RFLAGS.IF = 1 and no blocking by STI or MOV SS (SDM 26.2).
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// HLT exiting.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// MWAIT exiting.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exiting.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// CR3-load exiting.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// CR3-store exiting.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Unconditional I/O exiting.
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// Use I/O bitmaps.
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Use MSR bitmaps.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exiting.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// Activate secondary controls.
    pub const SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM 25.6.2, Table 25-7).
pub mod proc2 {
    /// Enable EPT.
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// Enable RDTSCP.
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Enable VPID.
    pub const ENABLE_VPID: u32 = 1 << 5;
    /// Unrestricted guest.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// Enable INVPCID.
    pub const ENABLE_INVPCID: u32 = 1 << 12;
}

/// VM-exit controls (SDM 25.7.1, Table 25-13).
pub mod exit_ctl {
    /// Save debug controls.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// Host address-space size (64-bit host).
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    /// Acknowledge interrupt on exit.
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    /// Save IA32_PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Save IA32_EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
    /// Save the VMX-preemption timer value.
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls (SDM 25.8.1, Table 25-15).
pub mod entry_ctl {
    /// Load debug controls.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// IA-32e mode guest.
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// VMCS field encodings (SDM Appendix B).
pub mod field {
    /// Virtual-processor identifier.
    pub const VPID: u32 = 0x0000;
    /// Guest ES selector; CS, SS, DS, FS, GS, LDTR, TR follow 2 apart.
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    /// Host ES selector.
    pub const HOST_ES_SELECTOR: u32 = 0x0c00;
    /// Host CS selector.
    pub const HOST_CS_SELECTOR: u32 = 0x0c02;
    /// Host SS selector.
    pub const HOST_SS_SELECTOR: u32 = 0x0c04;
    /// Host DS selector.
    pub const HOST_DS_SELECTOR: u32 = 0x0c06;
    /// Host FS selector.
    pub const HOST_FS_SELECTOR: u32 = 0x0c08;
    /// Host GS selector.
    pub const HOST_GS_SELECTOR: u32 = 0x0c0a;
    /// Host TR selector.
    pub const HOST_TR_SELECTOR: u32 = 0x0c0c;
    /// Address of I/O bitmap A.
    pub const IO_BITMAP_A: u32 = 0x2000;
    /// Address of I/O bitmap B.
    pub const IO_BITMAP_B: u32 = 0x2002;
    /// Address of the MSR bitmaps.
    pub const MSR_BITMAP: u32 = 0x2004;
    /// EPT pointer.
    pub const EPT_POINTER: u32 = 0x201a;
    /// Guest-physical address (read-only).
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
    /// VMCS link pointer.
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    /// Guest IA32_DEBUGCTL.
    pub const GUEST_DEBUGCTL: u32 = 0x2802;
    /// Guest IA32_PAT.
    pub const GUEST_PAT: u32 = 0x2804;
    /// Guest IA32_EFER.
    pub const GUEST_EFER: u32 = 0x2806;
    /// Host IA32_PAT.
    pub const HOST_PAT: u32 = 0x2c00;
    /// Host IA32_EFER.
    pub const HOST_EFER: u32 = 0x2c02;
    /// Pin-based VM-execution controls.
    pub const PIN_CONTROLS: u32 = 0x4000;
    /// Primary processor-based VM-execution controls.
    pub const PROC_CONTROLS: u32 = 0x4002;
    /// Exception bitmap.
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    /// CR3-target count.
    pub const CR3_TARGET_COUNT: u32 = 0x400a;
    /// VM-exit controls.
    pub const EXIT_CONTROLS: u32 = 0x400c;
    /// VM-exit MSR-store count.
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400e;
    /// VM-exit MSR-load count.
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    /// VM-entry controls.
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    /// VM-entry MSR-load count.
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    /// VM-entry interruption-information field.
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    /// VM-entry exception error code.
    pub const ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    /// VM-entry instruction length.
    pub const ENTRY_INSTRUCTION_LEN: u32 = 0x401a;
    /// Secondary processor-based VM-execution controls.
    pub const PROC_CONTROLS2: u32 = 0x401e;
    /// VM-instruction error (read-only).
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    /// Exit reason (read-only).
    pub const EXIT_REASON: u32 = 0x4402;
    /// VM-exit interruption information (read-only).
    pub const EXIT_INTERRUPTION_INFO: u32 = 0x4404;
    /// VM-exit interruption error code (read-only).
    pub const EXIT_INTERRUPTION_ERROR_CODE: u32 = 0x4406;
    /// IDT-vectoring information (read-only).
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    /// IDT-vectoring error code (read-only).
    pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440a;
    /// VM-exit instruction length (read-only).
    pub const EXIT_INSTRUCTION_LEN: u32 = 0x440c;
    /// Guest ES limit; CS, SS, DS, FS, GS, LDTR, TR follow 2 apart.
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    /// Guest GDTR limit.
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    /// Guest IDTR limit.
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    /// Guest ES access rights; CS, SS, DS, FS, GS, LDTR, TR follow 2 apart.
    pub const GUEST_ES_ACCESS: u32 = 0x4814;
    /// Guest SS access rights (its DPL is the CPL).
    pub const GUEST_SS_ACCESS: u32 = 0x4818;
    /// Guest interruptibility state.
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    /// Guest activity state.
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    /// Guest IA32_SYSENTER_CS.
    pub const GUEST_SYSENTER_CS: u32 = 0x482a;
    /// VMX-preemption timer value.
    pub const PREEMPTION_TIMER_VALUE: u32 = 0x482e;
    /// Host IA32_SYSENTER_CS.
    pub const HOST_SYSENTER_CS: u32 = 0x4c00;
    /// CR0 guest/host mask.
    pub const CR0_MASK: u32 = 0x6000;
    /// CR4 guest/host mask.
    pub const CR4_MASK: u32 = 0x6002;
    /// CR0 read shadow.
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    /// CR4 read shadow.
    pub const CR4_READ_SHADOW: u32 = 0x6006;
    /// Exit qualification (read-only).
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    /// Guest CR0.
    pub const GUEST_CR0: u32 = 0x6800;
    /// Guest CR3.
    pub const GUEST_CR3: u32 = 0x6802;
    /// Guest CR4.
    pub const GUEST_CR4: u32 = 0x6804;
    /// Guest ES base; CS, SS, DS, FS, GS, LDTR, TR follow 2 apart.
    pub const GUEST_ES_BASE: u32 = 0x6806;
    /// Guest FS base.
    pub const GUEST_FS_BASE: u32 = 0x680e;
    /// Guest GS base.
    pub const GUEST_GS_BASE: u32 = 0x6810;
    /// Guest GDTR base.
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    /// Guest IDTR base.
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    /// Guest DR7.
    pub const GUEST_DR7: u32 = 0x681a;
    /// Guest RSP.
    pub const GUEST_RSP: u32 = 0x681c;
    /// Guest RIP.
    pub const GUEST_RIP: u32 = 0x681e;
    /// Guest RFLAGS.
    pub const GUEST_RFLAGS: u32 = 0x6820;
    /// Guest pending debug exceptions.
    pub const GUEST_PENDING_DEBUG: u32 = 0x6822;
    /// Guest IA32_SYSENTER_ESP.
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    /// Guest IA32_SYSENTER_EIP.
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;
    /// Host CR0.
    pub const HOST_CR0: u32 = 0x6c00;
    /// Host CR3.
    pub const HOST_CR3: u32 = 0x6c02;
    /// Host CR4.
    pub const HOST_CR4: u32 = 0x6c04;
    /// Host FS base.
    pub const HOST_FS_BASE: u32 = 0x6c06;
    /// Host GS base.
    pub const HOST_GS_BASE: u32 = 0x6c08;
    /// Host TR base.
    pub const HOST_TR_BASE: u32 = 0x6c0a;
    /// Host GDTR base.
    pub const HOST_GDTR_BASE: u32 = 0x6c0c;
    /// Host IDTR base.
    pub const HOST_IDTR_BASE: u32 = 0x6c0e;
    /// Host IA32_SYSENTER_ESP.
    pub const HOST_SYSENTER_ESP: u32 = 0x6c10;
    /// Host IA32_SYSENTER_EIP.
    pub const HOST_SYSENTER_EIP: u32 = 0x6c12;
    /// Host RSP.
    pub const HOST_RSP: u32 = 0x6c14;
    /// Host RIP.
    pub const HOST_RIP: u32 = 0x6c16;
}

/// IA32_VMX_EPT_VPID_CAP, decoded (SDM A.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptVpidCap(pub u64);

impl EptVpidCap {
    /// A page-walk length of 4 is supported (bit 6).
    pub fn walk_4(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// EPT paging structures may be write-back (bit 14).
    pub fn wb(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    /// 2 MiB EPT pages (bit 16).
    pub fn pages_2m(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// INVEPT exists (bit 20).
    pub fn invept(self) -> bool {
        self.0 & (1 << 20) != 0
    }
    /// INVEPT single-context (bit 25).
    pub fn invept_single(self) -> bool {
        self.0 & (1 << 25) != 0
    }
    /// INVEPT all-context (bit 26).
    pub fn invept_all(self) -> bool {
        self.0 & (1 << 26) != 0
    }
    /// INVVPID exists (bit 32).
    pub fn invvpid(self) -> bool {
        self.0 & (1 << 32) != 0
    }
    /// INVVPID single-context (bit 41).
    pub fn invvpid_single(self) -> bool {
        self.0 & (1 << 41) != 0
    }
    /// INVVPID all-context (bit 42).
    pub fn invvpid_all(self) -> bool {
        self.0 & (1 << 42) != 0
    }
}

/// INVEPT / INVVPID type: single context (SDM 31.3, INVEPT and INVVPID).
pub const INV_SINGLE_CONTEXT: u64 = 1;
/// INVEPT / INVVPID type: all contexts.
pub const INV_ALL_CONTEXTS: u64 = 2;

/// The EPT pointer for the PML4 at `root` (SDM 25.6.11): write-back (bits 2:0 = 6) and
/// a page-walk length of 4 (bits 5:3 = 3). Accessed/dirty flags stay off.
pub fn eptp(root: u64) -> u64 {
    (root & 0x000f_ffff_ffff_f000) | (3 << 3) | u64::from(MEMORY_TYPE_WB)
}

/// The VMX-preemption timer value for `slice_ns` on a TSC of `tsc_hz` whose timer counts
/// down once every `2^rate_shift` TSC ticks (IA32_VMX_MISC bits 4:0, SDM 26.5.1), at least
/// 1, saturating at the field's 32 bits.
pub fn preemption_ticks(slice_ns: u64, tsc_hz: u64, rate_shift: u8) -> u32 {
    let tsc = u128::from(slice_ns) * u128::from(tsc_hz) / 1_000_000_000;
    let ticks = tsc >> u32::from(rate_shift.min(31));
    u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
}

/// The MSR bitmap bytes and bit that govern reads and writes of `msr` (SDM 25.6.9):
/// `(read byte, write byte, bit)`, or `None` for MSRs outside the two ranges the bitmap
/// covers (those always exit).
pub fn msr_bitmap_position(msr: u32) -> Option<(usize, usize, u8)> {
    let (base, index) = match msr {
        0..=0x1fff => (0usize, msr),
        0xc000_0000..=0xc000_1fff => (1024usize, msr - 0xc000_0000),
        _ => return None,
    };
    let byte = base + (index / 8) as usize;
    Some((byte, byte + 2048, (index % 8) as u8))
}

/// Access rights for a guest segment field (SDM 25.4.1, 27.3.1.2): an all-zero `access`
/// marks it unusable (bit 16); a usable code or data segment gets its accessed bit set,
/// which VM entry requires.
pub fn guest_access_rights(seg: &Segment) -> u32 {
    let ar = u32::from(seg.access) & 0xf0ff;
    if ar == 0 {
        return 1 << 16;
    }
    if ar & (1 << 4) != 0 {
        ar | 1
    } else {
        ar
    }
}

/// Access rights for the guest's TR: a present, busy 64-bit TSS (type 11), with the
/// granularity bit taken from `seg` (SDM 27.3.1.2: TR must be usable with type 11).
pub fn guest_tr_access(seg: &Segment) -> u32 {
    (u32::from(seg.access) & (1 << 15)) | (1 << 7) | 11
}

/// The base of the 16-byte system descriptor (TSS) whose two words are `lo` and `hi`
/// (SDM Vol. 3A 8.2.3).
pub fn system_descriptor_base(lo: u64, hi: u64) -> u64 {
    ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32)
}

/// RFLAGS bits a guest may hold on entry in IA-32e mode (SDM 27.3.1.4): bit 1 is set,
/// reserved bits (3, 5, 15, 22-63) and VM (17) are clear.
pub fn sanitize_rflags(rflags: u64) -> u64 {
    const ALLOWED: u64 = 0x003f_7fd7 & !(1 << 17);
    (rflags & ALLOWED) | 2
}

/// Whether a hardware exception pushes an error code (SDM 27.2.1.3: the deliver-error-code
/// bit must be 1 exactly for these in protected mode).
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// The VM-entry interruption-information field and error code that inject exception
/// `vector` (SDM 25.8.3): NMI type for vector 2, hardware exception for other vectors
/// below 32, the error code delivered exactly when the vector has one (0 if `error_code`
/// is `None`). `None` for vectors 32 and up, which are not exceptions.
pub fn injection(vector: u8, error_code: Option<u32>) -> Option<(u32, Option<u32>)> {
    if vector >= 32 {
        return None;
    }
    let kind: u32 = if vector == 2 { 2 } else { 3 };
    let mut info = (1 << 31) | (kind << 8) | u32::from(vector);
    let code = if exception_has_error_code(vector) {
        info |= 1 << 11;
        Some(error_code.unwrap_or(0))
    } else {
        None
    };
    Some((info, code))
}

/// Guest interruptibility state: blocking by STI (bit 0) and by MOV SS (bit 1) (SDM
/// 25.4.2).
pub const BLOCKING_BY_STI_OR_MOV_SS: u64 = 0b11;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;

/// Whether VM entry may inject an external interrupt into a guest with these RFLAGS and
/// interruptibility state: IF must be 1 and neither STI nor MOV SS may block (the entry
/// checks of SDM 27.3.1.5 refuse anything else), as a CPU takes an interrupt.
pub fn interrupt_allowed(rflags: u64, interruptibility: u64) -> bool {
    rflags & RFLAGS_IF != 0 && interruptibility & BLOCKING_BY_STI_OR_MOV_SS == 0
}

/// The VM-entry interruption-information field that delivers external interrupt `vector`
/// (SDM 25.8.3: vector in bits 7:0, type 0 in bits 10:8, no error code, valid bit 31);
/// delivered through the guest's IDT as the CPU delivers an interrupt (SDM 27.6.1).
pub fn external_interrupt(vector: u8) -> u32 {
    (1 << 31) | u32::from(vector)
}

/// The message for VM-instruction error number `n` (SDM 31.4, Table 31-1).
pub fn instruction_error(n: u32) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        16 => "VM entry with invalid executive-VMCS pointer",
        17 => "VM entry with non-launched executive VMCS",
        18 => "VM entry with executive-VMCS pointer not VMXON pointer",
        19 => "VMCALL with non-clear VMCS",
        20 => "VMCALL with invalid VM-exit control fields",
        22 => "VMCALL with incorrect MSEG revision identifier",
        23 => "VMXOFF under dual-monitor treatment of SMIs and SMM",
        24 => "VMCALL with invalid SMM-monitor features",
        25 => "VM entry with invalid VM-execution control fields in executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// Basic exit reasons (SDM Appendix C).
pub mod reason {
    /// Exception or NMI.
    pub const EXCEPTION_NMI: u16 = 0;
    /// External interrupt.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// Triple fault.
    pub const TRIPLE_FAULT: u16 = 2;
    /// Interrupt window: the guest can take an interrupt (interrupt-window exiting).
    pub const INTERRUPT_WINDOW: u16 = 7;
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// GETSEC.
    pub const GETSEC: u16 = 11;
    /// HLT.
    pub const HLT: u16 = 12;
    /// INVD.
    pub const INVD: u16 = 13;
    /// RDPMC.
    pub const RDPMC: u16 = 15;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// I/O instruction.
    pub const IO: u16 = 30;
    /// RDMSR.
    pub const RDMSR: u16 = 31;
    /// WRMSR.
    pub const WRMSR: u16 = 32;
    /// VM-entry failure: invalid guest state.
    pub const ENTRY_INVALID_GUEST_STATE: u16 = 33;
    /// VM-entry failure: MSR loading.
    pub const ENTRY_MSR_LOADING: u16 = 34;
    /// MWAIT.
    pub const MWAIT: u16 = 36;
    /// MONITOR.
    pub const MONITOR: u16 = 39;
    /// VM-entry failure: machine-check event.
    pub const ENTRY_MACHINE_CHECK: u16 = 41;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIG: u16 = 49;
    /// VMX-preemption timer expired.
    pub const PREEMPTION_TIMER: u16 = 52;
    /// XSETBV.
    pub const XSETBV: u16 = 55;
}

/// Exit-reason bit 31: the exit is a VM-entry failure (SDM 25.9.1).
pub const EXIT_REASON_ENTRY_FAILURE: u32 = 1 << 31;

/// The raw exit information the backend reads from the VMCS after an exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawExit {
    /// Exit reason (bits 15:0 basic reason, bit 31 entry failure).
    pub reason: u32,
    /// Exit qualification.
    pub qualification: u64,
    /// Guest-physical address (EPT violations and misconfigurations).
    pub gpa: u64,
    /// VM-exit instruction length.
    pub instr_len: u32,
    /// VM-exit interruption information.
    pub interruption_info: u32,
    /// VM-exit interruption error code.
    pub interruption_error: u32,
    /// The guest's CPL: SS.DPL (SDM Vol. 3 24.4.1).
    pub cpl: u8,
}

/// Whether VM_EXIT_INSTRUCTION_LEN is meaningful for basic exit `reason` (SDM 28.2.5):
/// exits caused by executing an instruction.
fn has_instruction(basic: u16) -> bool {
    matches!(basic, 10..=27 | 30..=32 | 36 | 39 | 40 | 46 | 47 | 50..=51 | 53..=55 | 57..=64)
}

/// The VMX instructions a guest may not use, by exit reason (SDM C: 19-27, 50, 53).
fn vmx_instruction(basic: u16) -> Option<&'static str> {
    Some(match basic {
        19 => "vmclear",
        20 => "vmlaunch",
        21 => "vmptrld",
        22 => "vmptrst",
        23 => "vmread",
        24 => "vmresume",
        25 => "vmwrite",
        26 => "vmxoff",
        27 => "vmxon",
        50 => "invept",
        53 => "invvpid",
        _ => return None,
    })
}

/// The I/O exit qualification, decoded (SDM 28.2.1, Table 28-5).
pub fn decode_io(q: u64) -> ExitKind {
    let size = match q & 7 {
        0 => 1,
        1 => 2,
        _ => 4,
    };
    ExitKind::Io {
        port: ((q >> 16) & 0xffff) as u16,
        size,
        write: q & (1 << 3) == 0,
        string: q & (3 << 4) != 0,
    }
}

/// The access an EPT-violation qualification reports (SDM 28.2.1, Table 28-7): bit 2
/// (instruction fetch) wins over bit 1 (write), which wins over a read.
pub fn ept_access(q: u64) -> Access {
    if q & (1 << 2) != 0 {
        Access::Execute
    } else if q & (1 << 1) != 0 {
        Access::Write
    } else {
        Access::Read
    }
}

/// Decodes an exit into the vendor-neutral kind and the instruction length to skip.
pub fn decode_exit(raw: &RawExit) -> (ExitKind, u8) {
    let basic = (raw.reason & 0xffff) as u16;
    let len = if has_instruction(basic) { u8::try_from(raw.instr_len.min(15)).unwrap_or(0) } else { 0 };
    let unknown = ExitKind::Unknown { code: u64::from(raw.reason), info: raw.qualification };
    if raw.reason & EXIT_REASON_ENTRY_FAILURE != 0 {
        let why = match basic {
            reason::ENTRY_INVALID_GUEST_STATE => "invalid guest state",
            reason::ENTRY_MSR_LOADING => "MSR loading",
            reason::ENTRY_MACHINE_CHECK => "machine-check event",
            _ => "unknown entry failure",
        };
        return (ExitKind::EntryFailed(why), 0);
    }
    let kind = match basic {
        reason::EXCEPTION_NMI => {
            let info = raw.interruption_info;
            if info & (1 << 31) == 0 {
                unknown
            } else {
                let error_code = (info & (1 << 11) != 0).then_some(raw.interruption_error);
                ExitKind::Exception { vector: (info & 0xff) as u8, error_code }
            }
        }
        // An interrupt window has nothing for the policy: the backend injects the interrupt
        // it waited for at the next entry.
        reason::EXTERNAL_INTERRUPT | reason::PREEMPTION_TIMER | reason::INTERRUPT_WINDOW => {
            ExitKind::Preempted
        }
        reason::TRIPLE_FAULT => ExitKind::TripleFault,
        reason::CPUID => ExitKind::Cpuid,
        reason::HLT => ExitKind::Hlt,
        reason::VMCALL => ExitKind::Hypercall { cpl: raw.cpl },
        reason::IO => decode_io(raw.qualification),
        reason::RDMSR => ExitKind::Msr { write: false },
        reason::WRMSR => ExitKind::Msr { write: true },
        reason::EPT_VIOLATION => {
            ExitKind::NestedPageFault { gpa: raw.gpa, access: ept_access(raw.qualification) }
        }
        reason::GETSEC => ExitKind::Forbidden("getsec"),
        reason::INVD => ExitKind::Forbidden("invd"),
        reason::RDPMC => ExitKind::Forbidden("rdpmc"),
        reason::XSETBV => ExitKind::Forbidden("xsetbv"),
        reason::MWAIT => ExitKind::Forbidden("mwait"),
        reason::MONITOR => ExitKind::Forbidden("monitor"),
        other => vmx_instruction(other).map_or(unknown, ExitKind::Forbidden),
    };
    (kind, len)
}

/// What a VM-entry-failure exit qualification means for "invalid guest state" (SDM
/// 27.8).
pub fn entry_failure_detail(qualification: u64) -> &'static str {
    match qualification {
        0 => "no further detail",
        2 => "PDPTE loading failed",
        3 => "NMI injection with virtual NMIs blocked",
        4 => "invalid VMCS link pointer",
        _ => "unknown qualification",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_control_decisions() {
        assert_eq!(feature_control(0), FeatureControl::Write(5));
        assert_eq!(feature_control(0x2), FeatureControl::Write(7));
        assert_eq!(feature_control(1), FeatureControl::Disabled);
        assert_eq!(feature_control(3), FeatureControl::Disabled);
        assert_eq!(feature_control(5), FeatureControl::Ready);
    }

    #[test]
    fn basic_decodes() {
        // Revision 0x12, 4096-byte regions, WB, TRUE controls.
        let v = 0x12 | (4096u64 << 32) | (6u64 << 50) | (1u64 << 55);
        let b = Basic::decode(v);
        assert_eq!(b.revision, 0x12);
        assert_eq!(b.region_bytes, 4096);
        assert_eq!(b.memory_type, MEMORY_TYPE_WB);
        assert!(b.true_controls);
        assert!(!b.addr_32bit);
        assert!(!Basic::decode(0x8000_0001).true_controls);
        assert_eq!(Basic::decode(0x8000_0001).revision, 1);
    }

    #[test]
    fn controls_adjust_to_allowed_settings() {
        // allowed-0: bits 1, 2 must be one; allowed-1: bits 0-7 may be one.
        let cap = 0x6u64 | (0xffu64 << 32);
        assert_eq!(adjust_controls(cap, 1, 0), Ok(0x7));
        // A wanted bit the CPU lacks is dropped silently.
        assert_eq!(adjust_controls(cap, 1, 1 << 9), Ok(0x7));
        assert_eq!(adjust_controls(cap, 0, 1 << 6), Ok(0x46));
        // A required bit the CPU lacks is reported.
        assert_eq!(adjust_controls(cap, (1 << 8) | 1, 0), Err(1 << 8));
    }

    #[test]
    fn fixed_bits_and_owned_bits() {
        let (f0, f1) = (0x8000_0021u64, 0xffff_ffffu64);
        assert_eq!(apply_fixed(0x1, f0, f1), 0x8000_0021);
        assert_eq!(apply_fixed(1 << 40, f0, f1), 0x8000_0021);
        let owned = owned_cr_bits(0x2000, 0x3f_ffff);
        assert!(owned & 0x2000 != 0);
        assert!(owned & (1 << 22) != 0);
        assert_eq!(owned & 0x20, 0);
    }

    #[test]
    fn eptp_encodes_wb_and_walk_length() {
        assert_eq!(eptp(0x1234_5000), 0x1234_501e);
        assert_eq!(eptp(0x1234_5fff), 0x1234_501e);
    }

    #[test]
    fn preemption_ticks_scale_and_saturate() {
        // 10 ms at 1 GHz with a shift of 5: 10^7 / 32.
        assert_eq!(preemption_ticks(10_000_000, 1_000_000_000, 5), 312_500);
        assert_eq!(preemption_ticks(0, 1_000_000_000, 5), 1);
        assert_eq!(preemption_ticks(u64::MAX, u64::MAX, 0), u32::MAX);
        assert_eq!(preemption_ticks(1_000_000, 3_000_000_000, 99), 1);
    }

    #[test]
    fn msr_bitmap_positions() {
        assert_eq!(msr_bitmap_position(0), Some((0, 2048, 0)));
        assert_eq!(msr_bitmap_position(0x10), Some((2, 2050, 0)));
        assert_eq!(msr_bitmap_position(0x1fff), Some((1023, 3071, 7)));
        assert_eq!(msr_bitmap_position(msr::LSTAR), Some((1040, 3088, 2)));
        assert_eq!(msr_bitmap_position(msr::KERNEL_GS_BASE), Some((1056, 3104, 2)));
        assert_eq!(msr_bitmap_position(0x2000), None);
        assert_eq!(msr_bitmap_position(0xc000_2000), None);
    }

    #[test]
    fn access_rights() {
        let code = Segment { selector: 8, base: 0, limit: 0xffff_ffff, access: 0xa09a };
        assert_eq!(guest_access_rights(&code), 0xa09b);
        let none = Segment::default();
        assert_eq!(guest_access_rights(&none), 1 << 16);
        // Bits 8-11 of the descriptor word (limit 19:16) are not access rights.
        let data = Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, access: 0xcf93 };
        assert_eq!(guest_access_rights(&data), 0xc093);
        let tr = Segment { selector: 0x18, base: 0x7080, limit: 0x67, access: 0x89 };
        assert_eq!(guest_tr_access(&tr), 0x8b);
        assert_eq!(guest_tr_access(&Segment { access: 0x8089, ..tr }), 0x808b);
    }

    #[test]
    fn tss_descriptor_base() {
        // Base 0x1122_3344_5566_7788, limit 0x67, type 0x89.
        let lo = 0x67 | (0x66_7788u64 << 16) | (0x89u64 << 40) | (0x55u64 << 56);
        let hi = 0x1122_3344u64;
        assert_eq!(system_descriptor_base(lo, hi), 0x1122_3344_5566_7788);
    }

    #[test]
    fn rflags_sanitized() {
        assert_eq!(sanitize_rflags(0), 2);
        assert_eq!(sanitize_rflags(0x202), 0x202);
        assert_eq!(sanitize_rflags(u64::MAX) & (1 << 17), 0);
        assert_eq!(sanitize_rflags(u64::MAX) & (1 << 3), 0);
        assert_eq!(sanitize_rflags(1 << 40), 2);
    }

    #[test]
    fn injections() {
        assert_eq!(injection(13, Some(0)), Some((0x8000_0b0d, Some(0))));
        assert_eq!(injection(6, Some(5)), Some((0x8000_0306, None)));
        assert_eq!(injection(14, None), Some((0x8000_0b0e, Some(0))));
        assert_eq!(injection(2, None), Some((0x8000_0202, None)));
        assert_eq!(injection(32, None), None);
    }

    #[test]
    fn external_interrupts_need_if_and_no_shadow() {
        assert_eq!(external_interrupt(0x20), 0x8000_0020);
        assert_eq!(external_interrupt(0xff), 0x8000_00ff);
        assert!(interrupt_allowed(0x202, 0));
        assert!(!interrupt_allowed(0x002, 0), "IF clear");
        assert!(!interrupt_allowed(0x202, 1), "blocking by STI");
        assert!(!interrupt_allowed(0x202, 2), "blocking by MOV SS");
        assert!(interrupt_allowed(0x202, 1 << 3), "blocking by NMI does not hold interrupts");
    }

    #[test]
    fn instruction_errors_have_messages() {
        assert_eq!(instruction_error(7), "VM entry with invalid control field(s)");
        assert_eq!(instruction_error(8), "VM entry with invalid host-state field(s)");
        assert_eq!(instruction_error(14), "unknown VM-instruction error");
        assert_eq!(instruction_error(u32::MAX), "unknown VM-instruction error");
    }

    fn exit(reason: u32, qualification: u64, instr_len: u32) -> RawExit {
        RawExit { reason, qualification, instr_len, ..RawExit::default() }
    }

    #[test]
    fn basic_exits_decode() {
        assert_eq!(decode_exit(&exit(10, 0, 2)), (ExitKind::Cpuid, 2));
        assert_eq!(decode_exit(&exit(12, 0, 1)), (ExitKind::Hlt, 1));
        assert_eq!(decode_exit(&exit(18, 0, 3)), (ExitKind::Hypercall { cpl: 0 }, 3));
        let user = RawExit { cpl: 3, ..exit(18, 0, 3) };
        assert_eq!(decode_exit(&user), (ExitKind::Hypercall { cpl: 3 }, 3));
        assert_eq!(decode_exit(&exit(31, 0, 2)), (ExitKind::Msr { write: false }, 2));
        assert_eq!(decode_exit(&exit(32, 0, 2)), (ExitKind::Msr { write: true }, 2));
        assert_eq!(decode_exit(&exit(1, 0, 9)), (ExitKind::Preempted, 0));
        assert_eq!(decode_exit(&exit(52, 0, 0)), (ExitKind::Preempted, 0));
        assert_eq!(decode_exit(&exit(7, 0, 3)), (ExitKind::Preempted, 0), "interrupt window, no length");
        assert_eq!(decode_exit(&exit(2, 0, 0)), (ExitKind::TripleFault, 0));
        assert_eq!(decode_exit(&exit(13, 0, 2)), (ExitKind::Forbidden("invd"), 2));
        assert_eq!(decode_exit(&exit(55, 0, 3)), (ExitKind::Forbidden("xsetbv"), 3));
        assert_eq!(decode_exit(&exit(27, 0, 4)), (ExitKind::Forbidden("vmxon"), 4));
        assert_eq!(decode_exit(&exit(50, 0, 5)), (ExitKind::Forbidden("invept"), 5));
        assert_eq!(decode_exit(&exit(53, 0, 5)), (ExitKind::Forbidden("invvpid"), 5));
        assert_eq!(decode_exit(&exit(49, 7, 0)), (ExitKind::Unknown { code: 49, info: 7 }, 0));
        assert_eq!(decode_exit(&exit(200, 1, 3)), (ExitKind::Unknown { code: 200, info: 1 }, 0));
        // An absurd instruction length is capped at the architectural maximum.
        assert_eq!(decode_exit(&exit(10, 0, 999)), (ExitKind::Cpuid, 15));
    }

    #[test]
    fn entry_failures_decode() {
        let e = |basic: u32| decode_exit(&exit(EXIT_REASON_ENTRY_FAILURE | basic, 0, 0)).0;
        assert_eq!(e(33), ExitKind::EntryFailed("invalid guest state"));
        assert_eq!(e(34), ExitKind::EntryFailed("MSR loading"));
        assert_eq!(e(41), ExitKind::EntryFailed("machine-check event"));
        assert_eq!(e(5), ExitKind::EntryFailed("unknown entry failure"));
        assert_eq!(entry_failure_detail(4), "invalid VMCS link pointer");
    }

    #[test]
    fn io_qualification() {
        // OUT to 0x99, one byte, from AL via immediate.
        let q = 0x99 << 16 | 1 << 6;
        assert_eq!(
            decode_exit(&exit(30, q, 2)).0,
            ExitKind::Io { port: 0x99, size: 1, write: true, string: false }
        );
        // IN from DX, four bytes.
        let q = 0x3f8 << 16 | 1 << 3 | 3;
        assert_eq!(decode_io(q), ExitKind::Io { port: 0x3f8, size: 4, write: false, string: false });
        // REP OUTSW.
        let q = 0x80 << 16 | 1 << 5 | 1 << 4 | 1;
        assert_eq!(decode_io(q), ExitKind::Io { port: 0x80, size: 2, write: true, string: true });
    }

    #[test]
    fn ept_violation_access() {
        let v = |q: u64| RawExit { reason: 48, qualification: q, gpa: 0x20_0000, ..RawExit::default() };
        assert_eq!(
            decode_exit(&v(1)),
            (ExitKind::NestedPageFault { gpa: 0x20_0000, access: Access::Read }, 0)
        );
        assert_eq!(decode_exit(&v(2)).0, ExitKind::NestedPageFault { gpa: 0x20_0000, access: Access::Write });
        assert_eq!(
            decode_exit(&v(4 | 1)).0,
            ExitKind::NestedPageFault { gpa: 0x20_0000, access: Access::Execute }
        );
    }

    #[test]
    fn exceptions_decode() {
        let e = RawExit {
            reason: 0,
            interruption_info: 0x8000_0b0e,
            interruption_error: 6,
            ..RawExit::default()
        };
        assert_eq!(decode_exit(&e).0, ExitKind::Exception { vector: 14, error_code: Some(6) });
        let e = RawExit { reason: 0, interruption_info: 0x8000_0306, ..RawExit::default() };
        assert_eq!(decode_exit(&e).0, ExitKind::Exception { vector: 6, error_code: None });
        let e = RawExit { reason: 0, interruption_info: 0, ..RawExit::default() };
        assert!(matches!(decode_exit(&e).0, ExitKind::Unknown { .. }));
    }
}
