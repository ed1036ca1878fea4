//! The real test programs (tests/programs/, their syscalls in tests/programs/SYSCALLS.md)
//! and the test images they run in: a static Go program (`gotest`: goroutines, timers, GC,
//! NumCPU, a panic, an HTTP server fetched by busybox wget), a static C program with
//! threads (`ctest`: mutex and condvars, TLS, a faulting thread, a thread bomb, a futex on a
//! wild address, CPU-bound spins), a dynamically linked musl program, and the glibc-dynamic
//! Debian image (`cargo xtask image debian`: bash, coreutils, grep, sed, gawk).
//!
//! Every case is one argv with its expected exit code and output check. It runs twice:
//! on the host, under Linux, in the same image (its layers unpacked and `chroot`ed into;
//! this needs root, as CI has, and is skipped with a note otherwise), which shows the case
//! and its expectations are right; and in a pod VM under crx-guest (QEMU), judged the same
//! way. The pod runs of what crx-guest cannot run yet are ignored with the feature they
//! need (`cargo test -p tests --test programs -- --ignored NAME` runs one anyway).

use qemu::oci::{self, Compression, Image};
use qemu::pod::{self, PodOutcome, PodRun, PodStatus};
use qemu::rootfs::{self, Rootfs};
use qemu::vm::Host;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tests::{
    emulator_slot, gcc_static_pthread, go_static, kernel, musl_dynamic, ok, programs_dir, QEMU_TIMEOUT,
};

// ---- The programs and images, built once per test binary ----

fn source(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs").join(rel)
}

/// `gotest` (tests/programs/go/gotest.go).
fn gotest() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = programs_dir().join("gotest");
        go_static(&source("go/gotest.go"), &out);
        out
    })
}

/// `ctest` (tests/programs/c/ctest.c).
fn ctest() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = programs_dir().join("ctest");
        gcc_static_pthread(&source("c/ctest.c"), &out);
        out
    })
}

/// `hostile` (tests/programs/c/hostile.c).
fn hostile_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = programs_dir().join("hostile");
        gcc_static_pthread(&source("c/hostile.c"), &out);
        out
    })
}

/// `events` (tests/programs/c/events.c).
fn events_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = programs_dir().join("events");
        gcc_static_pthread(&source("c/events.c"), &out);
        out
    })
}

/// `timers` (tests/programs/c/timers.c).
fn timers_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = programs_dir().join("timers");
        gcc_static_pthread(&source("c/timers.c"), &out);
        out
    })
}

/// `musl-hello` (tests/programs/c/musl-hello.c), dynamically linked against musl.
fn musl_hello() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = programs_dir().join("musl-hello");
        musl_dynamic(&source("c/musl-hello.c"), &out);
        out
    })
}

fn images_dir() -> PathBuf {
    qemu::image::target_dir().join("test-programs").join("images")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The busybox image with `extra` as a second layer, at `images/NAME`.
fn busybox_plus(name: &str, extra: &Rootfs) -> Image {
    ok(qemu::setup::ensure(qemu::setup::BUSYBOX));
    let dir = images_dir().join(name);
    let tar = extra.tar().unwrap_or_else(|e| panic!("{e}"));
    oci::build_busybox_image_with(Path::new(qemu::setup::BUSYBOX_PATH), &[tar], &dir)
        .unwrap_or_else(|e| panic!("building {}: {e}", dir.display()));
    Image::open(&dir).unwrap_or_else(|e| panic!("{e}"))
}

/// The test image: busybox, and a second layer with `bin/gotest` and `bin/ctest`.
fn test_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut extra = Rootfs::new();
        extra
            .file("bin/gotest", 0o755, read(gotest()))
            .and_then(|r| r.file("bin/ctest", 0o755, read(ctest())))
            .and_then(|r| r.file("bin/hostile", 0o755, read(hostile_program())))
            .and_then(|r| r.file("bin/events", 0o755, read(events_program())))
            .and_then(|r| r.file("bin/timers", 0o755, read(timers_program())))
            .unwrap_or_else(|e| panic!("{e}"));
        busybox_plus("testprogs", &extra)
    })
}

/// The musl image: busybox, and a second layer with `bin/musl-hello` and the musl loader
/// `lib/ld-musl-x86_64.so.1` (musl's libc.so, which is its own dynamic loader).
fn musl_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let program = read(musl_hello());
        let loader = read(Path::new(qemu::setup::MUSL_LOADER_PATH));
        let mut extra = Rootfs::new();
        extra
            .file("bin/musl-hello", 0o755, program)
            .and_then(|r| r.file(qemu::setup::MUSL_LOADER_PATH, 0o755, loader))
            .unwrap_or_else(|e| panic!("{e}"));
        busybox_plus("musl", &extra)
    })
}

fn debian_dir() -> PathBuf {
    images_dir().join("debian")
}

/// The Debian image (`cargo xtask image debian`) and what it was built from.
fn debian() -> &'static (Image, rootfs::DebianImage) {
    static IMAGE: OnceLock<(Image, rootfs::DebianImage)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let built = ok(rootfs::build_debian_image(&debian_dir()));
        (Image::open(&debian_dir()).unwrap_or_else(|e| panic!("{e}")), built)
    })
}

fn debian_image() -> &'static Image {
    &debian().0
}

