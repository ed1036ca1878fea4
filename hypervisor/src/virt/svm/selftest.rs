//! The `svm` self-test: a hand-made 64-bit guest in 1 MiB of memory, run through the
//! backend without the VM core, checking each exit kind, length, port and address.

use super::hw::BACKEND;
use crate::arch::percpu::{self, MAX_CPUS};
use crate::arch::smp;
use crate::mm::free_frames;
use crate::selftest::{Test, Verdict};
use crate::virt::testguest::TestGuest;
use crate::virt::{Backend, Vcpu, VirtError};
use crate::vm::{Access, Action, ExitKind, GuestRegs, InitialState, NestedFormat, Segment};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use crx_abi::layout;
use x86_64::registers::model_specific::{FsBase, GsBase, KernelGsBase, LStar, Msr};

/// Self-tests of the AMD-V backend.
pub static SELFTESTS: &[Test] = &[Test { name: "svm", in_all: true, run: selftest }];

/// Guest memory: gpa 0 up to 1 MiB.
const GUEST_BYTES: u64 = 1 << 20;
/// Where the test code sits.
const CODE: u64 = 0x9000;
/// A guest-physical address inside the guest's own 2 MiB page but beyond its memory.
const OUTSIDE: u64 = 0x18_0000;

/// The guest program (64-bit code at [`CODE`]) and the exits it must cause.
const PROGRAM: &[u8] = &[
    0x0f, 0xa2, // 9000 cpuid                     -> Cpuid, 2
    0xf4, // 9002 hlt                             -> Hlt, 1
    0xe6, 0x99, // 9003 out 0x99, al              -> Io 0x99, 2
    0x8b, 0x04, 0x25, 0x00, 0x00, 0x18, 0x00, // 9005 mov eax, [0x180000] -> NPF, skipped by hand
    0xb9, 0x10, 0x00, 0x00, 0x00, // 900c mov ecx, 0x10
    0x0f, 0x32, // 9011 rdmsr                     -> Msr read, 2
    0xb9, 0x00, 0x01, 0x00, 0xc0, // 9013 mov ecx, FS_BASE
    0xb8, 0x00, 0x50, 0x00, 0x00, // 9018 mov eax, 0x5000
    0x31, 0xd2, // 901d xor edx, edx
    0x0f, 0x30, // 901f wrmsr                     (no exit: FS_BASE passes through)
    0xb8, 0x02, 0x00, 0x00, 0x00, // 9021 mov eax, 2 (EXIT)
    0x0f, 0x01, 0xd9, // 9026 vmmcall             -> Hypercall, 3
    0xeb, 0xfe, // 9029 jmp $                     -> Preempted by the timer tick
    0xf4, // 902b
];
const AT_NPF: u64 = CODE + 5;
const AT_RDMSR: u64 = CODE + 0x11;
const AT_VMMCALL: u64 = CODE + 0x26;
const AT_LOOP: u64 = CODE + 0x29;

fn seg(selector: u16, limit: u32, access: u16) -> Segment {
    Segment { selector, base: 0, limit, access }
}

/// The guest's page tables and GDT in crx-abi's layout, and its initial state.
fn prepare(g: &TestGuest) -> InitialState {
    const P_W_U: u64 = 0x7;
    g.write_u64(layout::PML4, layout::PDPT | P_W_U);
    g.write_u64(layout::PDPT, layout::PD | P_W_U);
    // One 2 MiB page (PS) over gpa 0: the guest's memory and, above 1 MiB, nothing.
    g.write_u64(layout::PD, 0x83);
    for (i, d) in [0u64, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff].into_iter().enumerate() {
        g.write_u64(layout::GDT + 8 * i as u64, d);
    }
    g.write(CODE, PROGRAM);
    let data = seg(0x10, 0xffff_ffff, 0xc093);
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
        cs: seg(0x08, 0xffff_ffff, 0xa09b),
        ds: data,
        es: data,
        ss: data,
        fs: data,
        gs: data,
        tr: seg(0, 0x67, 0x8b),
        ldtr: seg(0, 0, 0),
        gdtr: (layout::GDT, 23),
        // No IDT: the injected #UD becomes a triple fault.
        idtr: (0, 0),
    }
}

fn enable_here() {
    let ok = BACKEND.enable_cpu().is_ok();
    percpu::current().job_result.store(u64::from(ok), Ordering::Relaxed);
}

/// Host state the world switch must leave as it found it.
fn host_msrs() -> [u64; 5] {
    // SAFETY: STAR exists on every x86_64 CPU; reading it has no side effects.
    let star = unsafe { Msr::new(0xc000_0081).read() };
    [
        FsBase::read().as_u64(),
        GsBase::read().as_u64(),
        KernelGsBase::read().as_u64(),
        LStar::read().as_u64(),
        star,
    ]
}

fn selftest() -> Verdict {
    match super::hw::probe() {
        Ok(_) => {}
        Err(VirtError::Unsupported) => {
            log::info!("no SVM, skipped");
            return Ok(());
        }
        Err(e) => {
            log::info!("SVM not usable ({e}), skipped");
            return Ok(());
        }
    }
    for slot in (0..MAX_CPUS as u32).filter_map(percpu::get).filter(|s| s.is_online()) {
        slot.job_result.store(0, Ordering::Relaxed);
        if smp::run_on(slot.index(), enable_here).is_err() || slot.job_result.load(Ordering::Relaxed) != 1 {
            return Err("enable_cpu failed on a CPU");
        }
    }
    if BACKEND.enable_cpu().is_err() {
        return Err("enable_cpu is not idempotent");
    }
    let before = free_frames();
    let guest = TestGuest::new(GUEST_BYTES, NestedFormat::Npt)?;
    let init = prepare(&guest);
    let verdict = match BACKEND.create_vcpu(guest.root(), &init) {
        Ok(v) => run_program(v),
        Err(_) => Err("create_vcpu failed"),
    };
    drop(guest);
    verdict?;
    log::debug!("svm selftest: program done");
    let verdict = exhaust_asids();
    if free_frames() != before {
        return Err("frames leaked: free count differs after dropping the vCPUs and guest memory");
    }
    verdict
}

