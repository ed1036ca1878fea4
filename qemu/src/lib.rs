//! The runner: builds the kernel and its GRUB ISO, boots nodes under QEMU and Bochs, and
//! reads their consoles. `cargo xtask` is its command line; the `tests` crate uses it as a
//! library to boot nodes and judge what they print.

pub mod bench;
pub mod cluster;
pub mod cluster_run;
pub mod console;
pub mod cpubench;
pub mod emulator;
pub mod image;
pub mod machine;
pub mod modgraph;
pub mod node;
pub mod nodebench;
pub mod oci;
pub mod pod;
pub mod pullbench;
pub mod reaper;
pub mod registry;
pub mod rootfs;
pub mod setup;
pub mod testrun;
pub mod vm;

pub use console::{Ready, Summary, Verdict, Virt};
pub use emulator::{Accel, Bochs, Network, NicModel, Qemu};
pub use machine::{Kind, Line, Machine, Outcome};

use std::process::ExitStatus;
use std::time::Duration;

/// What can go wrong while building or running a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A program ran and failed.
    #[error("{what} failed with {status}")]
    Failed {
        /// The command.
        what: String,
        /// Its status.
        status: ExitStatus,
    },
    /// Something the machine lacks; the message says what to install.
    #[error("{0}")]
    Missing(String),
    /// A combination of options the runner cannot carry out; the message says why.
    #[error("{0}")]
    Usage(String),
    /// The run was told to stop (Ctrl-C or SIGTERM) and stopped what it had started.
    #[error("interrupted")]
    Interrupted,
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}\n{log}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        after: Duration,
        /// The output so far.
        log: String,
    },
    /// The emulator exited before printing what was awaited.
    #[error("the emulator exited ({status}) before {what}\n{log}")]
    Exited {
        /// What was awaited.
        what: String,
        /// Its status.
        status: ExitStatus,
        /// Everything it printed.
        log: String,
    },
    /// A helper program (the test registry, skopeo, htpasswd) failed or exited early.
    #[error("{what}\n{log}")]
    Helper {
        /// What failed, and how.
        what: String,
        /// The end of what it printed.
        log: String,
    },
}

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
}

/// QEMU's exit status when the kernel reports success through isa-debug-exit.
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel reports failure (a failed self-test, a panic).
pub const EXIT_FAILURE: i32 = 35;
