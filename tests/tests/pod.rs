//! Pod VMs: container images run by crx-guest in a VM of the hypervisor, on QEMU (AMD SVM)
//! and a few on Bochs (Intel VMX). The busybox image is built from the host's static
//! busybox (`qemu::oci`); each test runs one container and judges its output lines
//! (`pod/main> ...`) and its exit code (`pod/main: exited with code N`), see `qemu::pod`.
//!
//! The first group needs only the hypervisor: the pod bundle's guest is a test guest, which
//! shows the layer window is mapped read-only and the pod lines appear when the VM ends.

use qemu::oci::{self, Compression, Image, Layer, RunConfig};
use qemu::pod::{self, ContainerEnd, PodOutcome, PodRun, PodStatus};
use qemu::vm::{End, Host};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tests::{emulator_slot, gcc_static, guest, kernel, ok, run_program, BOCHS_TIMEOUT, QEMU_TIMEOUT};

fn qemu() -> Host {
    Host::qemu(kernel())
}

fn bochs() -> Host {
    Host::bochs(kernel())
}

/// The busybox image layout, built once per test binary.
fn busybox() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        ok(qemu::setup::ensure(qemu::setup::BUSYBOX));
        let dir = qemu::image::target_dir().join("test-pod").join("busybox");
        oci::build_busybox_image(Path::new(qemu::setup::BUSYBOX_PATH), &dir)
            .unwrap_or_else(|e| panic!("{e}"));
        Image::open(&dir).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// crx-guest, built once per test binary.
fn guest_kernel() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| ok(pod::build_guest_kernel()))
}

/// Runs `module` on `host` with `extra` kernel words, taking the emulator slot.
fn boot(host: &Host, name: &str, module: PathBuf, extra: &str) -> PodOutcome {
    let limit = if host.kind == qemu::Kind::Bochs { BOCHS_TIMEOUT } else { QEMU_TIMEOUT };
    let _slot = emulator_slot();
    ok(pod::run(host, name, module, pod::kernel_cmdline(None, extra), "main", Some(limit), &mut |_, _, _| {}))
}

/// Runs `argv` from `image` in crx-guest.
fn run_in(host: &Host, name: &str, image: &Image, argv: &[&str]) -> PodOutcome {
    let args: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let run = PodRun::new(image, &args);
    let module = ok(pod::write_bundle(guest_kernel(), image, &run, name));
    boot(host, name, module, "")
}

fn busybox_run(name: &str, argv: &[&str]) -> PodOutcome {
    run_in(&qemu(), name, busybox(), argv)
}

#[track_caller]
fn check(o: &PodOutcome, good: bool, msg: &str) {
    o.run.check(good, &format!("{msg} (pod status: {})", o.status.describe()));
}

#[track_caller]
fn check_exit(o: &PodOutcome, code: i32) {
    check(o, !o.run.timed_out, "the run timed out");
    check(o, !o.run.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "the kernel panicked");
    check(o, o.status == PodStatus::Exited(code), &format!("the container should exit with code {code}"));
    check(o, o.run.end(0).is_some(), "the pod VM should end");
}

fn out(o: &PodOutcome) -> &[String] {
    o.pod.lines("main")
}

// ---- The hypervisor's side, with test guests in the pod bundle ----

/// A pod bundle whose guest is test guest `name` and whose one layer starts with `first`.
fn plain_bundle(name: &str, guest_name: &str, first: &[u8]) -> PathBuf {
    let elf = std::fs::read(guest(guest_name).path).expect("test guest");
    let image = Image {
        layers: vec![Layer { bytes: first.to_vec(), compression: Compression::None }],
        config: RunConfig::default(),
        id: String::new(),
    };
    let run = PodRun::new(&image, &["/bin/true".into()]);
    let layers: Vec<_> = image.layers.iter().map(|l| (l.bytes.as_slice(), l.compression.kind())).collect();
    ok(pod::write_module(&ok(pod::pack(&elf, &run.spec(), &layers)), name))
}

const LAYER_HEAD: &[u8; 8] = b"LAYERONE";

