//! Boot: the two ways into the kernel and the one `BootInfo` that comes out.
//!
//! * **PVH** (QEMU `-kernel`, cloud hypervisors): the ELF note `XEN_ELFNOTE_PHYS32_ENTRY`
//!   names `pvh_start32`; the loader enters it in 32-bit protected mode, paging off, with
//!   `ebx` = physical address of `hvm_start_info`.
//! * **Multiboot2** (GRUB, bare metal): GRUB jumps to the ELF entry `mb2_start32` in 32-bit
//!   protected mode with `eax` = `0x36d76289` and `ebx` = the boot information.
//!
//! Both paths share one 32-bit stub that zeroes `.bss`, identity-maps the first 4 GiB with
//! 2 MiB pages, enables long mode and calls [`entry::boot_rust_entry`], which turns the
//! protocol's structures into a [`BootInfo`] and calls the kernel's entry point declared
//! with [`entry_point!`].
//!
//! The parsers read firmware and loader memory only through [`PhysRead`], so they are tested
//! on the host over made-up structures. Contract: no input makes them panic; an out-of-range
//! or inconsistent structure is dropped and counted in [`BootInfo::warnings`].
#![cfg_attr(not(test), no_std)]

pub mod info;
pub mod mb2;
pub mod memmap;
pub mod pvh;

#[cfg(target_os = "none")]
pub mod entry;

pub use info::{BootInfo, BootModule, Protocol};
pub use memmap::{MemoryKind, MemoryRegion};

/// Reads bytes of physical memory (identity-mapped during boot; a byte arena in tests).
pub trait PhysRead {
    /// Fills `buf` from physical address `paddr`; `false` when the range is not readable.
    fn read(&self, paddr: u64, buf: &mut [u8]) -> bool;

    /// Reads a little-endian `u32`.
    fn read_u32(&self, paddr: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(paddr, &mut b).then(|| u32::from_le_bytes(b))
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, paddr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(paddr, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// Reads a NUL-terminated string of at most `max` bytes into `out` (lossy on bad UTF-8).
    fn read_cstr<const N: usize>(&self, paddr: u64, out: &mut heapless::String<N>) -> bool {
        out.clear();
        for i in 0..N as u64 {
            let mut b = [0u8; 1];
            if !self.read(paddr.wrapping_add(i), &mut b) {
                return false;
            }
            if b[0] == 0 {
                return true;
            }
            let c = if b[0].is_ascii() { b[0] as char } else { '?' };
            if out.push(c).is_err() {
                return true;
            }
        }
        true
    }
}

/// Declares the kernel's 64-bit entry point: `fn(&'static BootInfo) -> !`.
#[macro_export]
macro_rules! entry_point {
    ($path:path) => {
        #[export_name = "__boot_kernel_main"]
        extern "Rust" fn __boot_kernel_main(info: &'static $crate::BootInfo) -> ! {
            let f: fn(&'static $crate::BootInfo) -> ! = $path;
            f(info)
        }
    };
}
