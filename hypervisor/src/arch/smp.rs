//! Starting the application processors (INIT-SIPI-SIPI through a real-mode trampoline).

use crate::selftest::Test;

/// Self-tests of this module.
pub static SELFTESTS: &[Test] = &[];

/// Starts every other CPU the platform lists (at most `max_cpus` in all) and returns how
/// many CPUs are online, this one included.
pub fn start_aps(_platform: &crate::acpi::Platform, _max_cpus: Option<u32>) -> u32 {
    1
}
