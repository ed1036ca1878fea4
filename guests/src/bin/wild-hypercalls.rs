//! Makes hypercalls with bad arguments, each of which must come back as an error: pointers and
//! lengths of `u64::MAX`, ranges that wrap around, straddle the end of guest memory or lie
//! beyond it (for CONSOLE_WRITE, RANDOM and BOOT_PARAMS: `Fault`; a zero length may also
//! give 0), `TIMER_ARM` and `VCPU_KICK` with a bad vector (`Invalid`), and unknown hypercall numbers
//! (`NoSys`). Prints `all refused` and exits 0 when
//! every call returned what it should, else names each one that did not and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use crx_abi::{nr, Error};
use guests::{gprintln, guest_main, Guest};

guest_main!(run);

/// What a call must return.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// `Fault`.
    Fault,
    /// `Fault`, or 0 (nothing to copy).
    FaultOrZero,
    /// `NoSys`.
    NoSys,
    /// `Invalid`.
    Invalid,
}

fn accepted(expect: Expect, raw: u64) -> bool {
    match expect {
        Expect::Fault => Error::result(raw) == Err(Error::Fault),
        Expect::FaultOrZero => raw == 0 || Error::result(raw) == Err(Error::Fault),
        Expect::NoSys => Error::result(raw) == Err(Error::NoSys),
        Expect::Invalid => Error::result(raw) == Err(Error::Invalid),
    }
}

fn run(guest: &Guest) -> i32 {
    let m = guest.mem_bytes();
    let ranges: [(u64, u64, Expect); 11] = [
        (u64::MAX, 1, Expect::Fault),
        (u64::MAX, u64::MAX, Expect::Fault),
        (0xffff_ffff_ffff_f000, 0x2000, Expect::Fault),
        (m - 8, 16, Expect::Fault),
        (m - 1, 2, Expect::Fault),
        (m, 1, Expect::Fault),
        (m - 100, u64::MAX, Expect::Fault),
        (1 << 40, 8, Expect::Fault),
        (1 << 63, 1 << 63, Expect::Fault),
        (u64::MAX, 0, Expect::FaultOrZero),
        (m + 4096, 0, Expect::FaultOrZero),
    ];
    let mut calls = 0;
    let mut failed = 0;
    let mut check = |nr: u64, a0: u64, a1: u64, expect: Expect| {
        // SAFETY: every pointer range lies outside guest memory (or is empty), so a
        // hypervisor that honours the ABI writes nothing.
        let raw = unsafe { guest.raw(nr, a0, a1, 0, 0) };
        calls += 1;
        if !accepted(expect, raw) {
            failed += 1;
            gprintln!(
                guest,
                "wild-hypercalls: nr {nr} ({a0:#x}, {a1:#x}) returned {raw:#x} ({:?}), expected {expect:?}",
                Error::result(raw)
            );
        }
    };
    for hypercall in [nr::CONSOLE_WRITE, nr::RANDOM, nr::BOOT_PARAMS] {
        for (ptr, len, expect) in ranges {
            check(hypercall, ptr, len, expect);
        }
    }
    // The pod hypercalls mean nothing outside a pod VM.
    for pod_only in [
        nr::LOG_WRITE,
        nr::CONTAINER_EXIT,
        nr::POD_SPEC,
        nr::LAYER_INFO,
        nr::POD_CONTROL,
        nr::CONTAINER_ENTRY,
    ] {
        check(pod_only, u64::MAX, u64::MAX, Expect::Invalid);
    }
    // TIMER_ARM with a vector that is an exception or no vector at all arms nothing.
    for vector in [0, 13, 31, 256, 1 << 32, u64::MAX] {
        check(nr::TIMER_ARM, 0, vector, Expect::Invalid);
    }
    // VCPU_KICK with such a vector kicks nothing, whatever the mask.
    for vector in [1, 13, 31, 256, 1 << 32, u64::MAX] {
        check(nr::VCPU_KICK, u64::MAX, vector, Expect::Invalid);
    }
    for unknown in [17, 18, 0x100, 0xffff_ffff, 1 << 32, 1 << 63, u64::MAX - 1, u64::MAX] {
        check(unknown, u64::MAX, u64::MAX, Expect::NoSys);
    }
    // A known call with garbage in its unused arguments still works.
    // SAFETY: VERSION takes no pointer.
    let version = unsafe { guest.raw(nr::VERSION, u64::MAX, u64::MAX, u64::MAX, u64::MAX) };
    if version != u64::from(crx_abi::ABI_VERSION) {
        failed += 1;
        gprintln!(guest, "wild-hypercalls: VERSION with garbage arguments returned {version:#x}");
    }
    if failed == 0 {
        gprintln!(guest, "all refused ({calls} calls)");
        0
    } else {
        gprintln!(guest, "wild-hypercalls: {failed} of {calls} calls were not refused");
        1
    }
}
