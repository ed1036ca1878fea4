//! Boot-time measurements: from the emulator's start to the kernel's first console line
//! (firmware and loading) and to the ready line (the kernel's bring-up on top of that).
//! Figures are printed, never judged.

use crate::console::{is_kernel_line, ready_regex};
use crate::machine::Machine;
use crate::Error;
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

#[cfg(test)]
mod tests {
    use super::*;

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
