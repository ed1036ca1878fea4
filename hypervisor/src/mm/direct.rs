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

/// Copies `bytes` into contiguous frames of their own, zero-padded to whole pages, and
/// returns where they are: (host physical address, frames). The caller owns the frames
/// (and gives them back with `free_run` once nothing maps them). `None` when no such run
/// of frames is free.
pub fn hold_bytes(bytes: &[u8]) -> Option<(u64, usize)> {
    let page = super::PAGE_SIZE as usize;
    let frames = bytes.len().div_ceil(page).max(1);
    let phys = super::alloc_run(frames, super::PAGE_SIZE).ok()?;
    let len = frames * page;
    // SAFETY: the allocator just gave us `frames` frames at `phys`, which no one else uses
    // yet, and all RAM is identity-mapped read-write: writing `len` bytes there touches
    // only those frames.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), phys as *mut u8, bytes.len());
        core::ptr::write_bytes((phys as *mut u8).add(bytes.len()), 0, len - bytes.len());
    }
    Some((phys, frames))
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
