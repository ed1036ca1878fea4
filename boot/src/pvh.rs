//! Xen PVH `hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h), version 0 and 1.
//!
//! Layout of the structure at the address in `ebx`:
//!
//! | offset | field |
//! |---|---|
//! | 0 | `magic` = 0x336ec578 |
//! | 4 | `version` |
//! | 8 | `flags` |
//! | 12 | `nr_modules` |
//! | 16 | `modlist_paddr` (entries of 32 bytes: paddr, size, cmdline_paddr, reserved) |
//! | 24 | `cmdline_paddr` |
//! | 32 | `rsdp_paddr` |
//! | 40 | `memmap_paddr` (version >= 1; entries of 24 bytes: addr, size, type, reserved) |
//! | 48 | `memmap_entries` |

use crate::info::{BootInfo, BootModule, Protocol, CMDLINE_MAX, MAX_MODULES};
use crate::memmap::{MemoryKind, MAX_REGIONS};
use crate::PhysRead;

/// `hvm_start_info.magic`.
pub const MAGIC: u32 = 0x336e_c578;
/// Size of `hvm_start_info` (version 1).
pub const START_INFO_LEN: u64 = 56;

/// Builds a [`BootInfo`] from the start info at `paddr`. Never panics; inconsistent parts
/// are skipped and counted in `warnings`.
pub fn parse(mem: &impl PhysRead, paddr: u64) -> BootInfo {
    let mut info = BootInfo::empty(Protocol::Pvh);
    if mem.read_u32(paddr) != Some(MAGIC) {
        info.warnings += 1;
        return info;
    }
    info.note_boot_data(paddr, START_INFO_LEN);
    let version = mem.read_u32(paddr + 4).unwrap_or(0);
    let nr_modules = mem.read_u32(paddr + 12).unwrap_or(0);
    let modlist = mem.read_u64(paddr + 16).unwrap_or(0);
    let cmdline = mem.read_u64(paddr + 24).unwrap_or(0);
    let rsdp = mem.read_u64(paddr + 32).unwrap_or(0);

    if cmdline != 0 {
        let mut s = heapless::String::<CMDLINE_MAX>::new();
        if !mem.read_cstr(cmdline, &mut s) {
            info.warnings += 1;
        }
        info.set_cmdline(&s);
    }
    info.rsdp = (rsdp != 0).then_some(rsdp);
    info.loader_name.push_str("pvh").ok();

    if nr_modules as usize > MAX_MODULES {
        info.warnings += nr_modules as usize - MAX_MODULES;
    }
    for i in 0..u64::from(nr_modules).min(MAX_MODULES as u64) {
        let word = |off| field(modlist, i, 32, off).and_then(|a| mem.read_u64(a));
        let (Some(start), Some(size), Some(cmd)) = (word(0), word(8), word(16)) else {
            info.warnings += 1;
            continue;
        };
        let Some(end) = start.checked_add(size) else {
            info.warnings += 1;
            continue;
        };
        let mut module = BootModule { start, end, cmdline: heapless::String::new() };
        if cmd != 0 && !mem.read_cstr(cmd, &mut module.cmdline) {
            info.warnings += 1;
        }
        if info.modules.push(module).is_err() {
            info.warnings += 1;
        }
    }

    if version >= 1 {
        let memmap = mem.read_u64(paddr + 40).unwrap_or(0);
        let mut entries = mem.read_u32(paddr + 48).unwrap_or(0) as usize;
        if entries > MAX_REGIONS {
            info.warnings += entries - MAX_REGIONS;
            entries = MAX_REGIONS;
        }
        let mut raw: heapless::Vec<(u64, u64, MemoryKind), MAX_REGIONS> = heapless::Vec::new();
        for i in 0..entries {
            let at = |off| field(memmap, i as u64, 24, off);
            let (Some(base), Some(len), Some(ty)) = (
                at(0).and_then(|a| mem.read_u64(a)),
                at(8).and_then(|a| mem.read_u64(a)),
                at(16).and_then(|a| mem.read_u32(a)),
            ) else {
                info.warnings += 1;
                continue;
            };
            if raw.push((base, len, MemoryKind::from_e820(ty))).is_err() {
                info.warnings += 1;
            }
        }
        info.set_memory_map(&raw);
    } else {
        info.warnings += 1;
    }
    info
}

