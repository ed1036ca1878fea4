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

#[cfg(test)]
mod tests {
    use super::*;

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
}
