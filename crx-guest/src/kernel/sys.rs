//! The Linux x86_64 syscall table and its handlers.
//!
//! [`TABLE`] maps numbers to handlers, one line each. Every handler has the signature
//! `fn(&mut Kernel, [u64; 6]) -> Sys` and reaches user memory only through the checked
//! copies of [`UserMem`] (a bad pointer gives `EFAULT`). An unknown number returns `ENOSYS`
//! and is logged once with its name. A handler that must wait returns [`Fail::Block`]; the
//! scheduler calls it again later with the same registers.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use crx_fs::linux::{o, S_IFCHR, S_IFIFO};
use crx_fs::{Errno, FileType, Ino, Pipe, Stat, Timespec};
use crx_guest::elf::{self, ElfError, PAGE, USER_END};
use crx_guest::posix::{sig, Exit};
use crx_guest::signal::{self, bit, Action, Disposition, FaultContext, SI_TKILL, SI_USER};
use crx_guest::sysno;
use crx_guest::vma::{page_up, PROT_WRITE};

use super::fd::{self, close_entry, desc, FdEntry, Object, PipeEnd};
use super::klog;
use super::mm;
use super::proc::{pte_flags, Kernel, MemFault, Pid, State, MMAP_TOP};

/// How a syscall did not simply return a value.
pub enum Fail {
    /// Return `-errno`.
    E(Errno),
    /// Wait and retry.
    Block,
    /// The process ended (or its registers were replaced); return nothing.
    Gone,
    /// Return this negative errno (for numbers [`Errno`] does not name).
    Raw(i64),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Fail {
        Fail::E(e)
    }
}

/// A handler's result.
pub type Sys = Result<u64, Fail>;
type Handler = fn(&mut Kernel, [u64; 6]) -> Sys;

/// The syscall table: number, handler.
const TABLE: &[(u64, Handler)] = &[
    (0, sys_read),
    (1, sys_write),
    (2, sys_open),
    (3, sys_close),
    (4, sys_stat),
    (5, sys_fstat),
    (6, sys_lstat),
    (8, sys_lseek),
    (9, sys_mmap),
    (10, sys_mprotect),
    (11, sys_munmap),
    (12, sys_brk),
    (13, sys_rt_sigaction),
    (14, sys_rt_sigprocmask),
    (15, sys_rt_sigreturn),
    (16, sys_ioctl),
    (17, sys_pread64),
    (18, sys_pwrite64),
    (19, sys_readv),
    (20, sys_writev),
    (21, sys_access),
    (22, sys_pipe),
    (24, sys_sched_yield),
    (25, sys_mremap),
    (28, sys_zero), // madvise
    (32, sys_dup),
    (33, sys_dup2),
    (34, sys_pause),
    (35, sys_nanosleep),
    (37, sys_zero), // alarm
    (39, sys_getpid),
    (40, sys_sendfile),
    (56, sys_clone),
    (57, sys_fork),
    (58, sys_fork), // vfork, as fork
    (59, sys_execve),
    (60, sys_exit),
    (61, sys_wait4),
    (62, sys_kill),
    (63, sys_uname),
    (72, sys_fcntl),
    (74, sys_zero), // fsync
    (75, sys_zero), // fdatasync
    (76, sys_truncate),
    (77, sys_ftruncate),
    (79, sys_getcwd),
    (80, sys_chdir),
    (81, sys_fchdir),
    (82, sys_rename),
    (83, sys_mkdir),
    (84, sys_rmdir),
    (85, sys_creat),
    (86, sys_link),
    (87, sys_unlink),
    (88, sys_symlink),
    (89, sys_readlink),
    (90, sys_chmod),
    (91, sys_fchmod),
    (92, sys_zero), // chown
    (93, sys_zero), // fchown
    (94, sys_zero), // lchown
    (95, sys_umask),
    (96, sys_gettimeofday),
    (97, sys_getrlimit),
    (98, sys_getrusage),
    (99, sys_sysinfo),
    (100, sys_times),
    (102, sys_zero), // getuid
    (104, sys_zero), // getgid
    (105, sys_zero), // setuid
    (106, sys_zero), // setgid
    (107, sys_zero), // geteuid
    (108, sys_zero), // getegid
    (109, sys_zero), // setpgid
    (110, sys_getppid),
    (111, sys_getpgrp),
    (112, sys_getpid), // setsid
    (115, sys_zero),   // getgroups
    (116, sys_zero),   // setgroups
    (117, sys_zero),   // setresuid
    (118, sys_getresid),
    (119, sys_zero), // setresgid
    (120, sys_getresid),
    (121, sys_getpgrp), // getpgid
    (124, sys_getpgrp), // getsid
    (127, sys_rt_sigpending),
    (130, sys_rt_sigsuspend),
    (131, sys_zero), // sigaltstack
    (157, sys_zero), // prctl
    (158, sys_arch_prctl),
    (186, sys_getpid), // gettid
    (200, sys_tkill),
    (201, sys_time),
    (202, sys_zero), // futex: single-threaded processes never wait
    (204, sys_sched_getaffinity),
    (217, sys_getdents64),
    (218, sys_set_tid_address),
    (228, sys_clock_gettime),
    (229, sys_clock_getres),
    (230, sys_clock_nanosleep),
    (231, sys_exit),
    (234, sys_tgkill),
    (257, sys_openat),
    (258, sys_mkdirat),
    (260, sys_zero), // fchownat
    (262, sys_newfstatat),
    (263, sys_unlinkat),
    (264, sys_renameat),
    (265, sys_linkat),
    (266, sys_symlinkat),
    (267, sys_readlinkat),
    (268, sys_fchmodat),
    (269, sys_faccessat),
    (273, sys_zero), // set_robust_list
    (280, sys_zero), // utimensat
    (292, sys_dup3),
    (293, sys_pipe2),
    (302, sys_prlimit64),
    (309, sys_zero), // getcpu
    (316, sys_renameat2),
    (318, sys_getrandom),
    (332, sys_statx),
    (334, sys_enosys), // rseq: glibc copes without it
    (439, sys_faccessat2),
];

fn lookup(nr: u64) -> Option<Handler> {
    TABLE.iter().find(|(n, _)| *n == nr).map(|(_, h)| *h)
}

/// Runs (or retries) the syscall in `pid`'s saved registers and stores its result.
pub fn run_syscall(k: &mut Kernel, pid: Pid) {
    let Some(p) = k.procs.get(&pid) else { return };
    let f = p.frame;
    let nr = f.rax;
    let args = [f.rdi, f.rsi, f.rdx, f.r10, f.r8, f.r9];
    let r = match lookup(nr) {
        Some(h) => h(k, args),
        None => {
            if k.unknown_logged.insert(nr) {
                klog!("unknown syscall {nr} ({}) from pid {pid}: ENOSYS", sysno::name(nr));
            }
            Err(Fail::E(Errno::ENOSYS))
        }
    };
    if k.trace {
        let shown: i64 = match &r {
            Ok(v) => *v as i64,
            Err(Fail::E(e)) => e.neg(),
            Err(Fail::Raw(e)) => *e,
            Err(Fail::Block) => i64::MIN,
            Err(Fail::Gone) => i64::MAX,
        };
        klog!("[{pid}] {}({:#x}, {:#x}, {:#x}) = {shown}", sysno::name(nr), args[0], args[1], args[2]);
    }
    let Some(p) = k.procs.get_mut(&pid) else { return };
    if matches!(p.state, State::Zombie(_)) {
        return;
    }
    match r {
        Ok(v) => {
            p.frame.rax = v;
            p.state = State::Runnable;
        }
        Err(Fail::E(e)) => {
            p.frame.rax = e.neg() as u64;
            p.state = State::Runnable;
        }
        Err(Fail::Raw(e)) => {
            p.frame.rax = e as u64;
            p.state = State::Runnable;
        }
        Err(Fail::Block) => p.state = State::Blocked,
        Err(Fail::Gone) => {}
    }
}

