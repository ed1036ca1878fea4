//! The direct map: all RAM is identity-mapped read-write, so a physical address is also
//! the kernel's address of the same byte. Guest memory reaches its frames through it
//! ([`KernelFrames`]), and the boot loader's modules are read through it
//! ([`boot_module`]).

use crate::vm::memory::{FrameSource, FRAMES_PER_LARGE, LARGE_BYTES};
use boot::BootInfo;
use log::{error, warn};

/// Frames from the kernel's allocator, reached through the identity map.
pub struct KernelFrames;

impl FrameSource for KernelFrames {
    fn alloc_frame(&mut self) -> Option<u64> {
        super::alloc_frame().ok()
    }
    fn alloc_large(&mut self) -> Option<u64> {
        super::alloc_run(FRAMES_PER_LARGE, LARGE_BYTES).ok()
    }
    fn free_frame(&mut self, hpa: u64) {
        if let Err(e) = super::free_frame(hpa) {
            warn!("vm: returning frame {hpa:#x}: {e}");
        }
    }
    unsafe fn read(&self, hpa: u64, buf: &mut [u8]) {
        // SAFETY: the caller guarantees the range is inside a frame we hold; all RAM is
        // identity-mapped read-write, so `hpa` is also its kernel address.
        unsafe { core::ptr::copy_nonoverlapping(hpa as *const u8, buf.as_mut_ptr(), buf.len()) };
    }
    unsafe fn write(&mut self, hpa: u64, data: &[u8]) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), hpa as *mut u8, data.len()) };
    }
    unsafe fn fill(&mut self, hpa: u64, len: usize, byte: u8) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_bytes(hpa as *mut u8, byte, len) };
    }
}

/// The physical address of a byte the kernel reaches through the direct map.
pub fn physical(bytes: &'static [u8]) -> u64 {
    bytes.as_ptr() as u64
}

/// Contiguous frames owned by their holder, written through the direct map and given back
/// on drop (unless [`FrameRun::into_raw`] hands them on).
pub struct FrameRun {
    phys: u64,
    frames: usize,
}

impl FrameRun {
    /// `frames` (at least one) contiguous frames, not zeroed; `None` when no such run is
    /// free.
    pub fn new(frames: usize) -> Option<FrameRun> {
        let frames = frames.max(1);
        let phys = super::alloc_run(frames, super::PAGE_SIZE).ok()?;
        Some(FrameRun { phys, frames })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.frames * super::PAGE_SIZE as usize
    }

    /// Never: a run holds at least one frame.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies `data` to offset `at`; `false` (and nothing written) when it does not fit.
    pub fn write(&mut self, at: usize, data: &[u8]) -> bool {
        if at.checked_add(data.len()).is_none_or(|end| end > self.len()) {
            return false;
        }
        // SAFETY: the range is inside the run (checked above), whose frames this handle owns
        // alone; all RAM is identity-mapped read-write.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), (self.phys as *mut u8).add(at), data.len()) };
        true
    }

    /// Zeroes everything from offset `at` to the end.
    pub fn zero_from(&mut self, at: usize) {
        let at = at.min(self.len());
        // SAFETY: as in `write`: `at..len` is inside the run.
        unsafe { core::ptr::write_bytes((self.phys as *mut u8).add(at), 0, self.len() - at) };
    }

    /// Hands the frames on: (host physical address, frames). The caller gives them back with
    /// `free_run` once nothing maps them.
    pub fn into_raw(self) -> (u64, usize) {
        let raw = (self.phys, self.frames);
        core::mem::forget(self);
        raw
    }
}

impl Drop for FrameRun {
    fn drop(&mut self) {
        if let Err(e) = super::free_run(self.phys, self.frames) {
            warn!("mm: giving back a run of {} frames at {:#x}: {e}", self.frames, self.phys);
        }
    }
}

/// Boot module `index`'s bytes, when the loader gave one inside usable RAM.
pub fn boot_module(boot: &BootInfo, index: usize) -> Option<&'static [u8]> {
    let m = boot.modules.get(index)?;
    let len = usize::try_from(m.end.checked_sub(m.start)?).ok()?;
    if m.start == 0 || len == 0 {
        return None;
    }
    if !boot.in_usable_ram(m.start, m.end) {
        error!("boot: module {index} at {:#x}..{:#x} is not in usable RAM; ignored", m.start, m.end);
        return None;
    }
    // SAFETY: the module lies at `start..end` inside usable RAM (checked above), which
    // the kernel identity-maps; the frame allocator reserved that range (it is never
    // handed out) and nothing writes to it, so it stays valid and unchanged for the rest
    // of the run.
    Some(unsafe { core::slice::from_raw_parts(m.start as *const u8, len) })
}
