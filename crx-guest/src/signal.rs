//! Linux x86_64 signal delivery, the pure parts: signal sets, dispositions, `siginfo_t`,
//! and the `rt_sigframe` a handler runs on (built on the user stack and read back by
//! `rt_sigreturn`).
//!
//! Frame layout (the kernel's `struct rt_sigframe` for 64-bit processes):
//!
//! | offset | what |
//! |---|---|
//! | 0 | return address: `sa_restorer` (it calls `rt_sigreturn`) |
//! | 8 | `struct ucontext`: `uc_flags`, `uc_link`, `uc_stack` (24 bytes), `uc_mcontext` (`struct sigcontext`, 256 bytes), `uc_sigmask` |
//! | 312 | `siginfo_t` (128 bytes) |
//!
//! The FXSAVE image (512 bytes, 64-aligned) lies above the frame, and `sigcontext.fpstate`
//! points at it. The frame starts 128 bytes (the red zone) below the interrupted RSP and is
//! placed so that `RSP + 8` is 16-aligned at the handler's first instruction, as after a
//! `call`. Decoding never panics: every read is bounds-checked by the fixed array types.

use alloc::vec::Vec;

use crate::posix::sig;

/// `sa_flags`: the handler takes `(signo, siginfo *, ucontext *)`.
pub const SA_SIGINFO: u64 = 0x4;
/// `sa_flags`: `sa_restorer` is valid (glibc and musl always set it).
pub const SA_RESTORER: u64 = 0x0400_0000;
/// `sa_flags`: restart interrupted syscalls.
pub const SA_RESTART: u64 = 0x1000_0000;
/// `sa_flags`: do not block the signal while its handler runs.
pub const SA_NODEFER: u64 = 0x4000_0000;
/// `sa_flags`: reset the disposition to the default when the handler is entered.
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// `rt_sigprocmask` `how` values.
pub const SIG_BLOCK: u64 = 0;
/// Unblock the given signals.
pub const SIG_UNBLOCK: u64 = 1;
/// Replace the mask.
pub const SIG_SETMASK: u64 = 2;

/// `si_code`: sent by `kill`.
pub const SI_USER: i32 = 0;
/// `si_code`: sent by `tkill`/`tgkill`.
pub const SI_TKILL: i32 = -6;
/// `si_code`: sent by the kernel itself (the interval timers' SIGALRM, SIGVTALRM, SIGPROF).
pub const SI_KERNEL: i32 = 0x80;
/// `si_code` of SIGCHLD: the child exited.
pub const CLD_EXITED: i32 = 1;
/// `si_code` of SIGCHLD: the child was killed.
pub const CLD_KILLED: i32 = 2;
/// `si_code` of SIGSEGV: no mapping at the address.
pub const SEGV_MAPERR: i32 = 1;
/// `si_code` of SIGSEGV: the mapping forbids the access.
pub const SEGV_ACCERR: i32 = 2;

/// Bytes of `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// Offset of `uc_mcontext` in `struct ucontext`.
pub const UC_MCONTEXT: usize = 40;
/// Offset of `uc_sigmask` in `struct ucontext`.
pub const UC_SIGMASK: usize = 296;
/// Bytes of the kernel's `struct ucontext` (64-bit signal mask).
pub const UCONTEXT_SIZE: usize = 304;
/// Offset of the `struct ucontext` in the frame.
pub const FRAME_UC: usize = 8;
/// Offset of `siginfo_t` in the frame.
pub const FRAME_INFO: usize = FRAME_UC + UCONTEXT_SIZE;
/// Bytes of the frame proper (without the FPU image).
pub const FRAME_SIZE: usize = FRAME_INFO + SIGINFO_SIZE;
/// Bytes of the FXSAVE image.
pub const FPU_SIZE: usize = 512;
/// Bytes below the interrupted RSP that a leaf function may use (the red zone).
pub const RED_ZONE: u64 = 128;
/// Offset of `fpstate` in `struct sigcontext`.
pub const SC_FPSTATE: usize = 184;
/// `uc_flags`: the frame saved SS (`UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS`).
pub const UC_FLAGS: u64 = 0x2 | 0x4;
/// `ss_flags` of an unused alternate stack.
pub const SS_DISABLE: u32 = 2;

