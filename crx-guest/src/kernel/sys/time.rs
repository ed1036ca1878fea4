//! Time: clocks, sleeps and the interval timers (`setitimer`, `getitimer`, `alarm`; they
//! fire in [`crate::kernel::itimers`]).

use crx_fs::Errno;
use crx_guest::itimer::{self, Setting, ITIMERVAL_SIZE, ITIMER_PROF, ITIMER_REAL, ITIMER_VIRTUAL};

use super::{uread, uwrite, Fail, Sys};
use crate::kernel::proc::Kernel;

/// `times(buf)`: CPU times in clock ticks (100 per second), all of it user time.
pub(super) fn sys_times(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[0] != 0 {
        let me = k.current;
        let tgid = k.cur().tgid;
        let own = k.process_cpu_ns(me) / 10_000_000;
        let children = k.procs.get(&tgid).map_or(0, |p| p.children_ns) / 10_000_000;
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&own.to_le_bytes());
        b[16..24].copy_from_slice(&children.to_le_bytes());
        uwrite(k, a[0], &b)?;
    }
    Ok(k.hv.monotonic_ns() / 10_000_000)
}

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

/// The clock `clk` now: the real-time and monotonic clocks, the calling process's and
/// thread's CPU clocks (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID), and the CPU
/// clocks of other threads and processes of the pod by their clock ids
/// (`clock_getcpuclockid`, `pthread_getcpuclockid`: `~pid << 3`, bit 2 for a thread).
fn clock_ns(k: &Kernel, clk: u64) -> Result<u64, Errno> {
    let me = k.current;
    match clk as i32 {
        0 | 5 | 8 | 11 => Ok(k.hv.wall_ns()), // REALTIME, _COARSE, _ALARM, TAI
        1 | 4 | 6 | 7 | 9 => Ok(k.hv.monotonic_ns()), // MONOTONIC, _RAW, _COARSE, BOOTTIME
        2 => Ok(k.process_cpu_ns(me)),
        3 => Ok(k.cpu_ns_of(me)),
        c if c < 0 => {
            let pid = !(c >> 3) as u32;
            let kind = c & 3;
            if kind == 3 {
                return Err(Errno::EINVAL);
            }
            let container = k.procs.get(&me).map(|p| p.container);
            let target = k.procs.get(&pid).filter(|p| Some(p.container) == container).ok_or(Errno::EINVAL)?;
            if c & 4 != 0 {
                Ok(k.cpu_ns_of(target.pid))
            } else if target.pid == target.tgid {
                Ok(k.process_cpu_ns(target.pid))
            } else {
                Err(Errno::EINVAL)
            }
        }
        _ => Err(Errno::EINVAL),
    }
}

pub(super) fn sys_clock_gettime(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let ns = clock_ns(k, a[0])?;
    put_timespec(k, a[1], ns)?;
    Ok(0)
}

pub(super) fn sys_clock_getres(k: &mut Kernel, a: [u64; 6]) -> Sys {
    clock_ns(k, a[0])?;
    if a[1] != 0 {
        put_timespec(k, a[1], 1)?;
    }
    Ok(0)
}

pub(super) fn sys_gettimeofday(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

pub(super) fn sys_time(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

pub(super) fn sys_nanosleep(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if let Some(d) = k.cur().sleep_deadline {
        return sleep_until(k, d);
    }
    let ns = read_timespec(k, a[0])?;
    let d = k.hv.monotonic_ns().saturating_add(ns);
    sleep_until(k, d)
}

pub(super) fn sys_clock_nanosleep(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

/// The setting of interval timer `which` of the running thread's process now.
fn itimer_now(k: &mut Kernel, which: u64) -> Result<Setting, Fail> {
    let me = k.current;
    let tgid = k.cur().tgid;
    let t = k.itimers.get(&tgid).copied().unwrap_or_default();
    Ok(match which {
        ITIMER_REAL => t.real.get_real(k.hv.monotonic_ns()),
        ITIMER_VIRTUAL => t.virt.get_cpu(k.process_cpu_ns(me)),
        ITIMER_PROF => t.prof.get_cpu(k.process_cpu_ns(me)),
        _ => return Err(Errno::EINVAL.into()),
    })
}

/// Sets interval timer `which` of the running thread's process; returns its old setting.
fn set_itimer(k: &mut Kernel, which: u64, s: Setting) -> Result<Setting, Fail> {
    let me = k.current;
    let now = match which {
        ITIMER_REAL => k.hv.monotonic_ns(),
        ITIMER_VIRTUAL | ITIMER_PROF => k.process_cpu_ns(me),
        _ => return Err(Errno::EINVAL.into()),
    };
    let tgid = k.cur().tgid;
    let t = k.my_itimers();
    let old = match which {
        ITIMER_REAL => t.real.set_real(now, s),
        ITIMER_VIRTUAL => t.virt.set_cpu(now, s),
        _ => t.prof.set_cpu(now, s),
    };
    if t.is_idle() {
        k.itimers.remove(&tgid);
    }
    Ok(old)
}

/// `getitimer(which, value)`: `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF` (see
/// [`crx_guest::itimer`]); `EINVAL` for another timer, `EFAULT` for a bad `value`.
pub(super) fn sys_getitimer(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = itimer_now(k, a[0])?;
    uwrite(k, a[1], &s.to_bytes())?;
    Ok(0)
}

/// `setitimer(which, value, old_value)`: arms (or with a zero value disarms) a timer of the
/// process; a NULL `value` disarms it, as Linux allows. `EFAULT` for a bad `value`, `EINVAL`
/// for a bad timeval in it or another timer, and `EFAULT` for a bad `old_value` once the
/// timer is set (as on Linux).
pub(super) fn sys_setitimer(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let s = if a[1] == 0 {
        Setting::default()
    } else {
        let b = uread(k, a[1], ITIMERVAL_SIZE)?;
        let mut raw = [0u8; ITIMERVAL_SIZE];
        raw.copy_from_slice(&b);
        Setting::from_bytes(&raw).map_err(|_| Fail::E(Errno::EINVAL))?
    };
    let old = set_itimer(k, a[0], s)?;
    if a[2] != 0 {
        uwrite(k, a[2], &old.to_bytes())?;
    }
    Ok(0)
}

/// `alarm(seconds)`: `ITIMER_REAL` set to fire once in `seconds` (0 disarms it); returns
/// the seconds the timer had left, rounded as Linux does.
pub(super) fn sys_alarm(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let old = set_itimer(k, ITIMER_REAL, itimer::alarm_setting(a[0] as u32))?;
    Ok(itimer::alarm_seconds(old.value_ns))
}
