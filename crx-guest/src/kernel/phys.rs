//! Physical memory through the direct map: the only code that dereferences guest-physical
//! addresses, and the only code that loads CR3.
//!
//! At boot the frames are reached through the boot identity map; once the kernel's own
//! tables are loaded ([`enter_direct_map`]) they are reached at `PHYS_OFFSET + pa`. The
//! accessors accept only frames of the pool range declared at boot (page tables and user
//! pages, never the kernel image or the heap); [`layer_bytes`] reads the layer window, and
//! only where the kernel's tables map it read-only. Page-table policy (what is mapped where)
//! is in [`super::mm`].

use core::sync::atomic::{AtomicU64, Ordering};

use crx_guest::frames::FRAME;

use super::arch;

pub use super::PHYS_OFFSET;

const P: u64 = 1;
const W: u64 = 2;
const PS: u64 = 0x80;
const ADDR: u64 = 0x000f_ffff_ffff_f000;
/// The accessed and dirty bits, which the CPU sets as it uses an entry.
const USED: u64 = 0x60;

/// The range [start, end) of pool frames the accessors accept; the direct-map base.
static POOL_START: AtomicU64 = AtomicU64::new(0);
static POOL_END: AtomicU64 = AtomicU64::new(0);
static PHYS_BASE: AtomicU64 = AtomicU64::new(0);
/// The kernel's own PML4 (image and direct map only), 0 until [`enter_direct_map`].
static KERNEL_PML4: AtomicU64 = AtomicU64::new(0);

fn in_pool(pa: u64, len: u64) -> bool {
    pa >= POOL_START.load(Ordering::Relaxed)
        && pa.checked_add(len).is_some_and(|e| e <= POOL_END.load(Ordering::Relaxed))
}

fn ptr(pa: u64) -> *mut u8 {
    (PHYS_BASE.load(Ordering::Relaxed).wrapping_add(pa)) as *mut u8
}

/// Declares the pool range for the accessors.
///
/// # Safety
///
/// `[start, end)` must be guest RAM that no Rust object, the heap or the kernel image
/// occupies, reachable through the boot identity map now and through the direct map of the
/// tables later given to [`enter_direct_map`]. Call once at boot, before any accessor.
pub unsafe fn set_pool_range(start: u64, end: u64) {
    POOL_START.store(start, Ordering::Relaxed);
    POOL_END.store(end, Ordering::Relaxed);
}

/// Reads a u64 of a pool frame (0 outside the pool).
pub fn read_u64(pa: u64) -> u64 {
    if !in_pool(pa, 8) || !pa.is_multiple_of(8) {
        return 0;
    }
    // SAFETY: pool frames are mapped (identity at boot, direct map later) and never
    // referenced by Rust objects (`set_pool_range`); the address is 8-aligned.
    unsafe { core::ptr::read_volatile(ptr(pa) as *const u64) }
}

/// Writes a u64 of a pool frame (ignored outside the pool).
pub fn write_u64(pa: u64, v: u64) {
    if !in_pool(pa, 8) || !pa.is_multiple_of(8) {
        return;
    }
    // SAFETY: as in `read_u64`.
    unsafe { core::ptr::write_volatile(ptr(pa) as *mut u64, v) }
}

/// Copies bytes out of pool memory (zeros when the range leaves the pool).
pub fn read(pa: u64, out: &mut [u8]) {
    if !in_pool(pa, out.len() as u64) {
        out.fill(0);
        return;
    }
    // SAFETY: the range lies in the pool (checked), which is mapped and which no Rust
    // object, `out` included, aliases.
    unsafe { core::ptr::copy_nonoverlapping(ptr(pa), out.as_mut_ptr(), out.len()) }
}

/// Copies bytes into pool memory (ignored when the range leaves the pool).
pub fn write(pa: u64, data: &[u8]) {
    if !in_pool(pa, data.len() as u64) {
        return;
    }
    // SAFETY: as in `read`.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), ptr(pa), data.len()) }
}

/// Fills a pool frame with zeros.
pub fn zero_frame(pa: u64) {
    if !in_pool(pa, FRAME) {
        return;
    }
    // SAFETY: a whole frame inside the pool (checked), mapped and aliased by no Rust object.
    unsafe { core::ptr::write_bytes(ptr(pa), 0, FRAME as usize) }
}

/// Copies one pool frame to another.
pub fn copy_frame(dst: u64, src: u64) {
    if !in_pool(dst, FRAME) || !in_pool(src, FRAME) || dst == src {
        return;
    }
    // SAFETY: two pool frames (checked); frame addresses come from the pool's frame-aligned
    // range, so distinct ones do not overlap; no Rust object aliases them.
    unsafe { core::ptr::copy_nonoverlapping(ptr(src), ptr(dst), FRAME as usize) }
}

/// The kernel tables' 4 KiB leaf entry for virtual address `va`, if there is one.
fn kernel_leaf(va: u64) -> Option<u64> {
    let mut table = KERNEL_PML4.load(Ordering::Relaxed);
    if table == 0 {
        return None;
    }
    for level in (1..4).rev() {
        let e = read_u64(table + ((va >> (12 + 9 * level)) & 0x1ff) * 8);
        if e & P == 0 || e & PS != 0 {
            return None;
        }
        table = e & ADDR;
    }
    Some(read_u64(table + ((va >> 12) & 0x1ff) * 8))
}

