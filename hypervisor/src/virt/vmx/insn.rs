//! The VMX instructions, MSR access and the few register reads the backend needs, each
//! wrapped so that a failure comes back as a value (SDM Vol. 3C 31.2: VMsucceed,
//! VMfailInvalid with CF set, VMfailValid with ZF set and the error number in the current
//! VMCS).

use crate::virt::vmx::vmcs::{field, instruction_error};
use core::arch::asm;

/// Decodes the flags a VMX instruction left: `cf` = VMfailInvalid, `zf` = VMfailValid.
fn outcome(cf: u8, zf: u8) -> Result<(), &'static str> {
    if cf != 0 {
        Err("VMfailInvalid (no current VMCS or not in VMX operation)")
    } else if zf != 0 {
        Err(instruction_error(vmread(field::VM_INSTRUCTION_ERROR).unwrap_or(0) as u32))
    } else {
        Ok(())
    }
}

/// VMXON with the 4 KiB region at physical `region`.
///
/// # Safety
/// CR4.VMXE is set, CR0/CR4 satisfy the fixed-bit MSRs, IA32_FEATURE_CONTROL allows
/// VMXON, and `region` is a zeroed frame holding the VMCS revision identifier that stays
/// reserved for VMX while this CPU is in VMX operation.
pub unsafe fn vmxon(region: u64) -> Result<(), &'static str> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller vouches for the preconditions; the operand is a pointer to a
    // local holding the physical address.
    unsafe {
        asm!("vmxon qword ptr [{0}]", "setc {1}", "setz {2}", in(reg) &region, out(reg_byte) cf,
            out(reg_byte) zf, options(nostack));
    }
    outcome(cf, zf)
}

/// VMCLEAR of the VMCS at physical `vmcs`.
///
/// # Safety
/// This CPU is in VMX operation and `vmcs` is a VMCS region this backend owns.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), &'static str> {
    let (cf, zf): (u8, u8);
    // SAFETY: as the caller guarantees; the operand points at a local.
    unsafe {
        asm!("vmclear qword ptr [{0}]", "setc {1}", "setz {2}", in(reg) &vmcs, out(reg_byte) cf,
            out(reg_byte) zf, options(nostack));
    }
    outcome(cf, zf)
}

/// VMPTRLD: makes the VMCS at physical `vmcs` current.
///
/// # Safety
/// This CPU is in VMX operation and `vmcs` is a VMCS region this backend owns, holding
/// the revision identifier.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), &'static str> {
    let (cf, zf): (u8, u8);
    // SAFETY: as the caller guarantees; the operand points at a local.
    unsafe {
        asm!("vmptrld qword ptr [{0}]", "setc {1}", "setz {2}", in(reg) &vmcs, out(reg_byte) cf,
            out(reg_byte) zf, options(nostack));
    }
    outcome(cf, zf)
}

/// VMREAD of `field` from the current VMCS; an error when there is none or the field
/// does not exist.
pub fn vmread(field: u32) -> Option<u64> {
    let (value, cf, zf): (u64, u8, u8);
    // SAFETY: VMREAD only reads the current VMCS. Outside VMX operation it would raise
    // #UD, but this module is only reached after VMXON succeeded on this CPU (every
    // caller holds a vCPU or runs right after `enable_cpu`).
    unsafe {
        asm!("vmread {0}, {1}", "setc {2}", "setz {3}", out(reg) value, in(reg) u64::from(field),
            out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    (cf == 0 && zf == 0).then_some(value)
}

/// VMWRITE of `value` to `field` of the current VMCS.
///
/// # Safety
/// The value must not let the guest reach host memory or break the host on exit: the
/// caller writes only the fields this backend sets up (controls, host state it read from
/// this CPU, guest state).
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), &'static str> {
    let (cf, zf): (u8, u8);
    // SAFETY: as the caller guarantees; VMWRITE touches only the current VMCS.
    unsafe {
        asm!("vmwrite {0}, {1}", "setc {2}", "setz {3}", in(reg) u64::from(field), in(reg) value,
            out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    outcome(cf, zf)
}

/// INVEPT of `kind` (single context / all contexts) for `eptp`.
pub fn invept(kind: u64, eptp: u64) -> Result<(), &'static str> {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: INVEPT only drops cached translations; the descriptor is a local. Callers
    // pass a type the capability MSR reports and are in VMX operation.
    unsafe {
        asm!("invept {0}, xmmword ptr [{1}]", "setc {2}", "setz {3}", in(reg) kind, in(reg) &desc,
            out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    outcome(cf, zf)
}

/// INVVPID of `kind` (single context / all contexts) for `vpid`.
pub fn invvpid(kind: u64, vpid: u16) -> Result<(), &'static str> {
    let desc: [u64; 2] = [u64::from(vpid), 0];
    let (cf, zf): (u8, u8);
    // SAFETY: INVVPID only drops cached translations; the descriptor is a local. Callers
    // pass a type the capability MSR reports and are in VMX operation.
    unsafe {
        asm!("invvpid {0}, xmmword ptr [{1}]", "setc {2}", "setz {3}", in(reg) kind, in(reg) &desc,
            out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    outcome(cf, zf)
}

/// Reads MSR `msr`.
///
/// # Safety
/// The MSR exists on this CPU (reading one that does not raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists; reading it has no side effects.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

/// Writes MSR `msr`.
///
/// # Safety
/// The MSR exists and `value` is valid for it and does not break the kernel's memory
/// safety (the backend writes only the feature-control lock and guest values of the
/// syscall MSRs while interrupts are off).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: as the caller guarantees.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).write(value) }
}

/// The task register's selector.
pub fn str() -> u16 {
    let sel: u16;
    // SAFETY: STR only reads the task register.
    unsafe { asm!("str {0:x}", out(reg) sel, options(nomem, nostack, preserves_flags)) };
    sel
}

/// The current selectors of CS, SS, DS, ES, FS and GS.
pub fn selectors() -> [u16; 6] {
    let (cs, ss, ds, es, fs, gs): (u16, u16, u16, u16, u16, u16);
    // SAFETY: moves from segment registers only read them.
    unsafe {
        asm!("mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es", "mov {4:x}, fs",
            "mov {5:x}, gs", out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack, preserves_flags));
    }
    [cs, ss, ds, es, fs, gs]
}