// ----- helpers ---------------------------------------------------------------------------

fn fault(k: &mut Kernel, e: MemFault) -> Fail {
    match e {
        MemFault::Bad => Fail::E(Errno::EFAULT),
        MemFault::Oom => {
            let pid = k.current;
            k.oom_kill(pid);
            Fail::Gone
        }
    }
}

/// A zeroed kernel buffer, or `ENOMEM` when the kernel heap cannot hold it (a process
/// asking for large transfers must not bring the kernel down).
fn try_buf(len: usize) -> Result<Vec<u8>, Fail> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Fail::E(Errno::ENOMEM))?;
    v.resize(len, 0);
    Ok(v)
}

fn uread(k: &mut Kernel, va: u64, len: usize) -> Result<Vec<u8>, Fail> {
    let mut v = try_buf(len)?;
    let pid = k.current;
    let r = k.mem(pid).ok_or(Fail::Gone)?.read(va, &mut v);
    r.map_err(|e| fault(k, e))?;
    Ok(v)
}

fn uwrite(k: &mut Kernel, va: u64, data: &[u8]) -> Result<(), Fail> {
    let pid = k.current;
    let r = k.mem(pid).ok_or(Fail::Gone)?.write(va, data);
    r.map_err(|e| fault(k, e))
}

fn uu64(k: &mut Kernel, va: u64) -> Result<u64, Fail> {
    let pid = k.current;
    let r = k.mem(pid).ok_or(Fail::Gone)?.read_u64(va);
    r.map_err(|e| fault(k, e))
}

fn ucstr(k: &mut Kernel, va: u64) -> Result<Vec<u8>, Fail> {
    let pid = k.current;
    let r = k.mem(pid).ok_or(Fail::Gone)?.read_cstr(va, 4096);
    r.map_err(|e| fault(k, e))
}

/// Reads a NULL-terminated array of string pointers.
fn ustrv(k: &mut Kernel, va: u64) -> Result<Vec<Vec<u8>>, Fail> {
    let mut out = Vec::new();
    if va == 0 {
        return Ok(out);
    }
    let mut total = 0usize;
    for i in 0..4096u64 {
        let p = uu64(k, va + i * 8)?;
        if p == 0 {
            return Ok(out);
        }
        let s = ucstr(k, p)?;
        total += s.len() + 9;
        if total > 256 * 1024 {
            return Err(Fail::Raw(-7)); // E2BIG
        }
        out.push(s);
    }
    Err(Fail::Raw(-7)) // E2BIG
}

const AT_FDCWD: u64 = (-100i64) as u64;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EMPTY_PATH: u64 = 0x1000;

/// The directory a `*at` call starts from.
fn dir_of(k: &mut Kernel, dirfd: u64) -> Result<Ino, Fail> {
    if dirfd as u32 as i32 == -100 || dirfd == AT_FDCWD {
        return Ok(k.cur().cwd);
    }
    let d = k.cur().fds.desc(dirfd)?;
    let b = d.borrow();
    match &b.obj {
        Object::File(f) => Ok(f.ino),
        _ => Err(Fail::E(Errno::ENOTDIR)),
    }
}

fn ok(n: usize) -> Sys {
    Ok(n as u64)
}

fn now_timespec(k: &Kernel) -> Timespec {
    let ns = k.hv.wall_ns();
    Timespec { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as u32 }
}

// ----- simple ones -----------------------------------------------------------------------

fn sys_zero(_: &mut Kernel, _: [u64; 6]) -> Sys {
    Ok(0)
}

/// Known and deliberately unsupported: `ENOSYS` without a log line.
fn sys_enosys(_: &mut Kernel, _: [u64; 6]) -> Sys {
    Err(Errno::ENOSYS.into())
}

fn sys_getpid(k: &mut Kernel, _: [u64; 6]) -> Sys {
    Ok(u64::from(k.current))
}

fn sys_getppid(k: &mut Kernel, _: [u64; 6]) -> Sys {
    Ok(u64::from(k.cur().ppid))
}

fn sys_getpgrp(k: &mut Kernel, _: [u64; 6]) -> Sys {
    let c = k.cur().container as usize;
    Ok(u64::from(k.containers.get(c).and_then(|c| c.root).unwrap_or(k.current)))
}

fn sys_getresid(k: &mut Kernel, a: [u64; 6]) -> Sys {
    for p in &a[..3] {
        uwrite(k, *p, &0u32.to_le_bytes())?;
    }
    Ok(0)
}

fn sys_umask(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let p = k.cur();
    let old = p.umask;
    p.umask = (a[0] & 0o777) as u32;
    Ok(u64::from(old))
}

fn sys_sched_yield(k: &mut Kernel, _: [u64; 6]) -> Sys {
    k.yield_requested = true;
    Ok(0)
}

fn sys_set_tid_address(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().clear_child_tid = a[0];
    Ok(u64::from(k.current))
}

fn sys_arch_prctl(k: &mut Kernel, a: [u64; 6]) -> Sys {
    match a[0] {
        0x1002 => {
            if a[1] >= USER_END {
                return Err(Errno::EPERM.into());
            }
            k.cur().fs_base = a[1];
            super::arch::set_fs_base(a[1]);
            Ok(0)
        }
        0x1003 => {
            let v = k.cur().fs_base;
            uwrite(k, a[1], &v.to_le_bytes())?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL.into()),
    }
}

fn sys_uname(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let mut buf = [0u8; 65 * 6];
    let fields: [&[u8]; 6] =
        [b"Linux", k.pod_name.as_bytes(), b"6.1.0-crx", b"#1 crx-guest", b"x86_64", b"(none)"];
    for (i, f) in fields.iter().enumerate() {
        let n = f.len().min(64);
        buf[i * 65..i * 65 + n].copy_from_slice(&f[..n]);
    }
    uwrite(k, a[0], &buf)?;
    Ok(0)
}

fn sys_getrandom(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let len = (a[1] as usize).min(65536);
    let mut b = try_buf(len)?;
    k.hv.random(&mut b);
    uwrite(k, a[0], &b)?;
    ok(len)
}

fn rlimit(k: &Kernel, res: u64) -> (u64, u64) {
    match res {
        3 => (8 << 20, u64::MAX),                              // STACK
        6 => (k.process_limit as u64, k.process_limit as u64), // NPROC
        7 => (fd::MAX_FDS as u64, fd::MAX_FDS as u64),         // NOFILE
        _ => (u64::MAX, u64::MAX),
    }
}

