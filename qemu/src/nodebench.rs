//! `cargo xtask bench --only node`: a hypervisor node as kubectl sees it, measured under QEMU
//! against baselines from the same run. Figures are printed, never judged.
//!
//! One control plane serves the whole section (the [`cluster`] pieces: its child process,
//! the nodes' boot configurations and networks). Each run boots a fresh QEMU node (its own
//! name and credential) and, as the baseline, starts a fresh sim-node (kubelet-lite on the
//! host with the simulated runtime); on each it applies a few busybox pods, one after the
//! other, and keeps them running. What is timed, all wall-clock:
//!
//! - power-on (the emulator's start) to the kernel's ready line and its `node: registered`
//!   line on the console, and to the first `kubectl get nodes --watch` event showing
//!   Ready=True; sim-node's start to Ready the same way;
//! - `kubectl apply` (its start) to the first `kubectl get pods --watch` event with phase
//!   Running, to the first `kubectl logs` answer holding the container's first line
//!   (polled, one call after the other), and to that line on the node's console.
//!
//! Memory: the node's own accounting of each pod VM (`vm<i>: memory guest_bytes=..
//! overhead_bytes=..`), and QEMU's resident set (`VmRSS` in `/proc/PID/status`) with the
//! pods running against the same node before the first pod, per pod.

use crate::cluster::{self, ControlPlane};
use crate::console::ready_regex;
use crate::emulator::Qemu;
use crate::image::{repo_root, target_dir};
use crate::machine::{Line, Machine};
use crate::node::{self, NodeImage};
use crate::Error;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What the container of every bench pod prints first (and then it sleeps).
pub const MARKER: &str = "bench: first line";
/// How long a node (QEMU or sim-node) may take to show Ready in kubectl.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a pod may take to be Running with its first line in `kubectl logs`.
pub const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the node idles before its resident set is read (after Ready, after the pods).
pub const SETTLE: Duration = Duration::from_secs(4);
/// The pause between two `kubectl logs` calls while waiting for the first line.
pub const LOGS_POLL: Duration = Duration::from_millis(100);

/// What the node section runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs: each boots a QEMU node and starts a sim-node.
    pub runs: usize,
    /// Pods applied to each node (kept running until the node stops).
    pub pods: usize,
    /// Extra QEMU node runs under `-icount shift=0`.
    pub icount_runs: usize,
    /// CPUs of each QEMU node.
    pub smp: u32,
    /// Memory of each QEMU node, MiB.
    pub mem_mib: u32,
    /// The kernel.
    pub kernel: PathBuf,
    /// The program and first arguments that serve the control plane (`xtask control-plane`).
    pub control_plane: Vec<String>,
    /// kubectl.
    pub kubectl: PathBuf,
}

/// One pod's times from the start of its `kubectl apply`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodTimes {
    /// To the first watch event with phase Running.
    pub running: Option<Duration>,
    /// To the first `kubectl logs` answer holding [`MARKER`].
    pub log: Option<Duration>,
    /// To the container's [`MARKER`] line on the node's console (hypervisor nodes only).
    pub console: Option<Duration>,
}

/// What the node says about one pod VM's host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmMemory {
    /// The VM (`vm<i>`).
    pub vm: u32,
    /// Its guest memory.
    pub guest_bytes: u64,
    /// Host memory beyond it: nested tables, vCPU and FPU state.
    pub overhead_bytes: u64,
}

/// One boot of a node (QEMU) or one start of sim-node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeRun {
    /// The node's name.
    pub name: String,
    /// Power-on to `hypervisor ready:` on the console (QEMU only).
    pub ready_line: Option<Duration>,
    /// Power-on to `node: registered` on the console (QEMU only).
    pub registered: Option<Duration>,
    /// Power-on (or sim-node's start) to Ready=True in a kubectl watch.
    pub ready: Option<Duration>,
    /// Each pod applied to it, in order.
    pub pods: Vec<PodTimes>,
    /// QEMU's resident set before the first pod, KiB.
    pub rss_none_kib: Option<u64>,
    /// QEMU's resident set with every pod running, KiB.
    pub rss_pods_kib: Option<u64>,
    /// The node's `vm<i>: memory` lines.
    pub vm_memory: Vec<VmMemory>,
    /// Host CPU the idle node took (Ready, no pod) over [`SETTLE`], % of one core: what its
    /// polled NIC, stack and agent cost when there is nothing to do.
    pub idle_cpu_pct: Option<f64>,
}

impl NodeRun {
    /// QEMU's resident-set growth per running pod, KiB (`None` without both samples or pods).
    pub fn rss_growth_per_pod_kib(&self) -> Option<f64> {
        let (none, pods) = (self.rss_none_kib?, self.rss_pods_kib?);
        let n = self.pods.len();
        // KiB counts and pod counts are far below 2^53: the conversions are exact.
        (n > 0).then(|| (pods as f64 - none as f64) / n as f64)
    }
}

