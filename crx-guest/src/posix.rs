//! Small pieces of the Linux process ABI: errno values, wait statuses, signals and their
//! default actions, and the shell's PATH search.

use alloc::string::String;
use alloc::vec::Vec;

/// Linux errno values used by the kernel.
#[allow(missing_docs)]
pub mod errno {
    pub const EPERM: i64 = 1;
    pub const ENOENT: i64 = 2;
    pub const ESRCH: i64 = 3;
    pub const EINTR: i64 = 4;
    pub const EIO: i64 = 5;
    pub const E2BIG: i64 = 7;
    pub const ENOEXEC: i64 = 8;
    pub const EBADF: i64 = 9;
    pub const ECHILD: i64 = 10;
    pub const EAGAIN: i64 = 11;
    pub const ENOMEM: i64 = 12;
    pub const EACCES: i64 = 13;
    pub const EFAULT: i64 = 14;
    pub const EEXIST: i64 = 17;
    pub const ENOTDIR: i64 = 20;
    pub const EISDIR: i64 = 21;
    pub const EINVAL: i64 = 22;
    pub const EMFILE: i64 = 24;
    pub const ENOTTY: i64 = 25;
    pub const ESPIPE: i64 = 29;
    pub const EPIPE: i64 = 32;
    pub const ERANGE: i64 = 34;
    pub const ENOSYS: i64 = 38;
    pub const ENAMETOOLONG: i64 = 36;
}

/// Whether `v` may become a process's FS base (its TLS pointer), by `arch_prctl(ARCH_SET_FS)`
/// or `clone(CLONE_SETTLS)`: only addresses below the top of user space (Linux's
/// `TASK_SIZE_MAX`; it refuses others with `EPERM`). Anything else could be non-canonical,
/// which the FS-base write cannot take.
pub fn fs_base_allowed(v: u64) -> bool {
    v < crate::elf::USER_END
}

/// Signal numbers.
#[allow(missing_docs)]
pub mod sig {
    pub const SIGHUP: u32 = 1;
    pub const SIGINT: u32 = 2;
    pub const SIGQUIT: u32 = 3;
    pub const SIGILL: u32 = 4;
    pub const SIGTRAP: u32 = 5;
    pub const SIGABRT: u32 = 6;
    pub const SIGBUS: u32 = 7;
    pub const SIGFPE: u32 = 8;
    pub const SIGKILL: u32 = 9;
    pub const SIGSEGV: u32 = 11;
    pub const SIGPIPE: u32 = 13;
    pub const SIGALRM: u32 = 14;
    pub const SIGTERM: u32 = 15;
    pub const SIGCHLD: u32 = 17;
    pub const SIGCONT: u32 = 18;
    pub const SIGSTOP: u32 = 19;
    pub const SIGTSTP: u32 = 20;
    pub const SIGTTIN: u32 = 21;
    pub const SIGTTOU: u32 = 22;
    pub const SIGURG: u32 = 23;
    pub const SIGVTALRM: u32 = 26;
    pub const SIGPROF: u32 = 27;
    pub const SIGWINCH: u32 = 28;
    pub const SIGSYS: u32 = 31;
    /// Highest signal number.
    pub const MAX: u32 = 64;
}

/// What a signal does when its disposition is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    /// Ends the process.
    Terminate,
    /// Nothing happens.
    Ignore,
}

/// The default action of signal `n` (stop and continue are treated as ignore: there is
/// no job control).
pub fn default_action(n: u32) -> DefaultAction {
    match n {
        sig::SIGCHLD
        | sig::SIGURG
        | sig::SIGWINCH
        | sig::SIGCONT
        | sig::SIGSTOP
        | sig::SIGTSTP
        | sig::SIGTTIN
        | sig::SIGTTOU => DefaultAction::Ignore,
        _ => DefaultAction::Terminate,
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `exit(code)`.
    Code(u8),
    /// Killed by signal `n`.
    Signal(u32),
}

impl Exit {
    /// The `wait4` status word.
    pub fn wait_status(self) -> u32 {
        match self {
            Exit::Code(c) => u32::from(c) << 8,
            Exit::Signal(n) => n & 0x7f,
        }
    }

    /// The container exit code a shell would report: the code, or 128 + N.
    pub fn container_code(self) -> i32 {
        match self {
            Exit::Code(c) => i32::from(c),
            Exit::Signal(n) => 128 + n as i32,
        }
    }
}

/// The value of `NAME` in `KEY=value` strings.
pub fn env_get<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter().find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// The candidate paths for running `cmd`: itself when it contains `/`, else each PATH
/// directory joined with it (an empty PATH entry means the working directory).
pub fn path_candidates(cmd: &str, path: Option<&str>) -> Vec<String> {
    if cmd.contains('/') {
        return alloc::vec![String::from(cmd)];
    }
    let path = path.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|d| {
            if d.is_empty() {
                alloc::format!("./{cmd}")
            } else {
                alloc::format!("{}/{cmd}", d.trim_end_matches('/'))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_match_linux_macros() {
        // WIFEXITED: (s & 0x7f) == 0, WEXITSTATUS: (s >> 8) & 0xff; WTERMSIG: s & 0x7f.
        let s = Exit::Code(3).wait_status();
        assert_eq!((s & 0x7f, (s >> 8) & 0xff), (0, 3));
        let s = Exit::Signal(sig::SIGSEGV).wait_status();
        assert_eq!(s & 0x7f, 11);
        assert_eq!(Exit::Signal(sig::SIGKILL).container_code(), 137);
        assert_eq!(Exit::Signal(sig::SIGSEGV).container_code(), 139);
        assert_eq!(Exit::Code(1).container_code(), 1);
    }

    #[test]
    fn fs_base_must_be_a_user_address() {
        assert!(fs_base_allowed(0));
        assert!(fs_base_allowed(crate::elf::USER_END - 1));
        assert!(!fs_base_allowed(crate::elf::USER_END));
        assert!(!fs_base_allowed(0x8000_0000_0000_0000)); // non-canonical
        assert!(!fs_base_allowed(0xffff_8000_0000_0000)); // canonical, kernel half
    }

    #[test]
    fn default_actions() {
        assert_eq!(default_action(sig::SIGTERM), DefaultAction::Terminate);
        assert_eq!(default_action(sig::SIGCHLD), DefaultAction::Ignore);
        assert_eq!(default_action(sig::SIGPIPE), DefaultAction::Terminate);
    }

    #[test]
    fn path_search_order() {
        let env = [String::from("HOME=/"), String::from("PATH=/usr/bin:/bin/")];
        let p = env_get(&env, "PATH");
        assert_eq!(p, Some("/usr/bin:/bin/"));
        assert_eq!(path_candidates("ls", p), ["/usr/bin/ls", "/bin/ls"]);
        assert_eq!(path_candidates("./x", p), ["./x"]);
        assert_eq!(path_candidates("ls", Some("::/bin")), ["./ls", "./ls", "/bin/ls"]);
        assert_eq!(env_get(&env, "PAT"), None);
        assert_eq!(path_candidates("sh", None).last().map(String::as_str), Some("/bin/sh"));
    }
}
