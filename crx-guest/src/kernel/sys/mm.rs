//! Memory: the heap break, mappings and their protections.

use crx_fs::Errno;
use crx_guest::elf::{self, PAGE, USER_END};
use crx_guest::vma::{page_up, PROT_WRITE};

use super::{fault, Fail, Sys};
use crate::kernel::fd::Object;
use crate::kernel::mm;
use crate::kernel::phys;
use crate::kernel::proc::{pte_flags, Kernel, MemFault, UserMem, MMAP_TOP};

pub(super) fn sys_brk(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let pid = k.current;
    let UserMem { mm: mut p, pool } = k.mem(pid).ok_or(Fail::Gone)?;
    let want = a[0];
    if want < p.brk_start || want > p.brk_start + (1 << 40) {
        return Ok(p.brk);
    }
    let old_end = page_up(p.brk).unwrap_or(p.brk);
    let new_end = page_up(want).ok_or(Errno::ENOMEM)?;
    if new_end > old_end {
        let mut at = old_end;
        while at < new_end {
            if p.regions.find(at).is_some() {
                return Ok(p.brk);
            }
            at += PAGE;
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

const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

fn unmap_range(k: &mut Kernel, start: u64, end: u64) {
    let pid = k.current;
    let Some(UserMem { mm: mut p, pool }) = k.mem(pid) else { return };
    let removed = p.regions.remove(start, end);
    for r in removed {
        let mut at = r.start;
        while at < r.end {
            p.aspace.unmap(pool, at);
            at += PAGE;
        }
    }
}

pub(super) fn sys_mmap(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (addr, len, prot, flags, fdn, off) = (a[0], a[1], a[2] as u32 & 7, a[3], a[4], a[5]);
    if len == 0 || addr % PAGE != 0 || off % PAGE != 0 {
        return Err(Errno::EINVAL.into());
    }
    let len = page_up(len).filter(|&l| l < USER_END).ok_or(Errno::ENOMEM)?;
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        if addr < elf::USER_MIN || end > USER_END {
            return Err(Errno::ENOMEM.into());
        }
        if flags & MAP_FIXED_NOREPLACE != 0 && flags & MAP_FIXED == 0 {
            let m = k.mem(k.current).ok_or(Fail::Gone)?;
            let mut at = addr;
            while at < end {
                if m.mm.regions.find(at).is_some() {
                    return Err(Errno::EEXIST.into());
                }
                at += PAGE;
            }
        }
        unmap_range(k, addr, end);
        addr
    } else {
        k.mem(k.current).ok_or(Fail::Gone)?.mm.regions.find_free(len, MMAP_TOP).ok_or(Errno::ENOMEM)?
    };
    let file = if flags & MAP_ANONYMOUS == 0 {
        let d = k.cur().fds.desc(fdn)?;
        let b = d.borrow();
        match &b.obj {
            Object::File(f) => Some(f.ino),
            Object::Zero => None,
            // Pipes and streams cannot be mapped (`EACCES`, as Linux says for them).
            _ => return Err(Errno::EACCES.into()),
        }
    } else {
        None
    };
    k.mem(k.current).ok_or(Fail::Gone)?.mm.regions.insert(start, start + len, prot);
    if let Some(ino) = file {
        // A private file mapping: the file's bytes are copied into fresh pages now.
        let mut at = 0u64;
        let mut page = alloc::vec![0u8; PAGE as usize];
        while at < len {
            page.fill(0);
            let n = k.fs.read(ino, off + at, &mut page).unwrap_or(0);
            if n == 0 && off + at > 0 {
                // Past the end of the file: the pages stay untouched (zero on demand).
                if k.fs.stat(ino).map(|s| off + at >= s.size).unwrap_or(true) {
                    break;
                }
            }
            let pa = match mm::alloc_zeroed(&mut k.pool) {
                Ok(pa) => pa,
                Err(_) => return Err(fault(k, MemFault::Oom)),
            };
            phys::write(pa, &page);
            let pid = k.current;
            let mut m = k.mem(pid).ok_or(Fail::Gone)?;
            let mapped = m.mm.aspace.map(m.pool, start + at, pa, pte_flags(prot));
            drop(m);
            if mapped.is_err() {
                return Err(fault(k, MemFault::Oom));
            }
            at += PAGE;
        }
    }
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

pub(super) fn sys_mremap(_: &mut Kernel, _: [u64; 6]) -> Sys {
    // Callers (malloc's realloc) fall back to allocate-copy-free.
    Err(Errno::ENOMEM.into())
}

pub(super) fn sys_mprotect(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL.into());
    }
    let end = page_up(a[0].saturating_add(a[1])).ok_or(Errno::ENOMEM)?;
    let prot = a[2] as u32 & 7;
    let pid = k.current;
    let UserMem { mm: mut p, pool } = k.mem(pid).ok_or(Fail::Gone)?;
    if !p.regions.protect(a[0], end, prot) {
        return Err(Errno::ENOMEM.into());
    }
    let asp = &mut p.aspace;
    let mut at = a[0];
    let mut oom = false;
    while at < end {
        if let Some((pa, _)) = asp.translate(at) {
            if prot & PROT_WRITE != 0 && pool.refs(pa) > 1 {
                // A frame shared with a fork relative gets its own copy before it is writable.
                match pool.alloc() {
                    Ok(n) => {
                        phys::copy_frame(n, pa);
                        if asp.map(pool, at, n, pte_flags(prot)).is_err() {
                            oom = true;
                            break;
                        }
                    }
                    Err(_) => {
                        oom = true;
                        break;
                    }
                }
            } else if prot == 0 {
                asp.unmap(pool, at);
            } else {
                asp.set_flags(at, pte_flags(prot));
            }
        }
        at += PAGE;
    }
    drop(p);
    if oom {
        return Err(fault(k, MemFault::Oom));
    }
    Ok(0)
}

const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;
const MADV_REMOVE: u64 = 9;

/// `madvise(addr, len, advice)`: `MADV_DONTNEED` and `MADV_FREE` give the pages of an
/// anonymous private range back to the pool at once (they read as zero when touched
/// again); the other advice is accepted and changes nothing. A range that is not all
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
    let UserMem { mm: mut p, pool } = k.mem(pid).ok_or(Fail::Gone)?;
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
    Ok(0)
}
