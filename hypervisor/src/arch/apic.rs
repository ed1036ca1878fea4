//! The local APIC (x2APIC where present) and its calibrated timer.

use crate::selftest::Test;

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[];