#[test]
fn a_pod_vm_reports_containers_that_never_exited() {
    let o = boot(&qemu(), "pod-plain-hello", plain_bundle("pod-plain-hello", "hello", LAYER_HEAD), "");
    check(&o, o.run.end(0) == Some(&End::Exited(0)), "the hello guest should exit 0 in pod mode");
    match o.pod.end("main") {
        Some(ContainerEnd::Stopped(r)) => {
            check(&o, r.contains("exited (code 0)"), "the reason names the VM's exit")
        }
        _ => check(&o, false, "pod/main should be reported stopped"),
    }
    check(&o, o.status.exit_status() == 125, "no container exit code: status 125");
}

#[test]
fn layers_are_readable_in_the_window() {
    let o = boot(
        &qemu(),
        "pod-layer-read",
        plain_bundle("pod-layer-read", "oob-read", LAYER_HEAD),
        "vm.cmdline=at=0x4000000000",
    );
    let want = format!("read {:#x}", u64::from_le_bytes(*LAYER_HEAD));
    check(
        &o,
        o.run.lines_of(0).iter().any(|l| l.contains(&want)),
        &format!("the guest should {want} at LAYERS_BASE"),
    );
    check(&o, o.run.end(0) == Some(&End::Exited(3)), "oob-read exits 3 after reading");
}

#[test]
fn writes_to_the_layer_window_stop_the_vm() {
    let o = boot(
        &qemu(),
        "pod-layer-write",
        plain_bundle("pod-layer-write", "oob-write", LAYER_HEAD),
        "vm.cmdline=at=0x4000000000",
    );
    match o.run.end(0) {
        Some(End::Stopped(r)) => {
            check(&o, r.contains("read-only image layers"), "the stop reason names the layers")
        }
        _ => check(&o, false, "the VM should be stopped"),
    }
    match o.pod.end("main") {
        Some(ContainerEnd::Stopped(r)) => {
            check(&o, r.contains("read-only image layers"), "pod/main gets the reason")
        }
        _ => check(&o, false, "pod/main should be reported stopped"),
    }
    check(&o, o.status.exit_status() == 125, "status 125");
}

#[test]
fn malformed_pod_bundles_stop_the_vm_with_a_reason() {
    let mut b = std::fs::read(plain_bundle("pod-bad", "hello", LAYER_HEAD)).expect("bundle");
    b[48 + 16] = 9; // layer 0's kind
    let module = ok(pod::write_module(&b, "pod-bad"));
    let o = boot(&qemu(), "pod-bad", module, "");
    match o.run.end(0) {
        Some(End::Stopped(r)) => check(&o, r.contains("unknown kind"), "the reason names the bad layer"),
        _ => check(&o, false, "the VM should be stopped"),
    }
}

// ---- crx-guest with the busybox image, QEMU ----

#[test]
fn echo_hello() {
    let o = busybox_run("pod-echo", &["echo", "hello"]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["hello"], "output should be `hello`");
}

#[test]
fn cat_a_file_of_the_image() {
    let o = busybox_run("pod-cat", &["cat", "/etc/hello.txt"]);
    check_exit(&o, 0);
    check(&o, out(&o) == [oci::HELLO_TXT.trim_end()], "cat prints etc/hello.txt");
}