/// The address of byte `off` of entry `index` (of `stride` bytes) of a loader table at
/// `base`; `None` when it does not fit in 64 bits (the table is then unreadable, not
/// wrapped around to low memory).
fn field(base: u64, index: u64, stride: u64, off: u64) -> Option<u64> {
    base.checked_add(index.checked_mul(stride)?)?.checked_add(off)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sparse physical memory for tests.
    pub struct Arena {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl Arena {
        pub fn new(base: u64, len: usize) -> Self {
            Arena { base, bytes: vec![0; len] }
        }
        pub fn put(&mut self, paddr: u64, data: &[u8]) {
            let off = (paddr - self.base) as usize;
            self.bytes[off..off + data.len()].copy_from_slice(data);
        }
        pub fn put_u32(&mut self, paddr: u64, v: u32) {
            self.put(paddr, &v.to_le_bytes());
        }
        pub fn put_u64(&mut self, paddr: u64, v: u64) {
            self.put(paddr, &v.to_le_bytes());
        }
    }

    impl PhysRead for Arena {
        fn read(&self, paddr: u64, buf: &mut [u8]) -> bool {
            let Some(off) = paddr.checked_sub(self.base) else {
                return false;
            };
            let Some(end) = usize::try_from(off).ok().and_then(|o| o.checked_add(buf.len())) else {
                return false;
            };
            match self.bytes.get(end - buf.len()..end) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    fn qemu_like() -> Arena {
        let mut a = Arena::new(0x1000, 0x3000);
        let si = 0x1000;
        a.put_u32(si, MAGIC);
        a.put_u32(si + 4, 1);
        a.put_u32(si + 12, 1);
        a.put_u64(si + 16, 0x1800);
        a.put_u64(si + 24, 0x1100);
        a.put_u64(si + 32, 0xf5a40);
        a.put_u64(si + 40, 0x1200);
        a.put_u32(si + 48, 3);
        a.put(0x1100, b"log=debug selftest=all\0");
        for (i, (base, len, ty)) in
            [(0u64, 0x9fc00u64, 1u32), (0x9fc00, 0x400, 2), (0x100000, 0x1ff00000, 1)].iter().enumerate()
        {
            let at = 0x1200 + i as u64 * 24;
            a.put_u64(at, *base);
            a.put_u64(at + 8, *len);
            a.put_u32(at + 16, *ty);
        }
        a.put_u64(0x1800, 0x400000);
        a.put_u64(0x1808, 0x1234);
        a.put_u64(0x1810, 0x1900);
        a.put(0x1900, b"initrd\0");
        a
    }

    #[test]
    fn parses_a_qemu_start_info() {
        let a = qemu_like();
        let info = parse(&a, 0x1000);
        assert_eq!(info.protocol, Protocol::Pvh);
        assert_eq!(info.warnings, 0);
        assert_eq!(info.cmdline.as_str(), "log=debug selftest=all");
        assert_eq!(info.rsdp, Some(0xf5a40));
        assert_eq!(info.memory_map.len(), 3);
        assert_eq!(info.usable_bytes(), 0x9f000 + 0x1ff00000);
        assert_eq!(info.modules.len(), 1);
        assert_eq!(info.modules[0].start, 0x400000);
        assert_eq!(info.modules[0].end, 0x401234);
        assert_eq!(info.modules[0].cmdline.as_str(), "initrd");
        assert_eq!(info.boot_data.as_slice(), &[(0x1000, 0x1000 + START_INFO_LEN)]);
    }

    #[test]
    fn bad_magic_gives_an_empty_info() {
        let mut a = qemu_like();
        a.put_u32(0x1000, 0xdead);
        let info = parse(&a, 0x1000);
        assert!(info.memory_map.is_empty());
        assert_eq!(info.warnings, 1);
    }

    #[test]
    fn wild_pointers_are_counted_not_followed() {
        let mut a = qemu_like();
        a.put_u32(0x1000 + 12, 1000); // many modules, list runs off memory
        a.put_u64(0x1000 + 24, 0xffff_ffff_ffff_fff0); // cmdline nowhere
        a.put_u32(0x1000 + 48, u32::MAX); // memmap entries past the end
        let info = parse(&a, 0x1000);
        assert!(info.warnings > 0);
        assert!(info.cmdline.is_empty());
        assert!(info.modules.len() <= crate::info::MAX_MODULES);
        assert!(info.memory_map.len() <= MAX_REGIONS);
    }

    #[test]
    fn tables_at_the_top_of_the_address_space_do_not_wrap() {
        let mut a = qemu_like();
        a.put_u64(0x1000 + 16, u64::MAX - 8); // module list: its second word overflows
        a.put_u64(0x1000 + 40, u64::MAX - 20); // memory map: likewise
        let info = parse(&a, 0x1000);
        assert!(info.modules.is_empty());
        assert!(info.memory_map.is_empty());
        assert_eq!(info.warnings, 1 + 3, "one bad module, three bad map entries");
        assert_eq!(field(u64::MAX - 8, 0, 32, 16), None);
        assert_eq!(field(0x1000, u64::MAX, 24, 0), None);
        assert_eq!(field(0x1000, 2, 24, 16), Some(0x1000 + 64));
    }

    #[test]
    fn modules_are_checked_against_usable_ram() {
        let info = parse(&qemu_like(), 0x1000);
        let m = &info.modules[0];
        assert!(info.in_usable_ram(m.start, m.end));
        assert!(info.in_usable_ram(0x100000, 0x20000000));
        assert!(!info.in_usable_ram(0x9fc00, 0x9fd00), "reserved");
        assert!(!info.in_usable_ram(0x9f000, 0x100001), "across a hole");
        assert!(!info.in_usable_ram(0x1fff_f000, 0x2000_1000), "past the end of RAM");
        assert!(!info.in_usable_ram(0x400000, 0x400000), "empty");
        assert!(!info.in_usable_ram(u64::MAX - 1, u64::MAX));
    }
}
