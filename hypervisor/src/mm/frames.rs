//! The physical frame allocator: one bit per 4 KiB frame over caller-provided storage.
//!
//! Two bitmaps cover `[base, base + frames * 4096)`: `owned` says which frames the
//! allocator manages at all (usable RAM minus reserved ranges), `free` which of those are
//! free now. Keeping both lets [`FrameAllocator::free`] tell a double free from a frame
//! that was never the allocator's, and report either as a typed error.
//!
//! Contract: no memory map, reserved list or argument makes this module panic.
#![deny(unsafe_code)]

use super::PAGE_SIZE;
use core::fmt;
use core::ops::Range;

const BITS: u64 = 64;

/// Why a frame operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is already free.
    DoubleFree(u64),
    /// The frame is not one the allocator manages (reserved, a hole, out of range).
    Foreign(u64),
    /// The address is not a multiple of 4 KiB.
    Misaligned(u64),
    /// No free run of the requested size, alignment and limit exists.
    OutOfFrames,
    /// A run of zero frames, or an alignment that is not a power of two.
    BadRequest,
    /// The bitmap storage is smaller than [`FrameAllocator::storage_words`] requires.
    StorageTooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        given: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::DoubleFree(a) => write!(f, "frame {a:#x} freed twice"),
            FrameError::Foreign(a) => write!(f, "frame {a:#x} does not belong to the allocator"),
            FrameError::Misaligned(a) => write!(f, "address {a:#x} is not 4 KiB aligned"),
            FrameError::OutOfFrames => write!(f, "out of physical frames"),
            FrameError::BadRequest => write!(f, "empty run or alignment not a power of two"),
            FrameError::StorageTooSmall { needed, given } => {
                write!(f, "bitmap storage holds {given} words, {needed} needed")
            }
        }
    }
}

/// The frame span `[base, end)` a set of usable ranges covers, in whole frames, ignoring
/// everything below `floor`. `None` when nothing usable lies above the floor.
pub fn span(usable: &[Range<u64>], floor: u64) -> Option<Range<u64>> {
    let mut lo = u64::MAX;
    let mut hi = 0;
    for r in usable {
        let s = align_up(r.start.max(floor))?;
        let e = r.end / PAGE_SIZE * PAGE_SIZE;
        if s < e {
            lo = lo.min(s);
            hi = hi.max(e);
        }
    }
    (lo < hi).then_some(lo..hi)
}

/// The first address `a` (a multiple of `align`, a power of two) such that `[a, a + len)`
/// lies inside one usable range, below `limit`, and overlaps no reserved range.
pub fn first_fit(
    usable: &[Range<u64>],
    reserved: &[Range<u64>],
    len: u64,
    align: u64,
    limit: u64,
) -> Option<u64> {
    if len == 0 || !align.is_power_of_two() {
        return None;
    }
    let fits = |a: u64| -> bool {
        let Some(end) = a.checked_add(len) else { return false };
        end <= limit
            && usable.iter().any(|u| u.start <= a && end <= u.end)
            && !reserved.iter().any(|r| r.start < end && a < r.end)
    };
    // The lowest fit starts at a usable start or at a reserved end, rounded up.
    let candidates = usable.iter().map(|u| u.start).chain(reserved.iter().map(|r| r.end));
    candidates.filter_map(|c| c.checked_add(align - 1).map(|x| x & !(align - 1))).filter(|&a| fits(a)).min()
}

fn align_up(a: u64) -> Option<u64> {
    a.checked_add(PAGE_SIZE - 1).map(|x| x / PAGE_SIZE * PAGE_SIZE)
}

/// A bitmap frame allocator.
pub struct FrameAllocator<'a> {
    /// Physical address of frame 0 of the bitmap.
    base: u64,
    /// Frames the bitmaps cover.
    frames: u64,
    owned: &'a mut [u64],
    free: &'a mut [u64],
    free_count: usize,
    total: usize,
    /// Word index where the next single-frame search starts.
    hint: usize,
}

