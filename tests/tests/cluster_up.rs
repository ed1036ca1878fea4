//! `cargo xtask cluster up --nodes 2` as a user runs it: a child process (in a process group
//! of its own) that builds what it needs, starts the control plane and two QEMU nodes, and
//! prints `export KUBECONFIG=...` once kubectl shows both Ready. kubectl then sees n1 and n2
//! Ready at InternalIP 127.0.0.1 with kubelet ports of their own; a SIGTERM stops the run
//! with status 0 and leaves no emulator or control plane behind.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use qemu::image::{repo_root, target_dir};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::cluster::run_for;
use tests::{emulator_slot, ok, processes_with};

/// How long `cluster up` may take to print its export line once everything is built.
const UP_TIMEOUT: Duration = Duration::from_secs(240);
/// How long it may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The runner's binary, built once.
fn xtask() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "--quiet", "-p", "qemu", "--bin", "xtask"]);
    let o = run_for(cmd, Duration::from_secs(900));
    assert!(o.ok, "building xtask failed:\n{}", o.stderr);
    target_dir().join("debug").join("xtask")
}

/// A `cluster up` child: its output lines (stdout and stderr, in arrival order), and on drop
/// a SIGTERM, then SIGKILL, so a failing test leaves nothing running.
struct Up {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl Up {
    fn start(nodes: u32) -> Up {
        let mut child = Command::new(xtask())
            .args(["cluster", "up", "--nodes", &nodes.to_string()])
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting xtask cluster up");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let streams: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for s in streams {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for l in BufReader::new(s).lines() {
                    let Ok(l) = l else { break };
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(l);
                }
            });
        }
        Up { child, lines, status: None }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// The first line starting with `prefix`, waiting at most `timeout`.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_for(|l| l.starts_with(prefix), &format!("a line `{prefix}...`"), timeout)
    }

    /// The first line holding `needle`, waiting at most `timeout`.
    fn wait_line_containing(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for(|l| l.contains(needle), &format!("a line with `{needle}`"), timeout)
    }

    /// The first line for which `ok` holds; a failure (timeout, or cluster up ending first)
    /// shows everything it printed.
    fn wait_for(&mut self, ok: impl Fn(&str) -> bool, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.lines.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|l| ok(l)).cloned();
            if let Some(l) = found {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                std::thread::sleep(Duration::from_millis(200));
                panic!("cluster up exited ({status}) before {what}:\n{}", self.output());
            }
            if Instant::now() >= deadline {
                panic!("no {what} from cluster up within {timeout:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.terminate(STOP_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("/usr/bin/kubectl");
    cmd.env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(target_dir().join("cluster-up-test-cache"))
        .args(args);
    let o = run_for(cmd, Duration::from_secs(60));
    assert!(o.ok, "kubectl {args:?} failed:\n{}", o.stderr);
    o.stdout
}

/// How long a pod may take to reach the state a test waits for.
const POD_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `kubectl get pod NAME -o jsonpath=PATH` until `ok` holds of its output.
fn wait_pod(
    up: &Up,
    kubeconfig: &str,
    name: &str,
    path: &str,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + POD_TIMEOUT;
    loop {
        let got = kubectl(kubeconfig, &["get", "pod", name, "-o", &format!("jsonpath={path}")]);
        if ok(&got) {
            return got;
        }
        if Instant::now() >= deadline {
            let describe = kubectl(kubeconfig, &["describe", "pod", name]);
            panic!(
                "pod {name} is not {what} within {POD_TIMEOUT:?} (last {got:?}):\n{describe}\n{}",
                up.output()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pod_yaml(name: &str, policy: &str, grace: u32, image: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: main\n    image: {image}\n    \
         command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// Pods applied with kubectl run as pod VMs: their phases, exit codes, restarts, deletion and
/// a missing image, as the API reports them, and their output on the node's console.
fn pods_run_as_vms_on_both_nodes(up: &mut Up, kubeconfig: &str) {
    let dir = target_dir().join("cluster-up-test-pods");
    std::fs::create_dir_all(&dir).expect("creating the pods directory");
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
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, pod_yaml(name, policy, grace, image, script)).expect("writing a pod");
        kubectl(kubeconfig, &["apply", "-f", &file.display().to_string()]);
    }
    // A pod whose VM (32 MiB, its memory limit) runs out of memory.
    let oom =
        pod_yaml("oom", "Never", 30, "busybox", "echo start; x=0123456789abcdef; while :; do x=$x$x; done")
            + "    resources: {limits: {memory: 32Mi}}\n";
    let file = dir.join("oom.yaml");
    std::fs::write(&file, oom).expect("writing a pod");
    kubectl(kubeconfig, &["apply", "-f", &file.display().to_string()]);
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
    tests::kernel();
    ok(qemu::pod::build_guest_kernel());
    ok(qemu::pod::ensure_busybox_image());
    let _slot = emulator_slot();
    let mut up = Up::start(2);
    let export = up.wait_line("export KUBECONFIG=", UP_TIMEOUT);
    let kubeconfig = export.trim_start_matches("export KUBECONFIG=").to_string();
    assert!(kubeconfig.starts_with('/') && kubeconfig.ends_with("admin.kubeconfig"), "{export}");
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