fn sys_getrlimit(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (c, m) = rlimit(k, a[0]);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&c.to_le_bytes());
    b[8..].copy_from_slice(&m.to_le_bytes());
    uwrite(k, a[1], &b)?;
    Ok(0)
}

fn sys_prlimit64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] != 0 && a[0] != u64::from(k.current) {
        return Err(Errno::ESRCH.into());
    }
    if a[3] != 0 {
        let (c, m) = rlimit(k, a[1]);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&c.to_le_bytes());
        b[8..].copy_from_slice(&m.to_le_bytes());
        uwrite(k, a[3], &b)?;
    }
    Ok(0)
}

fn sys_getrusage(k: &mut Kernel, a: [u64; 6]) -> Sys {
    uwrite(k, a[1], &[0u8; 144])?;
    Ok(0)
}

fn sys_times(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] != 0 {
        uwrite(k, a[0], &[0u8; 32])?;
    }
    Ok(k.hv.monotonic_ns() / 10_000_000)
}

fn sys_sysinfo(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let mut b = [0u8; 112];
    b[..8].copy_from_slice(&(k.hv.monotonic_ns() / 1_000_000_000).to_le_bytes());
    b[32..40].copy_from_slice(&((k.pool.total_frames() as u64) * PAGE).to_le_bytes());
    b[40..48].copy_from_slice(&((k.pool.free_frames() as u64) * PAGE).to_le_bytes());
    b[80..82].copy_from_slice(&(k.procs.len() as u16).to_le_bytes());
    b[104..108].copy_from_slice(&1u32.to_le_bytes());
    uwrite(k, a[0], &b)?;
    Ok(0)
}

fn sys_sched_getaffinity(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[1] < 8 {
        return Err(Errno::EINVAL.into());
    }
    uwrite(k, a[2], &1u64.to_le_bytes())?;
    Ok(8)
}

// ----- time ------------------------------------------------------------------------------

fn put_timespec(k: &mut Kernel, va: u64, ns: u64) -> Result<(), Fail> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    uwrite(k, va, &b)
}

fn read_timespec(k: &mut Kernel, va: u64) -> Result<u64, Fail> {
    let b = uread(k, va, 16)?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap_or([0; 8]));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL.into());
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

fn clock_ns(k: &Kernel, clk: u64) -> Result<u64, Errno> {
    match clk {
        0 | 5 | 8 | 11 => Ok(k.hv.wall_ns()), // REALTIME, _COARSE, _ALARM, TAI
        1 | 4 | 6 | 7 | 9 => Ok(k.hv.monotonic_ns()), // MONOTONIC, _RAW, _COARSE, BOOTTIME
        2 | 3 => Ok(k.hv.monotonic_ns()),     // process / thread CPU time (approximate)
        _ => Err(Errno::EINVAL),
    }
}

fn sys_clock_gettime(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let ns = clock_ns(k, a[0])?;
    put_timespec(k, a[1], ns)?;
    Ok(0)
}

fn sys_clock_getres(k: &mut Kernel, a: [u64; 6]) -> Sys {
    clock_ns(k, a[0])?;
    if a[1] != 0 {
        put_timespec(k, a[1], 1)?;
    }
    Ok(0)
}

fn sys_gettimeofday(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] != 0 {
        let ns = k.hv.wall_ns();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        b[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
        uwrite(k, a[0], &b)?;
    }
    if a[1] != 0 {
        uwrite(k, a[1], &[0u8; 8])?;
    }
    Ok(0)
}

fn sys_time(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = k.hv.wall_ns() / 1_000_000_000;
    if a[0] != 0 {
        uwrite(k, a[0], &s.to_le_bytes())?;
    }
    Ok(s)
}

/// Sleeps until the monotonic `deadline`: blocks until the scheduler sees it passed.
fn sleep_until(k: &mut Kernel, deadline: u64) -> Sys {
    let now = k.hv.monotonic_ns();
    if now >= deadline {
        k.cur().sleep_deadline = None;
        return Ok(0);
    }
    k.cur().sleep_deadline = Some(deadline);
    Err(Fail::Block)
}

fn sys_nanosleep(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if let Some(d) = k.cur().sleep_deadline {
        return sleep_until(k, d);
    }
    let ns = read_timespec(k, a[0])?;
    let d = k.hv.monotonic_ns().saturating_add(ns);
    sleep_until(k, d)
}

fn sys_clock_nanosleep(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if let Some(d) = k.cur().sleep_deadline {
        return sleep_until(k, d);
    }
    let t = read_timespec(k, a[2])?;
    let now_mono = k.hv.monotonic_ns();
    let d = if a[1] & 1 != 0 {
        let now_clk = clock_ns(k, a[0])?;
        now_mono.saturating_add(t.saturating_sub(now_clk))
    } else {
        clock_ns(k, a[0])?;
        now_mono.saturating_add(t)
    };
    sleep_until(k, d)
}

// ----- memory ----------------------------------------------------------------------------

fn sys_brk(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let pid = k.current;
    let p = k.procs.get_mut(&pid).ok_or(Fail::Gone)?;
    let want = a[0];
    if want < p.brk_start || want > p.brk_start + (1 << 40) {
        return Ok(p.brk);
    }
    let old_end = page_up(p.brk).unwrap_or(p.brk);
    let new_end = page_up(want).ok_or(Errno::ENOMEM)?;
    if new_end > old_end {
        let mut at = old_end;
        while at < new_end {
            if p.regions.find(at).is_some() {
                return Ok(p.brk);
            }
            at += PAGE;
        }
        p.regions.insert(p.brk_start, new_end, 1 | PROT_WRITE);
    } else if new_end < old_end {
        p.regions.remove(new_end, old_end);
        if let Some(asp) = p.aspace.as_mut() {
            let mut at = new_end;
            while at < old_end {
                asp.unmap(&mut k.pool, at);
                at += PAGE;
            }
        }
    }
    p.brk = want;
    Ok(want)
}

const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

fn unmap_range(k: &mut Kernel, start: u64, end: u64) {
    let pid = k.current;
    let Some(p) = k.procs.get_mut(&pid) else { return };
    let removed = p.regions.remove(start, end);
    if let Some(asp) = p.aspace.as_mut() {
        for r in removed {
            let mut at = r.start;
            while at < r.end {
                asp.unmap(&mut k.pool, at);
                at += PAGE;
            }
        }
    }
}

