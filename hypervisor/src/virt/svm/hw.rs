//! The AMD-V hardware: detection, EFER.SVME and the host save area per CPU, the vCPU
//! with its VMCB, permission maps and ASID, and the world switch.
//!
//! Every unsafe block here touches either an MSR, an SVM instruction, or one of the
//! frames this module allocated (VMCB, permission maps, per-CPU host pages), which the
//! kernel's identity map makes reachable at their physical addresses.

use super::vmcb::{self, code, ctl, save, AsidPool, CheckedState, RawExit};
use crate::arch::percpu::{self, MAX_CPUS};
use crate::arch::{cpu, time};
use crate::mm;
use crate::virt::{Backend, Vcpu, VirtError};
use crate::vm::{Action, Exit, ExitKind, GuestRegs, InitialState, NestedFormat, Segment};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{Mutex, Once};
use x86_64::registers::control::{Cr4, Cr4Flags, Efer, EferFlags};
use x86_64::registers::model_specific::Msr;

/// VM_CR (APM 15.30.1): bit 4 SVMDIS.
const MSR_VM_CR: u32 = 0xc001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
/// VM_HSAVE_PA (APM 15.30.4): the host save area of this CPU.
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
const FRAME: usize = 4096;

/// What CPUID reports about SVM (APM 15.4, CPUID 8000_000Ah).
#[derive(Debug, Clone, Copy)]
struct Caps {
    /// SVM revision (EAX[7:0]).
    revision: u8,
    /// Number of ASIDs (EBX).
    asids: u32,
    /// nRIP save (EDX[3]).
    nrips: bool,
    /// Flush by ASID (EDX[6]).
    flush_by_asid: bool,
    /// Physical address width (CPUID 8000_0008h EAX[7:0]).
    phys_bits: u8,
}

static CAPS: Once<Result<Caps, VirtError>> = Once::new();

fn read_caps() -> Result<Caps, VirtError> {
    let max_ext = cpu::cpuid(0x8000_0000, 0).eax;
    // CPUID 8000_0001h ECX[2] = SVM (APM 15.4).
    if max_ext < 0x8000_000a || cpu::cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
        return Err(VirtError::Unsupported);
    }
    // SAFETY: VM_CR exists on every CPU that reports SVM (APM 15.30.1); reading it has
    // no side effects.
    let vm_cr = unsafe { Msr::new(MSR_VM_CR).read() };
    if vm_cr & VM_CR_SVMDIS != 0 {
        return Err(VirtError::DisabledByFirmware);
    }
    let l = cpu::cpuid(0x8000_000a, 0);
    // EDX[0] = nested paging (APM 15.25).
    if l.edx & 1 == 0 {
        return Err(VirtError::MissingFeature("nested paging (NPT)"));
    }
    if l.ebx < 2 {
        return Err(VirtError::MissingFeature("guest ASIDs"));
    }
    let phys_bits = if max_ext >= 0x8000_0008 { cpu::cpuid(0x8000_0008, 0).eax as u8 } else { 40 };
    Ok(Caps {
        revision: l.eax as u8,
        asids: l.ebx,
        nrips: l.edx & (1 << 3) != 0,
        flush_by_asid: l.edx & (1 << 6) != 0,
        phys_bits,
    })
}

fn caps() -> Result<Caps, VirtError> {
    *CAPS.call_once(|| {
        let c = read_caps();
        match &c {
            Ok(c) => log::info!(
                "svm: revision {}, {} ASIDs, nested paging, nRIP save {}, flush by ASID {}",
                c.revision,
                c.asids,
                if c.nrips { "yes" } else { "no" },
                if c.flush_by_asid { "yes" } else { "no" }
            ),
            Err(e) => log::info!("svm: not usable: {e}"),
        }
        c
    })
}

/// The AMD-V backend.
pub struct SvmBackend;

/// The one instance.
pub static BACKEND: SvmBackend = SvmBackend;

/// The AMD-V backend if this CPU has usable SVM with nested paging.
pub fn probe() -> Result<&'static dyn Backend, VirtError> {
    caps().map(|_| &BACKEND as &'static dyn Backend)
}

