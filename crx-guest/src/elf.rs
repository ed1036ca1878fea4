//! Parsing a static x86_64 executable into a load plan.
//!
//! The bytes come from the container image, so they are an allegation: the `elf` crate reads
//! the headers with bounds-checked accesses, every field is checked here, and a malformed file
//! gives an [`ElfError`] naming what is wrong, never a panic. Only the file header and the
//! program headers are read: section headers play no part in loading.

use alloc::vec::Vec;

use ::elf::abi::{EM_X86_64, ET_DYN, ET_EXEC, PT_INTERP, PT_LOAD, PT_PHDR};
use ::elf::endian::LittleEndian;
use ::elf::file::{self as elf_file, Class, FileHeader, ELF64_EHDR_TAILSIZE};
use ::elf::parse::{ParseAt, ParseError};
use ::elf::segment::ProgramHeader;

/// Page size.
pub const PAGE: u64 = 4096;
/// Where a position-independent executable (`ET_DYN`) is loaded.
pub const PIE_BASE: u64 = 0x5555_5555_0000;
/// Lowest user address a segment may use (below it lies the kernel image).
pub const USER_MIN: u64 = 0x40_0000;
/// One past the highest user address.
pub const USER_END: u64 = 0x7fff_ffff_f000;

/// Segment may be executed.
pub const PF_X: u32 = ::elf::abi::PF_X;
/// Segment may be written.
pub const PF_W: u32 = ::elf::abi::PF_W;
/// Segment may be read.
pub const PF_R: u32 = ::elf::abi::PF_R;

/// Bytes of `e_ident`.
const IDENT: usize = ::elf::abi::EI_NIDENT;
/// Bytes of one 64-bit program header.
const PHDR64: usize = 56;
/// Most program headers accepted.
const MAX_PHNUM: u16 = 256;

/// Why a file cannot be executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// The file does not start with the ELF magic.
    NotElf,
    /// The file ends inside the ELF header.
    TruncatedHeader,
    /// `e_ident[EI_VERSION]` is not `EV_CURRENT`.
    BadVersion,
    /// Not a 64-bit file (`ELFCLASS64`).
    WrongClass,
    /// Not a little-endian file (`ELFDATA2LSB`).
    WrongEndian,
    /// Not an x86_64 file (`EM_X86_64`).
    WrongArch,
    /// Neither `ET_EXEC` nor `ET_DYN`.
    NotExecutable,
    /// The program header table has no entries, too many, or entries too small to hold a
    /// 64-bit program header.
    BadProgramHeaders,
    /// The program header table does not lie within the file.
    TruncatedProgramHeaders,
    /// The file has a `PT_INTERP` segment (needs a dynamic loader).
    Dynamic,
    /// A loadable segment's file bytes do not lie within the file.
    SegmentOutsideFile,
    /// A loadable segment has more bytes in the file than in memory.
    SegmentLargerInFile,
    /// A loadable segment's file offset and address differ modulo the page size.
    UnalignedSegment,
    /// Two loadable segments overlap in memory.
    OverlappingSegments,
    /// A segment lies outside the user address range.
    BadAddress,
    /// The program headers' address in memory (`AT_PHDR`) is out of range.
    BadPhdrAddress,
    /// The entry point is not in an executable segment.
    BadEntry,
    /// No loadable segment.
    NoSegments,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ElfError::NotElf => "not an ELF executable",
            ElfError::TruncatedHeader => "malformed ELF file: truncated ELF header",
            ElfError::BadVersion => "malformed ELF file: unknown ELF version",
            ElfError::WrongClass => "wrong architecture (not x86_64): not a 64-bit ELF file",
            ElfError::WrongEndian => "wrong architecture (not x86_64): not a little-endian ELF file",
            ElfError::WrongArch => "wrong architecture (not x86_64)",
            ElfError::NotExecutable => "ELF file is not an executable",
            ElfError::BadProgramHeaders => "malformed ELF file: bad program header table",
            ElfError::TruncatedProgramHeaders => "malformed ELF file: program header table outside the file",
            ElfError::Dynamic => "dynamically linked (no dynamic loader)",
            ElfError::SegmentOutsideFile => "malformed ELF file: segment outside the file",
            ElfError::SegmentLargerInFile => "malformed ELF file: segment larger in the file than in memory",
            ElfError::UnalignedSegment => {
                "malformed ELF file: segment offset and address differ modulo the page size"
            }
            ElfError::OverlappingSegments => "malformed ELF file: overlapping segments",
            ElfError::BadAddress => "ELF segment outside the user address range",
            ElfError::BadPhdrAddress => "malformed ELF file: program header address out of range",
            ElfError::BadEntry => "ELF entry point outside an executable segment",
            ElfError::NoSegments => "ELF file has no loadable segment",
        })
    }
}

