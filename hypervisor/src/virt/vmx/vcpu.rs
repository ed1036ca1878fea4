//! One VT-x vCPU: its VMCS, MSR bitmap and VPID, the entry/exit assembly and the
//! translation of exits and actions.
//!
//! Policy implemented here (fixed by the virtualization design):
//! * I/O: "unconditional I/O exiting" (SDM 26.1.3), so every IN/OUT/INS/OUTS exits.
//! * MSRs: the MSR bitmap (SDM 25.6.9) lets the guest read and write, without exits,
//!   FS_BASE and GS_BASE (VMCS guest fields), EFER (VMCS field, saved and loaded on every
//!   exit and entry), and KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, which the hardware
//!   does not switch: [`VmxVcpu::run`] loads the guest's values before the entry and puts
//!   the host's back after the exit, with interrupts off. Every other MSR exits.
//! * CR0/CR4: bits VMX operation fixes (PE, NE, PG; VMXE) belong to the host through the
//!   guest/host masks; the guest reads its own values from the read shadows, and a write
//!   that would change an owned bit exits (CR access, reported as unknown).
//! * Exceptions are not intercepted (the bitmap is 0); NMIs go to the guest.
//! * Guest interrupts ([`Vcpu::queue_interrupt`], the guest's timer): at an entry where the
//!   guest has RFLAGS.IF = 1, no STI or MOV SS blocking and no event of its own being
//!   re-delivered, the VM-entry interruption-information field injects the interrupt
//!   (type 0, external; SDM 25.8.3, 27.6.1). Otherwise "interrupt-window exiting" (SDM
//!   25.6.2 bit 2, 26.2; it takes effect right after an entry, 27.7.5) makes the CPU exit
//!   with reason 7 as soon as the guest can take it, and the next entry injects it and
//!   clears the control. External-interrupt exiting and the preemption timer stay as they
//!   are, so host interrupts and the host's slices never wait for the guest.

use super::insn::{self, vmread, vmwrite};
use super::vmcs::Caps;
use crate::arch::{percpu, time};
use crate::virt::vmx::checks::{
    explain_failure, Controls, EntryCaps, EntryState, FailureKind, GuestState, HostState, SegState,
};
use crate::virt::vmx::vmcs::{
    self as hw, field, msr, owned_cr_bits, pin, proc1, proc2, RawExit, EXIT_REASON_ENTRY_FAILURE,
};
use crate::virt::{Vcpu, VirtError};
use crate::vm::{Action, Exit, ExitKind, GuestRegs, InitialState, Segment};
use spin::Mutex;
use x86_64::instructions::interrupts;
use x86_64::instructions::tables::{lgdt, lidt, sgdt, sidt};
use x86_64::registers::control::{Cr0, Cr3, Cr4};
use x86_64::structures::DescriptorTablePointer;

/// MSRs the guest uses directly whose values the backend switches by hand.
const SWITCHED_MSRS: [u32; 5] = [msr::KERNEL_GS_BASE, msr::STAR, msr::LSTAR, msr::CSTAR, msr::SFMASK];

/// MSRs passed through without exits.
const PASS_THROUGH_MSRS: [u32; 8] = [
    msr::FS_BASE,
    msr::GS_BASE,
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
    msr::EFER,
];

/// The power-on IA32_PAT value, which guests start with.
const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;

core::arch::global_asm!(
    // hv_vmx_enter(regs: *mut GuestRegs (rdi), launched: u64 (rsi)) -> u64
    // Returns 0 after a VM exit (guest registers stored into *regs), 1 for VMfailInvalid,
    // 2 for VMfailValid, 3 if HOST_RSP could not be written. Offsets follow GuestRegs:
    // rax 0, rbx 8, rcx 16, rdx 24, rsi 32, rdi 40, rbp 48, r8 56 ... r15 112.
    ".global hv_vmx_enter",
    ".global hv_vmx_exit",
    "hv_vmx_enter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, 0x6c14", // HOST_RSP: the exit lands with this stack, regs pointer on top
    "vmwrite rax, rsp",
    "jbe 3f",
    "test rsi, rsi", // flags survive the loads below (MOV changes none)
    "mov rax, [rdi]",
    "mov rbx, [rdi + 8]",
    "mov rcx, [rdi + 16]",
    "mov rdx, [rdi + 24]",
    "mov rsi, [rdi + 32]",
    "mov rbp, [rdi + 48]",
    "mov r8, [rdi + 56]",
    "mov r9, [rdi + 64]",
    "mov r10, [rdi + 72]",
    "mov r11, [rdi + 80]",
    "mov r12, [rdi + 88]",
    "mov r13, [rdi + 96]",
    "mov r14, [rdi + 104]",
    "mov r15, [rdi + 112]",
    "mov rdi, [rdi + 40]",
    "jnz 1f",
    "vmlaunch",
    "jmp 2f",
    "1:",
    "vmresume",
    "2:",
    // The entry instruction failed: CF = VMfailInvalid, ZF = VMfailValid.
    "mov eax, 1",
    "jc 4f",
    "mov eax, 2",
    "jmp 4f",
    "3:",
    "mov eax, 3",
    "4:",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    // VM exit: RSP = HOST_RSP (the regs pointer on top), RFLAGS = 2, interrupts off.
    "hv_vmx_exit:",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi], rax",
    "mov [rdi + 8], rbx",
    "mov [rdi + 16], rcx",
    "mov [rdi + 24], rdx",
    "mov [rdi + 32], rsi",
    "mov [rdi + 48], rbp",
    "mov [rdi + 56], r8",
    "mov [rdi + 64], r9",
    "mov [rdi + 72], r10",
    "mov [rdi + 80], r11",
    "mov [rdi + 88], r12",
    "mov [rdi + 96], r13",
    "mov [rdi + 104], r14",
    "mov [rdi + 112], r15",
    "pop rax",
    "mov [rdi + 40], rax",
    "xor eax, eax",
    "jmp 4b",
);

