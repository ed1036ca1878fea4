//! Memory: the physical frame allocator, the kernel's page tables and the heap.

pub mod frames;
pub mod layout;
pub mod paging;
#[cfg(target_os = "none")]
use crate::selftest::Test;

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

/// Self-tests of this module.
#[cfg(target_os = "none")]
pub static SELFTESTS: &[Test] = &[];

/// Builds the frame allocator, switches to the kernel's page tables and starts the heap.
#[cfg(target_os = "none")]
pub fn init(boot: &boot::BootInfo) -> Result<MemInfo, &'static str> {
    Ok(MemInfo { usable_bytes: boot.usable_bytes(), free_frames: 0 })
}

/// Allocates a kernel stack of `size_pages` pages with an unmapped guard page below it.
#[cfg(target_os = "none")]
pub fn alloc_stack(size_pages: usize) -> Option<Stack> {
    // Placeholder pool until the frame allocator exists: 16 stacks of up to 16 pages.
    use core::sync::atomic::{AtomicUsize, Ordering};
    #[repr(align(4096))]
    struct Pool([[u8; 16 * 4096]; 16]);
    static mut POOL: Pool = Pool([[0; 16 * 4096]; 16]);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    if size_pages > 16 {
        return None;
    }
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    if i >= 16 {
        return None;
    }
    let base = (&raw const POOL) as u64 + (i as u64) * 16 * 4096;
    Some(Stack { bottom: base, top: base + 16 * 4096 })
}
