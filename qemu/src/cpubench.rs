//! `bench --only cpu`: CPU-bound work in a pod VM against the same static program run as
//! the init of Debian's Linux kernel, both under the same QEMU with `-icount shift=0` (one
//! guest instruction per virtual nanosecond, so the figures do not depend on how busy the
//! machine is). The program (`bench/cpu-loop.c`, built with the host's `gcc -static`)
//! times N rounds of a xorshift generator with CLOCK_MONOTONIC and prints
//! `cpu-loop: N rounds in T ns (checksum C)`. The figure is Linux's time over the pod's:
//! how much of Linux's speed a container keeps in a pod VM (goal: at least 0.95).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bench::{self, CpioEntry};
use crate::machine::Machine;
use crate::oci::{self, RunConfig, TarEntry};
use crate::pod::{self, PodRun, PodStatus};
use crate::vm::Host;
use crate::{image, setup};

/// The program's source.
pub const SOURCE: &str = include_str!("bench/cpu-loop.c");
/// Rounds per run: about 0.1 s of guest time at the loop's ~8 instructions per round.
pub const ROUNDS: u64 = 12_000_000;

/// One run's report line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopRun {
    /// Rounds done.
    pub rounds: u64,
    /// Nanoseconds they took (CLOCK_MONOTONIC).
    pub ns: u64,
    /// The generator's checksum (the same everywhere for the same rounds).
    pub checksum: u64,
}

/// Reads `cpu-loop: N rounds in T ns (checksum C)` from a line (anything before it, such
/// as a console prefix, is skipped).
pub fn parse(line: &str) -> Option<LoopRun> {
    let rest = &line[line.find("cpu-loop: ")? + "cpu-loop: ".len()..];
    let mut w = rest.split_whitespace();
    let rounds = w.next()?.parse().ok()?;
    (w.next()? == "rounds" && w.next()? == "in").then_some(())?;
    let ns = w.next()?.parse().ok()?;
    (w.next()? == "ns" && w.next()? == "(checksum").then_some(())?;
    let checksum = w.next()?.trim_end_matches(')').parse().ok()?;
    Some(LoopRun { rounds, ns, checksum })
}

/// Builds the program with `gcc -static -O2` into the target directory.
pub fn build() -> Result<PathBuf, String> {
    setup::ensure(setup::STATIC_C).map_err(|e| e.to_string())?;
    let dir = image::target_dir().join("bench-cpu");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join("cpu-loop.c");
    let out = dir.join("cpu-loop");
    std::fs::write(&src, SOURCE).map_err(|e| format!("{}: {e}", src.display()))?;
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .map_err(|e| format!("gcc: {e}"))?;
    if !st.success() {
        return Err(format!("gcc -static could not build {} ({st})", src.display()));
    }
    Ok(out)
}

/// Runs the program in a pod VM of the hypervisor at `kernel`.
fn in_pod(kernel: &Path, program: &Path) -> Result<LoopRun, String> {
    let bytes = std::fs::read(program).map_err(|e| format!("{}: {e}", program.display()))?;
    let tar = oci::tar_entries(&[TarEntry::Dir("bin", 0o755), TarEntry::File("bin/cpu-loop", 0o755, &bytes)])
        .map_err(|e| e.to_string())?;
    let dir = image::target_dir().join("bench-cpu").join("image");
    let _ = std::fs::remove_dir_all(&dir);
    let run = RunConfig { entrypoint: Some(vec!["/bin/cpu-loop".into()]), ..Default::default() };
    oci::write_layout(&dir, &[tar], run).map_err(|e| e.to_string())?;
    let img = oci::Image::open(&dir).map_err(|e| e.to_string())?;
    let mut host = Host::qemu(kernel);
    host.qemu_extra = vec!["-icount".into(), "shift=0".into()];
    let args = vec!["/bin/cpu-loop".to_string(), ROUNDS.to_string()];
    let pr = PodRun::new(&img, &args);
    let module =
        pod::write_bundle(&pod::build_guest_kernel().map_err(|e| e.to_string())?, &img, &pr, "bench-cpu")
            .map_err(|e| e.to_string())?;
    let o = pod::run(
        &host,
        "bench-cpu",
        module,
        String::new(),
        "main",
        Some(Duration::from_secs(300)),
        &mut |_, _, _| {},
    )
    .map_err(|e| e.to_string())?;
    if o.status != PodStatus::Exited(0) {
        return Err(o.status.describe());
    }
    let lines = o.pod.lines("main");
    lines.iter().find_map(|l| parse(l)).ok_or_else(|| format!("no cpu-loop line in {lines:?}"))
}

