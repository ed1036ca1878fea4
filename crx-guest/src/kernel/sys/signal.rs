//! Signals: sending, dispositions, masks, waiting for one and returning from a handler.

use alloc::vec::Vec;

use crx_fs::Errno;
use crx_guest::posix::sig;
use crx_guest::signal::{self, bit, Action, Disposition, SI_TKILL, SI_USER};

use super::{uread, uu64, uwrite, Fail, Sys};
use crate::kernel::proc::{Kernel, Pid, State};

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

pub(super) fn sys_kill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    send(k, a[0] as i32 as i64, a[1], SI_USER)
}

pub(super) fn sys_tkill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if (a[0] as i32) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    send(k, a[0] as i32 as i64, a[1], SI_TKILL)
}

pub(super) fn sys_tgkill(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if (a[1] as i32) <= 0 {
        return Err(Errno::EINVAL.into());
    }
    send(k, a[1] as i32 as i64, a[2], SI_TKILL)
}

pub(super) fn sys_rt_sigaction(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

/// Waits until a signal is delivered (`EINTR`).
pub(super) fn sys_pause(_: &mut Kernel, _: [u64; 6]) -> Sys {
    Err(Fail::Block)
}

pub(super) fn sys_rt_sigreturn(k: &mut Kernel, _: [u64; 6]) -> Sys {
    let pid = k.current;
    k.sigreturn(pid);
    Err(Fail::Gone)
}