/// Per CPU: the host save area (VM_HSAVE_PA) and the page the host's VMLOAD/VMSAVE
/// state goes to around each entry; 0 until `enable_cpu` ran there. These frames stay
/// for the life of the kernel.
static HSAVE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static HOST_VMCB: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per CPU: its ASIDs (ASIDs tag TLB entries per CPU, so each CPU has its own pool).
static ASIDS: [Mutex<AsidPool>; MAX_CPUS] = [const { Mutex::new(AsidPool::new()) }; MAX_CPUS];

/// A zeroed run of `count` contiguous frames.
fn zeroed_run(count: usize) -> Result<u64, VirtError> {
    let pa = if count == 1 { mm::alloc_frame() } else { mm::alloc_run(count, 4096) }
        .map_err(|_| VirtError::OutOfMemory)?;
    // SAFETY: the frames were just taken from the allocator, so nothing else uses them,
    // and all RAM is identity-mapped read-write.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, count * FRAME) };
    Ok(pa)
}

fn free_run(pa: u64, count: usize) {
    if let Err(e) = mm::free_run(pa, count) {
        log::warn!("svm: freeing {count} frames at {pa:#x}: {e}");
    }
}

impl Backend for SvmBackend {
    fn name(&self) -> &'static str {
        "svm"
    }

    fn nested_format(&self) -> NestedFormat {
        NestedFormat::Npt
    }

    fn hypercall_insn(&self) -> crx_abi::HypercallInsn {
        crx_abi::HypercallInsn::Vmmcall
    }

    fn enable_cpu(&self) -> Result<(), VirtError> {
        caps()?;
        let idx = percpu::cpu_index() as usize;
        let (Some(hsave), Some(host)) = (HSAVE.get(idx), HOST_VMCB.get(idx)) else {
            return Err(VirtError::Instruction("CPU index beyond the per-CPU tables"));
        };
        if hsave.load(Ordering::Acquire) == 0 {
            let h = zeroed_run(1)?;
            let v = match zeroed_run(1) {
                Ok(v) => v,
                Err(e) => {
                    free_run(h, 1);
                    return Err(e);
                }
            };
            host.store(v, Ordering::Release);
            hsave.store(h, Ordering::Release);
        }
        let h = hsave.load(Ordering::Acquire);
        // SAFETY: 1. the CPU has SVM and VM_CR.SVMDIS is clear (checked in `caps`), so
        // setting EFER.SVME is allowed (APM 15.4) and only makes the SVM instructions
        // usable. 2. VM_HSAVE_PA gets a page-aligned frame owned by this CPU for good
        // (APM 15.30.4); writing it again with the same value is harmless.
        unsafe {
            Efer::update(|f| f.insert(EferFlags::SECURE_VIRTUAL_MACHINE_ENABLE));
            Msr::new(MSR_VM_HSAVE_PA).write(h);
        }
        Ok(())
    }

    fn create_vcpu(&self, nested_root: u64, init: &InitialState) -> Result<Box<dyn Vcpu>, VirtError> {
        let caps = caps()?;
        let cpu = percpu::cpu_index();
        if HOST_VMCB.get(cpu as usize).is_none_or(|h| h.load(Ordering::Acquire) == 0) {
            return Err(VirtError::Instruction("SVM is not enabled on this CPU"));
        }
        let pool = ASIDS.get(cpu as usize).ok_or(VirtError::NoTag)?;
        let asid = pool.lock().alloc(caps.asids).ok_or(VirtError::NoTag)?;
        let release_asid = || {
            pool.lock().free(asid);
        };
        let vmcb_pa = zeroed_run(1).inspect_err(|_| release_asid())?;
        let msrpm = zeroed_run(MSRPM_PAGES).inspect_err(|_| {
            free_run(vmcb_pa, 1);
            release_asid();
        })?;
        let iopm = zeroed_run(IOPM_PAGES).inspect_err(|_| {
            free_run(msrpm, MSRPM_PAGES);
            free_run(vmcb_pa, 1);
            release_asid();
        })?;
        let mut v = SvmVcpu {
            vmcb: Vmcb(vmcb_pa),
            msrpm,
            iopm,
            regs: init.regs,
            asid,
            cpu,
            fresh: true,
            caps,
            host_xcr0: host_xcr0(),
        };
        v.setup(nested_root, init);
        Ok(Box::new(v))
    }
}

