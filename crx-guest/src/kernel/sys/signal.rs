//! Signals: sending, dispositions, masks, waiting for one and returning from a handler.

use alloc::vec::Vec;

use crx_fs::Errno;
use crx_guest::posix::sig;
use crx_guest::signal::{self, bit, Action, AltStack, Disposition, SigInfo, SI_TKILL, SI_USER};

use super::{uread, uu64, uwrite, Fail, Sys};
use crate::kernel::proc::{Kernel, Pid, Process, State};

/// Whether `p` is a process (its first thread) that has not ended.
fn is_process(p: &Process) -> bool {
    p.pid == p.tgid && !matches!(p.state, State::Zombie(_))
}

/// `kill`: to the process `target` (any of its thread ids names it), or, for 0, -1 and
/// -pgid, to every process of the caller's container (process groups are the container).
fn send(k: &mut Kernel, target: i64, signal: u64) -> Sys {
    if signal > u64::from(sig::MAX) {
        return Err(Errno::EINVAL.into());
    }
    let me = k.current;
    let my_tgid = k.cur().tgid;
    let container = k.cur().container;
    let targets: Vec<Pid> = if target > 0 {
        let t = k.procs.get(&(target as Pid)).map(|p| p.tgid);
        match t.and_then(|t| k.procs.get(&t)) {
            Some(p) if p.container == container && is_process(p) && !k.threads_of(p.pid).is_empty() => {
                alloc::vec![p.pid]
            }
            _ => return Err(Errno::ESRCH.into()),
        }
    } else {
        let mut v: Vec<Pid> = k
            .procs
            .values()
            .filter(|p| p.container == container && is_process(p))
            .filter(|p| !(target == -1 && p.pid == my_tgid))
            .map(|p| p.pid)
            .collect();
        // The caller last, so that the others are reached even when it ends.
        v.sort_by_key(|&p| p == my_tgid);
        v
    };
    for t in targets {
        if signal != 0 {
            k.send_signal(
                t,
                SigInfo { signo: signal as u32, code: SI_USER, pid: my_tgid, status: 0, addr: None },
            );
        }
    }
    if k.procs.get(&me).is_none_or(|p| !p.state.is_live()) {
        return Err(Fail::Gone);
    }
    Ok(0)
}

/// `tgkill` and `tkill`: to thread `tid` (of process `tgid` when given).
fn send_to_thread(k: &mut Kernel, tgid: Option<Pid>, tid: Pid, signal: u64) -> Sys {
    if signal > u64::from(sig::MAX) {
        return Err(Errno::EINVAL.into());
    }
    let me = k.current;
    let from = k.cur().tgid;
    let container = k.cur().container;
    match k.procs.get(&tid) {
        Some(p) if p.container == container && p.state.is_live() && tgid.is_none_or(|g| g == p.tgid) => {}
        _ => return Err(Errno::ESRCH.into()),
    }
    if signal != 0 {
        k.send_thread_signal(
            tid,
            SigInfo { signo: signal as u32, code: SI_TKILL, pid: from, status: 0, addr: None },
        );
    }
    if k.procs.get(&me).is_none_or(|p| !p.state.is_live()) {
        return Err(Fail::Gone);
    }
    Ok(0)
}

pub(super) fn sys_kill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    send(k, a[0] as i32 as i64, a[1])
}

pub(super) fn sys_tkill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if (a[0] as i32) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    send_to_thread(k, None, a[0] as i32 as Pid, a[1])
}

pub(super) fn sys_tgkill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if (a[0] as i32) <= 0 || (a[1] as i32) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    send_to_thread(k, Some(a[0] as i32 as Pid), a[1] as i32 as Pid, a[2])
}