fn sys_mmap(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (addr, len, prot, flags, fdn, off) = (a[0], a[1], a[2] as u32 & 7, a[3], a[4], a[5]);
    if len == 0 || addr % PAGE != 0 || off % PAGE != 0 {
        return Err(Errno::EINVAL.into());
    }
    let len = page_up(len).filter(|&l| l < USER_END).ok_or(Errno::ENOMEM)?;
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        if addr < elf::USER_MIN || end > USER_END {
            return Err(Errno::ENOMEM.into());
        }
        if flags & MAP_FIXED_NOREPLACE != 0 && flags & MAP_FIXED == 0 {
            let p = k.cur();
            let mut at = addr;
            while at < end {
                if p.regions.find(at).is_some() {
                    return Err(Errno::EEXIST.into());
                }
                at += PAGE;
            }
        }
        unmap_range(k, addr, end);
        addr
    } else {
        k.cur().regions.find_free(len, MMAP_TOP).ok_or(Errno::ENOMEM)?
    };
    let file = if flags & MAP_ANONYMOUS == 0 {
        let d = k.cur().fds.desc(fdn)?;
        let b = d.borrow();
        match &b.obj {
            Object::File(f) => Some(f.ino),
            Object::Zero => None,
            // Pipes and streams cannot be mapped (`EACCES`, as Linux says for them).
            _ => return Err(Errno::EACCES.into()),
        }
    } else {
        None
    };
    k.cur().regions.insert(start, start + len, prot);
    if let Some(ino) = file {
        // A private file mapping: the file's bytes are copied into fresh pages now.
        let mut at = 0u64;
        let mut page = alloc::vec![0u8; PAGE as usize];
        while at < len {
            page.fill(0);
            let n = k.fs.read(ino, off + at, &mut page).unwrap_or(0);
            if n == 0 && off + at > 0 {
                // Past the end of the file: the pages stay untouched (zero on demand).
                if k.fs.stat(ino).map(|s| off + at >= s.size).unwrap_or(true) {
                    break;
                }
            }
            let pa = match mm::alloc_zeroed(&mut k.pool) {
                Ok(pa) => pa,
                Err(_) => return Err(fault(k, MemFault::Oom)),
            };
            mm::write(pa, &page);
            let pid = k.current;
            let p = k.procs.get_mut(&pid).ok_or(Fail::Gone)?;
            if let Some(asp) = p.aspace.as_mut() {
                if asp.map(&mut k.pool, start + at, pa, pte_flags(prot)).is_err() {
                    return Err(fault(k, MemFault::Oom));
                }
            }
            at += PAGE;
        }
    }
    Ok(start)
}

fn sys_munmap(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if !a[0].is_multiple_of(PAGE) || a[1] == 0 {
        return Err(Errno::EINVAL.into());
    }
    let end = page_up(a[0].saturating_add(a[1])).ok_or(Errno::EINVAL)?;
    unmap_range(k, a[0], end.min(USER_END));
    Ok(0)
}

fn sys_mremap(_: &mut Kernel, _: [u64; 6]) -> Sys {
    // Callers (malloc's realloc) fall back to allocate-copy-free.
    Err(Errno::ENOMEM.into())
}

fn sys_mprotect(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if !a[0].is_multiple_of(PAGE) {
        return Err(Errno::EINVAL.into());
    }
    let end = page_up(a[0].saturating_add(a[1])).ok_or(Errno::ENOMEM)?;
    let prot = a[2] as u32 & 7;
    let pid = k.current;
    let p = k.procs.get_mut(&pid).ok_or(Fail::Gone)?;
    if !p.regions.protect(a[0], end, prot) {
        return Err(Errno::ENOMEM.into());
    }
    let Some(asp) = p.aspace.as_mut() else { return Err(Fail::Gone) };
    let mut at = a[0];
    let mut oom = false;
    while at < end {
        if let Some((pa, _)) = asp.translate(at) {
            if prot & PROT_WRITE != 0 && k.pool.refs(pa) > 1 {
                // A frame shared with a fork relative gets its own copy before it is writable.
                match k.pool.alloc() {
                    Ok(n) => {
                        mm::copy_frame(n, pa);
                        if asp.map(&mut k.pool, at, n, pte_flags(prot)).is_err() {
                            oom = true;
                            break;
                        }
                    }
                    Err(_) => {
                        oom = true;
                        break;
                    }
                }
            } else if prot == 0 {
                asp.unmap(&mut k.pool, at);
            } else {
                asp.set_flags(at, pte_flags(prot));
            }
        }
        at += PAGE;
    }
    if oom {
        return Err(fault(k, MemFault::Oom));
    }
    Ok(0)
}

// ----- processes -------------------------------------------------------------------------

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;
const CLONE_THREAD: u64 = 0x1_0000;

fn sys_fork(k: &mut Kernel, _: [u64; 6]) -> Sys {
    do_clone(k, 0, 0, 0, 0, 0)
}

fn sys_clone(k: &mut Kernel, a: [u64; 6]) -> Sys {
    do_clone(k, a[0], a[1], a[2], a[3], a[4])
}

fn do_clone(k: &mut Kernel, flags: u64, newsp: u64, ptid: u64, ctid: u64, tls: u64) -> Sys {
    if flags & CLONE_THREAD != 0 || (flags & CLONE_VM != 0 && flags & CLONE_VFORK == 0) {
        // Threads are not supported.
        return Err(Errno::EINVAL.into());
    }
    if k.process_count() >= k.process_limit {
        return Err(Errno::EAGAIN.into());
    }
    let ppid = k.current;
    let child_space = {
        let p = k.procs.get(&ppid).ok_or(Fail::Gone)?;
        let Some(asp) = p.aspace.as_ref() else { return Err(Fail::Gone) };
        match asp.fork(&k.kt, &mut k.pool) {
            Ok(c) => c,
            Err(_) => return Err(fault(k, MemFault::Oom)),
        }
    };
    let pid = k.next_pid;
    k.next_pid += 1;
    let container = k.cur().container;
    let mut child = k.blank_process(pid, ppid, container, child_space);
    {
        let fpu_owner = k.fpu_owner;
        let fmt = k.fpu_fmt;
        let parent = k.procs.get_mut(&ppid).ok_or(Fail::Gone)?;
        if fpu_owner == Some(ppid) {
            parent.fpu.save(&fmt);
        }
        child.fpu.copy_from(&mut parent.fpu);
        child.frame = parent.frame;
        child.frame.rax = 0;
        if newsp != 0 {
            child.frame.rsp = newsp;
        }
        child.fs_base = if flags & CLONE_SETTLS != 0 { tls } else { parent.fs_base };
        child.regions = parent.regions.clone();
        child.brk_start = parent.brk_start;
        child.brk = parent.brk;
        child.fds = parent.fds.clone();
        child.cwd = parent.cwd;
        child.umask = parent.umask;
        child.sigactions = parent.sigactions.clone();
        child.sigmask = parent.sigmask;
        child.fault_ctx = FaultContext::default();
        child.exe = parent.exe.clone();
        if flags & CLONE_CHILD_CLEARTID != 0 {
            child.clear_child_tid = ctid;
        }
    }
    let _ = k.fs.retain(child.cwd);
    k.procs.insert(pid, child);
    if flags & CLONE_CHILD_SETTID != 0 {
        if let Some(mut m) = k.mem(pid) {
            let _ = m.write(ctid, &pid.to_le_bytes());
        }
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        uwrite(k, ptid, &pid.to_le_bytes())?;
    }
    Ok(u64::from(pid))
}

fn sys_exit(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let pid = k.current;
    k.terminate(pid, Exit::Code(a[0] as u8));
    Err(Fail::Gone)
}

fn sys_wait4(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (want, status, options) = (a[0] as i32 as i64, a[1], a[2]);
    let me = k.current;
    let children: Vec<(Pid, State)> = k
        .procs
        .values()
        .filter(|p| p.ppid == me && p.pid != me)
        .filter(|p| want <= 0 || i64::from(p.pid) == want)
        .map(|p| (p.pid, p.state))
        .collect();
    if children.is_empty() {
        return Err(Errno::ECHILD.into());
    }
    if let Some(&(pid, State::Zombie(how))) = children.iter().find(|(_, s)| matches!(s, State::Zombie(_))) {
        if status != 0 {
            uwrite(k, status, &how.wait_status().to_le_bytes())?;
        }
        if a[3] != 0 {
            uwrite(k, a[3], &[0u8; 144])?;
        }
        k.procs.remove(&pid);
        return Ok(u64::from(pid));
    }
    if options & 1 != 0 {
        return Ok(0);
    }
    Err(Fail::Block)
}

