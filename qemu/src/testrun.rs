//! `cargo xtask test`: every test of the workspace, in three lanes at once.
//!
//! `cargo test --workspace` runs its test binaries one after another. Most of this suite's
//! time is spent waiting (for a node's lease, a pod's back-off, a registry), not computing,
//! so the runner builds every test binary first and then runs them in three lanes at once:
//! one for the binaries that keep emulators busy (the VM, pod and program tests under QEMU
//! and Bochs), one for those that boot hypervisor nodes and drive them through the API
//! (mostly waiting), one for the unit tests and the host servers (the control plane,
//! sim-node, a registry). A few tests measure how the host's CPUs are shared; they are left
//! out of the lanes and run alone at the end.
//!
//! Each binary's output is kept in a file and printed whole when it ends, under cargo's own
//! `Running` line, so the log reads as `cargo test`'s does (and `test result:` lines keep
//! their meaning). Every binary runs in a process group of its own with a marker in its
//! environment; a stop (Ctrl-C, SIGTERM) kills the groups and then every process that still
//! carries the marker (emulators and servers the tests started in groups of their own).

use crate::image::{repo_root, target_dir};
use crate::Error;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The integration-test binaries of the `tests` package that keep emulators busy (pod VMs
/// under QEMU and Bochs): they run one at a time, in the emulator lane.
pub const EMULATOR_LANE: &[&str] = &["programs", "pod", "bochs", "vm", "uefi", "dynamic", "qemu", "net"];

/// The ones that boot hypervisor nodes and drive them through the API: mostly waiting for
/// leases, pods and back-offs, with an emulator or two that are idle most of the time.
pub const CLUSTER_LANE: &[&str] = &[
    "cluster_failures",
    "cluster_pulls",
    "cluster_run",
    "node",
    "cluster_up",
    "cluster_eviction",
    "pull_secrets",
];

/// The ones that run only host programs (the control plane, sim-node, a registry, kubectl):
/// they share a lane with the unit tests.
pub const SERVER_LANE: &[&str] = &["control_plane", "sim_node", "image_pulls", "registry", "schema"];

/// Tests that measure how the host's CPUs are shared between vCPUs: (binary, test). They
/// are skipped in the lanes and run alone, after them.
pub const ALONE: &[(&str, &str)] = &[
    ("programs", "two_spinning_threads_get_a_cpu_each_in_a_two_vcpu_pod"),
    ("vm", "vcpu_kick_wakes_and_interrupts_another_vcpu"),
];

/// The environment variable that marks every process a test run starts.
pub const MARKER: &str = "XTASK_TEST_RUN";

/// One test binary cargo built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestBinary {
    /// Its package.
    pub package: String,
    /// Its target's name (`vm` for `tests/vm.rs`, the crate's name for its unit tests).
    pub name: String,
    /// The source file, relative to the package, as cargo shows it (`src/lib.rs`).
    pub src: String,
    /// The executable.
    pub path: PathBuf,
    /// The package's directory: cargo runs a test binary there.
    pub dir: PathBuf,
    /// Whether it is an integration test (`tests/*.rs`) rather than a crate's unit tests.
    pub integration: bool,
}

/// Which lane a binary runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The emulator tests.
    Emulators,
    /// The tests of whole nodes and clusters.
    Cluster,
    /// The unit tests and the host servers' tests.
    Servers,
}

impl Lane {
    const ALL: [Lane; 3] = [Lane::Emulators, Lane::Cluster, Lane::Servers];

    fn index(self) -> usize {
        match self {
            Lane::Emulators => 0,
            Lane::Cluster => 1,
            Lane::Servers => 2,
        }
    }

    /// The integration tests of this lane, in the order they run.
    fn list(self) -> &'static [&'static str] {
        match self {
            Lane::Emulators => EMULATOR_LANE,
            Lane::Cluster => CLUSTER_LANE,
            Lane::Servers => SERVER_LANE,
        }
    }
}

