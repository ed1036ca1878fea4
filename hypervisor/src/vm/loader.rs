//! Loading a guest kernel: checking its ELF, copying its segments into guest memory and
//! writing what the guest finds at its first instruction (page tables, GDT, TSS,
//! [`BootParams`]), then the vCPU's [`InitialState`] as `crx_abi` documents it.
//!
//! Contract: the image is an allegation. Nothing in it makes this module panic; every
//! refusal is a [`LoadError`] with one variant per malformation. Guest-physical layout
//! (see [`crx_abi::layout`]):
//!
//! | gpa | what |
//! |---|---|
//! | 0x0000 | never mapped by the guest's tables (a null dereference faults in the guest) |
//! | 0x1000 | PML4 |
//! | 0x2000 | PDPT |
//! | 0x3000.. | one page directory per GiB of guest memory (up to 4) |
//! | 0x7000 | GDT: null, code 0x08 (L=1), data 0x10, 64-bit TSS 0x18 |
//! | 0x7080 | the 104-byte TSS (no I/O bitmap) |
//! | 0x8000 | [`BootParams`] |
//! | 0x9000 | page table of the first 2 MiB (all of it but page 0) |
//! | 0x100000.. | ELF segments |
//! | top - vcpus x 64 KiB .. top | stacks ([`layout::VCPU_STACK_BYTES`] each), vCPU 0's at the very top |
//!
//! All guest memory is identity-mapped read-write-executable with 2 MiB pages, except the
//! first 2 MiB, mapped with 4 KiB pages so that page 0 can stay unmapped.
#![forbid(unsafe_code)]

use super::exit::{GuestRegs, InitialState, Segment};
use super::memory::{FrameSource, GuestMemory, OutOfRange, LARGE_BYTES, PAGE_SIZE};
use alloc::vec::Vec;
use core::fmt;
use crx_abi::{layout, BootParams, HypercallInsn, ABI_VERSION, BOOT_MAGIC};
use elf::abi::{EM_X86_64, ET_DYN, ET_EXEC, PF_X, PT_DYNAMIC, PT_INTERP, PT_LOAD};
use elf::endian::AnyEndian;
use elf::file::Class;
use elf::ElfBytes;

/// Where the TSS sits (right after the GDT's five quadwords, cache-line aligned).
pub const TSS: u64 = layout::GDT + 0x80;
/// Size of a 64-bit TSS (SDM Vol. 3A 8.7, Figure 8-11).
pub const TSS_BYTES: u64 = 104;
/// The page table that maps the first 2 MiB.
pub const PT0: u64 = 0x9000;
/// Most program headers taken.
pub const MAX_PHDRS: usize = 64;
/// Most vCPUs a VM may have (one bit each in `VCPU_KICK`'s mask).
pub const MAX_VCPUS: u32 = crx_abi::VCPUS_MAX;

/// Selectors of the guest GDT.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data selector.
pub const DATA_SELECTOR: u16 = 0x10;
/// TSS selector.
pub const TSS_SELECTOR: u16 = 0x18;

/// CR0: PE, MP, ET, NE, WP, PG.
pub const GUEST_CR0: u64 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
/// CR4: PAE, OSFXSR, OSXMMEXCPT.
pub const GUEST_CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10);
/// EFER: LME, LMA, NXE.
pub const GUEST_EFER: u64 = (1 << 8) | (1 << 10) | (1 << 11);

/// GDT entries (SDM Vol. 3A 3.4.5): 64-bit code (type 0xb, S, P, L, G) and data (type 3,
/// S, P, D/B, G), both base 0, limit 4 GiB.
const GDT_CODE: u64 = 0x00af_9b00_0000_ffff;
const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;
/// Access rights in the VMX layout for the same descriptors.
const AR_CODE: u16 = 0xa09b;
const AR_DATA: u16 = 0xc093;
/// Busy 64-bit TSS (type 0xb), present.
const AR_TSS: u16 = 0x008b;
/// LDT (type 2), present, empty.
const AR_LDT: u16 = 0x0082;

/// Page-table bits the guest's tables use.
const P: u64 = 1;
const W: u64 = 1 << 1;
const PS: u64 = 1 << 7;

/// What the VM is told about itself.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec<'a> {
    /// Index among the VMs started together.
    pub vm_index: u32,
    /// How many were started together.
    pub vm_count: u32,
    /// vCPUs (each gets a stack at the top of memory; the guest reads the count in
    /// [`BootParams::vcpus`]).
    pub vcpus: u32,
    /// The backend's hypercall instruction.
    pub insn: HypercallInsn,
    /// The guest's command line (at most 255 bytes).
    pub cmdline: &'a str,
}

