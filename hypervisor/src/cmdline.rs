//! The kernel command line: space-separated `key=value` words.
//!
//! Contract: parsing never fails and never panics. A word with an unknown key, or a known
//! key with a bad value, becomes a [`Warning`] that the kernel logs; the option keeps its
//! default. A leading word that starts with `/` (the image path some loaders pass) is
//! skipped.
#![forbid(unsafe_code)]

use core::fmt;

/// Most warnings kept; later ones are counted in [`Parsed::more_warnings`].
pub const MAX_WARNINGS: usize = 16;

/// Log verbosity, from `log=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `log=off`
    Off,
    /// `log=error`
    Error,
    /// `log=warn`
    Warn,
    /// `log=info` (default)
    Info,
    /// `log=debug`
    Debug,
    /// `log=trace`
    Trace,
}

impl LogLevel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

/// Which self-tests to run, from `selftest=all` or `selftest=a,b,c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selftest<'a> {
    /// Every self-test in the table (not the deliberate fault).
    All,
    /// A comma-separated list of names, checked against the table when it runs.
    Names(&'a str),
}

/// The options the kernel understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options<'a> {
    /// `log=`: verbosity.
    pub log: LogLevel,
    /// `selftest=`: run self-tests and power off.
    pub selftest: Option<Selftest<'a>>,
    /// `maxcpus=N`: start at most N CPUs (N >= 1).
    pub max_cpus: Option<u32>,
    /// `timer=periodic|deadline`: force a local APIC timer mode.
    pub timer: Option<TimerMode>,
    /// `vm.count=N`: VMs to start from the guest module (1 to [`VM_COUNT_MAX`]); `None`
    /// means one when there is a module.
    pub vm_count: Option<u32>,
    /// `vm.mem=MiB`: memory of each VM, even, 2 to 4096. `None` means the default:
    /// [`VM_MEM_DEFAULT_MIB`] for plain VMs, [`POD_MEM_DEFAULT_MIB`] for a pod VM.
    pub vm_mem_mib: Option<u32>,
    /// `vm.vcpus=N`: vCPUs of each VM (1 to [`VM_VCPUS_MAX`]). `None` means the default:
    /// 1 for plain VMs; for a pod VM, what its CPU limit gives
    /// (`crate::vm::podspec::pod_vcpus`).
    pub vm_vcpus: Option<u32>,
    /// `vm.cpu=MILLICORES`: CPU limit of each VM (1 to 64000 thousandths of a CPU per
    /// 100 ms period; no limit by default).
    pub vm_cpu_millicores: Option<u32>,
    /// `vm.cmdline=ENC`: the guests' command line, encoded as one word (a space is `+`;
    /// `+`, `%` and other bytes are `%XX`; see `crx_abi::bundle::decode_cmdline`).
    pub vm_cmdline: Option<&'a str>,
    /// `net=dhcp|off|ADDR/PREFIX[,GATEWAY[,DNS...]]`: how the NIC gets its address,
    /// checked by `crate::net::config::parse_mode`; `None` means DHCP.
    pub net: Option<&'a str>,
    /// `net.check=HOST:PORT`: a TCP server to connect to once the network is up, checked
    /// by `crate::net::config::parse_endpoint`.
    pub net_check: Option<&'a str>,
}

/// Most VMs `vm.count` takes.
pub const VM_COUNT_MAX: u32 = 1024;
/// Default `vm.mem` in MiB.
pub const VM_MEM_DEFAULT_MIB: u32 = 16;
/// Default `vm.mem` in MiB of a pod VM (room for the guest kernel, the unpacked layers'
/// metadata, copied-on-write files and the processes).
pub const POD_MEM_DEFAULT_MIB: u32 = 64;
/// Most vCPUs per VM `vm.vcpus` takes.
pub const VM_VCPUS_MAX: u32 = 64;

/// Local APIC timer mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    /// Periodic countdown.
    Periodic,
    /// TSC-deadline.
    Deadline,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            log: LogLevel::Info,
            selftest: None,
            max_cpus: None,
            timer: None,
            vm_count: None,
            vm_mem_mib: None,
            vm_vcpus: None,
            vm_cmdline: None,
            vm_cpu_millicores: None,
            net: None,
            net_check: None,
        }
    }
}