impl TestBinary {
    /// The lane this binary belongs to; `None` for an integration test of `tests` that is in
    /// neither list (a new file must be placed).
    pub fn lane(&self) -> Option<Lane> {
        if self.package != "tests" || !self.integration {
            return Some(Lane::Servers);
        }
        Lane::ALL.into_iter().find(|l| l.list().contains(&self.name.as_str()))
    }

    /// The tests of this binary that run alone.
    fn alone(&self) -> Vec<&'static str> {
        if self.package != "tests" || !self.integration {
            return Vec::new();
        }
        ALONE.iter().filter(|(b, _)| *b == self.name).map(|(_, t)| *t).collect()
    }
}

/// The test binaries in cargo's `--message-format=json` output (`compiler-artifact` records
/// of test profiles that have an executable); other lines are ignored.
pub fn parse_artifacts(json_lines: &str) -> Vec<TestBinary> {
    let mut out: Vec<TestBinary> = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else { continue };
        let (Some(name), Some(src), Some(manifest)) =
            (v["target"]["name"].as_str(), v["target"]["src_path"].as_str(), v["manifest_path"].as_str())
        else {
            continue;
        };
        let dir = Path::new(manifest).parent().unwrap_or(Path::new("/")).to_path_buf();
        let package = package_name(v["package_id"].as_str().unwrap_or(""), &dir);
        let integration = v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"));
        let src =
            Path::new(src).strip_prefix(&dir).map_or_else(|_| src.to_string(), |p| p.display().to_string());
        let bin = TestBinary { package, name: name.to_string(), src, path: exe.into(), dir, integration };
        if !out.contains(&bin) {
            out.push(bin);
        }
    }
    out
}

/// A package's name from its cargo package id (`path+file:///r/tests#0.1.0`,
/// `path+file:///r/wire#wire@0.1.0` or the old `tests 0.1.0 (path+file:///r/tests)`); the
/// directory's name when the id says nothing.
fn package_name(id: &str, dir: &Path) -> String {
    let dir_name = || dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some((_, frag)) = id.rsplit_once('#') {
        return match frag.split_once('@') {
            Some((name, _)) => name.to_string(),
            None => dir_name(),
        };
    }
    match id.split_once(' ') {
        Some((name, _)) if !name.is_empty() => name.to_string(),
        _ => dir_name(),
    }
}

/// One binary's run: what ran, how long, how it ended.
struct Done {
    label: String,
    status: Option<ExitStatus>,
    took: Duration,
}

/// A binary being run: its child, where its output goes, what it is.
struct Running {
    child: Child,
    out: PathBuf,
    header: String,
    label: String,
    started: Instant,
}

/// What one lane is to run: a binary and the arguments it gets.
struct Job {
    bin: TestBinary,
    args: Vec<String>,
    label: String,
}

fn job(bin: &TestBinary, args: Vec<String>, label: String) -> Job {
    Job { bin: bin.clone(), args, label }
}

/// Builds every test binary (`cargo test --workspace --no-run`), says what it builds, and
/// returns the binaries.
pub fn build_all(cargo: &str) -> Result<Vec<TestBinary>, Error> {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["test", "--workspace", "--no-run", "--message-format=json-render-diagnostics"])
        .stdout(Stdio::piped());
    eprintln!("test: building every test binary: {cmd:?}");
    let mut child = cmd.spawn().map_err(|e| Error::io("running cargo test --no-run", e))?;
    let mut json = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            json.push_str(&line);
            json.push('\n');
        }
    }
    let status = child.wait().map_err(|e| Error::io("waiting for cargo test --no-run", e))?;
    if !status.success() {
        return Err(Error::Failed { what: format!("{cmd:?}"), status });
    }
    Ok(parse_artifacts(&json))
}

