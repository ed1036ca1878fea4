//! QEMU (TCG) boots the kernel directly through its PVH note and judges the serial console
//! and the isa-debug-exit status.

use qemu::console::{summary_regex, Verdict};
use qemu::{Machine, Outcome, Qemu, Summary, Virt, EXIT_FAILURE, EXIT_SUCCESS};
use regex::Regex;
use tests::{check_ready, emulator_slot, kernel, ok, wait_ready, QEMU_TIMEOUT};

/// Boots `node` and waits for it to power off.
fn run_to_exit(name: &str, node: &Qemu) -> Outcome {
    let _slot = emulator_slot();
    let machine = ok(Machine::qemu(name, node));
    ok(machine.wait_exit(QEMU_TIMEOUT))
}

fn node(cmdline: &str) -> Qemu {
    Qemu { cmdline: cmdline.into(), ..Qemu::new(kernel()) }
}

#[test]
fn ready_line_reports_four_cpus_memory_and_svm() {
    let node = node("");
    assert_eq!((node.smp, node.mem_mib, node.cpu.as_str()), (4, 512, "qemu64,+svm,+npt,+rdrand"));
    let _slot = emulator_slot();
    let mut machine = ok(Machine::qemu("ready-svm", &node));
    let ready = wait_ready(&mut machine, QEMU_TIMEOUT);
    let log = machine.log();
    check_ready(&ready, &log, 4, 480..=512, Virt::Svm);
}

#[test]
fn ready_line_reports_no_virtualization_without_svm() {
    let node = Qemu { cpu: "qemu64,-svm".into(), ..node("") };
    let _slot = emulator_slot();
    let mut machine = ok(Machine::qemu("ready-nosvm", &node));
    let ready = wait_ready(&mut machine, QEMU_TIMEOUT);
    assert_eq!(ready.virt, Virt::None, "expected virt=none\n{}", machine.log());
}

#[test]
fn selftest_all_passes() {
    let out = run_to_exit("selftest-all", &node("selftest=all"));
    out.check(out.code() == Some(EXIT_SUCCESS), "expected exit status 33 (success)");
    let summary = out.find(summary_regex()).and_then(Summary::parse);
    out.check(summary.is_some(), "no `selftest: N passed, M failed` line");
    let Some(summary) = summary else { return };
    out.check(summary.failed == 0, "some self-tests failed");
    out.check(summary.passed >= 1, "no self-test ran");
    let failed: Vec<&str> = out.console().filter(|l| l.contains("FAILED")).collect();
    out.check(failed.is_empty(), &format!("FAILED lines: {failed:?}"));
}

#[test]
fn selftest_fault_reports_the_page_fault() {
    let out = run_to_exit("selftest-fault", &node("selftest=fault"));
    out.check(out.code() == Some(EXIT_FAILURE), "expected exit status 35 (failure)");
    let lines: Vec<&str> = out.console().collect();
    out.check(
        lines.iter().any(|l| l.contains("EXCEPTION: page fault (#PF, vector 14) on cpu0")),
        "no `EXCEPTION: page fault (#PF, vector 14) on cpu0` line",
    );
    out.check(lines.iter().any(|l| l.contains("cr2=0x00000deadbeef000")), "no `cr2=0x00000deadbeef000`");
    let frame = Regex::new(r"^\s*#0 0x[0-9a-fA-F]+").expect("valid pattern");
    let backtrace = lines.iter().position(|l| l.contains("backtrace:"));
    out.check(backtrace.is_some(), "no `backtrace:` line");
    let after = backtrace.map(|i| &lines[i + 1..]).unwrap_or_default();
    out.check(after.iter().any(|l| frame.is_match(l)), "no `#0 0x...` frame after `backtrace:`");
}

#[test]
fn malformed_command_line_warns_and_still_boots() {
    let node = node("log=loud =x bogus colour=blue maxcpus=zero");
    let _slot = emulator_slot();
    let mut machine = ok(Machine::qemu("malformed-cmdline", &node));
    wait_ready(&mut machine, QEMU_TIMEOUT);
    let out = machine.stop();
    let warns: Vec<&str> = out.console().filter(|l| l.contains("WARN") && l.contains("cmdline:")).collect();
    // Each bad word is named in its warning: the bad value, the malformed word or the unknown key.
    for word in ["`loud`", "`=x`", "`bogus`", "`colour`", "`zero`"] {
        out.check(warns.iter().any(|l| l.contains(word)), &format!("no cmdline WARN line naming {word}"));
    }
}

#[test]
fn unknown_selftest_fails_by_name() {
    let out = run_to_exit("selftest-unknown", &node("selftest=nosuchtest"));
    out.check(out.code() == Some(EXIT_FAILURE), "expected exit status 35 (failure)");
    let named = out
        .console()
        .filter_map(Verdict::parse)
        .any(|v| matches!(v, Verdict::Failed { ref name, .. } if name == "nosuchtest"));
    out.check(named, "no `selftest: nosuchtest ... FAILED` line");
}

#[test]
fn stack_overflow_hits_the_guard_page() {
    let out = run_to_exit("selftest-overflow", &node("selftest=overflow"));
    out.check(out.code() == Some(EXIT_FAILURE), "expected exit status 35 (failure)");
    let lines: Vec<&str> = out.console().collect();
    out.check(
        lines.iter().any(|l| l.contains("EXCEPTION: page fault (#PF, vector 14) on cpu0")),
        "no page-fault report",
    );
    out.check(
        lines.iter().any(|l| l.contains("stack overflow: cr2 is in the guard page under cpu0's stack")),
        "the report does not name the guard page",
    );
}

#[test]
fn memory_above_4_gib_and_one_cpu() {
    let node = Qemu { smp: 1, mem_mib: 5000, ..node("selftest=all") };
    let out = run_to_exit("selftest-5g", &node);
    out.check(out.code() == Some(EXIT_SUCCESS), "expected exit status 33 (success)");
    let ready = out.console().find_map(qemu::console::Ready::parse);
    out.check(ready.is_some(), "no ready line");
    if let Some(r) = ready {
        out.check(r.cpus == 1, "expected cpus=1");
        out.check((4900..=5000).contains(&r.memory_mib), "memory not in 4900..=5000 MiB");
    }
}
