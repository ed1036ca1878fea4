//! Signal generation and delivery: pending and blocked sets per process, interrupting
//! blocked syscalls, building the handler's frame on the way back to user mode, and
//! `rt_sigreturn`. The frame format and mask rules are in [`crx_guest::signal`].
#![deny(unsafe_code)]

use crx_fs::Errno;
use crx_guest::posix::{sig, Exit};
use crx_guest::signal::{
    self, bit, next_deliverable, Action, Disposition, FaultContext, Regs, SigInfo, FPU_SIZE, SA_RESETHAND,
    SA_RESTART, SA_RESTORER, SI_USER, UCONTEXT_SIZE,
};

use super::arch::{TrapFrame, USER_CS, USER_DS};
use super::klog;
use super::proc::{Kernel, MemFault, Pid, State};

/// RFLAGS bits a handler starts without: TF (bit 8) and DF (bit 10).
const HANDLER_CLEARS_RFLAGS: u64 = 0x100 | 0x400;

fn regs_of(f: &TrapFrame) -> Regs {
    Regs {
        r8: f.r8,
        r9: f.r9,
        r10: f.r10,
        r11: f.r11,
        r12: f.r12,
        r13: f.r13,
        r14: f.r14,
        r15: f.r15,
        rdi: f.rdi,
        rsi: f.rsi,
        rbp: f.rbp,
        rbx: f.rbx,
        rdx: f.rdx,
        rax: f.rax,
        rcx: f.rcx,
        rsp: f.rsp,
        rip: f.rip,
        rflags: f.rflags,
        cs: USER_CS,
        ss: USER_DS,
    }
}

fn frame_of(r: &Regs) -> TrapFrame {
    TrapFrame {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rbp: r.rbp,
        rdi: r.rdi,
        rsi: r.rsi,
        rdx: r.rdx,
        rcx: r.rcx,
        rbx: r.rbx,
        rax: r.rax,
        vector: 0x100,
        error: 0,
        rip: r.rip,
        // `enter_user` forces user selectors and sane flags whatever the frame says.
        cs: u64::from(USER_CS),
        rflags: r.rflags,
        rsp: r.rsp,
        ss: u64::from(USER_DS),
    }
}

impl Kernel {
    /// Sends signal `n` from the running process with `si_code` `code`.
    pub fn signal(&mut self, pid: Pid, n: u32) {
        let from = self.current;
        self.signal_code(pid, n, SI_USER, from);
    }

    /// Sends signal `n` from `from` with `si_code` `code`.
    pub fn signal_code(&mut self, pid: Pid, n: u32, code: i32, from: Pid) {
        self.send_signal(pid, SigInfo { signo: n, code, pid: from, status: 0, addr: None });
    }

    /// Generates `info.signo` for the process of thread `pid` (`kill`, `SIGCHLD`, the
    /// node's commands, the interval timers): it goes to a thread of it that does not block
    /// it or waits for it in `rt_sigtimedwait` (the first thread when it can), or waits in
    /// the first live thread when all block it, where any of them may take it with
    /// `rt_sigtimedwait` ([`Kernel::take_waited`]).
    pub fn send_signal(&mut self, pid: Pid, info: SigInfo) {
        let Some(tgid) = self.procs.get(&pid).map(|p| p.tgid) else { return };
        let threads = self.threads_of(tgid);
        let n = info.signo;
        let wants = |t: &Pid| {
            self.procs
                .get(t)
                .is_some_and(|p| p.sigmask & bit(n) == 0 || p.sigwait.is_some_and(|w| w & bit(n) != 0))
        };
        let target = threads.iter().find(|t| wants(t)).or(threads.first()).copied();
        if let Some(t) = target {
            self.send_thread_signal(t, info);
            if let Some(p) = self.procs.get_mut(&t).filter(|p| p.pending & bit(n) != 0) {
                p.group_pending |= bit(n);
            }
        }
    }

    /// `rt_sigtimedwait`'s take for the running thread: the first signal of `set` pending in
    /// it, else one of `set` pending in another of its process's threads that was sent to
    /// the process; it is no longer pending. Returns its `siginfo_t`.
    pub fn take_waited(&mut self, set: u64) -> Option<SigInfo> {
        let me = self.current;
        let p = self.procs.get(&me)?;
        let tgid = p.tgid;
        let (from, n) = match signal::next_to_take(p.pending & set) {
            Some(n) => (me, n),
            None => self
                .procs
                .values()
                .filter(|t| t.tgid == tgid && t.pid != me && t.state.is_live())
                .filter_map(|t| signal::next_to_take(t.pending & t.group_pending & set).map(|n| (t.pid, n)))
                .min_by_key(|&(_, n)| n)?,
        };
        let t = self.procs.get_mut(&from)?;
        t.pending &= !bit(n);
        t.group_pending &= !bit(n);
        let info = t.siginfo.get(n as usize).copied().unwrap_or_default();
        self.took_signal(tgid, n);
        Some(info)
    }

