//! The checks VM entry makes before it loads the guest (Intel SDM Vol. 3C 27.2 and
//! 27.3.1), redone in software so that a failed entry names the rule it broke.
//!
//! The hardware only says "invalid guest state" (exit reason 33) or "invalid control /
//! host-state field" (VM-instruction error 7 / 8). After such a failure the backend reads
//! the fields into an [`EntryState`], the capability MSRs into [`EntryCaps`], and asks
//! [`check_guest`], [`check_controls`], [`check_host`] or [`check_entry`] for the first
//! rule that does not hold. Each rule cites the SDM section it comes from; the message
//! names the register and what is wrong with it.
//!
//! Covered: the VM-execution, VM-exit and VM-entry control checks of 27.2.1 that need no
//! memory access; the host control registers, MSRs, selectors and bases of 27.2.2-27.2.4;
//! the guest control and debug registers and MSRs (27.3.1.1), segment registers
//! (27.3.1.2), GDTR/IDTR (27.3.1.3), RIP and RFLAGS (27.3.1.4) and non-register state
//! (27.3.1.5). Not covered: checks that read memory (the MSR-load areas, the revision of
//! the VMCS the link pointer names, PAE PDPTEs of 27.3.1.6), SMM and dual-monitor
//! treatment, and features this hypervisor never enables (CET, PKS, LBR, perf global
//! control, APIC virtualization, posted interrupts, VM functions, shadow VMCS, PML,
//! sub-page permissions).
//!
//! No-panic contract: every function accepts any field values.
#![forbid(unsafe_code)]

use super::vmcs::{entry_ctl, exit_ctl, pin, proc1, proc2};

/// Segment register indices in [`GuestState::seg`], in VMCS encoding order (SDM B).
pub mod sreg {
    /// ES.
    pub const ES: usize = 0;
    /// CS.
    pub const CS: usize = 1;
    /// SS.
    pub const SS: usize = 2;
    /// DS.
    pub const DS: usize = 3;
    /// FS.
    pub const FS: usize = 4;
    /// GS.
    pub const GS: usize = 5;
    /// LDTR.
    pub const LDTR: usize = 6;
    /// TR.
    pub const TR: usize = 7;
}

/// One guest segment register as the VMCS holds it (SDM 25.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegState {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes.
    pub limit: u32,
    /// Access rights (type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13, D/B 14, G 15, unusable 16).
    pub access: u32,
}

impl SegState {
    fn unusable(&self) -> bool {
        self.access & AR_UNUSABLE != 0
    }
    fn ty(&self) -> u32 {
        self.access & 0xf
    }
    fn s(&self) -> bool {
        self.access & (1 << 4) != 0
    }
    fn dpl(&self) -> u32 {
        (self.access >> 5) & 3
    }
    fn present(&self) -> bool {
        self.access & (1 << 7) != 0
    }
    fn rpl(&self) -> u32 {
        u32::from(self.selector & 3)
    }
    fn ti(&self) -> bool {
        self.selector & 4 != 0
    }
    fn l(&self) -> bool {
        self.access & (1 << 13) != 0
    }
    fn db(&self) -> bool {
        self.access & (1 << 14) != 0
    }
    /// The granularity rule of 27.3.1.2: limit 11:0 not all ones needs G = 0, limit 31:20
    /// not all zeros needs G = 1.
    fn granularity_ok(&self) -> bool {
        let g = self.access & (1 << 15) != 0;
        !((self.limit & 0xfff != 0xfff && g) || (self.limit & 0xfff0_0000 != 0 && !g))
    }
}

/// Access-rights bit 16: the segment is unusable (SDM 25.4.1).
pub const AR_UNUSABLE: u32 = 1 << 16;

/// The VM-execution, VM-exit and VM-entry control fields (SDM 25.6-25.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controls {
    /// Pin-based VM-execution controls.
    pub pin: u32,
    /// Primary processor-based VM-execution controls.
    pub proc1: u32,
    /// Secondary processor-based VM-execution controls (as written; ignored while
    /// "activate secondary controls" is 0).
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls.
    pub entry: u32,
    /// CR3-target count.
    pub cr3_target_count: u32,
    /// I/O bitmap A address.
    pub io_bitmap_a: u64,
    /// I/O bitmap B address.
    pub io_bitmap_b: u64,
    /// MSR bitmap address.
    pub msr_bitmap: u64,
    /// EPT pointer.
    pub eptp: u64,
    /// VPID.
    pub vpid: u16,
    /// VM-exit MSR-store count.
    pub exit_msr_store_count: u32,
    /// VM-exit MSR-load count.
    pub exit_msr_load_count: u32,
    /// VM-entry MSR-load count.
    pub entry_msr_load_count: u32,
    /// VM-entry interruption-information field.
    pub entry_interruption_info: u32,
    /// VM-entry exception error code.
    pub entry_error_code: u32,
    /// VM-entry instruction length.
    pub entry_instr_len: u32,
}

/// The host-state area (SDM 25.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// Selectors of ES, CS, SS, DS, FS, GS and TR, in that order.
    pub selectors: [u16; 7],
    /// FS base.
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
    /// TR base.
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// RIP.
    pub rip: u64,
    /// IA32_EFER (checked when "load IA32_EFER" is 1).
    pub efer: u64,
    /// IA32_PAT (checked when "load IA32_PAT" is 1).
    pub pat: u64,
}

/// The guest-state area (SDM 25.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// DR7.
    pub dr7: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR (indexed by [`sreg`]).
    pub seg: [SegState; 8],
    /// GDTR base.
    pub gdtr_base: u64,
    /// GDTR limit (the field is 32 bits wide).
    pub gdtr_limit: u32,
    /// IDTR base.
    pub idtr_base: u64,
    /// IDTR limit.
    pub idtr_limit: u32,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// Activity state (0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI).
    pub activity: u32,
    /// Interruptibility state.
    pub interruptibility: u32,
    /// Pending debug exceptions.
    pub pending_debug: u64,
    /// VMCS link pointer.
    pub link_pointer: u64,
}

/// Everything the checks look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryState {
    /// Control fields.
    pub controls: Controls,
    /// Host-state area.
    pub host: HostState,
    /// Guest-state area.
    pub guest: GuestState,
}

/// The capability values the checks need (SDM appendix A).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryCaps {
    /// Pin-based controls capability (the TRUE MSR when it exists): allowed-0 settings in
    /// the low half, allowed-1 settings in the high half.
    pub pin: u64,
    /// Primary processor-based controls capability.
    pub proc1: u64,
    /// Secondary processor-based controls capability (0 when the CPU has none).
    pub proc2: u64,
    /// VM-exit controls capability.
    pub exit: u64,
    /// VM-entry controls capability.
    pub entry: u64,
    /// IA32_VMX_MISC.
    pub misc: u64,
    /// IA32_VMX_CR0_FIXED0.
    pub cr0_fixed0: u64,
    /// IA32_VMX_CR0_FIXED1.
    pub cr0_fixed1: u64,
    /// IA32_VMX_CR4_FIXED0.
    pub cr4_fixed0: u64,
    /// IA32_VMX_CR4_FIXED1.
    pub cr4_fixed1: u64,
    /// Physical-address width (CPUID 80000008h EAX 7:0); 0 means unknown (52 is assumed).
    pub phys_bits: u8,
    /// Linear-address width (CPUID 80000008h EAX 15:8); 0 means unknown (48 is assumed).
    pub linear_bits: u8,
}

impl EntryCaps {
    fn beyond_phys(&self, addr: u64) -> bool {
        let bits = if (1..=52).contains(&self.phys_bits) { self.phys_bits } else { 52 };
        addr >> bits != 0
    }
    fn canonical(&self, addr: u64) -> bool {
        let bits = if (32..=64).contains(&self.linear_bits) { u32::from(self.linear_bits) } else { 48 };
        if bits == 64 {
            return true;
        }
        let shift = 64 - bits;
        (((addr << shift) as i64) >> shift) as u64 == addr
    }
    /// Whether a control word fits its capability MSR (SDM A.3.1).
    fn fits(cap: u64, value: u32) -> bool {
        let must_be_one = cap as u32;
        let may_be_one = (cap >> 32) as u32;
        value & must_be_one == must_be_one && value & !may_be_one == 0
    }
}