/// The mask bit of signal `n` (1..=64); 0 for anything else.
pub fn bit(n: u32) -> u64 {
    if (1..=sig::MAX).contains(&n) {
        1u64 << (n - 1)
    } else {
        0
    }
}

/// Signals no mask can block.
pub const UNBLOCKABLE: u64 = (1 << (sig::SIGKILL - 1)) | (1 << (sig::SIGSTOP - 1));

/// Why `rt_sigprocmask` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHow;

/// The new blocked mask after `rt_sigprocmask(how, set)` on `old`; SIGKILL and SIGSTOP
/// never become blocked.
pub fn apply_mask(old: u64, how: u64, set: u64) -> Result<u64, BadHow> {
    let m = match how {
        SIG_BLOCK => old | set,
        SIG_UNBLOCK => old & !set,
        SIG_SETMASK => set,
        _ => return Err(BadHow),
    };
    Ok(m & !UNBLOCKABLE)
}

/// The lowest pending signal that `blocked` lets through.
pub fn next_deliverable(pending: u64, blocked: u64) -> Option<u32> {
    let ready = pending & !(blocked & !UNBLOCKABLE);
    if ready == 0 {
        None
    } else {
        Some(ready.trailing_zeros() + 1)
    }
}

/// The signals that faults raise (Linux's `SYNCHRONOUS_MASK`): SIGSEGV, SIGBUS, SIGILL,
/// SIGTRAP, SIGFPE and SIGSYS.
const SYNCHRONOUS: u64 = (1 << (sig::SIGSEGV - 1))
    | (1 << (sig::SIGBUS - 1))
    | (1 << (sig::SIGILL - 1))
    | (1 << (sig::SIGTRAP - 1))
    | (1 << (sig::SIGFPE - 1))
    | (1 << (sig::SIGSYS - 1));

/// Which of the signals in `ready` a wait for them (`rt_sigtimedwait`) takes first: a
/// fault's signal, else the lowest number (Linux's `next_signal`).
pub fn next_to_take(ready: u64) -> Option<u32> {
    let first = if ready & SYNCHRONOUS != 0 { ready & SYNCHRONOUS } else { ready };
    (first != 0).then(|| first.trailing_zeros() + 1)
}

/// What a signal does to the process that takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Nothing (SIG_IGN, or a default action of ignore).
    Ignore,
    /// Ends the process.
    Terminate,
    /// Runs the handler at this address.
    Handler(u64),
}

/// A `struct kernel_sigaction` as `rt_sigaction` passes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Action {
    /// Handler address, 0 = SIG_DFL, 1 = SIG_IGN.
    pub handler: u64,
    /// `SA_*` flags.
    pub flags: u64,
    /// Where the handler returns to.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

impl Action {
    /// Bytes of `struct kernel_sigaction`.
    pub const SIZE: usize = 32;

    /// Decodes the user structure.
    pub fn from_bytes(b: &[u8; 32]) -> Action {
        let w = |i: usize| {
            u64::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3], b[i + 4], b[i + 5], b[i + 6], b[i + 7]])
        };
        Action { handler: w(0), flags: w(8), restorer: w(16), mask: w(24) }
    }

    /// Encodes the user structure.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, v) in [self.handler, self.flags, self.restorer, self.mask].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// What signal `n` does under this action.
    pub fn disposition(&self, n: u32) -> Disposition {
        match self.handler {
            1 => Disposition::Ignore,
            0 => match crate::posix::default_action(n) {
                crate::posix::DefaultAction::Ignore => Disposition::Ignore,
                crate::posix::DefaultAction::Terminate => Disposition::Terminate,
            },
            h => Disposition::Handler(h),
        }
    }

    /// The blocked mask while the handler for `n` runs, from the mask in effect before.
    pub fn handler_mask(&self, n: u32, blocked: u64) -> u64 {
        let mut m = blocked | self.mask;
        if self.flags & SA_NODEFER == 0 {
            m |= bit(n);
        }
        m & !UNBLOCKABLE
    }
}

