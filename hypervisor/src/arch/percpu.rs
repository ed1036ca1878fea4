//! Per-CPU data, reached through the GS base of each CPU.
//!
//! Each CPU's GS base points at its own [`PerCpu`] slot; the slot's first word points at
//! itself, so `gs:[0]` yields a plain pointer. CPUs are numbered 0 (the bootstrap CPU) to
//! `online - 1` in the order they start.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use x86_64::registers::model_specific::GsBase;
use x86_64::VirtAddr;

/// Most CPUs the kernel drives; more in the MADT are left halted and logged.
pub const MAX_CPUS: usize = 64;

/// One CPU's own data.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Address of this slot (read as `gs:[0]`).
    self_ptr: AtomicU64,
    /// Kernel CPU number.
    index: AtomicU32,
    /// Local APIC ID.
    apic_id: AtomicU32,
    /// Timer interrupts taken on this CPU.
    pub timer_ticks: AtomicU64,
    /// Exceptions this CPU reported or survived (breakpoints included).
    pub exceptions: AtomicU64,
    /// Set once the CPU has its descriptor tables, APIC and timer and serves jobs.
    pub online: AtomicBool,
    /// Lowest byte of the CPU's main kernel stack (0 if unknown).
    pub stack_bottom: AtomicU64,
    /// One past the top of the main kernel stack.
    pub stack_top: AtomicU64,
    /// Lowest byte of the CPU's interrupt-stack-table area.
    pub ist_bottom: AtomicU64,
    /// One past the top of the interrupt-stack-table area.
    pub ist_top: AtomicU64,
    /// A posted job: a `fn()` as an address, 0 when the mailbox is empty.
    pub job: AtomicUsize,
    /// Jobs this CPU has finished.
    pub jobs_done: AtomicU64,
    /// Scratch value a job may leave for whoever posted it.
    pub job_result: AtomicU64,
}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            self_ptr: AtomicU64::new(0),
            index: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            timer_ticks: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            online: AtomicBool::new(false),
            stack_bottom: AtomicU64::new(0),
            stack_top: AtomicU64::new(0),
            ist_bottom: AtomicU64::new(0),
            ist_top: AtomicU64::new(0),
            job: AtomicUsize::new(0),
            jobs_done: AtomicU64::new(0),
            job_result: AtomicU64::new(0),
        }
    }

    /// Kernel CPU number.
    pub fn index(&self) -> u32 {
        self.index.load(Ordering::Relaxed)
    }

    /// Local APIC ID.
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// Whether the CPU is up and serving jobs.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Records the CPU's stacks, for the exception report's backtrace.
    pub fn set_stacks(&self, main: (u64, u64), ist: (u64, u64)) {
        self.stack_bottom.store(main.0, Ordering::Relaxed);
        self.stack_top.store(main.1, Ordering::Relaxed);
        self.ist_bottom.store(ist.0, Ordering::Relaxed);
        self.ist_top.store(ist.1, Ordering::Relaxed);
    }

    fn holds(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let inside = |lo: &AtomicU64, hi: &AtomicU64| {
            let (lo, hi) = (lo.load(Ordering::Relaxed), hi.load(Ordering::Relaxed));
            lo != 0 && addr >= lo && end <= hi
        };
        inside(&self.stack_bottom, &self.stack_top) || inside(&self.ist_bottom, &self.ist_top)
    }
}

static SLOTS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// Points this CPU's GS base at slot `index` (index < [`MAX_CPUS`]).
pub fn init_current(index: u32, apic_id: u32) {
    let Some(slot) = SLOTS.get(index as usize) else {
        return;
    };
    slot.self_ptr.store(slot as *const PerCpu as u64, Ordering::Relaxed);
    slot.index.store(index, Ordering::Relaxed);
    slot.apic_id.store(apic_id, Ordering::Relaxed);
    GsBase::write(VirtAddr::from_ptr(slot as *const PerCpu));
}

/// This CPU's slot (slot 0 before [`init_current`]).
pub fn current() -> &'static PerCpu {
    // The GS base is either 0 (not set yet) or the address of one slot: the slot's index
    // follows from its offset in the array, without a search (this runs on every vCPU
    // entry and every interrupt).
    let base = GsBase::read().as_u64();
    let first = core::ptr::from_ref::<PerCpu>(&SLOTS[0]) as u64;
    let size = core::mem::size_of::<PerCpu>() as u64;
    base.checked_sub(first)
        .filter(|off| off % size == 0)
        .and_then(|off| SLOTS.get((off / size) as usize))
        .unwrap_or(&SLOTS[0])
}

/// This CPU's number (0 before [`init_current`]).
pub fn cpu_index() -> u32 {
    current().index()
}

/// Slot `index`, if it exists.
pub fn get(index: u32) -> Option<&'static PerCpu> {
    SLOTS.get(index as usize)
}

/// The CPU whose main stack has `addr` in the guard page just under it: a stack overflow.
pub fn overflowed_stack(addr: u64) -> Option<u32> {
    SLOTS.iter().find_map(|s| {
        let bottom = s.stack_bottom.load(Ordering::Relaxed);
        (bottom >= 4096 && addr >= bottom - 4096 && addr < bottom).then(|| s.index())
    })
}

/// Whether `[addr, addr + len)` lies inside one known kernel stack of any CPU.
pub fn on_kernel_stack(addr: u64, len: u64) -> bool {
    SLOTS.iter().any(|s| s.holds(addr, len))
}