#[test]
fn ls_long_of_the_root() {
    let o = busybox_run("pod-ls", &["ls", "-l", "/"]);
    check_exit(&o, 0);
    for name in ["bin", "etc", "tmp"] {
        check(&o, out(&o).iter().any(|l| l.ends_with(&format!(" {name}"))), &format!("ls -l / lists {name}"));
    }
    check(&o, out(&o).iter().any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp")), "tmp is 1777");
}

#[test]
fn wc_of_a_file() {
    let o = busybox_run("pod-wc", &["wc", "/etc/hello.txt"]);
    check_exit(&o, 0);
    let t = oci::HELLO_TXT;
    let want = format!("{} {} {}", t.lines().count(), t.split_whitespace().count(), t.len());
    let got = out(&o).first().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    check(&o, got.as_deref() == Some(want.as_str()), &format!("wc should say {want}"));
}

#[test]
fn sha256sum_matches_the_host() {
    let o = busybox_run("pod-sha", &["sha256sum", "/etc/hello.txt"]);
    check_exit(&o, 0);
    let host_hash = host_sha256_of_hello();
    check(
        &o,
        out(&o).first().is_some_and(|l| l.starts_with(&host_hash)),
        &format!("sha256 should be {host_hash}"),
    );
}

#[test]
fn shell_loop() {
    let o = busybox_run("pod-loop", &["sh", "-c", "for i in 1 2 3; do echo $i; done"]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["1", "2", "3"], "the loop prints 1 2 3");
}

#[test]
fn shell_pipe() {
    let o = busybox_run("pod-pipe", &["sh", "-c", "echo hello | wc -c"]);
    check_exit(&o, 0);
    check(&o, out(&o).iter().map(|l| l.trim()).collect::<Vec<_>>() == ["6"], "echo hello | wc -c is 6");
}

/// A container printing as fast as it can beside a quiet one: the hypervisor keeps the
/// chatty one's lines in its log but lets only a burst and then a trickle reach the
/// console (every line is either printed or counted in a rate-limit line), the neighbour's
/// lines and both ends come through, and the pod VM finishes.
#[test]
fn a_chatty_container_is_rate_limited_and_its_neighbour_still_finishes() {
    const LINES: u64 = 20_000;
    let image = busybox();
    let mut spec =
        PodRun::new(image, &["sh".into(), "-c".into(), "echo started; sleep 1; echo finished".into()]).spec();
    let mut chatty = spec.containers[0].clone();
    chatty.name = "chatty".into();
    chatty.command = vec!["seq".into(), "1".into(), LINES.to_string()];
    spec.containers.push(chatty);
    let guest = std::fs::read(guest_kernel()).expect("crx-guest");
    let layers: Vec<_> = image.layers.iter().map(|l| (l.bytes.as_slice(), l.compression.kind())).collect();
    let module = ok(pod::write_module(&ok(pod::pack(&guest, &spec, &layers)), "pod-chatty"));
    let o = boot(&qemu(), "pod-chatty", module, "");
    check_exit(&o, 0);
    check(&o, out(&o) == ["started", "finished"], "the quiet container's lines all come through");
    check(&o, o.pod.end("chatty") == Some(&ContainerEnd::Exited(0)), "seq exits 0");
    let shown = o.pod.lines("chatty");
    let dropped = o.pod.dropped("chatty");
    check(&o, dropped > 0, "the chatty container's console is rate-limited");
    check(
        &o,
        shown.len() as u64 + dropped == LINES,
        &format!("every line is printed or counted: {} shown, {dropped} dropped", shown.len()),
    );
    let numbers: Vec<u64> = shown.iter().filter_map(|l| l.parse().ok()).collect();
    check(
        &o,
        numbers.len() == shown.len()
            && numbers.first() == Some(&1)
            && numbers.windows(2).all(|w| w[0] < w[1]),
        "the lines shown are seq's, in order, from the first",
    );
}

/// A CPU-bound background job that never blocks (`yes` writing to /dev/null) beside the
/// shell: the slice timer takes the CPU from it, so the shell's sleep ends, `alive` is
/// printed and the job is killed.
#[test]
fn a_busy_background_job_does_not_starve_the_shell() {
    let o = busybox_run("pod-preempt", &["sh", "-c", BUSY_JOB_SCRIPT]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["alive"], "the shell runs beside the busy job and prints alive");
}

const BUSY_JOB_SCRIPT: &str = "yes > /dev/null & sleep 1; echo alive; kill $!";

/// Two containers of one pod: one spins for ever in a shell loop that makes no syscall at
/// all, the other sleeps a second and prints. The sleeper finishes with its output; the pod
/// VM itself cannot end (its other container never does), so the run stops there.
#[test]
fn a_spinning_container_does_not_starve_its_neighbour() {
    let image = busybox();
    let mut spec = PodRun::new(image, &["sh".into(), "-c".into(), "sleep 1; echo done".into()]).spec();
    let mut spinner = spec.containers[0].clone();
    spinner.name = "spinner".into();
    spinner.command = vec!["sh".into(), "-c".into(), "while :; do :; done".into()];
    spec.containers.push(spinner);
    let guest = std::fs::read(guest_kernel()).expect("crx-guest");
    let layers: Vec<_> = image.layers.iter().map(|l| (l.bytes.as_slice(), l.compression.kind())).collect();
    let module = ok(pod::write_module(&ok(pod::pack(&guest, &spec, &layers)), "pod-spinner"));
    let o = {
        let _slot = emulator_slot();
        let cmdline = pod::kernel_cmdline(None, "");
        let main_ended = |p: &pod::PodReport| p.end("main").is_some();
        ok(pod::run_until(
            &qemu(),
            "pod-spinner",
            module,
            cmdline,
            "main",
            Some(QEMU_TIMEOUT),
            &main_ended,
            &mut |_, _, _| {},
        ))
    };
    check(&o, !o.run.timed_out, "the sleeping container did not finish beside the spinning one");
    check(&o, o.status == PodStatus::Exited(0), "the sleeping container exits 0");
    check(&o, out(&o) == ["done"], "its output comes through");
    check(&o, o.pod.end("spinner").is_none(), "the spinning container is still running");
    check(&o, !o.run.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "the kernel panicked");
}

#[test]
fn sleep_one_second() {
    let o = busybox_run("pod-sleep", &["sleep", "1"]);
    check_exit(&o, 0);
}

#[test]
fn shell_wait_for_a_background_job() {
    let o = busybox_run("pod-wait", &["sh", "-c", "sleep 1 & wait; echo done"]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["done"], "wait returns once the job ends (SIGCHLD handler, rt_sigsuspend)");
}

#[test]
fn shell_trap_runs_the_handler() {
    let o = busybox_run("pod-trap", &["sh", "-c", "trap \"echo caught\" USR1; kill -USR1 $$; echo after"]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["caught", "after"], "the trap runs before the next command");
}

#[test]
fn shell_wait_for_two_jobs() {
    let o = busybox_run("pod-wait2", &["sh", "-c", "sleep 0.2 & sleep 0.1 & wait; echo both"]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["both"], "wait returns once both jobs end");
}

#[test]
fn false_exits_one() {
    let o = busybox_run("pod-false", &["false"]);
    check_exit(&o, 1);
}

#[test]
fn a_missing_command_is_127() {
    let o = busybox_run("pod-missing", &["no-such-command"]);
    check_exit(&o, 127);
    check(&o, out(&o).iter().any(|l| l.contains("not found")), "the reason says not found");
}

/// A root-filesystem directory with busybox, `sh` and a non-ELF executable.
fn rootfs_with_junk() -> PathBuf {
    let dir = qemu::image::target_dir().join("test-pod").join("rootfs-junk");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).expect("dir");
    std::fs::copy(qemu::setup::BUSYBOX_PATH, dir.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).expect("link");
    std::fs::write(dir.join("bin/junk"), b"this is not an ELF file\n").expect("junk");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("bin/junk"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn a_file_that_is_not_elf_is_126() {
    let image = Image::open(&rootfs_with_junk()).unwrap_or_else(|e| panic!("{e}"));
    let o = run_in(&qemu(), "pod-junk", &image, &["/bin/junk"]);
    check_exit(&o, 126);
    check(&o, !out(&o).is_empty(), "the container's output gives a reason");
}

#[test]
fn a_corrupt_layer_fails_clearly() {
    let mut image = busybox().clone();
    let l = &mut image.layers[0].bytes;
    let mid = l.len() / 2;
    for b in &mut l[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let o = run_in(&qemu(), "pod-corrupt", &image, &["true"]);
    check(&o, !o.run.timed_out, "the run ends");
    check(&o, !o.run.lines.iter().any(|l| l.text.contains("KERNEL PANIC")), "no panic");
    check(&o, o.status != PodStatus::Exited(0), "a corrupt layer cannot run the container");
    check(&o, o.run.end(0).is_some(), "the pod VM ends");
}

// ---- Failures with a reason, QEMU ----

/// Copies busybox into `dir/bin` with its applet links and `etc/hello.txt`: a plain
/// root-filesystem directory (no OCI layout).
fn busybox_rootfs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    ok(qemu::setup::ensure(qemu::setup::BUSYBOX));
    let _ = std::fs::remove_dir_all(dir);
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).expect("dir");
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    std::fs::copy(qemu::setup::BUSYBOX_PATH, dir.join("bin/busybox")).expect("copy busybox");
    for applet in oci::BUSYBOX_APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).expect("applet link");
    }
    std::fs::write(dir.join("etc/hello.txt"), oci::HELLO_TXT).expect("hello.txt");
}