const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_PCIDE: u64 = 1 << 17;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// EFER bits Intel defines: SCE, LME, LMA, NXE (SDM Vol. 4 Table 2-2).
const EFER_DEFINED: u64 = (1 << 0) | EFER_LME | EFER_LMA | (1 << 11);
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_VM: u64 = 1 << 17;
/// RFLAGS bits that must be zero: 63:22, 15, 5, 3 (SDM 27.3.1.4).
const RFLAGS_RESERVED: u64 = !0x003f_ffff | (1 << 15) | (1 << 5) | (1 << 3);
/// Pin-based "virtual NMIs".
const PIN_VIRTUAL_NMIS: u32 = 1 << 5;
/// Primary processor-based "NMI-window exiting".
const PROC1_NMI_WINDOW: u32 = 1 << 22;
/// Primary processor-based "monitor trap flag".
const PROC1_MTF: u32 = 1 << 27;
/// VM-entry "entry to SMM".
const ENTRY_SMM: u32 = 1 << 10;
/// VM-entry "deactivate dual-monitor treatment".
const ENTRY_DUAL_MONITOR: u32 = 1 << 11;
/// Interruptibility: blocking by STI, by MOV SS, by SMI, by NMI.
const BLOCK_STI: u32 = 1 << 0;
const BLOCK_MOV_SS: u32 = 1 << 1;
const BLOCK_SMI: u32 = 1 << 2;
const BLOCK_NMI: u32 = 1 << 3;

/// Whether every byte of a PAT value is a valid memory type (0, 1, 4, 5, 6, 7).
fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes().iter().all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

/// The secondary controls in force (0 while "activate secondary controls" is 0).
fn secondary(c: &Controls) -> u32 {
    if c.proc1 & proc1::SECONDARY_CONTROLS != 0 {
        c.proc2
    } else {
        0
    }
}

/// The checks on VM-execution, VM-exit and VM-entry control fields (SDM 27.2.1) that
/// need no memory access. The guest's CR0.PE decides the error-code rule of event
/// injection.
pub fn check_controls(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    let c = &s.controls;
    let p2 = secondary(c);
    // 27.2.1.1: reserved bits of the execution controls.
    if !EntryCaps::fits(caps.pin, c.pin) {
        return Err("pin-based VM-execution controls: reserved bits set or required bits clear");
    }
    if !EntryCaps::fits(caps.proc1, c.proc1) {
        return Err(
            "primary processor-based VM-execution controls: reserved bits set or required bits clear",
        );
    }
    if c.proc1 & proc1::SECONDARY_CONTROLS != 0 && !EntryCaps::fits(caps.proc2, c.proc2) {
        return Err("secondary processor-based VM-execution controls: unsupported bits set");
    }
    // 27.2.1.1: CR3-target count at most IA32_VMX_MISC bits 24:16.
    if c.cr3_target_count > ((caps.misc >> 16) & 0x1ff) as u32 {
        return Err("CR3-target count above what the CPU supports");
    }
    // 27.2.1.1: bitmap addresses are 4 KiB aligned and inside the physical-address width.
    if c.proc1 & proc1::USE_IO_BITMAPS != 0 {
        for a in [c.io_bitmap_a, c.io_bitmap_b] {
            if a & 0xfff != 0 || caps.beyond_phys(a) {
                return Err("I/O bitmap address not 4 KiB aligned or beyond the physical-address width");
            }
        }
    }
    if c.proc1 & proc1::USE_MSR_BITMAPS != 0 && (c.msr_bitmap & 0xfff != 0 || caps.beyond_phys(c.msr_bitmap))
    {
        return Err("MSR bitmap address not 4 KiB aligned or beyond the physical-address width");
    }
    // 27.2.1.1: NMI exiting / virtual NMIs / NMI-window exiting.
    if c.pin & pin::NMI_EXITING == 0 && c.pin & PIN_VIRTUAL_NMIS != 0 {
        return Err("pin-based controls: virtual NMIs set with NMI exiting clear");
    }
    if c.pin & PIN_VIRTUAL_NMIS == 0 && c.proc1 & PROC1_NMI_WINDOW != 0 {
        return Err("processor-based controls: NMI-window exiting set with virtual NMIs clear");
    }
    // 27.2.1.1: VPID and EPT.
    if p2 & proc2::ENABLE_VPID != 0 && c.vpid == 0 {
        return Err("enable VPID set with a VPID of 0");
    }
    if p2 & proc2::ENABLE_EPT != 0 {
        let mt = c.eptp & 7;
        if mt != 0 && mt != 6 {
            return Err("EPT pointer: memory type neither uncacheable nor write-back");
        }
        let walk = (c.eptp >> 3) & 7;
        if walk != 3 && walk != 4 {
            return Err("EPT pointer: page-walk length is not 4 (or 5)");
        }
        if (c.eptp >> 7) & 0x1f != 0 || caps.beyond_phys(c.eptp) {
            return Err("EPT pointer: reserved bits 11:7 or bits beyond the physical-address width set");
        }
    }
    if p2 & proc2::UNRESTRICTED_GUEST != 0 && p2 & proc2::ENABLE_EPT == 0 {
        return Err("unrestricted guest set with enable EPT clear");
    }
    // 27.2.1.2: VM-exit controls.
    if !EntryCaps::fits(caps.exit, c.exit) {
        return Err("VM-exit controls: reserved bits set or required bits clear");
    }
    if c.pin & pin::PREEMPTION_TIMER == 0 && c.exit & exit_ctl::SAVE_PREEMPTION_TIMER != 0 {
        return Err("VM-exit controls: save VMX-preemption timer set without the timer active");
    }
    let msr_max = 512 * (((caps.misc >> 25) & 7) as u32 + 1);
    if c.exit_msr_store_count > msr_max || c.exit_msr_load_count > msr_max || c.entry_msr_load_count > msr_max
    {
        return Err("MSR-store or MSR-load count above the recommended maximum (IA32_VMX_MISC 27:25)");
    }
    // 27.2.1.3: VM-entry controls.
    if !EntryCaps::fits(caps.entry, c.entry) {
        return Err("VM-entry controls: reserved bits set or required bits clear");
    }
    if c.entry & (ENTRY_SMM | ENTRY_DUAL_MONITOR) != 0 {
        return Err("VM-entry controls: entry to SMM or deactivate dual-monitor treatment set outside SMM");
    }
    check_injection(c, s.guest.cr0, p2, caps)
}

/// Event injection rules (SDM 27.2.1.3).
fn check_injection(c: &Controls, guest_cr0: u64, p2: u32, caps: &EntryCaps) -> Result<(), &'static str> {
    let info = c.entry_interruption_info;
    if info & (1 << 31) == 0 {
        return Ok(());
    }
    let ty = (info >> 8) & 7;
    let vector = info & 0xff;
    if ty == 1 || (ty == 7 && c.proc1 & PROC1_MTF == 0) {
        return Err("VM-entry interruption information: reserved or unsupported event type");
    }
    if ty == 2 && vector != 2 {
        return Err("VM-entry interruption information: NMI type with a vector other than 2");
    }
    if ty == 3 && vector > 31 {
        return Err("VM-entry interruption information: hardware exception with a vector above 31");
    }
    if ty == 7 && vector != 0 {
        return Err("VM-entry interruption information: other event with a vector other than 0");
    }
    let deliver = info & (1 << 11) != 0;
    let protected = guest_cr0 & CR0_PE != 0 || p2 & proc2::UNRESTRICTED_GUEST == 0;
    let wants = protected && ty == 3 && matches!(vector, 8 | 10..=14 | 17);
    if deliver != wants {
        return Err("VM-entry interruption information: deliver-error-code bit does not match the exception");
    }
    if info & 0x7fff_f000 != 0 {
        return Err("VM-entry interruption information: reserved bits 30:12 set");
    }
    if deliver && c.entry_error_code & 0xffff_8000 != 0 {
        return Err("VM-entry exception error code: bits 31:15 set");
    }
    if matches!(ty, 4..=6) {
        let zero_ok = caps.misc & (1 << 30) != 0;
        if c.entry_instr_len > 15 || (c.entry_instr_len == 0 && !zero_ok) {
            return Err("VM-entry instruction length outside 1-15 for a software event");
        }
    }
    Ok(())
}

