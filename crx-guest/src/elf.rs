//! Parsing an x86_64 executable (and its ELF interpreter) into a load plan.
//!
//! The bytes come from the container image, so they are an allegation: the `elf` crate reads
//! the headers with bounds-checked accesses, every field is checked here, and a malformed file
//! gives an [`ElfError`] naming what is wrong, never a panic. Only the file header and the
//! program headers are read: section headers play no part in loading.
//!
//! [`plan`] checks a program and relocates it (`ET_EXEC` where it is linked, `ET_DYN` at
//! [`PIE_BASE`]); a program with `PT_INTERP` names its interpreter in [`LoadPlan::interp`].
//! [`plan_interpreter`] checks the interpreter (an `ET_DYN` placed just below a given top
//! address, as Linux places `ld.so` in the mmap area). [`LoadPlan::map_ops`] turns a plan into
//! the mappings the kernel makes: file-backed ranges filled on first touch (through the page
//! cache), zero ranges, and the few pages that must be built at once (a page two segments
//! share, or the page where a segment's file bytes end and its zero-filled part begins).

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
/// Longest interpreter path accepted, its NUL included (Linux's `PATH_MAX`).
pub const INTERP_MAX: u64 = 4096;

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

/// Why a file cannot be executed (or used as an interpreter).
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
    /// The `PT_INTERP` segment does not hold a NUL-terminated path of 1 to 4095 bytes
    /// within the file.
    BadInterpPath,
    /// An interpreter that names an interpreter of its own (`PT_INTERP`).
    NestedInterpreter,
    /// An interpreter that would overlap the program or not fit below the top given.
    InterpreterPlacement,
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
            ElfError::BadInterpPath => "malformed ELF file: bad interpreter path (PT_INTERP)",
            ElfError::NestedInterpreter => "the interpreter is itself dynamically linked",
            ElfError::InterpreterPlacement => "the interpreter's segments do not fit beside the program",
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
    /// The segments, relocated, in address order.
    pub segments: Vec<Segment>,
    /// The entry point, relocated.
    pub entry: u64,
    /// The load bias (0 for `ET_EXEC`); for an interpreter this is `AT_BASE`.
    pub bias: u64,
    /// Address of the program headers in memory (`AT_PHDR`).
    pub phdr: u64,
    /// Size of one program header (`AT_PHENT`).
    pub phent: u64,
    /// Number of program headers (`AT_PHNUM`).
    pub phnum: u64,
    /// First page after the highest segment: where `brk` starts.
    pub brk_start: u64,
    /// The interpreter's path (`PT_INTERP`, without its NUL) of a dynamically linked program.
    pub interp: Option<Vec<u8>>,
}