/// The Debian image with the test programs as a third layer (for the one Bochs run).
fn combined_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut extra = Rootfs::new();
        extra
            .file("usr/local/bin/gotest", 0o755, read(gotest()))
            .and_then(|r| r.file("usr/local/bin/ctest", 0o755, read(ctest())))
            .unwrap_or_else(|e| panic!("{e}"));
        let tar = extra.tar().unwrap_or_else(|e| panic!("{e}"));
        let dir = images_dir().join("combined");
        let _ = std::fs::remove_dir_all(&dir);
        let base = debian_image();
        let mut tars: Vec<Vec<u8>> = base.layers.iter().map(plain).collect();
        tars.push(tar);
        let run = oci::RunConfig { env: Some(base.env()), ..Default::default() };
        oci::write_layout(&dir, &tars, run).unwrap_or_else(|e| panic!("{e}"));
        Image::open(&dir).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A layer's tar, inflated when it is gzip.
fn plain(layer: &oci::Layer) -> Vec<u8> {
    match layer.compression {
        Compression::None => layer.bytes.clone(),
        Compression::Gzip => {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&layer.bytes[..])
                .read_to_end(&mut raw)
                .unwrap_or_else(|e| panic!("{e}"));
            raw
        }
    }
}

// ---- Cases ----

/// One program run: argv, expected exit code, output check.
struct Case {
    /// Names its pod bundle and logs.
    name: &'static str,
    argv: Vec<String>,
    exit: i32,
    /// Judges the output lines (stdout and stderr together, as the pod console has them).
    check: fn(&[String]) -> Result<(), String>,
    /// On the host, run as nobody with RLIMIT_NPROC at this (the thread bomb; root is not
    /// bounded by it).
    host_nproc: Option<u32>,
    /// The pod VM's memory in MiB when the pod default (64) is not enough.
    mem_mib: Option<u32>,
}

fn case(name: &'static str, argv: &[&str], exit: i32, check: fn(&[String]) -> Result<(), String>) -> Case {
    Case {
        name,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        exit,
        check,
        host_nproc: None,
        mem_mib: None,
    }
}

fn has(lines: &[String], want: &str) -> Result<(), String> {
    if lines.iter().any(|l| l == want) {
        Ok(())
    } else {
        Err(format!("no line {want:?}"))
    }
}

/// The captures of the first line matching `re`.
fn find(lines: &[String], re: &str) -> Result<Vec<String>, String> {
    let re = regex::Regex::new(re).map_err(|e| e.to_string())?;
    lines
        .iter()
        .find_map(|l| re.captures(l))
        .map(|c| c.iter().map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()).collect())
        .ok_or_else(|| format!("no line matching {re}"))
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

// gotest

fn go_goroutines() -> Case {
    case("go-goroutines", &["gotest", "goroutines"], 0, |l| {
        // The ring's sum, computed in one goroutine by the program and checked there too.
        has(l, "goroutines: 1000 goroutines passed 100 values, checksum 17458656665907283210 ok")
    })
}

fn go_timers() -> Case {
    case("go-timers", &["gotest", "timers"], 0, |l| {
        let c = find(l, r"^timers: ticks took (\d+) ms, sleep took (\d+) ms, timer took (\d+) ms$")?;
        let (ticks, sleep, timer): (u64, u64, u64) = (num(&c[1])?, num(&c[2])?, num(&c[3])?);
        expect(ticks >= 50, "5 ticks of 10 ms take at least 50 ms")?;
        expect(sleep >= 200, "a 200 ms sleep takes at least 200 ms")?;
        expect(timer >= 50, "a 50 ms timer takes at least 50 ms")?;
        expect(sleep < 10_000, "a 200 ms sleep takes less than 10 s")?;
        has(l, "timers: 5 ticks, slept >= 200 ms, timer fired ok")
    })
}

fn go_gc() -> Case {
    case("go-gc", &["gotest", "gc"], 0, |l| {
        let c = find(
            l,
            r"^gc: allocated (\d+) MiB in 4194304 objects, 1024 kept, heap in use (\d+) MiB, NumGC (\d+), sum 8796090925056$",
        )?;
        expect(num::<u64>(&c[1])? >= 256, "256 MiB allocated in all")?;
        expect(num::<u64>(&c[3])? > 0, "NumGC > 0")?;
        has(l, "gc: NumGC > 0: true")
    })
}

fn numcpu(l: &[String]) -> Result<(u32, u32), String> {
    let c = find(l, r"^numcpu: NumCPU=(\d+) GOMAXPROCS=(\d+)$")?;
    Ok((num(&c[1])?, num(&c[2])?))
}

fn go_numcpu() -> Case {
    case("go-numcpu", &["gotest", "numcpu"], 0, |l| {
        let (cpus, procs) = numcpu(l)?;
        expect(cpus >= 1 && procs == cpus, "GOMAXPROCS is NumCPU, at least 1")
    })
}

fn go_panic() -> Case {
    case("go-panic", &["gotest", "panic"], 2, |l| {
        // Nothing before the panic message, then the goroutine's trace.
        expect(
            l.first().map(String::as_str) == Some("panic: gotest: deliberate panic"),
            "the first line is `panic: gotest: deliberate panic`",
        )?;
        has(l, "goroutine 1 [running]:")
    })
}

/// `gotest httpserver` in the background on 127.0.0.1:`port` answering one request, and
/// busybox wget fetching it (tried for up to 20 s while the server starts).
fn go_httpserver(port: u16) -> Case {
    let script = format!(
        "gotest httpserver {port} 1 & pid=$!
ok=0
for i in $(seq 1 40); do
  if busybox wget -qO- http://127.0.0.1:{port}/; then ok=1; break; fi
  sleep 0.5
done
[ $ok = 1 ] || kill $pid
wait $pid; echo server=$?
[ $ok = 1 ]"
    );
    Case {
        name: "go-httpserver",
        argv: vec!["sh".into(), "-c".into(), script],
        exit: 0,
        check: |l| {
            find(l, r"^httpserver: listening on 127\.0\.0\.1:\d+$")?;
            has(l, "hello from the gotest http server")?;
            has(l, "httpserver: served 1 requests")?;
            has(l, "server=0")
        },
        host_nproc: None,
        mem_mib: None,
    }
}

