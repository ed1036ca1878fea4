//! A 4-level x86_64 page-table builder (Intel SDM Vol. 3A 4.5, AMD APM Vol. 2 5.3).
//!
//! It is generic over [`TableMemory`], which hands out zeroed frames and reads and writes
//! table entries by physical address: in the kernel through the identity mapping, in tests
//! in a map of made-up frames. It maps 4 KiB, 2 MiB and 1 GiB pages, splits a large page
//! when a smaller part of it is unmapped or changes permissions, and translates an address
//! to its physical address and effective permissions.
//!
//! Contract: no address, size or flag combination makes this module panic; every refusal
//! is a [`MapError`]. The caller invalidates TLB entries after it changes a live mapping.
#![deny(unsafe_code)]

use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// Page-table entry bits (SDM Vol. 3A Table 4-19/4-17/4-15).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Flags: u64 {
        /// P: the entry maps something.
        const PRESENT = 1 << 0;
        /// R/W: writes allowed.
        const WRITABLE = 1 << 1;
        /// U/S: user-mode accesses allowed.
        const USER = 1 << 2;
        /// PWT: write-through.
        const WRITE_THROUGH = 1 << 3;
        /// PCD: caching disabled.
        const NO_CACHE = 1 << 4;
        /// A: set by the CPU on access.
        const ACCESSED = 1 << 5;
        /// D: set by the CPU on write (leaves only).
        const DIRTY = 1 << 6;
        /// PS in a PDPT or PD entry: the entry maps a 1 GiB or 2 MiB page.
        const HUGE = 1 << 7;
        /// G: the translation survives CR3 loads (with CR4.PGE).
        const GLOBAL = 1 << 8;
        /// XD/NX: instruction fetches fault (with EFER.NXE).
        const NO_EXECUTE = 1 << 63;
    }
}

/// The bits of a leaf's flags that callers choose.
const LEAF_FLAGS: Flags = Flags::PRESENT
    .union(Flags::WRITABLE)
    .union(Flags::USER)
    .union(Flags::WRITE_THROUGH)
    .union(Flags::NO_CACHE)
    .union(Flags::ACCESSED)
    .union(Flags::DIRTY)
    .union(Flags::GLOBAL)
    .union(Flags::NO_EXECUTE);

/// Physical-address bits of an entry (M = 52).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const ENTRIES: u64 = 512;

/// A page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB, mapped by a PT entry.
    Size4K,
    /// 2 MiB, mapped by a PD entry with PS set.
    Size2M,
    /// 1 GiB, mapped by a PDPT entry with PS set (needs CPUID.80000001h:EDX.Page1GB).
    Size1G,
}

impl PageSize {
    /// Bytes in a page of this size.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// The table level whose entries map pages of this size (1 = PT ... 4 = PML4).
    const fn level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }

    const fn from_level(level: u8) -> Self {
        match level {
            3 => PageSize::Size1G,
            2 => PageSize::Size2M,
            _ => PageSize::Size4K,
        }
    }
}

/// Why a mapping operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Some part of the range is mapped already.
    AlreadyMapped(u64),
    /// An address or length is not a multiple of the page size.
    Misaligned(u64),
    /// No frame for a page table.
    OutOfFrames,
    /// The virtual address is not canonical (bits 63:47 differ).
    NonCanonical(u64),
    /// The physical address does not fit in 52 bits.
    PhysicalTooLarge(u64),
    /// Nothing is mapped there.
    NotMapped(u64),
    /// A smaller page than the operation's size is mapped inside the range.
    SizeMismatch(u64),
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::AlreadyMapped(a) => write!(f, "{a:#x} is already mapped"),
            MapError::Misaligned(a) => write!(f, "{a:#x} is not aligned to the page size"),
            MapError::OutOfFrames => write!(f, "no frame for a page table"),
            MapError::NonCanonical(a) => write!(f, "{a:#x} is not a canonical address"),
            MapError::PhysicalTooLarge(a) => write!(f, "physical address {a:#x} exceeds 52 bits"),
            MapError::NotMapped(a) => write!(f, "{a:#x} is not mapped"),
            MapError::SizeMismatch(a) => write!(f, "smaller pages are mapped at {a:#x}"),
        }
    }
}

