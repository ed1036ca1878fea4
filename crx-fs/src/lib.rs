//! The container filesystem of crx-guest: OCI image layers (tar and tar+gzip, with whiteouts
//! and opaque directories) applied into an in-memory tree whose layer file data is borrowed
//! zero-copy from the read-only layer bytes and copied on first write.
//!
//! - [`Fs`]: layers ([`Fs::apply_layer`]), path resolution ([`Fs::lookup`]), inode
//!   operations (`read`, `write`, `truncate`, `create`, `mkdir`, `unlink`, `rmdir`,
//!   `rename`, `symlink`, `readlink`, `link`, `readdir`, `chmod`...), a memory limit.
//! - [`OpenFile`] and [`Fs::open`]: open-file descriptions with offset and flags.
//! - [`linux`]: `struct stat`, `struct statx` and `linux_dirent64` encodings, `open` flags.
//! - [`Pipe`]: the 64 KiB pipe ring buffer.
//! - [`Errno`]: Linux error numbers.
//! - [`tar`] and [`gzip`]: the archive readers (usable on their own).
//!
//! The crate is pure (no I/O, no clock: time is passed in with [`Fs::set_time`]) and never
//! panics on layer bytes or on arguments from a process.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod errno;
mod file;
mod fs;
pub mod gzip;
pub mod linux;
mod pipe;
pub mod tar;

pub use errno::Errno;
pub use file::OpenFile;
pub use fs::{
    DirEntry, FileType, Fs, Ino, LayerError, LayerKind, LayerStats, DEFAULT_LIMIT_BYTES, INODE_COST_BYTES,
    MAX_SYMLINKS, NAME_MAX, PATH_MAX,
};
pub use linux::{Stat, Timespec};
pub use pipe::{Pipe, PIPE_BUF, PIPE_CAPACITY};