/// An ELF header and one program header of a static aarch64 executable (e_machine 183):
/// well-formed apart from being for another architecture.
fn aarch64_elf() -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF");
    e.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, ELF version 1, System V ABI
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    e.extend_from_slice(&183u16.to_le_bytes()); // e_machine: EM_AARCH64
    e.extend_from_slice(&1u32.to_le_bytes()); // e_version
    e.extend_from_slice(&0x40_0078u64.to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    e.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    e.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    e.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R X
    e.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    e.extend_from_slice(&0x40_0000u64.to_le_bytes()); // p_vaddr
    e.extend_from_slice(&0x40_0000u64.to_le_bytes()); // p_paddr
    e.extend_from_slice(&0x80u64.to_le_bytes()); // p_filesz
    e.extend_from_slice(&0x80u64.to_le_bytes()); // p_memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
                                                   // aarch64 `mov x0, #0; mov x8, #93 (exit); svc #0`, never run here.
    e.extend_from_slice(&[0x00, 0x00, 0x80, 0xd2, 0xa8, 0x0b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4]);
    e.resize(0x80, 0);
    e
}

/// A static program asking `clone` for a child with a non-canonical TLS (FS base): Linux
/// refuses it with EPERM before creating the child.
const BAD_TLS_C: &str = r#"#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    /* x86_64 clone(flags, newsp, parent_tid, child_tid, tls) */
    long r = syscall(SYS_clone, (long)(CLONE_SETTLS | SIGCHLD), 0L, 0L, 0L, 0x8000000000000000UL);
    if (r == 0)
        _exit(0);
    if (r > 0) {
        waitpid(r, NULL, 0);
        printf("badtls: clone created child %ld\n", r);
        return 1;
    }
    printf("badtls: clone: %ld %s\n", r, errno == EPERM ? "EPERM" : "other errno");
    return errno == EPERM ? 0 : 1;
}
"#;

