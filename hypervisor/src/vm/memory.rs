//! Guest memory: `N` bytes of guest-physical RAM backed by host frames, and the nested
//! page tables that map it, in the backend's [`NestedFormat`].
//!
//! Frames come from a [`FrameSource`]: in the kernel the frame allocator (reached through
//! the identity map), in tests an arena. Each 2 MiB of guest memory is one aligned run of
//! 512 frames when the source has one (mapped with one 2 MiB nested page), else 512 single
//! frames (mapped with 4 KiB pages). Every data frame is zeroed before the guest sees it.
//!
//! Contract: no `(gpa, len)` makes [`GuestMemory::read`], [`GuestMemory::write`] or
//! [`GuestMemory::fill`] panic or touch anything outside the guest's frames; an address
//! range that is not entirely guest memory (overflow included) is an [`OutOfRange`].
//! Dropping a [`GuestMemory`] returns every frame it took, data and tables, to its source.
//!
//! Shared read-only mappings ([`GuestMemory::map_shared_readonly`]) put host frames the
//! memory does not own (a pod's image layers, inside the boot module) into the nested
//! tables above guest RAM, without write permission. They are never read, written,
//! zeroed or returned through the source: only the tables that map them are the VM's.

use super::exit::NestedFormat;
use crate::mm::paging::{Flags, MapError, PageSize, PageTables, TableMemory};
pub use crate::mm::PAGE_SIZE;
use alloc::vec::Vec;
use core::fmt;

/// Bytes in a large nested page.
pub const LARGE_BYTES: u64 = 2 << 20;
/// Frames in a large nested page.
pub const FRAMES_PER_LARGE: usize = 512;

/// Host memory left free whatever guests ask for: the kernel heap grows from the same
/// frames (and cannot fail gracefully), vCPUs need their control pages, and the kernel
/// keeps running beside the VMs.
pub const HOST_RESERVE_BYTES: u64 = 16 << 20;

/// Frames guest memory of `bytes` takes at most: its data and its nested tables (one
/// PML4, one PDPT per 512 GiB, one PD per GiB and, without large runs, one PT per 2 MiB).
pub fn frames_needed(bytes: u64) -> u64 {
    let pages = bytes.div_ceil(PAGE_SIZE);
    let tables = 1 + bytes.div_ceil(512 << 30) + bytes.div_ceil(1 << 30) + bytes.div_ceil(LARGE_BYTES);
    pages.saturating_add(tables)
}

/// Whether guest memory of `bytes` may be taken when `free_frames` are free, leaving
/// [`HOST_RESERVE_BYTES`] to the host.
pub fn leaves_host_reserve(free_frames: u64, bytes: u64) -> bool {
    let reserve = HOST_RESERVE_BYTES / PAGE_SIZE;
    frames_needed(bytes).checked_add(reserve).is_some_and(|need| need <= free_frames)
}

/// Where host frames come from and how their bytes are reached.
pub trait FrameSource {
    /// Takes one frame (its contents are unspecified). `None` when none is left.
    fn alloc_frame(&mut self) -> Option<u64>;
    /// Takes [`FRAMES_PER_LARGE`] contiguous frames starting at a multiple of
    /// [`LARGE_BYTES`]. `None` when there is no such run.
    fn alloc_large(&mut self) -> Option<u64>;
    /// Returns one frame (frames of a large run are returned one at a time).
    fn free_frame(&mut self, hpa: u64);
    /// Copies bytes from host-physical `hpa` into `buf`.
    ///
    /// # Safety
    /// `hpa..hpa + buf.len()` lies inside one frame taken from this source and not yet
    /// returned.
    unsafe fn read(&self, hpa: u64, buf: &mut [u8]);
    /// Copies `data` to host-physical `hpa`.
    ///
    /// # Safety
    /// As for [`FrameSource::read`], with `data.len()`.
    unsafe fn write(&mut self, hpa: u64, data: &[u8]);
    /// Sets `len` bytes at host-physical `hpa` to `byte`.
    ///
    /// # Safety
    /// As for [`FrameSource::read`], with `len`.
    unsafe fn fill(&mut self, hpa: u64, len: usize, byte: u8);
}