impl fmt::Debug for FrameAllocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("base", &self.base)
            .field("frames", &self.frames)
            .field("free", &self.free_count)
            .field("total", &self.total)
            .finish()
    }
}

impl<'a> FrameAllocator<'a> {
    /// Words of storage needed for a span of `frames` frames (both bitmaps).
    pub fn storage_words(frames: u64) -> usize {
        (frames.div_ceil(BITS) as usize).saturating_mul(2)
    }

    /// Builds an allocator over `span` (frame-aligned, from [`span`]): every frame of a
    /// `usable` range that no `reserved` range touches becomes free. Ranges may be
    /// unaligned (usable ones shrink to whole frames, reserved ones grow), overlap, or
    /// lie partly outside the span.
    pub fn new(
        storage: &'a mut [u64],
        span: Range<u64>,
        usable: &[Range<u64>],
        reserved: &[Range<u64>],
    ) -> Result<Self, FrameError> {
        let base = span.start / PAGE_SIZE * PAGE_SIZE;
        let frames = span.end.saturating_sub(base) / PAGE_SIZE;
        let words = (frames.div_ceil(BITS)) as usize;
        let needed = words.saturating_mul(2);
        if storage.len() < needed {
            return Err(FrameError::StorageTooSmall { needed, given: storage.len() });
        }
        let (owned, rest) = storage.split_at_mut(words);
        let free = &mut rest[..words];
        owned.fill(0);
        let mut fa = FrameAllocator { base, frames, owned, free, free_count: 0, total: 0, hint: 0 };
        for u in usable {
            let (s, e) = fa.clip(u.start.div_ceil(PAGE_SIZE), u.end / PAGE_SIZE);
            set_bits(fa.owned, s, e, true);
        }
        for r in reserved {
            let (s, e) = fa.clip(r.start / PAGE_SIZE, r.end.div_ceil(PAGE_SIZE));
            set_bits(fa.owned, s, e, false);
        }
        fa.free.copy_from_slice(fa.owned);
        let count: usize = fa.owned.iter().map(|w| w.count_ones() as usize).sum();
        fa.free_count = count;
        fa.total = count;
        Ok(fa)
    }

    /// Clips an absolute frame-number range to bitmap indices.
    fn clip(&self, start_frame: u64, end_frame: u64) -> (u64, u64) {
        let first = self.base / PAGE_SIZE;
        let s = start_frame.saturating_sub(first).min(self.frames);
        let e = end_frame.saturating_sub(first).min(self.frames);
        (s, e.max(s))
    }

    /// Frames free now.
    pub fn free_count(&self) -> usize {
        self.free_count
    }

    /// Frames the allocator manages, free or not.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The physical range the bitmaps cover.
    pub fn covered(&self) -> Range<u64> {
        self.base..self.base + self.frames * PAGE_SIZE
    }

    fn index_of(&self, paddr: u64) -> Result<u64, FrameError> {
        if !paddr.is_multiple_of(PAGE_SIZE) {
            return Err(FrameError::Misaligned(paddr));
        }
        let i = paddr.checked_sub(self.base).ok_or(FrameError::Foreign(paddr))? / PAGE_SIZE;
        if i >= self.frames || !get_bit(self.owned, i) {
            return Err(FrameError::Foreign(paddr));
        }
        Ok(i)
    }

    fn paddr_of(&self, index: u64) -> u64 {
        self.base + index * PAGE_SIZE
    }

    /// Allocates one frame.
    pub fn alloc(&mut self) -> Result<u64, FrameError> {
        let n = self.free.len();
        for k in 0..n {
            let w = (self.hint + k) % n;
            let word = self.free.get(w).copied().unwrap_or(0);
            if word != 0 {
                let i = w as u64 * BITS + u64::from(word.trailing_zeros());
                set_bits(self.free, i, i + 1, false);
                self.free_count -= 1;
                self.hint = w;
                return Ok(self.paddr_of(i));
            }
        }
        Err(FrameError::OutOfFrames)
    }