    /// Signal `n` of process `tgid` stopped being pending (delivered, dropped or waited for).
    fn took_signal(&mut self, tgid: Pid, n: u32) {
        if n == sig::SIGALRM {
            self.sigalrm_taken(tgid);
        }
    }

    /// Generates `info.signo` for thread `pid` itself (`tgkill`, `tkill`). SIGKILL, and a
    /// signal that would end the process and is not blocked, end the whole process at
    /// once; an ignored, unblocked signal is dropped; anything else becomes pending in the
    /// thread (one instance per signal number, as for Linux's standard signals) and is
    /// delivered on its next return to user mode.
    pub fn send_thread_signal(&mut self, pid: Pid, info: SigInfo) {
        let n = info.signo;
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if !p.state.is_live() || bit(n) == 0 {
            return;
        }
        if n == sig::SIGKILL {
            self.terminate(pid, Exit::Signal(n));
            return;
        }
        let blocked = p.sigmask & bit(n) != 0;
        let act = p.sigactions.action(n);
        match act.disposition(n) {
            Disposition::Ignore if !blocked => return,
            Disposition::Terminate if !blocked => {
                self.terminate(pid, Exit::Signal(n));
                return;
            }
            _ => {}
        }
        if p.pending & bit(n) == 0 {
            // Sent to this thread unless `send_signal` says otherwise.
            p.group_pending &= !bit(n);
        }
        p.pending |= bit(n);
        if let Some(slot) = p.siginfo.get_mut(n as usize) {
            *slot = info;
        }
    }

    /// Raises the signal of a user fault on `pid` (whose registers are saved). Returns
    /// false when no handler can take it: the caller then ends the process (Linux's
    /// `force_sig`: a blocked or ignored fault signal kills).
    pub fn fault_signal(&mut self, pid: Pid, info: SigInfo, fault: FaultContext) -> bool {
        let n = info.signo;
        let Some(p) = self.procs.get_mut(&pid) else { return false };
        let act = p.sigactions.action(n);
        if !matches!(act.disposition(n), Disposition::Handler(_)) || p.sigmask & bit(n) != 0 {
            return false;
        }
        p.pending |= bit(n);
        p.fault_ctx = fault;
        if let Some(slot) = p.siginfo.get_mut(n as usize) {
            *slot = info;
        }
        true
    }

    /// Ends `pid` with SIGSEGV because its signal frame could not be built or read back.
    fn bad_frame(&mut self, pid: Pid, why: &str) {
        let exe = self.procs.get(&pid).map(|p| p.exe.clone()).unwrap_or_default();
        klog!("pid {pid} ({exe}) killed by signal 11: {why}");
        self.terminate(pid, Exit::Signal(sig::SIGSEGV));
    }

    /// A blocked process with a deliverable signal: its syscall is abandoned (`EINTR`, or
    /// restarted under `SA_RESTART` when Linux restarts it) and the process becomes
    /// runnable so that the handler runs. Pending signals that are ignored are dropped on
    /// the way; one that ends the process ends it. Returns whether `pid` became runnable.
    pub fn interrupt_blocked(&mut self, pid: Pid) -> bool {
        loop {
            let Some(p) = self.procs.get_mut(&pid) else { return false };
            // A `CLONE_VFORK` parent waits for its child whatever comes (its clone is done).
            if p.state != State::Blocked || p.vfork_child.is_some() {
                return false;
            }
            let Some(n) = next_deliverable(p.pending, p.sigmask) else { return false };
            let act = p.sigactions.action(n);
            match act.disposition(n) {
                Disposition::Ignore => {
                    p.pending &= !bit(n);
                    let tgid = p.tgid;
                    self.took_signal(tgid, n);
                }
                Disposition::Terminate => {
                    self.terminate(pid, Exit::Signal(n));
                    return false;
                }
                Disposition::Handler(_) => {
                    let nr = p.frame.rax;
                    let deadline = p.sleep_deadline.take();
                    p.futex = None;
                    p.poll_until = None;
                    p.sigwait = None;
                    p.state = State::Runnable;
                    if act.flags & SA_RESTART != 0 && signal::restartable(nr) {
                        // Back to the SYSCALL instruction (2 bytes) with the number in RAX.
                        p.frame.rip = p.frame.rip.wrapping_sub(2);
                        return true;
                    }
                    p.frame.rax = Errno::EINTR.neg() as u64;
                    // nanosleep reports the time left.
                    let rem = match nr {
                        35 => p.frame.rsi,
                        230 if p.frame.rsi & 1 == 0 => p.frame.r10,
                        _ => 0,
                    };
                    if let (Some(d), true) = (deadline, rem != 0) {
                        let left = d.saturating_sub(self.hv.monotonic_ns());
                        let mut ts = [0u8; 16];
                        ts[..8].copy_from_slice(&(left / 1_000_000_000).to_le_bytes());
                        ts[8..].copy_from_slice(&(left % 1_000_000_000).to_le_bytes());
                        if let Some(mut m) = self.mem(pid) {
                            let _ = m.write(rem, &ts);
                        }
                    }
                    return true;
                }
            }
        }
    }