/// The checks on the host-state area (SDM 27.2.2, 27.2.3) and the address-space size
/// rules (27.2.4).
pub fn check_host(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    let h = &s.host;
    let c = &s.controls;
    let host64 = c.exit & exit_ctl::HOST_ADDRESS_SPACE_SIZE != 0;
    // 27.2.2: control registers.
    if h.cr0 & caps.cr0_fixed0 != caps.cr0_fixed0 || h.cr0 & !caps.cr0_fixed1 != 0 {
        return Err("host CR0 does not meet the VMX fixed-bit MSRs");
    }
    if h.cr4 & caps.cr4_fixed0 != caps.cr4_fixed0 || h.cr4 & !caps.cr4_fixed1 != 0 {
        return Err("host CR4 does not meet the VMX fixed-bit MSRs");
    }
    if caps.beyond_phys(h.cr3) {
        return Err("host CR3 has bits beyond the physical-address width set");
    }
    // 27.2.2: MSRs.
    if !caps.canonical(h.sysenter_esp) || !caps.canonical(h.sysenter_eip) {
        return Err("host IA32_SYSENTER_ESP or IA32_SYSENTER_EIP not canonical");
    }
    if c.exit & exit_ctl::LOAD_PAT != 0 && !pat_valid(h.pat) {
        return Err("host IA32_PAT holds an invalid memory type");
    }
    if c.exit & exit_ctl::LOAD_EFER != 0 {
        if h.efer & !EFER_DEFINED != 0 {
            return Err("host IA32_EFER has reserved bits set");
        }
        if (h.efer & EFER_LMA != 0) != host64 || (h.efer & EFER_LME != 0) != host64 {
            return Err("host IA32_EFER.LMA/LME differ from the host address-space size control");
        }
    }
    // 27.2.3: selectors, bases.
    if h.selectors.iter().any(|sel| sel & 7 != 0) {
        return Err("host segment selector with RPL or TI set");
    }
    if h.selectors.get(1) == Some(&0) {
        return Err("host CS selector is null");
    }
    if h.selectors.get(6) == Some(&0) {
        return Err("host TR selector is null");
    }
    if !host64 && h.selectors.get(2) == Some(&0) {
        return Err("host SS selector is null with a 32-bit host");
    }
    if [h.fs_base, h.gs_base, h.gdtr_base, h.idtr_base, h.tr_base].iter().any(|&a| !caps.canonical(a)) {
        return Err("host FS, GS, GDTR, IDTR or TR base not canonical");
    }
    // 27.2.4: address-space size.
    if !host64 {
        if c.entry & entry_ctl::IA32E_MODE_GUEST != 0 {
            return Err("IA-32e mode guest set with a 32-bit host (host address-space size clear)");
        }
        if h.cr4 & CR4_PCIDE != 0 {
            return Err("host CR4.PCIDE set with a 32-bit host");
        }
        if h.rip >> 32 != 0 {
            return Err("host RIP bits 63:32 set with a 32-bit host");
        }
    } else {
        if h.cr4 & CR4_PAE == 0 {
            return Err("host CR4.PAE clear with a 64-bit host");
        }
        if !caps.canonical(h.rip) {
            return Err("host RIP not canonical");
        }
    }
    Ok(())
}

/// A static message for a segment rule: `seg_msg!(i, "...")` gives "guest XX ...".
macro_rules! seg_msg {
    ($i:expr, $rest:literal) => {
        match $i {
            sreg::ES => concat!("guest ES ", $rest),
            sreg::CS => concat!("guest CS ", $rest),
            sreg::SS => concat!("guest SS ", $rest),
            sreg::DS => concat!("guest DS ", $rest),
            sreg::FS => concat!("guest FS ", $rest),
            sreg::GS => concat!("guest GS ", $rest),
            sreg::LDTR => concat!("guest LDTR ", $rest),
            _ => concat!("guest TR ", $rest),
        }
    };
}

/// The checks on the guest-state area (SDM 27.3.1).
pub fn check_guest(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    check_guest_regs(s, caps)?;
    check_guest_segments(s, caps)?;
    check_guest_tables_rip_flags(s, caps)?;
    check_guest_non_register(s, caps)
}

/// Control registers, debug registers and MSRs (SDM 27.3.1.1).
fn check_guest_regs(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    let g = &s.guest;
    let c = &s.controls;
    let ug = secondary(c) & proc2::UNRESTRICTED_GUEST != 0;
    let ia32e = c.entry & entry_ctl::IA32E_MODE_GUEST != 0;
    let fixed0 = if ug { caps.cr0_fixed0 & !(CR0_PE | CR0_PG) } else { caps.cr0_fixed0 };
    if g.cr0 & fixed0 != fixed0 {
        return Err("guest CR0: a bit IA32_VMX_CR0_FIXED0 requires is clear");
    }
    if g.cr0 & !caps.cr0_fixed1 != 0 {
        return Err("guest CR0: a bit IA32_VMX_CR0_FIXED1 forbids is set");
    }
    if g.cr0 & CR0_PG != 0 && g.cr0 & CR0_PE == 0 {
        return Err("guest CR0.PG set with CR0.PE clear");
    }
    if g.cr4 & caps.cr4_fixed0 != caps.cr4_fixed0 {
        return Err("guest CR4: a bit IA32_VMX_CR4_FIXED0 requires is clear");
    }
    if g.cr4 & !caps.cr4_fixed1 != 0 {
        return Err("guest CR4: a bit IA32_VMX_CR4_FIXED1 forbids is set");
    }
    let load_debug = c.entry & entry_ctl::LOAD_DEBUG_CONTROLS != 0;
    if load_debug && g.debugctl & (0x3c | !0xffff) != 0 {
        return Err("guest IA32_DEBUGCTL has reserved bits set");
    }
    if ia32e && g.cr0 & CR0_PG == 0 {
        return Err("IA-32e mode guest with CR0.PG clear");
    }
    if ia32e && g.cr4 & CR4_PAE == 0 {
        return Err("IA-32e mode guest with CR4.PAE clear");
    }
    if !ia32e && g.cr4 & CR4_PCIDE != 0 {
        return Err("guest CR4.PCIDE set outside IA-32e mode");
    }
    if caps.beyond_phys(g.cr3) {
        return Err("guest CR3 has bits beyond the physical-address width set");
    }
    if load_debug && g.dr7 >> 32 != 0 {
        return Err("guest DR7 bits 63:32 set");
    }
    if !caps.canonical(g.sysenter_esp) || !caps.canonical(g.sysenter_eip) {
        return Err("guest IA32_SYSENTER_ESP or IA32_SYSENTER_EIP not canonical");
    }
    if c.entry & entry_ctl::LOAD_PAT != 0 && !pat_valid(g.pat) {
        return Err("guest IA32_PAT holds an invalid memory type");
    }
    if c.entry & entry_ctl::LOAD_EFER != 0 {
        if g.efer & !EFER_DEFINED != 0 {
            return Err("guest IA32_EFER has reserved bits set");
        }
        if (g.efer & EFER_LMA != 0) != ia32e {
            return Err("guest IA32_EFER.LMA differs from the IA-32e mode guest control");
        }
        if g.cr0 & CR0_PG != 0 && (g.efer & EFER_LMA != 0) != (g.efer & EFER_LME != 0) {
            return Err("guest IA32_EFER.LMA differs from IA32_EFER.LME with CR0.PG set");
        }
    }
    Ok(())
}

/// Segment registers (SDM 27.3.1.2). A guest with RFLAGS.VM set outside IA-32e mode gets
/// the virtual-8086 rules; RFLAGS.VM in IA-32e mode is reported by the RFLAGS rules.
fn check_guest_segments(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    let g = &s.guest;
    let c = &s.controls;
    let ug = secondary(c) & proc2::UNRESTRICTED_GUEST != 0;
    let ia32e = c.entry & entry_ctl::IA32E_MODE_GUEST != 0;
    let v86 = g.rflags & RFLAGS_VM != 0 && !ia32e;
    let [es, cs, ss, ds, fs, gs, ldtr, tr] = g.seg;
    // Selectors.
    if tr.ti() {
        return Err("guest TR selector: TI flag set");
    }
    if !ldtr.unusable() && ldtr.ti() {
        return Err("guest LDTR selector: TI flag set");
    }
    if !v86 && !ug && ss.rpl() != cs.rpl() {
        return Err("guest SS selector: RPL differs from CS.RPL");
    }
    // Bases.
    if !caps.canonical(tr.base) {
        return Err("guest TR base not canonical");
    }
    for (i, sg) in [(sreg::FS, fs), (sreg::GS, gs)] {
        if !caps.canonical(sg.base) {
            return Err(seg_msg!(i, "base not canonical"));
        }
    }
    if !ldtr.unusable() && !caps.canonical(ldtr.base) {
        return Err("guest LDTR base not canonical");
    }
    if cs.base >> 32 != 0 {
        return Err("guest CS base bits 63:32 set");
    }
    for (i, sg) in [(sreg::SS, ss), (sreg::DS, ds), (sreg::ES, es)] {
        if !sg.unusable() && sg.base >> 32 != 0 {
            return Err(seg_msg!(i, "base bits 63:32 set"));
        }
    }
    if v86 {
        for (i, sg) in
            [(sreg::CS, cs), (sreg::SS, ss), (sreg::DS, ds), (sreg::ES, es), (sreg::FS, fs), (sreg::GS, gs)]
        {
            if sg.base != u64::from(sg.selector) << 4 {
                return Err(seg_msg!(i, "base is not selector * 16 in virtual-8086 mode"));
            }
            if sg.limit != 0xffff {
                return Err(seg_msg!(i, "limit is not FFFFh in virtual-8086 mode"));
            }
            if sg.access != 0xf3 {
                return Err(seg_msg!(i, "access rights are not F3h in virtual-8086 mode"));
            }
        }
    } else {
        check_cs(cs, ss, ug, ia32e)?;
        check_ss(ss, cs, g.cr0, ug)?;
        for (i, sg) in [(sreg::DS, ds), (sreg::ES, es), (sreg::FS, fs), (sreg::GS, gs)] {
            check_data(i, sg, ug)?;
        }
    }
    check_tr(tr, ia32e)?;
    check_ldtr(ldtr)
}

