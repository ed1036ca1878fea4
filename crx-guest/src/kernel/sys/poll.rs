//! Waiting for descriptors: `poll`, `ppoll`, `select`, `pselect6`, the epoll family, and
//! the descriptors made to be waited on, `eventfd` and `timerfd`.
//!
//! A wait is retried by the scheduler like any blocking call: the thread's `poll_until`
//! marks it in progress with its deadline (`u64::MAX` for none), its `sleep_deadline` is
//! the nearer of that and the next expiry of a timerfd it watches, so that the vCPU wakes
//! in time. Readiness comes from [`fd::readiness`]; what an epoll set reports from
//! [`crx_guest::poll::Interest`].

use alloc::vec::Vec;

use crx_fs::Errno;
use crx_guest::poll::{
    EventCounter, Interest, Timer, EPOLLET, EPOLLEXCLUSIVE, EPOLLONESHOT, EPOLLWAKEUP, POLLERR, POLLHUP,
    POLLIN, POLLNVAL, POLLOUT, POLLPRI, POLLRDHUP, POLLRDNORM, POLLWRNORM,
};

use super::{uread, uu64, uwrite, Fail, Sys};
use crate::kernel::fd::{self, desc, Desc, EpollSet, FdEntry, Object, EPOLL_MAX_ITEMS, MAX_FDS};
use crate::kernel::proc::Kernel;

const O_NONBLOCK: u32 = 0o4000;
const O_CLOEXEC: u64 = 0o2000000;
/// How deep readiness looks into epoll sets inside epoll sets.
const EPOLL_DEPTH: u32 = 4;

/// What one pass of a wait found: how many are ready (0: none), and the next timer
/// expiry among what it watches.
pub(super) struct Pass {
    pub(super) ready: usize,
    pub(super) next_timer: Option<u64>,
}

/// Runs a wait: `pass(k, now, last)` looks once at monotonic time `now` (`last` when it is
/// the final look, after the deadline, when it must write its results even if nothing is
/// ready); `timeout_ns` is `None` for no limit. (Also `rt_sigtimedwait`'s wait.)
pub(super) fn wait(
    k: &mut Kernel,
    timeout_ns: Option<u64>,
    mut pass: impl FnMut(&mut Kernel, u64, bool) -> Result<Pass, Fail>,
) -> Sys {
    let now = k.hv.monotonic_ns();
    let until = match k.cur().poll_until {
        Some(u) => u,
        None => timeout_ns.map_or(u64::MAX, |t| now.saturating_add(t)),
    };
    let last = until != u64::MAX && now >= until;
    let r = pass(k, now, last);
    let p = k.cur();
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            p.poll_until = None;
            p.sleep_deadline = None;
            return Err(e);
        }
    };
    if r.ready > 0 || last {
        p.poll_until = None;
        p.sleep_deadline = None;
        return Ok(r.ready as u64);
    }
    p.poll_until = Some(until);
    let wake = r.next_timer.map_or(until, |t| t.min(until));
    p.sleep_deadline = (wake != u64::MAX).then_some(wake);
    Err(Fail::Block)
}

/// A `struct timespec` in nanoseconds.
pub(super) fn timespec(k: &mut Kernel, va: u64) -> Result<u64, Fail> {
    let b = uread(k, va, 16)?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap_or_default());
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL.into());
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

/// A millisecond timeout as `poll` and `epoll_wait` take it (negative: none).
fn ms_timeout(ms: u64) -> Option<u64> {
    let ms = ms as i32;
    (ms >= 0).then(|| u64::from(ms as u32) * 1_000_000)
}

/// The temporary signal mask of `ppoll`, `pselect6` and `epoll_pwait`, set on the first
/// pass; the way back to user mode restores the old one (as for `rt_sigsuspend`).
fn temporary_mask(k: &mut Kernel, va: u64, size: u64) -> Result<(), Fail> {
    if va == 0 || k.cur().poll_until.is_some() {
        return Ok(());
    }
    if size != 8 {
        return Err(Errno::EINVAL.into());
    }
    let set = uu64(k, va)?;
    let p = k.cur();
    if p.saved_mask.is_none() {
        p.saved_mask = Some(p.sigmask);
    }
    p.sigmask = set & !crx_guest::signal::UNBLOCKABLE;
    Ok(())
}