/// Runs the program and checks every exit.
fn run_program(mut v: Box<dyn Vcpu>) -> Verdict {
    if v.overhead_bytes() != 4096 + 8192 + 12288 {
        return Err("overhead is not VMCB + MSRPM + IOPM");
    }
    let host0 = host_msrs();
    let cpu0 = percpu::cpu_index();
    let expect = |v: &mut Box<dyn Vcpu>, kind: ExitKind, len: u8, why: &'static str| {
        // A host timer tick may end any entry before the guest's next exit: run again.
        let mut e = v.run(10_000_000);
        for _ in 0..1000 {
            if e.kind != ExitKind::Preempted {
                break;
            }
            e = v.run(10_000_000);
        }
        log::debug!("svm selftest: {:?} len {} at rip {:#x}", e.kind, e.instr_len, v.regs().rip);
        if e.kind != kind || e.instr_len != len {
            log::error!("svm selftest: got {:?} len {} at rip {:#x}", e.kind, e.instr_len, v.regs().rip);
            return Err(why);
        }
        Ok(e)
    };
    let e = expect(&mut v, ExitKind::Cpuid, 2, "first exit is not CPUID (2 bytes)")?;
    if v.regs().rip != CODE {
        return Err("CPUID exit at the wrong RIP");
    }
    v.regs().rbx = 0x1234_5678;
    v.apply(&e, &Action::Advance);
    let e = expect(&mut v, ExitKind::Hlt, 1, "second exit is not HLT (1 byte)")?;
    v.apply(&e, &Action::Advance);
    let io = ExitKind::Io { port: 0x99, size: 1, write: true, string: false };
    let e = expect(&mut v, io, 2, "third exit is not OUT 0x99 (2 bytes)")?;
    v.apply(&e, &Action::Advance);
    let npf = ExitKind::NestedPageFault { gpa: OUTSIDE, access: Access::Read };
    expect(&mut v, npf, 0, "fourth exit is not a nested page fault at 0x180000")?;
    if v.regs().rip != AT_NPF {
        return Err("nested page fault at the wrong RIP");
    }
    v.regs().rip += 7;
    let e = expect(&mut v, ExitKind::Msr { write: false }, 2, "fifth exit is not RDMSR (2 bytes)")?;
    if v.regs().rip != AT_RDMSR || v.regs().rcx != 0x10 {
        return Err("RDMSR exit with the wrong RIP or RCX");
    }
    v.apply(&e, &Action::Advance);
    let e = expect(&mut v, ExitKind::Hypercall { cpl: 0 }, 3, "sixth exit is not VMMCALL (3 bytes)")?;
    let r = *v.regs();
    if r.rip != AT_VMMCALL || r.rax != crx_abi::nr::EXIT || r.rbx != 0x1234_5678 || r.rcx != 0xc000_0100 {
        return Err("hypercall registers wrong (RIP, RAX = EXIT, RBX kept, RCX)");
    }
    if e.guest_ns == 0 {
        return Err("guest_ns is zero");
    }
    v.apply(&e, &Action::Advance);
    // `jmp $` runs until a host timer tick ends the entry.
    let mut last = None;
    for _ in 0..8 {
        let e = v.run(10_000_000);
        if e.kind != ExitKind::Preempted || e.instr_len != 0 {
            log::error!("svm selftest: got {:?} in the loop", e.kind);
            return Err("the spinning guest left with something other than Preempted");
        }
        if v.regs().rip == AT_LOOP {
            last = Some(e);
            break;
        }
    }
    let Some(last) = last else {
        return Err("no preemption inside the guest's loop");
    };
    v.apply(&last, &Action::Inject { vector: 6, error_code: None });
    expect(&mut v, ExitKind::TripleFault, 0, "an injected #UD without an IDT did not end in a triple fault")?;
    if host_msrs() != host0 || percpu::cpu_index() != cpu0 {
        return Err("host FS/GS/KERNEL_GS base, LSTAR or STAR changed across guest entries");
    }
    drop(v);
    Ok(())
}

/// Creates vCPUs on this CPU until the ASIDs run out, then drops them all.
fn exhaust_asids() -> Verdict {
    let init = InitialState::default();
    let mut held = Vec::new();
    let outcome = loop {
        match BACKEND.create_vcpu(0, &init) {
            Ok(v) => held.push(v),
            Err(e) => break e,
        }
        if held.len() > 4096 {
            break VirtError::Unsupported;
        }
    };
    let n = held.len();
    log::debug!("svm selftest: {n} vCPUs created, then {outcome}");
    drop(held);
    if outcome != VirtError::NoTag || n == 0 {
        return Err("creating vCPUs did not end with NoTag");
    }
    // The ASIDs came back: one more vCPU fits again.
    match BACKEND.create_vcpu(0, &init) {
        Ok(v) => drop(v),
        Err(_) => return Err("an ASID was not recycled"),
    }
    log::info!("svm: {n} vCPUs fit on one CPU");
    Ok(())
}
