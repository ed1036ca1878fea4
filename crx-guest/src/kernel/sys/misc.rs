//! The rest: calls answered with constants, system information, limits and randomness.

use crx_fs::Errno;
use crx_guest::elf::PAGE;

use super::{ok, try_buf, uwrite, Sys};
use crate::kernel::fd;
use crate::kernel::proc::Kernel;

pub(super) fn sys_zero(_: &mut Kernel, _: [u64; 6]) -> Sys {
    Ok(0)
}

/// Known and deliberately unsupported: `ENOSYS` without a log line.
pub(super) fn sys_enosys(_: &mut Kernel, _: [u64; 6]) -> Sys {
    Err(Errno::ENOSYS.into())
}

pub(super) fn sys_uname(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

pub(super) fn sys_getrandom(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

pub(super) fn sys_getrlimit(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let (c, m) = rlimit(k, a[0]);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&c.to_le_bytes());
    b[8..].copy_from_slice(&m.to_le_bytes());
    uwrite(k, a[1], &b)?;
    Ok(0)
}

pub(super) fn sys_prlimit64(k: &mut Kernel, a: [u64; 6]) -> Sys {
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

/// `getrusage(who, usage)`: RUSAGE_SELF (0), RUSAGE_CHILDREN (-1), RUSAGE_THREAD (1);
/// CPU time is all user time.
pub(super) fn sys_getrusage(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let me = k.current;
    let used = match a[0] as i32 {
        0 => k.process_cpu_ns(me),
        -1 => {
            let tgid = k.cur().tgid;
            k.procs.get(&tgid).map_or(0, |p| p.children_ns)
        }
        1 => k.cpu_ns_of(me),
        _ => return Err(Errno::EINVAL.into()),
    };
    uwrite(k, a[1], &super::process::rusage(used))?;
    Ok(0)
}

pub(super) fn sys_sysinfo(k: &mut Kernel, a: [u64; 6]) -> Sys {
    let mut b = [0u8; 112];
    b[..8].copy_from_slice(&(k.hv.monotonic_ns() / 1_000_000_000).to_le_bytes());
    b[32..40].copy_from_slice(&((k.pool.total_frames() as u64) * PAGE).to_le_bytes());
    b[40..48].copy_from_slice(&((k.pool.free_frames() as u64) * PAGE).to_le_bytes());
    // sharedram: page-cache frames that more than one mapping shows (a library's pages
    // mapped by two processes); bufferram: every page-cache frame.
    b[48..56].copy_from_slice(&((k.cache.shared_frames(&k.pool) as u64) * PAGE).to_le_bytes());
    b[56..64].copy_from_slice(&((k.cache.frames() as u64) * PAGE).to_le_bytes());
    b[80..82].copy_from_slice(&(k.procs.len() as u16).to_le_bytes());
    // mem_unit = 1 (bytes).
    b[104..108].copy_from_slice(&1u32.to_le_bytes());
    uwrite(k, a[0], &b)?;
    Ok(0)
}

pub(super) fn sys_sched_getaffinity(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[1] < 8 {
        return Err(Errno::EINVAL.into());
    }
    // The vCPUs the pod has, whichever thread asks.
    let mask = if k.vcpus >= 64 { u64::MAX } else { (1u64 << k.vcpus) - 1 };
    uwrite(k, a[2], &mask.to_le_bytes())?;
    Ok(8)
}

/// `sched_setaffinity(pid, len, mask)`: accepted when the mask holds one of the pod's
/// vCPUs (threads run on any of them regardless).
pub(super) fn sys_sched_setaffinity(k: &mut Kernel, a: [u64; 6]) -> Sys {
    if a[1] < 8 {
        return Err(Errno::EINVAL.into());
    }
    let b = super::uread(k, a[2], 8)?;
    let set = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
    let mask = if k.vcpus >= 64 { u64::MAX } else { (1u64 << k.vcpus) - 1 };
    if set & mask == 0 {
        return Err(Errno::EINVAL.into());
    }
    Ok(0)
}