/// A loaded guest: vCPU 0's initial state and the boot parameters written to memory.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// vCPU 0's initial state.
    pub init: InitialState,
    /// What was written at [`layout::BOOT_PARAMS`].
    pub params: BootParams,
}

/// Why a guest image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    /// The file does not start with the ELF magic.
    NotElf,
    /// The file ends inside a header or table it announces.
    Truncated,
    /// The ELF headers are malformed in another way, as the parser says.
    Malformed(&'static str),
    /// A 32-bit ELF.
    Not64Bit,
    /// A big-endian ELF.
    NotLittleEndian,
    /// Built for another machine (`e_machine`).
    WrongMachine(u16),
    /// Has a `PT_INTERP` or `PT_DYNAMIC` segment.
    DynamicallyLinked,
    /// Position-independent (`ET_DYN`).
    PositionIndependent,
    /// Not an executable (`e_type`).
    NotExecutable(u16),
    /// More program headers than [`MAX_PHDRS`].
    TooManySegments(usize),
    /// No `PT_LOAD` segment.
    NoSegments,
    /// A segment's file size exceeds its memory size.
    FileSizeOverMemSize {
        /// Program header index.
        index: usize,
    },
    /// A segment's file bytes lie outside the file.
    SegmentOutsideFile {
        /// Program header index.
        index: usize,
    },
    /// A segment's virtual and physical addresses differ (guests run identity-mapped).
    VirtualNotPhysical {
        /// Program header index.
        index: usize,
    },
    /// A segment starts below [`layout::KERNEL_MIN`], over the page tables and GDT.
    BelowImageFloor {
        /// Program header index.
        index: usize,
        /// Its physical address.
        paddr: u64,
    },
    /// A segment ends beyond guest memory (or its size overflows).
    OutsideMemory {
        /// Program header index.
        index: usize,
        /// Its physical address.
        paddr: u64,
        /// Its size in memory.
        memsz: u64,
    },
    /// A segment reaches into the stacks at the top of guest memory.
    OverlapsStack {
        /// Program header index.
        index: usize,
    },
    /// Two segments overlap.
    SegmentsOverlap {
        /// One program header index.
        first: usize,
        /// The other.
        second: usize,
    },
    /// The entry point is not inside an executable segment.
    BadEntry(u64),
    /// Guest memory cannot hold the tables, an image and the stacks.
    MemoryTooSmall,
    /// The vCPU count is 0 or above [`MAX_VCPUS`].
    BadVcpuCount(u32),
    /// Writing guest memory failed (cannot happen after the checks; kept typed).
    Write(OutOfRange),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotElf => write!(f, "not an ELF file"),
            LoadError::Truncated => write!(f, "truncated ELF file"),
            LoadError::Malformed(e) => write!(f, "malformed ELF: {e}"),
            LoadError::Not64Bit => write!(f, "not a 64-bit ELF"),
            LoadError::NotLittleEndian => write!(f, "not a little-endian ELF"),
            LoadError::WrongMachine(m) => write!(f, "ELF for machine {m}, not x86_64"),
            LoadError::DynamicallyLinked => write!(f, "dynamically linked (PT_INTERP or PT_DYNAMIC)"),
            LoadError::PositionIndependent => {
                write!(f, "position-independent (ET_DYN); link it static at a fixed address")
            }
            LoadError::NotExecutable(t) => write!(f, "ELF type {t} is not an executable"),
            LoadError::TooManySegments(n) => write!(f, "{n} program headers (at most {MAX_PHDRS})"),
            LoadError::NoSegments => write!(f, "no loadable segment"),
            LoadError::FileSizeOverMemSize { index } => {
                write!(f, "segment {index}: file size exceeds memory size")
            }
            LoadError::SegmentOutsideFile { index } => {
                write!(f, "segment {index}: bytes lie outside the file")
            }
            LoadError::VirtualNotPhysical { index } => {
                write!(
                    f,
                    "segment {index}: virtual address differs from physical (guests run identity-mapped)"
                )
            }
            LoadError::BelowImageFloor { index, paddr } => write!(
                f,
                "segment {index} at {paddr:#x} lies below {:#x}, over the boot structures",
                layout::KERNEL_MIN
            ),
            LoadError::OutsideMemory { index, paddr, memsz } => {
                write!(f, "segment {index} at {paddr:#x} + {memsz:#x} lies outside guest memory")
            }
            LoadError::OverlapsStack { index } => write!(f, "segment {index} reaches into the stack area"),
            LoadError::SegmentsOverlap { first, second } => {
                write!(f, "segments {first} and {second} overlap")
            }
            LoadError::BadEntry(e) => write!(f, "entry point {e:#x} is not in an executable segment"),
            LoadError::MemoryTooSmall => write!(f, "guest memory too small for the image and stacks"),
            LoadError::BadVcpuCount(n) => write!(f, "{n} vCPUs (1 to {MAX_VCPUS})"),
            LoadError::Write(e) => write!(f, "{e}"),
        }
    }
}