/// Pages of the MSR permission map.
const MSRPM_PAGES: usize = vmcb::MSRPM_BYTES / FRAME;
/// Pages of the I/O permission map.
const IOPM_PAGES: usize = vmcb::IOPM_BYTES / FRAME;

/// The host's XCR0 (x87 only when the host has not enabled XSAVE).
fn host_xcr0() -> u64 {
    if Cr4::read().contains(Cr4Flags::OSXSAVE) {
        x86_64::registers::xcontrol::XCr0::read_raw()
    } else {
        1
    }
}

/// A VMCB frame owned by one vCPU.
struct Vmcb(u64);

impl Vmcb {
    fn read<T: Copy + Default>(&self, off: usize) -> T {
        if off + core::mem::size_of::<T>() > vmcb::VMCB_BYTES
            || !off.is_multiple_of(core::mem::align_of::<T>())
        {
            return T::default();
        }
        // SAFETY: the VMCB frame is owned by this vCPU and identity-mapped; the field lies
        // inside the page and is aligned for `T` (checked above).
        unsafe { core::ptr::read_volatile((self.0 as usize + off) as *const T) }
    }

    fn write<T: Copy>(&self, off: usize, v: T) {
        if off + core::mem::size_of::<T>() > vmcb::VMCB_BYTES
            || !off.is_multiple_of(core::mem::align_of::<T>())
        {
            return;
        }
        // SAFETY: as in `read`; the CPU touches the VMCB only inside VMRUN, which this
        // vCPU alone issues on it.
        unsafe { core::ptr::write_volatile((self.0 as usize + off) as *mut T, v) }
    }

    fn set_segment(&self, at: usize, s: &Segment) {
        self.write::<u16>(at + save::SEG_SELECTOR, s.selector);
        self.write::<u16>(at + save::SEG_ATTRIB, vmcb::pack_attrib(s.access));
        self.write::<u32>(at + save::SEG_LIMIT, s.limit);
        self.write::<u64>(at + save::SEG_BASE, s.base);
    }

    fn set_table(&self, at: usize, (base, limit): (u64, u16)) {
        self.write::<u32>(at + save::SEG_LIMIT, u32::from(limit));
        self.write::<u64>(at + save::SEG_BASE, base);
    }
}

/// One AMD-V vCPU.
struct SvmVcpu {
    vmcb: Vmcb,
    /// MSR permission map (2 contiguous frames).
    msrpm: u64,
    /// I/O permission map (3 contiguous frames).
    iopm: u64,
    regs: GuestRegs,
    asid: u32,
    /// The CPU it was created on, whose ASID pool and host pages it uses.
    cpu: u32,
    /// Not yet entered: the first entry flushes the ASID's stale translations.
    fresh: bool,
    caps: Caps,
    host_xcr0: u64,
}

// The `hv_svm_enter` path below relies on this layout of `GuestRegs`.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(GuestRegs, rax) == 0);
    assert!(offset_of!(GuestRegs, rbx) == 8);
    assert!(offset_of!(GuestRegs, rcx) == 16);
    assert!(offset_of!(GuestRegs, rdx) == 24);
    assert!(offset_of!(GuestRegs, rsi) == 32);
    assert!(offset_of!(GuestRegs, rdi) == 40);
    assert!(offset_of!(GuestRegs, rbp) == 48);
    assert!(offset_of!(GuestRegs, r8) == 56);
    assert!(offset_of!(GuestRegs, r15) == 112);
};