/// Something wrong with one word of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning<'a> {
    /// `key=...` where the key means nothing here.
    UnknownKey(&'a str),
    /// A word with no `=`, or with an empty key or value.
    Malformed(&'a str),
    /// A known key whose value is not one it takes.
    BadValue {
        /// The key.
        key: &'a str,
        /// The value given.
        value: &'a str,
    },
    /// A known key whose value was checked and refused, with the reason.
    Refused {
        /// The key.
        key: &'a str,
        /// The value given.
        value: &'a str,
        /// Why.
        why: &'static str,
    },
}

impl fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnknownKey(k) => write!(f, "unknown key `{k}` ignored"),
            Warning::Malformed(w) => write!(f, "malformed word `{w}` ignored (expected key=value)"),
            Warning::BadValue { key, value } => {
                write!(f, "bad value `{value}` for `{key}` ignored")
            }
            Warning::Refused { key, value, why } => {
                write!(f, "bad value `{value}` for `{key}` ignored: {why}")
            }
        }
    }
}

/// The result of parsing.
#[derive(Debug, Clone, Default)]
pub struct Parsed<'a> {
    /// The options, defaults where a word was missing or bad.
    pub options: Options<'a>,
    /// What was wrong, in order.
    pub warnings: heapless::Vec<Warning<'a>, MAX_WARNINGS>,
    /// Warnings beyond [`MAX_WARNINGS`].
    pub more_warnings: usize,
}

impl<'a> Parsed<'a> {
    fn warn(&mut self, w: Warning<'a>) {
        if self.warnings.push(w).is_err() {
            self.more_warnings += 1;
        }
    }
}