extern "C" {
    fn hv_vmx_enter(regs: *mut GuestRegs, launched: u64) -> u64;
    static hv_vmx_exit: u8;
}

/// An event to deliver on the next entry: interruption information, error code,
/// instruction length (software events only).
#[derive(Debug, Clone, Copy)]
struct Event {
    info: u32,
    error_code: Option<u32>,
    instr_len: u32,
}

/// A VT-x vCPU. Created, run and dropped on one CPU.
pub struct VmxVcpu {
    regs: GuestRegs,
    /// Physical address of the VMCS (0 until allocated).
    vmcs: u64,
    /// Physical address of the MSR bitmap (0 until allocated).
    msr_bitmap: u64,
    /// VPID, 0 when VPIDs are not used.
    vpid: u16,
    /// The EPT pointer.
    eptp: u64,
    /// The CPU that owns the VMCS.
    cpu: u32,
    /// VMLAUNCH succeeded once: VMRESUME from now on.
    launched: bool,
    /// Guest values of [`SWITCHED_MSRS`].
    guest_msrs: [u64; 5],
    /// An event to inject on the next entry (a queued exception, or an event whose
    /// delivery an exit cut short).
    pending: Option<Event>,
    /// A guest interrupt waiting for the guest to be interruptible.
    irq: Option<u8>,
    /// Interrupt-window exiting is on in the VMCS.
    window: bool,
    /// Clear STI / MOV SS blocking on the next entry (an instruction was skipped).
    clear_shadow: bool,
    caps: Caps,
    /// The host's GDTR and IDTR (VM exit sets both limits to 0xffff; SDM 28.5.2).
    host_gdtr: DescriptorTablePointer,
    host_idtr: DescriptorTablePointer,
}

fn w(field: u32, value: u64) -> Result<(), VirtError> {
    // SAFETY: only called while setting up or running this backend's own current VMCS,
    // with values this module computes (controls the CPU allows, host state read from
    // this CPU, guest state that only affects the guest).
    unsafe { vmwrite(field, value) }.map_err(|why| {
        log::warn!("vmx: VMWRITE {field:#06x} = {value:#x} failed: {why}");
        VirtError::Instruction(why)
    })
}

fn r(field: u32) -> u64 {
    vmread(field).unwrap_or(0)
}

/// The capability values the entry checks compare against (SDM appendix A), read again
/// from the MSRs, with the address widths from CPUID 80000008h.
fn entry_caps() -> EntryCaps {
    // SAFETY: the VMX capability MSRs exist on every CPU in VMX operation (SDM A.1); the
    // TRUE MSRs are read only when IA32_VMX_BASIC bit 55 announces them, and the
    // secondary-controls MSR only when the primary capability allows the secondary
    // controls (A.3.2).
    unsafe {
        let t = hw::Basic::decode(insn::rdmsr(msr::VMX_BASIC)).true_controls;
        let pick = |plain: u32, true_msr: u32| insn::rdmsr(if t { true_msr } else { plain });
        let proc1 = pick(msr::VMX_PROCBASED, msr::VMX_TRUE_PROCBASED);
        let has_proc2 = (proc1 >> 32) & u64::from(proc1::SECONDARY_CONTROLS) != 0;
        let widths = if crate::arch::cpu::cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
            crate::arch::cpu::cpuid(0x8000_0008, 0).eax
        } else {
            0
        };
        EntryCaps {
            pin: pick(msr::VMX_PINBASED, msr::VMX_TRUE_PINBASED),
            proc1,
            proc2: if has_proc2 { insn::rdmsr(msr::VMX_PROCBASED2) } else { 0 },
            exit: pick(msr::VMX_EXIT, msr::VMX_TRUE_EXIT),
            entry: pick(msr::VMX_ENTRY, msr::VMX_TRUE_ENTRY),
            misc: insn::rdmsr(msr::VMX_MISC),
            cr0_fixed0: insn::rdmsr(msr::VMX_CR0_FIXED0),
            cr0_fixed1: insn::rdmsr(msr::VMX_CR0_FIXED1),
            cr4_fixed0: insn::rdmsr(msr::VMX_CR4_FIXED0),
            cr4_fixed1: insn::rdmsr(msr::VMX_CR4_FIXED1),
            phys_bits: (widths & 0xff) as u8,
            linear_bits: ((widths >> 8) & 0xff) as u8,
        }
    }
}