/// Kills the process groups `groups`, then every process whose environment holds `marker`.
fn kill_everything(groups: &[u32], marker: &str) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    for &g in groups {
        if let Ok(g) = i32::try_from(g) {
            if g > 1 {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
        }
    }
    let needle = marker.as_bytes();
    let me = std::process::id();
    // Processes started while a sweep runs, or still in their exec (their environment
    // reads empty until it is set up), are found by the next ones.
    for pass in 0..4 {
        let mut found = 0;
        for pid in marked_processes(needle) {
            if pid != me {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                    found += 1;
                }
            }
        }
        if found == 0 && pass > 0 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Kills every process that carries the marker when dropped.
struct Sweep<'a>(&'a str);

impl Drop for Sweep<'_> {
    fn drop(&mut self) {
        kill_everything(&[], self.0);
    }
}

/// The processes whose environment holds `needle` (`NAME=VALUE`) as one whole entry.
pub fn marked_processes(needle: &[u8]) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut pids = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(mut f) = File::open(entry.path().join("environ")) else { continue };
        let mut env = Vec::new();
        if f.read_to_end(&mut env).is_ok() && env.split(|b| *b == 0).any(|e| e == needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Runs the test binaries in their lanes, then the tests that run alone; `stop` is polled and
/// ends everything when it turns true. Returns whether every binary passed.
pub fn run_all(cargo: &str, binaries: &[TestBinary], stop: &dyn Fn() -> bool) -> Result<bool, Error> {
    if let Some(b) = binaries.iter().find(|b| b.lane().is_none()) {
        return Err(Error::Usage(format!(
            "test binary tests/{}.rs is in no lane: add it to qemu/src/testrun.rs (EMULATOR_LANE, CLUSTER_LANE or SERVER_LANE)",
            b.name
        )));
    }
    let mut lanes = [VecDeque::new(), VecDeque::new(), VecDeque::new()];
    let mut alone = Vec::new();
    // Integration tests first in their lane's order; unit tests before them in theirs.
    let mut ordered: Vec<&TestBinary> = binaries.iter().collect();
    ordered.sort_by_key(|b| (b.integration, position(b)));
    for b in ordered {
        let skips: Vec<String> =
            b.alone().iter().flat_map(|t| ["--skip".to_string(), (*t).to_string()]).collect();
        let label = label(b);
        let lane = b.lane().map_or(Lane::Servers.index(), Lane::index);
        lanes[lane].push_back(job(b, skips, label.clone()));
        for t in b.alone() {
            alone.push(job(b, vec![t.to_string(), "--exact".into()], format!("{label} {t} (alone)")));
        }
    }
    let token = format!("{}-{}", std::process::id(), nonce());
    let marker = format!("{MARKER}={token}");
    // However the run ends (an error included), nothing a test started outlives it.
    let _sweep = Sweep(&marker);
    let logs = target_dir().join("test-logs");
    fs::create_dir_all(&logs).map_err(|e| Error::io(format!("creating {}", logs.display()), e))?;
    let mut done: Vec<Done> = Vec::new();
    let mut running: [Option<Running>; 3] = [None, None, None];
    let started = Instant::now();
    loop {
        if stop() {
            let groups: Vec<u32> = running.iter().flatten().map(|r| r.child.id()).collect();
            kill_everything(&groups, &marker);
            for r in running.iter_mut().flatten() {
                let _ = r.child.wait();
            }
            eprintln!("test: interrupted; stopped every test binary and what it started");
            return Err(Error::Interrupted);
        }
        for lane in 0..running.len() {
            if running[lane].is_none() {
                if let Some(j) = lanes[lane].pop_front() {
                    running[lane] = Some(start(cargo, &j, &logs, &token)?);
                }
            }
            let finished = match running[lane].as_mut() {
                Some(r) => r.child.try_wait().map_err(|e| Error::io("waiting for a test binary", e))?,
                None => None,
            };
            if let Some(status) = finished {
                if let Some(r) = running[lane].take() {
                    done.push(report(r, status));
                }
            }
        }
        if running.iter().all(Option::is_none) && lanes.iter().all(VecDeque::is_empty) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for j in alone {
        let mut r = start(cargo, &j, &logs, &token)?;
        let status = loop {
            if stop() {
                kill_everything(&[r.child.id()], &marker);
                let _ = r.child.wait();
                eprintln!("test: interrupted; stopped every test binary and what it started");
                return Err(Error::Interrupted);
            }
            if let Some(s) = r.child.try_wait().map_err(|e| Error::io("waiting for a test binary", e))? {
                break s;
            }
            thread::sleep(Duration::from_millis(100));
        };
        done.push(report(r, status));
    }
    let failed: Vec<&Done> = done.iter().filter(|d| !d.status.is_some_and(|s| s.success())).collect();
    let slowest = done.iter().max_by_key(|d| d.took);
    eprintln!(
        "test: {} runs of test binaries in {:.0} s, {} failed{}",
        done.len(),
        started.elapsed().as_secs_f64(),
        failed.len(),
        slowest.map_or(String::new(), |d| format!(
            "; the longest, {}, took {:.0} s",
            d.label,
            d.took.as_secs_f64()
        ))
    );
    for d in &failed {
        eprintln!("test: FAILED: {} ({})", d.label, d.status.map_or("no status".into(), |s| s.to_string()));
    }
    Ok(failed.is_empty())
}

/// The time in nanoseconds, so that two runs by processes of the same pid differ.
fn nonce() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Where a binary stands in its lane's list (binaries outside the lists keep their order).
fn position(b: &TestBinary) -> usize {
    b.lane().and_then(|l| l.list().iter().position(|n| *n == b.name)).unwrap_or(0)
}

fn label(b: &TestBinary) -> String {
    if b.integration {
        format!("{}/{}", b.package, b.src)
    } else {
        format!("{} ({})", b.package, b.src)
    }
}

fn start(cargo: &str, j: &Job, logs: &Path, token: &str) -> Result<Running, Error> {
    let file_name = format!("{}-{}.log", j.bin.package, j.bin.name);
    let out = logs.join(file_name);
    let file = File::create(&out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    let err = file.try_clone().map_err(|e| Error::io("duplicating a log file", e))?;
    let mut cmd = Command::new(&j.bin.path);
    cmd.args(&j.args)
        .current_dir(&j.bin.dir)
        .env("CARGO", cargo)
        .env(MARKER, token)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .process_group(0);
    let child = cmd.spawn().map_err(|e| Error::io(format!("starting {}", j.bin.path.display()), e))?;
    let shown = j.bin.path.strip_prefix(repo_root()).unwrap_or(&j.bin.path).display().to_string();
    let header = if j.bin.integration {
        format!("     Running {} ({shown}) {}", j.bin.src, j.args.join(" "))
    } else {
        format!("     Running unittests {} ({shown})", j.bin.src)
    };
    eprintln!("test: started {}", j.label);
    Ok(Running { child, out, header, label: j.label.clone(), started: Instant::now() })
}

/// Prints a finished binary's output under its `Running` line.
fn report(r: Running, status: ExitStatus) -> Done {
    let took = r.started.elapsed();
    let text = fs::read(&r.out).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    println!("{}", r.header.trim_end());
    print!("{text}");
    if !text.ends_with('\n') && !text.is_empty() {
        println!();
    }
    let verdict = if status.success() { "ok".to_string() } else { format!("FAILED ({status})") };
    eprintln!("test: {} {verdict} in {:.0} s", r.label, took.as_secs_f64());
    Done { label: r.label, status: Some(status), took }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTIFACTS: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///r/tests#0.1.0","manifest_path":"/r/tests/Cargo.toml","target":{"kind":["test"],"name":"vm","src_path":"/r/tests/tests/vm.rs"},"profile":{"test":true},"executable":"/r/target/debug/deps/vm-1"}
{"reason":"compiler-artifact","package_id":"path+file:///r/wire#wire@0.1.0","manifest_path":"/r/wire/Cargo.toml","target":{"kind":["lib"],"name":"wire","src_path":"/r/wire/src/lib.rs"},"profile":{"test":true},"executable":"/r/target/debug/deps/wire-2"}
{"reason":"compiler-artifact","package_id":"path+file:///r/wire#wire@0.1.0","manifest_path":"/r/wire/Cargo.toml","target":{"kind":["lib"],"name":"wire","src_path":"/r/wire/src/lib.rs"},"profile":{"test":false},"executable":null}
{"reason":"build-finished","success":true}
not json"#;

    #[test]
    fn test_binaries_come_from_cargos_artifact_records() {
        let bins = parse_artifacts(ARTIFACTS);
        assert_eq!(bins.len(), 2, "{bins:?}");
        assert_eq!(bins[0].package, "tests");
        assert_eq!(bins[0].name, "vm");
        assert_eq!(bins[0].src, "tests/vm.rs");
        assert!(bins[0].integration);
        assert_eq!(bins[0].dir, Path::new("/r/tests"));
        assert_eq!(bins[0].lane(), Some(Lane::Emulators));
        assert_eq!(bins[0].alone(), vec!["vcpu_kick_wakes_and_interrupts_another_vcpu"]);
        assert_eq!(bins[1].package, "wire");
        assert!(!bins[1].integration);
        assert_eq!(bins[1].lane(), Some(Lane::Servers));
        assert!(bins[1].alone().is_empty());
    }

    #[test]
    fn package_names_from_every_id_form() {
        let d = Path::new("/r/dir");
        assert_eq!(package_name("path+file:///r/tests#0.1.0", d), "dir");
        assert_eq!(package_name("path+file:///r/x#crx-abi@0.1.0", d), "crx-abi");
        assert_eq!(package_name("crx-abi 0.1.0 (path+file:///r/abi)", d), "crx-abi");
        assert_eq!(package_name("", d), "dir");
    }

    /// Every integration test file is in exactly one lane, and every test run alone exists.
    #[test]
    fn every_test_file_has_one_lane() {
        let dir = repo_root().join("tests").join("tests");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("tests/tests")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
            .collect();
        names.sort();
        for n in &names {
            let lanes = Lane::ALL.iter().filter(|l| l.list().contains(&n.as_str())).count();
            assert_eq!(lanes, 1, "tests/{n}.rs must be in exactly one lane");
        }
        for l in Lane::ALL.iter().flat_map(|l| l.list()) {
            assert!(names.iter().any(|n| n == l), "tests/{l}.rs is listed but does not exist");
        }
        for (bin, test) in ALONE {
            let src = fs::read_to_string(dir.join(format!("{bin}.rs"))).expect("an ALONE binary");
            assert!(src.contains(&format!("fn {test}()")), "tests/{bin}.rs has no test {test}");
        }
    }

    #[test]
    fn marked_processes_are_found_by_their_whole_entry() {
        let token = format!("{MARKER}=unit-{}", std::process::id());
        let mut child = Command::new("sleep")
            .arg("30")
            .env(MARKER, token.split_once('=').map(|(_, v)| v).unwrap_or_default())
            .spawn()
            .expect("sleep");
        // Until its exec has set up the new stack, a process shows an empty environment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = marked_processes(token.as_bytes());
        while !found.contains(&child.id()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            found = marked_processes(token.as_bytes());
        }
        let prefix = marked_processes(&token.as_bytes()[..token.len() - 1]);
        kill_everything(&[], &token);
        let status = child.wait().expect("wait");
        assert!(found.contains(&child.id()), "{found:?}");
        assert!(!prefix.contains(&child.id()), "a prefix of the marker matched");
        assert!(!status.success(), "the marked process was not killed");
    }
}
