//! The Linux x86_64 syscall table and its dispatch.
//!
//! [`TABLE`] maps numbers to handlers, one line each; the handlers live in one file per
//! family ([`fs`], [`futex`], [`mm`], [`net`], [`poll`], [`process`], [`procfs`], [`signal`], [`time`], [`misc`]). Every handler has the
//! signature `fn(&mut Kernel, [u64; 6]) -> Sys` and reaches user memory only through the
//! checked copies of [`UserMem`](super::proc::UserMem) (a bad pointer gives `EFAULT`). An
//! unknown number returns `ENOSYS` and is logged once with its name. A handler that must wait
//! returns [`Fail::Block`]; the scheduler calls it again later with the same registers.
#![deny(unsafe_code)]

mod fs;
mod futex;
mod misc;
mod mm;
mod net;
mod poll;
mod process;
mod procfs;
mod signal;
mod time;

use alloc::vec::Vec;

use crx_fs::Errno;
use crx_guest::sysno;

use super::klog;
use super::proc::{Kernel, MemFault, Pid, State};

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
    (0, fs::sys_read),
    (1, fs::sys_write),
    (2, fs::sys_open),
    (3, fs::sys_close),
    (4, fs::sys_stat),
    (5, fs::sys_fstat),
    (6, fs::sys_lstat),
    (7, poll::sys_poll),
    (8, fs::sys_lseek),
    (9, mm::sys_mmap),
    (10, mm::sys_mprotect),
    (11, mm::sys_munmap),
    (12, mm::sys_brk),
    (13, signal::sys_rt_sigaction),
    (14, signal::sys_rt_sigprocmask),
    (15, signal::sys_rt_sigreturn),
    (16, fs::sys_ioctl),
    (17, fs::sys_pread64),
    (18, fs::sys_pwrite64),
    (19, fs::sys_readv),
    (20, fs::sys_writev),
    (21, fs::sys_access),
    (22, fs::sys_pipe),
    (23, poll::sys_select),
    (24, process::sys_sched_yield),
    (25, mm::sys_mremap),
    (26, misc::sys_zero), // msync: no shared writable file mappings to write back
    (28, mm::sys_madvise),
    (32, fs::sys_dup),
    (33, fs::sys_dup2),
    (34, signal::sys_pause),
    (35, time::sys_nanosleep),
    (36, time::sys_getitimer),
    (37, time::sys_alarm),
    (38, time::sys_setitimer),
    (39, process::sys_getpid),
    (40, fs::sys_sendfile),
    (41, net::sys_socket),
    (42, net::sys_connect),
    (43, net::sys_accept),
    (44, net::sys_sendto),
    (45, net::sys_recvfrom),
    (46, net::sys_sendmsg),
    (47, net::sys_recvmsg),
    (48, net::sys_shutdown),
    (49, net::sys_bind),
    (50, net::sys_listen),
    (51, net::sys_getsockname),
    (52, net::sys_getpeername),
    (53, net::sys_socketpair),
    (54, net::sys_setsockopt),
    (55, net::sys_getsockopt),
    (56, process::sys_clone),
    (57, process::sys_fork),
    (58, process::sys_fork), // vfork, as fork
    (59, process::sys_execve),
    (60, process::sys_exit),
    (61, process::sys_wait4),
    (62, signal::sys_kill),
    (63, misc::sys_uname),
    (72, fs::sys_fcntl),
    (74, misc::sys_zero), // fsync
    (75, misc::sys_zero), // fdatasync
    (76, fs::sys_truncate),
    (77, fs::sys_ftruncate),
    (79, fs::sys_getcwd),
    (80, fs::sys_chdir),
    (81, fs::sys_fchdir),
    (82, fs::sys_rename),
    (83, fs::sys_mkdir),
    (84, fs::sys_rmdir),
    (85, fs::sys_creat),
    (86, fs::sys_link),
    (87, fs::sys_unlink),
    (88, fs::sys_symlink),
    (89, fs::sys_readlink),
    (90, fs::sys_chmod),
    (91, fs::sys_fchmod),
    (92, misc::sys_zero), // chown
    (93, misc::sys_zero), // fchown
    (94, misc::sys_zero), // lchown
    (95, process::sys_umask),
    (96, time::sys_gettimeofday),
    (97, misc::sys_getrlimit),
    (98, misc::sys_getrusage),
    (99, misc::sys_sysinfo),
    (100, time::sys_times),
    (102, misc::sys_zero), // getuid
    (104, misc::sys_zero), // getgid
    (105, misc::sys_zero), // setuid
    (106, misc::sys_zero), // setgid
    (107, misc::sys_zero), // geteuid
    (108, misc::sys_zero), // getegid
    (109, misc::sys_zero), // setpgid
    (110, process::sys_getppid),
    (111, process::sys_getpgrp),
    (112, process::sys_getpid), // setsid
    (115, misc::sys_zero),      // getgroups
    (116, misc::sys_zero),      // setgroups
    (117, misc::sys_zero),      // setresuid
    (118, process::sys_getresid),
    (119, misc::sys_zero), // setresgid
    (120, process::sys_getresid),
    (121, process::sys_getpgrp), // getpgid
    (124, process::sys_getpgrp), // getsid
    (127, signal::sys_rt_sigpending),
    (128, signal::sys_rt_sigtimedwait),
    (130, signal::sys_rt_sigsuspend),
    (131, signal::sys_sigaltstack),
    (137, fs::sys_statfs),
    (138, fs::sys_fstatfs),
    (157, misc::sys_zero), // prctl
    (158, process::sys_arch_prctl),
    (186, process::sys_gettid),
    (188, fs::sys_setxattr),
    (189, fs::sys_lsetxattr),
    (190, fs::sys_fsetxattr),
    (191, fs::sys_getxattr),
    (192, fs::sys_lgetxattr),
    (193, fs::sys_fgetxattr),
    (194, fs::sys_listxattr),
    (195, fs::sys_llistxattr),
    (196, fs::sys_flistxattr),
    (200, signal::sys_tkill),
    (201, time::sys_time),
    (202, futex::sys_futex),
    (203, misc::sys_sched_setaffinity),
    (204, misc::sys_sched_getaffinity),
    (213, poll::sys_epoll_create),
    (217, fs::sys_getdents64),
    (218, process::sys_set_tid_address),
    (221, fs::sys_fadvise64),
    (228, time::sys_clock_gettime),
    (229, time::sys_clock_getres),
    (230, time::sys_clock_nanosleep),
    (231, process::sys_exit_group),
    (232, poll::sys_epoll_wait),
    (233, poll::sys_epoll_ctl),
    (234, signal::sys_tgkill),
    (257, fs::sys_openat),
    (258, fs::sys_mkdirat),
    (260, misc::sys_zero), // fchownat
    (262, fs::sys_newfstatat),
    (263, fs::sys_unlinkat),
    (264, fs::sys_renameat),
    (265, fs::sys_linkat),
    (266, fs::sys_symlinkat),
    (267, fs::sys_readlinkat),
    (268, fs::sys_fchmodat),
    (269, fs::sys_faccessat),
    (270, poll::sys_pselect6),
    (271, poll::sys_ppoll),
    (273, process::sys_set_robust_list),
    (274, process::sys_get_robust_list),
    (280, misc::sys_zero), // utimensat
    (281, poll::sys_epoll_pwait),
    (283, poll::sys_timerfd_create),
    (284, poll::sys_eventfd),
    (286, poll::sys_timerfd_settime),
    (287, poll::sys_timerfd_gettime),
    (288, net::sys_accept4),
    (290, poll::sys_eventfd2),
    (291, poll::sys_epoll_create1),
    (292, fs::sys_dup3),
    (293, fs::sys_pipe2),
    (302, misc::sys_prlimit64),
    (309, misc::sys_zero), // getcpu
    (316, fs::sys_renameat2),
    (318, misc::sys_getrandom),
    (332, fs::sys_statx),
    (334, misc::sys_enosys), // rseq: glibc copes without it
    (435, process::sys_clone3),
    (439, fs::sys_faccessat2),
    (441, poll::sys_epoll_pwait2),
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
    if !p.state.is_live() {
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

fn ok(n: usize) -> Sys {
    Ok(n as u64)
}

/// Gathers the user buffers of `iov` (address, length pairs) into one kernel buffer of at
/// most 1 MiB (a longer transfer is a short one, as Linux allows).
fn gather(k: &mut Kernel, iov: &[(u64, u64)]) -> Result<Vec<u8>, Fail> {
    let mut data = Vec::new();
    for &(b, l) in iov {
        let room = (1usize << 20) - data.len();
        if room == 0 {
            break;
        }
        data.extend_from_slice(&uread(k, b, (l as usize).min(room))?);
    }
    Ok(data)
}

/// Scatters `buf` over the user buffers of `iov`, in order.
fn scatter(k: &mut Kernel, iov: &[(u64, u64)], buf: &[u8]) -> Result<(), Fail> {
    let mut at = 0usize;
    for &(b, l) in iov {
        if at >= buf.len() {
            break;
        }
        let n = (l as usize).min(buf.len() - at);
        uwrite(k, b, &buf[at..at + n])?;
        at += n;
    }
    Ok(())
}

/// Reads `n` (at most 1024) `struct iovec`s at `va`.
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
