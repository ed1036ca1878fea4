//! Threads: the pure parts of `clone`, `clone3` and `futex` (argument decoding and the
//! `FUTEX_WAKE_OP` arithmetic), tested on the host.

/// `CLONE_VM`: share the address space.
pub const CLONE_VM: u64 = 0x100;
/// `CLONE_FS`: share the working directory and umask.
pub const CLONE_FS: u64 = 0x200;
/// `CLONE_FILES`: share the descriptor table.
pub const CLONE_FILES: u64 = 0x400;
/// `CLONE_SIGHAND`: share the signal handlers.
pub const CLONE_SIGHAND: u64 = 0x800;
/// `CLONE_PIDFD`: return a pidfd (not supported).
pub const CLONE_PIDFD: u64 = 0x1000;
/// `CLONE_PTRACE` (accepted, no tracing).
pub const CLONE_PTRACE: u64 = 0x2000;
/// `CLONE_VFORK`: the parent waits until the child execs or ends.
pub const CLONE_VFORK: u64 = 0x4000;
/// `CLONE_PARENT`: the child gets the caller's parent.
pub const CLONE_PARENT: u64 = 0x8000;
/// `CLONE_THREAD`: a thread of the caller's process.
pub const CLONE_THREAD: u64 = 0x1_0000;
/// `CLONE_SYSVSEM` (no System V semaphores: trivially shared).
pub const CLONE_SYSVSEM: u64 = 0x4_0000;
/// `CLONE_SETTLS`: the child's FS base.
pub const CLONE_SETTLS: u64 = 0x8_0000;
/// `CLONE_PARENT_SETTID`: the child's id is written at `parent_tid`.
pub const CLONE_PARENT_SETTID: u64 = 0x10_0000;
/// `CLONE_CHILD_CLEARTID`: `child_tid` is cleared and woken when the child ends.
pub const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
/// `CLONE_DETACHED` (ignored, as on Linux).
pub const CLONE_DETACHED: u64 = 0x40_0000;
/// `CLONE_UNTRACED` (accepted).
pub const CLONE_UNTRACED: u64 = 0x80_0000;
/// `CLONE_CHILD_SETTID`: the child's id is written at `child_tid` in its memory.
pub const CLONE_CHILD_SETTID: u64 = 0x100_0000;
/// `CLONE_IO` (accepted: no I/O contexts).
pub const CLONE_IO: u64 = 0x8000_0000;
/// The low byte of `clone`'s flags: the signal the parent gets when the child ends.
pub const CSIGNAL: u64 = 0xff;

/// Every flag the kernel carries out; the namespace flags and the rest are `EINVAL`.
pub const CLONE_KNOWN: u64 = CSIGNAL
    | CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_PTRACE
    | CLONE_VFORK
    | CLONE_PARENT
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_UNTRACED
    | CLONE_CHILD_SETTID
    | CLONE_IO;

/// What `clone` and `clone3` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloneArgs {
    /// Flags, with the exit signal in the low byte.
    pub flags: u64,
    /// The child's stack pointer (0: the parent's).
    pub stack: u64,
    /// Where `CLONE_PARENT_SETTID` writes.
    pub parent_tid: u64,
    /// Where `CLONE_CHILD_SETTID` writes and `CLONE_CHILD_CLEARTID` clears.
    pub child_tid: u64,
    /// `CLONE_SETTLS`'s FS base.
    pub tls: u64,
}

/// Why a `clone` or `clone3` request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneError {
    /// `EINVAL`: an unknown or unsupported flag or field, or flags Linux does not allow
    /// together.
    Invalid,
    /// `E2BIG`: a `clone_args` longer than this kernel knows with non-zero bytes past it.
    TooBig,
}

/// Smallest `struct clone_args` (version 0).
pub const CLONE_ARGS_VER0: usize = 64;
/// The `struct clone_args` this kernel knows (version 2, with `cgroup`).
pub const CLONE_ARGS_KNOWN: usize = 88;

