//! Starting the application processors (INIT-SIPI-SIPI through a real-mode trampoline).
//!
//! The trampoline below is copied to physical 0x8000 (start-up vector 0x08). An AP enters
//! it in real mode, marks itself alive, loads the trampoline's GDT and goes through 32-bit
//! protected mode into long mode with the bootstrap CPU's CR3, CR4 (paging bits), EFER
//! (LME, NXE) and CR0. In 64-bit mode it atomically takes the stack pointer the BSP left
//! in the trampoline (a zero there means the BSP gave up on it: it halts) and calls
//! [`hv_ap_entry`] with its CPU index. APs start one at a time, so one set of trampoline
//! variables serves them all.
//!
//! Once up, an AP idles in `sti; hlt` and serves a one-slot job mailbox in its
//! [`PerCpu`]: [`run_on`] posts a `fn()` and wakes the AP with an IPI; the AP runs it and
//! empties the slot. [`wake`] sends the same IPI without a job.

use super::percpu::{self, PerCpu, MAX_CPUS};
use super::{apic, gdt, interrupts, time, vectors};
use crate::decode::apic::Ipi;
use crate::selftest::{Test, Verdict};
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use log::{debug, info, warn};

/// Physical address the trampoline runs at.
const TRAMPOLINE_PHYS: u64 = 0x8000;
/// Start-up IPI vector: the AP starts at `vector << 12`.
const STARTUP_VECTOR: u8 = (TRAMPOLINE_PHYS >> 12) as u8;
/// Pages in each AP's main stack and in its IST area.
const STACK_PAGES: usize = 16;
/// How long an AP may take from its first SIPI to mark itself alive.
const ALIVE_TIMEOUT_NS: u64 = 100_000_000;
/// How long an alive AP may take to finish its setup.
const ONLINE_TIMEOUT_NS: u64 = 1_000_000_000;
/// How long a posted job may take.
const JOB_TIMEOUT_NS: u64 = 1_000_000_000;

core::arch::global_asm!(
    r#"
.section .rodata.hv_ap_trampoline, "a"
.balign 16
.global hv_ap_tramp_start
hv_ap_tramp_start:
.code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movb $1, 0x8000 + hv_ap_alive - hv_ap_tramp_start
    lgdtl 0x8000 + hv_ap_gdtr - hv_ap_tramp_start
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    .byte 0x66, 0xea
    .long 0x8000 + hv_ap_pm32 - hv_ap_tramp_start
    .word 0x18
.code32
hv_ap_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl 0x8000 + hv_ap_cr4 - hv_ap_tramp_start, %eax
    movl %eax, %cr4
    movl 0x8000 + hv_ap_cr3 - hv_ap_tramp_start, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    movl 0x8000 + hv_ap_efer - hv_ap_tramp_start, %eax
    xorl %edx, %edx
    wrmsr
    movl 0x8000 + hv_ap_cr0 - hv_ap_tramp_start, %eax
    movl %eax, %cr0
    .byte 0xea
    .long 0x8000 + hv_ap_lm64 - hv_ap_tramp_start
    .word 0x08
.code64
hv_ap_lm64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    xchgq %rax, 0x8000 + hv_ap_stack - hv_ap_tramp_start
    testq %rax, %rax
    jz 2f
    movq %rax, %rsp
    movq 0x8000 + hv_ap_index - hv_ap_tramp_start, %rdi
    movq 0x8000 + hv_ap_entry_ptr - hv_ap_tramp_start, %rax
    xorl %ebp, %ebp
    callq *%rax
2:
    cli
    hlt
    jmp 2b

.balign 8
hv_ap_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cf9a000000ffff
hv_ap_gdtr:
    .word hv_ap_gdtr - hv_ap_gdt - 1
    .long 0x8000 + hv_ap_gdt - hv_ap_tramp_start
.balign 8
.global hv_ap_cr3
hv_ap_cr3: .quad 0
.global hv_ap_cr4
hv_ap_cr4: .quad 0
.global hv_ap_cr0
hv_ap_cr0: .quad 0
.global hv_ap_efer
hv_ap_efer: .quad 0
.global hv_ap_stack
hv_ap_stack: .quad 0
.global hv_ap_index
hv_ap_index: .quad 0
.global hv_ap_entry_ptr
hv_ap_entry_ptr: .quad 0
.global hv_ap_alive
hv_ap_alive: .quad 0
.global hv_ap_tramp_end
hv_ap_tramp_end:
.code64
.text
"#,
    options(att_syntax)
);

