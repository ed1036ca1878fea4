//! VMs on both backends: QEMU (TCG, AMD SVM with nested paging, 4 CPUs) and Bochs (Intel VMX
//! with EPT, 2 Skylake-X CPUs). The test guests (`guests/`) run as VMs; the tests judge the
//! kernel's VM lines (`vm<i>: ...`, the end lines and `vms: N exited, M stopped`), see
//! `qemu::vm`. Every run has a timeout and a failing check prints the node's whole log.

use qemu::vm::{End, Host, Report, RunStatus, VmRun, VmSpec, STATUS_STOPPED};
use qemu::EXIT_SUCCESS;
use std::cell::Cell;
use std::time::{Duration, Instant};
use tests::{guest, kernel, run_vms, BOCHS_TIMEOUT, QEMU_TIMEOUT};

fn qemu() -> Host {
    Host::qemu(kernel())
}

fn bochs() -> Host {
    Host::bochs(kernel())
}

/// Runs until every VM has ended.
fn run(name: &str, host: &Host, spec: &VmSpec) -> VmRun {
    let limit = if host.kind == qemu::Kind::Bochs { BOCHS_TIMEOUT } else { QEMU_TIMEOUT };
    run_vms(name, host, spec, limit, &|_| false)
}

/// Checks that every VM ended and the kernel closed the run with the right counts.
fn check_all_ended(run: &VmRun, exited: u32, stopped: u32) {
    run.check(!run.timed_out, "the run timed out");
    run.check(
        run.report.all_ended == Some((exited, stopped)),
        &format!("expected `vms: {exited} exited, {stopped} stopped`"),
    );
    run.check(!run.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "the kernel panicked");
}

fn check_exit(run: &VmRun, vm: u32, code: i32) {
    run.check(run.end(vm) == Some(&End::Exited(code)), &format!("vm{vm} should exit with code {code}"));
}

fn check_stopped(run: &VmRun, vm: u32, words: &[&str]) {
    let reason = match run.end(vm) {
        Some(End::Stopped(r)) => r.clone(),
        _ => String::new(),
    };
    run.check(!reason.is_empty(), &format!("vm{vm} should be stopped"));
    for w in words {
        run.check(reason.contains(w), &format!("vm{vm}'s stop reason `{reason}` should name `{w}`"));
    }
}

fn check_line(run: &VmRun, vm: u32, text: &str) {
    run.check(run.lines_of(vm).iter().any(|l| l.contains(text)), &format!("vm{vm} printed no `{text}`"));
}

fn check_hello(run: &VmRun, vm: u32, count: u32) {
    check_line(run, vm, &format!("hello from vm{vm} of {count}"));
    check_exit(run, vm, 0);
}

// ---- QEMU: AMD SVM ----

#[test]
fn hello_exits_zero() {
    let r = run("vm-hello", &qemu(), &VmSpec::new(guest("hello"), 1));
    check_all_ended(&r, 1, 0);
    check_hello(&r, 0, 1);
    r.check(r.status == RunStatus::Exited(0), "status should be vm0's code 0");
    r.check(r.emulator.code() == Some(EXIT_SUCCESS), "the kernel should power off with success (33)");
}

#[test]
fn exit_codes_reach_the_end_lines() {
    let codes = [("", 7), ("code=3", 3), ("code=-1", -1), ("code=1000", 1000)];
    let spec = VmSpec::each(codes.iter().map(|(c, _)| guest("exit-code").with_cmdline(c)).collect());
    let r = run("vm-exit-codes", &qemu(), &spec);
    check_all_ended(&r, 4, 0);
    for (vm, (_, code)) in (0..).zip(codes) {
        check_exit(&r, vm, code);
    }
    r.check(r.status.exit_status() == 7, "status should be vm0's code 7");
}

#[test]
fn one_command_line_for_every_vm_keeps_spaces_and_plus_signs() {
    let spec = VmSpec::new(guest("exit-code").with_cmdline("unused=a+b%20c code=42 other"), 2);
    let r = run("vm-cmdline", &qemu(), &spec);
    check_all_ended(&r, 2, 0);
    check_exit(&r, 0, 42);
    check_exit(&r, 1, 42);
}

