//! `futex`: waiting on and waking user words.
//!
//! A waiter is a thread blocked in `FUTEX_WAIT*` with a [`FutexWait`] naming its word: a
//! private futex (`FUTEX_PRIVATE_FLAG`) by address space and address, a shared one by the
//! physical address of the word, so that processes mapping the same page meet. The
//! scheduler retries the wait; a wake marks waiters woken (first come, first served), a
//! timeout is the thread's sleep deadline, and a signal with a handler ends the wait with
//! `EINTR`.
//!
//! Operations: `FUTEX_WAIT`, `FUTEX_WAKE`, `FUTEX_REQUEUE`, `FUTEX_CMP_REQUEUE`,
//! `FUTEX_WAKE_OP`, `FUTEX_WAIT_BITSET`, `FUTEX_WAKE_BITSET`, with `FUTEX_PRIVATE_FLAG` and
//! `FUTEX_CLOCK_REALTIME` (absolute timeouts of `FUTEX_WAIT_BITSET`). The PI operations
//! answer `ENOSYS`, which glibc reports for PI mutexes only.

use crx_fs::Errno;

use super::{fault, uread, Fail, Sys};
use crate::kernel::proc::{FutexKey, FutexWait, Kernel, Shared};

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
/// `ETIMEDOUT`.
const ETIMEDOUT: i64 = -110;

/// The key of the word at `uaddr` for the calling thread. A private key needs no access
/// (as on Linux, a wake on an unmapped word finds nobody); a shared one reads the page.
fn key_of(k: &mut Kernel, uaddr: u64, private: bool) -> Result<FutexKey, Fail> {
    if !uaddr.is_multiple_of(4) {
        return Err(Errno::EINVAL.into());
    }
    let pid = k.current;
    if private {
        let id = k.procs.get(&pid).and_then(|p| p.mm.as_ref()).map(Shared::id).ok_or(Fail::Gone)?;
        return Ok(FutexKey::Private(id, uaddr));
    }
    let r = k.mem(pid).ok_or(Fail::Gone)?.fault_in(uaddr, false);
    let pa = r.map_err(|e| fault(k, e))?;
    Ok(FutexKey::Shared(pa + uaddr % 4096))
}

fn read_word(k: &mut Kernel, uaddr: u64) -> Result<u32, Fail> {
    let b = uread(k, uaddr, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A `struct timespec` as nanoseconds (`EINVAL` when malformed).
fn timespec_ns(k: &mut Kernel, ptr: u64) -> Result<u64, Fail> {
    let b = uread(k, ptr, 16)?;
    let sec = i64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
    let nsec = i64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL.into());
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

pub(super) fn sys_futex(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (uaddr, op, val) = (a[0], a[1], a[2] as u32);
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let private = op & FUTEX_PRIVATE_FLAG != 0;
    if op & FUTEX_CLOCK_REALTIME != 0 && cmd != FUTEX_WAIT_BITSET && cmd != FUTEX_WAIT {
        return Err(Errno::ENOSYS.into());
    }
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { a[5] as u32 };
            wait(
                k,
                uaddr,
                private,
                val,
                a[3],
                bitset,
                cmd == FUTEX_WAIT_BITSET,
                op & FUTEX_CLOCK_REALTIME != 0,
            )
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            let bitset = if cmd == FUTEX_WAKE { u32::MAX } else { a[5] as u32 };
            if bitset == 0 {
                return Err(Errno::EINVAL.into());
            }
            let key = key_of(k, uaddr, private)?;
            Ok(k.futex_wake(key, val as usize, bitset) as u64)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            // The fourth argument is `val2` (how many to move), not a timeout.
            let (n_requeue, uaddr2) = (a[3] as u32, a[4]);
            if (val as i32) < 0 || (n_requeue as i32) < 0 {
                return Err(Errno::EINVAL.into());
            }
            let from = key_of(k, uaddr, private)?;
            let to = key_of(k, uaddr2, private)?;
            if cmd == FUTEX_CMP_REQUEUE && read_word(k, uaddr)? != a[5] as u32 {
                return Err(Errno::EAGAIN.into());
            }
            let woken = k.futex_wake(from, val as usize, u32::MAX);
            let moved = k.futex_requeue(from, to, n_requeue as usize);
            Ok((woken + moved) as u64)
        }
        FUTEX_WAKE_OP => {
            let (n2, uaddr2, encoded) = (a[3] as u32, a[4], a[5] as u32);
            let k1 = key_of(k, uaddr, private)?;
            let k2 = key_of(k, uaddr2, private)?;
            let old = read_word(k, uaddr2)?;
            let (new, cond) = crx_guest::threads::wake_op(encoded, old).ok_or(Fail::E(Errno::ENOSYS))?;
            let pid = k.current;
            let r = k.mem(pid).ok_or(Fail::Gone)?.write(uaddr2, &new.to_le_bytes());
            r.map_err(|e| fault(k, e))?;
            let mut woken = k.futex_wake(k1, val as usize, u32::MAX);
            if cond {
                woken += k.futex_wake(k2, n2 as usize, u32::MAX);
            }
            Ok(woken as u64)
        }
        _ => Err(Errno::ENOSYS.into()),
    }
}

#[allow(clippy::too_many_arguments)]
fn wait(
    k: &mut Kernel,
    uaddr: u64,
    private: bool,
    val: u32,
    timeout: u64,
    bitset: u32,
    absolute: bool,
    realtime: bool,
) -> Sys {
    // A retry: woken, timed out, or still waiting.
    if let Some(w) = k.cur().futex {
        let now = k.hv.monotonic_ns();
        let p = k.cur();
        if w.woken {
            p.futex = None;
            p.sleep_deadline = None;
            return Ok(0);
        }
        if p.sleep_deadline.is_some_and(|d| now >= d) {
            p.futex = None;
            p.sleep_deadline = None;
            return Err(Fail::Raw(ETIMEDOUT));
        }
        return Err(Fail::Block);
    }
    if bitset == 0 {
        return Err(Errno::EINVAL.into());
    }
    let key = key_of(k, uaddr, private)?;
    if read_word(k, uaddr)? != val {
        return Err(Errno::EAGAIN.into());
    }
    let now = k.hv.monotonic_ns();
    let deadline = if timeout == 0 {
        None
    } else {
        let t = timespec_ns(k, timeout)?;
        Some(if !absolute {
            now.saturating_add(t)
        } else if realtime {
            // An absolute CLOCK_REALTIME time, on the monotonic clock.
            let wall = k.hv.wall_ns();
            now.saturating_add(t.saturating_sub(wall))
        } else {
            t
        })
    };
    if deadline.is_some_and(|d| d <= now) {
        return Err(Fail::Raw(ETIMEDOUT));
    }
    let seq = k.next_futex_seq;
    k.next_futex_seq += 1;
    let p = k.cur();
    p.futex = Some(FutexWait { key, bitset, seq, woken: false });
    p.sleep_deadline = deadline;
    Err(Fail::Block)
}
