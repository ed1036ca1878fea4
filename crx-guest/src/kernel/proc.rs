//! Processes and their memory: the process table ([`Kernel`]), each process's state, and
//! checked copies to and from a process's memory ([`UserMem`]).
//!
//! Every process has its own address space, descriptor table and saved user registers. The
//! kernel entries and the scheduler that runs these processes are in [`super::sched`].

#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Ref, RefCell, RefMut};
use core::ops::DerefMut;

use crx_fs::{Errno, Fs, Ino};
use crx_guest::elf::PAGE;
use crx_guest::frames::FramePool;
use crx_guest::pagecache::PageCache;
use crx_guest::posix::{sig, Exit};
use crx_guest::signal::{Action, AltStack, FaultContext, SigInfo, CLD_EXITED, CLD_KILLED};
use crx_guest::vma::{Regions, PROT_EXEC, PROT_WRITE};

use super::arch::{BigLock, FpuArea, FpuFormat, TrapFrame};
use super::fd::{FdEntry, FdTable};
use super::hv::Hv;
use super::klog;
use super::mm::{AddrSpace, KernelTables, NX, P, W};
use super::pager;
use super::phys;
use super::smp;

/// Process id.
pub type Pid = u32;

/// The top of every process's stack.
pub const STACK_TOP: u64 = 0x7fff_ffff_0000;
/// Reserved stack size.
pub const STACK_SIZE: u64 = 8 << 20;
/// Highest address `mmap` chooses.
pub const MMAP_TOP: u64 = STACK_TOP - STACK_SIZE - (1 << 30);

/// Where a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Ready to run.
    Runnable,
    /// Its syscall is retried until it completes.
    Blocked,
    /// Ended; waiting to be reaped.
    Zombie(Exit),
    /// A first thread that has ended while other threads of its process run: it stays
    /// as the process's id until the last one ends.
    Exited(Exit),
}

impl State {
    /// Whether the thread still runs or waits (it has not ended).
    pub fn is_live(&self) -> bool {
        matches!(self, State::Runnable | State::Blocked)
    }
}

/// State that several threads (or a `CLONE_VM` child) may hold together: one table,
/// reference counted, borrowed for the length of one kernel operation (the kernel runs one
/// entry at a time, so a borrow never meets another).
pub struct Shared<T>(Rc<RefCell<T>>);

impl<T> Shared<T> {
    /// A table of its own.
    pub fn new(v: T) -> Shared<T> {
        Shared(Rc::new(RefCell::new(v)))
    }

    /// Another holder of the same table (`CLONE_VM`, `CLONE_FILES`, `CLONE_SIGHAND`).
    pub fn share(&self) -> Shared<T> {
        Shared(Rc::clone(&self.0))
    }

    /// Reads it.
    pub fn borrow(&self) -> Ref<'_, T> {
        self.0.borrow()
    }

    /// Changes it.
    pub fn borrow_mut(&self) -> RefMut<'_, T> {
        self.0.borrow_mut()
    }

    /// The table, when this was its last holder.
    pub fn into_sole(self) -> Option<T> {
        Rc::try_unwrap(self.0).ok().map(RefCell::into_inner)
    }

    /// An id of the table, the same for all its holders (futex keys).
    pub fn id(&self) -> u64 {
        Rc::as_ptr(&self.0) as usize as u64
    }
}

impl<T: Clone> Shared<T> {
    /// A copy of its own (what `fork` gives the child).
    pub fn duplicate(&self) -> Shared<T> {
        Shared::new(self.0.borrow().clone())
    }
}

impl Shared<FdTable> {
    /// The entry of `fd`.
    pub fn get(&self, fd: u64) -> Result<FdEntry, Errno> {
        self.borrow().get(fd).cloned()
    }

    /// The description of `fd`.
    pub fn desc(&self, fd: u64) -> Result<super::fd::Desc, Errno> {
        self.borrow().desc(fd)
    }

    /// Sets `FD_CLOEXEC` of `fd`.
    pub fn set_cloexec(&self, fd: u64, on: bool) -> Result<(), Errno> {
        self.borrow_mut().set_cloexec(fd, on)
    }

    /// Installs `entry` at the lowest free slot >= `min`.
    pub fn install(&self, entry: FdEntry, min: usize) -> Result<u64, Errno> {
        self.borrow_mut().install(entry, min)
    }

    /// Puts `entry` at `fd`, returning what was there.
    pub fn replace(&self, fd: u64, entry: FdEntry) -> Result<Option<FdEntry>, Errno> {
        self.borrow_mut().replace(fd, entry)
    }

    /// Removes `fd`.
    pub fn take(&self, fd: u64) -> Result<FdEntry, Errno> {
        self.borrow_mut().take(fd)
    }

    /// Removes every close-on-exec descriptor.
    pub fn take_cloexec(&self) -> Vec<FdEntry> {
        self.borrow_mut().take_cloexec()
    }
}