#[test]
fn clocks_and_sleep() {
    let r = run("vm-time", &qemu(), &VmSpec::new(guest("time"), 1));
    check_all_ended(&r, 1, 0);
    check_line(&r, 0, "time ok");
    check_exit(&r, 0, 0);
}

/// Every counter VM printed its lines whole and in order.
fn check_counters(run: &VmRun, count: u32, lines: u32) {
    for vm in 0..count {
        check_counters_one(run, vm, count, lines);
    }
}

#[test]
fn eight_vms_on_four_cpus_interleave_whole_lines() {
    let spec = VmSpec::new(guest("counter").with_cmdline("lines=6"), 8);
    let r = run("vm-counter-8", &qemu(), &spec);
    check_all_ended(&r, 8, 0);
    check_counters(&r, 8, 6);
}

#[test]
fn a_spinning_vm_does_not_starve_the_others() {
    let spec =
        VmSpec::each(vec![guest("hello"), guest("spin"), guest("hello"), guest("hello"), guest("spin")]);
    // Stop 3 s after the hello VMs end: the node must stay up beside the spinning VMs.
    let done_at: Cell<Option<Instant>> = Cell::new(None);
    let stop = |r: &Report| {
        let hellos = [0, 2, 3].iter().all(|&vm| r.end(vm).is_some());
        if hellos && done_at.get().is_none() {
            done_at.set(Some(Instant::now()));
        }
        done_at.get().is_some_and(|t| t.elapsed() >= Duration::from_secs(3))
    };
    let r = run_vms("vm-spin", &qemu(), &spec, QEMU_TIMEOUT, &stop);
    r.check(!r.timed_out, "the hello VMs did not finish beside the spinning ones");
    for vm in [0, 2, 3] {
        check_hello(&r, vm, 5);
    }
    for vm in [1, 4] {
        check_line(&r, vm, "spinning");
        r.check(
            matches!(r.end(vm), None | Some(End::Stopped(_))),
            &format!("spinning vm{vm} cannot have exited"),
        );
    }
    r.check(!r.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "the kernel panicked");
    r.check(r.status == RunStatus::Exited(0), "status should be vm0's code 0");
}

/// Hostile users of the guest timer (`TIMER_ARM`), each placed on a CPU of its own beside
/// a well-behaved VM (placement is round robin over the 4 CPUs): one keeps its interrupt
/// pending for ever behind `cli`, one takes a single interrupt and never arms again, one
/// re-arms in the past from its handler (an interrupt storm), one never arms. The sleeper,
/// the yielder and the printer beside them still finish, and each hostile VM saw what the
/// ABI says (bad vectors refused, one interrupt only for `once`, a stream for `storm`).
#[test]
fn timer_abusing_vms_do_not_starve_the_others() {
    let spec = VmSpec::each(vec![
        guest("spin").with_cmdline("timer=cli"),
        guest("spin").with_cmdline("timer=once"),
        guest("spin").with_cmdline("timer=storm"),
        guest("spin"),
        guest("time"),
        guest("counter").with_cmdline("lines=6"),
        guest("time"),
        guest("hello"),
    ]);
    let good = [4u32, 5, 6, 7];
    // Stop 3 s after the good VMs have ended and the hostile ones have shown their lines
    // (time enough for a second interrupt that should not come).
    let done_at: Cell<Option<Instant>> = Cell::new(None);
    let stop = |r: &Report| {
        let shown = |vm: u32, text: &str| r.lines(vm).iter().any(|l| l == text);
        let ready = good.iter().all(|&vm| r.end(vm).is_some())
            && shown(1, "timer fired once")
            && shown(2, "timer storm");
        if ready && done_at.get().is_none() {
            done_at.set(Some(Instant::now()));
        }
        done_at.get().is_some_and(|t| t.elapsed() >= Duration::from_secs(3))
    };
    let r = run_vms("vm-timer-abuse", &qemu(), &spec, QEMU_TIMEOUT, &stop);
    r.check(!r.timed_out, "the good VMs did not finish beside the timer-abusing ones");
    check_line(&r, 4, "time ok");
    check_exit(&r, 4, 0);
    check_counters_one(&r, 5, 8, 6);
    check_line(&r, 6, "time ok");
    check_exit(&r, 6, 0);
    check_hello(&r, 7, 8);
    for vm in 0..3 {
        check_line(&r, vm, "timer: bad vectors refused");
    }
    for vm in 0..4 {
        check_line(&r, vm, "spinning");
        r.check(r.end(vm).is_none(), &format!("spinning vm{vm} cannot have ended"));
    }
    check_line(&r, 1, "timer fired once");
    r.check(!r.lines_of(1).iter().any(|l| l.contains("twice")), "vm1 got a second interrupt it did not arm");
    check_line(&r, 2, "timer storm");
    r.check(!r.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "the kernel panicked");
}

