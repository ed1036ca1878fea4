//! Reading what a node prints: turning emulator output into console lines and parsing the
//! kernel's serial contract out of them.
//!
//! The contract (one line each):
//! - `hypervisor ready: cpus=<N> memory=<MiB> MiB virt=<vmx|svm|none>`, once, when every CPU is up;
//! - `selftest: NAME ... running`, then `selftest: NAME ... ok` or `selftest: NAME ... FAILED: reason`;
//! - `selftest: N passed, M failed`, closing a self-test run;
//! - `KERNEL PANIC on cpuN: ...` and `EXCEPTION: ...` reports.
//!
//! Every parser here takes text an emulator printed, so none of them panics: a line that does
//! not match gives `None`.

use regex::Regex;
use std::sync::LazyLock;

/// Removes terminal escape sequences and carriage returns from one line of output.
///
/// SeaBIOS clears the screen through QEMU's serial console and Bochs's terminal display
/// paints with escape sequences; neither belongs in what a test judges.
pub fn strip_terminal(line: &str) -> String {
    let plain = strip_ansi_escapes::strip_str(line);
    plain.replace('\r', "")
}

/// Whether a line of output is Bochs talking about itself rather than the kernel's console:
/// its log lines (`00000000000i[CPU0  ] ...`), banners, debugger state lines, the ALSA
/// library's complaints and its connection notices.
pub fn is_bochs_chatter(line: &str) -> bool {
    static CHATTER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"^(?:",
            r"\d{11}[a-z]\[[^\]]*\]",        // its own log lines
            r"|={20,}\s*$",                  // banner rules
            r"|\s+Bochs x86 Emulator",       // banner
            r"|\s+Built from ",              // banner
            r"|\s+Timestamp: ",              // banner
            r"|Bochs is exiting",            // exit notice
            r"|\[[A-Z0-9 ]{6}\] ",           // exit reason under the notice
            r"|Bochs connected to screen",   // term display
            r"|Next at t=",                  // debugger
            r"|\(\d+\)\.?(?:\[\d+\])? \[0x", // debugger: one line per CPU
            r"|<bochs:\d+>",                 // debugger prompt
            r"|ALSA lib ",                   // sound library
            r"|\*\*\* ",                     // libc aborts
            r")"
        ))
        .expect("the chatter pattern is valid")
    });
    CHATTER.is_match(line)
}

/// Whether a console line was printed by the kernel: a log line (`[    0.010089] INFO  cpu0 ...`)
/// or one of the contract lines. The match is not anchored, since QEMU's firmware leaves
/// `Booting from ROM..` without a line end in front of the kernel's first line.
pub fn is_kernel_line(line: &str) -> bool {
    static KERNEL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"\[\s*\d+\.\d{6}\] [A-Z]+ +cpu\d+ |hypervisor ready: |selftest: |KERNEL PANIC on cpu|EXCEPTION: ",
        )
        .expect("the kernel-line pattern is valid")
    });
    KERNEL.is_match(line)
}

/// Which virtualization extension the kernel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virt {
    /// Intel VMX.
    Vmx,
    /// AMD SVM.
    Svm,
    /// Neither.
    None,
}

/// The kernel's ready line, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// CPUs up.
    pub cpus: u32,
    /// Usable memory in MiB.
    pub memory_mib: u64,
    /// The virtualization extension found.
    pub virt: Virt,
}

/// The regular expression of the ready line.
pub fn ready_regex() -> &'static Regex {
    static READY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"hypervisor ready: cpus=(\d+) memory=(\d+) MiB virt=(vmx|svm|none)\b")
            .expect("the ready pattern is valid")
    });
    &READY
}

impl Ready {
    /// Parses a ready line, wherever it sits in `line`.
    pub fn parse(line: &str) -> Option<Ready> {
        let c = ready_regex().captures(line)?;
        let virt = match c.get(3)?.as_str() {
            "vmx" => Virt::Vmx,
            "svm" => Virt::Svm,
            _ => Virt::None,
        };
        Some(Ready {
            cpus: c.get(1)?.as_str().parse().ok()?,
            memory_mib: c.get(2)?.as_str().parse().ok()?,
            virt,
        })
    }
}

/// The closing line of a self-test run, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Tests that passed.
    pub passed: u32,
    /// Tests that failed.
    pub failed: u32,
}

/// The regular expression of the self-test closing line.
pub fn summary_regex() -> &'static Regex {
    static SUMMARY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"selftest: (\d+) passed, (\d+) failed").expect("the summary pattern is valid")
    });
    &SUMMARY
}

impl Summary {
    /// Parses a closing line, wherever it sits in `line`.
    pub fn parse(line: &str) -> Option<Summary> {
        let c = summary_regex().captures(line)?;
        Some(Summary { passed: c.get(1)?.as_str().parse().ok()?, failed: c.get(2)?.as_str().parse().ok()? })
    }
}

/// One self-test's verdict line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `selftest: NAME ... ok`
    Ok(String),
    /// `selftest: NAME ... FAILED: reason`
    Failed {
        /// The test's name.
        name: String,
        /// The reason the kernel gave.
        reason: String,
    },
}

