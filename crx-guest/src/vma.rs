//! A process's user address-space regions: what `mmap`, `brk`, `mprotect` and `munmap`
//! reserve, and what a page fault may fill in. Pure bookkeeping over page-aligned ranges.
//!
//! A region is anonymous (zero pages on first touch) or shows a file ([`Backing`]): a page
//! of it is the file's page at the region's offset plus the page's distance from the
//! region's start. Splitting a region (`munmap`, `mprotect`, `MAP_FIXED` over part of it)
//! keeps every piece's offset right.
//!
//! Regions that continue each other (the same protection, anonymous or the same file at
//! the following offsets) are one mapping, as Linux merges such areas into one: `mremap`
//! takes its old range from one mapping ([`Regions::check_resize`]), and [`Remap`] checks
//! its arguments as Linux does before it looks at them.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;

use crx_fs::Errno;

use crate::elf::{PAGE, PF_R, PF_W, PF_X, USER_END, USER_MIN};
use crate::pagecache::MappedFile;

/// Readable.
pub const PROT_READ: u32 = 1;
/// Writable.
pub const PROT_WRITE: u32 = 2;
/// Executable.
pub const PROT_EXEC: u32 = 4;

/// The `PROT_*` bits of ELF segment flags (`PF_*`).
pub fn prot_of_flags(flags: u32) -> u32 {
    let mut prot = 0;
    if flags & PF_R != 0 {
        prot |= PROT_READ;
    }
    if flags & PF_W != 0 {
        prot |= PROT_WRITE;
    }
    if flags & PF_X != 0 {
        prot |= PROT_EXEC;
    }
    prot
}

/// The file a region shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    /// The file (its handle keeps the inode alive while some region shows it).
    pub file: Rc<MappedFile>,
    /// The file offset shown at the region's start (page-aligned).
    pub offset: u64,
    /// `MAP_SHARED` (read-only here) rather than `MAP_PRIVATE`.
    pub shared: bool,
}

/// One region `[start, end)` with its protection, anonymous or showing a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// First address (page-aligned).
    pub start: u64,
    /// One past the last address (page-aligned).
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    /// The file shown, `None` for anonymous memory.
    pub backing: Option<Backing>,
}

impl Region {
    /// An anonymous region.
    pub fn anon(start: u64, end: u64, prot: u32) -> Region {
        Region { start, end, prot, backing: None }
    }

    /// The file offset shown at `va` (in the region), for a file-backed region.
    pub fn file_offset(&self, va: u64) -> Option<u64> {
        let b = self.backing.as_ref()?;
        b.offset.checked_add(va.checked_sub(self.start)?)
    }

    /// A region `[to, to + len)` that shows what this one shows from `from` on (`from` at
    /// or after its start; the range may reach past its end, continuing the file): a part
    /// moved, or an extension.
    pub fn shown_at(&self, from: u64, to: u64, len: u64) -> Region {
        let backing = self.backing.as_ref().map(|b| Backing {
            file: b.file.clone(),
            offset: b.offset.saturating_add(from.saturating_sub(self.start)),
            shared: b.shared,
        });
        Region { start: to, end: to.saturating_add(len), prot: self.prot, backing }
    }

    /// Whether `next` continues this region as one mapping: it starts where this one ends,
    /// with the same protection, and both are anonymous or show the same file the same way
    /// at consecutive offsets.
    pub fn continued_by(&self, next: &Region) -> bool {
        if next.start != self.end || next.prot != self.prot {
            return false;
        }
        match (&self.backing, &next.backing) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                Rc::ptr_eq(&a.file, &b.file)
                    && a.shared == b.shared
                    && a.offset.checked_add(self.end - self.start) == Some(b.offset)
            }
            _ => false,
        }
    }

    /// The part `[start, end)` of this region (which it must contain), offset kept right.
    fn part(&self, start: u64, end: u64) -> Region {
        let backing = self.backing.as_ref().map(|b| Backing {
            file: b.file.clone(),
            offset: b.offset.saturating_add(start - self.start),
            shared: b.shared,
        });
        Region { start, end, prot: self.prot, backing }
    }
}

/// The regions of one address space, non-overlapping, keyed by start.
#[derive(Debug, Clone, Default)]
pub struct Regions {
    map: BTreeMap<u64, Region>,
}

/// Rounds up to a page, `None` on overflow.
pub fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

