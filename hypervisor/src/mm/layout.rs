//! The kernel's address-space plan: which identity-mapped range gets which permissions,
//! and the fixed higher-half regions.
//!
//! | virtual range | what |
//! |---|---|
//! | `0 .. 4 KiB` | unmapped: null dereferences fault |
//! | `4 KiB .. 4 GiB` | identity: RAM read-write, no-execute; everything else (MMIO, firmware, holes) read-write, no-execute, uncached (PCD+PWT) |
//! | `0x8000 .. 0x9000` | identity, read-write **and executable**: the AP start-up trampoline runs here in real mode and then in long mode with these tables |
//! | kernel image | `.text` read+execute, `.rodata` read-only no-execute, `.data`/`.bss` read-write no-execute, headers read-only no-execute |
//! | `boot_stack_guard` | unmapped: the page under the boot stack, so an overflow faults |
//! | RAM above 4 GiB | identity, read-write, no-execute |
//! | other addresses above 4 GiB | unmapped until [`super::map_mmio`] maps an MMIO range there |
//! | [`HEAP_START`] .. + [`HEAP_MAX_BYTES`] | the kernel heap, mapped as it grows |
//! | [`STACKS_START`] .. + [`STACKS_MAX_BYTES`] | kernel stacks, each with an unmapped guard page below |
//!
//! Contract: no memory map makes [`plan`] panic; too fragmented a map is a [`LayoutError`].
#![deny(unsafe_code)]

use super::paging::Flags;
use super::PAGE_SIZE;
use boot::{MemoryKind, MemoryRegion};
use core::fmt;
use core::ops::Range;

/// End of the always-mapped low range.
pub const LOW_LIMIT: u64 = 1 << 32;
/// The AP start-up trampoline's page (must stay executable).
pub const TRAMPOLINE: u64 = 0x8000;
/// The kernel heap's first byte: PML4 slot 384, far from everything else.
pub const HEAP_START: u64 = 0xffff_c000_0000_0000;
/// Most bytes the heap may grow to.
pub const HEAP_MAX_BYTES: u64 = 64 << 30;
/// The kernel stacks' region: PML4 slot 416.
pub const STACKS_START: u64 = 0xffff_d000_0000_0000;
/// Size of the stacks' region.
pub const STACKS_MAX_BYTES: u64 = 64 << 30;

/// Most segments a plan holds.
pub const MAX_SEGMENTS: usize = 400;

/// Where the kernel image's parts are (from the linker script).
#[derive(Debug, Clone, Copy)]
pub struct KernelImage {
    /// `__kernel_start`..`__kernel_end`.
    pub image: (u64, u64),
    /// `__text_start`..`__text_end`.
    pub text: (u64, u64),
    /// `__rodata_start`..`__rodata_end`.
    pub rodata: (u64, u64),
    /// `__data_start`..`__data_end`.
    pub data: (u64, u64),
    /// `boot_stack_guard`: a page to leave unmapped.
    pub stack_guard: u64,
}

/// One range of the plan: `flags` is `None` for "unmapped".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First byte (page-aligned).
    pub start: u64,
    /// One past the last byte (page-aligned).
    pub end: u64,
    /// Leaf permissions, or `None` to leave the range unmapped.
    pub flags: Option<Flags>,
}

/// Why a plan could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The memory map is too fragmented for [`MAX_SEGMENTS`].
    TooManySegments,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooManySegments => {
                write!(f, "memory map needs more than {MAX_SEGMENTS} page-table segments")
            }
        }
    }
}

/// The plan: sorted, non-overlapping segments.
pub type Plan = heapless::Vec<Segment, MAX_SEGMENTS>;

/// Whether a memory-map kind is RAM (cacheable).
pub fn is_ram(kind: MemoryKind) -> bool {
    matches!(kind, MemoryKind::Usable | MemoryKind::AcpiReclaimable | MemoryKind::AcpiNvs)
}

/// Paints `[s, e)` with `flags` over the plan, in place, replacing what was there.
fn paint(plan: &mut Plan, s: u64, e: u64, flags: Option<Flags>) -> Result<(), LayoutError> {
    if s >= e {
        return Ok(());
    }
    // The pieces of overlapped segments that stick out on either side survive.
    let left = plan.iter().find(|g| g.start < s && g.end > s).map(|g| Segment { end: s, ..*g });
    let right = plan.iter().find(|g| g.start < e && g.end > e).map(|g| Segment { start: e, ..*g });
    plan.retain(|g| g.end <= s || g.start >= e);
    let at = plan.iter().position(|g| g.start >= e).unwrap_or(plan.len());
    for seg in [right, Some(Segment { start: s, end: e, flags }), left].into_iter().flatten() {
        plan.insert(at, seg).map_err(|_| LayoutError::TooManySegments)?;
    }
    // Merge neighbours that touch and agree.
    let mut kept: usize = 0;
    for r in 0..plan.len() {
        let Some(&seg) = plan.get(r) else { break };
        match kept.checked_sub(1).and_then(|k| plan.get_mut(k)) {
            Some(last) if last.end == seg.start && last.flags == seg.flags => last.end = seg.end,
            _ => {
                if let Some(slot) = plan.get_mut(kept) {
                    *slot = seg;
                }
                kept += 1;
            }
        }
    }
    plan.truncate(kept);
    Ok(())
}