/// The fields VM entry checks, read from the current VMCS (a field that cannot be read
/// counts as 0).
fn read_entry_state() -> EntryState {
    let r32 = |f: u32| r(f) as u32;
    let controls = Controls {
        pin: r32(field::PIN_CONTROLS),
        proc1: r32(field::PROC_CONTROLS),
        proc2: r32(field::PROC_CONTROLS2),
        exit: r32(field::EXIT_CONTROLS),
        entry: r32(field::ENTRY_CONTROLS),
        cr3_target_count: r32(field::CR3_TARGET_COUNT),
        io_bitmap_a: r(field::IO_BITMAP_A),
        io_bitmap_b: r(field::IO_BITMAP_B),
        msr_bitmap: r(field::MSR_BITMAP),
        eptp: r(field::EPT_POINTER),
        vpid: r(field::VPID) as u16,
        exit_msr_store_count: r32(field::EXIT_MSR_STORE_COUNT),
        exit_msr_load_count: r32(field::EXIT_MSR_LOAD_COUNT),
        entry_msr_load_count: r32(field::ENTRY_MSR_LOAD_COUNT),
        entry_interruption_info: r32(field::ENTRY_INTERRUPTION_INFO),
        entry_error_code: r32(field::ENTRY_EXCEPTION_ERROR_CODE),
        entry_instr_len: r32(field::ENTRY_INSTRUCTION_LEN),
    };
    let sel = |f: u32| r(f) as u16;
    let host = HostState {
        cr0: r(field::HOST_CR0),
        cr3: r(field::HOST_CR3),
        cr4: r(field::HOST_CR4),
        selectors: [
            sel(field::HOST_ES_SELECTOR),
            sel(field::HOST_CS_SELECTOR),
            sel(field::HOST_SS_SELECTOR),
            sel(field::HOST_DS_SELECTOR),
            sel(field::HOST_FS_SELECTOR),
            sel(field::HOST_GS_SELECTOR),
            sel(field::HOST_TR_SELECTOR),
        ],
        fs_base: r(field::HOST_FS_BASE),
        gs_base: r(field::HOST_GS_BASE),
        tr_base: r(field::HOST_TR_BASE),
        gdtr_base: r(field::HOST_GDTR_BASE),
        idtr_base: r(field::HOST_IDTR_BASE),
        sysenter_esp: r(field::HOST_SYSENTER_ESP),
        sysenter_eip: r(field::HOST_SYSENTER_EIP),
        rip: r(field::HOST_RIP),
        efer: r(field::HOST_EFER),
        pat: r(field::HOST_PAT),
    };
    let mut seg = [SegState::default(); 8];
    for (i, s) in (0u32..).zip(seg.iter_mut()) {
        *s = SegState {
            selector: sel(field::GUEST_ES_SELECTOR + 2 * i),
            base: r(field::GUEST_ES_BASE + 2 * i),
            limit: r32(field::GUEST_ES_LIMIT + 2 * i),
            access: r32(field::GUEST_ES_ACCESS + 2 * i),
        };
    }
    let guest = GuestState {
        cr0: r(field::GUEST_CR0),
        cr3: r(field::GUEST_CR3),
        cr4: r(field::GUEST_CR4),
        dr7: r(field::GUEST_DR7),
        debugctl: r(field::GUEST_DEBUGCTL),
        sysenter_esp: r(field::GUEST_SYSENTER_ESP),
        sysenter_eip: r(field::GUEST_SYSENTER_EIP),
        pat: r(field::GUEST_PAT),
        efer: r(field::GUEST_EFER),
        seg,
        gdtr_base: r(field::GUEST_GDTR_BASE),
        gdtr_limit: r32(field::GUEST_GDTR_LIMIT),
        idtr_base: r(field::GUEST_IDTR_BASE),
        idtr_limit: r32(field::GUEST_IDTR_LIMIT),
        rip: r(field::GUEST_RIP),
        rflags: r(field::GUEST_RFLAGS),
        activity: r32(field::GUEST_ACTIVITY_STATE),
        interruptibility: r32(field::GUEST_INTERRUPTIBILITY),
        pending_debug: r(field::GUEST_PENDING_DEBUG),
        link_pointer: r(field::VMCS_LINK_POINTER),
    };
    EntryState { controls, host, guest }
}

