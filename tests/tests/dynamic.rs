//! Dynamically linked programs in pod VMs: the host's glibc bash, coreutils and their
//! libraries in a root filesystem built here from the host (the files `ldd` names, copied
//! with the symbolic links on the way, so the usr-merged `/lib64 -> usr/lib64` and the
//! loader's absolute link resolve in the pod as on the host), run by crx-guest under QEMU
//! through ld.so. Small C programs built with the host's gcc check file mappings
//! (`tests/c/mapfile.c`), the sharing of a library's frames (`tests/c/meminfo.c`) and what
//! happens with a missing or unusable interpreter (`tests/c/hello.c`).

use qemu::oci::Image;
use qemu::pod::{self, PodOutcome, PodRun, PodStatus};
use qemu::vm::Host;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tests::{emulator_slot, gcc, gcc_static, kernel, ok, QEMU_TIMEOUT};

/// Host programs copied into the image with their libraries.
const PROGRAMS: &[&str] =
    &["/usr/bin/bash", "/usr/bin/ls", "/usr/bin/sort", "/usr/bin/head", "/usr/bin/sleep"];
/// The interpreter of the host's programs.
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
/// The interpreter `orphan` names, which the image does not have.
const MISSING_LOADER: &str = "/lib/ld-missing.so.2";
/// The interpreter `badld` names: an executable text file.
const TEXT_LOADER: &str = "/usr/lib/not-elf.so";

/// Copies the host's `path` into `root` at the same path; a symbolic link met on the way
/// (in any component) is copied as a link and followed, so that its target is there too.
fn copy_host_path(root: &Path, path: &Path, depth: u32) {
    assert!(depth < 40, "too many links resolving {}", path.display());
    let mut cur = PathBuf::from("/");
    let comps: Vec<_> = path.components().skip(1).collect();
    for (i, comp) in comps.iter().enumerate() {
        let host = cur.join(comp);
        let dst = root.join(host.strip_prefix("/").expect("absolute"));
        let meta = std::fs::symlink_metadata(&host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host).expect("readlink");
            if std::fs::symlink_metadata(&dst).is_err() {
                std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
                std::os::unix::fs::symlink(&target, &dst).expect("symlink");
            }
            let mut next = if target.is_absolute() { target } else { cur.join(target) };
            for rest in &comps[i + 1..] {
                next.push(rest);
            }
            return copy_host_path(root, &normalize(&next), depth + 1);
        }
        if i + 1 == comps.len() {
            if !dst.exists() {
                std::fs::copy(&host, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", host.display()));
            }
        } else {
            std::fs::create_dir_all(&dst).expect("mkdir");
        }
        cur = host;
    }
}

/// `path` without `.` and `..` components (lexically, as the links here need).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// The libraries and loader `ldd` lists for `program`.
fn ldd(program: &Path) -> Vec<PathBuf> {
    let out = std::process::Command::new("ldd").arg(program).output().expect("ldd runs");
    assert!(out.status.success(), "ldd {} failed", program.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `program` (a host path) and everything `ldd` lists for it into `root`.
fn install(root: &Path, program: &Path) {
    copy_host_path(root, program, 0);
    for lib in ldd(program) {
        copy_host_path(root, &lib, 0);
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The image's root directory, built once per test binary.
fn rootfs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = qemu::image::target_dir().join("test-dynamic").join("rootfs");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("root");
        // The usr-merge links as on the host (bookworm: /bin -> usr/bin, /lib64 -> usr/lib64).
        for top in ["/bin", "/lib", "/lib64", "/sbin"] {
            if let Ok(target) = std::fs::read_link(top) {
                std::os::unix::fs::symlink(target, root.join(&top[1..])).expect("usr-merge link");
            }
        }
        for p in PROGRAMS {
            install(&root, Path::new(p));
        }
        let bin = root.join("usr/bin");
        let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
        gcc(&c.join("mapfile.c"), &bin.join("mapfile"), &[]);
        gcc(&c.join("meminfo.c"), &bin.join("meminfo"), &[]);
        gcc_static(&c.join("meminfo.c"), &bin.join("meminfo-static"));
        gcc(&c.join("hello.c"), &bin.join("hello"), &[]);
        for (name, loader) in
            [("orphan", MISSING_LOADER), ("badld", TEXT_LOADER), ("nested", "/usr/bin/bash")]
        {
            gcc(&c.join("hello.c"), &bin.join(name), &[&format!("-Wl,--dynamic-linker={loader}")]);
        }
        let text = root.join(&TEXT_LOADER[1..]);
        std::fs::write(&text, b"this is not a loader\n").expect("not-elf.so");
        chmod(&text, 0o755);
        std::fs::create_dir_all(root.join("etc")).expect("etc");
        for (name, body) in [
            ("hostname", "pod\n"),
            ("passwd", "root:x:0:0:root:/root:/bin/bash\n"),
            ("group", "root:x:0:\n"),
            ("hosts", "127.0.0.1 localhost\n"),
            ("motd", "a dynamic pod\n"),
        ] {
            std::fs::write(root.join("etc").join(name), body).expect("etc file");
        }
        std::fs::create_dir_all(root.join("tmp")).expect("tmp");
        chmod(&root.join("tmp"), 0o1777);
        root
    })
}

fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| Image::open(rootfs()).unwrap_or_else(|e| panic!("{e}")))
}