impl From<OutOfRange> for LoadError {
    fn from(e: OutOfRange) -> Self {
        LoadError::Write(e)
    }
}

/// A checked `PT_LOAD` segment.
#[derive(Debug, Clone, Copy)]
struct Seg {
    index: usize,
    paddr: u64,
    end: u64,
    offset: usize,
    filesz: usize,
    exec: bool,
}

/// Checks an image against guest memory of `mem_bytes` with `vcpus` stacks; returns its
/// entry point and segments.
fn check(image: &[u8], mem_bytes: u64, vcpus: u32) -> Result<(u64, Vec<Seg>), LoadError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(LoadError::BadVcpuCount(vcpus));
    }
    let stack_floor = mem_bytes
        .checked_sub(u64::from(vcpus) * layout::VCPU_STACK_BYTES)
        .filter(|&s| s > layout::KERNEL_MIN)
        .ok_or(LoadError::MemoryTooSmall)?;
    // EI_CLASS and EI_DATA first, so a 32-bit or big-endian file is named as such rather
    // than by whatever its fields look like in the other layout.
    if let Some(ident) = image.get(..6).filter(|i| i[..4] == *b"\x7fELF") {
        if ident[4] != 2 {
            return Err(LoadError::Not64Bit);
        }
        if ident[5] != 1 {
            return Err(LoadError::NotLittleEndian);
        }
    }
    let file = ElfBytes::<AnyEndian>::minimal_parse(image).map_err(|e| match e {
        elf::ParseError::BadMagic(_) => LoadError::NotElf,
        elf::ParseError::SliceReadError(_) | elf::ParseError::BadOffset(_) => LoadError::Truncated,
        elf::ParseError::UnsupportedElfClass(_) => LoadError::Not64Bit,
        elf::ParseError::UnsupportedElfEndianness(_) => LoadError::NotLittleEndian,
        elf::ParseError::UnsupportedVersion(_) => LoadError::Malformed("unsupported ELF version"),
        elf::ParseError::BadEntsize(_) => LoadError::Malformed("unexpected header entry size"),
        elf::ParseError::IntegerOverflow => LoadError::Malformed("a header field overflows"),
        _ => LoadError::Malformed("inconsistent headers"),
    })?;
    let h = &file.ehdr;
    if h.class != Class::ELF64 {
        return Err(LoadError::Not64Bit);
    }
    if h.endianness != AnyEndian::Little {
        return Err(LoadError::NotLittleEndian);
    }
    if h.e_machine != EM_X86_64 {
        return Err(LoadError::WrongMachine(h.e_machine));
    }
    let Some(table) = file.segments() else {
        return Err(LoadError::NoSegments);
    };
    if table.len() > MAX_PHDRS {
        return Err(LoadError::TooManySegments(table.len()));
    }
    if table.iter().any(|p| p.p_type == PT_INTERP || p.p_type == PT_DYNAMIC) {
        return Err(LoadError::DynamicallyLinked);
    }
    match h.e_type {
        ET_EXEC => {}
        ET_DYN => return Err(LoadError::PositionIndependent),
        t => return Err(LoadError::NotExecutable(t)),
    }
    let mut segs: Vec<Seg> = Vec::new();
    for (index, p) in table.iter().enumerate().filter(|(_, p)| p.p_type == PT_LOAD) {
        if p.p_filesz > p.p_memsz {
            return Err(LoadError::FileSizeOverMemSize { index });
        }
        let in_file = p.p_offset.checked_add(p.p_filesz).is_some_and(|e| e <= image.len() as u64);
        if !in_file {
            return Err(LoadError::SegmentOutsideFile { index });
        }
        if p.p_vaddr != p.p_paddr {
            return Err(LoadError::VirtualNotPhysical { index });
        }
        if p.p_paddr < layout::KERNEL_MIN {
            return Err(LoadError::BelowImageFloor { index, paddr: p.p_paddr });
        }
        let end = p
            .p_paddr
            .checked_add(p.p_memsz)
            .filter(|&e| e <= mem_bytes)
            .ok_or(LoadError::OutsideMemory { index, paddr: p.p_paddr, memsz: p.p_memsz })?;
        if end > stack_floor {
            return Err(LoadError::OverlapsStack { index });
        }
        // Both fit in usize: they are bounded by the image's length.
        let (offset, filesz) = (p.p_offset as usize, p.p_filesz as usize);
        let seg = Seg { index, paddr: p.p_paddr, end, offset, filesz, exec: p.p_flags & PF_X != 0 };
        if let Some(o) = segs.iter().find(|o| o.paddr < seg.end && seg.paddr < o.end) {
            return Err(LoadError::SegmentsOverlap { first: o.index, second: index });
        }
        segs.try_reserve(1).map_err(|_| LoadError::MemoryTooSmall)?;
        segs.push(seg);
    }
    if segs.is_empty() {
        return Err(LoadError::NoSegments);
    }
    let entry = h.e_entry;
    if !segs.iter().any(|s| s.exec && s.paddr <= entry && entry < s.end) {
        return Err(LoadError::BadEntry(entry));
    }
    Ok((entry, segs))
}