/// Where page tables live.
pub trait TableMemory {
    /// A zeroed 4 KiB frame for a new table, or `None` when there is none.
    fn alloc_table(&mut self) -> Option<u64>;
    /// Entry `index` (< 512) of the table at physical address `table`.
    fn read_entry(&self, table: u64, index: usize) -> u64;
    /// Writes entry `index` (< 512) of the table at physical address `table`.
    fn write_entry(&mut self, table: u64, index: usize, value: u64);
}

/// What an address translates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address.
    pub phys: u64,
    /// The size of the page that maps it.
    pub size: PageSize,
    /// Effective permissions: WRITABLE and USER only if every level allows them,
    /// NO_EXECUTE if any level forbids execution; caching bits and GLOBAL from the leaf.
    pub flags: Flags,
}

/// A page-table hierarchy rooted at a PML4.
pub struct PageTables<M> {
    root: u64,
    mem: M,
}

fn canonical(virt: u64) -> bool {
    let top = virt >> 47;
    top == 0 || top == (1 << 17) - 1
}

fn index(virt: u64, level: u8) -> usize {
    ((virt >> (12 + 9 * (u32::from(level) - 1))) % ENTRIES) as usize
}

fn leaf_addr_mask(size: PageSize) -> u64 {
    ADDR_MASK & !(size.bytes() - 1)
}

