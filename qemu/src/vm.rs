//! Running VMs on a node: what the runner hands the kernel (guest images, the `vm.*`
//! command-line keys), how it reads the VMs' console lines, and how a run's outcome becomes
//! `cargo xtask vm run`'s exit status.
//!
//! # What the kernel is given
//!
//! - `vm.count=N vm.mem=MiB vm.vcpus=N` on its command line.
//! - The guest image as its first boot module (QEMU: `-initrd FILE`, which PVH passes as
//!   a module; GRUB: `module2 /boot/guest`). One image serves every VM; its command line
//!   travels as `vm.cmdline=ENC` ([`encode_cmdline`]: the kernel splits its command line
//!   on spaces, so a space is written `+`, and `+`, `%` and other bytes that are not
//!   printable ASCII as `%XX`).
//! - Different guests per VM (one image per VM, as many as `vm.count`): QEMU's PVH loader
//!   passes a single module, so the images travel as one module in the guest bundle format
//!   ([`pack_bundle`]), entry i for VM i, each entry with its own guest command line.
//!
//! # What the kernel prints (one line each)
//!
//! - `vm<i>: <text>`: a line of VM i's console;
//! - `vm<i>: exited with code <c>` or `vm<i>: stopped: <reason>`: VM i ended;
//! - `vm<i>: accounting guest_ns=<ns> exits=<n> overhead_bytes=<bytes>[ first_container_ns=<ns>]`:
//!   its figures (the last one when the guest said it entered a container,
//!   `crx_abi::nr::CONTAINER_ENTRY`);
//! - `vms: <n> exited, <m> stopped`: every VM has ended (the kernel then powers off).
//!
//! A guest can print text that looks like an end line, so for each VM the last end line
//! counts. Every parser here takes text an emulator printed and never panics.

use crate::emulator::{Bochs, Qemu};
use crate::image::{self, target_dir};
use crate::machine::{format_log, Kind, Line, Machine};
use crate::Error;
use regex::Regex;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Exit status of `vm run` when `--timeout` ran out before VM 0 ended.
pub const STATUS_TIMEOUT: u8 = 124;
/// Exit status of `vm run` when VM 0 was stopped by the hypervisor.
pub const STATUS_STOPPED: u8 = 125;
/// Exit status of `vm run` when the node ended without VM 0 ending (the kernel could not
/// run VMs, panicked, or the emulator failed).
pub const STATUS_NO_RESULT: u8 = 126;
/// Exit status of `vm run` when the runner itself failed (build, set-up, bad options).
pub const STATUS_RUNNER: u8 = 127;

/// The magic at the start of a guest bundle: "CRXVMS" then format version 1.
pub const BUNDLE_MAGIC: [u8; 8] = *b"CRXVMS\x00\x01";
/// Size of the bundle header: magic, entry count (u32), zero (u32).
pub const BUNDLE_HEADER: usize = 16;
/// Size of one bundle entry: image offset, image length, command-line offset, command-line
/// length (u64 each, little-endian, offsets from the bundle's start).
pub const BUNDLE_ENTRY: usize = 32;
/// Longest guest command line (`BootParams::cmdline` keeps 255 bytes and a NUL).
pub const GUEST_CMDLINE_MAX: usize = 255;

/// Encodes a guest command line as one word of the kernel's command line: a space becomes
/// `+`; `+`, `%` and every byte that is not printable ASCII become `%XX` (upper-case hex).
pub fn encode_cmdline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'+' | b'%' => out.push_str(&format!("%{b:02X}")),
            0x21..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes [`encode_cmdline`] (what the kernel does with `vm.cmdline=`); `None` for a `%`
/// not followed by two hex digits.
pub fn decode_cmdline(s: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; s.len()];
    let n = crx_abi::bundle::decode_cmdline(s.as_bytes(), &mut out)?;
    out.truncate(n);
    Some(out)
}

