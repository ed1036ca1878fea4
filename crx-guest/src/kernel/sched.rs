//! The kernel's entries from user mode and the scheduler.
//!
//! Time-sliced round robin: a process runs until it makes a syscall that blocks, yields,
//! exits or faults, or until its slice ends: when another process is alive (or the pod is
//! managed, whose node commands the scheduler reads), every return to user mode makes sure
//! the hypervisor's one-shot timer (`TIMER_ARM`, crx-abi 5) is armed [`SLICE_NS`] ahead,
//! and its interrupt ([`crx_timer`]) saves the process and switches to the next one. The
//! kernel itself is never preempted (it runs with IF = 0). On a hypervisor without the
//! timer (`NoSys`) processes run until they block, as before. A blocked syscall is retried
//! each time the scheduler passes by (its arguments are still in the saved registers);
//! when every process is blocked and some wait for time, the vCPU sleeps until the
//! earliest deadline (`SLEEP_UNTIL`), without the kernel lock.
//!
//! With several CPUs ([`super::smp`]) each one runs this same loop under the kernel lock:
//! it skips the threads another CPU runs, and when it leaves work behind (a runnable thread
//! no CPU runs, or a syscall that may have ended someone's wait) it wakes the idle ones.

#![deny(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use super::arch::Guard;
use super::smp;

use crx_abi::Error;
use crx_guest::podabi::Command;
use crx_guest::posix::{sig, Exit};
use crx_guest::signal::{FaultContext, SigInfo, SEGV_ACCERR, SEGV_MAPERR};

use super::arch::{self, TrapFrame};
use super::klog;
use super::proc::{Kernel, MemFault, Pid, State, KERNEL};

/// How many scheduler passes a managed pod makes between two reads of the node's commands
/// while its processes keep running (it also reads them before every sleep).
const CONTROL_EVERY_PICKS: u32 = 32;

/// A process's time slice: 10 ms, the hypervisor's own slice. A shell or a sleeper beside
/// a busy process gets its turn within one slice, and a shorter one would only add timer
/// exits (each slice costs two hypercalls and an interrupt).
pub const SLICE_NS: u64 = 10_000_000;

/// The hypervisor takes `TIMER_ARM`; cleared for good when it refuses it. (Whether each
/// CPU's timer is armed is [`smp::slice_armed`]: a return to user mode need not arm it
/// again; cleared by the interrupt in whatever mode it arrives.)
static SLICE_TIMER: AtomicBool = AtomicBool::new(true);

impl Kernel {
    /// Carries out the node's pending commands (`POD_CONTROL`); true if there was any.
    pub fn take_commands(&mut self) -> bool {
        self.picks_since_control = 0;
        let mut any = false;
        // Bounded: a hypervisor that never runs dry cannot keep the guest here.
        for _ in 0..64 {
            let raw = match self.hv.pod_control() {
                Ok(0) | Err(_) => break,
                Ok(raw) => raw,
            };
            any = true;
            match Command::from_raw(raw) {
                Some(Command::Start { container }) => self.start_on_command(u32::from(container)),
                Some(Command::Signal { container, signal }) => {
                    let pids: Vec<Pid> = self
                        .procs
                        .values()
                        .filter(|p| {
                            p.container == u32::from(container)
                                && p.pid == p.tgid
                                && !matches!(p.state, State::Zombie(_))
                        })
                        .map(|p| p.pid)
                        .collect();
                    for pid in pids {
                        self.signal(pid, u32::from(signal));
                    }
                }
                None => klog!("node command {raw:#x} not understood; ignored"),
            }
        }
        any
    }

    /// Starts container `i` (again) unless its processes still run.
    fn start_on_command(&mut self, i: u32) {
        let Some(c) = self.containers.get_mut(i as usize) else {
            return klog!("node asked to start container {i}, which the pod does not have");
        };
        if c.root.is_some() && c.exit.is_none() {
            return;
        }
        c.exit = None;
        c.root = None;
        c.oom_killed = false;
        super::pod::start_container_at(self, i);
    }

