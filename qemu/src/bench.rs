//! Boot-time measurements: from the emulator's start to the kernel's first console line
//! (firmware and loading) and to the ready line (the kernel's bring-up on top of that).
//! Figures are printed, never judged.

use crate::console::{is_kernel_line, ready_regex};
use crate::machine::Machine;
use crate::vm::{Accounting, Report};
use crate::Error;
use regex::Regex;
use std::sync::LazyLock;
use std::time::Duration;

/// One boot's timings, from the emulator's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Until the kernel's first console line.
    pub first_line: Duration,
    /// Until the ready line.
    pub ready: Duration,
}

/// Boots `machine` until its ready line, then stops it.
pub fn measure(mut machine: Machine, timeout: Duration) -> Result<Sample, Error> {
    let first = machine.wait_for("the kernel's first console line", timeout, is_kernel_line)?;
    let ready = machine.wait_for_regex(ready_regex(), timeout.saturating_sub(first.at))?;
    machine.stop();
    Ok(Sample { first_line: first.at, ready: ready.at })
}

/// The smallest value.
pub fn min(values: &[Duration]) -> Option<Duration> {
    values.iter().copied().min()
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[Duration]) -> Option<Duration> {
    let mut v = values.to_vec();
    v.sort();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((*v.get(n / 2 - 1)? + *v.get(n / 2)?) / 2),
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64())).unwrap_or_else(|| "-".into())
}

/// The results table: one row per emulator, times in seconds.
pub fn table(rows: &[(&str, &[Sample])]) -> String {
    let mut out = format!(
        "{:<28} {:>4}  {:>17}  {:>17}  {:>13}  {:>11}\n",
        "emulator", "runs", "first line s", "ready s", "kernel s", "ready/first"
    );
    out.push_str(&format!(
        "{:<28} {:>4}  {:>17}  {:>17}  {:>13}  {:>11}\n",
        "", "", "min / median", "min / median", "median", "median"
    ));
    for (name, samples) in rows {
        let first: Vec<Duration> = samples.iter().map(|s| s.first_line).collect();
        let ready: Vec<Duration> = samples.iter().map(|s| s.ready).collect();
        let kernel: Vec<Duration> = samples.iter().map(|s| s.ready.saturating_sub(s.first_line)).collect();
        let ratio = match (median(&ready), median(&first)) {
            (Some(r), Some(f)) if !f.is_zero() => format!("{:.2}", r.as_secs_f64() / f.as_secs_f64()),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<28} {:>4}  {:>7} / {:>7}  {:>7} / {:>7}  {:>13}  {:>11}\n",
            name,
            samples.len(),
            secs(min(&first)),
            secs(median(&first)),
            secs(min(&ready)),
            secs(median(&ready)),
            secs(median(&kernel)),
            ratio
        ));
    }
    out
}

/// What one run of the `bench` guest (as VM 0) reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmSample {
    /// `bench: first_ns=N`: the monotonic clock at the guest's first instructions, i.e. the
    /// time from the VM's creation to its first instruction.
    pub first_ns: Option<u64>,
    /// `bench: hypercalls=N ns=T`.
    pub hypercalls: Option<(u64, u64)>,
    /// The kernel's `vm0: accounting ...` line.
    pub accounting: Option<Accounting>,
}

impl VmSample {
    /// Reads VM 0's lines.
    pub fn from_report(report: &Report) -> VmSample {
        static FIRST: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^bench: first_ns=(\d+)\s*$").expect("the first_ns pattern is valid")
        });
        static CALLS: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^bench: hypercalls=(\d+) ns=(\d+)\s*$").expect("the hypercalls pattern is valid")
        });
        let mut s = VmSample { accounting: report.figures(0), ..VmSample::default() };
        for line in report.lines(0) {
            if let Some(c) = FIRST.captures(line) {
                s.first_ns = c.get(1).and_then(|m| m.as_str().parse().ok());
            }
            if let Some(c) = CALLS.captures(line) {
                let n = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<u64>().ok());
                s.hypercalls = n(1).zip(n(2));
            }
        }
        s
    }

    /// Nanoseconds per hypercall round trip.
    pub fn hypercall_ns(&self) -> Option<u64> {
        self.hypercalls.and_then(|(n, ns)| ns.checked_div(n))
    }

    /// Exits per second of guest time.
    pub fn exits_per_s(&self) -> Option<u64> {
        let a = self.accounting?;
        u64::try_from(u128::from(a.exits) * 1_000_000_000 / u128::from(a.guest_ns).max(1)).ok()
    }
}