impl VmxVcpu {
    /// Builds the VMCS for a guest starting in `init` with EPT root `nested_root`.
    pub fn new(caps: &Caps, nested_root: u64, init: &InitialState) -> Result<Self, VirtError> {
        let mut v = VmxVcpu {
            regs: init.regs,
            vmcs: 0,
            msr_bitmap: 0,
            vpid: 0,
            eptp: hw::eptp(nested_root),
            cpu: percpu::cpu_index(),
            launched: false,
            guest_msrs: [0; 5],
            pending: None,
            irq: None,
            window: false,
            clear_shadow: false,
            caps: *caps,
            host_gdtr: sgdt(),
            host_idtr: sidt(),
        };
        // From here on, `Drop` releases whatever was taken if a step fails.
        v.vmcs = alloc_zeroed().ok_or(VirtError::OutOfMemory)?;
        v.msr_bitmap = alloc_zeroed().ok_or(VirtError::OutOfMemory)?;
        if caps.invvpid_kind.is_some() {
            v.vpid = alloc_vpid().ok_or(VirtError::NoTag)?;
        }
        // SAFETY: the VMCS frame is fresh and identity-mapped; its first 4 bytes hold
        // the revision identifier, bit 31 clear (an ordinary VMCS, SDM 25.2).
        unsafe { core::ptr::write_volatile(v.vmcs as *mut u32, caps.revision) };
        v.fill_msr_bitmap();
        // SAFETY: this CPU is in VMX operation (`create_vcpu` ran `enable_cpu`), and the
        // frame is a VMCS region this vCPU owns.
        unsafe {
            insn::vmclear(v.vmcs).map_err(VirtError::Instruction)?;
            insn::vmptrld(v.vmcs).map_err(VirtError::Instruction)?;
        }
        v.write_controls()?;
        v.write_host_state()?;
        v.write_guest_state(init)?;
        v.flush_tags();
        Ok(v)
    }

    fn fill_msr_bitmap(&mut self) {
        let base = self.msr_bitmap as *mut u8;
        // SAFETY: the bitmap frame is this vCPU's, identity-mapped, 4096 bytes.
        unsafe { core::ptr::write_bytes(base, 0xff, 4096) };
        for m in PASS_THROUGH_MSRS {
            if let Some((rd, wr, bit)) = hw::msr_bitmap_position(m) {
                for byte in [rd, wr].into_iter().filter(|&b| b < 4096) {
                    // SAFETY: `byte` < 4096 lies inside the bitmap frame.
                    unsafe { *base.add(byte) &= !(1 << bit) };
                }
            }
        }
    }

    /// Drops cached EPT and VPID translations for this vCPU's tags on this CPU, so a
    /// recycled VPID or nested root starts clean.
    fn flush_tags(&self) {
        if let Err(e) = insn::invept(self.caps.invept_kind, self.eptp) {
            log::warn!("vmx: INVEPT failed: {e}");
        }
        if let (Some(kind), true) = (self.caps.invvpid_kind, self.vpid != 0) {
            if let Err(e) = insn::invvpid(kind, self.vpid) {
                log::warn!("vmx: INVVPID failed: {e}");
            }
        }
    }

    fn write_controls(&self) -> Result<(), VirtError> {
        let c = &self.caps;
        let mut proc2 = c.proc2;
        if self.vpid == 0 {
            proc2 &= !proc2::ENABLE_VPID;
        }
        w(field::PIN_CONTROLS, u64::from(c.pin))?;
        w(field::PROC_CONTROLS, u64::from(c.proc1))?;
        w(field::PROC_CONTROLS2, u64::from(proc2))?;
        w(field::EXIT_CONTROLS, u64::from(c.exit))?;
        w(field::ENTRY_CONTROLS, u64::from(c.entry))?;
        w(field::EXCEPTION_BITMAP, 0)?;
        w(field::CR3_TARGET_COUNT, 0)?;
        w(field::EXIT_MSR_STORE_COUNT, 0)?;
        w(field::EXIT_MSR_LOAD_COUNT, 0)?;
        w(field::ENTRY_MSR_LOAD_COUNT, 0)?;
        w(field::ENTRY_INTERRUPTION_INFO, 0)?;
        w(field::MSR_BITMAP, self.msr_bitmap)?;
        w(field::EPT_POINTER, self.eptp)?;
        if self.vpid != 0 {
            w(field::VPID, u64::from(self.vpid))?;
        }
        if c.proc1 & proc1::USE_IO_BITMAPS != 0 {
            // Never requested; a CPU forcing it would need bitmaps, which this backend
            // does not allocate.
            return Err(VirtError::ControlUnavailable("use I/O bitmaps forced on"));
        }
        Ok(())
    }