/// What `guests/src/bin/kick.rs` prints when two vCPUs of one VM woke and interrupted each
/// other as `VCPU_KICK` says (crx-abi 6), promptly, and checks it exited 0.
fn check_kicks(r: &VmRun) {
    check_all_ended(r, 1, 0);
    for line in [
        "kick: bad vectors refused",
        "kick: vcpu1 woken 20 times",
        "kick: vcpu1 interrupted 20 times",
        "kick ok: ",
    ] {
        check_line(r, 0, line);
    }
    check_exit(r, 0, 0);
}

/// Two vCPUs of one VM (`vm.vcpus=2`): vCPU 1 starts with RSI = 1 on its own stack; vCPU 0
/// wakes it from `SLEEP_UNTIL(u64::MAX)` with a kick (bad vectors and bits of vCPUs the VM
/// lacks do nothing), interrupts it with a kick's vector while it spins with IF = 1, and
/// leaves it wakes before it sleeps (one, however many kicks); the median latencies must
/// be well under the 10 ms host tick (the host IPIs).
#[test]
fn vcpu_kick_wakes_and_interrupts_another_vcpu() {
    let spec = VmSpec { vcpus: 2, ..VmSpec::new(guest("kick"), 1) };
    check_kicks(&run("vm-kick", &qemu(), &spec));
}

/// Hostile kickers with two vCPUs each, beside well-behaved VMs (every VM has two vCPUs;
/// the good ones park their second in `SLEEP_UNTIL(u64::MAX)`): one VM kicks itself with a
/// vector from both vCPUs in a loop (an interrupt after every call on vCPU 0, sleeps that
/// return at once on vCPU 1), one kicks every vCPU (`mask = u64::MAX`) with a vector in a
/// loop while its other vCPU takes the interrupts. The sleeper, the printer and the greeter
/// beside them still finish, and the kickers saw their interrupts.
#[test]
fn kick_abusing_vms_do_not_starve_the_others() {
    let guests = vec![
        guest("kick").with_cmdline("kick=self"),
        guest("kick").with_cmdline("kick=all"),
        guest("time"),
        guest("counter").with_cmdline("lines=6"),
        guest("time"),
        guest("hello"),
    ];
    let spec = VmSpec { vcpus: 2, ..VmSpec::each(guests) };
    let good = [2u32, 3, 4, 5];
    let done_at: Cell<Option<Instant>> = Cell::new(None);
    let stop = |r: &Report| {
        let shown = |vm: u32, text: &str| r.lines(vm).iter().any(|l| l == text);
        let ready = good.iter().all(|&vm| r.end(vm).is_some())
            && shown(0, "kick: 1000 interrupts from its own kicks")
            && shown(1, "kick: 1000 interrupts from kicks");
        if ready && done_at.get().is_none() {
            done_at.set(Some(Instant::now()));
        }
        done_at.get().is_some_and(|t| t.elapsed() >= Duration::from_secs(3))
    };
    let r = run_vms("vm-kick-abuse", &qemu(), &spec, QEMU_TIMEOUT, &stop);
    r.check(!r.timed_out, "the good VMs did not finish beside the kicking ones");
    check_line(&r, 2, "time ok");
    check_exit(&r, 2, 0);
    check_counters_one(&r, 3, 6, 6);
    check_line(&r, 4, "time ok");
    check_exit(&r, 4, 0);
    check_hello(&r, 5, 6);
    check_line(&r, 0, "kick: kicking itself");
    check_line(&r, 0, "kick: 1000 interrupts from its own kicks");
    check_line(&r, 1, "kick: taking kicks");
    check_line(&r, 1, "kick: 1000 interrupts from kicks");
    for vm in 0..2 {
        r.check(r.end(vm).is_none(), &format!("kicking vm{vm} cannot have ended"));
    }
    r.check(!r.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "the kernel panicked");
}

