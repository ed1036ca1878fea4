//! Memory: the physical frame allocator, the kernel's page tables and the heap.
//!
//! * [`frames`] (pure): a bitmap allocator of 4 KiB frames over the loader's usable RAM,
//!   minus everything below 1 MiB, the kernel image, boot modules and boot data.
//! * [`paging`] (pure): a 4-level page-table builder over a small [`paging::TableMemory`]
//!   trait.
//! * [`layout`] (pure): the kernel's address-space plan and permissions, with the table of
//!   fixed virtual regions.
//! * `kernel` (hardware): builds the identity map, switches CR3, hands out stacks and
//!   maps MMIO above 4 GiB. `heap` (hardware): the global allocator. [`direct`]
//!   (hardware): guest frames and boot modules through the identity map.
#![deny(unsafe_code)]

pub mod frames;
pub mod layout;
pub mod paging;

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod direct;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod heap;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod kernel;
#[cfg(target_os = "none")]
mod selftests;

use core::fmt;

/// The size of a page and of a physical frame, in bytes: the one granule of the frame
/// allocator, the kernel's page tables, the heap and guest memory (4 KiB pages; larger
/// mappings are multiples of it).
pub const PAGE_SIZE: u64 = 4096;

/// A kernel stack: `[bottom, top)` mapped read-write, the page under `bottom` unmapped.
#[derive(Debug, Clone, Copy)]
pub struct Stack {
    /// Lowest mapped byte.
    pub bottom: u64,
    /// One past the highest byte; the initial stack pointer.
    pub top: u64,
}

/// What `init` found.
#[derive(Debug, Clone, Copy)]
pub struct MemInfo {
    /// Usable RAM in bytes.
    pub usable_bytes: u64,
    /// Frames free once the kernel is set up.
    pub free_frames: usize,
}

/// Why a memory operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmError {
    /// The memory map has no usable RAM above 1 MiB.
    NoUsableMemory,
    /// No usable range below 4 GiB can hold even a minimal frame bitmap.
    NoRoomForBitmap,
    /// More reserved ranges than the kernel tracks.
    TooManyReserved,
    /// The frame allocator refused.
    Frames(frames::FrameError),
    /// The page-table builder refused.
    Map(paging::MapError),
    /// The address-space plan could not be made.
    Layout(layout::LayoutError),
    /// Memory management is not set up yet.
    NotInitialized,
    /// A stack of zero pages or of more pages than the stack region holds.
    BadSize,
    /// The virtual region for stacks is used up.
    RegionFull,
    /// `paddr + len` overflows.
    RangeOverflow {
        /// Start of the range.
        paddr: u64,
        /// Its length.
        len: u64,
    },
    /// The range includes page 0, which stays unmapped.
    NullPage,
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmError::NoUsableMemory => write!(f, "no usable RAM above 1 MiB"),
            MmError::NoRoomForBitmap => write!(f, "no room below 4 GiB for the frame bitmap"),
            MmError::TooManyReserved => write!(f, "too many reserved ranges"),
            MmError::Frames(e) => write!(f, "frames: {e}"),
            MmError::Map(e) => write!(f, "page tables: {e}"),
            MmError::Layout(e) => write!(f, "layout: {e}"),
            MmError::NotInitialized => write!(f, "memory management is not initialized"),
            MmError::BadSize => write!(f, "bad stack size"),
            MmError::RegionFull => write!(f, "the stack region is full"),
            MmError::RangeOverflow { paddr, len } => {
                write!(f, "range {paddr:#x} + {len:#x} overflows")
            }
            MmError::NullPage => write!(f, "range includes page 0"),
        }
    }
}

#[cfg(target_os = "none")]
pub use selftests::SELFTESTS;

#[cfg(target_os = "none")]
pub use kernel::{
    alloc_frame, alloc_run, alloc_zeroed_frame, frame_census, free_frame, free_frames, free_run, kernel_cr3,
    map_mmio,
};

/// Builds the frame allocator, switches to the kernel's page tables and starts the heap.
#[cfg(target_os = "none")]
pub fn init(boot: &boot::BootInfo) -> Result<MemInfo, MmError> {
    let built = kernel::init_tables(boot)?;
    heap::init()?;
    let free = free_frames();
    log::info!(
        "{} MiB usable, {} frames free, kernel image {} KiB, heap at {:#x}",
        built.usable_bytes >> 20,
        free,
        built.image_bytes >> 10,
        layout::HEAP_START
    );
    Ok(MemInfo { usable_bytes: built.usable_bytes, free_frames: free })
}

/// Allocates a kernel stack of `size_pages` pages with an unmapped guard page below it.
/// `None` when `size_pages` is 0, frames or the stack region ran out, or before `init`.
#[cfg(target_os = "none")]
pub fn alloc_stack(size_pages: usize) -> Option<Stack> {
    if size_pages == 0 {
        return None;
    }
    match kernel::alloc_stack(size_pages) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("no stack of {size_pages} pages: {e}");
            None
        }
    }
}
