//! The files of `/proc` and `/sys` that programs read about themselves and the machine,
//! made when they are opened: `/proc/self/{maps,status,stat,cmdline}` (also under
//! `/proc/thread-self` and `/proc/PID` for the pod's processes), `/proc/{cpuinfo,meminfo,
//! uptime,loadavg}` and `/sys/devices/system/cpu/{online,possible,present}`. Their
//! contents follow Linux's formats (proc(5)); figures the kernel does not keep are 0.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crx_guest::elf::PAGE;

use crate::kernel::proc::{Kernel, Pid, State, STACK_SIZE, STACK_TOP};

/// The contents of the generated file at `path`, or None when `path` is not one.
pub(super) fn generate(k: &mut Kernel, path: &[u8]) -> Option<Vec<u8>> {
    let path = core::str::from_utf8(path).ok()?;
    if let Some(rest) = path.strip_prefix("/sys/devices/system/cpu/") {
        return match rest {
            "online" | "possible" | "present" => Some(cpu_list(k.vcpus).into_bytes()),
            _ => None,
        };
    }
    let rest = path.strip_prefix("/proc/")?;
    match rest {
        "cpuinfo" => return Some(cpuinfo(k).into_bytes()),
        "meminfo" => return Some(meminfo(k).into_bytes()),
        "uptime" => {
            let ns = k.hv.monotonic_ns();
            return Some(format!("{}.{:02} 0.00\n", ns / 1_000_000_000, ns / 10_000_000 % 100).into_bytes());
        }
        "loadavg" => {
            let live = k.procs.values().filter(|p| p.state.is_live()).count();
            let last = k.next_pid.saturating_sub(1);
            return Some(format!("0.00 0.00 0.00 1/{live} {last}\n").into_bytes());
        }
        _ => {}
    }
    let (who, file) = rest.split_once('/')?;
    let me = k.current;
    let pid: Pid = match who {
        "self" => k.procs.get(&me)?.tgid,
        "thread-self" => me,
        n => n.parse().ok()?,
    };
    let container = k.procs.get(&me)?.container;
    // Only the pod's own processes are there, and only while they have not been reaped.
    let p = k.procs.get(&pid).filter(|p| p.container == container || who == "self")?;
    let _ = p;
    match file {
        "maps" => Some(maps(k, pid).into_bytes()),
        "status" => Some(status(k, pid).into_bytes()),
        "stat" => Some(stat(k, pid).into_bytes()),
        "cmdline" => Some(k.procs.get(&pid)?.exe.clone().into_bytes().into_iter().chain([0]).collect()),
        "comm" => Some(format!("{}\n", comm(&k.procs.get(&pid)?.exe)).into_bytes()),
        _ => None,
    }
}

fn cpu_list(n: usize) -> String {
    if n <= 1 {
        String::from("0\n")
    } else {
        format!("0-{}\n", n - 1)
    }
}

fn comm(exe: &str) -> &str {
    let base = exe.rsplit('/').next().unwrap_or(exe);
    base.get(..base.len().min(15)).unwrap_or(base)
}

fn cpuinfo(k: &Kernel) -> String {
    let mut s = String::new();
    for i in 0..k.vcpus {
        let _ = write!(
            s,
            "processor\t: {i}\nvendor_id\t: CrxHvCrxHvCr\nmodel name\t: crx-guest virtual CPU\n\
             physical id\t: 0\nsiblings\t: {n}\ncore id\t\t: {i}\ncpu cores\t: {n}\napicid\t\t: {i}\n\
             fpu\t\t: yes\nflags\t\t: fpu tsc cx8 cmov mmx fxsr sse sse2 syscall nx lm\n\n",
            n = k.vcpus
        );
    }
    s
}

fn meminfo(k: &Kernel) -> String {
    let total = k.pool.total_frames() as u64 * PAGE / 1024;
    let free = k.pool.free_frames() as u64 * PAGE / 1024;
    format!(
        "MemTotal:       {total:8} kB\nMemFree:        {free:8} kB\nMemAvailable:   {free:8} kB\n\
         Buffers:               0 kB\nCached:                0 kB\nSwapCached:            0 kB\n\
         SwapTotal:             0 kB\nSwapFree:              0 kB\n"
    )
}

