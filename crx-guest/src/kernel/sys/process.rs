//! Processes: ids, fork and clone, exit and wait, `execve`, and per-process settings.

use alloc::string::String;
use alloc::vec::Vec;

use crx_fs::Errno;
use crx_guest::posix::{fs_base_allowed, Exit};
use crx_guest::signal::FaultContext;
use crx_guest::threads::{
    CloneArgs, CloneError, CLONE_ARGS_VER0, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_FILES,
    CLONE_PARENT, CLONE_PARENT_SETTID, CLONE_SETTLS, CLONE_SIGHAND, CLONE_THREAD, CLONE_VFORK, CLONE_VM,
};

use super::{fault, ucstr, uread, ustrv, uwrite, Fail, Sys};
use crate::kernel::arch;
use crate::kernel::exec::{exec, ExecError};
use crate::kernel::klog;
use crate::kernel::proc::{Kernel, MemFault, Mm, Pid, Shared, State};

pub(super) fn sys_getpid(k: &mut Kernel, _: [u64; 6]) -> Sys {
    Ok(u64::from(k.cur().tgid))
}

pub(super) fn sys_gettid(k: &mut Kernel, _: [u64; 6]) -> Sys {
    Ok(u64::from(k.current))
}

pub(super) fn sys_getppid(k: &mut Kernel, _: [u64; 6]) -> Sys {
    Ok(u64::from(k.cur().ppid))
}

pub(super) fn sys_getpgrp(k: &mut Kernel, _: [u64; 6]) -> Sys {
    let c = k.cur().container as usize;
    Ok(u64::from(k.containers.get(c).and_then(|c| c.root).unwrap_or(k.current)))
}

pub(super) fn sys_getresid(k: &mut Kernel, a: [u64; 6]) -> Sys {
    for p in &a[..3] {
        uwrite(k, *p, &0u32.to_le_bytes())?;
    }
    Ok(0)
}

pub(super) fn sys_umask(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let p = k.cur();
    let old = p.umask;
    p.umask = (a[0] & 0o777) as u32;
    Ok(u64::from(old))
}

pub(super) fn sys_sched_yield(k: &mut Kernel, _: [u64; 6]) -> Sys {
    k.yield_requested = true;
    Ok(0)
}

/// `set_tid_address(tidptr)`: the word cleared and woken when the thread ends.
pub(super) fn sys_set_tid_address(k: &mut Kernel, a: [u64; 6]) -> Sys {
    k.cur().clear_child_tid = a[0];
    Ok(u64::from(k.current))
}