/// The rootfs of the failure tests, built once: busybox, `bin/misbehave` (tests/c/misbehave.c
/// built with `gcc -static`), `bin/badtls` ([`BAD_TLS_C`], likewise), `bin/arm64` (an aarch64 executable), `bin/dynamic` (the host's
/// dynamically linked /usr/bin/true) and `bin/noexec` (busybox without x bits).
fn failures_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = qemu::image::target_dir().join("test-pod").join("rootfs-failures");
        busybox_rootfs(&dir);
        let bin = dir.join("bin");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("c").join("misbehave.c");
        gcc_static(&source, &bin.join("misbehave"));
        let bad_tls = dir.with_file_name("badtls.c");
        std::fs::write(&bad_tls, BAD_TLS_C).expect("badtls.c");
        gcc_static(&bad_tls, &bin.join("badtls"));
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        std::fs::write(bin.join("arm64"), aarch64_elf()).expect("arm64");
        mode(&bin.join("arm64"), 0o755);
        let host_true = std::fs::read("/usr/bin/true").expect("the host's /usr/bin/true");
        assert!(
            host_true.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"),
            "the host's /usr/bin/true should be dynamically linked (it names no ld-linux loader)"
        );
        std::fs::write(bin.join("dynamic"), host_true).expect("dynamic");
        mode(&bin.join("dynamic"), 0o755);
        std::fs::copy(qemu::setup::BUSYBOX_PATH, bin.join("noexec")).expect("noexec");
        mode(&bin.join("noexec"), 0o644);
        Image::open(&dir).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn failure_run(name: &str, argv: &[&str]) -> PodOutcome {
    run_in(&qemu(), name, failures_image(), argv)
}