fn send(k: &mut Kernel, target: i64, signal: u64, code: i32) -> Sys {
    if signal > u64::from(sig::MAX) {
        return Err(Errno::EINVAL.into());
    }
    let me = k.current;
    let container = k.cur().container;
    let targets: Vec<Pid> = if target > 0 {
        let t = target as Pid;
        match k.procs.get(&t) {
            Some(p) if p.container == container && !matches!(p.state, State::Zombie(_)) => alloc::vec![t],
            _ => return Err(Errno::ESRCH.into()),
        }
    } else {
        // Process groups are the container: 0, -1 and -pgid reach every process in it.
        let mut v: Vec<Pid> = k
            .procs
            .values()
            .filter(|p| p.container == container && !matches!(p.state, State::Zombie(_)))
            .filter(|p| !(target == -1 && p.pid == me))
            .map(|p| p.pid)
            .collect();
        // The caller last, so that the others are reached even when it ends.
        v.sort_by_key(|&p| p == me);
        v
    };
    for t in targets {
        k.signal_code(t, signal as u32, code, me);
    }
    if k.procs.get(&me).is_none_or(|p| matches!(p.state, State::Zombie(_))) {
        return Err(Fail::Gone);
    }
    Ok(0)
}

fn sys_kill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    send(k, a[0] as i32 as i64, a[1], SI_USER)
}

fn sys_tkill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if (a[0] as i32) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    send(k, a[0] as i32 as i64, a[1], SI_TKILL)
}

fn sys_tgkill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if (a[1] as i32) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    send(k, a[1] as i32 as i64, a[2], SI_TKILL)
}

fn sys_rt_sigaction(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let n = a[0] as usize;
    if n == 0 || n > sig::MAX as usize || a[3] != 8 {
        return Err(Errno::EINVAL.into());
    }
    let unchangeable = n == sig::SIGKILL as usize || n == sig::SIGSTOP as usize;
    let old = k.cur().sigactions.get(n).copied().unwrap_or_default();
    if a[1] != 0 {
        if unchangeable {
            return Err(Errno::EINVAL.into());
        }
        let b = uread(k, a[1], Action::SIZE)?;
        let mut raw = [0u8; Action::SIZE];
        raw.copy_from_slice(&b);
        let new = Action::from_bytes(&raw);
        let p = k.cur();
        if let Some(slot) = p.sigactions.get_mut(n) {
            *slot = new;
        }
        // Setting a disposition that ignores the signal discards it if pending.
        if new.disposition(n as u32) == Disposition::Ignore {
            p.pending &= !bit(n as u32);
        }
    }
    if a[2] != 0 {
        uwrite(k, a[2], &old.to_bytes())?;
    }
    Ok(0)
}

fn sys_rt_sigprocmask(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[3] != 8 {
        return Err(Errno::EINVAL.into());
    }
    let old = k.cur().sigmask;
    if a[1] != 0 {
        let set = uu64(k, a[1])?;
        k.cur().sigmask = signal::apply_mask(old, a[0], set).map_err(|_| Fail::E(Errno::EINVAL))?;
    }
    if a[2] != 0 {
        uwrite(k, a[2], &old.to_le_bytes())?;
    }
    Ok(0)
}

fn sys_rt_sigpending(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[1] != 8 {
        return Err(Errno::EINVAL.into());
    }
    let p = k.cur();
    let set = p.pending & p.sigmask;
    uwrite(k, a[0], &set.to_le_bytes())?;
    Ok(0)
}

/// Waits with a temporary mask until a signal is delivered; the scheduler ends the wait
/// with `EINTR` and the handler frame restores the old mask on return.
fn sys_rt_sigsuspend(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if k.cur().saved_mask.is_some() {
        return Err(Fail::Block);
    }
    if a[1] != 8 {
        return Err(Errno::EINVAL.into());
    }
    let set = uu64(k, a[0])?;
    let p = k.cur();
    p.saved_mask = Some(p.sigmask);
    p.sigmask = set & !signal::UNBLOCKABLE;
    Err(Fail::Block)
}

/// Waits until a signal is delivered (`EINTR`).
fn sys_pause(_: &mut Kernel, _: [u64; 6]) -> Sys {
    Err(Fail::Block)
}

fn sys_rt_sigreturn(k: &mut Kernel, _: [u64; 6]) -> Sys {
    let pid = k.current;
    k.sigreturn(pid);
    Err(Fail::Gone)
}

/// The outcome of resolving a program for `execve` or a container start.
pub enum ExecError {
    /// An errno for `execve`.
    Errno(Errno),
    /// Not runnable as an executable: the reason (for the log).
    Format(ElfError),
    /// Memory ran out.
    Oom,
}

/// Replaces `pid`'s program with the file at `path` (from `cwd`).
pub fn exec(
    k: &mut Kernel,
    pid: Pid,
    path: &[u8],
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
) -> Result<(), ExecError> {
    let cwd = k.procs.get(&pid).map(|p| p.cwd).unwrap_or(Ino::ROOT);
    // `/proc/self/exe` is the running program (busybox re-executes itself through it).
    let self_exe;
    let path = if path == PROC_SELF_EXE {
        self_exe = k.procs.get(&pid).map(|p| p.exe.clone().into_bytes()).unwrap_or_default();
        &self_exe[..]
    } else {
        path
    };
    let abs;
    let path = if path.first() == Some(&b'/') {
        path
    } else {
        let mut p = k.fs.path_of(cwd).map_err(ExecError::Errno)?;
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(path);
        abs = p;
        &abs[..]
    };
    let ino = k.fs.lookup(cwd, path, true).map_err(ExecError::Errno)?;
    k.fs.check_exec(ino).map_err(ExecError::Errno)?;
    // Take the filesystem out so its file bytes can be read while the kernel is mutated.
    let fs = core::mem::take(&mut k.fs);
    let result = (|| {
        let bytes = fs.contents(ino).map_err(ExecError::Errno)?;
        let plan = elf::plan(bytes).map_err(ExecError::Format)?;
        let argv_refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let envp_refs: Vec<&[u8]> = envp.iter().map(Vec::as_slice).collect();
        let loaded = k.load_program(bytes, &plan, &argv_refs, &envp_refs, path).map_err(|e| match e {
            Ok(errno) => ExecError::Errno(errno),
            Err(_) => ExecError::Oom,
        })?;
        Ok((loaded, plan.brk_start))
    })();
    k.fs = fs;
    let ((aspace, regions, frame), brk_start) = result?;
    let Some(p) = k.procs.get_mut(&pid) else { return Ok(()) };
    if let Some(old) = p.aspace.replace(aspace) {
        old.destroy(&mut k.pool);
    }
    p.regions = regions;
    p.brk_start = brk_start;
    p.brk = brk_start;
    p.frame = frame;
    p.fs_base = 0;
    p.sleep_deadline = None;
    p.exe = String::from_utf8_lossy(path).into_owned();
    // Handlers do not survive the old program; ignored signals stay ignored.
    for s in p.sigactions.iter_mut() {
        if s.handler > 1 {
            *s = Action::default();
        }
    }
    p.saved_mask = None;
    let closing = p.fds.take_cloexec();
    p.fpu.copy_from(&mut k.fpu_template);
    if k.fpu_owner == Some(pid) {
        k.fpu_owner = None;
    }
    for e in closing {
        close_entry(&mut k.fs, e);
    }
    Ok(())
}