fn down(a: u64) -> u64 {
    a / PAGE_SIZE * PAGE_SIZE
}

fn up(a: u64) -> u64 {
    a.checked_add(PAGE_SIZE - 1).map_or(u64::MAX / PAGE_SIZE * PAGE_SIZE, |x| x / PAGE_SIZE * PAGE_SIZE)
}

/// Builds the identity-map plan into `p` (a plan is large: callers on a small stack keep
/// it in a static). `nx` says whether the CPU has no-execute; without it no segment
/// carries `NO_EXECUTE` (the bit would be reserved).
pub fn plan(p: &mut Plan, map: &[MemoryRegion], kernel: &KernelImage, nx: bool) -> Result<(), LayoutError> {
    let nx_bit = if nx { Flags::NO_EXECUTE } else { Flags::empty() };
    let rw = Flags::WRITABLE | nx_bit;
    let mmio = rw | Flags::NO_CACHE | Flags::WRITE_THROUGH;
    let ro = nx_bit;
    let rx = Flags::empty();
    let rwx = Flags::WRITABLE;

    p.clear();
    paint(p, 0, LOW_LIMIT, Some(mmio))?;
    // RAM is cacheable; a page RAM shares with something else stays uncached.
    for r in map.iter().filter(|r| is_ram(r.kind)) {
        paint(p, up(r.start), down(r.end), Some(rw))?;
    }
    let k = kernel;
    paint(p, down(k.image.0), up(k.image.1), Some(ro))?;
    paint(p, down(k.data.0), up(k.data.1), Some(rw))?;
    paint(p, down(k.rodata.0), up(k.rodata.1), Some(ro))?;
    paint(p, down(k.text.0), up(k.text.1), Some(rx))?;
    paint(p, TRAMPOLINE, TRAMPOLINE + PAGE_SIZE, Some(rwx))?;
    paint(p, 0, PAGE_SIZE, None)?;
    paint(p, down(k.stack_guard), down(k.stack_guard) + PAGE_SIZE, None)?;
    Ok(())
}

/// The flags a plan gives `addr` (`None` when unmapped or outside every segment).
pub fn flags_at(plan: &Plan, addr: u64) -> Option<Flags> {
    plan.iter().find(|s| s.start <= addr && addr < s.end).and_then(|s| s.flags)
}