#[test]
fn sse_state_stays_with_its_vm() {
    let r = run("vm-fpu-4", &qemu(), &VmSpec::new(guest("fpu"), 4));
    check_all_ended(&r, 4, 0);
    for vm in 0..4 {
        check_line(&r, vm, "fpu ok");
        check_exit(&r, vm, 0);
    }
}

#[test]
fn out_of_bounds_accesses_stop_the_vm() {
    let mem: u64 = 16 << 20;
    let near = format!("{:#x}", mem + (16 << 20));
    let far = format!("{:#x}", 1u64 << 36);
    let spec = VmSpec::each(vec![
        guest("oob-read"),
        guest("oob-read").with_cmdline("at=far"),
        guest("oob-write"),
        guest("oob-write").with_cmdline("at=far"),
        guest("hello"),
    ]);
    let r = run("vm-oob", &qemu(), &spec);
    check_all_ended(&r, 1, 4);
    check_stopped(&r, 0, &["outside guest memory", "Read", &near]);
    check_stopped(&r, 1, &["outside guest memory", "Read", &far]);
    check_stopped(&r, 2, &["outside guest memory", "Write", &near]);
    check_stopped(&r, 3, &["outside guest memory", "Write", &far]);
    check_hello(&r, 4, 5);
    r.check(r.status.exit_status() == STATUS_STOPPED, "status should say vm0 was stopped (125)");
}

#[test]
fn privileged_instructions_are_refused() {
    let spec = VmSpec::each(vec![
        guest("privileged"),
        guest("privileged").with_cmdline("steps=cpuid,rdmsr,wrmsr,vmxon,vmrun"),
        guest("hello"),
    ]);
    let r = run("vm-privileged", &qemu(), &spec);
    check_all_ended(&r, 2, 1);
    for vm in [0, 1] {
        check_line(&r, vm, "cpuid ok");
        check_line(&r, vm, "caught #GP: rdmsr 0x3a");
        check_line(&r, vm, "caught #GP: rdmsr 0x480");
        check_line(&r, vm, "caught #GP: wrmsr 0x3a");
        check_line(&r, vm, "caught #UD: vmxon");
        check_line(&r, vm, "caught #UD: vmrun");
        let refused = r.lines_of(vm).iter().filter(|l| l.starts_with("caught #GP: rdmsr")).count();
        r.check(refused == 4, &format!("vm{vm}: expected 4 refused RDMSRs, saw {refused}"));
        r.check(
            !r.lines_of(vm).iter().any(|l| l.contains("not refused")),
            &format!("vm{vm}: a step was not refused"),
        );
    }
    check_stopped(&r, 0, &["0x3f8"]);
    check_line(&r, 1, "privileged: all refused");
    check_exit(&r, 1, 0);
    check_hello(&r, 2, 3);
}

#[test]
fn triple_fault_stops_the_vm() {
    let r = run("vm-triple-fault", &qemu(), &VmSpec::each(vec![guest("triple-fault"), guest("hello")]));
    check_all_ended(&r, 1, 1);
    check_stopped(&r, 0, &["triple fault"]);
    check_hello(&r, 1, 2);
}