fn sys_execve(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    let argv = ustrv(k, a[1])?;
    let envp = ustrv(k, a[2])?;
    let pid = k.current;
    match exec(k, pid, &path, &argv, &envp) {
        Ok(()) => {
            if let Some(p) = k.procs.get_mut(&pid) {
                p.state = State::Runnable;
            }
            Err(Fail::Gone)
        }
        Err(ExecError::Errno(e)) => Err(e.into()),
        Err(ExecError::Format(e)) => {
            if e == ElfError::Dynamic {
                klog!(
                    "execve {}: dynamically linked (no dynamic loader): ENOEXEC",
                    String::from_utf8_lossy(&path)
                );
            }
            Err(Errno::ENOEXEC.into())
        }
        Err(ExecError::Oom) => Err(fault(k, MemFault::Oom)),
    }
}

// ----- files -----------------------------------------------------------------------------

/// Devices the kernel provides by path.
fn device(path: &[u8]) -> Option<Object> {
    match path {
        b"/dev/null" | b"/dev/stdin" => Some(Object::Null),
        b"/dev/zero" => Some(Object::Zero),
        b"/dev/stdout" => Some(Object::Log { stream: 1 }),
        b"/dev/stderr" => Some(Object::Log { stream: 2 }),
        _ => None,
    }
}

fn open_at(k: &mut Kernel, dirfd: u64, path: &[u8], flags: u32, mode: u32) -> Sys {
    let cloexec = flags & o::CLOEXEC != 0;
    let d = if let Some(obj) = device(path) {
        desc(obj, flags & !o::CLOEXEC)
    } else {
        let dir = dir_of(k, dirfd)?;
        let umask = k.cur().umask;
        let f = k.fs.open(dir, path, flags, mode & !umask & 0o7777)?;
        desc(Object::File(f), flags & !o::CLOEXEC)
    };
    let fd = k.cur().fds.install(FdEntry { desc: d.clone(), cloexec }, 0);
    match fd {
        Ok(fd) => Ok(fd),
        Err(e) => {
            close_entry(&mut k.fs, FdEntry { desc: d, cloexec });
            Err(e.into())
        }
    }
}

fn sys_open(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    open_at(k, AT_FDCWD, &path, a[1] as u32, a[2] as u32)
}

fn sys_openat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    open_at(k, a[0], &path, a[2] as u32, a[3] as u32)
}

fn sys_creat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    open_at(k, AT_FDCWD, &path, o::CREAT | o::WRONLY | o::TRUNC, a[1] as u32)
}

fn sys_close(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let e = k.cur().fds.take(a[0])?;
    close_entry(&mut k.fs, e);
    Ok(0)
}

/// Reads from a description into a kernel buffer of `len` bytes.
fn read_desc(k: &mut Kernel, fdn: u64, len: usize, at: Option<u64>) -> Result<Vec<u8>, Fail> {
    let d = k.cur().fds.desc(fdn)?;
    let mut b = d.borrow_mut();
    let nonblock = b.flags & o::NONBLOCK != 0;
    if b.flags & o::ACCMODE == o::WRONLY {
        return Err(Errno::EBADF.into());
    }
    let mut buf = try_buf(len.min(1 << 20))?;
    let n = match &mut b.obj {
        Object::Null => 0,
        Object::Zero => buf.len(),
        Object::Log { .. } => return Err(Errno::EBADF.into()),
        Object::File(f) => match at {
            Some(off) => f.pread(&k.fs, off, &mut buf)?,
            None => f.read(&k.fs, &mut buf)?,
        },
        Object::Pipe(p) => {
            if at.is_some() {
                return Err(Errno::ESPIPE.into());
            }
            if p.write {
                return Err(Errno::EBADF.into());
            }
            match p.pipe.borrow_mut().read(&mut buf) {
                Ok(n) => n,
                Err(Errno::EAGAIN) if !nonblock => return Err(Fail::Block),
                Err(e) => return Err(e.into()),
            }
        }
    };
    buf.truncate(n);
    Ok(buf)
}

/// Writes a kernel buffer to a description.
fn write_desc(k: &mut Kernel, fdn: u64, data: &[u8], at: Option<u64>) -> Sys {
    let d = k.cur().fds.desc(fdn)?;
    let container = k.cur().container;
    let mut b = d.borrow_mut();
    if b.flags & o::ACCMODE == o::RDONLY && !matches!(b.obj, Object::Log { .. } | Object::Pipe(_)) {
        return Err(Errno::EBADF.into());
    }
    let r = match &mut b.obj {
        Object::Null | Object::Zero => Ok(data.len()),
        Object::Log { stream } => {
            let s = *stream;
            k.log_output(container, s, data);
            Ok(data.len())
        }
        Object::File(f) => match at {
            Some(off) => k.fs.write(f.ino, off, data),
            None => f.write(&mut k.fs, data),
        },
        Object::Pipe(p) => {
            if !p.write {
                return Err(Errno::EBADF.into());
            }
            let r = p.pipe.borrow_mut().write(data);
            match r {
                Err(Errno::EAGAIN) if b.flags & o::NONBLOCK == 0 => return Err(Fail::Block),
                Err(Errno::EPIPE) => {
                    drop(b);
                    let me = k.current;
                    k.signal(me, sig::SIGPIPE);
                    if k.procs.get(&me).is_none_or(|p| matches!(p.state, State::Zombie(_))) {
                        return Err(Fail::Gone);
                    }
                    return Err(Errno::EPIPE.into());
                }
                r => r,
            }
        }
    };
    Ok(r? as u64)
}

fn sys_read(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let buf = read_desc(k, a[0], a[2] as usize, None)?;
    uwrite(k, a[1], &buf)?;
    ok(buf.len())
}

fn sys_pread64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let buf = read_desc(k, a[0], a[2] as usize, Some(a[3]))?;
    uwrite(k, a[1], &buf)?;
    ok(buf.len())
}

fn sys_write(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let data = uread(k, a[1], (a[2] as usize).min(1 << 20))?;
    write_desc(k, a[0], &data, None)
}

fn sys_pwrite64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let data = uread(k, a[1], (a[2] as usize).min(1 << 20))?;
    write_desc(k, a[0], &data, Some(a[3]))
}

fn iovecs(k: &mut Kernel, va: u64, n: u64) -> Result<Vec<(u64, u64)>, Fail> {
    if n > 1024 {
        return Err(Errno::EINVAL.into());
    }
    let raw = uread(k, va, n as usize * 16)?;
    Ok(raw
        .chunks_exact(16)
        .map(|c| {
            let b = u64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8]));
            let l = u64::from_le_bytes(c[8..].try_into().unwrap_or([0; 8]));
            (b, l)
        })
        .collect())
}