/// crx-guest, built once per test binary.
fn guest_kernel() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| ok(pod::build_guest_kernel()))
}

/// Runs `argv` from the image in a pod VM under QEMU.
fn run(name: &str, argv: &[&str]) -> PodOutcome {
    let image = image();
    let args: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let run = PodRun::new(image, &args);
    let module = ok(pod::write_bundle(guest_kernel(), image, &run, name));
    let host = Host::qemu(kernel());
    let _slot = emulator_slot();
    ok(pod::run(
        &host,
        name,
        module,
        pod::kernel_cmdline(None, ""),
        "main",
        Some(QEMU_TIMEOUT),
        &mut |_, _, _| {},
    ))
}

#[track_caller]
fn check(o: &PodOutcome, good: bool, msg: &str) {
    o.run.check(good, &format!("{msg} (pod status: {})", o.status.describe()));
}

#[track_caller]
fn check_exit(o: &PodOutcome, code: i32) {
    check(o, !o.run.timed_out, "the run timed out");
    check(o, !o.run.lines.iter().any(|l| l.text.contains("KERNEL")), "the kernel faulted or panicked");
    check(o, o.status == PodStatus::Exited(code), &format!("the container should exit with code {code}"));
}

fn out(o: &PodOutcome) -> &[String] {
    o.pod.lines("main")
}

/// Checks that no syscall was unknown to the kernel (it logs each unknown one once).
#[track_caller]
fn check_no_unknown_syscall(o: &PodOutcome) {
    let unknown: Vec<&String> = o.run.lines_of(0).iter().filter(|l| l.contains("unknown syscall")).collect();
    check(o, unknown.is_empty(), &format!("every syscall is known, but: {unknown:?}"));
}