    /// Picks the next process to run, retrying blocked syscalls; ends the VM when every
    /// container has ended. [`Next::Idle`] when nothing can run on this CPU now.
    pub fn pick_next(&mut self) -> Next {
        loop {
            if self.managed {
                self.picks_since_control += 1;
                if self.picks_since_control >= CONTROL_EVERY_PICKS {
                    self.take_commands();
                }
            }
            if !self.managed && self.all_ended() {
                let code = self.containers.first().and_then(|c| c.exit).unwrap_or(0);
                self.hv.exit(code);
            }
            let pids: Vec<Pid> = self
                .procs
                .range(self.current + 1..)
                .chain(self.procs.range(..=self.current))
                .map(|(&p, _)| p)
                .collect();
            for pid in pids {
                if self.running_elsewhere(pid).is_some() {
                    continue;
                }
                match self.procs.get(&pid).map(|p| p.state) {
                    Some(State::Runnable) => {
                        self.current = pid;
                        return Next::Run(pid);
                    }
                    Some(State::Blocked) => {
                        if self.retry(pid) {
                            return Next::Run(pid);
                        }
                        // Still waiting: a deliverable signal interrupts the wait.
                        if self.interrupt_blocked(pid) {
                            return Next::Run(pid);
                        }
                    }
                    _ => {}
                }
            }
            // The interval timers' earliest expiry too (those due fire here: then now).
            let itimer = self.itimer_deadline();
            let deadline = self
                .procs
                .values()
                .filter(|p| p.state == State::Blocked)
                .filter_map(|p| p.sleep_deadline)
                .chain(itimer)
                .min();
            if self.managed {
                // The node may have a command (a start, a signal) for what waits here; a
                // command wakes the vCPU early, so sleeping "for ever" is only until then.
                if self.take_commands() {
                    continue;
                }
                let live = self.procs.values().any(|p| p.state.is_live());
                let until = if live { deadline.unwrap_or(u64::MAX) } else { u64::MAX };
                return Next::Idle(until);
            }
            match deadline {
                Some(d) => return Next::Idle(d),
                None => {
                    let live: Vec<Pid> =
                        self.procs.values().filter(|p| p.state.is_live()).map(|p| p.pid).collect();
                    if live.is_empty() {
                        // Containers whose processes all vanished without a first process.
                        for i in 0..self.containers.len() {
                            if self.containers[i].exit.is_none() {
                                self.end_container(i as u32, Exit::Code(1));
                            }
                        }
                        continue;
                    }
                    if self.others_running() {
                        // Another CPU runs a thread that may end these waits.
                        return Next::Idle(u64::MAX);
                    }
                    klog!("deadlock: every process is blocked for good; killing them");
                    for pid in live {
                        self.terminate(pid, Exit::Signal(sig::SIGKILL));
                    }
                }
            }
        }
    }

    /// Returns to user mode in `pid`, or in whoever runs next if it ends: delivers its
    /// pending signals first, then switches to it. `Err(deadline)` when nothing can run:
    /// the CPU idles until then.
    pub fn resume(&mut self, mut pid: Pid) -> Result<TrapFrame, u64> {
        loop {
            self.current = pid;
            self.deliver_signals(pid);
            if self.procs.get(&pid).is_some_and(|p| p.state == State::Runnable) {
                return Ok(self.switch_to(pid));
            }
            match self.pick_next() {
                Next::Run(p) => pid = p,
                Next::Idle(until) => return Err(until),
            }
        }
    }

    /// Retries the blocked syscall of `pid` (as its thread); whether it completed.
    fn retry(&mut self, pid: Pid) -> bool {
        self.current = pid;
        super::sys::run_syscall(self, pid);
        self.procs.get(&pid).is_some_and(|p| p.state == State::Runnable)
    }

