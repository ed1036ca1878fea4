//! Processes: ids, fork and clone, exit and wait, `execve`, and per-process settings.

use alloc::string::String;
use alloc::vec::Vec;

use crx_fs::Errno;
use crx_guest::posix::{fs_base_allowed, Exit};
use crx_guest::signal::FaultContext;

use super::{fault, ucstr, ustrv, uwrite, Fail, Sys};
use crate::kernel::arch;
use crate::kernel::exec::{exec, ExecError};
use crate::kernel::klog;
use crate::kernel::proc::{Kernel, MemFault, Pid, State};

pub(super) fn sys_getpid(k: &mut Kernel, _: [u64; 6]) -> Sys {
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

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;
const CLONE_THREAD: u64 = 0x1_0000;

pub(super) fn sys_fork(k: &mut Kernel, _: [u64; 6]) -> Sys {
    do_clone(k, 0, 0, 0, 0, 0)
}

pub(super) fn sys_clone(k: &mut Kernel, a: [u64; 6]) -> Sys {
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
    // As `arch_prctl(ARCH_SET_FS)`: the child's FS base is written when it first runs.
    if flags & CLONE_SETTLS != 0 && !fs_base_allowed(tls) {
        return Err(Errno::EPERM.into());
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

pub(super) fn sys_exit(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let pid = k.current;
    k.terminate(pid, Exit::Code(a[0] as u8));
    Err(Fail::Gone)
}

pub(super) fn sys_wait4(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

pub(super) fn sys_execve(k: &mut Kernel, a: [u64; 6]) -> Sys {
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
        Err(ExecError::Oom) => Err(fault(k, MemFault::Oom)),
        Err(e) => {
            if let Some(why) = e.interp_reason() {
                klog!("execve {}: {why}: {}", String::from_utf8_lossy(&path), e.errno().name());
            }
            Err(e.errno().into())
        }
    }
}