#[test]
fn a_dynamic_bash_pipeline_gives_the_first_three_names() {
    let o = run(
        "dyn-pipeline",
        &["/usr/bin/bash", "-c", r#"for f in /etc/*; do echo "$f"; done | sort | head -3"#],
    );
    check_exit(&o, 0);
    let mut names: Vec<String> = std::fs::read_dir(rootfs().join("etc"))
        .expect("etc")
        .map(|e| format!("/etc/{}", e.expect("entry").file_name().to_string_lossy()))
        .collect();
    names.sort();
    check(&o, out(&o) == &names[..3], &format!("the output should be {:?}", &names[..3]));
    check_no_unknown_syscall(&o);
}

#[test]
fn ls_la_lists_the_root() {
    let o = run("dyn-ls", &["ls", "-la", "/"]);
    check_exit(&o, 0);
    let lines = out(&o);
    check(&o, lines.first().is_some_and(|l| l.starts_with("total ")), "ls -l starts with its total");
    // Every entry of the image's root, the kernel's /dev and /proc, and . and ..
    let mut want: BTreeSet<String> = std::fs::read_dir(rootfs())
        .expect("root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    want.extend(["dev", "proc", ".", ".."].map(String::from));
    let got: BTreeSet<String> =
        lines.iter().skip(1).filter_map(|l| l.split_whitespace().nth(8).map(String::from)).collect();
    check(&o, got == want, &format!("the names should be {want:?}"));
    let lib64 = std::fs::read_link("/lib64").map(|t| t.to_string_lossy().into_owned());
    if let Ok(t) = lib64 {
        check(
            &o,
            lines.iter().any(|l| l.starts_with('l') && l.ends_with(&format!(" lib64 -> {t}"))),
            "the lib64 link shows its target",
        );
    }
    check(&o, lines.iter().any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp")), "tmp is 1777");
    check_no_unknown_syscall(&o);
}

#[test]
fn file_mappings_behave_as_ld_so_needs() {
    let o = run("dyn-mapfile", &["mapfile"]);
    check_exit(&o, 0);
    check(&o, out(&o).last().map(String::as_str) == Some("mapfile: all ok"), "every check holds");
    check(&o, !out(&o).iter().any(|l| l.contains("FAILED")), "no check failed");
}

/// A `meminfo:` line's figures: shared, cache and free KiB.
fn meminfo(line: &str) -> Option<[u64; 3]> {
    let rest = line.strip_prefix("meminfo: ")?;
    let mut v = rest.split(' ').map(|w| w.split_once('=').and_then(|(_, n)| n.parse().ok()));
    Some([v.next()??, v.next()??, v.next()??])
}

#[test]
fn two_processes_share_a_librarys_frames() {
    // bash maps libc; a static program beside it shares nothing with it, a dynamic one
    // shares libc's and ld.so's pages through the page cache.
    let o = run("dyn-shared", &["bash", "-c", "meminfo-static; meminfo; hello"]);
    check_exit(&o, 0);
    let lines = out(&o);
    let shared: Vec<u64> = lines.iter().filter_map(|l| meminfo(l)).map(|m| m[0]).collect();
    check(&o, shared.len() == 2, "two meminfo lines");
    check(&o, shared[0] == 0, "with bash alone no page-cache frame is mapped twice");
    check(
        &o,
        shared[1] >= 256,
        "bash and a dynamic program share at least 256 KiB of library frames (libc and ld.so pages)",
    );
    check(&o, lines.last().map(String::as_str) == Some("hello from hello"), "a gcc-built program runs");
}

#[test]
fn the_frames_of_ended_programs_come_back() {
    // Twenty runs of ls (whose libselinux and libpcre2 nothing else maps) between two
    // looks at the memory: what they mapped is given back, nothing piles up.
    let script = "meminfo-static; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do ls -la / >/dev/null; done; meminfo-static";
    let o = run("dyn-frames-back", &["bash", "-c", script]);
    check_exit(&o, 0);
    let m: Vec<[u64; 3]> = out(&o).iter().filter_map(|l| meminfo(l)).collect();
    check(&o, m.len() == 2, "two meminfo lines");
    let ([_, cache0, free0], [_, cache1, free1]) = (m[0], m[1]);
    check(
        &o,
        cache1 <= cache0 + 64,
        &format!("the page cache stays bounded ({cache0} KiB, then {cache1} KiB)"),
    );
    check(
        &o,
        free1 + 256 >= free0,
        &format!("free memory comes back ({free0} KiB, then {free1} KiB after 20 ls runs)"),
    );
}

#[test]
fn a_missing_interpreter_is_127_and_named() {
    let o = run("dyn-orphan", &["/usr/bin/orphan"]);
    check_exit(&o, 127);
    let want = format!("exec: /usr/bin/orphan: interpreter {MISSING_LOADER}: not found");
    check(&o, out(&o) == [want.as_str()], &format!("the reason should be {want:?}"));
    // From a shell: ENOENT from execve, which bash reports as a missing file, status 127.
    let o = run("dyn-orphan-sh", &["bash", "-c", "/usr/bin/orphan; echo status=$?"]);
    check_exit(&o, 0);
    check(&o, out(&o).last().map(String::as_str) == Some("status=127"), "the shell's status is 127");
    check(
        &o,
        out(&o).iter().any(|l| l.contains("/usr/bin/orphan") && l.contains("not found")),
        "bash says the file is not found",
    );
    let console = format!("execve /usr/bin/orphan: interpreter {MISSING_LOADER}: not found: ENOENT");
    check(
        &o,
        o.run.lines_of(0).iter().any(|l| l.contains(&console)),
        &format!("the console says {console:?}"),
    );
}

#[test]
fn an_unusable_interpreter_is_126() {
    let o = run("dyn-badld", &["/usr/bin/badld"]);
    check_exit(&o, 126);
    let want = format!("exec: /usr/bin/badld: bad interpreter {TEXT_LOADER}: not an ELF executable");
    check(&o, out(&o) == [want.as_str()], &format!("the reason should be {want:?}"));
    let o = run("dyn-nested", &["/usr/bin/nested"]);
    check_exit(&o, 126);
    let want =
        "exec: /usr/bin/nested: bad interpreter /usr/bin/bash: the interpreter is itself dynamically linked";
    check(&o, out(&o) == [want], &format!("the reason should be {want:?}"));
    // From a shell: ELIBBAD, status 126.
    let o = run("dyn-badld-sh", &["bash", "-c", "/usr/bin/badld; echo status=$?"]);
    check_exit(&o, 0);
    check(&o, out(&o).last().map(String::as_str) == Some("status=126"), "the shell's status is 126");
    check(
        &o,
        o.run.lines_of(0).iter().any(|l| l.contains("bad interpreter") && l.contains("ELIBBAD")),
        "the console names the bad interpreter and ELIBBAD",
    );
}

#[test]
fn the_loader_runs_a_program_named_on_its_command_line() {
    // ld.so as the program (a static-pie) loading `hello` itself, as `ld.so PROGRAM` does.
    let o = run("dyn-ldso", &[LOADER, "/usr/bin/hello"]);
    check_exit(&o, 0);
    check(&o, out(&o) == ["hello from /usr/bin/hello"], "ld.so runs the program it is given");
}