/// A checked but not yet relocated file.
struct Parsed {
    etype: u16,
    entry: u64,
    phent: u16,
    phnum: u16,
    /// Segments at their link addresses, sorted by address.
    segments: Vec<Segment>,
    /// Link address of the program headers, if some segment holds them.
    phdr: Option<u64>,
    interp: Option<Vec<u8>>,
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

/// The interpreter path a `PT_INTERP` segment holds: NUL-terminated, no NUL inside.
fn interp_path(bytes: &[u8], offset: u64, filesz: u64) -> Result<Vec<u8>, ElfError> {
    if !(2..=INTERP_MAX).contains(&filesz) {
        return Err(ElfError::BadInterpPath);
    }
    let start = usize::try_from(offset).map_err(|_| ElfError::BadInterpPath)?;
    let len = usize::try_from(filesz).map_err(|_| ElfError::BadInterpPath)?;
    let raw = start.checked_add(len).and_then(|end| bytes.get(start..end)).ok_or(ElfError::BadInterpPath)?;
    match raw.split_last() {
        Some((0, path)) if !path.contains(&0) => Ok(path.to_vec()),
        _ => Err(ElfError::BadInterpPath),
    }
}

/// Checks the headers and segments of `bytes`, without placing them.
fn parse(bytes: &[u8]) -> Result<Parsed, ElfError> {
    let ehdr = file_header(bytes)?;
    if ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN {
        return Err(ElfError::NotExecutable);
    }
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
    let mut interp = None;
    for i in 0..u64::from(phnum) {
        let mut at =
            usize::try_from(phoff + i * u64::from(phent)).map_err(|_| ElfError::TruncatedProgramHeaders)?;
        let ph = ProgramHeader::parse_at(LittleEndian, Class::ELF64, &mut at, bytes)
            .map_err(|_| ElfError::TruncatedProgramHeaders)?;
        let (flags, offset, vaddr, filesz, memsz) =
            (ph.p_flags, ph.p_offset, ph.p_vaddr, ph.p_filesz, ph.p_memsz);
        match ph.p_type {
            // As Linux: the first PT_INTERP counts.
            PT_INTERP if interp.is_none() => interp = Some(interp_path(bytes, offset, filesz)?),
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
                if vaddr.checked_add(memsz).is_none() {
                    return Err(ElfError::BadAddress);
                }
                if first_load_off_vaddr.is_none() && offset <= phoff {
                    first_load_off_vaddr = Some((offset, vaddr));
                }
                if memsz > 0 {
                    segments.push(Segment { vaddr, memsz, offset, filesz, flags });
                }
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    segments.sort_by_key(|s| s.vaddr);
    for w in segments.windows(2) {
        if w[0].vaddr + w[0].memsz > w[1].vaddr {
            return Err(ElfError::OverlappingSegments);
        }
    }
    // Without PT_PHDR the headers are found through the segment that maps file offset phoff.
    let phdr = match phdr_vaddr {
        Some(v) => Some(v),
        None => match first_load_off_vaddr {
            Some((off, vaddr)) => Some(vaddr.checked_add(phoff - off).ok_or(ElfError::BadPhdrAddress)?),
            None => None,
        },
    };
    Ok(Parsed { etype: ehdr.e_type, entry: ehdr.e_entry, phent, phnum, segments, phdr, interp })
}

impl Parsed {
    /// The page-aligned span `[lo, hi)` of the segments at their link addresses.
    fn span(&self) -> (u64, u64) {
        let lo = self.segments.first().map(|s| s.vaddr & !(PAGE - 1)).unwrap_or(0);
        let hi = self.segments.last().map(|s| s.vaddr + s.memsz).unwrap_or(0);
        (lo, hi.div_ceil(PAGE) * PAGE)
    }

    /// Places the file at `bias` and checks the result.
    fn relocate(self, bias: u64) -> Result<LoadPlan, ElfError> {
        let mut segments = self.segments;
        for s in &mut segments {
            let v = s.vaddr.checked_add(bias).ok_or(ElfError::BadAddress)?;
            let end = v.checked_add(s.memsz).ok_or(ElfError::BadAddress)?;
            if v < USER_MIN || end > USER_END {
                return Err(ElfError::BadAddress);
            }
            s.vaddr = v;
        }
        let phdr = match self.phdr {
            Some(v) => v.checked_add(bias).ok_or(ElfError::BadPhdrAddress)?,
            None => 0,
        };
        let entry = self.entry.checked_add(bias).ok_or(ElfError::BadEntry)?;
        if !segments.iter().any(|s| s.flags & PF_X != 0 && s.vaddr <= entry && entry < s.vaddr + s.memsz) {
            return Err(ElfError::BadEntry);
        }
        let top = segments.iter().map(|s| s.vaddr + s.memsz).max().unwrap_or(USER_MIN);
        let brk_start = top.div_ceil(PAGE) * PAGE;
        Ok(LoadPlan {
            segments,
            entry,
            bias,
            phdr,
            phent: u64::from(self.phent),
            phnum: u64::from(self.phnum),
            brk_start,
            interp: self.interp,
        })
    }
}

/// Checks a program in `bytes` and plans its load: `ET_EXEC` at its link addresses, `ET_DYN`
/// (a static-pie, or a PIE with an interpreter) at [`PIE_BASE`].
pub fn plan(bytes: &[u8]) -> Result<LoadPlan, ElfError> {
    let parsed = parse(bytes)?;
    let bias = if parsed.etype == ET_DYN { PIE_BASE } else { 0 };
    parsed.relocate(bias)
}

/// Checks an ELF interpreter (`ld.so`) in `bytes` and plans its load beside `program`: an
/// `ET_DYN` goes just below `top` (page-aligned), an `ET_EXEC` at its link addresses. It
/// must not name an interpreter itself, nor overlap the program.
pub fn plan_interpreter(bytes: &[u8], program: &LoadPlan, top: u64) -> Result<LoadPlan, ElfError> {
    let parsed = parse(bytes)?;
    if parsed.interp.is_some() {
        return Err(ElfError::NestedInterpreter);
    }
    let bias = if parsed.etype == ET_DYN {
        let (lo, hi) = parsed.span();
        let size = hi - lo;
        let base = top.checked_sub(size).ok_or(ElfError::InterpreterPlacement)? & !(PAGE - 1);
        base.checked_sub(lo).ok_or(ElfError::InterpreterPlacement)?
    } else {
        0
    };
    let plan = parsed.relocate(bias).map_err(|e| match e {
        ElfError::BadAddress => ElfError::InterpreterPlacement,
        e => e,
    })?;
    let span = |p: &LoadPlan| {
        let lo = p.segments.first().map(|s| s.vaddr & !(PAGE - 1)).unwrap_or(0);
        (lo, p.brk_start)
    };
    let (a, b) = (span(program), span(&plan));
    if a.0 < b.1 && b.0 < a.1 {
        return Err(ElfError::InterpreterPlacement);
    }
    Ok(plan)
}

/// File bytes copied into a page built at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Where in the page they go.
    pub at: u64,
    /// Their offset in the file.
    pub offset: u64,
    /// How many.
    pub len: u64,
}

/// One mapping of a load, in the order they are to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Pages `[start, end)` show the file from `offset` (page-aligned) on: filled on first
    /// touch, shared through the page cache until written.
    File {
        /// First address (page-aligned).
        start: u64,
        /// One past the last (page-aligned).
        end: u64,
        /// The file offset shown at `start`.
        offset: u64,
        /// `PF_*` flags.
        flags: u32,
    },
    /// Zero pages `[start, end)` (`.bss`), filled on first touch.
    Zero {
        /// First address (page-aligned).
        start: u64,
        /// One past the last (page-aligned).
        end: u64,
        /// `PF_*` flags.
        flags: u32,
    },
    /// One private page built now: zeros with `parts` of the file copied in (a page two
    /// segments share, or the one where file bytes end and `.bss` begins).
    Build {
        /// The page's address.
        page: u64,
        /// `PF_*` flags: those of every segment in the page.
        flags: u32,
        /// The file bytes in it.
        parts: Vec<Part>,
    },
}

fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

fn page_up(x: u64) -> u64 {
    x.div_ceil(PAGE) * PAGE
}

impl LoadPlan {
    /// The mappings that load this plan (see [`MapOp`]). At most three per segment plus one
    /// per page shared by segments, whatever the segments' sizes.
    pub fn map_ops(&self) -> Vec<MapOp> {
        let segs = &self.segments;
        // Pages built now: shared by two neighbours, or where a .bss starts inside a page.
        let mut special: Vec<u64> = Vec::new();
        for w in segs.windows(2) {
            let last = page_down(w[0].vaddr + w[0].memsz - 1);
            if last == page_down(w[1].vaddr) {
                special.push(last);
            }
        }
        for s in segs {
            let file_end = s.vaddr + s.filesz;
            if s.filesz > 0 && s.memsz > s.filesz && file_end % PAGE != 0 {
                special.push(page_down(file_end));
            }
        }
        special.sort_unstable();
        special.dedup();
        let mut ops = Vec::new();
        for &page in &special {
            let mut flags = 0;
            let mut parts = Vec::new();
            for s in segs.iter().filter(|s| s.vaddr < page + PAGE && page < s.vaddr + s.memsz) {
                flags |= s.flags;
                let lo = page.max(s.vaddr);
                let hi = (page + PAGE).min(s.vaddr + s.filesz);
                if lo < hi {
                    parts.push(Part { at: lo - page, offset: s.offset + (lo - s.vaddr), len: hi - lo });
                }
            }
            ops.push(MapOp::Build { page, flags, parts });
        }
        // The rest of every segment, less the special pages (which lie at its ends).
        let pieces = |start: u64, end: u64| -> Vec<(u64, u64)> {
            let mut out = Vec::new();
            let mut at = start;
            for &p in special.iter().filter(|&&p| start <= p && p < end) {
                if at < p {
                    out.push((at, p));
                }
                at = p + PAGE;
            }
            if at < end {
                out.push((at, end));
            }
            out
        };
        for s in segs {
            let start = page_down(s.vaddr);
            let file_end = if s.filesz > 0 { page_up(s.vaddr + s.filesz) } else { start };
            let end = page_up(s.vaddr + s.memsz);
            for (a, b) in pieces(start, file_end) {
                // The file offset of page `a`: offset and vaddr agree modulo the page size,
                // so the first page starts `vaddr % PAGE` bytes before `offset`.
                let offset = if a <= s.vaddr { s.offset - (s.vaddr - a) } else { s.offset + (a - s.vaddr) };
                ops.push(MapOp::File { start: a, end: b, offset, flags: s.flags });
            }
            for (a, b) in pieces(file_end, end) {
                ops.push(MapOp::Zero { start: a, end: b, flags: s.flags });
            }
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// The interpreter path of the fixtures.
    const LD: &[u8] = b"/lib64/ld-linux-x86-64.so.2";

    /// A minimal ELF: one RX segment at `vaddr` holding the headers, the `PT_INTERP` path
    /// (with its NUL) when `interp` is given, and 16 bytes of code where it enters.
    pub(crate) fn elf_with(etype: u16, vaddr: u64, interp: Option<&[u8]>) -> Vec<u8> {
        let phnum: u16 = if interp.is_some() { 2 } else { 1 };
        let path_at = 64 + 56 * usize::from(phnum);
        let path_len = interp.map(|p| p.len() + 1).unwrap_or(0);
        let code = (path_at + path_len) as u64;
        let mut b = vec![0u8; path_at + path_len + 16];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&etype.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
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
        if let Some(path) = interp {
            let q = ph + 56;
            b[q..q + 4].copy_from_slice(&PT_INTERP.to_le_bytes());
            b[q + 4..q + 8].copy_from_slice(&PF_R.to_le_bytes());
            b[q + 8..q + 16].copy_from_slice(&(path_at as u64).to_le_bytes());
            b[q + 16..q + 24].copy_from_slice(&(vaddr + path_at as u64).to_le_bytes());
            b[q + 32..q + 40].copy_from_slice(&(path_len as u64).to_le_bytes());
            b[q + 40..q + 48].copy_from_slice(&(path_len as u64).to_le_bytes());
            b[path_at..path_at + path.len()].copy_from_slice(path);
        }
        b
    }

    /// [`elf_with`], with [`LD`] as the interpreter when `interp`.
    pub(crate) fn tiny(etype: u16, vaddr: u64, interp: bool) -> Vec<u8> {
        elf_with(etype, vaddr, interp.then_some(LD))
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
        // A dynamic program and interpreter, cut and flipped, through every step of a load.
        let dynamic = tiny(ET_DYN, 0, true);
        let program = plan(&dynamic).expect("valid");
        for n in 0..dynamic.len() {
            let _ = plan(&dynamic[..n]).map(|p| p.map_ops());
            let _ = plan_interpreter(&dynamic[..n], &program, 0x7000_0000_0000).map(|p| p.map_ops());
        }
        for i in 0..dynamic.len() {
            for x in [0xff, 0x80, 0x01] {
                let mut bad = dynamic.clone();
                bad[i] ^= x;
                let _ = plan(&bad).map(|p| p.map_ops());
                let _ = plan_interpreter(&bad, &program, 0x7000_0000_0000).map(|p| p.map_ops());
            }
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

    #[test]
    fn a_dynamic_pie_names_its_interpreter() {
        let p = plan(&tiny(ET_DYN, 0, true)).expect("valid");
        assert_eq!(p.interp.as_deref(), Some(LD));
        assert_eq!(p.bias, PIE_BASE);
        assert_eq!(plan(&tiny(ET_EXEC, 0x40_0000, false)).expect("valid").interp, None);
    }

    /// Offsets of the `PT_INTERP` header (the second) in `tiny(_, _, true)` and of its fields.
    const INTERP_PH: usize = 64 + 56;
    const P_OFFSET: usize = 8;

    #[test]
    fn a_bad_interpreter_path_is_refused() {
        let good = tiny(ET_DYN, 0, true);
        let path_len = (LD.len() + 1) as u64;
        let cases: [(&str, usize, u64); 4] = [
            ("no NUL at the end", INTERP_PH + P_FILESZ, path_len - 1),
            ("only a NUL", INTERP_PH + P_FILESZ, 1),
            ("longer than PATH_MAX", INTERP_PH + P_FILESZ, INTERP_MAX + 1),
            ("outside the file", INTERP_PH + P_OFFSET, good.len() as u64 - 4),
        ];
        for (what, at, v) in cases {
            let mut b = good.clone();
            put(&mut b, at, &v.to_le_bytes());
            assert_eq!(plan(&b), Err(ElfError::BadInterpPath), "{what}");
        }
        let mut b = good.clone();
        b[64 + 2 * 56 + 3] = 0;
        assert_eq!(plan(&b), Err(ElfError::BadInterpPath), "a NUL inside the path");
    }

    #[test]
    fn places_the_interpreter_just_below_the_top() {
        let program = plan(&tiny(ET_DYN, 0, true)).expect("program");
        let ld = tiny(ET_DYN, 0, false);
        let top = 0x7fff_0000_0000;
        let i = plan_interpreter(&ld, &program, top).expect("interpreter");
        // One page of segment: the interpreter's base is the page below the top.
        assert_eq!(i.bias, top - PAGE);
        assert_eq!(i.segments[0].vaddr, top - PAGE);
        assert_eq!(i.entry, top - PAGE + 120);
        assert_eq!(i.brk_start, top);
        assert_eq!(i.interp, None);
        // An unaligned top rounds down.
        assert_eq!(plan_interpreter(&ld, &program, top + 123).expect("fits").bias, top - PAGE);
    }

    #[test]
    fn an_interpreter_that_cannot_serve_is_refused() {
        let program = plan(&tiny(ET_EXEC, 0x40_0000, true)).expect("program");
        let top = 0x7fff_0000_0000;
        assert_eq!(
            plan_interpreter(&tiny(ET_DYN, 0, true), &program, top),
            Err(ElfError::NestedInterpreter),
            "an interpreter with an interpreter"
        );
        assert_eq!(plan_interpreter(b"#!/bin/sh\n", &program, top), Err(ElfError::NotElf));
        let mut arm = tiny(ET_DYN, 0, false);
        arm[18] = 183;
        assert_eq!(plan_interpreter(&arm, &program, top), Err(ElfError::WrongArch));
        assert_eq!(
            plan_interpreter(&tiny(ET_EXEC, 0x40_0000, false), &program, top),
            Err(ElfError::InterpreterPlacement),
            "an ET_EXEC interpreter on top of the program"
        );
        assert_eq!(
            plan_interpreter(&tiny(ET_EXEC, 0x80_0000, false), &program, top).map(|p| p.bias),
            Ok(0),
            "an ET_EXEC interpreter elsewhere stays where it is linked"
        );
        assert_eq!(
            plan_interpreter(&tiny(ET_DYN, 0, false), &program, USER_MIN),
            Err(ElfError::InterpreterPlacement),
            "no room below the top"
        );
        assert_eq!(
            plan_interpreter(&tiny(ET_DYN, 0, false), &program, 0x100),
            Err(ElfError::InterpreterPlacement)
        );
    }

    /// Checks `ops` against `plan`: no two ops overlap, every byte of every segment is
    /// covered by one op with the segment's flags, and shows the file byte or zero it
    /// should (sampled at the segment's edges and every page start).
    fn check_ops(plan: &LoadPlan, ops: &[MapOp]) {
        let range = |op: &MapOp| match op {
            MapOp::File { start, end, .. } | MapOp::Zero { start, end, .. } => (*start, *end),
            MapOp::Build { page, .. } => (*page, page + PAGE),
        };
        let mut ranges: Vec<(u64, u64)> = ops.iter().map(range).collect();
        ranges.sort_unstable();
        for r in &ranges {
            assert!(r.0 < r.1 && r.0 % PAGE == 0 && r.1 % PAGE == 0, "{r:x?} is a page range");
        }
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "ops overlap: {:x?} {:x?}", w[0], w[1]);
        }
        for s in &plan.segments {
            let end = s.vaddr + s.memsz;
            let file_end = s.vaddr + s.filesz;
            let mut samples =
                vec![s.vaddr, end - 1, file_end.saturating_sub(1).max(s.vaddr), file_end.min(end - 1)];
            let mut p = page_up(s.vaddr);
            while p < end && samples.len() < 10_000 {
                samples.push(p);
                p += PAGE;
            }
            for x in samples {
                let op = ops.iter().find(|op| {
                    let (a, b) = range(op);
                    a <= x && x < b
                });
                let op = op.unwrap_or_else(|| panic!("{x:#x} is in no op"));
                let want = (x < file_end).then(|| s.offset + (x - s.vaddr));
                match op {
                    MapOp::File { start, offset, flags, .. } => {
                        assert_eq!(flags & s.flags, s.flags);
                        assert_eq!(want, Some(offset + (x - start)), "file byte at {x:#x}");
                    }
                    MapOp::Zero { flags, .. } => {
                        assert_eq!(flags & s.flags, s.flags);
                        assert_eq!(want, None, "{x:#x} should show the file");
                    }
                    MapOp::Build { page, flags, parts } => {
                        assert_eq!(flags & s.flags, s.flags);
                        let at = x - page;
                        let got = parts
                            .iter()
                            .find(|q| q.at <= at && at < q.at + q.len)
                            .map(|q| q.offset + (at - q.at));
                        assert_eq!(want, got, "built byte at {x:#x}");
                    }
                }
            }
        }
    }

    fn seg(vaddr: u64, offset: u64, filesz: u64, memsz: u64, flags: u32) -> Segment {
        Segment { vaddr, memsz, offset, filesz, flags }
    }

    fn plan_of(segments: Vec<Segment>) -> LoadPlan {
        LoadPlan { segments, entry: 0, bias: 0, phdr: 0, phent: 56, phnum: 1, brk_start: 0, interp: None }
    }

    #[test]
    fn a_library_layout_maps_from_the_file_except_the_bss_edge() {
        // As a shared library: R, RX, R, then RW data whose .bss starts mid-page.
        let base = 0x7f00_0000_0000;
        let p = plan_of(vec![
            seg(base, 0, 0x1234, 0x1234, PF_R),
            seg(base + 0x2000, 0x2000, 0x3000, 0x3000, PF_R | PF_X),
            seg(base + 0x5000, 0x5000, 0x800, 0x800, PF_R),
            seg(base + 0x6e10, 0x5e10, 0x400, 0x3000, PF_R | PF_W),
        ]);
        let ops = p.map_ops();
        check_ops(&p, &ops);
        let rw = PF_R | PF_W;
        assert!(ops.contains(&MapOp::File { start: base, end: base + 0x2000, offset: 0, flags: PF_R }));
        assert!(ops.contains(&MapOp::File {
            start: base + 0x2000,
            end: base + 0x5000,
            offset: 0x2000,
            flags: PF_R | PF_X
        }));
        // Data from the file up to the page where .bss starts, which is built now; the rest
        // of .bss is zero pages.
        assert!(ops.contains(&MapOp::File {
            start: base + 0x6000,
            end: base + 0x7000,
            offset: 0x5000,
            flags: rw
        }));
        assert!(ops.contains(&MapOp::Build {
            page: base + 0x7000,
            flags: rw,
            parts: vec![Part { at: 0, offset: 0x6000, len: 0x210 }],
        }));
        assert!(ops.contains(&MapOp::Zero { start: base + 0x8000, end: base + 0xa000, flags: rw }));
        assert_eq!(ops.len(), 6);
    }

    #[test]
    fn a_page_two_segments_share_is_built_with_both() {
        let p = plan_of(vec![
            seg(0x40_0000, 0, 0x1800, 0x1800, PF_R | PF_X),
            seg(0x40_1800, 0x1800, 0x100, 0x2000, PF_R | PF_W),
        ]);
        let ops = p.map_ops();
        check_ops(&p, &ops);
        assert!(ops.contains(&MapOp::Build {
            page: 0x40_1000,
            flags: PF_R | PF_W | PF_X,
            parts: vec![
                Part { at: 0, offset: 0x1000, len: 0x800 },
                Part { at: 0x800, offset: 0x1800, len: 0x100 }
            ],
        }));
        assert!(ops.contains(&MapOp::File {
            start: 0x40_0000,
            end: 0x40_1000,
            offset: 0,
            flags: PF_R | PF_X
        }));
        assert!(ops.contains(&MapOp::Zero { start: 0x40_2000, end: 0x40_4000, flags: PF_R | PF_W }));
    }

    #[test]
    fn a_huge_bss_costs_one_op() {
        let p = plan_of(vec![seg(0x40_0000, 0, 0x10, 1 << 40, PF_R | PF_W | PF_X)]);
        let ops = p.map_ops();
        assert_eq!(ops.len(), 2, "{ops:x?}");
        check_ops(&p, &ops);
    }

    #[test]
    fn the_hosts_loader_and_libraries_map_consistently() {
        let files = [
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/bin/bash",
            "/usr/bin/ls",
            "/bin/busybox",
        ];
        for f in files {
            let Ok(bytes) = std::fs::read(f) else { continue };
            let p = plan(&bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
            check_ops(&p, &p.map_ops());
            if f.ends_with("bash") || f.ends_with("ls") {
                assert_eq!(p.interp.as_deref(), Some(LD), "{f} names the loader");
                let ld = std::fs::read(files[0]).expect("the loader beside them");
                let i = plan_interpreter(&ld, &p, 0x7fff_bf7f_0000)
                    .unwrap_or_else(|e| panic!("{f}'s loader: {e}"));
                assert!(i.brk_start <= 0x7fff_bf7f_0000 && i.bias.is_multiple_of(PAGE));
                check_ops(&i, &i.map_ops());
            }
        }
    }
}