/// Packs guest images with their command lines into one bundle: the header, one entry per
/// image, then the command lines and images, each image 4 KiB-aligned.
pub fn pack_bundle(guests: &[(Vec<u8>, String)]) -> Vec<u8> {
    let count = guests.len();
    let mut out = Vec::new();
    out.extend_from_slice(&BUNDLE_MAGIC);
    out.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let table = out.len();
    out.resize(table + count * BUNDLE_ENTRY, 0);
    for (i, (elf, cmdline)) in guests.iter().enumerate() {
        let cmd_at = out.len();
        out.extend_from_slice(cmdline.as_bytes());
        out.resize(out.len().next_multiple_of(4096), 0);
        let elf_at = out.len();
        out.extend_from_slice(elf);
        let entry = [elf_at as u64, elf.len() as u64, cmd_at as u64, cmdline.len() as u64];
        for (j, v) in entry.iter().enumerate() {
            let at = table + i * BUNDLE_ENTRY + j * 8;
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Unpacks a bundle (the kernel's side of [`pack_bundle`]); `None` when malformed.
pub fn parse_bundle(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let b = crx_abi::bundle::Bundle::parse(bytes).ok()?;
    (0..b.len()).map(|i| b.entry(i)).collect()
}

/// One guest image and its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The static ELF.
    pub path: PathBuf,
    /// Its command line (see `guests::args`).
    pub cmdline: String,
}

impl GuestImage {
    /// Guest `path` with an empty command line.
    pub fn new(path: impl Into<PathBuf>) -> GuestImage {
        GuestImage { path: path.into(), cmdline: String::new() }
    }

    /// The same guest with command line `cmdline`.
    pub fn with_cmdline(mut self, cmdline: &str) -> GuestImage {
        self.cmdline = cmdline.into();
        self
    }
}

/// What a spec lacks or gets wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No guest image.
    #[error("no guest image given")]
    NoGuest,
    /// Several images, but not one per VM.
    #[error("{images} guest images for {count} VMs: give one image for all, or one per VM")]
    ImageCount {
        /// Images given.
        images: usize,
        /// VMs asked for.
        count: u32,
    },
    /// `--count`, `--mem` or `--vcpus` of zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A guest command line that does not fit in `BootParams::cmdline`.
    #[error("guest command line of {0} bytes is longer than 255")]
    CmdlineTooLong(usize),
}

/// A set of VMs to start together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// One image for every VM, or one per VM.
    pub guests: Vec<GuestImage>,
    /// How many VMs.
    pub count: u32,
    /// Guest memory per VM, MiB.
    pub mem_mib: u32,
    /// vCPUs per VM.
    pub vcpus: u32,
    /// More words for the kernel's command line (e.g. `log=debug`).
    pub kernel_cmdline: String,
}

impl VmSpec {
    /// `count` VMs of one guest, 16 MiB and one vCPU each.
    pub fn new(guest: GuestImage, count: u32) -> VmSpec {
        VmSpec { guests: vec![guest], count, mem_mib: 16, vcpus: 1, kernel_cmdline: String::new() }
    }

    /// One VM per guest, 16 MiB and one vCPU each.
    pub fn each(guests: Vec<GuestImage>) -> VmSpec {
        let count = u32::try_from(guests.len()).unwrap_or(u32::MAX);
        VmSpec { guests, count, mem_mib: 16, vcpus: 1, kernel_cmdline: String::new() }
    }

    /// Checks the spec.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.guests.is_empty() {
            return Err(SpecError::NoGuest);
        }
        for (value, name) in
            [(self.count, "the VM count"), (self.mem_mib, "guest memory"), (self.vcpus, "vCPUs")]
        {
            if value == 0 {
                return Err(SpecError::Zero(name));
            }
        }
        if self.guests.len() > 1 && self.guests.len() != self.count as usize {
            return Err(SpecError::ImageCount { images: self.guests.len(), count: self.count });
        }
        if let Some(g) = self.guests.iter().find(|g| g.cmdline.len() > GUEST_CMDLINE_MAX) {
            return Err(SpecError::CmdlineTooLong(g.cmdline.len()));
        }
        Ok(())
    }

    /// Whether the images travel as a bundle (one per VM, more than one VM).
    pub fn bundled(&self) -> bool {
        self.guests.len() > 1
    }

    /// The kernel's command line.
    pub fn kernel_cmdline(&self) -> String {
        let mut words = vec![
            format!("vm.count={}", self.count),
            format!("vm.mem={}", self.mem_mib),
            format!("vm.vcpus={}", self.vcpus),
        ];
        if let [only] = self.guests.as_slice() {
            if !only.cmdline.is_empty() {
                words.push(format!("vm.cmdline={}", encode_cmdline(&only.cmdline)));
            }
        }
        words.extend(self.kernel_cmdline.split_whitespace().map(str::to_string));
        words.join(" ")
    }

    /// The boot module: the image itself, or a bundle written to `dir/NAME.bundle`.
    pub fn module(&self, dir: &Path, name: &str) -> Result<PathBuf, Error> {
        self.check().map_err(|e| Error::Missing(e.to_string()))?;
        if let (false, Some(only)) = (self.bundled(), self.guests.first()) {
            return Ok(only.path.clone());
        }
        let mut parts = Vec::new();
        for g in &self.guests {
            let elf = fs::read(&g.path).map_err(|e| Error::io(format!("reading {}", g.path.display()), e))?;
            parts.push((elf, g.cmdline.clone()));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(format!("{name}.bundle"));
        fs::write(&path, pack_bundle(&parts))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `exited with code <c>`.
    Exited(i32),
    /// `stopped: <reason>`.
    Stopped(String),
}

/// A VM's figures, from its `accounting` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accounting {
    /// Time spent in the guest.
    pub guest_ns: u64,
    /// Exits taken.
    pub exits: u64,
    /// Host memory used for the VM beyond its guest memory.
    pub overhead_bytes: u64,
    /// Time spent in the guest until it first entered a container's process in user mode
    /// (a pod VM's guest says when; `None` when it did not).
    pub first_container_ns: Option<u64>,
}

