//! The GRUB ISO is a hybrid image: besides BIOS machines (Bochs, tests/tests/bochs.rs) it
//! boots UEFI ones. QEMU (TCG, q35) with Debian's OVMF firmware boots it from CD, and the
//! kernel reports ready and passes its self-tests there.

use qemu::console::summary_regex;
use qemu::emulator::Uefi;
use qemu::{Machine, Qemu, Summary, Virt, EXIT_SUCCESS};
use tests::{check_ready, emulator_slot, iso, kernel, ok, wait_ready, QEMU_TIMEOUT};

/// A UEFI node booting the test ISO `name` (grub.cfg command line `cmdline`).
fn uefi_node(name: &str, cmdline: &str) -> Qemu {
    let uefi = ok(Uefi::new(name, iso(name, cmdline)));
    Qemu { uefi: Some(uefi), ..Qemu::new(kernel()) }
}

#[test]
fn uefi_boot_reaches_the_ready_line() {
    let node = uefi_node("uefi-ready", "");
    let _slot = emulator_slot();
    let mut machine = ok(Machine::qemu("uefi-ready", &node));
    let ready = wait_ready(&mut machine, QEMU_TIMEOUT);
    let log = machine.log();
    // OVMF keeps some RAM for itself; the kernel must still see most of the 512 MiB.
    check_ready(&ready, &log, 4, 400..=512, Virt::Svm);
}

#[test]
fn uefi_boot_passes_every_selftest() {
    let node = uefi_node("uefi-selftest", "selftest=all");
    let _slot = emulator_slot();
    let machine = ok(Machine::qemu("uefi-selftest", &node));
    let out = ok(machine.wait_exit(QEMU_TIMEOUT));
    out.check(out.code() == Some(EXIT_SUCCESS), "expected exit status 33 (success)");
    let summary = out.find(summary_regex()).and_then(Summary::parse);
    out.check(summary.is_some(), "no `selftest: N passed, M failed` line");
    let Some(summary) = summary else { return };
    out.check(summary.failed == 0, "some self-tests failed");
    out.check(summary.passed >= 1, "no self-test ran");
}
