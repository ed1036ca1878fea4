//! Bochs boots the GRUB ISO (Multiboot2) on two Skylake-X CPUs, which offer Intel VMX.
//! Bochs ends a run when the kernel writes "Shutdown" to port 0x8900 and exits with its own
//! status, so these tests judge the console alone.

use qemu::console::summary_regex;
use qemu::{Bochs, Machine, Network, NicModel, Summary, Virt};
use tests::{emulator_slot, iso, ok, processes_with, wait_ready, BOCHS_TIMEOUT};

#[test]
fn boots_two_cpus_with_vmx_and_gets_a_lease_on_its_e1000() {
    let node = Bochs { net: Some(Network::new(NicModel::E1000)), ..Bochs::new(iso("bochs-ready", "")) };
    assert_eq!((node.cpus, node.model.as_str()), (2, "corei7_skylake_x"));
    let _slot = emulator_slot();
    let mut machine = ok(Machine::bochs("test-ready", &node));
    let ready = wait_ready(&mut machine, BOCHS_TIMEOUT);
    let log = machine.log();
    assert_eq!(ready.cpus, 2, "expected cpus=2\n{log}");
    assert_eq!(ready.virt, Virt::Vmx, "expected virt=vmx\n{log}");
    // Bochs's restricted slirp leases as QEMU's does: no router, no DNS server.
    let lease =
        regex::Regex::new(r"^net: e1000 52:54:00:12:34:56 10\.0\.2\.15/24 no gateway dns none \(dhcp\)$")
            .unwrap();
    ok(machine.wait_for_regex(&lease, BOCHS_TIMEOUT));
    // Skylake-X has RDSEED, which the node draws its keys from.
    let log = machine.log();
    assert!(log.contains("net: random source for keys: RDSEED (RDRAND behind it)"), "{log}");
    // Dropped while the node idles: Bochs itself goes too, though `script` runs it in a
    // session of its own.
    drop(machine);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_with("test-ready.bochsrc").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "Bochs outlived its Machine: {:?}",
            processes_with("test-ready.bochsrc")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn selftest_all_passes() {
    // With a card, so that the e1000 driver's self-test (an ARP round trip) runs too.
    let node = Bochs {
        net: Some(Network::new(NicModel::E1000)),
        ..Bochs::new(iso("bochs-selftest", "selftest=all"))
    };
    let _slot = emulator_slot();
    let mut machine = ok(Machine::bochs("test-selftest", &node));
    let line = ok(machine.wait_for_regex(summary_regex(), BOCHS_TIMEOUT));
    let out = machine.stop();
    let summary = Summary::parse(&line.text);
    out.check(summary.is_some_and(|s| s.failed == 0 && s.passed >= 1), "self-tests failed or none ran");
    let failed: Vec<&str> = out.console().filter(|l| l.contains("FAILED")).collect();
    out.check(failed.is_empty(), &format!("FAILED lines: {failed:?}"));
    out.check(
        out.console().any(|l| l.contains("e1000: ") && l.contains("gateway 10.0.2.2 is at")),
        "the e1000 self-test did not reach the gateway",
    );
}