// ctest

fn c_mutex() -> Case {
    case("c-mutex", &["ctest", "mutex"], 0, |l| {
        has(l, "mutex: counter=800000 after the barrier, want 800000")?;
        has(l, "mutex: queue total=500500, want 500500")?;
        has(l, "mutex: ok")
    })
}

fn c_tls() -> Case {
    case("c-tls", &["ctest", "tls"], 0, |l| {
        for i in 0..4 {
            has(l, &format!("tls: thread {i} saw {} (thread{i})", 100 * (i + 1)))?;
        }
        has(l, "tls: main thread still has 1 (main)")?;
        has(l, "tls: ok")
    })
}

fn c_segv() -> Case {
    case("c-segv", &["ctest", "segv"], 139, |l| {
        // A shell that ran it (a batch in a pod VM) reports the signal after it.
        let own: Vec<&String> = l.iter().filter(|x| *x != "Segmentation fault").collect();
        expect(own == ["segv: thread about to fault"], "only the thread's line, then the process is dead")
    })
}

fn threadbomb_count(l: &[String]) -> Result<u32, String> {
    let c = find(
        l,
        r"^threadbomb: created (\d+) threads, then pthread_create failed: EAGAIN \(Resource temporarily unavailable\)$",
    )?;
    let n: u32 = num(&c[1])?;
    has(l, &format!("threadbomb: joined {n} threads, still alive"))?;
    Ok(n)
}

fn c_threadbomb() -> Case {
    Case {
        host_nproc: Some(64),
        ..case("c-threadbomb", &["ctest", "threadbomb"], 0, |l| {
            let n = threadbomb_count(l)?;
            expect(n >= 8, "at least 8 threads before the limit")
        })
    }
}

fn c_futexfault() -> Case {
    case("c-futexfault", &["ctest", "futexfault"], 0, |l| {
        expect(l == ["futexfault: futex(0x10, FUTEX_WAIT, 0, NULL) = -1 EFAULT"], "futex says EFAULT")
    })
}

const SPIN_ROUNDS: u64 = 10_000_000;

