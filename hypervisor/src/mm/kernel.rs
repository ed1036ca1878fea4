//! The kernel's own memory state: the frame allocator, the live page tables, the stack
//! region. Everything here runs on the real machine.
//!
//! Page tables are reached through the identity mapping: while the boot tables are live
//! only 0..4 GiB is mapped, so every table frame allocated before the switch comes from
//! below 4 GiB; after it all RAM is identity-mapped and any frame will do.
//!
//! Until the switch the boot stack has no guard (the boot tables map its guard page), so
//! nothing here keeps large values on the stack; the layout plan lives in a static.
//!
//! Mappings are only ever added at run time (heap growth, stacks, MMIO above 4 GiB), never
//! changed or removed once another CPU may have used them, so no TLB shootdown is needed:
//! x86 does not cache not-present translations (SDM Vol. 3A 4.10.2.3).

use super::frames::{self, FrameAllocator};
use super::layout::{self, KernelImage, LOW_LIMIT, STACKS_MAX_BYTES, STACKS_START};
use super::paging::{Flags, MapError, PageSize, PageTables, TableMemory, Translation};
use super::{MmError, Stack, PAGE_SIZE};
use boot::BootInfo;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3, Cr3Flags, Efer, EferFlags};
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

/// Frames below this are never handed out: real-mode IVT/BDA/EBDA, the AP trampoline at
/// 0x8000, VGA memory and the BIOS ROMs.
const LOW_RESERVED: u64 = 1 << 20;

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static boot_stack_guard: u8;
}

/// The kernel image's layout, from the linker script's symbols.
pub fn image() -> KernelImage {
    let a = |p: *const u8| p as u64;
    KernelImage {
        image: (a(&raw const __kernel_start), a(&raw const __kernel_end)),
        text: (a(&raw const __text_start), a(&raw const __text_end)),
        rodata: (a(&raw const __rodata_start), a(&raw const __rodata_end)),
        data: (a(&raw const __data_start), a(&raw const __data_end)),
        stack_guard: a(&raw const boot_stack_guard),
    }
}

/// Page-table memory reached through the identity mapping.
struct Identity<'a> {
    frames: &'a mut FrameAllocator<'static>,
    /// New tables must lie below this (4 GiB while the boot tables are live).
    limit: u64,
}

impl TableMemory for Identity<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let f = if self.limit == u64::MAX {
            self.frames.alloc().ok()?
        } else {
            self.frames.alloc_run(1, PAGE_SIZE, self.limit).ok()?
        };
        // SAFETY: the frame was just taken from the allocator, so nothing else uses it;
        // it is RAM below `limit`, which the live page tables identity-map read-write.
        unsafe { core::ptr::write_bytes(f as *mut u8, 0, PAGE_SIZE as usize) };
        Some(f)
    }

    fn read_entry(&self, table: u64, index: usize) -> u64 {
        let p = (table + (index as u64 % 512) * 8) as *const u64;
        // SAFETY: `PageTables` passes only its root and addresses it read from present
        // non-leaf entries, all of which are table frames this module allocated from
        // identity-mapped RAM; the index is masked to the table's 512 entries.
        unsafe { core::ptr::read_volatile(p) }
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        let p = (table + (index as u64 % 512) * 8) as *mut u64;
        // SAFETY: as in `read_entry`; the tables are only written under the `KERNEL` lock.
        unsafe { core::ptr::write_volatile(p, value) };
    }
}

/// Everything behind the lock.
pub struct Kernel {
    frames: FrameAllocator<'static>,
    root: u64,
    stacks_next: u64,
    /// Frames the kernel's run-time mappings hold (heap, stacks, MMIO above 4 GiB), their
    /// page tables included. They stay mapped for good.
    mapped: usize,
}

