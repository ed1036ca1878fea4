//! `cargo xtask cluster up` as a user runs it, for the end-to-end cluster tests: the built
//! runner as a child in a process group of its own, its output lines collected as they
//! come, the real kubectl with the cluster's admin kubeconfig, and waits with timeouts that
//! show everything the run printed when they fail.

use crate::cluster::run_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use qemu::image::{repo_root, target_dir};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long `cluster up` may take to print its export line once everything is built.
pub const UP_TIMEOUT: Duration = Duration::from_secs(240);
/// How long it may take to stop after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pod may take to reach the state a test waits for.
pub const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one kubectl command may take.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The runner's binary, built once.
pub fn xtask() -> &'static PathBuf {
    static XTASK: OnceLock<PathBuf> = OnceLock::new();
    XTASK.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).args(["build", "--quiet", "-p", "qemu", "--bin", "xtask"]);
        let o = run_for(cmd, Duration::from_secs(900));
        assert!(o.ok, "building xtask failed:\n{}", o.stderr);
        target_dir().join("debug").join("xtask")
    })
}

/// Builds what `cluster up` boots (the kernel, crx-guest, the busybox image) before a test
/// starts its clock, so the run's own builds are quick.
pub fn build_cluster_parts() {
    crate::kernel();
    crate::ok(qemu::pod::build_guest_kernel());
    crate::ok(qemu::pod::ensure_busybox_image());
    xtask();
}

/// A `cluster up` child: its output lines (stdout and stderr, in arrival order), and on drop
/// a SIGTERM, then SIGKILL, so a failing test leaves nothing running.
pub struct Up {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl Up {
    /// Starts `xtask cluster up ARGS...`.
    pub fn start(args: &[&str]) -> Up {
        let mut child = Command::new(xtask())
            .args(["cluster", "up"])
            .args(args)
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

    /// Every line so far, one string.
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many lines it has printed.
    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The first line starting with `prefix`, waiting at most `timeout`.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_for(|l| l.starts_with(prefix), &format!("a line `{prefix}...`"), timeout)
    }

    /// The first line holding `needle`, waiting at most `timeout`.
    pub fn wait_line_containing(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for(|l| l.contains(needle), &format!("a line with `{needle}`"), timeout)
    }

    /// The first line for which `ok` holds; a failure (timeout, or cluster up ending first)
    /// shows everything it printed.
    pub fn wait_for(&mut self, ok: impl Fn(&str) -> bool, what: &str, timeout: Duration) -> String {
        self.wait_for_from(0, ok, what, timeout)
    }

    /// The first line from index `from` on for which `ok` holds (see [`Up::wait_for`]).
    pub fn wait_for_from(
        &mut self,
        from: usize,
        ok: impl Fn(&str) -> bool,
        what: &str,
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .skip(from)
                .find(|l| ok(l))
                .cloned();
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

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for `export KUBECONFIG=...` and returns the admin kubeconfig's path.
    pub fn kubeconfig(&mut self) -> String {
        let export = self.wait_line("export KUBECONFIG=", UP_TIMEOUT);
        let kubeconfig = export.trim_start_matches("export KUBECONFIG=").to_string();
        assert!(kubeconfig.starts_with('/') && kubeconfig.ends_with("admin.kubeconfig"), "{export}");
        kubeconfig
    }

    /// SIGTERM, then waits at most `timeout` for it to end.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

/// kubectl with `kubeconfig` (and a cache directory of the tests' own): its stdout, or its
/// stderr when it fails. The command may take [`KUBECTL_TIMEOUT`].
pub fn try_kubectl(kubeconfig: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("/usr/bin/kubectl");
    cmd.env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(target_dir().join("cluster-up-test-cache"))
        .args(args);
    let o = run_for(cmd, KUBECTL_TIMEOUT);
    if o.ok {
        Ok(o.stdout)
    } else {
        Err(o.stderr)
    }
}

/// kubectl that must succeed.
#[track_caller]
pub fn kubectl(kubeconfig: &str, args: &[&str]) -> String {
    try_kubectl(kubeconfig, args).unwrap_or_else(|e| panic!("kubectl {args:?} failed:\n{e}"))
}

/// `kubectl get ARGS -o json`, parsed.
pub fn get_json(kubeconfig: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = try_kubectl(kubeconfig, &all)?;
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// Polls `kubectl get pod NAME -o jsonpath=PATH` until `ok` holds of its output.
pub fn wait_pod(
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
            let describe = try_kubectl(kubeconfig, &["describe", "pod", name]).unwrap_or_else(|e| e);
            panic!(
                "pod {name} is not {what} within {POD_TIMEOUT:?} (last {got:?}):\n{describe}\n{}",
                up.output()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A pod of one container `main` running `sh -c SCRIPT`, on `node` when one is given.
pub fn pod_yaml(
    name: &str,
    policy: &str,
    grace: u32,
    image: &str,
    script: &str,
    node: Option<&str>,
) -> String {
    let node = node.map(|n| format!("  nodeName: {n}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{node}  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: main\n    image: {image}\n    \
         command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

/// Writes a pod file under `target/cluster-up-test-pods/` and applies it.
pub fn apply_pod(kubeconfig: &str, yaml: &str, name: &str) {
    let dir = target_dir().join("cluster-up-test-pods");
    std::fs::create_dir_all(&dir).expect("creating the pods directory");
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("writing a pod");
    kubectl(kubeconfig, &["apply", "-f", &file.display().to_string()]);
}

/// The processes a cluster run may leave behind: its control plane, its registry, and the QEMU and Bochs
/// nodes n1..=`nodes`.
pub fn cluster_markers(nodes: u32) -> Vec<String> {
    let mut m = vec![
        target_dir().join("cluster").join("control-plane").display().to_string(),
        target_dir().join("cluster").join("registry").display().to_string(),
    ];
    for i in 1..=nodes {
        m.push(target_dir().join("nodes").join(format!("n{i}.pack")).display().to_string());
        m.push(target_dir().join("bochs").join(format!("cluster-n{i}.bochsrc")).display().to_string());
    }
    m
}

/// Fails, showing `context`, when a process with one of `markers` in its command line still
/// runs (after a moment for the last ones to go).
pub fn nothing_left(markers: &[String], context: &str) {
    std::thread::sleep(Duration::from_millis(500));
    for marker in markers {
        let left = crate::processes_with(marker);
        assert!(left.is_empty(), "processes left running with {marker}: {left:?}\n{context}");
    }
}

impl Up {
    /// SIGTERM; the run must stop within [`STOP_TIMEOUT`] with status 0, say so, and leave
    /// no process of its `nodes` nodes or its control plane.
    pub fn stop_cleanly(&mut self, nodes: u32) {
        let status = self.terminate(STOP_TIMEOUT);
        let out = self.output();
        let status = status
            .unwrap_or_else(|| panic!("cluster up did not stop within {STOP_TIMEOUT:?} of SIGTERM:\n{out}"));
        assert_eq!(status.code(), Some(0), "cluster up's status after SIGTERM ({status}):\n{out}");
        assert!(out.contains("cluster: stopped"), "cluster up did not say it stopped everything:\n{out}");
        nothing_left(&cluster_markers(nodes), &out);
    }
}