/// ctest's xorshift, for the expected result of `ctest spin`.
fn xorshift(mut x: u64, rounds: u64) -> u64 {
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn c_spin() -> Case {
    case("c-spin", &["ctest", "spin", "10000000"], 0, |l| {
        let want =
            format!("spin: {SPIN_ROUNDS} rounds, result {:016x}", xorshift(88172645463325252, SPIN_ROUNDS));
        expect(l == [want.clone()], &format!("the one line is {want:?}"))
    })
}

const SPIN2_SECONDS: f64 = 2.0;

fn c_spin2() -> Case {
    case("c-spin2", &["ctest", "spin2", "2"], 0, |l| {
        let mut cpu = Vec::new();
        for i in 0..2 {
            let c = find(l, &format!(r"^spin2: thread {i} cpu (\d+\.\d+) s, (\d+) rounds of 10000$"))?;
            cpu.push(num::<f64>(&c[1])?);
        }
        let c = find(l, r"^spin2: wall (\d+\.\d+) s, process cpu (\d+\.\d+) s$")?;
        let (wall, process): (f64, f64) = (num(&c[1])?, num(&c[2])?);
        // Both threads spin at once (preempted in turn on one CPU, side by side on two):
        // each gets CPU time, and together they take about SECONDS of wall-clock time, not
        // one after the other.
        expect(cpu.iter().all(|&c| c > 0.1 * SPIN2_SECONDS), "each thread gets CPU time")?;
        expect(cpu.iter().all(|&c| c <= wall + 0.1), "no thread has more CPU time than the wall clock")?;
        expect(wall < 1.5 * SPIN2_SECONDS, "the threads spin at the same time")?;
        expect(process + 0.05 >= cpu[0] + cpu[1], "the process's CPU time holds its threads'")
    })
}

// The Debian image

/// The Debian image's pod memory: at 64 MiB its 5.5 MiB library layer does not fit the
/// guest's filesystem budget (half the heap, the heap 3/8 of RAM): `the image cannot be
/// used: layer 1: the image's files need more than the 3838464 bytes of memory the
/// filesystem may take: give the pod more memory`.
const DEBIAN_MEM_MIB: u32 = 128;

fn debian_case(name: &'static str, argv: &[&str], check: fn(&[String]) -> Result<(), String>) -> Case {
    Case { mem_mib: Some(DEBIAN_MEM_MIB), ..case(name, argv, 0, check) }
}

fn debian_bash() -> Case {
    debian_case(
        "debian-bash",
        &["bash", "-c", "echo hello from bash $BASH_VERSION; sh -c 'echo sh is bash $BASH_VERSINFO'"],
        |l| {
            find(l, r"^hello from bash 5\.\d+\.\d+\(\d+\)-release$")?;
            has(l, "sh is bash 5")
        },
    )
}

/// The image's usr/bin, sorted as `sort` sorts them in the C locale (bytes).
fn debian_bin_names() -> Vec<String> {
    let mut names: Vec<String> = rootfs::DEBIAN_PROGRAMS.iter().map(|s| s.to_string()).collect();
    names.extend(rootfs::DEBIAN_LINKS.iter().map(|(l, _)| l.rsplit('/').next().unwrap_or(l).to_string()));
    names.sort();
    names
}

fn debian_coreutils() -> Case {
    debian_case(
        "debian-coreutils",
        &[
            "bash",
            "-c",
            "ls /usr/bin | sort | head -3; sort /data/words.txt | uniq -c | sort -rn | head -1; \
             wc -l < /data/fruits.txt; echo $(seq 3) | tr ' ' +; basename /a/b/c.txt .txt; \
             cut -d' ' -f1 /data/fruits.txt | tail -1; printf '%s=%d\\n' x 42; id -u; \
             mkdir -p /tmp/d && echo kept > /tmp/d/f && cp /tmp/d/f /tmp/d/g && cat /tmp/d/g",
        ],
        |l| {
            let names = debian_bin_names();
            let want: Vec<String> = names
                .iter()
                .take(3)
                .cloned()
                .chain(["      3 pear", "7", "1+2+3", "c", "grape", "x=42", "0", "kept"].map(String::from))
                .collect();
            expect(l == want, &format!("the lines are {want:?}"))
        },
    )
}

fn debian_grep_sed_awk() -> Case {
    debian_case(
        "debian-text",
        &[
            "bash",
            "-c",
            "grep -c red /data/fruits.txt; grep -E '^(fig|grape) ' /data/fruits.txt | sed 's/ [0-9]* / = /'; \
             awk '$3 == \"purple\" { n += $2 } END { print \"purple\", n }' /data/fruits.txt; \
             gawk 'BEGIN { printf \"%.3f\\n\", atan2(0, -1) }'; \
             grep -o '[0-9]*' /data/fruits.txt | sort -n | tail -1",
        ],
        |l| {
            let want = ["2", "fig = purple", "grape = green", "purple 13", "3.142", "15"];
            expect(l == want, &format!("the lines are {want:?}"))
        },
    )
}

fn musl_case() -> Case {
    case("musl-hello", &["musl-hello", "a", "b"], 0, |l| {
        expect(l == ["hello from musl, 3 args"], "the one line is `hello from musl, 3 args`")
    })
}

// ---- Running a case on the host, in the image ----

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// `image`'s layers unpacked in order (with the host's tar) into `images/NAME.root`.
fn unpack(image: &Image, name: &str) -> PathBuf {
    use std::io::Write;
    let dir = images_dir().join(format!("{name}.root"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    for (i, layer) in image.layers.iter().enumerate() {
        let tar = plain(layer);
        let mut child = std::process::Command::new("tar")
            .args(["-x", "-f", "-", "-C"])
            .arg(&dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting tar: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&tar).unwrap_or_else(|e| panic!("writing layer {i} to tar: {e}"));
        }
        let status = child.wait().unwrap_or_else(|e| panic!("waiting for tar: {e}"));
        assert!(status.success(), "tar could not unpack layer {i} of {name}: {status}");
    }
    // crx-guest gives every container /dev/null (a shell's background job reads it).
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).unwrap_or_else(|e| panic!("creating {}: {e}", dev.display()));
    let status = std::process::Command::new("mknod")
        .args(["-m", "666"])
        .arg(dev.join("null"))
        .args(["c", "1", "3"])
        .status()
        .unwrap_or_else(|e| panic!("running mknod: {e}"));
    assert!(status.success(), "mknod {}/null failed: {status}", dev.display());
    dir
}

/// Where the host's `PATH` finds `name`.
fn host_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("the host has no `{name}` on its PATH"))
}

/// How a host run ended: its exit code as a shell sees it (128 + N for signal N) and its
/// output lines (stdout and stderr in one file, in the order written).
struct HostRun {
    code: Option<i32>,
    lines: Vec<String>,
    what: String,
}

fn run_on_host(root: &Path, image: &Image, c: &Case) -> HostRun {
    use std::os::unix::process::ExitStatusExt;
    let log_dir = qemu::image::target_dir().join("test-programs");
    std::fs::create_dir_all(&log_dir).unwrap_or_else(|e| panic!("{e}"));
    let log = log_dir.join(format!("host-{}.out", c.name));
    let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let err = file.try_clone().unwrap_or_else(|e| panic!("{e}"));
    // The command's environment is the image's, so the host's programs are named by path.
    let chroot = host_program("chroot");
    let mut cmd = match c.host_nproc {
        Some(n) => {
            let mut cmd = std::process::Command::new(host_program("prlimit"));
            cmd.arg(format!("--nproc={n}")).arg(&chroot).arg("--userspec=65534:65534");
            cmd
        }
        None => std::process::Command::new(&chroot),
    };
    cmd.arg(root).args(&c.argv).env_clear().envs(image.env().iter().filter_map(|e| e.split_once('=')));
    cmd.current_dir("/").stdin(std::process::Stdio::null()).stdout(file).stderr(err);
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let code = status.and_then(|s| s.code().or_else(|| s.signal().map(|n| 128 + n)));
    HostRun { code, lines: text.lines().map(str::to_string).collect(), what }
}

/// Runs every case on the host in `image` (unpacked as `name`), asserting each one's exit
/// code and output. Without root there is no chroot: it says so and checks nothing.
fn check_on_host(name: &str, image: &Image, cases: &[Case]) {
    if !is_root() {
        eprintln!("note: the host runs of {name} need root (chroot); skipped");
        return;
    }
    let root = unpack(image, name);
    let mut failures = Vec::new();
    for c in cases {
        let run = run_on_host(&root, image, c);
        let verdict = if run.code != Some(c.exit) {
            Err(format!("exit code {:?}, want {}", run.code, c.exit))
        } else {
            (c.check)(&run.lines)
        };
        if let Err(why) = verdict {
            failures.push(format!("{}: {why}\n{}\n{}", c.name, run.what, run.lines.join("\n")));
        }
    }
    assert!(failures.is_empty(), "cases that fail on Linux:\n{}", failures.join("\n---\n"));
}