core::arch::global_asm!(
    r#"
.text
.global hv_svm_enter
// hv_svm_enter(regs: *mut GuestRegs, guest_vmcb_pa: u64, host_vmcb_pa: u64)
// APM 15.5 (VMRUN), 15.5.2 (VMLOAD/VMSAVE), 15.17 (GIF).
hv_svm_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdx
    push rdi
    clgi
    sti
    mov rax, rdx
    vmsave rax
    mov rax, rsi
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    vmload rax
    vmrun rax
    vmsave rax
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
    pop qword ptr [rdi + 40]
    add rsp, 8
    pop rax
    vmload rax
    stgi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
"#
);

extern "sysv64" {
    fn hv_svm_enter(regs: *mut GuestRegs, guest_vmcb: u64, host_vmcb: u64);
}

impl SvmVcpu {
    /// Writes the VMCB: intercepts, maps, ASID, nested paging and the initial guest state.
    fn setup(&mut self, nested_root: u64, init: &InitialState) {
        // SAFETY: both runs are frames this vCPU just allocated (identity-mapped, not
        // shared); the slices cover exactly them.
        let (msrpm, iopm) = unsafe {
            (
                core::slice::from_raw_parts_mut(self.msrpm as *mut u8, vmcb::MSRPM_BYTES),
                core::slice::from_raw_parts_mut(self.iopm as *mut u8, vmcb::IOPM_BYTES),
            )
        };
        vmcb::fill_msrpm(msrpm);
        // Every port exits: guests get no I/O ports (shared policy: ForbiddenIo).
        iopm.fill(0xff);

        let v = &self.vmcb;
        // No exceptions are intercepted.
        v.write::<u32>(ctl::INTERCEPT_EXCEPTIONS, 0);
        v.write::<u32>(ctl::INTERCEPT_MISC1, vmcb::MISC1_INTERCEPTS);
        v.write::<u32>(ctl::INTERCEPT_MISC2, vmcb::MISC2_INTERCEPTS);
        v.write::<u64>(ctl::IOPM_BASE_PA, self.iopm);
        v.write::<u64>(ctl::MSRPM_BASE_PA, self.msrpm);
        v.write::<u64>(ctl::TSC_OFFSET, 0);
        v.write::<u32>(ctl::GUEST_ASID, self.asid);
        v.write::<u64>(ctl::VINTR, vmcb::V_INTR_MASKING);
        v.write::<u64>(ctl::NP_CONTROL, vmcb::NP_ENABLE);
        v.write::<u64>(ctl::N_CR3, nested_root);
        v.write::<u64>(ctl::EVENTINJ, 0);
        // Nothing is cached across VMRUNs: every field is reloaded each time.
        v.write::<u32>(ctl::CLEAN_BITS, 0);

        v.set_segment(save::ES, &init.es);
        v.set_segment(save::CS, &init.cs);
        v.set_segment(save::SS, &init.ss);
        v.set_segment(save::DS, &init.ds);
        v.set_segment(save::FS, &init.fs);
        v.set_segment(save::GS, &init.gs);
        v.set_segment(save::LDTR, &init.ldtr);
        v.set_segment(save::TR, &init.tr);
        v.set_table(save::GDTR, init.gdtr);
        v.set_table(save::IDTR, init.idtr);
        // CPL is SS.DPL (APM 15.5.1).
        v.write::<u8>(save::CPL, ((init.ss.access >> 5) & 3) as u8);
        v.write::<u64>(save::EFER, init.efer | vmcb::efer::SVME);
        v.write::<u64>(save::CR0, init.cr0);
        v.write::<u64>(save::CR3, init.cr3);
        v.write::<u64>(save::CR4, init.cr4);
        v.write::<u64>(save::CR2, 0);
        v.write::<u64>(save::DR6, 0xffff_0ff0);
        v.write::<u64>(save::DR7, 0x400);
        v.write::<u64>(save::G_PAT, vmcb::DEFAULT_PAT);
        for msr in [save::STAR, save::LSTAR, save::CSTAR, save::SFMASK, save::KERNEL_GS_BASE] {
            v.write::<u64>(msr, 0);
        }
    }