impl CloneArgs {
    /// Decodes `clone3`'s `struct clone_args` of `bytes.len()` bytes (the caller bounds
    /// the length it reads). `pidfd` is read only under `CLONE_PIDFD` (glibc fills it in
    /// regardless); `set_tid`, `cgroup` and `CLONE_PIDFD` are refused.
    pub fn from_clone3(bytes: &[u8]) -> Result<CloneArgs, CloneError> {
        if bytes.len() < CLONE_ARGS_VER0 {
            return Err(CloneError::Invalid);
        }
        if bytes.get(CLONE_ARGS_KNOWN..).is_some_and(|rest| rest.iter().any(|&x| x != 0)) {
            return Err(CloneError::TooBig);
        }
        let w = |i: usize| {
            bytes.get(i * 8..i * 8 + 8).map_or(0, |x| u64::from_le_bytes(x.try_into().unwrap_or_default()))
        };
        let (flags, exit_signal, stack, stack_size, tls) = (w(0), w(4), w(5), w(6), w(7));
        let (set_tid, set_tid_size, cgroup) = (w(8), w(9), w(10));
        if flags & (CSIGNAL | CLONE_PIDFD) != 0 || exit_signal > CSIGNAL {
            return Err(CloneError::Invalid);
        }
        if set_tid != 0 || set_tid_size != 0 || cgroup != 0 || (stack == 0) != (stack_size == 0) {
            return Err(CloneError::Invalid);
        }
        let top = if stack == 0 { 0 } else { stack.checked_add(stack_size).ok_or(CloneError::Invalid)? };
        let args =
            CloneArgs { flags: flags | exit_signal, stack: top, parent_tid: w(3), child_tid: w(2), tls };
        args.check()?;
        Ok(args)
    }

    /// Linux's rules on the flags: only known ones; a thread shares the handlers, which
    /// share the memory.
    pub fn check(&self) -> Result<(), CloneError> {
        let f = self.flags;
        if f & !CLONE_KNOWN != 0 {
            return Err(CloneError::Invalid);
        }
        if (f & CLONE_THREAD != 0 && f & CLONE_SIGHAND == 0) || (f & CLONE_SIGHAND != 0 && f & CLONE_VM == 0)
        {
            return Err(CloneError::Invalid);
        }
        Ok(())
    }
}