/// Bytes of memory the process maps, and of frames it has (its resident set).
fn sizes(k: &Kernel, pid: Pid) -> (u64, u64) {
    let Some(mm) = k.procs.get(&pid).and_then(|p| p.mm.as_ref()) else { return (0, 0) };
    let mm = mm.borrow();
    let mapped: u64 = mm.regions.iter().map(|r| r.end - r.start).sum();
    let resident: u64 = mm
        .regions
        .iter()
        .map(|r| {
            let mut n = 0;
            let mut at = r.start;
            // Bounded per region: a huge reservation is counted by its touched pages only
            // up to a limit (this is a report, not accounting).
            let mut left = 1 << 16;
            while at < r.end && left > 0 {
                if mm.aspace.translate(at).is_some() {
                    n += PAGE;
                }
                at += PAGE;
                left -= 1;
            }
            n
        })
        .sum();
    (mapped, resident)
}

fn maps(k: &Kernel, pid: Pid) -> String {
    let mut s = String::new();
    let Some(mm) = k.procs.get(&pid).and_then(|p| p.mm.as_ref()) else { return s };
    let mm = mm.borrow();
    for r in mm.regions.iter() {
        let perm = |bit: u32, c: char| if r.prot & bit != 0 { c } else { '-' };
        let name = if r.start >= mm.brk_start
            && r.end <= crx_guest::vma::page_up(mm.brk).unwrap_or(mm.brk)
            && r.start < mm.brk
        {
            "[heap]"
        } else if r.start >= STACK_TOP - STACK_SIZE && r.end <= STACK_TOP {
            "[stack]"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "{:08x}-{:08x} {}{}{}p 00000000 00:00 0 {:>20}",
            r.start,
            r.end,
            perm(1, 'r'),
            perm(2, 'w'),
            perm(4, 'x'),
            name
        );
    }
    s
}

fn state_char(st: State) -> (char, &'static str) {
    match st {
        State::Runnable => ('R', "running"),
        State::Blocked => ('S', "sleeping"),
        State::Zombie(_) | State::Exited(_) => ('Z', "zombie"),
    }
}

fn status(k: &Kernel, pid: Pid) -> String {
    let Some(p) = k.procs.get(&pid) else { return String::new() };
    let threads = k.procs.values().filter(|t| t.tgid == p.tgid && t.state.is_live()).count();
    let (c, name) = state_char(p.state);
    let (vm, rss) = sizes(k, pid);
    let ignored: u64 =
        (1..=64u32).filter(|&n| p.sigactions.action(n).handler == 1).fold(0, |m, n| m | (1u64 << (n - 1)));
    let caught: u64 =
        (1..=64u32).filter(|&n| p.sigactions.action(n).handler > 1).fold(0, |m, n| m | (1u64 << (n - 1)));
    let mask = if k.vcpus >= 64 { u64::MAX } else { (1u64 << k.vcpus) - 1 };
    format!(
        "Name:\t{}\nUmask:\t{:04o}\nState:\t{c} ({name})\nTgid:\t{}\nNgid:\t0\nPid:\t{}\nPPid:\t{}\n\
         TracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t{}\nGroups:\t\n\
         VmPeak:\t{:8} kB\nVmSize:\t{:8} kB\nVmRSS:\t{:8} kB\nThreads:\t{threads}\n\
         SigQ:\t0/{}\nSigPnd:\t{:016x}\nShdPnd:\t0000000000000000\nSigBlk:\t{:016x}\nSigIgn:\t{ignored:016x}\n\
         SigCgt:\t{caught:016x}\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\n\
         CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n\
         Cpus_allowed:\t{mask:x}\nCpus_allowed_list:\t{}\
         voluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t0\n",
        comm(&p.exe),
        p.umask,
        p.tgid,
        p.pid,
        p.ppid,
        crate::kernel::fd::MAX_FDS,
        vm / 1024,
        vm / 1024,
        rss / 1024,
        k.process_limit,
        p.pending,
        p.sigmask,
        cpu_list(k.vcpus),
    )
}

fn stat(k: &Kernel, pid: Pid) -> String {
    let Some(p) = k.procs.get(&pid) else { return String::new() };
    let threads = k.procs.values().filter(|t| t.tgid == p.tgid && t.state.is_live()).count();
    let (c, _) = state_char(p.state);
    let (vm, rss) = sizes(k, pid);
    let pgrp = k.containers.get(p.container as usize).and_then(|c| c.root).unwrap_or(p.tgid);
    let ticks = |ns: u64| ns / 10_000_000;
    let cpu = k.cpu_ns_of(pid);
    // Fields 1-52 of proc(5); what the kernel does not keep is 0.
    format!(
        "{} ({}) {c} {} {pgrp} {pgrp} 0 -1 4194560 0 0 0 0 {} 0 0 0 20 0 {threads} 0 0 {vm} {} \
         18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        p.pid,
        comm(&p.exe),
        p.ppid,
        ticks(cpu),
        rss / PAGE,
    )
}