/// `sigaltstack(ss, old_ss)`: `SS_DISABLE` removes the stack; a new one must be at least
/// `MINSIGSTKSZ` (2048) bytes and cannot be changed while the thread runs on it (`EPERM`).
/// `SS_AUTODISARM` is kept and shown but does not disarm the stack.
pub(super) fn sys_sigaltstack(k: &mut Kernel, a: [u64; 6]) -> Sys {
    const SS_DISABLE: u32 = 2;
    const SS_AUTODISARM: u32 = 1 << 31;
    const MINSIGSTKSZ: u64 = 2048;
    let (cur, rsp) = {
        let p = k.cur();
        (p.altstack, p.frame.rsp)
    };
    if a[0] != 0 {
        let b = uread(k, a[0], 24)?;
        let sp = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
        let flags = u32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
        let size = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
        if cur.holds(rsp) {
            return Err(Errno::EPERM.into());
        }
        let new = if flags & SS_DISABLE != 0 {
            if flags & !SS_DISABLE != 0 {
                return Err(Errno::EINVAL.into());
            }
            AltStack::default()
        } else {
            if flags & !SS_AUTODISARM != 0 {
                return Err(Errno::EINVAL.into());
            }
            if size < MINSIGSTKSZ {
                return Err(Errno::ENOMEM.into());
            }
            if sp.checked_add(size).is_none() {
                return Err(Errno::EINVAL.into());
            }
            AltStack { sp, size, flags }
        };
        k.cur().altstack = new;
    }
    if a[1] != 0 {
        uwrite(k, a[1], &cur.to_bytes(rsp))?;
    }
    Ok(0)
}

pub(super) fn sys_rt_sigaction(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let n = a[0] as usize;
    if n == 0 || n > sig::MAX as usize || a[3] != 8 {
        return Err(Errno::EINVAL.into());
    }
    let unchangeable = n == sig::SIGKILL as usize || n == sig::SIGSTOP as usize;
    let old = k.cur().sigactions.action(n as u32);
    if a[1] != 0 {
        if unchangeable {
            return Err(Errno::EINVAL.into());
        }
        let b = uread(k, a[1], Action::SIZE)?;
        let mut raw = [0u8; Action::SIZE];
        raw.copy_from_slice(&b);
        let new = Action::from_bytes(&raw);
        let p = k.cur();
        p.sigactions.set_action(n as u32, new);
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

pub(super) fn sys_rt_sigprocmask(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

pub(super) fn sys_rt_sigpending(k: &mut Kernel, a: [u64; 6]) -> Sys {
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
pub(super) fn sys_rt_sigsuspend(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

/// `rt_sigtimedwait(set, info, timeout, sigsetsize)` (`sigwaitinfo`, `sigtimedwait` and
/// `sigwait` come through it): waits for a signal of `set` (SIGKILL and SIGSTOP left out)
/// to be pending in the thread, or sent to its process and pending in another of its
/// threads; takes it, fills `info` when given and returns its number. A NULL timeout
/// waits for ever, `{0, 0}` only looks; when the time is up: `EAGAIN`. A handled signal
/// outside the set ends the wait with `EINTR` (never restarted). `EINVAL` for a
/// `sigsetsize` other than 8 or a bad timespec, `EFAULT` for a bad pointer (a bad `info`
/// after the signal was taken, as on Linux). While it waits, a signal of the set sent to
/// the process goes to this thread.
pub(super) fn sys_rt_sigtimedwait(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (set_va, info_va, timeout_va, size) = (a[0], a[1], a[2], a[3]);
    let p = k.cur();
    let (set, timeout) = match p.sigwait.filter(|_| p.poll_until.is_some()) {
        // A retry: the set and the deadline are kept.
        Some(set) => (set, None),
        None => {
            if size != 8 {
                return Err(Errno::EINVAL.into());
            }
            let set = uu64(k, set_va)? & !signal::UNBLOCKABLE;
            let timeout = if timeout_va == 0 { None } else { Some(super::poll::timespec(k, timeout_va)?) };
            (set, timeout)
        }
    };
    k.cur().sigwait = Some(set);
    let mut taken = None;
    let r = super::poll::wait(k, timeout, |k, _, _| {
        taken = k.take_waited(set);
        Ok(super::poll::Pass { ready: usize::from(taken.is_some()), next_timer: None })
    });
    if matches!(r, Err(Fail::Block)) {
        return r;
    }
    k.cur().sigwait = None;
    r?;
    let Some(info) = taken else { return Err(Errno::EAGAIN.into()) };
    if info_va != 0 {
        uwrite(k, info_va, &info.to_bytes())?;
    }
    Ok(u64::from(info.signo))
}

/// Waits until a signal is delivered (`EINTR`).
pub(super) fn sys_pause(_: &mut Kernel, _: [u64; 6]) -> Sys {
    Err(Fail::Block)
}

pub(super) fn sys_rt_sigreturn(k: &mut Kernel, _: [u64; 6]) -> Sys {
    let pid = k.current;
    k.sigreturn(pid);
    Err(Fail::Gone)
}