/// What a failure of the `elf` crate's header parsing means here.
fn header_error(e: ParseError) -> ElfError {
    match e {
        ParseError::BadMagic(_) => ElfError::NotElf,
        ParseError::UnsupportedVersion(_) => ElfError::BadVersion,
        ParseError::UnsupportedElfClass(_) => ElfError::WrongClass,
        ParseError::UnsupportedElfEndianness(_) => ElfError::WrongEndian,
        _ => ElfError::TruncatedHeader,
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

/// Whether the bytes start like an ELF file (for "not executable" vs "exec format").
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.get(..4) == Some(b"\x7fELF")
}

/// Reads and checks the file header: a 64-bit little-endian x86_64 header.
fn file_header(bytes: &[u8]) -> Result<FileHeader<LittleEndian>, ElfError> {
    if !is_elf(bytes) {
        return Err(ElfError::NotElf);
    }
    let ident = bytes.get(..IDENT).ok_or(ElfError::TruncatedHeader)?;
    let ident = elf_file::parse_ident::<LittleEndian>(ident).map_err(header_error)?;
    if ident.1 != Class::ELF64 {
        return Err(ElfError::WrongClass);
    }
    let tail = bytes.get(IDENT..IDENT + ELF64_EHDR_TAILSIZE).ok_or(ElfError::TruncatedHeader)?;
    let ehdr = FileHeader::parse_tail(ident, tail).map_err(header_error)?;
    if ehdr.e_machine != EM_X86_64 {
        return Err(ElfError::WrongArch);
    }
    Ok(ehdr)
}

/// Checks `bytes` and plans the load.
pub fn plan(bytes: &[u8]) -> Result<LoadPlan, ElfError> {
    let ehdr = file_header(bytes)?;
    let bias = match ehdr.e_type {
        ET_EXEC => 0,
        ET_DYN => PIE_BASE,
        _ => return Err(ElfError::NotExecutable),
    };
    let entry = ehdr.e_entry;
    let phoff = ehdr.e_phoff;
    let phent = ehdr.e_phentsize;
    let phnum = ehdr.e_phnum;
    if usize::from(phent) < PHDR64 || phnum == 0 || phnum > MAX_PHNUM {
        return Err(ElfError::BadProgramHeaders);
    }
    // The whole table lies in the file: the last entry's 64-bit header ends within it.
    let table_end = u64::from(phnum - 1)
        .checked_mul(u64::from(phent))
        .and_then(|n| n.checked_add(PHDR64 as u64))
        .and_then(|n| n.checked_add(phoff))
        .ok_or(ElfError::TruncatedProgramHeaders)?;
    if table_end > bytes.len() as u64 {
        return Err(ElfError::TruncatedProgramHeaders);
    }
    let mut segments = Vec::new();
    let mut phdr_vaddr = None;
    let mut first_load_off_vaddr = None;
    for i in 0..u64::from(phnum) {
        let mut at =
            usize::try_from(phoff + i * u64::from(phent)).map_err(|_| ElfError::TruncatedProgramHeaders)?;
        let ph = ProgramHeader::parse_at(LittleEndian, Class::ELF64, &mut at, bytes)
            .map_err(|_| ElfError::TruncatedProgramHeaders)?;
        let (flags, offset, vaddr, filesz, memsz) =
            (ph.p_flags, ph.p_offset, ph.p_vaddr, ph.p_filesz, ph.p_memsz);
        match ph.p_type {
            PT_INTERP => return Err(ElfError::Dynamic),
            PT_PHDR => phdr_vaddr = Some(vaddr),
            PT_LOAD => {
                let end_in_file = offset.checked_add(filesz).ok_or(ElfError::SegmentOutsideFile)?;
                if end_in_file > bytes.len() as u64 {
                    return Err(ElfError::SegmentOutsideFile);
                }
                if filesz > memsz {
                    return Err(ElfError::SegmentLargerInFile);
                }
                if offset % PAGE != vaddr % PAGE {
                    return Err(ElfError::UnalignedSegment);
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
            return Err(ElfError::OverlappingSegments);
        }
    }
    // Without PT_PHDR the headers are found through the segment that maps file offset phoff.
    let phdr = match phdr_vaddr {
        Some(v) => v.checked_add(bias).ok_or(ElfError::BadPhdrAddress)?,
        None => match first_load_off_vaddr {
            Some((off, vaddr)) => {
                (vaddr + (phoff - off)).checked_add(bias).ok_or(ElfError::BadPhdrAddress)?
            }
            None => 0,
        },
    };
    let entry = entry.checked_add(bias).ok_or(ElfError::BadEntry)?;
    if !segments.iter().any(|s| s.flags & PF_X != 0 && s.vaddr <= entry && entry < s.vaddr + s.memsz) {
        return Err(ElfError::BadEntry);
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
        assert_eq!(plan(&c32), Err(ElfError::WrongClass));
        assert_eq!(plan(&tiny(ET_EXEC, 0x1000, false)), Err(ElfError::BadAddress));
        assert_eq!(plan(&tiny(1, 0x40_0000, false)), Err(ElfError::NotExecutable));
    }

    /// Offsets of the first program header (in `tiny`) and of its fields.
    const PH: usize = 64;
    const P_FLAGS: usize = 4;
    const P_VADDR: usize = 16;
    const P_FILESZ: usize = 32;
    const P_MEMSZ: usize = 40;

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    fn exec() -> Vec<u8> {
        tiny(ET_EXEC, 0x40_0000, false)
    }

    #[test]
    fn a_cut_header_is_truncated() {
        let good = exec();
        assert_eq!(plan(&good[..8]), Err(ElfError::TruncatedHeader));
        assert_eq!(plan(&good[..40]), Err(ElfError::TruncatedHeader));
    }

    #[test]
    fn an_unknown_ident_version_is_refused() {
        let mut b = exec();
        b[6] = 0;
        assert_eq!(plan(&b), Err(ElfError::BadVersion));
    }

    #[test]
    fn a_file_that_is_not_64_bit_is_the_wrong_class() {
        for class in [1, 0, 7] {
            let mut b = exec();
            b[4] = class;
            assert_eq!(plan(&b), Err(ElfError::WrongClass), "class {class}");
        }
    }

    #[test]
    fn a_big_endian_file_is_refused() {
        let mut b = exec();
        b[5] = 2;
        assert_eq!(plan(&b), Err(ElfError::WrongEndian));
    }

    #[test]
    fn an_impossible_program_header_table_is_refused() {
        for (at, v) in [(54, 32u16), (56, 0), (56, 300)] {
            let mut b = exec();
            put(&mut b, at, &v.to_le_bytes());
            assert_eq!(plan(&b), Err(ElfError::BadProgramHeaders), "field at {at} = {v}");
        }
    }

    #[test]
    fn a_program_header_table_past_the_end_is_refused() {
        for phoff in [exec().len() as u64 - 8, u64::MAX - 8] {
            let mut b = exec();
            put(&mut b, 32, &phoff.to_le_bytes());
            assert_eq!(plan(&b), Err(ElfError::TruncatedProgramHeaders), "phoff {phoff:#x}");
        }
    }

    #[test]
    fn a_segment_past_the_end_of_the_file_is_refused() {
        let mut b = exec();
        let len = b.len() as u64;
        put(&mut b, PH + P_FILESZ, &(len + 1).to_le_bytes());
        assert_eq!(plan(&b), Err(ElfError::SegmentOutsideFile));
        put(&mut b, PH + 8, &u64::MAX.to_le_bytes());
        assert_eq!(plan(&b), Err(ElfError::SegmentOutsideFile));
    }

    #[test]
    fn a_segment_larger_in_the_file_than_in_memory_is_refused() {
        let mut b = exec();
        let len = b.len() as u64;
        put(&mut b, PH + P_MEMSZ, &(len - 1).to_le_bytes());
        assert_eq!(plan(&b), Err(ElfError::SegmentLargerInFile));
    }

    #[test]
    fn a_segment_whose_offset_and_address_disagree_is_refused() {
        let mut b = exec();
        put(&mut b, PH + P_VADDR, &0x40_0010u64.to_le_bytes());
        assert_eq!(plan(&b), Err(ElfError::UnalignedSegment));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let mut b = tiny(ET_EXEC, 0x40_0000, true);
        let first = b[PH..PH + 56].to_vec();
        put(&mut b, PH + 56, &first);
        assert_eq!(plan(&b), Err(ElfError::OverlappingSegments));
    }

    #[test]
    fn a_program_header_address_out_of_range_is_refused() {
        let mut b = tiny(ET_DYN, 0, true);
        put(&mut b, PH + 56, &PT_PHDR.to_le_bytes());
        put(&mut b, PH + 56 + P_VADDR, &u64::MAX.to_le_bytes());
        assert_eq!(plan(&b), Err(ElfError::BadPhdrAddress));
    }

    #[test]
    fn an_entry_outside_the_code_is_refused() {
        let mut b = exec();
        put(&mut b, 24, &0x50_0000u64.to_le_bytes());
        assert_eq!(plan(&b), Err(ElfError::BadEntry));
        let mut b = exec();
        put(&mut b, PH + P_FLAGS, &PF_R.to_le_bytes());
        assert_eq!(plan(&b), Err(ElfError::BadEntry));
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
