//! Self-test `vmx`: on every online CPU, build a tiny 64-bit guest by hand (2 MiB of
//! guest memory behind an EPT identity map, page tables, GDT and TSS laid out as the
//! crx-abi guest layout says), run it exit by exit and check each exit's kind, length
//! and details; then drop everything and check that every frame came back.

use super::hw::{caps, BACKEND};
use crate::arch::cpu::{self, Virt};
use crate::arch::{percpu, smp, time};
use crate::selftest::{Test, Verdict};
use crate::virt::testguest::TestGuest;
use crate::virt::vmx::vmcs::msr;
use crate::virt::Backend;
use crate::virt::Vcpu;
use crate::vm::NestedFormat;
use crate::vm::{Access, Action, ExitKind, GuestRegs, InitialState, Segment};
use crx_abi::layout;
use spin::Mutex;

/// Self-tests of the VT-x backend.
pub static SELFTESTS: &[Test] = &[Test { name: "vmx", in_all: true, run: selftest_vmx }];

/// Guest memory in bytes.
const GUEST_BYTES: u64 = 2 << 20;
/// Where the guest's code starts.
const CODE: u64 = layout::KERNEL_MIN;
/// Where the guest's TSS sits, right after its GDT.
const TSS: u64 = layout::GDT + 0x80;

/// The guest's code, hand-assembled, with the exit each part causes.
const CODE_BYTES: &[u8] = &[
    0x0f, 0xa2, // 0: cpuid
    0xf4, // 2: hlt
    0xb0, 0x42, // 3: mov al, 0x42
    0xe6, 0x99, // 5: out 0x99, al
    0x8b, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, // 7: mov eax, [0x200000] (beyond guest memory)
    0xb9, 0x10, 0x00, 0x00, 0x00, // 14: mov ecx, 0x10 (IA32_TSC)
    0x0f, 0x32, // 19: rdmsr
    0x0f, 0x08, // 21: invd
    0xb9, 0x82, 0x00, 0x00, 0xc0, // 23: mov ecx, 0xc0000082 (LSTAR, passed through)
    0xb8, 0x34, 0x12, 0x00, 0x00, // 28: mov eax, 0x1234
    0x31, 0xd2, // 33: xor edx, edx
    0x0f, 0x30, // 35: wrmsr
    0x31, 0xc0, // 37: xor eax, eax
    0x0f, 0x32, // 39: rdmsr
    0x0f, 0x01, 0xc1, // 41: vmcall (rax = 0x1234 read back)
    0xb8, 0x02, 0x00, 0x00, 0x00, // 44: mov eax, 2
    0x0f, 0x01, 0xc1, // 49: vmcall (exit hypercall)
    0xeb, 0xfe, // 52: jmp $
];
/// Offset of the `jmp $` loop.
const LOOP_AT: u64 = 52;

/// Page tables, GDT, TSS and code, per the crx-abi layout.
fn load(g: &TestGuest) {
    g.write_u64(layout::PML4, layout::PDPT | 3);
    g.write_u64(layout::PDPT, layout::PD | 3);
    // Two 2 MiB pages: guest memory, and the range above it (for the EPT violation).
    g.write_u64(layout::PD, 0x83);
    g.write_u64(layout::PD + 8, GUEST_BYTES | 0x83);
    let gdt: [u64; 5] = [
        0,
        0x00af_9b00_0000_ffff, // 0x08: 64-bit code
        0x00cf_9300_0000_ffff, // 0x10: data
        0x67 | ((TSS & 0xff_ffff) << 16) | (0x8b << 40) | (((TSS >> 24) & 0xff) << 56), // 0x18: TSS
        TSS >> 32,
    ];
    for (i, d) in (0u64..).zip(gdt) {
        g.write_u64(layout::GDT + 8 * i, d);
    }
    g.write(CODE, CODE_BYTES);
}

/// The guest's initial state (the crx-abi values).
fn initial_state() -> InitialState {
    let code = Segment { selector: 0x08, base: 0, limit: 0xffff_ffff, access: 0xa09b };
    let data = Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, access: 0xc093 };
    InitialState {
        regs: GuestRegs {
            rip: CODE,
            rsp: GUEST_BYTES,
            rflags: 2,
            rdi: layout::BOOT_PARAMS,
            ..GuestRegs::default()
        },
        cr0: 0x8001_0033,
        cr3: layout::PML4,
        cr4: 0x620,
        efer: 0xd00,
        cs: code,
        ds: data,
        es: data,
        ss: data,
        fs: data,
        gs: data,
        tr: Segment { selector: 0x18, base: TSS, limit: 0x67, access: 0x8b },
        ldtr: Segment::default(),
        gdtr: (layout::GDT, 39),
        idtr: (0, 0),
    }
}