/// A guest-physical range that is not all guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// Start of the range.
    pub gpa: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "guest range {:#x} + {:#x} is outside guest memory", self.gpa, self.len)
    }
}

/// Why guest memory could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The size is not a multiple of 2 MiB inside the layout's limits.
    BadSize {
        /// Bytes asked for.
        bytes: u64,
    },
    /// The frame source (or the heap, for the frame list) ran out.
    OutOfFrames,
    /// The nested page-table builder refused.
    Map(MapError),
    /// A shared mapping that is not page-aligned, overflows, or overlaps guest RAM.
    BadShared {
        /// Guest-physical start asked for.
        gpa: u64,
        /// Host-physical start asked for.
        hpa: u64,
        /// Length asked for.
        len: u64,
    },
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemError::BadSize { bytes } => write!(
                f,
                "guest memory of {bytes:#x} bytes is not a multiple of 2 MiB between {} and {} MiB",
                crx_abi::layout::MEM_MIN >> 20,
                crx_abi::layout::MEM_MAX >> 20
            ),
            MemError::OutOfFrames => write!(f, "out of host memory for guest memory"),
            MemError::Map(e) => write!(f, "nested page tables: {e}"),
            MemError::BadShared { gpa, hpa, len } => {
                write!(f, "cannot share {len:#x} bytes of host {hpa:#x} at guest {gpa:#x}")
            }
        }
    }
}

/// The leaf flags of a nested mapping of RAM in `format`.
pub fn leaf_flags(format: NestedFormat) -> Flags {
    match format {
        // NPT walks are user accesses (AMD APM Vol. 2 15.25.5): leaves need U as well.
        NestedFormat::Npt => Flags::PRESENT | Flags::WRITABLE | Flags::USER,
        // EPT (SDM Vol. 3C 29.3.2): R, W, X in bits 0-2 and memory type WB (6) in bits 3-5.
        // The builder gives non-leaf entries P|W|U, which EPT reads as R|W|X.
        NestedFormat::Ept => Flags::from_bits_retain(0x37),
    }
}

/// The leaf flags of a read-only nested mapping in `format`: no write permission (a
/// guest write is a nested page fault), and no execute permission on EPT.
pub fn readonly_leaf_flags(format: NestedFormat) -> Flags {
    match format {
        // NPT: P and U without W (AMD APM Vol. 2 15.25.5).
        NestedFormat::Npt => Flags::PRESENT | Flags::USER,
        // EPT: R only (bit 0) and memory type WB (6) in bits 3-5 (SDM Vol. 3C 29.3.2).
        NestedFormat::Ept => Flags::from_bits_retain(0x31),
    }
}

fn map_error(e: MapError) -> MemError {
    match e {
        MapError::OutOfFrames => MemError::OutOfFrames,
        e => MemError::Map(e),
    }
}

/// Nested table frames, taken from the source and remembered for the drop.
struct Tables<'a, F: FrameSource> {
    src: &'a mut F,
    frames: &'a mut Vec<u64>,
}

impl<F: FrameSource> TableMemory for Tables<'_, F> {
    fn alloc_table(&mut self) -> Option<u64> {
        self.frames.try_reserve(1).ok()?;
        let f = self.src.alloc_frame()?;
        self.frames.push(f);
        // SAFETY: `f` was just taken from the source and is a whole frame.
        unsafe { self.src.fill(f, PAGE_SIZE as usize, 0) };
        Some(f)
    }

    fn read_entry(&self, table: u64, index: usize) -> u64 {
        let mut b = [0u8; 8];
        // SAFETY: `PageTables` passes only its root and addresses it read from present
        // non-leaf entries, all of which hold table frames `alloc_table` took from this
        // source (leaves are never followed); the index is masked to 512 entries of 8
        // bytes, so the read stays inside the frame.
        unsafe { self.src.read(table + (index as u64 % 512) * 8, &mut b) };
        u64::from_le_bytes(b)
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: as in `read_entry`.
        unsafe { self.src.write(table + (index as u64 % 512) * 8, &value.to_le_bytes()) };
    }
}

