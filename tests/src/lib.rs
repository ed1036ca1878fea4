//! Shared set-up for the emulator integration tests: the kernel and ISOs are built once per
//! test binary, and emulator runs take turns (the machine has two cores and Bochs alone
//! keeps one busy).

use qemu::image;
use qemu::{Error, Machine, Ready};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long a QEMU run may take.
pub const QEMU_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a Bochs run may take.
pub const BOCHS_TIMEOUT: Duration = Duration::from_secs(300);

/// Panics with the error's message, which carries the emulator's log where there is one.
#[track_caller]
pub fn ok<T>(result: Result<T, Error>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// The kernel, built on first use.
pub fn kernel() -> &'static Path {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(|| ok(image::build_kernel()))
}

/// A GRUB ISO whose grub.cfg passes `cmdline`, built on first use as
/// `target/test-iso/NAME.iso`.
pub fn iso(name: &str, cmdline: &str) -> PathBuf {
    static ISOS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let kernel = kernel();
    let mut isos = ISOS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    let key = format!("{name}\n{cmdline}");
    if let Some(path) = isos.get(&key) {
        return path.clone();
    }
    let path = image::target_dir().join("test-iso").join(format!("{name}.iso"));
    ok(image::build_iso(kernel, cmdline, &path));
    isos.insert(key, path.clone());
    path
}

/// Held while an emulator runs, so that runs in one test binary take turns.
pub fn emulator_slot() -> MutexGuard<'static, ()> {
    static SLOT: Mutex<()> = Mutex::new(());
    // A test that failed while holding the slot leaves nothing behind to repair.
    SLOT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for the ready line and parses it.
pub fn wait_ready(machine: &mut Machine, timeout: Duration) -> Ready {
    let line = ok(machine.wait_for_regex(qemu::console::ready_regex(), timeout));
    Ready::parse(&line.text)
        .unwrap_or_else(|| panic!("unparsable ready line {:?}\n{}", line.text, machine.log()))
}

/// The test guests' directory, built on first use.
pub fn guests_dir() -> &'static Path {
    static GUESTS: OnceLock<PathBuf> = OnceLock::new();
    GUESTS.get_or_init(|| ok(image::build_guests()))
}

/// Test guest `name` (see `guests/src/bin/`), with an empty command line.
pub fn guest(name: &str) -> qemu::vm::GuestImage {
    guests_dir();
    qemu::vm::GuestImage::new(image::guest_path(name))
}

/// Runs `spec` on `host` (taking the emulator slot), until every VM has ended and the node
/// is off, `timeout` runs out, or `stop` says so.
pub fn run_vms(
    name: &str,
    host: &qemu::vm::Host,
    spec: &qemu::vm::VmSpec,
    timeout: Duration,
    stop: &dyn Fn(&qemu::vm::Report) -> bool,
) -> qemu::vm::VmRun {
    let _slot = emulator_slot();
    ok(qemu::vm::run(host, name, spec, Some(timeout), stop, &mut |_, _| {}))
}