    fn write_host_state(&self) -> Result<(), VirtError> {
        // SAFETY: reading MSRs that exist on every x86_64 CPU (PAT, EFER, FS/GS base).
        let (pat, efer, fs_base, gs_base) = unsafe {
            (
                insn::rdmsr(msr::PAT),
                insn::rdmsr(msr::EFER),
                insn::rdmsr(msr::FS_BASE),
                insn::rdmsr(msr::GS_BASE),
            )
        };
        let [cs, ss, ds, es, fs, gs] = insn::selectors();
        // Host selectors need RPL = TI = 0 (SDM 27.2.3); data selectors may be 0.
        let clean = |s: u16| if s & 7 == 0 { s } else { 0 };
        let tr = insn::str();
        if tr == 0 || tr & 7 != 0 {
            return Err(VirtError::MissingFeature("a loaded host task register"));
        }
        let tr_base = self
            .host_tss_base(tr)
            .ok_or(VirtError::MissingFeature("a host TSS descriptor inside the GDT"))?;
        w(field::HOST_CR0, Cr0::read_raw())?;
        w(field::HOST_CR3, Cr3::read_raw().0.start_address().as_u64() | u64::from(Cr3::read_raw().1))?;
        w(field::HOST_CR4, Cr4::read_raw())?;
        w(field::HOST_CS_SELECTOR, u64::from(cs))?;
        w(field::HOST_SS_SELECTOR, u64::from(clean(ss)))?;
        w(field::HOST_DS_SELECTOR, u64::from(clean(ds)))?;
        w(field::HOST_ES_SELECTOR, u64::from(clean(es)))?;
        w(field::HOST_FS_SELECTOR, u64::from(clean(fs)))?;
        w(field::HOST_GS_SELECTOR, u64::from(clean(gs)))?;
        w(field::HOST_TR_SELECTOR, u64::from(tr))?;
        w(field::HOST_FS_BASE, fs_base)?;
        w(field::HOST_GS_BASE, gs_base)?;
        w(field::HOST_TR_BASE, tr_base)?;
        w(field::HOST_GDTR_BASE, self.host_gdtr.base.as_u64())?;
        w(field::HOST_IDTR_BASE, self.host_idtr.base.as_u64())?;
        w(field::HOST_SYSENTER_CS, 0)?;
        w(field::HOST_SYSENTER_ESP, 0)?;
        w(field::HOST_SYSENTER_EIP, 0)?;
        w(field::HOST_PAT, pat)?;
        w(field::HOST_EFER, efer)?;
        // Only the address of the exit stub is taken.
        w(field::HOST_RIP, (&raw const hv_vmx_exit) as u64)?;
        Ok(())
    }

    /// The base of this CPU's TSS, from its descriptor in the current GDT.
    fn host_tss_base(&self, tr: u16) -> Option<u64> {
        let off = u64::from(tr & !7);
        if off + 15 > u64::from(self.host_gdtr.limit) {
            return None;
        }
        let at = self.host_gdtr.base.as_u64() + off;
        // SAFETY: the descriptor lies inside the live GDT (checked against its limit),
        // which is kernel memory mapped for reading.
        let (lo, hi) = unsafe {
            (core::ptr::read_volatile(at as *const u64), core::ptr::read_volatile((at + 8) as *const u64))
        };
        Some(hw::system_descriptor_base(lo, hi))
    }