/// Slice for each run: long enough for a few instructions under an emulator.
const SLICE_NS: u64 = 10_000_000;

/// Runs until an exit other than `Preempted` (a host timer tick may end any slice).
fn next_exit(v: &mut dyn Vcpu) -> crate::vm::Exit {
    let mut e = v.run(SLICE_NS);
    for _ in 0..1000 {
        if e.kind != ExitKind::Preempted {
            break;
        }
        e = v.run(SLICE_NS);
    }
    e
}

/// Expects `want` with instruction length `len`, then skips the instruction.
fn expect(v: &mut dyn Vcpu, step: &'static str, want: ExitKind, len: u8) -> Verdict {
    let e = next_exit(v);
    if e.kind != want || e.instr_len != len {
        log::error!(
            "vmx: {step}: expected {want:?} (length {len}), got {:?} (length {}) at rip {:#x}",
            e.kind,
            e.instr_len,
            v.regs().rip
        );
        return Err(step);
    }
    v.apply(&e, &Action::Advance);
    Ok(())
}

fn run_guest(v: &mut dyn Vcpu) -> Verdict {
    expect(v, "cpuid exit", ExitKind::Cpuid, 2)?;
    expect(v, "hlt exit", ExitKind::Hlt, 1)?;
    expect(v, "out exit", ExitKind::Io { port: 0x99, size: 1, write: true, string: false }, 2)?;
    if v.regs().rax & 0xff != 0x42 {
        return Err("out exit: al is not the value written");
    }
    let e = next_exit(v);
    if e.kind != (ExitKind::NestedPageFault { gpa: GUEST_BYTES, access: Access::Read }) {
        log::error!("vmx: expected an EPT violation at {GUEST_BYTES:#x}, got {:?}", e.kind);
        return Err("read beyond guest memory: no EPT violation");
    }
    v.regs().rip += 7;
    expect(v, "rdmsr exit", ExitKind::Msr { write: false }, 2)?;
    if v.regs().rcx != 0x10 {
        return Err("rdmsr exit: rcx is not the MSR index");
    }
    expect(v, "invd exit", ExitKind::Forbidden("invd"), 2)?;
    // SAFETY: LSTAR exists on every x86_64 CPU.
    let host_lstar = unsafe { super::insn::rdmsr(msr::LSTAR) };
    expect(v, "vmcall after LSTAR round trip", ExitKind::Hypercall { cpl: 0 }, 3)?;
    // SAFETY: as above.
    let host_after = unsafe { super::insn::rdmsr(msr::LSTAR) };
    if v.regs().rax != 0x1234 {
        log::error!("vmx: guest read LSTAR back as {:#x}", v.regs().rax);
        return Err("the guest's LSTAR did not survive its own wrmsr/rdmsr");
    }
    if host_after != host_lstar {
        return Err("the host's LSTAR changed across a guest run");
    }
    expect(v, "exit hypercall", ExitKind::Hypercall { cpl: 0 }, 3)?;
    if v.regs().rax != crx_abi::nr::EXIT {
        return Err("exit hypercall: rax is not the hypercall number");
    }
    // The loop: only the preemption timer or a host interrupt ends it.
    let e = v.run(1_000_000);
    if e.kind != ExitKind::Preempted || v.regs().rip != CODE + LOOP_AT {
        log::error!("vmx: expected a preemption in the loop, got {:?} at rip {:#x}", e.kind, v.regs().rip);
        return Err("the spinning guest was not preempted");
    }
    // Host interrupts arrive while the guest spins: each timer tick ends a slice and the
    // host IDT takes it after the exit.
    if x86_64::instructions::interrupts::are_enabled() {
        let ticks = || percpu::current().timer_ticks.load(core::sync::atomic::Ordering::Relaxed);
        let (t0, start) = (ticks(), time::now_ns());
        while time::now_ns() - start < 50_000_000 {
            let e = v.run(SLICE_NS);
            if e.kind != ExitKind::Preempted {
                log::error!("vmx: expected only preemptions in the loop, got {:?}", e.kind);
                return Err("the spinning guest exited for something else than preemption");
            }
        }
        log::debug!("vmx: {} host timer ticks during 50 ms of spinning guest", ticks() - t0);
        if ticks() == t0 {
            return Err("no host timer interrupt was taken during 50 ms of guest time");
        }
    }
    // #GP with no IDT: #DF, then a triple fault.
    v.apply(&e, &Action::Inject { vector: 13, error_code: Some(0) });
    let e = next_exit(v);
    if e.kind != ExitKind::TripleFault {
        log::error!("vmx: expected a triple fault, got {:?}", e.kind);
        return Err("injecting #GP into a guest without an IDT did not triple-fault");
    }
    Ok(())
}