/// Parses a command line.
pub fn parse(line: &str) -> Parsed<'_> {
    let mut p = Parsed::default();
    for (i, word) in line.split_ascii_whitespace().enumerate() {
        if i == 0 && word.starts_with('/') {
            continue;
        }
        let Some((key, value)) = word.split_once('=') else {
            p.warn(Warning::Malformed(word));
            continue;
        };
        if key.is_empty() || value.is_empty() {
            p.warn(Warning::Malformed(word));
            continue;
        }
        let bad = Warning::BadValue { key, value };
        match key {
            "log" => match LogLevel::parse(value) {
                Some(l) => p.options.log = l,
                None => p.warn(bad),
            },
            "selftest" => {
                let names_ok = value.split(',').all(|n| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                });
                if value == "all" {
                    p.options.selftest = Some(Selftest::All);
                } else if names_ok {
                    p.options.selftest = Some(Selftest::Names(value));
                } else {
                    p.warn(bad);
                }
            }
            "maxcpus" => match value.parse::<u32>() {
                Ok(n) if n >= 1 => p.options.max_cpus = Some(n),
                _ => p.warn(bad),
            },
            "timer" => match value {
                "periodic" => p.options.timer = Some(TimerMode::Periodic),
                "deadline" => p.options.timer = Some(TimerMode::Deadline),
                _ => p.warn(bad),
            },
            "vm.count" => match value.parse::<u32>() {
                Ok(n) if (1..=VM_COUNT_MAX).contains(&n) => p.options.vm_count = Some(n),
                _ => p.warn(bad),
            },
            // Guest memory is mapped with 2 MiB pages and the guest layout describes 4 GiB.
            "vm.mem" => match value.parse::<u32>() {
                Ok(n) if (2..=4096).contains(&n) && n % 2 == 0 => p.options.vm_mem_mib = Some(n),
                _ => p.warn(bad),
            },
            "vm.cpu" => match value.parse::<u32>() {
                Ok(n) if (1..=64_000).contains(&n) => p.options.vm_cpu_millicores = Some(n),
                _ => p.warn(bad),
            },
            "vm.cmdline" => {
                let mut buf = [0u8; 255];
                match crx_abi::bundle::decode_cmdline(value.as_bytes(), &mut buf) {
                    Some(_) => p.options.vm_cmdline = Some(value),
                    None => p.warn(bad),
                }
            }
            "vm.vcpus" => match value.parse::<u32>() {
                Ok(n) if (1..=VM_VCPUS_MAX).contains(&n) => p.options.vm_vcpus = Some(n),
                _ => p.warn(bad),
            },
            "net" => match crate::net::config::parse_mode(value) {
                Ok(_) => p.options.net = Some(value),
                Err(e) => p.warn(Warning::Refused { key, value, why: e.reason() }),
            },
            "net.check" => match crate::net::config::parse_endpoint(value) {
                Ok(_) => p.options.net_check = Some(value),
                Err(e) => p.warn(Warning::Refused { key, value, why: e.reason() }),
            },
            _ => p.warn(Warning::UnknownKey(key)),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_settings_are_checked_with_a_reason() {
        let p = parse("net=10.1.2.3/24,10.1.2.1 net.check=api.example.com:6443");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.options.net, Some("10.1.2.3/24,10.1.2.1"));
        assert_eq!(p.options.net_check, Some("api.example.com:6443"));
        let p = parse("net=10.1.2.3/24,10.9.9.9 net.check=10.0.2.2");
        assert_eq!((p.options.net, p.options.net_check), (None, None));
        let words: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            words,
            vec![
                "bad value `10.1.2.3/24,10.9.9.9` for `net` ignored: the gateway is outside the interface's network",
                "bad value `10.0.2.2` for `net.check` ignored: expected HOST:PORT with an IPv4 address or a DNS name \
                 and a port 1 to 65535",
            ]
        );
    }

    #[test]
    fn empty_line_gives_defaults() {
        let p = parse("");
        assert_eq!(p.options, Options::default());
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn known_keys() {
        let p = parse("/boot/hypervisor log=debug selftest=all maxcpus=2 timer=deadline");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(p.options.log, LogLevel::Debug);
        assert_eq!(p.options.selftest, Some(Selftest::All));
        assert_eq!(p.options.max_cpus, Some(2));
        assert_eq!(p.options.timer, Some(TimerMode::Deadline));
        assert_eq!(parse("selftest=frames,heap").options.selftest, Some(Selftest::Names("frames,heap")));
    }

    #[test]
    fn malformed_words_warn_and_keep_defaults() {
        let p = parse("log=loud =x y= bare colour=blue maxcpus=0 maxcpus=-1 selftest=a,,b timer=x /late");
        assert_eq!(p.options, Options::default());
        assert_eq!(
            p.warnings.as_slice(),
            &[
                Warning::BadValue { key: "log", value: "loud" },
                Warning::Malformed("=x"),
                Warning::Malformed("y="),
                Warning::Malformed("bare"),
                Warning::UnknownKey("colour"),
                Warning::BadValue { key: "maxcpus", value: "0" },
                Warning::BadValue { key: "maxcpus", value: "-1" },
                Warning::BadValue { key: "selftest", value: "a,,b" },
                Warning::BadValue { key: "timer", value: "x" },
                Warning::Malformed("/late"),
            ]
        );
        assert_eq!(p.warnings[4].to_string(), "unknown key `colour` ignored");
    }

    #[test]
    fn a_flood_of_garbage_is_bounded() {
        let line = "x ".repeat(1000);
        let p = parse(&line);
        assert_eq!(p.warnings.len(), MAX_WARNINGS);
        assert_eq!(p.more_warnings, 1000 - MAX_WARNINGS);
    }

    #[test]
    fn vm_cpu_limit() {
        assert_eq!(parse("vm.cpu=250").options.vm_cpu_millicores, Some(250));
        for bad in ["vm.cpu=0", "vm.cpu=64001", "vm.cpu=-1", "vm.cpu=1.5"] {
            let p = parse(bad);
            assert_eq!(p.options.vm_cpu_millicores, None, "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}");
        }
    }

    #[test]
    fn vm_cmdline_is_checked() {
        assert_eq!(parse("vm.cmdline=code=3+x%2B").options.vm_cmdline, Some("code=3+x%2B"));
        let p = parse("vm.cmdline=%zz");
        assert_eq!(p.options.vm_cmdline, None);
        assert_eq!(p.warnings.as_slice(), &[Warning::BadValue { key: "vm.cmdline", value: "%zz" }]);
        let long = alloc::format!("vm.cmdline={}", "x".repeat(300));
        assert_eq!(parse(&long).options.vm_cmdline, None);
    }

    #[test]
    fn vm_keys() {
        let p = parse("vm.count=3 vm.mem=64 vm.vcpus=2");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert_eq!(
            (p.options.vm_count, p.options.vm_mem_mib, p.options.vm_vcpus),
            (Some(3), Some(64), Some(2))
        );
        let d = parse("");
        assert_eq!((d.options.vm_count, d.options.vm_mem_mib, d.options.vm_vcpus), (None, None, None));
        let p = parse("vm.count=0 vm.count=1025 vm.mem=3 vm.mem=0 vm.mem=4098 vm.mem=x vm.vcpus=0 vm.vcpus=65 vm.cpus=1");
        assert_eq!((p.options.vm_count, p.options.vm_mem_mib, p.options.vm_vcpus), (None, None, None));
        assert_eq!(p.warnings.len(), 9);
        assert_eq!(p.warnings[2], Warning::BadValue { key: "vm.mem", value: "3" });
        assert_eq!(p.warnings[8], Warning::UnknownKey("vm.cpus"));
        assert_eq!(parse("vm.mem=4096 vm.count=1024").options.vm_mem_mib, Some(4096));
    }

    #[test]
    fn later_words_win() {
        assert_eq!(parse("log=error log=trace").options.log, LogLevel::Trace);
        assert_eq!(parse("a=b=c").warnings.as_slice(), &[Warning::UnknownKey("a")]);
    }
}