/// Signal dispositions by number, shared under `CLONE_SIGHAND`.
pub type SigActions = Shared<[Action; 65]>;

impl SigActions {
    /// The action of signal `n` (the default for a number out of range).
    pub fn action(&self, n: u32) -> Action {
        self.borrow().get(n as usize).copied().unwrap_or_default()
    }

    /// Sets the action of signal `n`.
    pub fn set_action(&self, n: u32, a: Action) {
        if let Some(slot) = self.borrow_mut().get_mut(n as usize) {
            *slot = a;
        }
    }
}

/// An address space with what describes it: shared by the threads of a process (and a
/// `CLONE_VM` child), destroyed when its last holder goes.
pub struct Mm {
    /// The page tables.
    pub aspace: AddrSpace,
    /// User regions.
    pub regions: Regions,
    /// Start of the heap.
    pub brk_start: u64,
    /// Current end of the heap.
    pub brk: u64,
}

/// A futex wait in progress (`FUTEX_WAIT*`), retried by the scheduler until it is woken,
/// times out (the thread's `sleep_deadline`) or is interrupted by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutexWait {
    /// The word waited on.
    pub key: FutexKey,
    /// `FUTEX_WAIT_BITSET`'s bits (all for `FUTEX_WAIT`).
    pub bitset: u32,
    /// Order of arrival (wakes go first come, first served).
    pub seq: u64,
    /// Set by a wake: the wait returns 0.
    pub woken: bool,
}

/// What identifies a futex word: a private one by its address space and virtual address,
/// a shared one by the guest-physical address of the word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FutexKey {
    /// `FUTEX_PRIVATE_FLAG`: (address-space id, address).
    Private(u64, u64),
    /// Shared: physical address.
    Shared(u64),
}

/// One thread (a process is the thread group of its first thread, whose id it carries).
pub struct Process {
    /// Its id (the thread id; the process id for the first thread of a process).
    pub pid: Pid,
    /// The id of its process: the first thread's id (`getpid`).
    pub tgid: Pid,
    /// Its parent process's id.
    pub ppid: Pid,
    /// The container it belongs to.
    pub container: u32,
    /// Where it is.
    pub state: State,
    /// Saved user registers.
    pub frame: TrapFrame,
    /// Saved FPU/SSE state.
    pub fpu: FpuArea,
    /// FS base (TLS).
    pub fs_base: u64,
    /// Address space (None once ended).
    pub mm: Option<Shared<Mm>>,
    /// Descriptors.
    pub fds: Shared<FdTable>,
    /// Working directory.
    pub cwd: Ino,
    /// File-creation mask.
    pub umask: u32,
    /// Signal dispositions as set by `rt_sigaction`, by signal number.
    pub sigactions: SigActions,
    /// Blocked-signal mask.
    pub sigmask: u64,
    /// Pending signals (bit N-1 for signal N).
    pub pending: u64,
    /// Which of `pending` were sent to the process rather than to this thread: another of
    /// its threads may take them with `rt_sigtimedwait`.
    pub group_pending: u64,
    /// The signals an `rt_sigtimedwait` in progress waits for.
    pub sigwait: Option<u64>,
    /// The `siginfo_t` of each pending signal.
    pub siginfo: Box<[SigInfo; 65]>,
    /// The mask to restore after `rt_sigsuspend` (set while it waits).
    pub saved_mask: Option<u64>,
    /// The fault behind a pending fault signal (for the handler's `sigcontext`).
    pub fault_ctx: FaultContext,
    /// A sleep's absolute deadline (monotonic ns) while blocked in it.
    pub sleep_deadline: Option<u64>,
    /// The executable's path (for `/proc/self/exe`-like answers and logs).
    pub exe: String,
    /// `set_tid_address` value.
    pub clear_child_tid: u64,
    /// `set_robust_list` head (0: none).
    pub robust_list: u64,
    /// The futex wait in progress.
    pub futex: Option<FutexWait>,
    /// A `poll`/`select`/`epoll_wait` in progress, with its deadline (`u64::MAX`: none).
    pub poll_until: Option<u64>,
    /// `sigaltstack`.
    pub altstack: AltStack,
    /// CPU time this thread has had (ns, up to its last switch off the vCPU).
    pub cpu_ns: u64,
    /// On a process's first thread: the CPU time of its threads that have ended.
    pub dead_threads_ns: u64,
    /// On a process's first thread: the CPU time of its children that were waited for.
    pub children_ns: u64,
    /// A `CLONE_VFORK` child the thread waits for (until it execs or ends).
    pub vfork_child: Option<Pid>,
    /// Whether a `CLONE_VFORK` parent waits for this process.
    pub in_vfork: bool,
}

// Processes live by value in the `BTreeMap`, whose node splits move up to 11 of them through
// the kernel stack: large per-process tables stay boxed.
const _: () = assert!(core::mem::size_of::<Process>() <= 2048);

