//! The normalized boot information every boot path produces.

use crate::memmap::{MemoryKind, MemoryMap, MemoryRegion};

/// Longest command line kept; longer ones are cut and a warning counted.
pub const CMDLINE_MAX: usize = 1024;
/// Most boot modules kept.
pub const MAX_MODULES: usize = 16;
/// Longest module command line kept.
pub const MODULE_CMDLINE_MAX: usize = 128;
/// Most physical ranges holding boot data that must survive until the kernel copies it.
pub const MAX_BOOT_DATA: usize = 8;

/// How the kernel was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Xen PVH direct boot (QEMU `-kernel`).
    Pvh,
    /// Multiboot2 (GRUB).
    Multiboot2,
    /// Entered with a magic value no protocol uses; the info is empty.
    Unknown(u32),
}

impl Protocol {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Pvh => "pvh",
            Protocol::Multiboot2 => "multiboot2",
            Protocol::Unknown(_) => "unknown",
        }
    }
}

/// A module (file) the loader placed in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootModule {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The module's own command line (for GRUB, the words after the path).
    pub cmdline: heapless::String<MODULE_CMDLINE_MAX>,
}

/// Everything the kernel learns from its loader.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// How the kernel was entered.
    pub protocol: Protocol,
    /// Normalized physical memory map.
    pub memory_map: MemoryMap,
    /// The kernel command line.
    pub cmdline: heapless::String<CMDLINE_MAX>,
    /// Loaded modules.
    pub modules: heapless::Vec<BootModule, MAX_MODULES>,
    /// Physical address of the ACPI RSDP, if the loader gave one.
    pub rsdp: Option<u64>,
    /// The loader's name, if it said.
    pub loader_name: heapless::String<64>,
    /// Physical ranges holding loader data the kernel still reads (boot info structures).
    pub boot_data: heapless::Vec<(u64, u64), MAX_BOOT_DATA>,
    /// Loader entries dropped as malformed or beyond capacity.
    pub warnings: usize,
}

impl BootInfo {
    /// An empty record for `protocol`.
    pub const fn empty(protocol: Protocol) -> Self {
        BootInfo {
            protocol,
            memory_map: heapless::Vec::new(),
            cmdline: heapless::String::new(),
            modules: heapless::Vec::new(),
            rsdp: None,
            loader_name: heapless::String::new(),
            boot_data: heapless::Vec::new(),
            warnings: 0,
        }
    }

    /// Usable RAM in bytes.
    pub fn usable_bytes(&self) -> u64 {
        crate::memmap::usable_bytes(&self.memory_map)
    }

    /// Usable regions.
    pub fn usable(&self) -> impl Iterator<Item = &MemoryRegion> {
        self.memory_map.iter().filter(|r| r.kind == MemoryKind::Usable)
    }

    /// Whether `start..end` (non-empty) lies inside one usable region: only RAM is
    /// mapped by the kernel, so a loader's module anywhere else cannot be read.
    pub fn in_usable_ram(&self, start: u64, end: u64) -> bool {
        start < end && self.usable().any(|r| r.start <= start && end <= r.end)
    }

    pub(crate) fn set_cmdline(&mut self, s: &str) {
        self.cmdline.clear();
        for c in s.chars() {
            if self.cmdline.push(c).is_err() {
                self.warnings += 1;
                break;
            }
        }
    }

    /// Normalizes raw `(base, length, kind)` loader entries into the memory map,
    /// counting dropped entries as warnings.
    pub(crate) fn set_memory_map(&mut self, raw: &[(u64, u64, MemoryKind)]) {
        let (map, dropped) = crate::memmap::normalize(raw);
        self.memory_map = map;
        self.warnings += dropped;
    }

    pub(crate) fn note_boot_data(&mut self, start: u64, len: u64) {
        if self.boot_data.push((start, start.saturating_add(len))).is_err() {
            self.warnings += 1;
        }
    }
}
