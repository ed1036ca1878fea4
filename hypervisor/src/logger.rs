//! The `log` backend: `[seconds.micros] LEVEL cpuN target: message` on the console.

use crate::cmdline::LogLevel;
use log::{LevelFilter, Log, Metadata, Record};

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Crates' own information (e.g. virtio-drivers' feature negotiation) is detail:
        // shown at `log=debug`.
        let level = match metadata.level() {
            log::Level::Info if !metadata.target().starts_with("hypervisor") => log::Level::Debug,
            l => l,
        };
        level <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ns = crate::arch::time::now_ns();
        crate::arch::console::write_fmt(format_args!(
            "[{:>5}.{:06}] {:<5} cpu{} {}: {}\n",
            ns / 1_000_000_000,
            (ns / 1_000) % 1_000_000,
            record.level(),
            crate::arch::percpu::cpu_index(),
            record.target().trim_start_matches("hypervisor::"),
            record.args()
        ));
    }

    fn flush(&self) {}
}

/// Maps a command-line level to a `log` filter.
pub fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}

/// Installs the logger at `level`.
pub fn init(level: LogLevel) {
    // A second call keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(filter(level));
}
