//! The physical frame pool: 4 KiB frames of guest RAM with reference counts (a frame of a
//! read-only page is shared between a process and its fork children).
//!
//! Pure bookkeeping over frame numbers; the kernel maps them. The pool's size is the VM's
//! memory budget for page tables and user pages: when it is empty, allocation fails and
//! the kernel kills the process that asked.

use alloc::vec;
use alloc::vec::Vec;

/// Frame size in bytes.
pub const FRAME: u64 = 4096;

/// A pool of frames `[base, base + count * FRAME)`.
#[derive(Debug)]
pub struct FramePool {
    base: u64,
    refs: Vec<u16>,
    free: Vec<u32>,
    next_fresh: u32,
}

/// Why a frame operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No free frame left.
    Exhausted,
}

impl FramePool {
    /// A pool over the page-aligned part of `[start, end)`.
    pub fn new(start: u64, end: u64) -> FramePool {
        let base = start.div_ceil(FRAME) * FRAME;
        let count = if end > base { (end - base) / FRAME } else { 0 };
        let count = usize::try_from(count.min(u64::from(u32::MAX))).unwrap_or(0);
        FramePool { base, refs: vec![0; count], free: Vec::new(), next_fresh: 0 }
    }

    fn index(&self, pa: u64) -> Option<usize> {
        if pa < self.base || !pa.is_multiple_of(FRAME) {
            return None;
        }
        let i = usize::try_from((pa - self.base) / FRAME).ok()?;
        (i < self.refs.len()).then_some(i)
    }

    /// Whether `pa` is a frame of this pool.
    pub fn contains(&self, pa: u64) -> bool {
        self.index(pa).is_some()
    }

    /// Takes a frame (reference count 1). The caller zeroes it.
    pub fn alloc(&mut self) -> Result<u64, FrameError> {
        let i = if let Some(i) = self.free.pop() {
            i
        } else if (self.next_fresh as usize) < self.refs.len() {
            self.next_fresh += 1;
            self.next_fresh - 1
        } else {
            return Err(FrameError::Exhausted);
        };
        if let Some(r) = self.refs.get_mut(i as usize) {
            *r = 1;
        }
        Ok(self.base + u64::from(i) * FRAME)
    }

    /// Adds a reference to a frame in use; false if `pa` is not a frame in use.
    pub fn share(&mut self, pa: u64) -> bool {
        match self.index(pa).and_then(|i| self.refs.get_mut(i)) {
            Some(r) if *r > 0 && *r < u16::MAX => {
                *r += 1;
                true
            }
            _ => false,
        }
    }

    /// The number of references to `pa` (0 when free or not in the pool).
    pub fn refs(&self, pa: u64) -> u16 {
        self.index(pa).and_then(|i| self.refs.get(i)).copied().unwrap_or(0)
    }

    /// Drops a reference; returns true when the frame became free.
    pub fn release(&mut self, pa: u64) -> bool {
        let Some(i) = self.index(pa) else { return false };
        match self.refs.get_mut(i) {
            Some(r) if *r > 0 => {
                *r -= 1;
                if *r == 0 {
                    self.free.push(i as u32);
                    return true;
                }
                false
            }
            _ => false,
        }
    }

    /// Frames not in use.
    pub fn free_frames(&self) -> usize {
        self.free.len() + (self.refs.len() - self.next_fresh as usize)
    }

    /// Frames in the pool.
    pub fn total_frames(&self) -> usize {
        self.refs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_until_exhausted_and_reuses() {
        let mut p = FramePool::new(0x1234, 0x1234 + 4 * FRAME);
        assert_eq!(p.total_frames(), 3);
        let a = p.alloc().expect("frame");
        let b = p.alloc().expect("frame");
        let c = p.alloc().expect("frame");
        assert_eq!(a, 0x2000);
        assert_ne!(a, b);
        assert_eq!(p.alloc(), Err(FrameError::Exhausted));
        assert!(p.release(b));
        assert_eq!(p.alloc(), Ok(b));
        assert_eq!(p.free_frames(), 0);
        assert!(p.contains(c) && !p.contains(c + 1) && !p.contains(0x1000));
    }

    #[test]
    fn shared_frames_free_on_last_release() {
        let mut p = FramePool::new(0, 2 * FRAME);
        let a = p.alloc().expect("frame");
        assert!(p.share(a));
        assert_eq!(p.refs(a), 2);
        assert!(!p.release(a));
        assert!(p.release(a));
        assert!(!p.release(a), "double free is refused");
        assert!(!p.share(a), "a free frame cannot be shared");
        assert!(!p.release(0x10_0000), "outside the pool");
    }
}