/// Loads `image` into `mem` and returns vCPU 0's initial state and the boot parameters.
pub fn load<F: FrameSource>(
    mem: &mut GuestMemory<F>,
    image: &[u8],
    spec: &LoadSpec<'_>,
) -> Result<Loaded, LoadError> {
    let mem_bytes = mem.size_bytes();
    let (entry, segs) = check(image, mem_bytes, spec.vcpus)?;
    for s in &segs {
        let bytes = image
            .get(s.offset..s.offset + s.filesz)
            .ok_or(LoadError::SegmentOutsideFile { index: s.index })?;
        mem.write(s.paddr, bytes)?;
        let bss = s.paddr + s.filesz as u64;
        mem.fill(bss, s.end - bss, 0)?;
    }
    let image_end = segs.iter().map(|s| s.end).max().unwrap_or(layout::KERNEL_MIN);
    write_page_tables(mem)?;
    write_gdt(mem)?;
    let mut cmdline = [0u8; 256];
    // At most 255 bytes, cut at a character boundary so that the guest still reads UTF-8.
    let mut n = spec.cmdline.len().min(255);
    while !spec.cmdline.is_char_boundary(n) {
        n -= 1;
    }
    if let (Some(dst), Some(src)) = (cmdline.get_mut(..n), spec.cmdline.as_bytes().get(..n)) {
        dst.copy_from_slice(src);
    }
    let params = BootParams {
        magic: BOOT_MAGIC,
        abi_version: ABI_VERSION,
        hypercall_insn: spec.insn as u32,
        vm_index: spec.vm_index,
        vm_count: spec.vm_count,
        mem_bytes,
        stack_top: mem_bytes,
        free_start: image_end.next_multiple_of(PAGE_SIZE),
        cmdline,
        vcpus: spec.vcpus,
        _pad: 0,
    };
    mem.write(layout::BOOT_PARAMS, params.as_bytes())?;
    Ok(Loaded { init: initial_state(entry, params.stack_top), params })
}

/// The guest's page tables: an identity map of all its memory (SDM Vol. 3A 4.5).
fn write_page_tables<F: FrameSource>(mem: &mut GuestMemory<F>) -> Result<(), OutOfRange> {
    let bytes = mem.size_bytes();
    mem.fill(layout::PML4, layout::BOOT_PARAMS - layout::PML4 - 0x1000, 0)?;
    mem.write_u64(layout::PML4, layout::PDPT | P | W)?;
    let gibs = bytes.div_ceil(1 << 30);
    for g in 0..gibs {
        mem.write_u64(layout::PDPT + g * 8, (layout::PD + g * 0x1000) | P | W)?;
    }
    for chunk in 0..bytes / LARGE_BYTES {
        let entry = if chunk == 0 { PT0 | P | W } else { (chunk * LARGE_BYTES) | P | W | PS };
        mem.write_u64(layout::PD + chunk * 8, entry)?;
    }
    mem.write_u64(PT0, 0)?;
    for page in 1..512 {
        mem.write_u64(PT0 + page * 8, (page * PAGE_SIZE) | P | W)?;
    }
    Ok(())
}

/// The 64-bit TSS descriptor for a TSS at `base` (SDM Vol. 3A 8.2.3, Figure 8-4).
fn tss_descriptor(base: u64, limit: u64) -> (u64, u64) {
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x8b << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (low, base >> 32)
}

fn write_gdt<F: FrameSource>(mem: &mut GuestMemory<F>) -> Result<(), OutOfRange> {
    let (tss_low, tss_high) = tss_descriptor(TSS, TSS_BYTES - 1);
    for (i, d) in [0, GDT_CODE, GDT_DATA, tss_low, tss_high].into_iter().enumerate() {
        mem.write_u64(layout::GDT + i as u64 * 8, d)?;
    }
    mem.fill(TSS, TSS_BYTES, 0)?;
    // I/O map base at the TSS limit: no I/O permission bitmap.
    mem.write(TSS + 0x66, &(TSS_BYTES as u16).to_le_bytes())
}

