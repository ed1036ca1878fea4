//! `cargo xtask <verb>`: build, boot, test and benchmark the hypervisor.

use clap::{Parser, Subcommand};
use qemu::bench::{self, Sample};
use qemu::emulator::{Accel, Bochs, BochsFiles, Qemu};
use qemu::image::{self, iso_path, repo_root, target_dir};
use qemu::machine::{Kind, Machine};
use qemu::setup::{self, Need};
use qemu::{Error, EXIT_FAILURE, EXIT_SUCCESS};
use std::process::{Command, ExitCode, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot, test and benchmark the hypervisor")]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Build the kernel and the GRUB ISO (target/hypervisor.iso, the bare-metal install image).
    Build {
        /// The kernel command line written into the ISO's grub.cfg.
        #[arg(long, default_value = "")]
        cmdline: String,
    },
    /// Build, then boot a node and show its console (QEMU: quit with Ctrl-A X).
    Run {
        /// Boot the ISO under Bochs (Intel VMX) instead of QEMU (AMD SVM under TCG).
        #[arg(long)]
        bochs: bool,
        /// CPUs [default: 4 under QEMU, 2 under Bochs].
        #[arg(long)]
        smp: Option<u32>,
        /// Memory in MiB.
        #[arg(long, default_value_t = 512)]
        mem: u32,
        /// The kernel command line, e.g. "log=debug selftest=all".
        #[arg(long, default_value = "")]
        cmdline: String,
        /// QEMU's accelerator: `kvm` runs `-accel kvm -cpu host`, for machines with nested
        /// virtualization.
        #[arg(long, value_enum, default_value_t = Accel::Tcg)]
        accel: Accel,
        /// Stop the emulator after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Install what is missing, then run `cargo test --workspace --no-fail-fast` (host unit
    /// tests and the emulator integration tests); extra arguments go to cargo test.
    Test {
        /// Arguments for `cargo test`, e.g. `-- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure boot-to-ready time under QEMU (PVH, 4 CPUs) and Bochs (ISO, 2 CPUs).
    Bench {
        /// Boots under QEMU.
        #[arg(long, default_value_t = 5)]
        qemu_runs: usize,
        /// Boots under Bochs.
        #[arg(long, default_value_t = 3)]
        bochs_runs: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.verb {
        Verb::Build { cmdline } => build(&cmdline),
        Verb::Run { bochs, smp, mem, cmdline, accel, timeout } => {
            run(bochs, smp, mem, &cmdline, accel, timeout.map(Duration::from_secs))
        }
        Verb::Test { args } => test(&args),
        Verb::Bench { qemu_runs, bochs_runs } => bench(qemu_runs, bochs_runs),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn needs(lists: &[&[Need]]) -> Vec<Need> {
    lists.iter().flat_map(|l| l.iter().copied()).collect()
}

fn build(cmdline: &str) -> Result<ExitCode, Error> {
    setup::ensure(setup::ISO)?;
    let kernel = image::build_kernel()?;
    image::build_iso(&kernel, cmdline, &iso_path())?;
    println!("kernel: {}", kernel.display());
    println!("ISO:    {}  (write it to a USB stick with dd; see README.md)", iso_path().display());
    Ok(ExitCode::SUCCESS)
}

fn run(
    bochs: bool,
    smp: Option<u32>,
    mem: u32,
    cmdline: &str,
    accel: Accel,
    timeout: Option<Duration>,
) -> Result<ExitCode, Error> {
    if bochs {
        setup::ensure(&needs(&[setup::ISO, setup::BOCHS]))?;
        let kernel = image::build_kernel()?;
        image::build_iso(&kernel, cmdline, &iso_path())?;
        let node = Bochs { cpus: smp.unwrap_or(2), mem_mib: mem, ..Bochs::new(iso_path()) };
        let files = BochsFiles::new("run");
        let cmd = node.command(&files)?;
        eprintln!(
            "run: Bochs from {} (config {}); stop it with Ctrl-C",
            iso_path().display(),
            files.rc.display()
        );
        let status = interactive(cmd, timeout)?;
        Ok(verdict(Kind::Bochs, status))
    } else {
        setup::ensure(setup::QEMU)?;
        let kernel = image::build_kernel()?;
        let node =
            Qemu { cmdline: cmdline.into(), smp: smp.unwrap_or(4), mem_mib: mem, accel, ..Qemu::new(kernel) };
        let cmd = node.command();
        eprintln!("run: {cmd:?}");
        eprintln!("run: the console follows; quit with Ctrl-A X");
        let status = interactive(cmd, timeout)?;
        Ok(verdict(Kind::Qemu, status))
    }
}

/// Runs `cmd` on this terminal; after `timeout` asks it to stop, then kills it.
fn interactive(mut cmd: Command, timeout: Option<Duration>) -> Result<Option<ExitStatus>, Error> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {cmd:?}"), e))?;
    let started = Instant::now();
    let pid = i32::try_from(child.id()).ok().map(Pid::from_raw);
    let mut asked_at: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| Error::io("waiting for the emulator", e))? {
            if asked_at.is_some() {
                eprintln!("\r\nrun: stopped after {:?} (--timeout)\r", started.elapsed());
                return Ok(None);
            }
            return Ok(Some(status));
        }
        match (timeout, asked_at) {
            (Some(limit), None) if started.elapsed() >= limit => {
                // SIGTERM lets QEMU and script restore the terminal's settings.
                if let Some(pid) = pid {
                    let _ = kill(pid, Signal::SIGTERM);
                }
                asked_at = Some(Instant::now());
            }
            (_, Some(at)) if at.elapsed() >= Duration::from_secs(5) => {
                let _ = child.kill();
            }
            _ => {}
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Says how the run ended and turns it into this program's exit code.
fn verdict(kind: Kind, status: Option<ExitStatus>) -> ExitCode {
    let Some(status) = status else { return ExitCode::SUCCESS };
    match (kind, status.code()) {
        (Kind::Qemu, Some(EXIT_SUCCESS)) => {
            eprintln!("run: the kernel reported success (QEMU exit status {EXIT_SUCCESS})");
            ExitCode::SUCCESS
        }
        (Kind::Qemu, Some(EXIT_FAILURE)) => {
            eprintln!("run: the kernel reported failure (QEMU exit status {EXIT_FAILURE})");
            ExitCode::FAILURE
        }
        (_, Some(0)) => ExitCode::SUCCESS,
        // Bochs exits with 1 when the kernel powers it off; its console says how it went.
        (Kind::Bochs, Some(1)) => ExitCode::SUCCESS,
        _ => {
            eprintln!("run: the emulator exited with {status}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: &[String]) -> Result<ExitCode, Error> {
    setup::ensure(&needs(&[setup::ISO, setup::QEMU, setup::BOCHS]))?;
    setup::ensure_kernel_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["test", "--workspace", "--no-fail-fast"]).args(args);
    eprintln!("test: {cmd:?}");
    let status = cmd.status().map_err(|e| Error::io("running cargo test", e))?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn bench(qemu_runs: usize, bochs_runs: usize) -> Result<ExitCode, Error> {
    setup::ensure(&needs(&[setup::ISO, setup::QEMU, setup::BOCHS]))?;
    let kernel = image::build_kernel()?;
    let iso = target_dir().join("bench.iso");
    image::build_iso(&kernel, "", &iso)?;

    let mut qemu_samples: Vec<Sample> = Vec::new();
    for i in 0..qemu_runs {
        let machine = Machine::qemu(&format!("bench-qemu-{i}"), &Qemu::new(&kernel))?;
        let s = bench::measure(machine, Duration::from_secs(120))?;
        eprintln!("bench: qemu run {}: first line {:?}, ready {:?}", i + 1, s.first_line, s.ready);
        qemu_samples.push(s);
    }
    let mut bochs_samples: Vec<Sample> = Vec::new();
    for i in 0..bochs_runs {
        let machine = Machine::bochs(&format!("bench-bochs-{i}"), &Bochs::new(&iso))?;
        let s = bench::measure(machine, Duration::from_secs(300))?;
        eprintln!("bench: bochs run {}: first line {:?}, ready {:?}", i + 1, s.first_line, s.ready);
        bochs_samples.push(s);
    }
    println!();
    println!("Boot times in seconds from the emulator's start: to the kernel's first console line");
    println!("(firmware and loading), and to the ready line. Measured on this machine, not judged.");
    println!();
    print!(
        "{}",
        bench::table(&[
            ("qemu tcg, pvh, 4 cpus", &qemu_samples),
            ("bochs skylake-x, iso, 2 cpus", &bochs_samples),
        ])
    );
    Ok(ExitCode::SUCCESS)
}