/// Everything the section measured (runs that completed; `failed` says why one did not).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// QEMU nodes.
    pub hypervisor: Vec<NodeRun>,
    /// QEMU nodes under `-icount shift=0`.
    pub icount: Vec<NodeRun>,
    /// sim-nodes.
    pub sim: Vec<NodeRun>,
    /// Pods per node.
    pub pods: usize,
    /// What ended the section early.
    pub failed: Option<String>,
}

/// `VmRSS` in a `/proc/PID/status` text, KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut words = rest.split_whitespace();
    let kib = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib)
}

/// The kernel's `vm<i>: memory guest_bytes=<n> overhead_bytes=<n>` line.
pub fn vm_memory_line(line: &str) -> Option<VmMemory> {
    let rest = line.trim_end().strip_prefix("vm")?;
    let (vm, rest) = rest.split_once(": memory ")?;
    let mut fields = rest.split(' ');
    let guest = fields.next()?.strip_prefix("guest_bytes=")?;
    let overhead = fields.next()?.strip_prefix("overhead_bytes=")?;
    if fields.next().is_some() {
        return None;
    }
    Some(VmMemory {
        vm: vm.parse().ok()?,
        guest_bytes: guest.parse().ok()?,
        overhead_bytes: overhead.parse().ok()?,
    })
}

/// One line of the watches this section runs, `NAME=VALUE` (the value may be empty).
pub fn watch_line(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.trim_end().split_once('=')?;
    (!name.is_empty()).then_some((name, value))
}

/// The pod every run applies: busybox on `node` (bound by `nodeName`, no scheduler), one
/// container without limits (so a 64 MiB pod VM) that prints [`MARKER`] and sleeps.
pub fn pod_manifest(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  restartPolicy: Never\n  \
         containers:\n  - {{name: main, image: busybox, command: [sh, -c, \"echo {MARKER}; sleep 3600\"]}}\n"
    )
}

/// The median (the mean of the middle two for an even count).
pub fn median_f64(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((*v.get(n / 2 - 1)? + *v.get(n / 2)?) / 2.0),
    }
}

/// One row of a figures table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What it is, with its unit.
    pub figure: String,
    /// One value per sample.
    pub values: Vec<f64>,
    /// Decimals shown.
    pub decimals: usize,
    /// The row (its index in the same table) whose median this row's median is divided by.
    pub baseline: Option<usize>,
}

impl Row {
    /// A row of durations in seconds (missing samples left out).
    pub fn secs(figure: &str, samples: Vec<Option<Duration>>, baseline: Option<usize>) -> Row {
        let values = samples.into_iter().flatten().map(|d| d.as_secs_f64()).collect();
        Row { figure: figure.into(), values, decimals: 3, baseline }
    }
}

/// Rows numbered from `first` (`#`), each with its number of samples, min, median and, with
/// a baseline, `median / baseline's median` and the baseline's number.
pub fn table(rows: &[Row], first: usize) -> String {
    let mut out = format!(
        "{:>3}  {:<56} {:>7}  {:>8}  {:>8}  {:>14}\n",
        "#", "figure", "samples", "min", "median", "ratio (median)"
    );
    for (i, r) in rows.iter().enumerate() {
        let med = median_f64(&r.values);
        let low = r.values.iter().copied().reduce(f64::min);
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.*}", r.decimals));
        let ratio = match r.baseline.and_then(|b| rows.get(b).map(|base| (b, median_f64(&base.values)))) {
            Some((b, Some(base))) if base != 0.0 => match med {
                Some(m) => format!("{:.2} x #{}", m / base, b + first),
                None => format!("- x #{}", b + first),
            },
            Some((b, _)) => format!("- x #{}", b + first),
            None => String::new(),
        };
        out.push_str(&format!(
            "{:>3}  {:<56} {:>7}  {:>8}  {:>8}  {:>14}\n",
            i + first,
            r.figure,
            r.values.len(),
            show(low),
            show(med),
            ratio
        ));
    }
    out
}

/// The timing rows: the hypervisor node's figures and their baselines (seconds).
pub fn timing_rows(f: &Figures) -> Vec<Row> {
    let pods = |runs: &[NodeRun], pick: fn(&PodTimes) -> Option<Duration>| -> Vec<Option<Duration>> {
        runs.iter().flat_map(|r| r.pods.iter().map(pick)).collect()
    };
    let mut rows = Vec::new();
    // Adds a row; its index, for the rows measured against it.
    let mut add = |figure: &str, samples: Vec<Option<Duration>>, baseline: Option<usize>| {
        rows.push(Row::secs(figure, samples, baseline));
        rows.len() - 1
    };
    let (h, s) = (&f.hypervisor, &f.sim);
    let ready_line = add(
        "hypervisor: power-on -> `hypervisor ready:` line, s",
        h.iter().map(|r| r.ready_line).collect(),
        None,
    );
    add(
        "hypervisor: power-on -> `node: registered` line, s",
        h.iter().map(|r| r.registered).collect(),
        Some(ready_line),
    );
    add("hypervisor: power-on -> Ready in kubectl, s", h.iter().map(|r| r.ready).collect(), Some(ready_line));
    add("sim-node: start -> Ready in kubectl, s", s.iter().map(|r| r.ready).collect(), None);
    let sim_running = add("sim-node: apply -> Running in kubectl, s", pods(s, |p| p.running), None);
    let running =
        add("hypervisor: apply -> Running in kubectl, s", pods(h, |p| p.running), Some(sim_running));
    let sim_log = add("sim-node: apply -> first line in kubectl logs, s", pods(s, |p| p.log), None);
    let log = add("hypervisor: apply -> first line in kubectl logs, s", pods(h, |p| p.log), Some(sim_log));
    add("hypervisor: apply -> first line on the node console, s", pods(h, |p| p.console), Some(running));
    if !f.icount.is_empty() {
        let i = &f.icount;
        let icount_ready_line = add(
            "icount: power-on -> `hypervisor ready:` line, s",
            i.iter().map(|r| r.ready_line).collect(),
            Some(ready_line),
        );
        add(
            "icount: power-on -> Ready in kubectl, s",
            i.iter().map(|r| r.ready).collect(),
            Some(icount_ready_line),
        );
        add("icount: apply -> Running in kubectl, s", pods(i, |p| p.running), Some(running));
        add("icount: apply -> first line in kubectl logs, s", pods(i, |p| p.log), Some(log));
    }
    rows
}