/// A VM's memory: guest-physical `0..size_bytes()`.
pub struct GuestMemory<F: FrameSource> {
    src: F,
    /// Host frame of each 4 KiB guest page, in guest-physical order.
    pages: Vec<u64>,
    /// Frames holding nested page tables (the root first).
    tables: Vec<u64>,
    root: u64,
    large_pages: usize,
    bytes: u64,
    format: NestedFormat,
    /// Shared read-only ranges: (guest-physical, host-physical, bytes), page-aligned.
    shared: Vec<(u64, u64, u64)>,
}

impl<F: FrameSource> GuestMemory<F> {
    /// Takes `bytes` of guest memory (a multiple of 2 MiB between
    /// [`crx_abi::layout::MEM_MIN`] and [`crx_abi::layout::MEM_MAX`]) from `src`, zeroed,
    /// and maps it with nested tables in `format`. On failure every frame taken so far
    /// goes back.
    pub fn new(src: F, bytes: u64, format: NestedFormat) -> Result<Self, MemError> {
        use crx_abi::layout::{MEM_MAX, MEM_MIN};
        if !(MEM_MIN..=MEM_MAX).contains(&bytes) || !bytes.is_multiple_of(LARGE_BYTES) {
            return Err(MemError::BadSize { bytes });
        }
        let mut m = GuestMemory {
            src,
            pages: Vec::new(),
            tables: Vec::new(),
            root: 0,
            large_pages: 0,
            bytes,
            format,
            shared: Vec::new(),
        };
        let page_count = (bytes / PAGE_SIZE) as usize;
        m.pages.try_reserve_exact(page_count).map_err(|_| MemError::OutOfFrames)?;
        m.tables.try_reserve(8).map_err(|_| MemError::OutOfFrames)?;
        m.root =
            PageTables::new(Tables { src: &mut m.src, frames: &mut m.tables }).map_err(map_error)?.root();
        let flags = leaf_flags(format);
        for chunk in 0..bytes / LARGE_BYTES {
            let gpa = chunk * LARGE_BYTES;
            if let Some(run) = m.src.alloc_large() {
                for k in 0..FRAMES_PER_LARGE as u64 {
                    m.pages.push(run + k * PAGE_SIZE);
                }
                m.large_pages += 1;
                m.tables().map(gpa, run, PageSize::Size2M, flags).map_err(map_error)?;
            } else {
                for k in 0..FRAMES_PER_LARGE as u64 {
                    let f = m.src.alloc_frame().ok_or(MemError::OutOfFrames)?;
                    m.pages.push(f);
                    m.tables().map(gpa + k * PAGE_SIZE, f, PageSize::Size4K, flags).map_err(map_error)?;
                }
            }
        }
        for i in 0..m.pages.len() {
            let f = m.pages[i];
            // SAFETY: every entry of `pages` is a whole frame taken from `src` above.
            unsafe { m.src.fill(f, PAGE_SIZE as usize, 0) };
        }
        Ok(m)
    }