/// CS access rights (27.3.1.2).
fn check_cs(cs: SegState, ss: SegState, ug: bool, ia32e: bool) -> Result<(), &'static str> {
    if cs.unusable() {
        return Err("guest CS access rights: unusable (CS must be usable)");
    }
    let ty = cs.ty();
    if !(matches!(ty, 9 | 11 | 13 | 15) || (ug && ty == 3)) {
        return Err("guest CS access rights: type is not an accessed code segment");
    }
    if !cs.s() {
        return Err("guest CS access rights: S (descriptor type) clear");
    }
    match ty {
        3 if cs.dpl() != 0 => return Err("guest CS access rights: DPL not 0 for a data-type CS"),
        9 | 11 if cs.dpl() != ss.dpl() => {
            return Err("guest CS access rights: non-conforming CS with DPL other than SS.DPL")
        }
        13 | 15 if cs.dpl() > ss.dpl() => {
            return Err("guest CS access rights: conforming CS with DPL above SS.DPL")
        }
        _ => {}
    }
    if !cs.present() {
        return Err("guest CS access rights: P (present) clear");
    }
    if cs.access & 0xf00 != 0 {
        return Err("guest CS access rights: reserved bits 11:8 set");
    }
    if ia32e && cs.l() && cs.db() {
        return Err("guest CS access rights: L and D/B both set");
    }
    if !cs.granularity_ok() {
        return Err("guest CS access rights: G does not match the limit");
    }
    if cs.access >> 17 != 0 {
        return Err("guest CS access rights: reserved bits 31:17 set");
    }
    Ok(())
}

/// SS access rights (27.3.1.2).
fn check_ss(ss: SegState, cs: SegState, cr0: u64, ug: bool) -> Result<(), &'static str> {
    if !ug && ss.dpl() != ss.rpl() {
        return Err("guest SS access rights: DPL differs from the selector's RPL");
    }
    if (cr0 & CR0_PE == 0 || cs.ty() == 3) && ss.dpl() != 0 {
        return Err("guest SS access rights: DPL not 0 in real mode or with a data-type CS");
    }
    if ss.unusable() {
        return Ok(());
    }
    if !matches!(ss.ty(), 3 | 7) {
        return Err("guest SS access rights: type is not a read/write accessed data segment");
    }
    if !ss.s() {
        return Err("guest SS access rights: S (descriptor type) clear");
    }
    if !ss.present() {
        return Err("guest SS access rights: P (present) clear");
    }
    if ss.access & 0xf00 != 0 {
        return Err("guest SS access rights: reserved bits 11:8 set");
    }
    if !ss.granularity_ok() {
        return Err("guest SS access rights: G does not match the limit");
    }
    if ss.access >> 17 != 0 {
        return Err("guest SS access rights: reserved bits 31:17 set");
    }
    Ok(())
}

/// DS, ES, FS, GS access rights (27.3.1.2).
fn check_data(i: usize, sg: SegState, ug: bool) -> Result<(), &'static str> {
    if sg.unusable() {
        return Ok(());
    }
    let ty = sg.ty();
    if ty & 1 == 0 {
        return Err(seg_msg!(i, "access rights: type not accessed"));
    }
    if ty & 8 != 0 && ty & 2 == 0 {
        return Err(seg_msg!(i, "access rights: execute-only code segment"));
    }
    if !sg.s() {
        return Err(seg_msg!(i, "access rights: S (descriptor type) clear"));
    }
    if !ug && ty <= 11 && sg.dpl() < sg.rpl() {
        return Err(seg_msg!(i, "access rights: DPL below the selector's RPL"));
    }
    if !sg.present() {
        return Err(seg_msg!(i, "access rights: P (present) clear"));
    }
    if sg.access & 0xf00 != 0 {
        return Err(seg_msg!(i, "access rights: reserved bits 11:8 set"));
    }
    if !sg.granularity_ok() {
        return Err(seg_msg!(i, "access rights: G does not match the limit"));
    }
    if sg.access >> 17 != 0 {
        return Err(seg_msg!(i, "access rights: reserved bits 31:17 set"));
    }
    Ok(())
}

/// TR access rights (27.3.1.2).
fn check_tr(tr: SegState, ia32e: bool) -> Result<(), &'static str> {
    let ty_ok = if ia32e { tr.ty() == 11 } else { matches!(tr.ty(), 3 | 11) };
    if !ty_ok {
        return Err("guest TR access rights: type is not a busy TSS (busy 64-bit TSS in IA-32e mode)");
    }
    if tr.s() {
        return Err("guest TR access rights: S (descriptor type) set");
    }
    if !tr.present() {
        return Err("guest TR access rights: P (present) clear");
    }
    if tr.access & 0xf00 != 0 {
        return Err("guest TR access rights: reserved bits 11:8 set");
    }
    if !tr.granularity_ok() {
        return Err("guest TR access rights: G does not match the limit");
    }
    if tr.unusable() {
        return Err("guest TR access rights: unusable (TR must be usable)");
    }
    if tr.access >> 17 != 0 {
        return Err("guest TR access rights: reserved bits 31:17 set");
    }
    Ok(())
}

/// LDTR access rights, when usable (27.3.1.2).
fn check_ldtr(ldtr: SegState) -> Result<(), &'static str> {
    if ldtr.unusable() {
        return Ok(());
    }
    if ldtr.ty() != 2 {
        return Err("guest LDTR access rights: type is not LDT");
    }
    if ldtr.s() {
        return Err("guest LDTR access rights: S (descriptor type) set");
    }
    if !ldtr.present() {
        return Err("guest LDTR access rights: P (present) clear");
    }
    if ldtr.access & 0xf00 != 0 {
        return Err("guest LDTR access rights: reserved bits 11:8 set");
    }
    if !ldtr.granularity_ok() {
        return Err("guest LDTR access rights: G does not match the limit");
    }
    if ldtr.access >> 17 != 0 {
        return Err("guest LDTR access rights: reserved bits 31:17 set");
    }
    Ok(())
}

/// GDTR and IDTR (27.3.1.3), RIP and RFLAGS (27.3.1.4).
fn check_guest_tables_rip_flags(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    let g = &s.guest;
    let c = &s.controls;
    if !caps.canonical(g.gdtr_base) {
        return Err("guest GDTR base not canonical");
    }
    if !caps.canonical(g.idtr_base) {
        return Err("guest IDTR base not canonical");
    }
    if g.gdtr_limit >> 16 != 0 {
        return Err("guest GDTR limit bits 31:16 set");
    }
    if g.idtr_limit >> 16 != 0 {
        return Err("guest IDTR limit bits 31:16 set");
    }
    let ia32e = c.entry & entry_ctl::IA32E_MODE_GUEST != 0;
    let long = ia32e && g.seg[sreg::CS].l();
    if !long && g.rip >> 32 != 0 {
        return Err("guest RIP bits 63:32 set outside 64-bit mode");
    }
    if long && !caps.canonical(g.rip) {
        return Err("guest RIP not canonical");
    }
    if g.rflags & RFLAGS_RESERVED != 0 {
        return Err("guest RFLAGS has reserved bits (63:22, 15, 5, 3) set");
    }
    if g.rflags & 2 == 0 {
        return Err("guest RFLAGS bit 1 clear");
    }
    if g.rflags & RFLAGS_VM != 0 && (ia32e || g.cr0 & CR0_PE == 0) {
        return Err("guest RFLAGS.VM set in IA-32e mode or real mode");
    }
    let info = c.entry_interruption_info;
    if info & (1 << 31) != 0 && (info >> 8) & 7 == 0 && g.rflags & RFLAGS_IF == 0 {
        return Err("guest RFLAGS.IF clear while injecting an external interrupt");
    }
    Ok(())
}