// ---- Running a case in a pod VM ----

fn guest_kernel() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| ok(pod::build_guest_kernel()))
}

fn run_in_pod(image: &Image, c: &Case) -> PodOutcome {
    let name = format!("programs-{}", c.name);
    let run = PodRun::new(image, &c.argv);
    let module = ok(pod::write_bundle(guest_kernel(), image, &run, &name));
    let host = Host::qemu(kernel());
    let _slot = emulator_slot();
    let cmdline = pod::kernel_cmdline(c.mem_mib, "");
    ok(pod::run(&host, &name, module, cmdline, "main", Some(QEMU_TIMEOUT), &mut |_, _, _| {}))
}

#[track_caller]
fn check_pod(o: &PodOutcome, good: bool, msg: &str) {
    o.run.check(good, &format!("{msg} (pod status: {})", o.status.describe()));
}

/// Runs `c` in a pod VM and judges it: no kernel fault, the exit code, the output check.
#[track_caller]
fn in_pod(image: &Image, c: &Case) -> PodOutcome {
    let o = run_in_pod(image, c);
    check_pod(&o, !o.run.timed_out, "the run timed out");
    check_pod(
        &o,
        !o.run.lines.iter().any(|l| l.text.contains("KERNEL FAULT") || l.text.contains("KERNEL PANIC")),
        "the guest kernel faulted",
    );
    check_pod(
        &o,
        o.status == PodStatus::Exited(c.exit),
        &format!("the container should exit with code {}", c.exit),
    );
    if let Err(why) = (c.check)(o.pod.lines("main")) {
        check_pod(&o, false, &format!("the output is wrong: {why}"));
    }
    o
}

/// A word for `sh -c`, single-quoted.
fn sh_quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', "'\\''"))
}

/// The lines of each case of a batch: what it printed between its `@@case NAME` and
/// `@@exit CODE` markers, and that code.
fn split_batch<'a>(lines: &'a [String], cases: &[Case]) -> Vec<Result<(i32, &'a [String]), String>> {
    cases
        .iter()
        .map(|c| {
            let start = lines
                .iter()
                .position(|l| *l == format!("@@case {}", c.name))
                .ok_or_else(|| format!("{}: never started", c.name))?;
            let rest = &lines[start + 1..];
            let end = rest
                .iter()
                .position(|l| l.starts_with("@@exit "))
                .ok_or_else(|| format!("{}: never ended", c.name))?;
            let code = rest[end]["@@exit ".len()..]
                .parse()
                .map_err(|_| format!("{}: bad exit line {:?}", c.name, rest[end]))?;
            Ok((code, &rest[..end]))
        })
        .collect()
}

/// Runs `cases` one after the other in ONE pod VM on `host` (a shell runs each between
/// markers, so one boot carries them all) and judges each as [`in_pod`] does: its exit
/// code and its output check on its own lines; the VM must not time out or fault.
#[track_caller]
fn in_pod_batch(host: &Host, image: &Image, name: &str, cases: &[Case], limit: Duration) -> PodOutcome {
    in_pod_batch_with(host, image, name, cases, limit, "")
}

/// [`in_pod_batch`] with `extra` on the hypervisor's command line.
fn in_pod_batch_with(
    host: &Host,
    image: &Image,
    name: &str,
    cases: &[Case],
    limit: Duration,
    extra: &str,
) -> PodOutcome {
    let mut script = String::new();
    for c in cases {
        let argv: Vec<String> = c.argv.iter().map(|w| sh_quote(w)).collect();
        script.push_str(&format!("echo '@@case {}'\n{}\necho \"@@exit $?\"\n", c.name, argv.join(" ")));
    }
    let argv = vec!["sh".to_string(), "-c".to_string(), script];
    let mem = cases.iter().filter_map(|c| c.mem_mib).max();
    let name = format!("programs-{name}");
    let run = PodRun::new(image, &argv);
    let module = ok(pod::write_bundle(guest_kernel(), image, &run, &name));
    let o = {
        let _slot = emulator_slot();
        ok(pod::run(
            host,
            &name,
            module,
            pod::kernel_cmdline(mem, extra),
            "main",
            Some(limit),
            &mut |_, _, _| {},
        ))
    };
    check_pod(&o, !o.run.timed_out, "the run timed out");
    check_pod(
        &o,
        !o.run.lines.iter().any(|l| l.text.contains("KERNEL FAULT") || l.text.contains("KERNEL PANIC")),
        "the guest kernel faulted",
    );
    let lines = o.pod.lines("main");
    let mut failures = Vec::new();
    for (c, got) in cases.iter().zip(split_batch(lines, cases)) {
        let verdict = got.and_then(|(code, l)| {
            if code != c.exit {
                return Err(format!("{}: exit code {code}, want {}", c.name, c.exit));
            }
            (c.check)(l).map_err(|why| format!("{}: {why}", c.name))
        });
        if let Err(why) = verdict {
            failures.push(why);
        }
    }
    check_pod(&o, failures.is_empty(), &format!("cases that fail in the pod: {}", failures.join("; ")));
    o
}

// ---- Host side: the programs and the images ----

#[test]
fn gotest_cases_pass_on_linux_in_the_test_image() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
    check_on_host(
        "testprogs-go",
        test_image(),
        &[go_goroutines(), go_timers(), go_gc(), go_numcpu(), go_panic(), go_httpserver(port)],
    );
}

#[test]
fn ctest_cases_pass_on_linux_in_the_test_image() {
    check_on_host("testprogs-c", test_image(), &c_cases(false));
}

