//! A process's user address-space regions: what `mmap`, `brk`, `mprotect` and `munmap`
//! reserve, and what a page fault may fill in. Pure bookkeeping over page-aligned ranges.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::elf::{PAGE, USER_END, USER_MIN};

/// Readable.
pub const PROT_READ: u32 = 1;
/// Writable.
pub const PROT_WRITE: u32 = 2;
/// Executable.
pub const PROT_EXEC: u32 = 4;

/// One region `[start, end)` with its protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First address (page-aligned).
    pub start: u64,
    /// One past the last address (page-aligned).
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
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
    pub fn find(&self, addr: u64) -> Option<Region> {
        self.map.range(..=addr).next_back().map(|(_, r)| *r).filter(|r| addr < r.end)
    }

    /// Removes `[start, end)` from every region (splitting), returning the removed pieces.
    pub fn remove(&mut self, start: u64, end: u64) -> Vec<Region> {
        let mut removed = Vec::new();
        let hits: Vec<Region> =
            self.map.values().filter(|r| r.start < end && start < r.end).copied().collect();
        for r in hits {
            self.map.remove(&r.start);
            if r.start < start {
                self.map.insert(r.start, Region { end: start, ..r });
            }
            if end < r.end {
                self.map.insert(end, Region { start: end, ..r });
            }
            removed.push(Region { start: r.start.max(start), end: r.end.min(end), prot: r.prot });
        }
        removed
    }

    /// Adds `[start, end)` with `prot`, replacing what was there.
    pub fn insert(&mut self, start: u64, end: u64, prot: u32) {
        self.remove(start, end);
        self.map.insert(start, Region { start, end, prot });
    }

    /// Sets the protection of `[start, end)`; false if some page in it is not mapped.
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) -> bool {
        if !self.covers(start, end) {
            return false;
        }
        self.remove(start, end);
        self.map.insert(start, Region { start, end, prot });
        true
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
}
