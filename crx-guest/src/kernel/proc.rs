//! Processes and their memory: the process table ([`Kernel`]), each process's state, and
//! checked copies to and from a process's memory ([`UserMem`]).
//!
//! Every process has its own address space, descriptor table and saved user registers. The
//! kernel entries and the scheduler that runs these processes are in [`super::sched`].

#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use crx_fs::{Fs, Ino};
use crx_guest::elf::PAGE;
use crx_guest::frames::FramePool;
use crx_guest::pagecache::PageCache;
use crx_guest::posix::{sig, Exit};
use crx_guest::signal::{Action, FaultContext, SigInfo, CLD_EXITED, CLD_KILLED};
use crx_guest::vma::{Regions, PROT_EXEC, PROT_WRITE};

use super::arch::{FpuArea, FpuFormat, OneCpu, TrapFrame};
use super::fd::FdTable;
use super::hv::Hv;
use super::klog;
use super::mm::{AddrSpace, KernelTables, NX, P, W};
use super::pager;
use super::phys;

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
}

/// One process.
pub struct Process {
    /// Its id.
    pub pid: Pid,
    /// Its parent's id.
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
    pub aspace: Option<AddrSpace>,
    /// User regions.
    pub regions: Regions,
    /// Start of the heap.
    pub brk_start: u64,
    /// Current end of the heap.
    pub brk: u64,
    /// Descriptors.
    pub fds: FdTable,
    /// Working directory.
    pub cwd: Ino,
    /// File-creation mask.
    pub umask: u32,
    /// Signal dispositions as set by `rt_sigaction`, by signal number.
    pub sigactions: Box<[Action; 65]>,
    /// Blocked-signal mask.
    pub sigmask: u64,
    /// Pending signals (bit N-1 for signal N).
    pub pending: u64,
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
    /// Whether a process has been switched to for user mode yet (the first switch tells
    /// the hypervisor, `CONTAINER_ENTRY`).
    pub entered_user: bool,
}

/// The kernel, taken by each entry and released before returning to user mode (a kernel
/// fault reports and ends the VM without touching it).
pub static KERNEL: OneCpu<Option<Kernel>> = OneCpu::new(None);

/// Why a user access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemFault {
    /// Not mapped or not allowed: `EFAULT` in a syscall, SIGSEGV on a fault.
    Bad,
    /// No frame left.
    Oom,
}

/// A process's memory seen from the kernel: checked copies through its page tables.
pub struct UserMem<'a> {
    /// Address space.
    pub aspace: &'a mut AddrSpace,
    /// Regions.
    pub regions: &'a Regions,
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

impl UserMem<'_> {
    /// Makes the page at `va` present (demand paging); checks write permission. A write to
    /// a read-only frame of a writable region (a file page, a frame shared with the page
    /// cache or a fork relative) copies it first.
    pub fn fault_in(&mut self, va: u64, write: bool) -> Result<u64, MemFault> {
        let page = va & !(PAGE - 1);
        let region = self.regions.find(va).ok_or(MemFault::Bad)?;
        if region.prot == 0 || (write && region.prot & PROT_WRITE == 0) {
            return Err(MemFault::Bad);
        }
        let flags = pte_flags(region.prot);
        if let Some((pa, now)) = self.aspace.translate(page) {
            if write && now & W == 0 {
                return pager::copy_on_write(self.aspace, self.pool, self.cache, page, pa, flags)
                    .map_err(|_| MemFault::Oom);
            }
            return Ok(pa);
        }
        pager::fill(self.aspace, self.pool, self.fs, self.cache, region, page, write, flags)
            .map_err(|_| MemFault::Oom)
    }

    /// A write fault on the present page at `va`: resolved only by a copy-on-write (the
    /// page is read-only and its region writable), else `Bad`.
    pub fn write_fault(&mut self, va: u64) -> Result<(), MemFault> {
        match self.aspace.translate(va & !(PAGE - 1)) {
            Some((_, flags)) if flags & W == 0 => self.fault_in(va, true).map(drop),
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
        let p = self.procs.get_mut(&pid)?;
        Some(UserMem {
            aspace: p.aspace.as_mut()?,
            regions: &p.regions,
            pool: &mut self.pool,
            fs: &self.fs,
            cache: &mut self.cache,
        })
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

    /// A fresh process structure.
    pub fn blank_process(&mut self, pid: Pid, ppid: Pid, container: u32, aspace: AddrSpace) -> Process {
        let mut fpu = FpuArea::new(&self.fpu_fmt);
        fpu.copy_from(&mut self.fpu_template);
        Process {
            pid,
            ppid,
            container,
            state: State::Runnable,
            frame: TrapFrame::default(),
            fpu,
            fs_base: 0,
            aspace: Some(aspace),
            regions: Regions::new(),
            brk_start: 0,
            brk: 0,
            fds: FdTable::default(),
            cwd: Ino::ROOT,
            umask: 0o022,
            sigactions: Box::new([Action::default(); 65]),
            sigmask: 0,
            pending: 0,
            siginfo: Box::new([SigInfo::default(); 65]),
            saved_mask: None,
            fault_ctx: FaultContext::default(),
            sleep_deadline: None,
            exe: String::new(),
            clear_child_tid: 0,
        }
    }

    /// Live (non-zombie) process count plus zombies: what the process limit counts.
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    /// Ends process `pid` with `how`: frees its memory and descriptors, reparents its
    /// children, and ends its container when it was the container's first process.
    pub fn terminate(&mut self, pid: Pid, how: Exit) {
        let Some(p) = self.procs.get_mut(&pid) else { return };
        if matches!(p.state, State::Zombie(_)) {
            return;
        }
        p.state = State::Zombie(how);
        p.sleep_deadline = None;
        let container = p.container;
        let ppid = p.ppid;
        let aspace = p.aspace.take();
        let fds = p.fds.take_all();
        p.regions = Regions::new();
        if let Some(a) = aspace {
            a.destroy(&mut self.pool);
        }
        self.cache.sweep(&mut self.pool, &mut self.fs);
        for e in fds {
            super::fd::close_entry(&mut self.fs, e);
        }
        if self.fpu_owner == Some(pid) {
            self.fpu_owner = None;
        }
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