/// Activity and interruptibility state, pending debug exceptions and the VMCS link
/// pointer (27.3.1.5).
fn check_guest_non_register(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    let g = &s.guest;
    let c = &s.controls;
    let info = c.entry_interruption_info;
    let injecting = info & (1 << 31) != 0;
    let ty = (info >> 8) & 7;
    let vector = info & 0xff;
    // Activity state: 0 always; 1-3 when IA32_VMX_MISC bits 8:6 say so.
    let supported = g.activity == 0 || (g.activity <= 3 && caps.misc & (1 << (5 + g.activity)) != 0);
    if !supported {
        return Err("guest activity state not supported by the CPU");
    }
    if g.activity == 1 && g.seg[sreg::SS].dpl() != 0 {
        return Err("guest activity state HLT with SS.DPL not 0");
    }
    let blocking = g.interruptibility & (BLOCK_STI | BLOCK_MOV_SS);
    if g.activity != 0 && blocking != 0 {
        return Err("guest activity state not active with blocking by STI or MOV SS");
    }
    if injecting {
        let allowed = match g.activity {
            0 => true,
            1 => ty == 0 || ty == 2 || ty == 7 || (ty == 3 && matches!(vector, 1 | 18)),
            2 => ty == 3 && vector == 18,
            _ => false,
        };
        if !allowed {
            return Err("guest activity state does not allow the event being injected");
        }
    }
    // Interruptibility state.
    if g.interruptibility & !0x1f != 0 {
        return Err("guest interruptibility state has reserved bits 31:5 set");
    }
    if blocking == BLOCK_STI | BLOCK_MOV_SS {
        return Err("guest interruptibility state: blocking by STI and by MOV SS both set");
    }
    if g.interruptibility & BLOCK_STI != 0 && g.rflags & RFLAGS_IF == 0 {
        return Err("guest interruptibility state: blocking by STI with RFLAGS.IF clear");
    }
    if injecting && ty == 0 && blocking != 0 {
        return Err(
            "guest interruptibility state: blocking by STI or MOV SS while injecting an external interrupt",
        );
    }
    if injecting && ty == 2 && g.interruptibility & BLOCK_MOV_SS != 0 {
        return Err("guest interruptibility state: blocking by MOV SS while injecting an NMI");
    }
    if g.interruptibility & BLOCK_SMI != 0 {
        return Err("guest interruptibility state: blocking by SMI set outside SMM");
    }
    if injecting && ty == 2 && c.pin & PIN_VIRTUAL_NMIS != 0 && g.interruptibility & BLOCK_NMI != 0 {
        return Err("guest interruptibility state: blocking by NMI while injecting an NMI with virtual NMIs");
    }
    // Pending debug exceptions: bits 11:4, 13, 15 and 63:17 reserved.
    if g.pending_debug & (0xff0 | (1 << 13) | (1 << 15) | !0x1_ffff) != 0 {
        return Err("guest pending debug exceptions has reserved bits set");
    }
    let bs = g.pending_debug & (1 << 14) != 0;
    if blocking != 0 || g.activity == 1 {
        let tf = g.rflags & RFLAGS_TF != 0;
        let btf = g.debugctl & (1 << 1) != 0;
        if tf && !btf && !bs {
            return Err("guest pending debug exceptions: BS clear with RFLAGS.TF set and DEBUGCTL.BTF clear");
        }
        if (!tf || btf) && bs {
            return Err("guest pending debug exceptions: BS set with RFLAGS.TF clear or DEBUGCTL.BTF set");
        }
    }
    // VMCS link pointer (the revision it names is not read).
    if g.link_pointer != u64::MAX && (g.link_pointer & 0xfff != 0 || caps.beyond_phys(g.link_pointer)) {
        return Err("VMCS link pointer neither all ones nor a 4 KiB aligned physical address");
    }
    Ok(())
}

/// All checks in the order VM entry makes them: controls, host state, guest state.
pub fn check_entry(s: &EntryState, caps: &EntryCaps) -> Result<(), &'static str> {
    check_controls(s, caps)?;
    check_host(s, caps)?;
    check_guest(s, caps)
}

/// What a failed VM entry gets reported as: the first rule `s` breaks among the checks
/// the failure points at, or `fallback` when none is found. An invalid guest state is
/// reported only after the control and host checks passed, so only guest rules are
/// looked for; for VM-instruction errors 7 and 8 the named part comes first and then all
/// checks in order (an implementation may report a guest-state problem under error 8).
pub fn explain_failure(
    s: &EntryState,
    caps: &EntryCaps,
    kind: FailureKind,
    fallback: &'static str,
) -> &'static str {
    let found = match kind {
        FailureKind::GuestState => check_guest(s, caps),
        FailureKind::Controls => check_controls(s, caps).and_then(|()| check_entry(s, caps)),
        FailureKind::HostState => check_host(s, caps).and_then(|()| check_entry(s, caps)),
    };
    match found {
        Err(why) => why,
        Ok(()) => fallback,
    }
}

