//! A process's user address-space regions: what `mmap`, `brk`, `mprotect` and `munmap`
//! reserve, and what a page fault may fill in. Pure bookkeeping over page-aligned ranges.
//!
//! A region is anonymous (zero pages on first touch) or shows a file ([`Backing`]): a page
//! of it is the file's page at the region's offset plus the page's distance from the
//! region's start. Splitting a region (`munmap`, `mprotect`, `MAP_FIXED` over part of it)
//! keeps every piece's offset right.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;

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
    fn segment_flags_become_protections() {
        assert_eq!(prot_of_flags(PF_R | PF_X), PROT_READ | PROT_EXEC);
        assert_eq!(prot_of_flags(PF_R | PF_W), PROT_READ | PROT_WRITE);
        assert_eq!(prot_of_flags(0), 0);
    }
}