impl Kernel {
    fn tables(&mut self) -> PageTables<Identity<'_>> {
        PageTables::from_root(self.root, Identity { frames: &mut self.frames, limit: u64::MAX })
    }

    /// Maps `pages` fresh zeroed frames at `virt` with `flags`. On failure the pages
    /// mapped so far are unmapped and their frames returned.
    pub fn map_fresh(&mut self, virt: u64, pages: u64, flags: Flags) -> Result<(), MmError> {
        let before = self.frames.free_count();
        let r = self.map_fresh_pages(virt, pages, flags);
        self.mapped += before.saturating_sub(self.frames.free_count());
        r
    }

    fn map_fresh_pages(&mut self, virt: u64, pages: u64, flags: Flags) -> Result<(), MmError> {
        for k in 0..pages {
            let v = virt + k * PAGE_SIZE;
            let r = self.frames.alloc().map_err(MmError::Frames).and_then(|f| {
                // SAFETY: the frame was just allocated, so nothing else uses it, and
                // all RAM is identity-mapped read-write once `init` has switched tables.
                unsafe { core::ptr::write_bytes(f as *mut u8, 0, PAGE_SIZE as usize) };
                self.tables().map(v, f, PageSize::Size4K, flags).map_err(|e| {
                    let _ = self.frames.free(f);
                    MmError::Map(e)
                })
            });
            if let Err(e) = r {
                for j in 0..k {
                    let u = virt + j * PAGE_SIZE;
                    if let Ok(f) = self.tables().unmap(u, PageSize::Size4K) {
                        x86_64::instructions::tlb::flush(VirtAddr::new_truncate(u));
                        let _ = self.frames.free(f);
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);
/// The identity-map plan, kept out of the 64 KiB boot stack.
static PLAN: Mutex<layout::Plan> = Mutex::new(layout::Plan::new());
static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);
static NX: AtomicBool = AtomicBool::new(false);

/// `NO_EXECUTE` when the CPU has it (and EFER.NXE is on), else nothing.
pub fn nx() -> Flags {
    if NX.load(Ordering::Relaxed) {
        Flags::NO_EXECUTE
    } else {
        Flags::empty()
    }
}

/// Runs `f` on the kernel's memory state with interrupts off; `None` before `init`.
pub fn with<R>(f: impl FnOnce(&mut Kernel) -> R) -> Option<R> {
    without_interrupts(|| KERNEL.lock().as_mut().map(f))
}

/// What [`init_tables`] reports.
pub struct Built {
    /// Bytes of usable RAM.
    pub usable_bytes: u64,
    /// Bytes the kernel image covers.
    pub image_bytes: u64,
}

/// The CPU's no-execute (CPUID.80000001h:EDX[20]) and 1 GiB page (EDX[26]) support.
fn cpu_paging_features() -> (bool, bool) {
    if crate::arch::cpu::cpuid(0x8000_0000, 0).eax < 0x8000_0001 {
        return (false, false);
    }
    let edx = crate::arch::cpu::cpuid(0x8000_0001, 0).edx;
    (edx & (1 << 20) != 0, edx & (1 << 26) != 0)
}

/// Builds the frame allocator and the kernel's page tables and switches to them.
pub fn init_tables(boot: &BootInfo) -> Result<Built, MmError> {
    let img = image();
    let usable: heapless::Vec<Range<u64>, { boot::memmap::MAX_REGIONS }> =
        boot.usable().map(|r| r.start..r.end).collect();
    let mut reserved: heapless::Vec<Range<u64>, 32> = heapless::Vec::new();
    let reserve = |list: &mut heapless::Vec<Range<u64>, 32>, r: Range<u64>| {
        list.push(r).map_err(|_| MmError::TooManyReserved)
    };
    reserve(&mut reserved, 0..LOW_RESERVED)?;
    reserve(&mut reserved, img.image.0..img.image.1)?;
    for m in &boot.modules {
        reserve(&mut reserved, m.start..m.end)?;
    }
    for &(s, e) in &boot.boot_data {
        reserve(&mut reserved, s..e)?;
    }

    // The bitmap must sit below 4 GiB (the boot tables map nothing else). If the whole
    // span needs more than fits there, the top of memory is left out.
    let mut span = frames::span(&usable, LOW_RESERVED).ok_or(MmError::NoUsableMemory)?;
    let (home, words) = loop {
        let words = FrameAllocator::storage_words((span.end - span.start) / PAGE_SIZE);
        let bytes = (words as u64 * 8).next_multiple_of(PAGE_SIZE);
        if let Some(at) = frames::first_fit(&usable, &reserved, bytes, PAGE_SIZE, LOW_LIMIT) {
            reserve(&mut reserved, at..at + bytes)?;
            break (at, words);
        }
        let half = (span.end - span.start) / 2 / PAGE_SIZE * PAGE_SIZE;
        if half == 0 {
            return Err(MmError::NoRoomForBitmap);
        }
        log::warn!("no room for the frame bitmap; ignoring RAM above {:#x}", span.start + half);
        span.end = span.start + half;
    };
    // SAFETY: `home..home + words * 8` is usable RAM below 4 GiB (identity-mapped by the
    // boot tables and later by the kernel's), reserved above so the allocator never hands
    // it out, and this is its only reference for the rest of the run.
    let storage: &'static mut [u64] = unsafe { core::slice::from_raw_parts_mut(home as *mut u64, words) };
    let mut fa = FrameAllocator::new(storage, span, &usable, &reserved).map_err(MmError::Frames)?;

    let (nx, huge_1g) = cpu_paging_features();
    let mut plan = PLAN.lock();
    layout::plan(&mut plan, &boot.memory_map, &img, nx).map_err(MmError::Layout)?;
    let largest = if huge_1g { PageSize::Size1G } else { PageSize::Size2M };
    let mut tables = PageTables::new(Identity { frames: &mut fa, limit: LOW_LIMIT }).map_err(MmError::Map)?;
    for (r, flags) in layout::mapped(&plan) {
        tables.map_range(r.start, r.start, r.end - r.start, flags, largest).map_err(MmError::Map)?;
    }
    let root = tables.root();

    // SAFETY: 1. NXE only makes the NX bit meaningful; the current tables are identity
    // maps without it where the CPU lacks NX (it is then not set). 2. WP makes the kernel
    // honour read-only pages: nothing writes to text or rodata. 3. The new tables map the
    // running code (text, executable), the current stack (boot stack in .bss, writable),
    // all data and every RAM range the kernel holds a reference into, at the same
    // addresses as the boot tables, so execution continues unchanged.
    unsafe {
        if nx {
            Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE));
        }
        Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT));
        Cr3::write(PhysFrame::containing_address(PhysAddr::new_truncate(root)), Cr3Flags::empty());
    }
    KERNEL_CR3.store(root, Ordering::Release);
    NX.store(nx, Ordering::Relaxed);
    *KERNEL.lock() = Some(Kernel { frames: fa, root, stacks_next: STACKS_START, mapped: 0 });
    Ok(Built { usable_bytes: boot.usable_bytes(), image_bytes: img.image.1 - img.image.0 })
}