fn poll_fds(k: &mut Kernel, va: u64, n: u64, timeout: Option<u64>) -> Sys {
    if n > MAX_FDS as u64 {
        return Err(Errno::EINVAL.into());
    }
    let n = n as usize;
    wait(k, timeout, |k, now, last| {
        let mut raw = uread(k, va, n * 8)?;
        let (mut ready, mut next_timer) = (0, None::<u64>);
        for c in raw.chunks_exact_mut(8) {
            let fdn = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            let events = u32::from(u16::from_le_bytes([c[4], c[5]]));
            let revents = if fdn < 0 {
                0
            } else {
                match k.cur().fds.desc(fdn as u64) {
                    Err(_) => POLLNVAL,
                    Ok(d) => {
                        next_timer = min_opt(next_timer, fd::next_timer(&d));
                        let r = fd::readiness(&d, now, EPOLL_DEPTH);
                        let mut out = r & (events | POLLERR | POLLHUP);
                        if events & POLLRDNORM != 0 && r & POLLIN != 0 {
                            out |= POLLRDNORM;
                        }
                        if events & POLLWRNORM != 0 && r & POLLOUT != 0 {
                            out |= POLLWRNORM;
                        }
                        out
                    }
                }
            };
            if revents != 0 {
                ready += 1;
            }
            c[6..8].copy_from_slice(&(revents as u16).to_le_bytes());
        }
        if ready > 0 || last {
            uwrite(k, va, &raw)?;
        }
        Ok(Pass { ready, next_timer })
    })
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

pub(super) fn sys_poll(k: &mut Kernel, a: [u64; 6]) -> Sys {
    poll_fds(k, a[0], a[1], ms_timeout(a[2]))
}

pub(super) fn sys_ppoll(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let timeout = if a[2] == 0 { None } else { Some(timespec(k, a[2])?) };
    temporary_mask(k, a[3], a[4])?;
    poll_fds(k, a[0], a[1], timeout)
}

/// `select`'s three sets over `nfds` descriptors.
fn select_fds(k: &mut Kernel, nfds: u64, sets: [u64; 3], timeout: Option<u64>) -> Sys {
    // As Linux: negative is EINVAL, more than the descriptor table holds is cut to it.
    if (nfds as i32) < 0 {
        return Err(Errno::EINVAL.into());
    }
    let nfds = nfds.min(MAX_FDS as u64);
    let words = (nfds as usize).div_ceil(64);
    wait(k, timeout, |k, now, last| {
        let mut ins = [Vec::new(), Vec::new(), Vec::new()];
        for (i, &va) in sets.iter().enumerate() {
            if va != 0 {
                let b = uread(k, va, words * 8)?;
                ins[i] =
                    b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
            }
        }
        let mut outs = [alloc::vec![0u64; words], alloc::vec![0u64; words], alloc::vec![0u64; words]];
        let (mut ready, mut next_timer) = (0, None::<u64>);
        for fdn in 0..nfds as usize {
            let (w, bit) = (fdn / 64, 1u64 << (fdn % 64));
            let asked: [bool; 3] = core::array::from_fn(|i| ins[i].get(w).is_some_and(|x| x & bit != 0));
            if !asked.iter().any(|&x| x) {
                continue;
            }
            let d = k.cur().fds.desc(fdn as u64)?;
            next_timer = min_opt(next_timer, fd::next_timer(&d));
            let r = fd::readiness(&d, now, EPOLL_DEPTH);
            let hits =
                [r & (POLLIN | POLLHUP | POLLERR) != 0, r & (POLLOUT | POLLERR) != 0, r & POLLPRI != 0];
            for i in 0..3 {
                if asked[i] && hits[i] {
                    outs[i][w] |= bit;
                    ready += 1;
                }
            }
        }
        if ready > 0 || last {
            for (i, &va) in sets.iter().enumerate() {
                if va != 0 {
                    let b: Vec<u8> = outs[i].iter().flat_map(|x| x.to_le_bytes()).collect();
                    uwrite(k, va, &b)?;
                }
            }
        }
        Ok(Pass { ready, next_timer })
    })
}

pub(super) fn sys_select(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let timeout = if a[4] == 0 {
        None
    } else {
        let b = uread(k, a[4], 16)?;
        let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let usec = i64::from_le_bytes(b[8..].try_into().unwrap_or_default());
        if sec < 0 || !(0..1_000_000).contains(&usec) {
            return Err(Errno::EINVAL.into());
        }
        Some((sec as u64).saturating_mul(1_000_000_000).saturating_add(usec as u64 * 1000))
    };
    select_fds(k, a[0], [a[1], a[2], a[3]], timeout)
}

pub(super) fn sys_pselect6(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let timeout = if a[4] == 0 { None } else { Some(timespec(k, a[4])?) };
    if a[5] != 0 {
        // { const sigset_t *ss; size_t ss_len; }
        let b = uread(k, a[5], 16)?;
        let ss = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
        temporary_mask(k, ss, len)?;
    }
    select_fds(k, a[0], [a[1], a[2], a[3]], timeout)
}

/// Installs a new description for `obj` with `O_NONBLOCK` and close-on-exec as asked.
fn install(k: &mut Kernel, obj: Object, nonblock: bool, cloexec: bool) -> Sys {
    let d = desc(obj, 2 | if nonblock { O_NONBLOCK } else { 0 });
    Ok(k.cur().fds.install(FdEntry { desc: d, cloexec }, 0)?)
}

pub(super) fn sys_epoll_create(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] as i32 <= 0 {
        return Err(Errno::EINVAL.into());
    }
    install(k, Object::Epoll(EpollSet::default()), false, false)
}

