//! Memory: the heap break, mappings (anonymous and of files) and their protections.
//!
//! A file mapping is a region that shows the file ([`Backing`]); its pages come in on first
//! touch through the page cache (see [`crate::kernel::pager`]). `MAP_PRIVATE` pages are
//! copied on first write. `MAP_SHARED` is taken for reading only (it then behaves as
//! `MAP_PRIVATE` never written): with `PROT_WRITE` it is `EACCES` on a descriptor not open
//! for writing, as on Linux, and `ENODEV` (not supported) on one that is. `mremap` moves
//! page-table entries ([`crate::kernel::mm::AddrSpace::move_page`]), never frames' bytes.

use crx_fs::{Errno, FileType, Ino};
use crx_guest::elf::{self, PAGE, USER_END};
use crx_guest::vma::{page_up, Backing, Region, Remap, PROT_WRITE};

use super::{Fail, Sys};
use crate::kernel::fd::Object;
use crate::kernel::mm::W;
use crate::kernel::proc::{pte_flags, Kernel, UserMem, MMAP_TOP};

pub(super) fn sys_brk(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let pid = k.current;
    let UserMem { mm: mut p, pool, .. } = k.mem(pid).ok_or(Fail::Gone)?;
    let want = a[0];
    if want < p.brk_start || want > p.brk_start + (1 << 40) {
        return Ok(p.brk);
    }
    let old_end = page_up(p.brk).unwrap_or(p.brk);
    let new_end = page_up(want).ok_or(Errno::ENOMEM)?;
    if new_end > old_end {
        if p.regions.overlaps(old_end, new_end) {
            return Ok(p.brk);
        }
        let start = p.brk_start;
        p.regions.insert(start, new_end, 1 | PROT_WRITE);
    } else if new_end < old_end {
        p.regions.remove(new_end, old_end);
        let mut at = new_end;
        while at < old_end {
            p.aspace.unmap(pool, at);
            at += PAGE;
        }
    }
    p.brk = want;
    Ok(want)
}

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const MAP_TYPE: u64 = 0x0f;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

/// Removes `[start, end)` from the running process's regions and page tables; the file
/// pages and files nothing maps any more go back.
fn unmap_range(k: &mut Kernel, start: u64, end: u64) {
    let pid = k.current;
    let Some(UserMem { mm: mut p, pool, .. }) = k.mem(pid) else { return };
    let removed = p.regions.remove(start, end);
    for r in &removed {
        let mut at = r.start;
        while at < r.end {
            p.aspace.unmap(pool, at);
            at += PAGE;
        }
    }
    drop(p);
    if removed.iter().any(|r| r.backing.is_some()) {
        drop(removed);
        k.cache.sweep(&mut k.pool, &mut k.fs);
    }
}

/// The file descriptor `fd` maps: its inode, or `None` for `/dev/zero` (anonymous).
fn mapped_file(k: &mut Kernel, fd: u64, prot: u32, shared: bool) -> Result<Option<Ino>, Fail> {
    let d = k.cur().fds.desc(fd)?;
    let b = d.borrow();
    match &b.obj {
        Object::File(f) => {
            if k.fs.file_type(f.ino)? != FileType::Regular {
                return Err(Errno::ENODEV.into());
            }
            if !f.readable() {
                return Err(Errno::EACCES.into());
            }
            if shared && prot & PROT_WRITE != 0 {
                // Writing a file through a mapping is not supported.
                return Err(if f.writable() { Errno::ENODEV } else { Errno::EACCES }.into());
            }
            Ok(Some(f.ino))
        }
        Object::Zero => Ok(None),
        // Pipes and streams cannot be mapped (`EACCES`, as Linux says for them).
        _ => Err(Errno::EACCES.into()),
    }
}

