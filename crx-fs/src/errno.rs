//! Linux error numbers (x86_64, `asm-generic/errno-base.h` and `errno.h`).
//!
//! Every fallible filesystem operation returns one of these; a system call handler hands
//! `-(errno as i64)` back to the process (see [`Errno::neg`]).

use core::fmt;

/// A Linux `errno` value. The discriminant is the number Linux uses on x86_64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such file or directory.
    ENOENT = 2,
    /// No such process.
    ESRCH = 3,
    /// Interrupted system call.
    EINTR = 4,
    /// No such device or address.
    ENXIO = 6,
    /// Argument list too long (or a structure larger than the kernel knows).
    E2BIG = 7,
    /// Exec format error.
    ENOEXEC = 8,
    /// Bad file descriptor.
    EBADF = 9,
    /// No child processes.
    ECHILD = 10,
    /// Try again (would block, or a resource limit such as the process limit).
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Bad address.
    EFAULT = 14,
    /// File exists.
    EEXIST = 17,
    /// No such device (e.g. a file that cannot be mapped this way).
    ENODEV = 19,
    /// Not a directory.
    ENOTDIR = 20,
    /// Is a directory.
    EISDIR = 21,
    /// Invalid argument.
    EINVAL = 22,
    /// Too many open files.
    EMFILE = 24,
    /// Not a terminal.
    ENOTTY = 25,
    /// No space left on device (the filesystem's memory limit is reached).
    ENOSPC = 28,
    /// Illegal seek (pipes).
    ESPIPE = 29,
    /// Broken pipe (write with no reader left).
    EPIPE = 32,
    /// Result out of range.
    ERANGE = 34,
    /// File name too long.
    ENAMETOOLONG = 36,
    /// Function not implemented.
    ENOSYS = 38,
    /// Directory not empty.
    ENOTEMPTY = 39,
    /// Too many levels of symbolic links.
    ELOOP = 40,
    /// No data available (an extended attribute that is not set).
    ENODATA = 61,
    /// Accessing a corrupted shared library (a bad ELF interpreter).
    ELIBBAD = 80,
    /// Socket operation on a descriptor that is not a socket.
    ENOTSOCK = 88,
    /// Protocol not available (an unknown socket option).
    ENOPROTOOPT = 92,
    /// Protocol not supported.
    EPROTONOSUPPORT = 93,
    /// Operation not supported on this socket.
    EOPNOTSUPP = 95,
    /// Address family not supported.
    EAFNOSUPPORT = 97,
    /// Address already in use.
    EADDRINUSE = 98,
    /// Cannot assign the requested address.
    EADDRNOTAVAIL = 99,
    /// Network is unreachable.
    ENETUNREACH = 101,
    /// Connection reset by peer.
    ECONNRESET = 104,
    /// The socket is already connected.
    EISCONN = 106,
    /// The socket is not connected.
    ENOTCONN = 107,
    /// Timed out.
    ETIMEDOUT = 110,
    /// Connection refused.
    ECONNREFUSED = 111,
    /// Operation now in progress.
    EINPROGRESS = 115,
}

impl Errno {
    /// The positive Linux number.
    pub const fn number(self) -> i32 {
        self as i32
    }

    /// The value a system call returns in `rax` for this error: `-errno`.
    pub const fn neg(self) -> i64 {
        -(self as i32 as i64)
    }

    /// The symbolic name, e.g. `"ENOENT"`.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::ESRCH => "ESRCH",
            Errno::EINTR => "EINTR",
            Errno::ENXIO => "ENXIO",
            Errno::E2BIG => "E2BIG",
            Errno::ENOEXEC => "ENOEXEC",
            Errno::EBADF => "EBADF",
            Errno::ECHILD => "ECHILD",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EACCES => "EACCES",
            Errno::EFAULT => "EFAULT",
            Errno::EEXIST => "EEXIST",
            Errno::ENODEV => "ENODEV",
            Errno::ENOTDIR => "ENOTDIR",
            Errno::EISDIR => "EISDIR",
            Errno::EINVAL => "EINVAL",
            Errno::EMFILE => "EMFILE",
            Errno::ENOTTY => "ENOTTY",
            Errno::ENOSPC => "ENOSPC",
            Errno::ESPIPE => "ESPIPE",
            Errno::EPIPE => "EPIPE",
            Errno::ERANGE => "ERANGE",
            Errno::ENAMETOOLONG => "ENAMETOOLONG",
            Errno::ENOSYS => "ENOSYS",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::ELOOP => "ELOOP",
            Errno::ENODATA => "ENODATA",
            Errno::ELIBBAD => "ELIBBAD",
            Errno::ENOTSOCK => "ENOTSOCK",
            Errno::ENOPROTOOPT => "ENOPROTOOPT",
            Errno::EPROTONOSUPPORT => "EPROTONOSUPPORT",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
            Errno::EAFNOSUPPORT => "EAFNOSUPPORT",
            Errno::EADDRINUSE => "EADDRINUSE",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            Errno::ENETUNREACH => "ENETUNREACH",
            Errno::ECONNRESET => "ECONNRESET",
            Errno::EISCONN => "EISCONN",
            Errno::ENOTCONN => "ENOTCONN",
            Errno::ETIMEDOUT => "ETIMEDOUT",
            Errno::ECONNREFUSED => "ECONNREFUSED",
            Errno::EINPROGRESS => "EINPROGRESS",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_linux_x86_64() {
        assert_eq!(Errno::ENOENT.number(), 2);
        assert_eq!(Errno::ENOTEMPTY.number(), 39);
        assert_eq!(Errno::ELIBBAD.number(), 80);
        assert_eq!(Errno::ENODEV.number(), 19);
        assert_eq!(Errno::EOPNOTSUPP.number(), 95);
        assert_eq!(Errno::ELOOP.neg(), -40);
        assert_eq!(Errno::ENAMETOOLONG.name(), "ENAMETOOLONG");
    }
}