    fn raw_exit(&self) -> RawExit {
        let v = &self.vmcb;
        RawExit {
            code: v.read(ctl::EXITCODE),
            info1: v.read(ctl::EXITINFO1),
            info2: v.read(ctl::EXITINFO2),
            rip: v.read(save::RIP),
            nrip: self.caps.nrips.then(|| v.read(ctl::NRIP)),
            cpl: v.read::<u8>(save::CPL) & 3,
        }
    }

    /// Explains a VMEXIT_INVALID from the VMCB as it stands.
    fn entry_failure(&self) -> &'static str {
        let v = &self.vmcb;
        let s = CheckedState {
            efer: v.read(save::EFER),
            cr0: v.read(save::CR0),
            cr3: v.read(save::CR3),
            cr4: v.read(save::CR4),
            dr6: v.read(save::DR6),
            dr7: v.read(save::DR7),
            cs_attrib: v.read(save::CS + save::SEG_ATTRIB),
            misc2: v.read(ctl::INTERCEPT_MISC2),
            asid: v.read(ctl::GUEST_ASID),
            event_inj: v.read(ctl::EVENTINJ),
            np_control: v.read(ctl::NP_CONTROL),
            n_cr3: v.read(ctl::N_CR3),
            msrpm_pa: v.read(ctl::MSRPM_BASE_PA),
            iopm_pa: v.read(ctl::IOPM_BASE_PA),
            phys_bits: self.caps.phys_bits,
        };
        match vmcb::check(&s) {
            Err(why) => why,
            Ok(()) => "the CPU rejected the VMCB for a reason the checks do not know",
        }
    }

    /// One VMRUN: returns the raw exit and the TSC ticks spent.
    fn enter(&mut self, host_vmcb: u64) -> (RawExit, u64) {
        let v = &self.vmcb;
        v.write::<u64>(save::RAX, self.regs.rax);
        v.write::<u64>(save::RSP, self.regs.rsp);
        v.write::<u64>(save::RIP, self.regs.rip);
        v.write::<u64>(save::RFLAGS, self.regs.rflags);
        let flush = if self.caps.flush_by_asid { vmcb::tlb::FLUSH_ASID } else { vmcb::tlb::FLUSH_ALL };
        v.write::<u8>(ctl::TLB_CONTROL, if self.fresh { flush } else { vmcb::tlb::NONE });
        self.fresh = false;
        let if_was = x86_64::instructions::interrupts::are_enabled();
        let t0 = time::rdtsc();
        // SAFETY: 1. EFER.SVME is set and VM_HSAVE_PA holds this CPU's save area
        // (`enable_cpu` ran here: the caller checked the host page exists). 2. The guest
        // VMCB and host page are this vCPU's and this CPU's own frames, page-aligned and
        // identity-mapped. 3. `hv_svm_enter` saves and restores every callee-saved
        // register, runs with GIF = 0 from before VMSAVE of the host state until after
        // VMLOAD of it, so no interrupt or NMI sees the guest's GS base or TR; VMRUN
        // restores the host's RSP, RIP, RAX, CR0/3/4, EFER, GDTR and IDTR itself.
        // 4. `regs` is a valid `GuestRegs` the routine reads and writes in place.
        unsafe { hv_svm_enter(&raw mut self.regs, self.vmcb.0, host_vmcb) };
        let t1 = time::rdtsc();
        if !if_was {
            x86_64::instructions::interrupts::disable();
        }
        let v = &self.vmcb;
        self.regs.rax = v.read(save::RAX);
        self.regs.rsp = v.read(save::RSP);
        self.regs.rip = v.read(save::RIP);
        self.regs.rflags = v.read(save::RFLAGS);
        // An event whose delivery the exit interrupted is delivered again on the next
        // entry (APM 15.7.2); otherwise nothing is pending.
        let intinfo: u64 = v.read(ctl::EXITINTINFO);
        v.write::<u64>(ctl::EVENTINJ, if intinfo & (1 << 31) != 0 { intinfo } else { 0 });
        (self.raw_exit(), t1.wrapping_sub(t0))
    }
}