/// The parts of `siginfo_t` the kernel fills in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigInfo {
    /// `si_signo`.
    pub signo: u32,
    /// `si_code`.
    pub code: i32,
    /// `si_pid` (kill, SIGCHLD).
    pub pid: u32,
    /// `si_status` (SIGCHLD: exit code or signal).
    pub status: i32,
    /// `si_addr` (faults); when set, the union holds the address instead of pid/uid.
    pub addr: Option<u64>,
}

impl SigInfo {
    /// The 128-byte `siginfo_t`.
    pub fn to_bytes(&self) -> [u8; SIGINFO_SIZE] {
        let mut b = [0u8; SIGINFO_SIZE];
        b[0..4].copy_from_slice(&self.signo.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        match self.addr {
            Some(a) => b[16..24].copy_from_slice(&a.to_le_bytes()),
            None => {
                b[16..20].copy_from_slice(&self.pid.to_le_bytes());
                // si_uid stays 0 (everything runs as root).
                b[24..28].copy_from_slice(&self.status.to_le_bytes());
            }
        }
        b
    }
}

/// The registers a frame saves (`struct sigcontext` without the fields the kernel adds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Regs {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
}

impl Regs {
    fn words(&self) -> [u64; 18] {
        [
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rdi,
            self.rsi,
            self.rbp,
            self.rbx,
            self.rdx,
            self.rax,
            self.rcx,
            self.rsp,
            self.rip,
            self.rflags,
        ]
    }
}

/// How the fault that raised the signal happened (`sigcontext` `err`, `trapno`, `cr2`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultContext {
    /// Exception error code.
    pub err: u64,
    /// Exception vector.
    pub trapno: u64,
    /// Faulting address (page faults).
    pub cr2: u64,
}

/// A frame ready to be copied to the user stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where `bytes` go (the handler's RSP).
    pub addr: u64,
    /// The frame, padding and FPU image.
    pub bytes: Vec<u8>,
    /// The handler's `rsi` (`&siginfo`).
    pub info: u64,
    /// The handler's `rdx` (`&ucontext`).
    pub uc: u64,
}

/// Why a frame could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

/// Where the frame and the FPU image go below `rsp`: `(frame, fpstate)`.
pub fn place(rsp: u64) -> Result<(u64, u64), NoRoom> {
    let fp = rsp.checked_sub(RED_ZONE + FPU_SIZE as u64).ok_or(NoRoom)? & !63;
    let frame = (fp.checked_sub(FRAME_SIZE as u64).ok_or(NoRoom)? & !15).checked_sub(8).ok_or(NoRoom)?;
    Ok((frame, fp))
}

/// `SA_ONSTACK`: the handler runs on the thread's alternate signal stack.
pub const SA_ONSTACK: u64 = 0x0800_0000;
/// `ss_flags`: the thread is running on its alternate signal stack.
pub const SS_ONSTACK: u32 = 1;

/// A thread's alternate signal stack as `sigaltstack` sets it (`stack_t`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AltStack {
    /// Lowest address.
    pub sp: u64,
    /// Size in bytes (0: none set).
    pub size: u64,
    /// `ss_flags` as set (`SS_AUTODISARM`).
    pub flags: u32,
}

impl AltStack {
    /// Whether `rsp` lies on this stack.
    pub fn holds(&self, rsp: u64) -> bool {
        self.size != 0 && rsp > self.sp && rsp - self.sp <= self.size
    }

    /// Where a handler's frame goes for a thread at `rsp` whose action has `flags`: the
    /// top of the alternate stack for `SA_ONSTACK` when one is set and the thread is not
    /// already on it (the red zone is kept only on the interrupted stack).
    pub fn frame_rsp(&self, rsp: u64, flags: u64) -> u64 {
        if flags & SA_ONSTACK != 0 && self.size != 0 && !self.holds(rsp) {
            self.sp.wrapping_add(self.size).wrapping_add(RED_ZONE)
        } else {
            rsp
        }
    }