/// Runs the program as the init of Debian's kernel under the same QEMU.
fn in_linux(program: &Path) -> Result<LoopRun, String> {
    let vmlinuz = setup::ensure_linux_kernel().map_err(|e| e.to_string())?;
    let bytes = std::fs::read(program).map_err(|e| format!("{}: {e}", program.display()))?;
    let archive = bench::newc_archive(&[
        CpioEntry::Dir { name: "dev", mode: 0o755 },
        CpioEntry::CharDev { name: "dev/console", mode: 0o600, major: 5, minor: 1 },
        CpioEntry::File { name: "cpu-loop", mode: 0o755, data: &bytes },
    ])
    .map_err(|e| e.to_string())?;
    let dir = image::target_dir().join("bench-cpu");
    let initrd = dir.join("initramfs.cpio");
    std::fs::write(&initrd, archive).map_err(|e| format!("{}: {e}", initrd.display()))?;
    let node = bench::linux_qemu(
        &vmlinuz,
        initrd,
        format!("console=ttyS0 quiet rdinit=/cpu-loop panic=-1 -- {ROUNDS} poweroff"),
    );
    let machine = Machine::qemu("bench-cpu-linux", &node).map_err(|e| e.to_string())?;
    let out = machine.wait_exit(Duration::from_secs(300)).map_err(|e| e.to_string())?;
    let found = out.console().into_iter().find_map(parse);
    found.ok_or_else(|| {
        format!(
            "no cpu-loop line ({})\n{}",
            out.status,
            crate::machine::format_log("bench-cpu-linux", &out.lines)
        )
    })
}

/// The figures of one run of this part, printed as they come.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuFigures {
    /// The pod VM's run.
    pub pod: Option<LoopRun>,
    /// Linux's run.
    pub linux: Option<LoopRun>,
}

/// Measures and prints the part.
pub fn run(kernel: &Path) -> CpuFigures {
    let mut f = CpuFigures::default();
    println!();
    println!("CPU-bound work (printed, not judged; goal: the pod keeps at least 0.95 of Linux's speed):");
    println!("  `cpu-loop {ROUNDS}` (static C, gcc -O2) under qemu tcg -icount shift=0, CLOCK_MONOTONIC:");
    let program = match build() {
        Ok(p) => p,
        Err(e) => {
            println!("  not measured: {e}");
            return f;
        }
    };
    match in_pod(kernel, &program) {
        Ok(r) => {
            println!("    in a crx-guest pod VM (svm)            {:>14} ns", r.ns);
            f.pod = Some(r);
        }
        Err(e) => println!("    in a crx-guest pod VM (svm)            not measured: {e}"),
    }
    match in_linux(&program) {
        Ok(r) => {
            println!("    as init of Debian's Linux kernel       {:>14} ns", r.ns);
            f.linux = Some(r);
        }
        Err(e) => println!("    as init of Debian's Linux kernel       not measured: {e}"),
    }
    if let (Some(p), Some(l)) = (f.pod, f.linux) {
        if p.checksum != l.checksum {
            println!(
                "    the checksums differ ({} in the pod, {} in Linux): the runs did not do the same work",
                p.checksum, l.checksum
            );
        }
    }
    println!(
        "    pod speed / linux speed (linux ns / pod ns): {} (goal: at least 0.95)",
        bench::ratio_places(f.linux.map(|r| r.ns), f.pod.map(|r| r.ns), 3)
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_line_is_read_with_or_without_a_prefix() {
        let want = LoopRun { rounds: 100, ns: 2500, checksum: 77 };
        assert_eq!(parse("cpu-loop: 100 rounds in 2500 ns (checksum 77)"), Some(want));
        assert_eq!(parse("[    1.2] cpu-loop: 100 rounds in 2500 ns (checksum 77)"), Some(want));
        assert_eq!(parse("cpu-loop: 100 rounds in x ns (checksum 77)"), None);
        assert_eq!(parse("cpu-loop: 100 laps in 2500 ns (checksum 77)"), None);
        assert_eq!(parse("something else"), None);
    }

    #[test]
    fn the_program_source_is_the_one_that_prints_that_line() {
        assert!(SOURCE.contains("cpu-loop: %lu rounds in %llu ns (checksum %llu)"));
    }
}