pub(super) fn sys_epoll_create1(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] & !O_CLOEXEC != 0 {
        return Err(Errno::EINVAL.into());
    }
    install(k, Object::Epoll(EpollSet::default()), false, a[0] & O_CLOEXEC != 0)
}

fn epoll_of(k: &mut Kernel, epfd: u64) -> Result<Desc, Fail> {
    let d = k.cur().fds.desc(epfd)?;
    if !matches!(d.borrow().obj, Object::Epoll(_)) {
        return Err(Errno::EINVAL.into());
    }
    Ok(d)
}

/// `epoll_ctl(epfd, op, fd, event)`: `EPOLL_CTL_ADD` (1), `DEL` (2), `MOD` (3). Regular
/// files, directories and /dev/null cannot be watched (`EPERM`, as on Linux); a set
/// cannot watch itself (`EINVAL`).
pub(super) fn sys_epoll_ctl(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (epfd, op, fdn) = (a[0], a[1], a[2]);
    let ep = epoll_of(k, epfd)?;
    let target = k.cur().fds.desc(fdn)?;
    if alloc::rc::Rc::ptr_eq(&ep, &target) {
        return Err(Errno::EINVAL.into());
    }
    if matches!(target.borrow().obj, Object::File(_) | Object::Null | Object::Zero) {
        return Err(Errno::EPERM.into());
    }
    let event = if op == 2 {
        None
    } else {
        let b = uread(k, a[3], 12)?;
        let events = u32::from_le_bytes(b[..4].try_into().unwrap_or_default());
        let data = u64::from_le_bytes(b[4..12].try_into().unwrap_or_default());
        let known = POLLIN
            | POLLPRI
            | POLLOUT
            | POLLERR
            | POLLHUP
            | POLLRDNORM
            | POLLWRNORM
            | POLLRDHUP
            | 0x80
            | 0x200
            | 0x400
            | EPOLLEXCLUSIVE
            | EPOLLWAKEUP
            | EPOLLONESHOT
            | EPOLLET;
        if events & !known != 0 {
            return Err(Errno::EINVAL.into());
        }
        Some((events, data))
    };
    let mut b = ep.borrow_mut();
    let Object::Epoll(set) = &mut b.obj else { return Err(Errno::EINVAL.into()) };
    set.items.retain(|_, (w, _)| w.strong_count() > 0);
    match (op, event) {
        (1, Some((events, data))) => {
            if set.items.contains_key(&fdn) {
                return Err(Errno::EEXIST.into());
            }
            if set.items.len() >= EPOLL_MAX_ITEMS {
                return Err(Errno::ENOSPC.into());
            }
            set.items.insert(fdn, (alloc::rc::Rc::downgrade(&target), Interest::new(events, data)));
        }
        (3, Some((events, data))) => {
            let Some(item) = set.items.get_mut(&fdn) else { return Err(Errno::ENOENT.into()) };
            if events & EPOLLEXCLUSIVE != 0 {
                return Err(Errno::EINVAL.into());
            }
            *item = (alloc::rc::Rc::downgrade(&target), Interest::new(events, data));
        }
        (2, _) => {
            set.items.remove(&fdn).ok_or(Errno::ENOENT)?;
        }
        _ => return Err(Errno::EINVAL.into()),
    }
    Ok(0)
}

