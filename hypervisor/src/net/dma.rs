//! Memory a device reads and writes by DMA: whole frames, physically contiguous, zeroed,
//! returned to the frame allocator on drop. All RAM is identity-mapped write-back and PC
//! DMA is cache-coherent, so the kernel's address of a byte is its bus address and no
//! flushing is needed; drivers order their accesses with fences.
#![allow(unsafe_code)]

use crate::mm::{self, PAGE_SIZE};
use core::ptr::NonNull;

/// A run of physically contiguous frames owned by one driver.
pub struct DmaRegion {
    phys: u64,
    frames: usize,
}

// SAFETY: the region is plain memory owned by its holder; moving the handle between CPUs
// moves that ownership.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// `bytes` rounded up to whole frames, zeroed; `None` when frames run out.
    pub fn new(bytes: usize) -> Option<DmaRegion> {
        let frames = bytes.div_ceil(PAGE_SIZE as usize).max(1);
        let phys = mm::alloc_run(frames, PAGE_SIZE).ok()?;
        // SAFETY: the allocator just gave us `frames` frames at `phys`, which no one else
        // uses, and all RAM is identity-mapped writable.
        unsafe { core::ptr::write_bytes(phys as *mut u8, 0, frames * PAGE_SIZE as usize) };
        Some(DmaRegion { phys, frames })
    }

    /// The bus (and physical) address of the first byte.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.frames * PAGE_SIZE as usize
    }

    /// Never: a region holds at least one frame.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The kernel's pointer to the first byte (the identity map).
    pub fn ptr(&self) -> NonNull<u8> {
        // SAFETY: `phys` comes from the frame allocator, which never hands out page 0.
        unsafe { NonNull::new_unchecked(self.phys as *mut u8) }
    }

    /// Copies `data` to offset `at`; `false` (and nothing written) when it does not fit.
    pub fn write(&mut self, at: usize, data: &[u8]) -> bool {
        if at.checked_add(data.len()).is_none_or(|end| end > self.len()) {
            return false;
        }
        // SAFETY: the range is inside the region (checked above), which this handle owns.
        // The device may read it concurrently, which is what the driver intends.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr().as_ptr().add(at), data.len()) };
        true
    }

    /// Copies from offset `at` into `out`; `false` (and nothing copied) when out of range.
    pub fn read(&self, at: usize, out: &mut [u8]) -> bool {
        if at.checked_add(out.len()).is_none_or(|end| end > self.len()) {
            return false;
        }
        // SAFETY: as in `write`; the device wrote the bytes before the driver saw the
        // descriptor done (ordered by the driver's fence).
        unsafe { core::ptr::copy_nonoverlapping(self.ptr().as_ptr().add(at), out.as_mut_ptr(), out.len()) };
        true
    }

    /// Reads a little-endian value of type `T` at `at` (volatile: the device writes it).
    pub fn load<T: Copy>(&self, at: usize) -> Option<T> {
        let size = core::mem::size_of::<T>();
        if !at.is_multiple_of(core::mem::align_of::<T>())
            || at.checked_add(size).is_none_or(|e| e > self.len())
        {
            return None;
        }
        // SAFETY: in range and aligned (checked above); any bit pattern is read only as
        // the plain integer types drivers use.
        Some(unsafe { core::ptr::read_volatile(self.ptr().as_ptr().add(at).cast::<T>()) })
    }

    /// Writes `value` at `at` (volatile: the device reads it); `false` when out of range.
    pub fn store<T: Copy>(&mut self, at: usize, value: T) -> bool {
        let size = core::mem::size_of::<T>();
        if !at.is_multiple_of(core::mem::align_of::<T>())
            || at.checked_add(size).is_none_or(|e| e > self.len())
        {
            return false;
        }
        // SAFETY: in range and aligned (checked above), inside memory this handle owns.
        unsafe { core::ptr::write_volatile(self.ptr().as_ptr().add(at).cast::<T>(), value) };
        true
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // The driver has stopped the device (reset) before dropping its rings.
        if let Err(e) = mm::free_run(self.phys, self.frames) {
            log::warn!("net: returning DMA frames at {:#x}: {e}", self.phys);
        }
    }
}
