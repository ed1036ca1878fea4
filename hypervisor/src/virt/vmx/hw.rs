//! The VT-x backend's hardware side: detection from the capability MSRs, VMXON on each
//! CPU, and the [`Backend`] that creates vCPUs.

use super::insn;
use super::vcpu::{self, alloc_zeroed, free};
use super::vmcs::Caps;
use super::vmcs::{
    self as hw, adjust_controls, entry_ctl, exit_ctl, msr, pin, proc1, proc2, Basic, EptVpidCap,
    FeatureControl,
};
use crate::arch::percpu::{self, MAX_CPUS};
use crate::virt::{Backend, Vcpu, VirtError};
use crate::vm::{InitialState, NestedFormat};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use x86_64::registers::control::{Cr0, Cr4};

/// The VT-x backend.
pub struct VmxBackend;

/// The one instance.
pub static BACKEND: VmxBackend = VmxBackend;

static CAPS: Once<Result<Caps, VirtError>> = Once::new();

/// Physical address of each CPU's VMXON region (0 while the CPU is not in VMX operation).
static VMXON: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The capabilities, read on the first call.
pub fn caps() -> Result<Caps, VirtError> {
    *CAPS.call_once(probe)
}

/// Checks the CPU and returns the backend if it can run this design's guests.
pub fn detect() -> Result<&'static dyn Backend, VirtError> {
    caps().map(|_| &BACKEND as &'static dyn Backend)
}

fn adjust(cap_msr: u32, required: u32, wanted: u32, name: &'static str) -> Result<u32, VirtError> {
    // SAFETY: the VMX capability MSRs exist on every CPU that reports VMX (SDM A.1); the
    // caller checked CPUID and, for the TRUE and secondary MSRs, the bits announcing them.
    let cap = unsafe { insn::rdmsr(cap_msr) };
    adjust_controls(cap, required, wanted).map_err(|missing| {
        log::warn!("vmx: {name} control bits {missing:#x} cannot be set");
        VirtError::ControlUnavailable(name)
    })
}