fn median_u64(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let mut v: Vec<u64> = values.flatten().collect();
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2),
    }
}

fn num(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The VM figures table, medians over each backend's samples. Rows marked `icount` ran under
/// QEMU's `-icount shift=0`, where one emulated instruction takes one virtual nanosecond, so
/// their nanoseconds are also instruction counts ("cycles").
pub fn vm_table(rows: &[(&str, &[VmSample], bool)]) -> String {
    let mut out = format!(
        "{:<28} {:>4}  {:>14}  {:>14}  {:>12}  {:>14}  {:>12}\n",
        "backend", "runs", "first insn ns", "hypercall ns", "exits/s", "overhead bytes", "cycles"
    );
    for (name, samples, icount) in rows {
        let first = median_u64(samples.iter().map(|s| s.first_ns));
        let call = median_u64(samples.iter().map(VmSample::hypercall_ns));
        let exits = median_u64(samples.iter().map(VmSample::exits_per_s));
        let overhead = median_u64(samples.iter().map(|s| s.accounting.map(|a| a.overhead_bytes)));
        let cycles = if *icount { format!("{} / {}", num(first), num(call)) } else { "-".into() };
        out.push_str(&format!(
            "{:<28} {:>4}  {:>14}  {:>14}  {:>12}  {:>14}  {:>12}\n",
            name,
            samples.len(),
            num(first),
            num(call),
            num(exits),
            num(overhead),
            cycles
        ));
    }
    out
}

/// One entry of a newc ("070701") cpio archive, the format the Linux kernel unpacks as its
/// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpioEntry<'a> {
    /// A directory.
    Dir {
        /// Its path, without a leading `/`.
        name: &'a str,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Its path, without a leading `/`.
        name: &'a str,
        /// Permission bits.
        mode: u32,
        /// Its contents.
        data: &'a [u8],
    },
    /// A character device node.
    CharDev {
        /// Its path, without a leading `/`.
        name: &'a str,
        /// Permission bits.
        mode: u32,
        /// The device's major number.
        major: u32,
        /// The device's minor number.
        minor: u32,
    },
}

/// Why an archive cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpioError {
    /// A newc header holds sizes in 32 bits.
    #[error("{name}: {len_bytes} bytes do not fit a newc header's 32-bit size")]
    TooLarge {
        /// The entry.
        name: String,
        /// Its size.
        len_bytes: usize,
    },
    /// Names are NUL-terminated in the archive.
    #[error("the name {0:?} is empty or holds a NUL byte")]
    BadName(String),
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;

/// Writes `entries` as a newc cpio archive with its `TRAILER!!!` entry. Inode numbers count
/// from 1; owners are root, times zero.
pub fn newc_archive(entries: &[CpioEntry]) -> Result<Vec<u8>, CpioError> {
    let mut out = Vec::new();
    let mut ino: u32 = 0;
    for e in entries {
        let (name, mode, data, rdev, nlink): (&str, u32, &[u8], (u32, u32), u32) = match *e {
            CpioEntry::Dir { name, mode } => (name, S_IFDIR | (mode & 0o7777), &[], (0, 0), 2),
            CpioEntry::File { name, mode, data } => (name, S_IFREG | (mode & 0o7777), data, (0, 0), 1),
            CpioEntry::CharDev { name, mode, major, minor } => {
                (name, S_IFCHR | (mode & 0o7777), &[], (major, minor), 1)
            }
        };
        ino = ino.saturating_add(1);
        newc_record(&mut out, name, [ino, mode, nlink], data, rdev)?;
    }
    newc_record(&mut out, "TRAILER!!!", [0, 0, 1], &[], (0, 0))?;
    Ok(out)
}

