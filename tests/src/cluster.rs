//! Shared set-up for the control-plane tests: a `control-plane` child process on a free port
//! with a temporary state directory, kubectl and the official Python client pointed at it,
//! and `sim-node` (kubelet-lite with a simulated runtime). Every child process has a timeout
//! and is killed on drop.

use qemu::image::{repo_root, target_dir};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Debian's Python, where python3-kubernetes is installed (another python3 may come first on PATH).
pub const PYTHON: &str = "/usr/bin/python3";
/// How long one client command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `cargo` in the repository, for building a binary from inside a test. The variables cargo
/// sets for the test it runs (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`...) are left out: some
/// build scripts (ring's) are rerun when they change, so with them every build made from a
/// test, and every `cargo test` after it, would rebuild those crates and all that depends
/// on them.
pub fn cargo_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let for_the_test =
            ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"].iter().any(|p| name.starts_with(p))
                || matches!(name, "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR");
        if for_the_test {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The `control-plane` binary, built once.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = cargo_command()
            .args(["build", "--quiet", "-p", "control-plane", "--bin", "control-plane"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building control-plane failed: {status}");
        target_dir().join("debug").join("control-plane")
    })
}

/// The tests share two cores: one server at a time.
pub fn slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    SLOT.lock().unwrap_or_else(|p| p.into_inner())
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("cp-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("creating a temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running control plane, killed on drop.
pub struct ControlPlane {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
}

impl ControlPlane {
    pub fn start(dir: &Path) -> Self {
        Self::start_with_stderr(dir, Stdio::inherit())
    }

    /// Starts the server with its standard error sent to `stderr`.
    pub fn start_with_stderr(dir: &Path, stderr: Stdio) -> Self {
        Self::start_on(dir, "127.0.0.1:0", stderr)
    }

    /// Starts the server listening on `listen` (`127.0.0.1:0` for any free port), with its
    /// standard error sent to `stderr`.
    pub fn start_on(dir: &Path, listen: &str, stderr: Stdio) -> Self {
        Self::start_with_args(dir, listen, stderr, &[])
    }

    /// Starts the server with `extra` arguments (such as `--node NAME`).
    pub fn start_with_args(dir: &Path, listen: &str, stderr: Stdio, extra: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .args(["--dir"])
            .arg(dir)
            .args(["--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting control-plane");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("control plane ready: ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx.recv_timeout(READY_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no ready line within {READY_TIMEOUT:?}")
        });
        assert!(url.starts_with("https://127.0.0.1:"), "ready line names {url}");
        ControlPlane { child, url, dir: dir.to_path_buf() }
    }

    /// The `127.0.0.1:PORT` the server listens on.
    pub fn listen_addr(&self) -> &str {
        self.url.trim_start_matches("https://")
    }

    /// Appends the server's standard error to the file `log` (for a restart under [`Logs`]).
    pub fn append_stderr(log: &Path) -> Stdio {
        let f =
            std::fs::OpenOptions::new().create(true).append(true).open(log).expect("opening the server log");
        Stdio::from(f)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished command printed.
pub struct Output {
    pub ok: bool,
    /// The exit code (None when a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with the client timeout, killing it when it runs out.
pub fn run(cmd: Command) -> Output {
    run_for(cmd, COMMAND_TIMEOUT)
}

/// Runs `cmd`, killing it when `timeout` runs out.
pub fn run_for(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawning a client");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for a client") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        ok: status.success(),
        code: status.code(),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// kubectl with the admin kubeconfig and a private cache directory.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> Output {
    kubectl_as(cp, &cp.kubeconfig(), args)
}

/// kubectl with the kubeconfig `kubeconfig` and a private cache directory.
pub fn kubectl_as(cp: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig);
    cmd.arg("--cache-dir").arg(cp.dir.join("kube-cache"));
    cmd.env("HOME", &cp.dir);
    cmd.args(args);
    run(cmd)
}

/// `kubectl get ARGS -o json` with the admin kubeconfig, parsed.
pub fn get_json(cp: &ControlPlane, args: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let o = kubectl(cp, &all);
    if !o.ok {
        return Err(o.stderr);
    }
    serde_json::from_str(&o.stdout).map_err(|e| format!("{e}: {}", o.stdout))
}

/// The status of a pod's first container.
pub fn first_container(pod: &serde_json::Value) -> &serde_json::Value {
    &pod["status"]["containerStatuses"][0]
}

#[track_caller]
pub fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let o = kubectl(cp, args);
    assert!(o.ok, "kubectl {args:?} failed:\nstdout: {}\nstderr: {}", o.stdout, o.stderr);
    o.stdout
}

