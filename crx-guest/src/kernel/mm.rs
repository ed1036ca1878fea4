//! Physical memory and page tables.
//!
//! After boot the kernel reaches every guest-physical byte at `PHYS_OFFSET + pa` (the
//! direct map, PML4 entry 256, shared by every address space). Its image stays mapped at its
//! link address 1 MiB through page tables shared by every address space, as supervisor
//! pages, so user mappings start at 4 MiB ([`IMAGE_LIMIT`]). The layer window is mapped read-only in the
//! direct map when the pod starts.
//!
//! Raw access to frames, and loading CR3, go through [`super::phys`]; this module decides
//! what the tables contain.

#![deny(unsafe_code)]

use crx_guest::frames::{FramePool, FRAME};

use super::phys::{self, copy_frame, read_u64, write_u64, zero_frame, PHYS_OFFSET};
use super::smp;

/// The kernel image must end below this address; user mappings start here.
pub const IMAGE_LIMIT: u64 = crx_guest::elf::USER_MIN;

/// Present.
pub const P: u64 = 1;
/// Writable.
pub const W: u64 = 2;
/// User-accessible.
pub const U: u64 = 4;
const PS: u64 = 0x80;
/// No-execute.
pub const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Frames ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oom;

/// Allocates a zeroed frame.
pub fn alloc_zeroed(pool: &mut FramePool) -> Result<u64, Oom> {
    let pa = pool.alloc().map_err(|_| Oom)?;
    zero_frame(pa);
    Ok(pa)
}

fn idx(va: u64, level: u32) -> u64 {
    (va >> (12 + 9 * level)) & 0x1ff
}

/// Physical address of the PTE for `va` (level 0), creating tables when `pool` is given.
fn walk(root: u64, va: u64, mut pool: Option<&mut FramePool>, table_flags: u64) -> Result<Option<u64>, Oom> {
    let mut table = root;
    for level in (1..4).rev() {
        let slot = table + idx(va, level) * 8;
        let e = read_u64(slot);
        if e & P == 0 {
            let Some(p) = pool.as_deref_mut() else { return Ok(None) };
            let t = alloc_zeroed(p)?;
            write_u64(slot, t | table_flags);
            table = t;
        } else if e & PS != 0 {
            return Ok(None);
        } else {
            table = e & ADDR;
        }
    }
    Ok(Some(table + idx(va, 0) * 8))
}

/// The kernel's own tables, built at boot.
pub struct KernelTables {
    /// The kernel PML4 (used when no process runs, and copied into every process's).
    pub pml4: u64,
    /// The page tables mapping the image at 1 MiB (shared, supervisor-only).
    pub image_pt: [u64; 2],
}

/// Builds the kernel tables (direct map of `mem_bytes` with 2 MiB pages, the image at its
/// link address) in frames taken from `early` (a bump range inside the accessors' range),
/// for [`phys::enter_direct_map`]. Runs on the boot identity map, before the heap exists.
pub fn init_kernel_tables(
    early: &mut (u64, u64),
    mem_bytes: u64,
    image: (u64, u64),
) -> Result<KernelTables, Oom> {
    let mut take = || -> Result<u64, Oom> {
        if early.0 + FRAME > early.1 {
            return Err(Oom);
        }
        let pa = early.0;
        early.0 += FRAME;
        zero_frame(pa);
        Ok(pa)
    };
    let pml4 = take()?;
    let pdpt_hi = take()?;
    write_u64(pml4 + 256 * 8, pdpt_hi | P | W);
    let gib = mem_bytes.div_ceil(1 << 30);
    for g in 0..gib {
        let pd = take()?;
        write_u64(pdpt_hi + g * 8, pd | P | W);
        for i in 0..512u64 {
            let pa = (g << 30) | (i << 21);
            if pa < mem_bytes {
                write_u64(pd + i * 8, pa | P | W | PS | NX);
            }
        }
    }
    // The image: 4 KiB pages of [start, end) below IMAGE_LIMIT, in shared tables.
    let pdpt_lo = take()?;
    let pd_lo = take()?;
    let image_pt = [take()?, take()?];
    write_u64(pml4, pdpt_lo | P | W);
    write_u64(pdpt_lo, pd_lo | P | W);
    write_u64(pd_lo, image_pt[0] | P | W);
    write_u64(pd_lo + 8, image_pt[1] | P | W);
    // The kernel stack's guard pages stay unmapped, so an overflow faults.
    let guard = crate::kernel::arch::kernel_stack_guard();
    let mut pa = image.0 & !(FRAME - 1);
    while pa < image.1.min(IMAGE_LIMIT) {
        if !(guard.0..guard.1).contains(&pa) {
            write_u64(image_pt[(pa >> 21) as usize & 1] + ((pa >> 12) & 511) * 8, pa | P | W);
        }
        pa += FRAME;
    }
    Ok(KernelTables { pml4, image_pt })
}