/// Checks that some line of the container's output contains `text`.
#[track_caller]
fn check_output_has(o: &PodOutcome, text: &str) {
    check(o, out(o).iter().any(|l| l.contains(text)), &format!("the container's output should say {text:?}"));
}

/// Checks that some line of the pod VM's console (the guest kernel's own lines) contains `text`.
#[track_caller]
fn check_console_has(o: &PodOutcome, text: &str) {
    check(
        o,
        o.run.lines_of(0).iter().any(|l| l.contains(text)),
        &format!("the VM console should say {text:?}"),
    );
}

#[test]
fn a_process_that_faults_is_139() {
    let o = failure_run("pod-segv", &["/bin/misbehave", "segv"]);
    check_exit(&o, 139);
    check(&o, out(&o) == ["misbehave: about to fault"], "the program runs up to the fault and no further");
    check_console_has(&o, "(/bin/misbehave) killed by signal 11: page fault");
    check_console_has(&o, "address 0x10");
}

#[test]
fn a_program_that_exhausts_memory_is_oom_killed_137() {
    let o = failure_run("pod-oom-c", &["/bin/misbehave", "oom"]);
    check_exit(&o, 137);
    check_output_has(&o, "misbehave: 8 MiB");
    check_output_has(&o, "(/bin/misbehave) OOM-killed: guest memory exhausted");
    check(
        &o,
        !out(&o).iter().any(|l| l.contains("malloc failed")),
        "the kernel kills it before malloc fails",
    );
    check_console_has(&o, "(/bin/misbehave) OOM-killed");
}

#[test]
fn a_shell_doubling_a_string_is_oom_killed_137() {
    let o = failure_run("pod-oom-sh", &["sh", "-c", "s=x; while :; do s=$s$s; done"]);
    check_exit(&o, 137);
    check_output_has(&o, "(/bin/sh) OOM-killed: guest memory exhausted");
}

#[test]
fn a_fork_bomb_is_bounded_by_the_process_limit() {
    // Every `bomb` forks two more in a pipeline and waits for them, until forks fail.
    let o =
        failure_run("pod-fork-bomb", &["sh", "-c", "bomb() { bomb | bomb; }; bomb; echo survived; exit 7"]);
    check_exit(&o, 7);
    check_output_has(&o, "can't fork: Resource temporarily unavailable");
    check(&o, out(&o).last().map(String::as_str) == Some("survived"), "the first shell carries on");
    check_console_has(&o, "process limit 64");
    check(&o, o.run.end(0) == Some(&End::Exited(7)), "the VM exits with the container's code");
    check(&o, o.run.report.all_ended == Some((1, 0)), "the hypervisor reports the VM ended (vms: 1 exited)");
}

#[test]
fn clone_with_a_non_canonical_tls_fails_with_eperm() {
    let o = failure_run("pod-badtls", &["/bin/badtls"]);
    check(&o, !o.run.lines.iter().any(|l| l.text.contains("KERNEL FAULT")), "no kernel fault");
    check_exit(&o, 0);
    check(&o, out(&o) == ["badtls: clone: -1 EPERM"], "clone fails with EPERM and creates no child");
}

#[test]
fn wrong_architecture_is_126() {
    let o = failure_run("pod-arm64", &["/bin/arm64"]);
    check_exit(&o, 126);
    check(
        &o,
        out(&o) == ["exec: /bin/arm64: wrong architecture (not x86_64)"],
        "the reason names the architecture",
    );
}

#[test]
fn a_dynamic_program_whose_loader_is_not_in_the_image_is_127() {
    // The host's dynamically linked `true` in an image without ld.so (tests/tests/dynamic.rs
    // runs dynamic programs in an image that has it).
    let o = failure_run("pod-dynamic", &["/bin/dynamic"]);
    check_exit(&o, 127);
    check(
        &o,
        out(&o) == ["exec: /bin/dynamic: interpreter /lib64/ld-linux-x86-64.so.2: not found"],
        "the reason names the missing interpreter",
    );
}

