//! Several vCPUs: the big kernel lock, what each CPU tells the others, and the waits
//! that keep page tables and threads safe while other CPUs run user code.
//!
//! The kernel runs on every vCPU of the VM (crx-abi 6: vCPU k enters at `_start` with
//! RSI = k) but one CPU at a time: each entry from user mode takes [`arch::BigLock`] (the
//! kernel's state, [`super::proc::KERNEL`]) and lets it go right before it returns to user
//! mode or goes idle. So the kernel's tables are never used by two CPUs at once and keep
//! their one-CPU design, while user code (the threads of a process included) runs on all
//! of them in parallel.
//!
//! What the lock cannot cover, because another CPU runs user code meanwhile:
//! * **Page tables.** A CPU that changes or removes a user mapping first makes every other
//!   CPU running user code on those tables leave user mode ([`shootdown`]): it kicks them
//!   (`VCPU_KICK` with the slice vector) and waits until each has entered the kernel,
//!   where it waits for the lock. Every return to user mode reloads CR3, so they come back
//!   with a fresh TLB. Tables being freed while another CPU still has them in CR3 (it
//!   entered the kernel and waits for the lock) are kept in limbo until it has moved off
//!   them ([`defer_free`], [`take_freeable`]).
//! * **Threads ending.** A thread that runs on another CPU is first made to leave user mode
//!   the same way ([`evict`]); that CPU then finds its thread gone and picks another.
//! * **Idle CPUs** sleep in `SLEEP_UNTIL` without the lock, each marked in an idle mask; a
//!   CPU that leaves work behind (a runnable thread, or a syscall that may have ended
//!   someone's wait) wakes them with `VCPU_KICK` (no vector), which the hypervisor
//!   remembers when it lands before the sleep.
#![forbid(unsafe_code)]

use core::hint::spin_loop;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

use alloc::vec::Vec;
use spin::Mutex;

use super::arch;

/// Most vCPUs the kernel uses; a VM with more leaves the rest asleep.
pub const MAX_CPUS: usize = arch::MAX_CPUS;

/// The CPUs the kernel runs on (1 until boot has brought up the others).
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// Set once the first CPU has built the kernel: the others may start.
static READY: AtomicBool = AtomicBool::new(false);
/// The PML4 each CPU runs user code on (0: it is in the kernel or idle). Set under the
/// lock right before the return to user mode, cleared first thing at every entry.
static USER_PML4: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The PML4 in each CPU's CR3.
static LOADED_PML4: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// CPUs asleep for want of work.
static IDLE: AtomicU64 = AtomicU64::new(0);
/// Whether the slice timer of each CPU is armed (cleared by its interrupt).
static SLICE_ARMED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Page-table frames freed while another CPU still had them loaded: (PML4, frames).
static LIMBO: Mutex<Vec<(u64, Vec<u64>)>> = Mutex::new(Vec::new());
/// Whether anything waits in limbo (so that most kernel entries skip its lock).
static LIMBO_USED: AtomicBool = AtomicBool::new(false);

/// Where a CPU other than the first goes once released: the kernel's tables and the
/// stacks the first CPU set aside for it.
#[derive(Debug, Clone, Copy)]
pub struct ApBoot {
    /// The kernel's own PML4.
    pub cr3: u64,
    /// Top of its kernel stack.
    pub stack_top: u64,
    /// Top of its double-fault stack.
    pub ist_top: u64,
}

/// Index = CPU (entry 0 unused). A static in the image, not the heap: a CPU reads it
/// while still on the boot tables, which map the image but not the direct map.
static AP_BOOT: Mutex<[ApBoot; MAX_CPUS]> =
    Mutex::new([ApBoot { cr3: 0, stack_top: 0, ist_top: 0 }; MAX_CPUS]);

/// Where CPU `cpu` goes once released, if the kernel uses it.
pub fn ap_boot(cpu: usize) -> Option<ApBoot> {
    if cpu == 0 || cpu >= online() {
        return None;
    }
    AP_BOOT.lock().get(cpu).copied().filter(|b| b.stack_top != 0)
}

/// Boot, on the first CPU: the kernel runs on `n` CPUs (at most [`MAX_CPUS`]); sets aside
/// a kernel stack and a double-fault stack for each other one (never freed) and releases
/// them.
pub fn bring_up(n: usize, cr3: u64) {
    let n = n.clamp(1, MAX_CPUS);
    let top = |bytes: usize| {
        let stack: &'static mut [u8] = alloc::vec![0u8; bytes].leak();
        (stack.as_ptr() as u64 + bytes as u64) & !0xf
    };
    {
        let mut boots = AP_BOOT.lock();
        for b in boots.iter_mut().take(n).skip(1) {
            *b = ApBoot { cr3, stack_top: top(arch::KSTACK_SIZE), ist_top: top(arch::IST_BYTES) };
        }
    }
    release_others(n);
}

/// This CPU's index.
pub fn me() -> usize {
    arch::cpu_index()
}

/// How many CPUs the kernel runs on.
pub fn online() -> usize {
    ONLINE.load(SeqCst)
}

/// Whether more than one CPU runs the kernel.
pub fn is_smp() -> bool {
    online() > 1
}

