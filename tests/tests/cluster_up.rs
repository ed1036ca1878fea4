//! `cargo xtask cluster up --nodes 2` as a user runs it: a child process (in a process group
//! of its own) that builds what it needs, starts the control plane and two QEMU nodes, and
//! prints `export KUBECONFIG=...` once kubectl shows both Ready. kubectl then sees n1 and n2
//! Ready at InternalIP 127.0.0.1 with kubelet ports of their own; a SIGTERM stops the run
//! with status 0 and leaves no emulator or control plane behind.

use qemu::image::target_dir;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::cluster::run_for;
use tests::emulator_slot;
use tests::up::{apply_pod, build_cluster_parts, kubectl, pod_yaml, wait_pod, Up, POD_TIMEOUT};

/// What kubectl showed of the `crash` pod's runs: for each restart count seen, the last
/// terminated run's start and end (seconds since the epoch).
#[derive(Debug, Default)]
struct CrashLoop {
    runs: std::collections::BTreeMap<u32, (i64, i64)>,
}

impl CrashLoop {
    /// Polls the pod until `done(restart count, what was seen)`, noting each run's times. Run 1
    /// is the first; while run k+1 runs the restart count is k and the last terminated run is
    /// run k; once run k+1 has ended (waiting in CrashLoopBackOff, or terminated), it is run
    /// k+1.
    fn watch(&mut self, up: &Up, kubeconfig: &str, done: impl Fn(u32, &Self) -> bool) {
        let path = "jsonpath={.status.containerStatuses[0].restartCount}|\
                    {.status.containerStatuses[0].state.running.startedAt}|\
                    {.status.containerStatuses[0].lastState.terminated.startedAt}|\
                    {.status.containerStatuses[0].lastState.terminated.finishedAt}";
        let deadline = Instant::now() + POD_TIMEOUT;
        loop {
            let got = kubectl(kubeconfig, &["get", "pod", "crash", "-o", path]);
            let f: Vec<&str> = got.trim().split('|').collect();
            let n = f.first().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
            let running = f.get(1).is_some_and(|t| !t.is_empty());
            let time = |i: usize| f.get(i).and_then(|t| tests::cluster::unix_seconds(t));
            if let (Some(start), Some(end)) = (time(2), time(3)) {
                let run = if running { n } else { n + 1 };
                self.runs.entry(run).or_insert((start, end));
            }
            if done(n, self) {
                return;
            }
            assert!(Instant::now() < deadline, "crash restarted {n} times: {self:?}\n{}", up.output());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Seconds between the end of run `n - 1` and the start of run `n`.
    fn delay_before(&self, n: u32) -> Option<i64> {
        let (_, end) = self.runs.get(&(n - 1))?;
        let (start, _) = self.runs.get(&n)?;
        Some(start - end)
    }
}

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
        ("counter", "Never", 30, "busybox", "for i in 1 2 3 4 5; do echo line $i; sleep 1; done"),
    ];
    for (name, policy, grace, image, script) in pods {
        apply_pod(kubeconfig, &pod_yaml(name, policy, grace, image, script, None), name);
    }
    // A pod whose VM (32 MiB, its memory limit) runs out of memory.
    let script = "echo start; x=0123456789abcdef; while :; do x=$x$x; done";
    let oom =
        pod_yaml("oom", "Never", 30, "busybox", script, None) + "    resources: {limits: {memory: 32Mi}}\n";
    apply_pod(kubeconfig, &oom, "oom");
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
    // kubectl logs reaches the node's own HTTPS endpoint through the API server.
    assert_eq!(kubectl(kubeconfig, &["logs", "done"]), "hello from a pod VM\n");
    wait_pod(up, kubeconfig, "three", "{.status.phase}", "Failed", |p| p == "Failed");
    let code = kubectl(
        kubeconfig,
        &["get", "pod", "three", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"],
    );
    assert_eq!(code, "3", "exit code of three");
    let stamped = kubectl(kubeconfig, &["logs", "three", "--timestamps", "--tail=1"]);
    let (stamp, text) = stamped.trim_end().split_once(' ').unwrap_or_default();
    assert_eq!(text, "about to fail", "{stamped:?}");
    assert!(stamp.len() == 30 && stamp.starts_with("20") && stamp.ends_with('Z'), "{stamped:?}");
    // Follow: every line, and kubectl returns when the container ends.
    wait_pod(up, kubeconfig, "counter", "{.status.phase}", "Running", |p| p != "Pending");
    let followed = kubectl(kubeconfig, &["logs", "-f", "counter"]);
    assert_eq!(followed, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    // A crash loop restarts inside its VM, with CrashLoopBackOff between the runs.
    let mut crash = CrashLoop::default();
    crash.watch(up, kubeconfig, |restarts, _| restarts >= 2);
    wait_pod(
        up,
        kubeconfig,
        "crash",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "in CrashLoopBackOff",
        |r| r == "CrashLoopBackOff",
    );
    assert_eq!(kubectl(kubeconfig, &["logs", "crash", "--previous"]), "crashing\n");
    let reason = wait_pod(
        up,
        kubeconfig,
        "noimage",
        "{.status.containerStatuses[0].state.waiting.message}",
        "ErrImagePull",
        |m| !m.is_empty(),
    );
    assert!(reason.contains("is not in this node's image store"), "{reason}");
    let oom = wait_pod(
        up,
        kubeconfig,
        "oom",
        "{.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode}",
        "terminated",
        |r| !r.trim().is_empty(),
    );
    assert_eq!(oom, "OOMKilled 137", "the pod VM that ran out of memory");
    // kubectl delete: SIGTERM reaches the container, which ends, and the VM is torn down.
    wait_pod(up, kubeconfig, "sleeper", "{.status.phase}", "Running", |p| p == "Running");
    up.wait_line_containing("default.sleeper/main> sleeping", POD_TIMEOUT);
    let started = Instant::now();
    kubectl(kubeconfig, &["delete", "pod", "sleeper", "--timeout=60s"]);
    assert!(started.elapsed() < Duration::from_secs(60), "delete took {:?}", started.elapsed());
    up.wait_line_containing("default.sleeper/main> got TERM", POD_TIMEOUT);
    // The crash loop's delays grow: about 10 s before its third run, 20 s before its fourth.
    crash.watch(up, kubeconfig, |_, c| c.runs.contains_key(&4));
    let delay = |n: u32| {
        crash.delay_before(n + 1).unwrap_or_else(|| panic!("no delay before run {}: {crash:?}", n + 1))
    };
    let (d3, d4) = (delay(2), delay(3));
    assert!(d3 >= 9 && d4 >= 19 && d4 > d3, "crash loop delays {d3} s then {d4} s: {crash:?}");
    let nodes = kubectl(
        kubeconfig,
        &["get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}"],
    );
    assert!(nodes.contains("n1") && nodes.contains("n2"), "pods did not land on both nodes:\n{nodes}");
}

/// A GET of `path` from the node's kubelet endpoint at 127.0.0.1:`port` over TLS (the
/// node's certificate not verified: it is self-signed), with the control plane's kubelet
/// client certificate or none; what came back, or `refused: ...`.
fn kubelet_get(port: u16, path: &str, certified: bool) -> String {
    let pki = target_dir().join("cluster").join("control-plane").join("pki");
    let script = r#"
import socket, ssl, sys
port, path, crt, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if crt:
    ctx.load_cert_chain(crt, key)
try:
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=120))
    s.sendall(("GET %s HTTP/1.1\r\nHost: node\r\n\r\n" % path).encode())
    data = b""
    while True:
        piece = s.recv(65536)
        if not piece:
            break
        data += piece
    print(data.decode(errors="replace"), end="")
except (OSError, ssl.SSLError) as e:
    print("refused: %s" % e)
"#;
    let (crt, key) = if certified {
        (
            pki.join("apiserver-kubelet-client.crt").display().to_string(),
            pki.join("apiserver-kubelet-client.key").display().to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &port.to_string(), path, &crt, &key]);
    let o = run_for(cmd, Duration::from_secs(180));
    assert!(o.ok, "python3 failed:\n{}", o.stderr);
    o.stdout
}

/// The node's kubelet endpoint answers the API server's client certificate and refuses a
/// client without one, saying so on the console.
fn kubelet_endpoint_serves_only_the_cluster_ca(up: &Up, port: u16) {
    let ok = kubelet_get(port, "/healthz", true);
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nok"), "{ok}\n{}", up.output());
    let refused = kubelet_get(port, "/healthz", false);
    assert!(
        refused.starts_with("refused: ") || refused.is_empty(),
        "a client without a certificate got {refused:?}\n{}",
        up.output()
    );
    let gone = kubelet_get(port, "/containerLogs/default/nothing/main", true);
    assert!(gone.starts_with("HTTP/1.1 404 "), "{gone}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !up.output().contains("n1| node: kubelet endpoint: refused a client: ") {
        assert!(Instant::now() < deadline, "n1 did not report the refused client:\n{}", up.output());
        std::thread::sleep(Duration::from_millis(200));
    }
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

    kubelet_endpoint_serves_only_the_cluster_ca(&up, port(&n1));
    pods_run_as_vms_on_both_nodes(&mut up, &kubeconfig);

    up.stop_cleanly(2);
}