    fn tables(&mut self) -> PageTables<Tables<'_, F>> {
        PageTables::from_root(self.root, Tables { src: &mut self.src, frames: &mut self.tables })
    }

    /// Guest memory in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// Host-physical address of the nested PML4 (for the backend).
    pub fn nested_root(&self) -> u64 {
        self.root
    }

    /// Host bytes spent on nested page tables.
    pub fn table_bytes(&self) -> u64 {
        self.tables.len() as u64 * PAGE_SIZE
    }

    /// How many 2 MiB chunks are backed by one aligned run (the rest use single frames).
    pub fn large_pages(&self) -> usize {
        self.large_pages
    }

    /// Frames held, data and tables.
    pub fn frames_held(&self) -> usize {
        self.pages.len() + self.tables.len()
    }

    /// Host-physical address of guest-physical `gpa`, if it is guest memory.
    pub fn translate(&self, gpa: u64) -> Option<u64> {
        let page = usize::try_from(gpa / PAGE_SIZE).ok()?;
        self.pages.get(page).map(|f| f + gpa % PAGE_SIZE)
    }

    /// Checks that `gpa..gpa + len` is all guest memory.
    pub fn check(&self, gpa: u64, len: u64) -> Result<(), OutOfRange> {
        pieces_of(&self.pages, self.bytes, gpa, len).map(|_| ())
    }

    /// Splits `gpa..gpa + len` at frame boundaries after checking the whole range
    /// (nothing is touched when any byte is outside): `(hpa, offset, n)` per piece.
    fn pieces(&self, gpa: u64, len: u64) -> Result<Pieces<'_>, OutOfRange> {
        pieces_of(&self.pages, self.bytes, gpa, len)
    }

    /// Copies guest memory at `gpa` into `buf`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        for (hpa, off, n) in self.pieces(gpa, buf.len() as u64)? {
            if let Some(dst) = buf.get_mut(off..off + n) {
                // SAFETY: `hpa..hpa + n` lies in one guest frame (`Pieces` never crosses a
                // frame boundary), which `src` gave us and we still hold.
                unsafe { self.src.read(hpa, dst) };
            }
        }
        Ok(())
    }

    /// Copies `data` into guest memory at `gpa`.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let pieces = pieces_of(&self.pages, self.bytes, gpa, data.len() as u64)?;
        for (hpa, off, n) in pieces {
            if let Some(part) = data.get(off..off + n) {
                // SAFETY: as in `read`.
                unsafe { self.src.write(hpa, part) };
            }
        }
        Ok(())
    }

    /// Sets `len` bytes at `gpa` to `byte`.
    pub fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), OutOfRange> {
        for (hpa, _, n) in pieces_of(&self.pages, self.bytes, gpa, len)? {
            // SAFETY: as in `read`.
            unsafe { self.src.fill(hpa, n, byte) };
        }
        Ok(())
    }

    /// Writes a little-endian `u64` at `gpa`.
    pub fn write_u64(&mut self, gpa: u64, value: u64) -> Result<(), OutOfRange> {
        self.write(gpa, &value.to_le_bytes())
    }

    /// Reads a little-endian `u64` at `gpa`.
    pub fn read_u64(&self, gpa: u64) -> Result<u64, OutOfRange> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The frame source (for its accounting).
    pub fn source(&self) -> &F {
        &self.src
    }

    /// Maps host-physical `hpa..hpa + len` (rounded up to whole pages) read-only at
    /// guest-physical `gpa`, above guest RAM, with 4 KiB nested pages. The frames stay
    /// their owner's: this memory never touches their bytes and never frees them, and the
    /// caller keeps them alive and unchanged for as long as the VM runs.
    ///
    /// `gpa` and `hpa` must be page-aligned and the range must lie above guest RAM and
    /// not overlap an earlier shared range. On failure nothing of the range stays mapped
    /// except what the nested tables of the VM hold until the drop.
    pub fn map_shared_readonly(&mut self, gpa: u64, hpa: u64, len: u64) -> Result<(), MemError> {
        let bad = MemError::BadShared { gpa, hpa, len };
        let bytes = len.checked_next_multiple_of(PAGE_SIZE).ok_or(bad)?;
        if !gpa.is_multiple_of(PAGE_SIZE) || !hpa.is_multiple_of(PAGE_SIZE) || gpa < self.bytes {
            return Err(bad);
        }
        gpa.checked_add(bytes).ok_or(bad)?;
        hpa.checked_add(bytes).ok_or(bad)?;
        if self.shared.iter().any(|&(g, _, n)| gpa < g + n && g < gpa + bytes) {
            return Err(bad);
        }
        self.shared.try_reserve(1).map_err(|_| MemError::OutOfFrames)?;
        let flags = readonly_leaf_flags(self.format);
        let mut done = 0;
        while done < bytes {
            let r = self.tables().map(gpa + done, hpa + done, PageSize::Size4K, flags);
            if let Err(e) = r {
                // Take back what this call mapped, so a retry elsewhere is clean.
                let mut undo = 0;
                while undo < done {
                    let _ = self.tables().unmap(gpa + undo, PageSize::Size4K);
                    undo += PAGE_SIZE;
                }
                return Err(map_error(e));
            }
            done += PAGE_SIZE;
        }
        self.shared.push((gpa, hpa, bytes));
        Ok(())
    }

    /// Bytes of shared read-only mappings.
    pub fn shared_bytes(&self) -> u64 {
        self.shared.iter().map(|&(_, _, n)| n).sum()
    }

    /// Host-physical address behind guest-physical `gpa` in a shared range.
    pub fn translate_shared(&self, gpa: u64) -> Option<u64> {
        self.shared.iter().find(|&&(g, _, n)| gpa >= g && gpa - g < n).map(|&(g, h, _)| h + (gpa - g))
    }
}