pub(super) fn sys_arch_prctl(k: &mut Kernel, a: [u64; 6]) -> Sys {
    match a[0] {
        0x1002 => {
            if !fs_base_allowed(a[1]) {
                return Err(Errno::EPERM.into());
            }
            k.cur().fs_base = a[1];
            arch::set_fs_base(a[1]);
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

pub(super) fn sys_fork(k: &mut Kernel, _: [u64; 6]) -> Sys {
    do_clone(
        k,
        CloneArgs {
            flags: u64::from(crx_guest::posix::sig::SIGCHLD),
            stack: 0,
            parent_tid: 0,
            child_tid: 0,
            tls: 0,
        },
    )
}

/// `clone(flags, stack, parent_tid, child_tid, tls)` (the x86_64 argument order).
pub(super) fn sys_clone(k: &mut Kernel, a: [u64; 6]) -> Sys {
    do_clone(k, CloneArgs { flags: a[0], stack: a[1], parent_tid: a[2], child_tid: a[3], tls: a[4] })
}

/// `clone3(args, size)`: see [`CloneArgs::from_clone3`].
pub(super) fn sys_clone3(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let size = a[1] as usize;
    if !(CLONE_ARGS_VER0..=4096).contains(&size) {
        return Err(Errno::EINVAL.into());
    }
    let b = uread(k, a[0], size)?;
    match CloneArgs::from_clone3(&b) {
        Ok(c) => do_clone(k, c),
        Err(CloneError::Invalid) => Err(Errno::EINVAL.into()),
        Err(CloneError::TooBig) => Err(Fail::Raw(-7)), // E2BIG
    }
}

fn do_clone(k: &mut Kernel, c: CloneArgs) -> Sys {
    let me = k.current;
    // A `CLONE_VFORK` parent's call is retried until its child has exec'd or ended.
    if let Some(child) = k.cur().vfork_child {
        let waiting = k.procs.get(&child).is_some_and(|p| p.in_vfork && p.state.is_live());
        if waiting {
            return Err(Fail::Block);
        }
        k.cur().vfork_child = None;
        return Ok(u64::from(child));
    }
    let flags = c.flags;
    c.check().map_err(|_| Fail::E(Errno::EINVAL))?;
    if k.process_count() >= k.process_limit {
        return Err(Errno::EAGAIN.into());
    }
    // As `arch_prctl(ARCH_SET_FS)`: the child's FS base is written when it first runs.
    if flags & CLONE_SETTLS != 0 && !fs_base_allowed(c.tls) {
        return Err(Errno::EPERM.into());
    }
    let mm = {
        let p = k.procs.get(&me).ok_or(Fail::Gone)?;
        let Some(mm) = p.mm.as_ref() else { return Err(Fail::Gone) };
        if flags & CLONE_VM != 0 {
            mm.share()
        } else {
            let parent = mm.borrow();
            let aspace = match parent.aspace.fork(&k.kt, &mut k.pool) {
                Ok(a) => a,
                Err(_) => {
                    drop(parent);
                    return Err(fault(k, MemFault::Oom));
                }
            };
            Shared::new(Mm {
                aspace,
                regions: parent.regions.clone(),
                brk_start: parent.brk_start,
                brk: parent.brk,
            })
        }
    };
    let pid = k.next_pid;
    k.next_pid += 1;
    let (parent_tgid, parent_ppid, container) = {
        let p = k.cur();
        (p.tgid, p.ppid, p.container)
    };
    let thread = flags & CLONE_THREAD != 0;
    let ppid = if thread || flags & CLONE_PARENT != 0 { parent_ppid } else { parent_tgid };
    let mut child = k.blank_process(pid, ppid, container, None);
    child.mm = Some(mm);
    {
        let fpu_owner = k.fpu_owner;
        let fmt = k.fpu_fmt;
        let parent = k.procs.get_mut(&me).ok_or(Fail::Gone)?;
        if fpu_owner == Some(me) {
            parent.fpu.save(&fmt);
        }
        child.tgid = if thread { parent_tgid } else { pid };
        child.fpu.copy_from(&mut parent.fpu);
        child.frame = parent.frame;
        child.frame.rax = 0;
        if c.stack != 0 {
            child.frame.rsp = c.stack;
        }
        child.fs_base = if flags & CLONE_SETTLS != 0 { c.tls } else { parent.fs_base };
        child.fds = if flags & CLONE_FILES != 0 { parent.fds.share() } else { parent.fds.duplicate() };
        child.cwd = parent.cwd;
        child.umask = parent.umask;
        child.sigactions = if flags & CLONE_SIGHAND != 0 {
            parent.sigactions.share()
        } else {
            parent.sigactions.duplicate()
        };
        child.sigmask = parent.sigmask;
        child.fault_ctx = FaultContext::default();
        child.exe = parent.exe.clone();
        // A new thread starts without an alternate signal stack; a forked child keeps it.
        if !thread {
            child.altstack = parent.altstack;
        }
        if flags & CLONE_CHILD_CLEARTID != 0 {
            child.clear_child_tid = c.child_tid;
        }
        child.in_vfork = flags & CLONE_VFORK != 0;
    }
    let _ = k.fs.retain(child.cwd);
    k.procs.insert(pid, child);
    if flags & CLONE_CHILD_SETTID != 0 {
        if let Some(mut m) = k.mem(pid) {
            let _ = m.write(c.child_tid, &pid.to_le_bytes());
        }
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        uwrite(k, c.parent_tid, &pid.to_le_bytes())?;
    }
    if flags & CLONE_VFORK != 0 {
        k.cur().vfork_child = Some(pid);
        return Err(Fail::Block);
    }
    Ok(u64::from(pid))
}

/// `exit`: the calling thread ends; its process ends with its last thread.
pub(super) fn sys_exit(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let pid = k.current;
    k.exit_thread(pid, a[0] as u8);
    Err(Fail::Gone)
}

/// `exit_group`: every thread of the process ends.
pub(super) fn sys_exit_group(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let pid = k.current;
    k.terminate(pid, Exit::Code(a[0] as u8));
    Err(Fail::Gone)
}

/// `set_robust_list(head, len)`: `len` must be the size of `struct robust_list_head` (24).
pub(super) fn sys_set_robust_list(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[1] != 24 {
        return Err(Errno::EINVAL.into());
    }
    k.cur().robust_list = a[0];
    Ok(0)
}

/// `get_robust_list(tid, head_ptr, len_ptr)`: of the caller (0) or a thread of its process.
pub(super) fn sys_get_robust_list(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let me = k.current;
    let tid = if a[0] == 0 { me } else { a[0] as Pid };
    let my_tgid = k.cur().tgid;
    let head = match k.procs.get(&tid) {
        Some(p) if p.tgid == my_tgid && p.state.is_live() => p.robust_list,
        Some(_) => return Err(Errno::EPERM.into()),
        None => return Err(Errno::ESRCH.into()),
    };
    uwrite(k, a[1], &head.to_le_bytes())?;
    uwrite(k, a[2], &24u64.to_le_bytes())?;
    Ok(0)
}

pub(super) fn sys_wait4(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (want, status, options) = (a[0] as i32 as i64, a[1], a[2]);
    let me = k.cur().tgid;
    // The children of the process (any of its threads may wait for them); a child whose
    // first thread ended while others run is not waitable yet.
    let children: Vec<(Pid, State)> = k
        .procs
        .values()
        .filter(|p| p.ppid == me && p.pid == p.tgid && p.pid != me)
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
        let used = k.process_cpu_ns(pid).saturating_add(k.procs.get(&pid).map_or(0, |p| p.children_ns));
        if a[3] != 0 {
            uwrite(k, a[3], &rusage(used))?;
        }
        k.procs.remove(&pid);
        if let Some(l) = k.procs.get_mut(&me) {
            l.children_ns = l.children_ns.saturating_add(used);
        }
        return Ok(u64::from(pid));
    }
    if options & 1 != 0 {
        return Ok(0);
    }
    Err(Fail::Block)
}

pub(super) fn sys_execve(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let path = ucstr(k, a[0])?;
    let argv = ustrv(k, a[1])?;
    let envp = ustrv(k, a[2])?;
    let pid = k.current;
    match exec(k, pid, &path, &argv, &envp) {
        Ok(()) => {
            // The caller may have taken its process's id (exec in a thread).
            let pid = k.current;
            if let Some(p) = k.procs.get_mut(&pid) {
                p.state = State::Runnable;
            }
            Err(Fail::Gone)
        }
        Err(ExecError::Oom) => Err(fault(k, MemFault::Oom)),
        Err(e) => {
            if let Some(why) = e.interp_reason() {
                klog!("execve {}: {why}: {}", String::from_utf8_lossy(&path), e.errno().name());
            }
            Err(e.errno().into())
        }
    }
}

/// A `struct rusage` with `used` as its user time (144 bytes; the rest is 0).
pub(super) fn rusage(used: u64) -> [u8; 144] {
    let mut b = [0u8; 144];
    b[..8].copy_from_slice(&(used / 1_000_000_000).to_le_bytes());
    b[8..16].copy_from_slice(&(used % 1_000_000_000 / 1000).to_le_bytes());
    b
}