fn epoll_wait(k: &mut Kernel, epfd: u64, va: u64, max: u64, timeout: Option<u64>) -> Sys {
    let max = max as i32;
    if max <= 0 || max as usize > EPOLL_MAX_ITEMS * 4 {
        return Err(Errno::EINVAL.into());
    }
    let ep = epoll_of(k, epfd)?;
    wait(k, timeout, |k, now, _| {
        // Look at the items outside the set's borrow (a watched set is looked into).
        let items: Vec<(u64, alloc::rc::Weak<core::cell::RefCell<fd::Description>>, Interest)> = {
            let b = ep.borrow();
            let Object::Epoll(set) = &b.obj else { return Err(Errno::EINVAL.into()) };
            // Round robin: start after the descriptor reported last.
            let after = set.items.range(set.cursor..).chain(set.items.range(..set.cursor));
            after.map(|(&f, (w, i))| (f, w.clone(), *i)).collect()
        };
        let (mut out, mut next_timer, mut updates) = (Vec::new(), None::<u64>, Vec::new());
        for (f, w, mut interest) in items {
            let Some(d) = w.upgrade() else { continue };
            next_timer = min_opt(next_timer, fd::next_timer(&d));
            if out.len() >= max as usize {
                continue;
            }
            let r = fd::readiness(&d, now, EPOLL_DEPTH - 1);
            let before = interest;
            if let Some(ev) = interest.report(r) {
                out.push((f, ev, interest.data));
            }
            if interest != before {
                updates.push((f, interest));
            }
        }
        {
            let mut b = ep.borrow_mut();
            if let Object::Epoll(set) = &mut b.obj {
                for (f, i) in updates {
                    if let Some(item) = set.items.get_mut(&f) {
                        item.1 = i;
                    }
                }
                if let Some(&(f, _, _)) = out.last() {
                    set.cursor = f.wrapping_add(1);
                }
            }
        }
        if !out.is_empty() {
            let mut b = Vec::with_capacity(out.len() * 12);
            for (_, ev, data) in &out {
                b.extend_from_slice(&ev.to_le_bytes());
                b.extend_from_slice(&data.to_le_bytes());
            }
            uwrite(k, va, &b)?;
        }
        Ok(Pass { ready: out.len(), next_timer })
    })
}

pub(super) fn sys_epoll_wait(k: &mut Kernel, a: [u64; 6]) -> Sys {
    epoll_wait(k, a[0], a[1], a[2], ms_timeout(a[3]))
}

pub(super) fn sys_epoll_pwait(k: &mut Kernel, a: [u64; 6]) -> Sys {
    temporary_mask(k, a[4], a[5])?;
    epoll_wait(k, a[0], a[1], a[2], ms_timeout(a[3]))
}

pub(super) fn sys_epoll_pwait2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let timeout = if a[3] == 0 { None } else { Some(timespec(k, a[3])?) };
    temporary_mask(k, a[4], a[5])?;
    epoll_wait(k, a[0], a[1], a[2], timeout)
}

const EFD_SEMAPHORE: u64 = 1;
const EFD_NONBLOCK: u64 = 0o4000;
const EFD_CLOEXEC: u64 = 0o2000000;

pub(super) fn sys_eventfd(k: &mut Kernel, a: [u64; 6]) -> Sys {
    install(
        k,
        Object::EventFd(EventCounter { count: u64::from(a[0] as u32), semaphore: false }),
        false,
        false,
    )
}