/// The mapped segments of a plan as ranges, for callers that only need extents.
pub fn mapped(plan: &Plan) -> impl Iterator<Item = (Range<u64>, Flags)> + '_ {
    plan.iter().filter_map(|s| s.flags.map(|f| (s.start..s.end, f)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryKind::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn region(start: u64, end: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { start, end, kind }
    }

    /// The map QEMU gives a 5000 MiB guest.
    fn qemu_map() -> Vec<MemoryRegion> {
        vec![
            region(0, 0x9f000, Usable),
            region(0x9fc00, 0xa0000, Reserved),
            region(0xf0000, 0x100000, Reserved),
            region(0x100000, 0xbffe0000, Usable),
            region(0xbffe0000, 0xc0000000, Reserved),
            region(0xfffc0000, 0x1_0000_0000, Reserved),
            region(0x1_0000_0000, 0x1_4800_0000, Usable),
            region(0xfd_0000_0000, 0x100_0000_0000, Reserved),
        ]
    }

    fn kernel() -> KernelImage {
        KernelImage {
            image: (0x200000, 0x260000),
            text: (0x201000, 0x230000),
            rodata: (0x230000, 0x240000),
            data: (0x240000, 0x260000),
            stack_guard: 0x250000,
        }
    }

    fn planned(map: &[MemoryRegion], nx: bool) -> Result<Plan, LayoutError> {
        let mut p = Plan::new();
        plan(&mut p, map, &kernel(), nx).map(|()| p)
    }

    #[test]
    fn painting_splits_and_merges() {
        let mut p = Plan::new();
        let a = Some(Flags::WRITABLE);
        let b = Some(Flags::NO_CACHE);
        paint(&mut p, 0x1000, 0x9000, a).unwrap();
        paint(&mut p, 0x3000, 0x4000, b).unwrap();
        paint(&mut p, 0xa000, 0xb000, a).unwrap();
        let seg = |start, end, flags| Segment { start, end, flags };
        assert_eq!(
            p.as_slice(),
            &[seg(0x1000, 0x3000, a), seg(0x3000, 0x4000, b), seg(0x4000, 0x9000, a), seg(0xa000, 0xb000, a)]
        );
        // Covering the middle piece and the gap with `a` merges everything into one.
        paint(&mut p, 0x2000, 0xa000, a).unwrap();
        assert_eq!(p.as_slice(), &[seg(0x1000, 0xb000, a)]);
        paint(&mut p, 0, 0x20000, None).unwrap();
        assert_eq!(p.as_slice(), &[seg(0, 0x20000, None)]);
    }

    #[test]
    fn permissions_follow_the_brief() {
        let p = planned(&qemu_map(), true).unwrap();
        let rw = Flags::WRITABLE | Flags::NO_EXECUTE;
        let uc = rw | Flags::NO_CACHE | Flags::WRITE_THROUGH;
        assert_eq!(flags_at(&p, 0), None, "page 0");
        assert_eq!(flags_at(&p, 0xfff), None, "page 0");
        assert_eq!(flags_at(&p, 0x1000), Some(rw));
        assert_eq!(flags_at(&p, 0x8000), Some(Flags::WRITABLE), "trampoline is RWX");
        assert_eq!(flags_at(&p, 0x8fff), Some(Flags::WRITABLE));
        assert_eq!(flags_at(&p, 0x9000), Some(rw));
        assert_eq!(flags_at(&p, 0x9f000), Some(uc), "page shared by RAM and EBDA");
        assert_eq!(flags_at(&p, 0xb8000), Some(uc), "VGA hole");
        assert_eq!(flags_at(&p, 0x200000), Some(Flags::NO_EXECUTE), "image headers");
        assert_eq!(flags_at(&p, 0x201000), Some(Flags::empty()), "text");
        assert_eq!(flags_at(&p, 0x22ffff), Some(Flags::empty()), "text");
        assert_eq!(flags_at(&p, 0x230000), Some(Flags::NO_EXECUTE), "rodata");
        assert_eq!(flags_at(&p, 0x240000), Some(rw), "data");
        assert_eq!(flags_at(&p, 0x250000), None, "stack guard");
        assert_eq!(flags_at(&p, 0x251000), Some(rw), "stack");
        assert_eq!(flags_at(&p, 0x260000), Some(rw), "RAM after the image");
        assert_eq!(flags_at(&p, 0xfee0_0000), Some(uc), "local APIC");
        assert_eq!(flags_at(&p, 0xfec0_0000), Some(uc), "IOAPIC");
        assert_eq!(flags_at(&p, 0xffff_ffff), Some(uc));
        assert_eq!(flags_at(&p, 0x1_2000_0000), Some(rw), "RAM above 4 GiB");
        assert_eq!(flags_at(&p, 0x1_4800_0000), None, "hole above RAM");
        assert_eq!(flags_at(&p, 0xfd_0000_0000), None, "reserved above 4 GiB");
        assert_eq!(flags_at(&p, 0x0dea_dbee_f000), None, "the fault test's address");
        // Sorted, disjoint, adjacent equal segments merged.
        for w in p.windows(2) {
            assert!(w[0].end <= w[1].start, "{:?}", w);
            assert!(!(w[0].end == w[1].start && w[0].flags == w[1].flags), "{:?}", w);
        }
        // The bulk of RAM stays in one segment, so it can use large pages.
        assert!(p.iter().any(|s| s.start <= 0x260000 && s.end == 0xbffe0000));
    }

    #[test]
    fn without_nx_no_segment_has_it() {
        let p = planned(&qemu_map(), false).unwrap();
        assert!(mapped(&p).all(|(_, f)| !f.contains(Flags::NO_EXECUTE)));
        assert_eq!(flags_at(&p, 0x230000), Some(Flags::empty()));
        assert_eq!(flags_at(&p, 0x250000), None);
    }

    #[test]
    fn odd_maps_do_not_panic() {
        let weird = [
            region(0, u64::MAX, Usable),
            region(0x1001, 0x1002, AcpiNvs),
            region(u64::MAX - 5, u64::MAX, Usable),
        ];
        let p = planned(&weird, true).unwrap();
        assert_eq!(flags_at(&p, 0), None);
        assert_eq!(flags_at(&p, 0x1000), Some(Flags::WRITABLE | Flags::NO_EXECUTE));
        assert!(planned(&[], true).is_ok());
        // Thousands of one-page RAM regions exceed the segment budget: an error.
        let many: Vec<_> = (0..1000u64)
            .map(|i| region(8 * GIB + i * 0x2000, 8 * GIB + i * 0x2000 + 0x1000, Usable))
            .collect();
        assert_eq!(planned(&many, true), Err(LayoutError::TooManySegments));
        let _ = MIB;
    }
}