#[test]
fn debian_cases_pass_on_linux_in_the_debian_image() {
    check_on_host("debian", debian_image(), &[debian_bash(), debian_coreutils(), debian_grep_sed_awk()]);
}

#[test]
fn musl_hello_passes_on_linux_in_its_image() {
    check_on_host("musl", musl_image(), &[musl_case()]);
}

/// Every entry of a layer: path -> (type, link target, mode, content).
type Entries = std::collections::BTreeMap<String, (tar::EntryType, Option<String>, u32, Vec<u8>)>;

fn entries(image: &Image, layer: usize) -> Entries {
    let l = image.with_plain_layers().unwrap_or_else(|e| panic!("{e}")).layers[layer].bytes.clone();
    let mut out = Entries::new();
    let mut ar = tar::Archive::new(&l[..]);
    for e in ar.entries().unwrap_or_else(|e| panic!("layer {layer}: {e}")) {
        let mut e = e.unwrap_or_else(|e| panic!("layer {layer}: {e}"));
        let path = e.path().map(|p| p.display().to_string()).unwrap_or_default();
        let link = e.link_name().ok().flatten().map(|p| p.display().to_string());
        let (kind, mode) = (e.header().entry_type(), e.header().mode().unwrap_or(0));
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        out.insert(path, (kind, link, mode, bytes));
    }
    out
}

#[test]
fn the_test_images_carry_the_programs_in_a_second_layer() {
    let image = test_image();
    assert_eq!(image.layers.len(), 2, "busybox's layer and the programs' layer");
    let base = entries(image, 0);
    assert!(base.contains_key("bin/busybox") && !base.contains_key("bin/gotest"), "layer 1 is busybox's");
    let top = entries(image, 1);
    for (path, program) in [("bin/gotest", gotest()), ("bin/ctest", ctest())] {
        let (kind, _, mode, bytes) = top.get(path).unwrap_or_else(|| panic!("layer 2 lacks {path}"));
        assert_eq!((*kind, *mode), (tar::EntryType::Regular, 0o755), "{path} is an executable file");
        assert!(*bytes == read(program), "{path} is the built program");
        assert!(bytes.starts_with(b"\x7fELF") && interpreter(bytes).is_none(), "{path} is a static ELF");
    }
    let musl = musl_image();
    assert_eq!(musl.layers.len(), 2);
    let top = entries(musl, 1);
    let program = &top.get("bin/musl-hello").expect("bin/musl-hello").3;
    assert_eq!(
        interpreter(program).as_deref(),
        Some(qemu::setup::MUSL_LOADER_PATH),
        "musl-hello's PT_INTERP"
    );
    let loader = top.get(qemu::setup::MUSL_LOADER_PATH.trim_start_matches('/')).expect("the musl loader");
    assert_eq!(loader.0, tar::EntryType::Regular);
}

/// The PT_INTERP of an ELF64 file, if it has one.
fn interpreter(elf: &[u8]) -> Option<String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if elf.get(ph..ph + 4)? == 3u32.to_le_bytes() {
            let (off, size) = (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize);
            let bytes = elf.get(off..off + size)?;
            return Some(String::from_utf8_lossy(bytes).trim_end_matches('\0').to_string());
        }
    }
    None
}

/// Resolves `path` in the merged tree `tree` as the guest's lookup must: every symlink on the
/// way followed, absolute ones from the image's root. The regular file's path, or why not.
fn resolve(tree: &Entries, path: &str) -> Result<String, String> {
    let mut todo: Vec<String> = path.split('/').filter(|p| !p.is_empty()).map(String::from).collect();
    let mut hops = 0;
    'walk: loop {
        let mut done: Vec<String> = Vec::new();
        for (i, part) in todo.iter().enumerate() {
            let mut next = done.clone();
            next.push(part.clone());
            let at = next.join("/");
            let Some((kind, link, _, _)) = tree.get(&at) else { return Err(format!("{at} is missing")) };
            if *kind == tar::EntryType::Symlink {
                hops += 1;
                let target = link.clone().ok_or_else(|| format!("{at} has no target"))?;
                if hops > 40 {
                    return Err(format!("{path}: a symlink loop"));
                }
                let mut parts = if target.starts_with('/') { Vec::new() } else { done.clone() };
                for p in target.split('/') {
                    match p {
                        "" | "." => {}
                        ".." => {
                            parts.pop();
                        }
                        p => parts.push(p.to_string()),
                    }
                }
                parts.extend(todo[i + 1..].iter().cloned());
                todo = parts;
                continue 'walk;
            }
            let last = i + 1 == todo.len();
            match (*kind, last) {
                (tar::EntryType::Regular, true) => return Ok(at),
                (tar::EntryType::Directory, false) => {}
                _ => return Err(format!("{at} is a {kind:?}")),
            }
            done = next;
        }
        return Err(format!("{path} is a directory"));
    }
}