extern "C" {
    static hv_ap_tramp_start: u8;
    static hv_ap_tramp_end: u8;
    static hv_ap_cr3: u8;
    static hv_ap_cr4: u8;
    static hv_ap_cr0: u8;
    static hv_ap_efer: u8;
    static hv_ap_stack: u8;
    static hv_ap_index: u8;
    static hv_ap_entry_ptr: u8;
    static hv_ap_alive: u8;
}

/// One 64-bit trampoline variable, by its symbol in the image.
#[derive(Clone, Copy)]
enum Var {
    Cr3,
    Cr4,
    Cr0,
    Efer,
    Stack,
    Index,
    Entry,
    Alive,
}

/// Where `var` lives in the copy at [`TRAMPOLINE_PHYS`].
fn var(var: Var) -> &'static AtomicU64 {
    let sym = match var {
        Var::Cr3 => &raw const hv_ap_cr3,
        Var::Cr4 => &raw const hv_ap_cr4,
        Var::Cr0 => &raw const hv_ap_cr0,
        Var::Efer => &raw const hv_ap_efer,
        Var::Stack => &raw const hv_ap_stack,
        Var::Index => &raw const hv_ap_index,
        Var::Entry => &raw const hv_ap_entry_ptr,
        Var::Alive => &raw const hv_ap_alive,
    };
    let offset = sym as u64 - (&raw const hv_ap_tramp_start) as u64;
    // SAFETY: every variable is an 8-byte-aligned quadword inside the trampoline (see the
    // assembly), whose copy at 0x8000 is identity-mapped, writable and reserved for it
    // for the whole run; it is only accessed atomically from Rust.
    unsafe { AtomicU64::from_ptr((TRAMPOLINE_PHYS + offset) as *mut u64) }
}

/// Why an AP did not come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// No memory for its stacks.
    NoStack,
    /// The INIT or SIPI could not be sent.
    Ipi(apic::IpiError),
    /// It never ran the trampoline.
    NoAnswer,
    /// It entered the trampoline but did not finish its setup in time.
    Stuck,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NoStack => f.write_str("no memory for its stacks"),
            StartError::Ipi(e) => write!(f, "start-up IPI failed: {e}"),
            StartError::NoAnswer => f.write_str("it did not answer INIT-SIPI-SIPI"),
            StartError::Stuck => f.write_str("it started but did not come online within 1 s"),
        }
    }
}

/// Why a job could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobError {
    /// No CPU has that index, or it is not online.
    Offline,
    /// Its mailbox already holds a job.
    Busy,
    /// The wake-up IPI failed.
    Ipi(apic::IpiError),
    /// The CPU did not finish the job in time.
    Timeout,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Offline => f.write_str("the CPU is not online"),
            JobError::Busy => f.write_str("the CPU's mailbox is busy"),
            JobError::Ipi(e) => write!(f, "wake-up IPI failed: {e}"),
            JobError::Timeout => f.write_str("the job did not finish within 1 s"),
        }
    }
}

static ONLINE: AtomicU32 = AtomicU32::new(1);

/// How many CPUs are online (1 before [`start_aps`]).
pub fn online_cpus() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

/// Copies the trampoline to 0x8000 and fills in the BSP's paging state. Returns `false`
/// (APs cannot start) when CR3 lies above 4 GiB.
fn install_trampoline() -> bool {
    let cr3 = x86_64::registers::control::Cr3::read_raw().0.start_address().as_u64();
    if cr3 >= 1 << 32 {
        warn!("smp: the page tables are above 4 GiB ({cr3:#x}); APs cannot use them from 32-bit mode");
        return false;
    }
    let start = (&raw const hv_ap_tramp_start) as u64;
    let len = (&raw const hv_ap_tramp_end) as u64 - start;
    // SAFETY: the trampoline is `len` bytes of the kernel image (well under 4 KiB); the
    // page at 0x8000 is identity-mapped, writable and reserved for it, and no AP runs it
    // now (APs start only after this copy).
    unsafe { core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE_PHYS as *mut u8, len as usize) };
    // CR4 bits that are legal before long mode is active and that the kernel relies on:
    // PSE, PAE, PGE, OSFXSR, OSXMMEXCPT, FSGSBASE, SMEP, SMAP (no PCIDE: it needs IA-32e).
    const CR4_KEEP: u64 =
        (1 << 4) | (1 << 5) | (1 << 7) | (1 << 9) | (1 << 10) | (1 << 16) | (1 << 20) | (1 << 21);
    let cr4 = (x86_64::registers::control::Cr4::read_raw() & CR4_KEEP) | (1 << 5);
    // EFER: LME (bit 8) always, NXE (bit 11) and SCE (bit 0) as on the BSP.
    let efer = (x86_64::registers::model_specific::Efer::read_raw() & ((1 << 11) | 1)) | (1 << 8);
    var(Var::Cr3).store(cr3, Ordering::Relaxed);
    var(Var::Cr4).store(cr4, Ordering::Relaxed);
    var(Var::Cr0).store(x86_64::registers::control::Cr0::read_raw() & 0xffff_ffff, Ordering::Relaxed);
    var(Var::Efer).store(efer, Ordering::Relaxed);
    var(Var::Entry).store(hv_ap_entry as *const () as u64, Ordering::Relaxed);
    var(Var::Stack).store(0, Ordering::Relaxed);
    var(Var::Alive).store(0, Ordering::Relaxed);
    true
}