/// `FUTEX_WAKE_OP`'s operation (the `val3` encoding of `FUTEX_OP`) on the old value of
/// the second word: the new value and whether the comparison holds. None for an
/// operation or comparison Linux does not define (`ENOSYS`).
pub fn wake_op(encoded: u32, old: u32) -> Option<(u32, bool)> {
    let op = (encoded >> 28) & 7;
    let shift = encoded >> 31 != 0;
    let cmp = (encoded >> 24) & 15;
    // Both arguments are 12-bit signed numbers.
    let sext = |v: u32| ((v << 20) as i32 >> 20) as u32;
    let mut oparg = sext((encoded >> 12) & 0xfff);
    let cmparg = sext(encoded & 0xfff);
    if shift {
        oparg = 1u32.checked_shl(oparg & 31).unwrap_or(0);
    }
    let new = match op {
        0 => oparg,
        1 => old.wrapping_add(oparg),
        2 => old | oparg,
        3 => old & !oparg,
        4 => old ^ oparg,
        _ => return None,
    };
    let (o, c) = (old as i32, cmparg as i32);
    let cond = match cmp {
        0 => o == c,
        1 => o != c,
        2 => o < c,
        3 => o <= c,
        4 => o > c,
        5 => o >= c,
        _ => return None,
    };
    Some((new, cond))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLIBC_THREAD: u64 = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID;

    fn args(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn glibc_pthread_create_clone3_decodes() {
        // flags, pidfd (set by glibc without CLONE_PIDFD), child_tid, parent_tid,
        // exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup.
        let b = args(&[
            GLIBC_THREAD,
            0x7000_0990,
            0x7000_0990,
            0x7000_0990,
            0,
            0x6000_0000,
            0x80_0300,
            0x7000_06c0,
            0,
            0,
            0,
        ]);
        let a = CloneArgs::from_clone3(&b).expect("accepted");
        assert_eq!(a.flags, GLIBC_THREAD);
        assert_eq!(a.stack, 0x6080_0300);
        assert_eq!((a.parent_tid, a.child_tid, a.tls), (0x7000_0990, 0x7000_0990, 0x7000_06c0));
    }

    #[test]
    fn clone3_refusals() {
        let good = [GLIBC_THREAD, 0, 0, 0, 0, 0x1000, 0x1000, 0, 0, 0, 0];
        assert!(CloneArgs::from_clone3(&args(&good)[..63]).is_err(), "shorter than version 0");
        let mut longer = args(&good);
        longer.extend_from_slice(&[0; 8]);
        assert!(CloneArgs::from_clone3(&longer).is_ok(), "zeros past the known size are fine");
        longer.push(1);
        assert_eq!(CloneArgs::from_clone3(&longer), Err(CloneError::TooBig));
        let with = |i: usize, v: u64| {
            let mut w = good;
            w[i] = v;
            CloneArgs::from_clone3(&args(&w))
        };
        assert_eq!(with(0, GLIBC_THREAD | 17), Err(CloneError::Invalid), "CSIGNAL in clone3 flags");
        assert_eq!(with(0, GLIBC_THREAD | CLONE_PIDFD), Err(CloneError::Invalid));
        assert_eq!(with(0, GLIBC_THREAD | 0x2000_0000), Err(CloneError::Invalid), "CLONE_NEWUTS");
        assert_eq!(with(0, CLONE_THREAD | CLONE_VM), Err(CloneError::Invalid), "thread without handlers");
        assert_eq!(with(0, CLONE_SIGHAND), Err(CloneError::Invalid), "handlers without memory");
        assert_eq!(with(4, 256), Err(CloneError::Invalid), "exit signal past the byte");
        assert_eq!(with(6, 0), Err(CloneError::Invalid), "stack without size");
        assert_eq!(with(5, u64::MAX), Err(CloneError::Invalid), "stack overflowing");
        assert_eq!(with(8, 1), Err(CloneError::Invalid), "set_tid");
        assert_eq!(with(10, 3), Err(CloneError::Invalid), "cgroup");
        assert_eq!(with(0, 0).map(|a| a.flags), Ok(0), "a plain fork");
    }

    #[test]
    fn wake_op_arithmetic_and_comparisons() {
        let enc =
            |op: u32, cmp: u32, oparg: u32, cmparg: u32| (op << 28) | (cmp << 24) | (oparg << 12) | cmparg;
        // SET 5, compare old == 3.
        assert_eq!(wake_op(enc(0, 0, 5, 3), 3), Some((5, true)));
        // ADD 1 (glibc's condvar pattern), compare old > 1.
        assert_eq!(wake_op(enc(1, 4, 1, 1), 1), Some((2, false)));
        assert_eq!(wake_op(enc(2, 1, 0xf0, 0), 0x0f), Some((0xff, true)));
        assert_eq!(wake_op(enc(3, 2, 1, 0), 3), Some((2, false)));
        assert_eq!(wake_op(enc(4, 5, 0xff, 0), 0xf0), Some((0x0f, true)));
        // OPARG_SHIFT: 1 << 4.
        assert_eq!(wake_op(enc(8, 0, 4, 0), 0), Some((16, true)));
        // A 12-bit -1 is sign-extended.
        assert_eq!(wake_op(enc(1, 3, 0xfff, 0xfff), 0), Some((u32::MAX, false)));
        assert_eq!(wake_op(enc(5, 0, 0, 0), 0), None, "unknown op");
        assert_eq!(wake_op(enc(0, 6, 0, 0), 0), None, "unknown comparison");
    }
}