impl Regions {
    /// No regions.
    pub fn new() -> Regions {
        Regions::default()
    }

    /// The region containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Region> {
        self.map.range(..=addr).next_back().map(|(_, r)| r).filter(|r| addr < r.end)
    }

    /// Removes `[start, end)` from every region (splitting), returning the removed pieces.
    pub fn remove(&mut self, start: u64, end: u64) -> Vec<Region> {
        let mut removed = Vec::new();
        if start >= end {
            return removed;
        }
        let first = self.find(start).map(|r| r.start).unwrap_or(start);
        let hits: Vec<u64> =
            self.map.range(first..end).filter(|(_, r)| start < r.end).map(|(&k, _)| k).collect();
        for k in hits {
            let Some(r) = self.map.remove(&k) else { continue };
            if r.start < start {
                self.map.insert(r.start, r.part(r.start, start));
            }
            if end < r.end {
                self.map.insert(end, r.part(end, r.end));
            }
            removed.push(r.part(r.start.max(start), r.end.min(end)));
        }
        removed
    }

    /// Adds `[start, end)` with `prot`, anonymous, replacing what was there.
    pub fn insert(&mut self, start: u64, end: u64, prot: u32) {
        self.insert_region(Region::anon(start, end, prot));
    }

    /// Adds `region`, replacing what was there.
    pub fn insert_region(&mut self, region: Region) {
        self.remove(region.start, region.end);
        self.map.insert(region.start, region);
    }

    /// Sets the protection of `[start, end)`, keeping what each part shows; false (and no
    /// change) if some page in it is not mapped.
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) -> bool {
        if !self.covers(start, end) {
            return false;
        }
        for mut r in self.remove(start, end) {
            r.prot = prot;
            self.map.insert(r.start, r);
        }
        true
    }

    /// Whether some region meets `[start, end)`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return false;
        }
        let first = self.find(start).map(|r| r.start).unwrap_or(start);
        self.map.range(first..end).any(|(_, r)| start < r.end)
    }

    /// The regions meeting `[start, end)`.
    pub fn within(&self, start: u64, end: u64) -> impl Iterator<Item = &Region> {
        let first = self.find(start).map(|r| r.start).unwrap_or(start);
        self.map.range(first..end.max(first)).map(|(_, r)| r).filter(move |r| start < r.end)
    }

    /// Whether every page of `[start, end)` is in some region.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        while at < end {
            match self.find(at) {
                Some(r) => at = r.end,
                None => return false,
            }
        }
        true
    }

    /// A free range of `len` bytes, searched downward from `below`, above `USER_MIN`.
    pub fn find_free(&self, len: u64, below: u64) -> Option<u64> {
        let mut top = below.min(USER_END);
        for r in self.map.values().rev() {
            if r.start >= top {
                continue;
            }
            if r.end <= top && top - r.end >= len {
                return Some(top - len);
            }
            top = top.min(r.start);
        }
        (top >= USER_MIN + len).then(|| top - len)
    }

    /// Every region, in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Region> {
        self.map.values()
    }

    /// The end of the mapping that holds `addr`: of the run of regions from the one holding
    /// it that continue each other.
    pub fn mapping_end(&self, addr: u64) -> Option<u64> {
        let mut last = self.find(addr)?;
        for r in self.map.range(last.end..).map(|(_, r)| r) {
            if !last.continued_by(r) {
                break;
            }
            last = r;
        }
        Some(last.end)
    }

    /// Linux's checks of the old range of an `mremap` that keeps or grows it
    /// (`vma_to_resize`): `EFAULT` when nothing is mapped at `addr` or `[addr, addr +
    /// old_len)` is more than one mapping, `EINVAL` for an old length of 0 on a private
    /// mapping (only a shared one can be duplicated that way) and for a file mapping whose
    /// offsets would overflow.
    pub fn check_resize(&self, addr: u64, old_len: u64, new_len: u64) -> Result<(), Errno> {
        let r = self.find(addr).ok_or(Errno::EFAULT)?;
        if old_len == 0 && !r.backing.as_ref().is_some_and(|b| b.shared) {
            return Err(Errno::EINVAL);
        }
        let end = self.mapping_end(addr).ok_or(Errno::EFAULT)?;
        if old_len > end - addr {
            return Err(Errno::EFAULT);
        }
        if r.file_offset(addr).is_some_and(|off| off.checked_add(new_len).is_none()) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Whether the mapping `[addr, addr + old_len)` can grow to `new_len` where it is: the
    /// old range ends its mapping and what follows, up to the new end, is free user space.
    pub fn grows_in_place(&self, addr: u64, old_len: u64, new_len: u64) -> bool {
        let (Some(old_end), Some(new_end)) = (addr.checked_add(old_len), addr.checked_add(new_len)) else {
            return false;
        };
        old_len != 0
            && self.mapping_end(addr) == Some(old_end)
            && new_end <= USER_END
            && !self.overlaps(old_end, new_end)
    }
}