/// Starts every other CPU the platform lists (at most `max_cpus` in all) and returns how
/// many CPUs are online, this one included.
pub fn start_aps(platform: &crate::arch::acpi::Platform, max_cpus: Option<u32>) -> u32 {
    let limit = max_cpus.unwrap_or(u32::MAX).clamp(1, MAX_CPUS as u32);
    let bsp = percpu::current().apic_id();
    let others = platform.apic_ids.iter().filter(|&&id| id != bsp).count();
    if others == 0 || limit == 1 {
        if others > 0 {
            info!("smp: maxcpus=1: {others} other CPU(s) left halted");
        }
        return online_cpus();
    }
    if !install_trampoline() {
        return online_cpus();
    }
    let mut online = 1u32;
    let mut skipped = 0usize;
    for &id in platform.apic_ids.iter().filter(|&&id| id != bsp) {
        if online >= limit {
            skipped += 1;
            continue;
        }
        match start_one(online, id) {
            Ok(()) => {
                online += 1;
                ONLINE.store(online, Ordering::Release);
                debug!("smp: cpu{} (APIC ID {id}) online", online - 1);
            }
            Err(StartError::Stuck) => {
                warn!("smp: APIC ID {id}: {}; not starting more CPUs", StartError::Stuck);
                skipped += platform.apic_ids.len().saturating_sub(online as usize + 1);
                break;
            }
            Err(e) => warn!("smp: APIC ID {id}: {e}; skipped"),
        }
    }
    if skipped > 0 {
        info!("smp: {skipped} CPU(s) left halted (maxcpus={limit} or start-up stopped)");
    }
    info!("smp: {online} CPU(s) online");
    online
}

/// INIT-SIPI-SIPI for one AP (Intel SDM Vol. 3A 9.4.4.1, "Typical BSP Initialization
/// Sequence": INIT, 10 ms, SIPI, 200 us, a second SIPI if needed, 200 us).
fn start_one(index: u32, apic_id: u32) -> Result<(), StartError> {
    let slot = percpu::get(index).ok_or(StartError::NoStack)?;
    let main = crate::mm::alloc_stack(STACK_PAGES).ok_or(StartError::NoStack)?;
    let ist = crate::mm::alloc_stack(STACK_PAGES).ok_or(StartError::NoStack)?;
    if ist.top - ist.bottom < gdt::IST_AREA_BYTES {
        return Err(StartError::NoStack);
    }
    slot.set_stacks((main.bottom, main.top), (ist.top - gdt::IST_AREA_BYTES, ist.top));
    var(Var::Alive).store(0, Ordering::Relaxed);
    var(Var::Index).store(u64::from(index), Ordering::Relaxed);
    var(Var::Stack).store(main.top, Ordering::SeqCst);

    apic::send_ipi(apic_id, Ipi::Init).map_err(StartError::Ipi)?;
    time::spin_ns(10_000_000);
    apic::send_ipi(apic_id, Ipi::Startup(STARTUP_VECTOR)).map_err(StartError::Ipi)?;
    time::spin_ns(200_000);
    if var(Var::Alive).load(Ordering::SeqCst) == 0 {
        apic::send_ipi(apic_id, Ipi::Startup(STARTUP_VECTOR)).map_err(StartError::Ipi)?;
        time::spin_ns(200_000);
    }
    let alive = wait_for(ALIVE_TIMEOUT_NS, || var(Var::Alive).load(Ordering::SeqCst) != 0);
    if !alive && var(Var::Stack).swap(0, Ordering::SeqCst) != 0 {
        // It never took its stack, and now it never can: the trampoline halts.
        return Err(StartError::NoAnswer);
    }
    if !wait_for(ONLINE_TIMEOUT_NS, || slot.is_online()) {
        return Err(StartError::Stuck);
    }
    Ok(())
}

