//! `cargo xtask cluster run -- COMMAND...`, the README's first command, as a user runs it: a
//! cluster with one hypervisor node comes up, the pod runs through the API, its output comes
//! back on stdout as `kubectl logs` gives it, the run exits with the container's code and
//! leaves nothing running. A pod that cannot start (its image is not in the node's store)
//! ends the run with status 1 and the reason. The nodes: QEMU (AMD SVM) with an e1000, Bochs
//! (Intel VMX) with its e1000, QEMU with virtio-net.

use qemu::image::repo_root;
use std::process::Command;
use std::time::Duration;
use tests::cluster::run_for;
use tests::emulator_slot;
use tests::up::{cluster_markers, nothing_left};

/// How long one run may take once everything is built.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn cluster_run(args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(tests::up::xtask());
    cmd.current_dir(repo_root()).args(["cluster", "run"]).args(args);
    let o = run_for(cmd, RUN_TIMEOUT);
    (o.code, o.stdout, o.stderr)
}

#[test]
fn cluster_run_shows_the_pods_logs_and_exits_with_its_code() {
    tests::up::build_cluster_parts();
    let _slot = emulator_slot();
    // The node on an e1000 (cluster_up.rs covers virtio-net).
    let (code, stdout, stderr) = cluster_run(&[
        "--e1000",
        "--",
        "sh",
        "-c",
        "echo hello from a pod VM; echo to stderr >&2; uname -n; exit 3",
    ]);
    assert_eq!(stdout, "hello from a pod VM\nto stderr\ndefault.run\n", "stderr:\n{stderr}");
    assert_eq!(code, Some(3), "stderr:\n{stderr}");
    for step in [
        "node n1 is Ready",
        "kubectl apply -f",
        "kubectl logs run",
        "pod run: Failed (Error, exit code 3)",
        "cluster: stopped",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    nothing_left(&cluster_markers(1), &stderr);

    // A VT-x node: Bochs, with its e1000.
    let (code, stdout, stderr) = cluster_run(&["--bochs", "--", "sh", "-c", "echo hello from VT-x; exit 0"]);
    assert_eq!((code, stdout.as_str()), (Some(0), "hello from VT-x\n"), "stderr:\n{stderr}");
    assert!(stderr.contains("under Bochs (Intel VMX, e1000)"), "{stderr}");
    nothing_left(&cluster_markers(1), &stderr);

    let (code, stdout, stderr) = cluster_run(&["--pod-image", "nginx:1.27", "--", "true"]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("ErrImagePull") && stderr.contains("is not in this node's image store"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    nothing_left(&cluster_markers(1), &stderr);
}