/// `mremap` flag: the mapping may move.
pub const MREMAP_MAYMOVE: u64 = 1;
/// `mremap` flag: move it to `new_address` (with `MREMAP_MAYMOVE`).
pub const MREMAP_FIXED: u64 = 2;
/// `mremap` flag: leave the old range mapped, empty (not supported: `EINVAL`).
pub const MREMAP_DONTUNMAP: u64 = 4;

/// An `mremap(addr, old_len, new_len, flags, new_address)` whose arguments passed the checks
/// Linux makes before it looks at the mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remap {
    /// The old range's start (page-aligned).
    pub addr: u64,
    /// The old range's length, rounded up to pages (0: duplicate a shared mapping).
    pub old_len: u64,
    /// The new length, rounded up to pages, not 0.
    pub new_len: u64,
    /// `MREMAP_MAYMOVE`.
    pub may_move: bool,
    /// `MREMAP_FIXED`'s destination.
    pub fixed: Option<u64>,
}

/// Rounds up to a page as Linux's `PAGE_ALIGN` does (a length within a page of the top
/// wraps to 0).
fn page_align(x: u64) -> u64 {
    x.wrapping_add(PAGE - 1) & !(PAGE - 1)
}

impl Remap {
    /// Checks the arguments: `EINVAL` for unknown flags, `MREMAP_FIXED` without
    /// `MREMAP_MAYMOVE`, `MREMAP_DONTUNMAP` (not supported), an unaligned `addr`, and a new
    /// length of 0 (after rounding up, as Linux).
    pub fn new(addr: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> Result<Remap, Errno> {
        if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
            || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
            || flags & MREMAP_DONTUNMAP != 0
            || !addr.is_multiple_of(PAGE)
        {
            return Err(Errno::EINVAL);
        }
        let (old_len, new_len) = (page_align(old_len), page_align(new_len));
        if new_len == 0 {
            return Err(Errno::EINVAL);
        }
        let fixed = (flags & MREMAP_FIXED != 0).then_some(new_addr);
        Ok(Remap { addr, old_len, new_len, may_move: flags & MREMAP_MAYMOVE != 0, fixed })
    }

    /// `MREMAP_FIXED`'s destination `to`, checked as Linux's `mremap_to` does: `EINVAL` when
    /// it is unaligned, runs past the top of user space or overlaps the old range; `ENOMEM`
    /// below the lowest user address (where nothing can be mapped here).
    pub fn check_target(&self, to: u64) -> Result<(), Errno> {
        if !to.is_multiple_of(PAGE) || self.new_len > USER_END || to > USER_END - self.new_len {
            return Err(Errno::EINVAL);
        }
        let old_end = self.addr.saturating_add(self.old_len);
        if old_end > to && to + self.new_len > self.addr {
            return Err(Errno::EINVAL);
        }
        if to < USER_MIN {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_split() {
        let mut r = Regions::new();
        r.insert(0x40_0000, 0x41_0000, PROT_READ);
        assert!(r.find(0x40_5000).is_some());
        assert!(r.find(0x41_0000).is_none());
        let gone = r.remove(0x40_4000, 0x40_6000);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].start, gone[0].end), (0x40_4000, 0x40_6000));
        assert!(r.find(0x40_5000).is_none());
        assert_eq!(r.find(0x40_3000).map(|x| x.end), Some(0x40_4000));
        assert_eq!(r.find(0x40_7000).map(|x| x.start), Some(0x40_6000));
        assert!(!r.covers(0x40_3000, 0x40_7000));
        assert!(r.protect(0x40_1000, 0x40_2000, PROT_READ | PROT_WRITE));
        assert_eq!(r.find(0x40_1000).map(|x| x.prot), Some(PROT_READ | PROT_WRITE));
        assert_eq!(r.find(0x40_0000).map(|x| x.prot), Some(PROT_READ));
        assert!(!r.protect(0x40_3000, 0x40_5000, PROT_READ));
    }

