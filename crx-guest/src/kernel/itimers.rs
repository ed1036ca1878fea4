//! The processes' interval timers at work: when they expire, the signals they send, and
//! the deadline `ITIMER_REAL` adds to the scheduler's sleep. Their rules (reload, what
//! `getitimer` shows) are in [`crx_guest::itimer`]; the syscalls are in `sys::time`.
//!
//! A process's timers live in [`Kernel::itimers`] under its id; an entry whose process has
//! ended is dropped the next time the timers are looked at (process ids are not reused).
//! `ITIMER_REAL` is looked at on every return to user mode while one is armed and when the
//! scheduler is about to sleep, whose deadline includes the earliest expiry; so it fires
//! while its process waits (`pause`, `read`, a sleep) and ends the wait with `EINTR` when
//! SIGALRM has a handler. The CPU-time timers are looked at when their process returns to
//! user mode: after its syscalls, faults and time slices. A process that computes without
//! entering the kernel and has the vCPU to itself (no slice timer runs then) is not
//! interrupted by either until it makes a syscall.
#![deny(unsafe_code)]

use alloc::vec::Vec;

use crx_guest::itimer::ITimers;
use crx_guest::posix::sig;
use crx_guest::signal::{SigInfo, SI_KERNEL};

use super::proc::{Kernel, Pid, State};

impl Kernel {
    /// The timers of the running thread's process (created unset).
    pub fn my_itimers(&mut self) -> &mut ITimers {
        let tgid = self.cur().tgid;
        self.itimers.entry(tgid).or_default()
    }

    /// Forgets the timers of processes that have ended and the entries that hold nothing.
    fn drop_idle_itimers(&mut self) {
        let procs = &self.procs;
        self.itimers.retain(|tgid, t| {
            !t.is_idle() && procs.get(tgid).is_some_and(|p| !matches!(p.state, State::Zombie(_)))
        });
    }

    /// Fires the `ITIMER_REAL` timers due at `now`; returns whether one did.
    fn expire_real_timers(&mut self, now: u64) -> bool {
        self.drop_idle_itimers();
        let due: Vec<Pid> = self
            .itimers
            .iter_mut()
            .filter_map(|(&tgid, t)| t.real.expire_real(now).then_some(tgid))
            .collect();
        for &tgid in &due {
            self.timer_signal(tgid, sig::SIGALRM);
        }
        !due.is_empty()
    }

    /// Sends a timer's signal `n` to process `tgid`; the other CPUs look at what it may
    /// interrupt when this one next leaves the kernel, as after a `kill`.
    fn timer_signal(&mut self, tgid: Pid, n: u32) {
        self.send_signal(tgid, SigInfo { signo: n, code: SI_KERNEL, pid: 0, status: 0, addr: None });
        self.poked = true;
    }

    /// On the way back to user mode in `pid`: fires what is due of every process's
    /// `ITIMER_REAL` and of the CPU-time timers of `pid`'s process. Costs nothing while no
    /// process has a timer armed.
    pub fn check_itimers(&mut self, pid: Pid) {
        if self.itimers.is_empty() {
            return;
        }
        if self.itimers.values().any(|t| t.real.next_ns.is_some()) {
            let now = self.hv.monotonic_ns();
            self.expire_real_timers(now);
        }
        let Some(tgid) = self.procs.get(&pid).map(|p| p.tgid) else { return };
        if !self.itimers.get(&tgid).is_some_and(ITimers::cpu_armed) {
            return;
        }
        let cpu = self.process_cpu_ns(pid);
        let Some(t) = self.itimers.get_mut(&tgid) else { return };
        let (virt, prof) = (t.virt.expire_cpu(cpu), t.prof.expire_cpu(cpu));
        if virt {
            self.timer_signal(tgid, sig::SIGVTALRM);
        }
        if prof {
            self.timer_signal(tgid, sig::SIGPROF);
        }
    }

    /// For the scheduler, before it sleeps: the `ITIMER_REAL` timers that are due fire,
    /// and the earliest expiry of the others is returned, so that the sleep ends in time
    /// for it. When one fired, the deadline is now: the scheduler looks at once at the waits
    /// its SIGALRM may end. `None` while no process has one armed (no clock read).
    pub fn itimer_deadline(&mut self) -> Option<u64> {
        if !self.itimers.values().any(|t| t.real.next_ns.is_some()) {
            return None;
        }
        let now = self.hv.monotonic_ns();
        if self.expire_real_timers(now) {
            return Some(now);
        }
        self.itimers.values().filter_map(|t| t.real.next_ns).min()
    }

    /// A thread of process `tgid` took a SIGALRM (delivered, dropped or waited for): an
    /// `ITIMER_REAL` that fired with an interval is armed again (Linux reloads it then).
    pub fn sigalrm_taken(&mut self, tgid: Pid) {
        if self.itimers.get(&tgid).is_none_or(|t| t.real.fired_ns.is_none()) {
            return;
        }
        let now = self.hv.monotonic_ns();
        if let Some(t) = self.itimers.get_mut(&tgid) {
            t.real.reload_real(now);
        }
    }
}