/// A change that spoils the initial state, and the rule the failed entry must name.
type BadState = (fn(&mut InitialState), &'static str);

/// Guest states that fail VM entry's guest-state checks, with the rule the entry-check
/// model names for each (SDM 27.3.1.1, 27.3.1.2).
const BAD_STATES: [BadState; 3] = [
    (|s| s.cs.access = 0, "guest CS access rights: unusable (CS must be usable)"),
    (|s| s.cs.access = 0xe09b, "guest CS access rights: L and D/B both set"),
    (|s| s.efer = 0x900, "guest IA32_EFER.LMA differs from the IA-32e mode guest control"),
];

/// Each bad guest state fails VM entry (exit reason 33) and the exit names the broken
/// rule; nothing else happens.
fn entry_failure(root: u64) -> Verdict {
    for (spoil, want) in BAD_STATES {
        let mut init = initial_state();
        spoil(&mut init);
        let mut v = BACKEND.create_vcpu(root, &init).map_err(|_| "create_vcpu (bad state) failed")?;
        let e = v.run(SLICE_NS);
        if e.kind != ExitKind::EntryFailed(want) {
            log::error!("vmx: expected an entry failure \"{want}\", got {:?}", e.kind);
            return Err("a guest with invalid state entered or the failed rule was not named");
        }
        // Still a clear VMCS: the next attempt is a VMLAUNCH again and fails the same way.
        if v.run(SLICE_NS).kind != e.kind {
            return Err("a second entry with invalid state did not fail the same way");
        }
    }
    Ok(())
}

/// The whole test on the calling CPU.
fn on_this_cpu() -> Verdict {
    BACKEND.enable_cpu().map_err(|e| {
        log::error!("vmx: enable_cpu on cpu{}: {e}", percpu::cpu_index());
        "enable_cpu failed"
    })?;
    if BACKEND.enable_cpu().is_err() {
        return Err("a second enable_cpu failed");
    }
    let before = crate::mm::free_frames();
    let guest = TestGuest::new(GUEST_BYTES, NestedFormat::Ept);
    let verdict = match guest.as_ref() {
        Err(e) => Err(*e),
        Ok(g) => {
            load(g);
            let root = g.root();
            match BACKEND.create_vcpu(root, &initial_state()) {
                Err(e) => {
                    log::error!("vmx: create_vcpu: {e}");
                    Err("create_vcpu failed")
                }
                Ok(mut v) => {
                    let overhead = v.overhead_bytes();
                    let r = run_guest(v.as_mut());
                    drop(v);
                    log::debug!(
                        "vmx: cpu{} guest done, {overhead} bytes of overhead per vCPU",
                        percpu::cpu_index()
                    );
                    r.and(if overhead < 2 * 4096 {
                        Err("overhead_bytes is less than a VMCS and an MSR bitmap")
                    } else {
                        Ok(())
                    })
                }
            }
        }
    };
    let verdict = verdict.and_then(|()| match guest.as_ref() {
        Ok(g) => entry_failure(g.root()),
        Err(e) => Err(*e),
    });
    drop(guest);
    verdict?;
    let after = crate::mm::free_frames();
    if after != before {
        log::error!("vmx: {before} frames free before, {after} after");
        return Err("frames leaked");
    }
    Ok(())
}

static RESULT: Mutex<Verdict> = Mutex::new(Ok(()));

fn job() {
    let v = on_this_cpu();
    *RESULT.lock() = v;
}

fn selftest_vmx() -> Verdict {
    if cpu::virt() != Virt::Vmx {
        log::info!("vmx: no VMX, skipped");
        return Ok(());
    }
    if let Err(e) = caps() {
        log::error!("vmx: {e}");
        return Err("VMX present but unusable");
    }
    let me = percpu::cpu_index();
    on_this_cpu()?;
    for i in (0..smp::online_cpus()).filter(|&i| i != me) {
        *RESULT.lock() = Err("the job did not run");
        if let Err(e) = smp::run_on(i, job) {
            log::error!("vmx: job on cpu{i}: {e}");
            return Err("could not run the test on another CPU");
        }
        let r = *RESULT.lock();
        if r.is_err() {
            log::error!("vmx: on cpu{i}");
            return r;
        }
    }
    Ok(())
}