impl Verdict {
    /// Parses a verdict line; `running` lines and the closing line give `None`.
    pub fn parse(line: &str) -> Option<Verdict> {
        static VERDICT: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"selftest: (\S+) \.\.\. (?:(ok)\s*$|FAILED: (.*)$)")
                .expect("the verdict pattern is valid")
        });
        let c = VERDICT.captures(line)?;
        let name = c.get(1)?.as_str().to_string();
        if c.get(2).is_some() {
            Some(Verdict::Ok(name))
        } else {
            Some(Verdict::Failed { name, reason: c.get(3)?.as_str().trim_end().to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_seabios_screen_clearing() {
        let raw = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r";
        assert_eq!(strip_terminal(raw), "SeaBIOS (version 1.16.2)");
    }

    #[test]
    fn strips_colours_and_cursor_moves() {
        assert_eq!(strip_terminal("\x1b[1;31mred\x1b[0m \x1b[10;5Hmoved\r\r"), "red moved");
        assert_eq!(strip_terminal("plain"), "plain");
    }

    #[test]
    fn recognizes_bochs_chatter() {
        for line in [
            "00000000000i[PLUGIN] loaded plugin libbx_serial.so",
            "00253947385i[CPU1  ] | EIP=00000048 (00000048)",
            "========================================================================",
            "                        Bochs x86 Emulator 2.7",
            "Bochs is exiting with the following message:",
            "[UNMAP ] Shutdown port: shutdown requested",
            "Bochs connected to screen \"/dev/pts/1\"",
            "Next at t=0",
            "(0) [0x0000fffffff0] f000:fff0 (unk. ctxt): jmpf 0xf000:e05b          ; ea5be000f0",
            "(1).[253947385] [0x00000009f048] 9f00:0048 (unk. ctxt): jmp .-3  (0x0009f047)     ; ebfd",
            "ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM default",
        ] {
            assert!(is_bochs_chatter(line), "{line}");
        }
        for line in [
            "[    0.010001] INFO  cpu0 kmain: booted via multiboot2",
            "hypervisor ready: cpus=2 memory=511 MiB virt=vmx",
            "selftest: 2 passed, 0 failed",
            "",
        ] {
            assert!(!is_bochs_chatter(line), "{line}");
        }
    }

    #[test]
    fn recognizes_kernel_lines() {
        assert!(is_kernel_line("Booting from ROM..[    0.010089] INFO  cpu0 kmain: booted via pvh"));
        assert!(is_kernel_line("[   12.000001] WARN  cpu3 kmain: cmdline: unknown key `colour` ignored"));
        assert!(is_kernel_line("hypervisor ready: cpus=4 memory=511 MiB virt=svm"));
        assert!(is_kernel_line("KERNEL PANIC on cpu1: oops"));
        assert!(!is_kernel_line("SeaBIOS (version 1.16.2-debian-1.16.2-1)"));
        assert!(!is_kernel_line("Booting from ROM.."));
    }

    #[test]
    fn parses_the_ready_line() {
        assert_eq!(
            Ready::parse("hypervisor ready: cpus=4 memory=511 MiB virt=svm"),
            Some(Ready { cpus: 4, memory_mib: 511, virt: Virt::Svm })
        );
        assert_eq!(
            Ready::parse("junk hypervisor ready: cpus=2 memory=1023 MiB virt=vmx"),
            Some(Ready { cpus: 2, memory_mib: 1023, virt: Virt::Vmx })
        );
        assert_eq!(
            Ready::parse("hypervisor ready: cpus=1 memory=5 MiB virt=none").map(|r| r.virt),
            Some(Virt::None)
        );
        assert_eq!(Ready::parse("hypervisor ready: cpus=x memory=5 MiB virt=none"), None);
        assert_eq!(Ready::parse("hypervisor ready: cpus=99999999999 memory=5 MiB virt=svm"), None);
        assert_eq!(Ready::parse("hypervisor ready: cpus=1 memory=5 MiB virt=svmx"), None);
    }

    #[test]
    fn parses_the_closing_line() {
        assert_eq!(Summary::parse("selftest: 7 passed, 0 failed"), Some(Summary { passed: 7, failed: 0 }));
        assert_eq!(Summary::parse("selftest: 0 passed, 1 failed"), Some(Summary { passed: 0, failed: 1 }));
        assert_eq!(Summary::parse("selftest: time ... ok"), None);
    }

    #[test]
    fn parses_verdicts() {
        assert_eq!(Verdict::parse("selftest: time ... ok"), Some(Verdict::Ok("time".into())));
        assert_eq!(
            Verdict::parse("selftest: nosuchtest ... FAILED: no such self-test"),
            Some(Verdict::Failed { name: "nosuchtest".into(), reason: "no such self-test".into() })
        );
        assert_eq!(Verdict::parse("selftest: time ... running"), None);
        assert_eq!(Verdict::parse("selftest: 2 passed, 0 failed"), None);
    }
}