pub const POD_YAML: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: app
    image: busybox:1.36
";

pub fn write_pod(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("pod.yaml");
    std::fs::write(&p, text).expect("writing pod.yaml");
    p
}

/// Runs a Python program with the control plane's kubeconfig path as argv[1].
pub fn python(cp: &ControlPlane, program: &str) -> Output {
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(program).arg(cp.kubeconfig()).arg(&cp.url).arg(cp.dir.join("pki/ca.crt"));
    run(cmd)
}

/// The current time as `metav1.Time`.
pub fn now_rfc3339() -> String {
    let mut cmd = Command::new("date");
    cmd.args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]);
    run(cmd).stdout.trim().to_string()
}

pub fn node_yaml(name: &str, now: &str, kubelet_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
status:
  capacity: {{cpu: \"2\", memory: 4Gi, pods: \"110\", ephemeral-storage: 20Gi}}
  allocatable: {{cpu: \"2\", memory: 4Gi, pods: \"110\", ephemeral-storage: 20Gi}}
  conditions:
  - {{type: Ready, status: \"True\", reason: KubeletReady, message: kubelet is posting ready status, lastHeartbeatTime: \"{now}\", lastTransitionTime: \"{now}\"}}
  addresses:
  - {{type: InternalIP, address: 127.0.0.1}}
  daemonEndpoints: {{kubeletEndpoint: {{Port: {kubelet_port}}}}}
  nodeInfo: {{machineID: m, systemUUID: s, bootID: b, kernelVersion: 6.1.0, osImage: test OS, containerRuntimeVersion: lite://0.1.0, kubeletVersion: v1.32.0, kubeProxyVersion: v1.32.0, operatingSystem: linux, architecture: amd64}}
"
    )
}

/// How long building the `sim-node` binary may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the node may take to register and report Ready.
pub const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the end-to-end test polls the server.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The `sim-node` binary (kubelet-lite with a simulated runtime), built once in release mode.
pub fn sim_node_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let mut cmd = cargo_command();
        cmd.args(["build", "--quiet", "--release", "-p", "sim-node", "--bin", "sim-node"]);
        let o = run_for(cmd, BUILD_TIMEOUT);
        assert!(o.ok, "building sim-node failed:\n{}", o.stderr);
        target_dir().join("release").join("sim-node")
    })
}

/// A running `sim-node`, killed on drop; its output goes to a file.
pub struct SimNode {
    pub child: Child,
}

impl SimNode {
    pub fn start(kubeconfig: &Path, name: &str, log: &Path) -> Self {
        Self::start_with(kubeconfig, name, log, &[])
    }

    /// A node started with more arguments (`--pull-images`, `--insecure-registry R`...).
    pub fn start_with(kubeconfig: &Path, name: &str, log: &Path, args: &[&str]) -> Self {
        let out = std::fs::File::create(log).expect("creating the sim-node log");
        let err = out.try_clone().expect("cloning the sim-node log");
        let child = Command::new(sim_node_binary())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--name", name])
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("starting sim-node");
        SimNode { child }
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's and the node's output, read when a step fails.
pub struct Logs {
    pub server: PathBuf,
    pub node: PathBuf,
}

impl Logs {
    pub fn dump(&self) -> String {
        let read =
            |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("({}: {e})", p.display()));
        format!(
            "\n--- control-plane stderr ---\n{}\n--- sim-node output ---\n{}",
            read(&self.server),
            read(&self.node)
        )
    }

    /// Polls `probe` every [`POLL_INTERVAL`] until it yields a value or `timeout` runs out;
    /// `probe` also returns what it last saw, for the failure message.
    #[track_caller]
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match probe() {
                Ok(v) => return v,
                Err(last) if Instant::now() >= deadline => {
                    panic!("{what}: not within {timeout:?}; last seen:\n{last}{}", self.dump())
                }
                Err(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }
}

/// kubectl that must succeed; on failure the server's and the node's output are printed.
#[track_caller]
pub fn kubectl_logged(cp: &ControlPlane, logs: &Logs, args: &[&str]) -> String {
    let o = kubectl(cp, args);
    assert!(o.ok, "kubectl {args:?} failed:\nstdout: {}\nstderr: {}{}", o.stdout, o.stderr, logs.dump());
    o.stdout
}

/// Seconds since the epoch of a `metav1.Time` or `MicroTime` (RFC 3339).
pub fn unix_seconds(t: &str) -> Option<i64> {
    wire::time::parse(t).map(|(s, _)| s)
}
