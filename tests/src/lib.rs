//! Shared set-up for the integration tests. Emulator tests: the kernel and ISOs are built once per
//! test binary, and emulator runs take turns (the machine has two cores and Bochs alone
//! keeps one busy). Control-plane tests: see [`cluster`].

pub mod cluster;
pub mod up;

use qemu::image;
use qemu::{Error, Machine, Ready, Virt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long a QEMU run may take.
pub const QEMU_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a Bochs run may take.
pub const BOCHS_TIMEOUT: Duration = Duration::from_secs(300);

/// Panics with the error's message, which carries the emulator's log where there is one.
#[track_caller]
pub fn ok<T>(result: Result<T, Error>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// The kernel, built on first use.
pub fn kernel() -> &'static Path {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(|| ok(image::build_kernel()))
}

/// A GRUB ISO whose grub.cfg passes `cmdline`, built on first use as
/// `target/test-iso/NAME.iso`.
pub fn iso(name: &str, cmdline: &str) -> PathBuf {
    static ISOS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let kernel = kernel();
    let mut isos = ISOS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    let key = format!("{name}\n{cmdline}");
    if let Some(path) = isos.get(&key) {
        return path.clone();
    }
    let path = image::target_dir().join("test-iso").join(format!("{name}.iso"));
    ok(image::build_iso(kernel, cmdline, &path));
    isos.insert(key, path.clone());
    path
}

/// Held while an emulator runs, so that runs in one test binary take turns.
pub fn emulator_slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    // A test that failed while holding the slot leaves nothing behind to repair.
    SLOT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for the ready line and parses it.
pub fn wait_ready(machine: &mut Machine, timeout: Duration) -> Ready {
    let line = ok(machine.wait_for_regex(qemu::console::ready_regex(), timeout));
    Ready::parse(&line.text)
        .unwrap_or_else(|| panic!("unparsable ready line {:?}\n{}", line.text, machine.log()))
}

/// Asserts the ready line says `cpus` CPUs, memory within `memory_mib` and `virt`;
/// `log` (the serial log) is shown when it does not.
#[track_caller]
pub fn check_ready(
    ready: &Ready,
    log: &str,
    cpus: u32,
    memory_mib: std::ops::RangeInclusive<u64>,
    virt: Virt,
) {
    assert_eq!(ready.cpus, cpus, "expected cpus={cpus}\n{log}");
    assert!(
        memory_mib.contains(&ready.memory_mib),
        "memory {} MiB not in {}..={}\n{log}",
        ready.memory_mib,
        memory_mib.start(),
        memory_mib.end()
    );
    assert_eq!(ready.virt, virt, "expected virt={virt:?}\n{log}");
}

/// The test guests' directory, built on first use.
pub fn guests_dir() -> &'static Path {
    static GUESTS: OnceLock<PathBuf> = OnceLock::new();
    GUESTS.get_or_init(|| ok(image::build_guests()))
}

/// Test guest `name` (see `guests/src/bin/`), with an empty command line.
pub fn guest(name: &str) -> qemu::vm::GuestImage {
    guests_dir();
    qemu::vm::GuestImage::new(image::guest_path(name))
}

/// Runs `spec` on `host` (taking the emulator slot), until every VM has ended and the node
/// is off, `timeout` runs out, or `stop` says so.
pub fn run_vms(
    name: &str,
    host: &qemu::vm::Host,
    spec: &qemu::vm::VmSpec,
    timeout: Duration,
    stop: &dyn Fn(&qemu::vm::Report) -> bool,
) -> qemu::vm::VmRun {
    let _slot = emulator_slot();
    ok(qemu::vm::run(host, name, spec, Some(timeout), stop, &mut |_, _| {}))
}

/// How a host program run by [`run_program`] ended.
#[derive(Debug)]
pub struct ProgramRun {
    /// What ran, for messages.
    pub what: String,
    /// Its exit status (`None` when it was killed at the timeout).
    pub status: Option<std::process::ExitStatus>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ProgramRun {
    /// Its exit code (`None` when it timed out or was killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics with `msg`, the status and both outputs unless `ok`.
    #[track_caller]
    pub fn check(&self, ok: bool, msg: &str) {
        if !ok {
            let status = match self.status {
                Some(s) => format!("{s}"),
                None => "killed at the timeout".into(),
            };
            panic!(
                "{msg}\n{} ({status})\n--- stdout ---\n{}--- stderr ---\n{}",
                self.what, self.stdout, self.stderr
            );
        }
    }
}

/// Runs `cmd` with its output collected in files under `target/test-programs/NAME.*`,
/// killing it when `timeout` runs out.
pub fn run_program(name: &str, cmd: &mut std::process::Command, timeout: Duration) -> ProgramRun {
    use std::fs::File;
    use std::process::Stdio;
    let dir = image::target_dir().join("test-programs");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let file = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file(&out_path))
        .stderr(file(&err_path))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    ProgramRun { what, status, stdout: read(&out_path), stderr: read(&err_path) }
}

/// Compiles the C file `source` with `gcc -static -O1` into `out`, installing gcc and the
/// static C library (libc6-dev) first when they are missing and the tests run as root.
/// Panics with what to install when it cannot link.
pub fn gcc_static(source: &Path, out: &Path) {
    if let Err(e) = qemu::setup::ensure(qemu::setup::STATIC_C) {
        panic!("compiling {} needs gcc and libc6-dev: {e}", source.display());
    }
    let mut cmd = std::process::Command::new("gcc");
    cmd.args(["-static", "-O1", "-o"]).arg(out).arg(source);
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let run = run_program(&format!("gcc-{name}"), &mut cmd, Duration::from_secs(120));
    run.check(
        run.code() == Some(0),
        "`gcc -static` could not build the test program: install the static C library with \
         `sudo apt-get install libc6-dev` (and gcc)",
    );
}