/// `eventfd2(initval, flags)`: `EFD_SEMAPHORE`, `EFD_NONBLOCK`, `EFD_CLOEXEC`.
pub(super) fn sys_eventfd2(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let flags = a[1];
    if flags & !(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let counter = EventCounter { count: u64::from(a[0] as u32), semaphore: flags & EFD_SEMAPHORE != 0 };
    install(k, Object::EventFd(counter), flags & EFD_NONBLOCK != 0, flags & EFD_CLOEXEC != 0)
}

const TFD_TIMER_ABSTIME: u64 = 1;
const TFD_TIMER_CANCEL_ON_SET: u64 = 2;

/// `timerfd_create(clockid, flags)`: CLOCK_REALTIME (0), CLOCK_MONOTONIC (1) and
/// CLOCK_BOOTTIME (7) (the alarm clocks need a capability: `EPERM`); `TFD_NONBLOCK`,
/// `TFD_CLOEXEC`. The timer runs on the monotonic clock; an absolute CLOCK_REALTIME time
/// is converted when it is set.
pub(super) fn sys_timerfd_create(k: &mut Kernel, a: [u64; 6]) -> Sys {
    match a[0] {
        0 | 1 | 7 => {}
        8 | 9 => return Err(Errno::EPERM.into()),
        _ => return Err(Errno::EINVAL.into()),
    }
    if a[1] & !(EFD_NONBLOCK | EFD_CLOEXEC) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let realtime = a[0] == 0;
    let obj = Object::TimerFd(Timer::default());
    let fdn = install(k, obj, a[1] & EFD_NONBLOCK != 0, a[1] & EFD_CLOEXEC != 0)?;
    if realtime {
        if let Ok(d) = k.cur().fds.desc(fdn) {
            d.borrow_mut().flags |= fd::TIMERFD_REALTIME;
        }
    }
    Ok(fdn)
}

fn timer_of(k: &mut Kernel, fdn: u64) -> Result<Desc, Fail> {
    let d = k.cur().fds.desc(fdn)?;
    if !matches!(d.borrow().obj, Object::TimerFd(_)) {
        return Err(Errno::EINVAL.into());
    }
    Ok(d)
}

fn put_itimerspec(k: &mut Kernel, va: u64, (left, interval): (u64, u64)) -> Result<(), Fail> {
    let mut b = [0u8; 32];
    for (i, v) in [interval, left].into_iter().enumerate() {
        b[i * 16..i * 16 + 8].copy_from_slice(&(v / 1_000_000_000).to_le_bytes());
        b[i * 16 + 8..i * 16 + 16].copy_from_slice(&(v % 1_000_000_000).to_le_bytes());
    }
    uwrite(k, va, &b)
}

pub(super) fn sys_timerfd_settime(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (fdn, flags, new, old) = (a[0], a[1], a[2], a[3]);
    if flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(Errno::EINVAL.into());
    }
    let d = timer_of(k, fdn)?;
    let interval = timespec(k, new)?;
    let value = timespec(k, new + 16)?;
    let now = k.hv.monotonic_ns();
    let realtime = d.borrow().flags & fd::TIMERFD_REALTIME != 0;
    let first = if value == 0 {
        None
    } else if flags & TFD_TIMER_ABSTIME == 0 {
        Some(now.saturating_add(value))
    } else if realtime {
        Some(now.saturating_add(value.saturating_sub(k.hv.wall_ns())).max(now))
    } else {
        Some(value)
    };
    let prev = {
        let mut b = d.borrow_mut();
        let Object::TimerFd(t) = &mut b.obj else { return Err(Errno::EINVAL.into()) };
        let prev = t.left(now);
        t.set(first, interval);
        prev
    };
    if old != 0 {
        put_itimerspec(k, old, prev)?;
    }
    Ok(0)
}

pub(super) fn sys_timerfd_gettime(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let d = timer_of(k, a[0])?;
    let now = k.hv.monotonic_ns();
    let cur = {
        let mut b = d.borrow_mut();
        let Object::TimerFd(t) = &mut b.obj else { return Err(Errno::EINVAL.into()) };
        t.left(now)
    };
    put_itimerspec(k, a[1], cur)?;
    Ok(0)
}