#[test]
fn the_debian_image_is_two_layers_with_the_loader_and_the_libraries() {
    let (image, built) = debian();
    assert_eq!(image.layers.len(), 2, "libraries and programs");
    let manifest = layout_manifest(&debian_dir());
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2));
    for l in manifest["layers"].as_array().into_iter().flatten() {
        assert_eq!(l["mediaType"], oci::MEDIA_LAYER_TAR_GZIP);
    }
    assert_eq!(image.env(), [oci::DEFAULT_PATH]);
    assert_eq!(image.argv(&[]), ["bash"]);

    let (libs, progs) = (entries(image, 0), entries(image, 1));
    // The usr-merge links as the host has them, in the libraries' layer.
    for dir in ["bin", "sbin", "lib", "lib64"] {
        let host = std::fs::read_link(Path::new("/").join(dir)).ok().map(|t| t.display().to_string());
        if let Some(target) = host {
            let e = libs.get(dir).unwrap_or_else(|| panic!("layer 1 lacks the link {dir}"));
            assert_eq!(
                (e.0, e.1.as_deref()),
                (tar::EntryType::Symlink, Some(target.as_str())),
                "{dir} as on the host"
            );
        }
    }
    for (path, where_) in [("usr/bin/bash", &progs), ("usr/bin/gawk", &progs), ("etc/passwd", &progs)] {
        assert_eq!(where_.get(path).map(|e| e.0), Some(tar::EntryType::Regular), "layer 2 has {path}");
    }
    assert_eq!(progs.get("usr/bin/sh").and_then(|e| e.1.as_deref()), Some("bash"), "sh -> bash");
    assert!(!progs.keys().any(|p| p.contains(".so")), "no library in the programs' layer");
    assert!(!libs.keys().any(|p| p.starts_with("usr/bin/")), "no program in the libraries' layer");

    // The merged tree: every program's interpreter and every library ldd named resolve to
    // a regular file, and the loader is the host's.
    let mut merged = libs.clone();
    merged.extend(progs.clone());
    let bash = &progs["usr/bin/bash"].3;
    let interp = interpreter(bash).expect("bash is dynamically linked");
    assert_eq!(interp, "/lib64/ld-linux-x86-64.so.2");
    for program in rootfs::DEBIAN_PROGRAMS {
        let elf = &resolve(&merged, &format!("usr/bin/{program}"))
            .map(|p| merged[&p].3.clone())
            .unwrap_or_default();
        let want = interpreter(elf).unwrap_or_else(|| panic!("{program} has no PT_INTERP"));
        let loader =
            resolve(&merged, &want).unwrap_or_else(|e| panic!("{program}'s interpreter {want}: {e}"));
        assert_eq!(merged[&loader].3, read(Path::new(&want)), "{want} is the host's loader");
    }
    for lib in &built.layers.library_paths {
        let found =
            resolve(&merged, &lib.display().to_string()).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
        assert_eq!(merged[&found].3, read(lib), "{} is the host's", lib.display());
    }
    let libc = resolve(&merged, "/lib/x86_64-linux-gnu/libc.so.6").expect("libc.so.6");
    assert_eq!(libc, "usr/lib/x86_64-linux-gnu/libc.so.6");
}