/// One header, name and data, each padded to four bytes. `[ino, mode, nlink]`.
fn newc_record(
    out: &mut Vec<u8>,
    name: &str,
    [ino, mode, nlink]: [u32; 3],
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> Result<(), CpioError> {
    if name.is_empty() || name.contains('\0') {
        return Err(CpioError::BadName(name.to_string()));
    }
    let too_large = |len_bytes: usize| CpioError::TooLarge { name: name.to_string(), len_bytes };
    let file_size = u32::try_from(data.len()).map_err(|_| too_large(data.len()))?;
    let name_size = u32::try_from(name.len() + 1).map_err(|_| too_large(name.len() + 1))?;
    // magic, then ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
    // rdevminor namesize check, each eight hex digits.
    let fields = [ino, mode, 0, 0, nlink, 0, file_size, 0, 0, rdev_major, rdev_minor, name_size, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The initramfs of the Linux baseline: one static binary at `bin/busybox`, with `dev/console`
/// so that init gets a console.
pub fn busybox_initramfs(busybox: &[u8]) -> Result<Vec<u8>, CpioError> {
    newc_archive(&[
        CpioEntry::Dir { name: "bin", mode: 0o755 },
        CpioEntry::Dir { name: "dev", mode: 0o755 },
        CpioEntry::CharDev { name: "dev/console", mode: 0o600, major: 5, minor: 1 },
        CpioEntry::File { name: "bin/busybox", mode: 0o755, data: busybox },
    ])
}

/// The QEMU of a Linux baseline run: Debian's kernel `vmlinuz` with `initrd`, one CPU,
/// 256 MiB and `-icount shift=0`, as the pod runs it is set against are measured.
pub fn linux_qemu(
    vmlinuz: &std::path::Path,
    initrd: std::path::PathBuf,
    cmdline: String,
) -> crate::emulator::Qemu {
    let mut node = crate::emulator::Qemu::new(vmlinuz);
    node.cpu = "qemu64".into();
    node.smp = 1;
    node.mem_mib = 256;
    node.initrd = Some(initrd);
    node.extra = vec!["-icount".into(), "shift=0".into()];
    node.cmdline = cmdline;
    node
}

/// The kernel command line of the Linux baseline: busybox runs as init (argv[0] is
/// `/bin/busybox`, so it does not pick its `init` applet) with the arguments after `--`,
/// which make it power the machine off at once.
pub const LINUX_CMDLINE: &str = "console=ttyS0 rdinit=/bin/busybox panic=-1 -- poweroff -f";

/// A console line's printk timestamp (`[    1.234567] text`) in nanoseconds, and the text
/// after it. `None` for lines without one.
pub fn printk_time(line: &str) -> Option<(u64, &str)> {
    static STAMP: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\[\s*(\d{1,10})\.(\d{1,9})\] ?(.*)$").expect("the printk pattern is valid")
    });
    let c = STAMP.captures(line)?;
    let secs: u64 = c.get(1)?.as_str().parse().ok()?;
    let frac = c.get(2)?.as_str();
    let digits = u32::try_from(frac.len()).ok()?;
    let frac_ns = frac.parse::<u64>().ok()?.checked_mul(10u64.pow(9 - digits))?;
    let ns = secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)?;
    Some((ns, c.get(3)?.as_str()))
}

/// What a Linux boot's console says about it. Under `-icount shift=0` the kernel's clock is
/// virtual time, one nanosecond per emulated instruction; printk's clock starts when the
/// kernel sets up its TSC clock, so firmware, the decompressor and the earliest setup are
/// not in these figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxBoot {
    /// From `Linux version X ...`.
    pub version: Option<String>,
    /// The program the kernel ran as init (`Run X as init process`).
    pub init: Option<String>,
    /// printk's clock at that line.
    pub to_init_ns: Option<u64>,
    /// printk's clock at `reboot: Power down`.
    pub to_power_off_ns: Option<u64>,
}