pub(super) fn sys_mmap(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (addr, len, prot, flags, fdn, off) = (a[0], a[1], a[2] as u32 & 7, a[3], a[4], a[5]);
    if len == 0 || off % PAGE != 0 {
        return Err(Errno::EINVAL.into());
    }
    let kind = flags & MAP_TYPE;
    if kind != MAP_SHARED && kind != MAP_PRIVATE && kind != MAP_SHARED_VALIDATE {
        return Err(Errno::EINVAL.into());
    }
    let shared = kind != MAP_PRIVATE;
    let len = page_up(len).filter(|&l| l < USER_END).ok_or(Errno::ENOMEM)?;
    let ino = if flags & MAP_ANONYMOUS == 0 { mapped_file(k, fdn, prot, shared)? } else { None };
    if ino.is_some() && off.checked_add(len).is_none() {
        return Err(Errno::EINVAL.into());
    }
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    let start = if fixed {
        if addr % PAGE != 0 {
            return Err(Errno::EINVAL.into());
        }
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        if addr < elf::USER_MIN || end > USER_END {
            return Err(Errno::ENOMEM.into());
        }
        if flags & MAP_FIXED_NOREPLACE != 0
            && k.mem(k.current).ok_or(Fail::Gone)?.mm.regions.overlaps(addr, end)
        {
            return Err(Errno::EEXIST.into());
        }
        addr
    } else {
        // A free, aligned hint below the mmap area's top is taken, as Linux does.
        let m = k.mem(k.current).ok_or(Fail::Gone)?;
        let hint = addr.checked_add(len).filter(|&end| {
            addr % PAGE == 0 && addr >= elf::USER_MIN && end <= MMAP_TOP && !m.mm.regions.overlaps(addr, end)
        });
        match hint {
            Some(_) => addr,
            None => m.mm.regions.find_free(len, MMAP_TOP).ok_or(Errno::ENOMEM)?,
        }
    };
    let backing = match ino {
        Some(ino) => Some(Backing { file: k.cache.file(&mut k.fs, ino)?, offset: off, shared }),
        None => None,
    };
    if fixed {
        unmap_range(k, start, start + len);
    }
    k.mem(k.current).ok_or(Fail::Gone)?.mm.regions.insert_region(Region {
        start,
        end: start + len,
        prot,
        backing,
    });
    Ok(start)
}

pub(super) fn sys_munmap(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if !a[0].is_multiple_of(PAGE) || a[1] == 0 {
        return Err(Errno::EINVAL.into());
    }
    let end = page_up(a[0].saturating_add(a[1])).ok_or(Errno::EINVAL)?;
    unmap_range(k, a[0], end.min(USER_END));
    Ok(0)
}

/// `mremap(addr, old_len, new_len, flags, new_address)`, as Linux: a shrink unmaps the
/// tail; a growth stays in place when the old range ends its mapping and the space after it
/// is free, else `MREMAP_MAYMOVE` moves the mapping to a free range and `MREMAP_FIXED` to
/// `new_address` (whatever was there is unmapped first). A move carries the page-table
/// entries over, frames and all (nothing is copied; a file page not yet written stays the
/// page cache's), the grown part fills on first touch (zeros, or the file's next pages),
/// and the old range is unmapped. Anonymous and file mappings alike; an old length of 0
/// duplicates a shared (read-only) file mapping. `MREMAP_DONTUNMAP` is `EINVAL`. Errors as
/// in [`Remap`] and [`crx_guest::vma::Regions::check_resize`]; `ENOMEM` when it cannot
/// grow in place without `MREMAP_MAYMOVE`, or there is no room.
pub(super) fn sys_mremap(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let mut r = Remap::new(a[0], a[1], a[2], a[3], a[4])?;
    let pid = k.current;
    if k.mem(pid).ok_or(Fail::Gone)?.mm.regions.find(r.addr).is_none() {
        return Err(Errno::EFAULT.into());
    }
    if let Some(to) = r.fixed {
        r.check_target(to)?;
        unmap_range(k, to, to + r.new_len);
        if r.old_len > r.new_len {
            unmap_tail(k, &r)?;
            r.old_len = r.new_len;
        }
        k.mem(pid).ok_or(Fail::Gone)?.mm.regions.check_resize(r.addr, r.old_len, r.new_len)?;
        return move_mapping(k, &r, to);
    }
    if r.old_len >= r.new_len {
        // Always allowed: the tail goes, whatever it holds.
        if r.old_len > r.new_len {
            unmap_tail(k, &r)?;
        }
        return Ok(r.addr);
    }
    let mut m = k.mem(pid).ok_or(Fail::Gone)?;
    let regions = &mut m.mm.regions;
    regions.check_resize(r.addr, r.old_len, r.new_len)?;
    if regions.grows_in_place(r.addr, r.old_len, r.new_len) {
        let old_end = r.addr + r.old_len;
        let last = regions.find(old_end - PAGE).ok_or(Errno::EFAULT)?;
        let grown = last.shown_at(old_end, old_end, r.new_len - r.old_len);
        regions.insert_region(grown);
        return Ok(r.addr);
    }
    if !r.may_move {
        return Err(Errno::ENOMEM.into());
    }
    let to = regions.find_free(r.new_len, MMAP_TOP).ok_or(Errno::ENOMEM)?;
    drop(m);
    move_mapping(k, &r, to)
}

