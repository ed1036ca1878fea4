//! The IDT, exception entry stubs and the exception report.

use crate::selftest::Test;

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[];

/// Builds the IDT and loads it on this CPU.
pub fn init() {}