impl LinuxBoot {
    /// Reads the console lines of one boot.
    pub fn from_console<'a>(lines: impl IntoIterator<Item = &'a str>) -> LinuxBoot {
        static VERSION: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^Linux version (\S+)").expect("the version pattern is valid"));
        static INIT: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^Run (\S+) as init process").expect("the init pattern is valid"));
        let mut boot = LinuxBoot::default();
        for line in lines {
            let Some((ns, text)) = printk_time(line) else { continue };
            if let Some(c) = VERSION.captures(text) {
                boot.version = c.get(1).map(|m| m.as_str().to_string());
            } else if let Some(c) = INIT.captures(text) {
                boot.init = c.get(1).map(|m| m.as_str().to_string());
                boot.to_init_ns = Some(ns);
            } else if text.starts_with("reboot: Power down") {
                boot.to_power_off_ns = Some(ns);
            }
        }
        boot
    }
}

/// `numerator / denominator` with three decimals, or `-` when either is missing or the
/// denominator is zero.
pub fn ratio(numerator: Option<u64>, denominator: Option<u64>) -> String {
    ratio_places(numerator, denominator, 3)
}

/// `numerator / denominator` with `places` decimals, or `-` when either is missing or the
/// denominator is zero.
pub fn ratio_places(numerator: Option<u64>, denominator: Option<u64>, places: usize) -> String {
    match (numerator, denominator) {
        // Figures are instruction counts far below 2^53: the conversions are exact.
        (Some(n), Some(d)) if d != 0 => format!("{:.*}", places, n as f64 / d as f64),
        _ => "-".into(),
    }
}

/// How many times fewer `numerator` is than `denominator` (`83x fewer`), or `-`.
pub fn times_fewer(numerator: Option<u64>, denominator: Option<u64>) -> String {
    match (numerator, denominator) {
        // Instruction counts far below 2^53: the conversions are exact.
        (Some(n), Some(d)) if n != 0 => format!("{:.0}x fewer", d as f64 / n as f64),
        _ => "-".into(),
    }
}

/// The pod figures of one run: `busybox true` in a pod VM from a bundle whose layers are
/// plain tars (as a node holds a pulled image) and from one whose layers are gzip (as a
/// boot module's image bundle carries them), each VM's accounting line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodFigures {
    /// The bundle with tar layers.
    pub tar: Option<Accounting>,
    /// The bundle with gzip layers.
    pub gzip: Option<Accounting>,
}

/// The ratio the pod part aims at: the tar bundle's instructions from VM creation to the
/// container's first instruction over Linux's to init (50 times fewer).
pub const POD_FIRST_INSTRUCTION_GOAL: f64 = 0.02;