/// The limit of the guest GDT (five quadwords).
pub const GDT_LIMIT: u16 = 5 * 8 - 1;

/// vCPU 0's initial state for `entry` and `stack_top` (the table in `crx_abi`).
pub fn initial_state(entry: u64, stack_top: u64) -> InitialState {
    let flat = |selector, access| Segment { selector, base: 0, limit: 0xffff_ffff, access };
    let data = flat(DATA_SELECTOR, AR_DATA);
    InitialState {
        regs: GuestRegs {
            rip: entry,
            rsp: stack_top,
            rdi: layout::BOOT_PARAMS,
            rflags: 0x2,
            ..GuestRegs::default()
        },
        cr0: GUEST_CR0,
        cr3: layout::PML4,
        cr4: GUEST_CR4,
        efer: GUEST_EFER,
        cs: flat(CODE_SELECTOR, AR_CODE),
        ds: data,
        es: data,
        ss: data,
        fs: data,
        gs: data,
        tr: Segment { selector: TSS_SELECTOR, base: TSS, limit: (TSS_BYTES - 1) as u32, access: AR_TSS },
        ldtr: Segment { selector: 0, base: 0, limit: 0, access: AR_LDT },
        gdtr: (layout::GDT, GDT_LIMIT),
        idtr: (0, 0),
    }
}

/// vCPU `k`'s initial state (crx-abi 6): vCPU 0's, with `rsi = k` and its own stack
/// [`layout::VCPU_STACK_BYTES`] lower per index; the same RDI and entry for all.
pub fn vcpu_state(init: &InitialState, k: u32) -> InitialState {
    let mut s = *init;
    s.regs.rsi = u64::from(k);
    s.regs.rsp = init.regs.rsp.saturating_sub(u64::from(k) * layout::VCPU_STACK_BYTES);
    s
}

/// Building minimal static ELF images (test fixtures and the `vmleak` self-test guest).
pub mod image {
    use alloc::vec::Vec;

    /// One segment of a built image.
    #[derive(Debug, Clone, Copy)]
    pub struct SegSpec<'a> {
        /// `p_type`.
        pub p_type: u32,
        /// Load (physical and virtual) address.
        pub addr: u64,
        /// File bytes.
        pub data: &'a [u8],
        /// Memory size (at least `data.len()` for a sane image).
        pub memsz: u64,
        /// `p_flags`.
        pub flags: u32,
    }

    /// An ELF64 little-endian x86_64 image of `e_type` with `segs`, entry `entry`.
    pub fn build(e_type: u16, entry: u64, segs: &[SegSpec<'_>]) -> Vec<u8> {
        let phoff = 64u64;
        let data_start = phoff + 56 * segs.len() as u64;
        let mut out = Vec::new();
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&e_type.to_le_bytes());
        out.extend_from_slice(&62u16.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&entry.to_le_bytes());
        out.extend_from_slice(&phoff.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // no section headers
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, segs.len() as u16, 64, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut off = data_start;
        for s in segs {
            out.extend_from_slice(&s.p_type.to_le_bytes());
            out.extend_from_slice(&s.flags.to_le_bytes());
            for v in [off, s.addr, s.addr, s.data.len() as u64, s.memsz, 0x1000] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            off += s.data.len() as u64;
        }
        for s in segs {
            out.extend_from_slice(s.data);
        }
        out
    }

    /// A static executable whose code `code` is loaded at 1 MiB (read-execute) and runs
    /// from its first byte.
    pub fn code_at_1mib(code: &[u8]) -> Vec<u8> {
        let seg = SegSpec { p_type: 1, addr: 0x10_0000, data: code, memsz: code.len() as u64, flags: 5 };
        build(2, 0x10_0000, &[seg])
    }
}

#[cfg(test)]
mod tests {
    use super::image::{build, code_at_1mib, SegSpec};
    use super::*;
    use crate::vm::memory::arena::Arena;
    use crate::vm::NestedFormat;

    const MIB: u64 = 1 << 20;