/// One line of the VM contract, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A console line of VM `vm`.
    Console {
        /// The VM.
        vm: u32,
        /// The text.
        text: String,
    },
    /// VM `vm` ended.
    End {
        /// The VM.
        vm: u32,
        /// How.
        end: End,
    },
    /// VM `vm`'s figures.
    Accounting {
        /// The VM.
        vm: u32,
        /// The figures.
        figures: Accounting,
    },
    /// `vms: <n> exited, <m> stopped`.
    AllEnded {
        /// VMs that exited.
        exited: u32,
        /// VMs that were stopped.
        stopped: u32,
    },
}

impl Event {
    /// Parses a line of the contract (anchored at the line's start); other lines give `None`.
    pub fn parse(line: &str) -> Option<Event> {
        static VM: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^vm(\d+)([:>]) (.*)$").expect("the vm-line pattern is valid"));
        static EXITED: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^exited with code (-?\d+)\s*$").expect("the exit pattern is valid")
        });
        static ACCOUNTING: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(
                r"^accounting guest_ns=(\d+) exits=(\d+) overhead_bytes=(\d+)(?: first_container_ns=(\d+))?\s*$",
            )
                .expect("the accounting pattern is valid")
        });
        static ALL: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^vms: (\d+) exited, (\d+) stopped\s*$").expect("the closing pattern is valid")
        });
        if let Some(c) = ALL.captures(line) {
            return Some(Event::AllEnded {
                exited: c.get(1)?.as_str().parse().ok()?,
                stopped: c.get(2)?.as_str().parse().ok()?,
            });
        }
        let c = VM.captures(line)?;
        let vm: u32 = c.get(1)?.as_str().parse().ok()?;
        let text = c.get(3)?.as_str();
        // `vm<i>> text` is the guest's own console; only `vm<i>: ...` lines come from the
        // kernel, so a guest cannot forge an end line.
        if c.get(2)?.as_str() == ">" {
            return Some(Event::Console { vm, text: text.to_string() });
        }
        if let Some(e) = EXITED.captures(text) {
            if let Ok(code) = e.get(1)?.as_str().parse() {
                return Some(Event::End { vm, end: End::Exited(code) });
            }
        }
        if let Some(reason) = text.strip_prefix("stopped: ") {
            return Some(Event::End { vm, end: End::Stopped(reason.trim_end().to_string()) });
        }
        if let Some(a) = ACCOUNTING.captures(text) {
            let n = |i: usize| a.get(i).and_then(|m| m.as_str().parse().ok());
            let first_container_ns = match a.get(4) {
                Some(m) => Some(m.as_str().parse().ok()?),
                None => None,
            };
            if let (Some(guest_ns), Some(exits), Some(overhead_bytes)) = (n(1), n(2), n(3)) {
                return Some(Event::Accounting {
                    vm,
                    figures: Accounting { guest_ns, exits, overhead_bytes, first_container_ns },
                });
            }
        }
        None
    }
}