/// The pieces of a checked guest range (see [`GuestMemory::pieces`]). Borrows only the
/// page list, so the frame source stays free for writing.
struct Pieces<'a> {
    pages: &'a [u64],
    gpa: u64,
    len: u64,
    done: u64,
}

fn pieces_of(pages: &[u64], bytes: u64, gpa: u64, len: u64) -> Result<Pieces<'_>, OutOfRange> {
    match gpa.checked_add(len) {
        Some(end) if end <= bytes => Ok(Pieces { pages, gpa, len, done: 0 }),
        _ => Err(OutOfRange { gpa, len }),
    }
}

impl Iterator for Pieces<'_> {
    type Item = (u64, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done >= self.len {
            return None;
        }
        let at = self.gpa + self.done;
        let n = (PAGE_SIZE - at % PAGE_SIZE).min(self.len - self.done);
        // In range: checked against the memory's size when the iterator was made.
        let frame = usize::try_from(at / PAGE_SIZE).ok().and_then(|p| self.pages.get(p))?;
        let piece = (frame + at % PAGE_SIZE, self.done as usize, n as usize);
        self.done += n;
        Some(piece)
    }
}

impl<F: FrameSource> Drop for GuestMemory<F> {
    fn drop(&mut self) {
        for &f in self.pages.iter().chain(self.tables.iter()) {
            self.src.free_frame(f);
        }
        self.pages.clear();
        self.tables.clear();
    }
}

#[cfg(test)]
pub mod arena {
    //! A frame source over a heap buffer, for host tests.
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// The arena's state, shared so tests can look at it after the memory is dropped.
    pub struct State {
        /// Fake host-physical address of byte 0.
        pub base: u64,
        /// The bytes.
        pub bytes: Vec<u8>,
        /// Which frames are taken.
        pub taken: Vec<bool>,
        /// Whether large runs may be handed out.
        pub large_ok: bool,
        /// Frames still allowed to be taken (to simulate exhaustion).
        pub budget: usize,
    }

    impl State {
        /// Frames taken now.
        pub fn taken_count(&self) -> usize {
            self.taken.iter().filter(|t| **t).count()
        }
        fn index(&self, hpa: u64, len: usize) -> usize {
            let off = (hpa - self.base) as usize;
            assert!(self.taken[off / 4096], "access to a frame not taken: {hpa:#x}");
            assert!(off % 4096 + len <= 4096, "access crosses a frame");
            off
        }
    }

    /// A cloneable handle on a [`State`].
    #[derive(Clone)]
    pub struct Arena(pub Rc<RefCell<State>>);

    impl Arena {
        /// An arena of `mib` MiB at fake address 4 GiB, 2 MiB aligned.
        pub fn new(mib: usize) -> Self {
            let frames = mib * 256;
            Arena(Rc::new(RefCell::new(State {
                base: 1 << 32,
                bytes: vec![0xa5; frames * 4096],
                taken: vec![false; frames],
                large_ok: true,
                budget: usize::MAX,
            })))
        }
    }