/// The lines that set the pod figures against Linux's instructions to init: for each
/// bundle, creation to the container's first instruction and to exit.
pub fn pod_vs_linux(pod: &PodFigures, linux_to_init_ns: Option<u64>) -> Vec<String> {
    let mut lines = Vec::new();
    for (layers, figures) in [("tar", pod.tar), ("gzip", pod.gzip)] {
        let first = figures.and_then(|a| a.first_container_ns);
        let exit = figures.map(|a| a.guest_ns);
        let goal = if layers == "tar" {
            format!("; goal: at most {POD_FIRST_INSTRUCTION_GOAL}")
        } else {
            String::new()
        };
        lines.push(format!(
            "crx-guest pod, {layers} layers, creation -> container's first instruction / linux to-init: {} ({}{goal})",
            ratio_places(first, linux_to_init_ns, 4),
            times_fewer(first, linux_to_init_ns)
        ));
        lines.push(format!(
            "crx-guest pod, {layers} layers, creation -> exit / linux to-init: {} ({})",
            ratio_places(exit, linux_to_init_ns, 4),
            times_fewer(exit, linux_to_init_ns)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_figures_are_set_against_linux() {
        let tar = Accounting {
            guest_ns: 9_000_000,
            exits: 50,
            overhead_bytes: 0,
            first_container_ns: Some(2_000_000),
        };
        let pod = PodFigures { tar: Some(tar), gzip: None };
        let lines = pod_vs_linux(&pod, Some(200_000_000));
        assert_eq!(
            lines,
            [
                "crx-guest pod, tar layers, creation -> container's first instruction / linux to-init: 0.0100 (100x fewer; goal: at most 0.02)",
                "crx-guest pod, tar layers, creation -> exit / linux to-init: 0.0450 (22x fewer)",
                "crx-guest pod, gzip layers, creation -> container's first instruction / linux to-init: - (-)",
                "crx-guest pod, gzip layers, creation -> exit / linux to-init: - (-)",
            ]
        );
        let no_linux = pod_vs_linux(&pod, None);
        assert!(no_linux[0].ends_with("to-init: - (-; goal: at most 0.02)"), "{no_linux:?}");
        assert_eq!(times_fewer(Some(0), Some(5)), "-");
    }

    #[test]
    fn vm_samples_come_from_vm0s_lines() {
        let r = Report::from_lines([
            "vm0> bench: first_ns=125000",
            "vm0> bench: hypercalls=10000 ns=20000000",
            "vm0: exited with code 0",
            "vm0: accounting guest_ns=500000000 exits=10050 overhead_bytes=24576",
            "vm1> bench: first_ns=1",
        ]);
        let s = VmSample::from_report(&r);
        assert_eq!(s.first_ns, Some(125_000));
        assert_eq!(s.hypercalls, Some((10_000, 20_000_000)));
        assert_eq!(s.hypercall_ns(), Some(2000));
        assert_eq!(s.exits_per_s(), Some(20_100));
        let t = vm_table(&[("qemu", &[s], true), ("bochs", &[VmSample::default()], false)]);
        let qemu = t.lines().nth(1).unwrap_or_default();
        assert!(qemu.starts_with("qemu"), "{t}");
        for figure in ["125000", "2000", "20100", "24576", "125000 / 2000"] {
            assert!(qemu.contains(figure), "{figure} missing in\n{t}");
        }
        let bochs = t.lines().nth(2).unwrap_or_default();
        assert!(bochs.split_whitespace().skip(2).all(|w| w == "-"), "{t}");
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[ms(30), ms(10), ms(20)]), Some(ms(20)));
        assert_eq!(median(&[ms(40), ms(10), ms(20), ms(30)]), Some(ms(25)));
        assert_eq!(median(&[]), None);
        assert_eq!(min(&[ms(40), ms(10)]), Some(ms(10)));
    }

    #[test]
    fn table_rows_carry_the_figures() {
        let samples = [
            Sample { first_line: ms(200), ready: ms(1000) },
            Sample { first_line: ms(300), ready: ms(1200) },
            Sample { first_line: ms(250), ready: ms(1100) },
        ];
        let t = table(&[("qemu", &samples)]);
        let row = t.lines().nth(2).unwrap_or_default();
        assert!(row.starts_with("qemu"), "{t}");
        assert!(row.contains("0.200 /   0.250"), "{t}");
        assert!(row.contains("1.000 /   1.100"), "{t}");
        assert!(row.contains("0.850"), "{t}");
        assert!(row.ends_with("4.40"), "{t}");
    }

    fn field(record: &[u8], i: usize) -> u32 {
        let start = 6 + 8 * i;
        let hex = std::str::from_utf8(&record[start..start + 8]).unwrap_or_default();
        u32::from_str_radix(hex, 16).unwrap_or(u32::MAX)
    }

    /// (name, mode, data, rdev) of one archive entry.
    type Walked = (String, u32, Vec<u8>, (u32, u32));

    /// Walks an archive as the kernel does, up to the trailer.
    fn walk(mut a: &[u8]) -> Vec<Walked> {
        let mut out = Vec::new();
        let total = a.len();
        loop {
            assert_eq!((total - a.len()) % 4, 0, "records start on four-byte boundaries");
            assert_eq!(&a[..6], b"070701");
            let size = field(a, 6) as usize;
            let name_size = field(a, 11) as usize;
            let name = std::str::from_utf8(&a[110..110 + name_size - 1]).unwrap_or_default().to_string();
            assert_eq!(a[110 + name_size - 1], 0, "names end in NUL");
            let data_at = (110 + name_size).next_multiple_of(4);
            let data = a[data_at..data_at + size].to_vec();
            if name == "TRAILER!!!" {
                assert_eq!(a.len(), data_at, "nothing after the trailer");
                return out;
            }
            out.push((name, field(a, 1), data, (field(a, 9), field(a, 10))));
            a = &a[(data_at + size).next_multiple_of(4)..];
        }
    }

    #[test]
    fn the_initramfs_holds_busybox_and_a_console() {
        let binary = b"\x7fELF-not-really-busybox";
        let a = busybox_initramfs(binary).unwrap_or_default();
        assert_eq!(a.len() % 4, 0);
        let entries = walk(&a);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin", "dev", "dev/console", "bin/busybox"]);
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!(entries[2].1, 0o020_600);
        assert_eq!(entries[2].3, (5, 1));
        assert_eq!(entries[3].1, 0o100_755);
        assert_eq!(entries[3].2, binary);
        // Inodes differ, so the kernel does not take files for hard links of each other.
        assert_ne!(field(&a, 0), 0);
    }

    #[test]
    fn every_name_and_data_length_pads_to_four() {
        for len in 0..9 {
            let name = "x".repeat(len + 1);
            let data = vec![0xaa; len];
            let a = newc_archive(&[CpioEntry::File { name: &name, mode: 0o644, data: &data }]);
            let entries = walk(&a.unwrap_or_default());
            assert_eq!(entries, [(name.clone(), 0o100_644, data, (0, 0))]);
        }
        assert_eq!(
            newc_archive(&[CpioEntry::Dir { name: "", mode: 0o755 }]),
            Err(CpioError::BadName(String::new()))
        );
        assert!(newc_archive(&[CpioEntry::Dir { name: "a\0b", mode: 0o755 }]).is_err());
    }

    #[test]
    fn printk_timestamps_become_nanoseconds() {
        assert_eq!(
            printk_time("[    1.234567] Run /init as init process"),
            Some((1_234_567_000, "Run /init as init process"))
        );
        assert_eq!(printk_time("[    0.000000] Linux version 6.1"), Some((0, "Linux version 6.1")));
        assert_eq!(printk_time("\r[12345.5] x"), Some((12_345_500_000_000, "x")));
        assert_eq!(printk_time("no stamp here"), None);
        assert_eq!(printk_time("[ 1.] x"), None);
    }

    #[test]
    fn a_linux_console_gives_version_init_and_power_off() {
        let console = [
            "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
            "[    0.000000] Linux version 6.1.0-40-amd64 (debian-kernel@lists.debian.org) (gcc)",
            "[    0.412345] Freeing unused kernel image (initmem) memory: 2920K",
            "[    0.523456] Run /bin/busybox as init process",
            "[    0.601000] reboot: Power down",
        ];
        let b = LinuxBoot::from_console(console);
        assert_eq!(b.version.as_deref(), Some("6.1.0-40-amd64"));
        assert_eq!(b.init.as_deref(), Some("/bin/busybox"));
        assert_eq!(b.to_init_ns, Some(523_456_000));
        assert_eq!(b.to_power_off_ns, Some(601_000_000));
        assert_eq!(LinuxBoot::from_console(["Run /init as init process"]), LinuxBoot::default());
        assert_eq!(ratio(b.to_init_ns, Some(261_728_000)), "2.000");
        assert_eq!(ratio(Some(1), Some(0)), "-");
        assert_eq!(ratio(None, Some(1)), "-");
    }
}
