//! Parsing a static x86_64 executable into a load plan.
//!
//! The bytes come from the container image, so they are an allegation: every field is
//! checked, every offset is bounds-checked, and a malformed file gives an [`ElfError`],
//! never a panic.

use alloc::vec::Vec;

/// Page size.
pub const PAGE: u64 = 4096;
/// Where a position-independent executable (`ET_DYN`) is loaded.
pub const PIE_BASE: u64 = 0x5555_5555_0000;
/// Lowest user address a segment may use (below it lies the kernel image).
pub const USER_MIN: u64 = 0x40_0000;
/// One past the highest user address.
pub const USER_END: u64 = 0x7fff_ffff_f000;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;

/// Segment may be executed.
pub const PF_X: u32 = 1;
/// Segment may be written.
pub const PF_W: u32 = 2;
/// Segment may be read.
pub const PF_R: u32 = 4;

/// Why a file cannot be executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// The file does not start with the ELF magic.
    NotElf,
    /// Not a 64-bit little-endian x86_64 file.
    WrongArch,
    /// Neither `ET_EXEC` nor `ET_DYN`.
    NotExecutable,
    /// The file has a `PT_INTERP` segment (needs a dynamic loader).
    Dynamic,
    /// A header or segment lies outside the file or has impossible sizes.
    Malformed,
    /// A segment lies outside the user address range.
    BadAddress,
    /// No loadable segment.
    NoSegments,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ElfError::NotElf => "not an ELF executable",
            ElfError::WrongArch => "wrong architecture (not x86_64)",
            ElfError::NotExecutable => "ELF file is not an executable",
            ElfError::Dynamic => "dynamically linked (no dynamic loader)",
            ElfError::Malformed => "malformed ELF file",
            ElfError::BadAddress => "ELF segment outside the user address range",
            ElfError::NoSegments => "ELF file has no loadable segment",
        })
    }
}

/// One segment to load: `[vaddr, vaddr + memsz)`, the first `filesz` bytes from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First address (after relocation), not page-aligned.
    pub vaddr: u64,
    /// Bytes in memory.
    pub memsz: u64,
    /// Offset of the file bytes.
    pub offset: u64,
    /// Bytes from the file.
    pub filesz: u64,
    /// `PF_*` flags.
    pub flags: u32,
}

/// Everything the loader and the start-up stack need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// The segments, relocated.
    pub segments: Vec<Segment>,
    /// The entry point, relocated.
    pub entry: u64,
    /// The load bias (0 for `ET_EXEC`).
    pub bias: u64,
    /// Address of the program headers in memory (`AT_PHDR`).
    pub phdr: u64,
    /// Size of one program header (`AT_PHENT`).
    pub phent: u64,
    /// Number of program headers (`AT_PHNUM`).
    pub phnum: u64,
    /// First page after the highest segment: where `brk` starts.
    pub brk_start: u64,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    let s = b.get(at..at + 2).ok_or(ElfError::Malformed)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    let s = b.get(at..at + 4).ok_or(ElfError::Malformed)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    let s = b.get(at..at + 8).ok_or(ElfError::Malformed)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Whether the bytes start like an ELF file (for "not executable" vs "exec format").
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(b"\x7fELF")
}