    fn write_guest_state(&mut self, init: &InitialState) -> Result<(), VirtError> {
        let c = self.caps;
        let cr0 = hw::apply_fixed(init.cr0, c.cr0_fixed.0, c.cr0_fixed.1);
        let cr4 = hw::apply_fixed(init.cr4 | (1 << 13), c.cr4_fixed.0, c.cr4_fixed.1);
        w(field::GUEST_CR0, cr0)?;
        w(field::GUEST_CR3, init.cr3)?;
        w(field::GUEST_CR4, cr4)?;
        w(field::CR0_MASK, owned_cr_bits(c.cr0_fixed.0, c.cr0_fixed.1))?;
        w(field::CR4_MASK, owned_cr_bits(c.cr4_fixed.0, c.cr4_fixed.1) | (1 << 13))?;
        w(field::CR0_READ_SHADOW, init.cr0)?;
        w(field::CR4_READ_SHADOW, init.cr4)?;
        w(field::GUEST_EFER, init.efer)?;
        w(field::GUEST_PAT, DEFAULT_PAT)?;
        w(field::GUEST_DEBUGCTL, 0)?;
        w(field::GUEST_DR7, 0x400)?;

        let segs: [&Segment; 6] = [&init.es, &init.cs, &init.ss, &init.ds, &init.fs, &init.gs];
        for (i, s) in (0u32..).zip(segs) {
            w(field::GUEST_ES_SELECTOR + 2 * i, u64::from(s.selector))?;
            w(field::GUEST_ES_LIMIT + 2 * i, u64::from(s.limit))?;
            w(field::GUEST_ES_ACCESS + 2 * i, u64::from(hw::guest_access_rights(s)))?;
            w(field::GUEST_ES_BASE + 2 * i, s.base)?;
        }
        // LDTR (index 6): unusable.
        w(field::GUEST_ES_SELECTOR + 12, 0)?;
        w(field::GUEST_ES_LIMIT + 12, 0)?;
        w(field::GUEST_ES_ACCESS + 12, 1 << 16)?;
        w(field::GUEST_ES_BASE + 12, 0)?;
        // TR (index 7): a busy 64-bit TSS (the ABI's selector 0x18 when none is given).
        let tr = &init.tr;
        let tr_sel = if tr.selector & !7 == 0 { 0x18 } else { tr.selector & !7 };
        let tr_limit = if tr.limit == 0 { 0x67 } else { tr.limit };
        w(field::GUEST_ES_SELECTOR + 14, u64::from(tr_sel))?;
        w(field::GUEST_ES_LIMIT + 14, u64::from(tr_limit))?;
        w(field::GUEST_ES_ACCESS + 14, u64::from(hw::guest_tr_access(tr)))?;
        w(field::GUEST_ES_BASE + 14, tr.base)?;
        w(field::GUEST_GDTR_BASE, init.gdtr.0)?;
        w(field::GUEST_GDTR_LIMIT, u64::from(init.gdtr.1))?;
        w(field::GUEST_IDTR_BASE, init.idtr.0)?;
        w(field::GUEST_IDTR_LIMIT, u64::from(init.idtr.1))?;

        w(field::GUEST_RSP, init.regs.rsp)?;
        w(field::GUEST_RIP, init.regs.rip)?;
        w(field::GUEST_RFLAGS, hw::sanitize_rflags(init.regs.rflags))?;
        w(field::GUEST_INTERRUPTIBILITY, 0)?;
        w(field::GUEST_ACTIVITY_STATE, 0)?;
        w(field::GUEST_PENDING_DEBUG, 0)?;
        w(field::GUEST_SYSENTER_CS, 0)?;
        w(field::GUEST_SYSENTER_ESP, 0)?;
        w(field::GUEST_SYSENTER_EIP, 0)?;
        w(field::VMCS_LINK_POINTER, u64::MAX)?;
        if c.pin & pin::PREEMPTION_TIMER != 0 {
            w(field::PREEMPTION_TIMER_VALUE, u64::from(u32::MAX))?;
        }
        self.regs.rflags = hw::sanitize_rflags(init.regs.rflags);
        Ok(())
    }

    /// Writes what `regs()` and `apply` may have changed, and the slice, into the VMCS.
    fn prepare_entry(&mut self, slice_ns: u64) -> Result<(), VirtError> {
        w(field::GUEST_RIP, self.regs.rip)?;
        w(field::GUEST_RSP, self.regs.rsp)?;
        w(field::GUEST_RFLAGS, hw::sanitize_rflags(self.regs.rflags))?;
        if let Some(shift) = self.caps.timer_shift {
            w(
                field::PREEMPTION_TIMER_VALUE,
                u64::from(hw::preemption_ticks(slice_ns, time::tsc_hz(), shift)),
            )?;
        }
        let mut interruptibility = r(field::GUEST_INTERRUPTIBILITY);
        if self.clear_shadow {
            interruptibility &= !hw::BLOCKING_BY_STI_OR_MOV_SS;
            w(field::GUEST_INTERRUPTIBILITY, interruptibility)?;
            self.clear_shadow = false;
        }
        // An event of the guest's own being delivered again goes first; a guest interrupt
        // goes in only where the CPU itself would take one (SDM 27.3.1.5 checks exactly
        // that for an injected external interrupt), else it waits for the window.
        let event = match self.pending.take() {
            Some(ev) => Some(ev),
            None => match self.irq {
                Some(vector)
                    if hw::interrupt_allowed(hw::sanitize_rflags(self.regs.rflags), interruptibility) =>
                {
                    self.irq = None;
                    Some(Event { info: hw::external_interrupt(vector), error_code: None, instr_len: 0 })
                }
                _ => None,
            },
        };
        let window = self.irq.is_some() && self.caps.interrupt_window;
        if window != self.window {
            let bit = if window { proc1::INTERRUPT_WINDOW_EXITING } else { 0 };
            w(field::PROC_CONTROLS, u64::from(self.caps.proc1 | bit))?;
            self.window = window;
        }
        match event {
            Some(ev) => {
                w(field::ENTRY_INTERRUPTION_INFO, u64::from(ev.info))?;
                if let Some(code) = ev.error_code {
                    w(field::ENTRY_EXCEPTION_ERROR_CODE, u64::from(code))?;
                }
                w(field::ENTRY_INSTRUCTION_LEN, u64::from(ev.instr_len))?;
            }
            None => w(field::ENTRY_INTERRUPTION_INFO, 0)?,
        }
        Ok(())
    }