#[test]
fn wild_hypercalls_are_refused() {
    let r = run("vm-wild", &qemu(), &VmSpec::each(vec![guest("wild-hypercalls"), guest("hello")]));
    check_all_ended(&r, 2, 0);
    check_line(&r, 0, "all refused");
    check_exit(&r, 0, 0);
    check_hello(&r, 1, 2);
}

#[test]
fn a_halted_vm_runs_into_the_timeout() {
    let spec = VmSpec::each(vec![guest("forever"), guest("hello")]);
    let r = run_vms("vm-forever", &qemu(), &spec, Duration::from_secs(45), &|_| false);
    check_line(&r, 0, "forever");
    check_hello(&r, 1, 2);
    r.check(r.timed_out, "the run should have timed out");
    r.check(r.status == RunStatus::TimedOut, "status should be the timeout (124)");
    r.check(r.status.exit_status() == 124, "status 124");
}

// ---- Bochs: Intel VMX ----

#[test]
fn bochs_hello_exits_zero() {
    let r = run("vm-bochs-hello", &bochs(), &VmSpec::new(guest("hello"), 1));
    check_all_ended(&r, 1, 0);
    check_hello(&r, 0, 1);
}

#[test]
fn bochs_mixed_vms() {
    let spec = VmSpec::each(vec![
        guest("counter").with_cmdline("lines=3"),
        guest("fpu").with_cmdline("rounds=20"),
        guest("privileged").with_cmdline("steps=cpuid,rdmsr,vmxon,vmrun,out"),
        guest("oob-write"),
    ]);
    let r = run("vm-bochs-mixed", &bochs(), &spec);
    check_all_ended(&r, 2, 2);
    check_counters_one(&r, 0, 4, 3);
    check_line(&r, 1, "fpu ok");
    check_exit(&r, 1, 0);
    check_line(&r, 2, "caught #GP: rdmsr 0x3a");
    check_line(&r, 2, "caught #UD: vmxon");
    check_line(&r, 2, "caught #UD: vmrun");
    check_stopped(&r, 2, &["0x3f8"]);
    check_stopped(&r, 3, &["outside guest memory", "Write"]);
}

/// The kick test on VT-x (Bochs' two CPUs, one per vCPU).
#[test]
fn bochs_vcpu_kick_wakes_and_interrupts_another_vcpu() {
    let spec = VmSpec { vcpus: 2, ..VmSpec::new(guest("kick"), 1) };
    check_kicks(&run("vm-bochs-kick", &bochs(), &spec));
}

fn check_counters_one(run: &VmRun, vm: u32, count: u32, lines: u32) {
    let mut expected = vec![format!("counter vm{vm} of {count}")];
    expected.extend(
        (1..=lines).map(|k| format!("vm{vm} line {k} of {lines} abcdefghijklmnopqrstuvwxyz0123456789")),
    );
    run.check(
        run.lines_of(vm) == expected.as_slice(),
        &format!("vm{vm}'s lines are missing, torn or out of order"),
    );
    check_exit(run, vm, 0);
}

#[test]
fn bochs_hostile_vms_are_contained() {
    let spec = VmSpec::each(vec![
        guest("wild-hypercalls"),
        guest("triple-fault"),
        guest("spin"),
        guest("hello"),
        guest("oob-read").with_cmdline("at=far"),
    ]);
    // The spinning VM never ends: stop once the others have, and the node is still printing.
    let stop = |r: &Report| [0, 1, 3, 4].iter().all(|&vm| r.end(vm).is_some());
    let r = run_vms("vm-bochs-hostile", &bochs(), &spec, BOCHS_TIMEOUT, &stop);
    r.check(!r.timed_out, "the other VMs did not finish beside the spinning one");
    check_line(&r, 0, "all refused");
    check_exit(&r, 0, 0);
    check_stopped(&r, 1, &["triple fault"]);
    check_line(&r, 2, "spinning");
    check_hello(&r, 3, 5);
    check_stopped(&r, 4, &["outside guest memory", "Read", &format!("{:#x}", 1u64 << 36)]);
    r.check(!r.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "the kernel panicked");
}
