//! Self-tests of memory management on the real machine.

use super::frames::FrameError;
use super::layout::HEAP_START;
use super::paging::{Flags, MapError};
use super::{heap, kernel, MmError};
use crate::selftest::{Test, Verdict};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[
    Test { name: "frames", in_all: true, run: frames },
    Test { name: "heap", in_all: true, run: heap_churn },
    Test { name: "paging", in_all: true, run: paging },
    Test { name: "stacks", in_all: true, run: stacks },
    Test { name: "oom", in_all: false, run: oom },
];

/// Allocates and frees a few thousand frames: all distinct, none reserved, count restored.
fn frames() -> Verdict {
    const N: usize = 3000;
    let before = kernel::free_frames();
    let mut got: Vec<u64> = Vec::with_capacity(N);
    for _ in 0..N {
        match kernel::alloc_frame() {
            Ok(f) => got.push(f),
            Err(_) => break,
        }
    }
    let ok_count = got.len() == N.min(before);
    let mid = kernel::free_frames();
    let img = kernel::image();
    let bad = got.iter().any(|&f| f < 1 << 20 || (img.image.0 <= f && f < img.image.1) || f % 4096 != 0);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let distinct = sorted.len() == got.len();
    let freed = got.iter().all(|&f| kernel::free_frame(f).is_ok());
    let double = got.first().map(|&f| kernel::free_frame(f));
    let foreign = kernel::free_frame(img.text.0);
    let after = kernel::free_frames();
    if !ok_count {
        return Err("fewer frames than free_frames promised");
    }
    if mid + got.len() != before {
        return Err("free count did not drop by the frames taken");
    }
    if bad {
        return Err("a frame below 1 MiB, inside the kernel image or misaligned");
    }
    if !distinct {
        return Err("a frame was handed out twice");
    }
    if !freed {
        return Err("freeing an allocated frame failed");
    }
    if !matches!(double, Some(Err(MmError::Frames(FrameError::DoubleFree(_))))) {
        return Err("a double free was not reported");
    }
    if !matches!(foreign, Err(MmError::Frames(FrameError::Foreign(_)))) {
        return Err("freeing a kernel text frame was not refused");
    }
    if after != before {
        return Err("free count did not return to where it started");
    }
    Ok(())
}

/// Box, Vec and BTreeMap churn, including growth beyond the initial heap.
fn heap_churn() -> Verdict {
    let size0 = heap::size_bytes();
    let frames0 = kernel::free_frames();
    let b = Box::new(0x1234_5678_u64);
    if *b != 0x1234_5678 || (&raw const *b as u64) < HEAP_START {
        return Err("a Box is wrong or outside the heap");
    }
    // Larger than the initial heap: forces growth.
    let big_len = (heap::HEAP_INITIAL_BYTES as usize) * 3 / 8;
    let mut v: Vec<u64> = Vec::new();
    for i in 0..big_len {
        v.push(i as u64 ^ 0x5a5a);
    }
    if v.iter().enumerate().any(|(i, &x)| x != i as u64 ^ 0x5a5a) {
        return Err("vector contents changed");
    }
    let size1 = heap::size_bytes();
    if size1 <= size0 || size1 < 3 * heap::HEAP_INITIAL_BYTES as usize {
        return Err("the heap did not grow");
    }
    if kernel::free_frames() + (size1 - size0) / 4096 > frames0 {
        return Err("growth did not take frames");
    }
    drop(v);
    let mut map = BTreeMap::new();
    for round in 0..4u64 {
        for k in 0..5000u64 {
            map.insert(k * 7 + round, Box::new([k; 4]));
        }
        map.retain(|k, _| k % 3 != 0);
    }
    let mut count = 0;
    for (k, val) in &map {
        if k % 3 == 0 || **val != [k / 7; 4] {
            return Err("map contents are wrong");
        }
        count += 1;
    }
    if count == 0 || count != map.len() {
        return Err("map lost entries");
    }
    drop(map);
    // With everything dropped the heap serves the same big block again without growing.
    let again: Vec<u8> = alloc::vec![7; big_len * 8];
    let ok = again.iter().all(|&x| x == 7);
    drop(again);
    if !ok || heap::size_bytes() != size1 {
        return Err("freed heap memory was not reused");
    }
    Ok(())
}

fn flags_of(virt: u64) -> Result<Flags, MmError> {
    kernel::translate(virt).map(|t| t.flags)
}

fn not_present(virt: u64) -> bool {
    matches!(kernel::translate(virt), Err(MmError::Map(MapError::NotMapped(_))))
}