/// Whether `out` exists and is newer than `source`: a test program built earlier in this
/// run (or an earlier one) from the same source.
fn up_to_date(source: &Path, out: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(source), modified(out)), (Some(s), Some(o)) if o > s)
}

/// Builds `out` from `source` with `cmd` (which must write to the path it is given, `out`
/// with a `.part-PID` suffix, then moved into place so that no test binary ever runs a half
/// written program), unless `out` is newer than `source`. Panics with `hint` and the
/// compiler's output when it fails.
fn build_program(source: &Path, out: &Path, hint: &str, cmd: &dyn Fn(&Path) -> std::process::Command) {
    if up_to_date(source, out) {
        return;
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let part = out.with_file_name(format!("{name}.part-{}", std::process::id()));
    let run = run_program(&format!("build-{name}"), &mut cmd(&part), Duration::from_secs(600));
    run.check(run.code() == Some(0) && part.is_file(), hint);
    std::fs::rename(&part, out).unwrap_or_else(|e| panic!("moving {} into place: {e}", part.display()));
}

/// Where the test programs are built: `target/test-programs/bin/`.
pub fn programs_dir() -> PathBuf {
    image::target_dir().join("test-programs").join("bin")
}

/// Compiles the C file `source` with `gcc -static -pthread -O1` into `out` (once: not again
/// while `out` is newer than `source`), installing gcc and the static C library
/// (libc6-dev) first when they are missing and the tests run as root.
pub fn gcc_static_pthread(source: &Path, out: &Path) {
    if let Err(e) = qemu::setup::ensure(qemu::setup::STATIC_C) {
        panic!("compiling {} needs gcc and libc6-dev: {e}", source.display());
    }
    build_program(
        source,
        out,
        "`gcc -static -pthread` could not build the test program: install the static C library \
         with `sudo apt-get install libc6-dev` (and gcc)",
        &|to| {
            let mut cmd = std::process::Command::new("gcc");
            cmd.args(["-static", "-pthread", "-O1", "-Wall", "-o"]).arg(to).arg(source);
            cmd
        },
    );
}

/// Builds the Go file `source` into the static program `out` with Debian's Go
/// (`CGO_ENABLED=0 go build -trimpath -ldflags=-s`; once: not again while `out` is newer
/// than `source`), installing golang-go first when it is missing and the tests run as
/// root. Go's build cache, GOPATH and HOME are under `target/go/`, and nothing is
/// downloaded (`GOPROXY=off`: the programs use the standard library only).
pub fn go_static(source: &Path, out: &Path) {
    if let Err(e) = qemu::setup::ensure(qemu::setup::GO) {
        panic!("building {} needs Go: {e}", source.display());
    }
    let go = image::target_dir().join("go");
    build_program(
        source,
        out,
        "`go build` could not build the test program: install Go with `sudo apt-get install golang-go`",
        &|to| {
            let mut cmd = std::process::Command::new("go");
            cmd.env("CGO_ENABLED", "0")
                .env("GOCACHE", go.join("cache"))
                .env("GOPATH", go.join("path"))
                .env("GOENV", "off")
                .env("GOPROXY", "off")
                .env("GOFLAGS", "")
                .env("HOME", &go)
                .args(["build", "-trimpath", "-ldflags=-s", "-o"])
                .arg(to)
                .arg(source);
            cmd
        },
    );
}

/// Compiles the C file `source` with `musl-gcc -O1` into `out`, dynamically linked against
/// musl (its PT_INTERP is [`qemu::setup::MUSL_LOADER_PATH`]; once: not again while `out`
/// is newer than `source`), installing musl-tools first when it is missing and the tests
/// run as root.
pub fn musl_dynamic(source: &Path, out: &Path) {
    if let Err(e) = qemu::setup::ensure(qemu::setup::MUSL) {
        panic!("compiling {} needs musl-gcc: {e}", source.display());
    }
    build_program(
        source,
        out,
        "`musl-gcc` could not build the test program: install it with `sudo apt-get install musl-tools`",
        &|to| {
            let mut cmd = std::process::Command::new("musl-gcc");
            cmd.args(["-O1", "-Wall", "-o"]).arg(to).arg(source);
            cmd
        },
    );
}

/// Compiles the C file `source` with `gcc -O1 ARGS` into `out`, dynamically linked against
/// the host's glibc unless `args` say otherwise (installing gcc and libc6-dev first as
/// [`gcc_static`] does). Panics with gcc's output when it cannot build.
pub fn gcc(source: &Path, out: &Path, args: &[&str]) {
    if let Err(e) = qemu::setup::ensure(qemu::setup::STATIC_C) {
        panic!("compiling {} needs gcc and libc6-dev: {e}", source.display());
    }
    let mut cmd = std::process::Command::new("gcc");
    cmd.arg("-O1").args(args).arg("-o").arg(out).arg(source);
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let run = run_program(&format!("gcc-{name}"), &mut cmd, Duration::from_secs(120));
    run.check(run.code() == Some(0), &format!("gcc could not build {}", source.display()));
}

/// The processes whose command line contains `marker` (read from /proc).
pub fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}