#[test]
fn a_file_without_x_bits_is_126() {
    let o = failure_run("pod-noexec", &["noexec", "--help"]);
    check_exit(&o, 126);
    check(&o, out(&o) == ["exec: noexec: permission denied"], "the reason says permission denied");
}

#[test]
fn a_shell_exec_of_a_file_without_x_bits_is_126() {
    let o = failure_run("pod-noexec-sh", &["sh", "-c", "/bin/noexec; echo status=$?"]);
    check_exit(&o, 0);
    check(
        &o,
        out(&o) == ["sh: /bin/noexec: Permission denied", "status=126"],
        "the shell reports permission denied and 126",
    );
}

// ---- A root-filesystem directory as the image, through `cargo xtask pod run` ----

#[test]
fn pod_run_takes_a_rootfs_directory() {
    let dir = qemu::image::target_dir().join("test-pod").join("rootfs-busybox");
    busybox_rootfs(&dir);
    // The runner's whole path: the image directory tarred into one layer, the default PATH,
    // the container's output on stdout, its exit code as the runner's status.
    let script = "echo from a rootfs; cat /etc/hello.txt; ls /bin | wc -l; pwd; echo $PATH; exit 5";
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(qemu::image::repo_root())
        .args(["run", "--quiet", "--package", "qemu", "--bin", "xtask", "--", "pod", "run", "--verbose"])
        .args(["--timeout", &QEMU_TIMEOUT.as_secs().to_string(), "--image"])
        .arg(&dir)
        .args(["--", "sh", "-c", script]);
    let run = {
        let _slot = emulator_slot();
        // Building the runner may come first.
        run_program("pod-run-rootfs", &mut cmd, QEMU_TIMEOUT + std::time::Duration::from_secs(600))
    };
    run.check(run.code() == Some(5), "the runner should exit with the container's code 5");
    let lines: Vec<&str> = run.stdout.lines().collect();
    let want_ls = (oci::BUSYBOX_APPLETS.len() + 1).to_string();
    let want = [
        "from a rootfs",
        oci::HELLO_TXT.trim_end(),
        want_ls.as_str(),
        "/",
        oci::DEFAULT_PATH.trim_start_matches("PATH="),
    ];
    run.check(lines == want, &format!("stdout should be {want:?}"));
    run.check(run.stderr.contains("pod/main: exited with code 5"), "stderr has the container's end line");
}

// ---- Bochs (Intel VMX) ----

/// The busybox list in one shell: each part after an `echo '--- NAME'` marker line.
const BUSYBOX_SCRIPT: &str = "echo hello
echo '--- cat'; cat /etc/hello.txt
echo '--- ls'; ls -l /
echo '--- wc'; wc /etc/hello.txt
echo '--- sha'; sha256sum /etc/hello.txt
echo '--- loop'; for i in 1 2 3; do echo $i; done
echo '--- pipe'; echo hello | wc -c
echo '--- sleep'; sleep 1; echo slept=$?
echo '--- false'; false; echo false=$?
echo '--- missing'; no-such-command; echo missing=$?
echo '--- end'; exit 3";

/// Splits output lines at `--- NAME` markers: the lines before the first marker are under "".
fn sections(lines: &[String]) -> Vec<(String, Vec<String>)> {
    let mut v = vec![(String::new(), Vec::new())];
    for l in lines {
        match l.strip_prefix("--- ") {
            Some(name) => v.push((name.to_string(), Vec::new())),
            None => {
                if let Some((_, body)) = v.last_mut() {
                    body.push(l.clone());
                }
            }
        }
    }
    v
}

/// The host's sha256 of [`oci::HELLO_TXT`].
fn host_sha256_of_hello() -> String {
    let dir = qemu::image::target_dir().join("test-pod");
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("hello.txt");
    std::fs::write(&f, oci::HELLO_TXT).expect("write");
    let host = std::process::Command::new("sha256sum").arg(&f).output().expect("sha256sum on the host");
    let hash = String::from_utf8_lossy(&host.stdout).split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(hash.len(), 64, "the host's sha256sum works: {host:?}");
    hash
}