/// A shrinking `mremap`'s unmap of `[addr + new_len, addr + old_len)`, checked as Linux's
/// `munmap` checks it: `EINVAL` when it runs past the top of user space.
fn unmap_tail(k: &mut Kernel, r: &Remap) -> Result<(), Fail> {
    let start = r.addr.saturating_add(r.new_len);
    let len = r.old_len - r.new_len;
    if start > USER_END || len > USER_END - start {
        return Err(Errno::EINVAL.into());
    }
    unmap_range(k, start, start + len);
    Ok(())
}

/// Moves the mapping at `[r.addr, r.addr + r.old_len)` (checked) to the free range
/// `[to, to + r.new_len)`: its page-table entries move, the region is made there, and the
/// old range is unmapped. `ENOMEM` (and nothing moved) when page tables for the new range
/// cannot be had.
fn move_mapping(k: &mut Kernel, r: &Remap, to: u64) -> Sys {
    let pid = k.current;
    let UserMem { mm: mut p, pool, cache, .. } = k.mem(pid).ok_or(Fail::Gone)?;
    let region = p.regions.find(r.addr).ok_or(Errno::EFAULT)?.shown_at(r.addr, to, r.new_len);
    let pages = r.old_len / PAGE;
    for i in 0..pages {
        let (from, dest) = (r.addr + i * PAGE, to + i * PAGE);
        let moved = p.aspace.move_page(pool, from, dest).is_ok()
            || (cache.sweep_pages(pool) > 0 && p.aspace.move_page(pool, from, dest).is_ok());
        if !moved {
            // Back where they were: their page tables are still there, so this cannot fail.
            for j in 0..i {
                let _ = p.aspace.move_page(pool, to + j * PAGE, r.addr + j * PAGE);
            }
            return Err(Errno::ENOMEM.into());
        }
    }
    p.regions.insert_region(region);
    drop(p);
    unmap_range(k, r.addr, r.addr + r.old_len);
    Ok(to)
}

pub(super) fn sys_mprotect(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL.into());
    }
    let end = page_up(a[0].saturating_add(a[1])).ok_or(Errno::ENOMEM)?;
    let prot = a[2] as u32 & 7;
    let pid = k.current;
    let UserMem { mm: mut p, pool, cache, .. } = k.mem(pid).ok_or(Fail::Gone)?;
    if prot & PROT_WRITE != 0
        && p.regions.within(a[0], end).any(|r| r.backing.as_ref().is_some_and(|b| b.shared))
    {
        // A shared file mapping stays read-only (see the module documentation).
        return Err(Errno::EACCES.into());
    }
    if !p.regions.protect(a[0], end, prot) {
        return Err(Errno::ENOMEM.into());
    }
    let asp = &mut p.aspace;
    let mut at = a[0];
    while at < end {
        if let Some((pa, _)) = asp.translate(at) {
            if prot == 0 {
                asp.unmap(pool, at);
            } else {
                // A frame shared with the page cache or a fork relative stays read-only
                // until written, and is then copied (`UserMem::fault_in`).
                let mut flags = pte_flags(prot);
                if pool.refs(pa) != 1 {
                    flags &= !W;
                }
                asp.set_flags(at, flags);
            }
        }
        at += PAGE;
    }
    if prot == 0 {
        cache.sweep_pages(pool);
    }
    Ok(0)
}

const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;
const MADV_REMOVE: u64 = 9;

/// `madvise(addr, len, advice)`: `MADV_DONTNEED` and `MADV_FREE` give the pages of a
/// private range back to the pool at once (touched again, an anonymous page reads as zero
/// and a file page as the file); the other advice is accepted and changes nothing. A range that is not all
/// mapped is `ENOMEM`, an unknown advice `EINVAL`.
pub(super) fn sys_madvise(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (start, len, advice) = (a[0], a[1], a[2]);
    if !start.is_multiple_of(PAGE) || advice > 100 {
        return Err(Errno::EINVAL.into());
    }
    let end = page_up(start.saturating_add(len)).ok_or(Errno::EINVAL)?;
    if end > USER_END {
        return Err(Errno::ENOMEM.into());
    }
    if !matches!(advice, MADV_DONTNEED | MADV_FREE | MADV_REMOVE) {
        return Ok(0);
    }
    let pid = k.current;
    let UserMem { mm: mut p, pool, cache, .. } = k.mem(pid).ok_or(Fail::Gone)?;
    let mut at = start;
    while at < end {
        if p.regions.find(at).is_none() {
            return Err(Errno::ENOMEM.into());
        }
        at += PAGE;
    }
    let mut at = start;
    while at < end {
        p.aspace.unmap(pool, at);
        at += PAGE;
    }
    cache.sweep_pages(pool);
    Ok(0)
}
