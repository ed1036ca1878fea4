//! The physical memory map, normalized: sorted, non-overlapping, adjacent regions of the
//! same kind merged, usable regions shrunk to whole 4 KiB pages. Where loader entries
//! overlap, the more restrictive kind wins (a byte both "usable" and "reserved" is reserved).

/// Most regions a map holds; extra loader entries are dropped and counted as a warning.
pub const MAX_REGIONS: usize = 128;

const PAGE: u64 = 4096;

/// What a physical range may be used for. Ordered from least to most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemoryKind {
    /// Free RAM.
    Usable,
    /// ACPI tables; reusable once they have been read.
    AcpiReclaimable,
    /// ACPI non-volatile storage; never to be touched.
    AcpiNvs,
    /// Reserved by firmware or hardware.
    Reserved,
    /// RAM reported defective.
    Bad,
}

impl MemoryKind {
    /// Maps an E820 type (also used by PVH and Multiboot2) to a kind.
    pub fn from_e820(ty: u32) -> Self {
        match ty {
            1 => MemoryKind::Usable,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Bad,
            _ => MemoryKind::Reserved,
        }
    }
}

/// A physical range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What it is.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.end - self.start
    }
}

/// A normalized memory map.
pub type MemoryMap = heapless::Vec<MemoryRegion, MAX_REGIONS>;

/// Normalizes raw `(base, length, kind)` entries. Entries with zero length or whose end
/// overflows are ignored. Returns the map and the number of entries that were dropped.
pub fn normalize(raw: &[(u64, u64, MemoryKind)]) -> (MemoryMap, usize) {
    let mut dropped = 0;
    let mut bounds: heapless::Vec<u64, { 2 * MAX_REGIONS }> = heapless::Vec::new();
    let mut entries: heapless::Vec<MemoryRegion, MAX_REGIONS> = heapless::Vec::new();
    for &(base, len, kind) in raw {
        let Some(end) = base.checked_add(len) else {
            dropped += 1;
            continue;
        };
        if len == 0 {
            continue;
        }
        let region = MemoryRegion { start: base, end, kind };
        if entries.push(region).is_err() {
            dropped += 1;
            continue;
        }
        for b in [base, end] {
            if !bounds.contains(&b) {
                // Capacity is 2 * MAX_REGIONS and each entry adds at most two bounds.
                let _ = bounds.push(b);
            }
        }
    }
    bounds.sort_unstable();

    let mut out = MemoryMap::new();
    for pair in bounds.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        let kind = entries.iter().filter(|r| r.start <= lo && hi <= r.end).map(|r| r.kind).max();
        let Some(kind) = kind else { continue };
        match out.last_mut() {
            Some(last) if last.end == lo && last.kind == kind => last.end = hi,
            _ => {
                if out.push(MemoryRegion { start: lo, end: hi, kind }).is_err() {
                    dropped += 1;
                }
            }
        }
    }
    // Usable memory is handed out in whole pages only.
    out.retain_mut(|r| {
        if r.kind == MemoryKind::Usable {
            r.start = r.start.div_ceil(PAGE) * PAGE;
            r.end = r.end / PAGE * PAGE;
        }
        r.start < r.end
    });
    (out, dropped)
}

/// Bytes of usable memory in a map.
pub fn usable_bytes(map: &[MemoryRegion]) -> u64 {
    map.iter().filter(|r| r.kind == MemoryKind::Usable).map(|r| r.len_bytes()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryKind::*;

    #[test]
    fn overlaps_resolve_to_the_restrictive_kind() {
        let (map, dropped) = normalize(&[
            (0, 0x9fc00, Usable),
            (0x9fc00, 0x400, Reserved),
            (0x100000, 0x7f00000, Usable),
            // A reserved hole inside usable RAM splits it.
            (0x200000, 0x1000, Reserved),
        ]);
        assert_eq!(dropped, 0);
        assert_eq!(
            map.as_slice(),
            &[
                MemoryRegion { start: 0, end: 0x9f000, kind: Usable },
                MemoryRegion { start: 0x9fc00, end: 0xa0000, kind: Reserved },
                MemoryRegion { start: 0x100000, end: 0x200000, kind: Usable },
                MemoryRegion { start: 0x200000, end: 0x201000, kind: Reserved },
                MemoryRegion { start: 0x201000, end: 0x8000000, kind: Usable },
            ]
        );
        assert_eq!(usable_bytes(&map), 0x9f000 + 0x100000 + 0x7dff000);
    }

    #[test]
    fn unsorted_adjacent_entries_merge() {
        let (map, _) = normalize(&[(0x2000, 0x1000, Usable), (0x1000, 0x1000, Usable)]);
        assert_eq!(map.as_slice(), &[MemoryRegion { start: 0x1000, end: 0x3000, kind: Usable }]);
    }

    #[test]
    fn bad_entries_are_dropped_not_fatal() {
        let (map, dropped) =
            normalize(&[(u64::MAX - 10, 100, Usable), (0x1000, 0, Usable), (0x1800, 0x1000, Usable)]);
        assert_eq!(dropped, 1);
        // 0x1800..0x2800 contains no whole page.
        assert!(map.is_empty());
    }

    #[test]
    fn too_many_entries_are_counted() {
        let raw: Vec<_> = (0..200u64).map(|i| (i * 0x2000, 0x1000, Usable)).collect();
        let (map, dropped) = normalize(&raw);
        assert_eq!(map.len(), MAX_REGIONS);
        assert_eq!(dropped, 200 - MAX_REGIONS);
    }
}