impl<M: TableMemory> PageTables<M> {
    /// An empty hierarchy with a fresh PML4.
    pub fn new(mut mem: M) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::OutOfFrames)?;
        Ok(PageTables { root, mem })
    }

    /// The hierarchy rooted at the PML4 at `root`, which `mem` must be able to reach.
    pub fn from_root(root: u64, mem: M) -> Self {
        PageTables { root, mem }
    }

    /// Physical address of the PML4 (the CR3 value).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The table memory.
    pub fn mem(&mut self) -> &mut M {
        &mut self.mem
    }

    /// Descends to the table at `level` that holds `virt`'s entry. With `create`, missing
    /// tables are allocated; with `split`, large pages on the way are split.
    fn descend(
        &mut self,
        virt: u64,
        level: u8,
        create: bool,
        split: bool,
        user: bool,
    ) -> Result<u64, MapError> {
        let mut table = self.root;
        let mut l = 4;
        while l > level {
            let i = index(virt, l);
            let e = self.mem.read_entry(table, i);
            let f = Flags::from_bits_retain(e);
            let next = if !f.contains(Flags::PRESENT) {
                if !create {
                    return Err(MapError::NotMapped(virt));
                }
                let t = self.mem.alloc_table().ok_or(MapError::OutOfFrames)?;
                let mut tf = Flags::PRESENT | Flags::WRITABLE;
                tf.set(Flags::USER, user);
                self.mem.write_entry(table, i, t | tf.bits());
                t
            } else if f.contains(Flags::HUGE) && l <= 3 {
                if !split {
                    return Err(MapError::AlreadyMapped(virt));
                }
                self.split(table, i, l)?
            } else {
                if user && !f.contains(Flags::USER) {
                    self.mem.write_entry(table, i, e | Flags::USER.bits());
                }
                e & ADDR_MASK
            };
            table = next;
            l -= 1;
        }
        Ok(table)
    }

    /// Replaces the large page in entry `i` of `table` (at `level`) with a table of
    /// 512 pages of the next size down, same physical range and permissions.
    fn split(&mut self, table: u64, i: usize, level: u8) -> Result<u64, MapError> {
        let e = self.mem.read_entry(table, i);
        let size = PageSize::from_level(level);
        let child = PageSize::from_level(level - 1);
        let base = e & leaf_addr_mask(size);
        let leaf = Flags::from_bits_retain(e) & LEAF_FLAGS;
        let t = self.mem.alloc_table().ok_or(MapError::OutOfFrames)?;
        let child_flags = if child == PageSize::Size4K { leaf } else { leaf | Flags::HUGE };
        for k in 0..ENTRIES {
            self.mem.write_entry(t, k as usize, (base + k * child.bytes()) | child_flags.bits());
        }
        let mut tf = Flags::PRESENT | Flags::WRITABLE;
        tf.set(Flags::USER, leaf.contains(Flags::USER));
        self.mem.write_entry(table, i, t | tf.bits());
        Ok(t)
    }

    fn check(virt: u64, phys: u64, size: PageSize) -> Result<(), MapError> {
        if !canonical(virt) {
            return Err(MapError::NonCanonical(virt));
        }
        if phys & !ADDR_MASK & !(size.bytes() - 1) != 0 {
            return Err(MapError::PhysicalTooLarge(phys));
        }
        if !virt.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned(virt));
        }
        if !phys.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned(phys));
        }
        Ok(())
    }

    /// Maps one page of `size` at `virt` to `phys` with `flags` (PRESENT is implied,
    /// HUGE is set for large pages). Fails if anything is mapped there.
    pub fn map(&mut self, virt: u64, phys: u64, size: PageSize, flags: Flags) -> Result<(), MapError> {
        Self::check(virt, phys, size)?;
        let user = flags.contains(Flags::USER);
        let table = self.descend(virt, size.level(), true, false, user)?;
        let i = index(virt, size.level());
        if Flags::from_bits_retain(self.mem.read_entry(table, i)).contains(Flags::PRESENT) {
            return Err(MapError::AlreadyMapped(virt));
        }
        let mut f = (flags & LEAF_FLAGS) | Flags::PRESENT;
        f.set(Flags::HUGE, size != PageSize::Size4K);
        self.mem.write_entry(table, i, phys | f.bits());
        Ok(())
    }

    /// Maps `[virt, virt + len)` to `[phys, phys + len)`, using the largest pages up to
    /// `largest` that alignment and length allow. Stops at the first error; the pages
    /// before it stay mapped.
    pub fn map_range(
        &mut self,
        virt: u64,
        phys: u64,
        len: u64,
        flags: Flags,
        largest: PageSize,
    ) -> Result<(), MapError> {
        if !len.is_multiple_of(PageSize::Size4K.bytes()) {
            return Err(MapError::Misaligned(len));
        }
        let mut off = 0;
        while off < len {
            let (v, p, left) = (virt.wrapping_add(off), phys.wrapping_add(off), len - off);
            let size = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K]
                .into_iter()
                .filter(|s| *s <= largest)
                .find(|s| v.is_multiple_of(s.bytes()) && p.is_multiple_of(s.bytes()) && left >= s.bytes())
                .unwrap_or(PageSize::Size4K);
            self.map(v, p, size, flags)?;
            off += size.bytes();
        }
        Ok(())
    }

    /// Finds the leaf entry of `size` for `virt`, splitting larger pages on the way.
    fn leaf_of(&mut self, virt: u64, size: PageSize) -> Result<(u64, usize, u64), MapError> {
        if !canonical(virt) {
            return Err(MapError::NonCanonical(virt));
        }
        if !virt.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned(virt));
        }
        let table = self.descend(virt, size.level(), false, true, false)?;
        let i = index(virt, size.level());
        let e = self.mem.read_entry(table, i);
        let f = Flags::from_bits_retain(e);
        if !f.contains(Flags::PRESENT) {
            return Err(MapError::NotMapped(virt));
        }
        if size != PageSize::Size4K && !f.contains(Flags::HUGE) {
            return Err(MapError::SizeMismatch(virt));
        }
        Ok((table, i, e))
    }

    /// Unmaps the page of `size` at `virt`, splitting a larger page that holds it.
    /// Returns the physical address it mapped.
    pub fn unmap(&mut self, virt: u64, size: PageSize) -> Result<u64, MapError> {
        let (table, i, e) = self.leaf_of(virt, size)?;
        self.mem.write_entry(table, i, 0);
        Ok(e & leaf_addr_mask(size))
    }

    /// Changes the permissions of the page of `size` at `virt` (PRESENT is implied),
    /// splitting a larger page that holds it.
    pub fn protect(&mut self, virt: u64, size: PageSize, flags: Flags) -> Result<(), MapError> {
        let (table, i, e) = self.leaf_of(virt, size)?;
        let mut f = (flags & LEAF_FLAGS) | Flags::PRESENT;
        f.set(Flags::HUGE, size != PageSize::Size4K);
        if f.contains(Flags::USER) {
            // Make the upper levels allow user access too.
            self.descend(virt, size.level(), false, false, true)?;
        }
        self.mem.write_entry(table, i, (e & leaf_addr_mask(size)) | f.bits());
        Ok(())
    }

    /// Translates `virt`.
    pub fn translate(&self, virt: u64) -> Result<Translation, MapError> {
        if !canonical(virt) {
            return Err(MapError::NonCanonical(virt));
        }
        let mut table = self.root;
        let mut writable = true;
        let mut user = true;
        let mut nx = false;
        for level in (1..=4u8).rev() {
            let e = self.mem.read_entry(table, index(virt, level));
            let f = Flags::from_bits_retain(e);
            if !f.contains(Flags::PRESENT) {
                return Err(MapError::NotMapped(virt));
            }
            writable &= f.contains(Flags::WRITABLE);
            user &= f.contains(Flags::USER);
            nx |= f.contains(Flags::NO_EXECUTE);
            if level == 1 || (level <= 3 && f.contains(Flags::HUGE)) {
                let size = PageSize::from_level(level);
                let mut flags = f & (Flags::PRESENT | Flags::WRITE_THROUGH | Flags::NO_CACHE | Flags::GLOBAL);
                flags.set(Flags::WRITABLE, writable);
                flags.set(Flags::USER, user);
                flags.set(Flags::NO_EXECUTE, nx);
                let phys = (e & leaf_addr_mask(size)) | (virt & (size.bytes() - 1));
                return Ok(Translation { phys, size, flags });
            }
            table = e & ADDR_MASK;
        }
        Err(MapError::NotMapped(virt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Frames in a hash map, numbered from 1 MiB, with a cap to test exhaustion.
    struct Arena {
        tables: HashMap<u64, [u64; 512]>,
        next: u64,
        cap: usize,
    }

    impl Arena {
        fn new(cap: usize) -> Self {
            Arena { tables: HashMap::new(), next: 0x10_0000, cap }
        }
    }

    impl TableMemory for Arena {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.tables.len() >= self.cap {
                return None;
            }
            let a = self.next;
            self.next += 0x1000;
            self.tables.insert(a, [0; 512]);
            Some(a)
        }
        fn read_entry(&self, table: u64, index: usize) -> u64 {
            self.tables.get(&table).expect("table exists")[index]
        }
        fn write_entry(&mut self, table: u64, index: usize, value: u64) {
            self.tables.get_mut(&table).expect("table exists")[index] = value;
        }
    }

    const RW: Flags = Flags::WRITABLE;
    const RWNX: Flags = Flags::WRITABLE.union(Flags::NO_EXECUTE);
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn pt() -> PageTables<Arena> {
        PageTables::new(Arena::new(64)).unwrap()
    }

    #[test]
    fn map_and_translate_each_size() {
        let mut t = pt();
        t.map(0x1000, 0x5000, PageSize::Size4K, RW).unwrap();
        t.map(0x20_0000, 0x4000_0000, PageSize::Size2M, RWNX | Flags::NO_CACHE).unwrap();
        t.map(0xffff_8000_0000_0000, 2 * GIB, PageSize::Size1G, Flags::GLOBAL).unwrap();
        let a = t.translate(0x1abc).unwrap();
        assert_eq!((a.phys, a.size), (0x5abc, PageSize::Size4K));
        assert_eq!(a.flags, Flags::PRESENT | Flags::WRITABLE);
        let b = t.translate(0x2f_f123).unwrap();
        assert_eq!((b.phys, b.size), (0x400f_f123, PageSize::Size2M));
        assert_eq!(b.flags, Flags::PRESENT | RWNX | Flags::NO_CACHE);
        let c = t.translate(0xffff_8000_1234_5678).unwrap();
        assert_eq!((c.phys, c.size), (2 * GIB + 0x1234_5678, PageSize::Size1G));
        assert_eq!(c.flags, Flags::PRESENT | Flags::GLOBAL);
        assert_eq!(t.translate(0x2000), Err(MapError::NotMapped(0x2000)));
        assert_eq!(t.translate(0), Err(MapError::NotMapped(0)));
    }

    #[test]
    fn refusals_are_typed() {
        let mut t = pt();
        assert_eq!(t.map(0x1001, 0, PageSize::Size4K, RW), Err(MapError::Misaligned(0x1001)));
        assert_eq!(t.map(0x20_0000, 0x1000, PageSize::Size2M, RW), Err(MapError::Misaligned(0x1000)));
        assert_eq!(t.map(1 << 47, 0, PageSize::Size4K, RW), Err(MapError::NonCanonical(1 << 47)));
        assert_eq!(t.map(0x1000, 1 << 52, PageSize::Size4K, RW), Err(MapError::PhysicalTooLarge(1 << 52)));
        assert_eq!(t.translate(0x0000_8000_0000_0000), Err(MapError::NonCanonical(0x0000_8000_0000_0000)));
        t.map(0x20_0000, 0, PageSize::Size2M, RW).unwrap();
        // A 4 KiB page inside a 2 MiB one, and a 2 MiB page over a table with entries.
        assert_eq!(t.map(0x20_1000, 0, PageSize::Size4K, RW), Err(MapError::AlreadyMapped(0x20_1000)));
        t.map(0x40_0000, 0, PageSize::Size4K, RW).unwrap();
        assert_eq!(t.map(0x40_0000, 0, PageSize::Size2M, RW), Err(MapError::AlreadyMapped(0x40_0000)));
        assert_eq!(t.map(0x40_0000, 0, PageSize::Size4K, RW), Err(MapError::AlreadyMapped(0x40_0000)));
        assert_eq!(t.unmap(0x60_0000, PageSize::Size4K), Err(MapError::NotMapped(0x60_0000)));
        assert_eq!(t.unmap(0x40_0000, PageSize::Size2M), Err(MapError::SizeMismatch(0x40_0000)));
        assert_eq!(t.map_range(0, 0, 0x1800, RW, PageSize::Size4K), Err(MapError::Misaligned(0x1800)));
    }

    #[test]
    fn out_of_frames_is_an_error_not_a_panic() {
        // Root plus two tables: a 4 KiB mapping needs three below the root.
        let mut t = PageTables::new(Arena::new(3)).unwrap();
        assert_eq!(t.map(0x1000, 0x1000, PageSize::Size4K, RW), Err(MapError::OutOfFrames));
        // A 2 MiB page needs only the PDPT and PD, which now exist.
        t.map(0x20_0000, 0, PageSize::Size2M, RW).unwrap();
        // Splitting it needs one more.
        assert_eq!(t.unmap(0x20_1000, PageSize::Size4K), Err(MapError::OutOfFrames));
        assert!(t.translate(0x20_1000).is_ok(), "a failed split leaves the page mapped");
        assert!(PageTables::new(Arena::new(0)).is_err());
    }

    #[test]
    fn unmapping_inside_a_large_page_splits_it() {
        let mut t = pt();
        t.map(GIB, 0x8000_0000, PageSize::Size1G, RWNX | Flags::NO_CACHE).unwrap();
        assert_eq!(t.unmap(GIB + 0x20_3000, PageSize::Size4K), Ok(0x8020_3000));
        assert_eq!(t.translate(GIB + 0x20_3000), Err(MapError::NotMapped(GIB + 0x20_3000)));
        for v in [GIB, GIB + 0x20_2fff, GIB + 0x20_4000, GIB + 0x3fff_ffff] {
            let tr = t.translate(v).unwrap();
            assert_eq!(tr.phys, 0x8000_0000 + (v - GIB), "at {v:#x}");
            assert_eq!(tr.flags, Flags::PRESENT | RWNX | Flags::NO_CACHE, "at {v:#x}");
        }
        assert_eq!(t.translate(GIB + 0x20_4000).unwrap().size, PageSize::Size4K);
        assert_eq!(t.translate(GIB + 0x40_0000).unwrap().size, PageSize::Size2M);
    }

    #[test]
    fn protect_changes_one_page_and_effective_flags() {
        let mut t = pt();
        t.map(0, 0, PageSize::Size2M, RWNX).unwrap();
        t.protect(0x8000, PageSize::Size4K, RW).unwrap();
        assert!(!t.translate(0x8000).unwrap().flags.contains(Flags::NO_EXECUTE));
        assert!(t.translate(0x9000).unwrap().flags.contains(Flags::NO_EXECUTE));
        t.protect(0x9000, PageSize::Size4K, Flags::USER).unwrap();
        let u = t.translate(0x9000).unwrap();
        assert_eq!(u.flags, Flags::PRESENT | Flags::USER, "user reaches through every level");
        assert!(!t.translate(0xa000).unwrap().flags.contains(Flags::USER));
        assert_eq!(t.protect(0x20_0000, PageSize::Size4K, RW), Err(MapError::NotMapped(0x20_0000)));
    }

    #[test]
    fn effective_flags_combine_levels() {
        let mut t = pt();
        t.map(0x1000, 0x1000, PageSize::Size4K, Flags::USER | RW).unwrap();
        // Clear W and set NX in the PML4 entry by hand: the leaf's W and X no longer count.
        let root = t.root();
        let e = t.mem().read_entry(root, 0);
        t.mem().write_entry(root, 0, (e & !Flags::WRITABLE.bits()) | Flags::NO_EXECUTE.bits());
        let tr = t.translate(0x1000).unwrap();
        assert_eq!(tr.flags, Flags::PRESENT | Flags::USER | Flags::NO_EXECUTE);
    }

    #[test]
    fn map_range_uses_the_largest_pages_that_fit() {
        let mut t = pt();
        // 4 KiB at the start, then 2 MiB pages, a 1 GiB page, 2 MiB and 4 KiB at the end.
        let start = 2 * GIB - 4 * MIB - 0x3000;
        let end = 3 * GIB + 2 * MIB + 0x1000;
        t.map_range(start, start, end - start, RWNX, PageSize::Size1G).unwrap();
        assert_eq!(t.translate(start).unwrap().size, PageSize::Size4K);
        assert_eq!(t.translate(2 * GIB - 4 * MIB).unwrap().size, PageSize::Size2M);
        assert_eq!(
            t.translate(2 * GIB + 5).unwrap(),
            Translation { phys: 2 * GIB + 5, size: PageSize::Size1G, flags: Flags::PRESENT | RWNX }
        );
        assert_eq!(t.translate(3 * GIB).unwrap().size, PageSize::Size2M);
        assert_eq!(t.translate(3 * GIB + 2 * MIB).unwrap().size, PageSize::Size4K);
        assert!(t.translate(end).is_err());
        assert!(t.translate(start - 1).is_err());
        // Without 1 GiB pages the same range uses 2 MiB pages.
        let mut t = pt();
        t.map_range(start, start, end - start, RWNX, PageSize::Size2M).unwrap();
        assert_eq!(t.translate(2 * GIB + 5).unwrap().size, PageSize::Size2M);
        // Physical and virtual offsets that disagree force small pages.
        let mut t = pt();
        t.map_range(4 * MIB, 4 * MIB + 0x1000, 4 * MIB, RW, PageSize::Size1G).unwrap();
        assert_eq!(t.translate(6 * MIB).unwrap().size, PageSize::Size4K);
    }
}