/// The PML4's physical address, for CR3: below 4 GiB so 32-bit start-up code can load
/// it; 0 before `init`. A CPU loading it must first set CR4.PAE and, when CPUID reports
/// NX, EFER.NXE (the tables use the NX bit, which is reserved otherwise). Kernel stacks
/// from `alloc_stack` live in the higher half, reachable only once this CR3 is loaded.
pub fn kernel_cr3() -> u64 {
    KERNEL_CR3.load(Ordering::Acquire)
}

/// Translates through the kernel's tables.
pub fn translate(virt: u64) -> Result<Translation, MmError> {
    with(|k| k.tables().translate(virt).map_err(MmError::Map)).unwrap_or(Err(MmError::NotInitialized))
}

/// One past the highest RAM address the frame allocator manages.
pub fn ram_top() -> Option<u64> {
    with(|k| k.frames.covered().end)
}

/// Free frames (0 before `init`).
pub fn free_frames() -> usize {
    with(|k| k.frames.free_count()).unwrap_or(0)
}

/// Free frames and the frames the kernel's run-time mappings hold (its heap, which grows
/// and never shrinks, stacks and MMIO mappings, with their page tables), read together so
/// that a frame the heap takes meanwhile is counted once. Their sum changes only when a
/// frame is taken or returned by anyone else (VMs, DMA, the backends).
pub fn frame_census() -> (usize, usize) {
    with(|k| (k.frames.free_count(), k.mapped)).unwrap_or((0, 0))
}

/// Takes one frame.
pub fn alloc_frame() -> Result<u64, MmError> {
    with(|k| k.frames.alloc().map_err(MmError::Frames)).unwrap_or(Err(MmError::NotInitialized))
}