    #[test]
    fn finds_free_space_downward() {
        let mut r = Regions::new();
        let top = 0x7000_0000_0000;
        let a = r.find_free(0x3000, top).expect("space");
        assert_eq!(a, top - 0x3000);
        r.insert(a, a + 0x3000, PROT_READ);
        let b = r.find_free(0x1000, top).expect("space");
        assert_eq!(b, a - 0x1000);
        r.insert(b, b + 0x1000, PROT_READ);
        r.remove(a, a + 0x1000);
        assert_eq!(r.find_free(0x1000, top), Some(a));
        assert_eq!(r.find_free(0x2000, top), Some(b - 0x2000));
        assert_eq!(r.find_free(u64::MAX / 2, top), None);
    }

    fn file() -> Rc<MappedFile> {
        Rc::new(MappedFile { ino: crx_fs::Ino::ROOT })
    }

    fn backed(start: u64, end: u64, prot: u32, f: &Rc<MappedFile>, offset: u64) -> Region {
        Region { start, end, prot, backing: Some(Backing { file: f.clone(), offset, shared: false }) }
    }

    #[test]
    fn splitting_a_file_region_keeps_each_pieces_offset() {
        let f = file();
        let mut r = Regions::new();
        r.insert_region(backed(0x10_0000, 0x20_0000, PROT_READ, &f, 0x5000));
        // munmap of a middle part.
        let gone = r.remove(0x14_0000, 0x15_0000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].file_offset(0x14_0000), Some(0x5000 + 0x4_0000));
        assert_eq!(r.find(0x13_f000).and_then(|x| x.file_offset(0x13_f000)), Some(0x5000 + 0x3_f000));
        assert_eq!(r.find(0x15_0000).map(|x| x.start), Some(0x15_0000));
        assert_eq!(r.find(0x15_1000).and_then(|x| x.file_offset(0x15_1000)), Some(0x5000 + 0x5_1000));
        // mprotect of a part keeps the file and offsets; the protection changes there only.
        assert!(r.protect(0x18_0000, 0x19_0000, PROT_READ | PROT_WRITE));
        let mid = r.find(0x18_8000).expect("mapped");
        assert_eq!(mid.prot, PROT_READ | PROT_WRITE);
        assert_eq!(mid.file_offset(0x18_8000), Some(0x5000 + 0x8_8000));
        assert_eq!(r.find(0x19_0000).map(|x| x.prot), Some(PROT_READ));
        assert_eq!(r.find(0x19_0000).and_then(|x| x.file_offset(0x19_0000)), Some(0x5000 + 0x9_0000));
        // A protection change over a hole changes nothing.
        assert!(!r.protect(0x13_0000, 0x16_0000, PROT_EXEC));
        assert_eq!(r.find(0x13_0000).map(|x| x.prot), Some(PROT_READ));
        // Every piece holds the one file; a copy of the regions (fork) shares it too.
        drop(gone);
        assert_eq!(Rc::strong_count(&f), 1 + 4);
        let copy = r.clone();
        assert_eq!(Rc::strong_count(&f), 1 + 8);
        drop(copy);
        drop(r);
        assert_eq!(Rc::strong_count(&f), 1);
        // Anonymous regions have no file offset.
        assert_eq!(Region::anon(0x40_0000, 0x40_1000, PROT_READ).file_offset(0x40_0000), None);
    }

    #[test]
    fn overlap_and_within_see_partial_regions() {
        let mut r = Regions::new();
        r.insert(0x40_0000, 0x48_0000, PROT_READ);
        r.insert(0x50_0000, 0x51_0000, PROT_READ);
        assert!(r.overlaps(0x47_f000, 0x49_0000));
        assert!(r.overlaps(0x3f_0000, 0x40_1000));
        assert!(!r.overlaps(0x48_0000, 0x50_0000));
        assert!(r.overlaps(0x41_0000, 0x41_1000), "inside one region");
        let starts: Vec<u64> = r.within(0x44_0000, 0x50_1000).map(|x| x.start).collect();
        assert_eq!(starts, [0x40_0000, 0x50_0000]);
        assert_eq!(r.within(0x48_0000, 0x50_0000).count(), 0);
    }

    #[test]
    fn regions_that_continue_each_other_are_one_mapping() {
        let f = file();
        let mut r = Regions::new();
        // Two anonymous regions side by side with one protection: one mapping.
        r.insert(0x40_0000, 0x40_2000, PROT_READ | PROT_WRITE);
        r.insert(0x40_2000, 0x40_4000, PROT_READ | PROT_WRITE);
        // Then another protection: another mapping.
        r.insert(0x40_4000, 0x40_5000, PROT_READ);
        assert_eq!(r.mapping_end(0x40_1000), Some(0x40_4000));
        assert_eq!(r.mapping_end(0x40_4000), Some(0x40_5000));
        assert_eq!(r.mapping_end(0x40_5000), None);
        // A file at consecutive offsets continues; a gap in the offsets or another file
        // does not, nor does an anonymous region after a file one.
        r.insert_region(backed(0x50_0000, 0x50_1000, PROT_READ, &f, 0));
        r.insert_region(backed(0x50_1000, 0x50_2000, PROT_READ, &f, 0x1000));
        r.insert_region(backed(0x50_2000, 0x50_3000, PROT_READ, &f, 0x5000));
        r.insert(0x50_3000, 0x50_4000, PROT_READ);
        assert_eq!(r.mapping_end(0x50_0000), Some(0x50_2000));
        assert_eq!(r.mapping_end(0x50_2000), Some(0x50_3000));
        let other = file();
        let a = backed(0x60_0000, 0x60_1000, PROT_READ, &f, 0);
        assert!(!a.continued_by(&backed(0x60_1000, 0x60_2000, PROT_READ, &other, 0x1000)));
        assert!(a.continued_by(&backed(0x60_1000, 0x60_2000, PROT_READ, &f, 0x1000)));
        let mut shared = backed(0x60_1000, 0x60_2000, PROT_READ, &f, 0x1000);
        if let Some(b) = shared.backing.as_mut() {
            b.shared = true;
        }
        assert!(!a.continued_by(&shared));
    }

    #[test]
    fn shown_at_moves_and_extends_file_offsets() {
        let f = file();
        let r = backed(0x10_0000, 0x10_3000, PROT_READ | PROT_WRITE, &f, 0x4000);
        let moved = r.shown_at(0x10_1000, 0x70_0000, 0x5000);
        assert_eq!((moved.start, moved.end, moved.prot), (0x70_0000, 0x70_5000, PROT_READ | PROT_WRITE));
        assert_eq!(moved.file_offset(0x70_0000), Some(0x5000));
        assert_eq!(moved.file_offset(0x70_4000), Some(0x9000), "past the old end, the file goes on");
        let grown = r.shown_at(0x10_3000, 0x10_3000, 0x1000);
        assert!(r.continued_by(&grown));
        let anon = Region::anon(0x40_0000, 0x40_1000, PROT_READ).shown_at(0x40_0000, 0x50_0000, 0x1000);
        assert_eq!(anon, Region::anon(0x50_0000, 0x50_1000, PROT_READ));
    }

    #[test]
    fn mremap_arguments_as_linux_checks_them() {
        let ok = Remap::new(0x40_0000, 1, 0x1001, MREMAP_MAYMOVE, 0).expect("valid");
        assert_eq!(
            ok,
            Remap { addr: 0x40_0000, old_len: 0x1000, new_len: 0x2000, may_move: true, fixed: None }
        );
        assert_eq!(Remap::new(0x40_0001, 0x1000, 0x1000, 0, 0), Err(Errno::EINVAL), "unaligned");
        assert_eq!(Remap::new(0x40_0000, 0x1000, 0, 0, 0), Err(Errno::EINVAL), "new length 0");
        assert_eq!(Remap::new(0x40_0000, 0x1000, u64::MAX - 5, 0, 0), Err(Errno::EINVAL), "wraps to 0");
        assert_eq!(Remap::new(0x40_0000, 0x1000, 0x1000, 0x10, 0), Err(Errno::EINVAL), "unknown flag");
        assert_eq!(Remap::new(0x40_0000, 0x1000, 0x1000, MREMAP_FIXED, 0x80_0000), Err(Errno::EINVAL));
        assert_eq!(
            Remap::new(0x40_0000, 0x1000, 0x1000, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0),
            Err(Errno::EINVAL),
            "MREMAP_DONTUNMAP is not supported"
        );
        assert_eq!(Remap::new(0x40_0000, 0, 0x1000, 0, 0).map(|r| r.old_len), Ok(0));
        let fixed =
            Remap::new(0x100_0000, 0x2000, 0x2000, MREMAP_MAYMOVE | MREMAP_FIXED, 0x80_0000).expect("valid");
        assert_eq!(fixed.fixed, Some(0x80_0000));
        assert_eq!(fixed.check_target(0x80_0000), Ok(()));
        assert_eq!(fixed.check_target(0x80_0010), Err(Errno::EINVAL), "unaligned target");
        assert_eq!(fixed.check_target(0x100_1000), Err(Errno::EINVAL), "overlaps the old range");
        assert_eq!(fixed.check_target(0xff_f000), Err(Errno::EINVAL), "overlaps it from below");
        assert_eq!(fixed.check_target(0xff_e000), Ok(()), "ends where it starts");
        assert_eq!(fixed.check_target(0x100_2000), Ok(()), "starts where it ends");
        assert_eq!(fixed.check_target(USER_END - 0x1000), Err(Errno::EINVAL), "past the top");
        assert_eq!(fixed.check_target(USER_END - 0x2000), Ok(()));
        assert_eq!(fixed.check_target(0x10_0000), Err(Errno::ENOMEM), "below user space");
    }

    #[test]
    fn resize_checks_and_growing_in_place() {
        let f = file();
        let mut r = Regions::new();
        r.insert(0x40_0000, 0x40_2000, PROT_READ | PROT_WRITE);
        r.insert(0x40_2000, 0x40_3000, PROT_READ);
        r.insert(0x50_0000, 0x50_1000, PROT_READ);
        let mut shared = backed(0x60_0000, 0x60_2000, PROT_READ, &f, 0x1000);
        if let Some(b) = shared.backing.as_mut() {
            b.shared = true;
        }
        r.insert_region(shared);
        r.insert_region(backed(0x70_0000, 0x70_1000, PROT_READ, &f, !0xfff));
        assert_eq!(r.check_resize(0x40_0000, 0x2000, 0x4000), Ok(()));
        assert_eq!(r.check_resize(0x40_1000, 0x1000, 0x4000), Ok(()));
        assert_eq!(r.check_resize(0x40_0000, 0x3000, 0x4000), Err(Errno::EFAULT), "two mappings");
        assert_eq!(r.check_resize(0x48_0000, 0x1000, 0x2000), Err(Errno::EFAULT), "nothing there");
        assert_eq!(r.check_resize(0x40_0000, 0, 0x1000), Err(Errno::EINVAL), "duplicating private memory");
        assert_eq!(r.check_resize(0x60_0000, 0, 0x1000), Ok(()), "a shared one can be");
        assert_eq!(r.check_resize(0x70_0000, 0x1000, 0x2000), Err(Errno::EINVAL), "file offsets overflow");
        // In place: only from the end of a mapping, into free space.
        assert!(!r.grows_in_place(0x40_0000, 0x2000, 0x3000), "the next page is another mapping");
        assert!(r.grows_in_place(0x40_2000, 0x1000, 0x10_0000 - 0x2000));
        assert!(!r.grows_in_place(0x40_2000, 0x1000, 0x10_0000), "up to the next region only");
        assert!(!r.grows_in_place(0x50_0000, 0x800, 0x2000), "the old range does not end the mapping");
        assert!(r.grows_in_place(0x50_0000, 0x1000, 0x2000));
        assert!(!r.grows_in_place(0x60_0000, 0, 0x1000), "a duplicate is never in place");
        let mut top = Regions::new();
        top.insert(USER_END - 0x1000, USER_END, PROT_READ);
        assert!(!top.grows_in_place(USER_END - 0x1000, 0x1000, 0x2000), "past the top of user space");
    }

    #[test]
    fn segment_flags_become_protections() {
        assert_eq!(prot_of_flags(PF_R | PF_X), PROT_READ | PROT_EXEC);
        assert_eq!(prot_of_flags(PF_R | PF_W), PROT_READ | PROT_WRITE);
        assert_eq!(prot_of_flags(0), 0);
    }
}