    /// Enters the guest with host interrupts off and the guest's syscall MSRs loaded;
    /// returns the assembly's result code and the nanoseconds spent.
    fn enter(&mut self) -> (u64, u64) {
        let mut host = [0u64; 5];
        // SAFETY: 1. Interrupts are off from the first guest MSR write until the host's
        // values are back, so no host code runs with guest values (the host does not use
        // them before then). 2. The MSRs exist on every x86_64 CPU; the guest values were
        // read back from these same MSRs (or are 0, their reset value), so they are valid.
        // 3. `hv_vmx_enter` saves the callee-saved registers, enters the guest through the
        // current VMCS (this vCPU's, loaded by `run`) whose host state was read from this
        // CPU, and returns on exit with the guest registers stored into `self.regs`.
        unsafe {
            for (i, m) in SWITCHED_MSRS.iter().enumerate() {
                host[i] = insn::rdmsr(*m);
                insn::wrmsr(*m, self.guest_msrs[i]);
            }
            let t0 = time::now_ns();
            let rc = hv_vmx_enter(&mut self.regs, u64::from(self.launched));
            let t1 = time::now_ns();
            for (i, m) in SWITCHED_MSRS.iter().enumerate() {
                self.guest_msrs[i] = insn::rdmsr(*m);
                insn::wrmsr(*m, host[i]);
            }
            // A VM exit leaves the GDTR and IDTR limits at 0xffff: put the real ones back.
            lgdt(&self.host_gdtr);
            lidt(&self.host_idtr);
            (rc, t1.saturating_sub(t0))
        }
    }

    fn exit_after_entry(&mut self, rc: u64, guest_ns: u64) -> Exit {
        let failed = |why: &'static str| Exit { kind: ExitKind::EntryFailed(why), instr_len: 0, guest_ns };
        match rc {
            0 => {}
            1 => return failed("VMfailInvalid: no current VMCS"),
            2 => {
                let n = r(field::VM_INSTRUCTION_ERROR) as u32;
                let decoded = hw::instruction_error(n);
                log::warn!("vmx: VM entry instruction failed: error {n} ({decoded})");
                let kind = match n {
                    7 => FailureKind::Controls,
                    8 => FailureKind::HostState,
                    _ => return failed(decoded),
                };
                let why = explain_failure(&read_entry_state(), &entry_caps(), kind, decoded);
                log::warn!("vmx: failed check: {why}");
                return failed(why);
            }
            _ => return failed("HOST_RSP could not be written"),
        }
        let reason = r(field::EXIT_REASON) as u32;
        let basic = reason & 0xffff;
        let raw = RawExit {
            reason,
            qualification: r(field::EXIT_QUALIFICATION),
            gpa: if basic == 48 || basic == 49 { r(field::GUEST_PHYSICAL_ADDRESS) } else { 0 },
            instr_len: r(field::EXIT_INSTRUCTION_LEN) as u32,
            interruption_info: r(field::EXIT_INTERRUPTION_INFO) as u32,
            interruption_error: r(field::EXIT_INTERRUPTION_ERROR_CODE) as u32,
            cpl: ((r(field::GUEST_SS_ACCESS) >> 5) & 3) as u8,
        };
        if reason & EXIT_REASON_ENTRY_FAILURE == 0 {
            self.launched = true;
            self.regs.rip = r(field::GUEST_RIP);
            self.regs.rsp = r(field::GUEST_RSP);
            self.regs.rflags = r(field::GUEST_RFLAGS);
            // An event cut short by the exit is delivered again on the next entry (SDM
            // 28.2.4, 27.6.1).
            let idt = r(field::IDT_VECTORING_INFO) as u32;
            if idt & (1 << 31) != 0 {
                self.pending = Some(Event {
                    info: idt & 0x8000_0fff,
                    error_code: (idt & (1 << 11) != 0).then(|| r(field::IDT_VECTORING_ERROR_CODE) as u32),
                    instr_len: raw.instr_len,
                });
            }
        } else {
            log::warn!(
                "vmx: VM entry failed, exit reason {reason:#x}, raw exit qualification {:#x} ({})",
                raw.qualification,
                hw::entry_failure_detail(raw.qualification)
            );
            if basic == u32::from(hw::reason::ENTRY_INVALID_GUEST_STATE) {
                let why = explain_failure(
                    &read_entry_state(),
                    &entry_caps(),
                    FailureKind::GuestState,
                    "invalid guest state (no rule identified)",
                );
                log::warn!("vmx: failed check: {why}");
                return failed(why);
            }
        }
        let (kind, instr_len) = hw::decode_exit(&raw);
        Exit { kind, instr_len, guest_ns }
    }
}