    /// Before this CPU sleeps without the lock: its thread's CPU time stops, and with
    /// several CPUs its FPU state is saved (another CPU may run the thread next) and it
    /// moves off process tables (which may then be freed while it sleeps). Returns until
    /// when it sleeps: `until`, the earliest deadline of the waiting threads, when it keeps
    /// the time for the idle CPUs (the first to sleep, or one whose deadline is earlier
    /// than the keeper's), else until a kick, so that a deadline wakes one CPU, not all.
    fn go_idle(&mut self, until: u64) -> u64 {
        let now = self.hv.monotonic_ns();
        self.charge_cpu(now, None);
        if smp::is_smp() {
            if let Some(owner) = self.fpu_owner.take() {
                if let Some(p) = self.procs.get_mut(&owner) {
                    p.fpu.save(&self.fpu_fmt);
                }
            }
            super::phys::leave_to_kernel_tables();
        }
        self.current = 0;
        self.leave_cpu(None);
        smp::set_idle(true);
        let keeps = match self.timekeeper {
            None => true,
            Some((cpu, at)) => cpu == self.me || until < at,
        };
        if !keeps || until == u64::MAX {
            return u64::MAX;
        }
        self.timekeeper = Some((self.me, until));
        until
    }

    /// Before this CPU returns to user mode in `running`: idle CPUs are woken when there is
    /// work for them (a runnable thread no CPU runs, or this entry may have ended someone's
    /// wait), and a CPU whose thread now has a signal pending is interrupted so that it
    /// takes it soon.
    fn wake_others(&mut self, running: Pid) {
        let poked = core::mem::take(&mut self.poked);
        if self.cpus.len() < 2 {
            return;
        }
        // Another CPU's pending signal interrupts it.
        if poked {
            for i in 0..self.cpus.len() {
                let Some(t) = self.cpus[i].current.filter(|_| i != self.me) else { continue };
                if self.procs.get(&t).is_some_and(|p| p.pending & !p.sigmask != 0) {
                    smp::nudge(i);
                }
            }
        }
        let idle = smp::idle_others();
        if idle == 0 {
            return;
        }
        let free =
            |k: &Kernel, p: &super::proc::Process| p.pid != running && k.running_elsewhere(p.pid).is_none();
        let mut work = self.procs.values().any(|p| p.state == State::Runnable && free(self, p));
        if !work && poked {
            // This entry may have ended a wait: retry the waiting syscalls here, and wake
            // an idle CPU only for one that completes (not for every syscall).
            let blocked: Vec<Pid> = self
                .procs
                .values()
                .filter(|p| p.state == State::Blocked && free(self, p))
                .map(|p| p.pid)
                .collect();
            work = blocked.into_iter().any(|pid| self.retry(pid));
            self.current = running;
        }
        if work {
            // One at a time: the next return to user mode wakes another if work is left.
            smp::wake_one(idle);
        }
    }

    /// Before returning to user mode in `pid`: arms the slice timer, unless it is armed
    /// already or nothing else could run (no other live process, and a pod that is not
    /// managed). Costs two hypercalls once per slice, none on other returns.
    fn arm_slice(&mut self, pid: Pid, now: Option<u64>) {
        if smp::slice_armed() || !SLICE_TIMER.load(Ordering::Relaxed) {
            return;
        }
        // A managed pod's scheduler reads the node's commands every so many passes, which a
        // lone busy process would otherwise hold off for good; and an interval timer
        // (`setitimer`, `alarm`) fires on the scheduler's passes, so a process that computes
        // without syscalls still gets its signal within a slice.
        let others = self.managed
            || !self.itimers.is_empty()
            || self.procs.values().any(|p| p.pid != pid && p.state.is_live());
        if !others {
            return;
        }
        let deadline = now.unwrap_or_else(|| self.hv.monotonic_ns()).saturating_add(SLICE_NS);
        match self.hv.timer_arm(deadline, arch::TIMER_VECTOR) {
            Ok(_) => smp::set_slice_armed(true),
            Err(e) => {
                SLICE_TIMER.store(false, Ordering::Relaxed);
                if e != Error::NoSys {
                    klog!("the hypervisor refuses the slice timer ({e:?}): processes run until they block");
                }
            }
        }
    }