/// The memory rows: the node's accounting per pod VM, and QEMU's resident set.
pub fn memory_rows(f: &Figures) -> Vec<Row> {
    const KIB: f64 = 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let h = &f.hypervisor;
    let vms: Vec<&VmMemory> = h.iter().flat_map(|r| r.vm_memory.iter()).collect();
    let mut rows = Vec::new();
    let mut add = |figure: String, values: Vec<f64>, decimals: usize, baseline: Option<usize>| {
        rows.push(Row { figure, values, decimals, baseline });
        rows.len() - 1
    };
    // Byte and KiB counts are far below 2^53: the conversions are exact.
    add(
        "node accounting per pod VM: guest memory, MiB".into(),
        vms.iter().map(|m| m.guest_bytes as f64 / MIB).collect(),
        1,
        None,
    );
    add(
        "node accounting per pod VM: host overhead, KiB".into(),
        vms.iter().map(|m| m.overhead_bytes as f64 / KIB).collect(),
        1,
        None,
    );
    let accounted = add(
        "node accounting per pod VM: guest + overhead, MiB".into(),
        vms.iter().map(|m| (m.guest_bytes + m.overhead_bytes) as f64 / MIB).collect(),
        2,
        None,
    );
    let none = add(
        "qemu VmRSS, no pod running, MiB".into(),
        h.iter().filter_map(|r| r.rss_none_kib).map(|k| k as f64 / KIB).collect(),
        1,
        None,
    );
    add(
        format!("qemu VmRSS, {} pod(s) running, MiB", f.pods),
        h.iter().filter_map(|r| r.rss_pods_kib).map(|k| k as f64 / KIB).collect(),
        1,
        Some(none),
    );
    add(
        "qemu VmRSS growth per running pod VM, MiB".into(),
        h.iter().filter_map(NodeRun::rss_growth_per_pod_kib).map(|k| k / KIB).collect(),
        2,
        Some(accounted),
    );
    let sim_idle = add(
        "sim-node: host CPU when idle, % of a core".into(),
        f.sim.iter().filter_map(|r| r.idle_cpu_pct).collect(),
        1,
        None,
    );
    add(
        "hypervisor: host CPU when idle, % of a core".into(),
        h.iter().filter_map(|r| r.idle_cpu_pct).collect(),
        1,
        Some(sim_idle),
    );
    rows
}

/// A child process in a process group of its own, killed with its group when dropped.
struct Group {
    child: Child,
}