fn sys_writev(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let iov = iovecs(k, a[1], a[2])?;
    // At most 1 MiB per call (a short write, as Linux allows).
    let mut data = Vec::new();
    for (b, l) in iov {
        let room = (1usize << 20) - data.len();
        if room == 0 {
            break;
        }
        data.extend_from_slice(&uread(k, b, (l as usize).min(room))?);
    }
    write_desc(k, a[0], &data, None)
}

fn sys_sendfile(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let count = (a[3] as usize).min(1 << 20);
    let at = if a[2] != 0 { Some(uu64(k, a[2])?) } else { None };
    let data = read_desc(k, a[1], count, at)?;
    if data.is_empty() {
        return Ok(0);
    }
    let n = write_desc(k, a[0], &data, None)?;
    if let Some(off) = at {
        uwrite(k, a[2], &(off + n).to_le_bytes())?;
    } else if (n as usize) < data.len() {
        // Give back what was read but not written.
        let d = k.cur().fds.desc(a[1])?;
        let mut b = d.borrow_mut();
        if let Object::File(f) = &mut b.obj {
            f.offset -= (data.len() - n as usize) as u64;
        }
    }
    Ok(n)
}

fn sys_readv(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let iov = iovecs(k, a[1], a[2])?;
    let total: u64 = iov.iter().map(|x| x.1).sum();
    let buf = read_desc(k, a[0], total as usize, None)?;
    let mut at = 0usize;
    for (b, l) in iov {
        if at >= buf.len() {
            break;
        }
        let n = (l as usize).min(buf.len() - at);
        uwrite(k, b, &buf[at..at + n])?;
        at += n;
    }
    ok(buf.len())
}

fn sys_lseek(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let mut b = d.borrow_mut();
    match &mut b.obj {
        Object::File(f) => Ok(f.lseek(&k.fs, a[1] as i64, a[2] as u32)?),
        Object::Null | Object::Zero => Ok(0),
        _ => Err(Errno::ESPIPE.into()),
    }
}

fn dev_stat(mode: u32, rdev: u64) -> Stat {
    Stat {
        dev: 0x5,
        ino: rdev,
        mode,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev,
        size: 0,
        blksize: 4096,
        blocks: 0,
        atime: Timespec::default(),
        mtime: Timespec::default(),
        ctime: Timespec::default(),
    }
}

fn stat_of_fd(k: &mut Kernel, fdn: u64) -> Result<Stat, Fail> {
    let d = k.cur().fds.desc(fdn)?;
    let b = d.borrow();
    Ok(match &b.obj {
        Object::File(f) => k.fs.stat(f.ino)?,
        Object::Null => dev_stat(S_IFCHR | 0o666, 0x103),
        Object::Zero => dev_stat(S_IFCHR | 0o666, 0x105),
        Object::Log { .. } => dev_stat(S_IFIFO | 0o600, 0x900),
        Object::Pipe(_) => dev_stat(S_IFIFO | 0o600, 0x901),
    })
}

fn stat_at(k: &mut Kernel, dirfd: u64, path_va: u64, flags: u64) -> Result<Stat, Fail> {
    let path = ucstr(k, path_va)?;
    if path.is_empty() {
        if flags & AT_EMPTY_PATH != 0 {
            if dirfd as u32 as i32 == -100 {
                let cwd = k.cur().cwd;
                return Ok(k.fs.stat(cwd)?);
            }
            return stat_of_fd(k, dirfd);
        }
        return Err(Errno::ENOENT.into());
    }
    match device(&path) {
        Some(Object::Null) => return Ok(dev_stat(S_IFCHR | 0o666, 0x103)),
        Some(Object::Zero) => return Ok(dev_stat(S_IFCHR | 0o666, 0x105)),
        _ => {}
    }
    let dir = dir_of(k, dirfd)?;
    let ino = k.fs.lookup(dir, &path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    Ok(k.fs.stat(ino)?)
}

fn sys_fstat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_of_fd(k, a[0])?;
    uwrite(k, a[1], &s.to_linux_bytes())?;
    Ok(0)
}

fn sys_stat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, AT_FDCWD, a[0], 0)?;
    uwrite(k, a[1], &s.to_linux_bytes())?;
    Ok(0)
}

fn sys_lstat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, AT_FDCWD, a[0], AT_SYMLINK_NOFOLLOW)?;
    uwrite(k, a[1], &s.to_linux_bytes())?;
    Ok(0)
}

fn sys_newfstatat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, a[0], a[1], a[3])?;
    uwrite(k, a[2], &s.to_linux_bytes())?;
    Ok(0)
}

fn sys_statx(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = stat_at(k, a[0], a[1], a[2])?;
    uwrite(k, a[4], &s.to_statx_bytes())?;
    Ok(0)
}

fn sys_getdents64(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let mut buf = try_buf((a[2] as usize).min(65536))?;
    let n = {
        let mut b = d.borrow_mut();
        match &mut b.obj {
            Object::File(f) => f.getdents64(&k.fs, &mut buf)?,
            _ => return Err(Errno::ENOTDIR.into()),
        }
    };
    uwrite(k, a[1], &buf[..n])?;
    ok(n)
}

fn sys_ioctl(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().fds.get(a[0])?;
    // Nothing here is a terminal: TCGETS, TIOCGWINSZ and the rest answer ENOTTY.
    Err(Errno::ENOTTY.into())
}

fn sys_fcntl(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (fdn, cmd, arg) = (a[0], a[1], a[2]);
    let entry = k.cur().fds.get(fdn)?.clone();
    match cmd {
        0 | 1030 => {
            let e = FdEntry { desc: entry.desc, cloexec: cmd == 1030 };
            Ok(k.cur().fds.install(e, arg as usize)?)
        }
        1 => Ok(u64::from(entry.cloexec)),
        2 => {
            k.cur().fds.set_cloexec(fdn, arg & 1 != 0)?;
            Ok(0)
        }
        3 => Ok(u64::from(entry.desc.borrow().flags)),
        4 => {
            let mut b = entry.desc.borrow_mut();
            let settable = o::APPEND | o::NONBLOCK;
            b.flags = (b.flags & !settable) | (arg as u32 & settable);
            let fl = b.flags;
            if let Object::File(f) = &mut b.obj {
                f.flags = (f.flags & !settable) | (fl & settable);
            }
            Ok(0)
        }
        5..=7 => Ok(0), // record locks: nothing else can hold one
        _ => Err(Errno::EINVAL.into()),
    }
}

fn sys_dup(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let e = k.cur().fds.get(a[0])?.clone();
    Ok(k.cur().fds.install(FdEntry { desc: e.desc, cloexec: false }, 0)?)
}

fn dup_to(k: &mut Kernel, old: u64, new: u64, cloexec: bool) -> Sys {
    let e = k.cur().fds.get(old)?.clone();
    let prev = k.cur().fds.replace(new, FdEntry { desc: e.desc, cloexec })?;
    if let Some(p) = prev {
        close_entry(&mut k.fs, p);
    }
    Ok(new)
}

fn sys_dup2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] == a[1] {
        k.cur().fds.get(a[0])?;
        return Ok(a[1]);
    }
    dup_to(k, a[0], a[1], false)
}

fn sys_dup3(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] == a[1] || a[2] & !u64::from(o::CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    dup_to(k, a[0], a[1], a[2] & u64::from(o::CLOEXEC) != 0)
}

