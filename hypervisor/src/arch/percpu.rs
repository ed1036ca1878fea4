//! Per-CPU data, reached through the GS base of each CPU.
//!
//! Each CPU's GS base points at its own [`PerCpu`] slot; the slot's first word points at
//! itself, so `gs:[0]` yields a plain pointer. CPUs are numbered 0 (the bootstrap CPU) to
//! `online - 1` in the order they start.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            self_ptr: AtomicU64::new(0),
            index: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            timer_ticks: AtomicU64::new(0),
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
    let base = GsBase::read().as_u64();
    SLOTS.iter().find(|s| core::ptr::from_ref::<PerCpu>(s) as u64 == base).unwrap_or(&SLOTS[0])
}

/// This CPU's number (0 before [`init_current`]).
pub fn cpu_index() -> u32 {
    current().index()
}

/// Slot `index`, if it exists.
pub fn get(index: u32) -> Option<&'static PerCpu> {
    SLOTS.get(index as usize)
}