fn layout_manifest(dir: &Path) -> serde_json::Value {
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let index = json(dir.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string();
    json(dir.join("blobs/sha256").join(digest))
}

#[test]
fn xtask_image_debian_writes_the_layout() {
    let out = images_dir().join("xtask-debian");
    let _ = std::fs::remove_dir_all(&out);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(qemu::image::repo_root())
        .args(["run", "--quiet", "--package", "qemu", "--bin", "xtask", "--", "image", "debian", "--out"])
        .arg(&out);
    let run = tests::run_program("xtask-image-debian", &mut cmd, Duration::from_secs(900));
    run.check(run.code() == Some(0), "`xtask image debian` should succeed");
    run.check(run.stdout.contains("2 layers"), "it says it wrote two layers");
    let image = Image::open(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers, debian_image().layers, "the verb and the tests build the same image");
}

// ---- In pod VMs, crx-guest: one VM per image carries every case of it ----

fn go_cases() -> Vec<Case> {
    vec![go_goroutines(), go_timers(), go_gc(), go_numcpu(), go_panic(), go_httpserver(8080)]
}

/// The C cases; `pod` adds what holds only in a pod VM (`hostile pod`).
fn c_cases(pod: bool) -> Vec<Case> {
    vec![
        c_mutex(),
        c_tls(),
        c_segv(),
        c_threadbomb(),
        c_futexfault(),
        c_spin(),
        c_spin2(),
        hostile(pod),
        events(),
        timers(),
        timers_spin_alarm(),
    ]
}

/// `hostile`: bad arguments to the thread, futex, wait and socket calls, each with
/// Linux's errno (tests/programs/c/hostile.c; the host run checks the expectations);
/// `hostile pod` adds the checks that hold only in a pod VM (no IPv6, no UDP).
fn hostile(pod: bool) -> Case {
    let argv: &[&str] = if pod { &["hostile", "pod"] } else { &["hostile"] };
    case("c-hostile", argv, 0, |l| {
        let c = find(l, r"^hostile: (\d+) checks, (\d+) failed$")?;
        expect(num::<u32>(&c[1])? >= 50 && &c[2] == "0", "every check holds")
    })
}

/// `events`: epoll, eventfd, timerfd, poll, select, socketpair and loopback TCP across
/// threads (tests/programs/c/events.c).
fn events() -> Case {
    case("c-events", &["events"], 0, |l| has(l, "events: ok"))
}

/// `timers`: rt_sigtimedwait across threads, setitimer/getitimer/alarm with SIGALRM into
/// pause() and sleeps, the CPU-time timers, and mremap's moves, growths, shrinks and errors
/// (tests/programs/c/timers.c).
/// `timers spin-alarm`: a process computing without syscalls still gets its SIGALRM.
fn timers_spin_alarm() -> Case {
    case("c-timers-spin-alarm", &["timers", "spin-alarm"], 142, |_| Ok(()))
}

fn timers() -> Case {
    case("c-timers", &["timers"], 0, |l| {
        let c = find(l, r"^timers: (\d+) checks, (\d+) failed$")?;
        expect(num::<u32>(&c[1])? >= 80 && &c[2] == "0", "every check holds")?;
        has(l, "timers: ok")
    })
}

#[test]
fn go_programs_in_a_pod() {
    let o = in_pod_batch(&Host::qemu(kernel()), test_image(), "go", &go_cases(), 3 * QEMU_TIMEOUT);
    // NumCPU is the pod VM's vCPUs, as crx-guest says at boot.
    let texts: Vec<String> = o.run.lines.iter().map(|l| l.text.clone()).collect();
    let vcpus =
        find(&texts, r"crx: pod \S+: \d+ container\(s\), (\d+) vCPU\(s\)").and_then(|c| num::<u32>(&c[1]));
    check_pod(&o, vcpus.is_ok(), &format!("crx-guest says how many vCPUs it has: {vcpus:?}"));
    let cpus = split_batch(o.pod.lines("main"), &[go_numcpu()]).remove(0).and_then(|(_, l)| numcpu(l));
    let want = vcpus.unwrap_or_default();
    check_pod(
        &o,
        cpus == Ok((want, want)),
        &format!("NumCPU and GOMAXPROCS are the pod VM's {want} vCPU(s): {cpus:?}"),
    );
}

#[test]
fn c_programs_with_threads_in_a_pod() {
    let o = in_pod_batch(&Host::qemu(kernel()), test_image(), "c", &c_cases(true), 3 * QEMU_TIMEOUT);
    check_pod(
        &o,
        o.run.lines_of(0).iter().any(|l| l.contains("(/bin/ctest) killed by signal 11")),
        "the console says the faulting thread's process was killed by signal 11",
    );
}

#[test]
fn debian_programs_in_a_pod() {
    in_pod_batch(
        &Host::qemu(kernel()),
        debian_image(),
        "debian",
        &[debian_bash(), debian_coreutils(), debian_grep_sed_awk()],
        3 * QEMU_TIMEOUT,
    );
}

#[test]
fn musl_hello_in_a_pod() {
    in_pod(musl_image(), &musl_case());
}

/// `ctest spin2` in a pod VM of `vcpus` vCPUs: each thread's CPU time as the guest counts
/// it, and the VM's guest time as the hypervisor accounts it (its `vm0: accounting` line),
/// in seconds.
fn spin2_in_pod(vcpus: u32) -> (Vec<f64>, f64) {
    // The clock read every million rounds: the threads spin in user mode, hardly ever in
    // the kernel (whose lock would have them wait, and sleep, in turn).
    let spin = case("c-spin2", &["ctest", "spin2", "2", "1000000"], 0, |_| Ok(()));
    let o = in_pod_batch_with(
        &Host::qemu(kernel()),
        test_image(),
        &format!("spin2-{vcpus}vcpu"),
        &[spin],
        2 * QEMU_TIMEOUT,
        &format!("vm.vcpus={vcpus}"),
    );
    let lines = o.pod.lines("main");
    let mut cpu = Vec::new();
    for i in 0..2 {
        let c = find(lines, &format!(r"^spin2: thread {i} cpu (\d+\.\d+) s, (\d+) rounds of 1000000$"));
        let c = c.and_then(|c| num::<f64>(&c[1]));
        check_pod(&o, c.is_ok(), &format!("thread {i}'s CPU time: {c:?}"));
        cpu.push(c.unwrap_or_default());
    }
    let texts: Vec<String> = o.run.lines.iter().map(|l| l.text.clone()).collect();
    let guest = find(&texts, r"vm0: accounting guest_ns=(\d+) ").and_then(|c| num::<u64>(&c[1]));
    check_pod(&o, guest.is_ok(), &format!("the VM's accounting line: {guest:?}"));
    (cpu, guest.unwrap_or_default() as f64 / 1e9)
}

/// Threads of one process run in parallel on a pod's vCPUs: two threads spinning for
/// SECONDS each get about a CPU of guest time with two vCPUs, and the second vCPU adds
/// about SECONDS to the VM's guest time (the hypervisor's accounting); with one vCPU (the
/// control) they share it.
#[test]
fn two_spinning_threads_get_a_cpu_each_in_a_two_vcpu_pod() {
    let s = SPIN2_SECONDS;
    let (cpu2, guest2) = spin2_in_pod(2);
    eprintln!("two vCPUs: threads' CPU {cpu2:?} s, the VM's guest time {guest2:.3} s");
    let (cpu1, guest1) = spin2_in_pod(1);
    eprintln!("one vCPU: threads' CPU {cpu1:?} s, the VM's guest time {guest1:.3} s");
    assert!(cpu2.iter().all(|&c| c >= 0.75 * s), "two vCPUs: each thread gets about {s} s of CPU: {cpu2:?}");
    assert!(cpu1.iter().all(|&c| c <= 0.65 * s), "one vCPU: the threads share it: {cpu1:?}");
    // Both runs boot the same way; the spin is where they differ.
    assert!(
        guest2 - guest1 >= 0.6 * s,
        "the second vCPU adds about {s} s of guest time: {guest2:.3} s against {guest1:.3} s"
    );
}

/// Under Bochs (Intel VT-x): Go, pthreads and a dynamic bash, in one VM (the combined
/// image holds the Debian layers and the test programs), to keep Bochs time low.
#[test]
fn go_pthreads_and_dynamic_bash_under_bochs() {
    // The third layer (Go's and ctest's 6 MiB) needs more of the guest's filesystem budget.
    let cases =
        [Case { mem_mib: Some(256), ..go_goroutines() }, go_panic(), c_mutex(), c_tls(), debian_bash()];
    in_pod_batch(&Host::bochs(kernel()), combined_image(), "bochs", &cases, 2 * tests::BOCHS_TIMEOUT);
}