/// A container's progress.
pub struct Container {
    /// Its name.
    pub name: String,
    /// Its first process.
    pub root: Option<Pid>,
    /// Its exit code once ended.
    pub exit: Option<i32>,
    /// Whether the out-of-memory killer ended one of its processes (this run).
    pub oom_killed: bool,
}

/// The whole kernel state.
pub struct Kernel {
    /// Hypercalls.
    pub hv: Hv,
    /// Frame pool (memory budget).
    pub pool: FramePool,
    /// The pages of mapped files, shared by the pod's processes.
    pub cache: PageCache,
    /// Kernel page tables.
    pub kt: KernelTables,
    /// FPU save format.
    pub fpu_fmt: FpuFormat,
    /// Initial FPU state.
    pub fpu_template: FpuArea,
    /// Whose state the FPU holds.
    pub fpu_owner: Option<Pid>,
    /// Every process.
    pub procs: BTreeMap<Pid, Process>,
    /// The running process.
    pub current: Pid,
    /// The next pid.
    pub next_pid: Pid,
    /// The filesystem.
    pub fs: Fs,
    /// The containers.
    pub containers: Vec<Container>,
    /// The pod's name.
    pub pod_name: String,
    /// Most processes at once.
    pub process_limit: usize,
    /// Unknown syscalls already logged.
    pub unknown_logged: BTreeSet<u64>,
    /// `AT_HWCAP`.
    pub hwcap: u64,
    /// Whether the hypervisor takes container logs (`LOG_WRITE`).
    pub pod_log: bool,
    /// Set by `sched_yield`: run someone else next.
    pub yield_requested: bool,
    /// Log every syscall (`crx.trace` on the command line).
    pub trace: bool,
    /// A managed pod: containers start on the node's commands (`POD_CONTROL`), may start
    /// again, and the VM stays up when all have ended.
    pub managed: bool,
    /// The containers' specs, for (re)starts on command.
    pub specs: Vec<crx_guest::podabi::ContainerSpec>,
    /// Why the image's layers could not be applied, if they could not.
    pub layers_error: Option<String>,
    /// Scheduler passes since the node's commands were last read.
    pub picks_since_control: u32,
    /// The next futex waiter's arrival number.
    pub next_futex_seq: u64,
    /// The vCPUs the kernel runs on.
    pub vcpus: usize,
    /// The thread whose CPU time runs now on this CPU, and since when (monotonic ns).
    pub on_cpu: Option<(Pid, u64)>,
    /// The CPU that holds the kernel lock now.
    pub me: usize,
    /// What each CPU keeps while another holds the lock; the holder's own is in
    /// `current`, `fpu_owner` and `on_cpu` ([`Kernel::enter_cpu`], [`Kernel::leave_cpu`]).
    pub cpus: Vec<CpuSlot>,
    /// Set by what may end another thread's wait (most syscalls): idle CPUs are woken to
    /// look when this CPU leaves the kernel.
    pub poked: bool,
    /// The idle CPU that sleeps until the waiting threads' earliest deadline, and that
    /// deadline (the other idle CPUs sleep until kicked).
    pub timekeeper: Option<(usize, u64)>,
    /// The sockets of the pod's loopback network by the port they hold (bound,
    /// listening or connected from); a closed socket lets its port go.
    pub ports: BTreeMap<u16, alloc::rc::Weak<RefCell<super::fd::Description>>>,
    /// Where the search for an ephemeral port starts.
    pub next_port: u16,
    /// Whether a process has been switched to for user mode yet (the first switch tells
    /// the hypervisor, `CONTAINER_ENTRY`).
    pub entered_user: bool,
    /// The interval timers of the processes that set one, by process id
    /// ([`super::itimers`]).
    pub itimers: BTreeMap<Pid, crx_guest::itimer::ITimers>,
}

/// The kernel, taken by each entry and released before returning to user mode or going
/// idle (a kernel fault reports and ends the VM without touching it).
pub static KERNEL: BigLock<Option<Kernel>> = BigLock::new(None);

/// A CPU's part of the kernel's state while another CPU holds the lock.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSlot {
    /// The thread it runs (in user mode, or in the kernel waiting for the lock), if any.
    pub current: Option<Pid>,
    /// Whose state its FPU holds.
    pub fpu_owner: Option<Pid>,
    /// The thread whose CPU time runs there, and since when.
    pub on_cpu: Option<(Pid, u64)>,
}

/// Why a user access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemFault {
    /// Not mapped or not allowed: `EFAULT` in a syscall, SIGSEGV on a fault.
    Bad,
    /// No frame left.
    Oom,
}

/// A process's memory seen from the kernel: checked copies through its page tables.
pub struct UserMem<'a, M: DerefMut<Target = Mm> = RefMut<'a, Mm>> {
    /// Address space and regions.
    pub mm: M,
    /// Frames.
    pub pool: &'a mut FramePool,
    /// The files that file-backed regions show.
    pub fs: &'a Fs,
    /// Their cached pages.
    pub cache: &'a mut PageCache,
}

