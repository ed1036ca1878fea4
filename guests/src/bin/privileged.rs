//! Tries privileged instructions a guest must not get, one step per word of `steps=a,b,..`
//! (default `cpuid,rdmsr,wrmsr,vmxon,vmrun,out`), with an IDT that catches #GP and #UD:
//!
//! | step | expected |
//! |---|---|
//! | `cpuid` | leaf 1: VMX clear, hypervisor bit set; 0x8000_0001: SVM clear; 0x4000_0000: "CrxHvCrxHvCr" |
//! | `rdmsr` | #GP for IA32_FEATURE_CONTROL, IA32_VMX_BASIC, VM_HSAVE_PA and a random MSR |
//! | `wrmsr` | #GP for IA32_FEATURE_CONTROL, VM_HSAVE_PA, IA32_APIC_BASE |
//! | `vmxon`, `vmrun`, `invd` | #UD |
//! | `out` | `out 0x3f8`: the VM is stopped |
//!
//! Each refusal prints `caught #GP: ...` / `caught #UD: ...`; a step that is not refused
//! prints `... was not refused`. At the end: `privileged: all refused` and exit 0, or exit 1;
//! an `out` that does not stop the VM exits 3.
#![cfg_attr(target_os = "none", no_std, no_main)]

use guests::cpu::{install_trap_idt, GP, UD};
use guests::{gprintln, guest_main, probe, Guest};

guest_main!(run);

/// MSRs the policy passes through or answers; a random MSR is drawn outside them.
const ANSWERED: [u32; 16] = [
    0x10,
    0x1b,
    0x1a0,
    0x277,
    0xc000_0080,
    0xc000_0081,
    0xc000_0082,
    0xc000_0083,
    0xc000_0084,
    0xc000_0100,
    0xc000_0101,
    0xc000_0102,
    0xc000_0103,
    0,
    0,
    0,
];

fn name(vector: Option<u8>) -> &'static str {
    match vector {
        Some(UD) => "#UD",
        Some(GP) => "#GP",
        Some(_) => "another exception",
        None => "nothing",
    }
}

/// Reports one probe; returns whether it raised `expected`.
fn report(guest: &Guest, what: &str, arg: u64, expected: u8, got: Option<u8>) -> bool {
    if got == Some(expected) {
        gprintln!(guest, "caught {}: {what} {arg:#x}", name(got));
        true
    } else {
        gprintln!(
            guest,
            "privileged: {what} {arg:#x} was not refused: expected {}, got {}",
            name(Some(expected)),
            name(got)
        );
        false
    }
}

fn random_msr(guest: &Guest) -> u32 {
    let mut bytes = [0u8; 4];
    let _ = guest.random(&mut bytes);
    let msr = u32::from_le_bytes(bytes);
    if ANSWERED.contains(&msr) {
        0x1234_5678
    } else {
        msr
    }
}

fn cpuid_ok(guest: &Guest) -> bool {
    let l1 = core::arch::x86_64::__cpuid(1);
    let ext = core::arch::x86_64::__cpuid(0x8000_0001);
    let hv = core::arch::x86_64::__cpuid(crx_abi::CPUID_LEAF);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&hv.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&hv.ecx.to_le_bytes());
    sig[8..].copy_from_slice(&hv.edx.to_le_bytes());
    let checks = [
        (l1.ecx & (1 << 5) == 0, "leaf 1 ECX.VMX is set"),
        (l1.ecx & (1 << 31) != 0, "leaf 1 ECX.hypervisor is clear"),
        (ext.ecx & (1 << 2) == 0, "leaf 0x80000001 ECX.SVM is set"),
        (sig == crx_abi::CPUID_SIGNATURE, "leaf 0x40000000 lacks the signature"),
    ];
    let mut ok = true;
    for (good, why) in checks {
        if !good {
            gprintln!(guest, "privileged: cpuid: {why}");
            ok = false;
        }
    }
    if ok {
        gprintln!(guest, "cpuid ok: no VMX/SVM, hypervisor leaf present");
    }
    ok
}

fn run(guest: &Guest) -> i32 {
    let steps = guest.arg("steps").unwrap_or("cpuid,rdmsr,wrmsr,vmxon,vmrun,out");
    // SAFETY: runs once, at CPL 0, before any probe.
    unsafe { install_trap_idt() };
    let mut all = true;
    for step in steps.split(',') {
        match step {
            "cpuid" => all &= cpuid_ok(guest),
            "rdmsr" => {
                for msr in [0x3a, 0x480, 0xc001_0117, random_msr(guest)] {
                    // SAFETY: RDMSR writes only EAX and EDX, declared; a fault resumes after it.
                    let got = unsafe { probe!("rdmsr", in("ecx") msr, out("eax") _, out("edx") _) };
                    all &= report(guest, "rdmsr", u64::from(msr), GP, got);
                }
            }
            "wrmsr" => {
                for msr in [0x3au32, 0xc001_0117, 0x1b] {
                    // SAFETY: these MSRs are refused; were one accepted, the value 0 lands in a
                    // register this guest does not rely on.
                    let got = unsafe { probe!("wrmsr", in("ecx") msr, in("eax") 0, in("edx") 0) };
                    all &= report(guest, "wrmsr", u64::from(msr), GP, got);
                }
            }
            "vmxon" => {
                let region: u64 = guest.free_start();
                // SAFETY: VMXON reads its 8-byte operand; in a guest it must raise #UD.
                let got = unsafe { probe!("vmxon qword ptr [{r}]", r = in(reg) &region) };
                all &= report(guest, "vmxon", region, UD, got);
            }
            "vmrun" => {
                // SAFETY: VMRUN takes RAX; in a guest it must raise #UD.
                let got = unsafe { probe!("vmrun", in("rax") 0u64) };
                all &= report(guest, "vmrun", 0, UD, got);
            }
            "invd" => {
                // SAFETY: INVD in a guest must raise #UD; our caches hold nothing we need written back
                // (the guest has no device memory).
                let got = unsafe { probe!("invd") };
                all &= report(guest, "invd", 0, UD, got);
            }
            "out" => {
                gprintln!(guest, "privileged: out to port 0x3f8");
                // SAFETY: writes one byte to a port; the hypervisor must stop the VM here.
                unsafe {
                    core::arch::asm!("out dx, al", in("dx") 0x3f8u16, in("al") b'!', options(nomem, nostack))
                };
                gprintln!(guest, "privileged: out to port 0x3f8 was not stopped");
                return 3;
            }
            other => {
                gprintln!(guest, "privileged: unknown step `{other}`");
                return 2;
            }
        }
    }
    if all {
        gprintln!(guest, "privileged: all refused");
        0
    } else {
        1
    }
}