    /// Switches the CPU to `pid` (address space, TLS, FPU) and returns its registers.
    pub fn switch_to(&mut self, pid: Pid) -> TrapFrame {
        // One clock read serves the CPU accounting of a switch and the slice it arms.
        let mut now = None;
        if self.on_cpu.map(|(p, _)| p) != Some(pid) {
            let t = self.hv.monotonic_ns();
            self.charge_cpu(t, Some(pid));
            now = Some(t);
        }
        self.arm_slice(pid, now);
        if self.fpu_owner != Some(pid) {
            if let Some(owner) = self.fpu_owner.and_then(|o| self.procs.get_mut(&o)) {
                owner.fpu.save(&self.fpu_fmt);
            }
            if let Some(p) = self.procs.get_mut(&pid) {
                p.fpu.load(&self.fpu_fmt);
            }
            self.fpu_owner = Some(pid);
        }
        let p = self.procs.get(&pid).expect("picked process exists");
        if !self.entered_user {
            // Every way to user mode comes through here: the first is the container's
            // first instruction, which the hypervisor times.
            self.entered_user = true;
            if self.pod_log {
                let _ = self.hv.container_entry(p.container);
            }
        }
        if let Some(a) = p.mm.as_ref().map(|m| m.borrow().aspace.pml4) {
            // `AddrSpace::new` copies the kernel half of the kernel's PML4 and the image page
            // tables into every address space, and a process's tables are freed only by
            // `AddrSpace::destroy`, which moves off them first when they are loaded.
            super::phys::switch_address_space(a);
        }
        arch::set_fs_base(p.fs_base);
        p.frame
    }
}

/// What the scheduler found for this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run this thread.
    Run(Pid),
    /// Nothing to run: sleep until this monotonic time (or a kick).
    Idle(u64),
}

/// The kernel lock as the entries hold it.
type KernelGuard = Guard<'static, Option<Kernel>>;

/// Takes the kernel lock for an entry on this CPU and makes this CPU's part of the state
/// the kernel's ([`Kernel::enter_cpu`]).
fn enter() -> KernelGuard {
    let mut g = KERNEL.lock();
    match g.as_mut() {
        Some(k) => k.enter_cpu(),
        None => no_kernel(),
    }
    g
}

fn no_kernel() -> ! {
    super::hv().console(b"crx: KERNEL FAULT: an entry before the kernel was ready\n");
    super::hv().exit(super::KERNEL_FAULT_EXIT)
}

/// Runs `next` on this CPU, or whatever runs after it: returns to user mode without the
/// lock, or sleeps without it until there may be work and looks again.
fn dispatch(mut g: KernelGuard, mut next: Next) -> ! {
    loop {
        let Some(k) = g.as_mut() else { no_kernel() };
        let r = match next {
            Next::Run(pid) => k.resume(pid),
            Next::Idle(until) => Err(until),
        };
        match r {
            Ok(frame) => {
                let pid = k.current;
                k.wake_others(pid);
                k.leave_cpu(Some(pid));
                smp::entering_user(smp::loaded_here());
                drop(g);
                arch::enter_user(&frame)
            }
            Err(until) => {
                let hv = k.hv;
                let until = k.go_idle(until);
                drop(g);
                hv.sleep_until(until);
                g = enter();
                smp::set_idle(false);
                let Some(k) = g.as_mut() else { no_kernel() };
                let kept_time = k.timekeeper.is_some_and(|(c, _)| c == k.me);
                if kept_time {
                    k.timekeeper = None;
                }
                if k.managed {
                    k.take_commands();
                }
                next = k.pick_next();
                if kept_time && matches!(next, Next::Run(_)) {
                    // Busy now: another idle CPU looks at the deadlines instead.
                    smp::wake_one(smp::idle_others());
                }
            }
        }
    }
}