fn sys_pipe2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let flags = a[1] as u32;
    let cloexec = flags & o::CLOEXEC != 0;
    let pipe = alloc::rc::Rc::new(core::cell::RefCell::new(Pipe::new()));
    let r =
        desc(Object::Pipe(PipeEnd { pipe: pipe.clone(), write: false }), o::RDONLY | (flags & o::NONBLOCK));
    let w = desc(Object::Pipe(PipeEnd { pipe, write: true }), o::WRONLY | (flags & o::NONBLOCK));
    let rfd = k.cur().fds.install(FdEntry { desc: r, cloexec }, 0)?;
    let wfd = match k.cur().fds.install(FdEntry { desc: w, cloexec }, 0) {
        Ok(w) => w,
        Err(e) => {
            let _ = k.cur().fds.take(rfd);
            return Err(e.into());
        }
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(rfd as u32).to_le_bytes());
    b[4..].copy_from_slice(&(wfd as u32).to_le_bytes());
    if let Err(e) = uwrite(k, a[0], &b) {
        let _ = k.cur().fds.take(rfd);
        let _ = k.cur().fds.take(wfd);
        return Err(e);
    }
    Ok(0)
}

fn sys_pipe(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_pipe2(k, [a[0], 0, 0, 0, 0, 0])
}

fn sys_getcwd(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let cwd = k.cur().cwd;
    let mut p = k.fs.path_of(cwd)?;
    p.push(0);
    if p.len() as u64 > a[1] {
        return Err(Errno::ERANGE.into());
    }
    uwrite(k, a[0], &p)?;
    ok(p.len())
}

fn set_cwd(k: &mut Kernel, ino: Ino) -> Sys {
    if k.fs.file_type(ino)? != FileType::Dir {
        return Err(Errno::ENOTDIR.into());
    }
    k.cur().cwd = ino;
    Ok(0)
}

fn sys_chdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    let cwd = k.cur().cwd;
    let ino = k.fs.lookup(cwd, &path, true)?;
    set_cwd(k, ino)
}

fn sys_fchdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let ino = match &d.borrow().obj {
        Object::File(f) => f.ino,
        _ => return Err(Errno::ENOTDIR.into()),
    };
    set_cwd(k, ino)
}

fn parent_of(k: &mut Kernel, dirfd: u64, path_va: u64) -> Result<(Ino, Vec<u8>), Fail> {
    let path = ucstr(k, path_va)?;
    let dir = dir_of(k, dirfd)?;
    Ok(k.fs.lookup_parent(dir, &path)?)
}

fn sys_mkdirat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (dir, name) = parent_of(k, a[0], a[1])?;
    let umask = k.cur().umask;
    k.fs.mkdir(dir, &name, a[2] as u32 & !umask & 0o7777)?;
    Ok(0)
}

fn sys_mkdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_mkdirat(k, [AT_FDCWD, a[0], a[1], 0, 0, 0])
}

fn sys_unlinkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (dir, name) = parent_of(k, a[0], a[1])?;
    if a[2] & AT_REMOVEDIR != 0 {
        k.fs.rmdir(dir, &name)?;
    } else {
        k.fs.unlink(dir, &name)?;
    }
    Ok(0)
}

fn sys_unlink(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_unlinkat(k, [AT_FDCWD, a[0], 0, 0, 0, 0])
}

fn sys_rmdir(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_unlinkat(k, [AT_FDCWD, a[0], AT_REMOVEDIR, 0, 0, 0])
}

fn sys_renameat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (od, on) = parent_of(k, a[0], a[1])?;
    let (nd, nn) = parent_of(k, a[2], a[3])?;
    k.fs.rename(od, &on, nd, &nn)?;
    Ok(0)
}

fn sys_renameat2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[4] != 0 {
        return Err(Errno::EINVAL.into());
    }
    sys_renameat(k, a)
}

fn sys_rename(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_renameat(k, [AT_FDCWD, a[0], AT_FDCWD, a[1], 0, 0])
}

fn sys_symlinkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let target = ucstr(k, a[0])?;
    let (dir, name) = parent_of(k, a[1], a[2])?;
    k.fs.symlink(dir, &name, &target)?;
    Ok(0)
}

fn sys_symlink(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_symlinkat(k, [a[0], AT_FDCWD, a[1], 0, 0, 0])
}

fn sys_linkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let old = ucstr(k, a[1])?;
    let odir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(odir, &old, a[4] & 0x400 != 0)?;
    let (dir, name) = parent_of(k, a[2], a[3])?;
    k.fs.link(ino, dir, &name)?;
    Ok(0)
}

fn sys_link(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_linkat(k, [AT_FDCWD, a[0], AT_FDCWD, a[1], 0, 0])
}

/// The path that names the running program.
const PROC_SELF_EXE: &[u8] = b"/proc/self/exe";

fn sys_readlinkat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    if path == PROC_SELF_EXE {
        let exe = k.cur().exe.clone().into_bytes();
        let n = exe.len().min(a[3] as usize);
        uwrite(k, a[2], &exe[..n])?;
        return ok(n);
    }
    let dir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(dir, &path, false)?;
    let target = k.fs.readlink(ino)?.to_vec();
    let n = target.len().min(a[3] as usize);
    uwrite(k, a[2], &target[..n])?;
    ok(n)
}

fn sys_readlink(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_readlinkat(k, [AT_FDCWD, a[0], a[1], a[2], 0, 0])
}

fn sys_fchmodat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    let dir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(dir, &path, true)?;
    k.fs.chmod(ino, a[2] as u32 & 0o7777)?;
    Ok(0)
}

fn sys_chmod(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_fchmodat(k, [AT_FDCWD, a[0], a[1], 0, 0, 0])
}

fn sys_fchmod(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let ino = match &d.borrow().obj {
        Object::File(f) => f.ino,
        _ => return Ok(0),
    };
    k.fs.chmod(ino, a[1] as u32 & 0o7777)?;
    Ok(0)
}

fn sys_faccessat(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[1])?;
    if device(&path).is_some() {
        return Ok(0);
    }
    let dir = dir_of(k, a[0])?;
    let ino = k.fs.lookup(dir, &path, a[3] & AT_SYMLINK_NOFOLLOW == 0)?;
    k.fs.access(ino, a[2] as u32)?;
    Ok(0)
}

fn sys_faccessat2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_faccessat(k, a)
}

fn sys_access(k: &mut Kernel, a: [u64; 6]) -> Sys {
    sys_faccessat(k, [AT_FDCWD, a[0], a[1], 0, 0, 0])
}

fn sys_truncate(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    let cwd = k.cur().cwd;
    let ino = k.fs.lookup(cwd, &path, true)?;
    k.fs.truncate(ino, a[1])?;
    Ok(0)
}

fn sys_ftruncate(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = k.cur().fds.desc(a[0])?;
    let ino = match &d.borrow().obj {
        Object::File(f) if f.writable() => f.ino,
        _ => return Err(Errno::EINVAL.into()),
    };
    k.fs.truncate(ino, a[1])?;
    Ok(0)
}

/// The time the filesystem stamps on changes.
pub fn tick_fs_time(k: &mut Kernel) {
    let t = now_timespec(k);
    k.fs.set_time(t);
}
