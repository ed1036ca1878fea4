//! The kernel heap: a `linked_list_allocator` heap in its own higher-half range
//! ([`HEAP_START`], at most [`HEAP_MAX_BYTES`]), mapped [`HEAP_INITIAL_BYTES`] at a time
//! at first and grown by mapping fresh frames at its top when an allocation does not fit.
//!
//! When no frame is left the allocator returns null, so Rust's allocation-error path
//! panics with "memory allocation of N bytes failed" and the panic handler ends the run.
//! The lock is taken with interrupts off: interrupt handlers and other CPUs allocate too.
//! Lock order: the heap's lock, then the kernel memory lock (which never allocates).

use super::kernel;
use super::layout::{HEAP_MAX_BYTES, HEAP_START};
use super::paging::Flags;
use super::{MmError, PAGE_SIZE};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use linked_list_allocator::Heap;
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

/// Bytes mapped when the heap starts.
pub const HEAP_INITIAL_BYTES: u64 = 1 << 20;
/// Smallest growth step.
const GROW_MIN_BYTES: u64 = 1 << 20;

static HEAP: Mutex<Heap> = Mutex::new(Heap::empty());

/// The global allocator.
pub struct KernelHeap;

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap;

/// Maps the initial heap and hands it to the allocator.
pub fn init() -> Result<(), MmError> {
    kernel::with(|k| k.map_fresh(HEAP_START, HEAP_INITIAL_BYTES / PAGE_SIZE, Flags::WRITABLE | kernel::nx()))
        .unwrap_or(Err(MmError::NotInitialized))?;
    without_interrupts(|| {
        let mut heap = HEAP.lock();
        // SAFETY: `[HEAP_START, HEAP_START + HEAP_INITIAL_BYTES)` was just mapped to fresh
        // frames, nothing else uses that range, and it stays mapped for good.
        unsafe { heap.init(HEAP_START as *mut u8, HEAP_INITIAL_BYTES as usize) };
    });
    Ok(())
}

/// Bytes the heap spans now (mapped).
pub fn size_bytes() -> usize {
    without_interrupts(|| HEAP.lock().size())
}

/// Grows the heap by at least `min_bytes`; false when no memory or range is left.
fn grow(heap: &mut Heap, min_bytes: u64) -> bool {
    if heap.size() == 0 {
        return false;
    }
    let top = heap.top() as u64;
    let room = (HEAP_START + HEAP_MAX_BYTES).saturating_sub(top);
    let want = min_bytes.max(GROW_MIN_BYTES).max(heap.size() as u64 / 4).next_multiple_of(PAGE_SIZE);
    let by = want.min(room);
    if by < min_bytes || by == 0 {
        return false;
    }
    let mapped = kernel::with(|k| k.map_fresh(top, by / PAGE_SIZE, Flags::WRITABLE | kernel::nx()));
    if !matches!(mapped, Some(Ok(()))) {
        return false;
    }
    // SAFETY: `[top, top + by)` lies directly above the heap, inside the heap's own
    // virtual range, and was just mapped to fresh frames that stay mapped.
    unsafe { heap.extend(by as usize) };
    true
}

// SAFETY: allocations come from `linked_list_allocator`, which returns blocks of the
// requested layout inside mapped heap memory, or null; the lock serializes every use.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        without_interrupts(|| {
            let mut heap = HEAP.lock();
            for _ in 0..3 {
                if let Ok(p) = heap.allocate_first_fit(layout) {
                    return p.as_ptr();
                }
                // Room for the block, its alignment and the allocator's bookkeeping.
                let need =
                    (layout.size() as u64).saturating_add(layout.align() as u64).saturating_add(PAGE_SIZE);
                if !grow(&mut heap, need) {
                    return null_mut();
                }
            }
            null_mut()
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        without_interrupts(|| {
            // SAFETY: the caller passes a block this allocator returned, with its layout.
            unsafe { HEAP.lock().deallocate(p, layout) }
        });
    }
}