/// Whether `l` is a line of `ls -l` (mode, links, owner, group, size, date, name) and its name.
fn ls_long_name(l: &str) -> Option<&str> {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^[-dlcbps][-rwxsStT]{9}\s+\d+\s+\S+\s+\S+\s+\d+\s+\S+\s+\d+\s+\S+\s(\S+)")
            .expect("the ls -l pattern is valid")
    });
    re.captures(l).and_then(|c| c.get(1)).map(|m| m.as_str())
}

#[test]
fn bochs_busybox_list_in_one_vm() {
    let o = run_in(&bochs(), "pod-bochs-list", busybox(), &["sh", "-c", BUSYBOX_SCRIPT]);
    check_exit(&o, 3);
    let parts = sections(out(&o));
    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
    check(
        &o,
        names == ["", "cat", "ls", "wc", "sha", "loop", "pipe", "sleep", "false", "missing", "end"],
        &format!("every part of the script should run, in order (got {names:?})"),
    );
    let part = |name: &str| -> &[String] {
        parts.iter().find(|(n, _)| n == name).map(|(_, l)| l.as_slice()).unwrap_or_default()
    };
    check(&o, part("") == ["hello"], "echo prints hello");
    check(&o, part("cat") == [oci::HELLO_TXT.trim_end()], "cat prints etc/hello.txt");

    let ls = part("ls");
    check(&o, ls.first().is_some_and(|l| l.starts_with("total ")), "ls -l starts with a total line");
    let listed: Vec<&str> = ls.iter().skip(1).filter_map(|l| ls_long_name(l)).collect();
    check(&o, listed.len() + 1 == ls.len(), "every other ls -l line is a long-format entry");
    for name in ["bin", "etc", "root", "tmp", "usr"] {
        check(&o, listed.contains(&name), &format!("ls -l / lists {name}"));
    }
    check(&o, ls.iter().any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp")), "tmp is 1777");

    let t = oci::HELLO_TXT;
    let want_wc =
        format!("{} {} {} /etc/hello.txt", t.lines().count(), t.split_whitespace().count(), t.len());
    let wc: Vec<String> =
        part("wc").iter().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    check(&o, wc == [want_wc.clone()], &format!("wc says {want_wc}"));

    let want_sha = format!("{}  /etc/hello.txt", host_sha256_of_hello());
    check(&o, part("sha") == [want_sha.clone()], &format!("sha256sum says {want_sha} like the host"));
    check(&o, part("loop") == ["1", "2", "3"], "the loop prints 1 2 3");
    check(&o, part("pipe").iter().map(|l| l.trim()).collect::<Vec<_>>() == ["6"], "echo hello | wc -c is 6");
    check(&o, part("sleep") == ["slept=0"], "sleep 1 succeeds");
    check(&o, part("false") == ["false=1"], "false exits 1");
    check(
        &o,
        part("missing") == ["sh: no-such-command: not found", "missing=127"],
        "a missing command is not found, 127",
    );
    check(&o, part("end").is_empty(), "nothing after the last marker");
}

/// [`a_busy_background_job_does_not_starve_the_shell`] on VT-x: the interrupt goes in by
/// event injection, or waits for the interrupt window.
#[test]
fn bochs_a_busy_background_job_does_not_starve_the_shell() {
    let o = run_in(&bochs(), "pod-bochs-preempt", busybox(), &["sh", "-c", BUSY_JOB_SCRIPT]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["alive"], "the shell runs beside the busy job and prints alive");
}

#[test]
fn bochs_layer_writes_stop_the_vm() {
    let o = boot(
        &bochs(),
        "pod-bochs-layer-write",
        plain_bundle("pod-bochs-layer-write", "oob-write", LAYER_HEAD),
        "vm.cmdline=at=0x4000000000",
    );
    match o.run.end(0) {
        Some(End::Stopped(r)) => {
            check(&o, r.contains("read-only image layers"), "the stop reason names the layers")
        }
        _ => check(&o, false, "the VM should be stopped"),
    }
}