    impl FrameSource for Arena {
        fn alloc_frame(&mut self) -> Option<u64> {
            let mut s = self.0.borrow_mut();
            if s.budget == 0 {
                return None;
            }
            let i = s.taken.iter().position(|t| !*t)?;
            s.taken[i] = true;
            s.budget -= 1;
            Some(s.base + i as u64 * 4096)
        }
        fn alloc_large(&mut self) -> Option<u64> {
            let mut s = self.0.borrow_mut();
            if !s.large_ok || s.budget < FRAMES_PER_LARGE {
                return None;
            }
            let n = s.taken.len() / FRAMES_PER_LARGE;
            let c = (0..n)
                .find(|c| s.taken[c * FRAMES_PER_LARGE..(c + 1) * FRAMES_PER_LARGE].iter().all(|t| !*t))?;
            s.taken[c * FRAMES_PER_LARGE..(c + 1) * FRAMES_PER_LARGE].fill(true);
            s.budget -= FRAMES_PER_LARGE;
            Some(s.base + (c * FRAMES_PER_LARGE) as u64 * 4096)
        }
        fn free_frame(&mut self, hpa: u64) {
            let mut s = self.0.borrow_mut();
            let i = ((hpa - s.base) / 4096) as usize;
            assert!(s.taken[i], "double free of {hpa:#x}");
            s.taken[i] = false;
            if s.budget != usize::MAX {
                s.budget += 1;
            }
        }
        unsafe fn read(&self, hpa: u64, buf: &mut [u8]) {
            let s = self.0.borrow();
            let off = s.index(hpa, buf.len());
            buf.copy_from_slice(&s.bytes[off..off + buf.len()]);
        }
        unsafe fn write(&mut self, hpa: u64, data: &[u8]) {
            let mut s = self.0.borrow_mut();
            let off = s.index(hpa, data.len());
            s.bytes[off..off + data.len()].copy_from_slice(data);
        }
        unsafe fn fill(&mut self, hpa: u64, len: usize, byte: u8) {
            let mut s = self.0.borrow_mut();
            let off = s.index(hpa, len);
            s.bytes[off..off + len].fill(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::arena::Arena;
    use super::*;
    use crate::mm::paging::{PageSize, PageTables, TableMemory};

    const MIB: u64 = 1 << 20;

    /// Reads nested tables straight out of the arena.
    struct View(Arena);
    impl TableMemory for View {
        fn alloc_table(&mut self) -> Option<u64> {
            None
        }
        fn read_entry(&self, table: u64, index: usize) -> u64 {
            let s = self.0 .0.borrow();
            let off = (table - s.base) as usize + index * 8;
            u64::from_le_bytes(s.bytes[off..off + 8].try_into().unwrap())
        }
        fn write_entry(&mut self, _: u64, _: usize, _: u64) {}
    }

    #[test]
    fn maps_every_page_with_large_pages_and_zeroes_it() {
        let a = Arena::new(32);
        let m = GuestMemory::new(a.clone(), 8 * MIB, NestedFormat::Npt).unwrap();
        assert_eq!(m.size_bytes(), 8 * MIB);
        assert_eq!(m.large_pages(), 4);
        let t = PageTables::from_root(m.nested_root(), View(a.clone()));
        for gpa in [0, 0x1234, 2 * MIB + 5, 8 * MIB - 1] {
            let tr = t.translate(gpa).unwrap();
            assert_eq!(Some(tr.phys), m.translate(gpa), "at {gpa:#x}");
            assert_eq!(tr.size, PageSize::Size2M);
            assert_eq!(tr.flags, Flags::PRESENT | Flags::WRITABLE | Flags::USER);
        }
        assert!(t.translate(8 * MIB).is_err());
        let mut buf = [0xffu8; 64];
        m.read(8 * MIB - 64, &mut buf).unwrap();
        assert_eq!(buf, [0; 64], "the arena starts at 0xa5: guest memory must be zeroed");
        assert_eq!(a.0.borrow().taken_count(), m.frames_held());
    }

    #[test]
    fn falls_back_to_small_frames_and_ept_flags() {
        let a = Arena::new(16);
        a.0.borrow_mut().large_ok = false;
        let m = GuestMemory::new(a.clone(), 2 * MIB, NestedFormat::Ept).unwrap();
        assert_eq!(m.large_pages(), 0);
        let t = PageTables::from_root(m.nested_root(), View(a.clone()));
        let tr = t.translate(0x3008).unwrap();
        assert_eq!(tr.size, PageSize::Size4K);
        assert_eq!(Some(tr.phys), m.translate(0x3008));
        // The leaf's 0x37 reads back, in paging terms, as P|W|U plus bit 4 (PCD); bit 5
        // (memory type's top bit, "accessed" to the builder) is not reported.
        assert_eq!(tr.flags, Flags::PRESENT | Flags::WRITABLE | Flags::USER | Flags::NO_CACHE);
        assert_eq!(leaf_flags(NestedFormat::Ept).bits(), 0x37);
        assert_eq!(t.translate(2 * MIB - 1).unwrap().phys, m.translate(2 * MIB - 1).unwrap());
    }

    #[test]
    fn reads_and_writes_cross_frames() {
        let a = Arena::new(16);
        a.0.borrow_mut().large_ok = false;
        let mut m = GuestMemory::new(a, 2 * MIB, NestedFormat::Npt).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        m.write(0x1ff0, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        m.read(0x1ff0, &mut back).unwrap();
        assert_eq!(back, data);
        m.fill(0x2000, 3, 9).unwrap();
        let mut b = [0u8; 5];
        m.read(0x1fff, &mut b).unwrap();
        assert_eq!(b, [data[15], 9, 9, 9, data[19]]);
        m.write_u64(2 * MIB - 8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(m.read_u64(2 * MIB - 8), Ok(0x1122_3344_5566_7788));
    }

    #[test]
    fn wild_ranges_are_refused_without_panicking() {
        let a = Arena::new(8);
        let mut m = GuestMemory::new(a, 2 * MIB, NestedFormat::Npt).unwrap();
        let end = 2 * MIB;
        let mut one = [0u8; 1];
        let mut two = [0u8; 2];
        assert!(m.read(end - 1, &mut one).is_ok());
        assert_eq!(m.read(end, &mut one), Err(OutOfRange { gpa: end, len: 1 }));
        assert_eq!(m.read(end - 1, &mut two), Err(OutOfRange { gpa: end - 1, len: 2 }));
        assert!(m.read(u64::MAX, &mut one).is_err());
        assert!(m.write(u64::MAX - 1, &[0; 4]).is_err());
        assert!(m.fill(0, u64::MAX, 0).is_err());
        assert!(m.fill(1, u64::MAX, 0).is_err(), "wraps around");
        assert!(m.fill(end, 0, 0).is_ok(), "an empty range at the end is fine");
        assert!(m.fill(end + 1, 0, 0).is_err());
        assert!(m.check(0, end).is_ok());
        assert!(m.check(0, end + 1).is_err());
        assert_eq!(m.translate(u64::MAX), None);
        assert_eq!(m.read_u64(end - 4), Err(OutOfRange { gpa: end - 4, len: 8 }));
    }

    #[test]
    fn drop_returns_every_frame_even_after_a_failure() {
        let a = Arena::new(16);
        {
            let m = GuestMemory::new(a.clone(), 4 * MIB, NestedFormat::Ept).unwrap();
            assert_eq!(m.table_bytes(), 3 * 4096, "PML4, PDPT, one PD of 2 MiB leaves");
            assert_eq!(a.0.borrow().taken_count(), m.frames_held());
        }
        assert_eq!(a.0.borrow().taken_count(), 0);
        // Exhaustion part-way, with and without large runs.
        for (large, budget) in [(false, 700), (true, 600), (false, 2), (true, 0)] {
            {
                let mut s = a.0.borrow_mut();
                s.large_ok = large;
                s.budget = budget;
            }
            assert_eq!(
                GuestMemory::new(a.clone(), 4 * MIB, NestedFormat::Npt).err(),
                Some(MemError::OutOfFrames)
            );
            assert_eq!(a.0.borrow().taken_count(), 0, "large={large} budget={budget}");
        }
    }

    #[test]
    fn the_host_keeps_its_reserve() {
        let reserve = HOST_RESERVE_BYTES / PAGE_SIZE;
        assert_eq!(frames_needed(2 * MIB), 512 + 1 + 1 + 1 + 1);
        assert_eq!(frames_needed(4096 * MIB), 1 << 20 | (1 + 1 + 4 + 2048));
        let need = frames_needed(16 * MIB);
        assert!(leaves_host_reserve(need + reserve, 16 * MIB));
        assert!(!leaves_host_reserve(need + reserve - 1, 16 * MIB));
        assert!(!leaves_host_reserve(0, 2 * MIB));
        assert!(!leaves_host_reserve(1 << 40, u64::MAX), "no overflow");
        assert!(leaves_host_reserve(u64::MAX, u64::MAX), "no overflow");
        // The estimate covers what construction really takes, in the worst case.
        let a = Arena::new(16);
        a.0.borrow_mut().large_ok = false;
        let m = GuestMemory::new(a, 8 * MIB, NestedFormat::Npt).unwrap();
        assert!(m.frames_held() as u64 <= frames_needed(8 * MIB), "{} held", m.frames_held());
    }

    #[test]
    fn shared_readonly_mappings_are_mapped_and_never_freed() {
        use crx_abi::layout::LAYERS_BASE;
        for format in [NestedFormat::Npt, NestedFormat::Ept] {
            let a = Arena::new(16);
            a.0.borrow_mut().large_ok = false;
            // Three frames owned by someone else (a boot module), with known bytes.
            let mut owner = a.clone();
            let f0 = owner.alloc_frame().unwrap();
            let f1 = owner.alloc_frame().unwrap();
            let f2 = owner.alloc_frame().unwrap();
            assert_eq!((f1 - f0, f2 - f1), (4096, 4096), "the arena hands out frames in order");
            // SAFETY: test frames just taken from the arena.
            unsafe { owner.fill(f1, 4096, 0x77) };
            let frames_before = a.0.borrow().taken_count();
            {
                let mut m = GuestMemory::new(a.clone(), 2 * MIB, format).unwrap();
                m.map_shared_readonly(LAYERS_BASE, f0, 4096 + 10).unwrap();
                m.map_shared_readonly(LAYERS_BASE + 2 * 4096, f2, 4096).unwrap();
                assert_eq!(m.shared_bytes(), 3 * 4096);
                let t = PageTables::from_root(m.nested_root(), View(a.clone()));
                let tr = t.translate(LAYERS_BASE + 4096 + 5).unwrap();
                assert_eq!(tr.phys, f1 + 5);
                assert_eq!(tr.size, PageSize::Size4K);
                assert!(!tr.flags.contains(Flags::WRITABLE), "{format:?}: read-only");
                assert!(tr.flags.contains(Flags::PRESENT), "{format:?}: readable");
                assert_eq!(t.translate(LAYERS_BASE + 2 * 4096).unwrap().phys, f2);
                assert!(t.translate(LAYERS_BASE + 3 * 4096).is_err());
                assert_eq!(m.translate_shared(LAYERS_BASE + 4097), Some(f1 + 1));
                assert_eq!(m.translate_shared(LAYERS_BASE + 3 * 4096), None);
                // Guest RAM reads never reach the shared range.
                let mut b = [0u8; 1];
                assert!(m.read(LAYERS_BASE + 4096, &mut b).is_err());
                // Refusals: misaligned, inside RAM, overlapping, wrapping.
                let bad = |m: &mut GuestMemory<Arena>, g: u64, h: u64, l: u64| {
                    assert_eq!(
                        m.map_shared_readonly(g, h, l),
                        Err(MemError::BadShared { gpa: g, hpa: h, len: l })
                    )
                };
                bad(&mut m, LAYERS_BASE + 8 * 4096 + 1, f0, 4096);
                bad(&mut m, LAYERS_BASE + 8 * 4096, f0 + 8, 4096);
                bad(&mut m, 0x10_0000, f0, 4096);
                bad(&mut m, LAYERS_BASE + 4096, f0, 4096);
                bad(&mut m, LAYERS_BASE - 4096, f0, 3 * 4096);
                bad(&mut m, !4095, f0, 8192);
                bad(&mut m, LAYERS_BASE + 8 * 4096, f0, u64::MAX);
                assert_eq!(m.shared_bytes(), 3 * 4096, "refusals map nothing");
            }
            // The VM's own frames are back; the shared frames are still the owner's and
            // hold what they held.
            let s = a.0.borrow();
            assert_eq!(s.taken_count(), frames_before);
            assert!(s.taken[((f1 - s.base) / 4096) as usize]);
            let off = (f1 - s.base) as usize;
            assert!(s.bytes[off..off + 4096].iter().all(|&b| b == 0x77));
        }
    }

    #[test]
    fn sizes_are_checked() {
        let a = Arena::new(8);
        for bytes in [0, MIB, 3 * MIB, 2 * MIB + 4096, 8 << 30, u64::MAX] {
            assert_eq!(
                GuestMemory::new(a.clone(), bytes, NestedFormat::Npt).err(),
                Some(MemError::BadSize { bytes })
            );
        }
        assert_eq!(a.0.borrow().taken_count(), 0);
    }
}