/// The layer window's bytes `[gpa, gpa + len)` as a slice: `None` unless every page of the
/// range lies in the window and the kernel's tables map it read-only in the direct map.
pub fn layer_bytes(gpa: u64, len: u64) -> Option<&'static [u8]> {
    let end = gpa.checked_add(len)?;
    if gpa < crx_guest::podabi::LAYERS_BASE
        || end > crx_guest::podabi::LAYERS_BASE + crx_guest::podabi::LAYERS_SIZE
    {
        return None;
    }
    let mut page = gpa & !(FRAME - 1);
    while page < end {
        let e = kernel_leaf(PHYS_OFFSET + page)?;
        if e & P == 0 || e & W != 0 || e & ADDR != page {
            return None;
        }
        page += FRAME;
    }
    let len = usize::try_from(len).ok()?;
    // SAFETY: every page of [gpa, end) is mapped read-only at `PHYS_OFFSET + page` (checked
    // above) in the kernel half that every address space shares; the layer window lies
    // above guest RAM (outside the pool and every Rust object), the kernel never unmaps or
    // remaps it, and the hypervisor never changes it, so the bytes stay valid and unchanged
    // for the rest of the VM's life.
    Some(unsafe { core::slice::from_raw_parts(ptr(gpa), len) })
}

/// Loads the kernel's own tables and moves the accessors from the boot identity map to the
/// direct map.
///
/// # Safety
///
/// `pml4` must be the root of tables built in pool frames that map the kernel image (its
/// code, statics and stack) at its load address as the boot identity map does, and all
/// guest RAM, the pool included, writable at `PHYS_OFFSET + pa`; they must never be freed.
/// Call once at boot.
pub unsafe fn enter_direct_map(pml4: u64) {
    // SAFETY: the caller guarantees the tables keep the kernel mapped as before, so
    // execution and the stack carry on; frame accesses move to the direct map right after.
    unsafe { arch::load_cr3(pml4) };
    super::smp::note_cr3(pml4);
    KERNEL_PML4.store(pml4, Ordering::Relaxed);
    PHYS_BASE.store(PHYS_OFFSET, Ordering::Relaxed);
}

/// The entries of PD 0 (the image's page tables) under PML4 `pml4`.
fn image_tables(pml4: u64) -> Option<[u64; 2]> {
    let e4 = read_u64(pml4);
    if e4 & P == 0 || e4 & PS != 0 {
        return None;
    }
    let e3 = read_u64(e4 & ADDR);
    if e3 & P == 0 || e3 & PS != 0 {
        return None;
    }
    let pd = e3 & ADDR;
    Some([read_u64(pd) & !USED, read_u64(pd + 8) & !USED])
}

/// Whether `pml4` maps the kernel as its own tables do: the same kernel half (entries
/// 256-511: the direct map) and the same page tables for the image, whatever the accessed
/// and dirty bits say.
fn maps_kernel(pml4: u64) -> bool {
    let k = KERNEL_PML4.load(Ordering::Relaxed);
    if k == 0 || !pml4.is_multiple_of(FRAME) || !in_pool(pml4, FRAME) {
        return false;
    }
    if pml4 == k {
        return true;
    }
    let same_half = (256..512u64).all(|i| (read_u64(pml4 + i * 8) ^ read_u64(k + i * 8)) & !USED == 0);
    same_half && image_tables(pml4).is_some_and(|t| Some(t) == image_tables(k) && t[0] & P != 0)
}

/// Switches to the address space rooted at `pml4` (reloading CR3 also when it is loaded).
///
/// Refuses (a kernel panic) tables that do not map the kernel as its own do. Contract of
/// the caller, which this cannot check: the tables' frames are not freed or reused while
/// they are loaded; `mm::AddrSpace::destroy` moves off them with [`leave_address_space`]
/// before freeing them.
pub fn switch_address_space(pml4: u64) {
    assert!(maps_kernel(pml4), "refusing to load page tables {pml4:#x} that do not map the kernel");
    // SAFETY: the tables map the kernel image, stack and direct map exactly as the kernel's
    // own tables do (checked), so execution and every kernel reference carry on; the caller
    // keeps the frames alive while they are loaded.
    unsafe { arch::load_cr3(pml4) };
    super::smp::note_cr3(pml4);
}

/// Moves the CPU to the kernel's own tables if the ones rooted at `pml4` are loaded, so
/// their frames can be freed.
pub fn leave_address_space(pml4: u64) {
    let k = KERNEL_PML4.load(Ordering::Relaxed);
    if k != 0 && arch::cr3() & ADDR == pml4 {
        to_kernel_tables(k);
    }
}

/// Moves the CPU to the kernel's own tables (an idle CPU keeps no process's tables loaded,
/// so they can be freed while it sleeps).
pub fn leave_to_kernel_tables() {
    let k = KERNEL_PML4.load(Ordering::Relaxed);
    if k != 0 && arch::cr3() & ADDR != k {
        to_kernel_tables(k);
    }
}

fn to_kernel_tables(k: u64) {
    // SAFETY: the kernel's own tables, given to `enter_direct_map` at boot, map the kernel
    // as every address space does and are never freed.
    unsafe { arch::load_cr3(k) };
    super::smp::note_cr3(k);
}