/// The kernel runs on `n` CPUs; the others may start now.
fn release_others(n: usize) {
    ONLINE.store(n.clamp(1, MAX_CPUS), SeqCst);
    READY.store(true, SeqCst);
    let mask = cpu_mask(online()) & !1;
    if mask != 0 {
        let _ = super::hv().vcpu_kick(mask, 0);
    }
}

/// Whether the first CPU has released the others.
pub fn ready() -> bool {
    READY.load(SeqCst)
}

/// The mask of CPUs `0..n`.
pub fn cpu_mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Entry from user mode, before the lock: this CPU no longer runs user code.
pub fn left_user() {
    USER_PML4[me()].store(0, SeqCst);
}

/// Right before the return to user mode on tables `pml4` (under the lock).
pub fn entering_user(pml4: u64) {
    USER_PML4[me()].store(pml4, SeqCst);
}

/// CR3 of this CPU now holds `pml4`.
pub fn note_cr3(pml4: u64) {
    LOADED_PML4[me()].store(pml4, SeqCst);
}

/// The PML4 in this CPU's CR3.
pub fn loaded_here() -> u64 {
    LOADED_PML4[me()].load(SeqCst)
}

/// The slice timer of this CPU: whether it is armed.
pub fn slice_armed() -> bool {
    SLICE_ARMED[me()].load(SeqCst)
}

/// Notes whether this CPU's slice timer is armed.
pub fn set_slice_armed(on: bool) {
    SLICE_ARMED[me()].store(on, SeqCst);
}

/// Makes CPU `cpu` leave user mode, if it runs user code on `pml4` (any tables when
/// `None`), and waits until it has entered the kernel. Called under the lock, so that CPU
/// then waits for it.
pub fn evict(cpu: usize, pml4: Option<u64>) {
    let Some(slot) = USER_PML4.get(cpu) else { return };
    let runs = |v: u64| v != 0 && pml4.is_none_or(|p| p == v);
    if cpu == me() || !runs(slot.load(SeqCst)) {
        return;
    }
    let hv = super::hv();
    if hv.vcpu_kick(1 << cpu, arch::TIMER_VECTOR).is_err() {
        // Without kicks the kernel never brings up a second CPU; nothing to wait for.
        return;
    }
    let mut spins: u32 = 0;
    while runs(slot.load(SeqCst)) {
        spin_loop();
        spins = spins.wrapping_add(1);
        // Its vCPU may wait for a physical CPU: give this one up now and then.
        if spins.is_multiple_of(4096) {
            hv.yield_now();
        }
    }
}

/// Before a user mapping of the tables `pml4` changes or goes: every other CPU running user
/// code on them leaves user mode first (it reloads CR3 when it returns).
pub fn shootdown(pml4: u64) {
    if !is_smp() {
        return;
    }
    for cpu in 0..online() {
        evict(cpu, Some(pml4));
    }
}

/// Whether a CPU other than this one has `pml4` in CR3.
pub fn loaded_elsewhere(pml4: u64) -> bool {
    let me = me();
    is_smp() && (0..online()).any(|c| c != me && LOADED_PML4[c].load(SeqCst) == pml4)
}

/// Keeps the frames of tables rooted at `pml4` until no CPU has them loaded.
pub fn defer_free(pml4: u64, frames: Vec<u64>) {
    LIMBO.lock().push((pml4, frames));
    LIMBO_USED.store(true, SeqCst);
}

/// Whether `pml4`'s tables wait in limbo.
pub fn in_limbo(pml4: u64) -> bool {
    pml4 != 0 && LIMBO_USED.load(SeqCst) && LIMBO.lock().iter().any(|(p, _)| *p == pml4)
}

/// The frames in limbo that no CPU has loaded any more (to be released).
pub fn take_freeable() -> Vec<u64> {
    if !LIMBO_USED.load(SeqCst) {
        return Vec::new();
    }
    let mut limbo = LIMBO.lock();
    let loaded: Vec<u64> = (0..online()).map(|c| LOADED_PML4[c].load(SeqCst)).collect();
    let mut out = Vec::new();
    limbo.retain_mut(|(p, frames)| {
        if loaded.contains(p) {
            return true;
        }
        out.append(frames);
        false
    });
    LIMBO_USED.store(!limbo.is_empty(), SeqCst);
    out
}

/// This CPU goes to sleep for want of work.
pub fn set_idle(on: bool) {
    let bit = 1u64 << me();
    if on {
        IDLE.fetch_or(bit, SeqCst);
    } else {
        IDLE.fetch_and(!bit, SeqCst);
    }
}

/// The other CPUs asleep for want of work.
pub fn idle_others() -> u64 {
    IDLE.load(SeqCst) & !(1u64 << me())
}

/// Wakes the idle CPUs of `mask` (each clears its own bit again when it sleeps next).
pub fn wake(mask: u64) {
    let mask = mask & IDLE.fetch_and(!mask, SeqCst);
    if mask != 0 {
        let _ = super::hv().vcpu_kick(mask, 0);
    }
}

/// Wakes the lowest-numbered idle CPU of `mask`.
pub fn wake_one(mask: u64) {
    wake(mask & mask.wrapping_neg());
}

/// Interrupts CPU `cpu` soon if it runs user code (a signal for its thread is pending).
pub fn nudge(cpu: usize) {
    if cpu != me() && USER_PML4.get(cpu).is_some_and(|s| s.load(SeqCst) != 0) {
        let _ = super::hv().vcpu_kick(1 << cpu, arch::TIMER_VECTOR);
    }
}