impl Vcpu for VmxVcpu {
    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn run(&mut self, slice_ns: u64) -> Exit {
        let failed = |why: &'static str| Exit { kind: ExitKind::EntryFailed(why), instr_len: 0, guest_ns: 0 };
        if percpu::cpu_index() != self.cpu {
            return failed("vCPU run on a CPU other than the one that created it");
        }
        // SAFETY: this CPU is in VMX operation (the vCPU was created here) and the VMCS
        // is this vCPU's own region.
        if let Err(why) = unsafe { insn::vmptrld(self.vmcs) } {
            return failed(why);
        }
        if let Err(e) = self.prepare_entry(slice_ns) {
            return failed(match e {
                VirtError::Instruction(why) => why,
                _ => "the VMCS could not be prepared for entry",
            });
        }
        let was_enabled = interrupts::are_enabled();
        interrupts::disable();
        let (rc, guest_ns) = self.enter();
        let exit = self.exit_after_entry(rc, guest_ns);
        // A host interrupt that ended the slice is still pending (not acknowledged on
        // exit): the host IDT takes it here.
        if was_enabled {
            interrupts::enable();
        }
        exit
    }

    fn apply(&mut self, exit: &Exit, action: &Action) {
        match *action {
            Action::Advance
            | Action::Block { .. }
            | Action::Yield
            | Action::ArmTimer { .. }
            | Action::Kick { .. } => {
                self.regs.rip = self.regs.rip.wrapping_add(u64::from(exit.instr_len));
                self.clear_shadow = true;
            }
            Action::Inject { vector, error_code } => match hw::injection(vector, error_code) {
                Some((info, error_code)) => self.pending = Some(Event { info, error_code, instr_len: 0 }),
                None => log::warn!("vmx: cannot inject vector {vector}: not an exception"),
            },
            Action::Resume | Action::Exit(_) | Action::Stop(_) => {}
        }
    }

    fn queue_interrupt(&mut self, vector: u8) {
        self.irq = Some(vector);
    }

    fn overhead_bytes(&self) -> usize {
        2 * 4096 + core::mem::size_of::<Self>()
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        if self.vmcs != 0 {
            if percpu::cpu_index() != self.cpu {
                log::warn!("vmx: vCPU dropped on cpu{} but created on cpu{}", percpu::cpu_index(), self.cpu);
            }
            // SAFETY: the region is this vCPU's VMCS and this CPU is in VMX operation.
            if let Err(e) = unsafe { insn::vmclear(self.vmcs) } {
                log::warn!("vmx: VMCLEAR failed: {e}");
            }
            self.flush_tags();
            free(self.vmcs);
        }
        if self.msr_bitmap != 0 {
            free(self.msr_bitmap);
        }
        if self.vpid != 0 {
            release_vpid(self.vpid);
        }
    }
}

/// A zeroed frame.
pub(super) fn alloc_zeroed() -> Option<u64> {
    crate::mm::alloc_zeroed_frame().ok()
}

pub(super) fn free(frame: u64) {
    if let Err(e) = crate::mm::free_frame(frame) {
        log::warn!("vmx: freeing frame {frame:#x}: {e}");
    }
}

/// VPIDs handed out to vCPUs: 1..4096 (0 is the host's).
static VPIDS: Mutex<[u64; 64]> = Mutex::new({
    let mut b = [0u64; 64];
    b[0] = 1;
    b
});

fn alloc_vpid() -> Option<u16> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut map = VPIDS.lock();
        for (w, word) in map.iter_mut().enumerate() {
            if *word != u64::MAX {
                let bit = (!*word).trailing_zeros();
                *word |= 1 << bit;
                return u16::try_from(w * 64 + bit as usize).ok();
            }
        }
        None
    })
}

fn release_vpid(vpid: u16) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(word) = VPIDS.lock().get_mut(usize::from(vpid / 64)) {
            *word &= !(1 << (vpid % 64));
        }
    });
}