    fn spec() -> LoadSpec<'static> {
        LoadSpec { vm_index: 2, vm_count: 3, vcpus: 1, insn: HypercallInsn::Vmmcall, cmdline: "hello guest" }
    }

    fn mem(mib: u64) -> GuestMemory<Arena> {
        GuestMemory::new(Arena::new(mib as usize * 2), mib * MIB, NestedFormat::Npt).unwrap()
    }

    fn seg(addr: u64, data: &[u8], memsz: u64, flags: u32) -> SegSpec<'_> {
        SegSpec { p_type: PT_LOAD, addr, data, memsz, flags }
    }

    fn try_load(image: &[u8], mib: u64) -> Result<Loaded, LoadError> {
        load(&mut mem(mib), image, &spec())
    }

    /// Walks the guest's own page tables in guest memory.
    fn guest_translate(m: &GuestMemory<Arena>, va: u64) -> Option<u64> {
        let pml4e = m.read_u64(layout::PML4 + ((va >> 39) & 511) * 8).ok()?;
        let pdpte = m.read_u64((pml4e & !0xfff) + ((va >> 30) & 511) * 8).ok().filter(|_| pml4e & 1 != 0)?;
        let pde = m.read_u64((pdpte & !0xfff) + ((va >> 21) & 511) * 8).ok().filter(|_| pdpte & 1 != 0)?;
        if pde & 1 == 0 {
            return None;
        }
        if pde & PS != 0 {
            return Some((pde & !0x1f_ffff & !(1 << 63)) + (va & 0x1f_ffff));
        }
        let pte = m.read_u64((pde & !0xfff) + ((va >> 12) & 511) * 8).ok()?;
        (pte & 1 != 0).then(|| (pte & !0xfff) + (va & 0xfff))
    }

    #[test]
    fn loads_segments_bss_tables_gdt_and_params() {
        let code = [0xf4, 0xeb, 0xfd];
        let data = [1u8, 2, 3, 4];
        let img = build(
            ET_EXEC,
            0x10_0000,
            &[seg(0x10_0000, &code, 3, PF_X | 4), seg(0x20_0000, &data, 0x3000, 6)],
        );
        let mut m = mem(16);
        m.fill(0x20_0004, 16, 0xee).unwrap();
        let l = load(&mut m, &img, &spec()).unwrap();
        let mut b = [0u8; 8];
        m.read(0x10_0000, &mut b[..3]).unwrap();
        assert_eq!(&b[..3], &code);
        m.read(0x20_0000, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 0, 0, 0, 0], "bss is zeroed");
        assert_eq!(l.params.free_start, 0x20_3000);
        assert_eq!(l.params.stack_top, 16 * MIB);
        assert_eq!(l.params.mem_bytes, 16 * MIB);
        assert_eq!((l.params.vm_index, l.params.vm_count), (2, 3));
        assert_eq!(l.params.insn(), Some(HypercallInsn::Vmmcall));
        let mut raw = [0u8; core::mem::size_of::<BootParams>()];
        m.read(layout::BOOT_PARAMS, &mut raw).unwrap();
        assert_eq!(&raw[..], l.params.as_bytes());
        assert_eq!(l.params.cmdline(), "hello guest");
        // Identity map, page 0 excepted.
        for va in [0x1000, 0x1f_ffff, 0x20_0000, 0x10_0000, 16 * MIB - 1] {
            assert_eq!(guest_translate(&m, va), Some(va), "at {va:#x}");
        }
        assert_eq!(guest_translate(&m, 0), None);
        assert_eq!(guest_translate(&m, 16 * MIB), None);
        // GDT and TSS.
        assert_eq!(m.read_u64(layout::GDT + 8), Ok(GDT_CODE));
        assert_eq!(m.read_u64(layout::GDT + 16), Ok(GDT_DATA));
        let tss = m.read_u64(layout::GDT + 24).unwrap();
        assert_eq!(tss & 0xffff, 103);
        assert_eq!((tss >> 16) & 0xff_ffff, TSS);
        assert_eq!((tss >> 40) & 0xff, 0x8b);
        assert_eq!(m.read_u64(layout::GDT + 32), Ok(0));
        // Initial state per the ABI table.
        let s = l.init;
        assert_eq!(s.regs.rip, 0x10_0000);
        assert_eq!(s.regs.rsp, 16 * MIB);
        assert_eq!(s.regs.rdi, layout::BOOT_PARAMS);
        assert_eq!(s.regs.rflags, 2);
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (0x8001_0033, 0x1000, 0x620, 0xd00));
        assert_eq!((s.cs.selector, s.ss.selector, s.tr.selector), (8, 0x10, 0x18));
        assert_eq!(s.cs.access & (1 << 13), 1 << 13, "CS.L");
        assert_eq!(s.gdtr, (layout::GDT, 39));
        assert_eq!((s.regs.rsi, l.params.vcpus, l.params._pad), (0, 1, 0), "one vCPU, index 0");
    }

    #[test]
    fn every_vcpu_starts_at_the_entry_with_its_index_and_its_own_stack() {
        let img = code_at_1mib(&[0xf4]);
        let mut m = mem(16);
        let l = load(&mut m, &img, &LoadSpec { vcpus: 4, ..spec() }).unwrap();
        assert_eq!(l.params.vcpus, 4);
        let mut raw = [0u8; core::mem::size_of::<BootParams>()];
        m.read(layout::BOOT_PARAMS, &mut raw).unwrap();
        assert_eq!(&raw[304..312], &[4, 0, 0, 0, 0, 0, 0, 0], "vcpus and the zero pad in guest memory");
        assert_eq!(layout::VCPU_STACK_BYTES, 64 << 10);
        for k in 0..4u32 {
            let v = vcpu_state(&l.init, k);
            assert_eq!(v.regs.rsi, u64::from(k), "RSI = the index");
            assert_eq!(v.regs.rsp, l.params.stack_top - u64::from(k) * layout::VCPU_STACK_BYTES);
            assert_eq!(v.regs.rsp % 16, 0);
            assert_eq!((v.regs.rip, v.regs.rdi), (0x10_0000, layout::BOOT_PARAMS), "same entry and RDI");
            assert_eq!(InitialState { regs: l.init.regs, ..v }, l.init, "nothing else differs");
        }
        // The stacks are reserved: an image may not reach into the fourth one.
        let reach = 16 * MIB - 4 * layout::VCPU_STACK_BYTES - 0x10_0000 + 1;
        let big = build(ET_EXEC, 0x10_0000, &[seg(0x10_0000, &[0xf4], reach, PF_X | 4)]);
        assert_eq!(
            load(&mut mem(16), &big, &LoadSpec { vcpus: 4, ..spec() }).err(),
            Some(LoadError::OverlapsStack { index: 0 })
        );
        assert!(load(&mut mem(16), &big, &LoadSpec { vcpus: 3, ..spec() }).is_ok());
    }

    #[test]
    fn long_command_lines_are_cut_at_a_character_boundary() {
        let good = code_at_1mib(&[0xf4]);
        let long = alloc::format!("{}\u{e9}tail", "x".repeat(254));
        let l = load(&mut mem(4), &good, &LoadSpec { cmdline: &long, ..spec() }).unwrap();
        assert_eq!(l.params.cmdline(), "x".repeat(254), "the two-byte character is left out whole");
        let ascii = "y".repeat(300);
        let l = load(&mut mem(4), &good, &LoadSpec { cmdline: &ascii, ..spec() }).unwrap();
        assert_eq!(l.params.cmdline(), &ascii[..255]);
    }

    #[test]
    fn four_gib_uses_four_page_directories() {
        // Only the tables are checked: write_page_tables on a 2 MiB memory covers 1 PD.
        let mut m = mem(4);
        write_page_tables(&mut m).unwrap();
        assert_eq!(m.read_u64(layout::PDPT + 8), Ok(0), "4 MiB needs one PD");
        assert_eq!(m.read_u64(layout::PD + 8), Ok(LARGE_BYTES | P | W | PS));
        assert_eq!(m.read_u64(layout::PD + 16), Ok(0));
    }

    #[test]
    fn malformed_images_are_refused_one_reason_each() {
        let code = [0xf4u8; 16];
        let good = code_at_1mib(&code);
        assert!(try_load(&good, 4).is_ok());
        assert_eq!(try_load(&good[..40], 4).err(), Some(LoadError::Truncated));
        assert_eq!(try_load(&good[..10], 4).err(), Some(LoadError::Truncated));
        assert_eq!(
            try_load(b"#!/bin/sh\n echo hi hi hi hi hi hi hi hi hi hi hi hi hi", 4).err(),
            Some(LoadError::NotElf)
        );
        assert_eq!(try_load(&[], 4).err(), Some(LoadError::Truncated));
        let mut wrong = good.clone();
        wrong[18] = 40; // EM_ARM
        assert_eq!(try_load(&wrong, 4).err(), Some(LoadError::WrongMachine(40)));
        let mut c32 = good.clone();
        c32[4] = 1;
        assert_eq!(try_load(&c32, 4).err(), Some(LoadError::Not64Bit));
        let mut be = good.clone();
        be[5] = 2;
        assert_eq!(try_load(&be, 4).err(), Some(LoadError::NotLittleEndian));
        let mut rel = good.clone();
        rel[16] = 1; // ET_REL
        assert_eq!(try_load(&rel, 4).err(), Some(LoadError::NotExecutable(1)));
        // Program headers cut off.
        assert_eq!(try_load(&good[..100], 4).err(), Some(LoadError::Truncated));
        let s = |addr, memsz| seg(addr, &code, memsz, PF_X | 4);
        let img = |segs: &[SegSpec<'_>]| build(ET_EXEC, 0x10_0000, segs);
        assert_eq!(
            try_load(&img(&[s(0x10_0000, 16), s(0x40_0000, 16)]), 4).err(),
            Some(LoadError::OutsideMemory { index: 1, paddr: 0x40_0000, memsz: 16 })
        );
        assert_eq!(
            try_load(&img(&[s(0x10_0000, u64::MAX)]), 4).err(),
            Some(LoadError::OutsideMemory { index: 0, paddr: 0x10_0000, memsz: u64::MAX })
        );
        assert_eq!(
            try_load(&img(&[s(0x10_0000, 0x2f_0001)]), 4).err(),
            Some(LoadError::OverlapsStack { index: 0 })
        );
        assert_eq!(
            try_load(&img(&[s(0x10_0000, 16), s(0x1000, 16)]), 4).err(),
            Some(LoadError::BelowImageFloor { index: 1, paddr: 0x1000 }),
            "over the page tables"
        );
        assert_eq!(
            try_load(&img(&[s(0x10_0000, 8)]), 4).err(),
            Some(LoadError::FileSizeOverMemSize { index: 0 })
        );
        assert_eq!(
            try_load(&img(&[s(0x10_0000, 32), s(0x10_0010, 16)]), 4).err(),
            Some(LoadError::SegmentsOverlap { first: 0, second: 1 })
        );
        assert_eq!(try_load(&build(ET_EXEC, 0x10_0000, &[]), 4).err(), Some(LoadError::NoSegments));
        assert_eq!(
            try_load(&build(ET_EXEC, 0x20_0000, &[s(0x10_0000, 16)]), 4).err(),
            Some(LoadError::BadEntry(0x20_0000))
        );
        let noexec = build(ET_EXEC, 0x10_0000, &[seg(0x10_0000, &code, 16, 6)]);
        assert_eq!(try_load(&noexec, 4).err(), Some(LoadError::BadEntry(0x10_0000)));
        // A PIE with an interpreter: the interpreter is the reason given.
        let interp = SegSpec { p_type: PT_INTERP, addr: 0, data: b"/lib/ld.so\0", memsz: 11, flags: 4 };
        let pie = build(ET_DYN, 0x10_0000, &[interp, s(0x10_0000, 16)]);
        assert_eq!(try_load(&pie, 4).err(), Some(LoadError::DynamicallyLinked));
        assert!(LoadError::DynamicallyLinked.to_string().contains("dynamically linked"));
        let pie = build(ET_DYN, 0x10_0000, &[s(0x10_0000, 16)]);
        assert_eq!(try_load(&pie, 4).err(), Some(LoadError::PositionIndependent));
        // File bytes beyond the file: patch p_filesz of the only segment.
        let mut long = good.clone();
        long[64 + 32..64 + 40].copy_from_slice(&0x1_0000u64.to_le_bytes());
        long[64 + 40..64 + 48].copy_from_slice(&0x1_0000u64.to_le_bytes());
        assert_eq!(try_load(&long, 4).err(), Some(LoadError::SegmentOutsideFile { index: 0 }));
        // A huge p_offset.
        let mut off = good.clone();
        off[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(try_load(&off, 4).err(), Some(LoadError::SegmentOutsideFile { index: 0 }));
        // vaddr != paddr.
        let mut va = good.clone();
        va[64 + 16..64 + 24].copy_from_slice(&0xffff_8000_0010_0000u64.to_le_bytes());
        assert_eq!(try_load(&va, 4).err(), Some(LoadError::VirtualNotPhysical { index: 0 }));
        // Too many program headers.
        let many: Vec<SegSpec<'_>> = (0..65).map(|i| s(0x10_0000 + i * 0x100, 16)).collect();
        assert_eq!(try_load(&img(&many), 16).err(), Some(LoadError::TooManySegments(65)));
        // vCPU counts and memory too small for the stacks.
        let mut m = mem(2);
        assert_eq!(
            load(&mut m, &good, &LoadSpec { vcpus: 0, ..spec() }).err(),
            Some(LoadError::BadVcpuCount(0))
        );
        assert_eq!(
            load(&mut m, &good, &LoadSpec { vcpus: 64, ..spec() }).err(),
            Some(LoadError::MemoryTooSmall)
        );
        assert!(load(&mut m, &good, &spec()).is_ok(), "2 MiB holds an image at 1 MiB and one stack");
    }

    #[test]
    fn every_truncation_of_a_good_image_is_an_error_not_a_panic() {
        let good = build(
            ET_EXEC,
            0x10_0000,
            &[seg(0x10_0000, &[0x90; 40], 40, PF_X), seg(0x20_0000, &[7; 20], 64, 6)],
        );
        for n in 0..good.len() {
            assert!(try_load(&good[..n], 4).is_err(), "cut at {n}");
        }
        // Flip every byte of the headers: whatever happens, no panic.
        for i in 0..64 + 2 * 56 {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            let _ = try_load(&bad, 4);
        }
    }
}