    /// The `stack_t` a handler's `ucontext` (and `sigaltstack`'s old value) shows for a
    /// thread at `rsp`: 24 bytes, `ss_sp`, `ss_flags`, `ss_size`.
    pub fn to_bytes(&self, rsp: u64) -> [u8; 24] {
        let mut b = [0u8; 24];
        let flags = if self.size == 0 {
            SS_DISABLE
        } else if self.holds(rsp) {
            SS_ONSTACK | self.flags
        } else {
            self.flags
        };
        b[0..8].copy_from_slice(&self.sp.to_le_bytes());
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// Builds the frame for a handler of the signal in `info`, interrupting `regs`, with
/// `old_mask` to restore on return and the interrupted FXSAVE image `fpu`: placed below
/// `frame_rsp` (less the red zone; `regs.rsp` for the interrupted stack, see
/// [`AltStack::frame_rsp`]), with `alt` shown as the `ucontext`'s `uc_stack`.
#[allow(clippy::too_many_arguments)]
pub fn build_on(
    regs: &Regs,
    frame_rsp: u64,
    alt: &AltStack,
    fault: &FaultContext,
    old_mask: u64,
    info: &SigInfo,
    restorer: u64,
    fpu: &[u8; FPU_SIZE],
) -> Result<Frame, NoRoom> {
    let (addr, fp) = place(frame_rsp)?;
    let len = (fp - addr) as usize + FPU_SIZE;
    let mut b = alloc::vec![0u8; len];
    b[0..8].copy_from_slice(&restorer.to_le_bytes());
    let uc = FRAME_UC;
    b[uc..uc + 8].copy_from_slice(&UC_FLAGS.to_le_bytes());
    // uc_link = 0; uc_stack = the alternate stack as the interrupted code had it.
    b[uc + 16..uc + 40].copy_from_slice(&alt.to_bytes(regs.rsp));
    let mc = uc + UC_MCONTEXT;
    for (i, w) in regs.words().iter().enumerate() {
        b[mc + i * 8..mc + i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    // cs, gs, fs, ss as four u16.
    b[mc + 144..mc + 146].copy_from_slice(&regs.cs.to_le_bytes());
    b[mc + 150..mc + 152].copy_from_slice(&regs.ss.to_le_bytes());
    // sigcontext after the segments: err, trapno, oldmask, cr2, fpstate, reserved[8].
    for (off, v) in
        [(152, fault.err), (160, fault.trapno), (168, old_mask), (176, fault.cr2), (SC_FPSTATE, fp)]
    {
        b[mc + off..mc + off + 8].copy_from_slice(&v.to_le_bytes());
    }
    b[uc + UC_SIGMASK..uc + UC_SIGMASK + 8].copy_from_slice(&old_mask.to_le_bytes());
    b[FRAME_INFO..FRAME_SIZE].copy_from_slice(&info.to_bytes());
    let f = (fp - addr) as usize;
    b[f..f + FPU_SIZE].copy_from_slice(fpu);
    Ok(Frame { addr, bytes: b, info: addr + FRAME_INFO as u64, uc: addr + FRAME_UC as u64 })
}

/// What `rt_sigreturn` reads back from a `struct ucontext`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The registers to resume with.
    pub regs: Regs,
    /// The blocked mask to restore (SIGKILL and SIGSTOP removed).
    pub mask: u64,
    /// Where the FXSAVE image is (0: none).
    pub fpstate: u64,
}

/// Decodes the `struct ucontext` that `rt_sigreturn` finds at the top of the stack.
pub fn restore(uc: &[u8; UCONTEXT_SIZE]) -> Restored {
    let w = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&uc[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let mc = UC_MCONTEXT;
    let g = |i: usize| w(mc + i * 8);
    let regs = Regs {
        r8: g(0),
        r9: g(1),
        r10: g(2),
        r11: g(3),
        r12: g(4),
        r13: g(5),
        r14: g(6),
        r15: g(7),
        rdi: g(8),
        rsi: g(9),
        rbp: g(10),
        rbx: g(11),
        rdx: g(12),
        rax: g(13),
        rcx: g(14),
        rsp: g(15),
        rip: g(16),
        rflags: g(17),
        cs: u16::from_le_bytes([uc[mc + 144], uc[mc + 145]]),
        ss: u16::from_le_bytes([uc[mc + 150], uc[mc + 151]]),
    };
    Restored { regs, mask: w(UC_SIGMASK) & !UNBLOCKABLE, fpstate: w(mc + SC_FPSTATE) }
}

/// Makes a user-supplied FXSAVE image safe to load: MXCSR bits outside `mxcsr_mask` (which
/// would make FXRSTOR fault) are cleared; `mxcsr_mask` 0 means the default 0xffbf.
pub fn sanitize_fxsave(img: &mut [u8; FPU_SIZE], mxcsr_mask: u32) {
    let mask = if mxcsr_mask == 0 { 0xffbf } else { mxcsr_mask };
    let m = u32::from_le_bytes([img[24], img[25], img[26], img[27]]) & mask;
    img[24..28].copy_from_slice(&m.to_le_bytes());
    // The image's own mxcsr_mask field is ignored by FXRSTOR; keep the CPU's.
    img[28..32].copy_from_slice(&mxcsr_mask.to_le_bytes());
}

/// Whether a syscall interrupted by a handler restarts under `SA_RESTART` (Linux's
/// `-ERESTARTSYS`), or always fails with `EINTR` (sleeps, `pause`, `rt_sigsuspend`,
/// `rt_sigtimedwait`).
pub fn restartable(nr: u64) -> bool {
    !matches!(nr, 34 | 35 | 128 | 130 | 230)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(bit(1), 1);
        assert_eq!(bit(64), 1 << 63);
        assert_eq!(bit(0), 0);
        assert_eq!(bit(65), 0);
        let all = u64::MAX;
        let m = apply_mask(0, SIG_SETMASK, all).expect("setmask");
        assert_eq!(m & bit(sig::SIGKILL), 0);
        assert_eq!(m & bit(sig::SIGSTOP), 0);
        assert_ne!(m & bit(sig::SIGCHLD), 0);
        assert_eq!(apply_mask(bit(2), SIG_BLOCK, bit(3)), Ok(bit(2) | bit(3)));
        assert_eq!(apply_mask(bit(2) | bit(3), SIG_UNBLOCK, bit(3)), Ok(bit(2)));
        assert_eq!(apply_mask(0, 3, 0), Err(BadHow));
    }

    #[test]
    fn delivery_order_and_blocking() {
        assert_eq!(next_deliverable(0, 0), None);
        assert_eq!(next_deliverable(bit(17) | bit(10), 0), Some(10));
        assert_eq!(next_deliverable(bit(17) | bit(10), bit(10)), Some(17));
        assert_eq!(next_deliverable(bit(17), bit(17)), None);
        // SIGKILL gets through any mask.
        assert_eq!(next_deliverable(bit(9), u64::MAX), Some(9));
    }

    #[test]
    fn a_wait_takes_fault_signals_first_then_the_lowest() {
        assert_eq!(next_to_take(0), None);
        assert_eq!(next_to_take(bit(10) | bit(14)), Some(10));
        assert_eq!(next_to_take(bit(2) | bit(sig::SIGSEGV)), Some(sig::SIGSEGV));
        assert_eq!(next_to_take(bit(1) | bit(31) | bit(64)), Some(31), "SIGSYS is a fault's signal");
        assert_eq!(next_to_take(bit(64)), Some(64));
        assert_eq!(next_to_take(bit(sig::SIGFPE) | bit(sig::SIGILL)), Some(sig::SIGILL));
    }

    #[test]
    fn dispositions_and_handler_masks() {
        let dfl = Action::default();
        assert_eq!(dfl.disposition(sig::SIGCHLD), Disposition::Ignore);
        assert_eq!(dfl.disposition(sig::SIGTERM), Disposition::Terminate);
        let ign = Action { handler: 1, ..Default::default() };
        assert_eq!(ign.disposition(sig::SIGTERM), Disposition::Ignore);
        let h = Action { handler: 0x4000, flags: SA_RESTORER, restorer: 0x5000, mask: bit(2) };
        assert_eq!(h.disposition(10), Disposition::Handler(0x4000));
        assert_eq!(h.handler_mask(10, bit(5)), bit(2) | bit(5) | bit(10));
        let nd = Action { flags: SA_NODEFER, ..h };
        assert_eq!(nd.handler_mask(10, 0), bit(2));
        let b = h.to_bytes();
        assert_eq!(Action::from_bytes(&b), h);
        assert_eq!(&b[16..24], &0x5000u64.to_le_bytes());
    }

    #[test]
    fn siginfo_layout() {
        let i = SigInfo { signo: 17, code: CLD_EXITED, pid: 7, status: 3, addr: None };
        let b = i.to_bytes();
        assert_eq!(&b[0..4], &17u32.to_le_bytes());
        assert_eq!(&b[8..12], &1i32.to_le_bytes());
        assert_eq!(&b[16..20], &7u32.to_le_bytes());
        assert_eq!(&b[24..28], &3i32.to_le_bytes());
        let s = SigInfo { signo: 11, code: SEGV_MAPERR, addr: Some(0xdead_0000), ..Default::default() };
        assert_eq!(&s.to_bytes()[16..24], &0xdead_0000u64.to_le_bytes());
    }

    #[test]
    fn frame_layout_matches_linux() {
        // struct sigcontext is 256 bytes; ucontext = flags, link, stack (24), mcontext, sigmask.
        assert_eq!(UC_MCONTEXT + 256, UC_SIGMASK);
        assert_eq!(FRAME_INFO, 312);
        assert_eq!(FRAME_SIZE, 440);
        for rsp in [0x7fff_f000u64, 0x7fff_effb, 0x7fff_eff0 + 8] {
            let (frame, fp) = place(rsp).expect("room");
            // The red zone is left alone and the FPU image is 64-aligned above the frame.
            assert!(fp + FPU_SIZE as u64 <= rsp - RED_ZONE);
            assert_eq!(fp % 64, 0);
            assert!(frame + FRAME_SIZE as u64 <= fp);
            // As after a call: RSP + 8 is 16-aligned at the handler's entry.
            assert_eq!((frame + 8) % 16, 0);
        }
        assert_eq!(place(100), Err(NoRoom));
    }

    #[test]
    fn frames_round_trip_through_sigreturn() {
        let regs = Regs {
            r8: 8,
            r9: 9,
            r10: 10,
            r11: 11,
            r12: 12,
            r13: 13,
            r14: 14,
            r15: 15,
            rdi: 100,
            rsi: 101,
            rbp: 102,
            rbx: 103,
            rdx: 104,
            rax: 105,
            rcx: 106,
            rsp: 0x7fff_1234,
            rip: 0x40_1000,
            rflags: 0x246,
            cs: 0x23,
            ss: 0x1b,
        };
        let fault = FaultContext { err: 6, trapno: 14, cr2: 0x10 };
        let info = SigInfo { signo: 11, code: SEGV_MAPERR, addr: Some(0x10), ..Default::default() };
        let mut fpu = [0u8; FPU_SIZE];
        fpu[24] = 0x80;
        fpu[200] = 0xaa;
        let f = build_on(&regs, regs.rsp, &AltStack::default(), &fault, bit(3), &info, 0x40_2000, &fpu)
            .expect("frame");
        assert_eq!(&f.bytes[0..8], &0x40_2000u64.to_le_bytes());
        assert_eq!(f.uc, f.addr + 8);
        assert_eq!(f.info, f.addr + 312);
        let mc = FRAME_UC + UC_MCONTEXT;
        // gregs order: r8 first, rip at 16, eflags at 17; err/trapno/oldmask/cr2 after the segments.
        assert_eq!(&f.bytes[mc..mc + 8], &8u64.to_le_bytes());
        assert_eq!(&f.bytes[mc + 128..mc + 136], &0x40_1000u64.to_le_bytes());
        assert_eq!(&f.bytes[mc + 160..mc + 168], &14u64.to_le_bytes());
        assert_eq!(&f.bytes[mc + 176..mc + 184], &0x10u64.to_le_bytes());
        assert_eq!(&f.bytes[FRAME_INFO..FRAME_INFO + 4], &11u32.to_le_bytes());
        let fp =
            u64::from_le_bytes(f.bytes[mc + SC_FPSTATE..mc + SC_FPSTATE + 8].try_into().expect("8 bytes"));
        assert_eq!(fp % 16, 0);
        let off = (fp - f.addr) as usize;
        assert_eq!(f.bytes[off + 200], 0xaa);
        assert_eq!(f.addr + f.bytes.len() as u64, fp + FPU_SIZE as u64);
        let mut uc = [0u8; UCONTEXT_SIZE];
        uc.copy_from_slice(&f.bytes[FRAME_UC..FRAME_UC + UCONTEXT_SIZE]);
        let r = restore(&uc);
        assert_eq!(r.regs, regs);
        assert_eq!(r.mask, bit(3));
        assert_eq!(r.fpstate, fp);
    }

    #[test]
    fn sigreturn_cannot_block_sigkill_or_load_a_bad_mxcsr() {
        let mut uc = [0u8; UCONTEXT_SIZE];
        uc[UC_SIGMASK..UC_SIGMASK + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(restore(&uc).mask, !UNBLOCKABLE);
        let mut img = [0xffu8; FPU_SIZE];
        sanitize_fxsave(&mut img, 0);
        assert_eq!(u32::from_le_bytes([img[24], img[25], img[26], img[27]]), 0xffbf);
        sanitize_fxsave(&mut img, 0xffff);
        assert_eq!(u32::from_le_bytes([img[24], img[25], img[26], img[27]]), 0xffbf);
    }

    #[test]
    fn restart_rules() {
        assert!(restartable(61)); // wait4
        assert!(restartable(0)); // read
        assert!(!restartable(35)); // nanosleep
        assert!(!restartable(130)); // rt_sigsuspend
        assert!(!restartable(128)); // rt_sigtimedwait
    }

    #[test]
    fn alternate_stack_placement_and_stack_t() {
        let alt = AltStack { sp: 0x10_0000, size: 0x4000, flags: 0 };
        // SA_ONSTACK off the alternate stack: the frame goes to its top (the red zone
        // that `place` keeps is only the interrupted stack's).
        assert_eq!(alt.frame_rsp(0x7fff_0000, SA_ONSTACK), 0x10_4000 + RED_ZONE);
        // Without SA_ONSTACK, or already on it: the interrupted stack.
        assert_eq!(alt.frame_rsp(0x7fff_0000, 0), 0x7fff_0000);
        assert_eq!(alt.frame_rsp(0x10_2000, SA_ONSTACK), 0x10_2000);
        assert_eq!(AltStack::default().frame_rsp(0x7fff_0000, SA_ONSTACK), 0x7fff_0000);
        let (addr, _) = place(alt.frame_rsp(0x7fff_0000, SA_ONSTACK)).expect("room");
        assert!(alt.holds(addr), "the frame lies on the alternate stack");
        let flags = |b: [u8; 24]| u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        assert_eq!(flags(alt.to_bytes(0x7fff_0000)), 0);
        assert_eq!(flags(alt.to_bytes(0x10_2000)), SS_ONSTACK);
        assert_eq!(flags(AltStack::default().to_bytes(0)), SS_DISABLE);
        let b = alt.to_bytes(0);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 0x10_0000);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 0x4000);
    }
}