    /// Allocates `count` contiguous frames whose first address is a multiple of
    /// `align_bytes` (a power of two, at least 4 KiB is implied) and whose last byte lies
    /// below `limit`. Returns the first address.
    pub fn alloc_run(&mut self, count: usize, align_bytes: u64, limit: u64) -> Result<u64, FrameError> {
        if count == 0 || !align_bytes.is_power_of_two() {
            return Err(FrameError::BadRequest);
        }
        let count = count as u64;
        let align = align_bytes.max(PAGE_SIZE);
        let mut a = self.base.checked_add(align - 1).ok_or(FrameError::OutOfFrames)? & !(align - 1);
        let end = self.covered().end.min(limit);
        while a.checked_add(count * PAGE_SIZE).is_some_and(|e| e <= end) {
            let i = (a - self.base) / PAGE_SIZE;
            // The first used frame in the candidate run, if any.
            match (i..i + count).find(|&j| !get_bit(self.free, j)) {
                None => {
                    set_bits(self.free, i, i + count, false);
                    self.free_count -= count as usize;
                    return Ok(a);
                }
                Some(j) => {
                    let next = self.paddr_of(j + 1);
                    a = match next.checked_add(align - 1) {
                        Some(x) => x & !(align - 1),
                        None => break,
                    };
                }
            }
        }
        Err(FrameError::OutOfFrames)
    }

    /// Returns one frame.
    pub fn free(&mut self, paddr: u64) -> Result<(), FrameError> {
        let i = self.index_of(paddr)?;
        if get_bit(self.free, i) {
            return Err(FrameError::DoubleFree(paddr));
        }
        set_bits(self.free, i, i + 1, true);
        self.free_count += 1;
        Ok(())
    }

    /// Returns `count` frames from `paddr` on; stops at the first frame that fails and
    /// reports it (the frames before it are free again).
    pub fn free_run(&mut self, paddr: u64, count: usize) -> Result<(), FrameError> {
        for k in 0..count as u64 {
            self.free(paddr.wrapping_add(k * PAGE_SIZE))?;
        }
        Ok(())
    }

    /// Whether the allocator manages `paddr`'s frame and it is free.
    pub fn is_free(&self, paddr: u64) -> bool {
        self.index_of(paddr).is_ok_and(|i| get_bit(self.free, i))
    }
}

fn get_bit(map: &[u64], i: u64) -> bool {
    map.get((i / BITS) as usize).is_some_and(|w| w & (1 << (i % BITS)) != 0)
}

/// Sets or clears bits `[s, e)`, a word at a time where it can.
fn set_bits(map: &mut [u64], mut s: u64, e: u64, value: bool) {
    while s < e {
        let w = (s / BITS) as usize;
        let bit = s % BITS;
        let n = (BITS - bit).min(e - s);
        let mask = if n == BITS { u64::MAX } else { ((1u64 << n) - 1) << bit };
        if let Some(word) = map.get_mut(w) {
            if value {
                *word |= mask;
            } else {
                *word &= !mask;
            }
        }
        s += n;
    }
}