    /// On the way back to user mode: takes the first deliverable signal of a runnable
    /// `pid` and acts on it (drops it, ends the process, or builds a handler frame).
    /// The interval timers that are due fire first ([`Kernel::check_itimers`]).
    pub fn deliver_signals(&mut self, pid: Pid) {
        self.check_itimers(pid);
        loop {
            let Some(p) = self.procs.get_mut(&pid) else { return };
            if p.state != State::Runnable {
                return;
            }
            let Some(n) = next_deliverable(p.pending, p.sigmask) else {
                // A suspend that ended without a handler frame gets its mask back.
                if let Some(m) = p.saved_mask.take() {
                    p.sigmask = m;
                }
                return;
            };
            p.pending &= !bit(n);
            let act = p.sigactions.action(n);
            let info = p.siginfo.get(n as usize).copied().unwrap_or_default();
            let tgid = p.tgid;
            self.took_signal(tgid, n);
            match act.disposition(n) {
                Disposition::Ignore => continue,
                Disposition::Terminate => {
                    self.terminate(pid, Exit::Signal(n));
                    return;
                }
                Disposition::Handler(h) => {
                    self.run_handler(pid, n, h, info);
                    return;
                }
            }
        }
    }

    fn run_handler(&mut self, pid: Pid, n: u32, handler: u64, info: SigInfo) {
        let fmt = self.fpu_fmt;
        let owns_fpu = self.fpu_owner == Some(pid);
        let Some(p) = self.procs.get_mut(&pid) else { return };
        let act = p.sigactions.action(n);
        if act.flags & SA_RESTORER == 0 || act.restorer == 0 {
            // x86_64 Linux needs a restorer to return through.
            self.bad_frame(pid, "signal handler without SA_RESTORER");
            return;
        }
        if owns_fpu {
            p.fpu.save(&fmt);
        }
        let fpu = p.fpu.legacy();
        let old_mask = p.saved_mask.take().unwrap_or(p.sigmask);
        let fault = core::mem::take(&mut p.fault_ctx);
        let regs = regs_of(&p.frame);
        let alt = p.altstack;
        let at = alt.frame_rsp(regs.rsp, act.flags);
        let frame = match signal::build_on(&regs, at, &alt, &fault, old_mask, &info, act.restorer, &fpu) {
            Ok(f) => f,
            Err(_) => {
                self.bad_frame(pid, "no room for a signal frame");
                return;
            }
        };
        let written = match self.mem(pid) {
            Some(mut m) => m.write(frame.addr, &frame.bytes),
            None => return,
        };
        match written {
            Ok(()) => {}
            Err(MemFault::Oom) => {
                self.oom_kill(pid);
                return;
            }
            Err(MemFault::Bad) => {
                self.bad_frame(pid, "signal frame outside the stack");
                return;
            }
        }
        let Some(p) = self.procs.get_mut(&pid) else { return };
        p.sigmask = act.handler_mask(n, p.sigmask);
        if act.flags & SA_RESETHAND != 0 {
            p.sigactions.set_action(n, Action { handler: 0, ..act });
        }
        let f = &mut p.frame;
        f.rsp = frame.addr;
        f.rip = handler;
        f.rdi = u64::from(n);
        f.rsi = frame.info;
        f.rdx = frame.uc;
        f.rax = 0;
        f.rflags &= !HANDLER_CLEARS_RFLAGS;
    }

    /// `rt_sigreturn`: restores registers, mask and FPU state from the frame whose
    /// `ucontext` is at the top of the stack. A frame that cannot be read ends the process
    /// with SIGSEGV.
    pub fn sigreturn(&mut self, pid: Pid) {
        let Some(p) = self.procs.get(&pid) else { return };
        let uc_addr = p.frame.rsp;
        let mut uc = [0u8; UCONTEXT_SIZE];
        let r = match self.mem(pid) {
            Some(mut m) => m.read(uc_addr, &mut uc),
            None => return,
        };
        if r.is_err() {
            self.bad_frame(pid, "rt_sigreturn with a bad frame");
            return;
        }
        let restored = signal::restore(&uc);
        let mut img = [0u8; FPU_SIZE];
        if restored.fpstate != 0 {
            let r = match self.mem(pid) {
                Some(mut m) => m.read(restored.fpstate, &mut img),
                None => return,
            };
            if r.is_err() {
                self.bad_frame(pid, "rt_sigreturn with a bad FPU state");
                return;
            }
        }
        let fmt = self.fpu_fmt;
        let owns_fpu = self.fpu_owner == Some(pid);
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if restored.fpstate != 0 {
            if owns_fpu {
                p.fpu.save(&fmt);
            }
            let cur = p.fpu.legacy();
            let mxcsr_mask = u32::from_le_bytes([cur[28], cur[29], cur[30], cur[31]]);
            signal::sanitize_fxsave(&mut img, mxcsr_mask);
            p.fpu.set_legacy(&img, &fmt);
        }
        p.frame = frame_of(&restored.regs);
        p.sigmask = restored.mask;
        if owns_fpu && restored.fpstate != 0 {
            // Loaded again from the area by the next switch.
            self.fpu_owner = None;
        }
    }
}