fn wait_for(timeout_ns: u64, done: impl Fn() -> bool) -> bool {
    let start = time::now_ns();
    while !done() {
        if time::now_ns().saturating_sub(start) > timeout_ns {
            return done();
        }
        core::hint::spin_loop();
    }
    true
}

/// Where an AP enters Rust, on its own stack, with interrupts off.
extern "C" fn hv_ap_entry(index: u64) -> ! {
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    percpu::init_current(index, apic::cpuid_apic_id());
    let me = percpu::current();
    gdt::init_ap(index, me.ist_bottom.load(Ordering::Relaxed));
    interrupts::init();
    apic::init_ap();
    me.online.store(true, Ordering::Release);
    idle(me)
}

/// Serves the mailbox: run a posted job, else sleep until an interrupt.
fn idle(me: &'static PerCpu) -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        let job = me.job.load(Ordering::Acquire);
        if job != 0 {
            x86_64::instructions::interrupts::enable();
            // SAFETY: only `run_on` stores into `job`, and it stores a `fn()` cast to an
            // address; a `fn()` pointer and `usize` have the same size.
            let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(job) };
            f();
            me.jobs_done.fetch_add(1, Ordering::Relaxed);
            me.job.store(0, Ordering::Release);
            continue;
        }
        // `sti; hlt` as one pair: the wake-up IPI cannot slip in between the check above
        // and the halt (STI delays interrupts by one instruction).
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Runs `f` on CPU `index` and waits for it to finish (directly when `index` is this CPU).
pub fn run_on(index: u32, f: fn()) -> Result<(), JobError> {
    let slot = percpu::get(index).filter(|s| s.is_online()).ok_or(JobError::Offline)?;
    if index == percpu::cpu_index() {
        f();
        return Ok(());
    }
    slot.job
        .compare_exchange(0, f as usize, Ordering::AcqRel, Ordering::Acquire)
        .map_err(|_| JobError::Busy)?;
    apic::send_ipi(slot.apic_id(), Ipi::Fixed(vectors::WAKE_VECTOR)).map_err(JobError::Ipi)?;
    if wait_for(JOB_TIMEOUT_NS, || slot.job.load(Ordering::Acquire) == 0) {
        Ok(())
    } else {
        Err(JobError::Timeout)
    }
}

/// Posts `f` to CPU `index` (not this one) and returns without waiting: for jobs that
/// run for a long time, such as a CPU's vCPU loop.
pub fn post(index: u32, f: fn()) -> Result<(), JobError> {
    let slot = percpu::get(index).filter(|s| s.is_online()).ok_or(JobError::Offline)?;
    if index == percpu::cpu_index() {
        return Err(JobError::Busy);
    }
    slot.job
        .compare_exchange(0, f as usize, Ordering::AcqRel, Ordering::Acquire)
        .map_err(|_| JobError::Busy)?;
    apic::send_ipi(slot.apic_id(), Ipi::Fixed(vectors::WAKE_VECTOR)).map_err(JobError::Ipi)
}

/// Interrupts CPU `index` (not this one) with the wake-up vector and no job: it leaves
/// `hlt`, or, running a guest, ends that entry (both backends exit on a host interrupt).
/// The vCPU loops use it to make a kicked vCPU's CPU look at the kick at once.
pub fn wake(index: u32) -> Result<(), JobError> {
    let slot = percpu::get(index).filter(|s| s.is_online()).ok_or(JobError::Offline)?;
    if index == percpu::cpu_index() {
        return Err(JobError::Busy);
    }
    apic::send_ipi(slot.apic_id(), Ipi::Fixed(vectors::WAKE_VECTOR)).map_err(JobError::Ipi)
}

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[Test { name: "smp", in_all: true, run: selftest_jobs }];

fn record_apic_id() {
    percpu::current().job_result.store(u64::from(apic::id()), Ordering::Relaxed);
}

/// Every online CPU runs a posted job on itself, as its own APIC ID shows.
fn selftest_jobs() -> Verdict {
    let mut seen = 0u32;
    for slot in (0..MAX_CPUS as u32).filter_map(percpu::get).filter(|s| s.is_online()) {
        slot.job_result.store(u64::MAX, Ordering::Relaxed);
        if let Err(e) = run_on(slot.index(), record_apic_id) {
            log::error!("smp: job on cpu{}: {e}", slot.index());
            return Err("a posted job did not run");
        }
        if slot.job_result.load(Ordering::Relaxed) != u64::from(slot.apic_id()) {
            return Err("a job ran on a CPU other than the one it was posted to");
        }
        seen += 1;
    }
    if seen != online_cpus() {
        return Err("the number of CPUs serving jobs differs from the online count");
    }
    Ok(())
}