/// Everything learnt about the VMs of a run, line by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Console lines per VM (index = VM).
    pub console: Vec<Vec<String>>,
    /// How each VM ended (the last end line seen for it).
    pub ends: Vec<Option<End>>,
    /// Figures per VM.
    pub accounting: Vec<Option<Accounting>>,
    /// The closing line, once seen.
    pub all_ended: Option<(u32, u32)>,
}

/// Most VMs a report tracks; lines naming a higher index are ignored.
pub const MAX_VMS: u32 = 4096;

impl Report {
    /// Takes one console line into account; returns what it was.
    pub fn feed(&mut self, line: &str) -> Option<Event> {
        let event = Event::parse(line)?;
        let slot = |vm: u32| usize::try_from(vm).ok().filter(|_| vm < MAX_VMS);
        match &event {
            Event::Console { vm, text } => {
                let i = slot(*vm)?;
                self.grow(i);
                self.console[i].push(text.clone());
            }
            Event::End { vm, end } => {
                let i = slot(*vm)?;
                self.grow(i);
                self.ends[i] = Some(end.clone());
            }
            Event::Accounting { vm, figures } => {
                let i = slot(*vm)?;
                self.grow(i);
                self.accounting[i] = Some(*figures);
            }
            Event::AllEnded { exited, stopped } => self.all_ended = Some((*exited, *stopped)),
        }
        Some(event)
    }

    fn grow(&mut self, i: usize) {
        if self.console.len() <= i {
            self.console.resize(i + 1, Vec::new());
            self.ends.resize(i + 1, None);
            self.accounting.resize(i + 1, None);
        }
    }

    /// A report of all these lines.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Report {
        let mut r = Report::default();
        for l in lines {
            r.feed(l);
        }
        r
    }

    /// How VM `vm` ended, if it did.
    pub fn end(&self, vm: u32) -> Option<&End> {
        self.ends.get(usize::try_from(vm).ok()?)?.as_ref()
    }

    /// VM `vm`'s console lines.
    pub fn lines(&self, vm: u32) -> &[String] {
        usize::try_from(vm).ok().and_then(|i| self.console.get(i)).map(Vec::as_slice).unwrap_or_default()
    }

    /// VM `vm`'s figures.
    pub fn figures(&self, vm: u32) -> Option<Accounting> {
        *self.accounting.get(usize::try_from(vm).ok()?)?
    }
}

/// How a `vm run` ended, from VM 0's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// VM 0 exited with this code.
    Exited(i32),
    /// VM 0 was stopped for this reason.
    Stopped(String),
    /// The timeout ran out before VM 0 ended.
    TimedOut,
    /// The node ended without VM 0 ending.
    NoResult,
}

impl RunStatus {
    /// The run's status from its report: VM 0's end wins over a timeout that came later.
    pub fn of(report: &Report, timed_out: bool) -> RunStatus {
        match report.end(0) {
            Some(End::Exited(c)) => RunStatus::Exited(*c),
            Some(End::Stopped(r)) => RunStatus::Stopped(r.clone()),
            None if timed_out => RunStatus::TimedOut,
            None => RunStatus::NoResult,
        }
    }

