//! `cargo xtask cluster up --nodes 2` as a user runs it: a child process (in a process group
//! of its own) that builds what it needs, starts the control plane and two QEMU nodes, and
//! prints `export KUBECONFIG=...` once kubectl shows both Ready. kubectl then sees n1 and n2
//! Ready at InternalIP 127.0.0.1 with kubelet ports of their own; a SIGTERM stops the run
//! with status 0 and leaves no emulator or control plane behind.

use qemu::image::target_dir;
use std::time::{Duration, Instant};
use tests::up::{apply_pod, build_cluster_parts, kubectl, pod_yaml, wait_pod, Up, POD_TIMEOUT, STOP_TIMEOUT};
use tests::{emulator_slot, processes_with};

/// Pods applied with kubectl run as pod VMs: their phases, exit codes, restarts, deletion and
/// a missing image, as the API reports them, and their output on the node's console.
fn pods_run_as_vms_on_both_nodes(up: &mut Up, kubeconfig: &str) {
    let pods = [
        ("done", "Never", 30, "busybox", "echo hello from a pod VM; exit 0"),
        ("three", "Never", 30, "busybox", "echo about to fail; exit 3"),
        ("crash", "Always", 30, "busybox", "echo crashing; exit 1"),
        (
            "sleeper",
            "Always",
            20,
            "busybox",
            "trap 'echo got TERM; exit 0' TERM; echo sleeping; sleep 3600 & wait",
        ),
        ("noimage", "Never", 30, "nginx:1.27", "true"),
    ];
    for (name, policy, grace, image, script) in pods {
        apply_pod(kubeconfig, &pod_yaml(name, policy, grace, image, script, None), name);
    }
    wait_pod(up, kubeconfig, "done", "{.status.phase}", "Succeeded", |p| p == "Succeeded");
    let code = wait_pod(
        up,
        kubeconfig,
        "done",
        "{.status.containerStatuses[0].state.terminated.reason}",
        "Completed",
        |r| !r.is_empty(),
    );
    assert_eq!(code, "Completed");
    up.wait_line_containing("default.done/main> hello from", POD_TIMEOUT);
    wait_pod(up, kubeconfig, "three", "{.status.phase}", "Failed", |p| p == "Failed");
    let code = kubectl(
        kubeconfig,
        &["get", "pod", "three", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"],
    );
    assert_eq!(code, "3", "exit code of three");
    // A crash loop restarts inside its VM, with CrashLoopBackOff between the runs.
    wait_pod(
        up,
        kubeconfig,
        "crash",
        "{.status.containerStatuses[0].restartCount}",
        "restarted twice",
        |n| n.parse::<u32>().is_ok_and(|n| n >= 2),
    );
    wait_pod(
        up,
        kubeconfig,
        "crash",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "in CrashLoopBackOff",
        |r| r == "CrashLoopBackOff",
    );
    let reason = wait_pod(
        up,
        kubeconfig,
        "noimage",
        "{.status.containerStatuses[0].state.waiting.message}",
        "ErrImagePull",
        |m| !m.is_empty(),
    );
    assert!(reason.contains("is not in this node's image store"), "{reason}");
    // kubectl delete: SIGTERM reaches the container, which ends, and the VM is torn down.
    wait_pod(up, kubeconfig, "sleeper", "{.status.phase}", "Running", |p| p == "Running");
    up.wait_line_containing("default.sleeper/main> sleeping", POD_TIMEOUT);
    let started = Instant::now();
    kubectl(kubeconfig, &["delete", "pod", "sleeper", "--timeout=60s"]);
    assert!(started.elapsed() < Duration::from_secs(60), "delete took {:?}", started.elapsed());
    up.wait_line_containing("default.sleeper/main> got TERM", POD_TIMEOUT);
    let nodes = kubectl(
        kubeconfig,
        &["get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"],
    );
    assert!(nodes.contains("n1") && nodes.contains("n2"), "pods did not land on both nodes:\n{nodes}");
}

#[test]
fn cluster_up_brings_two_nodes_ready_and_stops_cleanly_on_sigterm() {
    // Built before the clock starts, so the run's own builds are quick.
    build_cluster_parts();
    let _slot = emulator_slot();
    let mut up = Up::start(&["--nodes", "2"]);
    let kubeconfig = up.kubeconfig();
    let table = kubectl(
        &kubeconfig,
        &[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.status.addresses[?(@.type=="InternalIP")].address} {.status.daemonEndpoints.kubeletEndpoint.Port}{"\n"}{end}"#,
        ],
    );
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.first() == Some(&name))
            .unwrap_or_else(|| panic!("kubectl shows no node {name}:\n{table}\n{}", up.output()))
            .clone()
    };
    let (n1, n2) = (row("n1"), row("n2"));
    for r in [&n1, &n2] {
        assert_eq!(r.get(1), Some(&"True"), "{} not Ready:\n{table}", r[0]);
        assert_eq!(r.get(2), Some(&"127.0.0.1"), "{}'s InternalIP:\n{table}\n{}", r[0], up.output());
    }
    let port = |r: &[&str]| r.get(3).and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    assert!(port(&n1) > 0 && port(&n2) > 0, "kubelet ports:\n{table}\n{}", up.output());
    assert_ne!(port(&n1), port(&n2), "the nodes share a kubelet port:\n{table}");
    assert_ne!(port(&n1), 10250, "n1 reports its own port, not the forwarded one:\n{table}\n{}", up.output());

    pods_run_as_vms_on_both_nodes(&mut up, &kubeconfig);

    let status = up.terminate(STOP_TIMEOUT);
    let out = up.output();
    let status = status
        .unwrap_or_else(|| panic!("cluster up did not stop within {STOP_TIMEOUT:?} of SIGTERM:\n{out}"));
    assert_eq!(status.code(), Some(0), "cluster up's status after SIGTERM ({status}):\n{out}");
    assert!(out.contains("cluster: stopped"), "cluster up did not say it stopped everything:\n{out}");
    std::thread::sleep(Duration::from_millis(500));
    let state = target_dir().join("cluster").join("control-plane");
    for marker in [
        state.display().to_string(),
        target_dir().join("nodes").join("n1.pack").display().to_string(),
        target_dir().join("nodes").join("n2.pack").display().to_string(),
    ] {
        let left = processes_with(&marker);
        assert!(left.is_empty(), "processes left running with {marker}: {left:?}\n{out}");
    }
}
