//! The System V x86_64 start-up stack: argc, argv, envp, auxv and the strings they point
//! to, built as bytes for the top of a new process's stack.
//!
//! The auxiliary vector holds what Linux's `create_elf_tables` puts there, in its order,
//! except `AT_SYSINFO_EHDR`: there is no vDSO, so glibc makes real `clock_gettime`,
//! `gettimeofday`, `time` and `getcpu` system calls. `AT_HWCAP2` appears only when it is not
//! zero, as on Linux; `AT_BASE` is the interpreter's load address (0 without one).

use alloc::vec::Vec;

/// Auxiliary vector keys (`<elf.h>`).
pub mod at {
    /// End of the vector.
    pub const NULL: u64 = 0;
    /// Program headers' address.
    pub const PHDR: u64 = 3;
    /// Size of one program header.
    pub const PHENT: u64 = 4;
    /// Number of program headers.
    pub const PHNUM: u64 = 5;
    /// Page size.
    pub const PAGESZ: u64 = 6;
    /// Base of the interpreter (0: none).
    pub const BASE: u64 = 7;
    /// Flags (0).
    pub const FLAGS: u64 = 8;
    /// The program's entry point.
    pub const ENTRY: u64 = 9;
    /// Real user id.
    pub const UID: u64 = 11;
    /// Effective user id.
    pub const EUID: u64 = 12;
    /// Real group id.
    pub const GID: u64 = 13;
    /// Effective group id.
    pub const EGID: u64 = 14;
    /// Platform string.
    pub const PLATFORM: u64 = 15;
    /// CPU capabilities (CPUID leaf 1 EDX).
    pub const HWCAP: u64 = 16;
    /// More CPU capabilities (`HWCAP2_*` bits).
    pub const HWCAP2: u64 = 26;
    /// Clock ticks per second.
    pub const CLKTCK: u64 = 17;
    /// Secure mode (0).
    pub const SECURE: u64 = 23;
    /// 16 random bytes.
    pub const RANDOM: u64 = 25;
    /// The executed file's name.
    pub const EXECFN: u64 = 31;
}

/// What goes on the stack besides argv and envp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuxInfo {
    /// `AT_PHDR`.
    pub phdr: u64,
    /// `AT_PHENT`.
    pub phent: u64,
    /// `AT_PHNUM`.
    pub phnum: u64,
    /// `AT_ENTRY`: the program's entry (not the interpreter's).
    pub entry: u64,
    /// `AT_BASE`: the interpreter's load address, 0 for a program without one.
    pub base: u64,
    /// `AT_HWCAP`.
    pub hwcap: u64,
    /// `AT_HWCAP2` (left out when 0).
    pub hwcap2: u64,
    /// The bytes `AT_RANDOM` points to.
    pub random: [u8; 16],
}

/// A built stack: `bytes` go at `[top - bytes.len(), top)`, and the process starts with
/// `rsp`, which points at argc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartStack {
    /// The bytes below the stack top.
    pub bytes: Vec<u8>,
    /// The initial stack pointer (16-byte aligned).
    pub rsp: u64,
}

/// Why a stack cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// argv and envp together exceed `limit` bytes (`E2BIG`).
    TooBig,
}

/// The platform string in `AT_PLATFORM`.
pub const PLATFORM: &[u8] = b"x86_64";