    /// The process exit status: VM 0's exit code (its low 8 bits), or [`STATUS_STOPPED`],
    /// [`STATUS_TIMEOUT`], [`STATUS_NO_RESULT`].
    pub fn exit_status(&self) -> u8 {
        match self {
            RunStatus::Exited(c) => *c as u8,
            RunStatus::Stopped(_) => STATUS_STOPPED,
            RunStatus::TimedOut => STATUS_TIMEOUT,
            RunStatus::NoResult => STATUS_NO_RESULT,
        }
    }

    /// A sentence for the user.
    pub fn describe(&self) -> String {
        match self {
            RunStatus::Exited(c) => format!("vm0 exited with code {c}"),
            RunStatus::Stopped(r) => format!("vm0 was stopped: {r}"),
            RunStatus::TimedOut => "the timeout ran out before vm0 ended".into(),
            RunStatus::NoResult => "the node ended without vm0 ending".into(),
        }
    }
}

/// Where the VMs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The emulator.
    pub kind: Kind,
    /// The hypervisor kernel ELF.
    pub kernel: PathBuf,
    /// CPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub mem_mib: u32,
    /// More QEMU arguments (e.g. `-icount shift=0`).
    pub qemu_extra: Vec<String>,
}

impl Host {
    /// QEMU (TCG, AMD SVM with nested paging), 4 CPUs, 512 MiB.
    pub fn qemu(kernel: impl Into<PathBuf>) -> Host {
        Host { kind: Kind::Qemu, kernel: kernel.into(), cpus: 4, mem_mib: 512, qemu_extra: Vec::new() }
    }

    /// Bochs (Intel VMX with EPT), 2 CPUs, 512 MiB.
    pub fn bochs(kernel: impl Into<PathBuf>) -> Host {
        Host { kind: Kind::Bochs, kernel: kernel.into(), cpus: 2, mem_mib: 512, qemu_extra: Vec::new() }
    }

    /// Boots the node for `spec`; run files are named after `name` under `target/vm/`.
    pub fn boot(&self, name: &str, spec: &VmSpec) -> Result<Machine, Error> {
        let dir = target_dir().join("vm");
        let module = spec.module(&dir, name)?;
        self.boot_module(name, module, spec.kernel_cmdline())
    }

    /// Boots the node with `module` as its one boot module and kernel command line
    /// `cmdline`; run files are named after `name` under `target/vm/`.
    pub fn boot_module(&self, name: &str, module: PathBuf, cmdline: String) -> Result<Machine, Error> {
        let dir = target_dir().join("vm");
        match self.kind {
            Kind::Qemu => {
                let node = Qemu {
                    cmdline,
                    smp: self.cpus,
                    mem_mib: self.mem_mib,
                    initrd: Some(module),
                    extra: self.qemu_extra.clone(),
                    ..Qemu::new(&self.kernel)
                };
                Machine::qemu(name, &node)
            }
            Kind::Bochs => {
                let iso = dir.join(format!("{name}.iso"));
                image::build_iso_with_modules(&self.kernel, &cmdline, &[("guest", &module)], &iso)?;
                let node = Bochs { cpus: self.cpus, mem_mib: self.mem_mib, ..Bochs::new(iso) };
                Machine::bochs(name, &node)
            }
        }
    }
}

/// A finished `vm run`.
#[derive(Debug, Clone)]
pub struct VmRun {
    /// The node's name.
    pub name: String,
    /// What the VMs printed.
    pub report: Report,
    /// VM 0's verdict.
    pub status: RunStatus,
    /// Whether the timeout ran out (the node was then killed).
    pub timed_out: bool,
    /// The emulator's exit status.
    pub emulator: ExitStatus,
    /// Everything the node printed.
    pub lines: Vec<Line>,
}

impl VmRun {
    /// The whole log, for failure messages.
    pub fn log(&self) -> String {
        format_log(&self.name, &self.lines)
    }

