//! A hand-made guest for the backends' own self-tests: 4 KiB frames of guest memory and
//! their nested page tables in the backend's format, built without the VM core so that a
//! backend can be checked on its own. Dropping it returns every frame.

use crate::mm;
use crate::mm::paging::{PageSize, PageTables, TableMemory};
use crate::vm::memory::leaf_flags;
use crate::vm::NestedFormat;
use alloc::vec::Vec;

const FRAME: u64 = 4096;

/// Nested-table frames taken from the frame allocator, remembered for freeing.
pub struct TableFrames {
    tables: Vec<u64>,
}

fn alloc_zeroed() -> Option<u64> {
    mm::alloc_zeroed_frame().ok()
}

impl TableMemory for TableFrames {
    fn alloc_table(&mut self) -> Option<u64> {
        let f = alloc_zeroed()?;
        self.tables.push(f);
        Some(f)
    }

    fn read_entry(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `PageTables` only passes table frames this type allocated (identity-
        // mapped); the index is reduced to the table's 512 entries.
        unsafe { core::ptr::read_volatile((table + (index as u64 % 512) * 8) as *const u64) }
    }

    fn write_entry(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: as in `read_entry`; the tables belong to this test guest alone.
        unsafe { core::ptr::write_volatile((table + (index as u64 % 512) * 8) as *mut u64, value) }
    }
}

/// Guest memory `0..bytes` (one frame per 4 KiB) behind nested page tables.
pub struct TestGuest {
    frames: Vec<u64>,
    tables: PageTables<TableFrames>,
}

impl TestGuest {
    /// Allocates and maps `bytes` of zeroed guest memory for a backend walking `format`.
    pub fn new(bytes: u64, format: NestedFormat) -> Result<TestGuest, &'static str> {
        let tables = PageTables::new(TableFrames { tables: Vec::new() })
            .map_err(|_| "no frame for the nested root")?;
        let mut g = TestGuest { frames: Vec::with_capacity((bytes / FRAME) as usize), tables };
        for gpa in (0..bytes).step_by(FRAME as usize) {
            let Some(f) = alloc_zeroed() else {
                return Err("no frame for guest memory");
            };
            g.frames.push(f);
            if g.tables.map(gpa, f, PageSize::Size4K, leaf_flags(format)).is_err() {
                return Err("mapping guest memory in the nested tables failed");
            }
        }
        Ok(g)
    }

    /// The nested tables' root (host-physical).
    pub fn root(&self) -> u64 {
        self.tables.root()
    }

    /// Copies `bytes` to guest-physical `gpa`; bytes beyond guest memory are dropped.
    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        for (a, &b) in (gpa..).zip(bytes) {
            if let Some(&f) = self.frames.get((a / FRAME) as usize) {
                // SAFETY: `f` is a guest frame this guest owns, identity-mapped; the
                // offset is inside it.
                unsafe { core::ptr::write_volatile((f + a % FRAME) as *mut u8, b) };
            }
        }
    }

    /// Writes a little-endian `u64` at `gpa`.
    pub fn write_u64(&self, gpa: u64, v: u64) {
        self.write(gpa, &v.to_le_bytes());
    }
}

impl Drop for TestGuest {
    fn drop(&mut self) {
        let tables = core::mem::take(&mut self.tables.mem().tables);
        for f in self.frames.drain(..).chain(tables) {
            if let Err(e) = mm::free_frame(f) {
                log::warn!("test guest: returning frame {f:#x}: {e}");
            }
        }
    }
}