impl Group {
    fn spawn(mut cmd: Command, what: &str) -> Result<Group, Error> {
        cmd.stdin(Stdio::null()).process_group(0);
        let child = cmd.spawn().map_err(|e| Error::io(format!("starting {what}"), e))?;
        Ok(Group { child })
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.exited() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `kubectl get KIND --watch -o jsonpath=TEMPLATE`, restarted when it ends; each line it
/// prints, with when it arrived.
pub(crate) struct Watch {
    kind: &'static str,
    template: &'static str,
    ctx: Ctx,
    child: Option<Group>,
    rx: mpsc::Receiver<(Instant, String)>,
    tx: mpsc::Sender<(Instant, String)>,
    seen: Vec<(Instant, String)>,
    restart_at: Instant,
}

pub(crate) const NODE_TEMPLATE: &str =
    r#"jsonpath={.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}"#;
pub(crate) const POD_TEMPLATE: &str = r#"jsonpath={.metadata.name}={.status.phase}{"\n"}"#;

impl Watch {
    pub(crate) fn start(ctx: &Ctx, kind: &'static str, template: &'static str) -> Result<Watch, Error> {
        let (tx, rx) = mpsc::channel();
        let mut w = Watch {
            kind,
            template,
            ctx: ctx.clone(),
            child: None,
            rx,
            tx,
            seen: Vec::new(),
            restart_at: Instant::now(),
        };
        w.spawn()?;
        Ok(w)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let log = self.ctx.dir.join(format!("kubectl-watch-{}.log", self.kind));
        let err = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new(&self.ctx.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.ctx.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.ctx.cache)
            .args(["get", self.kind, "--watch", "-o", self.template])
            .stdout(Stdio::piped())
            .stderr(err);
        let mut g = Group::spawn(cmd, &format!("kubectl get {} --watch", self.kind))?;
        let stdout = g.child.stdout.take();
        let tx = self.tx.clone();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        self.child = Some(g);
        self.restart_at = Instant::now() + Duration::from_secs(1);
        Ok(())
    }

    /// Takes what arrived; starts kubectl again (at most once a second) if it has ended.
    pub(crate) fn poll(&mut self) -> Result<(), Error> {
        while let Ok(l) = self.rx.try_recv() {
            self.seen.push(l);
        }
        if self.child.as_mut().is_none_or(Group::exited) && Instant::now() >= self.restart_at {
            self.child = None;
            self.spawn()?;
        }
        Ok(())
    }

    /// When `name` was first seen with `value`.
    pub(crate) fn first(&self, name: &str, value: &str) -> Option<Instant> {
        self.seen.iter().find(|(_, l)| watch_line(l) == Some((name, value))).map(|(at, _)| *at)
    }

    /// Waits until `deadline` at most for kubectl's first line (its list), so that nothing
    /// after this call is missed; a kind with no objects prints none.
    pub(crate) fn settle(&mut self, deadline: Instant) -> Result<(), Error> {
        while self.seen.is_empty() && Instant::now() < deadline {
            self.poll()?;
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Starts the control plane (program `control_plane`, state in `dir/control-plane`, output
/// in `dir/control-plane.log`) with credentials for `nodes`, and kubectl watches of its nodes
/// and pods, settled after their first listing. `part` names the bench part in what it says.
pub(crate) fn start_watched(
    control_plane: &[String],
    kubectl: &Path,
    dir: &Path,
    nodes: &[String],
    part: &str,
) -> Result<(ControlPlane, Ctx, Watch, Watch), Error> {
    let state = dir.join("control-plane");
    let cp = ControlPlane::start(control_plane, &state, nodes, &dir.join("control-plane.log"))?;
    eprintln!("bench: {part}: control plane {} (log {})", cp.url, cp.log.display());
    let ctx = Ctx {
        kubectl: kubectl.to_path_buf(),
        kubeconfig: state.join("admin.kubeconfig"),
        cache: dir.join("kube-cache"),
        dir: dir.to_path_buf(),
    };
    let mut node_watch = Watch::start(&ctx, "nodes", NODE_TEMPLATE)?;
    let mut pod_watch = Watch::start(&ctx, "pods", POD_TEMPLATE)?;
    let listed = Instant::now() + Duration::from_secs(2);
    node_watch.settle(listed)?;
    pod_watch.settle(listed)?;
    Ok((cp, ctx, node_watch, pod_watch))
}

/// What every step needs: kubectl and the cluster's admin view, the section's directory.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// kubectl.
    pub(crate) kubectl: PathBuf,
    /// The admin kubeconfig.
    pub(crate) kubeconfig: PathBuf,
    /// kubectl's cache directory.
    pub(crate) cache: PathBuf,
    /// Where manifests, consoles and logs go.
    pub(crate) dir: PathBuf,
}

impl Ctx {
    /// Runs kubectl with the admin view; its output, or why it failed.
    pub(crate) fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        cluster::kubectl_output(&self.kubectl, &self.kubeconfig, &self.cache, args)
    }
}

/// `target/bench-node/`: the control plane's state, the pods' manifests, consoles, logs.
pub fn bench_dir() -> PathBuf {
    target_dir().join("bench-node")
}

/// `Err(Interrupted)` once `stop()` says so.
pub(crate) fn check_stop(stop: &dyn Fn() -> bool) -> Result<(), Error> {
    if stop() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Sleeps `d`, looking at `stop()` every 50 ms.
pub(crate) fn pause(d: Duration, stop: &dyn Fn() -> bool) -> Result<(), Error> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        check_stop(stop)?;
        thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    Ok(())
}

/// The CPU time of a process (user + system) in clock ticks, from a `/proc/PID/stat` text.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: count fields after the last.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Process `pid`'s CPU use over `span` (spent waiting here), % of one core.
fn cpu_pct_over(pid: u32, span: Duration, stop: &dyn Fn() -> bool) -> Result<Option<f64>, Error> {
    let ticks = || fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(cpu_ticks);
    // The kernel's USER_HZ, 100 on Linux's every architecture that matters here.
    const USER_HZ: f64 = 100.0;
    let (before, t0) = (ticks(), Instant::now());
    pause(span, stop)?;
    let (after, took) = (ticks(), t0.elapsed().as_secs_f64());
    // Tick counts over seconds are far below 2^53: the conversions are exact.
    Ok(before.zip(after).map(|(b, a)| a.saturating_sub(b) as f64 / USER_HZ / took * 100.0))
}

/// QEMU's resident set, KiB.
fn rss_kib(pid: u32) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    vm_rss_kib(&text).ok_or_else(|| Error::Missing(format!("{path} has no VmRSS line")))
}

/// Builds sim-node (release) and returns the binary.
fn build_sim_node() -> Result<PathBuf, Error> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["build", "--release", "--quiet", "-p", "sim-node"]);
    let status = cmd.status().map_err(|e| Error::io("running cargo build", e))?;
    if !status.success() {
        return Err(Error::Failed { what: format!("{cmd:?}"), status });
    }
    let bin = target_dir().join("release").join("sim-node");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::Missing(format!("cargo build succeeded but left no sim-node at {}", bin.display())))
    }
}