/// The kernel address of guest-physical `pa` in the direct map.
pub fn direct(pa: u64) -> u64 {
    PHYS_OFFSET + pa
}

/// Maps the layer window `[base, end)` read-only into the direct map (4 KiB pages), where
/// [`phys::layer_bytes`] reads it.
pub fn map_layers(k: &KernelTables, pool: &mut FramePool, base: u64, end: u64) -> Result<(), Oom> {
    let mut gpa = base & !(FRAME - 1);
    while gpa < end {
        let va = PHYS_OFFSET + gpa;
        if let Some(pte) = walk(k.pml4, va, Some(pool), P | W)? {
            write_u64(pte, gpa | P | NX);
        }
        gpa += FRAME;
    }
    Ok(())
}

/// A user address space: a PML4 sharing the kernel's half and image table.
pub struct AddrSpace {
    /// The PML4's physical address.
    pub pml4: u64,
}

impl AddrSpace {
    /// An empty address space.
    pub fn new(k: &KernelTables, pool: &mut FramePool) -> Result<AddrSpace, Oom> {
        let pml4 = alloc_zeroed(pool)?;
        for i in 256..512 {
            write_u64(pml4 + i * 8, read_u64(k.pml4 + i * 8));
        }
        let a = AddrSpace { pml4 };
        let pdpt = match alloc_zeroed(pool) {
            Ok(x) => x,
            Err(e) => {
                a.destroy(pool);
                return Err(e);
            }
        };
        write_u64(pml4, pdpt | P | W | U);
        let pd = match alloc_zeroed(pool) {
            Ok(x) => x,
            Err(e) => {
                a.destroy(pool);
                return Err(e);
            }
        };
        write_u64(pdpt, pd | P | W | U);
        write_u64(pd, k.image_pt[0] | P | W);
        write_u64(pd + 8, k.image_pt[1] | P | W);
        Ok(a)
    }

    /// The frame and flags mapped at `va`.
    pub fn translate(&self, va: u64) -> Option<(u64, u64)> {
        if !(IMAGE_LIMIT..crx_guest::elf::USER_END).contains(&va) {
            return None;
        }
        let pte = walk(self.pml4, va, None, 0).ok().flatten()?;
        let e = read_u64(pte);
        (e & P != 0).then_some((e & ADDR, e & !ADDR))
    }

    /// Maps `va` to frame `pa` (whose reference the mapping takes over) with `flags`.
    /// A previous mapping there is released.
    pub fn map(&mut self, pool: &mut FramePool, va: u64, pa: u64, flags: u64) -> Result<(), Oom> {
        let pte = walk(self.pml4, va, Some(pool), P | W | U)?.ok_or(Oom)?;
        let old = read_u64(pte);
        write_u64(pte, pa | flags | P | U);
        if old & P != 0 {
            crate::kernel::arch::invlpg(va);
            smp::shootdown(self.pml4);
            pool.release(old & ADDR);
        }
        Ok(())
    }

    /// Changes the flags of the page at `va`, if mapped.
    pub fn set_flags(&mut self, va: u64, flags: u64) {
        if let Ok(Some(pte)) = walk(self.pml4, va, None, 0) {
            let e = read_u64(pte);
            if e & P != 0 {
                let new = (e & ADDR) | flags | P | U;
                write_u64(pte, new);
                crate::kernel::arch::invlpg(va);
                // Only a loss of rights must reach other CPUs at once; a stale entry with
                // fewer rights (a copy-on-write page made writable) is a spurious fault there.
                if (e & !new) & W != 0 || (new & !e) & NX != 0 {
                    smp::shootdown(self.pml4);
                }
            }
        }
    }

    /// Unmaps the page at `va`, releasing its frame.
    pub fn unmap(&mut self, pool: &mut FramePool, va: u64) {
        if let Ok(Some(pte)) = walk(self.pml4, va, None, 0) {
            let e = read_u64(pte);
            if e & P != 0 {
                write_u64(pte, 0);
                crate::kernel::arch::invlpg(va);
                smp::shootdown(self.pml4);
                pool.release(e & ADDR);
            }
        }
    }