    /// Panics with `msg` and the whole log unless `ok`.
    #[track_caller]
    pub fn check(&self, ok: bool, msg: &str) {
        if !ok {
            panic!(
                "{}: {msg} ({}; emulator {})\n{}",
                self.name,
                self.status.describe(),
                self.emulator,
                self.log()
            );
        }
    }

    /// How VM `vm` ended.
    pub fn end(&self, vm: u32) -> Option<&End> {
        self.report.end(vm)
    }

    /// VM `vm`'s console lines.
    pub fn lines_of(&self, vm: u32) -> &[String] {
        self.report.lines(vm)
    }
}

/// How long the node may run on after the closing `vms:` line before it is stopped (QEMU
/// powers off at once; Bochs takes a moment).
const GRACE: Duration = Duration::from_secs(10);

/// Boots `host` with `spec`, follows the console until every VM has ended and the node is
/// off, the closing line is `GRACE` old, `timeout` runs out or `stop` (asked with the report
/// so far) says so; calls `on_line` with every line as it arrives.
pub fn run(
    host: &Host,
    name: &str,
    spec: &VmSpec,
    timeout: Option<Duration>,
    stop: &dyn Fn(&Report) -> bool,
    on_line: &mut dyn FnMut(&Line, Option<&Event>),
) -> Result<VmRun, Error> {
    follow(host.boot(name, spec)?, name, timeout, stop, on_line)
}