/// Runs the section. Errors are what kept it from starting; a run that fails ends it with
/// `failed` set and the runs before it kept. `Err(Interrupted)` once `stop()` says so, with
/// everything started stopped.
pub fn run(opts: &Options, stop: &dyn Fn() -> bool) -> Result<Figures, Error> {
    let dir = bench_dir();
    eprintln!("bench: node: building crx-guest, the busybox image bundle and sim-node");
    let built = (|| -> Result<_, Error> {
        let image = NodeImage::from_arg("busybox")?;
        let guest = crate::pod::build_guest_kernel()?;
        let elf = fs::read(&guest).map_err(|e| Error::io(format!("reading {}", guest.display()), e))?;
        Ok((vec![image.bundle(&elf)?], build_sim_node()?))
    })();
    let (bundles, sim_node) = match built {
        Ok(b) => b,
        // A Ctrl-C reaches cargo too, whose build then fails.
        Err(_) if stop() => return Err(Error::Interrupted),
        Err(e) => return Err(e),
    };
    check_stop(stop)?;

    let state = dir.join("control-plane");
    if state.exists() {
        fs::remove_dir_all(&state).map_err(|e| Error::io(format!("clearing {}", state.display()), e))?;
    }
    fs::create_dir_all(&state).map_err(|e| Error::io(format!("creating {}", state.display()), e))?;
    let qemu_names: Vec<String> = (1..=opts.runs).map(|i| format!("bench-n{i}")).collect();
    let icount_names: Vec<String> = (1..=opts.icount_runs).map(|i| format!("bench-icount{i}")).collect();
    let sim_names: Vec<String> = (1..=opts.runs).map(|i| format!("bench-sim{i}")).collect();
    let all: Vec<String> = qemu_names.iter().chain(&icount_names).chain(&sim_names).cloned().collect();
    let (cp, ctx, mut nodes, mut pods) =
        start_watched(&opts.control_plane, &opts.kubectl, &dir, &all, "node")?;
    let api_port = cp.port()?;

    let mut figures = Figures { pods: opts.pods, ..Figures::default() };
    let mut sections = Sections { ctx: &ctx, nodes: &mut nodes, pods: &mut pods, opts, stop };
    let result = (|| -> Result<(), Error> {
        for i in 0..opts.runs {
            let sim = sections.sim_node(&sim_node, &state, &sim_names[i])?;
            eprintln!("bench: node: sim-node run {}: {sim:?}", i + 1);
            figures.sim.push(sim);
            let node = sections.qemu_node(&bundles, api_port, &state, &qemu_names[i], false)?;
            eprintln!("bench: node: hypervisor run {}: {node:?}", i + 1);
            figures.hypervisor.push(node);
        }
        for name in &icount_names {
            let node = sections.qemu_node(&bundles, api_port, &state, name, true)?;
            eprintln!("bench: node: icount run: {node:?}");
            figures.icount.push(node);
        }
        Ok(())
    })();
    drop(cp);
    match result {
        Ok(()) => Ok(figures),
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(_) if stop() => Err(Error::Interrupted),
        Err(e) => {
            figures.failed = Some(e.to_string());
            Ok(figures)
        }
    }
}