fn ticks_to_ns(ticks: u64) -> u64 {
    let hz = time::tsc_hz().max(1);
    (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64
}

impl Vcpu for SvmVcpu {
    fn regs(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    /// Each entry ends at the latest with the next host timer tick (INTR exit), so the
    /// slice is honoured at the tick's granularity and `slice_ns` needs no timer here.
    fn run(&mut self, _slice_ns: u64) -> Exit {
        let fail = |why| Exit { kind: ExitKind::EntryFailed(why), instr_len: 0, guest_ns: 0 };
        if percpu::cpu_index() != self.cpu {
            return fail("the vCPU was run on a CPU other than the one it was created on");
        }
        let host = HOST_VMCB.get(self.cpu as usize).map_or(0, |h| h.load(Ordering::Acquire));
        if host == 0 {
            return fail("SVM is not enabled on this CPU");
        }
        let mut ticks = 0u64;
        loop {
            let (raw, t) = self.enter(host);
            ticks = ticks.wrapping_add(t);
            let (kind, instr_len) = vmcb::decode(&raw);
            if raw.code == code::INVALID {
                let kind = ExitKind::EntryFailed(self.entry_failure());
                return Exit { kind, instr_len: 0, guest_ns: ticks_to_ns(ticks) };
            }
            // XSETBV to the host's own XCR0 changes nothing: skip it and carry on (a
            // guest looping on it still leaves at the next timer tick).
            if raw.code == code::XSETBV && instr_len > 0 {
                let value = (self.regs.rdx << 32) | (self.regs.rax & 0xffff_ffff);
                if self.regs.rcx & 0xffff_ffff == 0 && value == self.host_xcr0 {
                    self.regs.rip = self.regs.rip.wrapping_add(u64::from(instr_len));
                    continue;
                }
            }
            return Exit { kind, instr_len, guest_ns: ticks_to_ns(ticks) };
        }
    }

    fn apply(&mut self, exit: &Exit, action: &Action) {
        match *action {
            Action::Advance
            | Action::Block { .. }
            | Action::Yield
            | Action::ArmTimer { .. }
            | Action::Kick { .. } => {
                self.regs.rip = self.regs.rip.wrapping_add(u64::from(exit.instr_len));
                // Skipping an instruction ends any STI / MOV SS interrupt shadow.
                self.vmcb.write::<u64>(ctl::INTERRUPT_SHADOW, 0);
            }
            Action::Inject { vector, error_code } => match vmcb::event_inj_exception(vector, error_code) {
                Some(ev) => self.vmcb.write::<u64>(ctl::EVENTINJ, ev),
                None => log::warn!("svm: cannot inject vector {vector} as an exception"),
            },
            Action::Resume | Action::Exit(_) | Action::Stop(_) => {}
        }
    }

    /// V_IRQ in the VMCB: the CPU itself delivers it when the guest's RFLAGS.IF and
    /// interrupt shadow allow, clears V_IRQ then, and keeps it set across exits until then
    /// (written back on #VMEXIT), so nothing is checked here. An event EVENTINJ re-delivers
    /// (an exception, or this interrupt cut short by an exit) goes first and is not
    /// touched; INTR stays intercepted, so host interrupts still end the entry.
    fn queue_interrupt(&mut self, vector: u8) {
        let vintr: u64 = self.vmcb.read(ctl::VINTR);
        self.vmcb.write::<u64>(ctl::VINTR, vmcb::vintr_with_irq(vintr, vector));
    }

    fn overhead_bytes(&self) -> usize {
        vmcb::VMCB_BYTES + vmcb::MSRPM_BYTES + vmcb::IOPM_BYTES
    }
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        free_run(self.iopm, IOPM_PAGES);
        free_run(self.msrpm, MSRPM_PAGES);
        free_run(self.vmcb.0, 1);
        if let Some(pool) = ASIDS.get(self.cpu as usize) {
            if !pool.lock().free(self.asid) {
                log::warn!("svm: ASID {} of cpu{} was not taken", self.asid, self.cpu);
            }
        }
    }
}