/// Follows a booted node as [`run`] does.
pub fn follow(
    mut machine: Machine,
    name: &str,
    timeout: Option<Duration>,
    stop: &dyn Fn(&Report) -> bool,
    on_line: &mut dyn FnMut(&Line, Option<&Event>),
) -> Result<VmRun, Error> {
    let mut report = Report::default();
    let mut seen = 0;
    let mut closed_at: Option<Instant> = None;
    let started = Instant::now();
    let emulator = loop {
        let finished = machine.finished();
        let new = machine.lines_from(seen);
        seen += new.len();
        for line in &new {
            let event = if line.console { report.feed(&line.text) } else { None };
            if matches!(event, Some(Event::AllEnded { .. })) && closed_at.is_none() {
                closed_at = Some(Instant::now());
            }
            on_line(line, event.as_ref());
        }
        if let Some(status) = finished {
            break status;
        }
        let over = timeout.is_some_and(|t| started.elapsed() >= t);
        if over || stop(&report) || closed_at.is_some_and(|at| at.elapsed() >= GRACE) {
            let timed_out = over;
            let outcome = machine.stop();
            for line in outcome.lines.get(seen..).unwrap_or_default() {
                let event = if line.console { report.feed(&line.text) } else { None };
                on_line(line, event.as_ref());
            }
            let status = RunStatus::of(&report, timed_out);
            return Ok(VmRun {
                name: name.into(),
                report,
                status,
                timed_out,
                emulator: outcome.status,
                lines: outcome.lines,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = machine.lines();
    let status = RunStatus::of(&report, false);
    Ok(VmRun { name: name.into(), report, status, timed_out: false, emulator, lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_encoding_round_trips() {
        for s in ["", "code=3", "steps=rdmsr,out at=far", "a+b 100% ok", "tab\there", "é"] {
            let enc = encode_cmdline(s);
            assert!(!enc.contains(' ') && !enc.contains('\t'), "{enc}");
            assert_eq!(decode_cmdline(&enc).as_deref(), Some(s.as_bytes()), "{s:?} -> {enc}");
        }
        assert_eq!(encode_cmdline("code=3 lines=2"), "code=3+lines=2");
        assert_eq!(encode_cmdline("a+b%"), "a%2Bb%25");
        assert_eq!(decode_cmdline("%2"), None);
        assert_eq!(decode_cmdline("%zz"), None);
    }

    #[test]
    fn bundles_round_trip() {
        let guests =
            vec![(vec![0x7f, b'E', b'L', b'F', 1], "code=3".to_string()), (vec![9; 5000], String::new())];
        let b = pack_bundle(&guests);
        assert_eq!(&b[..8], b"CRXVMS\x00\x01");
        assert_eq!(u32::from_le_bytes([b[8], b[9], b[10], b[11]]), 2);
        let parsed = parse_bundle(&b).expect("a packed bundle parses");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (&guests[0].0[..], &b"code=3"[..]));
        assert_eq!(parsed[1].0, &guests[1].0[..]);
        assert_eq!(parsed[1].1, b"");
        // Images start on 4 KiB boundaries.
        let first = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
        assert_eq!(first % 4096, 0);
    }

    #[test]
    fn malformed_bundles_are_refused() {
        let b = pack_bundle(&[(vec![1, 2, 3], "x".into())]);
        assert_eq!(parse_bundle(&b[..b.len() - 1]), None);
        assert_eq!(parse_bundle(b"CRXVMS\x00\x02"), None);
        let mut huge = b.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_bundle(&huge), None);
        let mut wrap = b;
        wrap[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_bundle(&wrap), None);
    }

    #[test]
    fn kernel_command_line() {
        let one = VmSpec { mem_mib: 32, ..VmSpec::new(GuestImage::new("/g").with_cmdline("code=3 x=1"), 4) };
        assert_eq!(one.kernel_cmdline(), "vm.count=4 vm.mem=32 vm.vcpus=1 vm.cmdline=code=3+x=1");
        let each = VmSpec {
            kernel_cmdline: "log=debug".into(),
            ..VmSpec::each(vec![GuestImage::new("/a").with_cmdline("q"), GuestImage::new("/b")])
        };
        assert_eq!(each.kernel_cmdline(), "vm.count=2 vm.mem=16 vm.vcpus=1 log=debug");
        assert!(each.bundled());
        assert!(!one.bundled());
    }

    #[test]
    fn specs_are_checked() {
        let g = GuestImage::new("/g");
        assert_eq!(VmSpec::new(g.clone(), 3).check(), Ok(()));
        assert_eq!(VmSpec { guests: vec![], ..VmSpec::new(g.clone(), 1) }.check(), Err(SpecError::NoGuest));
        assert_eq!(
            VmSpec { count: 3, ..VmSpec::each(vec![g.clone(), g.clone()]) }.check(),
            Err(SpecError::ImageCount { images: 2, count: 3 })
        );
        assert_eq!(VmSpec { vcpus: 0, ..VmSpec::new(g.clone(), 1) }.check(), Err(SpecError::Zero("vCPUs")));
        let long = g.with_cmdline(&"x".repeat(256));
        assert_eq!(VmSpec::new(long, 1).check(), Err(SpecError::CmdlineTooLong(256)));
    }

    #[test]
    fn parses_the_vm_lines() {
        assert_eq!(
            Event::parse("vm3> hello from vm3 of 8"),
            Some(Event::Console { vm: 3, text: "hello from vm3 of 8".into() })
        );
        assert_eq!(
            Event::parse("vm0: exited with code -2"),
            Some(Event::End { vm: 0, end: End::Exited(-2) })
        );
        assert_eq!(
            Event::parse("vm1: stopped: I/O port 0x3f8 is not allowed"),
            Some(Event::End { vm: 1, end: End::Stopped("I/O port 0x3f8 is not allowed".into()) })
        );
        assert_eq!(
            Event::parse("vm2: accounting guest_ns=5 exits=7 overhead_bytes=8192"),
            Some(Event::Accounting {
                vm: 2,
                figures: Accounting { guest_ns: 5, exits: 7, overhead_bytes: 8192, first_container_ns: None }
            })
        );
        assert_eq!(
            Event::parse(
                "vm2: accounting guest_ns=9000 exits=7 overhead_bytes=8192 first_container_ns=4000 "
            ),
            Some(Event::Accounting {
                vm: 2,
                figures: Accounting {
                    guest_ns: 9000,
                    exits: 7,
                    overhead_bytes: 8192,
                    first_container_ns: Some(4000)
                }
            })
        );
        // A figure out of range, or another field after the known ones, is no accounting line.
        assert_eq!(
            Event::parse(
                "vm2: accounting guest_ns=1 exits=7 overhead_bytes=8 first_container_ns=99999999999999999999"
            ),
            None
        );
        assert_eq!(Event::parse("vm2: accounting guest_ns=1 exits=7 overhead_bytes=8 other=3"), None);
        assert_eq!(Event::parse("vms: 3 exited, 1 stopped"), Some(Event::AllEnded { exited: 3, stopped: 1 }));
        // A code out of range is no end line; a guest printing an end line stays console text.
        assert_eq!(Event::parse("vm0: exited with code 99999999999"), None);
        assert_eq!(
            Event::parse("vm0> exited with code 0"),
            Some(Event::Console { vm: 0, text: "exited with code 0".into() })
        );
        assert_eq!(Event::parse("[    0.1] INFO  cpu0 vm0: loaded"), None);
        assert_eq!(Event::parse("vmx: on"), None);
        assert_eq!(Event::parse("vm99999999999: x"), None);
    }

    const SAMPLE: &str = "\
hypervisor ready: cpus=4 memory=511 MiB virt=svm
vm1> hello from vm1 of 2
vm0> spinning
vm1: exited with code 0
vm1: accounting guest_ns=1000 exits=3 overhead_bytes=12288";

    #[test]
    fn status_is_vm0s_exit_code() {
        let text = format!("{SAMPLE}\nvm0: exited with code 3\nvms: 2 exited, 0 stopped");
        let r = Report::from_lines(text.lines());
        assert_eq!(r.lines(1), ["hello from vm1 of 2"]);
        assert_eq!(r.lines(0), ["spinning"]);
        assert_eq!(r.figures(1).map(|f| f.overhead_bytes), Some(12288));
        assert_eq!(r.all_ended, Some((2, 0)));
        let s = RunStatus::of(&r, false);
        assert_eq!(s, RunStatus::Exited(3));
        assert_eq!(s.exit_status(), 3);
        // A timeout after vm0 ended does not hide its code.
        assert_eq!(RunStatus::of(&r, true).exit_status(), 3);
    }

    #[test]
    fn negative_and_large_codes_keep_their_low_byte() {
        assert_eq!(RunStatus::Exited(-1).exit_status(), 255);
        assert_eq!(RunStatus::Exited(256 + 7).exit_status(), 7);
    }

    #[test]
    fn status_when_vm0_is_stopped() {
        let text = format!("{SAMPLE}\nvm0: stopped: triple fault\nvms: 1 exited, 1 stopped");
        let s = RunStatus::of(&Report::from_lines(text.lines()), false);
        assert_eq!(s, RunStatus::Stopped("triple fault".into()));
        assert_eq!(s.exit_status(), STATUS_STOPPED);
    }

    #[test]
    fn status_when_the_timeout_runs_out() {
        let r = Report::from_lines(SAMPLE.lines());
        assert_eq!(RunStatus::of(&r, true), RunStatus::TimedOut);
        assert_eq!(RunStatus::of(&r, true).exit_status(), STATUS_TIMEOUT);
    }

    #[test]
    fn status_when_the_kernel_runs_no_vm() {
        let r = Report::from_lines([
            "hypervisor ready: cpus=4 memory=511 MiB virt=none",
            "KERNEL PANIC on cpu0: x",
        ]);
        assert_eq!(RunStatus::of(&r, false), RunStatus::NoResult);
        assert_eq!(RunStatus::NoResult.exit_status(), STATUS_NO_RESULT);
    }

    #[test]
    fn the_last_end_line_counts() {
        let r = Report::from_lines(["vm0: exited with code 0", "vm0: stopped: triple fault"]);
        assert_eq!(r.end(0), Some(&End::Stopped("triple fault".into())));
        assert_eq!(r.lines(0), [] as [String; 0]);
    }
}