    /// Moves the page mapped at `from` to `to` (`mremap`): the entry goes with its frame,
    /// its reference and its flags, nothing is copied. A mapping at `to` is released; nothing
    /// happens when `from` is not mapped. `Err` (and no change) when a page table for `to`
    /// cannot be had.
    pub fn move_page(&mut self, pool: &mut FramePool, from: u64, to: u64) -> Result<(), Oom> {
        let Ok(Some(src)) = walk(self.pml4, from, None, 0) else { return Ok(()) };
        let e = read_u64(src);
        if e & P == 0 {
            return Ok(());
        }
        let dst = walk(self.pml4, to, Some(pool), P | W | U)?.ok_or(Oom)?;
        let old = read_u64(dst);
        write_u64(dst, e);
        write_u64(src, 0);
        crate::kernel::arch::invlpg(from);
        if old & P != 0 {
            crate::kernel::arch::invlpg(to);
        }
        smp::shootdown(self.pml4);
        if old & P != 0 {
            pool.release(old & ADDR);
        }
        Ok(())
    }

    /// Every user leaf: calls `f(va, pte_pa, entry)`.
    fn for_each_leaf(&self, f: &mut dyn FnMut(u64, u64, u64)) {
        self.walk(f, &mut |_| {});
    }

    /// Walks the user half: `leaf(va, pte_pa, entry)` for every present 4 KiB leaf, and
    /// `table(pa)` for every page-table frame below the PML4 that this address space owns,
    /// after the entries in it (the first two page tables are the image's, shared).
    fn walk(&self, leaf: &mut dyn FnMut(u64, u64, u64), table: &mut dyn FnMut(u64)) {
        for i4 in 0..256u64 {
            let e4 = read_u64(self.pml4 + i4 * 8);
            if e4 & P == 0 {
                continue;
            }
            for i3 in 0..512u64 {
                let e3 = read_u64((e4 & ADDR) + i3 * 8);
                if e3 & P == 0 || e3 & PS != 0 {
                    continue;
                }
                for i2 in 0..512u64 {
                    if i4 == 0 && i3 == 0 && i2 < 2 {
                        continue; // the shared image tables
                    }
                    let e2 = read_u64((e3 & ADDR) + i2 * 8);
                    if e2 & P == 0 || e2 & PS != 0 {
                        continue;
                    }
                    for i1 in 0..512u64 {
                        let slot = (e2 & ADDR) + i1 * 8;
                        let e1 = read_u64(slot);
                        if e1 & P != 0 {
                            leaf((i4 << 39) | (i3 << 30) | (i2 << 21) | (i1 << 12), slot, e1);
                        }
                    }
                    table(e2 & ADDR);
                }
                table(e3 & ADDR);
            }
            table(e4 & ADDR);
        }
    }

    /// A copy for a fork child: writable pages are copied, read-only pages shared.
    pub fn fork(&self, k: &KernelTables, pool: &mut FramePool) -> Result<AddrSpace, Oom> {
        let mut child = AddrSpace::new(k, pool)?;
        let mut failed = false;
        let mut leaves = alloc::vec::Vec::new();
        self.for_each_leaf(&mut |va, _, e| leaves.push((va, e)));
        for (va, e) in leaves {
            let pa = e & ADDR;
            let flags = e & !ADDR;
            let target = if e & W != 0 {
                match pool.alloc() {
                    Ok(n) => {
                        copy_frame(n, pa);
                        n
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            } else {
                if !pool.share(pa) {
                    continue;
                }
                pa
            };
            if child.map(pool, va, target, flags).is_err() {
                pool.release(target);
                failed = true;
                break;
            }
        }
        if failed {
            child.destroy(pool);
            return Err(Oom);
        }
        Ok(child)
    }

    /// Releases every user page and table, and the PML4. When these tables are the loaded
    /// ones (a process exiting or exec'ing), the CPU first moves to the kernel's own tables:
    /// the freed frames are handed out again at once (and zeroed or filled), and the kernel
    /// must not keep running on them.
    ///
    /// With several CPUs, one that runs user code on these tables is made to leave user
    /// mode first, and when another CPU still has them in CR3 (it waits for the kernel
    /// lock) the frames wait in limbo until it has moved off them ([`smp::defer_free`]).
    pub fn destroy(self, pool: &mut FramePool) {
        phys::leave_address_space(self.pml4);
        smp::shootdown(self.pml4);
        let (mut pages, mut tables) = (alloc::vec::Vec::new(), alloc::vec::Vec::new());
        self.walk(&mut |_, _, e| pages.push(e & ADDR), &mut |t| tables.push(t));
        pages.extend(tables);
        pages.push(self.pml4);
        if smp::loaded_elsewhere(self.pml4) {
            return smp::defer_free(self.pml4, pages);
        }
        for f in pages {
            pool.release(f);
        }
    }
}