/// Waits for node `name` to show Ready=True in the `nodes` watch (within
/// [`READY_TIMEOUT`], as long as `alive()` says the node runs); its time from `since`.
pub(crate) fn wait_ready(
    nodes: &mut Watch,
    name: &str,
    since: Instant,
    alive: &mut dyn FnMut() -> Result<(), Error>,
    stop: &dyn Fn() -> bool,
) -> Result<Duration, Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        check_stop(stop)?;
        nodes.poll()?;
        if let Some(at) = nodes.first(name, "True") {
            return Ok(at.saturating_duration_since(since));
        }
        alive()?;
        if Instant::now() >= deadline {
            return Err(Error::Missing(format!(
                "{name} did not show Ready in `kubectl get nodes --watch` within {READY_TIMEOUT:?}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The section's running parts, for one node at a time.
struct Sections<'a> {
    ctx: &'a Ctx,
    nodes: &'a mut Watch,
    pods: &'a mut Watch,
    opts: &'a Options,
    stop: &'a dyn Fn() -> bool,
}

impl Sections<'_> {
    /// Waits for `name` to show Ready=True in the node watch; its time from `since`.
    fn wait_ready(
        &mut self,
        name: &str,
        since: Instant,
        alive: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Duration, Error> {
        wait_ready(self.nodes, name, since, alive, self.stop)
    }

    /// Applies pod `pod` bound to `node` and waits for it to be Running and its first line
    /// to be in `kubectl logs` (and on `machine`'s console, when given).
    fn pod(&mut self, pod: &str, node: &str, machine: Option<&Machine>) -> Result<PodTimes, Error> {
        let file = self.ctx.dir.join(format!("{pod}.yaml"));
        fs::write(&file, pod_manifest(pod, node))
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        let file_arg = file.display().to_string();
        let applied = Instant::now();
        self.ctx.kubectl(&["apply", "-f", &file_arg]).map_err(Error::Missing)?;
        let console_line = format!("default.{pod}/main> {MARKER}");
        let mut t = PodTimes::default();
        let deadline = applied + POD_TIMEOUT;
        let mut next_logs = Instant::now();
        let mut last_logs = String::new();
        loop {
            check_stop(self.stop)?;
            self.pods.poll()?;
            if t.running.is_none() {
                t.running = self.pods.first(pod, "Running").map(|at| at.saturating_duration_since(applied));
                for bad in ["Failed", "Succeeded"] {
                    if self.pods.first(pod, bad).is_some() {
                        return Err(Error::Missing(format!(
                            "pod {pod} on {node} ended ({bad}) before Running"
                        )));
                    }
                }
            }
            if let (None, Some(m)) = (t.console, machine) {
                let found =
                    m.lines().into_iter().find(|l: &Line| l.console && l.text.ends_with(&console_line));
                if let Some(l) = found {
                    t.console = Some((m.started() + l.at).saturating_duration_since(applied));
                }
            }
            if t.log.is_none() && Instant::now() >= next_logs {
                match self.ctx.kubectl(&["logs", pod, "-c", "main"]) {
                    Ok(out) if out.lines().any(|l| l.trim_end() == MARKER) => t.log = Some(applied.elapsed()),
                    Ok(out) => last_logs = out,
                    Err(e) => last_logs = e,
                }
                next_logs = Instant::now() + LOGS_POLL;
            }
            if t.running.is_some() && t.log.is_some() && (machine.is_none() || t.console.is_some()) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(Error::Missing(format!(
                    "pod {pod} on {node}: not Running with its first line in kubectl logs within \
                     {POD_TIMEOUT:?} (so far {t:?}; kubectl logs: {})",
                    last_logs.trim()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// One sim-node: started, Ready, its pods.
    fn sim_node(&mut self, binary: &Path, state: &Path, name: &str) -> Result<NodeRun, Error> {
        let kubeconfig = state.join("nodes").join(format!("{name}.kubeconfig"));
        let log = self.ctx.dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new(binary);
        cmd.arg("--kubeconfig").arg(&kubeconfig).args(["--name", name]).stdout(out).stderr(err);
        let started = Instant::now();
        let mut child = Group::spawn(cmd, &format!("sim-node {name}"))?;
        let mut run = NodeRun { name: name.into(), ..NodeRun::default() };
        let mut alive = || match child.exited() {
            false => Ok(()),
            true => Err(Error::Missing(format!("sim-node {name} exited; its log is {}", log.display()))),
        };
        run.ready = Some(self.wait_ready(name, started, &mut alive)?);
        run.idle_cpu_pct = cpu_pct_over(child.child.id(), SETTLE, self.stop)?;
        for j in 1..=self.opts.pods {
            run.pods.push(self.pod(&format!("{name}-p{j}"), name, None)?);
        }
        drop(child);
        Ok(run)
    }

    /// One QEMU node: booted, Ready, its resident set, its pods, its resident set again.
    fn qemu_node(
        &mut self,
        bundles: &[Vec<u8>],
        api_port: u16,
        state: &Path,
        name: &str,
        icount: bool,
    ) -> Result<NodeRun, Error> {
        let kubeconfig = state.join("nodes").join(format!("{name}.kubeconfig"));
        let kubelet_port =
            *cluster::free_ports(1)?.first().ok_or_else(|| Error::Missing("no free port".into()))?;
        let cfg = cluster::node_config(&kubeconfig, name, api_port, kubelet_port, false, None)?;
        let pack = node::write_boot_pack(&cfg, bundles)?;
        let q = Qemu {
            smp: self.opts.smp,
            mem_mib: self.opts.mem_mib,
            initrd: Some(pack),
            net: Some(cluster::node_network(api_port, kubelet_port, false)),
            extra: if icount { vec!["-icount".into(), "shift=0".into()] } else { Vec::new() },
            ..Qemu::new(&self.opts.kernel)
        };
        let mut machine = Machine::qemu(name, &q)?;
        let result = self.on_qemu_node(&mut machine, name);
        let console = self.ctx.dir.join(format!("{name}.console.log"));
        let outcome = machine.stop();
        let _ = fs::write(&console, crate::machine::format_log(name, &outcome.lines));
        result.map_err(|e| match e {
            Error::Interrupted => e,
            e => Error::Missing(format!("{name}: {e} (console: {})", console.display())),
        })
    }

    fn on_qemu_node(&mut self, machine: &mut Machine, name: &str) -> Result<NodeRun, Error> {
        let started = machine.started();
        let mut run = NodeRun { name: name.into(), ..NodeRun::default() };
        let mut alive = || match machine.finished() {
            None => Ok(()),
            Some(status) => Err(Error::Missing(format!("the emulator exited ({status})"))),
        };
        run.ready = Some(self.wait_ready(name, started, &mut alive)?);
        run.idle_cpu_pct = cpu_pct_over(machine.pid(), SETTLE, self.stop)?;
        // Read after the pause: the node registers as Ready, so kubectl may see it before
        // the kernel has the answer and prints its line.
        let lines = machine.lines();
        let first =
            |pred: &dyn Fn(&str) -> bool| lines.iter().find(|l| l.console && pred(&l.text)).map(|l| l.at);
        run.ready_line = first(&|t| ready_regex().is_match(t));
        run.registered = first(&|t| t.contains("node: registered "));
        run.rss_none_kib = Some(rss_kib(machine.pid())?);
        for j in 1..=self.opts.pods {
            run.pods.push(self.pod(&format!("{name}-p{j}"), name, Some(machine))?);
        }
        pause(SETTLE, self.stop)?;
        run.rss_pods_kib = Some(rss_kib(machine.pid())?);
        run.vm_memory =
            machine.lines().iter().filter(|l| l.console).filter_map(|l| vm_memory_line(&l.text)).collect();
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_comes_from_proc_stat() {
        let stat = "1234 (qemu-system (x) 86) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("1 (init) S 0"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn vm_rss_comes_from_proc_status() {
        let status =
            "Name:\tqemu-system-x86\nVmPeak:\t 2000000 kB\nVmRSS:\t  81234 kB\nRssAnon:\t 60000 kB\n";
        assert_eq!(vm_rss_kib(status), Some(81_234));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t12 MB\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn the_kernels_memory_line_is_read() {
        assert_eq!(
            vm_memory_line("vm3: memory guest_bytes=67108864 overhead_bytes=299008"),
            Some(VmMemory { vm: 3, guest_bytes: 67_108_864, overhead_bytes: 299_008 })
        );
        assert_eq!(
            vm_memory_line("vm3: memory guest_bytes=1 overhead_bytes=2 \r").map(|m| m.overhead_bytes),
            Some(2)
        );
        // A guest's console line is `vm<i>> ...`, and other kernel lines are not this one.
        assert_eq!(vm_memory_line("vm3> memory guest_bytes=1 overhead_bytes=2"), None);
        assert_eq!(vm_memory_line("vm3: accounting guest_ns=1 exits=2 overhead_bytes=3"), None);
        assert_eq!(vm_memory_line("vm3: memory guest_bytes=1 overhead_bytes=2 extra=3"), None);
        assert_eq!(vm_memory_line("vmx: memory guest_bytes=1 overhead_bytes=2"), None);
    }

    #[test]
    fn watch_lines_are_name_and_value() {
        assert_eq!(watch_line("bench-n1=True\n"), Some(("bench-n1", "True")));
        assert_eq!(watch_line("p1=Running"), Some(("p1", "Running")));
        assert_eq!(watch_line("p1="), Some(("p1", "")));
        assert_eq!(watch_line("=True"), None);
        assert_eq!(watch_line("No resources found"), None);
    }

    #[test]
    fn the_pod_is_bound_to_its_node_and_prints_the_marker() {
        let m = pod_manifest("bench-n1-p1", "bench-n1");
        assert!(m.contains("name: bench-n1-p1}"), "{m}");
        assert!(m.contains("nodeName: bench-n1\n"), "{m}");
        assert!(m.contains(&format!("\"echo {MARKER}; sleep 3600\"")), "{m}");
        assert!(!m.contains("limits"), "{m}");
    }

    /// Row `n` of a table: its figure, and the cells after it (samples, min, median, and the
    /// ratio's words).
    fn cells(table: &str, n: usize) -> (String, Vec<String>) {
        let line = table.lines().nth(n).unwrap_or_default();
        let figure = line.get(5..61).unwrap_or_default().trim().to_string();
        (figure, line.get(61..).unwrap_or_default().split_whitespace().map(String::from).collect())
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median_f64(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_f64(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median_f64(&[]), None);
        let rows = [
            Row { figure: "base, s".into(), values: vec![0.2, 0.4, 0.3], decimals: 3, baseline: None },
            Row {
                figure: "thing, s".into(),
                values: vec![1.2, 0.9, 1.5, 1.3],
                decimals: 3,
                baseline: Some(0),
            },
            Row { figure: "nothing, s".into(), values: vec![], decimals: 3, baseline: Some(0) },
            Row { figure: "against nothing".into(), values: vec![7.0], decimals: 1, baseline: Some(2) },
        ];
        let t = table(&rows, 1);
        assert_eq!(t.lines().count(), 5, "{t}");
        assert!(t.lines().next().unwrap_or_default().contains("samples"), "{t}");
        assert_eq!(cells(&t, 1), ("base, s".into(), vec!["3".into(), "0.200".into(), "0.300".into()]), "{t}");
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(cells(&t, 2).1, words(&["4", "0.900", "1.250", "4.17", "x", "#1"]), "{t}");
        assert_eq!(cells(&t, 3).1, words(&["0", "-", "-", "-", "x", "#1"]), "{t}");
        assert_eq!(cells(&t, 4).1, words(&["1", "7.0", "7.0", "-", "x", "#3"]), "{t}");
        assert!(t.lines().nth(2).unwrap_or_default().starts_with("  2  thing"), "{t}");
        // Numbering from another start shifts the baselines' numbers too.
        let t10 = table(&rows, 10);
        assert!(t10.lines().nth(2).unwrap_or_default().starts_with(" 11  thing"), "{t10}");
        assert_eq!(cells(&t10, 2).1.last().map(String::as_str), Some("#10"), "{t10}");
    }

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    #[test]
    fn rows_come_from_the_runs() {
        let pods = |r: u64| vec![PodTimes { running: ms(r), log: ms(r + 100), console: ms(r - 50) }; 2];
        let vm = VmMemory { vm: 0, guest_bytes: 64 << 20, overhead_bytes: 256 << 10 };
        let h = NodeRun {
            name: "bench-n1".into(),
            ready_line: ms(300),
            registered: ms(600),
            ready: ms(900),
            pods: pods(1000),
            rss_none_kib: Some(70 << 10),
            rss_pods_kib: Some((70 << 10) + 2 * (65 << 10)),
            vm_memory: vec![vm, VmMemory { vm: 1, ..vm }],
            idle_cpu_pct: Some(50.0),
        };
        // A second run whose registered line never came: its sample is left out.
        let h2 = NodeRun { registered: None, ready_line: ms(500), ..h.clone() };
        let s = NodeRun {
            name: "bench-sim1".into(),
            ready: ms(100),
            pods: pods(400),
            idle_cpu_pct: Some(2.0),
            ..NodeRun::default()
        };
        let f = Figures { hypervisor: vec![h.clone(), h2], sim: vec![s], pods: 2, ..Figures::default() };
        assert_eq!(h.rss_growth_per_pod_kib(), Some(65.0 * 1024.0));
        assert_eq!(NodeRun { pods: vec![], ..h.clone() }.rss_growth_per_pod_kib(), None);
        assert_eq!(NodeRun { rss_none_kib: None, ..h.clone() }.rss_growth_per_pod_kib(), None);

        let t = timing_rows(&f);
        assert_eq!(t.len(), 9);
        let shown = table(&t, 1);
        let c = |n: usize| cells(&shown, n);
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(c(1), ("hypervisor: power-on -> `hypervisor ready:` line, s".into(), w("2 0.300 0.400")));
        assert_eq!(c(2).1, w("1 0.600 0.600 1.50 x #1"), "{shown}");
        assert_eq!(
            c(3),
            ("hypervisor: power-on -> Ready in kubectl, s".into(), w("2 0.900 0.900 2.25 x #1"))
        );
        assert_eq!(c(4), ("sim-node: start -> Ready in kubectl, s".into(), w("1 0.100 0.100")));
        assert_eq!(c(5), ("sim-node: apply -> Running in kubectl, s".into(), w("2 0.400 0.400")));
        assert_eq!(c(6), ("hypervisor: apply -> Running in kubectl, s".into(), w("4 1.000 1.000 2.50 x #5")));
        assert_eq!(c(7).1, w("2 0.500 0.500"), "{shown}");
        assert_eq!(c(8).1, w("4 1.100 1.100 2.20 x #7"), "{shown}");
        assert_eq!(
            c(9),
            ("hypervisor: apply -> first line on the node console, s".into(), w("4 0.950 0.950 0.95 x #6"))
        );

        let m = table(&memory_rows(&f), 10);
        let c = |n: usize| cells(&m, n);
        assert_eq!(c(1), ("node accounting per pod VM: guest memory, MiB".into(), w("4 64.0 64.0")));
        assert_eq!(c(2).1, w("4 256.0 256.0"), "{m}");
        assert_eq!(c(3).1, w("4 64.25 64.25"), "{m}");
        assert_eq!(c(4).1, w("2 70.0 70.0"), "{m}");
        assert_eq!(c(5), ("qemu VmRSS, 2 pod(s) running, MiB".into(), w("2 200.0 200.0 2.86 x #13")));
        assert_eq!(c(6), ("qemu VmRSS growth per running pod VM, MiB".into(), w("2 65.00 65.00 1.01 x #12")));
        assert_eq!(c(7).1, w("1 2.0 2.0"), "{m}");
        assert_eq!(
            c(8),
            ("hypervisor: host CPU when idle, % of a core".into(), w("2 50.0 50.0 25.00 x #16"))
        );

        let with_icount = Figures { icount: vec![h], ..f };
        let t = timing_rows(&with_icount);
        assert_eq!(t.len(), 13);
        assert_eq!(t[10].baseline, Some(9), "icount Ready against icount's ready line");
    }
}