/// The kernel's permissions are what the layout promises.
fn paging() -> Verdict {
    let img = kernel::image();
    if x86_64::registers::control::Cr3::read().0.start_address().as_u64() != kernel::kernel_cr3() {
        return Err("CR3 is not the kernel's page table");
    }
    if kernel::kernel_cr3() >= 1 << 32 || kernel::kernel_cr3() == 0 {
        return Err("the PML4 is not below 4 GiB");
    }
    let nx = kernel::nx();
    let text = flags_of(img.text.0).map_err(|_| "kernel text is not mapped")?;
    if text.contains(Flags::WRITABLE) || text.contains(Flags::NO_EXECUTE) {
        return Err("kernel text is writable or not executable");
    }
    let ro = flags_of(img.rodata.0).map_err(|_| "rodata is not mapped")?;
    if ro.contains(Flags::WRITABLE) || !ro.contains(nx) {
        return Err("rodata is writable or executable");
    }
    let data = flags_of(img.data.0).map_err(|_| "data is not mapped")?;
    if !data.contains(Flags::WRITABLE) || !data.contains(nx) {
        return Err("data is read-only or executable");
    }
    let bss = flags_of(img.data.1 - 1).map_err(|_| "bss is not mapped")?;
    if !bss.contains(Flags::WRITABLE) || !bss.contains(nx) {
        return Err("bss is read-only or executable");
    }
    if !not_present(0) || !not_present(0xfff) {
        return Err("page 0 is mapped");
    }
    if !not_present(0x0dea_dbee_f000) {
        return Err("0xdeadbeef000 is mapped");
    }
    if !not_present(img.stack_guard) {
        return Err("the boot stack guard is mapped");
    }
    let tramp = flags_of(0x8000).map_err(|_| "the trampoline page is not mapped")?;
    if tramp.contains(Flags::NO_EXECUTE) || !tramp.contains(Flags::WRITABLE) {
        return Err("the trampoline page is not RW+X");
    }
    if !flags_of(0x9000).map_err(|_| "0x9000 is not mapped")?.contains(nx) {
        return Err("low memory next to the trampoline is executable");
    }
    let apic = flags_of(0xfee0_0000).map_err(|_| "the local APIC is not mapped")?;
    if !apic.contains(Flags::NO_CACHE | Flags::WRITE_THROUGH) {
        return Err("the local APIC page is cacheable");
    }
    let heap = flags_of(HEAP_START).map_err(|_| "the heap is not mapped")?;
    if !heap.contains(Flags::WRITABLE) || !heap.contains(nx) {
        return Err("the heap is not RW+NX");
    }
    // The highest RAM the allocator manages is identity-mapped (above 4 GiB with more RAM).
    let top = kernel::ram_top().ok_or("no RAM top")? - 4096;
    let t = kernel::translate(top).map_err(|_| "the top of RAM is not mapped")?;
    if t.phys != top || !t.flags.contains(Flags::WRITABLE | nx) || t.flags.contains(Flags::NO_CACHE) {
        return Err("the top of RAM is not identity-mapped RW+NX cacheable");
    }
    // MMIO above 4 GiB: mapped uncached on request, idempotent; page 0 refused.
    let bar = 0x80_0000_0800_u64;
    kernel::map_mmio(bar, 0x2000).map_err(|_| "map_mmio above 4 GiB failed")?;
    kernel::map_mmio(bar, 0x2000).map_err(|_| "map_mmio twice failed")?;
    for a in [bar, bar + 0x1fff] {
        let t = kernel::translate(a).map_err(|_| "an MMIO page is not mapped")?;
        if t.phys != a || !t.flags.contains(Flags::WRITABLE | Flags::NO_CACHE | Flags::WRITE_THROUGH | nx) {
            return Err("an MMIO page is not identity-mapped RW, uncached, NX");
        }
    }
    if !not_present(bar + 0x3000) || !not_present(bar - 0x1000) {
        return Err("map_mmio mapped more than asked");
    }
    if kernel::map_mmio(0, 16) != Err(MmError::NullPage) || kernel::map_mmio(u64::MAX, 2).is_ok() {
        return Err("map_mmio accepted page 0 or an overflowing range");
    }
    // The translation agrees with a real access through it.
    let probe = 0xa5a5_u64;
    let t = kernel::translate(&raw const probe as u64).map_err(|_| "the stack is not mapped")?;
    if t.phys != &raw const probe as u64 {
        return Err("the identity map is not identity");
    }
    Ok(())
}

/// Two stacks: distinct, usable, their guard pages unmapped.
fn stacks() -> Verdict {
    let a = super::alloc_stack(4).ok_or("first stack refused")?;
    let b = super::alloc_stack(16).ok_or("second stack refused")?;
    if a.top - a.bottom != 4 * 4096 || b.top - b.bottom != 16 * 4096 {
        return Err("a stack has the wrong size");
    }
    if a.bottom < b.top && b.bottom < a.top {
        return Err("stacks overlap");
    }
    for s in [a, b] {
        if !not_present(s.bottom - 4096) || !not_present(s.bottom - 1) {
            return Err("a guard page is mapped");
        }
        let f = flags_of(s.bottom).map_err(|_| "a stack's bottom is not mapped")?;
        let g = flags_of(s.top - 8).map_err(|_| "a stack's top is not mapped")?;
        if !f.contains(Flags::WRITABLE) || !g.contains(Flags::WRITABLE | kernel::nx()) {
            return Err("a stack is not RW+NX");
        }
        let p = (s.top - 8) as *mut u64;
        // SAFETY: the stack was just allocated for this test, its top page is mapped
        // read-write (checked above) and nothing else uses it.
        #[allow(unsafe_code)]
        unsafe {
            p.write_volatile(0x5eed);
            if p.read_volatile() != 0x5eed {
                return Err("a stack does not hold what was written");
            }
        }
    }
    if super::alloc_stack(0).is_some() {
        return Err("a zero-page stack was handed out");
    }
    Ok(())
}

/// Allocates until memory runs out: the run must end in the allocation-failure panic
/// ("memory allocation of N bytes failed"), never return.
fn oom() -> Verdict {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut v: Vec<u8> = Vec::with_capacity(1 << 20);
        v.push(1);
        hoard.push(v);
        if hoard.len() > 1 << 24 {
            return Err("16 TiB allocated without running out");
        }
    }
}
