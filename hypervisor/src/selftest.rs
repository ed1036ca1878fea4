//! In-kernel self-tests: `selftest=all` or `selftest=name,name`.
//!
//! Each test prints `selftest: NAME ... ok` or `selftest: NAME ... FAILED: reason`; the run
//! closes with `selftest: N passed, M failed` and powers off with a status that says which.
//! `fault` and `overflow` are not part of `all`: they take a page fault on purpose (a wild
//! read; a runaway recursion into the stack's guard page) so the exception report can be
//! checked.
//!
//! This module holds the test types and the runner only, and imports none of the modules
//! under test; the table of every module's tests, in bring-up order, is in `kmain`.
#![forbid(unsafe_code)]

use crate::arch::power::{exit, ExitCode};
use crate::cmdline::Selftest;
use crate::kprintln;

/// A self-test's verdict: `Err` carries the reason.
pub type Verdict = Result<(), &'static str>;

/// One self-test.
pub struct Test {
    /// Its name on the command line.
    pub name: &'static str,
    /// Whether `selftest=all` runs it.
    pub in_all: bool,
    /// The test.
    pub run: fn() -> Verdict,
}

/// Runs the tests `sel` selects from `groups` (in order) and powers off.
pub fn run(groups: &[&[Test]], sel: Selftest<'_>) -> ! {
    let all_tests = || groups.iter().flat_map(|g| g.iter());
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut record = |name: &str, verdict: Verdict| match verdict {
        Ok(()) => {
            passed += 1;
            kprintln!("selftest: {name} ... ok");
        }
        Err(why) => {
            failed += 1;
            kprintln!("selftest: {name} ... FAILED: {why}");
        }
    };
    match sel {
        Selftest::All => {
            for t in all_tests().filter(|t| t.in_all) {
                kprintln!("selftest: {} ... running", t.name);
                record(t.name, (t.run)());
            }
        }
        Selftest::Names(names) => {
            for name in names.split(',') {
                match all_tests().find(|t| t.name == name) {
                    Some(t) => {
                        kprintln!("selftest: {} ... running", t.name);
                        record(t.name, (t.run)());
                    }
                    None => record(name, Err("no such self-test")),
                }
            }
        }
    }
    kprintln!("selftest: {passed} passed, {failed} failed");
    exit(if failed == 0 { ExitCode::Success } else { ExitCode::Failure })
}