/// Checks `bytes` and plans the load.
pub fn plan(bytes: &[u8]) -> Result<LoadPlan, ElfError> {
    if !is_elf(bytes) {
        return Err(ElfError::NotElf);
    }
    // e_ident: class 2 = 64-bit, data 1 = little-endian.
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(ElfError::WrongArch);
    }
    if u16_at(bytes, 18)? != EM_X86_64 {
        return Err(ElfError::WrongArch);
    }
    let etype = u16_at(bytes, 16)?;
    let bias = match etype {
        ET_EXEC => 0,
        ET_DYN => PIE_BASE,
        _ => return Err(ElfError::NotExecutable),
    };
    let entry = u64_at(bytes, 24)?;
    let phoff = u64_at(bytes, 32)?;
    let phent = u16_at(bytes, 54)?;
    let phnum = u16_at(bytes, 56)?;
    if phent < 56 || phnum == 0 || phnum > 256 {
        return Err(ElfError::Malformed);
    }
    let mut segments = Vec::new();
    let mut phdr_vaddr = None;
    let mut first_load_off_vaddr = None;
    for i in 0..u64::from(phnum) {
        let at = phoff
            .checked_add(i * u64::from(phent))
            .and_then(|a| usize::try_from(a).ok())
            .ok_or(ElfError::Malformed)?;
        let ptype = u32_at(bytes, at)?;
        let flags = u32_at(bytes, at + 4)?;
        let offset = u64_at(bytes, at + 8)?;
        let vaddr = u64_at(bytes, at + 16)?;
        let filesz = u64_at(bytes, at + 32)?;
        let memsz = u64_at(bytes, at + 40)?;
        match ptype {
            PT_INTERP => return Err(ElfError::Dynamic),
            PT_PHDR => phdr_vaddr = Some(vaddr),
            PT_LOAD => {
                let end_in_file = offset.checked_add(filesz).ok_or(ElfError::Malformed)?;
                if filesz > memsz || end_in_file > bytes.len() as u64 {
                    return Err(ElfError::Malformed);
                }
                if offset % PAGE != vaddr % PAGE {
                    return Err(ElfError::Malformed);
                }
                let v = vaddr.checked_add(bias).ok_or(ElfError::BadAddress)?;
                let end = v.checked_add(memsz).ok_or(ElfError::BadAddress)?;
                if v < USER_MIN || end > USER_END {
                    return Err(ElfError::BadAddress);
                }
                if first_load_off_vaddr.is_none() && offset <= phoff {
                    first_load_off_vaddr = Some((offset, vaddr));
                }
                if memsz > 0 {
                    segments.push(Segment { vaddr: v, memsz, offset, filesz, flags });
                }
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    let mut sorted = segments.clone();
    sorted.sort_by_key(|s| s.vaddr);
    for w in sorted.windows(2) {
        if w[0].vaddr + w[0].memsz > w[1].vaddr {
            return Err(ElfError::Malformed);
        }
    }
    // Without PT_PHDR the headers are found through the segment that maps file offset phoff.
    let phdr = match phdr_vaddr {
        Some(v) => v.checked_add(bias).ok_or(ElfError::Malformed)?,
        None => match first_load_off_vaddr {
            Some((off, vaddr)) => (vaddr + (phoff - off)).checked_add(bias).ok_or(ElfError::Malformed)?,
            None => 0,
        },
    };
    let entry = entry.checked_add(bias).ok_or(ElfError::BadAddress)?;
    if !segments.iter().any(|s| s.flags & PF_X != 0 && s.vaddr <= entry && entry < s.vaddr + s.memsz) {
        return Err(ElfError::BadAddress);
    }
    let top = segments.iter().map(|s| s.vaddr + s.memsz).max().unwrap_or(USER_MIN);
    let brk_start = top.div_ceil(PAGE) * PAGE;
    Ok(LoadPlan { segments, entry, bias, phdr, phent: u64::from(phent), phnum: u64::from(phnum), brk_start })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A minimal ELF: one RX segment at `vaddr` holding the headers and 16 bytes of code.
    pub(crate) fn tiny(etype: u16, vaddr: u64, interp: bool) -> Vec<u8> {
        let phnum: u16 = if interp { 2 } else { 1 };
        let mut b = vec![0u8; 64 + 56 * usize::from(phnum) + 16];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&etype.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        let code = 64 + 56 * u64::from(phnum);
        b[24..32].copy_from_slice(&(vaddr + code).to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&phnum.to_le_bytes());
        let len = b.len() as u64;
        let ph = 64;
        b[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[ph + 4..ph + 8].copy_from_slice(&(PF_R | PF_X).to_le_bytes());
        b[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
        b[ph + 32..ph + 40].copy_from_slice(&len.to_le_bytes());
        b[ph + 40..ph + 48].copy_from_slice(&(len + 100).to_le_bytes());
        if interp {
            b[ph + 56..ph + 60].copy_from_slice(&PT_INTERP.to_le_bytes());
        }
        b
    }

    #[test]
    fn plans_a_static_executable() {
        let p = plan(&tiny(ET_EXEC, 0x40_0000, false)).expect("valid");
        assert_eq!(p.bias, 0);
        assert_eq!(p.entry, 0x40_0000 + 120);
        assert_eq!(p.phdr, 0x40_0040);
        assert_eq!(p.phnum, 1);
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.brk_start, 0x40_1000);
    }

    #[test]
    fn relocates_static_pie() {
        let p = plan(&tiny(ET_DYN, 0, false)).expect("valid");
        assert_eq!(p.bias, PIE_BASE);
        assert_eq!(p.segments[0].vaddr, PIE_BASE);
        assert_eq!(p.phdr, PIE_BASE + 64);
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        assert_eq!(plan(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(plan(&tiny(ET_EXEC, 0x40_0000, true)), Err(ElfError::Dynamic));
        let mut arm = tiny(ET_EXEC, 0x40_0000, false);
        arm[18] = 183;
        assert_eq!(plan(&arm), Err(ElfError::WrongArch));
        let mut c32 = tiny(ET_EXEC, 0x40_0000, false);
        c32[4] = 1;
        assert_eq!(plan(&c32), Err(ElfError::WrongArch));
        assert_eq!(plan(&tiny(ET_EXEC, 0x1000, false)), Err(ElfError::BadAddress));
        assert_eq!(plan(&tiny(1, 0x40_0000, false)), Err(ElfError::NotExecutable));
    }

    #[test]
    fn truncated_files_never_panic() {
        let good = tiny(ET_EXEC, 0x40_0000, false);
        for n in 0..good.len() {
            let _ = plan(&good[..n]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = plan(&bad);
        }
    }

    #[test]
    fn plans_the_hosts_busybox_when_present() {
        let Ok(bytes) = std::fs::read("/bin/busybox") else { return };
        let p = plan(&bytes).expect("busybox is a static executable");
        assert!(p.segments.iter().any(|s| s.flags & PF_X != 0));
        assert!(p.phdr != 0 && p.phent == 56);
        assert!(p.brk_start > p.entry);
    }
}