/// Takes one frame and zeroes it.
pub fn alloc_zeroed_frame() -> Result<u64, MmError> {
    let f = alloc_frame()?;
    // SAFETY: the frame was just taken from the allocator, so nothing else uses it, and
    // all RAM is identity-mapped read-write.
    unsafe { core::ptr::write_bytes(f as *mut u8, 0, PAGE_SIZE as usize) };
    Ok(f)
}

/// Takes `count` contiguous frames starting at a multiple of `align_bytes`.
pub fn alloc_run(count: usize, align_bytes: u64) -> Result<u64, MmError> {
    with(|k| k.frames.alloc_run(count, align_bytes, u64::MAX).map_err(MmError::Frames))
        .unwrap_or(Err(MmError::NotInitialized))
}

/// Returns one frame.
pub fn free_frame(paddr: u64) -> Result<(), MmError> {
    with(|k| k.frames.free(paddr).map_err(MmError::Frames)).unwrap_or(Err(MmError::NotInitialized))
}

/// Returns `count` contiguous frames from `paddr` on.
pub fn free_run(paddr: u64, count: usize) -> Result<(), MmError> {
    with(|k| k.frames.free_run(paddr, count).map_err(MmError::Frames)).unwrap_or(Err(MmError::NotInitialized))
}

/// Allocates a stack in the stack region: one unmapped guard page, then `size_pages`
/// zeroed read-write no-execute pages.
pub fn alloc_stack(size_pages: usize) -> Result<Stack, MmError> {
    let pages = size_pages as u64;
    if pages == 0 || pages >= STACKS_MAX_BYTES / PAGE_SIZE {
        return Err(MmError::BadSize);
    }
    with(|k| {
        let guard = k.stacks_next;
        let end = guard + (pages + 1) * PAGE_SIZE;
        if end > STACKS_START + STACKS_MAX_BYTES {
            return Err(MmError::RegionFull);
        }
        if k.frames.free_count() < size_pages {
            return Err(MmError::Frames(frames::FrameError::OutOfFrames));
        }
        k.map_fresh(guard + PAGE_SIZE, pages, Flags::WRITABLE | nx())?;
        k.stacks_next = end;
        Ok(Stack { bottom: guard + PAGE_SIZE, top: end })
    })
    .unwrap_or(Err(MmError::NotInitialized))
}

/// Maps the physical range `[paddr, paddr + len)` at the same virtual addresses,
/// uncached, read-write, no-execute. Below 4 GiB everything but page 0 is mapped already;
/// pages above that are mapped already are left as they are.
pub fn map_mmio(paddr: u64, len: u64) -> Result<(), MmError> {
    if len == 0 {
        return Ok(());
    }
    let end = paddr.checked_add(len).ok_or(MmError::RangeOverflow { paddr, len })?;
    if paddr < PAGE_SIZE {
        return Err(MmError::NullPage);
    }
    let start = paddr.max(LOW_LIMIT) / PAGE_SIZE * PAGE_SIZE;
    let end = end.checked_next_multiple_of(PAGE_SIZE).ok_or(MmError::RangeOverflow { paddr, len })?;
    if start >= end {
        return Ok(());
    }
    let flags = Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH | nx();
    with(|k| {
        let before = k.frames.free_count();
        let r = map_mmio_locked(k, start, end, flags);
        k.mapped += before.saturating_sub(k.frames.free_count());
        r
    })
    .unwrap_or(Err(MmError::NotInitialized))
}

/// [`map_mmio`]'s work under the lock: `[start, end)`, page-aligned.
fn map_mmio_locked(k: &mut Kernel, start: u64, end: u64, flags: Flags) -> Result<(), MmError> {
    let mut a = start;
    while a < end {
        let big = PageSize::Size2M.bytes();
        if a.is_multiple_of(big) && end - a >= big {
            match k.tables().map(a, a, PageSize::Size2M, flags) {
                Ok(()) => {
                    a += big;
                    continue;
                }
                Err(MapError::AlreadyMapped(_) | MapError::Misaligned(_)) => {}
                Err(e) => return Err(MmError::Map(e)),
            }
        }
        match k.tables().map(a, a, PageSize::Size4K, flags) {
            Ok(()) | Err(MapError::AlreadyMapped(_)) => a += PAGE_SIZE,
            Err(e) => return Err(MmError::Map(e)),
        }
    }
    Ok(())
}
