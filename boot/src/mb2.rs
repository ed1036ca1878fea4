//! Multiboot2 boot information (GRUB), read with the `multiboot2` crate.

use crate::info::{BootInfo, BootModule, Protocol};
use crate::memmap::{MemoryKind, MAX_REGIONS};
use multiboot2::{BootInformation, BootInformationHeader};

/// The value GRUB leaves in `eax`.
pub const MAGIC: u32 = multiboot2::MAGIC;

/// Builds a [`BootInfo`] from the Multiboot2 information at `mbi`.
///
/// Malformed tags are skipped and counted in `warnings`; a structure with no end tag gives
/// an empty record.
///
/// # Safety
/// `mbi` must be the 8-byte-aligned address of a Multiboot2 information structure that is
/// readable for its whole `total_size` and not modified while the returned value is built.
pub unsafe fn parse(mbi: u64) -> BootInfo {
    let mut info = BootInfo::empty(Protocol::Multiboot2);
    // SAFETY: the caller guarantees `mbi` points to a readable, unchanging MBI; `load`
    // itself checks the size field and the end tag.
    let Ok(mb) = (unsafe { BootInformation::load(mbi as usize as *const BootInformationHeader) }) else {
        info.warnings += 1;
        return info;
    };
    info.note_boot_data(mb.start_address() as u64, mb.total_size() as u64);

    if let Some(tag) = mb.command_line_tag() {
        match tag.cmdline() {
            Ok(s) => info.set_cmdline(s),
            Err(_) => info.warnings += 1,
        }
    }
    if let Some(Ok(name)) = mb.boot_loader_name_tag().map(|t| t.name()) {
        for c in name.chars() {
            if info.loader_name.push(c).is_err() {
                break;
            }
        }
    }
    for m in mb.module_tags() {
        let mut module = BootModule {
            start: u64::from(m.start_address()),
            end: u64::from(m.end_address()),
            cmdline: heapless::String::new(),
        };
        if module.end < module.start {
            info.warnings += 1;
            continue;
        }
        if let Ok(s) = m.cmdline() {
            for c in s.chars() {
                if module.cmdline.push(c).is_err() {
                    break;
                }
            }
        }
        if info.modules.push(module).is_err() {
            info.warnings += 1;
        }
    }
    // The tags hold a copy of the RSDP; its address is as good as the firmware's.
    if let Some(tag) = mb.rsdp_v2_tag() {
        info.rsdp = Some(tag as *const _ as *const u8 as u64 + 8);
    } else if let Some(tag) = mb.rsdp_v1_tag() {
        info.rsdp = Some(tag as *const _ as *const u8 as u64 + 8);
    }
    if let Some(mmap) = mb.memory_map_tag() {
        let mut raw: heapless::Vec<(u64, u64, MemoryKind), MAX_REGIONS> = heapless::Vec::new();
        for area in mmap.memory_areas() {
            let kind = MemoryKind::from_e820(u32::from(area.typ()));
            if raw.push((area.start_address(), area.size(), kind)).is_err() {
                info.warnings += 1;
            }
        }
        info.set_memory_map(&raw);
    } else {
        info.warnings += 1;
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use multiboot2::{
        BootLoaderNameTag, Builder, CommandLineTag, MemoryArea, MemoryAreaType, MemoryMapTag, ModuleTag,
    };

    #[test]
    fn parses_a_grub_like_mbi() {
        let mbi = Builder::new()
            .cmdline(CommandLineTag::new("log=info selftest=all"))
            .bootloader(BootLoaderNameTag::new("GRUB 2.06"))
            .add_module(ModuleTag::new(0x800000, 0x801000, "rootfs.tar"))
            .mmap(MemoryMapTag::new(&[
                MemoryArea::new(0, 0x9fc00, MemoryAreaType::Available),
                MemoryArea::new(0x9fc00, 0x400, MemoryAreaType::Reserved),
                MemoryArea::new(0x100000, 0x1fe0000, MemoryAreaType::Available),
                MemoryArea::new(0x20e0000, 0x20000, MemoryAreaType::AcpiAvailable),
            ]))
            .build();
        let ptr = &*mbi as *const _ as *const u8 as u64;
        // SAFETY: `mbi` is a complete, aligned MBI owned by this test.
        let info = unsafe { parse(ptr) };
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(info.warnings, 0);
        assert_eq!(info.cmdline.as_str(), "log=info selftest=all");
        assert_eq!(info.loader_name.as_str(), "GRUB 2.06");
        assert_eq!(info.modules.len(), 1);
        assert_eq!((info.modules[0].start, info.modules[0].end), (0x800000, 0x801000));
        assert_eq!(info.modules[0].cmdline.as_str(), "rootfs.tar");
        assert_eq!(info.memory_map.len(), 4);
        assert_eq!(info.memory_map[3].kind, MemoryKind::AcpiReclaimable);
        assert_eq!(info.usable_bytes(), 0x9f000 + 0x1fe0000);
        assert_eq!(info.boot_data.len(), 1);
    }

    #[test]
    fn a_truncated_mbi_gives_an_empty_record() {
        let mbi = Builder::new().cmdline(CommandLineTag::new("x")).build();
        let len = mbi.header().total_size() as usize;
        // Copy into an aligned buffer and clobber the end tag.
        let mut buf = vec![0u64; len.div_ceil(8)];
        // SAFETY: both ranges are `len` bytes long and do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(&*mbi as *const _ as *const u8, buf.as_mut_ptr().cast::<u8>(), len)
        };
        let last = len / 8 - 1;
        buf[last] = 0xdead_beef;
        // SAFETY: `buf` is an aligned, readable copy.
        let info = unsafe { parse(buf.as_ptr() as u64) };
        assert!(info.memory_map.is_empty());
        assert_eq!(info.warnings, 1);
    }
}