/// Reads the capability MSRs (SDM appendix A) and decides every control.
fn probe() -> Result<Caps, VirtError> {
    if crate::arch::cpu::virt() != crate::arch::cpu::Virt::Vmx {
        return Err(VirtError::Unsupported);
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on CPUs with VMX (SDM 24.7).
    if hw::feature_control(unsafe { insn::rdmsr(msr::FEATURE_CONTROL) }) == FeatureControl::Disabled {
        return Err(VirtError::DisabledByFirmware);
    }
    // SAFETY: IA32_VMX_BASIC exists on CPUs with VMX.
    let basic = Basic::decode(unsafe { insn::rdmsr(msr::VMX_BASIC) });
    if basic.region_bytes as u64 > 4096 || basic.region_bytes == 0 {
        return Err(VirtError::MissingFeature("VMCS region of at most 4 KiB"));
    }
    if basic.addr_32bit {
        return Err(VirtError::MissingFeature("64-bit VMX structure addresses"));
    }
    if basic.memory_type != hw::MEMORY_TYPE_WB {
        return Err(VirtError::MissingFeature("write-back VMCS memory"));
    }
    let t = basic.true_controls;
    let pick = |plain: u32, true_msr: u32| if t { true_msr } else { plain };

    let pin = adjust(
        pick(msr::VMX_PINBASED, msr::VMX_TRUE_PINBASED),
        pin::EXTERNAL_INTERRUPT_EXITING,
        pin::PREEMPTION_TIMER,
        "pin-based (external-interrupt exiting)",
    )?;
    let proc1_msr = pick(msr::VMX_PROCBASED, msr::VMX_TRUE_PROCBASED);
    let proc1_required = proc1::HLT_EXITING
        | proc1::UNCONDITIONAL_IO_EXITING
        | proc1::USE_MSR_BITMAPS
        | proc1::SECONDARY_CONTROLS
        | proc1::RDPMC_EXITING;
    let proc1_wanted = proc1::MWAIT_EXITING | proc1::MONITOR_EXITING;
    let proc1_name = "processor-based (HLT/I/O exiting, MSR bitmaps, secondary controls)";
    let proc1 = adjust(proc1_msr, proc1_required, proc1_wanted, proc1_name)?;
    if proc1 & proc1::INTERRUPT_WINDOW_EXITING != 0 {
        // It would exit at every instruction boundary where the guest has IF = 1.
        return Err(VirtError::ControlUnavailable("interrupt-window exiting forced on"));
    }
    // Interrupt-window exiting is switched on per entry while a guest interrupt waits
    // (SDM A.3.2: allowed when bit 34 of the capability MSR is 1).
    let interrupt_window =
        adjust(proc1_msr, proc1_required, proc1_wanted | proc1::INTERRUPT_WINDOW_EXITING, proc1_name)?
            & proc1::INTERRUPT_WINDOW_EXITING
            != 0;
    // Unrestricted guest stays off: guests start in 64-bit mode with paging.
    let proc2 = adjust(
        msr::VMX_PROCBASED2,
        proc2::ENABLE_EPT,
        proc2::ENABLE_VPID | proc2::ENABLE_RDTSCP | proc2::ENABLE_INVPCID,
        "secondary (enable EPT)",
    )?;
    if proc2 & proc2::UNRESTRICTED_GUEST != 0 {
        return Err(VirtError::ControlUnavailable("unrestricted guest forced on"));
    }
    let exit = adjust(
        pick(msr::VMX_EXIT, msr::VMX_TRUE_EXIT),
        exit_ctl::HOST_ADDRESS_SPACE_SIZE
            | exit_ctl::SAVE_EFER
            | exit_ctl::LOAD_EFER
            | exit_ctl::SAVE_PAT
            | exit_ctl::LOAD_PAT,
        exit_ctl::SAVE_PREEMPTION_TIMER,
        "VM-exit (64-bit host, EFER/PAT switching)",
    )?;
    if exit & exit_ctl::ACK_INTERRUPT_ON_EXIT != 0 {
        return Err(VirtError::ControlUnavailable("acknowledge interrupt on exit forced on"));
    }
    let entry = adjust(
        pick(msr::VMX_ENTRY, msr::VMX_TRUE_ENTRY),
        entry_ctl::IA32E_MODE_GUEST | entry_ctl::LOAD_EFER | entry_ctl::LOAD_PAT,
        entry_ctl::LOAD_DEBUG_CONTROLS,
        "VM-entry (64-bit guest, EFER/PAT loading)",
    )?;

    // SAFETY: IA32_VMX_EPT_VPID_CAP exists when the secondary controls allow EPT or
    // VPID (SDM A.10), which `adjust` just established for EPT.
    let ept = EptVpidCap(unsafe { insn::rdmsr(msr::VMX_EPT_VPID_CAP) });
    if !ept.walk_4() {
        return Err(VirtError::MissingFeature("EPT page-walk length 4"));
    }
    if !ept.wb() {
        return Err(VirtError::MissingFeature("EPT write-back paging structures"));
    }
    if !ept.invept() || !(ept.invept_single() || ept.invept_all()) {
        return Err(VirtError::MissingFeature("INVEPT"));
    }
    let invept_kind = if ept.invept_single() { hw::INV_SINGLE_CONTEXT } else { hw::INV_ALL_CONTEXTS };
    let invvpid_kind = if !ept.invvpid() {
        None
    } else if ept.invvpid_single() {
        Some(hw::INV_SINGLE_CONTEXT)
    } else if ept.invvpid_all() {
        Some(hw::INV_ALL_CONTEXTS)
    } else {
        None
    };
    // VPIDs are used only with a way to flush them.
    let proc2 = if invvpid_kind.is_none() { proc2 & !proc2::ENABLE_VPID } else { proc2 };
    let invvpid_kind = invvpid_kind.filter(|_| proc2 & proc2::ENABLE_VPID != 0);

    // SAFETY: IA32_VMX_MISC exists on CPUs with VMX.
    let misc = unsafe { insn::rdmsr(msr::VMX_MISC) };
    let timer_shift = (pin & pin::PREEMPTION_TIMER != 0).then_some((misc & 0x1f) as u8);
    // SAFETY: the fixed-bit MSRs exist on CPUs with VMX (SDM A.7, A.8).
    let (cr0_fixed, cr4_fixed) = unsafe {
        (
            (insn::rdmsr(msr::VMX_CR0_FIXED0), insn::rdmsr(msr::VMX_CR0_FIXED1)),
            (insn::rdmsr(msr::VMX_CR4_FIXED0), insn::rdmsr(msr::VMX_CR4_FIXED1)),
        )
    };
    let caps = Caps {
        revision: basic.revision,
        pin,
        proc1,
        proc2,
        exit,
        entry,
        cr0_fixed,
        cr4_fixed,
        invept_kind,
        invvpid_kind,
        timer_shift,
        interrupt_window,
    };
    log::info!(
        "vmx: revision {:#x}, true controls {}, VPID {}, preemption timer {}, interrupt window {}, pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}",
        caps.revision,
        t,
        caps.invvpid_kind.is_some(),
        match caps.timer_shift {
            Some(_) => "yes",
            None => "no",
        },
        if caps.interrupt_window { "yes" } else { "no" },
        pin,
        proc1,
        proc2,
        exit,
        entry
    );
    Ok(caps)
}

/// Enters VMX operation on this CPU (idempotent).
fn enable_this_cpu(caps: &Caps) -> Result<(), VirtError> {
    let idx = percpu::cpu_index() as usize;
    let slot = VMXON.get(idx).ok_or(VirtError::Unsupported)?;
    if slot.load(Ordering::Acquire) != 0 {
        return Ok(());
    }
    // SAFETY: IA32_FEATURE_CONTROL exists on CPUs with VMX.
    match hw::feature_control(unsafe { insn::rdmsr(msr::FEATURE_CONTROL) }) {
        FeatureControl::Ready => {}
        FeatureControl::Disabled => return Err(VirtError::DisabledByFirmware),
        // SAFETY: the MSR is unlocked, so writing it is allowed; the value only adds the
        // lock and permission to use VMXON (SDM 24.7).
        FeatureControl::Write(v) => unsafe { insn::wrmsr(msr::FEATURE_CONTROL, v) },
    }
    let region = alloc_zeroed().ok_or(VirtError::OutOfMemory)?;
    // SAFETY: `region` is a fresh frame, identity-mapped; its first 4 bytes take the
    // VMCS revision identifier (SDM 25.11.5).
    unsafe { core::ptr::write_volatile(region as *mut u32, caps.revision) };
    let cr0 = hw::apply_fixed(Cr0::read_raw(), caps.cr0_fixed.0, caps.cr0_fixed.1);
    let cr4 = hw::apply_fixed(Cr4::read_raw() | (1 << 13), caps.cr4_fixed.0, caps.cr4_fixed.1);
    let result = x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: 1. The fixed bits are what VMX operation requires (SDM 24.8); the kernel
        // already runs with PE, PG and (for CR4) PAE, which the fixed-0 MSRs demand, and
        // NE only changes how x87 errors are reported. 2. VMXE only permits VMXON.
        // 3. The region is a zeroed frame holding the revision, kept until the end of
        // the run, and the feature-control MSR permits VMXON (checked above).
        unsafe {
            Cr0::write_raw(cr0);
            Cr4::write_raw(cr4);
            insn::vmxon(region)
        }
    });
    match result {
        Ok(()) => {
            slot.store(region, Ordering::Release);
            log::debug!("vmx: cpu{idx} in VMX operation (VMXON region {region:#x})");
            Ok(())
        }
        Err(why) => {
            free(region);
            log::warn!("vmx: VMXON failed on cpu{idx}: {why}");
            Err(VirtError::Instruction(why))
        }
    }
}

/// Whether this CPU executed VMXON.
pub fn cpu_enabled() -> bool {
    VMXON.get(percpu::cpu_index() as usize).is_some_and(|s| s.load(Ordering::Acquire) != 0)
}

impl Backend for VmxBackend {
    fn name(&self) -> &'static str {
        "vmx"
    }

    fn nested_format(&self) -> NestedFormat {
        NestedFormat::Ept
    }

    fn hypercall_insn(&self) -> crx_abi::HypercallInsn {
        crx_abi::HypercallInsn::Vmcall
    }

    fn enable_cpu(&self) -> Result<(), VirtError> {
        enable_this_cpu(&caps()?)
    }

    fn create_vcpu(&self, nested_root: u64, init: &InitialState) -> Result<Box<dyn Vcpu>, VirtError> {
        let caps = caps()?;
        enable_this_cpu(&caps)?;
        let v = vcpu::VmxVcpu::new(&caps, nested_root, init)?;
        Ok(Box::new(v))
    }
}