/// Which part of VM entry reported the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Exit reason 33: invalid guest state (SDM 27.3).
    GuestState,
    /// VM-instruction error 7: invalid control fields (27.2.1).
    Controls,
    /// VM-instruction error 8: invalid host-state fields (27.2.2-27.2.4).
    HostState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virt::vmx::vmcs::{adjust_controls, apply_fixed, eptp, guest_access_rights, guest_tr_access};
    use crate::vm::Segment;
    use crx_abi::layout;

    /// Capabilities of a Skylake-class CPU (the values Bochs' corei7_skylake_x reports, in
    /// the allowed-0 / allowed-1 layout).
    fn caps() -> EntryCaps {
        EntryCaps {
            pin: 0x16 | (0x7f << 32),
            proc1: 0x0401_e172 | (0xfff9_fffe << 32),
            proc2: 0x0217_7fff << 32,
            exit: 0x0003_6dff | (0x00ff_ffff << 32),
            entry: 0x0000_11fb | (0x0000_ffff << 32),
            misc: 0x0004_01e5 | (3 << 25),
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27ff,
            phys_bits: 40,
            linear_bits: 48,
        }
    }

    fn adjust(cap: u64, required: u32) -> u32 {
        adjust_controls(cap, required, 0).unwrap_or(0)
    }

    fn seg(selector: u16, base: u64, limit: u32, access: u32) -> SegState {
        SegState { selector, base, limit, access }
    }

    /// The state the VT-x backend writes for the crx-abi initial state (abi/src/lib.rs:
    /// 64-bit code at 0x08, data at 0x10, TSS at 0x18, paging from PML4 at 0x1000).
    fn good() -> EntryState {
        let c = caps();
        let code = Segment { selector: 0x08, base: 0, limit: 0xffff_ffff, access: 0xa09b };
        let data = Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, access: 0xc093 };
        let tss = Segment { selector: 0x18, base: layout::GDT + 0x80, limit: 0x67, access: 0x8b };
        let d = seg(0x10, 0, 0xffff_ffff, guest_access_rights(&data));
        let controls = Controls {
            pin: adjust(c.pin, pin::EXTERNAL_INTERRUPT_EXITING | pin::PREEMPTION_TIMER),
            proc1: adjust(
                c.proc1,
                proc1::HLT_EXITING
                    | proc1::UNCONDITIONAL_IO_EXITING
                    | proc1::USE_MSR_BITMAPS
                    | proc1::SECONDARY_CONTROLS
                    | proc1::RDPMC_EXITING,
            ),
            proc2: adjust(c.proc2, proc2::ENABLE_EPT | proc2::ENABLE_VPID),
            exit: adjust(
                c.exit,
                exit_ctl::HOST_ADDRESS_SPACE_SIZE
                    | exit_ctl::SAVE_EFER
                    | exit_ctl::LOAD_EFER
                    | exit_ctl::SAVE_PAT
                    | exit_ctl::LOAD_PAT
                    | exit_ctl::SAVE_PREEMPTION_TIMER,
            ),
            entry: adjust(
                c.entry,
                entry_ctl::IA32E_MODE_GUEST
                    | entry_ctl::LOAD_EFER
                    | entry_ctl::LOAD_PAT
                    | entry_ctl::LOAD_DEBUG_CONTROLS,
            ),
            msr_bitmap: 0x0123_4000,
            eptp: eptp(0x0234_5000),
            vpid: 1,
            ..Controls::default()
        };
        let host = HostState {
            cr0: 0x8001_0033,
            cr3: 0x0010_0000,
            cr4: 0x2020 | (1 << 9) | (1 << 10),
            selectors: [0, 0x08, 0x10, 0, 0, 0, 0x28],
            fs_base: 0,
            gs_base: 0xffff_8000_0000_1000,
            tr_base: 0x0020_0000,
            gdtr_base: 0x0020_1000,
            idtr_base: 0x0020_2000,
            sysenter_esp: 0,
            sysenter_eip: 0,
            rip: 0xffff_ffff_8010_0000,
            efer: 0xd01,
            pat: 0x0007_0406_0007_0406,
        };
        let guest = GuestState {
            cr0: apply_fixed(0x8001_0033, c.cr0_fixed0, c.cr0_fixed1),
            cr3: layout::PML4,
            cr4: apply_fixed(0x620 | 0x2000, c.cr4_fixed0, c.cr4_fixed1),
            dr7: 0x400,
            debugctl: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            pat: 0x0007_0406_0007_0406,
            efer: 0xd00,
            seg: [
                d,
                seg(0x08, 0, 0xffff_ffff, guest_access_rights(&code)),
                d,
                d,
                d,
                d,
                seg(0, 0, 0, AR_UNUSABLE),
                seg(0x18, tss.base, 0x67, guest_tr_access(&tss)),
            ],
            gdtr_base: layout::GDT,
            gdtr_limit: 39,
            idtr_base: 0,
            idtr_limit: 0,
            rip: layout::KERNEL_MIN,
            rflags: 2,
            activity: 0,
            interruptibility: 0,
            pending_debug: 0,
            link_pointer: u64::MAX,
        };
        EntryState { controls, host, guest }
    }

    /// The first failing rule of all checks after `f` changes the good state.
    fn fails(f: impl Fn(&mut EntryState)) -> Result<(), &'static str> {
        let mut s = good();
        f(&mut s);
        check_entry(&s, &caps())
    }

    #[test]
    fn good_state_passes() {
        let s = good();
        assert_eq!(check_controls(&s, &caps()), Ok(()));
        assert_eq!(check_host(&s, &caps()), Ok(()));
        assert_eq!(check_guest(&s, &caps()), Ok(()));
        assert_eq!(explain_failure(&s, &caps(), FailureKind::GuestState, "none"), "none");
    }

    #[test]
    fn canonical_and_width() {
        let c = caps();
        assert!(c.canonical(0x0000_7fff_ffff_ffff));
        assert!(c.canonical(0xffff_8000_0000_0000));
        assert!(!c.canonical(0x0000_8000_0000_0000));
        assert!(!c.canonical(0xfff0_0000_0000_0000));
        assert!(c.beyond_phys(1 << 40));
        assert!(!c.beyond_phys((1 << 40) - 1));
        let unknown = EntryCaps::default();
        assert!(unknown.canonical(0xffff_8000_0000_0000));
        assert!(!unknown.beyond_phys(1 << 51));
        assert!(unknown.beyond_phys(1 << 52));
        assert!(pat_valid(0x0007_0406_0007_0406));
        assert!(!pat_valid(0x0007_0406_0007_0402));
    }

    /// One failing example per control rule (SDM 27.2.1).
    #[test]
    fn control_rules() {
        type Case = (fn(&mut EntryState), &'static str);
        let cases: &[Case] = &[
            (
                |s| s.controls.pin &= !0x16,
                "pin-based VM-execution controls: reserved bits set or required bits clear",
            ),
            (
                |s| s.controls.pin |= 1 << 8,
                "pin-based VM-execution controls: reserved bits set or required bits clear",
            ),
            (
                |s| s.controls.proc1 |= 1,
                "primary processor-based VM-execution controls: reserved bits set or required bits clear",
            ),
            (
                |s| s.controls.proc2 |= 1 << 31,
                "secondary processor-based VM-execution controls: unsupported bits set",
            ),
            (|s| s.controls.cr3_target_count = 5, "CR3-target count above what the CPU supports"),
            (
                |s| {
                    s.controls.proc1 |= proc1::USE_IO_BITMAPS;
                    s.controls.io_bitmap_a = 0x1000;
                    s.controls.io_bitmap_b = 0x2008;
                },
                "I/O bitmap address not 4 KiB aligned or beyond the physical-address width",
            ),
            (
                |s| s.controls.msr_bitmap = 1 << 45,
                "MSR bitmap address not 4 KiB aligned or beyond the physical-address width",
            ),
            (
                |s| s.controls.pin |= PIN_VIRTUAL_NMIS,
                "pin-based controls: virtual NMIs set with NMI exiting clear",
            ),
            (
                |s| s.controls.proc1 |= PROC1_NMI_WINDOW,
                "processor-based controls: NMI-window exiting set with virtual NMIs clear",
            ),
            (|s| s.controls.vpid = 0, "enable VPID set with a VPID of 0"),
            (
                |s| s.controls.eptp = (s.controls.eptp & !7) | 1,
                "EPT pointer: memory type neither uncacheable nor write-back",
            ),
            (|s| s.controls.eptp &= !0x38, "EPT pointer: page-walk length is not 4 (or 5)"),
            (
                |s| s.controls.eptp |= 1 << 7,
                "EPT pointer: reserved bits 11:7 or bits beyond the physical-address width set",
            ),
            (
                |s| s.controls.proc2 = (s.controls.proc2 | proc2::UNRESTRICTED_GUEST) & !proc2::ENABLE_EPT,
                "unrestricted guest set with enable EPT clear",
            ),
            (|s| s.controls.exit &= !0x4, "VM-exit controls: reserved bits set or required bits clear"),
            (
                |s| s.controls.pin &= !pin::PREEMPTION_TIMER,
                "VM-exit controls: save VMX-preemption timer set without the timer active",
            ),
            (
                |s| s.controls.entry_msr_load_count = 4097,
                "MSR-store or MSR-load count above the recommended maximum (IA32_VMX_MISC 27:25)",
            ),
            (|s| s.controls.entry |= 1 << 20, "VM-entry controls: reserved bits set or required bits clear"),
            (
                |s| s.controls.entry |= ENTRY_SMM,
                "VM-entry controls: entry to SMM or deactivate dual-monitor treatment set outside SMM",
            ),
            (
                |s| s.controls.entry_interruption_info = 0x8000_0100,
                "VM-entry interruption information: reserved or unsupported event type",
            ),
            (
                |s| s.controls.entry_interruption_info = 0x8000_0203,
                "VM-entry interruption information: NMI type with a vector other than 2",
            ),
            (
                |s| s.controls.entry_interruption_info = 0x8000_0320,
                "VM-entry interruption information: hardware exception with a vector above 31",
            ),
            (
                |s| s.controls.entry_interruption_info = 0x8000_030d,
                "VM-entry interruption information: deliver-error-code bit does not match the exception",
            ),
            (
                |s| s.controls.entry_interruption_info = 0x8000_0b06,
                "VM-entry interruption information: deliver-error-code bit does not match the exception",
            ),
            (
                |s| s.controls.entry_interruption_info = 0x8000_1306,
                "VM-entry interruption information: reserved bits 30:12 set",
            ),
            (
                |s| {
                    s.controls.entry_interruption_info = 0x8000_0b0d;
                    s.controls.entry_error_code = 0x1_0000;
                },
                "VM-entry exception error code: bits 31:15 set",
            ),
            (
                |s| {
                    s.controls.entry_interruption_info = 0x8000_0603;
                    s.controls.entry_instr_len = 16;
                },
                "VM-entry instruction length outside 1-15 for a software event",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(fails(f), Err(*want));
        }
        // Good injections: #GP with an error code, #UD without, NMI, INT3 of length 1.
        for info in [0x8000_0b0d, 0x8000_0306, 0x8000_0202] {
            assert_eq!(fails(|s| s.controls.entry_interruption_info = info), Ok(()));
        }
        assert_eq!(
            fails(|s| {
                s.controls.entry_interruption_info = 0x8000_0603;
                s.controls.entry_instr_len = 1;
            }),
            Ok(())
        );
    }

    /// One failing example per host-state rule (SDM 27.2.2-27.2.4).
    #[test]
    fn host_rules() {
        type Case = (fn(&mut EntryState), &'static str);
        let cases: &[Case] = &[
            (|s| s.host.cr0 &= !1, "host CR0 does not meet the VMX fixed-bit MSRs"),
            (|s| s.host.cr0 |= 1 << 32, "host CR0 does not meet the VMX fixed-bit MSRs"),
            (|s| s.host.cr4 &= !0x2000, "host CR4 does not meet the VMX fixed-bit MSRs"),
            (|s| s.host.cr3 = 1 << 41, "host CR3 has bits beyond the physical-address width set"),
            (|s| s.host.sysenter_eip = 1 << 47, "host IA32_SYSENTER_ESP or IA32_SYSENTER_EIP not canonical"),
            (|s| s.host.pat = 2, "host IA32_PAT holds an invalid memory type"),
            (|s| s.host.efer |= 1 << 12, "host IA32_EFER has reserved bits set"),
            (
                |s| s.host.efer &= !EFER_LMA,
                "host IA32_EFER.LMA/LME differ from the host address-space size control",
            ),
            (|s| s.host.selectors[2] = 0x13, "host segment selector with RPL or TI set"),
            (|s| s.host.selectors[6] = 0x2c, "host segment selector with RPL or TI set"),
            (|s| s.host.selectors[1] = 0, "host CS selector is null"),
            (|s| s.host.selectors[6] = 0, "host TR selector is null"),
            (|s| s.host.tr_base = 1 << 48, "host FS, GS, GDTR, IDTR or TR base not canonical"),
            (
                |s| {
                    s.controls.exit &= !exit_ctl::HOST_ADDRESS_SPACE_SIZE;
                    s.host.efer = 1;
                    s.host.selectors[2] = 0;
                },
                "host SS selector is null with a 32-bit host",
            ),
            (
                |s| {
                    s.controls.exit &= !exit_ctl::HOST_ADDRESS_SPACE_SIZE;
                    s.host.efer = 1;
                },
                "IA-32e mode guest set with a 32-bit host (host address-space size clear)",
            ),
            (|s| s.host.cr4 &= !CR4_PAE, "host CR4.PAE clear with a 64-bit host"),
            (|s| s.host.rip = 0x0000_8000_0000_0000, "host RIP not canonical"),
        ];
        for (f, want) in cases {
            assert_eq!(fails(f), Err(*want));
        }
        let mut s = good();
        s.controls.exit &= !exit_ctl::HOST_ADDRESS_SPACE_SIZE;
        s.controls.entry &= !entry_ctl::IA32E_MODE_GUEST;
        s.host.efer = 1;
        s.host.cr4 |= CR4_PCIDE;
        assert_eq!(check_host(&s, &caps()), Err("host CR4.PCIDE set with a 32-bit host"));
        s.host.cr4 &= !CR4_PCIDE;
        s.host.rip = 1 << 32;
        assert_eq!(check_host(&s, &caps()), Err("host RIP bits 63:32 set with a 32-bit host"));
    }

    /// One failing example per guest control-register, debug-register and MSR rule
    /// (SDM 27.3.1.1).
    #[test]
    fn guest_register_rules() {
        type Case = (fn(&mut EntryState), &'static str);
        let cases: &[Case] = &[
            (|s| s.guest.cr0 &= !(1 << 5), "guest CR0: a bit IA32_VMX_CR0_FIXED0 requires is clear"),
            (|s| s.guest.cr0 |= 1 << 40, "guest CR0: a bit IA32_VMX_CR0_FIXED1 forbids is set"),
            (
                |s| {
                    s.controls.proc2 |= proc2::UNRESTRICTED_GUEST;
                    s.guest.cr0 &= !CR0_PE;
                },
                "guest CR0.PG set with CR0.PE clear",
            ),
            (|s| s.guest.cr4 &= !0x2000, "guest CR4: a bit IA32_VMX_CR4_FIXED0 requires is clear"),
            (|s| s.guest.cr4 |= 1 << 24, "guest CR4: a bit IA32_VMX_CR4_FIXED1 forbids is set"),
            (|s| s.guest.debugctl = 1 << 2, "guest IA32_DEBUGCTL has reserved bits set"),
            (
                |s| {
                    s.controls.proc2 |= proc2::UNRESTRICTED_GUEST;
                    s.guest.cr0 &= !CR0_PG;
                },
                "IA-32e mode guest with CR0.PG clear",
            ),
            (|s| s.guest.cr4 &= !CR4_PAE, "IA-32e mode guest with CR4.PAE clear"),
            (
                |s| {
                    s.controls.entry &= !entry_ctl::IA32E_MODE_GUEST;
                    s.guest.cr4 |= CR4_PCIDE;
                },
                "guest CR4.PCIDE set outside IA-32e mode",
            ),
            (|s| s.guest.cr3 = 1 << 45, "guest CR3 has bits beyond the physical-address width set"),
            (|s| s.guest.dr7 = 1 << 32, "guest DR7 bits 63:32 set"),
            (
                |s| s.guest.sysenter_esp = 0x0000_9000_0000_0000,
                "guest IA32_SYSENTER_ESP or IA32_SYSENTER_EIP not canonical",
            ),
            (|s| s.guest.pat = 0x0007_0406_0007_0403, "guest IA32_PAT holds an invalid memory type"),
            (|s| s.guest.efer |= 1 << 12, "guest IA32_EFER has reserved bits set"),
            (|s| s.guest.efer = 0x900, "guest IA32_EFER.LMA differs from the IA-32e mode guest control"),
            (|s| s.guest.efer = 0xc00, "guest IA32_EFER.LMA differs from IA32_EFER.LME with CR0.PG set"),
        ];
        for (f, want) in cases {
            assert_eq!(fails(f), Err(*want));
        }
    }

    /// One failing example per segment-register rule (SDM 27.3.1.2).
    #[test]
    fn guest_segment_rules() {
        use sreg::*;
        type Case = (fn(&mut EntryState), &'static str);
        let cases: &[Case] = &[
            (|s| s.guest.seg[TR].selector = 0x1c, "guest TR selector: TI flag set"),
            (|s| s.guest.seg[LDTR] = seg(0x24, 0, 0xfff, 0x82), "guest LDTR selector: TI flag set"),
            (|s| s.guest.seg[SS].selector = 0x13, "guest SS selector: RPL differs from CS.RPL"),
            (|s| s.guest.seg[TR].base = 1 << 47, "guest TR base not canonical"),
            (|s| s.guest.seg[GS].base = 1 << 50, "guest GS base not canonical"),
            (|s| s.guest.seg[LDTR] = seg(0x20, 1 << 49, 0xfff, 0x82), "guest LDTR base not canonical"),
            (|s| s.guest.seg[CS].base = 1 << 32, "guest CS base bits 63:32 set"),
            (|s| s.guest.seg[DS].base = 1 << 33, "guest DS base bits 63:32 set"),
            (
                |s| s.guest.seg[CS].access = AR_UNUSABLE,
                "guest CS access rights: unusable (CS must be usable)",
            ),
            (
                |s| s.guest.seg[CS].access = 0xa093,
                "guest CS access rights: type is not an accessed code segment",
            ),
            (|s| s.guest.seg[CS].access = 0xa08b, "guest CS access rights: S (descriptor type) clear"),
            (
                |s| s.guest.seg[CS].access = 0xa0bb,
                "guest CS access rights: non-conforming CS with DPL other than SS.DPL",
            ),
            (
                |s| {
                    s.guest.seg[CS].access = 0xa0ff;
                    s.guest.seg[CS].selector = 0x0b;
                    s.guest.seg[SS].selector = 0x13;
                    s.guest.seg[SS].access = 0xc0b3;
                },
                "guest CS access rights: conforming CS with DPL above SS.DPL",
            ),
            (|s| s.guest.seg[CS].access = 0xa01b, "guest CS access rights: P (present) clear"),
            (|s| s.guest.seg[CS].access = 0xa19b, "guest CS access rights: reserved bits 11:8 set"),
            (|s| s.guest.seg[CS].access = 0xe09b, "guest CS access rights: L and D/B both set"),
            (|s| s.guest.seg[CS].access = 0x209b, "guest CS access rights: G does not match the limit"),
            (|s| s.guest.seg[CS].access = 0x2_a09b, "guest CS access rights: reserved bits 31:17 set"),
            (
                |s| {
                    s.guest.seg[CS].access = 0xa09f;
                    s.guest.seg[SS].access = 0xc0b3;
                },
                "guest SS access rights: DPL differs from the selector's RPL",
            ),
            (
                |s| s.guest.seg[SS].access = 0xc09b,
                "guest SS access rights: type is not a read/write accessed data segment",
            ),
            (|s| s.guest.seg[SS].access = 0xc083, "guest SS access rights: S (descriptor type) clear"),
            (|s| s.guest.seg[SS].access = 0xc013, "guest SS access rights: P (present) clear"),
            (|s| s.guest.seg[SS].access = 0xc893, "guest SS access rights: reserved bits 11:8 set"),
            (|s| s.guest.seg[SS].limit = 0xffff_f000, "guest SS access rights: G does not match the limit"),
            (|s| s.guest.seg[SS].access = 0x4_c093, "guest SS access rights: reserved bits 31:17 set"),
            (|s| s.guest.seg[DS].access = 0xc092, "guest DS access rights: type not accessed"),
            (|s| s.guest.seg[ES].access = 0xc099, "guest ES access rights: execute-only code segment"),
            (|s| s.guest.seg[FS].access = 0xc083, "guest FS access rights: S (descriptor type) clear"),
            (|s| s.guest.seg[GS].selector = 0x13, "guest GS access rights: DPL below the selector's RPL"),
            (|s| s.guest.seg[DS].access = 0xc013, "guest DS access rights: P (present) clear"),
            (|s| s.guest.seg[ES].access = 0xc293, "guest ES access rights: reserved bits 11:8 set"),
            (|s| s.guest.seg[FS].limit = 0x00ff_f000, "guest FS access rights: G does not match the limit"),
            (|s| s.guest.seg[GS].access = 0x8_c093, "guest GS access rights: reserved bits 31:17 set"),
            (
                |s| s.guest.seg[TR].access = 0x83,
                "guest TR access rights: type is not a busy TSS (busy 64-bit TSS in IA-32e mode)",
            ),
            (|s| s.guest.seg[TR].access = 0x9b, "guest TR access rights: S (descriptor type) set"),
            (|s| s.guest.seg[TR].access = 0x0b, "guest TR access rights: P (present) clear"),
            (|s| s.guest.seg[TR].access = 0x48b, "guest TR access rights: reserved bits 11:8 set"),
            (|s| s.guest.seg[TR].access = 0x808b, "guest TR access rights: G does not match the limit"),
            (|s| s.guest.seg[TR].access = 0x1_008b, "guest TR access rights: unusable (TR must be usable)"),
            (|s| s.guest.seg[TR].access = 0x2_008b, "guest TR access rights: reserved bits 31:17 set"),
            (|s| s.guest.seg[LDTR] = seg(0x20, 0, 0xfff, 0x83), "guest LDTR access rights: type is not LDT"),
            (
                |s| s.guest.seg[LDTR] = seg(0x20, 0, 0xfff, 0x92),
                "guest LDTR access rights: S (descriptor type) set",
            ),
            (
                |s| s.guest.seg[LDTR] = seg(0x20, 0, 0xfff, 0x02),
                "guest LDTR access rights: P (present) clear",
            ),
            (
                |s| s.guest.seg[LDTR] = seg(0x20, 0, 0xfff, 0x182),
                "guest LDTR access rights: reserved bits 11:8 set",
            ),
            (
                |s| s.guest.seg[LDTR] = seg(0x20, 0, 0x1000, 0x8082),
                "guest LDTR access rights: G does not match the limit",
            ),
            (
                |s| s.guest.seg[LDTR] = seg(0x20, 0, 0xfff, 0x4_0082),
                "guest LDTR access rights: reserved bits 31:17 set",
            ),
            (
                |s| {
                    s.controls.entry &= !entry_ctl::IA32E_MODE_GUEST;
                    s.guest.efer = 0;
                    s.guest.rflags |= RFLAGS_VM;
                    s.guest.cr0 |= CR0_PE;
                    s.guest.seg[CS] = seg(0x1000, 0x1000, 0xffff, 0xf3);
                },
                "guest CS base is not selector * 16 in virtual-8086 mode",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(fails(f), Err(*want));
        }
        // Unusable data segments and a usable LDT pass.
        assert_eq!(fails(|s| s.guest.seg[DS] = seg(0, 0, 0, AR_UNUSABLE)), Ok(()));
        assert_eq!(fails(|s| s.guest.seg[LDTR] = seg(0x20, 0x9000, 0xfff, 0x82)), Ok(()));
    }

    /// One failing example per GDTR/IDTR, RIP/RFLAGS and non-register rule
    /// (SDM 27.3.1.3-27.3.1.5).
    #[test]
    fn guest_table_flag_and_state_rules() {
        type Case = (fn(&mut EntryState), &'static str);
        let cases: &[Case] = &[
            (|s| s.guest.gdtr_base = 1 << 47, "guest GDTR base not canonical"),
            (|s| s.guest.idtr_base = 0x00ff_0000_0000_0000, "guest IDTR base not canonical"),
            (|s| s.guest.gdtr_limit = 0x1_0000, "guest GDTR limit bits 31:16 set"),
            (|s| s.guest.idtr_limit = 0x2_0000, "guest IDTR limit bits 31:16 set"),
            (
                |s| {
                    s.guest.seg[sreg::CS].access = 0xc09b;
                    s.guest.rip = 1 << 32;
                },
                "guest RIP bits 63:32 set outside 64-bit mode",
            ),
            (|s| s.guest.rip = 1 << 47, "guest RIP not canonical"),
            (|s| s.guest.rflags |= 1 << 3, "guest RFLAGS has reserved bits (63:22, 15, 5, 3) set"),
            (|s| s.guest.rflags |= 1 << 22, "guest RFLAGS has reserved bits (63:22, 15, 5, 3) set"),
            (|s| s.guest.rflags = 0, "guest RFLAGS bit 1 clear"),
            (|s| s.guest.rflags |= RFLAGS_VM, "guest RFLAGS.VM set in IA-32e mode or real mode"),
            (
                |s| s.controls.entry_interruption_info = 0x8000_0020,
                "guest RFLAGS.IF clear while injecting an external interrupt",
            ),
            (|s| s.guest.activity = 4, "guest activity state not supported by the CPU"),
            (
                |s| {
                    s.guest.activity = 1;
                    s.guest.seg[sreg::CS].selector = 0x0b;
                    s.guest.seg[sreg::CS].access = 0xa0fb;
                    s.guest.seg[sreg::SS].selector = 0x13;
                    s.guest.seg[sreg::SS].access = 0xc0f3;
                },
                "guest activity state HLT with SS.DPL not 0",
            ),
            (
                |s| {
                    s.guest.activity = 1;
                    s.guest.rflags |= RFLAGS_IF;
                    s.guest.interruptibility = BLOCK_STI;
                },
                "guest activity state not active with blocking by STI or MOV SS",
            ),
            (
                |s| {
                    s.guest.activity = 1;
                    s.controls.entry_interruption_info = 0x8000_030d | (1 << 11);
                },
                "guest activity state does not allow the event being injected",
            ),
            (|s| s.guest.interruptibility = 1 << 5, "guest interruptibility state has reserved bits 31:5 set"),
            (
                |s| {
                    s.guest.rflags |= RFLAGS_IF;
                    s.guest.interruptibility = BLOCK_STI | BLOCK_MOV_SS;
                },
                "guest interruptibility state: blocking by STI and by MOV SS both set",
            ),
            (
                |s| s.guest.interruptibility = BLOCK_STI,
                "guest interruptibility state: blocking by STI with RFLAGS.IF clear",
            ),
            (
                |s| {
                    s.guest.rflags |= RFLAGS_IF;
                    s.guest.interruptibility = BLOCK_MOV_SS;
                    s.controls.entry_interruption_info = 0x8000_0020;
                },
                "guest interruptibility state: blocking by STI or MOV SS while injecting an external interrupt",
            ),
            (
                |s| {
                    s.guest.interruptibility = BLOCK_MOV_SS;
                    s.controls.entry_interruption_info = 0x8000_0202;
                },
                "guest interruptibility state: blocking by MOV SS while injecting an NMI",
            ),
            (|s| s.guest.interruptibility = BLOCK_SMI, "guest interruptibility state: blocking by SMI set outside SMM"),
            (
                |s| {
                    s.controls.pin |= pin::NMI_EXITING | PIN_VIRTUAL_NMIS;
                    s.guest.interruptibility = BLOCK_NMI;
                    s.controls.entry_interruption_info = 0x8000_0202;
                },
                "guest interruptibility state: blocking by NMI while injecting an NMI with virtual NMIs",
            ),
            (|s| s.guest.pending_debug = 1 << 4, "guest pending debug exceptions has reserved bits set"),
            (
                |s| {
                    s.guest.rflags |= RFLAGS_TF | RFLAGS_IF;
                    s.guest.interruptibility = BLOCK_STI;
                },
                "guest pending debug exceptions: BS clear with RFLAGS.TF set and DEBUGCTL.BTF clear",
            ),
            (
                |s| {
                    s.guest.activity = 1;
                    s.guest.pending_debug = 1 << 14;
                },
                "guest pending debug exceptions: BS set with RFLAGS.TF clear or DEBUGCTL.BTF set",
            ),
            (
                |s| s.guest.link_pointer = 0x1234,
                "VMCS link pointer neither all ones nor a 4 KiB aligned physical address",
            ),
            (
                |s| s.guest.link_pointer = 1 << 44,
                "VMCS link pointer neither all ones nor a 4 KiB aligned physical address",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(fails(f), Err(*want));
        }
        // HLT with nothing pending, and a page-aligned link pointer, pass.
        assert_eq!(fails(|s| s.guest.activity = 1), Ok(()));
        assert_eq!(fails(|s| s.guest.link_pointer = 0x5000), Ok(()));
    }

    #[test]
    fn failure_explanations() {
        let c = caps();
        let mut s = good();
        s.guest.seg[sreg::CS].access = AR_UNUSABLE;
        assert_eq!(
            explain_failure(&s, &c, FailureKind::GuestState, "x"),
            "guest CS access rights: unusable (CS must be usable)"
        );
        // An invalid guest state never blames controls the hardware accepted.
        let mut s = good();
        s.controls.vpid = 0;
        assert_eq!(explain_failure(&s, &c, FailureKind::GuestState, "fallback"), "fallback");
        assert_eq!(
            explain_failure(&s, &c, FailureKind::Controls, "fallback"),
            "enable VPID set with a VPID of 0"
        );
        // Error 8 looks at the host first, then at everything.
        let mut s = good();
        s.host.selectors[1] = 0;
        s.controls.vpid = 0;
        assert_eq!(explain_failure(&s, &c, FailureKind::HostState, "fallback"), "host CS selector is null");
        let mut s = good();
        s.guest.cr4 &= !0x2000;
        assert_eq!(
            explain_failure(&s, &c, FailureKind::HostState, "fallback"),
            "guest CR4: a bit IA32_VMX_CR4_FIXED0 requires is clear"
        );
    }
}