/// A CPU other than the first, set up: joins the scheduler.
pub fn run_cpu() -> ! {
    let mut g = enter();
    let next = match g.as_mut() {
        Some(k) => k.pick_next(),
        None => no_kernel(),
    };
    dispatch(g, next)
}

/// The first CPU, once the pod's first processes exist: makes `k` the kernel, releases
/// the other CPUs (they wait for the lock until this one returns to user mode) and runs
/// the pod until every container has ended (then the VM exits).
pub fn start(k: Kernel) -> ! {
    let (vcpus, cr3) = (k.vcpus, k.kt.pml4);
    let mut g = KERNEL.lock();
    *g = Some(k);
    smp::bring_up(vcpus, cr3);
    let next = match g.as_mut() {
        Some(k) => {
            k.enter_cpu();
            k.pick_next()
        }
        None => no_kernel(),
    };
    dispatch(g, next)
}

/// Exception entry from the stubs.
// `no_mangle` (which `unsafe_code` flags): the entry stubs in `arch` call this symbol, and
// no other item has its name.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn crx_trap(tf: &mut TrapFrame) -> ! {
    if !tf.is_user() {
        super::kernel_fault(exception_name(tf.vector), tf);
    }
    smp::left_user();
    let mut g = enter();
    let next = {
        let Some(k) = g.as_mut() else { no_kernel() };
        let pid = k.current;
        match k.procs.get_mut(&pid) {
            Some(p) if p.state.is_live() => {
                p.frame = *tf;
                fault(k, pid, tf)
            }
            // Its thread was ended by another CPU meanwhile.
            _ => k.pick_next(),
        }
    };
    dispatch(g, next)
}

/// A user exception in `pid` (registers saved): a page fault filled in, or a signal.
fn fault(k: &mut Kernel, pid: Pid, tf: &TrapFrame) -> Next {
    let signal = match tf.vector {
        0 | 16 | 19 => sig::SIGFPE,
        6 => sig::SIGILL,
        3 | 1 => sig::SIGTRAP,
        17 => sig::SIGBUS,
        _ => sig::SIGSEGV,
    };
    let mut addr = None;
    let mut outcome = Err(MemFault::Bad);
    if tf.vector == 14 {
        // A page fault on a reserved but untouched page is filled in (demand paging).
        let a = arch::cr2();
        addr = Some(a);
        if let Some(mut m) = k.mem(pid) {
            if tf.error & 1 == 0 {
                outcome = m.fault_in(a, tf.error & 2 != 0).map(|_| ());
            } else if tf.error & 2 != 0 {
                // A write to a present read-only page: copy-on-write where allowed.
                outcome = m.write_fault(a);
            }
        }
    }
    match outcome {
        Ok(()) => Next::Run(pid),
        Err(MemFault::Oom) => {
            k.oom_kill(pid);
            k.pick_next()
        }
        Err(MemFault::Bad) => {
            let (code, si_addr) = match (signal, addr) {
                (_, Some(a)) if tf.error & 1 != 0 => (SEGV_ACCERR, a),
                (_, Some(a)) => (SEGV_MAPERR, a),
                // General protection and the like: SI_KERNEL, no address.
                (sig::SIGSEGV, None) => (0x80, 0),
                // FPE_INTDIV, ILL_ILLOPN, TRAP_BRKPT, BUS_ADRALN: at the instruction.
                (_, None) => (if signal == sig::SIGILL { 2 } else { 1 }, tf.rip),
            };
            let info = SigInfo { signo: signal, code, pid: 0, status: 0, addr: Some(si_addr) };
            let fault = FaultContext { err: tf.error, trapno: tf.vector, cr2: addr.unwrap_or(0) };
            if k.fault_signal(pid, info, fault) {
                Next::Run(pid)
            } else {
                report_fault(k, pid, signal, tf, addr);
                k.terminate(pid, Exit::Signal(signal));
                k.pick_next()
            }
        }
    }
}

