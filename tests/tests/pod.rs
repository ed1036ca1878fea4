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
use tests::{emulator_slot, guest, kernel, ok, BOCHS_TIMEOUT, QEMU_TIMEOUT};

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
    let dir = qemu::image::target_dir().join("test-pod");
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("hello.txt");
    std::fs::write(&f, oci::HELLO_TXT).expect("write");
    let host = std::process::Command::new("sha256sum").arg(&f).output().expect("sha256sum on the host");
    let host_hash = String::from_utf8_lossy(&host.stdout).split_whitespace().next().unwrap_or("").to_string();
    check(&o, host_hash.len() == 64, "the host's sha256sum works");
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

#[test]
fn sleep_one_second() {
    let o = busybox_run("pod-sleep", &["sleep", "1"]);
    check_exit(&o, 0);
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

// ---- Bochs (Intel VMX) ----

#[test]
fn bochs_echo_and_exit_codes() {
    let o = run_in(&bochs(), "pod-bochs-echo", busybox(), &["sh", "-c", "echo hello; exit 3"]);
    check_exit(&o, 3);
    check(&o, out(&o) == ["hello"], "output should be `hello`");
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