#[cfg(test)]
// One-range memory maps are inputs like any other here.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const MIB: u64 = 1 << 20;

    fn build<'a>(
        store: &'a mut Vec<u64>,
        usable: &[Range<u64>],
        reserved: &[Range<u64>],
    ) -> FrameAllocator<'a> {
        let sp = span(usable, MIB).expect("something usable");
        store.resize(FrameAllocator::storage_words((sp.end - sp.start) / PAGE_SIZE), 0xdead);
        FrameAllocator::new(store, sp, usable, reserved).expect("storage sized")
    }

    #[test]
    fn holes_and_reserved_ranges_are_never_handed_out() {
        let usable = [0..0x9f000, MIB..8 * MIB, 16 * MIB..17 * MIB];
        // Kernel image, a module straddling a frame edge, a range overlapping the hole.
        let reserved = [0..MIB, 2 * MIB..3 * MIB, 0x500800..0x501800, 7 * MIB..16 * MIB + 0x1000];
        let mut store = Vec::new();
        let mut fa = build(&mut store, &usable, &reserved);
        // 1..2 MiB, 3..5 MiB, 5 MiB+0x2000..7 MiB, 16 MiB+4K..17 MiB.
        let expect = (MIB + 2 * MIB + (2 * MIB - 0x2000) + (MIB - 0x1000)) / PAGE_SIZE;
        assert_eq!(fa.total() as u64, expect);
        let mut seen = HashSet::new();
        while let Ok(a) = fa.alloc() {
            assert!(seen.insert(a), "frame {a:#x} handed out twice");
            let bad = reserved.iter().any(|r| r.start < a + PAGE_SIZE && a < r.end)
                || !usable.iter().any(|u| u.start <= a && a + PAGE_SIZE <= u.end);
            assert!(!bad, "frame {a:#x} is reserved or not usable");
        }
        assert_eq!(seen.len() as u64, expect);
        assert_eq!(fa.free_count(), 0);
        assert_eq!(fa.alloc(), Err(FrameError::OutOfFrames));
    }

    #[test]
    fn double_free_and_foreign_frames_are_errors() {
        let usable = [MIB..2 * MIB, 4 * MIB..5 * MIB];
        let reserved = [MIB..MIB + 0x1000];
        let mut store = Vec::new();
        let mut fa = build(&mut store, &usable, &reserved);
        let before = fa.free_count();
        let a = fa.alloc().unwrap();
        assert_eq!(fa.free_count(), before - 1);
        assert_eq!(fa.free(a), Ok(()));
        assert_eq!(fa.free(a), Err(FrameError::DoubleFree(a)));
        assert_eq!(fa.free(MIB), Err(FrameError::Foreign(MIB)), "reserved frame");
        assert_eq!(fa.free(3 * MIB), Err(FrameError::Foreign(3 * MIB)), "hole");
        assert_eq!(fa.free(0x1000), Err(FrameError::Foreign(0x1000)), "below the span");
        assert_eq!(fa.free(64 * MIB), Err(FrameError::Foreign(64 * MIB)), "above the span");
        assert_eq!(fa.free(a + 1), Err(FrameError::Misaligned(a + 1)));
        assert_eq!(fa.free(!0xfff), Err(FrameError::Foreign(!0xfff)));
        assert_eq!(fa.free_count(), before);
    }

    #[test]
    fn runs_respect_alignment_limit_and_holes() {
        let usable = [MIB..3 * MIB + 0x5000, 5 * MIB..9 * MIB];
        let mut store = Vec::new();
        let mut fa = build(&mut store, &usable, &[]);
        // 2..4 MiB runs past the first range's end and 4..6 MiB starts in the hole.
        let a = fa.alloc_run(512, 2 * MIB, u64::MAX).unwrap();
        assert_eq!(a, 6 * MIB);
        assert_eq!(fa.alloc_run(512, 2 * MIB, u64::MAX), Err(FrameError::OutOfFrames));
        // A run below a limit that cannot hold it.
        assert_eq!(fa.alloc_run(4, PAGE_SIZE, MIB + 0x3000), Err(FrameError::OutOfFrames));
        assert_eq!(fa.alloc_run(3, PAGE_SIZE, MIB + 0x3000), Ok(MIB));
        // The tail of the first range holds 5 frames, so 6 must come from 5 MiB on.
        fa.alloc_run(512 - 3, PAGE_SIZE, 3 * MIB).unwrap();
        assert_eq!(fa.alloc_run(6, PAGE_SIZE, u64::MAX), Ok(5 * MIB));
        assert_eq!(fa.alloc_run(5, PAGE_SIZE, u64::MAX), Ok(3 * MIB));
        assert_eq!(fa.alloc_run(0, PAGE_SIZE, u64::MAX), Err(FrameError::BadRequest));
        assert_eq!(fa.alloc_run(1, 3000, u64::MAX), Err(FrameError::BadRequest));
        let before = fa.free_count();
        fa.free_run(a, 512).unwrap();
        assert_eq!(fa.free_count(), before + 512);
        assert!(fa.is_free(a) && fa.is_free(a + 511 * PAGE_SIZE));
        assert!(!fa.is_free(5 * MIB));
    }

    #[test]
    fn free_run_reports_the_first_bad_frame() {
        let usable = [MIB..MIB + 0x4000];
        let mut store = Vec::new();
        let mut fa = build(&mut store, &usable, &[]);
        let a = fa.alloc_run(4, PAGE_SIZE, u64::MAX).unwrap();
        assert_eq!(fa.free_run(a, 5), Err(FrameError::Foreign(a + 4 * PAGE_SIZE)));
        assert_eq!(fa.free_count(), 4);
    }

    #[test]
    fn tiny_and_empty_maps() {
        assert_eq!(span(&[0..0x9f000], MIB), None, "all below 1 MiB");
        assert_eq!(span(&[MIB + 1..MIB + 0x1000], MIB), None, "no whole frame");
        let usable = [MIB..MIB + 0x1000];
        let mut store = Vec::new();
        let mut fa = build(&mut store, &usable, &[]);
        assert_eq!(fa.total(), 1);
        assert_eq!(fa.alloc(), Ok(MIB));
        assert_eq!(fa.alloc(), Err(FrameError::OutOfFrames));
        assert_eq!(fa.free(MIB), Ok(()));
        assert_eq!(fa.alloc(), Ok(MIB));
        // Everything reserved.
        let mut store = Vec::new();
        let mut fa = build(&mut store, &[MIB..2 * MIB], &[0..u64::MAX]);
        assert_eq!(fa.total(), 0);
        assert_eq!(fa.alloc(), Err(FrameError::OutOfFrames));
    }

    #[test]
    fn short_storage_is_an_error() {
        let mut store = vec![0u64; 3];
        let r = FrameAllocator::new(&mut store, MIB..MIB + 64 * 4 * PAGE_SIZE, &[MIB..2 * MIB], &[]);
        assert_eq!(r.unwrap_err(), FrameError::StorageTooSmall { needed: 8, given: 3 });
    }

    #[test]
    fn first_fit_avoids_reserved_and_respects_limit() {
        let usable = [0..0x9f000, MIB..64 * MIB];
        let reserved = [0..MIB, 2 * MIB..3 * MIB + 5];
        assert_eq!(first_fit(&usable, &reserved, MIB, PAGE_SIZE, u64::MAX), Some(MIB));
        assert_eq!(first_fit(&usable, &reserved, MIB + 1, PAGE_SIZE, u64::MAX), Some(3 * MIB + 0x1000));
        assert_eq!(first_fit(&usable, &reserved, 2 * MIB, PAGE_SIZE, 4 * MIB), None);
        assert_eq!(first_fit(&usable, &reserved, 128 * MIB, PAGE_SIZE, u64::MAX), None);
        assert_eq!(first_fit(&usable, &reserved, 0, PAGE_SIZE, u64::MAX), None);
    }

    #[test]
    fn exhaustion_then_refill_gives_back_the_same_count() {
        let usable = [MIB..MIB + 200 * PAGE_SIZE, 3 * MIB..3 * MIB + 77 * PAGE_SIZE];
        let mut store = Vec::new();
        let mut fa = build(&mut store, &usable, &[]);
        let total = fa.total();
        let got: Vec<u64> = std::iter::from_fn(|| fa.alloc().ok()).collect();
        assert_eq!(got.len(), total);
        for a in got.iter().rev() {
            fa.free(*a).unwrap();
        }
        assert_eq!(fa.free_count(), total);
        assert_eq!(fa.alloc_run(200, PAGE_SIZE, u64::MAX), Ok(MIB));
        assert_eq!(fa.alloc_run(77, PAGE_SIZE, u64::MAX), Ok(3 * MIB));
        assert_eq!(fa.alloc_run(1, PAGE_SIZE, u64::MAX), Err(FrameError::OutOfFrames));
    }
}