fn report_fault(k: &Kernel, pid: Pid, signal: u32, tf: &TrapFrame, addr: Option<u64>) {
    let exe = k.procs.get(&pid).map(|p| p.exe.as_str()).unwrap_or("?");
    match addr {
        Some(a) => klog!(
            "pid {pid} ({exe}) killed by signal {signal}: {} at rip {:#x}, address {a:#x}",
            exception_name(tf.vector),
            tf.rip
        ),
        None => klog!(
            "pid {pid} ({exe}) killed by signal {signal}: {} at rip {:#x}",
            exception_name(tf.vector),
            tf.rip
        ),
    }
}

fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "divide error",
        1 => "debug",
        3 => "breakpoint",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        13 => "general protection",
        12 => "stack fault",
        14 => "page fault",
        16 => "x87 error",
        17 => "alignment check",
        19 => "SIMD error",
        _ => "exception",
    }
}

/// Slice-timer entry from the stub: the running process's slice is over (or another CPU
/// kicked this one); save it and run the next one, round robin (a blocked syscall is
/// retried on the way, as after a syscall). An interrupt that finds the kernel running (it
/// runs with IF = 0, so only a bug gets here) is ignored: this returns and the stub resumes
/// the interrupted code.
// `no_mangle` (which `unsafe_code` flags): the timer stub in `arch` calls this symbol, and
// no other item has its name.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn crx_timer(tf: &mut TrapFrame) {
    // Delivered: the hypervisor has disarmed it, so the next return to user mode arms again.
    smp::set_slice_armed(false);
    if !tf.is_user() {
        return;
    }
    smp::left_user();
    let mut g = enter();
    let next = {
        let Some(k) = g.as_mut() else { no_kernel() };
        let pid = k.current;
        if let Some(p) = k.procs.get_mut(&pid).filter(|p| p.state.is_live()) {
            p.frame = *tf;
        }
        k.pick_next()
    };
    dispatch(g, next)
}

/// Syscall entry from the stub.
// `no_mangle` (which `unsafe_code` flags): the entry stubs in `arch` call this symbol, and
// no other item has its name.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn crx_syscall(tf: &mut TrapFrame) -> ! {
    smp::left_user();
    let mut g = enter();
    let next = {
        let Some(k) = g.as_mut() else { no_kernel() };
        let pid = k.current;
        match k.procs.get_mut(&pid) {
            Some(p) if p.state.is_live() => {
                p.frame = *tf;
                k.yield_requested = false;
                super::sys::run_syscall(k, pid);
                if may_end_waits(tf) {
                    k.poked = true;
                }
                let runnable = k.procs.get(&pid).is_some_and(|p| p.state == State::Runnable);
                if runnable && !k.yield_requested {
                    Next::Run(pid)
                } else {
                    k.pick_next()
                }
            }
            // Its thread was ended by another CPU meanwhile.
            _ => k.pick_next(),
        }
    };
    dispatch(g, next)
}

/// Whether the syscall in `tf` may have ended another thread's wait (so idle CPUs should
/// look): all but the common calls that only read the caller's own state or the clock,
/// change its own memory map, or wait.
fn may_end_waits(tf: &TrapFrame) -> bool {
    const FUTEX: u64 = 202;
    const FUTEX_CMD: u64 = 0x7f;
    match tf.rax {
        // mmap, mprotect, brk, rt_sigprocmask, madvise, getpid, getuid, getgid, geteuid,
        // getegid, getppid, gettid, sched_getaffinity, clock_gettime, gettimeofday,
        // getrandom; and the ones that wait: poll, sched_yield, nanosleep, epoll_wait,
        // clock_nanosleep, ppoll, epoll_pwait, epoll_pwait2.
        9 | 10 | 12 | 14 | 28 | 39 | 102 | 104 | 107 | 108 | 110 | 186 | 204 | 228 | 96 | 318 | 7 | 24
        | 35 | 232 | 230 | 271 | 281 | 441 => false,
        // FUTEX_WAIT and FUTEX_WAIT_BITSET only wait.
        FUTEX => !matches!(tf.rsi & FUTEX_CMD, 0 | 9),
        _ => true,
    }
}