/// Page-table flags for `PROT_*` bits.
pub fn pte_flags(prot: u32) -> u64 {
    let mut f = P;
    if prot & PROT_WRITE != 0 {
        f |= W;
    }
    if prot & PROT_EXEC == 0 {
        f |= NX;
    }
    f
}

impl<M: DerefMut<Target = Mm>> UserMem<'_, M> {
    /// Makes the page at `va` present (demand paging); checks write permission. A write to
    /// a read-only frame of a writable region (a file page, a frame shared with the page
    /// cache or a fork relative) copies it first.
    pub fn fault_in(&mut self, va: u64, write: bool) -> Result<u64, MemFault> {
        let page = va & !(PAGE - 1);
        let mm = &mut *self.mm;
        let region = mm.regions.find(va).ok_or(MemFault::Bad)?;
        if region.prot == 0 || (write && region.prot & PROT_WRITE == 0) {
            return Err(MemFault::Bad);
        }
        let flags = pte_flags(region.prot);
        if let Some((pa, now)) = mm.aspace.translate(page) {
            if write && now & W == 0 {
                return pager::copy_on_write(&mut mm.aspace, self.pool, self.cache, page, pa, flags)
                    .map_err(|_| MemFault::Oom);
            }
            return Ok(pa);
        }
        pager::fill(&mut mm.aspace, self.pool, self.fs, self.cache, region, page, write, flags)
            .map_err(|_| MemFault::Oom)
    }

    /// A write fault on the present page at `va`: resolved only by a copy-on-write (the
    /// page is read-only and its region writable), else `Bad`.
    ///
    /// A page that is writable by now (another CPU's thread took the same fault first and
    /// copied it) was a spurious fault: the instruction runs again.
    pub fn write_fault(&mut self, va: u64) -> Result<(), MemFault> {
        match self.mm.aspace.translate(va & !(PAGE - 1)) {
            Some((_, flags)) if flags & W == 0 => self.fault_in(va, true).map(drop),
            Some(_) if self.mm.regions.find(va).is_some_and(|r| r.prot & PROT_WRITE != 0) => Ok(()),
            _ => Err(MemFault::Bad),
        }
    }

    /// Copies `out.len()` bytes from user address `va`.
    pub fn read(&mut self, va: u64, out: &mut [u8]) -> Result<(), MemFault> {
        let mut done = 0usize;
        while done < out.len() {
            let a = va.checked_add(done as u64).ok_or(MemFault::Bad)?;
            let pa = self.fault_in(a, false)?;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(out.len() - done);
            phys::read(pa + off as u64, &mut out[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Copies `data` to user address `va`.
    pub fn write(&mut self, va: u64, data: &[u8]) -> Result<(), MemFault> {
        let mut done = 0usize;
        while done < data.len() {
            let a = va.checked_add(done as u64).ok_or(MemFault::Bad)?;
            let pa = self.fault_in(a, true)?;
            let off = (a % PAGE) as usize;
            let n = (PAGE as usize - off).min(data.len() - done);
            phys::write(pa + off as u64, &data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Reads a u64.
    pub fn read_u64(&mut self, va: u64) -> Result<u64, MemFault> {
        let mut b = [0u8; 8];
        self.read(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a NUL-terminated string of at most `max` bytes.
    pub fn read_cstr(&mut self, va: u64, max: usize) -> Result<Vec<u8>, MemFault> {
        let mut out = Vec::new();
        let mut a = va;
        loop {
            let pa = self.fault_in(a, false)?;
            let off = a % PAGE;
            let mut chunk = alloc::vec![0u8; (PAGE - off) as usize];
            phys::read(pa + off, &mut chunk);
            if let Some(z) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..z]);
                return if out.len() > max { Err(MemFault::Bad) } else { Ok(out) };
            }
            out.extend_from_slice(&chunk);
            if out.len() > max {
                return Err(MemFault::Bad);
            }
            a = a.checked_add(PAGE - off).ok_or(MemFault::Bad)?;
        }
    }
}

impl Kernel {
    /// The user memory of `pid`.
    pub fn mem(&mut self, pid: Pid) -> Option<UserMem<'_>> {
        let p = self.procs.get(&pid)?;
        Some(UserMem {
            mm: p.mm.as_ref()?.borrow_mut(),
            pool: &mut self.pool,
            fs: &self.fs,
            cache: &mut self.cache,
        })
    }

    /// After taking the kernel lock: this CPU's part of the state becomes the kernel's
    /// `current`, `fpu_owner` and `on_cpu` (`current` 0 when it ran no thread, or its
    /// thread was ended meanwhile), and tables waiting in limbo that no CPU has loaded any
    /// more go back to the pool.
    pub fn enter_cpu(&mut self) {
        let me = smp::me().min(self.cpus.len().saturating_sub(1));
        self.me = me;
        let slot = self.cpus.get(me).copied().unwrap_or_default();
        self.current = slot.current.unwrap_or(0);
        self.fpu_owner = slot.fpu_owner;
        self.on_cpu = slot.on_cpu;
        if smp::in_limbo(smp::loaded_here()) {
            phys::leave_to_kernel_tables();
        }
        for f in smp::take_freeable() {
            self.pool.release(f);
        }
    }

    /// Before letting the kernel lock go: this CPU runs `running` now (None: it idles).
    pub fn leave_cpu(&mut self, running: Option<Pid>) {
        let slot = CpuSlot { current: running, fpu_owner: self.fpu_owner, on_cpu: self.on_cpu };
        if let Some(s) = self.cpus.get_mut(self.me) {
            *s = slot;
        }
    }

    /// The CPU other than this one that runs thread `pid`, if any.
    pub fn running_elsewhere(&self, pid: Pid) -> Option<usize> {
        self.cpus.iter().enumerate().find(|(i, s)| *i != self.me && s.current == Some(pid)).map(|(i, _)| i)
    }

    /// Whether another CPU runs a thread.
    pub fn others_running(&self) -> bool {
        self.cpus.iter().enumerate().any(|(i, s)| i != self.me && s.current.is_some())
    }

    /// Makes every other CPU that runs one of `pids` leave user mode and forget the thread
    /// (it is about to end): that CPU then waits for the lock and, once it has it, picks
    /// another thread. The thread's CPU time there is charged first.
    fn evict(&mut self, pids: &[Pid]) {
        if self.cpus.len() < 2 {
            return;
        }
        for i in 0..self.cpus.len() {
            let Some(pid) = self.cpus[i].current.filter(|p| i != self.me && pids.contains(p)) else {
                continue;
            };
            smp::evict(i, None);
            let now = self.hv.monotonic_ns();
            let slot = &mut self.cpus[i];
            slot.current = None;
            if slot.fpu_owner == Some(pid) {
                slot.fpu_owner = None;
            }
            if let Some((p, since)) = slot.on_cpu.take() {
                if let Some(t) = self.procs.get_mut(&p) {
                    t.cpu_ns = t.cpu_ns.saturating_add(now.saturating_sub(since));
                }
            }
        }
    }

    /// Since when thread `pid` runs on a CPU (this one or another), if it does.
    fn running_since(&self, pid: Pid) -> Option<u64> {
        match self.on_cpu {
            Some((p, since)) if p == pid => Some(since),
            _ => self
                .cpus
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.me)
                .find_map(|(_, s)| s.on_cpu.filter(|(p, _)| *p == pid).map(|(_, since)| since)),
        }
    }

    /// The running process.
    pub fn cur(&mut self) -> &mut Process {
        // The scheduler only ever sets `current` to a live process.
        self.procs.get_mut(&self.current).expect("current process exists")
    }

    /// Writes a container's output.
    pub fn log_output(&self, container: u32, stream: u32, data: &[u8]) {
        if self.pod_log {
            for c in data.chunks(4096) {
                let _ = self.hv.log_write(container, stream, c);
            }
        } else {
            self.hv.console(data);
        }
    }

    /// A fresh process structure (a thread to be given its address space when `aspace`
    /// is `None`).
    pub fn blank_process(
        &mut self,
        pid: Pid,
        ppid: Pid,
        container: u32,
        aspace: Option<AddrSpace>,
    ) -> Process {
        let mut fpu = FpuArea::new(&self.fpu_fmt);
        fpu.copy_from(&mut self.fpu_template);
        Process {
            pid,
            tgid: pid,
            ppid,
            container,
            state: State::Runnable,
            frame: TrapFrame::default(),
            fpu,
            fs_base: 0,
            mm: aspace
                .map(|aspace| Shared::new(Mm { aspace, regions: Regions::new(), brk_start: 0, brk: 0 })),
            fds: Shared::new(FdTable::default()),
            cwd: Ino::ROOT,
            umask: 0o022,
            sigactions: Shared::new([Action::default(); 65]),
            sigmask: 0,
            pending: 0,
            group_pending: 0,
            sigwait: None,
            siginfo: Box::new([SigInfo::default(); 65]),
            saved_mask: None,
            fault_ctx: FaultContext::default(),
            sleep_deadline: None,
            exe: String::new(),
            clear_child_tid: 0,
            robust_list: 0,
            futex: None,
            poll_until: None,
            altstack: AltStack::default(),
            vfork_child: None,
            in_vfork: false,
            cpu_ns: 0,
            dead_threads_ns: 0,
            children_ns: 0,
        }
    }

    /// Live (non-zombie) process count plus zombies: what the process limit counts.
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    /// Charges the running thread's CPU time up to `now` and makes `next` the running
    /// one (None: the vCPU idles).
    pub fn charge_cpu(&mut self, now: u64, next: Option<Pid>) {
        if let Some((pid, since)) = self.on_cpu {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.cpu_ns = p.cpu_ns.saturating_add(now.saturating_sub(since));
            }
        }
        self.on_cpu = next.map(|p| (p, now));
    }

    /// The CPU time of thread `pid` so far.
    pub fn cpu_ns_of(&self, pid: Pid) -> u64 {
        let own = self.procs.get(&pid).map_or(0, |p| p.cpu_ns);
        match self.running_since(pid) {
            Some(since) => own.saturating_add(self.hv.monotonic_ns().saturating_sub(since)),
            None => own,
        }
    }

    /// The CPU time of the process of thread `pid`: its threads', the ended ones' too, and
    /// the running time of those on a CPU now (the clock is read once).
    pub fn process_cpu_ns(&self, pid: Pid) -> u64 {
        let Some(tgid) = self.procs.get(&pid).map(|p| p.tgid) else { return 0 };
        let dead = self.procs.get(&tgid).map_or(0, |p| p.dead_threads_ns);
        let mut now = None;
        let mut total = dead;
        for p in self.procs.values().filter(|p| p.tgid == tgid) {
            total = total.saturating_add(p.cpu_ns);
            if let Some(since) = self.running_since(p.pid) {
                let t = *now.get_or_insert_with(|| self.hv.monotonic_ns());
                total = total.saturating_add(t.saturating_sub(since));
            }
        }
        total
    }

    /// Moves an ending thread's CPU time to its process's first thread.
    fn retire_cpu(&mut self, pid: Pid) {
        let now =
            if self.on_cpu.is_some_and(|(p, _)| p == pid) { Some(self.hv.monotonic_ns()) } else { None };
        if let Some(now) = now {
            self.charge_cpu(now, None);
        }
        let Some((tgid, ns)) = self.procs.get_mut(&pid).map(|p| (p.tgid, core::mem::take(&mut p.cpu_ns)))
        else {
            return;
        };
        if let Some(l) = self.procs.get_mut(&tgid) {
            l.dead_threads_ns = l.dead_threads_ns.saturating_add(ns);
        }
    }

    /// The threads of process `tgid` that have not ended.
    pub fn threads_of(&self, tgid: Pid) -> Vec<Pid> {
        self.procs.values().filter(|p| p.tgid == tgid && p.state.is_live()).map(|p| p.pid).collect()
    }

    /// Lets go of what thread `pid` holds: its references to the address space, the
    /// descriptor table and the FPU; a table goes with its last holder.
    fn release_thread(&mut self, pid: Pid) {
        self.retire_cpu(pid);
        let Some(p) = self.procs.get_mut(&pid) else { return };
        p.sleep_deadline = None;
        p.futex = None;
        p.poll_until = None;
        let mm = p.mm.take();
        let fds = core::mem::replace(&mut p.fds, Shared::new(FdTable::default()));
        if let Some(Mm { aspace, regions, .. }) = mm.and_then(Shared::into_sole) {
            aspace.destroy(&mut self.pool);
            // The regions let go of their files; what only the cache holds now goes back.
            drop(regions);
            self.cache.sweep(&mut self.pool, &mut self.fs);
        }
        if let Some(mut t) = fds.into_sole() {
            for e in t.take_all() {
                super::fd::close_entry(&mut self.fs, e);
            }
        }
        if self.fpu_owner == Some(pid) {
            self.fpu_owner = None;
        }
        for s in &mut self.cpus {
            if s.fpu_owner == Some(pid) {
                s.fpu_owner = None;
            }
        }
    }

    /// What a thread's end tells the others (Linux's `mm_release`): its robust futexes
    /// are marked `FUTEX_OWNER_DIED` and their waiters woken, and the `set_tid_address`
    /// word is cleared and woken (`pthread_join`).
    fn thread_exit_notify(&mut self, pid: Pid) {
        let Some(p) = self.procs.get_mut(&pid) else { return };
        let (robust, ctid) = (core::mem::take(&mut p.robust_list), core::mem::take(&mut p.clear_child_tid));
        if p.mm.is_none() {
            return;
        }
        if robust != 0 {
            self.release_robust_list(pid, robust);
        }
        if ctid != 0 {
            let written = self.mem(pid).is_some_and(|mut m| m.write(ctid, &0u32.to_le_bytes()).is_ok());
            if written {
                self.futex_wake_word(pid, ctid, 1);
            }
        }
    }

    /// Walks the robust list at `head` of the ending thread `pid` (bounded, as Linux's
    /// `ROBUST_LIST_LIMIT`): each futex word it still owns gets `FUTEX_OWNER_DIED` and one
    /// waiter is woken.
    fn release_robust_list(&mut self, pid: Pid, head: u64) {
        const OWNER_DIED: u32 = 0x4000_0000;
        const WAITERS: u32 = 0x8000_0000;
        const TID_MASK: u32 = 0x3fff_ffff;
        let Some(mut m) = self.mem(pid) else { return };
        let (Ok(first), Ok(offset), Ok(pending)) =
            (m.read_u64(head), m.read_u64(head + 8), m.read_u64(head + 16))
        else {
            return;
        };
        drop(m);
        let mut entries = Vec::new();
        let mut e = first & !1;
        while e != head && e != 0 && entries.len() < 2048 {
            entries.push(e);
            let next = self.mem(pid).and_then(|mut m| m.read_u64(e).ok());
            match next {
                Some(n) => e = n & !1,
                None => break,
            }
        }
        if pending != 0 && !entries.contains(&(pending & !1)) {
            entries.push(pending & !1);
        }
        for e in entries {
            let word = e.wrapping_add(offset);
            let Some(mut m) = self.mem(pid) else { return };
            let mut b = [0u8; 4];
            if m.read(word, &mut b).is_err() {
                continue;
            }
            let v = u32::from_le_bytes(b);
            if v & TID_MASK != pid {
                continue;
            }
            let new = (v & WAITERS) | OWNER_DIED;
            let ok = m.write(word, &new.to_le_bytes()).is_ok();
            drop(m);
            if ok && v & WAITERS != 0 {
                self.futex_wake_word(pid, word, 1);
            }
        }
    }

    /// Wakes up to `n` waiters of the futex word at `va` in `pid`'s memory, whichever way
    /// (private or shared) they wait on it; returns how many.
    pub fn futex_wake_word(&mut self, pid: Pid, va: u64, n: usize) -> usize {
        let mut woken = 0;
        if let Some(id) = self.procs.get(&pid).and_then(|p| p.mm.as_ref()).map(Shared::id) {
            woken += self.futex_wake(FutexKey::Private(id, va), n, u32::MAX);
        }
        let pa = self.mem(pid).and_then(|mut m| m.fault_in(va, false).ok());
        if let Some(pa) = pa {
            woken += self.futex_wake(FutexKey::Shared(pa + va % PAGE), n - woken.min(n), u32::MAX);
        }
        woken
    }

    /// Wakes up to `n` threads waiting on `key` whose bitset meets `bitset`, first come
    /// first served; returns how many.
    pub fn futex_wake(&mut self, key: FutexKey, n: usize, bitset: u32) -> usize {
        let mut waiting: Vec<(u64, Pid)> = self
            .procs
            .values()
            .filter_map(|p| {
                p.futex.filter(|w| w.key == key && !w.woken && w.bitset & bitset != 0).map(|w| (w.seq, p.pid))
            })
            .collect();
        waiting.sort_unstable();
        let mut woken = 0;
        for (_, pid) in waiting.into_iter().take(n) {
            if let Some(w) = self.procs.get_mut(&pid).and_then(|p| p.futex.as_mut()) {
                w.woken = true;
                woken += 1;
            }
        }
        woken
    }

    /// Moves up to `n` waiters of `from` (not yet woken) to `to`; returns how many.
    pub fn futex_requeue(&mut self, from: FutexKey, to: FutexKey, n: usize) -> usize {
        let mut waiting: Vec<(u64, Pid)> = self
            .procs
            .values()
            .filter_map(|p| p.futex.filter(|w| w.key == from && !w.woken).map(|w| (w.seq, p.pid)))
            .collect();
        waiting.sort_unstable();
        let mut moved = 0;
        for (_, pid) in waiting.into_iter().take(n) {
            if let Some(w) = self.procs.get_mut(&pid).and_then(|p| p.futex.as_mut()) {
                w.key = to;
                moved += 1;
            }
        }
        moved
    }

    /// `execve` in a thread: every other thread of its process ends (they leave without
    /// the work a thread's end does for others: their memory is being replaced), and a
    /// thread other than the first takes the process's id, as on Linux. Returns the id the
    /// caller has now.
    pub fn become_sole_thread(&mut self, pid: Pid) -> Pid {
        let Some(tgid) = self.procs.get(&pid).map(|p| p.tgid) else { return pid };
        let others: Vec<Pid> = self
            .procs
            .values()
            .filter(|p| p.tgid == tgid && p.pid != pid && p.pid != tgid)
            .map(|p| p.pid)
            .collect();
        let mut gone = others.clone();
        gone.push(tgid);
        gone.retain(|t| *t != pid);
        self.evict(&gone);
        for t in others {
            self.release_thread(t);
            self.procs.remove(&t);
        }
        if pid == tgid {
            return pid;
        }
        self.release_thread(tgid);
        let Some(leader) = self.procs.remove(&tgid) else { return pid };
        let Some(mut me) = self.procs.remove(&pid) else { return pid };
        me.pid = tgid;
        me.ppid = leader.ppid;
        if self.fpu_owner == Some(pid) {
            self.fpu_owner = Some(tgid);
        }
        if self.current == pid {
            self.current = tgid;
        }
        self.procs.insert(tgid, me);
        tgid
    }

    /// `exit`: ends thread `pid` alone. The last thread of a process ends the process
    /// (with the first thread's code when that one ended first, as Linux reports it); a
    /// first thread that ends before the others stays as the process's id until then.
    pub fn exit_thread(&mut self, pid: Pid, code: u8) {
        let Some(tgid) = self.procs.get(&pid).map(|p| p.tgid) else { return };
        let others = self.threads_of(tgid).into_iter().any(|t| t != pid);
        if !others {
            let how = match self.procs.get(&tgid).map(|p| p.state) {
                Some(State::Exited(first)) if tgid != pid => first,
                _ => Exit::Code(code),
            };
            self.thread_exit_notify(pid);
            if pid != tgid {
                self.release_thread(pid);
                self.procs.remove(&pid);
            }
            self.end_process(tgid, how);
            return;
        }
        self.thread_exit_notify(pid);
        self.release_thread(pid);
        if pid == tgid {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.state = State::Exited(Exit::Code(code));
            }
        } else {
            self.procs.remove(&pid);
        }
    }

    /// Ends the process of thread `pid` with `how` (`exit_group`, a fatal signal, a
    /// fault): every thread of it ends, then the process (see [`Kernel::end_process`]).
    pub fn terminate(&mut self, pid: Pid, how: Exit) {
        let Some(tgid) = self.procs.get(&pid).map(|p| p.tgid) else { return };
        if self.procs.get(&tgid).is_some_and(|p| matches!(p.state, State::Zombie(_))) {
            return;
        }
        let others: Vec<Pid> =
            self.procs.values().filter(|p| p.tgid == tgid && p.pid != tgid).map(|p| p.pid).collect();
        let mut gone = others.clone();
        gone.push(tgid);
        self.evict(&gone);
        for t in others {
            self.thread_exit_notify(t);
            self.release_thread(t);
            self.procs.remove(&t);
        }
        self.thread_exit_notify(tgid);
        self.end_process(tgid, how);
    }

    /// Ends process `tgid` (whose other threads are gone) with `how`: frees its memory and
    /// descriptors, reparents its children, and ends its container when it was the
    /// container's first process.
    fn end_process(&mut self, tgid: Pid, how: Exit) {
        let Some(p) = self.procs.get_mut(&tgid) else { return };
        if matches!(p.state, State::Zombie(_)) {
            return;
        }
        p.state = State::Zombie(how);
        let container = p.container;
        let ppid = p.ppid;
        self.release_thread(tgid);
        let pid = tgid;
        // The parent hears of it (SIGCHLD is ignored unless it has a handler).
        let (code, status) = match how {
            Exit::Code(c) => (CLD_EXITED, i32::from(c)),
            Exit::Signal(n) => (CLD_KILLED, n as i32),
        };
        self.send_signal(ppid, SigInfo { signo: sig::SIGCHLD, code, pid, status, addr: None });
        let root = self.containers.get(container as usize).and_then(|c| c.root);
        if root == Some(pid) {
            self.end_container(container, how);
            return;
        }
        // Children go to the container's first process.
        let new_parent = root.unwrap_or(0);
        for c in self.procs.values_mut() {
            if c.ppid == pid {
                c.ppid = new_parent;
            }
        }
        // A zombie without a living parent is reaped at once.
        if !self.procs.get(&ppid).is_some_and(|pp| !matches!(pp.state, State::Zombie(_))) {
            self.procs.remove(&pid);
        }
    }

    /// Ends container `container` with `how` and every process left in it.
    pub fn end_container(&mut self, container: u32, how: Exit) {
        let code = how.container_code();
        let mut oom_killed = false;
        if let Some(c) = self.containers.get_mut(container as usize) {
            if c.exit.is_some() {
                return;
            }
            c.exit = Some(code);
            oom_killed = c.oom_killed;
            c.root = None;
            if !self.pod_log {
                klog!("container {} exited with code {}", c.name, code);
            }
        }
        let _ = self.hv.container_exit(container, code, oom_killed);
        // The rest of the container goes with its first process.
        let others: Vec<Pid> =
            self.procs.values().filter(|p| p.container == container).map(|p| p.pid).collect();
        for pid in others {
            self.terminate(pid, Exit::Signal(sig::SIGKILL));
            self.procs.remove(&pid);
        }
    }

    /// Ends the running process after an allocation failure.
    pub fn oom_kill(&mut self, pid: Pid) {
        let (exe, c) = self.procs.get(&pid).map(|p| (p.exe.clone(), p.container)).unwrap_or_default();
        if let Some(k) = self.containers.get_mut(c as usize) {
            k.oom_killed = true;
        }
        let msg = alloc::format!("crx: pid {pid} ({exe}) OOM-killed: guest memory exhausted\n");
        self.log_output(c, 2, msg.as_bytes());
        if self.pod_log {
            klog!("pid {pid} ({exe}) OOM-killed");
        }
        self.terminate(pid, Exit::Signal(sig::SIGKILL));
    }

    /// Whether every container has ended.
    pub fn all_ended(&self) -> bool {
        self.containers.iter().all(|c| c.exit.is_some())
    }
}
