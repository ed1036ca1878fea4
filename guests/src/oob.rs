//! The target of the out-of-bounds guests: `at=near` (default: 16 MiB past the end of guest
//! memory), `at=far` (64 GiB) or `at=<address>`, and the guest-side mapping that lets the
//! access reach the hypervisor's nested page tables instead of faulting in the guest.

use crate::cpu::{map_2m, PageAlloc};
use crate::{args, gprintln, Guest};

/// 16 MiB.
pub const NEAR_GAP: u64 = 16 << 20;
/// 64 GiB: far beyond guest memory, yet inside every x86-64 CPU's physical-address width
/// (QEMU's qemu64 has 40 bits), so the guest's own page walk accepts the mapping and the
/// access reaches the nested page tables.
pub const FAR: u64 = 1 << 36;

/// The guest-physical address `at=` names, for `mem_bytes` of guest memory.
pub fn target(cmdline: &str, mem_bytes: u64) -> Option<u64> {
    match args::get(cmdline, "at") {
        None | Some("near") => mem_bytes.checked_add(NEAR_GAP),
        Some("far") => Some(FAR),
        Some(v) => args::parse_u64(v),
    }
}

/// Works out the target and maps it in the guest's page tables; prints why and returns
/// `None` when it cannot.
pub fn prepare(guest: &Guest, what: &str) -> Option<u64> {
    let Some(gpa) = target(guest.cmdline(), guest.mem_bytes()) else {
        gprintln!(guest, "{what}: malformed at=");
        return None;
    };
    // Page tables come from the free memory above the image, below the stack's last 64 KiB.
    let mut alloc =
        PageAlloc { next: guest.free_start(), end: guest.params().stack_top.saturating_sub(64 << 10) };
    // SAFETY: the guest still runs on the hypervisor's initial page tables, reachable 1:1.
    if let Err(e) = unsafe { map_2m(gpa, &mut alloc) } {
        gprintln!(guest, "{what}: cannot map {gpa:#x}: {e:?}");
        return None;
    }
    gprintln!(guest, "{what}: touching gpa {gpa:#x} (guest memory ends at {:#x})", guest.mem_bytes());
    Some(gpa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("", 16 << 20), Some(32 << 20));
        assert_eq!(target("at=near", 64 << 20), Some(80 << 20));
        assert_eq!(target("at=far", 16 << 20), Some(1 << 36));
        assert_eq!(target("at=0x1000", 16 << 20), Some(0x1000));
        assert_eq!(target("at=5g", 16 << 20), Some(5 << 30));
        assert_eq!(target("at=bogus", 16 << 20), None);
        assert_eq!(target("", u64::MAX), None);
    }
}