/// Builds the stack for a process whose stack ends at `top` (16-byte aligned).
/// `execfn` is the path the program was executed by. Fails when the strings and
/// pointers would exceed `limit` bytes.
pub fn build(
    top: u64,
    argv: &[&[u8]],
    envp: &[&[u8]],
    execfn: &[u8],
    aux: &AuxInfo,
    limit: usize,
) -> Result<StartStack, StackError> {
    // Strings area, built downward from the top: execfn, platform, random, envp, argv.
    let mut strings: Vec<u8> = Vec::new();
    let push_str = |s: &[u8], strings: &mut Vec<u8>| -> u64 {
        // Offset from the top, counted downward: string lives at top - off.
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s);
        v.push(0);
        v.extend_from_slice(strings);
        *strings = v;
        strings.len() as u64
    };
    let execfn_off = push_str(execfn, &mut strings);
    let platform_off = push_str(PLATFORM, &mut strings);
    // 16 random bytes, not NUL-terminated: push and drop the NUL.
    let mut rnd = aux.random.to_vec();
    rnd.extend_from_slice(&strings);
    strings = rnd;
    let random_off = strings.len() as u64;
    let mut env_offs = Vec::with_capacity(envp.len());
    for e in envp.iter().rev() {
        env_offs.push(push_str(e, &mut strings));
    }
    env_offs.reverse();
    let mut arg_offs = Vec::with_capacity(argv.len());
    for a in argv.iter().rev() {
        arg_offs.push(push_str(a, &mut strings));
    }
    arg_offs.reverse();
    if strings.len() > limit {
        return Err(StackError::TooBig);
    }
    let addr = |off: u64| top - off;
    let mut auxv: Vec<(u64, u64)> = alloc::vec![
        (at::HWCAP, aux.hwcap),
        (at::PAGESZ, 4096),
        (at::CLKTCK, 100),
        (at::PHDR, aux.phdr),
        (at::PHENT, aux.phent),
        (at::PHNUM, aux.phnum),
        (at::BASE, aux.base),
        (at::FLAGS, 0),
        (at::ENTRY, aux.entry),
        (at::UID, 0),
        (at::EUID, 0),
        (at::GID, 0),
        (at::EGID, 0),
        (at::SECURE, 0),
        (at::RANDOM, addr(random_off)),
    ];
    if aux.hwcap2 != 0 {
        auxv.push((at::HWCAP2, aux.hwcap2));
    }
    auxv.push((at::EXECFN, addr(execfn_off)));
    auxv.push((at::PLATFORM, addr(platform_off)));
    auxv.push((at::NULL, 0));
    let mut words: Vec<u64> = Vec::new();
    words.push(argv.len() as u64);
    words.extend(arg_offs.iter().map(|&o| addr(o)));
    words.push(0);
    words.extend(env_offs.iter().map(|&o| addr(o)));
    words.push(0);
    for (k, v) in auxv {
        words.push(k);
        words.push(v);
    }
    // Pad the strings to 16 bytes and choose a word-area start so rsp is 16-aligned.
    let strings_len = (strings.len() as u64).div_ceil(16) * 16;
    let words_len = words.len() as u64 * 8;
    let total = (strings_len + words_len).div_ceil(16) * 16;
    if total as usize > limit {
        return Err(StackError::TooBig);
    }
    let rsp = top - total;
    let mut bytes = alloc::vec![0u8; total as usize];
    for (i, w) in words.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let s_at = total as usize - strings.len();
    bytes[s_at..].copy_from_slice(&strings);
    Ok(StartStack { bytes, rsp })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(s: &StartStack, top: u64, addr: u64) -> u64 {
        let i = (addr - (top - s.bytes.len() as u64)) as usize;
        u64::from_le_bytes(s.bytes[i..i + 8].try_into().expect("8 bytes"))
    }

    fn cstr(s: &StartStack, top: u64, addr: u64) -> Vec<u8> {
        let i = (addr - (top - s.bytes.len() as u64)) as usize;
        s.bytes[i..].iter().take_while(|&&b| b != 0).copied().collect()
    }

    #[test]
    fn layout_matches_the_sysv_abi() {
        let top = 0x7fff_0000_0000;
        let aux = AuxInfo {
            phdr: 0x400040,
            phent: 56,
            phnum: 10,
            entry: 0x401000,
            base: 0,
            hwcap: 0x178bfbff,
            hwcap2: 0,
            random: [7; 16],
        };
        let s = build(top, &[b"busybox", b"echo", b"hi"], &[b"PATH=/bin"], b"/bin/busybox", &aux, 1 << 20)
            .expect("fits");
        assert_eq!(s.rsp % 16, 0);
        assert_eq!(s.rsp, top - s.bytes.len() as u64);
        assert_eq!(word(&s, top, s.rsp), 3);
        assert_eq!(cstr(&s, top, word(&s, top, s.rsp + 8)), b"busybox");
        assert_eq!(cstr(&s, top, word(&s, top, s.rsp + 24)), b"hi");
        assert_eq!(word(&s, top, s.rsp + 32), 0);
        assert_eq!(cstr(&s, top, word(&s, top, s.rsp + 40)), b"PATH=/bin");
        assert_eq!(word(&s, top, s.rsp + 48), 0);
        // Walk the auxv.
        let mut at_ = s.rsp + 56;
        let mut seen = std::collections::HashMap::new();
        loop {
            let (k, v) = (word(&s, top, at_), word(&s, top, at_ + 8));
            if k == at::NULL {
                break;
            }
            seen.insert(k, v);
            at_ += 16;
        }
        assert_eq!(seen[&at::PHDR], 0x400040);
        assert_eq!(seen[&at::ENTRY], 0x401000);
        assert_eq!(seen[&at::PAGESZ], 4096);
        assert_eq!(cstr(&s, top, seen[&at::EXECFN]), b"/bin/busybox");
        assert_eq!(cstr(&s, top, seen[&at::PLATFORM]), b"x86_64");
        let r = seen[&at::RANDOM];
        let i = (r - (top - s.bytes.len() as u64)) as usize;
        assert_eq!(&s.bytes[i..i + 16], &[7u8; 16]);
    }

    #[test]
    fn stack_for_the_hosts_busybox() {
        let Ok(bytes) = std::fs::read("/bin/busybox") else { return };
        let plan = crate::elf::plan(&bytes).expect("busybox is a static executable");
        let aux = AuxInfo {
            phdr: plan.phdr,
            phent: plan.phent,
            phnum: plan.phnum,
            entry: plan.entry,
            base: 0,
            hwcap: 0,
            hwcap2: 0,
            random: [1; 16],
        };
        let top = 0x7fff_ffff_0000;
        let s = build(top, &[b"sh", b"-c", b"echo hi"], &[b"PATH=/bin"], b"/bin/sh", &aux, 1 << 20)
            .expect("fits");
        // AT_PHDR must point into a loaded segment, at the ELF's program headers.
        let seg = plan
            .segments
            .iter()
            .find(|g| g.vaddr <= plan.phdr && plan.phdr < g.vaddr + g.filesz)
            .expect("the headers are loaded");
        let off = (seg.offset + (plan.phdr - seg.vaddr)) as usize;
        assert_eq!(&bytes[off..off + 4], &1u32.to_le_bytes(), "first program header is PT_LOAD");
        assert_eq!(word(&s, top, s.rsp), 3);
        assert_eq!(cstr(&s, top, word(&s, top, s.rsp + 24)), b"echo hi");
    }

    #[test]
    fn too_big_is_refused() {
        let aux =
            AuxInfo { phdr: 0, phent: 56, phnum: 1, entry: 0, base: 0, hwcap: 0, hwcap2: 0, random: [0; 16] };
        let big = alloc::vec![b'x'; 5000];
        assert_eq!(build(0x1000_0000, &[&big], &[], b"x", &aux, 4096), Err(StackError::TooBig));
    }

    /// The auxiliary vector's entries in order, up to `AT_NULL`.
    fn auxv(s: &StartStack, top: u64) -> Vec<(u64, u64)> {
        let argc = word(s, top, s.rsp);
        let mut at_ = s.rsp + 8 * (argc + 2);
        while word(s, top, at_) != 0 {
            at_ += 8;
        }
        at_ += 8;
        let mut out = Vec::new();
        loop {
            let (k, v) = (word(s, top, at_), word(s, top, at_ + 8));
            out.push((k, v));
            if k == at::NULL {
                return out;
            }
            at_ += 16;
        }
    }

    #[test]
    fn a_dynamic_program_gets_linuxs_auxv() {
        let top = 0x7fff_ffff_0000;
        let aux = AuxInfo {
            phdr: 0x5555_5555_0040,
            phent: 56,
            phnum: 13,
            entry: 0x5555_5557_0000,
            base: 0x7fff_bf7c_0000,
            hwcap: 0x178bfbff,
            hwcap2: 2,
            random: [9; 16],
        };
        let s = build(top, &[b"ls", b"-la"], &[b"A=1", b"B=2"], b"/usr/bin/ls", &aux, 1 << 20).expect("fits");
        let v = auxv(&s, top);
        let keys: Vec<u64> = v.iter().map(|e| e.0).collect();
        assert_eq!(
            keys,
            [
                at::HWCAP,
                at::PAGESZ,
                at::CLKTCK,
                at::PHDR,
                at::PHENT,
                at::PHNUM,
                at::BASE,
                at::FLAGS,
                at::ENTRY,
                at::UID,
                at::EUID,
                at::GID,
                at::EGID,
                at::SECURE,
                at::RANDOM,
                at::HWCAP2,
                at::EXECFN,
                at::PLATFORM,
                at::NULL
            ],
            "Linux's entries in its order, without AT_SYSINFO_EHDR (no vDSO)"
        );
        let get = |k: u64| v.iter().find(|e| e.0 == k).map(|e| e.1).expect("present");
        assert_eq!(get(at::BASE), 0x7fff_bf7c_0000, "AT_BASE is the interpreter's base");
        assert_eq!(get(at::ENTRY), 0x5555_5557_0000, "AT_ENTRY is the program's entry");
        assert_eq!(get(at::PHDR), 0x5555_5555_0040);
        assert_eq!(get(at::PHNUM), 13);
        assert_eq!(get(at::HWCAP2), 2);
        assert_eq!(get(at::SECURE), 0);
        assert_eq!(get(at::CLKTCK), 100);
        assert_eq!(cstr(&s, top, get(at::EXECFN)), b"/usr/bin/ls");
        assert_eq!(cstr(&s, top, get(at::PLATFORM)), b"x86_64");
        // Without HWCAP2 bits the entry is left out, as Linux does.
        let s =
            build(top, &[b"ls"], &[], b"/usr/bin/ls", &AuxInfo { hwcap2: 0, ..aux }, 1 << 20).expect("fits");
        assert!(!auxv(&s, top).iter().any(|e| e.0 == at::HWCAP2));
    }
}
